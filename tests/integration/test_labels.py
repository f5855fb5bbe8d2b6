"""Feedback into training: label an alarm over MQTT, export the dataset, and let false alarms join calibration."""

from __future__ import annotations

import json
import shutil

import pytest

from device.daemon.labels import dataset_folder
from device.settings.config import load_config
from tests.helpers import alarming_daemon, calibrate_on_files, run_cli, write_config

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_label_an_alarm_export_it_and_train_on_it(broker, subscribe, unique_prefix, trained_model, demo_data, tmp_path):
    fault = sorted((demo_data / "pump" / "test").glob("anomaly_id_00_*.wav"))[0]
    daemon, start, evidence = alarming_daemon(
        tmp_path, trained_model, fault, broker, subscribe, unique_prefix, "pump-6"
    )
    cfg = daemon.config
    dataset = dataset_folder(load_config(cfg))

    def label(args: dict) -> dict:
        return daemon.command("label", args)

    try:
        event = start["event_id"]
        first = label({"event_id": event, "label": "false_alarm"})
        assert first["ok"], first
        assert (dataset / "normal" / start["evidence"]).read_bytes() == (evidence / start["evidence"]).read_bytes()
        moved = label({"event_id": event, "label": "impeller_wear"})  # relabelled: moved, never in two folders
        assert moved["ok"] and not (dataset / "normal" / start["evidence"]).exists()
        assert (dataset / "impeller_wear" / start["evidence"]).exists()
        for args, needle in (
            ({"event_id": event, "label": "normal"}, "false_alarm"),
            ({"event_id": event, "label": "../x"}, "label"),
            ({"event_id": event, "label": ""}, "label"),
            ({"event_id": "0" * 32, "label": "false_alarm"}, "no evidence clip"),
            ({"event_id": event}, "needs 'label'"),
        ):
            refused = label(args)
            assert not refused["ok"] and needle in refused["error"], (args, refused)
    finally:
        assert daemon.stop() == 0, daemon.log()

    # A normal clip labelled too (as the daemon would have stored one), then the manifest training reads.
    shutil.copy(sorted((demo_data / "pump" / "test").glob("normal_id_00_*.wav"))[0], dataset / "normal" / "n0.wav")
    out = run_cli("device", "export-labels", "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    manifest = dataset / "manifest.csv"
    assert "2 clip(s) (1 impeller_wear, 1 normal)" in out.stdout and str(manifest) in out.stdout
    from training.datasets import discover

    labels = sorted(r.label for r in discover(manifest))
    assert labels == ["impeller_wear", "normal"]

    # The false alarm joins the next calibration's normal audio (--force: the config's threshold of 1e-6, which made
    # every window alarm above, is far below what normal audio calls for, and calibrate would refuse the jump).
    calibrated = calibrate_on_files(cfg, demo_data / "pump" / "train", 2, "--force")
    assert calibrated.returncode == 0, calibrated.stderr
    assert json.loads(calibrated.stdout)["false_alarm_clips"] == 1


def test_export_labels_of_an_empty_dataset_is_one_line(trained_model, tmp_path):
    cfg = write_config(tmp_path, trained_model, device={"id": "pump-1", "site": "lab"})
    out = run_cli("device", "export-labels", "--config", str(cfg))
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert [line for line in out.stderr.splitlines() if line.startswith("error:")] == [
        next(line for line in out.stderr.splitlines() if "no labelled clips" in line)
    ]

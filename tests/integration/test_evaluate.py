"""`python -m training evaluate` on the demo pump with a model trained in this run: scores are the device's own."""

from __future__ import annotations

import argparse
import csv
import json
import shutil

import pytest

from device.errors import AcmonError
from tests.helpers import run_cli
from training import datasets
from training.evaluate import evaluate, find_test_clips, run_evaluate


@pytest.fixture(scope="module")
def evaluation(trained_model, demo_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    return evaluate(trained_model, demo_data / "pump", out, progress=False), out


@pytest.mark.slow
def test_report_files_and_structure(evaluation, demo_data):
    report, out = evaluation
    for name in ("scores.csv", "report.json", "report.md", "roc.png"):
        assert (out / name).is_file(), name
    assert (out / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["groups"] == report["groups"]
    assert report["clips"]["total"] == report["clips"]["read"] == 8
    assert report["clips"]["unreadable"] == [] and report["clips"]["unscored"] == []
    (group,) = report["groups"]
    assert (group["machine_type"], group["machine_id"], group["n_normal"], group["n_anomaly"]) == ("pump", "00", 4, 4)
    assert group["auc"] > 0.7, group
    assert 0.0 <= group["pauc"] <= 1.0 and group["auc_note"] is None
    cm = group["confusion"]
    assert cm["tp"] + cm["fn"] == 4 and cm["fp"] + cm["tn"] == 4
    overall = report["overall"]
    assert overall["mean_auc"] == pytest.approx(group["auc"]) and overall["hmean_auc"] == pytest.approx(group["auc"])
    assert overall["dcase_official_score"] is not None
    md = (out / "report.md").read_text()
    assert md == report["markdown"] and "| pump | 00 | 4 | 4 |" in md


@pytest.mark.slow
def test_int8_scores_are_what_device_score_prints(evaluation, trained_model):
    report, out = evaluation
    with open(out / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8
    result = run_cli("device", "score", "--model", str(trained_model), *[r["path"] for r in rows])
    assert result.returncode == 0, result.stderr
    device = {d["path"]: d for d in map(json.loads, result.stdout.splitlines())}
    for row in rows:
        d = device[row["path"]]
        assert float(row["int8_score"]) == pytest.approx(d["score"], abs=1.5e-6), row["path"]
        assert int(row["events"]) == d["events"]
        assert bool(int(row["anomaly_decision"])) == d["anomaly"]


@pytest.mark.slow
def test_float_int8_parity(evaluation):
    report, _ = evaluation
    parity = report["float_int8_parity"]
    assert parity["available"], parity
    overall = parity["overall"]
    assert overall["n_clips"] == 8
    assert overall["score_correlation"] > 0.98, overall
    assert abs(overall["mean_auc_float"] - overall["mean_auc_int8"]) <= 0.05, overall
    assert report["groups"][0]["parity"]["auc_int8"] == pytest.approx(report["groups"][0]["auc"])


@pytest.mark.slow
def test_unreadable_clip_missing_anomalies_and_no_float_model(trained_model, demo_data, tmp_path, capsys):
    """A broken file is named and skipped; an id with only normal clips has AUC null with a reason."""
    data = tmp_path / "pump"
    shutil.copytree(demo_data / "pump" / "test", data / "test")
    (data / "test" / "normal_id_00_00000099.wav").write_bytes(b"not a wav file")
    for src in sorted((data / "test").glob("normal_id_00_0000000[01].wav")):
        shutil.copy(src, data / "test" / src.name.replace("id_00", "id_05"))
    (data / "test" / "notes.wav").write_bytes(b"")
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(trained_model / "model.tflite", model / "model.tflite")

    args = argparse.Namespace(model=str(model), data=str(tmp_path), out=None, config=None)
    assert run_evaluate(args) == 0
    printed = capsys.readouterr().out
    report = json.loads((model / "evaluation" / "report.json").read_text())
    assert printed == (model / "evaluation" / "report.md").read_text()
    assert [u["path"] for u in report["clips"]["unreadable"]] == [str(data / "test" / "normal_id_00_00000099.wav")]
    assert [i["path"] for i in report["clips"]["ignored"]] == [str(data / "test" / "notes.wav")]
    by_id = {g["machine_id"]: g for g in report["groups"]}
    assert by_id["00"]["auc"] is not None and by_id["00"]["n_normal"] == 4
    assert by_id["05"]["auc"] is None and by_id["05"]["pauc"] is None
    assert "no scored anomalous clip" in by_id["05"]["auc_note"]
    assert report["overall"]["n_ids"] == 2 and report["overall"]["n_ids_with_auc"] == 1
    assert report["overall"]["mean_auc"] == pytest.approx(by_id["00"]["auc"])
    assert not report["float_int8_parity"]["available"] and "no float model" in report["float_int8_parity"]["note"]
    assert "normal_id_00_00000099.wav" in printed and "no scored anomalous clip" in printed
    assert (model / "evaluation" / "roc.png").is_file()


def test_find_test_clips_layouts_and_errors(tmp_path):
    for machine in ("fan", "pump"):
        (tmp_path / machine / "test").mkdir(parents=True)
        for name in ("normal_id_00_00000000.wav", "anomaly_id_02_00000001.wav"):
            (tmp_path / machine / "test" / name).write_bytes(b"")
    clips = find_test_clips(tmp_path).clips
    assert [(c.machine_type, c.machine_id, c.label) for c in clips] == [
        ("fan", "02", "anomaly"),
        ("fan", "00", "normal"),
        ("pump", "02", "anomaly"),
        ("pump", "00", "normal"),
    ]
    assert len(find_test_clips(tmp_path / "pump").clips) == 2
    with pytest.raises(AcmonError, match="no such data folder"):
        find_test_clips(tmp_path / "missing")
    (tmp_path / "empty" / "test").mkdir(parents=True)
    with pytest.raises(AcmonError, match="no labelled test clips"):
        find_test_clips(tmp_path / "empty")


@pytest.mark.skipif(not hasattr(datasets, "discover"), reason="training.datasets.discover() not available")
def test_find_test_clips_other_layouts_through_discover(tmp_path):
    for label, names in (("normal", ("a.wav", "b.wav")), ("bearing_fault", ("c.wav",))):
        (tmp_path / label).mkdir()
        for name in names:
            (tmp_path / label / name).write_bytes(b"")
    clips = find_test_clips(tmp_path).clips
    assert sorted((c.path.name, c.label, c.is_anomaly) for c in clips) == [
        ("a.wav", "normal", False),
        ("b.wav", "normal", False),
        ("c.wav", "bearing_fault", True),
    ]

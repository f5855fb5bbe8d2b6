"""On-site calibration of a Gaussian model learns the site's normal: a neighbouring machine's hum stops raising alarms.

The model is trained on the demo pump; the "site" is the same kind of pump with a neighbour's 180 Hz hum
as loud as it, which the training data never had. Through the CLI as a technician runs it: score before,
calibrate on 3 minutes of the site's normal sound, score after, roll back.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from device.analysis.gaussian import SITE_FILE_PREFIX
from device.audio.audio_io import read_wav, write_wav
from device.daemon.site_config import calibration_paths
from tests.helpers import calibrate_on_files, run_cli


def _with_hum(src: Path, dest: Path, rng: np.random.Generator) -> None:
    x, rate = read_wav(src)
    x = x.reshape(len(x), -1)[:, 0].astype(np.float32)
    t = np.arange(len(x)) / rate
    hum = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) / k for k, f in enumerate((180, 360, 540), 1))
    hum *= np.sqrt(np.mean(x**2)) / np.sqrt(np.mean(hum**2))
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_wav(dest, (x + hum).astype(np.float32), rate)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """3 minutes of the site's normal sound, and 4 normal + 4 faulty test clips, all with the neighbour's hum."""
    from training.synth import DEMO_FAULT_STRENGTH_RANGE, DEMO_SNR_DB_RANGE, make_dataset

    root = tmp_path_factory.mktemp("site")
    make_dataset(
        root / "raw",
        machine_types=("pump",),
        machine_ids=(0,),
        n_train=30,
        n_test_normal=4,
        n_test_anomaly=4,
        seconds=6.0,
        snr_db_range=DEMO_SNR_DB_RANGE,
        fault_strength_range=DEMO_FAULT_STRENGTH_RANGE,
        seed=7,
        progress=False,
    )
    rng = np.random.default_rng(0)
    for wav in sorted((root / "raw").rglob("*.wav")):
        _with_hum(wav, root / "wav" / wav.relative_to(root / "raw"), rng)
    return root


def _score(model: Path, config: Path, site: Path) -> dict[str, list[bool]]:
    out = run_cli(
        "device", "score", "--model", str(model), "--config", str(config), str(site / "wav" / "pump" / "test")
    )
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    return {
        label: [r["anomaly"] for r in rows if Path(r["path"]).name.startswith(label)] for label in ("normal", "anomaly")
    }


def test_site_statistics_silence_the_site_and_keep_the_faults(trained_model, site, tmp_path):
    config = tmp_path / "device.yaml"
    config.write_text(f"model: {{path: {trained_model}}}\nmqtt: {{enabled: false}}\n")
    before = _score(trained_model, config, site)
    assert sum(before["normal"]) >= 3, f"the hum should read as a fault before calibration: {before}"

    out = calibrate_on_files(config, site / "wav" / "pump" / "train", 3)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["site_statistics"] and result["site_statistics"].startswith(SITE_FILE_PREFIX)
    folder = calibration_paths(config)[0].parent  # the state directory, not beside the config
    assert (folder / result["site_statistics"]).exists()

    after = _score(trained_model, config, site)
    assert not any(after["normal"]), f"the site's normal sound still alarms after calibration: {after}"
    assert all(after["anomaly"]), f"faults must still be found against the site's normal: {after}"

    # A second calibration keeps the first one's file for rollback; rolling back restores it and scores as before.
    first = result["site_statistics"]
    out = calibrate_on_files(config, site / "wav" / "pump" / "train", 2.5)
    assert out.returncode == 0, out.stderr
    second = json.loads(out.stdout)["site_statistics"]
    assert second != first and {p.name for p in folder.glob(f"{SITE_FILE_PREFIX}*")} == {first, second}
    assert run_cli("device", "calibrate", "--config", str(config), "--rollback").returncode == 0
    current, _ = calibration_paths(config)
    assert first in current.read_text()


def test_site_statistics_of_another_model_are_refused(trained_model, tmp_path):
    """A calibration made with one model must not silently score another: the error names both and what to do."""
    from device.analysis.gaussian import fit_scorer

    rng = np.random.default_rng(0)
    segments = [rng.standard_normal((150, 128)) for _ in range(4)]
    stats, _ = fit_scorer(segments, range(4), ("window", "context"), "pump", "19990101T000000Z")
    name = stats.save(tmp_path).name
    config = tmp_path / "device.yaml"
    config.write_text(f"model: {{path: {trained_model}, site_statistics: {name}}}\nmqtt: {{enabled: false}}\n")
    wav_dir = tmp_path / "none"
    out = run_cli("device", "score", "--model", str(trained_model), "--config", str(config), str(wav_dir))
    assert out.returncode != 0
    error = out.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ") and "19990101T000000Z" in error and "recalibrate" in error

"""Hostile audio through a real model: damaged samples in the pipeline, damaged files in score/replay and fit.

Measured before the fix: a float WAV with 1e30 samples raised an alarm, NaN was scored silently, a 1 Hz header
ran `score` for over 600 s, and one NaN file among good ones left a broken model.tflite in `fit --out`.
"""

from __future__ import annotations

import json
import logging
import shutil
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from device.analysis.features import FeatureParams, extract_patch
from device.analysis.inference import AnomalyModel
from device.audio.audio_io import read_wav, write_wav
from device.audio.sources import WavFileStream
from device.decisions.detector import DetectorSettings
from device.errors import AcmonError
from device.pipeline import Pipeline, iter_windows
from tests.helpers import run_cli
from training.fit import FitOptions, fit

pytestmark = pytest.mark.slow

RATE = 16000


def _normal(demo_data: Path, split: str = "test", k: int = 0) -> np.ndarray:
    path = sorted((demo_data / "pump" / split).glob("normal_*.wav"))[k]
    samples, rate = read_wav(path)
    assert rate == RATE
    return samples[:, 0]


def _damaged(demo_data: Path, value: float, at: slice = slice(20000, 20100)) -> np.ndarray:
    x = _normal(demo_data).copy()
    x[at] = value
    return x


def _one_hz(path: Path, seconds: float = 5.0) -> Path:
    x = (np.random.default_rng(0).standard_normal(int(RATE * seconds)) * 3000).astype("<i2")
    fmt = struct.pack("<HHIIHH", 1, 1, 1, 2, 2, 16)
    body = b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", x.nbytes) + x.tobytes()
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def _no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr and "RuntimeWarning" not in stderr, stderr[-3000:]


# ---------------------------------------------------------------------------------------- pipeline


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 1e30, 2e3])
def test_window_with_damaged_samples_is_gated_counted_and_clears_the_context(trained_model, demo_data, value):
    model = AnomalyModel(trained_model)
    pipe = Pipeline(model, DetectorSettings(threshold=model.threshold))
    assert pipe.nonfinite_windows == 0
    x = _damaged(demo_data, value)
    results = [r for start in range(0, len(x), 1000) for r in pipe.process(x[start : start + 1000])]
    bad = [r for r in results if r.nonfinite]
    p = model.params
    # Every window that overlaps samples 20000..20099, and only those.
    expected = [r.index for r in results if r.start_sample < 20100 and r.start_sample + p.window_samples > 20000]
    assert [r.index for r in bad] == expected and len(expected) == 2
    assert pipe.nonfinite_windows == 2
    assert all(r.score is None and r.model_score is None for r in bad)
    assert all(np.isfinite(r.rms_dbfs) and np.isfinite(r.steady_dbfs) for r in bad)  # levels of the rest
    assert all(r.score is not None for r in results if not r.nonfinite)
    assert not any(t.state == "start" for r in results for t in r.transitions)
    # The score context restarts after the gap, as after a quiet window.
    state = model.new_score_state()
    after = [r for r in results if r.index > bad[-1].index]
    windows = {w.index: w for w in _windows(x, p)}
    for r in after:
        expected_score, _ = model.evaluate(extract_patch(windows[r.index].samples, p), state)
        assert r.score == pytest.approx(expected_score, rel=1e-6)


def _windows(x, p):
    return list(iter_windows([x], p))


def test_a_fault_with_a_few_damaged_samples_still_alarms(trained_model, demo_data):
    """No event lost to the gate: 100 NaN samples cost their windows, not the fault's alarm."""
    model = AnomalyModel(trained_model)

    def starts(x: np.ndarray) -> int:
        pipe = Pipeline(model, DetectorSettings(threshold=model.threshold))
        transitions = [t for r in pipe.process(x) for t in r.transitions] + pipe.close()
        return sum(t.state == "start" for t in transitions)

    alarmed = 0
    for path in sorted((demo_data / "pump" / "test").glob("anomaly_id_00_*.wav")):
        x = read_wav(path)[0][:, 0]
        clean = starts(x)
        x = x.copy()
        x[20000:20100] = np.nan
        assert starts(x) >= clean, path.name
        alarmed += clean > 0
    assert alarmed >= 2


def test_calibration_scoring_never_scores_damaged_windows(trained_model, demo_data):
    model = AnomalyModel(trained_model)
    pipe = Pipeline(model, DetectorSettings(threshold=model.threshold), score_all=True)
    results = pipe.process(_damaged(demo_data, np.nan))
    assert [r.model_score for r in results if r.nonfinite] == [None, None]
    assert all(r.model_score is not None for r in results if not r.nonfinite)


def test_counter_survives_reset_and_warns_once_per_stream(trained_model, demo_data, caplog):
    model = AnomalyModel(trained_model)
    pipe = Pipeline(model, DetectorSettings(threshold=model.threshold))
    x = _normal(demo_data).copy()
    x[[5000, 40000, 70000]] = np.nan  # three separate stretches of damage in one stream
    with caplog.at_level(logging.WARNING, logger="device.pipeline"):
        pipe.process(x)
        first = pipe.nonfinite_windows
        pipe.reset()
        pipe.process(x)
    warnings = [r.getMessage() for r in caplog.records if r.name == "device.pipeline"]
    assert first >= 5 and pipe.nonfinite_windows == 2 * first
    assert len(warnings) == 2, warnings  # one per stream, not one per window
    assert "NaN" in warnings[0] and "not scored" in warnings[0]


def test_clean_audio_is_scored_exactly_as_before(trained_model, demo_data):
    """The check adds no change to clean windows: same scores as calling the model directly."""
    model = AnomalyModel(trained_model)
    pipe = Pipeline(model, DetectorSettings(threshold=model.threshold))
    x = _normal(demo_data)
    results = pipe.process(x)
    state = model.new_score_state()
    for r, w in zip(results, _windows(x, model.params)):
        assert r.score == pytest.approx(model.evaluate(extract_patch(w.samples, model.params), state)[0], rel=1e-6)
    assert pipe.nonfinite_windows == 0 and not any(r.nonfinite for r in results)


# ---------------------------------------------------------------------------------------- score / replay


def test_score_does_not_alarm_on_damaged_samples(trained_model, demo_data, tmp_path):
    """Measured: the 1e30 file raised an alarm and NaN was scored silently. Now: not scored, named, no alarm."""
    files = {}
    for name, value in (("big", 1e30), ("inf", np.inf), ("nan", np.nan)):
        files[name] = tmp_path / f"{name}.wav"
        write_wav(files[name], _damaged(demo_data, value), RATE, "float32")
    out = run_cli("device", "score", "--model", str(trained_model), *map(str, files.values()), timeout=120)
    assert out.returncode == 0, out.stderr
    _no_traceback(out.stderr)
    rows = {Path(json.loads(line)["path"]).stem: json.loads(line) for line in out.stdout.splitlines()}
    for name, path in files.items():
        assert rows[name]["events"] == 0 and not rows[name]["anomaly"], rows[name]
        assert np.isfinite(rows[name]["score"])
        assert f"{path}: 100 sample(s) are NaN, infinite or beyond 1000 full scale (first at 1.250 s)" in out.stderr


@pytest.mark.parametrize("command", ["score", "replay"])
def test_one_hz_header_is_one_line_error_at_once(trained_model, tmp_path, command):
    """Measured: over 600 s of score/replay. Now one line naming the file, in the time it takes to start."""
    path = _one_hz(tmp_path / "one_hz.wav")
    started = time.monotonic()
    out = run_cli("device", command, "--model", str(trained_model), str(path), timeout=60)
    assert time.monotonic() - started < 30
    assert out.returncode == 1
    _no_traceback(out.stderr)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(path) in errors[0] and "sample rate of 1 Hz" in errors[0], out.stderr


# ---------------------------------------------------------------------------------------- fit


def _training_folder(demo_data: Path, folder: Path, n: int = 8) -> Path:
    folder.mkdir()
    for path in sorted((demo_data / "pump" / "train").glob("normal_*.wav"))[:n]:
        shutil.copy(path, folder / path.name)
    return folder


def test_fit_skips_and_names_damaged_files_and_writes_a_working_model(demo_data, tmp_path):
    """Measured: one NaN file among good ones failed fit after it wrote a broken model.tflite. Now skipped, named."""
    data = _training_folder(demo_data, tmp_path / "data")
    train = _normal(demo_data, "train", 9)
    for name, value in (("nan", np.nan), ("big", 1e30), ("inf", -np.inf)):
        x = train.copy()
        x[RATE : RATE + 10] = value
        write_wav(data / f"zz_{name}.wav", x, RATE, "float32")
    _one_hz(data / "zz_one_hz.wav")
    out = run_cli(
        "training",
        "fit",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "model"),
        env={"XDG_CACHE_HOME": str(tmp_path / "cache")},
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    _no_traceback(out.stderr)
    for name in ("zz_nan", "zz_big", "zz_inf", "zz_one_hz"):
        assert f"skipping {data / name}.wav: " in out.stderr, (name, out.stderr[-3000:])
    summary = json.loads((tmp_path / "model" / "training_summary.json").read_text())
    assert sorted(Path(s["source"]).name for s in summary["skipped"]) == [
        "zz_big.wav",
        "zz_inf.wav",
        "zz_nan.wav",
        "zz_one_hz.wav",
    ]
    assert summary["model"] == str(tmp_path / "model" / "model.tflite")
    assert np.isfinite(summary["threshold"])
    model = AnomalyModel(tmp_path / "model")
    pipe = Pipeline(model, DetectorSettings(threshold=model.threshold))
    clip = sorted((demo_data / "pump" / "test").glob("normal_*.wav"))[0]
    scores = [r.score for block in WavFileStream(clip, RATE).blocks() for r in pipe.process(block)]
    assert scores and all(s is not None and np.isfinite(s) for s in scores)
    assert not list(tmp_path.glob(".model.partial-*"))


def test_fit_that_fails_at_the_end_leaves_out_as_it_was(demo_data, tmp_path):
    """--out holding a folder where the summary goes: before, fit wrote model.tflite, then an IsADirectoryError
    traceback. Now one line, and no new file in --out."""
    data = _training_folder(demo_data, tmp_path / "data", n=6)
    out = tmp_path / "model"
    (out / "training_summary.json").mkdir(parents=True)
    with pytest.raises(AcmonError) as e:
        fit(data, out, _params(), FitOptions(seed=0, cache_dir=str(tmp_path / "cache")), progress=False)
    assert "training_summary.json" in str(e.value) and "\n" not in str(e.value)
    assert sorted(p.name for p in out.iterdir()) == ["training_summary.json"]
    assert not list(tmp_path.glob(".model.partial-*"))


def test_fit_that_crashes_after_export_keeps_the_previous_model(demo_data, trained_model, tmp_path, monkeypatch):
    """The autoencoder path writes model.tflite before calibrating it: a crash there used to leave an uncalibrated
    model (threshold 1.0) in --out. Now --out keeps the previous model, byte for byte."""
    import training.fit

    data = _training_folder(demo_data, tmp_path / "data", n=6)
    out = tmp_path / "model"
    shutil.copytree(trained_model, out, ignore=shutil.ignore_patterns("cache"))
    before = (out / "model.tflite").read_bytes()

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash during calibration")

    monkeypatch.setattr(training.fit, "calibrate_threshold", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(
            data,
            out,
            _params(),
            FitOptions(
                seed=0, model="autoencoder", epochs=1, max_patches_per_epoch=64, cache_dir=str(tmp_path / "cache")
            ),
            progress=False,
        )
    assert (out / "model.tflite").read_bytes() == before
    assert not list(tmp_path.glob(".model.partial-*"))


def test_fit_out_that_is_a_file_is_one_line_error(demo_data, tmp_path):
    data = _training_folder(demo_data, tmp_path / "data", n=2)
    (tmp_path / "model").write_text("not a folder")
    with pytest.raises(AcmonError, match=r"model: is a file, not a folder"):
        fit(data, tmp_path / "model", _params(), FitOptions(seed=0, cache_dir=str(tmp_path / "cache")), progress=False)


def _params():
    return FeatureParams()

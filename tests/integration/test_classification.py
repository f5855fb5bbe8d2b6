"""Sound classification: labels with no 'normal' train a multi-class int8 CNN, cross-validated over the manifest's
folds beside the classical baselines; the device's score names the class, and run refuses the model."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from device.analysis.features import FeatureParams
from device.analysis.inference import AnomalyModel
from device.audio.audio_io import write_wav
from device.errors import AcmonError
from tests.helpers import require, run_cli
from training.fit import FitOptions, fit

pytestmark = pytest.mark.slow

RATE = 16000
CLASSES = {"hum": 150.0, "whistle": 2500.0, "buzz": 700.0}


def _clip(tone_hz: float, seed: int, seconds: float = 2.2) -> np.ndarray:
    """A tone with its harmonics in noise: each class is one fundamental, each clip another level and phase."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(RATE * seconds)) / RATE
    x = sum(np.sin(2 * np.pi * tone_hz * k * t + rng.uniform(0, 6)) / k for k in (1, 2, 3))
    return (0.1 * rng.uniform(0.5, 1.5) * x + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def _dataset(folder: Path, per_fold: int = 2, folds=(1, 2, 3), rows: list[str] | None = None) -> Path:
    """WAVs and a manifest path,label,fold; rows replaces the manifest's lines when given."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["path,label,fold"]
    seed = 0
    for label, tone in CLASSES.items():
        for fold in folds:
            for k in range(per_fold):
                seed += 1
                name = f"{label}_{fold}_{k}.wav"
                write_wav(folder / name, _clip(tone, seed), RATE)
                lines.append(f"{name},{label},{fold}")
    (folder / "manifest.csv").write_text("\n".join(rows if rows is not None else lines) + "\n")
    return folder / "manifest.csv"


def _require_sklearn() -> None:
    require(
        importlib.util.find_spec("sklearn") is not None, "scikit-learn not installed: pip install 'acmon[workbench]'"
    )


def _options(tmp: Path, **changes) -> FitOptions:
    return FitOptions(
        epochs=3, max_patches_per_epoch=160, representative_patches=40, cache_dir=str(tmp / "cache"), **changes
    )


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """(model folder, manifest, summary, log text) of one fit on 3 classes x 3 folds."""
    tmp = tmp_path_factory.mktemp("classify")
    manifest = _dataset(tmp / "data")
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Keep(level=logging.INFO)
    root = logging.getLogger("training")
    old_level = root.level
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        summary = fit(manifest, tmp / "model", FeatureParams(), _options(tmp), progress=False)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    return tmp / "model", manifest, summary, "\n".join(records)


def test_fit_picks_classification_and_reports_folds(classifier):
    model_dir, _, summary, log = classifier
    assert "task: sound classification, 3 classes (no 'normal' label)" in log
    assert summary["task"] == "classification" and summary["labels"] == sorted(CLASSES)
    cv = summary["cross_validation"]
    assert [f["fold"] for f in cv["folds"]] == [1, 2, 3]
    assert all(f["test_clips"] == 6 for f in cv["folds"])
    assert 0.0 <= cv["mean_accuracy"] <= 1.0
    for name in ("confusion_matrix.png", "training_curves.png", "per_class.md", "per_class.json", "comparison.md"):
        assert (model_dir / name).stat().st_size > 0, name
    per_class = json.loads((model_dir / "per_class.json").read_text())
    assert set(per_class["classes"]) == set(CLASSES) and per_class["clips"] == 18
    meta = AnomalyModel(model_dir / "model.tflite").metadata
    assert meta.task == "classification" and meta.score_kind == "class_probability"
    assert list(meta.labels) == sorted(CLASSES)
    assert meta.training["cross_validation"]["folds"][0]["fold"] == 1


def test_classical_table_has_every_model_beside_the_cnn(classifier):
    _require_sklearn()
    _, _, summary, _ = classifier
    rows = summary["comparison"]
    classical = ["SVM (RBF)", "random forest", "gradient boosting", "MLP"]
    # BirdNET's embedding is a feature set of its own where its model is installed (setup.sh installs it; CI has it).
    embedded = (
        ["BirdNET embedding"] if "BirdNET embedding" in {r["features"] for r in rows} or os.environ.get("CI") else []
    )
    assert [(r["features"], r["model"]) for r in rows] == [
        ("log-mel patches", "CNN (int8)"),
        *[(features, model) for features in ["log-mel mean+std", *embedded] for model in classical],
    ]
    for row in rows:
        assert [f["fold"] for f in row["folds"]] == [1, 2, 3]
        assert 0.0 <= row["mean_accuracy"] <= 1.0
    # Tones a classical model separates at once: the baselines are measured, not just listed.
    assert max(r["mean_accuracy"] for r in rows[1:]) >= 0.8


def test_device_score_names_the_class(classifier):
    model_dir, manifest, _, _ = classifier
    wavs = [manifest.parent / "hum_1_0.wav", manifest.parent / "whistle_2_1.wav"]
    result = run_cli("device", "score", *map(str, wavs), "--model", str(model_dir))
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["path"] for line in lines] == [str(w) for w in wavs]
    for line in lines:
        assert line["label"] in CLASSES and line["score"] == line["probability"]
        assert 0.0 < line["probability"] <= 1.0 and set(line["probabilities"]) == set(CLASSES)


def test_evaluate_draws_the_confusion_matrix(classifier, tmp_path):
    model_dir, manifest, _, _ = classifier
    result = run_cli("training", "evaluate", "--model", str(model_dir), "--data", str(manifest), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| class | precision | recall | clips |" in result.stdout
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 0
    assert json.loads((tmp_path / "per_class.json").read_text())["clips"] == 18


def test_device_run_refuses_a_classifier(classifier):
    model_dir, manifest, _, _ = classifier
    result = run_cli("device", "replay", "--model", str(model_dir), str(manifest.parent / "hum_1_0.wav"))
    assert result.returncode != 0
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "sound classification model" in error[0] and "device score" in error[0]
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------- hostile


def test_junk_fold_is_one_line(tmp_path):
    manifest = _dataset(tmp_path / "data", per_fold=1)
    lines = manifest.read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0] + ",two"
    manifest.write_text("\n".join(lines) + "\n")
    result = run_cli("training", "fit", "--data", str(manifest), "--out", str(tmp_path / "m"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "fold 'two'" in error[0] and "manifest.csv:3" in error[0]


def test_single_class_is_refused(tmp_path):
    manifest = _dataset(tmp_path / "data", per_fold=1)
    lines = manifest.read_text().splitlines()
    only = [lines[0], *[line for line in lines[1:] if ",hum," in line]]
    manifest.write_text("\n".join(only) + "\n")
    with pytest.raises(AcmonError, match="every recording is labelled 'hum'"):
        fit(manifest, tmp_path / "m", FeatureParams(), _options(tmp_path), progress=False)
    assert not (tmp_path / "m").exists()


def test_class_with_one_clip_is_refused(tmp_path):
    manifest = _dataset(tmp_path / "data", per_fold=1)
    lines = manifest.read_text().splitlines()
    kept = [lines[0], *[line for line in lines[1:] if ",buzz," not in line or line.startswith("buzz_1_")]]
    manifest.write_text("\n".join(kept) + "\n")
    with pytest.raises(AcmonError, match="class 'buzz' has only 1 recording"):
        fit(manifest, tmp_path / "m", FeatureParams(), _options(tmp_path), progress=False)


def test_folds_from_urbansound8k_paths(tmp_path):
    """No fold column: the fold in the path (audio/fold3/... or fold3_...), and paths that start with the dataset's
    own folder resolve against the folder holding it (the shared UrbanSound8K subset's manifest)."""
    from training.datasets import discover, folds

    data = tmp_path / "us8k"
    (data / "audio" / "fold7").mkdir(parents=True)
    write_wav(data / "audio" / "fold3_1-0-0-0.wav", _clip(150.0, 1), RATE)
    write_wav(data / "audio" / "fold7" / "2-1-0-0.wav", _clip(700.0, 2), RATE)
    write_wav(data / "audio" / "x_fold9.wav", _clip(700.0, 3), RATE)
    (data / "manifest.csv").write_text(
        "path,label\nus8k/audio/fold3_1-0-0-0.wav,a\naudio/fold7/2-1-0-0.wav,b\naudio/x_fold9.wav,b\n"
    )
    records = discover(data, FeatureParams())
    assert [r.fold for r in records] == [3, 7, None] and folds(records) == [3, 7]


def test_mlp_exports_to_int8(tmp_path):
    """fit --model mlp: scikit-learn's MLP rebuilt as int8 TFLite, its int8 clip accuracy beside the float one."""
    _require_sklearn()
    manifest = _dataset(tmp_path / "data")
    summary = fit(manifest, tmp_path / "m", FeatureParams(), _options(tmp_path, model="mlp"), progress=False)
    assert summary["task"] == "classification" and summary["model_kind"] == "mlp"
    cv = summary["cross_validation"]
    assert [f["fold"] for f in cv["folds"]] == [1, 2, 3]
    for fold in cv["folds"]:
        assert abs(fold["accuracy"] - fold["float_accuracy"]) <= 1 / 6 + 1e-9  # at most one of 6 clips differs
    assert summary["training"]["training_clip_accuracy"]["int8"] >= 0.9
    assert summary["comparison"][0]["model"] == "MLP (int8, device)"
    result = run_cli("device", "score", str(manifest.parent / "buzz_2_0.wav"), "--model", str(tmp_path / "m"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["label"] == "buzz"


def test_mlp_is_for_classification_only(tmp_path):
    manifest = _dataset(tmp_path / "data", per_fold=1)
    text = manifest.read_text().replace(",hum,", ",normal,")
    manifest.write_text(text)
    with pytest.raises(AcmonError, match="model 'mlp' is for sound classification"):
        fit(manifest, tmp_path / "m", FeatureParams(), _options(tmp_path, model="mlp"), progress=False)


def test_metadata_task_must_fit_the_score():
    """A classification model scores by class_probability with two labels or more; nothing else does."""
    from pydantic import ValidationError

    from device.analysis.metadata import ModelMetadata

    base = {"name": "m", "version": "1", "feature_params": FeatureParams(), "threshold": 0.5}
    ok = ModelMetadata.model_validate(
        {**base, "score_kind": "class_probability", "task": "classification", "labels": ["a", "b"]}
    )
    assert ok.task == "classification"
    assert ModelMetadata.model_validate({**base, "score_kind": "anomaly_probability"}).task == "anomaly_detection"
    for bad in (
        {"score_kind": "class_probability", "labels": ["a", "b"]},  # task left at anomaly_detection
        {"score_kind": "anomaly_probability", "task": "classification", "labels": ["a", "b"]},
        {"score_kind": "class_probability", "task": "classification", "labels": ["a"]},
    ):
        with pytest.raises(ValidationError):
            ModelMetadata.model_validate({**base, **bad})

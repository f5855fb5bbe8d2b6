"""Labelled faults train the classifier: a folder per label in, anomaly_probability model out."""

from __future__ import annotations

import json

import pytest

from device.analysis.features import FeatureParams
from device.analysis.model_file import load_metadata
from device.audio.audio_io import write_wav
from tests.helpers import run_cli
from tests.mqtt_support import validate
from training.fit import FitOptions, fit
from training.synth import render_clip

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def labelled_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("labelled")
    for label, fault in (("normal", None), ("bearing_fault", "bearing"), ("cavitation", "cavitation")):
        (root / label).mkdir()
        # More normal clips than fault clips, as in the field: the held-out normals set the threshold.
        for k in range(16 if fault is None else 8):
            clip = render_clip("pump", 1, seconds=4.0, fault=fault, fault_strength=0.9, snr_db=9.0, seed=100 + k)
            write_wav(root / label / f"{label}_{k}.wav", clip, 16000)
    test = root.parent / (root.name + "-test")
    test.mkdir()
    write_wav(test / "fault.wav", render_clip("pump", 1, 6.0, fault="bearing", fault_strength=0.9, seed=999), 16000)
    write_wav(test / "clean.wav", render_clip("pump", 1, 6.0, fault=None, seed=998), 16000)
    return root, test


@pytest.fixture(scope="module")
def classifier(labelled_data, tmp_path_factory):
    """The classifier trained on the labelled folders: (its fit summary, its folder)."""
    data, _ = labelled_data
    work = tmp_path_factory.mktemp("classifier")
    summary = fit(
        data,
        work / "model",
        FeatureParams(),
        FitOptions(epochs=15, seed=0, cache_dir=str(work / "c")),
        progress=False,
    )
    return summary, work / "model"


def test_classifier_from_label_folders(labelled_data, classifier):
    _, test = labelled_data
    summary, model = classifier
    assert summary["score_kind"] == "anomaly_probability"
    assert summary["labels"] == ["normal", "bearing_fault", "cavitation"]
    _, _, meta = load_metadata(model)
    assert meta.labels == ("normal", "bearing_fault", "cavitation") and 0 < meta.threshold < 1
    out = run_cli("device", "score", "--model", str(model), str(test))
    assert out.returncode == 0, out.stderr
    rows = {json.loads(line)["path"].rsplit("/", 1)[-1]: json.loads(line) for line in out.stdout.splitlines()}
    assert rows["fault.wav"]["anomaly"] and not rows["clean.wav"]["anomaly"], rows
    assert rows["fault.wav"]["score"] > rows["clean.wav"]["score"]


def test_classifier_events_name_the_fault_class(labelled_data, classifier):
    """A supervised model's events carry the class it predicts, not only 1 - P(normal), and the bands."""
    _, test = labelled_data
    _, model = classifier
    out = run_cli("device", "replay", "--model", str(model), str(test / "fault.wav"), str(test / "clean.wav"))
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    for event in events:
        validate("event", event)
    assert events and all(e["source"].endswith("fault.wav") for e in events), events  # the clean clip: none
    start = next(e for e in events if e["state"] == "start")
    assert start["fault"]["label"] == "bearing_fault" and start["fault"]["probability"] > 0.5, start
    # The start is explained from its own window: one fault class's share of 1 - P(normal), which is the score.
    assert start["fault"]["probability"] <= start["score"] + 0.01
    assert "bands" in start  # fit records the normal band levels for every model kind
    assert "fault bearing_fault" in out.stderr  # the log line says it too

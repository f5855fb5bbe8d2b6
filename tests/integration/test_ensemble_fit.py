"""The Gaussian ensemble's fit on the layouts users have: one long recording, too little audio."""

from __future__ import annotations

import json

import numpy as np
import pytest

from device.analysis.features import FeatureParams
from device.analysis.inference import AnomalyModel
from device.audio.audio_io import write_wav
from device.errors import AcmonError
from tests.helpers import run_cli
from training.fit import HELDOUT_SCORES_FILENAME, FitOptions, fit
from training.synth import render_clip

pytestmark = pytest.mark.slow


def test_one_long_recording_is_cut_into_pieces_for_cross_fitting(tmp_path):
    """A technician records the machine once for 3 minutes: fit cuts it into 1-minute pieces, scores each
    piece with statistics fitted on the others, and the device scores a fault above the healthy machine."""
    data = tmp_path / "data"
    data.mkdir()
    session = render_clip("pump", 3, seconds=190.0, snr_db=9.0, seed=1)  # one session: one background, one gain
    faulty = render_clip("pump", 3, 190.0, fault="cavitation", fault_strength=0.8, snr_db=9.0, seed=1)
    write_wav(data / "pump-running.wav", session[: 180 * 16000], 16000)
    summary = fit(
        data, tmp_path / "model", FeatureParams(), FitOptions(seed=0, cache_dir=str(tmp_path / "c")), progress=False
    )
    assert summary["choice"]["normal_recordings"] == 3
    assert summary["training"]["cross_fitting"]["folds"] == 3
    with np.load(tmp_path / "model" / HELDOUT_SCORES_FILENAME) as heldout:
        assert len(heldout.files) == 3 and all(len(heldout[k]) > 100 for k in heldout.files)
    assert summary["calibration"]["warning"].startswith("3.0 min of held-out normal audio")
    model = AnomalyModel(tmp_path / "model")
    assert model.scorer.members == tuple(summary["members"])

    test = tmp_path / "test"
    test.mkdir()
    # The session's last 10 s, held out, and the same 10 s with a fault. (Another day's background is a change
    # a single session cannot teach: that is what the warning and on-site calibration are for.)
    write_wav(test / "normal.wav", session[180 * 16000 :], 16000)
    write_wav(test / "fault.wav", faulty[180 * 16000 :], 16000)
    out = run_cli("device", "score", "--model", str(tmp_path / "model"), str(test))
    assert out.returncode == 0, out.stderr
    rows = {json.loads(line)["path"].rsplit("/", 1)[-1]: json.loads(line) for line in out.stdout.splitlines()}
    assert rows["fault.wav"]["score"] > 2 * rows["normal.wav"]["score"], rows
    assert not rows["normal.wav"]["anomaly"]


def test_too_little_audio_to_cross_fit_is_one_clear_error(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_wav(data / "short.wav", render_clip("pump", 0, seconds=1.5, seed=2), 16000)
    with pytest.raises(AcmonError, match="too short to cross-fit: need at least 2 recordings"):
        fit(
            data, tmp_path / "model", FeatureParams(), FitOptions(seed=0, cache_dir=str(tmp_path / "c")), progress=False
        )

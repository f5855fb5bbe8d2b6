"""`device score` reads the channel the config names, as run and calibrate do (one source factory)."""

from __future__ import annotations

import json

import numpy as np

from device.audio.audio_io import write_wav
from tests.helpers import run_cli

RATE = 16000


def _stereo(path):
    t = np.arange(RATE * 3, dtype=np.float32) / RATE
    rng = np.random.default_rng(0)
    left = (0.05 * rng.standard_normal(len(t))).astype(np.float32)
    right = (0.3 * np.sin(2 * np.pi * 1000 * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
    write_wav(path, np.stack([left, right], axis=1), RATE, "float32")
    return left, right


def test_score_reads_the_configured_channel(tmp_path, trained_model):
    """Measured before open_source: `device score` mixed every channel down whatever audio.channel said."""
    _, right = _stereo(tmp_path / "stereo.wav")
    write_wav(tmp_path / "right.wav", right, RATE, "float32")
    cfg = tmp_path / "acmon.yaml"
    cfg.write_text(
        json.dumps(
            {
                "device": {"id": "t", "site": "s"},
                "model": {"path": str(trained_model)},
                "mqtt": {"enabled": False},
                "audio": {"channels": 2, "channel": 1},
            }
        )
    )

    def score(*args: str) -> float:
        out = run_cli("device", "score", "--model", str(trained_model), *args)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.splitlines()[0])["score"]

    configured = score("--config", str(cfg), str(tmp_path / "stereo.wav"))
    assert configured == score(str(tmp_path / "right.wav"))  # channel 1 alone, as a mono file
    assert configured != score(str(tmp_path / "stereo.wav"))  # no config: the mix-down

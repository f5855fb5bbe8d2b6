"""Regenerate the golden front-end values. Only when the front end changes on purpose (and FRONTEND_VERSION is bumped).

Usage: python tests/data/golden/make_golden.py [SOURCE_WAV]
"""

import json
import sys
from pathlib import Path

import numpy as np

from device.audio.audio_io import read_wav, to_mono, write_wav
from device.analysis.features import FeatureParams, compute_logmel, extract_patch

HERE = Path(__file__).resolve().parent
p = FeatureParams()
if len(sys.argv) > 1:  # cut a fresh clip from a recording; otherwise keep the committed WAV
    samples, rate = read_wav(sys.argv[1])
    assert rate == p.sample_rate_hz, rate
    write_wav(HERE / "machine.wav", to_mono(samples)[16000 : 16000 + p.window_samples], rate)
samples, _ = read_wav(HERE / "machine.wav")
x = to_mono(samples)[: p.window_samples]
np.save(HERE / "machine_logmel.npy", compute_logmel(x, p))
np.save(HERE / "machine_patch.npy", extract_patch(x, p))
(HERE / "golden.json").write_text(json.dumps({"feature_params": p.to_dict()}, indent=1) + "\n")
print("wrote", HERE)

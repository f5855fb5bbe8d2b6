"""How long `fit` takes on one hour of 16 kHz audio (issue target: under 10 minutes on 2 CPU cores).

Usage: python benchmarks/bench_training.py [--minutes 60] [--model gaussian|autoencoder] [--keep DIR]

Generates MINUTES of normal synthetic pump audio (10 s clips, DCASE layout), then times
training.fit.fit end to end: decoding into the audio cache, fitting the model (the default
Gaussian model, or the autoencoder with augmentation), int8 conversion and threshold calibration through the device pipeline. Prints the phases'
share from the log timestamps and the summary. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from device.analysis.features import FeatureParams
from training.fit import FitOptions, fit
from training.synth import make_dataset


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="minutes of training audio (default: 60)")
    parser.add_argument(
        "--model", default="gaussian", choices=("gaussian", "autoencoder"), help="model kind (default: gaussian)"
    )
    parser.add_argument("--keep", help="write the dataset and model here instead of a temporary folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="acmon-bench-"))
    n_clips = max(2, round(args.minutes * 6))
    started = time.monotonic()
    make_dataset(
        root / "data", ("pump",), (0,), n_train=n_clips, n_test_normal=0, n_test_anomaly=0, seconds=10.0, seed=0
    )
    generated = time.monotonic() - started
    started = time.monotonic()
    summary = fit(
        root / "data" / "pump",
        root / "model",
        FeatureParams(),
        FitOptions(model=args.model, cache_dir=str(root / "cache")),
    )
    took = time.monotonic() - started
    result = {
        "audio_minutes": n_clips * 10 / 60,
        "generate_seconds": round(generated, 1),
        "fit_seconds": round(took, 1),
        "model": args.model,
        **{
            k: summary["training"][k]
            for k in ("epochs", "windows_per_epoch", "descriptors")
            if k in summary["training"]
        },
        "threshold": summary["threshold"],
        "float_int8_score_correlation": summary["float_int8_parity"]["score_correlation"],
    }
    print(json.dumps(result, indent=2))
    print(f"fit ({args.model}) on {result['audio_minutes']:.0f} min of audio: {took / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())

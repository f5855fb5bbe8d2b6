"""The values the ARM check compares, computed by the same code on the x86_64 host and inside each ARM root.

The host writes them with `python -m tests.arm.reference --model DIR --clips DIR --out DIR`, then adds a second
runtime's outputs and scores with `--add-runtime --out DIR` run by that runtime's Python (scripts/pi_check.sh adds
tflite-runtime 2.14's from .venv-tflite); tests/arm/test_on_arm.py computes them again on ARM and holds the two to
the stated tolerances: against the same runtime on x86_64, and against the other one.
Device code only (numpy, the front end, the int8 model): it runs in a root that has no TensorFlow.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from device.analysis.features import FeatureParams, compute_logmel, extract_patch
from device.analysis.inference import AnomalyModel
from device.audio.audio_io import read_wav, to_mono
from device.pipeline import iter_windows, window_patches

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "data" / "golden"
# The clip whose windows' int8 inputs and outputs are compared one by one (every clip's score is compared).
INT8_CLIP = "anomaly_id_00_00000000.wav"
REFERENCE_NAME = "reference.json"
MAX_CLIPS = 32  # the check scores every clip it is given: a bound on what the host hands over


def describe_platform() -> dict[str, str]:
    """Where these values were computed: machine, Python and numpy."""
    return {"machine": platform.machine(), "python": platform.python_version(), "numpy": np.__version__}


def runtime_version(name: str) -> str:
    """The installed version of a TFLite runtime named as device.analysis.inference.RUNTIMES names it."""
    if name == "tflite_runtime":
        import tflite_runtime  # only present where it is the runtime

        return str(tflite_runtime.__version__)
    return importlib.metadata.version(name.replace("_", "-"))


def golden_features() -> dict[str, np.ndarray]:
    """The committed golden window's log-mel (its own 8320-sample hop: one batch of frames; the default hop:
    the two shared chunks) and normalized patch, float32 (n_frames, n_mels)."""
    meta = json.loads((GOLDEN / "golden.json").read_text())
    params = FeatureParams(**meta["feature_params"])
    samples, _ = read_wav(GOLDEN / "machine.wav")
    x = to_mono(samples)[: params.window_samples]
    chunked = dataclasses.replace(params, hop_samples=FeatureParams().hop_samples)
    return {
        "logmel": compute_logmel(x, params),
        "logmel_default_hop": compute_logmel(x, chunked),
        "patch": extract_patch(x, params),
    }


def quantized_inputs(model: AnomalyModel, wav: Path) -> np.ndarray:
    """The int8 model inputs of a clip's windows as the pipeline cuts them: int8 (n_windows, n_frames, n_mels)."""
    samples, _ = read_wav(wav)
    windows = list(iter_windows([to_mono(samples)], model.params))
    return np.stack([model.quantize(p) for p in window_patches(windows, model.params)])


def int8_outputs(model: AnomalyModel, inputs: np.ndarray) -> np.ndarray:
    """The model's raw int8 outputs for int8 inputs: int8 (n_windows, output size)."""
    return np.stack([model.run_int8(q).reshape(-1) for q in inputs])


def score_clips(
    python: str, model_dir: Path, clips: list[Path], timeout_seconds: float
) -> tuple[list[dict[str, Any]], str]:
    """`python -m device score` on the clips, run by the given interpreter.

    Returns:
        one row per clip (its path reduced to the file name), and what the process wrote to stderr.
    """
    out = subprocess.run(
        [python, "-m", "device", "score", "--model", str(model_dir), *map(str, clips)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_seconds,
    )
    if out.returncode != 0:
        raise RuntimeError(f"device score failed ({out.returncode}): {out.stderr[-2000:]}")
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    for row in rows:
        row["path"] = Path(row["path"]).name
    return rows, out.stderr


def write_reference(model_dir: Path, clips_dir: Path, out: Path) -> Path:
    """Copy the model and clips to out/ and write out/reference.json with what this machine computes for them:
    the golden features, the int8 inputs of INT8_CLIP's windows, and the outputs and scores of this runtime.

    Returns:
        the path of reference.json.
    """
    clips = sorted(clips_dir.glob("*.wav"))
    if not clips or len(clips) > MAX_CLIPS or not (clips_dir / INT8_CLIP).is_file():
        raise SystemExit(f"error: {clips_dir}: need 1 to {MAX_CLIPS} WAV clips including {INT8_CLIP}")
    (out / "clips").mkdir(parents=True, exist_ok=True)
    for clip in clips:
        shutil.copy2(clip, out / "clips" / clip.name)
    shutil.copytree(model_dir, out / "model", ignore=shutil.ignore_patterns("*.keras"), dirs_exist_ok=True)
    model = AnomalyModel(out / "model")
    reference = {
        "platform": describe_platform(),
        "golden": {name: value.tolist() for name, value in golden_features().items()},
        "int8_inputs": {"clip": INT8_CLIP, "values": quantized_inputs(model, out / "clips" / INT8_CLIP).tolist()},
        "runtimes": {},
    }
    (out / REFERENCE_NAME).write_text(json.dumps(reference))
    return add_runtime(out)


def add_runtime(out: Path) -> Path:
    """Add to out/reference.json the int8 outputs (for its recorded inputs) and the clip scores of the runtime
    this interpreter picks, as `device score` run by it picks it.

    Returns:
        the path of reference.json.
    """
    path = out / REFERENCE_NAME
    reference = json.loads(path.read_text())
    model = AnomalyModel(out / "model")
    rows, _ = score_clips(sys.executable, out / "model", sorted((out / "clips").glob("*.wav")), 600)
    reference["runtimes"][model.runtime.name] = {
        "version": runtime_version(model.runtime.name),
        "numpy": np.__version__,
        "outputs": int8_outputs(model, np.asarray(reference["int8_inputs"]["values"], dtype=np.int8)).tolist(),
        "scores": rows,
    }
    path.write_text(json.dumps(reference))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.arm.reference", description="write the x86_64 reference values the ARM check compares"
    )
    parser.add_argument("--model", type=Path, help="int8 model folder (model.tflite)")
    parser.add_argument("--clips", type=Path, help=f"folder of WAV clips, including {INT8_CLIP}")
    parser.add_argument("--out", required=True, type=Path, help="folder to write reference.json, model/ and clips/")
    parser.add_argument(
        "--add-runtime",
        action="store_true",
        help="add the outputs and scores of this interpreter's runtime to an existing OUT/reference.json",
    )
    args = parser.parse_args(argv)
    if args.add_runtime:
        if args.model or args.clips:
            parser.error("--add-runtime reads the model and clips from OUT: no --model or --clips with it")
        path = add_runtime(args.out)
    elif args.model is None or args.clips is None:
        parser.error("give --model and --clips (or --add-runtime)")
    else:
        path = write_reference(args.model, args.clips, args.out)
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

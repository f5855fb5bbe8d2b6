"""`export-c`: the int8 model as a C array, the device's front end and the score as C, for TFLite Micro firmware.

The constants come from the device's own code (device/analysis/features.py builds the window and the mel
filterbank, device/analysis/inference.py reads the quantization from LiteRT, gaussian.py's Scorer holds the
score's statistics), so firmware that uses them computes what the device computes. The model array leaves
out acmon's metadata buffers (tflite_strip.py); the scorer is export_scorer.py's. The tensor arena is measured
by the tflite-micro package's interpreter in a child process: TFLite Micro aborts or crashes on some bad
models, and that must not take this command down with a traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device import __version__
from device.analysis.features import (
    POWER_FLOOR,
    STD_EPSILON,
    FeatureParams,
    analysis_window,
    mel_filterbank,
    shared_frames,
)
from device.analysis.inference import AnomalyModel, QuantizedGraph
from device.analysis.metadata import ModelMetadata
from device.analysis.model_file import metadata_spans, read_model_bytes, sha256_hex

from .c_source import ExportError, c_array, c_float, c_string, wrap_comment
from .export_scorer import render_scorer_files, state_bytes, statistics_bytes
from .tflite_strip import strip_acmon_metadata

# The measured arena is the x86-64 build's with TFLite Micro's reference kernels. On a 32-bit MCU its
# persistent part (pointer-sized structs) is smaller, but optimized kernels (CMSIS-NN) ask for scratch
# buffers the reference kernels do not (a 3x3 convolution over 32 channels: about 1 KiB). The margin
# covers that; firmware can log MicroInterpreter::arena_used_bytes() and lower the size.
ARENA_MARGIN = 0.25
ARENA_ROUND_BYTES = 1024
# Arena the child gives the interpreter while it measures: far above any model a microcontroller can run.
PROBE_ARENA_BYTES = 8 * 1024 * 1024
MICRO_TIMEOUT_SECONDS = 300
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# MicroMutableOpResolver methods whose names are not the CamelCase of the builtin op's name.
RESOLVER_NAMES = {"CUMSUM": "CumSum", "PADV2": "PadV2", "BATCH_MATMUL": "BatchMatMul"}
# The generated files' own names: --name may not take them.
RESERVED_NAMES = ("acmon_frontend", "acmon_scorer")
NORMALIZATION_CODES = {"none": 0, "mean": 1, "zscore": 2}
SCORE_MEANINGS = {
    "gaussian_ensemble": "device/analysis/gaussian.py Scorer on the dequantized output: Mahalanobis distances of "
    "the window and of the mean of the last windows to normal, normalised and combined; acmon_scorer.h computes "
    "it (acmon_scorer_score), its statistics from the model file's 'acmon_scorer' buffer",
    "gaussian_distance": "mean of the squares of the dequantized output (already whitened); acmon_scorer_score "
    "computes it",
    "reconstruction_band_max": "from the output AND the model's input (no scorer file): x = "
    "acmon_dequantize_input of the int8 input and y the dequantized output, both frame-major (element "
    "f * ACMON_N_MELS + m is frame f, band m); e = (y - x)^2 in float; the score is the largest over bands m of "
    "the mean over frames f of e",
    "reconstruction_mse": "from the output AND the model's input (no scorer file): x = acmon_dequantize_input of "
    "the int8 input and y the dequantized output; the score is the mean over the patch of (y - x)^2, in float",
    "anomaly_probability": "1 - dequantized output[0] (output[0] is P(normal); the labels are ACMON_LABELS); "
    "acmon_scorer_score computes it",
    "class_probability": "a sound classifier, not an anomaly score: the dequantized output holds one probability per "
    "class of ACMON_LABELS; the label is the largest (averaged over a clip's windows), and the threshold is unused",
}


@dataclass(frozen=True)
class MicroRun:
    """What the tflite-micro interpreter reported for one model."""

    arena_bytes: int
    ops: tuple[str, ...]
    outputs: np.ndarray  # int8, one row per input patch, flattened
    version: str


def micro_available() -> bool:
    return importlib.util.find_spec("tflite_micro") is not None


def run_micro(data: bytes, inputs: np.ndarray, source: str) -> MicroRun:
    """Run int8 patches through TFLite Micro's interpreter in a child process and measure its arena.

    Args:
        data: the .tflite file's bytes.
        inputs: int8 (n, n_frames, n_mels) quantized patches (at least one).

    Raises:
        ExportError: an op TFLite Micro has no kernel for (named), or the interpreter failed or crashed.
    """
    with tempfile.TemporaryDirectory(prefix="acmon-micro-") as tmp:
        folder = Path(tmp)
        (folder / "model.tflite").write_bytes(data)
        np.save(folder / "inputs.npy", np.asarray(inputs, dtype=np.int8))
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "firmware_tools.export_c", str(folder)],
                capture_output=True,
                text=True,
                errors="replace",
                timeout=MICRO_TIMEOUT_SECONDS,
                env=env,
            )
        except subprocess.TimeoutExpired:
            raise ExportError(f"{source}: TFLite Micro did not finish in {MICRO_TIMEOUT_SECONDS} s") from None
        missing = re.search(r"Didn't find op for builtin opcode '(\w+)'", proc.stderr)
        if missing:
            raise ExportError(
                f"{source}: TFLite Micro has no kernel for op {missing.group(1)}; the model cannot run on it"
            )
        arena = re.search(r"Arena allocation total (\d+) bytes", proc.stderr)
        if proc.returncode != 0 or arena is None or not (folder / "result.json").exists():
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            why = f"signal {-proc.returncode}" if proc.returncode < 0 else (lines[-1][:200] if lines else "no output")
            raise ExportError(f"{source}: TFLite Micro cannot run this model ({why})")
        result = json.loads((folder / "result.json").read_text())
        return MicroRun(int(arena.group(1)), tuple(result["ops"]), np.load(folder / "outputs.npy"), result["version"])


def _micro_child(folder: Path) -> None:
    """The child of run_micro: list the ops, invoke each input, print the arena use to stderr."""
    import tflite_micro  # noqa: PLC0415 -- optional, x86-64 only; only this child process loads it
    from tflite_micro import runtime  # noqa: PLC0415
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema  # noqa: PLC0415

    data = (folder / "model.tflite").read_bytes()
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = runtime.convert_bytearray_to_object(data)
    codes = [runtime.get_builtin_code_from_operator_code(c) for c in model.operatorCodes]
    ops = list(dict.fromkeys(names.get(code, f"UNKNOWN_{code}") for code in codes))  # one per op, not per version
    interpreter = runtime.Interpreter.from_bytes(data, arena_size=PROBE_ARENA_BYTES)
    shape = interpreter.get_input_details(0)["shape"]
    outputs = []
    for patch in np.load(folder / "inputs.npy"):
        interpreter.set_input(patch.reshape(shape), 0)
        interpreter.invoke()
        outputs.append(np.array(interpreter.get_output(0), dtype=np.int8).reshape(-1))
    np.save(folder / "outputs.npy", np.stack(outputs))
    sys.stderr.flush()
    interpreter.print_allocations()  # RecordingMicroAllocator's report, on stderr (C stdio)
    (folder / "result.json").write_text(json.dumps({"ops": ops, "version": tflite_micro.__version__}))


def arena_size(measured: int) -> int:
    """The arena firmware should reserve: the measured bytes plus ARENA_MARGIN, rounded up to ARENA_ROUND_BYTES."""
    return math.ceil(measured * (1 + ARENA_MARGIN) / ARENA_ROUND_BYTES) * ARENA_ROUND_BYTES


def resolver_name(op: str) -> str:
    """MicroMutableOpResolver's Add method for a builtin op: CONV_2D -> AddConv2D, REDUCE_MAX -> AddReduceMax."""
    return "Add" + RESOLVER_NAMES.get(op, "".join(p if p[:1].isdigit() else p.capitalize() for p in op.split("_")))


def sparse_mel(params: FeatureParams) -> tuple[list[int], list[int], np.ndarray]:
    """The mel filterbank as (first FFT bin, bin count, weights) per band: each band's run from its first to its
    last nonzero bin, any zeros inside kept, so the product is exactly the dense one's."""
    bank = mel_filterbank(params)
    first, count, weights = [], [], []
    for m in range(params.n_mels):
        nonzero = np.flatnonzero(bank[:, m])
        lo, n = (int(nonzero[0]), int(nonzero[-1] - nonzero[0] + 1)) if nonzero.size else (0, 0)
        first.append(lo)
        count.append(n)
        weights.append(bank[lo : lo + n, m])
    return first, count, np.concatenate(weights).astype(np.float32)


def cmd_export_c(args: argparse.Namespace) -> int:
    name = args.name
    if not NAME_PATTERN.fullmatch(name) or name in RESERVED_NAMES:
        raise ExportError(
            f"--name {name[:80]!r} is not a C identifier (letters, digits, _; at most 64) other than "
            + " and ".join(RESERVED_NAMES)
        )
    # Checks the file, its metadata and front-end version, the int8 graph and the scorer's statistics.
    model = AnomalyModel(args.model)
    path, data = read_model_bytes(args.model)
    source, params = str(path), model.params
    if sha256_hex(data) != model.sha256:
        raise ExportError(f"{source}: the file changed while it was read; export again")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: exists and is not a folder; give -o a folder to write the C files into")
    metadata_bytes = sum(n for key, (_, n) in metadata_spans(data, source).items() if key.startswith("acmon"))
    firmware_data = data
    if not args.keep_metadata:
        firmware_data, metadata_bytes = strip_acmon_metadata(data, source)
        check_same_graph(model, firmware_data, source)
    run = None
    if micro_available():
        zero = np.full((1, *params.patch_shape), model.input_zero_point, dtype=np.int8)
        run = run_micro(firmware_data, zero, source)
    output_size = int(np.prod(model.output_shape))
    files = {
        f"{name}_data.cc": render_data(name, firmware_data, data),
        f"{name}.h": render_model_header(name, data, model.metadata, model, run),
        "acmon_frontend.h": render_frontend_header(params),
        "acmon_frontend.cc": render_frontend_source(params),
        **render_scorer_files(model.metadata.score_kind, model.scorer, output_size),
    }
    try:
        out.mkdir(parents=True, exist_ok=True)
        for file_name, text in files.items():
            (out / file_name).write_text(text)
    except OSError as exc:
        raise ExportError(f"{out}: cannot write the C files: {exc.strerror or exc}") from None
    for file_name in files:
        print(f"wrote {out / file_name} ({(out / file_name).stat().st_size / 1024:.1f} KiB)")
    if args.keep_metadata:
        print(
            f"model {len(data) / 1024:.1f} KiB in flash, of which {metadata_bytes / 1024:.1f} KiB acmon metadata "
            "TFLite Micro skips (export without --keep-metadata to remove it)"
        )
    else:
        print(
            f"model {len(firmware_data) / 1024:.1f} KiB in flash: the {len(data) / 1024:.1f} KiB file without its "
            f"{metadata_bytes / 1024:.1f} KiB of acmon metadata (same int8 outputs, checked with {model.runtime.name})"
        )
    if "acmon_scorer.cc" not in files:
        print(f"score {model.metadata.score_kind}: from the output and the input as {name}.h says (no scorer file)")
    elif model.scorer is None:
        print(f"scorer {model.metadata.score_kind}: 1 - output[0], no tables")
    else:
        print(
            f"scorer {model.metadata.score_kind}: {statistics_bytes(model.scorer) / 1024:.1f} KiB of float32 "
            f"statistics in flash, its state {state_bytes(model.scorer) / 1024:.1f} KiB of RAM"
        )
    if run is None:
        print("arena not measured: the tflite-micro package is not installed (pip install tflite-micro, x86-64 Linux)")
    else:
        print(
            f"ops {', '.join(run.ops)}: all in TFLite Micro {run.version}\n"
            f"arena {run.arena_bytes} bytes measured, ACMON_TENSOR_ARENA_SIZE {arena_size(run.arena_bytes)} (+{ARENA_MARGIN:.0%}, rounded up to 1 KiB)"
        )
    return 0


def check_same_graph(model: AnomalyModel, stripped: bytes, source: str, patches: int = 8) -> None:
    """Check that the graph without its metadata gives the model's int8 outputs: a zero patch and random ones.

    Raises:
        ExportError: it does not, or its input or output quantization differs.
    """
    shape = model.params.patch_shape
    graph = QuantizedGraph(stripped, model.params, source)
    quantization = (graph.input_scale, graph.input_zero_point, graph.output_scale, graph.output_zero_point)
    rng = np.random.default_rng(0)
    inputs = [np.full(shape, model.input_zero_point, np.int8)]
    inputs += [rng.integers(-128, 128, size=shape).astype(np.int8) for _ in range(patches - 1)]
    if quantization != (model.input_scale, model.input_zero_point, model.output_scale, model.output_zero_point) or any(
        not np.array_equal(graph.run_int8(q), model.run_int8(q)) for q in inputs
    ):
        raise ExportError(
            f"{source}: without its metadata the graph gives other int8 outputs; export with --keep-metadata"
        )


def render_data(name: str, data: bytes, file_data: bytes) -> str:
    """The model array: data, which is the model file (file_data) or its graph without acmon's metadata."""
    body = c_array([f"0x{b:02x}" for b in data], 16)
    what = (
        f"the model file byte for byte (sha256 {sha256_hex(data)})"
        if data == file_data
        else f"the model file's graph without acmon's metadata (sha256 {sha256_hex(data)};\n// the file's "
        f"{sha256_hex(file_data)})"
    )
    return (
        f"// Generated by python -m firmware_tools export-c: {what}.\n"
        f'#include "{name}.h"\n\n'
        f"alignas(16) const unsigned char {name}[] = {{\n{body}\n}};\n"
        f"const unsigned int {name}_len = {len(data)};\n"
    )


def render_model_header(
    name: str, data: bytes, meta: ModelMetadata, graph: QuantizedGraph, run: MicroRun | None
) -> str:
    guard = f"{name.upper()}_H_"
    in_shape = [1, *meta.feature_params.patch_shape, 1]
    labels = ", ".join(c_string(label) for label in meta.labels[:256])
    if run is None:
        arena = "// Arena not measured (tflite-micro was not installed at export): measure it on the target.\n"
    else:
        arena = (
            f"// Measured with TFLite Micro {run.version}'s interpreter (x86-64, reference kernels): {run.arena_bytes} "
            f"bytes.\n// Reserved: +{ARENA_MARGIN:.0%} for optimized kernels' scratch buffers, rounded up to 1 KiB.\n"
            f"#define ACMON_TENSOR_ARENA_MEASURED_BYTES {run.arena_bytes}\n"
            f"#define ACMON_TENSOR_ARENA_SIZE {arena_size(run.arena_bytes)}\n\n"
            f"// The ops this model uses, for a tflite::MicroMutableOpResolver<ACMON_MODEL_OP_COUNT>.\n"
            f"#define ACMON_MODEL_OP_COUNT {len(run.ops)}\n"
            "#ifdef __cplusplus\ntemplate <typename Resolver>\ninline bool acmon_add_ops(Resolver& resolver) {\n"
            "  return "
            + " &&\n         ".join(f"resolver.{resolver_name(op)}() == 0" for op in run.ops)
            + ";\n}\n#endif\n"
        )
    return f"""// Generated by python -m firmware_tools export-c (acmon {__version__}); regenerate, do not edit.
// One acmon model for TensorFlow Lite Micro; its front end is acmon_frontend.h.
#ifndef {guard}
#define {guard}

#include <math.h>
#include <stdint.h>

extern const unsigned char {name}[];  // the .tflite graph (without acmon's metadata unless kept), 16-byte aligned
extern const unsigned int {name}_len;

#define ACMON_MODEL_NAME {c_string(meta.name)}
#define ACMON_MODEL_VERSION {c_string(meta.version)}
#define ACMON_MODEL_SHA256 "{sha256_hex(data)}"  // of the model file, as the daemon reports it

// Input: one normalized log-mel patch (acmon_frontend.h), int8, read as q = round(x / scale) + zero point.
#define ACMON_INPUT_SHAPE {{{", ".join(map(str, in_shape))}}}
#define ACMON_INPUT_SCALE {c_float(graph.input_scale)}
#define ACMON_INPUT_ZERO_POINT ({graph.input_zero_point})
// Output: int8, read as x = (q - zero point) * scale.
#define ACMON_OUTPUT_SHAPE {{{", ".join(map(str, graph.output_shape))}}}
#define ACMON_OUTPUT_SIZE {int(np.prod(graph.output_shape))}
#define ACMON_OUTPUT_SCALE {c_float(graph.output_scale)}
#define ACMON_OUTPUT_ZERO_POINT ({graph.output_zero_point})

{wrap_comment("Score: " + SCORE_MEANINGS[meta.score_kind] + ".")}
// An alarm is a score above the threshold for the daemon's patience (consecutive windows).
#define ACMON_SCORE_KIND {c_string(meta.score_kind)}
#define ACMON_SCORE_THRESHOLD {meta.threshold!r}
#define ACMON_LABEL_COUNT {len(meta.labels[:256])}
#define ACMON_LABELS {{{labels}}}

{arena}
// The device's quantization (device/analysis/inference.py): float32 division, lrintf rounds half to even in
// the default rounding mode as numpy's round does, then saturation.
static inline int8_t acmon_quantize_input(float x) {{
  long q = lrintf(x / ACMON_INPUT_SCALE) + ACMON_INPUT_ZERO_POINT;
  return (int8_t)(q < -128 ? -128 : (q > 127 ? 127 : q));
}}

static inline float acmon_dequantize_input(int8_t q) {{
  return ((float)q - (float)ACMON_INPUT_ZERO_POINT) * ACMON_INPUT_SCALE;
}}

static inline float acmon_dequantize_output(int8_t q) {{
  return ((float)q - (float)ACMON_OUTPUT_ZERO_POINT) * ACMON_OUTPUT_SCALE;
}}

#endif  // {guard}
"""


def render_frontend_header(p: FeatureParams) -> str:
    first, count, weights = sparse_mel(p)
    return f"""// Generated by python -m firmware_tools export-c (acmon {__version__}) from the device's front end
// (device/analysis/features.py, front end version {p.frontend_version}); regenerate, do not edit.
//
// One analysis window of ACMON_WINDOW_SAMPLES mono float samples (full scale 1.0) becomes one patch:
//   frame f = samples[f * ACMON_STFT_HOP_SAMPLES ...][0 .. ACMON_N_FFT) times acmon_window (no padding);
//   power[k] = re^2 + im^2 of its unnormalized real DFT, k = 0 .. ACMON_FFT_BINS - 1;
//   acmon_logmel_frame(power, patch + f * ACMON_N_MELS): sparse mel sum, floor, 10 log10;
//   acmon_normalize_patch(patch); then acmon_quantize_input (the model header) element by element.
// Windows start every ACMON_HOP_SAMPLES; with ACMON_SHARED_FRAMES > 0, a window's first frames are the
// previous window's last ACMON_N_FRAMES - ACMON_SHARED_FRAMES, which firmware may keep instead of recomputing.
#ifndef ACMON_FRONTEND_H_
#define ACMON_FRONTEND_H_

#include <stdint.h>

#define ACMON_FRONTEND_VERSION {p.frontend_version}
#define ACMON_SAMPLE_RATE_HZ {p.sample_rate_hz}
#define ACMON_N_FFT {p.n_fft}
#define ACMON_FFT_BINS {p.n_fft // 2 + 1}
#define ACMON_STFT_HOP_SAMPLES {p.stft_hop_samples}
#define ACMON_WINDOW_SAMPLES {p.window_samples}
#define ACMON_HOP_SAMPLES {p.hop_samples}
#define ACMON_SHARED_FRAMES {shared_frames(p) or 0}
#define ACMON_N_FRAMES {p.n_frames}
#define ACMON_N_MELS {p.n_mels}
#define ACMON_PATCH_SIZE (ACMON_N_FRAMES * ACMON_N_MELS)
#define ACMON_FMIN_HZ {c_float(p.fmin_hz)}  // the filterbank's band edges (already in acmon_mel_weights)
#define ACMON_FMAX_HZ {c_float(p.fmax_hz)}
#define ACMON_POWER_FLOOR {c_float(POWER_FLOOR)}  // mel power below this is this (-100 dB)
#define ACMON_STD_EPSILON {c_float(STD_EPSILON)}  // added to the spread in z-score normalization
#define ACMON_NORMALIZATION_NONE 0
#define ACMON_NORMALIZATION_MEAN 1  // subtract the patch's mean
#define ACMON_NORMALIZATION_ZSCORE 2  // subtract the mean, divide by (standard deviation + epsilon)
#define ACMON_NORMALIZATION {NORMALIZATION_CODES[p.normalization]}
#define ACMON_MEL_WEIGHT_COUNT {len(weights)}

#ifdef __cplusplus
extern "C" {{
#endif
extern const float acmon_window[ACMON_N_FFT];  // periodic Hann
// Band m sums power[acmon_mel_first_bin[m] + i] * acmon_mel_weights[acmon_mel_weight_offset[m] + i]
// for i < acmon_mel_bin_count[m].
extern const uint16_t acmon_mel_first_bin[ACMON_N_MELS];
extern const uint16_t acmon_mel_bin_count[ACMON_N_MELS];
extern const uint16_t acmon_mel_weight_offset[ACMON_N_MELS];
extern const float acmon_mel_weights[ACMON_MEL_WEIGHT_COUNT];

// power: ACMON_FFT_BINS values; logmel: ACMON_N_MELS values, 10 log10(max(mel power, floor)).
void acmon_logmel_frame(const float* power, float* logmel);
// patch: ACMON_PATCH_SIZE values, frame by frame, normalized in place as ACMON_NORMALIZATION says.
void acmon_normalize_patch(float* patch);
#ifdef __cplusplus
}}
#endif

#endif  // ACMON_FRONTEND_H_
"""


def render_frontend_source(p: FeatureParams) -> str:
    first, count, weights = sparse_mel(p)
    offsets = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(int)
    window = c_array([c_float(v) for v in analysis_window(p.n_fft)], 6)
    return f"""// Generated by python -m firmware_tools export-c (acmon {__version__}); regenerate, do not edit.
#include "acmon_frontend.h"

#include <math.h>

const float acmon_window[ACMON_N_FFT] = {{
{window}
}};
const uint16_t acmon_mel_first_bin[ACMON_N_MELS] = {{
{c_array([str(v) for v in first], 16)}
}};
const uint16_t acmon_mel_bin_count[ACMON_N_MELS] = {{
{c_array([str(v) for v in count], 16)}
}};
const uint16_t acmon_mel_weight_offset[ACMON_N_MELS] = {{
{c_array([str(v) for v in offsets], 16)}
}};
const float acmon_mel_weights[ACMON_MEL_WEIGHT_COUNT] = {{
{c_array([c_float(v) for v in weights], 6)}
}};

void acmon_logmel_frame(const float* power, float* logmel) {{
  for (int m = 0; m < ACMON_N_MELS; ++m) {{
    const float* w = acmon_mel_weights + acmon_mel_weight_offset[m];
    const float* x = power + acmon_mel_first_bin[m];
    float sum = 0.0f;
    for (int i = 0; i < acmon_mel_bin_count[m]; ++i) sum += x[i] * w[i];
    logmel[m] = 10.0f * log10f(sum > ACMON_POWER_FLOOR ? sum : ACMON_POWER_FLOOR);
  }}
}}

void acmon_normalize_patch(float* patch) {{
#if ACMON_NORMALIZATION != ACMON_NORMALIZATION_NONE
  // Sums in double: numpy sums the float32 patch pairwise, which a float running sum would not match.
  double sum = 0.0, squares = 0.0;
  for (int i = 0; i < ACMON_PATCH_SIZE; ++i) sum += patch[i];
  const float mean = (float)(sum / ACMON_PATCH_SIZE);
  for (int i = 0; i < ACMON_PATCH_SIZE; ++i) {{
    patch[i] -= mean;
    squares += (double)patch[i] * patch[i];
  }}
#if ACMON_NORMALIZATION == ACMON_NORMALIZATION_ZSCORE
  const float spread = (float)(sqrt(squares / ACMON_PATCH_SIZE) + ACMON_STD_EPSILON);
  for (int i = 0; i < ACMON_PATCH_SIZE; ++i) patch[i] /= spread;
#else
  (void)squares;
#endif
#else
  (void)patch;
#endif
}}
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export-c",
        help="write the int8 model, the front end and the scorer as C/C++ for TensorFlow Lite Micro firmware",
    )
    p.add_argument("model", help="model.tflite or its folder")
    p.add_argument("-o", "--output", required=True, help="folder to write the C/C++ files into (made if missing)")
    p.add_argument(
        "--name", default="acmon_model", help="C name of the model array and its files (default: acmon_model)"
    )
    p.add_argument(
        "--keep-metadata",
        action="store_true",
        help="keep acmon's metadata buffers (JSON, scorer statistics) in the model array; by default they are "
        "removed, as TFLite Micro never reads them, with the TFLite schema of ai-edge-litert (else TensorFlow, "
        "imported only for this) and the int8 outputs checked unchanged",
    )
    p.set_defaults(func=cmd_export_c)


if __name__ == "__main__":  # run_micro's child process
    _micro_child(Path(sys.argv[1]))

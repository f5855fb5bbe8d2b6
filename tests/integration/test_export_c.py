"""`firmware_tools export-c`: TFLite Micro runs the exported model as LiteRT does, and the generated C++
compiles and computes the device's front end."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from device.analysis.features import FeatureParams, analysis_window, extract_patch, mel_filterbank
from device.analysis.inference import AnomalyModel, output_score
from device.analysis.model_file import metadata_spans, read_model_bytes
from device.audio.audio_io import read_wav, to_mono
from device.pipeline import iter_windows, window_patches
from firmware_tools.export_c import (
    ExportError,
    micro_available,
    render_frontend_header,
    render_frontend_source,
    run_micro,
)
from firmware_tools.tflite_strip import strip_acmon_metadata
from tests.helpers import DATA, REPO, demo_wav, require, run_cli
from tests.integration.test_export_scorer import build_scorer, c_scores

pytestmark = pytest.mark.slow


def require_micro() -> None:
    require(micro_available(), "tflite-micro is not installed (pip install tflite-micro; the dev extra on x86-64)")


@pytest.fixture(scope="module")
def models(trained_model, demo_data, tmp_path_factory) -> dict:
    """The default Gaussian model and the two CNN kinds, trained small (one epoch: only the graph matters here)."""
    from device.audio.audio_io import write_wav
    from training.fit import FitOptions, fit
    from training.synth import render_clip

    root = tmp_path_factory.mktemp("cnn")
    small = {"seed": 0, "epochs": 1, "max_patches_per_epoch": 64, "cache_dir": str(root / "cache")}
    fit(demo_data / "pump", root / "ae", FeatureParams(), FitOptions(model="autoencoder", **small), progress=False)
    for label, fault in (("normal", None), ("bearing_fault", "bearing")):
        (root / "labelled" / label).mkdir(parents=True)
        for k in range(6 if fault is None else 4):
            clip = render_clip("pump", 1, seconds=3.0, fault=fault, fault_strength=0.9, snr_db=9.0, seed=100 + k)
            write_wav(root / "labelled" / label / f"{k}.wav", clip, 16000)
    fit(root / "labelled", root / "cls", FeatureParams(), FitOptions(**small), progress=False)
    return {"gaussian": trained_model, "autoencoder": root / "ae", "classifier": root / "cls"}


def golden_patches(demo_data, params: FeatureParams) -> np.ndarray:
    """Every window of a normal and a faulty demo clip, through the device's streaming front end."""
    patches = []
    for label in ("normal", "anomaly"):
        samples = to_mono(read_wav(demo_wav(demo_data, label))[0])
        patches += window_patches(list(iter_windows([samples], params)), params)
    return np.stack(patches)


@pytest.mark.parametrize("kind", ["gaussian", "autoencoder", "classifier"])
def test_micro_outputs_match_litert(models, demo_data, kind):
    """TFLite Micro's reference kernels against LiteRT's own kernels: at most 1 int8 step (measured: 1 for the
    Gaussian and autoencoder graphs, 0 for the classifier; requantization rounds differently in a few outputs).
    Against LiteRT as the device runs it (XNNPACK delegate): measured up to 6 steps on the Gaussian graph,
    because XNNPACK's int8 MEAN rounds some band means one step (0.2 dB) the other way and the whitening layer
    spreads one input step over several output steps; the scores stay within 3 % of the threshold (measured over
    the demo's 80 test windows, 1 % on these 20).
    So the firmware's outputs are held to 1 step of LiteRT's kernels and its scores to 10 % of the threshold."""
    require_micro()
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    model = AnomalyModel(models[kind])
    _, data = read_model_bytes(models[kind])
    patches = golden_patches(demo_data, model.params)
    q = np.stack([model.quantize(p) for p in patches])
    micro = run_micro(data, q, kind)
    assert micro.arena_bytes > 0 and micro.outputs.shape == (len(q), int(np.prod(model.output_shape)))

    kernels = Interpreter(
        model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    kernels.allocate_tensors()
    litert = []
    for x in q:
        kernels.set_tensor(kernels.get_input_details()[0]["index"], x.reshape(1, *x.shape, 1))
        kernels.invoke()
        litert.append(kernels.get_tensor(kernels.get_output_details()[0]["index"]).reshape(-1))
    steps = np.abs(micro.outputs.astype(int) - np.stack(litert).astype(int))
    assert steps.max() <= 1, f"{kind}: TFLite Micro differs from LiteRT's kernels by {steps.max()} int8 steps"

    def scores(outputs: np.ndarray) -> np.ndarray:
        real = (outputs.astype(np.float32) - model.output_zero_point) * model.output_scale
        if model.scorer is not None:
            return model.scorer.series(real)
        inputs = [model.dequantize_input(x) for x in q]
        return np.array([output_score(i, o, model.metadata.score_kind) for i, o in zip(inputs, real)])

    device = np.stack([model.run_int8(x).reshape(-1) for x in q])
    gap = np.abs(scores(micro.outputs) - scores(device)).max()
    assert gap <= 0.1 * model.threshold, f"{kind}: scores differ by {gap:.4g} (threshold {model.threshold:.4g})"


def test_micro_names_an_op_it_lacks(trained_model):
    require_micro()
    import flatbuffers
    from tflite_micro import runtime
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    _, data = read_model_bytes(trained_model)
    model = runtime.convert_bytearray_to_object(data)
    for code in model.operatorCodes:
        if code.builtinCode == schema.BuiltinOperator.REDUCE_MAX:
            code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.UNIQUE
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    with pytest.raises(ExportError, match="TFLite Micro has no kernel for op UNIQUE"):
        run_micro(bytes(builder.Output()), np.zeros((1, 64, 64), np.int8), "unique.tflite")


# Reads a window of float32 samples, runs the generated front end on it (a plain double-precision DFT stands
# in for the firmware's FFT) and prints the constants, tables, patch and int8 input for Python to compare.
# With -DFRONTEND_ONLY it needs acmon_frontend.h/.cc alone and prints the tables and the patch.
TEST_PROGRAM = r"""
#include <cmath>
#include <cstdio>
#include <vector>
#include "acmon_frontend.h"
#ifndef FRONTEND_ONLY
#include "acmon_model.h"
#endif

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  std::vector<float> x(ACMON_WINDOW_SAMPLES);
  FILE* f = fopen(argv[1], "rb");
  if (!f || fread(x.data(), sizeof(float), x.size(), f) != x.size()) return 3;
  fclose(f);
#ifndef FRONTEND_ONLY
  if (argc != 3) return 2;
  f = fopen(argv[2], "wb");
  fwrite(acmon_model, 1, acmon_model_len, f);
  fclose(f);
  printf("constants %d %d %d %d %d %d %d %d %d %d\n", ACMON_SAMPLE_RATE_HZ, ACMON_N_FFT, ACMON_STFT_HOP_SAMPLES,
         ACMON_WINDOW_SAMPLES, ACMON_HOP_SAMPLES, ACMON_N_FRAMES, ACMON_N_MELS, ACMON_NORMALIZATION,
         ACMON_TENSOR_ARENA_SIZE, ACMON_INPUT_ZERO_POINT);
  printf("dequantized");  // every int8 value, as input then as output
  for (int q = -128; q < 128; ++q) printf(" %.9g %.9g", acmon_dequantize_input((int8_t)q), acmon_dequantize_output((int8_t)q));
  printf("\n");
#endif
  printf("window");
  for (int i = 0; i < ACMON_N_FFT; ++i) printf(" %.9g", acmon_window[i]);
  printf("\nbands");
  for (int m = 0; m < ACMON_N_MELS; ++m) printf(" %d:%d", acmon_mel_first_bin[m], acmon_mel_bin_count[m]);
  printf("\nweights");
  for (int i = 0; i < ACMON_MEL_WEIGHT_COUNT; ++i) printf(" %.9g", acmon_mel_weights[i]);
  std::vector<double> c(ACMON_N_FFT), s(ACMON_N_FFT);
  for (int n = 0; n < ACMON_N_FFT; ++n) {
    c[n] = std::cos(2 * M_PI * n / ACMON_N_FFT);
    s[n] = std::sin(2 * M_PI * n / ACMON_N_FFT);
  }
  std::vector<float> patch(ACMON_PATCH_SIZE), power(ACMON_FFT_BINS);
  for (int t = 0; t < ACMON_N_FRAMES; ++t) {
    const float* frame = x.data() + t * ACMON_STFT_HOP_SAMPLES;
    for (int k = 0; k < ACMON_FFT_BINS; ++k) {
      double re = 0, im = 0;
      for (int n = 0; n < ACMON_N_FFT; ++n) {
        const double v = (double)frame[n] * acmon_window[n];
        re += v * c[(k * n) % ACMON_N_FFT];
        im -= v * s[(k * n) % ACMON_N_FFT];
      }
      power[k] = (float)(re * re + im * im);
    }
    acmon_logmel_frame(power.data(), patch.data() + t * ACMON_N_MELS);
  }
  acmon_normalize_patch(patch.data());
  printf("\npatch");
  for (float v : patch) printf(" %.9g", v);
#ifndef FRONTEND_ONLY
  printf("\ninput");
  for (float v : patch) printf(" %d", acmon_quantize_input(v));
#endif
  printf("\n");
  return 0;
}
"""


def test_generated_cpp_compiles_and_computes_the_device_front_end(trained_model, tmp_path):
    require_micro()
    require(shutil.which("g++") is not None, "g++ is not installed (apt-get install g++)")
    out = tmp_path / "c"
    result = run_cli("firmware_tools", "export-c", str(trained_model), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "ACMON_TENSOR_ARENA_SIZE" in result.stdout and "acmon_frontend.cc" in result.stdout
    sources = [out / "acmon_model_data.cc", out / "acmon_frontend.cc"]
    for source in sources:  # what firmware builds: the generated files alone, all warnings errors
        compiled = subprocess.run(
            ["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-c", str(source)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert compiled.returncode == 0, compiled.stderr
    (tmp_path / "main.cc").write_text(TEST_PROGRAM)
    built = subprocess.run(
        ["g++", "-std=c++17", "-O2", "-I", str(out), "-o", "frontend_test", "main.cc", *map(str, sources)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr

    model = AnomalyModel(trained_model)
    p = model.params
    samples = to_mono(read_wav(DATA / "golden" / "machine.wav")[0])  # a real machine recording, one window long
    assert samples.shape == (p.window_samples,)
    (tmp_path / "window.f32").write_bytes(samples.tobytes())
    ran = subprocess.run(["./frontend_test", "window.f32", "model.bin"], cwd=tmp_path, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    lines = {line.split(" ", 1)[0]: line.split()[1:] for line in ran.stdout.splitlines()}

    # The model array is the file's graph without acmon's metadata; the constants are the model's and the device's.
    assert (tmp_path / "model.bin").read_bytes() == strip_acmon_metadata(read_model_bytes(trained_model)[1], "m")[0]
    constants = [int(v) for v in lines["constants"]]
    assert constants[:8] == [
        p.sample_rate_hz,
        p.n_fft,
        p.stft_hop_samples,
        p.window_samples,
        p.hop_samples,
        p.n_frames,
        p.n_mels,
        1,
    ]
    measured = int(re.search(r"arena (\d+) bytes measured", result.stdout).group(1))  # type: ignore[union-attr]
    assert constants[8] >= 1.25 * measured and constants[8] % 1024 == 0
    assert constants[9] == model.input_zero_point
    q = np.arange(-128, 128, dtype=np.int8)
    dequantized = np.array(lines["dequantized"], dtype=np.float32).reshape(-1, 2)
    np.testing.assert_array_equal(dequantized[:, 0], model.dequantize_input(q))
    np.testing.assert_array_equal(
        dequantized[:, 1], (q.astype(np.float32) - model.output_zero_point) * model.output_scale
    )
    # Tables: exactly the device's float32 values (9 significant digits read back as float32).
    np.testing.assert_array_equal(np.array(lines["window"], dtype=np.float32), analysis_window(p.n_fft))
    bank = mel_filterbank(p)
    dense = np.zeros_like(bank)
    weights = np.array(lines["weights"], dtype=np.float32)
    offset = 0
    for m, band in enumerate(lines["bands"]):
        first, count = map(int, band.split(":"))
        dense[first : first + count, m] = weights[offset : offset + count]
        offset += count
    assert offset == len(weights)
    np.testing.assert_array_equal(dense, bank)
    np.testing.assert_array_equal(dense.sum(axis=0), bank.sum(axis=0))
    # The patch: the device's extract_patch within float rounding (the C side's DFT is double precision,
    # numpy's float32; measured 5e-6 dB), and the int8 input the same (measured: every value; one step
    # is allowed where a value lies on a rounding edge).
    expected = extract_patch(samples, p)
    patch = np.array(lines["patch"], dtype=np.float32).reshape(p.patch_shape)
    np.testing.assert_allclose(patch, expected, atol=1e-4)
    steps = np.abs(np.array(lines["input"], dtype=int).reshape(p.patch_shape) - model.quantize(expected).astype(int))
    assert steps.max() <= 1 and (steps == 0).mean() > 0.99


@pytest.mark.parametrize(
    "case", ["truncated", "not-tflite", "no-metadata", "output-is-file", "bad-name", "reserved-name"]
)
def test_hostile_inputs_get_one_line(trained_model, tmp_path, case):
    _, data = read_model_bytes(trained_model)
    model, out, extra = tmp_path / "model.tflite", tmp_path / "out", []
    model.write_bytes(data)
    if case == "truncated":
        model.write_bytes(data[:1000])
    elif case == "not-tflite":
        model.write_text("model:\n  path: pump.tflite\n")
    elif case == "no-metadata":
        require_micro()
        import flatbuffers
        from tflite_micro import runtime

        stripped = runtime.convert_bytearray_to_object(data)
        stripped.metadata = None
        builder = flatbuffers.Builder(1024)
        builder.Finish(stripped.Pack(builder), file_identifier=b"TFL3")
        model.write_bytes(bytes(builder.Output()))
    elif case == "output-is-file":
        out.write_text("a file")
    elif case == "bad-name":
        extra = ["--name", "1 bad-name;"]
    else:  # would overwrite the scorer's own header
        extra = ["--name", "acmon_scorer"]
    result = run_cli("firmware_tools", "export-c", str(model), "-o", str(out), *extra)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    needle = {
        "truncated": "corrupt TFLite file",
        "not-tflite": "not a TFLite model",
        "no-metadata": "without acmon metadata",
        "output-is-file": "is not a folder",
        "bad-name": "not a C identifier",
        "reserved-name": "other than acmon_frontend and acmon_scorer",
    }[case]
    assert needle in errors[0], errors[0]


def test_generated_front_end_reproduces_the_golden_features(tmp_path):
    """The committed golden patch (z-score normalization, the hop of older models) from the C front end."""
    require(shutil.which("g++") is not None, "g++ is not installed (apt-get install g++)")
    params = FeatureParams.from_dict(json.loads((DATA / "golden" / "golden.json").read_text())["feature_params"])
    assert params.normalization == "zscore"  # the branch the default model's export does not compile
    (tmp_path / "acmon_frontend.h").write_text(render_frontend_header(params))
    (tmp_path / "acmon_frontend.cc").write_text(render_frontend_source(params))
    (tmp_path / "main.cc").write_text(TEST_PROGRAM)
    built = subprocess.run(
        [
            "g++",
            "-std=c++17",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-DFRONTEND_ONLY",
            "-I.",
            "-o",
            "t",
            "main.cc",
            "acmon_frontend.cc",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    samples = to_mono(read_wav(DATA / "golden" / "machine.wav")[0])
    (tmp_path / "window.f32").write_bytes(samples.tobytes())
    ran = subprocess.run(["./t", "window.f32"], cwd=tmp_path, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    patch = next(line.split()[1:] for line in ran.stdout.splitlines() if line.startswith("patch "))
    golden = np.load(DATA / "golden" / "machine_patch.npy")
    np.testing.assert_allclose(np.array(patch, dtype=np.float32).reshape(golden.shape), golden, atol=1e-4)


def test_without_tflite_micro_the_files_are_written_and_the_arena_is_not_measured(trained_model, tmp_path):
    out = tmp_path / "c"
    code = (
        "import sys; sys.modules['tflite_micro'] = None\n"  # as on a machine without the package (not x86-64)
        "from firmware_tools.__main__ import main\n"
        f"sys.exit(main(['export-c', {str(trained_model)!r}, '-o', {str(out)!r}]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stdout.splitlines() if "arena" in line] == [
        "arena not measured: the tflite-micro package is not installed (pip install tflite-micro, x86-64 Linux)"
    ]
    header = (out / "acmon_model.h").read_text()
    assert "#define ACMON_INPUT_SCALE" in header and "#define ACMON_TENSOR_ARENA_SIZE" not in header
    assert {p.name for p in out.iterdir()} == {
        "acmon_model_data.cc",
        "acmon_model.h",
        "acmon_frontend.h",
        "acmon_frontend.cc",
        "acmon_scorer.h",
        "acmon_scorer.cc",
    }


@pytest.mark.parametrize("kind", ["gaussian", "autoencoder", "classifier"])
def test_removing_the_metadata_keeps_the_micro_outputs(models, demo_data, kind):
    """The graph without acmon's metadata gives TFLite Micro's int8 outputs of the model file exactly, on every
    window of a normal and a faulty clip, with the same arena; only acmon's buffers go (TensorFlow's stay)."""
    require_micro()
    model = AnomalyModel(models[kind])
    _, data = read_model_bytes(models[kind])
    stripped, dropped = strip_acmon_metadata(data, kind)
    spans = metadata_spans(data, kind)
    assert dropped == sum(n for name, (_, n) in spans.items() if name.startswith("acmon"))
    assert set(metadata_spans(stripped, kind)) == {name for name in spans if not name.startswith("acmon")}
    assert len(stripped) < len(data) - dropped + 256  # the buffers' bytes go; the rest is repacked as it was
    q = np.stack([model.quantize(p) for p in golden_patches(demo_data, model.params)])
    before, after = run_micro(data, q, kind), run_micro(stripped, q, kind)
    np.testing.assert_array_equal(after.outputs, before.outputs)
    assert (after.arena_bytes, after.ops) == (before.arena_bytes, before.ops)


def test_keep_metadata_exports_the_file_byte_for_byte(trained_model, tmp_path):
    """Measured on the default model: 161,576 bytes with its metadata, 22,144 without (136.1 KiB of acmon's)."""
    _, data = read_model_bytes(trained_model)
    lengths = {}
    for flags in ([], ["--keep-metadata"]):
        out = tmp_path / ("kept" if flags else "stripped")
        result = run_cli("firmware_tools", "export-c", str(trained_model), "-o", str(out), *flags)
        assert result.returncode == 0, result.stderr
        text = (out / "acmon_model_data.cc").read_text()
        lengths[bool(flags)] = int(re.search(r"acmon_model_len = (\d+);", text).group(1))  # type: ignore[union-attr]
        body = re.search(r"\{\n(.*)\n\};", text, re.S).group(1)  # type: ignore[union-attr]
        array = bytes(int(v, 16) for v in re.findall(r"0x([0-9a-f]{2})", body))
        assert array == (data if flags else strip_acmon_metadata(data, "m")[0])
        assert ("TFLite Micro skips" if flags else "without its") in result.stdout, result.stdout
    assert lengths[True] == len(data) and lengths[False] < 0.2 * len(data)


def test_classifier_scorer_and_autoencoder_formula(models, demo_data, tmp_path):
    """The classifier's acmon_scorer_score is the device's 1 - P(normal) exactly; the autoencoders' score needs
    the model's input, so they get no scorer file and their header spells the formula out."""
    require_micro()
    require(shutil.which("g++") is not None, "g++ is not installed (apt-get install g++)")
    out = tmp_path / "cls"
    result = run_cli("firmware_tools", "export-c", str(models["classifier"]), "-o", str(out))
    assert result.returncode == 0, result.stderr
    model = AnomalyModel(models["classifier"])
    assert model.metadata.score_kind == "anomaly_probability" and model.scorer is None
    patches = golden_patches(demo_data, model.params)
    evaluated = [model.evaluate(p) for p in patches]
    outputs = np.stack([o.reshape(-1) for _, o in evaluated])
    scores = c_scores(build_scorer(tmp_path, out, double=False), outputs, np.ones(len(outputs), bool))
    np.testing.assert_array_equal(scores, np.array([s for s, _ in evaluated], dtype=np.float32))

    out = tmp_path / "ae"
    result = run_cli("firmware_tools", "export-c", str(models["autoencoder"]), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert not (out / "acmon_scorer.h").exists() and "no scorer file" in result.stdout
    header = (out / "acmon_model.h").read_text()
    kind = AnomalyModel(models["autoencoder"]).metadata.score_kind
    comments = " ".join(line[3:] for line in header.splitlines() if line.startswith("// "))
    assert f'#define ACMON_SCORE_KIND "{kind}"' in header and "static inline float acmon_dequantize_input" in header
    assert (
        "from the output AND the model's input" in comments and "acmon_dequantize_input of the int8 input" in comments
    )


@pytest.mark.parametrize("case", ["tensor-buffer", "out-of-range"])
def test_removing_the_metadata_refuses_a_crafted_model(trained_model, case):
    """An 'acmon' metadata entry that names a tensor's buffer (removing it would break the graph) or no buffer."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    _, data = read_model_bytes(trained_model)
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    entry = next(m for m in model.metadata if m.name == b"acmon_scorer")
    weights = max(model.subgraphs[0].tensors, key=lambda t: 0 if model.buffers[t.buffer].data is None else 1)
    entry.buffer = weights.buffer if case == "tensor-buffer" else len(model.buffers) + 5
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    with pytest.raises(ExportError, match="also a tensor's" if case == "tensor-buffer" else "names buffer"):
        strip_acmon_metadata(bytes(builder.Output()), "crafted.tflite")

"""`firmware_tools export-c`'s scorer: the generated C scores a real stream of the demo recordings window by
window as the device's pipeline does, in float and in double."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from device.analysis.gaussian import Scorer, identity_fit
from device.analysis.inference import AnomalyModel
from device.audio.audio_io import read_wav, to_mono
from device.decisions.detector import DetectorSettings
from device.pipeline import Pipeline
from firmware_tools.export_scorer import render_scorer_files
from tests.helpers import demo_wav, require, run_cli

pytestmark = pytest.mark.slow

# Measured on the stream below (the default model, 50 windows): float 7.6e-7 relative at most, double 6e-8,
# which is the final conversion of the score to float. The bounds leave a factor of 10 for another model or
# compiler (the float error grows with the distance's 128-term sums, about 1e-7 per term at worst).
FLOAT_RTOL = 1e-5
DOUBLE_RTOL = 2e-7

# Reads a stream's dequantized outputs (float32, ACMON_SCORER_OUTPUT_SIZE per window) and one flag per window
# (1: scored, 0: not scored, as the pipeline's level gate decided), resets the scorer at the start and at every
# window not scored, as firmware must, and prints each window's score ("-" when not scored).
SCORER_PROGRAM = r"""
#include <cstdio>
#include <vector>
#include "acmon_scorer.h"

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  FILE* outputs = fopen(argv[1], "rb");
  FILE* flags = fopen(argv[2], "rb");
  if (!outputs || !flags) return 3;
  std::vector<float> output(ACMON_SCORER_OUTPUT_SIZE);
  static acmon_scorer_state state;
  acmon_scorer_reset(&state);
  int scored;
  while ((scored = fgetc(flags)) != EOF) {
    if (fread(output.data(), sizeof(float), output.size(), outputs) != output.size()) return 4;
    if (!scored) {
      acmon_scorer_reset(&state);
      printf("-\n");
      continue;
    }
    printf("%.9g\n", (double)acmon_scorer_score(output.data(), &state));
  }
  return 0;
}
"""
STRICT = ["-std=c++17", "-Wall", "-Wextra", "-Werror", "-Wconversion", "-Wdouble-promotion", "-Wshadow", "-pedantic"]


def require_gpp() -> None:
    require(shutil.which("g++") is not None, "g++ is not installed (apt-get install g++)")


def build_scorer(folder: Path, c_files: Path, double: bool) -> Path:
    """Compile the scorer test program against the generated acmon_scorer.cc, every warning an error."""
    (folder / "scorer_main.cc").write_text(SCORER_PROGRAM)
    exe = folder / ("scorer_double" if double else "scorer_float")
    flags = ["-DACMON_SCORER_DOUBLE"] if double else []
    built = subprocess.run(
        ["g++", *STRICT, "-O2", *flags, "-I", str(c_files), "-o", str(exe), "scorer_main.cc"]
        + [str(c_files / "acmon_scorer.cc")],
        cwd=folder,
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    return exe


def c_scores(exe: Path, outputs: np.ndarray, scored: np.ndarray) -> np.ndarray:
    """The compiled scorer's scores of a stream (NaN where a window is not scored)."""
    folder = exe.parent
    np.asarray(outputs, dtype=np.float32).tofile(folder / "outputs.f32")
    np.asarray(scored, dtype=np.uint8).tofile(folder / "scored.u8")
    ran = subprocess.run([str(exe), "outputs.f32", "scored.u8"], cwd=folder, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    return np.array([np.nan if v == "-" else float(v) for v in ran.stdout.split()])


def golden_stream(model: AnomalyModel, demo_data: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two normal clips, 2 s of digital silence and a faulty clip as one stream through the device's Pipeline,
    in blocks of 1000 samples.

    Returns:
        (dequantized outputs (n, d) float32, scored (n,) bool: False where the level gate skipped the window,
        the pipeline's scores (n,), NaN where not scored).
    """
    clips = [to_mono(read_wav(demo_wav(demo_data, label, i))[0]) for label, i in (("normal", 0), ("normal", 1))]
    silence = np.zeros(2 * model.params.sample_rate_hz, np.float32)
    stream = np.concatenate([*clips, silence, to_mono(read_wav(demo_wav(demo_data, "anomaly"))[0])])
    # score_all keeps each window's output; a window below the gate still gets a None score and clears the
    # context, exactly as without it.
    pipeline = Pipeline(model, DetectorSettings(model.threshold), score_all=True)
    results = [r for start in range(0, len(stream), 1000) for r in pipeline.process(stream[start : start + 1000])]
    outputs = np.stack([np.asarray(r.model_output, np.float32).reshape(-1) for r in results])
    scores = np.array([np.nan if r.score is None else r.score for r in results])
    return outputs, ~np.isnan(scores), scores


def relative_gap(c: np.ndarray, device: np.ndarray) -> float:
    assert np.array_equal(np.isnan(c), np.isnan(device)), "the C side scored other windows than the device"
    keep = ~np.isnan(device)
    return float(np.max(np.abs(c[keep] - device[keep]) / np.abs(device[keep])))


def test_exported_scorer_reproduces_the_device_scores(trained_model, demo_data, tmp_path):
    """export-c's acmon_scorer.cc, fed the dequantized outputs of a real stream window by window (the context
    ring buffer filling, wrapping, reset by a gated gap and filling again), gives the device's scores."""
    require_gpp()
    out = tmp_path / "c"
    result = run_cli("firmware_tools", "export-c", str(trained_model), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "scorer gaussian_ensemble: 129.0 KiB of float32 statistics in flash" in result.stdout, result.stdout
    model = AnomalyModel(trained_model)
    assert model.metadata.score_kind == "gaussian_ensemble" and model.scorer is not None
    assert model.scorer.members == ("window", "context") and model.scorer.context_windows == 8
    header = (out / "acmon_scorer.h").read_text()
    assert "#define ACMON_SCORER_CONTEXT_WINDOWS 8" in header and "#define ACMON_DEFAULT_PATIENCE_WINDOWS 2" in header
    for language in (["-x", "c", "-std=c99"], ["-std=c++17"]):  # plain C firmware too, both arithmetics
        for flags in ([], ["-DACMON_SCORER_DOUBLE"]):
            compiled = subprocess.run(
                ["gcc", *language, *STRICT[1:], *flags, "-c", "acmon_scorer.cc", "-o", "/dev/null"],
                cwd=out,
                capture_output=True,
                text=True,
            )
            assert compiled.returncode == 0, compiled.stderr

    outputs, scored, device = golden_stream(model, demo_data)
    gated = np.flatnonzero(~scored)
    assert len(outputs) >= 30 and len(gated) >= 3, "the stream must wrap the ring buffer and cross a gated gap"
    assert np.all(scored[: gated[0]]) and gated[0] > model.scorer.context_windows
    assert np.nanmax(device[gated[-1] :]) > model.threshold > np.nanmax(device[: gated[0]])  # normal, then the fault

    gap_float = relative_gap(c_scores(build_scorer(tmp_path, out, double=False), outputs, scored), device)
    gap_double = relative_gap(c_scores(build_scorer(tmp_path, out, double=True), outputs, scored), device)
    assert gap_float <= FLOAT_RTOL, f"float scorer: {gap_float:.3g} relative"
    assert gap_double <= DOUBLE_RTOL, f"double scorer: {gap_double:.3g} relative"


@pytest.mark.parametrize("variant", ["window", "context", "gaussian_distance"])
def test_scorer_variants(trained_model, demo_data, tmp_path, variant):
    """The other shapes a Scorer takes: one member alone (training may choose either), and the identity fit
    of acmon 0.1's gaussian_distance models (the mean square of the output, no tables)."""
    require_gpp()
    model = AnomalyModel(trained_model)
    assert model.scorer is not None
    outputs, scored, _ = golden_stream(model, demo_data)
    scorer: Scorer
    if variant == "gaussian_distance":
        size = model.scorer.size
        scorer = Scorer(identity_fit(size), None, 1, ("window",), (0.0, 1.0), (0.0,), (1.0,), "m", "1")
    else:
        scorer = model.scorer.with_members([variant])
    files = render_scorer_files("gaussian_ensemble" if variant != "gaussian_distance" else variant, scorer, 128)
    out = tmp_path / "c"
    out.mkdir()
    for name, text in files.items():
        (out / name).write_text(text)
    if variant == "gaussian_distance":
        assert "acmon_window_whitening_t" not in files["acmon_scorer.cc"]
    if variant != "context":
        assert "recent[" not in files["acmon_scorer.h"]  # no ring buffer without the context member
    # The device's scores: each uninterrupted stretch from a fresh state, as the pipeline clears it at a gap.
    device = np.full(len(outputs), np.nan)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], scored.astype(int), [0]])))
    for start, end in zip(edges[::2], edges[1::2]):
        device[start:end] = scorer.series(outputs[start:end].astype(np.float64))
    for double, rtol in ((False, FLOAT_RTOL), (True, DOUBLE_RTOL)):
        gap = relative_gap(c_scores(build_scorer(tmp_path, out, double), outputs, scored), device)
        assert gap <= rtol, f"{variant}, {'double' if double else 'float'}: {gap:.3g} relative"

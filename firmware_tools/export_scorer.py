"""The acmon score as C for TFLite Micro firmware: acmon_scorer.h/.cc, from the model's output to the score.

The Gaussian kinds score through device/analysis/gaussian.py `Scorer` (for gaussian_ensemble its statistics
are the model file's 'acmon_scorer' buffer); the generated C computes Scorer.score window by window, with a
ring buffer of the last outputs for the context member. The classifier's score needs only its output; the
autoencoders' needs the model's input too, so they get no scorer file and the model header says how to
compute it.
"""

from __future__ import annotations

import numpy as np

from device import __version__
from device.analysis.gaussian import GaussianFit, Scorer
from device.decisions.detector import DEFAULT_COOLDOWN_SECONDS, DEFAULT_PATIENCE_WINDOWS, DEFAULT_RELEASE_RATIO

from .c_source import c_array, c_float

SCORER_FILES = ("acmon_scorer.h", "acmon_scorer.cc")
# Kinds whose score acmon_scorer_score(output, state) computes. The reconstruction kinds compare the output
# with the model's input, which the firmware has at hand: acmon_model.h spells their formula out instead.
SCORED_KINDS = ("gaussian_ensemble", "gaussian_distance", "anomaly_probability")


def c_double(value: float) -> str:
    """A literal that reads back as exactly this float64 (repr is the shortest round trip), cast to the scorer's
    arithmetic type so a float build converts it explicitly (no -Wdouble-promotion or -Wfloat-conversion)."""
    text = repr(float(value))
    return f"((acmon_scorer_real){text if any(c in text for c in '.e') else text + '.0'})"


def statistics_bytes(scorer: Scorer) -> int:
    """Flash the scorer's float32 tables take: each member's mean (d) and whitening (d x d)."""
    fits = [fit for fit in _member_fits(scorer).values() if fit is not None]
    return sum(4 * (fit.mean.size + fit.whitening.size) for fit in fits)


def state_bytes(scorer: Scorer) -> int:
    """RAM the scorer's state takes: the context member's ring buffer of outputs (float32) and two ints."""
    return 4 * scorer.context_windows * scorer.size * ("context" in scorer.members) + 8


def _member_fits(scorer: Scorer) -> dict[str, GaussianFit | None]:
    """The fit of each member the scorer uses; None for the identity (gaussian_distance: no tables to store)."""
    out: dict[str, GaussianFit | None] = {}
    for member in scorer.members:
        fit = scorer.window if member == "window" else scorer.context
        assert fit is not None  # Scorer checks that a context member has its fit
        identity = not np.any(fit.mean) and np.array_equal(fit.whitening, np.eye(scorer.size))
        out[member] = None if identity else fit
    return out


def render_scorer_files(kind: str, scorer: Scorer | None, output_size: int) -> dict[str, str]:
    """{file name: text} of acmon_scorer.h/.cc for a model's score kind; {} for the reconstruction kinds.

    Args:
        kind: the model's score_kind.
        scorer: the Gaussian kinds' Scorer (AnomalyModel.scorer); None for the classifier.
        output_size: values in the model's output.
    """
    if kind not in SCORED_KINDS:
        return {}
    if kind == "anomaly_probability":
        return {"acmon_scorer.h": _header(kind, output_size, None), "acmon_scorer.cc": _classifier_source()}
    assert scorer is not None and scorer.size == output_size
    return {"acmon_scorer.h": _header(kind, output_size, scorer), "acmon_scorer.cc": _gaussian_source(scorer)}


_DECISIONS = f"""// What the firmware still decides (device/decisions/detector.py; these are the daemon's defaults): an
// event starts after ACMON_DEFAULT_PATIENCE_WINDOWS consecutive scores above ACMON_SCORE_THRESHOLD (acmon_model.h),
// ends after as many windows below ACMON_SCORE_THRESHOLD * ACMON_DEFAULT_RELEASE_RATIO (or not scored), and no
// new event starts for ACMON_DEFAULT_COOLDOWN_SECONDS of stream time after one ends. The daemon's default
// smoothing is none (one window), and it scores no window below its level gate (docs/export-c.md).
#define ACMON_DEFAULT_PATIENCE_WINDOWS {DEFAULT_PATIENCE_WINDOWS}
#define ACMON_DEFAULT_RELEASE_RATIO {float(DEFAULT_RELEASE_RATIO)!r}f
#define ACMON_DEFAULT_COOLDOWN_SECONDS {float(DEFAULT_COOLDOWN_SECONDS)!r}f"""


def _header(kind: str, output_size: int, scorer: Scorer | None) -> str:
    if scorer is None:
        what = """// The classifier's score: 1 - P(normal), P(normal) being the dequantized output[0] (float32, as the device
// computes it). The state is empty; acmon_scorer_reset and the state exist so firmware calls every kind alike."""
        state = "typedef struct {\n  int unused;\n} acmon_scorer_state;"
        defines = ""
    else:
        what = f"""// The acmon score of one window from the model's dequantized output (acmon_dequantize_output), as
// device/analysis/gaussian.py Scorer.score computes it ({kind}; members: {", ".join(scorer.members)}):
//   distance d(v, fit) = mean over j of ((v - mean) . whitening[:, j])^2, the squared Mahalanobis distance per
//     dimension of a vector to the fit's normal statistics (float32 tables, as the model file stores them);
//   window member:  z = (log d(output, window) - ACMON_SCORER_WINDOW_LOC) / ACMON_SCORER_WINDOW_SCALE;
//   context member: m = mean of the outputs of the last k windows (this one included, k up to
//     ACMON_SCORER_CONTEXT_WINDOWS), z = (log d(m, context) - loc[k - 1]) / scale[k - 1];
//   score = exp(ACMON_SCORER_COMBINED_SCALE * mean of the members' z) (the constants are in acmon_scorer.cc).
// About 1 on typical normal sound. Call acmon_scorer_reset when a stream starts and for every window that is not
// scored (below the level gate, a gap in the audio): the context never averages across a gap (device/pipeline.py).
//
// Arithmetic in float (single-precision FPUs); define ACMON_SCORER_DOUBLE to compute in double as the device does.
// docs/export-c.md gives the error measured against the device for both. A window extraordinarily far from
// normal can score +inf in float: it compares above any threshold."""
        k = scorer.context_windows if "context" in scorer.members else 1
        recent = (
            "  float recent[ACMON_SCORER_CONTEXT_WINDOWS][ACMON_SCORER_OUTPUT_SIZE];  // ring buffer of the last outputs\n"
            if "context" in scorer.members
            else ""
        )
        state = f"""typedef struct {{
{recent}  int next;   // the slot the next output goes into
  int count;  // outputs remembered since the last reset, at most ACMON_SCORER_CONTEXT_WINDOWS
}} acmon_scorer_state;  // {state_bytes(scorer) / 1024:.1f} KiB"""
        defines = f"""#define ACMON_SCORER_WINDOW_MEMBER {int("window" in scorer.members)}
#define ACMON_SCORER_CONTEXT_MEMBER {int("context" in scorer.members)}
#define ACMON_SCORER_CONTEXT_WINDOWS {k}  // outputs the context mean covers (1: no context member)
"""
    return f"""// Generated by python -m firmware_tools export-c (acmon {__version__}); regenerate, do not edit.
{what}
#ifndef ACMON_SCORER_H_
#define ACMON_SCORER_H_

#define ACMON_SCORER_KIND "{kind}"
#define ACMON_SCORER_OUTPUT_SIZE {output_size}
{defines}
{_DECISIONS}

#ifdef ACMON_SCORER_DOUBLE
typedef double acmon_scorer_real;
#else
typedef float acmon_scorer_real;
#endif

{state}

#ifdef __cplusplus
extern "C" {{
#endif
// Forget the remembered outputs: at the start of a stream and for every window that is not scored.
void acmon_scorer_reset(acmon_scorer_state* state);
// The score of one window; output: ACMON_SCORER_OUTPUT_SIZE dequantized model outputs. Remembers the output in
// state for the next windows' context.
float acmon_scorer_score(const float* output, acmon_scorer_state* state);
#ifdef __cplusplus
}}
#endif

#endif  // ACMON_SCORER_H_
"""


def _classifier_source() -> str:
    return f"""// Generated by python -m firmware_tools export-c (acmon {__version__}); regenerate, do not edit.
#include "acmon_scorer.h"

void acmon_scorer_reset(acmon_scorer_state* state) {{ state->unused = 0; }}

float acmon_scorer_score(const float* output, acmon_scorer_state* state) {{
  (void)state;
  return 1.0f - output[0];
}}
"""


def _tables(name: str, fit: GaussianFit | None) -> str:
    if fit is None:
        return f"// {name}: the identity (the model's output is already whitened): no tables.\n"
    # Transposed so that each output dimension's column of the whitening is contiguous for the inner loop.
    whitening_t = np.asarray(fit.whitening, dtype=np.float32).T.reshape(-1)
    return (
        f"static const float acmon_{name}_mean[ACMON_SCORER_OUTPUT_SIZE] = {{\n"
        f"{c_array([c_float(v) for v in fit.mean], 6)}\n}};\n"
        f"// whitening transposed: acmon_{name}_whitening_t[j * ACMON_SCORER_OUTPUT_SIZE + i] = whitening[i][j].\n"
        f"static const float acmon_{name}_whitening_t[ACMON_SCORER_OUTPUT_SIZE * ACMON_SCORER_OUTPUT_SIZE] = {{\n"
        f"{c_array([c_float(v) for v in whitening_t], 6)}\n}};\n"
    )


def _gaussian_source(scorer: Scorer) -> str:
    fits = _member_fits(scorer)
    members = scorer.members
    # As Scorer._combine computes it (with the device's own _scale): the mean of the members' scales, in float64.
    combined_scale = sum(scorer._scale(m) for m in members) / len(members)
    parts = [
        f"// Generated by python -m firmware_tools export-c (acmon {__version__}) from the model's scorer "
        "statistics;\n// regenerate, do not edit.\n",
        '#include "acmon_scorer.h"\n\n#include <math.h>\n',
        "#ifdef ACMON_SCORER_DOUBLE\n#define ACMON_LOG log\n#define ACMON_EXP exp\n"
        "#define ACMON_DISTANCE_FLOOR 1e-300  // as Scorer: log of a zero distance is a large negative z\n#else\n"
        "#define ACMON_LOG logf\n#define ACMON_EXP expf\n#define ACMON_DISTANCE_FLOOR 1e-30f  // 1e-300 is 0 in float\n"
        "#endif\n",
        f"#define ACMON_SCORER_COMBINED_SCALE {c_double(combined_scale)}\n",
    ]
    if "window" in members:
        loc, scale = scorer.window_norm
        parts.append(
            f"#define ACMON_SCORER_WINDOW_LOC {c_double(loc)}\n#define ACMON_SCORER_WINDOW_SCALE {c_double(scale)}\n\n"
            + _tables("window", fits["window"])
        )
    if "context" in members:
        parts.append(
            "\n// The context member's log distance is normalized by how many outputs its mean covers (1..K).\n"
            "static const acmon_scorer_real acmon_context_locs[ACMON_SCORER_CONTEXT_WINDOWS] = {\n"
            f"{c_array([c_double(v) for v in scorer.context_locs], 2)}\n}};\n"
            "static const acmon_scorer_real acmon_context_scales[ACMON_SCORER_CONTEXT_WINDOWS] = {\n"
            f"{c_array([c_double(v) for v in scorer.context_scales], 2)}\n}};\n" + _tables("context", fits["context"])
        )
    mean_of = {m: f"acmon_{m}_mean" if fits[m] is not None else "0" for m in members}
    whitening_of = {m: f"acmon_{m}_whitening_t" if fits[m] is not None else "0" for m in members}
    body = ["  acmon_scorer_real z_sum = (acmon_scorer_real)0;"]
    if "window" in members:
        body.append(
            "  acmon_scorer_real x[ACMON_SCORER_OUTPUT_SIZE];\n"
            "  for (int i = 0; i < ACMON_SCORER_OUTPUT_SIZE; ++i) x[i] = (acmon_scorer_real)output[i];\n"
            f"  const acmon_scorer_real d_window = distance(x, {mean_of['window']}, {whitening_of['window']});\n"
            "  z_sum += (log_floored(d_window) - ACMON_SCORER_WINDOW_LOC) / ACMON_SCORER_WINDOW_SCALE;"
        )
    if "context" in members:
        body.append(
            "  // Remember this output, then average the remembered ones oldest first (the device's order).\n"
            "  for (int i = 0; i < ACMON_SCORER_OUTPUT_SIZE; ++i) state->recent[state->next][i] = output[i];\n"
            "  state->next = (state->next + 1) % ACMON_SCORER_CONTEXT_WINDOWS;\n"
            "  if (state->count < ACMON_SCORER_CONTEXT_WINDOWS) ++state->count;\n"
            "  const int k = state->count;\n"
            "  const int oldest = (state->next - k + ACMON_SCORER_CONTEXT_WINDOWS) % ACMON_SCORER_CONTEXT_WINDOWS;\n"
            "  acmon_scorer_real m[ACMON_SCORER_OUTPUT_SIZE];\n"
            "  for (int i = 0; i < ACMON_SCORER_OUTPUT_SIZE; ++i) {\n"
            "    acmon_scorer_real sum = (acmon_scorer_real)0;\n"
            "    for (int w = 0; w < k; ++w) sum += (acmon_scorer_real)state->recent[(oldest + w) % ACMON_SCORER_CONTEXT_WINDOWS][i];\n"
            "    m[i] = sum / (acmon_scorer_real)k;\n"
            "  }\n"
            f"  const acmon_scorer_real d_context = distance(m, {mean_of['context']}, {whitening_of['context']});\n"
            "  z_sum += (log_floored(d_context) - acmon_context_locs[k - 1]) / acmon_context_scales[k - 1];"
        )
    else:
        body.append("  (void)state;")
    body.append(f"  return (float)ACMON_EXP(ACMON_SCORER_COMBINED_SCALE * z_sum / (acmon_scorer_real){len(members)});")
    parts.append(
        f"""
// Squared Mahalanobis distance per dimension of v to a fit (mean 0 and the identity when the tables are null).
static acmon_scorer_real distance(const acmon_scorer_real* v, const float* mean, const float* whitening_t) {{
  acmon_scorer_real centred[ACMON_SCORER_OUTPUT_SIZE];
  for (int i = 0; i < ACMON_SCORER_OUTPUT_SIZE; ++i) centred[i] = v[i] - (mean ? (acmon_scorer_real)mean[i] : (acmon_scorer_real)0);
  acmon_scorer_real total = (acmon_scorer_real)0;
  for (int j = 0; j < ACMON_SCORER_OUTPUT_SIZE; ++j) {{
    acmon_scorer_real z = centred[j];
    if (whitening_t) {{
      const float* column = whitening_t + j * ACMON_SCORER_OUTPUT_SIZE;
      z = (acmon_scorer_real)0;
      for (int i = 0; i < ACMON_SCORER_OUTPUT_SIZE; ++i) z += centred[i] * (acmon_scorer_real)column[i];
    }}
    total += z * z;
  }}
  return total / (acmon_scorer_real)ACMON_SCORER_OUTPUT_SIZE;
}}

static acmon_scorer_real log_floored(acmon_scorer_real d) {{
  return ACMON_LOG(d > (acmon_scorer_real)ACMON_DISTANCE_FLOOR ? d : (acmon_scorer_real)ACMON_DISTANCE_FLOOR);
}}

void acmon_scorer_reset(acmon_scorer_state* state) {{
  state->next = 0;
  state->count = 0;
}}

float acmon_scorer_score(const float* output, acmon_scorer_state* state) {{
{chr(10).join(b for b in body if b)}
}}
"""
    )
    return "".join(parts)

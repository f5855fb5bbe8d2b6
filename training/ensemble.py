"""The default model for normal-only data: a Gaussian ensemble of per-band window statistics, chosen per machine.

What the device runs (measured on the choosing sets, see benchmarks/bench_detection.py):

- an int8 graph computing each window's per-band mean and maximum (shape), level and spectral tilt,
  whitened by their normal statistics (training/models.py build_gaussian);
- a numpy Scorer (device/analysis/gaussian.py) with two members: the window's own distance to normal, and
  the distance of the mean output over the last DEFAULT_CONTEXT_WINDOWS windows (the context);
  each normalised on normal audio it was not fitted on.

How it is fitted, with normal recordings only:

1. Every recording is a cross-fitting group: the Scorer's Gaussians are fitted on all groups but
   one fold and score the fold left out, so every normal window gets a score from statistics that
   never saw its recording. Those out-of-sample scores set the members' normalisation and the
   threshold.
2. Per machine, the members are chosen on validation faults: generic faults (training/inject.py)
   are added to every recording and scored by the fold that did not see the recording; the
   candidate member sets are compared by AUC against the untouched recordings' scores. The
   default (both members) is kept unless another set beats it clearly.
3. The threshold is set on the cross-fitted scores (device/decisions/threshold.py calibrate_threshold).

The choice and its validation figures go into the model metadata (`firmware_tools inspect`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from device.analysis.features import FeatureParams
from device.analysis.gaussian import (
    DEFAULT_CONTEXT_WINDOWS,
    MEMBERS,
    Scorer,
    cross_fitted_scores,
    fit_gaussian,
    fit_scorer,
)
from device.analysis.inference import QuantizedGraph
from device.decisions.threshold import calibrate_threshold
from device.errors import AcmonError
from device.pipeline import iter_windows, window_patches

from .export import convert_int8
from .gaussian import amplified_deviations
from .inject import KINDS, injected_copies
from .metrics import partial_auc, roc_auc
from .models import build_band_statistics, build_gaussian

logger = logging.getLogger(__name__)

# Candidate member sets, the default first. Another set replaces the default only if its validation
# AUC is higher by this margin: validation faults are generic, and a small edge on them is noise.
CANDIDATES: tuple[tuple[str, ...], ...] = (("window", "context"), ("window",), ("context",))
CHOICE_MARGIN = 0.01
# Validation: faults are added to (at most) this much of each recording, and about this many
# faulty clips are made in all (at least one per recording, at most one per fault kind).
VALIDATION_SECONDS = 30.0
VALIDATION_CLIPS = 60
# Fewer recordings than this: long recordings are cut into pieces of PIECE_SECONDS, each its own
# cross-fitting group (pieces of one recording are contiguous, so neighbours never straddle folds).
MIN_GROUPS = 4
PIECE_SECONDS = 60.0
# Window offsets (fractions of the hop) at which the training windows are cut: 4 interleaved
# streams give 4x more windows for the Gaussians; each is a real device stream for the context.
OFFSETS = (0.0, 0.25, 0.5, 0.75)


@dataclass
class EnsembleResult:
    """What fit_ensemble() made: the int8 graph, the float model, the scorer, threshold and records."""

    tflite: bytes
    float_model: Any
    scorer: Scorer
    threshold: float
    calibration: dict[str, Any]
    choice: dict[str, Any]
    parity: dict[str, Any]
    trained: dict[str, Any] = field(default_factory=dict)
    heldout_scores: list[np.ndarray] = field(default_factory=list)
    """Per normal recording (or piece), the cross-fitted scores of its device windows: the threshold's evidence."""


def pieces_of(clips: Sequence[np.ndarray], params: FeatureParams) -> list[np.ndarray]:
    """The recordings as cross-fitting groups: themselves, or (fewer than MIN_GROUPS) cut into pieces."""
    usable = [np.asarray(c, dtype=np.float32) for c in clips if len(c) >= params.window_samples]
    if len(usable) >= MIN_GROUPS:
        return usable
    piece = max(int(PIECE_SECONDS * params.sample_rate_hz), 2 * params.window_samples)
    out = []
    for clip in usable:
        n = max(1, len(clip) // piece)
        bounds = np.linspace(0, len(clip), n + 1).astype(int)
        out += [clip[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b - a >= params.window_samples]
    return out


def offset_patches(clip: np.ndarray, params: FeatureParams, offset: float) -> np.ndarray:
    """Patches of the device's windows of clip[offset * hop:]: float32 (n, n_frames, n_mels)."""
    start = int(round(offset * params.hop_samples))
    windows = window_patches(iter_windows([clip[start:]], params), params)
    return np.stack(windows) if windows else np.zeros((0, *params.patch_shape), np.float32)


def fit_ensemble(
    clips: Sequence[np.ndarray],
    params: FeatureParams,
    *,
    name: str,
    version: str,
    false_alarms_per_day: float,
    patience_windows: int,
    representative_patches: int = 300,
    amplify_representative: float = 3.0,
    context_windows: int = DEFAULT_CONTEXT_WINDOWS,
    seed: int = 0,
    progress: bool = True,
) -> EnsembleResult:
    """Fit, export, choose and calibrate the Gaussian ensemble on normal recordings.

    Args:
        clips: normal recordings, mono float32 at params.sample_rate_hz.
        params: the front end; normalization 'none' keeps level and tilt (build_band_statistics).
        name, version: the model's, recorded in the scorer so no other model can use it.

    Raises:
        AcmonError: too little audio (fewer than two analysis windows per cross-fitting group, or
            fewer than two groups).
    """
    pieces = pieces_of(clips, params)
    if len(pieces) < 2:
        seconds = 2 * max(PIECE_SECONDS, 2 * params.window_seconds)
        raise AcmonError(
            f"the normal recordings are too short to cross-fit: need at least 2 recordings of "
            f"{params.window_seconds:.2f} s, or one of {seconds:.0f} s"
        )
    rng = np.random.default_rng(seed)

    # 1. The Gaussian of the descriptors, from the same Keras layers the int8 graph is made of.
    stats_model = build_band_statistics(params)
    descriptors: list[np.ndarray] = []
    sample: list[np.ndarray] = []
    batch: list[np.ndarray] = []

    def describe() -> None:  # one predict() per few thousand patches: Keras' per-call cost is large
        if batch:
            x = np.concatenate(batch)[..., None]
            descriptors.append(np.asarray(stats_model.predict(x, batch_size=512, verbose=0), np.float64))
            batch.clear()

    for piece in tqdm(pieces, desc="statistics", unit="recording", disable=not progress):
        for offset in OFFSETS:
            patches = offset_patches(piece, params, offset)
            batch.append(patches)
            sample.append(patches[rng.permutation(len(patches))[:8]])
        if sum(len(b) for b in batch) >= 4096:
            describe()
    describe()
    gaussian = fit_gaussian(np.concatenate(descriptors))
    float_model = build_gaussian(params, gaussian.mean, gaussian.whitening, batch_size=None)
    export_model = build_gaussian(params, gaussian.mean, gaussian.whitening, batch_size=1)
    rep = np.concatenate(sample)
    rep = rep[rng.permutation(len(rep))[:representative_patches]]
    rep = np.concatenate([rep, amplified_deviations(rep, amplify_representative)])
    logger.info("quantizing to int8")
    tflite = convert_int8(export_model, rep)
    graph = QuantizedGraph(tflite, params, "the exported model")

    # 2. The int8 outputs of every window, as the device will compute them.
    segments: list[np.ndarray] = []
    groups: list[int] = []
    first: dict[int, int] = {}
    for g, piece in enumerate(tqdm(pieces, desc="int8 outputs", unit="recording", disable=not progress)):
        for offset in OFFSETS:
            outputs = graph.outputs(offset_patches(piece, params, offset))
            if len(outputs):
                if offset == 0.0:
                    first[g] = len(segments)
                segments.append(outputs)
                groups.append(g)
    # The graph's whitening saw all the audio: each fold undoes it and whitens by its own statistics.
    inverse = np.linalg.inv(gaussian.whitening)
    scorer, cf = fit_scorer(
        segments, groups, CANDIDATES[0], name, version, context_windows, stage1=(gaussian.mean, inverse)
    )

    # 3. Validation faults, scored by the folds that never saw their recording.
    choice, validation = choose_members(scorer, cf, pieces, first, graph, float_model, params, seed, progress)
    scorer = scorer.with_members(choice["chosen"])

    # 4. The threshold, on the cross-fitted scores of the device's own windows (offset 0).
    device_stretches = set(first.values())
    stretches = [s for i, s in enumerate(cross_fitted_scores(scorer, cf)) if i in device_stretches]
    threshold, calibration = calibrate_threshold(stretches, params.hop_seconds, false_alarms_per_day, patience_windows)
    if "warning" in calibration:
        logger.warning("threshold: %s", calibration["warning"])
    hits = [float(np.mean(scores > threshold)) for scores in validation["faulty_window_scores"]]
    calibration["validation_faults_alarming_share"] = round(float(np.mean([h > 0 for h in hits])), 4)
    trained = {
        "descriptors": gaussian.n,
        "descriptor_size": int(gaussian.mean.size),
        "shrinkage": round(gaussian.shrinkage, 4),
        "cross_fitting": scorer.info,
        "seconds": round(sum(len(p) for p in pieces) / params.sample_rate_hz, 1),
    }
    logger.info(
        "Gaussian ensemble: %d descriptors of %d values, members %s (validation AUC %s), threshold %.4g",
        gaussian.n,
        gaussian.mean.size,
        "+".join(choice["chosen"]),
        ", ".join(f"{k} {v['auc']:.3f}" for k, v in choice["candidates"].items()),
        threshold,
    )
    return EnsembleResult(
        tflite, float_model, scorer, threshold, calibration, choice, validation["parity"], trained, stretches
    )


def choose_members(
    scorer: Scorer,
    cf,
    pieces: Sequence[np.ndarray],
    first: dict[int, int],
    graph: QuantizedGraph,
    float_model,
    params: FeatureParams,
    seed: int,
    progress: bool,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Compare the candidate member sets on normal recordings against the same recordings with faults added.

    Returns:
        (the choice record for the metadata, validation details: faulty clips' window scores and the
        float/int8 parity measured on the validation windows).
    """
    n_val = int(VALIDATION_SECONDS * params.sample_rate_hz)
    per_piece = int(min(len(KINDS), max(1, math.ceil(VALIDATION_CLIPS / len(pieces)))))
    normal: dict[tuple[str, ...], list[float]] = {c: [] for c in CANDIDATES}
    faulty: dict[tuple[str, ...], list[float]] = {c: [] for c in CANDIDATES}
    kinds_used: list[str] = []
    float_out, int8_out, owners = [], [], []
    faulty_windows: list[np.ndarray] = []
    crops = [piece[:n_val] for piece in pieces]
    faults = iter(injected_copies(crops, params.sample_rate_hz, per_piece, seed))  # kinds in rotation over all crops
    for g, crop in enumerate(tqdm(crops, desc="validation faults", unit="recording", disable=not progress)):
        segment = first[g]
        fold = cf.folds[cf.fold_of_segment[segment]]
        n_windows = len(offset_patches(crop, params, 0.0))
        w, c, k = cf.window[segment][:n_windows], cf.context[segment][:n_windows], cf.counts[segment][:n_windows]
        for cand in CANDIDATES:
            normal[cand].append(float(np.mean(scorer.fused(w, c, k, cand))))
        for _ in range(per_piece):
            clip, injection = next(faults)
            patches = offset_patches(clip, params, 0.0)
            outputs = graph.outputs(patches)
            dw, dc, kc = fold.distances(outputs, scorer.context_windows)
            for cand in CANDIDATES:
                faulty[cand].append(float(np.mean(scorer.fused(dw, dc, kc, cand))))
            faulty_windows.append(scorer.fused(dw, dc, kc))
            kinds_used.append(injection.kind)
            float_out.append(np.asarray(float_model.predict(patches[..., None], batch_size=256, verbose=0), np.float64))
            int8_out.append(outputs)
            owners.append(g)
    y = np.r_[np.zeros(len(pieces)), np.ones(len(kinds_used))]
    candidates = {}
    for cand in CANDIDATES:
        s = np.r_[normal[cand], faulty[cand]]
        candidates["+".join(cand)] = {"auc": round(roc_auc(y, s), 4), "pauc": round(partial_auc(y, s), 4)}
    default = "+".join(CANDIDATES[0])
    best = max(candidates, key=lambda k: candidates[k]["auc"])
    chosen = best if candidates[best]["auc"] > candidates[default]["auc"] + CHOICE_MARGIN else default
    choice: dict[str, Any] = {
        "chosen": tuple(chosen.split("+")),
        "candidates": candidates,
        "margin": CHOICE_MARGIN,
        "normal_recordings": len(pieces),
        "faulty_clips": len(kinds_used),
        "fault_kinds": sorted(set(kinds_used)),
        "seconds_per_clip": VALIDATION_SECONDS,
    }
    parity = _parity(scorer.with_members(choice["chosen"]), float_out, int8_out)
    return choice, {"faulty_window_scores": faulty_windows, "parity": parity}


def _parity(scorer: Scorer, float_out: list[np.ndarray], int8_out: list[np.ndarray]) -> dict[str, Any]:
    """Scores of the float model's outputs against the int8 graph's, on the validation faults' windows."""
    if not float_out:
        return {}
    f = np.concatenate([scorer.series(o) for o in float_out])
    q = np.concatenate([scorer.series(o) for o in int8_out])
    return {
        "score_correlation": float(np.corrcoef(np.log(f), np.log(q))[0, 1]) if len(f) > 1 else 1.0,
        "mean_abs_log_score_difference": float(np.mean(np.abs(np.log(f) - np.log(q)))),
        "mean_float_score": float(f.mean()),
        "mean_int8_score": float(q.mean()),
        "windows": int(len(f)),
    }


__all__ = ["CANDIDATES", "EnsembleResult", "MEMBERS", "fit_ensemble", "pieces_of"]

"""Site calibration (numpy only): the threshold, level gate and site statistics from the site's own audio.

The device recalibrates on the site's own sound (`python -m device calibrate`, or the `calibrate`
command): calibrate_site() sets the threshold for the promised rate (device/decisions/threshold.py) and, when
the audio shows the machine stopping, a level gate. Operators' changes of the threshold go through
guardrails (device/daemon/guardrails.py): a band around the calibrated threshold, a minimum of audio, and a
refusal of audio that looks like a fault. The result is written by device/daemon/site_config.py.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..analysis.gaussian import CROSS_FIT_FOLDS, MIN_WINDOWS_PER_DIMENSION, Scorer, cross_fitted_scores, fit_scorer
from ..decisions.detector import smooth_series
from ..decisions.threshold import calibrate_threshold, sustained_scores
from ..errors import AcmonError
from .guardrails import check_calibration_result

if TYPE_CHECKING:  # annotations only: the threshold and gate code stays importable without the runtime
    from ..analysis.inference import AnomalyModel
    from ..pipeline import WindowResult
    from ..settings.schema import AcmonConfig

logger = logging.getLogger(__name__)

# The loudness floor given to digitally silent windows (their level is -inf).
SILENCE_DBFS = -150.0
# Two groups of window levels this far apart (dB, between their means) are "machine off" and "machine on".
MIN_LEVEL_SEPARATION_DB = 10.0
# Site calibration's threshold holds its rate in this share of bootstrap resamples of the site's audio
# when the audio cannot show the rate (fewer than threshold.MIN_EVENTS_SHOWN false alarms expected in it). Measured
# on the drifting choosing streams (30-minute calibrations, benchmarks/bench_detection.py): the point
# estimate gave 20 and 2.7 times the promised 1 a day and 1 an hour, 0.95 gave 0 in 6 hours and 1.0
# times (0.8: 16 and 1.7 times), at the cost of 0.08-0.09 fewer injected faults caught.
SITE_CONFIDENCE: float | None = 0.95


# ---------------------------------------------------------------------------------------------
# Site calibration: threshold and level gate from the site's own audio


@dataclass(frozen=True)
class CalibrationResult:
    """What calibration decided.

    Attributes:
        threshold: the site threshold (score units), before detector.threshold_scale.
        min_rms_dbfs: the new level gate, or None to keep the configured one.
        info: how it was decided (written to the calibration file).
    """

    threshold: float
    min_rms_dbfs: float | None
    info: dict[str, Any] = field(default_factory=dict)


def split_levels(levels: np.ndarray) -> tuple[float, float, float]:
    """Split window levels into a quiet and a loud group (Otsu's method in one dimension).

    Returns:
        (split level, mean of the quiet group, mean of the loud group), in dBFS;
        the split is the highest quiet level.
    """
    x = np.sort(np.asarray(levels, dtype=np.float64))
    n = len(x)
    if n < 2 or x[0] == x[-1]:
        return (
            float(x[-1]) if n else SILENCE_DBFS,
            float(x.mean()) if n else SILENCE_DBFS,
            float(x.mean()) if n else SILENCE_DBFS,
        )
    cumsum = np.cumsum(x)
    k = np.arange(1, n)  # quiet group = x[:k]
    mean_q = cumsum[:-1] / k
    mean_l = (cumsum[-1] - cumsum[:-1]) / (n - k)
    between = k * (n - k) * (mean_l - mean_q) ** 2
    best = int(np.argmax(between))
    return float(x[best]), float(mean_q[best]), float(mean_l[best])


def _runs(scores: Sequence[float | None]) -> list[np.ndarray]:
    """Uninterrupted stretches of scored windows (None breaks a stretch, as the gate does)."""
    runs: list[np.ndarray] = []
    current: list[float] = []
    for s in list(scores) + [None]:
        if s is None:
            if current:
                runs.append(np.asarray(current))
            current = []
        else:
            current.append(s)
    return runs


def calibrate_site(
    segments: Sequence[Sequence[tuple[float, float]]],
    hop_seconds: float,
    false_alarms_per_day: float,
    patience_windows: int,
    smoothing_windows: int,
    smoothing: str,
    current_min_rms_dbfs: float,
    gate_margin_db: float,
) -> CalibrationResult:
    """Site threshold and, if the measured scores show it is needed, a level gate.

    The known field problem: with the machine off, room noise (say -70 dBFS)
    z-scores into a patch unlike anything the model learned and scores far
    above the threshold. So every window is scored here, gate or not. If the
    window levels fall into two groups at least MIN_LEVEL_SEPARATION_DB apart
    (machine off / machine on) and the quiet group's sustained scores would
    raise alarms at the threshold the loud group calls for, the gate goes
    gate_margin_db above the quiet group (but below the loud group) and the
    threshold is calibrated on the loud windows. Otherwise the gate stays and
    the threshold is calibrated on every window it lets through.

    Args:
        segments: per uninterrupted stretch of audio, (steady level in dBFS, model score) per window.
        hop_seconds: step between windows, in seconds.
        current_min_rms_dbfs: the configured gate.

    Returns:
        The CalibrationResult; raises AcmonError if there is too little audio to calibrate.
    """
    levels = np.array([max(level, SILENCE_DBFS) for seg in segments for level, _ in seg])
    if len(levels) < max(4, 2 * patience_windows):
        raise AcmonError(
            f"calibration needs at least {max(4, 2 * patience_windows)} analysis windows "
            f"({max(4, 2 * patience_windows) * hop_seconds:.0f} s of audio); got {len(levels)}: record for longer"
        )
    kwargs: dict[str, Any] = dict(
        hop_seconds=hop_seconds,
        false_alarms_per_day=false_alarms_per_day,
        patience_windows=patience_windows,
        smoothing_windows=smoothing_windows,
        smoothing=smoothing,
        confidence=SITE_CONFIDENCE,
    )

    def gated_runs(gate: float) -> list[np.ndarray]:
        return [r for seg in segments for r in _runs([s if max(lv, SILENCE_DBFS) >= gate else None for lv, s in seg])]

    split, quiet_mean, loud_mean = split_levels(levels)
    info: dict[str, Any] = {
        "windows": int(len(levels)),
        "audio_seconds": round(len(levels) * hop_seconds, 1),
        "level_dbfs_p5": round(float(np.percentile(levels, 5)), 2),
        "level_dbfs_p50": round(float(np.percentile(levels, 50)), 2),
        "level_dbfs_p95": round(float(np.percentile(levels, 95)), 2),
    }
    if loud_mean - quiet_mean >= MIN_LEVEL_SEPARATION_DB:
        loud_floor = float(levels[levels > split].min())
        gate = min(split + gate_margin_db, 0.5 * (split + loud_floor))
        loud_runs = gated_runs(gate)
        if loud_runs:
            threshold, thr_info = calibrate_threshold(loud_runs, **kwargs)
            quiet_runs = [
                r for seg in segments for r in _runs([s if max(lv, SILENCE_DBFS) <= split else None for lv, s in seg])
            ]
            quiet_sustained = sustained_scores(
                [np.asarray(smooth_series(r, smoothing_windows, smoothing)) for r in quiet_runs], patience_windows
            )
            would_alarm = int(np.count_nonzero(quiet_sustained > threshold))
            info.update(
                quiet_level_dbfs=round(quiet_mean, 2),
                loud_level_dbfs=round(loud_mean, 2),
                quiet_windows_above_threshold=would_alarm,
            )
            if would_alarm > 0 and gate > current_min_rms_dbfs:
                info.update(thr_info, gate="set: quiet windows would raise alarms")
                logger.info("calibration: quiet windows (%.1f dBFS) would alarm: gate at %.1f dBFS", quiet_mean, gate)
                return CalibrationResult(threshold, round(gate, 1), info)
    runs = gated_runs(current_min_rms_dbfs)
    if not runs:
        raise AcmonError(
            f"calibration: every window is below detector.min_rms_dbfs ({current_min_rms_dbfs} dBFS; the site measured "
            f"{info['level_dbfs_p50']} dBFS): lower the gate, raise the microphone gain, or calibrate while the machine runs"
        )
    threshold, thr_info = calibrate_threshold(runs, **kwargs)
    info.update(thr_info, gate="kept")
    return CalibrationResult(threshold, None, info)


# ---------------------------------------------------------------------------------------------
# Guardrails on operator changes of the threshold

Reply = Callable[..., None]  # reply(result: dict | None, error: str | None = None)


@dataclass
class CalibrationSession:
    """Window levels and model scores collected for an on-site calibration.

    Attributes:
        target_windows: windows to collect (the requested minutes at the model's hop).
        reply: called with the result (or the error) when the calibration ends.
        segments: per uninterrupted stretch of audio, (steady dBFS, model score) per window.
    """

    target_windows: int
    reply: Reply
    segments: list[list[tuple[float, float]]] = field(default_factory=lambda: [[]])
    outputs: list[np.ndarray] = field(default_factory=list)
    """The model's output for every collected window, in the order of the segments' windows."""
    force: bool = False
    """The operator confirmed the audio is normal: skip the looks-like-a-fault refusal (never the minimum)."""
    level_frames: list[np.ndarray] = field(default_factory=list)
    """Every level frame's band mean squares (float32), for the commissioned normal levels (levels.normal_db)."""

    @property
    def collected(self) -> int:
        return sum(len(s) for s in self.segments)

    @property
    def done(self) -> bool:
        return self.collected >= self.target_windows

    def new_segment(self) -> None:
        if self.segments[-1]:
            self.segments.append([])

    def add(self, result: WindowResult) -> None:
        if result.model_score is not None:
            assert result.model_output is not None  # scored with every output kept (score_all)
            self.segments[-1].append((result.steady_dbfs, result.model_score))
            self.outputs.append(result.model_output)


@dataclass(frozen=True)
class SiteCalibration:
    """What a calibration session decided, checked but not yet written.

    Attributes:
        result: the threshold and level gate (and how they were measured).
        site: the site's normal statistics, or None (a model without them, or too little audio).
        threshold_before: the calibrated threshold in force before (before detector.threshold_scale).
        gate_before: detector.min_rms_dbfs before.
        share_above: the share of the session's gated windows above the threshold in force, or None.
    """

    result: CalibrationResult
    site: Scorer | None
    threshold_before: float
    gate_before: float
    share_above: float | None


def decide_site_calibration(
    session: CalibrationSession, cfg: AcmonConfig, model: AnomalyModel, calibrated_threshold: float, on_site: bool
) -> SiteCalibration:
    """Threshold, level gate and site statistics from a session's audio; writes nothing, applies nothing.

    Args:
        calibrated_threshold: the threshold in force (what the session's windows are compared to).
        on_site: a site calibration is already in force (a refusal then says so).

    Raises:
        AcmonError: refused by check_calibration_result: the audio looks like a fault (unless forced).
    """
    c, d = cfg.calibration, cfg.detector
    before = cfg.model.threshold or model.threshold  # calibrated, before threshold_scale
    scored = [score for seg in session.segments for level, score in seg if level >= d.min_rms_dbfs]
    share_above = float(np.mean(np.asarray(scored) > calibrated_threshold)) if scored else None
    result = calibrate_site(
        session.segments,
        model.params.hop_seconds,
        c.false_alarms_per_day,
        d.patience_windows,
        d.smoothing_windows,
        d.smoothing,
        d.min_rms_dbfs,
        c.gate_margin_db,
    )
    site = None
    if model.training_scorer is not None:
        site, result = learn_site_statistics(session, result, cfg, model)
    # Judged on what the audio's scores call for on average: the margin for a rate the audio cannot show
    # (calibrate_threshold's confidence) is not a sign of a fault.
    check_calibration_result(
        before, float(result.info.get("point_threshold", result.threshold)), share_above, on_site, session.force
    )
    return SiteCalibration(result, site, before, d.min_rms_dbfs, share_above)


def learn_site_statistics(
    session: CalibrationSession, result: CalibrationResult, cfg: AcmonConfig, model: AnomalyModel
) -> tuple[Scorer | None, CalibrationResult]:
    """Learn the site's normal statistics of a Gaussian model's output, and the threshold against them.

    The model's scorer (same members, same context length) is fitted again
    on the windows the (possibly new) level gate lets through, cut into
    contiguous blocks of time for cross-fitting; the threshold is
    calibrated on the cross-fitted scores, since a Gaussian scores its own
    fitting data too low. With too little audio the training statistics
    stay, and the result says why.
    """
    c, d = cfg.calibration, cfg.detector
    gate = d.min_rms_dbfs if result.min_rms_dbfs is None else result.min_rms_dbfs
    levels = np.array([max(level, SILENCE_DBFS) for seg in session.segments for level, _ in seg])
    outputs = np.stack([np.asarray(o, dtype=np.float64).reshape(-1) for o in session.outputs])
    keep = levels >= gate
    meta, trained = model.metadata, model.training_scorer
    assert trained is not None
    needed = MIN_WINDOWS_PER_DIMENSION * outputs.shape[1]
    stretches, groups, positions = _site_stretches(session, keep, CROSS_FIT_FOLDS)
    try:
        if int(keep.sum()) < needed:
            raise ValueError(f"site statistics need at least {needed} analysis windows, got {int(keep.sum())}")
        site, cf = fit_scorer(
            [outputs[p] for p in stretches],
            groups,
            trained.members,
            meta.name,
            meta.version,
            trained.context_windows,
        )
    except ValueError as exc:
        logger.warning("calibration: keeping the training data's normal statistics: %s (calibrate for longer)", exc)
        return None, dataclasses.replace(result, info={**result.info, "site_statistics": f"not learnt: {exc}"})
    scores = np.array([site.score(o, site.new_state()) for o in outputs])  # gated windows: scored alone
    for p, cross in zip(stretches, cross_fitted_scores(site, cf)):
        scores[p] = cross  # the rest: cross-fitted, out of sample
    flat = iter(scores.tolist())
    segments = [[(level, next(flat)) for level, _ in seg] for seg in session.segments]
    site_result = calibrate_site(
        segments,
        model.params.hop_seconds,
        c.false_alarms_per_day,
        d.patience_windows,
        d.smoothing_windows,
        d.smoothing,
        gate,
        c.gate_margin_db,
    )
    gate_info = ("gate", "quiet_level_dbfs", "loud_level_dbfs", "quiet_windows_above_threshold")
    info = {
        **site_result.info,
        **{k: result.info[k] for k in gate_info if k in result.info},
        "training_statistics_threshold": round(result.threshold, 6),
        "site_statistics": f"learnt from {int(keep.sum())} windows (shrinkage {site.window.shrinkage:.3f})",
    }
    logger.info(
        "calibration: site normal statistics from %d windows; threshold %.4g against them (%.4g against "
        "the training data's)",
        int(keep.sum()),
        site_result.threshold,
        result.threshold,
    )
    return site, CalibrationResult(site_result.threshold, result.min_rms_dbfs, info)


def _site_stretches(
    session: CalibrationSession, keep: np.ndarray, blocks: int
) -> tuple[list[np.ndarray], list[int], int]:
    """Uninterrupted runs of kept windows, each cut at the boundaries of `blocks` equal blocks of time.

    Returns:
        (per stretch, the indices of its windows in session order; per stretch, its block (the
        cross-fitting group); the number of kept windows).
    """
    n = int(keep.sum())
    per_block = max(1, -(-n // blocks))
    stretches: list[np.ndarray] = []
    groups: list[int] = []
    index, kept_seen = 0, 0
    for seg in session.segments:
        current: list[int] = []
        block = None
        for _ in seg:
            if keep[index]:
                b = kept_seen // per_block
                if block is not None and b != block and current:
                    stretches.append(np.array(current))
                    groups.append(block)
                    current = []
                block = b
                current.append(index)
                kept_seen += 1
            elif current:
                stretches.append(np.array(current))
                groups.append(block)  # type: ignore[arg-type]
                current = []
            index += 1
        if current:
            stretches.append(np.array(current))
            groups.append(block)  # type: ignore[arg-type]
    return stretches, groups, n


def calibration_reply(
    decided: SiteCalibration,
    session: CalibrationSession,
    written: Path,
    site_file: str | None,
    gate_now: float,
    previous: Path | None,
    false_alarms_per_day: float,
) -> dict[str, Any]:
    """The result a calibrate command replies with (CLI, MQTT; docs/mqtt.md), once it is written and applied.

    Args:
        written: calibration.yaml's path; site_file: the site statistics' file name or None.
        gate_now: detector.min_rms_dbfs in force after the calibration was applied.
        previous: calibration.prev.yaml when there is one (what rollback restores).
    """
    result, share = decided.result, decided.share_above
    return {
        "file": str(written),
        "threshold": round(result.threshold, 6),
        "threshold_before": round(decided.threshold_before, 6),
        "min_rms_dbfs": gate_now,
        "min_rms_dbfs_before": decided.gate_before,
        "share_above_threshold_before": None if share is None else round(share, 4),
        "forced": session.force,
        "previous_file": str(previous) if previous is not None else None,
        "gate": result.info.get("gate"),
        "windows": session.collected,
        "method": result.info.get("method"),
        "point_threshold": result.info.get("point_threshold"),  # the average's, when a margin was added
        "site_statistics": site_file,
        "false_alarms_per_day": false_alarms_per_day,
        "false_alarms_per_day_90ci": result.info.get("false_alarms_per_day_90ci"),
        "warning": result.info.get("warning"),
    }

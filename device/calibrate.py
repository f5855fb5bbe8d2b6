"""Threshold calibration for a false-alarm rate per day (numpy only), the site level gate, and calibration files.

Training calibrates a model's threshold on held-out normal clips with
calibrate_threshold(); the device recalibrates it on the site's own sound
(`python -m device calibrate`, or the `calibrate` command) and writes the
result to calibration.yaml in its state directory (config.calibration_directory),
which load_site_config() lays over the config. Operators' changes of the
threshold go through guardrails here: a band around the calibrated threshold,
a minimum of audio, and a refusal of audio that looks like a fault.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .config import AcmonConfig, calibration_directory, config_from_dict, load_config, read_yaml_file
from .detector import Detector, DetectorSettings, smooth_series
from .errors import AcmonError, ConfigError
from .gaussian import SITE_FILE_PREFIX
from .state import PRIVATE_FILE_MODE, atomic_write, make_private_directory

logger = logging.getLogger(__name__)

CALIBRATION_FILENAME = "calibration.yaml"
PREVIOUS_FILENAME = "calibration.prev.yaml"
SECONDS_PER_DAY = 86400.0
# The loudness floor given to digitally silent windows (their level is -inf).
SILENCE_DBFS = -150.0
# Two groups of window levels this far apart (dB, between their means) are "machine off" and "machine on".
MIN_LEVEL_SEPARATION_DB = 10.0
# Keys a calibration file may set, by section; everything else in it is rejected.
CALIBRATED_KEYS = {"model": ("threshold", "site_statistics"), "detector": ("min_rms_dbfs",)}


# ---------------------------------------------------------------------------------------------
# Threshold for a false-alarm rate


def sustained_scores(clip_scores: Sequence[np.ndarray], patience_windows: int) -> np.ndarray:
    """Per window, the lowest score of the last `patience_windows` windows of the same clip.

    The detector starts an alarm when `patience_windows` consecutive windows
    exceed the threshold, that is when this sustained score does. Its
    distribution on normal audio carries the real correlation between
    overlapping windows, which an independence assumption (p ** patience)
    would understate.
    """
    out = []
    for scores in clip_scores:
        s = np.asarray(scores, dtype=np.float64)
        if len(s) >= patience_windows:
            out.append(np.lib.stride_tricks.sliding_window_view(s, patience_windows).min(axis=1))
    return np.concatenate(out) if out else np.zeros(0)


def calibrate_threshold(
    clip_scores: Sequence[np.ndarray],
    hop_seconds: float,
    false_alarms_per_day: float,
    patience_windows: int,
    smoothing_windows: int = 1,
    smoothing: str = "mean",
    cooldown_seconds: float = 30.0,
    release_ratio: float = 0.9,
    confidence: float | None = None,
) -> tuple[float, dict[str, Any]]:
    """Threshold for a target false-alarm rate per day, from normal window scores.

    A day of monitoring has 86400 / hop_seconds windows, so the target fixes
    how rarely the detector may start an event: about once in 86400 /
    (rate * hop) windows (166,000 for one a day at a 0.52 s hop). No normal
    recording is that long, so the tail is extrapolated, in two steps of
    extreme-value statistics:

    1. The sustained score (the lowest of the last patience_windows smoothed
       scores: what must exceed the threshold to start an event) above its
       90th percentile is fitted with a generalized Pareto distribution
       (peaks over threshold, probability-weighted moments). Measured on
       normal audio the tail is heavy (shape 0.1 to 0.4): the gamma fit used
       before gave thresholds that fresh normal audio exceeded 10 to 40 times
       more often than promised.
    2. Exceedances come in clusters (overlapping windows, smoothing, patience,
       cooldown), and only a cluster's first window starts an event. The
       extremal index, events per exceedance, is measured by running the
       device's own Detector over the audio at the highest level that still
       has 10 exceedances; events per window = index * P(sustained > t).

    When the target is rarer than once in the audio, the threshold is never
    below the highest sustained normal score seen.
    Resampling the recordings (bootstrap) gives the false-alarm rate's
    uncertainty; the estimate is only as good as the audio is representative,
    which is why on-site calibration replaces the training estimate with the
    site's own sound.

    Args:
        clip_scores: per clip (or uninterrupted stretch of a stream), its window
            scores in stream order; scores from fits that had not seen the clip.
        hop_seconds: the device's step between windows, in seconds.
        smoothing_windows, smoothing, cooldown_seconds, release_ratio: the detector's rules.
        confidence: None for the point estimate; else, when the audio is too short to show the rate
            (fewer than MIN_EVENTS_SHOWN false alarms expected in it), the threshold is raised (never
            lowered) until the rate is at most the target in this share of bootstrap resamples of the
            audio (blocks of time for one stream), so stretches that differ from the rest count against
            it. The warning about short audio is decided on the point estimate's interval either way.

    Returns:
        (threshold, calibration record for the model metadata or calibration file).
    """
    clips = [np.asarray(c, dtype=np.float64) for c in clip_scores if len(c)]
    if not clips:
        raise ValueError("no scored windows to calibrate on")
    decided = [np.asarray(smooth_series(c, smoothing_windows, smoothing), dtype=np.float64) for c in clips]
    windows_per_day = SECONDS_PER_DAY / hop_seconds
    target = min(0.5, false_alarms_per_day / windows_per_day)  # events per window
    sustained = sustained_scores(decided, patience_windows)
    if len(sustained) < 2:
        sustained = np.concatenate(decided)
    rules = dict(
        patience_windows=patience_windows,
        smoothing_windows=smoothing_windows,
        smoothing=smoothing,
        cooldown_seconds=cooldown_seconds,
        release_ratio=release_ratio,
    )
    theta, _ = _extremal_index(clips, sustained, hop_seconds, rules)
    threshold, tail = _tail_threshold(sustained, target, theta)
    method = "pot_extremal"
    # Beyond the audio (rarer than once in it) the threshold cannot lie below its highest normal score.
    beyond = tail["exceedance_probability"] * len(sustained) < 1.0
    if not math.isfinite(threshold) or (beyond and threshold < sustained.max()):
        method, threshold = "max_normal", float(sustained.max())
    n_windows = int(sum(len(c) for c in clips))
    seconds = n_windows * hop_seconds
    info: dict[str, Any] = {
        "method": method,
        "false_alarms_per_day": false_alarms_per_day,
        "patience_windows": patience_windows,
        "smoothing_windows": smoothing_windows,
        "hop_seconds": hop_seconds,
        "events_per_window": target,
        "n_windows": n_windows,
        "held_out_seconds": round(seconds, 1),
        "normal_mean": float(sustained.mean()),
        "normal_max": float(sustained.max()),
        **tail,
    }
    boot = (theta, _bootstrap(decided, patience_windows))
    low, high = _rate_interval(boot, threshold, hop_seconds)
    # The rate is an extrapolation: say when the audio is too short to stand behind it.
    short = seconds < MIN_CALIBRATION_SECONDS or high > 4 * max(low, false_alarms_per_day / 4)
    spread = f"90 % interval {low:.2g} to {high:.2g} per day"
    expected_in_audio = false_alarms_per_day * seconds / SECONDS_PER_DAY
    if confidence is not None and expected_in_audio < MIN_EVENTS_SHOWN:
        # The audio cannot show the rate (too few false alarms expected in it): hold it in `confidence`
        # of the resamples instead of on average, so a stretch unlike the rest counts against it.
        upper = _upper_threshold(boot, tail["exceedance_probability"], confidence)
        info["point_threshold"] = round(threshold, 6)
        if upper > threshold:
            threshold, info["method"] = upper, f"{method}_upper{round(100 * confidence)}"
            low, high = _rate_interval(boot, threshold, hop_seconds)
            spread += (
                f" at the average threshold; this one holds it in {confidence:.0%} of resamples of the audio, "
                "not over sounds it never heard"
            )
    info["false_alarms_per_day_90ci"] = [round(low, 3), round(high, 3)]
    if short:
        # Under half an hour: more audio is the fix. With more, the target is simply rarer than the audio
        # can show (one a day from an hour): the rate on site over the first days is what settles it.
        advice = (
            f"calibrate on site with at least {MIN_CALIBRATION_SECONDS / 60:.0f} minutes of the machine's normal sound"
            if seconds < MIN_CALIBRATION_SECONDS
            else "calibrate on site over hours of the machine's normal sound, and watch the alarm rate in the first days"
        )
        info["warning"] = (
            f"{seconds / 60:.1f} min of held-out normal audio cannot pin down {false_alarms_per_day:g} false alarm(s) "
            f"per day ({spread}): {advice} (python -m device calibrate)"
        )
    return threshold, info


# Below this much held-out normal audio (seconds) a per-day false-alarm rate is reported as uncertain.
MIN_CALIBRATION_SECONDS = 1800.0
# Site calibration's threshold holds its rate in this share of bootstrap resamples of the site's audio
# when the audio cannot show the rate (fewer than MIN_EVENTS_SHOWN false alarms expected in it). Measured
# on the drifting choosing streams (30-minute calibrations, benchmarks/bench_detection.py): the point
# estimate gave 20 and 2.7 times the promised 1 a day and 1 an hour, 0.95 gave 0 in 6 hours and 1.0
# times (0.8: 16 and 1.7 times), at the cost of 0.08-0.09 fewer injected faults caught.
SITE_CONFIDENCE: float | None = 0.95
MIN_EVENTS_SHOWN = 3.0
# The generalized Pareto tail is fitted to the sustained scores above this quantile (at least
# _MIN_TAIL_POINTS of them); its shape is clamped to the range the moment estimator is sound in.
_TAIL_QUANTILE = 0.9
_MIN_TAIL_POINTS = 20
_SHAPE_RANGE = (-0.4, 0.45)
_BOOTSTRAP = 200
# Fewer clips than this: the bootstrap resamples blocks of time cut from them instead (see _rate_interval).
_BOOTSTRAP_BLOCKS = 10


def fit_pareto_tail(x: np.ndarray) -> tuple[float, float, float, float]:
    """Generalized Pareto fit of the upper tail of x by probability-weighted moments (Hosking & Wallis 1987).

    Returns:
        (threshold u, share of x above u, shape xi, scale sigma); exceedances y = x - u > 0 are
        modelled as P(y > v) = (1 + xi v / sigma) ** (-1 / xi).
    """
    x = np.sort(np.asarray(x, dtype=np.float64))
    n_tail = max(_MIN_TAIL_POINTS, int(round(len(x) * (1 - _TAIL_QUANTILE))))
    n_tail = min(n_tail, len(x) - 1)
    u = float(x[-n_tail - 1])
    y = x[-n_tail:] - u
    y = y[y > 0]
    if len(y) < 3:
        return u, n_tail / len(x), 0.0, max(float(np.mean(y)), 1e-12) if len(y) else 1e-12
    m = len(y)
    a0 = float(np.mean(y))
    a1 = float(np.mean(y * (m - np.arange(1, m + 1)) / (m - 1)))  # E[y (1 - F(y))]
    spread = a0 - 2.0 * a1
    if not spread > 1e-12 * max(a0, 1e-300):  # tied exceedances (a looped clip): no shape to estimate
        return u, len(y) / len(x), 0.0, float(max(a0, 1e-12))
    xi = 2.0 - a0 / spread
    sigma = 2.0 * a0 * a1 / spread
    xi = float(np.clip(xi, *_SHAPE_RANGE))
    if not sigma > 0:
        sigma = a0 * (1 - xi)
    return u, len(y) / len(x), xi, float(sigma)


def pareto_quantile(u: float, share: float, xi: float, sigma: float, probability: float) -> float:
    """The value exceeded with the given probability under the tail fit (valid below `share`)."""
    r = share / probability
    return u + (sigma / xi * (r**xi - 1.0) if abs(xi) > 1e-9 else sigma * math.log(r))


def pareto_survival(u: float, share: float, xi: float, sigma: float, t: float) -> float:
    """P(x > t) under the tail fit, for t >= u."""
    v = max(0.0, t - u)
    if abs(xi) <= 1e-9:
        return share * math.exp(-v / sigma)
    base = 1.0 + xi * v / sigma
    return share * base ** (-1.0 / xi) if base > 0 else 0.0


def _events(clips: Sequence[np.ndarray], threshold: float, hop_seconds: float, rules: dict[str, Any]) -> int:
    """Events the device's Detector would start on these clips at this threshold."""
    settings = DetectorSettings(threshold=threshold, **rules)
    count = 0
    for clip in clips:
        detector = Detector(settings)
        for i, s in enumerate(clip):
            count += sum(t.state == "start" for t in detector.update(i, (i + 1) * hop_seconds, float(s)))
    return count


def _extremal_index(
    clips: Sequence[np.ndarray], sustained: np.ndarray, hop_seconds: float, rules: dict[str, Any]
) -> tuple[float, float]:
    """(events per exceedance, the level it was measured at): at the highest level with 10 exceedances."""
    ordered = np.sort(sustained)
    level = float(ordered[-min(10, len(ordered)) - 1]) if len(ordered) > 10 else float(ordered[0]) * 0.999
    exceedances = int(np.count_nonzero(sustained > level))
    if level <= 0 or exceedances == 0:
        return 1.0, level
    return min(1.0, _events(clips, level, hop_seconds, rules) / exceedances), level


def _tail_quantile(sustained: np.ndarray, fit: tuple[float, float, float, float], probability: float) -> float:
    """The sustained score exceeded with this probability: empirical inside the audio, the tail fit beyond it."""
    u, share, xi, sigma = fit
    if probability >= share:
        return float(np.quantile(sustained, 1.0 - probability))
    return float(pareto_quantile(u, share, xi, sigma, probability))


def _tail_threshold(sustained: np.ndarray, target: float, theta: float) -> tuple[float, dict[str, Any]]:
    probability = min(0.5, target / max(theta, 1e-3))  # exceedance probability of the sustained score
    u, share, xi, sigma = fit = fit_pareto_tail(sustained)
    threshold = _tail_quantile(sustained, fit, probability)
    return threshold, {
        "extremal_index": round(theta, 4),
        "exceedance_probability": probability,
        "tail_shape": round(xi, 4),
        "tail_scale": round(sigma, 6),
        "tail_start": round(u, 6),
        "tail_share": round(share, 4),
    }


def _bootstrap(
    decided: Sequence[np.ndarray], patience: int
) -> list[tuple[np.ndarray, tuple[float, float, float, float]]]:
    """Per bootstrap resample of the audio (decided: each clip's smoothed scores), its sustained scores and their tail fit.

    The units resampled are the clips, or, when there are fewer than _BOOTSTRAP_BLOCKS of them (a
    site calibration is usually one uninterrupted stream), contiguous blocks of time cut from them:
    resampling a single stream's one clip gave an interval of zero width (the target itself) however
    short or drifting the audio was. Blocks keep the correlation between neighbouring windows and
    carry the drift from one stretch of the audio to the next into the resamples.
    """
    rng = np.random.default_rng(0)
    units = _time_blocks(decided, _BOOTSTRAP_BLOCKS, 4 * patience)
    per_unit = [sustained_scores([u], patience) for u in units]
    resamples = []
    for _ in range(_BOOTSTRAP):
        pick = rng.integers(0, len(units), len(units))
        sample = np.concatenate([per_unit[i] for i in pick])
        if len(sample) < _MIN_TAIL_POINTS + 2:
            sample = np.concatenate([units[i] for i in pick])
        resamples.append((sample, fit_pareto_tail(sample)))
    return resamples


def _rate_interval(boot: tuple[float, list], threshold: float, hop_seconds: float) -> tuple[float, float]:
    """5th and 95th percentile of the false alarms per day at this threshold, over the bootstrap resamples.

    boot: (extremal index, _bootstrap's resamples)."""
    theta, resamples = boot
    windows_per_day = SECONDS_PER_DAY / hop_seconds
    rates = []
    for sample, (u, share, xi, sigma) in resamples:
        p = pareto_survival(u, share, xi, sigma, threshold) if threshold >= u else float(np.mean(sample > threshold))
        rates.append(theta * p * windows_per_day)
    return float(np.percentile(rates, 5)), float(np.percentile(rates, 95))


def _upper_threshold(boot: tuple[float, list], probability: float, confidence: float) -> float:
    """The threshold whose false-alarm rate is at most the target in `confidence` of the resamples.

    Each resample's own threshold for the point estimate's exceedance probability of the sustained
    score is computed as the point estimate's; the rate at a threshold falls as the threshold rises,
    so the `confidence` quantile of those thresholds keeps the rate at or under the target in that
    share of the resamples.
    """
    _, resamples = boot
    return float(
        np.percentile([_tail_quantile(sample, fit, probability) for sample, fit in resamples], 100.0 * confidence)
    )


def _time_blocks(clips: Sequence[np.ndarray], min_units: int, min_length: int) -> list[np.ndarray]:
    """The clips themselves if there are at least min_units, else each cut into contiguous blocks of
    about equal length (at least min_length windows) so that there are about min_units in all."""
    if len(clips) >= min_units:
        return list(clips)
    total = sum(len(c) for c in clips)
    length = max(min_length, total // min_units)
    return [b for c in clips for b in np.array_split(c, max(1, len(c) // length)) if len(b)]


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

# set_threshold may move the threshold within [calibrated / 4, calibrated * 4] without force: a factor
# of 4 is far more than any retuning needs (the false-alarm rate changes by orders of magnitude across
# it), and well short of switching detection off (`set_threshold 1e308` was accepted).
THRESHOLD_BAND_FACTOR = 4.0
# A calibration needs enough windows for the tail fit it extrapolates from: _MIN_TAIL_POINTS sustained
# scores above the _TAIL_QUANTILE. 200 windows, 1.7 minutes at the usual 0.52 s hop. Less audio is
# refused even with force: no operator intent makes 0.2 minutes a calibration.
MIN_CALIBRATION_WINDOWS = round(_MIN_TAIL_POINTS / (1.0 - _TAIL_QUANTILE))
# A calibrated threshold is exceeded by well under 1 % of normal windows; audio that the calibration
# in force scores above its threshold in more than a tenth of its windows is a fault or a changed
# machine, not the normal sound to calibrate on.
MAX_SHARE_ABOVE_THRESHOLD = 0.1


def finite_number(value: Any) -> float | None:
    """A JSON number (not a boolean) as a finite float, or None: NaN, infinities and integers beyond float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # a 400-digit JSON integer
        return None
    return number if math.isfinite(number) else None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_threshold_change(value: float, calibrated: float, force: bool = False) -> None:
    """Refuse a threshold outside [calibrated / 4, calibrated * 4] unless forced; never a non-finite one.

    Args:
        value: the requested threshold (score units).
        calibrated: the threshold of the config and calibration in force.
        force: the operator confirmed a value outside the band.

    Raises:
        AcmonError: one line naming the value, the band and how to override.
    """
    number = finite_number(value)
    if number is None or not number > 0:
        raise AcmonError(f"set_threshold: value must be a finite number > 0, got {_short(value)}")
    value = number
    low, high = calibrated / THRESHOLD_BAND_FACTOR, calibrated * THRESHOLD_BAND_FACTOR
    if not force and not low <= value <= high:
        raise AcmonError(
            f"set_threshold: {value:.4g} is outside [{low:.4g}, {high:.4g}], a quarter to {THRESHOLD_BAND_FACTOR:g} "
            f"times the calibrated threshold {calibrated:.4g}; send force: true to apply it anyway, or calibrate"
        )


def min_calibration_minutes(hop_seconds: float) -> float:
    """MIN_CALIBRATION_WINDOWS in minutes at this hop, rounded up to a tenth."""
    return math.ceil(MIN_CALIBRATION_WINDOWS * hop_seconds / 6.0) / 10.0


def check_calibration_audio(windows: int, hop_seconds: float, requested: bool = True) -> None:
    """Refuse a calibration on fewer than MIN_CALIBRATION_WINDOWS windows (forced or not).

    Args:
        windows: windows asked for (requested) or collected.
        requested: True for the request (the minutes given), False for the audio that arrived.

    Raises:
        AcmonError: one line stating the minimum.
    """
    if windows >= MIN_CALIBRATION_WINDOWS:
        return
    need = (
        f"at least {MIN_CALIBRATION_WINDOWS} analysis windows ({min_calibration_minutes(hop_seconds):.1f} minutes "
        f"at this model's {hop_seconds:.2f} s hop) are needed to fit the tail of the normal scores"
    )
    got = f"{windows * hop_seconds / 60.0:.2g} minutes"
    if requested:
        raise AcmonError(f"calibrate: {got} is too little audio: {need}; ask for more minutes")
    raise AcmonError(f"calibrate: the audio ended after {windows} windows ({got}): {need}; give more audio")


def check_calibration_result(
    before: float, after: float, share_above: float | None, calibrated_on_site: bool, force: bool = False
) -> None:
    """Refuse a calibration whose audio looks like a fault, unless forced.

    Two signs: the new threshold is more than THRESHOLD_BAND_FACTOR times the current one (the
    finding: a fault raised it from 3.9 to 56.9), or, with a site calibration in force, the current
    model scored more than MAX_SHARE_ABOVE_THRESHOLD of the windows above its threshold. The
    second is not applied to a first calibration: the training data's model is expected to
    misjudge a new site (a neighbour's hum), which is why one calibrates.

    Args:
        before, after: the calibrated threshold in force and the one the new audio calls for (score units;
            its average, before any margin for a rate the audio cannot show).
        share_above: share of the scored windows above the calibrated threshold in force, after
            detector.threshold_scale (None: none scored).
        calibrated_on_site: a calibration.yaml is in force.

    Raises:
        AcmonError: one line with before and after, and how to override.
    """
    if force:
        return
    advice = (
        "nothing was changed. Calibrate while the machine runs normally, or send force: true if this is "
        "its normal sound"
    )
    if after > before * THRESHOLD_BAND_FACTOR:
        raise AcmonError(
            f"calibrate: refused, the audio looks like a fault: the threshold it calls for, {after:.4g}, would be "
            f"{after / before:.1f} times the current {before:.4g} (more than {THRESHOLD_BAND_FACTOR:g} times); {advice}"
        )
    if calibrated_on_site and share_above is not None and share_above > MAX_SHARE_ABOVE_THRESHOLD:
        raise AcmonError(
            f"calibrate: refused, the audio looks like a fault: the calibration in force (threshold {before:.4g}) "
            f"scores {share_above:.0%} of its windows above its threshold (more than {MAX_SHARE_ABOVE_THRESHOLD:.0%}); "
            f"the new threshold would be {after:.4g}; {advice}"
        )


# ---------------------------------------------------------------------------------------------
# Calibration files in the state directory


def calibration_paths(config_path: str | os.PathLike, environ: Mapping[str, str] = os.environ) -> tuple[Path, Path]:
    """(calibration.yaml, calibration.prev.yaml) of the device the config file describes.

    Raises:
        ConfigError: the config file is invalid (its device id and site name the folder).
    """
    folder = calibration_directory(load_config(config_path), environ)
    return folder / CALIBRATION_FILENAME, folder / PREVIOUS_FILENAME


def legacy_calibration_path(config_path: str | os.PathLike) -> Path:
    """Where calibration.yaml was written before issue 11: beside the config (read-only under systemd)."""
    return Path(config_path).resolve().parent / CALIBRATION_FILENAME


def calibration_in_force(config_path: str | os.PathLike, environ: Mapping[str, str] = os.environ) -> Path | None:
    """The calibration file load_site_config() lays over this config, or None."""
    current, _ = calibration_paths(config_path, environ)
    if current.exists():
        return current
    legacy = legacy_calibration_path(config_path)
    return legacy if legacy.is_file() else None


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, text.encode("utf-8"), PRIVATE_FILE_MODE)


def _write_error(path: Path, exc: OSError) -> AcmonError:
    return AcmonError(
        f"calibrate: cannot write {exc.filename or path} ({exc.strerror or type(exc).__name__}); nothing was changed. "
        "The state directory must be writable: StateDirectory=acmon in the unit, or set STATE_DIRECTORY"
    )


def prepare_calibration_folder(config_path: str | os.PathLike, environ: Mapping[str, str] = os.environ) -> Path:
    """Create the calibration folder (0700) of the config's device; returns it.

    Raises:
        AcmonError: it cannot be created (read-only, a file in the way, disk full); one line.
    """
    folder = calibration_paths(config_path, environ)[0].parent
    try:
        return make_private_directory(folder)
    except OSError as exc:
        raise _write_error(folder, exc) from None


def calibration_document(
    result: CalibrationResult, source: str, wall_time: float | None = None, site_statistics: str | None = None
) -> str:
    """The YAML text of a calibration file: the calibrated keys, and how they were measured.

    Args:
        site_statistics: file name (beside the config) of the site's normal statistics, if learnt.
    """
    sections: dict[str, Any] = {"model": {"threshold": round(result.threshold, 6)}}
    if site_statistics is not None:
        sections["model"]["site_statistics"] = site_statistics
    if result.min_rms_dbfs is not None:
        sections["detector"] = {"min_rms_dbfs": result.min_rms_dbfs}
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if wall_time is None else wall_time))
    record = {"time": when, "source": source, **{k: _plain(v) for k, v in result.info.items()}}
    header = (
        f"# On-site calibration written by `python -m device calibrate` at {when}.\n"
        "# Laid over the config at start and on reload; roll back with `python -m device calibrate --rollback`.\n"
    )
    return header + yaml.safe_dump({**sections, "calibration": record}, sort_keys=False)


def _plain(value: Any) -> Any:
    if isinstance(value, (np.floating, float)):
        return round(float(value), 6)
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_calibration(config_path: str | os.PathLike, document: str, environ: Mapping[str, str] = os.environ) -> Path:
    """Write calibration.yaml atomically (0600), keeping the one it replaces as calibration.prev.yaml.

    The current file is copied to the previous one first (also atomically), so
    at every instant both files are whole and calibration.yaml exists. The first
    calibration after an upgrade keeps the old file beside the config as the
    previous one, so a rollback returns to it.

    Raises:
        AcmonError: the state directory cannot be written; one line, nothing changed
            (at worst calibration.prev.yaml was refreshed from calibration.yaml).
    """
    current, previous = calibration_paths(config_path, environ)
    prepare_calibration_folder(config_path, environ)
    try:
        # errors="replace": a damaged calibration.yaml is kept as the previous one, not a UnicodeDecodeError.
        if current.exists():
            _write_text(previous, current.read_bytes().decode("utf-8", errors="replace"))
        elif legacy_calibration_path(config_path).is_file():
            _write_text(previous, legacy_calibration_path(config_path).read_bytes().decode("utf-8", errors="replace"))
        _write_text(current, document)
    except OSError as exc:
        raise _write_error(current, exc) from None
    return current


def prune_site_statistics(config_path: str | os.PathLike, environ: Mapping[str, str] = os.environ) -> list[Path]:
    """Delete site statistics files that neither calibration.yaml nor calibration.prev.yaml names; returns them."""
    paths = calibration_paths(config_path, environ)
    folder = paths[0].parent
    referenced = set()
    for path in paths:
        try:
            data = read_yaml_file(path, "calibration file") or {}
            referenced.add(str((data.get("model") or {}).get("site_statistics")))
        except (ConfigError, OSError, AttributeError):  # missing or damaged: names nothing
            continue
    removed = []
    for f in folder.glob(f"{SITE_FILE_PREFIX}*.npz"):
        if f.name in referenced:
            continue
        try:
            f.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            logger.warning("calibration: cannot remove the unused %s (%s)", f, exc.strerror or exc)
            continue
        removed.append(f)
    return removed


def rollback_calibration(config_path: str | os.PathLike, environ: Mapping[str, str] = os.environ) -> Path:
    """Swap calibration.yaml and calibration.prev.yaml (a second rollback undoes the first).

    The previous file must be readable UTF-8 YAML before anything is swapped; whether its
    keys are valid is checked by loading the config afterwards.

    Raises:
        AcmonError: there is no previous calibration, it is damaged, or the files cannot be written.
    """
    current, previous = calibration_paths(config_path, environ)
    if not previous.exists():
        raise AcmonError(f"{previous}: no previous calibration to roll back to")
    # Refuse a damaged previous file before swapping: the daemon would not start on it.
    lay_calibration_over(load_config(config_path), previous, f"delete {previous.name} or fix it; nothing was changed")
    old_previous = previous.read_text(encoding="utf-8")  # valid UTF-8: checked just above
    try:
        if current.exists():
            # errors="replace": rolling back from a damaged calibration.yaml is what rollback is for.
            _write_text(previous, current.read_bytes().decode("utf-8", errors="replace"))
        else:
            previous.unlink()
        _write_text(current, old_previous)
    except OSError as exc:
        raise _write_error(current, exc) from None
    return current


def load_site_config(config_path: str | os.PathLike, environ: Mapping[str, str] = os.environ) -> AcmonConfig:
    """The config file with its device's calibration.yaml (if there is one) laid over it.

    The calibration is read from the state directory (config.calibration_directory); a
    calibration.yaml beside the config, where it was written before, is still read when the
    state directory has none, with a warning to move it.

    Raises:
        ConfigError: the config or the calibration file is invalid; messages name the file and key.
    """
    cfg = load_config(config_path)
    current = calibration_directory(cfg, environ) / CALIBRATION_FILENAME
    if not current.exists():
        legacy = legacy_calibration_path(config_path)
        if not legacy.is_file():
            return _site_statistics_beside(cfg, Path(config_path).resolve().parent)
        logger.warning(
            "calibration: reading %s beside the config, where older versions wrote it; the daemon now "
            "keeps it in %s (move it there: the next calibration writes there)",
            legacy,
            current.parent,
        )
        current = legacy
    out = lay_calibration_over(
        cfg, current, "fix it, or roll back with: python -m device calibrate --config FILE --rollback"
    )
    logger.info("calibration %s laid over %s", current, config_path)
    return _site_statistics_beside(out, Path(config_path).resolve().parent)


def lay_calibration_over(cfg: AcmonConfig, calibration_file: Path, hint: str) -> AcmonConfig:
    """`cfg` with the keys a calibration file sets replaced by its values.

    A relative model.site_statistics the file names is made absolute beside the file.

    Args:
        hint: what to do, appended to every error.

    Raises:
        ConfigError: the file cannot be read (see config.read_yaml_file), or sets a key a
            calibration may not set, or a value the schema refuses.
    """
    current = calibration_file
    try:
        data = read_yaml_file(current, "calibration file") or {}
    except ConfigError as exc:
        raise ConfigError(f"{exc}; {hint}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{current}: expected a mapping of sections; {hint}")
    merged = cfg.model_dump()
    for section, values in data.items():
        if section == "calibration":
            continue  # the record of how it was measured
        allowed = CALIBRATED_KEYS.get(section)
        if allowed is None or not isinstance(values, dict) or set(values) - set(allowed):
            raise ConfigError(
                f"{current}: {str(section)[:80]!r}: a calibration file may set only "
                f"{', '.join(f'{s}.{k}' for s, keys in CALIBRATED_KEYS.items() for k in keys)}; {hint}"
            )
        merged[section] = {**merged[section], **values}
    try:
        out = config_from_dict(merged, source=str(current))
    except ConfigError as exc:
        raise ConfigError(f"{exc}; {hint}") from None
    # A relative site_statistics lies beside the file that named it: the calibration's folder.
    if "site_statistics" in (data.get("model") or {}):
        out = _site_statistics_beside(out, current.parent)
    return out


def _site_statistics_beside(cfg: AcmonConfig, folder: Path) -> AcmonConfig:
    """model.site_statistics made absolute: a relative name lies in `folder`."""
    name = cfg.model.site_statistics
    if not name or Path(name).is_absolute():
        return cfg
    path = folder / name
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"site_statistics": str(path)})})

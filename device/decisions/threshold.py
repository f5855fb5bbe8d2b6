"""Thresholds for a false-alarm rate per day from normal scores (numpy only): a generalized Pareto tail.

Training calibrates a model's threshold on held-out normal clips with calibrate_threshold(); the
device recalibrates it on the site's own sound (device/daemon/calibrate.py). The tail is fitted to the
sustained scores the Detector would act on, the events per exceedance (the extremal index) are
measured with the Detector itself, and the rate's uncertainty comes from a bootstrap over clips
or blocks of time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .detector import Detector, DetectorSettings, smooth_series

SECONDS_PER_DAY = 86400.0


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
    (rate * hop) windows (169,000 for one a day at a 0.512 s hop). No normal
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


# A calibration needs enough windows for the tail fit it extrapolates from: _MIN_TAIL_POINTS sustained
# scores above the _TAIL_QUANTILE. 200 windows, 1.7 minutes at the usual 0.512 s hop. Less audio is
# refused even with force: no operator intent makes 0.2 minutes a calibration.
MIN_CALIBRATION_WINDOWS = round(_MIN_TAIL_POINTS / (1.0 - _TAIL_QUANTILE))

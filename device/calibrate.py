"""Threshold calibration for a false-alarm rate per day (numpy only), the site level gate, and calibration files.

Training calibrates a model's threshold on held-out normal clips with
calibrate_threshold(); the device recalibrates it on the site's own sound
(`python -m device calibrate`, or the `calibrate` command) and writes the
result to calibration.yaml next to its config, which load_site_config()
lays over the config.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from .config import AcmonConfig, config_from_dict, load_config
from .detector import smooth_series
from .gaussian import SITE_FILE_PREFIX
from .errors import AcmonError, ConfigError

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
# Gamma distribution, numpy and math only (the device has no scipy)


def digamma(x: float) -> float:
    """psi(x) for x > 0: recurrence up to x >= 6, then the asymptotic series (error < 1e-12)."""
    result = 0.0
    while x < 6.0:
        result -= 1.0 / x
        x += 1.0
    f = 1.0 / (x * x)
    return result + math.log(x) - 0.5 / x - f * (1 / 12 - f * (1 / 120 - f * (1 / 252 - f * (1 / 240 - f / 132))))


def trigamma(x: float) -> float:
    """psi'(x) for x > 0, by the same recurrence and asymptotic series."""
    result = 0.0
    while x < 6.0:
        result += 1.0 / (x * x)
        x += 1.0
    f = 1.0 / (x * x)
    return result + 1 / x + f / 2 + f / x * (1 / 6 - f * (1 / 30 - f * (1 / 42 - f / 30)))


def fit_gamma(samples: np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood gamma fit with the location fixed at 0 (scipy's gamma.fit(x, floc=0)).

    The shape k solves log(k) - digamma(k) = log(mean) - mean(log x) (Newton's
    method from Minka's closed-form start); the scale is mean / k.

    Args:
        samples: positive values (zeros and negatives are dropped: log x is undefined).

    Returns:
        (shape, scale).
    """
    x = np.asarray(samples, dtype=np.float64)
    x = x[x > 0]
    if len(x) < 2 or np.ptp(x) == 0:
        raise ValueError("a gamma fit needs at least two different positive values")
    mean = float(x.mean())
    s = math.log(mean) - float(np.log(x).mean())
    k = (3.0 - s + math.sqrt((s - 3.0) ** 2 + 24.0 * s)) / (12.0 * s)
    for _ in range(100):
        step = (math.log(k) - digamma(k) - s) / (1.0 / k - trigamma(k))
        k_next = k - step
        if k_next <= 0:
            k_next = k / 2
        if abs(k_next - k) <= 1e-12 * k:
            k = k_next
            break
        k = k_next
    return k, mean / k


def gamma_upper_regularized(a: float, x: float) -> float:
    """Q(a, x) = Gamma(a, x) / Gamma(a), the gamma survival function at x for shape a, scale 1.

    The series for P converges fast for x < a + 1, the continued fraction for Q
    (modified Lentz) for x >= a + 1; computing the upper tail directly keeps
    its relative precision down to the tiny exceedance probabilities (1e-6)
    a per-day alarm rate needs.
    """
    if x <= 0:
        return 1.0
    log_prefactor = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1.0:
        term = total = 1.0 / a
        n = a
        for _ in range(10000):
            n += 1.0
            term *= x / n
            total += term
            if abs(term) < abs(total) * 1e-16:
                break
        return max(0.0, 1.0 - total * math.exp(log_prefactor))
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 10000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return math.exp(log_prefactor) * h


def gamma_isf(probability: float, shape: float, scale: float) -> float:
    """The value a gamma(shape, scale) variable exceeds with the given probability (scipy's gamma.isf).

    Bisection on log x of gamma_upper_regularized: slow by scipy's standards (about
    200 evaluations) but exact to float precision and run once per calibration.
    """
    if not 0 < probability < 1:
        raise ValueError(f"probability must be in (0, 1), got {probability}")
    lo, hi = 1e-300, max(shape, 1.0)
    while gamma_upper_regularized(shape, hi) > probability:
        lo, hi = hi, hi * 2.0
    log_lo, log_hi = math.log(lo), math.log(hi)
    for _ in range(200):
        mid = 0.5 * (log_lo + log_hi)
        if gamma_upper_regularized(shape, math.exp(mid)) > probability:
            log_lo = mid
        else:
            log_hi = mid
        if log_hi - log_lo < 1e-14:
            break
    return math.exp(0.5 * (log_lo + log_hi)) * scale


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
) -> tuple[float, dict[str, Any]]:
    """Threshold for a target false-alarm rate per day, from normal window scores.

    A day of monitoring has 86400 / hop_seconds windows; the target rate per
    day therefore fixes the probability q that a normal window's sustained
    score (see sustained_scores) exceeds the threshold: q = rate / windows per
    day (about 6e-6 for one alarm a day at a 0.52 s hop). Normal audio is
    never long enough to observe such a quantile, so a gamma distribution is
    fitted to the sustained scores (as the DCASE 2023 baseline fits its
    scores) and its (1 - q) quantile extrapolates the tail. The threshold is
    never below the highest normal score seen. The estimate is only as good as
    the audio is representative: on-site calibration replaces the training
    estimate with the site's own sound.

    Args:
        clip_scores: per clip (or uninterrupted stretch of a stream), its window
            scores in stream order.
        hop_seconds: the device's step between windows, in seconds.
        smoothing_windows, smoothing: the detector's smoothing, applied first so
            the calibrated scores are the ones the detector compares.

    Returns:
        (threshold, calibration record for the model metadata or calibration file).
    """
    clips = [np.asarray(smooth_series(c, smoothing_windows, smoothing), dtype=np.float64) for c in clip_scores]
    windows_per_day = SECONDS_PER_DAY / hop_seconds
    rate = min(0.5, false_alarms_per_day / windows_per_day)
    sustained = sustained_scores(clips, patience_windows)
    if len(sustained) < 2:
        sustained = np.concatenate(clips) if clips else np.zeros(0)
    if len(sustained) == 0:
        raise ValueError("no scored windows to calibrate on")
    info: dict[str, Any] = {
        "method": "gamma_ppf_sustained",
        "false_alarms_per_day": false_alarms_per_day,
        "patience_windows": patience_windows,
        "hop_seconds": hop_seconds,
        "sustained_exceedance_probability": rate,
        "n_windows": int(sum(len(c) for c in clips)),
        "held_out_seconds": round(sum(len(c) for c in clips) * hop_seconds, 1),
        "normal_mean": float(sustained.mean()),
        "normal_std": float(sustained.std()),
        "normal_max": float(sustained.max()),
    }
    try:
        shape, scale = fit_gamma(sustained)
        threshold = gamma_isf(rate, shape, scale)
        info.update(gamma_shape=shape, gamma_scale=scale)
    except ValueError:
        threshold = float("nan")
    if not math.isfinite(threshold) or threshold < sustained.max():
        info["method"] = "max_normal"
        threshold = float(sustained.max())
    return threshold, info


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
        return float(x[-1]) if n else SILENCE_DBFS, float(x.mean()) if n else SILENCE_DBFS, float(x.mean()) if n else SILENCE_DBFS
    cumsum = np.cumsum(x)
    k = np.arange(1, n)  # quiet group = x[:k]
    mean_q = cumsum[:-1] / k
    mean_l = (cumsum[-1] - cumsum[:-1]) / (n - k)
    between = k * (n - k) * (mean_l - mean_q) ** 2
    best = int(np.argmax(between))
    return float(x[best]), float(mean_q[best]), float(mean_l[best])


def _runs(scores: Sequence[float | None]) -> list[np.ndarray]:
    """Uninterrupted stretches of scored windows (None breaks a stretch, as the gate does)."""
    runs, current = [], []
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
    kwargs = dict(hop_seconds=hop_seconds, false_alarms_per_day=false_alarms_per_day,
                  patience_windows=patience_windows, smoothing_windows=smoothing_windows, smoothing=smoothing)

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
            quiet_runs = [r for seg in segments for r in _runs([s if max(lv, SILENCE_DBFS) <= split else None for lv, s in seg])]
            quiet_sustained = sustained_scores(
                [np.asarray(smooth_series(r, smoothing_windows, smoothing)) for r in quiet_runs], patience_windows
            )
            would_alarm = int(np.count_nonzero(quiet_sustained > threshold))
            info.update(quiet_level_dbfs=round(quiet_mean, 2), loud_level_dbfs=round(loud_mean, 2),
                        quiet_windows_above_threshold=would_alarm)
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
# Calibration files next to the config


def calibration_paths(config_path: str | os.PathLike) -> tuple[Path, Path]:
    """(calibration.yaml, calibration.prev.yaml) in the config file's folder."""
    folder = Path(config_path).resolve().parent
    return folder / CALIBRATION_FILENAME, folder / PREVIOUS_FILENAME


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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


def write_calibration(config_path: str | os.PathLike, document: str) -> Path:
    """Write calibration.yaml atomically, keeping the one it replaces as calibration.prev.yaml.

    The current file is copied to the previous one first (also atomically), so
    at every instant both files are whole and calibration.yaml exists.
    """
    current, previous = calibration_paths(config_path)
    if current.exists():
        _atomic_write(previous, current.read_text(encoding="utf-8"))
    _atomic_write(current, document)
    return current


def prune_site_statistics(config_path: str | os.PathLike) -> list[Path]:
    """Delete site statistics files that neither calibration.yaml nor calibration.prev.yaml names; returns them."""
    folder = Path(config_path).resolve().parent
    referenced = set()
    for path in calibration_paths(config_path):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            referenced.add(str((data.get("model") or {}).get("site_statistics")))
        except (OSError, yaml.YAMLError, AttributeError):
            continue
    removed = [f for f in folder.glob(f"{SITE_FILE_PREFIX}*.npz") if f.name not in referenced]
    for f in removed:
        f.unlink(missing_ok=True)
    return removed


def rollback_calibration(config_path: str | os.PathLike) -> Path:
    """Swap calibration.yaml and calibration.prev.yaml (a second rollback undoes the first).

    Raises:
        AcmonError: there is no previous calibration.
    """
    current, previous = calibration_paths(config_path)
    if not previous.exists():
        raise AcmonError(f"{previous}: no previous calibration to roll back to")
    old_previous = previous.read_text(encoding="utf-8")
    if current.exists():
        _atomic_write(previous, current.read_text(encoding="utf-8"))
    else:
        previous.unlink()
    _atomic_write(current, old_previous)
    return current


def load_site_config(config_path: str | os.PathLike) -> AcmonConfig:
    """The config file with calibration.yaml (if present beside it) laid over it.

    Raises:
        ConfigError: the config or the calibration file is invalid; messages name the file and key.
    """
    cfg = load_config(config_path)
    current, _ = calibration_paths(config_path)
    if not current.exists():
        return _site_statistics_beside(cfg, config_path)
    hint = "fix it, or roll back with: python -m device calibrate --config FILE --rollback"
    try:
        data = yaml.safe_load(current.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{current}: cannot read calibration ({' '.join(str(exc).split())}); {hint}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{current}: expected a mapping of sections; {hint}")
    merged = cfg.model_dump()
    for section, values in data.items():
        if section == "calibration":
            continue  # the record of how it was measured
        allowed = CALIBRATED_KEYS.get(section)
        if allowed is None or not isinstance(values, dict) or set(values) - set(allowed):
            raise ConfigError(
                f"{current}: {section}: a calibration file may set only "
                f"{', '.join(f'{s}.{k}' for s, keys in CALIBRATED_KEYS.items() for k in keys)}; {hint}"
            )
        merged[section] = {**merged[section], **values}
    try:
        out = config_from_dict(merged, source=str(current))
    except ConfigError as exc:
        raise ConfigError(f"{exc}; {hint}") from None
    logger.info("calibration %s laid over %s", current, config_path)
    return _site_statistics_beside(out, config_path)


def _site_statistics_beside(cfg: AcmonConfig, config_path: str | os.PathLike) -> AcmonConfig:
    """model.site_statistics made absolute: a relative name lies in the config file's folder."""
    name = cfg.model.site_statistics
    if not name or Path(name).is_absolute():
        return cfg
    path = Path(config_path).resolve().parent / name
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"site_statistics": str(path)})})

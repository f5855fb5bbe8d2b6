"""Detection metrics for anomaly scores (ROC, AUC, DCASE partial AUC, confusion matrix), numpy only."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def _check_binary(
    y_true: Sequence | np.ndarray, scores: Sequence | np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels as a bool array (1/True = anomaly = positive) and scores as float64, validated."""
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"y_true must be one-dimensional (got shape {y.shape})")
    values = set(np.unique(y).tolist())
    if not values <= {0, 1}:
        raise ValueError(f"y_true must hold only 0/1 or False/True (got {sorted(values)[:5]})")
    y = y.astype(bool)
    if scores is None:
        return y, None
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != y.shape:
        raise ValueError(f"y_true and scores differ in shape: {y.shape} vs {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite (no NaN or infinity)")
    return y, s


def roc_curve(
    y_true: Sequence | np.ndarray, scores: Sequence | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve of scores where higher means more anomalous.

    A clip is called anomalous when its score >= threshold. There is one point
    per distinct score (tied scores move the curve diagonally, never in a
    staircase whose shape depends on the order of the ties), preceded by the
    point (0, 0) at threshold +inf.

    Args:
        y_true: 1 (or True) for anomalous clips, 0 for normal ones.
        scores: one anomaly score per clip.

    Returns:
        (fpr, tpr, thresholds): non-decreasing false and true positive rates, and the
        thresholds in decreasing order, each of length n_distinct_scores + 1.

    Raises:
        ValueError: malformed input, or y_true lacks either class (the rates are undefined).
    """
    y, s = _check_binary(y_true, scores)
    assert s is not None  # scores were given
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"ROC needs both classes (got {n_pos} anomalous and {n_neg} normal)")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    # Last index of each run of equal scores: the counts there include every tie.
    last_of_run = np.r_[np.flatnonzero(np.diff(s_sorted)), s_sorted.size - 1]
    tps = np.cumsum(y_sorted)[last_of_run]
    fps = (last_of_run + 1) - tps
    fpr = np.r_[0.0, fps / n_neg]
    tpr = np.r_[0.0, tps / n_pos]
    thresholds = np.r_[np.inf, s_sorted[last_of_run]]
    return fpr, tpr, thresholds


def roc_auc(y_true: Sequence | np.ndarray, scores: Sequence | np.ndarray) -> float:
    """Area under the ROC curve.

    Equals the Mann-Whitney U statistic divided by n_anomalous * n_normal: the
    probability that a random anomalous clip scores higher than a random normal
    one, a tie counting 1/2. 1 is perfect, 0.5 is chance, 0 is perfectly inverted.

    Raises:
        ValueError: malformed input, or y_true lacks either class.
    """
    fpr, tpr, _ = roc_curve(y_true, scores)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def partial_auc(y_true: Sequence | np.ndarray, scores: Sequence | np.ndarray, max_fpr: float = 0.1) -> float:
    """DCASE partial AUC: the ROC area over FPR in [0, max_fpr], divided by max_fpr.

    This is the pAUC of the DCASE Task 2 descriptions (2020 onwards),
    pAUC = (1 / p) * integral from 0 to p of TPR(FPR) dFPR, with the curve
    interpolated linearly at FPR = p. A perfect detector scores 1, chance scores
    p / 2 (0.05 for p = 0.1), and a detector ranking every anomaly below every
    normal clip scores 0.

    It is NOT the McClish-standardized value that
    sklearn.metrics.roc_auc_score(..., max_fpr=p) returns (which maps chance to
    0.5); numbers from scripts that call that function are not comparable with
    this one.

    Args:
        y_true: 1 (or True) for anomalous clips, 0 for normal ones.
        scores: one anomaly score per clip, higher is more anomalous.
        max_fpr: upper end p of the FPR range, in (0, 1].

    Raises:
        ValueError: malformed input, max_fpr out of range, or y_true lacks either class.
    """
    if not 0.0 < max_fpr <= 1.0:
        raise ValueError(f"max_fpr must be in (0, 1] (got {max_fpr})")
    fpr, tpr, _ = roc_curve(y_true, scores)
    stop = int(np.searchsorted(fpr, max_fpr, side="right"))  # fpr[:stop] <= max_fpr
    x, y = fpr[:stop], tpr[:stop]
    if x[-1] < max_fpr:  # then stop < len(fpr) and fpr[stop] > max_fpr: interpolate on that segment
        x0, x1, y0, y1 = fpr[stop - 1], fpr[stop], tpr[stop - 1], tpr[stop]
        x = np.r_[x, max_fpr]
        y = np.r_[y, y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)]
    area = float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))
    return area / max_fpr


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def confusion_matrix(y_true: Sequence, y_pred: Sequence) -> dict[str, Any]:
    """Counts and rates of binary decisions, anomaly being the positive class.

    Args:
        y_true: 1 (or True) for anomalous clips, 0 for normal ones.
        y_pred: 1 (or True) where the detector called the clip anomalous.

    Returns:
        {"tp", "fp", "tn", "fn"} as ints and {"precision", "recall", "f1",
        "false_alarm_rate"} as floats, or None where undefined (0/0: precision
        with no positive decision, recall with no anomalous clip,
        false_alarm_rate = fp / (fp + tn) with no normal clip, f1 when precision
        or recall is undefined). f1 is 0 when precision and recall are both 0.

    Raises:
        ValueError: malformed input or different lengths.
    """
    y, _ = _check_binary(y_true)
    p, _ = _check_binary(y_pred)
    if y.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in shape: {y.shape} vs {p.shape}")
    tp = int(np.sum(y & p))
    fp = int(np.sum(~y & p))
    tn = int(np.sum(~y & ~p))
    fn = int(np.sum(y & ~p))
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    if precision is None or recall is None:
        f1 = None
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "false_alarm_rate": _ratio(fp, fp + tn),
    }


def harmonic_mean(values: Sequence[float]) -> float:
    """Harmonic mean of non-negative values (0 if any is 0), as DCASE 2021+ combines AUCs and pAUCs.

    Raises:
        ValueError: empty input or a negative value.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("harmonic mean of no values")
    if np.any(v < 0):
        raise ValueError("harmonic mean needs non-negative values")
    if np.any(v == 0):
        return 0.0
    return float(v.size / np.sum(1.0 / v))

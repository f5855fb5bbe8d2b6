"""training.metrics against hand computations, the Mann-Whitney statistic and brute-force integration."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from training.metrics import confusion_matrix, harmonic_mean, partial_auc, roc_auc, roc_curve


def _naive_roc(y, s):
    """One ROC point per distinct score by explicit counting (score >= threshold is positive)."""
    y, s = np.asarray(y, bool), np.asarray(s, float)
    thresholds = np.r_[np.inf, np.unique(s)[::-1]]
    tpr = np.array([np.mean(s[y] >= t) for t in thresholds])
    fpr = np.array([np.mean(s[~y] >= t) for t in thresholds])
    return fpr, tpr, thresholds


def _brute_pauc(y, s, max_fpr, n_grid=200_001):
    """Trapezoid integration of the (linearly interpolated) naive ROC on a fine FPR grid."""
    fpr, tpr, _ = _naive_roc(y, s)
    grid = np.linspace(0.0, max_fpr, n_grid)
    return float(np.trapezoid(np.interp(grid, fpr, tpr), grid) / max_fpr)


def _random_case(seed, n_neg=60, n_pos=25, levels=8):
    """Integer-valued scores, so there are many ties, within and across classes."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n_neg, int), np.ones(n_pos, int)]
    s = np.r_[rng.integers(0, levels, n_neg), rng.integers(2, levels + 2, n_pos)].astype(float)
    perm = rng.permutation(y.size)
    return y[perm], s[perm]


def test_roc_curve_hand_example_with_ties():
    y = [0, 0, 1, 1, 0, 1]
    s = [0.1, 0.4, 0.4, 0.8, 0.2, 0.9]
    fpr, tpr, thr = roc_curve(y, s)
    np.testing.assert_allclose(thr, [np.inf, 0.9, 0.8, 0.4, 0.2, 0.1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 1, 1, 1])
    np.testing.assert_allclose(fpr, [0, 0, 0, 1 / 3, 2 / 3, 1])
    # Pairs (pos, neg): 9 pairs, one tie (0.4 vs 0.4) -> (8 + 0.5) / 9.
    assert roc_auc(y, s) == pytest.approx(8.5 / 9)


@pytest.mark.parametrize("seed", range(5))
def test_roc_curve_matches_naive_counting(seed):
    y, s = _random_case(seed)
    for got, want in zip(roc_curve(y, s), _naive_roc(y, s)):
        np.testing.assert_allclose(got, want)


def test_perfect_inverted_and_constant_scorers():
    y = np.r_[np.zeros(10), np.ones(5)].astype(int)
    s = np.arange(15, dtype=float)
    assert roc_auc(y, s) == 1.0
    assert partial_auc(y, s) == 1.0
    assert roc_auc(y, -s) == 0.0
    assert partial_auc(y, -s) == 0.0
    constant = np.ones(15)
    assert roc_auc(y, constant) == 0.5
    assert partial_auc(y, constant, max_fpr=0.1) == pytest.approx(0.05)  # chance = max_fpr / 2
    assert partial_auc(y, constant, max_fpr=1.0) == pytest.approx(0.5)


def test_random_scorer_is_near_chance():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 20_000)
    s = rng.normal(size=y.size)
    assert roc_auc(y, s) == pytest.approx(0.5, abs=0.02)
    assert partial_auc(y, s, 0.1) == pytest.approx(0.05, abs=0.01)


@pytest.mark.parametrize("seed", range(8))
def test_roc_auc_equals_mann_whitney_u_with_ties(seed):
    y, s = _random_case(seed, n_neg=40 + seed, n_pos=15 + 2 * seed)
    u = stats.mannwhitneyu(s[y == 1], s[y == 0], alternative="two-sided").statistic  # U of the anomalies
    assert roc_auc(y, s) == pytest.approx(u / ((y == 1).sum() * (y == 0).sum()), abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("max_fpr", [0.05, 0.1, 0.137, 0.5, 1.0])
def test_partial_auc_matches_brute_force(seed, max_fpr):
    y, s = _random_case(seed)
    assert partial_auc(y, s, max_fpr) == pytest.approx(_brute_pauc(y, s, max_fpr), abs=1e-5)


def test_partial_auc_with_max_fpr_one_is_auc():
    y, s = _random_case(3)
    assert partial_auc(y, s, 1.0) == pytest.approx(roc_auc(y, s), abs=1e-12)


def test_partial_auc_interpolates_inside_a_tie_segment():
    # Normals 0, 0 ... one anomaly ties with all 4 normals at score 1, the other is above.
    y = [0, 0, 0, 0, 1, 1]
    s = [1, 1, 1, 1, 1, 2]
    # ROC: (0, 0) -> (0, 0.5) -> (1, 1). Area over [0, 0.1]: 0.1 * (0.5 + 0.55) / 2.
    assert partial_auc(y, s, 0.1) == pytest.approx((0.5 + 0.55) / 2)


def test_metrics_need_both_classes_and_valid_input():
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([0, 0, 0], [1, 2, 3])
    with pytest.raises(ValueError, match="both classes"):
        partial_auc([1, 1], [1, 2])
    with pytest.raises(ValueError, match="shape"):
        roc_auc([0, 1], [1, 2, 3])
    with pytest.raises(ValueError, match="0/1"):
        roc_auc([0, 2], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        roc_auc([0, 1], [1, np.nan])
    with pytest.raises(ValueError, match="max_fpr"):
        partial_auc([0, 1], [1, 2], max_fpr=0)


def test_confusion_matrix_numbers():
    y_true = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    y_pred = [1, 1, 1, 0, 1, 0, 0, 0, 0, 0]
    cm = confusion_matrix(y_true, y_pred)
    assert (cm["tp"], cm["fp"], cm["tn"], cm["fn"]) == (3, 1, 5, 1)
    assert cm["precision"] == pytest.approx(0.75)
    assert cm["recall"] == pytest.approx(0.75)
    assert cm["f1"] == pytest.approx(0.75)
    assert cm["false_alarm_rate"] == pytest.approx(1 / 6)


def test_confusion_matrix_undefined_rates_are_none():
    cm = confusion_matrix([0, 0, 1], [False, False, False])
    assert (cm["tp"], cm["fp"], cm["tn"], cm["fn"]) == (0, 0, 2, 1)
    assert cm["precision"] is None and cm["f1"] is None
    assert cm["recall"] == 0.0 and cm["false_alarm_rate"] == 0.0
    cm = confusion_matrix([0, 0], [0, 1])
    assert cm["recall"] is None and cm["false_alarm_rate"] == 0.5
    cm = confusion_matrix([1, 0], [0, 1])
    assert cm["precision"] == 0.0 and cm["recall"] == 0.0 and cm["f1"] == 0.0


def test_harmonic_mean():
    assert harmonic_mean([0.5, 1.0]) == pytest.approx(2 / 3)
    assert harmonic_mean([0.9, 0.0]) == 0.0
    assert harmonic_mean([0.7]) == pytest.approx(0.7)
    with pytest.raises(ValueError):
        harmonic_mean([])

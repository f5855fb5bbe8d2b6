"""Threshold calibration for a false-alarm rate per day, accounting for the detector's patience."""

from __future__ import annotations

import numpy as np
import pytest

from device.calibrate import calibrate_threshold, fit_gamma, gamma_isf, sustained_scores
from device.detector import Detector, DetectorSettings
from training.fit import FitOptions


def test_sustained_scores_is_min_over_patience_within_clips():
    clips = [np.array([1.0, 5.0, 4.0, 0.5]), np.array([3.0, 2.0])]
    np.testing.assert_array_equal(sustained_scores(clips, 2), [1.0, 4.0, 0.5, 2.0])
    np.testing.assert_array_equal(sustained_scores(clips, 1), [1.0, 5.0, 4.0, 0.5, 3.0, 2.0])
    assert len(sustained_scores(clips, 3)) == 2  # the 2-window clip has no full run


def test_more_alarms_per_day_means_lower_threshold():
    rng = np.random.default_rng(0)
    clips = [rng.gamma(20, 0.05, size=40) for _ in range(10)]
    thresholds = [calibrate_threshold(clips, 0.52, rate, 2)[0] for rate in (0.1, 1.0, 10.0, 1000.0)]
    assert thresholds == sorted(thresholds, reverse=True)
    assert all(t >= max(sustained_scores(clips, 2)) for t in thresholds)


def test_calibrated_threshold_meets_its_rate_on_a_long_normal_stream():
    """Simulate a day of correlated normal scores: the detector's alarm count stays near the target."""
    rng = np.random.default_rng(1)
    hop_seconds = 0.52

    def stream(n):  # overlapping windows share half their audio: AR(1)-correlated scores
        e = rng.gamma(30, 0.03, size=n)
        out = np.empty(n)
        out[0] = e[0]
        for i in range(1, n):
            out[i] = 0.5 * out[i - 1] + 0.5 * e[i]
        return out

    held_out = [stream(200) for _ in range(20)]  # about 35 minutes
    threshold, info = calibrate_threshold(held_out, hop_seconds, false_alarms_per_day=50.0, patience_windows=2)
    assert info["method"] == "gamma_ppf_sustained"
    day = stream(int(86400 / hop_seconds))
    det = Detector(DetectorSettings(threshold=threshold, patience_windows=2, cooldown_seconds=0))
    alarms = sum(t.state == "start" for i, s in enumerate(day) for t in det.update(i, i * hop_seconds, s))
    assert alarms <= 50 * 3, f"{alarms} alarms in a day for a target of 50"


def test_fit_options_validate():
    with pytest.raises(ValueError, match="false_alarms_per_day"):
        FitOptions(false_alarms_per_day=0)
    with pytest.raises(ValueError, match="score_kind"):
        FitOptions(score_kind="psychic")


@pytest.mark.parametrize("shape", [0.7, 3.0, 30.0, 300.0])
def test_numpy_gamma_matches_scipy(shape):
    """The device's scipy-free gamma fit and tail quantile equal scipy's to float precision."""
    from scipy import stats

    x = np.random.default_rng(int(shape * 10)).gamma(shape, 0.05, 500)
    k, scale = fit_gamma(x)
    k_ref, _, scale_ref = stats.gamma.fit(x, floc=0.0)
    assert k == pytest.approx(k_ref, rel=1e-9) and scale == pytest.approx(scale_ref, rel=1e-9)
    for q in (0.1, 1e-3, 6e-6, 1e-9):
        assert gamma_isf(q, k, scale) == pytest.approx(stats.gamma.isf(q, k_ref, scale=scale_ref), rel=1e-9)


def test_device_calibration_imports_no_scipy():
    import subprocess
    import sys

    code = "import sys, device.calibrate, device.runner; print(sorted(m for m in ('scipy', 'tensorflow', 'training') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

"""The Gaussian model: Ledoit-Wolf whitening, and the exported graph computing exactly that distance."""

import numpy as np
import pytest

import device  # noqa: F401 - pins BLAS threads before numpy work
from device.features import FeatureParams
from device.inference import output_score
from training.gaussian import amplified_deviations, fit_gaussian, ledoit_wolf


def test_whitening_turns_the_fitted_covariance_into_identity():
    rng = np.random.default_rng(0)
    mixing = rng.standard_normal((6, 6))
    x = rng.standard_normal((5000, 6)) @ mixing.T + 3.0
    fit = fit_gaussian(x)
    cov, shrinkage = ledoit_wolf(x)
    np.testing.assert_allclose(fit.whitening.T @ cov @ fit.whitening, np.eye(6), atol=1e-9)
    np.testing.assert_allclose(fit.mean, x.mean(axis=0))
    assert 0.0 <= shrinkage < 0.05  # plenty of samples for 6 dimensions: little shrinkage
    z = (x - fit.mean) @ fit.whitening
    assert np.mean(z * z) == pytest.approx(1.0, rel=0.05)


def test_few_samples_shrink_hard_and_stay_finite():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((10, 128))
    x[:, 5] = 0.0  # a band that never varies
    fit = fit_gaussian(x)
    assert np.isfinite(fit.whitening).all()
    assert fit.shrinkage > 0.5


def test_ledoit_wolf_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2"):
        ledoit_wolf(np.zeros((1, 4)))


def test_amplified_deviations_scale_about_the_mean_patch():
    rng = np.random.default_rng(2)
    patches = rng.standard_normal((20, 4, 3)).astype(np.float32)
    out = amplified_deviations(patches, 3.0)
    centre = patches.mean(axis=0)
    np.testing.assert_allclose(out - centre, 3.0 * (patches - centre), atol=1e-5)


def test_exported_graph_computes_the_mahalanobis_distance_of_band_mean_and_max():
    """The Keras graph (what is quantized) equals the distance written out in numpy by hand."""
    from training.models import build_gaussian

    params = FeatureParams(n_mels=16, window_samples=256 * 15 + 512, hop_samples=2048)  # 16 frames x 16 bands
    n_frames, n_mels = params.patch_shape
    rng = np.random.default_rng(3)
    patches = rng.standard_normal((300, n_frames, n_mels)).astype(np.float32) * 4
    descriptors = np.hstack([patches.mean(axis=1), patches.max(axis=1)])
    fit = fit_gaussian(descriptors)
    model = build_gaussian(params, fit.mean, fit.whitening, batch_size=None)
    out = model.predict(patches[:8, ..., None], verbose=0)
    cov, _ = ledoit_wolf(descriptors)
    diff = descriptors[:8] - fit.mean
    expected = np.einsum("ij,jk,ik->i", diff, np.linalg.inv(cov), diff) / descriptors.shape[1]
    scores = [output_score(p, o, "gaussian_distance") for p, o in zip(patches[:8], out)]
    np.testing.assert_allclose(scores, expected, rtol=1e-3)

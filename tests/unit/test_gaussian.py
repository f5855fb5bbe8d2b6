"""The Gaussian model: Ledoit-Wolf whitening, and the exported graph computing exactly that distance."""

import io
import zipfile

import numpy as np
import pytest

from device.analysis.features import FeatureParams
from device.analysis.gaussian import Scorer, fit_gaussian, ledoit_wolf
from device.analysis.inference import output_score
from device.errors import ModelError
from training.gaussian import amplified_deviations


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


def _segments(rng, n_segments=12, length=60, d=16, mixing=None):
    """Normal model outputs: correlated dimensions and slowly varying (overlapping-window) streams."""
    mixing = rng.standard_normal((d, d)) * np.linspace(2, 0.2, d) if mixing is None else mixing
    out = []
    for _ in range(n_segments):
        e = rng.standard_normal((length, d))
        e[1:] = 0.6 * e[:-1] + 0.8 * e[1:]  # neighbouring windows share audio
        out.append(e @ mixing.T + 1.0)
    return out, mixing


def test_scorer_round_trip_and_name_follows_content(tmp_path):
    from device.analysis.gaussian import Scorer, fit_scorer

    rng = np.random.default_rng(5)
    segments, _ = _segments(rng)
    scorer, _ = fit_scorer(segments, range(len(segments)), ("window", "context"), "pump", "v1", context_windows=4)
    path = scorer.save(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600  # site state, owner-only (the Runner no longer chmods it after)
    loaded = Scorer.load(path)
    assert (loaded.model_name, loaded.model_version, loaded.members, loaded.context_windows) == (
        "pump",
        "v1",
        ("window", "context"),
        4,
    )
    np.testing.assert_allclose(loaded.series(segments[0]), scorer.series(segments[0]))
    other, _ = fit_scorer(segments[:10], range(10), ("window",), "pump", "v1", context_windows=4)
    assert other.file_name() != scorer.file_name()


def test_streaming_scores_equal_the_vectorised_scores_training_calibrates_on():
    """The device scores window by window with a ScoreState; training combines precomputed distances: the same numbers."""
    from device.analysis.gaussian import _fit_pair, fit_scorer, member_distances

    rng = np.random.default_rng(7)
    segments, _ = _segments(rng)
    scorer, _ = fit_scorer(segments, range(len(segments)), ("window", "context"), "m", "v", context_windows=5)
    new = _segments(rng, 1, 40)[0][0]
    w, c, k = member_distances((scorer.window, scorer.context), new, scorer.context_windows)
    np.testing.assert_allclose(scorer.series(new), scorer.fused(w, c, k), rtol=1e-9)
    assert list(k[:6]) == [1, 2, 3, 4, 5, 5]
    assert _fit_pair(segments, None)[1] is None


def test_cross_fitted_scores_are_out_of_sample():
    """In-sample distances understate new windows; cross-fitted ones (the threshold's evidence) do not."""
    from device.analysis.gaussian import cross_fitted_scores, fit_scorer

    rng = np.random.default_rng(6)
    segments, mixing = _segments(rng, 10, 40, d=64)
    scorer, cf = fit_scorer(segments, range(10), ("window",), "m", "v", context_windows=4)
    in_sample = np.mean([scorer.series(s).mean() for s in segments])
    new = np.mean([scorer.series(s).mean() for s in _segments(rng, 10, 40, d=64, mixing=mixing)[0]])
    cross = np.mean([s.mean() for s in cross_fitted_scores(scorer, cf)])
    assert in_sample < 0.85 * new
    assert cross == pytest.approx(new, rel=0.25)


def test_context_start_windows_are_normalised_like_full_ones():
    """A stream's first windows average fewer outputs; their own loc and scale keep them from reading as faults."""
    from device.analysis.gaussian import fit_scorer

    rng = np.random.default_rng(8)
    segments, mixing = _segments(rng, 30, 30)
    scorer, _ = fit_scorer(segments, range(30), ("context",), "m", "v", context_windows=8)
    scores = np.array([scorer.series(s) for s in _segments(rng, 30, 30, mixing=mixing)[0]])
    early, late = np.log(scores[:, :3]), np.log(scores[:, 10:])
    assert early.mean() == pytest.approx(late.mean(), abs=0.3)
    assert early.std() == pytest.approx(late.std(), rel=0.35)


def test_cross_fitting_needs_two_recordings():
    from device.analysis.gaussian import fit_scorer

    with pytest.raises(ValueError, match="at least 2 recordings"):
        fit_scorer([np.zeros((50, 4))], [0], ("window",), "m", "v")


def test_acmon_0_1_site_statistics_still_load(tmp_path):
    """A window-only site statistics file of the previous format scores as it did: the distance itself."""
    from device.analysis.gaussian import Scorer, fit_gaussian

    rng = np.random.default_rng(9)
    x = rng.standard_normal((400, 8)) + 2.0
    fit = fit_gaussian(x)
    path = tmp_path / "calibration-site-old.npz"
    np.savez(
        path,
        mean=fit.mean,
        whitening=fit.whitening,
        shrinkage=np.float64(fit.shrinkage),
        windows=np.int64(400),
        model_name=np.str_("pump"),
        model_version=np.str_("v1"),
    )
    scorer = Scorer.load(path)
    assert scorer.members == ("window",)
    assert scorer.score(x[0], scorer.new_state()) == pytest.approx(float(fit.distance(x[0])))


@pytest.mark.parametrize("content", [b"not a zip", b"PK\x03\x04broken"])
def test_unreadable_site_statistics_name_the_file(tmp_path, content):
    from device.analysis.gaussian import Scorer
    from device.errors import ModelError

    bad = tmp_path / "calibration-site-x.npz"
    bad.write_bytes(content)
    with pytest.raises(ModelError, match="calibration-site-x.npz: cannot read"):
        Scorer.load(bad)


def test_scorer_with_non_finite_statistics_is_refused(tmp_path):
    from device.analysis.gaussian import Scorer, fit_scorer
    from device.errors import ModelError

    rng = np.random.default_rng(10)
    segments, _ = _segments(rng)
    scorer, _ = fit_scorer(segments, range(len(segments)), ("window",), "m", "v", context_windows=4)
    data = dict(np.load(scorer.save(tmp_path)))
    data["window_whitening"] = data["window_whitening"] * np.nan
    bad = tmp_path / "calibration-site-nan.npz"
    np.savez(bad, **data)
    with pytest.raises(ModelError, match="not finite"):
        Scorer.load(bad)


def test_site_statistics_path_that_is_not_a_file_is_one_line_error(tmp_path):
    """/dev/zero or a folder named as site statistics is refused before anything is read."""
    for path in ("/dev/zero", str(tmp_path)):
        with pytest.raises(ModelError) as err:
            Scorer.load(path)
        assert "not a regular file" in str(err.value) and "\n" not in str(err.value)


def test_statistics_that_unpack_to_gigabytes_are_refused():
    """A zip bomb in place of the statistics: refused from the archive's directory, nothing unpacked."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("window_mean.npy", b"\0" * (80 * 1024 * 1024))
    assert len(buffer.getvalue()) < 1024 * 1024
    with pytest.raises(ModelError, match="unpack to 80 MiB"):
        Scorer.from_bytes(buffer.getvalue(), "bomb.npz")

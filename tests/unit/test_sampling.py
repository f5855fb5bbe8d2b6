"""Training windows: the audio cache, random windows, augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from device.analysis.features import FeatureParams, extract_patch
from device.errors import AudioError
from training.sampling import (
    NO_AUGMENTATION,
    AugmentOptions,
    WindowSampler,
    build_cache,
    mix_at_snr,
    spec_augment,
)

P = FeatureParams()


def _loader(x):
    return lambda: x


def _bad():
    raise AudioError("broken.wav: not a WAV file")


def test_cache_decodes_once_and_skips_bad_files(tmp_path):
    x = np.random.default_rng(0).standard_normal(20_000).astype(np.float32)
    calls = []

    def counting():
        calls.append(1)
        return x

    clips, failed = build_cache([("a", 0, counting), ("b", 0, _bad)], tmp_path, progress=False)
    assert [c.source for c in clips] == ["a"] and failed == [("b", "broken.wav: not a WAV file")]
    np.testing.assert_array_equal(clips[0].samples(), x)
    again, _ = build_cache([("a", 0, counting)], tmp_path, progress=False)
    assert len(calls) == 1 and again[0].n_samples == 20_000


def test_windows_without_augmentation_are_front_end_patches(tmp_path):
    x = np.random.default_rng(1).standard_normal(3 * P.window_samples).astype(np.float32) * 0.1
    clips, _ = build_cache([("a", 0, _loader(x))], tmp_path, progress=False)
    sampler = WindowSampler(clips, P, NO_AUGMENTATION, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(3):
        noisy, clean, label = sampler.patch(rng)
        np.testing.assert_array_equal(noisy, clean)
        assert label == 0 and noisy.shape == P.patch_shape
    window, _ = sampler._window(np.random.default_rng(5))
    start = int(np.flatnonzero(x == window[0])[0])
    np.testing.assert_array_equal(window, x[start : start + P.window_samples])
    np.testing.assert_array_equal(extract_patch(window, P), extract_patch(x[start : start + P.window_samples], P))


def test_epochs_are_reproducible_and_differ(tmp_path):
    x = np.random.default_rng(2).standard_normal(4 * P.window_samples).astype(np.float32)
    clips, _ = build_cache([("a", 0, _loader(x))], tmp_path, progress=False)
    first = [p for p, _, _ in WindowSampler(clips, P, AugmentOptions(), seed=3).iterate(4)]
    again = [p for p, _, _ in WindowSampler(clips, P, AugmentOptions(), seed=3).iterate(4)]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    sampler = WindowSampler(clips, P, AugmentOptions(), seed=3)
    list(sampler.iterate(4))
    second_epoch = [p for p, _, _ in sampler.iterate(4)]
    assert not np.array_equal(first[0], second_epoch[0])


def test_short_clips_are_refused_by_name(tmp_path):
    clips, _ = build_cache([("a", 0, _loader(np.zeros(100, np.float32)))], tmp_path, progress=False)
    with pytest.raises(Exception, match="as long as one analysis window"):
        WindowSampler(clips, P, NO_AUGMENTATION, seed=0)


def test_mix_at_snr():
    rng = np.random.default_rng(4)
    s = rng.standard_normal(16000).astype(np.float32)
    b = rng.standard_normal(16000).astype(np.float32) * 7
    mixed = mix_at_snr(s, b, 10.0)
    noise = mixed - s
    assert 10 * np.log10(np.mean(s**2) / np.mean(noise**2)) == pytest.approx(10.0, abs=0.01)


def test_spec_augment_masks_with_the_mean():
    patch = np.random.default_rng(5).standard_normal(P.patch_shape).astype(np.float32)
    a = AugmentOptions(time_masks=1, time_mask_frames=10, freq_masks=1, freq_mask_bands=8)
    out = spec_augment(patch, a, np.random.default_rng(6))
    changed = out != patch
    assert changed.any() and np.allclose(out[changed], patch.mean())
    assert spec_augment(patch, NO_AUGMENTATION, np.random.default_rng(6)) is patch

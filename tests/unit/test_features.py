"""The front end against a textbook reference, committed golden values, and its import hygiene."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device.analysis.features import (
    FeatureParams,
    compute_logmel,
    extract_patch,
    mel_filterbank,
    normalize,
    rms_dbfs,
    shared_frames,
    steady_level_dbfs,
)
from device.audio.audio_io import read_wav, to_mono
from device.errors import ModelError

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "data" / "golden"


def reference_logmel(x: np.ndarray, p: FeatureParams) -> np.ndarray:
    """Log-mel written from the textbook definitions, one formula at a time, in float64.

    DFT: X[k] = sum_n x[n] w[n] exp(-2 pi i k n / N), explicit matrix (no FFT).
    Window: periodic Hann w[n] = sin^2(pi n / N).
    Mel: m = 2595 log10(1 + f/700); band edges equally spaced in m; filter j is a
    triangle over FFT bin frequencies with corners at edges j, j+1, j+2.
    Output: 10 log10(max(band power, 1e-10)).
    """
    n_fft = p.n_fft
    n = np.arange(n_fft)
    window = np.sin(np.pi * n / n_fft) ** 2
    k = np.arange(n_fft // 2 + 1)
    dft = np.exp(-2j * np.pi * np.outer(k, n) / n_fft)
    mel_edges = np.linspace(2595 * np.log10(1 + p.fmin_hz / 700), 2595 * np.log10(1 + p.fmax_hz / 700), p.n_mels + 2)
    hz_edges = 700 * (10 ** (mel_edges / 2595) - 1)
    freqs = k * p.sample_rate_hz / n_fft
    filters = np.zeros((p.n_mels, len(k)))
    for j in range(p.n_mels):
        lo, mid, hi = hz_edges[j], hz_edges[j + 1], hz_edges[j + 2]
        for b, f in enumerate(freqs):
            if lo <= f <= mid:
                filters[j, b] = (f - lo) / (mid - lo)
            elif mid < f <= hi:
                filters[j, b] = (hi - f) / (hi - mid)
    out = []
    for start in range(0, len(x) - n_fft + 1, p.stft_hop_samples):
        frame = x[start : start + n_fft].astype(np.float64) * window
        power = np.abs(dft @ frame) ** 2
        out.append(10 * np.log10(np.maximum(filters @ power, 1e-10)))
    return np.array(out)


def test_matches_textbook_reference():
    p = FeatureParams()
    rng = np.random.default_rng(1)
    t = np.arange(p.window_samples) / p.sample_rate_hz
    x = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    ours = compute_logmel(x, p)
    ref = reference_logmel(x, p)
    assert ours.shape == ref.shape == p.patch_shape
    # float32 FFT and matmul against float64 textbook sums: within 0.01 dB where the
    # band holds real energy (all bands here: noise fills the spectrum).
    np.testing.assert_allclose(ours, ref, atol=0.01)


def test_matches_reference_for_non_default_params():
    p = FeatureParams(
        sample_rate_hz=8000,
        n_fft=256,
        stft_hop_samples=128,
        n_mels=32,
        fmin_hz=20,
        fmax_hz=4000,
        window_samples=4096,
        hop_samples=1024,
    )
    x = np.random.default_rng(2).standard_normal(p.window_samples).astype(np.float32) * 0.1
    np.testing.assert_allclose(compute_logmel(x, p), reference_logmel(x, p), atol=0.01)


def test_golden_features_unchanged():
    """Committed WAV -> committed log-mel. A change here means models must be retrained: bump FRONTEND_VERSION."""
    meta = json.loads((GOLDEN / "golden.json").read_text())
    p = FeatureParams(**meta["feature_params"])
    samples, rate = read_wav(GOLDEN / "machine.wav")
    assert rate == p.sample_rate_hz
    x = to_mono(samples)[: p.window_samples]
    expected = np.load(GOLDEN / "machine_logmel.npy")
    # float path: rtol covers FFT/BLAS rounding differences between CPUs (x86 vs ARM).
    np.testing.assert_allclose(compute_logmel(x, p), expected, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(extract_patch(x, p), np.load(GOLDEN / "machine_patch.npy"), rtol=1e-4, atol=1e-4)
    # The default hop (8192) computes a window's frames in the two chunks overlapping windows share: the
    # same features as the golden one-batch values, within the same rounding (measured: 3e-6 dB).
    chunked = dataclasses.replace(p, hop_samples=FeatureParams().hop_samples)
    assert shared_frames(chunked) == 32 and shared_frames(p) is None
    np.testing.assert_allclose(compute_logmel(x, chunked), expected, rtol=1e-4, atol=1e-3)


def test_filterbank_shape_and_coverage():
    p = FeatureParams()
    fb = mel_filterbank(p)
    assert fb.shape == (p.n_fft // 2 + 1, p.n_mels)
    assert fb.max() <= 1.0 and fb.min() >= 0.0
    assert (fb.sum(axis=0) > 0).all(), "every mel band must cover at least one FFT bin"
    assert not fb.flags.writeable


@pytest.mark.parametrize("mode", ["zscore", "mean", "none"])
def test_normalization_modes(mode):
    p = FeatureParams(normalization=mode)
    x = np.random.default_rng(3).standard_normal(p.window_samples).astype(np.float32) * 0.1
    logmel = compute_logmel(x, p)
    out = normalize(logmel, p)
    if mode == "zscore":
        assert abs(out.mean()) < 1e-4 and abs(out.std() - 1) < 1e-2
    elif mode == "mean":
        assert abs(out.mean()) < 1e-3 and np.allclose(out.std(), logmel.std(), rtol=1e-4)
    else:
        np.testing.assert_array_equal(out, logmel)


@pytest.mark.parametrize("mode", ["mean", "zscore"])
def test_gain_invariance(mode):
    """A microphone 20 dB hotter gives the same model input: level is normalized away."""
    p = FeatureParams(normalization=mode)
    x = np.random.default_rng(4).standard_normal(p.window_samples).astype(np.float32) * 0.01
    np.testing.assert_allclose(extract_patch(x, p), extract_patch(x * 10, p), atol=1e-3)


def test_digital_silence_is_finite():
    p = FeatureParams()
    patch = extract_patch(np.zeros(p.window_samples, np.float32), p)
    assert np.isfinite(patch).all() and (patch == 0).all()
    assert rms_dbfs(np.zeros(10)) == float("-inf")
    assert abs(rms_dbfs(np.ones(10) * 0.5) - (-6.0206)) < 1e-3


def test_wrong_window_length_is_refused():
    p = FeatureParams()
    with pytest.raises(ValueError, match=str(p.window_samples)):
        compute_logmel(np.zeros(100, np.float32), p)


def test_params_validation_names_the_field():
    with pytest.raises(ValueError, match="n_fft"):
        FeatureParams(n_fft=500)
    with pytest.raises(ValueError, match="fmax_hz"):
        FeatureParams(fmax_hz=9000)
    with pytest.raises(ValueError, match="normalization"):
        FeatureParams(normalization="pcen")


def test_params_round_trip_and_unknown_field():
    p = FeatureParams(n_mels=32)
    assert FeatureParams.from_dict(p.to_dict()) == p
    with pytest.raises(ModelError, match="'pcen_alpha'.*upgrade acmon"):
        FeatureParams.from_dict({**p.to_dict(), "pcen_alpha": 0.98})
    assert [d[0] for d in p.differences(FeatureParams())] == ["n_mels"]


def test_default_patch_shape():
    p = FeatureParams()
    assert p.patch_shape == (64, 64)
    assert p.window_seconds == pytest.approx(1.04)
    # A hop of 32 STFT hops: consecutive windows share half their frames (0.512 s, 51 % overlap).
    assert p.hop_samples == 32 * p.stft_hop_samples and shared_frames(p) == 32


def test_front_end_imports_numpy_only():
    code = (
        "import sys, device.analysis.features, device.audio.ring_buffer, device.pipeline, device.analysis.inference, device.analysis.model_file;"
        "bad = [m for m in ('tensorflow', 'sounddevice', 'paho', 'scipy', 'keras') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"device front end pulled in: {out.stdout.strip()}"


def test_steady_level_sees_the_quiet_part_of_a_window():
    p = FeatureParams()
    tone = (0.1 * np.sin(np.arange(p.window_samples) * 0.3)).astype(np.float32)
    assert steady_level_dbfs(tone, p.stft_hop_samples) == pytest.approx(rms_dbfs(tone), abs=0.5)
    half = tone.copy()
    half[: p.window_samples // 2] = 0.0  # a machine starting mid-window
    assert rms_dbfs(half) > -30 and steady_level_dbfs(half, p.stft_hop_samples) == float("-inf")


@pytest.mark.parametrize("hop", [8192, 8320, 4096, 16384])
def test_a_stream_computes_each_frame_once_and_gets_the_window_features_exactly(hop):
    """FrameCache (the pipeline's front end) equals compute_logmel of each window alone, also across a gap
    and for hops that share no frames; training computes windows alone, the device as a stream."""
    import dataclasses

    from device.analysis.features import FrameCache

    p = dataclasses.replace(FeatureParams(), hop_samples=hop)
    rng = np.random.default_rng(hop)
    x = (0.1 * rng.standard_normal(12 * hop + p.window_samples)).astype(np.float32)
    cache = FrameCache(p)
    for k in [0, 1, 2, 3, 5, 6, 7, 8, 9, 12]:  # 4, 10 and 11 are gated: the next window is computed whole
        w = x[k * hop : k * hop + p.window_samples]
        np.testing.assert_array_equal(cache.logmel(w, k * hop), compute_logmel(w, p))


def test_training_cuts_patches_as_the_pipeline_does():
    """window_patches (training's clips, FrameCache) equals extract_patch window by window, at any hop."""
    from device.pipeline import iter_windows, window_patches

    p = FeatureParams()
    x = (0.1 * np.random.default_rng(7).standard_normal(6 * p.hop_samples + p.window_samples)).astype(np.float32)
    for hop in (None, p.hop_samples // 4):
        windows = list(iter_windows([x], p, hop))
        for got, w in zip(window_patches(windows, p), windows, strict=True):
            np.testing.assert_array_equal(got, extract_patch(w.samples, p))

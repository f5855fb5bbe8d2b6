"""Tests for device.audio.resample: agreement with scipy, streaming exactness, frequency response."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

from device.audio.resample import StreamingResampler, resample, resample_poly  # noqa: E402

scipy_signal = pytest.importorskip("scipy.signal")

RATIOS = [(1, 3), (2, 3), (160, 441), (1, 1), (3, 2)]
BLOCK_SIZES = [1, 7, 256, 1000, 1024, None]  # None: the whole signal at once


def _inputs(n: int = 3001) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(42)
    t = np.arange(n) / 44100.0
    return {
        "random": rng.standard_normal(n),
        "sine": np.sin(2 * np.pi * 997.0 * t + 0.3),
    }


@pytest.mark.parametrize("up,down", RATIOS)
@pytest.mark.parametrize("kind", ["random", "sine"])
def test_matches_scipy(up, down, kind):
    x = _inputs()[kind]
    expected = scipy_signal.resample_poly(x, up, down)
    actual = resample_poly(x, up, down)
    assert actual.shape == expected.shape == (-(-len(x) * up // down),)
    assert np.max(np.abs(actual - expected)) < 1e-5


@pytest.mark.parametrize("up,down", [(2, 6), (320, 882), (4, 4)])
def test_factors_are_gcd_reduced(up, down):
    x = _inputs()["random"]
    np.testing.assert_allclose(resample_poly(x, up, down), scipy_signal.resample_poly(x, up, down), atol=1e-5)


@pytest.mark.parametrize("n", [0, 1, 2, 5, 40])
@pytest.mark.parametrize("up,down", [(1, 3), (160, 441), (3, 2)])
def test_short_inputs_match_scipy(n, up, down):
    x = np.random.default_rng(n).standard_normal(n)
    expected = scipy_signal.resample_poly(x, up, down)
    actual = resample_poly(x, up, down)
    assert actual.shape == expected.shape
    if n:
        assert np.max(np.abs(actual - expected)) < 1e-5


def test_dtypes():
    x = np.random.default_rng(0).standard_normal(500)
    assert resample_poly(x, 1, 3).dtype == np.float64
    assert resample_poly(x.astype(np.float32), 1, 3).dtype == np.float32
    assert resample_poly(np.arange(10), 1, 2).dtype == np.float64
    same = resample_poly(x, 2, 2)
    assert same is not x and np.array_equal(same, x)


def test_bad_arguments():
    with pytest.raises(ValueError):
        resample_poly(np.zeros((4, 2)), 1, 2)
    with pytest.raises(ValueError):
        resample_poly(np.zeros(4), 0, 2)
    with pytest.raises(ValueError):
        resample_poly(np.zeros(4), 1.5, 2)


def test_resample_convenience():
    x = _inputs()["random"]
    np.testing.assert_array_equal(resample(x, 44100, 16000), resample_poly(x, 160, 441))
    np.testing.assert_array_equal(resample(x, 48000, 16000), resample_poly(x, 1, 3))


def test_one_minute_at_44k1_is_fast():
    x = np.random.default_rng(1).standard_normal(44100 * 60).astype(np.float32)
    resample(x[:44100], 44100, 16000)  # filter design is cached
    start = time.perf_counter()
    y = resample(x, 44100, 16000)
    elapsed = time.perf_counter() - start
    assert y.shape == (16000 * 60,)
    assert elapsed < 1.0, f"{elapsed:.2f} s"


def _stream(x: np.ndarray, from_hz: int, to_hz: int, block_size: int | None) -> np.ndarray:
    r = StreamingResampler(from_hz, to_hz)
    step = len(x) if block_size is None else block_size
    outputs = [r.process(x[i : i + step]) for i in range(0, len(x), step)]
    outputs.append(r.flush())
    for y in outputs:
        assert y.dtype == np.float32 and y.ndim == 1
    return np.concatenate(outputs)


@pytest.mark.parametrize(
    "from_hz,to_hz", [(44100, 16000), (48000, 16000), (16000, 16000), (32000, 48000), (8000, 16000)]
)
def test_streaming_is_block_size_invariant_and_matches_one_shot(from_hz, to_hz):
    x = np.random.default_rng(7).standard_normal(from_hz // 4)  # 0.25 s
    reference = _stream(x, from_hz, to_hz, None)
    for block_size in BLOCK_SIZES[:-1]:
        assert np.array_equal(_stream(x, from_hz, to_hz, block_size), reference), block_size
    one_shot = resample(x, from_hz, to_hz)
    assert reference.shape == one_shot.shape
    assert np.max(np.abs(reference - one_shot)) < 1e-5
    np.testing.assert_allclose(one_shot, scipy_signal.resample_poly(x, to_hz, from_hz), atol=1e-5)


def test_streaming_irregular_blocks_and_reuse_after_flush():
    x = np.random.default_rng(8).standard_normal(10000)
    reference = _stream(x, 44100, 16000, None)
    r = StreamingResampler(44100, 16000)
    for _ in range(2):  # flush resets, so the same object can take a second stream
        rng = np.random.default_rng(9)
        cuts = np.sort(rng.integers(0, len(x), size=40))
        parts = [r.process(block) for block in np.split(x, cuts)]  # includes empty blocks
        parts.append(r.flush())
        assert np.array_equal(np.concatenate(parts), reference)


def test_streaming_attributes():
    r = StreamingResampler(44100, 16000)
    assert (r.up, r.down) == (160, 441)
    assert r.ratio == pytest.approx(16000 / 44100)
    assert r.latency_samples == 28  # ceil(10 * 441 / 160) input samples
    same = StreamingResampler(16000, 16000)
    assert same.latency_samples == 0
    block = np.arange(5, dtype=np.float64)
    out = same.process(block)
    assert out.dtype == np.float32 and np.array_equal(out, block) and same.flush().shape == (0,)


def test_streaming_empty_stream():
    r = StreamingResampler(48000, 16000)
    assert r.process(np.zeros(0)).shape == (0,)
    assert r.flush().shape == (0,)


def _tone(freq_hz: float, sample_rate_hz: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(sample_rate_hz * seconds)) / sample_rate_hz
    return np.sin(2 * np.pi * freq_hz * t)


def test_1khz_tone_keeps_frequency_and_amplitude():
    y = resample(_tone(1000.0, 48000), 48000, 16000)
    assert y.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    peak_hz = np.argmax(spectrum) * 16000 / len(y)
    assert peak_hz == pytest.approx(1000.0, abs=1.0)
    # Away from the zero-padded edges the amplitude is that of the input.
    middle = y[1000:-1000]
    assert np.max(np.abs(middle)) == pytest.approx(1.0, rel=0.01)
    assert np.sqrt(np.mean(middle**2)) == pytest.approx(1 / np.sqrt(2), rel=0.01)


@pytest.mark.parametrize("from_hz", [48000, 44100])
def test_tone_above_new_nyquist_is_attenuated(from_hz):
    # 10 kHz cannot be represented at 16 kHz; without the anti-aliasing filter
    # it would fold down to 6 kHz at full amplitude.
    y = resample(_tone(10000.0, from_hz), from_hz, 16000)
    middle = y[1000:-1000]
    rms = np.sqrt(np.mean(middle**2))
    attenuation_db = 20 * np.log10(rms / (1 / np.sqrt(2)))
    assert attenuation_db < -40.0, attenuation_db


@pytest.mark.parametrize("from_hz, to_hz", [(44100, 16000), (48000, 16000), (8000, 16000), (22050, 16000)])
def test_input_span_reproduces_a_stretch_of_the_whole_resampled_signal(from_hz, to_hz):
    """What training's span loader relies on to read a stretch of a long file without reading it whole."""
    from device.audio.resample import input_span, output_length

    rng = np.random.default_rng(from_hz)
    x = rng.standard_normal(from_hz * 2).astype(np.float32)
    whole = resample(x, from_hz, to_hz)
    assert len(whole) == output_length(len(x), from_hz, to_hz)
    for m0, m1 in [(0, 100), (5, 7000), (len(whole) - 300, len(whole)), (12345, 20000)]:
        first, last, offset = input_span(len(x), from_hz, to_hz, m0, m1)
        part = resample(x[first:last], from_hz, to_hz)[m0 - offset : m1 - offset]
        np.testing.assert_array_equal(part, whole[m0:m1])

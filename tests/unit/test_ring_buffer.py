"""Windows depend on stream positions only, never on how the stream was cut into blocks."""

from __future__ import annotations

import numpy as np
import pytest

from device.analysis.features import FeatureParams
from device.audio.ring_buffer import RingBuffer
from device.pipeline import iter_windows


def _blocks(x: np.ndarray, size: int):
    return [x[i : i + size] for i in range(0, len(x), size)]


def _windows(x, window, hop, size, capacity=None):
    ring = RingBuffer(window, hop, capacity)
    return [w for block in _blocks(x, size) for w in ring.push(block)]


@pytest.mark.parametrize("block", [1, 7, 256, 1000, 1024, 5000, 100_000])
def test_block_size_invariance(block):
    x = np.random.default_rng(0).standard_normal(20_000).astype(np.float32)
    got = _windows(x, 1000, 300, block)
    expected_starts = list(range(0, len(x) - 1000 + 1, 300))
    assert [w.start_sample for w in got] == expected_starts
    assert [w.index for w in got] == list(range(len(expected_starts)))
    for w in got:
        np.testing.assert_array_equal(w.samples, x[w.start_sample : w.start_sample + 1000])


def test_block_longer_than_capacity_yields_every_window():
    x = np.arange(50_000, dtype=np.float32)
    ring = RingBuffer(1000, 500)  # capacity 1500 samples
    got = ring.push(x)
    assert len(got) == (50_000 - 1000) // 500 + 1
    np.testing.assert_array_equal(got[-1].samples, x[got[-1].start_sample : got[-1].start_sample + 1000])


def test_windows_are_copies():
    ring = RingBuffer(4, 2)
    (w,) = ring.push(np.ones(4, np.float32))
    ring.push(np.zeros(10, np.float32))
    assert (w.samples == 1).all()


def test_history_and_latest():
    ring = RingBuffer(100, 50, capacity_samples=1000)
    x = np.arange(2500, dtype=np.float32)
    ring.push(x)
    np.testing.assert_array_equal(ring.latest(300), x[-300:])
    np.testing.assert_array_equal(ring.read(1600, 200), x[1600:1800])
    with pytest.raises(ValueError, match="not in buffer"):
        ring.read(1000, 10)  # already overwritten
    assert ring.samples_written == 2500


def test_reset_starts_a_new_stream():
    ring = RingBuffer(10, 5)
    ring.push(np.ones(12, np.float32))
    ring.reset()
    got = ring.push(np.zeros(10, np.float32))
    assert [(w.index, w.start_sample) for w in got] == [(0, 0)]


def test_iter_windows_uses_model_geometry():
    p = FeatureParams()
    x = np.zeros(p.window_samples + 3 * p.hop_samples + 10, np.float32)
    assert len(list(iter_windows([x], p))) == 4
    assert len(list(iter_windows([x], p, hop_samples=p.hop_samples // 2))) == 7

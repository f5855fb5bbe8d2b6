"""The generic validation faults `fit` chooses its detectors with (training/inject.py)."""

from __future__ import annotations

import numpy as np
import pytest

from training.inject import KINDS, LEVEL_RANGES, inject, injected_copies

RATE = 16000


def _machine(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    x = 0.05 * rng.standard_normal(t.size) + 0.1 * np.sin(2 * np.pi * 120 * t) + 0.05 * np.sin(2 * np.pi * 1700 * t)
    return x.astype(np.float32)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_changes_the_clip_by_about_its_level_and_never_clips(kind):
    x = _machine()
    lo, hi = LEVEL_RANGES[kind]
    y, injection = inject(x, RATE, kind, hi, np.random.default_rng(1))
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.max(np.abs(y)) <= 0.99
    assert injection.kind == kind and injection.level == hi
    change_db = 10 * np.log10(np.mean((y - x) ** 2) / np.mean(x**2))
    if kind in ("tone", "harmonics", "impacts", "band_noise"):  # the added component's RMS, re the clip's
        assert change_db == pytest.approx(hi, abs=1.5) or injection.params.get("bursts")
    elif kind == "level":
        assert abs(20 * np.log10(np.std(y) / np.std(x))) == pytest.approx(hi, abs=0.05)
    else:  # clicks (level inside the clicks), modulation, speed, resonance: something measurable changed
        assert change_db > -40


def test_faint_levels_change_less_than_clear_ones():
    x = _machine()
    changes = []
    for level in (LEVEL_RANGES["tone"][0], LEVEL_RANGES["tone"][1]):
        y, _ = inject(x, RATE, "tone", level, np.random.default_rng(2))
        changes.append(np.mean((y - x) ** 2))
    assert changes[0] < changes[1] / 10


def test_speed_change_moves_a_tone_by_the_stated_percent():
    t = np.arange(2 * RATE) / RATE
    x = (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    y, injection = inject(x, RATE, "speed", 2.0, np.random.default_rng(3))
    spectrum = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    peak_hz = np.argmax(spectrum) * RATE / y.size
    assert peak_hz == pytest.approx(1000 * (1 + injection.params["speed_change_percent"] / 100), abs=2.0)


def test_copies_rotate_through_every_kind_and_are_reproducible():
    clips = [_machine(1.0, seed) for seed in range(5)]
    first = list(injected_copies(clips, RATE, 2, seed=7))
    again = list(injected_copies(clips, RATE, 2, seed=7))
    assert [i.kind for _, i in first] == [KINDS[k % len(KINDS)] for k in range(10)]
    for (a, ia), (b, ib) in zip(first, again):
        np.testing.assert_array_equal(a, b)
        assert ia == ib


@pytest.mark.parametrize(
    "samples, kind, match",
    [
        (np.zeros(RATE, np.float32), "tone", "silent"),
        (np.ones(100, np.float32), "tone", "at least 0.1 s"),
        (np.ones((RATE, 2), np.float32), "tone", "mono"),
        (np.ones(RATE, np.float32), "gremlins", "unknown fault kind 'gremlins'"),
        (np.full(RATE, np.nan, np.float32), "tone", "NaN or infinite"),
    ],
)
def test_bad_input_is_a_clear_error(samples, kind, match):
    with pytest.raises(ValueError, match=match):
        inject(samples, RATE, kind, -10.0, np.random.default_rng(0))

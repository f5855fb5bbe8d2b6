"""Input filters: the designed responses (high-pass, mains-hum notches) as the streaming filter delivers them,
the same output whatever the block size, damaged samples kept out of the state, and hostile settings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from device.audio.filters import InputFilter, highpass_biquad, notch_biquad

RATE = 16000


def _tone(freq_hz: float, seconds: float = 4.0, amplitude: float = 0.5) -> np.ndarray:
    n = np.arange(int(seconds * RATE))
    return (amplitude * np.sin(2 * np.pi * freq_hz * n / RATE)).astype(np.float32)


def _filtered(f: InputFilter, x: np.ndarray, block: int = 1024) -> np.ndarray:
    f.reset()
    out = [f.process(x[i : i + block]) for i in range(0, len(x), block)] + [f.flush()]
    return np.concatenate(out)


def _gain_db(f: InputFilter, freq_hz: float) -> float:
    """Steady-state gain of the streaming filter for a sine (the last 2 s, after the transient)."""
    x = _tone(freq_hz, seconds=6.0)
    y = _filtered(f, x)
    tail = slice(4 * RATE, None)
    return 10 * math.log10(np.mean(y[tail].astype(np.float64) ** 2) / np.mean(x[tail].astype(np.float64) ** 2))


def _direct_form(sections, x: np.ndarray) -> np.ndarray:
    """The textbook difference equation, sample by sample, in float64: the reference."""
    y = np.asarray(x, dtype=np.float64)
    for sec in sections:
        b0, b1, b2 = sec.b
        a1, a2 = sec.a
        out = np.empty_like(y)
        x1 = x2 = y1 = y2 = 0.0
        for n, v in enumerate(y):
            out[n] = b0 * v + b1 * x1 + b2 * x2 - a1 * y1 - a2 * y2
            x2, x1, y2, y1 = x1, v, y1, out[n]
        y = out
    return y


def test_stream_equals_the_difference_equation():
    f = InputFilter(RATE, 30.0, [50, 100, 150], 10.0)
    x = np.random.default_rng(0).standard_normal(5000).astype(np.float32) * 0.3
    reference = _direct_form(f.sections, x)
    y = _filtered(f, x, block=700)
    assert len(y) == len(x)
    assert np.max(np.abs(y - reference)) < 1e-6  # float32 output of values ~1


def test_highpass_response():
    f = InputFilter(RATE, highpass_hz=100.0)
    # Butterworth: -3.01 dB at the cut-off, -12.3 dB one octave below, flat two octaves above and higher.
    assert _gain_db(f, 100.0) == pytest.approx(-3.01, abs=0.05)
    below = _gain_db(f, 50.0)
    assert below == pytest.approx(20 * math.log10(abs(f.response(50.0)[0])), abs=0.05)
    assert below < -12.0
    assert _gain_db(f, 25.0) < -24.0
    for freq in (400, 1000, 3000, 7000):
        assert abs(_gain_db(f, freq)) < 0.05, freq


def test_mains_notches_remove_hum_and_leave_the_rest():
    f = InputFilter(RATE, notch_hz=[50, 100, 150], notch_q=10.0)
    for hum in (50.0, 100.0, 150.0):
        assert _gain_db(f, hum) < -60.0, hum  # on frequency: gone (float32 rounding is the floor)
    # A grid drifting 0.05 Hz still loses over 30 dB (schema's notch_q description).
    assert _gain_db(f, 50.05) < -30.0
    # Passband ripple: small away from the notches.
    for freq in (300, 500, 1000, 4000, 7000):
        assert abs(_gain_db(f, freq)) < 0.1, freq


def test_hum_under_machine_sound_is_removed_by_over_30_db():
    rng = np.random.default_rng(1)
    n = 8 * RATE
    machine = (0.05 * rng.standard_normal(n)).astype(np.float32)
    hum = _tone(50.0, seconds=8.0, amplitude=0.3)[:n]
    f = InputFilter(RATE, highpass_hz=20.0, notch_hz=[50, 100, 150])
    y = _filtered(f, machine + hum).astype(np.float64)
    clean = _filtered(f, machine).astype(np.float64)
    residual = y[2 * RATE :] - clean[2 * RATE :]  # a linear filter: what is left of the hum
    removed_db = 10 * math.log10(np.mean(hum[2 * RATE :].astype(np.float64) ** 2) / np.mean(residual**2))
    assert removed_db > 30.0


@pytest.mark.parametrize("block", [1, 7, 256, 1000, 1024, 4097, 16384])
def test_output_is_the_same_whatever_the_block_size(block):
    f = InputFilter(RATE, 40.0, [50, 150])
    x = np.random.default_rng(2).standard_normal(3 * RATE + 123).astype(np.float32) * 0.2
    whole = _filtered(f, x, block=len(x))
    assert np.array_equal(_filtered(f, x, block=block), whole)


def test_latency_is_bounded_and_flush_returns_the_rest():
    f = InputFilter(RATE, 40.0)
    out = f.process(np.zeros(1500, dtype=np.float32))
    assert len(out) == 1024 and f.latency_samples == 1023
    assert len(f.flush()) == 476
    assert len(f.flush()) == 0  # reset after a flush


def test_damaged_samples_come_out_nan_and_do_not_poison_the_state():
    f = InputFilter(RATE, 40.0, [50])
    x = np.random.default_rng(3).standard_normal(4096).astype(np.float32) * 0.1
    bad = x.copy()
    bad[1000], bad[2000], bad[2500] = np.nan, np.inf, 1e6
    y = _filtered(f, bad)
    zeroed = x.copy()
    zeroed[[1000, 2000, 2500]] = 0.0
    expected = _filtered(f, zeroed)
    nan = np.isnan(y)
    assert list(np.flatnonzero(nan)) == [1000, 2000, 2500]
    assert np.array_equal(y[~nan], expected[~nan])


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"highpass_hz": 8000.0}, "between 0 and 8000"),
        ({"highpass_hz": 0.0}, "between 0 and 8000"),
        ({"notch_hz": [9000.0]}, "between 0 and 8000"),
        ({"notch_hz": [-50.0]}, "between 0 and 8000"),
        ({"notch_hz": [50.0], "notch_q": 0.0}, "Q must be > 0"),
        ({"notch_hz": [50.0] * 9}, "at most 8"),
        ({}, "no filter"),
    ],
)
def test_hostile_settings_are_one_line_errors(kwargs, needle):
    with pytest.raises(ValueError, match=needle) as info:
        InputFilter(RATE, **kwargs)
    assert "\n" not in str(info.value)


def test_designs_are_normalised_biquads():
    hp = highpass_biquad(100.0, RATE)
    notch = notch_biquad(50.0, RATE, 10.0)
    assert abs(hp.response(np.array([0.0]), RATE)[0]) < 1e-12  # no DC through a high-pass
    assert abs(notch.response(np.array([50.0]), RATE)[0]) < 1e-9
    assert abs(notch.response(np.array([0.0]), RATE)[0]) == pytest.approx(1.0)

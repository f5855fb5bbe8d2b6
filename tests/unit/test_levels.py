"""1/3-octave band levels against references (a sine at each mid frequency, white noise's share per band), the
period's Leq, min and max, block-size independence, damaged samples, and hostile settings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from device.analysis.levels import (
    HALF_BAND,
    BandLevelMeter,
    LevelPeriod,
    band_table,
    energy_mean_db,
    exact_centre_hz,
    lowest_resolved_hz,
)

RATE = 16000


def test_bands_are_the_iec_base_10_bands_up_to_nyquist():
    table = band_table(RATE)
    assert table.nominal_hz[0] == 25 and table.nominal_hz[-1] == 6300 and len(table.nominal_hz) == 25
    assert band_table(48000).nominal_hz[-1] == 20000
    assert band_table(44100).nominal_hz[-1] == 16000
    assert exact_centre_hz(1000) == 1000.0
    assert exact_centre_hz(31.5) == pytest.approx(31.6228, abs=1e-4)
    edges = np.array(table.edges_hz)
    centres = np.array([exact_centre_hz(c) for c in table.nominal_hz])
    assert np.allclose(edges[:-1], centres / HALF_BAND) and np.allclose(edges[1:], centres * HALF_BAND)
    assert edges[-1] <= RATE / 2
    assert band_table(RATE, fmin_hz=100, fmax_hz=1200).nominal_hz == (
        100,
        125,
        160,
        200,
        250,
        315,
        400,
        500,
        630,
        800,
        1000,
    )


def test_a_sine_at_each_mid_frequency_reads_its_level_in_its_band():
    table = band_table(RATE)
    meter = BandLevelMeter(RATE, table)
    n = np.arange(5 * RATE)
    for nominal in table.nominal_hz:
        x = (0.5 * np.sin(2 * np.pi * exact_centre_hz(nominal) * n / RATE)).astype(np.float32)
        levels = 10 * np.log10(meter.measure(x))
        i = table.index(nominal)
        assert levels[i] == pytest.approx(10 * math.log10(0.125), abs=0.05), nominal  # A^2/2, -9.03 dBFS
        neighbours = [levels[j] for j in (i - 1, i + 1) if 0 <= j < len(levels)]
        assert max(neighbours) < levels[i] - 30, nominal


def test_white_noise_reads_its_share_per_band():
    """Band-limited reference: white noise of power P spreads P * width / Nyquist into each band."""
    table = band_table(RATE)
    meter = BandLevelMeter(RATE, table)
    x = (0.1 * np.random.default_rng(0).standard_normal(60 * RATE)).astype(np.float32)
    levels = 10 * np.log10(meter.measure(x))
    edges = np.array(table.edges_hz)
    expected = 10 * np.log10(0.01 * np.diff(edges) / (RATE / 2))
    error = levels - expected
    low = np.array(table.nominal_hz) < 100  # a few bins each: the noise's own spread is larger there
    assert np.max(np.abs(error[low])) < 0.6
    assert np.max(np.abs(error[~low])) < 0.2


@pytest.mark.parametrize("block", [1, 256, 1000, 1024, 16384])
def test_frames_do_not_depend_on_the_block_size(block):
    table = band_table(RATE)
    x = (0.1 * np.random.default_rng(1).standard_normal(4 * RATE)).astype(np.float32)
    whole = list(BandLevelMeter(RATE, table).process(x))
    meter = BandLevelMeter(RATE, table)
    pieces = [f for i in range(0, len(x), block) for f in meter.process(x[i : i + block])]
    assert [f.index for f in pieces] == [f.index for f in whole] == list(range(7))
    assert all(np.array_equal(a.mean_square, b.mean_square) for a, b in zip(pieces, whole))
    assert pieces[-1].end_seconds == 4.0


def test_period_leq_min_max_and_a_short_burst_is_not_missed():
    table = band_table(RATE)
    meter = BandLevelMeter(RATE, table)
    period = LevelPeriod(table.nominal_hz, 1.0)
    rng = np.random.default_rng(2)
    x = (0.001 * rng.standard_normal(10 * RATE)).astype(np.float32)
    n = np.arange(int(0.2 * RATE))
    x[5 * RATE : 5 * RATE + len(n)] += (0.5 * np.sin(2 * np.pi * 1000 * n / RATE)).astype(np.float32)
    frames = list(meter.process(x))
    for frame in frames:
        period.add(frame)
    bands = period.take()
    assert bands is not None and bands["frames"] == len(frames) == 19 and bands["unit"] == "dBFS"
    i = table.index(1000)
    per_frame = [10 * math.log10(f.mean_square[i]) for f in frames]
    assert bands["max_db"][i] == pytest.approx(max(per_frame), abs=0.01)
    assert bands["min_db"][i] == pytest.approx(min(per_frame), abs=0.01)
    assert bands["leq_db"][i] == pytest.approx(energy_mean_db(per_frame), abs=0.01)
    # The burst's energy: 0.125 mean square for 0.2 s of the 10 s; every sample lies in two frames, so the
    # frames' mean keeps it whatever its position (within the window-overlap ripple, -1.8 to +1.2 dB).
    burst_leq = 10 * math.log10(0.125 * 0.2 / 10)
    assert burst_leq - 1.8 < bands["leq_db"][i] < burst_leq + 1.2 + 0.1
    assert period.take() is None  # a new, empty period


def test_calibration_offset_reports_db():
    table = band_table(RATE, fmin_hz=100, fmax_hz=1200)
    period = LevelPeriod(table.nominal_hz, 1.0, offset_db=120.0)
    meter = BandLevelMeter(RATE, table)
    n = np.arange(2 * RATE)
    for frame in meter.process((0.5 * np.sin(2 * np.pi * 1000 * n / RATE)).astype(np.float32)):
        period.add(frame)
    bands = period.take()
    assert bands["unit"] == "dB"
    assert bands["leq_db"][table.index(1000)] == pytest.approx(120 - 9.03, abs=0.05)


def test_silence_and_damaged_samples_give_finite_levels():
    table = band_table(RATE)
    meter = BandLevelMeter(RATE, table)
    x = np.zeros(2 * RATE, dtype=np.float32)
    x[100], x[200], x[300] = np.nan, np.inf, -1e9
    frames = list(meter.process(x))
    assert frames and all(np.all(np.isfinite(f.levels_db)) for f in frames)
    assert all(np.all(f.levels_db == -150.0) for f in frames)


def test_lowest_band_follows_the_frame_length():
    assert lowest_resolved_hz(1.0) == 25
    assert lowest_resolved_hz(0.125) == 160
    with pytest.raises(ValueError, match="resolve 1/3-octave bands from 160 Hz"):
        band_table(RATE, fmin_hz=25, frame_seconds=0.125)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"fmax_hz": 9000.0}, "above the Nyquist"),
        ({"fmin_hz": 7000.0}, "no 1/3-octave band"),
        ({"fmin_hz": 10.0}, "raise fmin_hz"),
    ],
)
def test_hostile_band_settings_are_one_line(kwargs, needle):
    with pytest.raises(ValueError, match=needle) as info:
        band_table(RATE, **kwargs)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="not a 1/3-octave band's nominal centre"):
        exact_centre_hz(33)

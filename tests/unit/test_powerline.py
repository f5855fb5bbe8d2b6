"""Power-line figures against signals with a known truth: the mains frequency of a hum, the phase and rate of
impulses, white noise (no lock, no crackle), and hostile input (silence, clipping, DC, NaN, low rates)."""

from __future__ import annotations

import numpy as np
import pytest

from device.analysis.powerline import PowerlineMeter, estimate_hum, powerline_figures

RATE = 16000
# (harmonic of the mains frequency, amplitude, phase in radians): a transformer's hum on the even harmonics,
# with a little of the fundamental and the odd ones (electrical pick-up).
HUM = ((2, 0.05, 0.3), (4, 0.02, 1.0), (6, 0.01, 2.0), (8, 0.005, 0.5), (1, 0.002, 0.0), (3, 0.002, 1.1))


def hum(mains_hz: float, seconds: float, rate: int = RATE, noise: float = 0.003, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = sum(a * np.cos(2 * np.pi * k * mains_hz * t + p) for k, a, p in HUM if k * mains_hz < rate / 2)
    return x + noise * np.random.default_rng(seed).standard_normal(len(t))


def impulses_at_phase(x: np.ndarray, mains_hz: float, phase_deg: float, every: int, rate: int = RATE, seed: int = 1):
    """Add a tick (+0.3) at phase_deg of the 2f hum's cycle (0 = its positive peak) in a random 1 of `every`
    cycles (random, so that the ticks are no periodic train with a line of its own at 2f); their count."""
    f2 = 2 * mains_hz
    cycles = np.arange(1, int(len(x) / rate * f2) - 1)
    chosen = cycles[np.random.default_rng(seed).random(len(cycles)) < 1.0 / every]
    # The 2f component is cos(2*pi*f2*t + 0.3): its phase is phase_deg at these times.
    times = (np.radians(phase_deg) - 0.3 + 2 * np.pi * chosen) / (2 * np.pi * f2)
    y = x.copy()
    y[np.round(times * rate).astype(int)] += 0.3
    return y, len(chosen)


@pytest.mark.parametrize(("mains_hz", "nominal"), [(50.2, 50.0), (49.85, 50.0), (59.9, 60.0), (60.3, 60.0)])
def test_mains_frequency_is_tracked_within_0_05_hz_and_its_system_detected(mains_hz, nominal):
    figures = powerline_figures(hum(mains_hz, 30.0), RATE)
    assert figures is not None
    assert figures["nominal_hz"] == nominal
    assert figures["mains_hz"] == pytest.approx(mains_hz, abs=0.05)
    # the 2f harmonic is 0.05 (-29 dBFS) over noise of 0.003 per sample: far above the floor
    assert figures["harmonics_db"][0] > 40 and figures["comb_db"] > 30
    assert figures["crackles"] == 0


def test_sub_bin_precision_is_far_better_than_the_bins():
    """0.25 Hz bins; interpolation and the higher harmonics pin f to a few mHz."""
    for f in (50.0, 50.07, 50.125, 50.19):
        figures = powerline_figures(hum(f, 20.0, noise=0.001), RATE, mains_hz=50.0)
        assert abs(figures["mains_hz"] - f) < 0.005, f


def test_configured_mains_is_used_even_when_the_other_is_stronger():
    figures = powerline_figures(hum(60.0, 10.0), RATE, mains_hz=50.0)
    assert figures["nominal_hz"] == 50.0 and figures["mains_hz"] is None  # no comb at 100 Hz: no lock


@pytest.mark.parametrize("phase_deg", [45.0, 135.0, 250.0])
def test_impulses_at_a_fixed_phase_peak_at_that_phase(phase_deg):
    x, count = impulses_at_phase(hum(50.2, 30.0), 50.2, phase_deg, every=4)
    figures = powerline_figures(x, RATE, phase_bins=36)
    bins = np.asarray(figures["phase_bins"])
    assert int(np.argmax(bins)) == int(phase_deg // 10)
    assert figures["phase_mean_deg"] == pytest.approx(phase_deg, abs=3.0)
    assert figures["phase_concentration"] > 0.95
    assert figures["crackles"] == pytest.approx(count, rel=0.02)
    # phases wait for the frame around them: only the last ones (after the last frame) go without
    assert figures["phased_crackles"] >= 0.85 * figures["crackles"]


def test_random_phases_are_not_concentrated():
    x = hum(50.0, 30.0)
    rng = np.random.default_rng(5)
    x[rng.choice(len(x), 900, replace=False)] += 0.3
    figures = powerline_figures(x, RATE)
    assert 0.85 * 900 <= figures["crackles"] <= 900  # ticks within REFRACTORY_MS of another count once
    assert figures["phase_concentration"] < 0.15


@pytest.mark.parametrize("rate_per_s", [5.0, 40.0, 150.0])
def test_a_known_crackle_rate_is_counted_within_10_percent(rate_per_s):
    """Ticks at least 4 ms apart (the detector merges ticks within REFRACTORY_MS), some faint: 12 dB above the
    noise floor of the second difference."""
    seconds = 20.0
    rng = np.random.default_rng(int(rate_per_s))
    gaps = np.maximum(rng.exponential(1.0 / rate_per_s, int(rate_per_s * seconds * 2)), 0.004)
    times = np.cumsum(gaps)
    times = times[times < seconds - 0.01]
    x = hum(50.0, seconds)
    x[(times * RATE).astype(int)] += rng.choice([-1, 1], len(times)) * rng.uniform(0.05, 0.3, len(times))
    figures = powerline_figures(x, RATE)
    assert figures["crackle_rate_per_s"] == pytest.approx(len(times) / seconds, rel=0.10)


def test_white_noise_gives_no_lock_and_no_crackles():
    for seed in range(3):
        noise = 0.1 * np.random.default_rng(seed).standard_normal(30 * RATE)
        figures = powerline_figures(noise, RATE)
        assert figures["mains_hz"] is None
        assert figures["crackle_rate_per_s"] < 0.1
        assert figures["phased_crackles"] == 0 and figures["phase_concentration"] is None


def test_the_output_does_not_depend_on_block_sizes():
    x, _ = impulses_at_phase(hum(50.2, 12.0), 50.2, 90.0, every=3)
    results = []
    for size in (7, 256, 1000, 1024, len(x)):
        meter = PowerlineMeter(RATE)
        for i in range(0, len(x), size):
            meter.process(x[i : i + size].astype(np.float32))
        results.append(meter.take())
    assert all(r == results[0] for r in results)


def test_periods_split_the_stream_and_a_reset_starts_afresh():
    meter = PowerlineMeter(RATE)
    assert meter.take() is None  # no audio: nothing to report
    x = hum(50.0, 10.0).astype(np.float32)
    meter.process(x[: 5 * RATE])
    first = meter.take()
    meter.process(x[5 * RATE :])
    second = meter.take()
    assert first["seconds"] == pytest.approx(5.0) and second["seconds"] == pytest.approx(5.0)
    assert first["frames"] == 1 and second["frames"] == 3  # 4 s frames every 2 s: at 4 s, then at 6, 8 and 10 s
    meter.reset()
    assert meter.take() is None


# -- hostile input -------------------------------------------------------------


def test_silence_reads_nothing_and_stays_finite():
    figures = powerline_figures(np.zeros(10 * RATE), RATE)
    assert figures["mains_hz"] is None and figures["crackles"] == 0
    assert figures["harmonics_db"] and all(np.isfinite(figures["harmonics_db"]))


def test_clipping_is_not_crackle_and_the_hum_still_locks():
    clipped = np.clip(hum(50.2, 20.0) * 40.0, -1.0, 1.0)  # a square-ish wave: corners every half 2f cycle
    figures = powerline_figures(clipped, RATE)
    assert figures["crackles"] == 0
    assert figures["mains_hz"] == pytest.approx(50.2, abs=0.05)


def test_dc_offset_changes_nothing():
    x, _ = impulses_at_phase(hum(50.2, 20.0), 50.2, 90.0, every=4)
    plain = powerline_figures(x, RATE)
    shifted = powerline_figures(x + 0.4, RATE)
    assert shifted["mains_hz"] == pytest.approx(plain["mains_hz"], abs=1e-3)
    assert shifted["crackles"] == plain["crackles"]
    assert shifted["phase_bins"] == plain["phase_bins"]


def test_damaged_samples_count_as_zero():
    x, _ = impulses_at_phase(hum(50.2, 20.0), 50.2, 90.0, every=4)
    x[1000:1010] = np.nan
    x[5000] = np.inf
    x[9000] = 1e9
    figures = powerline_figures(x, RATE)
    assert figures["mains_hz"] == pytest.approx(50.2, abs=0.05)
    assert all(np.isfinite(v) for v in (figures["comb_db"], figures["phase_concentration"]))


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100])
def test_other_rates_where_harmonics_pass_the_nyquist_frequency(rate):
    """At 8 kHz the decimated spectrum still reaches 800 Hz; harmonics above what a rate holds are not sought."""
    x, _ = impulses_at_phase(hum(59.9, 20.0, rate=rate), 59.9, 200.0, every=4, rate=rate)
    figures = powerline_figures(x, rate)
    assert figures["mains_hz"] == pytest.approx(59.9, abs=0.05)
    assert int(np.argmax(figures["phase_bins"])) == 20
    assert figures["phase_concentration"] > 0.9


def test_a_rate_too_low_or_bad_bins_are_refused_in_one_line():
    with pytest.raises(ValueError, match="too low a rate"):
        PowerlineMeter(800)
    with pytest.raises(ValueError, match="phase_bins"):
        PowerlineMeter(RATE, phase_bins=1)
    meter = PowerlineMeter(1000)  # 2f of 60 Hz (120 Hz) below 0.4 of the 1000 Hz... decimated rate
    assert meter.max_hz == pytest.approx(400.0)
    assert estimate_hum(np.ones(100), 5.0, None, 50.0) is None  # not even 2f fits: no estimate


def test_a_flood_of_crackles_is_bounded():
    """Every sub-block a tick (hostile): counted, phases kept only up to the pending bound, memory bounded."""
    x = hum(50.0, 10.0)
    x[::40] += 0.5
    figures = powerline_figures(x, RATE)
    assert figures["crackles"] > 0
    assert figures["phased_crackles"] <= figures["crackles"]


def test_the_module_imports_numpy_only():
    """The device never loads scipy or TensorFlow: the meter runs on numpy alone."""
    import subprocess
    import sys

    code = (
        "import sys, device.analysis.powerline; "
        "print(sorted(m for m in ('scipy', 'tensorflow', 'keras', 'training', 'paho') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"

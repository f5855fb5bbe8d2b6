"""Generic faults added to normal recordings, so `fit` can validate its detectors without any fault recording.

With normal audio only, nothing tells `fit` which of its detectors will catch
this machine's faults. What it can do is break its own held-out normal clips
in the generic ways machines break (a new tone, a harmonic family, periodic
impacts, random clicks, modulation at a shaft rate, a band of noise, a change
of level, speed or resonance) and see which detector separates those from the
untouched clips. The faults are deliberately generic: they stand for classes
of change, not for any machine's physics, and a detector chosen on them is
still reported on recordings it never saw (benchmarks/bench_detection.py).

numpy only; the speed change uses the device's own resampler.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from device.audio.resample import resample_poly
from training.synth import impulse_train as _impulses
from training.synth import ring_resonance as _ring

# Kinds of change and the range of their level, drawn uniformly. For the additive kinds the level is
# the added component's RMS in dB re the clip's RMS (inside the bursts for the intermittent kinds);
# 'modulation' is the modulation depth in dB (20 log10 m); 'level' the gain change in dB (either
# sign); 'speed' the speed change in percent (either sign); 'resonance' the peak gain in dB of a new
# (or lost) resonance one third of an octave wide. The ranges run from barely measurable to clear:
# validation must separate detectors, which it cannot if every fault is obvious.
LEVEL_RANGES: dict[str, tuple[float, float]] = {
    "tone": (-30.0, -12.0),
    "harmonics": (-28.0, -10.0),
    "impacts": (-26.0, -8.0),
    "clicks": (-16.0, 2.0),
    "modulation": (-30.0, -12.0),
    "band_noise": (-24.0, -6.0),
    "level": (1.0, 4.0),
    "speed": (0.5, 3.0),
    "resonance": (3.0, 10.0),
}
KINDS: tuple[str, ...] = tuple(LEVEL_RANGES)

# Highest frequency any injected component may have, as a fraction of the sample rate (below the
# front end's top band and far from aliasing).
MAX_FREQ_FRACTION = 0.42
# Headroom: an injected clip is scaled down if its peak would pass this (the device would see clipping).
PEAK_LIMIT = 0.99


@dataclass(frozen=True)
class Injection:
    """What was done to a clip: the kind, its level (see LEVEL_RANGES for the unit) and the drawn parameters."""

    kind: str
    level: float
    params: dict


def inject(
    samples: np.ndarray, rate_hz: int, kind: str, level: float, rng: np.random.Generator
) -> tuple[np.ndarray, Injection]:
    """A copy of a normal clip with one generic fault added.

    Args:
        samples: float32 (n,), mono, full scale 1.0; at least 0.1 s long.
        rate_hz: sample rate in hertz.
        kind: one of KINDS.
        level: strength in the kind's unit (LEVEL_RANGES).
        rng: the source of every random parameter.

    Returns:
        (float32 (n,) clip, Injection describing it).

    Raises:
        ValueError: unknown kind, or a clip shorter than 0.1 s, silent or not finite.
    """
    if kind not in LEVEL_RANGES:
        raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(KINDS)}")
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1 or x.size < rate_hz // 10:
        raise ValueError(f"need a mono clip of at least 0.1 s, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("cannot inject into a clip with NaN or infinite samples")
    rms = float(np.sqrt(np.mean(x * x)))
    if rms <= 0:
        raise ValueError("cannot inject into a silent clip")
    n = x.size
    t = np.arange(n) / rate_hz
    top_hz = MAX_FREQ_FRACTION * rate_hz
    params: dict = {}

    def added(component: np.ndarray, active: np.ndarray | None = None) -> np.ndarray:
        # Scale the component so its RMS (over the active samples) is `level` dB re the clip.
        on = component if active is None else component[active]
        c_rms = float(np.sqrt(np.mean(on * on))) if on.size else 0.0
        return x + component * (rms * 10.0 ** (level / 20.0) / c_rms if c_rms > 0 else 0.0)

    if kind == "tone":
        f = _log_uniform(rng, 80.0, top_hz)
        wander = 1.0 + 0.002 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t + rng.uniform(0, 2 * np.pi))
        y = added(np.sin(2 * np.pi * np.cumsum(f * wander) / rate_hz))
        params = {"frequency_hz": round(f, 1)}
    elif kind == "harmonics":
        f0 = _log_uniform(rng, 25.0, 300.0)
        k = np.arange(1, int(min(12, top_hz // f0)) + 1)
        amps = k ** -rng.uniform(0.5, 1.5)
        phases = rng.uniform(0, 2 * np.pi, k.size)
        y = added(np.sum(amps[:, None] * np.sin(2 * np.pi * f0 * k[:, None] * t + phases[:, None]), axis=0))
        params = {"fundamental_hz": round(f0, 1), "harmonics": int(k.size)}
    elif kind == "impacts":
        rate = _log_uniform(rng, 2.0, 80.0)
        period = rate_hz / rate
        positions = np.cumsum(period * (1.0 + 0.02 * rng.standard_normal(int(n / period) + 2)))
        positions = positions[positions < n] - rng.uniform(0, period)
        centre, decay = _log_uniform(rng, 500.0, min(6000.0, top_hz)), rng.uniform(1e-3, 4e-3)
        y = added(
            _ring(_impulses(n, positions, 1.0 + 0.3 * rng.standard_normal(positions.size)), rate_hz, centre, decay)
        )
        params = {"rate_hz": round(rate, 2), "resonance_hz": round(centre, 0)}
    elif kind == "clicks":
        per_second = rng.uniform(0.3, 3.0)
        positions = np.sort(rng.uniform(0, n, max(1, rng.poisson(per_second * n / rate_hz))))
        centre, decay = _log_uniform(rng, 800.0, min(7000.0, top_hz)), rng.uniform(0.5e-3, 3e-3)
        component = _ring(_impulses(n, positions, rng.uniform(0.5, 1.0, positions.size)), rate_hz, centre, decay)
        # Level inside the clicks: the samples within 5 decay times of an onset.
        active = np.zeros(n, dtype=bool)
        span = max(1, int(5 * decay * rate_hz))
        for p in positions.astype(np.int64):
            active[p : p + span] = True
        y = added(component, active)
        params = {"clicks_per_second": round(per_second, 2), "resonance_hz": round(centre, 0)}
    elif kind == "modulation":
        f = rng.uniform(5.0, 50.0)
        depth = 10.0 ** (level / 20.0)
        y = x * (1.0 + depth * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)))
        params = {"frequency_hz": round(f, 2), "depth": round(depth, 4)}
    elif kind == "band_noise":
        centre = _log_uniform(rng, 200.0, min(6000.0, top_hz / 1.2))
        spectrum = np.fft.rfft(rng.standard_normal(n))
        freqs = np.fft.rfftfreq(n, 1.0 / rate_hz)
        spectrum[np.abs(np.log2(np.maximum(freqs, 1.0) / centre)) > 1 / 6] = 0.0  # one third of an octave
        noise = np.fft.irfft(spectrum, n)
        bursty = rng.random() < 0.5
        active = None
        if bursty:  # on for 0.2-1 s, off for as long or longer
            gate = np.zeros(n, dtype=bool)
            pos = rng.uniform(0, 0.5) * rate_hz
            while pos < n:
                on = rng.uniform(0.2, 1.0) * rate_hz
                gate[int(pos) : int(pos + on)] = True
                pos += on + rng.uniform(0.3, 1.5) * rate_hz
            noise, active = noise * gate, gate
        y = added(noise, active)
        params = {"centre_hz": round(centre, 0), "bursts": bursty}
    elif kind == "level":
        sign = 1.0 if rng.random() < 0.5 else -1.0
        y = x * 10.0 ** (sign * level / 20.0)
        params = {"gain_db": round(sign * level, 2)}
    elif kind == "speed":
        sign = 1.0 if rng.random() < 0.5 else -1.0
        y = _change_speed(x, sign * level / 100.0)
        params = {"speed_change_percent": round(sign * level, 2)}
    else:  # resonance: a peaking (or notching) band one third of an octave wide
        centre = _log_uniform(rng, 150.0, min(6000.0, top_hz / 1.2))
        sign = 1.0 if rng.random() < 0.7 else -1.0
        freqs = np.fft.rfftfreq(n, 1.0 / rate_hz)
        octaves = np.log2(np.maximum(freqs, 1.0) / centre)
        gain_db = sign * level * np.exp(-0.5 * (octaves / (1 / 6)) ** 2)
        y = np.fft.irfft(np.fft.rfft(x) * 10.0 ** (gain_db / 20.0), n)
        params = {"centre_hz": round(centre, 0), "gain_db": round(sign * level, 2)}

    peak = float(np.max(np.abs(y)))
    if peak > PEAK_LIMIT:
        y = y * (PEAK_LIMIT / peak)
        params["scaled_down_db"] = round(20 * math.log10(PEAK_LIMIT / peak), 2)
    return y.astype(np.float32), Injection(kind, float(level), params)


def injected_copies(
    clips: Sequence[np.ndarray], rate_hz: int, per_clip: int, seed: int, kinds: Sequence[str] = KINDS
) -> Iterator[tuple[np.ndarray, Injection]]:
    """per_clip faulty copies of every clip, in order, one at a time; kinds in rotation over all clips,
    levels drawn from LEVEL_RANGES."""
    rng = np.random.default_rng([seed, 0x1A7EC7])
    k = 0
    for clip in clips:
        for _ in range(per_clip):
            kind = kinds[k % len(kinds)]
            k += 1
            lo, hi = LEVEL_RANGES[kind]
            yield inject(clip, rate_hz, kind, float(rng.uniform(lo, hi)), rng)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(max(hi, lo * 1.001)))))


def _change_speed(x: np.ndarray, fraction: float) -> np.ndarray:
    """The clip played `fraction` faster (every frequency times 1 + fraction), cut to its length.

    Sped up, the clip runs short; it continues played backwards (mirrored), which keeps the
    waveform continuous: a looped splice would add a click that makes the fault easy to spot.
    """
    up = 1000
    down = int(round(up * (1.0 + fraction)))
    y = resample_poly(x, up, down)  # fewer samples when faster: the same audio played back sooner
    while y.size < x.size:
        y = np.concatenate([y, y[::-1]])
    return y[: x.size]

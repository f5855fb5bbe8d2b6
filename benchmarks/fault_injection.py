"""Generic faults injected into REAL normal recordings, for reporting-only evaluation sets.

Each fault is a textbook mechanical or electrical symptom, defined here from physics and signal
processing alone, with no reference to any detector (acmon's or a baseline's): it must not be made
easier or harder for any particular method. Every fault is applied at a stated level, from faint
(hard to hear under the machine) to clear.

Kinds (``FAULT_KINDS``) and what ``level`` means for each (grids in ``LEVELS``):

==================  ==========================================================================  ====================
kind                the fault                                                                   level
==================  ==========================================================================  ====================
``tone``            a steady sine, frequency log-uniform in 200-6000 Hz, random phase            dB, fault RMS re the
                    (a whine: a bearing cage, an inverter, a rubbing part)                      recording's RMS
``harmonics``       a harmonic series on a fundamental log-uniform in 20-400 Hz (shaft rate,     idem (the series'
                    mains family): 3-15 harmonics, all or odd only, amplitudes k^-a              total RMS)
                    (a uniform in 0-1.5), random phases
``clicks``          sparse impulsive clicks at Poisson times (0.5-4 per s), each a damped sine   idem (over the whole
                    ringing at one resonance (log-uniform 500-6000 Hz, decay 0.5-5 ms),          clip: louder while
                    log-normal amplitudes (sigma 0.5), random polarity                          a click sounds)
``impulse_train``   periodic impacts at a bearing-like rate log-uniform in 3-200 Hz, ringing at  idem
                    a structural resonance (log-uniform 1000-6000 Hz, decay 0.3-3 ms), timing
                    jitter 1-5 % of the period (Gaussian), amplitude jitter 10 %
``noise_burst``     1-4 band-limited Gaussian noise bursts: band centre log-uniform              idem (over the whole
                    300-6000 Hz, width 0.3-2 octaves, each burst 0.05-1 s (log-uniform) with     clip)
                    10 ms raised-cosine ramps (a leak, a hiss, a rub, arcing)
``am``              the whole recording amplitude-modulated by 1 + m sin(2 pi f t + phi), f      modulation depth m
                    uniform in 5-60 Hz (shaft rate: unbalance, misalignment, a loose mount)
``level_shift``     the whole recording louder (+) or quieter (-)                                dB
``pitch_shift``     speed change of the machine: the recording resampled so that every           percent (+ faster)
                    frequency moves by level % (and time runs level % faster), same duration
==================  ==========================================================================  ====================

Levels of additive faults are energies over the whole clip: ``20 log10(rms(fault) / rms(recording))``.
A sparse fault (clicks, bursts) is therefore much louder than its level while it sounds (a 0.2 s burst
at -20 dB is at about -3 dB during the burst). The additive grid -40 ... -10 dB runs from a component
that is inaudible in most broadband machine noise (but can stand out where the machine is quiet,
e.g. a tone high above a fan's spectrum) to one that is plainly audible. AM depth 0.05 adds a
component at about -29 dB, 0.4 at about -11 dB. Level shifts of 1 dB are within the normal spread of
recording levels; 6 dB is obvious. Speed changes of 1 % are within the normal speed drift of many
machines; 5 % is large.

Pitch shift details: the recording is resampled (device.audio.resample.resample_poly, a Kaiser-windowed sinc
polyphase filter) by the rational approximation of ``1 + level / 100``; its ends are extended by
reflection (a speed-up needs ``level`` % more input than the clip has: that tail is the clip's end
played backwards, reported as ``reflected_tail_s``). Resampling leaves the band above
``rate / 2 * min(speed, 1)`` empty (slow-down) or rolled off (speed-up), which real machines would
not show, so the top of the band (above ``PITCH_FILL_FRACTION * rate / 2 * min(speed, 1)``, reported
as ``fill_above_hz``) keeps the original recording, joined with power-complementary cosine ramps.

Clipping: the output never exceeds ``CLIP_LIMIT`` in magnitude: if the faulty clip would, the whole
clip is scaled down and the dict says so (``scaled_by`` < 1, ``clipping_avoided`` True).

Randomness: :func:`inject` draws one integer ``seed`` from the generator it is given and takes every
random value from ``np.random.default_rng(seed)``; the returned dict holds that seed and every scalar
parameter drawn, so ``reproduce(samples, rate, params)`` regenerates the fault exactly.

:func:`make_injected_dataset` writes a DCASE 2020 Task 2 layout (``OUT/<machine_type>/train`` and
``test``) of real normals and injected copies of held-out real normals, plus ``OUT/manifest.csv`` and
``OUT/injections.jsonl`` (every injected clip's parameters). Audio goes only where ``out_dir`` says: never
put it inside the repository.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import zlib
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

# One OpenBLAS thread, as device/__init__.py sets for the daemon: the front end's matrix products are
# tiny, and on a busy 2-core machine BLAS threads made every window 20-40x slower. Before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from device.audio.audio_io import describe_wav, read_wav, to_mono, write_wav
from device.audio.resample import resample_poly

# ------------------------------------------------------------------------------------------------
# Fault kinds and level grids (faint/hard first, clear last)
# ------------------------------------------------------------------------------------------------
FAULT_KINDS: tuple[str, ...] = (
    "tone",
    "harmonics",
    "clicks",
    "impulse_train",
    "noise_burst",
    "am",
    "level_shift",
    "pitch_shift",
)

ADDITIVE_KINDS: tuple[str, ...] = ("tone", "harmonics", "clicks", "impulse_train", "noise_burst")

ADDITIVE_LEVELS_DB: tuple[float, ...] = (-40.0, -30.0, -20.0, -10.0)
"""Fault RMS re the recording's RMS over the whole clip, dB."""
AM_DEPTHS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4)
"""Modulation depth m of x * (1 + m sin(...)); the added component is about 20 log10(m / sqrt 2) dB."""
LEVEL_SHIFT_DB: tuple[float, ...] = (-6.0, -3.0, -1.0, 1.0, 3.0, 6.0)
"""Gain applied to the whole recording, dB."""
PITCH_SHIFT_PERCENT: tuple[float, ...] = (-5.0, -2.0, -1.0, 1.0, 2.0, 5.0)
"""Speed change, percent (+ = faster, every frequency times 1 + level / 100)."""

LEVELS: dict[str, tuple[float, ...]] = {
    **{kind: ADDITIVE_LEVELS_DB for kind in ADDITIVE_KINDS},
    "am": AM_DEPTHS,
    "level_shift": LEVEL_SHIFT_DB,
    "pitch_shift": PITCH_SHIFT_PERCENT,
}

LEVEL_UNITS: dict[str, str] = {
    **{kind: "dB re recording RMS" for kind in ADDITIVE_KINDS},
    "am": "modulation depth",
    "level_shift": "dB gain",
    "pitch_shift": "percent speed change",
}

# Random parameter ranges (see the table in the module docstring).
TONE_HZ = (200.0, 6000.0)
HARMONICS_F0_HZ = (20.0, 400.0)
HARMONICS_COUNT = (3, 15)
HARMONICS_DECAY = (0.0, 1.5)
CLICKS_PER_SECOND = (0.5, 4.0)
CLICK_RESONANCE_HZ = (500.0, 6000.0)
CLICK_DECAY_S = (0.0005, 0.005)
CLICK_AMPLITUDE_SIGMA = 0.5
IMPULSE_RATE_HZ = (3.0, 200.0)
IMPULSE_RESONANCE_HZ = (1000.0, 6000.0)
IMPULSE_DECAY_S = (0.0003, 0.003)
IMPULSE_JITTER = (0.01, 0.05)
IMPULSE_AMPLITUDE_JITTER = 0.10
BURST_COUNT = (1, 4)
BURST_CENTRE_HZ = (300.0, 6000.0)
BURST_WIDTH_OCTAVES = (0.3, 2.0)
BURST_SECONDS = (0.05, 1.0)
BURST_RAMP_S = 0.010
AM_RATE_HZ = (5.0, 60.0)

MAX_FREQUENCY_FRACTION = 0.45
"""No fault component is placed above this fraction of the sample rate (0.45 * 16 kHz = 7.2 kHz)."""
PITCH_FILL_FRACTION = 0.95
PITCH_FILL_RAMP_HZ = 100.0
CLIP_LIMIT = 0.99
"""Largest output magnitude; also keeps int16 re-encoding from clipping."""


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------
def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _cap_hz(hz: float, rate: int) -> float:
    return min(hz, MAX_FREQUENCY_FRACTION * rate)


def _damped_sine(rate: int, resonance_hz: float, decay_s: float) -> np.ndarray:
    """exp(-t / decay) sin(2 pi f t) for 8 decay times."""
    t = np.arange(max(2, int(round(8 * decay_s * rate)))) / rate
    return np.exp(-t / decay_s) * np.sin(2 * np.pi * resonance_hz * t)


def _fft_convolve(a: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Linear convolution of a with kernel, truncated to len(a)."""
    n = len(a) + len(kernel) - 1
    size = 1 << (n - 1).bit_length()
    out = np.fft.irfft(np.fft.rfft(a, size) * np.fft.rfft(kernel, size), size)
    return out[: len(a)]


def _check_level(kind: str, level: float) -> float:
    level = float(level)
    if not math.isfinite(level):
        raise ValueError(f"{kind}: level must be a finite number, got {level!r}")
    if kind == "am" and not 0.0 < level <= 1.0:
        raise ValueError(f"am: level is the modulation depth, 0 < depth <= 1, got {level}")
    if kind == "pitch_shift" and not -50.0 < level < 100.0:
        raise ValueError(f"pitch_shift: level is a speed change in percent, -50 < level < 100, got {level}")
    if kind in ADDITIVE_KINDS and level > 20.0:
        raise ValueError(f"{kind}: level is dB re the recording's RMS; {level} dB would drown the machine")
    return level


# ------------------------------------------------------------------------------------------------
# Fault generators: each returns (component or faulty signal, parameters). Additive generators
# return a unit-RMS component; the others return the whole faulty signal.
# ------------------------------------------------------------------------------------------------
def _tone(n: int, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    hz = _cap_hz(_log_uniform(rng, *TONE_HZ), rate)
    phase = float(rng.uniform(0, 2 * np.pi))
    t = np.arange(n) / rate
    return np.sin(2 * np.pi * hz * t + phase), {"frequency_hz": hz, "phase_rad": phase}


def _harmonics(n: int, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    f0 = _log_uniform(rng, *HARMONICS_F0_HZ)
    count = int(rng.integers(HARMONICS_COUNT[0], HARMONICS_COUNT[1] + 1))
    family = "odd" if rng.random() < 0.5 else "all"
    decay = float(rng.uniform(*HARMONICS_DECAY))
    orders = np.arange(1, 2 * count, 2) if family == "odd" else np.arange(1, count + 1)
    orders = orders[orders * f0 <= MAX_FREQUENCY_FRACTION * rate]
    phases = rng.uniform(0, 2 * np.pi, size=len(orders))
    t = np.arange(n) / rate
    x = np.zeros(n)
    for k, phase in zip(orders, phases):
        x += float(k) ** -decay * np.sin(2 * np.pi * k * f0 * t + phase)
    return x, {
        "fundamental_hz": f0,
        "n_harmonics": int(len(orders)),
        "family": family,
        "decay_exponent": decay,
        "orders": [int(k) for k in orders],
        "phases_rad": [float(p) for p in phases],
    }


def _clicks(n: int, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    per_second = float(rng.uniform(*CLICKS_PER_SECOND))
    count = max(1, int(rng.poisson(per_second * n / rate)))
    resonance = _cap_hz(_log_uniform(rng, *CLICK_RESONANCE_HZ), rate)
    decay = float(rng.uniform(*CLICK_DECAY_S))
    times = np.sort(rng.integers(0, n, size=count))
    amplitudes = rng.lognormal(0.0, CLICK_AMPLITUDE_SIGMA, size=count) * rng.choice((-1.0, 1.0), size=count)
    impulses = np.zeros(n)
    np.add.at(impulses, times, amplitudes)
    x = _fft_convolve(impulses, _damped_sine(rate, resonance, decay))
    return x, {
        "clicks_per_second": per_second,
        "n_clicks": count,
        "resonance_hz": resonance,
        "decay_s": decay,
        "times_s": [round(float(t) / rate, 5) for t in times],
        "amplitudes": [round(float(a), 4) for a in amplitudes],
    }


def _impulse_train(n: int, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    impact_hz = _log_uniform(rng, *IMPULSE_RATE_HZ)
    resonance = _cap_hz(_log_uniform(rng, *IMPULSE_RESONANCE_HZ), rate)
    decay = float(rng.uniform(*IMPULSE_DECAY_S))
    jitter = float(rng.uniform(*IMPULSE_JITTER))
    start = float(rng.uniform(0, 1.0 / impact_hz))
    period = 1.0 / impact_hz
    count = int(math.ceil((n / rate - start) / period)) + 1
    times = start + period * np.arange(count) + rng.normal(0.0, jitter * period, size=count)
    amplitudes = 1.0 + IMPULSE_AMPLITUDE_JITTER * rng.standard_normal(count)
    index = np.round(times * rate).astype(np.int64)
    keep = (index >= 0) & (index < n)
    impulses = np.zeros(n)
    np.add.at(impulses, index[keep], amplitudes[keep])
    x = _fft_convolve(impulses, _damped_sine(rate, resonance, decay))
    return x, {
        "impact_rate_hz": impact_hz,
        "resonance_hz": resonance,
        "decay_s": decay,
        "jitter_fraction": jitter,
        "first_impact_s": start,
        "n_impacts": int(keep.sum()),
    }


def _band_noise(n: int, rate: int, lo_hz: float, hi_hz: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with a flat spectrum between lo_hz and hi_hz and nothing outside (built in the DFT domain)."""
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    spectrum = rng.standard_normal(len(freqs)) + 1j * rng.standard_normal(len(freqs))
    spectrum[(freqs < lo_hz) | (freqs > hi_hz)] = 0.0
    return np.fft.irfft(spectrum, n)


def _noise_burst(n: int, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    count = int(rng.integers(BURST_COUNT[0], BURST_COUNT[1] + 1))
    centre = _log_uniform(rng, *BURST_CENTRE_HZ)
    width = float(rng.uniform(*BURST_WIDTH_OCTAVES))
    lo = max(20.0, centre * 2.0 ** (-width / 2))
    hi = _cap_hz(centre * 2.0 ** (width / 2), rate)
    if hi <= lo * 1.05:  # a centre close to the cap: keep a band at least 5 % wide below it
        lo = hi / 2.0**0.3
    durations = [min(_log_uniform(rng, *BURST_SECONDS), 0.9 * n / rate) for _ in range(count)]
    starts = [float(rng.uniform(0, n / rate - d)) for d in durations]
    envelope = np.zeros(n)
    ramp = max(1, int(BURST_RAMP_S * rate))
    for s, d in zip(starts, durations):
        a, b = int(s * rate), min(n, int((s + d) * rate))
        w = np.ones(b - a)
        r = min(ramp, (b - a) // 2)
        if r > 0:
            edge = 0.5 - 0.5 * np.cos(np.pi * (np.arange(r) + 0.5) / r)
            w[:r] = edge
            w[len(w) - r :] = edge[::-1]
        envelope[a:b] = np.maximum(envelope[a:b], w)
    x = _band_noise(n, rate, lo, hi, rng) * envelope
    return x, {
        "n_bursts": count,
        "band_lo_hz": lo,
        "band_hi_hz": hi,
        "centre_hz": centre,
        "width_octaves": width,
        "starts_s": [round(s, 5) for s in starts],
        "durations_s": [round(d, 5) for d in durations],
    }


def _am(x: np.ndarray, rate: int, depth: float, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    hz = float(rng.uniform(*AM_RATE_HZ))
    phase = float(rng.uniform(0, 2 * np.pi))
    t = np.arange(len(x)) / rate
    return x * (1.0 + depth * np.sin(2 * np.pi * hz * t + phase)), {"modulation_hz": hz, "phase_rad": phase}


def _pitch_shift(x: np.ndarray, rate: int, percent: float) -> tuple[np.ndarray, dict]:
    n = len(x)
    speed = Fraction(1) + Fraction(percent).limit_denominator(10000) / 100
    speed = speed.limit_denominator(1000)
    down, up = speed.numerator, speed.denominator  # output sample m reads input time m * down / up
    pre = down * math.ceil(256 / down)  # a multiple of down, so the output offset is a whole sample
    tail = int(math.ceil(n * max(float(speed) - 1.0, 0.0))) + pre
    extended = np.pad(x, (pre, tail), mode="reflect")
    resampled = resample_poly(extended, up, down)
    offset = pre * up // down
    y = resampled[offset : offset + n]
    if len(y) < n:  # cannot happen with the tail above; guard against a silent short clip
        raise AssertionError(f"pitch_shift: resampled {len(y)} < {n} samples")
    nyquist = rate / 2.0
    fill_hz = PITCH_FILL_FRACTION * nyquist * min(float(speed), 1.0)
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    ramp = np.clip((freqs - (fill_hz - PITCH_FILL_RAMP_HZ)) / (2 * PITCH_FILL_RAMP_HZ), 0.0, 1.0)
    keep_shifted, keep_original = np.cos(0.5 * np.pi * ramp), np.sin(0.5 * np.pi * ramp)
    y = np.fft.irfft(np.fft.rfft(y) * keep_shifted + np.fft.rfft(x) * keep_original, n)
    reflected = (n - n / float(speed)) / rate if speed > 1 else 0.0  # output time read past the clip's end
    return y, {
        "speed": float(speed),
        "resample_up": up,
        "resample_down": down,
        "fill_above_hz": fill_hz,
        "reflected_tail_s": round(reflected, 5),
    }


_ADDITIVE = {
    "tone": _tone,
    "harmonics": _harmonics,
    "clicks": _clicks,
    "impulse_train": _impulse_train,
    "noise_burst": _noise_burst,
}


# ------------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------------
def inject(
    samples: np.ndarray, rate: int, kind: str, level: float, rng: np.random.Generator
) -> tuple[np.ndarray, dict]:
    """Inject one fault into a recording.

    Args:
        samples: float mono recording, shape (n,), values in [-1, 1].
        rate: its sample rate, Hz.
        kind: one of FAULT_KINDS.
        level: the fault's level in its kind's unit (LEVEL_UNITS; grids in LEVELS).
        rng: the source of randomness; exactly one integer is drawn from it (the dict's "seed").

    Returns:
        (faulty float32 recording of the same length, never beyond +-CLIP_LIMIT; a dict of JSON-ready
        values: kind, level, unit, seed, every parameter drawn, component_db = the level of
        faulty - original re the original's RMS before any scaling, scaled_by and clipping_avoided).

    Raises:
        ValueError: unknown kind, a level outside its kind's range, samples that are not a non-silent
            finite 1-D array in [-1, 1], or a bad rate.
    """
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; choose one of: {', '.join(FAULT_KINDS)}")
    level = _check_level(kind, level)
    if int(rate) != rate or rate <= 0:
        raise ValueError(f"rate must be a positive integer number of Hz, got {rate!r}")
    rate = int(rate)
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"samples must be mono, shape (n,), got shape {x.shape}; use device.audio.audio_io.to_mono")
    if len(x) < 16 or not np.all(np.isfinite(x)):
        raise ValueError(f"samples must be finite and at least 16 samples long (got {len(x)})")
    peak_in = float(np.max(np.abs(x)))
    if peak_in > 1.0:
        raise ValueError(f"samples must lie in [-1, 1] (peak {peak_in:.3f})")
    x_rms = _rms(x)
    if x_rms == 0.0:
        raise ValueError("the recording is silent: a level relative to its RMS is undefined")

    seed = int(rng.integers(0, 2**63 - 1))
    r = np.random.default_rng(seed)
    n = len(x)
    params: dict[str, Any] = {"kind": kind, "level": level, "unit": LEVEL_UNITS[kind], "seed": seed, "rate": rate}
    if kind in _ADDITIVE:
        component, drawn = _ADDITIVE[kind](n, rate, r)
        component_rms = _rms(component)
        if component_rms == 0.0:  # only if every fault frequency fell above the cap; cannot happen at 16 kHz
            raise ValueError(f"{kind}: the fault has no energy below {MAX_FREQUENCY_FRACTION * rate:.0f} Hz")
        y = x + component * (x_rms * 10.0 ** (level / 20.0) / component_rms)
    elif kind == "am":
        y, drawn = _am(x, rate, level, r)
    elif kind == "level_shift":
        y, drawn = x * 10.0 ** (level / 20.0), {}
    else:  # pitch_shift
        y, drawn = _pitch_shift(x, rate, level)
    params.update(drawn)
    diff_rms = _rms(y - x)
    params["component_db"] = round(20.0 * math.log10(diff_rms / x_rms), 3) if diff_rms > 0 else None
    peak = float(np.max(np.abs(y)))
    scale = CLIP_LIMIT / peak if peak > CLIP_LIMIT else 1.0
    params["scaled_by"] = scale
    params["clipping_avoided"] = scale < 1.0
    return (y * scale).astype(np.float32), params


def reproduce(samples: np.ndarray, rate: int, params: Mapping[str, Any]) -> np.ndarray:
    """The faulty recording described by a dict from inject() (its kind, level and seed)."""

    class _Fixed:  # hands inject() the recorded seed as its single draw
        def integers(self, *_args, **_kwargs):
            return params["seed"]

    return inject(samples, rate, params["kind"], params["level"], _Fixed())[0]  # type: ignore[arg-type]


def _stable_key(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


MANIFEST_COLUMNS = ("path", "machine_type", "machine_id", "split", "label", "fault", "level", "source")
MARKER = ".fault_injection"


def _prepare_machine_dir(machine_dir: Path) -> None:
    """Empty a machine folder this module made before (it holds MARKER); refuse to touch any other."""
    if machine_dir.exists():
        if not (machine_dir / MARKER).is_file() and any(machine_dir.iterdir()):
            raise FileExistsError(
                f"{machine_dir}: exists and was not written by make_injected_dataset; choose an empty out_dir"
            )
        shutil.rmtree(machine_dir)
    (machine_dir / "train").mkdir(parents=True)
    (machine_dir / "test").mkdir()
    (machine_dir / MARKER).write_text("written by benchmarks/fault_injection.py; replaced on the next run\n")


def _load_mono(path: Path) -> tuple[np.ndarray, int]:
    samples, rate = read_wav(path)
    return to_mono(samples, channel=0), rate


def _place_untouched(src: Path, dst: Path) -> None:
    """dst = src as is (a symlink, else a copy) if src is mono; channel 0 as float32 WAV otherwise."""
    if describe_wav(src)["channels"] == 1:
        try:
            os.symlink(src.resolve(), dst)
        except OSError:
            shutil.copyfile(src, dst)
        return
    samples, rate = _load_mono(src)
    write_wav(dst, samples, rate, "float32")


def _merge_rows(path: Path, machine_type: str, rows: list[dict], columns: Sequence[str] | None) -> None:
    """Rewrite a CSV (columns given) or JSONL file: rows of other machine types kept, this type's replaced."""
    old: list[dict] = []
    if path.is_file():
        if columns is not None:
            with open(path, newline="") as f:
                old = [row for row in csv.DictReader(f) if row.get("machine_type") != machine_type]
        else:
            with open(path) as f:
                old = [json.loads(line) for line in f if line.strip()]
            old = [row for row in old if row.get("machine_type") != machine_type]
    merged = sorted(old + rows, key=lambda row: row["path"])
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        if columns is not None:
            writer = csv.DictWriter(f, fieldnames=list(columns), lineterminator="\n")
            writer.writeheader()
            writer.writerows(merged)
        else:
            for row in merged:
                f.write(json.dumps(row, sort_keys=True) + "\n")
    os.replace(tmp, path)


def make_injected_dataset(
    normal_paths: Sequence[str | Path],
    out_dir: str | Path,
    machine_type: str,
    n_train: int,
    kinds: Sequence[str] = FAULT_KINDS,
    levels: Mapping[str, Sequence[float]] | None = None,
    seed: int = 0,
    *,
    clips_per_pair: int | None = None,
    sources: Sequence[str] | None = None,
    machine_id: str = "00",
) -> Path:
    """Write a DCASE 2020-layout evaluation set: real normals for training, and held-out real normals
    with and without injected faults for testing.

    Split: the first ``n_train`` of ``normal_paths`` IN THE ORDER GIVEN train, the rest are held out
    (pass ``sorted(paths)`` for a split by file name; the order is the caller's, so a caller can put,
    e.g., the first halves of recordings first). The split does not depend on the seed; only the
    faults do.

    Layout (``OUT`` = out_dir):

    - ``OUT/<machine_type>/train/normal_id_<machine_id>_NNNNNNNN.wav``: the training normals, untouched
      (symlinks to the originals; a multichannel file becomes its channel 0 as a float32 WAV);
    - ``OUT/<machine_type>/test/normal_id_<machine_id>_NNNNNNNN.wav``: the held-out normals, untouched;
    - ``OUT/<machine_type>/test/anomaly_id_<machine_id>_NNNNNNNN.wav``: injected copies of held-out
      normals, float32 WAV (so the injection adds no requantization noise that the normals lack). Each
      (kind, level) pair is injected into ``clips_per_pair`` held-out normals (all of them if None),
      chosen by rotation over the kinds (kind q takes held-out normals q*k, q*k+1, ... modulo their
      number) so that every held-out normal carries about as many faults as any other. All levels of
      a kind use the same held-out normals and the same random parameters (a paired design: only the
      level differs along a kind's level curve);
    - ``OUT/manifest.csv``: path (relative to OUT), machine_type, machine_id, split, label
      (normal/anomaly), fault (kind or empty), level (or empty), source (``sources[i]`` if given, else
      the path as given); rows of other machine types already in it are kept, so several machine
      types can share one OUT;
    - ``OUT/injections.jsonl``: per injected clip its path, source and the full dict from inject().

    Deterministic given the seed: the fault of (kind, level, held-out clip i) comes from
    ``SeedSequence([seed, crc32(machine_type), crc32(kind), i])`` (the same draws at every level), so
    it does not change when levels are added or removed; adding or removing a kind moves the rotation.

    Returns:
        The machine folder ``OUT/<machine_type>`` (what ``--data`` takes).
    """
    paths = [Path(p) for p in normal_paths]
    if sources is not None and len(sources) != len(paths):
        raise ValueError(f"sources has {len(sources)} entries for {len(paths)} paths")
    source_names = [str(s) for s in sources] if sources is not None else [str(p) for p in paths]
    if not 1 <= n_train < len(paths):
        raise ValueError(f"n_train must be between 1 and {len(paths) - 1} for {len(paths)} recordings, got {n_train}")
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown fault kind(s) {unknown}; choose from: {', '.join(FAULT_KINDS)}")
    grid = {kind: tuple(float(v) for v in (levels or {}).get(kind, LEVELS[kind])) for kind in kinds}
    for kind, values in grid.items():
        for value in values:
            _check_level(kind, value)
    held = list(range(n_train, len(paths)))
    k = len(held) if clips_per_pair is None else int(clips_per_pair)
    if not 1 <= k <= len(held):
        raise ValueError(f"clips_per_pair must be between 1 and {len(held)} (the held-out normals), got {k}")
    if not machine_id.isdigit():
        raise ValueError(f"machine_id must be digits (DCASE names: normal_id_00_...), got {machine_id!r}")

    out = Path(out_dir)
    machine_dir = out / machine_type
    _prepare_machine_dir(machine_dir)
    rows: list[dict] = []
    injections: list[dict] = []

    def rel(p: Path) -> str:
        return p.relative_to(out).as_posix()

    def row(p: Path, split: str, label: str, src: str, fault: str = "", level: str = "") -> dict:
        return {
            "path": rel(p),
            "machine_type": machine_type,
            "machine_id": machine_id,
            "split": split,
            "label": label,
            "fault": fault,
            "level": level,
            "source": src,
        }

    for i in range(n_train):
        dst = machine_dir / "train" / f"normal_id_{machine_id}_{i:08d}.wav"
        _place_untouched(paths[i], dst)
        rows.append(row(dst, "train", "normal", source_names[i]))
    for j, idx in enumerate(held):
        dst = machine_dir / "test" / f"normal_id_{machine_id}_{j:08d}.wav"
        _place_untouched(paths[idx], dst)
        rows.append(row(dst, "test", "normal", source_names[idx]))

    cache: dict[int, tuple[np.ndarray, int]] = {}
    pairs = [(kind, value) for kind in kinds for value in grid[kind]]
    counter = 0
    type_key = _stable_key(machine_type)
    for kind, value in pairs:
        q = list(kinds).index(kind)
        chosen = sorted({(q * k + i) % len(held) for i in range(k)})
        for j in chosen:
            idx = held[j]
            if j not in cache:
                cache[j] = _load_mono(paths[idx])
            samples, rate = cache[j]
            seq = np.random.SeedSequence([seed, type_key, _stable_key(kind), j])
            faulty, params = inject(samples, rate, kind, value, np.random.default_rng(seq))
            dst = machine_dir / "test" / f"anomaly_id_{machine_id}_{counter:08d}.wav"
            counter += 1
            write_wav(dst, faulty, rate, "float32")
            rows.append(row(dst, "test", "anomaly", source_names[idx], kind, f"{value:g}"))
            injections.append(
                {
                    "path": rel(dst),
                    "machine_type": machine_type,
                    "source": source_names[idx],
                    "held_out_normal": rel(machine_dir / "test" / f"normal_id_{machine_id}_{j:08d}.wav"),
                    **params,
                }
            )

    _merge_rows(out / "manifest.csv", machine_type, rows, MANIFEST_COLUMNS)
    _merge_rows(out / "injections.jsonl", machine_type, injections, None)
    return machine_dir

"""plant_synth: an independent synthetic plant for REPORTING acmon's detection quality (never for choosing models).

This generator exists so that acmon's detection quality can be reported on data that its models were not
shaped on. It was written without reference to ``training/synth.py``, acmon's training, models or detector
code: the physics below comes from general knowledge of machines, rooms, outdoor propagation and
microphones. Use it only to measure: never to pick features, architectures, thresholds or hyper-parameters,
or the numbers it gives stop meaning anything.

Layout (DCASE 2020 Task 2 style)::

    OUT/<type>/train/normal_id_XX_NNNNNNNN.wav          normal clips for fitting
    OUT/<type>/test/normal_id_XX_NNNNNNNN.wav           normal test clips
    OUT/<type>/test/anomaly_id_XX_NNNNNNNN.wav          anomalous test clips
    OUT/long/<type>/normal_id_XX_partK.wav               long normal streams (false-alarm measurement only)
    OUT/manifest.csv     path,machine_type,machine_id,split,label,fault,fault_level_db,snr_db,seed,seconds

Every file is mono 16-bit PCM. A clip is rendered from (type, id, clip seed, fault, fault level, SNR,
seconds, rate): :func:`render_clip_from_row` re-renders any clip row of the manifest bit-exactly. The clip
seed encodes the dataset seed (``seed // 10**9``), which fixes the individual machines. Long streams are
generated in 10 s blocks whose state (filter memories, reverberation tails, noise overlaps, events) carries
over, and written as one WAV file per 10 minutes (``partK``, K from 0; the last part may be shorter), so
memory stays bounded (a 10-minute float32 buffer, 38 MB, plus one block). A part can only be re-rendered by
regenerating its stream from the start (its manifest row holds the stream's seed).

Signal chain of every clip
--------------------------
dry machine (sum of physically motivated parts, each nominally unit RMS, mixed with per-individual
weights; operating point = speed and load trajectories) [+ fault] -> room impulse response -> microphone
-> + background (other sources at other positions, their own impulse response) scaled to the clip's SNR
-> analog gain (per individual -38..-22 dBFS machine level at the microphone, +-0.3 dB clip to clip; the
level is calibrated on the wet signal, so a tone in a room-mode notch colours but does not mute a clip;
the machine's own loudness still follows its speed and load) -> microphone high-pass,
self-noise, for some individuals mains pick-up in the cable -> soft-knee peak limiter (never clips) -> int16.

Rooms: a shoebox per individual (8-40 m x 6-25 m x 4-10 m, wall absorption 0.02-0.5, RT60 clamped to
0.3-1.3 s), image-source model to third order with fractional delays, plus a stochastic late tail with
frequency-dependent decay (four bands, high frequencies decaying faster) whose energy follows Sabine's
diffuse-field ratio at the source distance. The sensor is fixed, but from clip to clip (and slowly within a
long stream) the air temperature changes the speed of sound (+-3 degC, all delays scale) and the machine's
acoustic centre moves by a few centimetres (mounts, load), so fine comb structure of the path changes.
The tower is outdoors: direct path + ground reflection (Delany-Bazley grass impedance, giving the
ground-effect dip) + air absorption over 8-60 m + a few weak reflections from structures.
Microphone: per individual a presence peak (0-5 dB at 2-6 kHz), a steep anti-alias roll-off near 0.44 fs,
a 2nd-order high-pass at 20-90 Hz and self-noise (white + 1/f) at -95..-82 dBFS.

Normal variation: operating point drifts between clips (VFD-driven individuals +-2-5 % speed; direct-on-line
motors only by slip, with load +-0.1-0.3), slow wander inside a clip; background 0-12 dB under the machine
(default). The site's own installations are fixed per individual (its ventilation, three neighbouring
machines, its road); each clip draws which are running and how loud: indoor ventilation (always), a
neighbouring machine, voice-like babble (2-3 talkers: glottal harmonic series weighted by vowel formant
envelopes, pitch contours, syllabic envelopes; no words), forklift pass-bys with reversing
beeper, workshop hammering, compressed-air blow-off; outdoor (tower) gusty wind on the microphone, rain
drops, distant traffic, birds, crickets, aircraft. Machines also have benign events of their own
(conveyor: products dropped on the belt, the intact belt splice thumping over idlers; compressor:
load/unload states and automatic condensate drain blasts; tower: transformer cooling fans switching,
faint foul-weather corona in rain).

Machines and faults (fault_level_db = RMS of the added fault component over the clip relative to the
RMS of the dry normal machine over the clip; for ``flow_change`` = size of the parameter change in dB)
-----------------------------------------------------------------------------------------------------
conveyor: 4-pole induction motor (magnetic hum at 2x mains and harmonics, rotor-slot tones
    N_r*f_rot - 2 f_electrical, cooling-fan blade pass + broadband; VFD-driven ones add PWM carrier
    whine), two gear meshes with shaft-rate sidebands, idler rolling noise (many rollers at v/(pi d)), load
    rumble, splice thumps as the belt joint crosses each idler (loudest near the microphone, elsewhere
    through the hall's reverberant field), products dropped on the belt.
    Faults (all transient/intermittent, sparse events):
    roller_bearing_click - outer-race defect of one idler bearing: clicks at BPFO (3-4.2 x roller rate) that
        ring the roller shell (1.5-5 kHz), in 1-4 bursts per 10 s of 0.2-1 s each, with dropouts;
    belt_splice_slap - a torn splice slaps every idler it crosses, loudest for the few seconds it passes the
        microphone section (placed inside every anomalous clip), faint through the reverberant field
        elsewhere;
    loose_idler_knock - a loose idler frame knocks (with rebound) when lumps of material load it;
    tracking_rub - the mistracking belt edge rubs the frame: stick-slip friction noise, 1-3 bursts per 10 s
        of 0.3-2 s.
fan: centrifugal or axial, direct or belt drive; blade-pass pulses with blade-to-blade tolerance,
    aerodynamic broadband in a low (rumble) and high band whose balance follows flow, blade-pass amplitude
    modulation of the broadband, duct resonances, motor.
    blade_fault - bent or fouled blade: its pressure pulse is sharper and displaced, so once per revolution
        the pulse differs -> shaft-order comb up to the blade-pass harmonics, plus 1x/2x imbalance;
    mount_rattle - loose mounting: impacts once per revolution (chaotic, missed hits) ringing housing panels;
    bearing_wear - rolling-element defect impacts at 3-5.5 x shaft rate, shaft-modulated, ringing 2.5-6 kHz,
        plus high-frequency grinding noise;
    flow_change - operating point outside the normal drift (parametric): low-flow side raises the rumble
        band and adds rotating stall (0.6-0.8 x shaft rate modulation), high-flow side raises the high band.
pump: multistage centrifugal on a 2-pole motor: vane-pass tone family with stage-clocking sidebands, shaft
    orders, flow turbulence through pipe-wall resonances, part-load recirculation rumble, motor.
    cavitation - vapour bubble collapse: dense heavy-tailed micro-impulses (300-2500/s) phased with vane
        passage, exciting 3-7 kHz casing resonances, plus rumble;
    valve_leak - worn valve seat passing flow: jet hiss 2-5 kHz with flow flutter;
    seal_squeal - dry-running mechanical seal: stick-slip squeal 1.5-5 kHz with harmonics, intermittent;
    misalignment - coupling misalignment: 2x (and 1x, 3x, 4x) shaft orders and vane-pass sidebands at +-1x.
tower (outdoors, 50 or 60 Hz): transformer/conductor hum on even mains harmonics (2f, 4f, 6f, ...), load
    dependent; substation cooling fans that switch; aeolian conductor tones in wind; faint corona in rain.
    corona - discharge pulse bursts clustered at the voltage peaks (twice mains rate; positive half fewer,
        larger pulses, negative half many small Trichel-like pulses), hiss modulated at 2 f, ion hum at 2 f;
        stronger with humidity;
    tracking_arc - insulator surface tracking / dry-band arcing: 2-6 bursts per 10 s (0.1-2.5 s each) of
        heavy discharges every half cycle with a harmonic-rich buzz;
    loose_hardware - a loose fitting driven at 2 f impacts its seat: a clipped, harmonic-rich buzz gated by
        wind gusts.
compressor: reciprocating, 1-3 cylinders, belt driven: per cylinder suction and discharge plate-valve
    impacts (discharge opening angle follows tank pressure), piston slap at reversals, intake chuffing
    during the suction stroke, crank-order pulsation, flywheel fan; unloaded state (suction valves held
    open) in ~15 % of clips; condensate drain blasts.
    valve_flutter - weak/broken valve spring: the plate bounces, a decaying train of 3-10 small impacts after
        each opening of one valve;
    knock - worn rod/wrist-pin bearing: a heavy knock at a reversal of one cylinder, with timing jitter;
    air_leak - steady jet hiss 2-7 kHz, pulsing slightly with crank pressure.

Fault levels: each anomalous clip draws its level uniformly from FAULT_LEVEL_DB[fault]; fault kinds are
assigned in turn ((index + id) modulo the number of kinds), so every kind is about equally frequent. The
ranges were set by measuring AUC against fault level (clip-mean log-mel Mahalanobis with Ledoit-Wolf,
benchmarks/baselines.py, fitted per type on all its ids' normal training clips, AUC per id then averaged)
and placing each range so that it runs from barely detectable to clear for that reference. Transient
faults need much higher clip-RMS levels than steady ones because a few loud events hardly move a clip
mean. On the default dataset (60/20/20 clips x 3 ids x 5 types) the references gave (mean AUC over ids):

    type         Mahalanobis seed 0   Mahalanobis seed 1   DCASE 2020 autoencoder, 20 epochs, seed 0
    conveyor     0.79                 0.81                 0.87
    fan          0.81                 0.70                 0.60
    pump         0.76                 0.81                 0.69
    tower        0.82                 0.78                 0.87
    compressor   0.78                 0.80                 0.77
    mean         0.79                 0.78                 0.76

Per-fault AUCs rest on ~7 clips per id and wander by +-0.1 between seeds; type means are steadier. The
autoencoder, which sees 5-frame context, finds the transient conveyor and tower faults more easily than the
clip-mean reference, and the fan and pump faults less easily.

SNR: snr_db of a clip is exact: the machine's normal sound at the microphone over the clip against the
whole background (events included) at the microphone. For a long-stream part it is measured over the part;
the stream's nominal SNR wanders slowly within the range with every continuous background layer on, and
layers that are switched off (babble in breaks, a neighbouring machine stopped, no traffic) raise it.

Speed: one core, numpy/scipy only: about 100x real time for clips (~150 s of CPU for the 15000 s default
dataset on a shared 2-core machine) and 110-150x for long streams (no pre-roll). Memory stays below
0.5 GB. Every clip renders a pre-roll as long as its room response (<= 1 s) that is discarded.

Use from Python: make_dataset(...) writes everything; render_clip(...) / render_clip_from_row(row) give one
clip as float64; render_stream(...) yields a long stream block by block.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import math
import os
import pathlib
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Sequence

# One OpenBLAS thread, as device/__init__.py sets for the daemon: the front end's matrix products are
# tiny, and on a busy 2-core machine BLAS threads made every window 20-40x slower. Before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
from scipy import fft as sfft
from scipy import signal as sps

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from device.audio.audio_io import write_wav
from device.errors import AudioError

# ----------------------------------------------------------------------------------------------
# Public tables
# ----------------------------------------------------------------------------------------------

MACHINE_TYPES: tuple[str, ...] = ("conveyor", "fan", "pump", "tower", "compressor")

FAULTS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "conveyor": ("roller_bearing_click", "belt_splice_slap", "loose_idler_knock", "tracking_rub"),
    "fan": ("blade_fault", "mount_rattle", "bearing_wear", "flow_change"),
    "pump": ("cavitation", "valve_leak", "seal_squeal", "misalignment"),
    "tower": ("corona", "tracking_arc", "loose_hardware"),
    "compressor": ("valve_flutter", "knock", "air_leak"),
}

#: fault_level_db range (uniform) per fault kind: additive component RMS re the dry normal machine RMS
#: over the clip, in dB; for the parametric ``flow_change``, the size of the change in dB.
FAULT_LEVEL_DB: dict[str, tuple[float, float]] = {
    "roller_bearing_click": (-24.0, -8.0),
    "belt_splice_slap": (-14.0, 2.0),
    "loose_idler_knock": (-14.0, 2.0),
    "tracking_rub": (-14.0, 2.0),
    "blade_fault": (-8.0, 8.0),
    "mount_rattle": (-18.0, -6.0),
    "bearing_wear": (-28.0, -14.0),
    "flow_change": (1.0, 4.0),
    "cavitation": (-28.0, -12.0),
    "valve_leak": (-21.0, -7.0),
    "seal_squeal": (-28.0, -12.0),
    "misalignment": (-14.0, 0.0),
    "corona": (-14.0, 2.0),
    "tracking_arc": (-10.0, 6.0),
    "loose_hardware": (-16.0, 0.0),
    "valve_flutter": (-12.0, 2.0),
    "knock": (-22.0, -10.0),
    "air_leak": (-22.0, -10.0),
}

PARAMETRIC_FAULTS = frozenset({"flow_change"})

MANIFEST_COLUMNS = (
    "path",
    "machine_type",
    "machine_id",
    "split",
    "label",
    "fault",
    "fault_level_db",
    "snr_db",
    "seed",
    "seconds",
)

PREROLL_S = 1.0  # rendered before every clip and discarded (filter and reverberation warm-up)
LONG_BLOCK_S = 10.0  # long streams are generated in blocks of this length (small blocks stay in cache)
LONG_PART_S = 600.0  # and written as one WAV file per this many seconds
_SPLIT_CODE = {"train": 0, "test_normal": 1, "test_anomaly": 2, "long": 3}
_TWO_PI = 2.0 * np.pi


# ----------------------------------------------------------------------------------------------
# Small numeric helpers
# ----------------------------------------------------------------------------------------------


def _rng(*keys) -> np.random.Generator:
    """A generator seeded by a tuple of ints and strings (strings by CRC32), independent of Python's hash()."""
    entropy: list[int] = []
    for k in keys:
        if isinstance(k, str):
            entropy.append(zlib.crc32(k.encode("utf-8")))
        else:
            k = int(k)
            entropy.extend([k & 0xFFFFFFFF, (k >> 32) & 0xFFFFFFFF])
    return np.random.default_rng(np.random.SeedSequence(entropy))


def _g(db):
    return 10.0 ** (np.asarray(db, dtype=np.float64) / 20.0)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)) + 1e-30))


def _lu(r: np.random.Generator, lo: float, hi: float) -> float:
    """Log-uniform draw."""
    return float(np.exp(r.uniform(np.log(lo), np.log(hi))))


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


class Slow:
    """A smooth random function of absolute time, unit standard deviation: a sum of sinusoids.

    Periods are log-uniform in [p_min, p_max] seconds; amplitudes grow as period**beta (redder for beta > 0).
    ``integral(t)`` is its exact antiderivative, so phases of frequency-modulated oscillators are closed-form
    functions of absolute time (streams need no phase state).
    """

    def __init__(self, rng: np.random.Generator, p_min: float, p_max: float, n: int = 5, beta: float = 0.5):
        periods = np.exp(rng.uniform(np.log(p_min), np.log(p_max), n))
        self.f = 1.0 / periods
        a = periods**beta
        self.a = a / np.sqrt(np.sum(a * a) / 2.0)
        self.ph = rng.uniform(0.0, _TWO_PI, n)

    def __call__(self, t) -> np.ndarray:
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        return np.sum(self.a[:, None] * np.sin(_TWO_PI * self.f[:, None] * t[None, :] + self.ph[:, None]), axis=0)

    def integral(self, t) -> np.ndarray:
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        w = _TWO_PI * self.f[:, None]
        return np.sum(-(self.a[:, None] / w) * np.cos(w * t[None, :] + self.ph[:, None]), axis=0)


class Block:
    """A stretch [t0, t0 + n) of absolute sample time with a coarse grid (every ``step`` samples) for slow signals."""

    _ramps: dict[int, np.ndarray] = {}

    def __init__(self, t0: int, n: int, fs: int, step: int = 256):
        self.t0, self.n, self.fs, self.step = int(t0), int(n), int(fs), step
        self.nseg = -(-self.n // step)
        self.tc = (self.t0 + np.arange(self.nseg + 1) * step) / fs
        self.t_before = (self.t0 - 1) / fs
        if step not in Block._ramps:
            Block._ramps[step] = (np.arange(step) / step).astype(np.float32)
        self._ramp = Block._ramps[step]
        self._times = None

    def up(self, v) -> np.ndarray:
        """Linear interpolation of coarse-grid values (len nseg + 1) to every sample of the block (float32)."""
        v = np.asarray(v, dtype=np.float32)
        if v.ndim == 0:
            return np.full(self.n, float(v), dtype=np.float32)
        a = v[:-1, None] + (v[1:] - v[:-1])[:, None] * self._ramp[None, :]
        return a.reshape(-1)[: self.n]

    def up64(self, v) -> np.ndarray:
        """As up(), in float64 (for phases, which grow large)."""
        v = np.asarray(v, dtype=np.float64)
        a = v[:-1, None] + (v[1:] - v[:-1])[:, None] * self._ramp[None, :].astype(np.float64)
        return a.reshape(-1)[: self.n]

    def times(self) -> np.ndarray:
        if self._times is None:
            self._times = (self.t0 + np.arange(self.n)) / self.fs
        return self._times


def _sin_cyc(ph) -> np.ndarray:
    """sin(2 pi ph) for phases in cycles (float64 in, float32 out: wrapped first, so precision holds)."""
    ph = np.asarray(ph)
    return np.sin((_TWO_PI * (ph - np.floor(ph))).astype(np.float32))


def _crossings(ph: np.ndarray, before: float, per_cycle: float = 1.0, offset=0.0):
    """Samples where floor(per_cycle * phase - offset) steps up, with the new integer.

    The phase (cycles) must be non-decreasing (machines never run backwards). ``offset`` may be an array
    (one value per sample, slowly varying): it is then read at the first estimate of each crossing.
    """
    off0 = float(np.mean(offset)) if np.ndim(offset) else float(offset)
    lo, hi = before * per_cycle - off0, ph[-1] * per_cycle - off0
    ks = np.arange(math.floor(lo) + 1, math.floor(hi) + 1)
    if len(ks) == 0:
        return np.zeros(0, dtype=np.int64), ks.astype(np.int64)
    idx = np.searchsorted(ph, (ks + off0) / per_cycle, side="left")
    if np.ndim(offset):
        o = np.asarray(offset)[np.minimum(idx, len(ph) - 1)]
        idx = np.searchsorted(ph, (ks + o) / per_cycle, side="left")
    keep = idx < len(ph)
    return idx[keep].astype(np.int64), ks[keep].astype(np.int64)


def _impulses(n: int, idx: np.ndarray, amps) -> np.ndarray:
    x = np.zeros(n, dtype=np.float32)
    if len(idx):
        np.add.at(x, np.clip(idx, 0, n - 1), amps)
    return x


def _poisson_idx(rng: np.random.Generator, n: int, rate_per_s, fs: int, rate_max: float | None = None) -> np.ndarray:
    """Sample indices of a (possibly inhomogeneous, by thinning) Poisson process over n samples."""
    if np.ndim(rate_per_s) == 0:
        k = rng.poisson(max(float(rate_per_s), 0.0) * n / fs)
        return np.sort(rng.integers(0, n, k))
    rmax = float(rate_max if rate_max is not None else np.max(rate_per_s))
    if rmax <= 0:
        return np.zeros(0, dtype=np.int64)
    k = rng.poisson(rmax * n / fs)
    cand = np.sort(rng.integers(0, n, k))
    keep = rng.random(k) < rate_per_s[cand] / rmax
    return cand[keep]


# -- periodic waveforms (wavetables indexed by phase in cycles) ---------------------------------

_TABLE_LEN = 4096


def _table(orders, amps, phases=None, rng: np.random.Generator | None = None) -> np.ndarray:
    """One period with cos components at integer ``orders``; normalized to unit RMS."""
    orders = np.asarray(orders, dtype=np.int64)
    amps = np.asarray(amps, dtype=np.float64)
    if phases is None:
        phases = rng.uniform(0.0, _TWO_PI, len(orders)) if rng is not None else np.zeros(len(orders))
    spec = np.zeros(_TABLE_LEN // 2 + 1, dtype=np.complex128)
    ok = (orders > 0) & (orders < _TABLE_LEN // 2)
    np.add.at(spec, orders[ok], amps[ok] * np.exp(1j * np.asarray(phases)[ok]))
    t = np.fft.irfft(spec, _TABLE_LEN) * (_TABLE_LEN / 2.0)
    r = _rms(t)
    return t / r if r > 1e-20 else t


def _pulse_table(positions, widths, amps, max_order: int) -> np.ndarray:
    """Band-limited periodic Gaussian pulses (position and std in cycles), unit RMS, no DC."""
    k = np.arange(1, max(2, max_order) + 1)
    c = np.zeros(len(k), dtype=np.complex128)
    for p, w, a in zip(positions, widths, amps):
        c += a * w * np.exp(-2.0 * (np.pi * k * w) ** 2) * np.exp(-1j * _TWO_PI * k * p)
    return _table(k, np.abs(c), np.angle(c))


def _max_order(fs: int, f_hz: float) -> int:
    """Highest harmonic order of f_hz (with 10 % speed headroom) below 0.45 fs, at least 1."""
    return int(max(1, min(_TABLE_LEN // 2 - 1, math.floor(0.45 * fs / (1.1 * max(f_hz, 1e-3))))))


class Table:
    def __init__(self, table: np.ndarray):
        self.t = table.astype(np.float32)
        self.d = (np.roll(table, -1) - table).astype(np.float32)

    @staticmethod
    def index(ph: np.ndarray):
        x = np.asarray(ph) * _TABLE_LEN
        fl = np.floor(x)
        return fl.astype(np.int64) & (_TABLE_LEN - 1), (x - fl).astype(np.float32)

    def at(self, i: np.ndarray, f: np.ndarray) -> np.ndarray:
        return self.t[i] + self.d[i] * f

    def __call__(self, ph: np.ndarray) -> np.ndarray:
        return self.at(*self.index(ph))


# -- filters -----------------------------------------------------------------------------------


def _fir(fs: int, n_taps: int, mag: Callable[[np.ndarray], np.ndarray], normalize: bool = True) -> np.ndarray:
    """Linear-phase FIR with magnitude mag(f_hz) (frequency sampling + Hann window); unit energy if normalize."""
    f = np.fft.rfftfreq(n_taps, 1.0 / fs)
    H = np.asarray(mag(f), dtype=np.float64) * np.ones_like(f)
    h = np.roll(np.fft.irfft(H, n_taps), n_taps // 2) * np.hanning(n_taps)
    if normalize:
        h /= np.sqrt(np.sum(h * h)) + 1e-30
    return h


def _band(f, fc, octaves):
    """Gaussian bump on a log-frequency axis: centre fc, std in octaves."""
    return np.exp(-0.5 * (np.log2(np.maximum(f, 1.0) / fc) / octaves) ** 2)


def _tilt(f, f0, db_per_octave):
    return _g(db_per_octave * np.log2(np.maximum(f, 1.0) / f0))


def _hp(f, fc, order=2):
    x = (np.maximum(f, 1e-3) / fc) ** (2 * order)
    return np.sqrt(x / (1.0 + x))


def _lp(f, fc, order=2):
    return 1.0 / np.sqrt(1.0 + (f / fc) ** (2 * order))


def _modal_ir(
    rng: np.random.Generator, fs: int, freqs, taus, amps=None, click: float = 0.0, dur: float | None = None
) -> np.ndarray:
    """Sum of decaying sinusoids (structural modes) with optional broadband contact click; unit energy."""
    freqs = np.asarray(freqs, dtype=np.float64)
    taus = np.asarray(taus, dtype=np.float64)
    amps = np.ones(len(freqs)) if amps is None else np.asarray(amps, dtype=np.float64)
    ok = freqs < 0.45 * fs
    dur = dur if dur is not None else float(min(0.5, 5.0 * (taus.max() if len(taus) else 0.01)))
    n = max(16, int(dur * fs))
    t = np.arange(n) / fs
    h = np.zeros(n)
    for f, tau, a in zip(freqs[ok], taus[ok], amps[ok]):
        h += a * np.exp(-t / tau) * np.sin(_TWO_PI * f * t + rng.uniform(0, _TWO_PI))
    if click > 0:
        k = max(2, int(0.0015 * fs))
        h[:k] += (
            click * np.sqrt(np.mean(h * h) * n / k + 1e-12) * rng.standard_normal(k) * np.exp(-np.arange(k) / (k / 3))
        )
    fade = min(n // 4, int(0.005 * fs))
    if fade > 1:
        h[-fade:] *= np.linspace(1.0, 0.0, fade)
    return h / (np.sqrt(np.sum(h * h)) + 1e-30)


_SPEC_CACHE: dict = {}


class StreamFIR:
    """FIR filtering that continues across calls (overlap-save; the FFT of h is cached per size)."""

    def __init__(self, h: np.ndarray, key=None):
        self.h = np.asarray(h, dtype=np.float64)
        self.state = np.zeros(len(self.h) - 1, dtype=np.float32)
        self._H: dict[int, np.ndarray] = {}
        self.key = key  # if given, the spectrum is shared through _SPEC_CACHE (h must then be fixed for the key)

    def _spec(self, N: int) -> np.ndarray:
        H = self._H.get(N)
        if H is None:
            ck = None if self.key is None else (self.key, N)
            H = _SPEC_CACHE.get(ck) if ck is not None else None
            if H is None:
                H = sfft.rfft(self.h.astype(np.float32), N)
                if ck is not None:
                    if len(_SPEC_CACHE) > 256:
                        _SPEC_CACHE.clear()
                    _SPEC_CACHE[ck] = H
            self._H = {N: H}
        return H

    def __call__(self, x: np.ndarray) -> np.ndarray:
        L = len(self.h)
        if L == 1:
            return x * self.h[0]
        n = len(x)
        xx = np.concatenate([self.state, np.asarray(x, dtype=np.float32)])
        if L <= 48:
            y = np.convolve(xx, self.h.astype(np.float32), mode="valid")
        else:
            N = sfft.next_fast_len(len(xx), real=True)
            y = sfft.irfft(sfft.rfft(xx, N) * self._spec(N), N)[L - 1 : L - 1 + n]
        self.state = xx[len(xx) - (L - 1) :]
        return y

    def swap(self, h_new: np.ndarray, x: np.ndarray, xfade: int) -> np.ndarray:
        """Filter x, crossfading from the current response to h_new over the first xfade samples."""
        h_new = np.asarray(h_new, dtype=np.float64)
        if len(h_new) != len(self.h):
            raise AssertionError("swap needs equal lengths")
        m = min(xfade, len(x))
        old_state = self.state
        old = self(x[:m])
        self.state, self.h, self._H, self.key = old_state, h_new, {}, None
        y = self(x)
        w = (0.5 - 0.5 * np.cos(np.pi * np.arange(m) / max(m, 1))).astype(np.float32)
        y[:m] = old * (1 - w) + y[:m] * w
        return y


class StreamSOS:
    def __init__(self, sos: np.ndarray):
        self.sos = sos
        self.zi = np.zeros((sos.shape[0], 2))

    def __call__(self, x):
        y, self.zi = sps.sosfilt(self.sos, x, zi=self.zi)
        return y


_MAG_CACHE: dict = {}


def _mag_grid(mag, fs: int, N: int, key=None) -> np.ndarray:
    """|H| of ``mag`` on the rfft grid of size N, scaled so that white input of unit variance gives unit RMS."""
    ck = None if key is None else (key, fs, N)
    if ck is not None and ck in _MAG_CACHE:
        return _MAG_CACHE[ck]
    fg = np.concatenate([[0.0], np.geomspace(4.0, fs / 2.0, 700)])
    m = np.maximum(np.asarray(mag(fg), dtype=np.float64) * np.ones_like(fg), 0.0)
    m[0] = 0.0
    H = np.interp(np.fft.rfftfreq(N, 1.0 / fs), fg, m)
    H[0] = 0.0
    p = (2.0 * np.sum(H * H) - H[-1] ** 2) / N
    H = (H / math.sqrt(max(p, 1e-30))).astype(np.float32)
    if ck is not None:
        if len(_MAG_CACHE) > 512:
            _MAG_CACHE.clear()
        _MAG_CACHE[ck] = H
    return H


class Noise:
    """Coloured Gaussian noise synthesized in the frequency domain, unit RMS.

    Successive calls continue the stream: each block is generated a little longer and the overlap is
    crossfaded with equal power into the next block (independent noises, so the variance stays 1).
    ``mag`` is a magnitude function of frequency (Hz); with several (mag, gain) entries the noises are
    independent and add in power, so they are rendered as one noise (see :meth:`mix`).
    """

    OVERLAP_S = 0.05

    def __init__(self, rng: np.random.Generator, fs: int, mag=None, key=None):
        self.rng, self.fs = rng, fs
        self.entries: dict[str, tuple] = {}
        if mag is not None:
            self.entries["_"] = (mag, key)
        self.tail = None
        self._grids: dict = {}

    def add(self, name: str, mag, key=None) -> Noise:
        self.entries[name] = (mag, key)
        return self

    def _gen(self, n: int, H: np.ndarray, N: int) -> np.ndarray:
        ov = int(self.OVERLAP_S * self.fs)
        nb = N // 2 + 1
        spec = self.rng.standard_normal(2 * nb, dtype=np.float32).view(np.complex64)  # complex normal, var 2
        spec *= H * np.float32(math.sqrt(N / 2.0))
        x = sfft.irfft(spec, N)
        if self.tail is not None:
            w = (np.arange(ov) + 0.5) / ov * (np.pi / 2)
            x[:ov] = self.tail * np.cos(w).astype(np.float32) + x[:ov] * np.sin(w).astype(np.float32)
        self.tail = x[n : n + ov].copy()
        return x[:n]

    def mix(self, n: int, gains: dict[str, float]) -> np.ndarray:
        """One block of sum_i gain_i * noise_i (gains constant over the block)."""
        ov = int(self.OVERLAP_S * self.fs)
        N = sfft.next_fast_len(n + ov, real=True)
        P = None
        for name, (mag, key) in self.entries.items():
            g = float(gains.get(name, 0.0))
            if g == 0.0:
                continue
            H = self._grids.get((name, N))
            if H is None:
                H = _mag_grid(mag, self.fs, N, key)
                self._grids[(name, N)] = H
            P = (g * g) * (H * H) if P is None else P + (g * g) * (H * H)
        if P is None:
            P = np.zeros(N // 2 + 1, dtype=np.float32)
        return self._gen(n, np.sqrt(P), N)

    def __call__(self, n: int) -> np.ndarray:
        return self.mix(n, {"_": 1.0})


class ImpactBank:
    """Impulse trains through fixed structural impulse responses (unit energy), continuing across calls.

    Sparse trains are placed directly (IR added at each impulse); dense ones are summed in the frequency
    domain (one inverse FFT for all of them; IR spectra cached by ``keys`` when given).
    """

    def __init__(self, irs: dict[str, np.ndarray], keys: dict | None = None):
        self.irs = {k: np.asarray(v, dtype=np.float32) for k, v in irs.items()}
        self.keys = keys or {}
        self.L = max(len(v) for v in self.irs.values())
        self.carry = np.zeros(0, dtype=np.float32)

    def _spec(self, name: str, N: int) -> np.ndarray:
        key = self.keys.get(name)
        ck = None if key is None else (key, N)
        if ck is not None and ck in _SPEC_CACHE:
            return _SPEC_CACHE[ck]
        S = sfft.rfft(self.irs[name], N)
        if ck is not None:
            if len(_SPEC_CACHE) > 256:
                _SPEC_CACHE.clear()
            _SPEC_CACHE[ck] = S
        return S

    def __call__(self, n: int, trains: dict[str, tuple]) -> np.ndarray:
        out = np.zeros(n + self.L, dtype=np.float32)
        out[: len(self.carry)] += self.carry
        N = sfft.next_fast_len(n + self.L - 1, real=True)
        acc = None
        for name, (idx, amps) in trains.items():
            idx = np.asarray(idx, dtype=np.int64)
            amps = np.broadcast_to(np.asarray(amps, dtype=np.float32), idx.shape)
            ok = (idx >= 0) & (idx < n) & (amps != 0)
            idx, amps = idx[ok], amps[ok]
            ir = self.irs[name]
            L = len(ir)
            if len(idx) * L > 2 * n:
                X = sfft.rfft(_impulses(n, idx, amps), N) * self._spec(name, N)
                acc = X if acc is None else acc + X
            else:
                for i, a in zip(idx.tolist(), amps.tolist()):
                    out[i : i + L] += a * ir
        if acc is not None:
            out[: n + self.L - 1] += sfft.irfft(acc, N)[: n + self.L - 1]
        self.carry = out[n:].copy()
        return out[:n]


class Impacts(ImpactBank):
    """One impulse response."""

    def __init__(self, ir: np.ndarray, key=None):
        super().__init__({"_": ir}, {"_": key} if key is not None else None)

    def __call__(self, n: int, idx, amps) -> np.ndarray:  # type: ignore[override]
        return super().__call__(n, {"_": (idx, amps)})


# ----------------------------------------------------------------------------------------------
# Schedules (on/off activity) and event lists
# ----------------------------------------------------------------------------------------------


class Schedule:
    """Activity in [0, 1] as a function of absolute time: union of intervals with smooth ramps."""

    def __init__(self, intervals: Sequence[tuple[float, float]], ramp_s: float = 1.0):
        self.iv = np.asarray(intervals, dtype=np.float64).reshape(-1, 2)
        self.ramp = max(ramp_s, 1e-3)

    @classmethod
    def always(cls):
        return cls([(-1e12, 1e12)])

    @classmethod
    def never(cls):
        return cls([])

    @classmethod
    def for_clip(cls, rng, t_start: float, dur: float, p_on: float, p_change: float = 0.2, ramp_s: float = 1.0):
        """Present with probability p_on; if present, with probability p_change it starts or stops inside."""
        if rng.random() >= p_on:
            return cls.never()
        if rng.random() < p_change:
            cut = t_start + rng.uniform(0.15, 0.85) * dur
            return cls([(-1e12, cut)] if rng.random() < 0.5 else [(cut, 1e12)], ramp_s)
        return cls.always()

    @classmethod
    def renewal(
        cls, rng, total_s: float, mean_on: float, mean_off: float, p_start_on: float = 0.5, ramp_s: float = 5.0
    ):
        """Alternating exponential on/off periods over [0, total_s] (for long streams)."""
        t, on, iv = -rng.uniform(0, mean_on + mean_off), rng.random() < p_start_on, []
        while t < total_s + 10:
            d = rng.exponential(mean_on if on else mean_off)
            if on:
                iv.append((t, t + d))
            t += d
            on = not on
        return cls(iv, ramp_s)

    def __call__(self, tc: np.ndarray) -> np.ndarray:
        out = np.zeros(len(tc))
        if not len(self.iv):
            return out
        lo, hi = tc[0] - self.ramp, tc[-1] + self.ramp
        sel = self.iv[(self.iv[:, 1] > lo) & (self.iv[:, 0] < hi)]
        for s, e in sel:
            g = _smoothstep((tc - s) / self.ramp + 0.5) * _smoothstep((e - tc) / self.ramp + 0.5)
            np.maximum(out, g, out=out)
        return out


def _event_times(
    rng, t_start: float, dur: float, rate_per_s: float, p_at_least_one: float | None = None
) -> list[float]:
    """Poisson event start times over [t_start, t_start + dur); or, for clips, one event with given probability."""
    if p_at_least_one is not None:
        return [t_start + rng.uniform(-0.2, 0.9) * dur] if rng.random() < p_at_least_one else []
    k = rng.poisson(rate_per_s * dur)
    return sorted((t_start + rng.uniform(0, dur, k)).tolist())


class EventLayer:
    """Discrete events (start time, seed) rendered by ``synth(rng, fs) -> waveform`` and cached while they last."""

    def __init__(self, fs: int, times: Iterable[float], seed_rng: np.random.Generator, synth):
        self.fs = fs
        self.events = [(int(round(t * fs)), int(seed_rng.integers(0, 2**62))) for t in times]
        self.synth = synth
        self.cache: dict[int, np.ndarray] = {}
        self.done: set[int] = set()
        self.first = 0

    def __call__(self, blk: Block) -> np.ndarray:
        out = np.zeros(blk.n)
        end = blk.t0 + blk.n
        while self.first < len(self.events) and self.first in self.done:  # skip what has finished
            self.done.discard(self.first)
            self.first += 1
        for i in range(self.first, len(self.events)):
            s, seed = self.events[i]
            if s >= end:
                break
            if i in self.done:
                continue
            w = self.cache.get(i)
            if w is None:
                w = self.synth(_rng(seed), self.fs)
                self.cache[i] = w
            a, b = max(s, blk.t0), min(s + len(w), end)
            if b > a:
                out[a - blk.t0 : b - blk.t0] += w[a - s : b - s]
            if s + len(w) <= end:  # finished: never synthesized again
                self.done.add(i)
                self.cache.pop(i, None)
        return out


# ----------------------------------------------------------------------------------------------
# Operating point and weather
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class OpSpec:
    drive: str  # "vfd" (speed set by a drive) or "dol" (direct on line: speed follows load by slip)
    speed_spread: float  # clip-to-clip speed offset range (fraction, +-)
    load_nom: float  # nominal load 0..1
    load_spread: float  # clip-to-clip load offset range (+-)
    wander: float  # in-clip speed wander (fraction, std)
    load_wander: float  # in-clip load wander (std)
    slip: float = 0.0  # speed change per unit load change (DOL)


class OpPoint:
    """Speed factor s(t) (1 = nominal), load l(t) and S(t) = integral of s dt, for one clip or stream."""

    def __init__(self, rng: np.random.Generator, spec: OpSpec, stream: bool):
        self.spec = spec
        if stream:
            self.s_off, self.s_amp = Slow(rng, 900, 5400, 4, 0.5), spec.speed_spread * 0.55
            self.l_off, self.l_amp = Slow(rng, 600, 5400, 4, 0.5), spec.load_spread * 0.6
            self.s_const = self.l_const = 0.0
        else:
            self.s_off = self.l_off = None
            self.s_amp = self.l_amp = 0.0
            self.s_const = float(rng.uniform(-1, 1) * spec.speed_spread)
            self.l_const = float(rng.uniform(-1, 1) * spec.load_spread)
        self.ws = Slow(rng, 1.0, 30.0, 6, 0.7)
        self.wl = Slow(rng, 2.0, 60.0, 5, 0.7)

    def _load_raw(self, t):
        v = self.spec.load_nom + self.l_const + self.spec.load_wander * self.wl(t)
        if self.l_off is not None:
            v = v + self.l_amp * self.l_off(t)
        return v

    def load(self, t):
        return np.clip(self._load_raw(t), 0.02, 1.0)

    def speed(self, t):
        v = 1.0 + self.s_const + self.spec.wander * self.ws(t)
        if self.s_off is not None:
            v = v + self.s_amp * self.s_off(t)
        if self.spec.drive == "dol":
            v = v - self.spec.slip * (self._load_raw(t) - self.spec.load_nom)
        return v

    def S(self, t):
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        v = t * (1.0 + self.s_const) + self.spec.wander * self.ws.integral(t)
        if self.s_off is not None:
            v = v + self.s_amp * self.s_off.integral(t)
        if self.spec.drive == "dol":
            li = t * self.l_const + self.spec.load_wander * self.wl.integral(t)
            if self.l_off is not None:
                li = li + self.l_amp * self.l_off.integral(t)
            v = v - self.spec.slip * li
        return v


class Osc:
    """Phase (cycles) of an oscillator at f_nom * speed(t): closed form via S(t), evaluated on a block."""

    def __init__(self, f_nom: float, S: Callable, phase0: float = 0.0):
        self.f, self.S, self.p0 = f_nom, S, phase0

    def block(self, blk: Block) -> tuple[np.ndarray, float]:
        ph = blk.up64(self.f * self.S(blk.tc) + self.p0)
        before = float(self.f * self.S(blk.t_before)[0] + self.p0)
        return ph, before


class Mains:
    """Grid frequency wanders by ~+-0.05 %."""

    def __init__(self, rng: np.random.Generator, f: float):
        self.f = f
        self.slow = Slow(rng, 20, 900, 4, 0.5)
        self.dev = 0.0005 * f
        self.p0 = rng.random()

    def S(self, t):
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        return t + (self.dev / self.f) * self.slow.integral(t)

    def osc(self, mult: float = 1.0) -> Osc:
        return Osc(self.f * mult, self.S, self.p0 * mult)


class Weather:
    """Outdoor conditions: wind speed U(t) m/s (gusty), rain intensity r(t) 0..1, humidity factor 0..1."""

    def __init__(self, rng: np.random.Generator, stream: bool, total_s: float):
        if stream:
            self.u_med = _lu(rng, 1.0, 6.0)
            self.u_slow = Slow(rng, 600, 5400, 3, 0.5)
            self.rain = Schedule.renewal(rng, total_s, 900, 3600, p_start_on=0.2, ramp_s=120)
            self.rain_level = rng.uniform(0.2, 1.0)
        else:
            self.u_med = _lu(rng, 0.4, 9.0)
            self.u_slow = None
            self.rain = Schedule.for_clip(rng, 0, 10, 0.22, p_change=0.0)
            self.rain_level = rng.uniform(0.1, 1.0)
        self.gust = Slow(rng, 1.5, 25.0, 7, 0.4)
        self.humid0 = rng.uniform(0.2, 0.8)

    def wind(self, t):
        u = self.u_med * np.ones_like(np.atleast_1d(t))
        if self.u_slow is not None:
            u = u * np.exp(0.5 * self.u_slow(t))
        return np.maximum(0.05, u * (1.0 + 0.33 * self.gust(t)))

    def rain_rate(self, t):
        return self.rain_level * self.rain(np.atleast_1d(t))

    def humidity(self, t):
        return np.clip(self.humid0 + 0.6 * self.rain_rate(t), 0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# Rooms, outdoor paths and microphones
# ----------------------------------------------------------------------------------------------


def _frac_sinc_place(h: np.ndarray, delays: np.ndarray, gains: np.ndarray, half: int = 8) -> None:
    """Add gains at fractional sample delays with a Hann-windowed sinc (2*half taps)."""
    k = np.arange(-half + 1, half + 1)
    n0 = np.floor(delays).astype(np.int64)
    frac = delays - n0
    x = k[None, :] - frac[:, None]
    w = 0.5 + 0.5 * np.cos(np.pi * x / half)
    taps = np.sinc(x) * w * gains[:, None]
    pos = n0[:, None] + k[None, :]
    ok = (pos >= 0) & (pos < len(h))
    np.add.at(h, pos[ok], taps[ok])


def _speed_of_sound(temp_c: float) -> float:
    return 331.3 * math.sqrt(1.0 + temp_c / 273.15)


class _Mic:
    """Per-individual microphone: presence peak + anti-alias low-pass (FIR, merged into paths), HP, self-noise."""

    def __init__(self, r: np.random.Generator, fs: int):
        self.fs = fs
        fp, gp = r.uniform(2000, 6000), r.uniform(0, 5)
        ripple = [(r.uniform(300, 5000), r.uniform(-0.8, 0.8)) for _ in range(3)]

        def mag(f):
            m = _g(gp * _band(f, fp, 0.6)) * _lp(f, 0.44 * fs, 12)
            for fc, db in ripple:
                m = m * _g(db * _band(f, fc, 0.3))
            return m

        self.fir = _fir(fs, 129, mag, normalize=False)
        self.hp_hz = r.uniform(20, 90)
        self.noise_dbfs = r.uniform(-95, -82)
        self.pink_share = r.uniform(0.2, 0.7)
        self.hum_dbfs = r.uniform(-78, -64) if r.random() < 0.35 else None  # mains pick-up in the cable
        self.hum_orders = (1, 3, 5, 7)
        self.hum_amps = [1.0, r.uniform(0.2, 0.8), r.uniform(0.05, 0.4), r.uniform(0.0, 0.2)]


class _Room:
    """Shoebox room with the machine, the microphone and a background position (indoor individuals)."""

    def __init__(self, r: np.random.Generator, fs: int, mic: _Mic):
        self.fs, self.mic = fs, mic
        Lx, Ly, Lz = r.uniform(8, 40), r.uniform(6, 25), r.uniform(4, 10)
        self.dims = np.array([Lx, Ly, Lz])
        alpha = np.array(
            [
                r.uniform(0.03, 0.25),
                r.uniform(0.03, 0.25),
                r.uniform(0.03, 0.25),
                r.uniform(0.03, 0.25),
                r.uniform(0.02, 0.06),
                r.uniform(0.05, 0.5),
            ]
        )
        S = 2 * (Lx * Ly + Lx * Lz + Ly * Lz)
        areas = np.array([Ly * Lz, Ly * Lz, Lx * Lz, Lx * Lz, Lx * Ly, Lx * Ly])
        V = Lx * Ly * Lz
        a_mean = float(np.sum(alpha * areas) / S)
        rt = 0.161 * V / (S * a_mean)
        rt_target = float(np.clip(rt, 0.3, 1.3))
        alpha = np.clip(alpha * rt / rt_target, 0.01, 0.9)
        self.a_mean = float(np.sum(alpha * areas) / S)
        self.rt60 = 0.161 * V / (S * self.a_mean)
        self.beta = np.sqrt(1.0 - alpha)
        self.S, self.V = S, V
        margin = 0.6
        self.src = np.array([r.uniform(margin, Lx - margin), r.uniform(margin, Ly - margin), r.uniform(0.4, 1.8)])
        d = r.uniform(0.6, 3.5)
        for _ in range(100):  # microphone on a bracket or a pillar near the machine
            az, el = r.uniform(0, _TWO_PI), r.uniform(-0.3, 0.6)
            m = self.src + d * np.array([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)])
            if np.all(m > 0.3) and np.all(m < self.dims - 0.3):
                break
        else:
            m = np.clip(m, 0.3, self.dims - 0.3)
        self.mic_pos = m
        for _ in range(100):
            b = np.array([r.uniform(0.5, Lx - 0.5), r.uniform(0.5, Ly - 0.5), r.uniform(0.5, 3.0)])
            if np.linalg.norm(b - m) > min(6.0, 0.4 * Lx):
                break
        self.bg_pos = b
        self.t_mix = 2.5 * (4 * V / S) / 343.0
        self.length = int(min(1.0, 0.8 * self.rt60 + 0.05) * fs)
        # late tail noise in four bands (fixed per individual), decay rates per band
        tail = r.standard_normal(self.length + fs // 4)
        spec = np.fft.rfft(tail)
        f = np.fft.rfftfreq(len(tail), 1.0 / fs)
        edges = [0, 250, 1000, 4000, fs]
        self.tail_bands = [
            np.fft.irfft(spec * ((f >= lo) & (f < hi)), len(tail)) for lo, hi in zip(edges[:-1], edges[1:])
        ]
        self.band_rt = self.rt60 * np.array([1.15, 1.0, 0.8, 0.55])

    def ir(self, which: str, temp_c: float, jitter: np.ndarray) -> np.ndarray:
        fs = self.fs
        c = _speed_of_sound(temp_c)
        src = (self.src if which == "machine" else self.bg_pos) + jitter
        mic = self.mic_pos
        N = 3
        n = np.arange(-N, N + 1)
        axes = []
        for a in range(3):
            pos, r0, r1 = [], [], []
            for p in (0, 1):
                pos.append((1 - 2 * p) * src[a] + 2 * n * self.dims[a])
                r0.append(np.abs(n - p))
                r1.append(np.abs(n))
            axes.append((np.concatenate(pos), np.concatenate(r0), np.concatenate(r1)))
        (px, x0, x1), (py, y0, y1), (pz, z0, z1) = axes
        order = (
            x0[:, None, None]
            + x1[:, None, None]
            + y0[None, :, None]
            + y1[None, :, None]
            + z0[None, None, :]
            + z1[None, None, :]
        )
        sel = order <= N
        dx = (px - mic[0])[:, None, None]
        dy = (py - mic[1])[None, :, None]
        dz = (pz - mic[2])[None, None, :]
        d = np.sqrt(dx * dx + dy * dy + dz * dz)[sel]
        b = self.beta
        gain = (
            (b[0] ** x0)[:, None, None]
            * (b[1] ** x1)[:, None, None]
            * (b[2] ** y0)[None, :, None]
            * (b[3] ** y1)[None, :, None]
            * (b[4] ** z0)[None, None, :]
            * (b[5] ** z1)[None, None, :]
        )[sel]
        d_direct = float(np.linalg.norm(src - mic))
        lead = 32
        delays = lead + (d - d_direct) / c * fs
        keep = delays < self.length - 20
        h = np.zeros(self.length)
        _frac_sinc_place(h, delays[keep], gain[keep] / (4 * np.pi * np.maximum(d[keep], 0.1)))
        # stochastic late tail, time-scaled by the speed of sound (temperature)
        e_direct = (1.0 / (4 * np.pi * max(d_direct, 0.1))) ** 2
        ratio = 16 * np.pi * d_direct**2 * (1 - self.a_mean) / (self.S * self.a_mean)
        t = np.arange(self.length) / fs
        stretch = c / 343.0
        pos = t * stretch * fs
        tail = np.zeros(self.length)
        xs = np.arange(len(self.tail_bands[0]))
        for band, rt in zip(self.tail_bands, self.band_rt):
            tail += np.interp(pos, xs, band) * np.exp(-6.91 * t / rt)
        onset = _smoothstep((t - self.t_mix) / 0.02 + 0.5)
        tail *= onset
        tail[:lead] = 0.0
        target = e_direct * ratio * math.exp(-13.8 * self.t_mix / self.rt60)
        tail *= math.sqrt(target / (np.sum(tail * tail) + 1e-30))
        h += tail
        fade = int(0.03 * fs)
        h[-fade:] *= np.linspace(1, 0, fade)
        h = np.convolve(h, self.mic.fir)[: self.length]
        return h / np.sqrt(np.sum(h * h))


class _Outdoor:
    """Outdoor path for the tower: direct + ground reflection + air absorption + a few structure reflections."""

    def __init__(self, r: np.random.Generator, fs: int, mic: _Mic):
        self.fs, self.mic = fs, mic
        self.d_h = r.uniform(8, 60)
        self.h_src = r.uniform(5, 28)
        self.h_mic = r.uniform(1.2, 4.0)
        self.sigma = r.uniform(100e3, 400e3)  # grass flow resistivity, Pa s / m^2
        self.refl = [(r.uniform(0.004, 0.08), r.uniform(0.04, 0.2)) for _ in range(r.integers(2, 5))]
        self.length = 4096 if fs <= 24000 else 8192
        self.far_d = r.uniform(150, 600)

    @staticmethod
    def _air_db_per_m(f):
        k = f / 1000.0
        return 0.004 * k + 0.001 * k * k

    def ir(self, which: str, temp_c: float, jitter: np.ndarray) -> np.ndarray:
        fs, L = self.fs, self.length
        c = _speed_of_sound(temp_c)
        f = np.fft.rfftfreq(L, 1.0 / fs)
        if which == "machine":
            dh = self.d_h + jitter[0]
            hs, hm = self.h_src + jitter[2], self.h_mic
            refl = self.refl
        else:  # distant background (traffic, aircraft, birds): far and low
            dh, hs, hm = self.far_d, 2.0, self.h_mic
            refl = []
        r1 = math.hypot(dh, hs - hm)
        r2 = math.hypot(dh, hs + hm)
        sin_psi = (hs + hm) / r2
        X = 1.2 * np.maximum(f, 10.0) / self.sigma
        Z = 1 + 0.0571 * X**-0.754 + 1j * 0.087 * X**-0.732
        R = (Z * sin_psi - 1) / (Z * sin_psi + 1)
        lead = 64
        air1 = _g(-self._air_db_per_m(f) * r1)
        air2 = _g(-self._air_db_per_m(f) * r2)
        H = air1 * np.exp(-1j * _TWO_PI * f * lead / fs)
        H = H + R * air2 * (r1 / r2) * np.exp(-1j * _TWO_PI * f * (lead / fs + (r2 - r1) / c))
        for dt, g in refl:
            H = H + g * air1 * np.exp(-1j * _TWO_PI * f * (lead / fs + dt))
        h = np.fft.irfft(H, L)
        h[-L // 8 :] *= np.linspace(1, 0, L // 8)
        h = np.convolve(h, self.mic.fir)[:L]
        return h / np.sqrt(np.sum(h * h))


# ----------------------------------------------------------------------------------------------
# The individual (one machine id at one site)
# ----------------------------------------------------------------------------------------------


class Individual:
    """Everything fixed about one machine id: derived deterministically from (type, id, dataset seed)."""

    def __init__(self, machine_type: str, machine_id: int, dataset_seed: int, fs: int):
        self.type, self.id, self.seed, self.fs = machine_type, int(machine_id), int(dataset_seed), int(fs)
        r = self.rng("site")
        self.mains = 50.0 if r.random() < 0.6 else 60.0
        self.level_dbfs = r.uniform(-38, -22)
        self.temp_c = r.uniform(8, 30)
        self.mic = _Mic(r, fs)
        self.path = _Outdoor(r, fs, self.mic) if machine_type == "tower" else _Room(r, fs, self.mic)
        self.bg_share = r.dirichlet(np.ones(4))  # habits of the site: which backgrounds dominate

    def rng(self, what: str) -> np.random.Generator:
        return _rng(self.seed, self.type, self.id, what)


@functools.lru_cache(maxsize=64)
def _individual(machine_type: str, machine_id: int, dataset_seed: int, fs: int) -> Individual:
    return Individual(machine_type, machine_id, dataset_seed, fs)


# ----------------------------------------------------------------------------------------------
# Machines
# ----------------------------------------------------------------------------------------------


class _Machine:
    """Base: a dry machine, rendered block by block; ``gains`` are per-part weights normalized to unit total."""

    op_spec: OpSpec

    def __init__(
        self,
        ind: Individual,
        rng: np.random.Generator,
        stream: bool,
        weather: Weather | None,
        total_s: float,
        param_fault: tuple[str, float] | None = None,
    ):
        self.ind, self.fs, self.rng, self.stream, self.weather = ind, ind.fs, rng, stream, weather
        self.total_s = total_s
        self.param_fault = param_fault
        self.r = ind.rng("machine")  # individual constants: identical for every clip of this id
        self.gains: dict[str, float] = {}
        self.last: dict[str, np.ndarray] = {}
        self.nmix = Noise(rng, ind.fs)  # the machine's stationary noises, rendered as one
        self.build()
        self.op = OpPoint(rng, self.op_spec, stream)
        tot = math.sqrt(sum(g * g for g in self.gains.values()))
        self.gains = {k: v / tot for k, v in self.gains.items()}

    def build(self) -> None:
        raise NotImplementedError

    def _key(self, name: str):
        """Cache key of a magnitude response that depends only on the individual."""
        return (self.ind.type, self.ind.id, self.ind.seed, self.ind.fs, name)

    # shared part: an induction motor
    def _motor_setup(self, poles: int, slip_nom: float, rated: bool = True, vfd: bool = False):
        r, fs = self.r, self.fs
        self.f_sync = 2 * self.ind.mains / poles
        self.f_motor = self.f_sync * (1 - slip_nom)
        self.n_bars = int(r.integers(26, 48))
        self.motor_fan_blades = int(r.integers(7, 13))
        self.vfd = vfd
        self.mains_ = Mains(self.rng, self.ind.mains)
        hum_amps = [1.0, _lu(r, 0.1, 0.6), _lu(r, 0.03, 0.3), _lu(r, 0.01, 0.15)]
        self.hum_table = Table(_table([1, 2, 3, 4], hum_amps, rng=r))
        self.fan_table = Table(
            _pulse_table(
                np.arange(self.motor_fan_blades) / self.motor_fan_blades,
                [0.012] * self.motor_fan_blades,
                1 + 0.04 * r.standard_normal(self.motor_fan_blades),
                _max_order(fs, self.f_motor),
            )
        )
        fcf = r.uniform(800, 2500)
        self.nmix.add("m_noise", lambda f: _band(f, fcf, 1.3) + 0.05 * _lp(f, 300), self._key("m_noise"))
        self.slot_ratio = self.n_bars
        self.gains.update(
            m_hum=_g(r.uniform(-10, -2)),
            m_slot=_g(r.uniform(-24, -12)),
            m_fan=_g(r.uniform(-18, -8)),
            m_noise=_g(r.uniform(-12, -4)),
        )
        if vfd:
            self.pwm_hz = r.choice([2000.0, 4000.0, 6000.0]) if fs >= 16000 else 2000.0
            self.gains["m_pwm"] = _g(r.uniform(-28, -16))

    def _motor_render(self, blk: Block, ph_motor: np.ndarray, load_c: np.ndarray) -> np.ndarray:
        g = self.gains
        lfac = blk.up(np.sqrt(0.4 + load_c))
        if self.vfd:  # magnetic forces at twice the electrical frequency, which follows the speed
            ph_e = ph_motor * (self.f_sync / self.f_motor)
        else:
            ph_e, _ = self.mains_.osc().block(blk)
        out = g["m_hum"] * self.hum_table(2.0 * ph_e) * lfac
        out += g["m_slot"] * _sin_cyc(self.slot_ratio * ph_motor - 2 * ph_e) * lfac  # rotor-slot passing
        out += g["m_fan"] * self.fan_table(ph_motor)
        if self.vfd:
            # PWM carrier whine with sidebands at +-2 f_electrical
            car = _sin_cyc(self.pwm_hz * blk.times())
            out += (0.9 * g["m_pwm"]) * car * (0.6 + 0.8 * _sin_cyc(2 * ph_e + 0.25))
        return out

    def render(self, blk: Block) -> np.ndarray:
        raise NotImplementedError

    def fault(self, kind: str, blk: Block, rng: np.random.Generator, keep_from: int) -> np.ndarray:
        """Unscaled additive fault signal for the block rendered last (clips only)."""
        return getattr(self, "fault_" + kind)(blk, rng, keep_from)


def _bursts(rng, n: int, fs: int, keep_from: int, count_range, dur_range, ramp_s: float = 0.02) -> np.ndarray:
    """Gate in [0, 1] over n samples with a few bursts (count per 10 s of clip), all inside [keep_from, n)."""
    gate = np.zeros(n)
    span = n - keep_from
    k = int(rng.integers(count_range[0], count_range[1] + 1))
    k = max(1, int(round(k * span / (10.0 * fs))))
    t = np.arange(n)
    for _ in range(k):
        d = int(rng.uniform(*dur_range) * fs)
        d = min(d, span - 2)
        s = keep_from + int(rng.integers(0, max(1, span - d)))
        ramp = max(1, int(ramp_s * fs))
        g = _smoothstep((t - s) / ramp) * _smoothstep((s + d - t) / ramp)
        np.maximum(gate, g, out=gate)
    return gate


class Conveyor(_Machine):
    def build(self):
        r, fs = self.r, self.fs
        self._motor_setup(poles=4, slip_nom=r.uniform(0.02, 0.045), vfd=r.random() < 0.3)
        self.op_spec = OpSpec(
            "vfd" if self.vfd else "dol",
            r.uniform(0.02, 0.05) if self.vfd else 0.0,
            r.uniform(0.4, 0.7),
            r.uniform(0.1, 0.3),
            r.uniform(0.001, 0.004),
            r.uniform(0.03, 0.08),
            slip=0.03,
        )
        self.ratio = r.uniform(12, 30)
        self.D = r.uniform(0.3, 0.6)
        self.v = np.pi * self.D * self.f_motor / self.ratio  # belt speed m/s
        self.d_idler = r.uniform(0.09, 0.16)
        self.spacing = r.uniform(1.0, 1.5)
        self.Lc = r.uniform(10, 40)  # conveyor length
        self.Lb = 2 * self.Lc + np.pi * self.D
        self.x_mic = r.uniform(0.25, 0.75) * self.Lc
        self.Z1, self.Z2, self.Z3 = int(r.integers(13, 29)), int(r.integers(40, 90)), int(r.integers(11, 23))
        fm = self.f_motor
        mo1 = _max_order(fs, fm)
        orders, amps = [], []
        for k in (1, 2, 3):
            for sb, a in ((0, 1.0), (-1, 0.3), (1, 0.25), (-2, 0.08), (2, 0.07)):
                o = k * self.Z1 + sb
                if 0 < o <= mo1:
                    orders.append(o)
                    amps.append(a * (0.55 ** (k - 1)) * r.uniform(0.6, 1.4))
        self.gear1 = Table(_table(orders, amps, rng=r))
        orders2 = [k * self.Z3 + sb for k in (1, 2, 3) for sb in (0, -1, 1)]
        amps2 = [
            (0.5 ** (k - 1)) * (1.0 if sb == 0 else 0.3) * r.uniform(0.6, 1.4) for k in (1, 2, 3) for sb in (0, -1, 1)
        ]
        self.gear2 = Table(_table(orders2, amps2, rng=r))
        self.gear2_ratio = self.Z1 / self.Z2
        f_roll = r.uniform(350, 1200)
        self.nmix.add(
            "idler", lambda f: _band(f, f_roll, 1.4) * _hp(f, 120) + 0.2 * _band(f, 3 * f_roll, 0.8), self._key("idler")
        )
        f_rum = r.uniform(60, 200)
        self.nmix.add("rumble", lambda f: _band(f, f_rum, 1.2) * _hp(f, 30), self._key("rumble"))
        self.splice_ir = _modal_ir(r, fs, r.uniform(60, 220, 3), r.uniform(0.01, 0.03, 3), click=0.4, dur=0.12)
        self.splice = Impacts(self.splice_ir)
        self.drop_rate = r.uniform(0.1, 0.6)
        self.drop = Impacts(
            _modal_ir(
                r,
                fs,
                np.concatenate([r.uniform(70, 300, 3), r.uniform(500, 2500, 2)]),
                np.concatenate([r.uniform(0.01, 0.04, 3), r.uniform(0.003, 0.012, 2)]),
                amps=[1, 0.8, 0.6, 0.3, 0.2],
                click=0.8,
                dur=0.2,
            )
        )
        self.reverb_floor = r.uniform(0.07, 0.15)
        xs = np.linspace(0, self.Lb, 2000)
        self.splice_msq = float(np.mean(self._proximity(xs) ** 2)) * self.v / self.spacing
        self.gains.update(
            gear1=_g(r.uniform(-8, 0)),
            gear2=_g(r.uniform(-14, -4)),
            idler=1.0,
            rumble=_g(r.uniform(-8, -1)),
            splice=_g(r.uniform(-16, -6)),
            drop=_g(r.uniform(-12, -3)),
        )
        self.bpfo = r.uniform(3.0, 4.2)
        self.shell_modes = (r.uniform(1500, 5000, 3), r.uniform(0.0015, 0.005, 3))
        self.rub_f = r.uniform(900, 3500)

    def _proximity(self, s):
        """How loudly the splice at loop position s is heard: strongest near the microphone section of either
        strand, never below the reverberant field of the hall (about -20 dB re the nearest idler)."""
        d_carry = np.abs(s - self.x_mic)
        d_ret = np.abs((self.Lb - s) - self.x_mic) + 0.8
        return 1.0 / (1.0 + (d_carry / 2.0) ** 2) + 0.5 / (1.0 + (d_ret / 2.0) ** 2) + self.reverb_floor

    def render(self, blk: Block) -> np.ndarray:
        g, n, fs = self.gains, blk.n, self.fs
        if not hasattr(self, "osc"):
            self.osc = Osc(self.f_motor, self.op.S, self.rng.random())
            self.x0 = self.rng.uniform(0, self.Lb)
        ph, before = self.osc.block(blk)
        speed_c = self.op.speed(blk.tc)
        load_c = self.op.load(blk.tc)
        self.last = {"ph": ph, "before": before, "speed_c": speed_c, "load_c": load_c}
        out = self._motor_render(blk, ph, load_c)
        lf = blk.up(0.6 + 0.8 * load_c)
        out += g["gear1"] * self.gear1(ph) * lf
        out += g["gear2"] * self.gear2(ph * self.gear2_ratio) * lf
        belt_m = ph / self.ratio * np.pi * self.D  # belt travel, metres
        idler_ph = belt_m / (np.pi * self.d_idler)
        self.last["idler_ph"] = idler_ph
        self.last["idler_before"] = before / self.ratio * np.pi * self.D / (np.pi * self.d_idler)
        out += self.nmix.mix(
            n,
            {
                "m_noise": g["m_noise"],
                "idler": g["idler"] * float(np.mean(speed_c**1.5)),
                "rumble": g["rumble"] * float(np.mean(np.sqrt(load_c / self.op_spec.load_nom))),
            },
        )
        # splice crossing idlers
        s_u = belt_m + self.x0  # unwrapped: crossings need monotonic
        s_before = before / self.ratio * np.pi * self.D + self.x0
        s = s_u % self.Lb
        self.last["splice_u"], self.last["splice_before"] = s_u, s_before
        idx, _ = _crossings(s_u, s_before, 1.0 / self.spacing)
        prox = self._proximity(s[idx])
        amps = prox * (1 + 0.2 * self.rng.standard_normal(len(idx))) * math.sqrt(fs / self.splice_msq)
        out += g["splice"] * self.splice(n, idx, amps)
        rate = self.drop_rate * blk.up(load_c / self.op_spec.load_nom)
        di = _poisson_idx(self.rng, n, rate, fs)
        da = self.rng.lognormal(0, 0.5, len(di)) * math.sqrt(fs / (self.drop_rate * math.exp(0.5)))
        out += g["drop"] * self.drop(n, di, da)
        return out

    def fault_roller_bearing_click(self, blk, rng, keep_from):
        n, fs = blk.n, self.fs
        idx, _ = _crossings(self.last["idler_ph"], self.last["idler_before"], self.bpfo)
        gate = _bursts(rng, n, fs, keep_from, (1, 4), (0.2, 1.0), 0.05)
        a = gate[idx] * rng.lognormal(0, 0.4, len(idx)) * (rng.random(len(idx)) > 0.25)
        ir = _modal_ir(
            rng, fs, self.shell_modes[0] * rng.uniform(0.97, 1.03, 3), self.shell_modes[1], click=1.0, dur=0.03
        )
        return Impacts(ir)(n, idx, a)

    def fault_belt_splice_slap(self, blk, rng, keep_from):
        n, fs = blk.n, self.fs
        s, sb = self.last["splice_u"], self.last["splice_before"]
        # move the damaged splice so that it passes the microphone section inside the clip
        t_pass = keep_from + int(rng.uniform(0.15, 0.85) * (n - keep_from))
        shift = (self.x_mic - s[t_pass]) % self.Lb
        pos = s + shift
        idx, _ = _crossings(pos, sb + shift, 1.0 / self.spacing)
        prox = self._proximity(pos[idx] % self.Lb)
        a = prox**1.5 * rng.lognormal(0, 0.3, len(idx))
        ir = _modal_ir(
            rng,
            fs,
            np.concatenate([rng.uniform(250, 900, 2), rng.uniform(1500, 4000, 2)]),
            [0.012, 0.008, 0.003, 0.002],
            amps=[1, 0.7, 0.5, 0.4],
            click=2.0,
            dur=0.08,
        )
        return Impacts(ir)(n, idx, a)

    def fault_loose_idler_knock(self, blk, rng, keep_from):
        n, fs = blk.n, self.fs
        rate = rng.uniform(0.4, 2.5)
        idx = keep_from + _poisson_idx(rng, n - keep_from, rate, fs)
        if len(idx) == 0:
            idx = np.array([keep_from + int(rng.integers(0, n - keep_from))])
        reb = idx + (rng.uniform(0.02, 0.07, len(idx)) * fs).astype(np.int64)
        a = rng.lognormal(0, 0.4, len(idx))
        all_i = np.concatenate([idx, reb[reb < n]])
        all_a = np.concatenate([a, (a * rng.uniform(0.3, 0.6, len(idx)))[reb < n]])
        ir = _modal_ir(rng, fs, rng.uniform(120, 900, 4), rng.uniform(0.008, 0.04, 4), click=1.2, dur=0.2)
        return Impacts(ir)(n, all_i, all_a)

    def fault_tracking_rub(self, blk, rng, keep_from):
        n, fs = blk.n, self.fs
        gate = _bursts(rng, n, fs, keep_from, (1, 3), (0.3, 2.0), 0.05)
        f_ss = rng.uniform(15, 60)
        fc = self.rub_f * rng.uniform(0.9, 1.1)
        nz = Noise(rng, fs, lambda f: _band(f, fc, 0.7) + 0.3 * _band(f, 2.2 * fc, 0.4))(n)
        ss = _sin_cyc(f_ss * blk.times() + rng.random())
        return nz * gate * (0.3 + 0.7 * np.maximum(ss, 0) ** 3)


class Fan(_Machine):
    def build(self):
        r, fs = self.r, self.fs
        self.kind = "axial" if r.random() < 0.45 else "centrifugal"
        belt = r.random() < 0.5
        vfd = r.random() < 0.4
        self._motor_setup(poles=4 if r.random() < 0.7 else 2, slip_nom=r.uniform(0.015, 0.04), vfd=vfd)
        self.op_spec = OpSpec(
            "vfd" if vfd else "dol",
            r.uniform(0.02, 0.05) if vfd else 0.0,
            r.uniform(0.4, 0.8),
            r.uniform(0.1, 0.25),
            r.uniform(0.001, 0.004),
            r.uniform(0.02, 0.06),
            slip=0.025,
        )
        self.ratio = r.uniform(1.3, 2.8) if belt else 1.0  # motor turns / fan turns
        self.f_rot = self.f_motor / self.ratio
        self.Z = int(r.integers(4, 10) if self.kind == "axial" else r.integers(8, 17))
        mo = _max_order(fs, self.f_rot)
        width = r.uniform(0.08, 0.25) / self.Z
        pos = np.arange(self.Z) / self.Z + r.normal(0, 0.002, self.Z)
        self.blade_pos, self.blade_w = pos, width
        self.bpf_table = Table(_pulse_table(pos, [width] * self.Z, 1 + r.normal(0, 0.03, self.Z), mo))
        f_lo, f_hi = r.uniform(80, 300), r.uniform(600, 2500)
        duct = [(r.uniform(100, 1500), r.uniform(2, 8)) for _ in range(3)]

        def duct_mag(f):
            m = np.ones_like(f)
            for fc, db in duct:
                m = m * _g(db * _band(f, fc, 0.12))
            return m

        self.lo_mag = lambda f: _band(f, f_lo, 1.3) * _hp(f, 25) * duct_mag(f)
        self.nmix.add("aero_lo", self.lo_mag, self._key("aero_lo"))
        self.aero_hi = Noise(
            self.rng, fs, lambda f: _band(f, f_hi, 1.5) * _tilt(f, f_hi, -1.0) * duct_mag(f), key=self._key("aero_hi")
        )
        self.am_depth = r.uniform(0.05, 0.25)
        self.tonal_share = r.uniform(-10, -2) if self.kind == "axial" else r.uniform(-16, -6)
        self.gains.update(bpf=_g(self.tonal_share), aero_lo=_g(r.uniform(-6, 0)), aero_hi=1.0)
        self.bear = (r.uniform(3.0, 5.5), r.uniform(2500, 6000), r.uniform(0.0008, 0.0025))
        self.rattle_modes = (r.uniform(250, 2500, 4), r.uniform(0.004, 0.015, 4))
        self.stall_ratio = r.uniform(0.6, 0.8)

    def render(self, blk: Block) -> np.ndarray:
        g, n = self.gains, blk.n
        if not hasattr(self, "osc"):
            self.osc = Osc(self.f_rot, self.op.S, self.rng.random())
            self.stall_ph0 = self.rng.random()
        ph, before = self.osc.block(blk)
        speed_c, load_c = self.op.speed(blk.tc), self.op.load(blk.tc)
        self.last = {"ph": ph, "before": before, "speed_c": speed_c}
        out = self._motor_render(blk, ph * self.ratio, load_c)
        s25 = blk.up(speed_c**2.5)
        out += g["bpf"] * self.bpf_table(ph) * s25
        # flow: higher load (more throttled) -> more low-band rumble, less high band
        lo_f = blk.up(np.sqrt(0.5 + load_c) / math.sqrt(0.5 + self.op_spec.load_nom))
        hi_f = blk.up(np.sqrt(1.5 - 0.5 * load_c) / math.sqrt(1.5 - 0.5 * self.op_spec.load_nom))
        lo_g, hi_g, stall = g["aero_lo"], g["aero_hi"], 0.0
        if self.param_fault is not None and self.param_fault[0] == "flow_change":
            level, sign = self.param_fault[1], self.param_fault[2]
            if sign < 0:  # throttled beyond normal: rumble up, high band slightly down, rotating stall
                lo_g, hi_g, stall = lo_g * _g(level), hi_g * _g(-level / 3), min(0.8, 0.12 * level)
            else:  # flow beyond normal (open door, lost filter): broadband up, mostly the high band
                lo_g, hi_g = lo_g * _g(level / 3), hi_g * _g(level)
        am = 1 + self.am_depth * _sin_cyc(self.Z * ph)
        out += self.nmix.mix(n, {"m_noise": g["m_noise"], "aero_lo": lo_g * float(np.mean(lo_f) * np.mean(s25))})
        out += (hi_g * hi_f * s25) * self.aero_hi(n) * am
        if stall:  # rotating stall: a modulated share of the low band
            st = Noise(self.rng, self.fs, self.lo_mag, key=self._key("aero_lo"))(n)
            out += (lo_g * stall) * st * _sin_cyc(self.stall_ratio * ph + self.stall_ph0) * lo_f * s25
        return out

    def fault_blade_fault(self, blk, rng, keep_from):
        ph = self.last["ph"]
        j = int(rng.integers(0, self.Z))
        mo = _max_order(self.fs, self.f_rot)
        # the bent / fouled blade's pressure pulse is sharper and displaced: what differs from a healthy blade
        pulse = Table(
            _pulse_table([self.blade_pos[j] + rng.normal(0, 0.01)], [self.blade_w * rng.uniform(0.4, 0.9)], [1.0], mo)
        )
        imb = _sin_cyc(ph + rng.random()) + 0.3 * _sin_cyc(2 * ph + rng.random())
        w = rng.uniform(0.6, 0.9)
        return w * pulse(ph) + (1 - w) * imb / 0.74 * blk.up(self.last["speed_c"] ** 2)

    def fault_mount_rattle(self, blk, rng, keep_from):
        n, fs = blk.n, self.fs
        idx, k = _crossings(self.last["ph"], self.last["before"], 1.0, rng.random())
        p = rng.uniform(0.35, 0.9)
        hit = rng.random(len(idx)) < p
        a = hit * rng.lognormal(0, 0.5, len(idx))
        idx = idx + (rng.normal(0, 0.002, len(idx)) * fs).astype(np.int64)
        ir = _modal_ir(
            rng, fs, self.rattle_modes[0] * rng.uniform(0.95, 1.05, 4), self.rattle_modes[1], click=1.5, dur=0.08
        )
        return Impacts(ir)(n, idx, a)

    def fault_bearing_wear(self, blk, rng, keep_from):
        n, fs = blk.n, self.fs
        mult, fres, tau = self.bear
        ph = self.last["ph"]
        mult = mult * (1 + 0.01 * rng.standard_normal())  # rolling elements slip: the defect rate varies a little
        idx, _ = _crossings(ph, self.last["before"], mult)
        a = (1 + 0.6 * np.cos(_TWO_PI * (ph[idx] % 1.0))) * rng.lognormal(0, 0.3, len(idx))
        ir = _modal_ir(rng, fs, [fres, fres * 1.37], [tau, tau * 0.7], amps=[1, 0.5], click=0.5, dur=0.02)
        imp = Impacts(ir)(n, idx, a)
        grind = Noise(rng, fs, lambda f: _band(f, fres * 0.8, 0.6))(n) * (1 + 0.5 * _sin_cyc(ph + 0.25))
        imp /= _rms(imp[keep_from:])
        grind /= _rms(grind[keep_from:])
        return imp + 0.5 * grind


class Pump(_Machine):
    def build(self):
        r, fs = self.r, self.fs
        vfd = r.random() < 0.4
        self._motor_setup(poles=2, slip_nom=r.uniform(0.01, 0.03), vfd=vfd)
        self.op_spec = OpSpec(
            "vfd" if vfd else "dol",
            r.uniform(0.03, 0.06) if vfd else 0.0,
            r.uniform(0.5, 0.85),
            r.uniform(0.1, 0.25),
            r.uniform(0.001, 0.003),
            r.uniform(0.02, 0.05),
            slip=0.02,
        )
        if vfd:
            self.f_motor *= r.uniform(0.7, 0.95)
        self.f_rot = self.f_motor
        self.Zv = int(r.integers(5, 8))
        self.stages = int(r.integers(1, 6))
        mo = _max_order(fs, self.f_rot)
        orders, amps = [], []
        for k in (1, 2, 3, 4):
            for sb in (0, -1, 1, -2, 2):
                o = k * self.Zv + sb
                if 0 < o <= mo:
                    orders.append(o)
                    amps.append(
                        (0.5 ** (k - 1))
                        * (1.0 if sb == 0 else 0.15 * self.stages**0.5 / (1 + abs(sb)))
                        * r.uniform(0.6, 1.4)
                    )
        self.vane = Table(_table(orders, amps, rng=r))
        self.shaft = Table(_table([1, 2, 3], [1.0, _lu(r, 0.2, 0.8), _lu(r, 0.05, 0.3)], rng=r))
        pipe = [(r.uniform(250, 2500), r.uniform(4, 12)) for _ in range(4)]
        f_flow = r.uniform(300, 1200)

        def pipe_mag(f):
            m = _band(f, f_flow, 1.6) * _hp(f, 60)
            for fc, db in pipe:
                m = m * _g(db * _band(f, fc, 0.07))
            return m

        self.nmix.add("flow", pipe_mag, self._key("flow"))
        self.nmix.add("recirc", lambda f: _band(f, 50, 1.0) * _hp(f, 15), self._key("recirc"))
        self.gains.update(
            vane=_g(r.uniform(-8, 0)), shaft=_g(r.uniform(-16, -8)), flow=1.0, recirc=_g(r.uniform(-14, -6))
        )
        self.cav_modes = (r.uniform(3000, 7000, 3), r.uniform(0.0003, 0.001, 3))
        self.leak_fc = r.uniform(2000, 5000)
        self.squeal_f = r.uniform(1500, 5000)

    def render(self, blk: Block) -> np.ndarray:
        g, n = self.gains, blk.n
        if not hasattr(self, "osc"):
            self.osc = Osc(self.f_rot, self.op.S, self.rng.random())
        ph, before = self.osc.block(blk)
        speed_c, load_c = self.op.speed(blk.tc), self.op.load(blk.tc)
        self.last = {"ph": ph, "before": before, "speed_c": speed_c, "load_c": load_c}
        out = self._motor_render(blk, ph, load_c)
        s2 = blk.up(speed_c**2)
        if not hasattr(self, "vs"):
            self.vs = Table(g["vane"] * self.vane.t + g["shaft"] * self.shaft.t)
        out += self.vs(ph) * s2
        ln = self.op_spec.load_nom
        out += self.nmix.mix(
            n,
            {
                "m_noise": g["m_noise"],
                "flow": g["flow"] * float(np.mean(speed_c**2.5 * np.sqrt(load_c / ln))),
                "recirc": g["recirc"] * float(np.mean((1.2 - load_c) / (1.2 - ln))),
            },
        )
        return out

    def fault_cavitation(self, blk, rng, keep_from):
        n, fs = blk.n, self.fs
        ph = self.last["ph"]
        base = rng.uniform(300, 2500)
        rate = base * (1 + 0.8 * _sin_cyc(self.Zv * ph + 0.25))
        idx = _poisson_idx(rng, n, rate, fs, rate_max=1.8 * base)
        a = np.minimum(rng.pareto(rng.uniform(1.6, 2.6), len(idx)) + 0.2, 30.0)
        ir = _modal_ir(rng, fs, self.cav_modes[0] * rng.uniform(0.97, 1.03, 3), self.cav_modes[1], click=2.5, dur=0.006)
        crackle = Impacts(ir)(n, idx, a)
        rumble = Noise(rng, fs, lambda f: _band(f, 150, 1.0))(n)
        crackle /= _rms(crackle[keep_from:])
        return crackle + 0.3 * rumble

    def fault_valve_leak(self, blk, rng, keep_from):
        fc = self.leak_fc * rng.uniform(0.9, 1.1)
        hiss = Noise(rng, self.fs, lambda f: _band(f, fc, 0.8))(blk.n)
        fl = Slow(rng, 0.3, 3.0, 4, 0.3)
        return hiss * blk.up(1 + 0.25 * fl(blk.tc))

    def fault_seal_squeal(self, blk, rng, keep_from):
        n, fs = blk.n, self.fs
        f0 = self.squeal_f * rng.uniform(0.9, 1.1)
        jit = Slow(rng, 0.05, 1.0, 5, 0.3)
        t = blk.times()
        ph = f0 * (t + 0.008 * blk.up64(jit.integral(blk.tc)))
        mo = max(1, min(3, int(0.45 * fs / f0)))
        tone = Table(_table(np.arange(1, mo + 1), [1.0, 0.35, 0.15][:mo], rng=rng))(ph)
        gate = _bursts(rng, n, fs, keep_from, (1, 4), (0.2, 2.0), 0.03)
        return tone * gate * (1 + 0.3 * _sin_cyc(self.last["ph"] + 0.25))

    def fault_misalignment(self, blk, rng, keep_from):
        ph = self.last["ph"]
        t = Table(_table([1, 2, 3, 4], [0.5, 1.0, 0.4, 0.2], rng=rng))(ph)
        side = self.vane(ph) * _sin_cyc(ph + rng.random())
        return (t + 0.5 * side) * blk.up(self.last["speed_c"] ** 2)


class Tower(_Machine):
    def build(self):
        r, fs = self.r, self.fs
        self.substation = r.random() < 0.5
        self.op_spec = OpSpec("vfd", 0.0, r.uniform(0.3, 0.8), r.uniform(0.15, 0.35), 0.0, r.uniform(0.01, 0.04))
        self.mains_ = Mains(self.rng, self.ind.mains)
        mo = max(2, min(16, int(0.45 * fs / (2 * self.ind.mains))))
        k = np.arange(1, mo + 1)
        amps = np.exp(-k / r.uniform(1.2, 3.5)) * _g(r.uniform(-6, 6, len(k)))
        self.hum_core = Table(_table(k, amps, rng=r))  # magnetostriction: even mains harmonics
        self.hum_load = Table(_table(k[:3], [1.0, 0.3, 0.1], rng=r))  # winding forces ~ current^2
        self.gains.update(hum=1.0, hum_load=_g(r.uniform(-12, -4)))
        if self.substation:
            self.fan_blades = int(r.integers(4, 8))
            self.fan_f = r.uniform(12, 24)
            self.fan_table = Table(
                _pulse_table(
                    np.arange(self.fan_blades) / self.fan_blades,
                    [0.02] * self.fan_blades,
                    np.ones(self.fan_blades),
                    _max_order(fs, self.fan_f),
                )
            )
            ffc = r.uniform(300, 1000)
            self.fan_noise = Noise(self.rng, fs, lambda f: _band(f, ffc, 1.4), key=self._key("cool"))
            self.gains.update(cool=_g(r.uniform(-8, 0)))
        else:
            self.cond_d = r.uniform(0.02, 0.04)
            self.gains.update(aeolian=_g(r.uniform(-14, -4)))
        self.corona_intensity = r.uniform(0.5, 1.5)
        self.arc_ir_f = r.uniform(200, 1200, 3)
        self.hw_f_ratio = r.choice([1.0, 2.0])

    def render(self, blk: Block) -> np.ndarray:
        g, n, fs = self.gains, blk.n, self.fs
        if not hasattr(self, "fan_sched"):
            if self.substation:
                self.fan_sched = (
                    Schedule.renewal(self.rng, self.total_s, 1800, 1200, 0.5, ramp_s=6.0)
                    if self.stream
                    else Schedule.for_clip(self.rng, blk.tc[0], blk.n / fs, 0.5, p_change=0.1, ramp_s=4.0)
                )
                self.fan_osc = Osc(self.fan_f, lambda t: np.atleast_1d(t) * 1.0, self.rng.random())
            self.aeo_fir, self.aeo_f = None, 0.0
            self.wet_corona = StreamFIR(_modal_ir(self.rng, fs, [4000.0], [0.0003], click=3.0, dur=0.003))
        phL, beforeL = self.mains_.osc().block(blk)
        load_c = self.op.load(blk.tc)
        self.last = {"phL": phL, "beforeL": beforeL, "load_c": load_c}
        ln = self.op_spec.load_nom
        out = g["hum"] * self.hum_core(2 * phL) * blk.up(0.9 + 0.1 * load_c / ln)
        out += g["hum_load"] * self.hum_load(2 * phL) * blk.up((load_c / ln) ** 2)
        if self.substation:
            act = self.fan_sched(blk.tc)
            fph, _ = self.fan_osc.block(blk)
            out += g["cool"] * blk.up(act) * (0.4 * self.fan_table(fph) + 0.9 * self.fan_noise(n))
        else:
            U = self.weather.wind(blk.tc)
            f_ae = float(np.clip(0.2 * np.median(U) / self.cond_d, 20, 0.4 * fs))
            # a narrow band around the Strouhal frequency of the conductor, level grows with wind
            if self.aeo_fir is None or abs(self.aeo_f - f_ae) / f_ae > 0.15:  # re-tuned as the wind changes
                self.aeo_f = f_ae
                h = _fir(fs, 1024, lambda f: _band(f, f_ae, 0.08) + 0.1 * _band(f, 2 * f_ae, 0.08))
                if self.aeo_fir is None:
                    self.aeo_fir = StreamFIR(h)
                else:
                    self.aeo_fir.h = h
            level = blk.up(np.clip((U / 6.0) ** 2, 0, 3))
            out += g["aeolian"] * self.aeo_fir(self.rng.standard_normal(n)) * level
        # foul-weather corona: a faint, normal crackle in rain
        hum_w = self.weather.rain_rate(blk.tc)
        if np.max(hum_w) > 0:
            lam = 3.0
            e_a2 = (0.4 * 1.6**2 + 1.6 * 0.6**2) / 2.0 * math.exp(0.72)
            nominal = math.sqrt(2 * lam * self.ind.mains * e_a2 / fs)
            c = self._corona_pulses(blk, self.rng, lam=lam, intensity=1.0)
            out += 0.03 * blk.up(hum_w) * self.wet_corona(c) / nominal
        return out

    def _corona_pulses(self, blk, rng, lam, intensity):
        """Impulse trains at the voltage peaks: + peak few large pulses, - peak many small ones."""
        n, fs = blk.n, self.fs
        phL = self.last["phL"]
        out = np.zeros(n)
        for off, lam_k, amp, spread in ((0.25, lam * 0.4, 1.6, 0.05), (0.75, lam * 1.6, 0.6, 0.035)):
            idx, _ = _crossings(phL, self.last["beforeL"], 1.0, off)
            cnt = rng.poisson(lam_k, len(idx))
            if cnt.sum() == 0:
                continue
            base = np.repeat(idx, cnt)
            jit = (rng.normal(0, spread, cnt.sum()) / self.ind.mains * fs).astype(np.int64)
            a = amp * intensity * rng.lognormal(0, 0.6, cnt.sum()) * rng.choice([-1, 1], cnt.sum())
            out += _impulses(n, base + jit, a)
        return out

    def fault_corona(self, blk, rng, keep_from):
        n, fs = blk.n, self.fs
        lam = rng.uniform(3, 15)
        hum = float(np.mean(self.weather.humidity(blk.tc)))
        inten = 0.5 + hum
        c = self._corona_pulses(blk, rng, lam, inten)
        click = StreamFIR(_modal_ir(rng, fs, rng.uniform(2500, 6500, 2), [0.0002, 0.0003], click=4.0, dur=0.003))(c)
        click /= _rms(click[keep_from:])
        env_t = Table(_pulse_table([0.25, 0.75], [0.05, 0.05], [1.0, 0.7], 40))
        env = env_t(self.last["phL"])
        env = env - env.min()
        hiss = Noise(rng, fs, lambda f: _band(f, 5000, 0.8) * _hp(f, 1500))(n) * env
        hiss /= _rms(hiss[keep_from:])
        ion = _sin_cyc(2 * self.last["phL"])
        return click + 0.7 * hiss + 0.2 * ion

    def fault_tracking_arc(self, blk, rng, keep_from):
        n, fs = blk.n, self.fs
        gate = _bursts(rng, n, fs, keep_from, (2, 6), (0.1, 2.5), 0.01)
        phL = self.last["phL"]
        parts = []
        for off in (0.25, 0.75):
            idx, _ = _crossings(phL, self.last["beforeL"], 1.0, off + rng.normal(0, 0.03))
            idx = idx[(gate[idx] > 0.05) & (rng.random(len(idx)) < 0.75)]
            cnt = rng.integers(2, 20, len(idx))
            base = np.repeat(idx, cnt) + (rng.uniform(0, 0.003, cnt.sum()) * fs).astype(np.int64)
            parts.append((base, rng.lognormal(0, 0.7, cnt.sum()) * rng.choice([-1, 1], cnt.sum())))
        idx = np.concatenate([p[0] for p in parts])
        a = np.concatenate([p[1] for p in parts])
        ir = _modal_ir(
            rng,
            fs,
            np.concatenate([self.arc_ir_f, rng.uniform(2000, 5000, 2)]),
            [0.004, 0.003, 0.002, 0.001, 0.0008],
            click=3.0,
            dur=0.02,
        )
        crack = Impacts(ir)(n, idx, a)
        crack /= _rms(crack[keep_from:]) + 1e-12
        buzz = np.clip(3 * _sin_cyc(2 * phL), -1, 1) * gate
        return crack + 0.4 * buzz

    def fault_loose_hardware(self, blk, rng, keep_from):
        n, fs = blk.n, self.fs
        phL = self.last["phL"]
        thr = rng.uniform(0.5, 0.9)
        x = _sin_cyc(self.hw_f_ratio * phL + rng.random())
        contact = np.maximum(x - thr, 0) / (1 - thr)
        buzz = StreamFIR(_modal_ir(rng, fs, rng.uniform(300, 2000, 3), rng.uniform(0.002, 0.008, 3), dur=0.04))(contact)
        U = self.weather.wind(blk.tc)
        gust_gate = blk.up(_smoothstep((U / np.median(U) - rng.uniform(0.85, 1.1)) / 0.15))
        if gust_gate[keep_from:].max() < 0.3:  # always audible somewhere in the clip
            gust_gate = np.maximum(gust_gate, _bursts(rng, n, fs, keep_from, (1, 2), (1.0, 4.0), 0.3))
        return buzz * gust_gate


class Compressor(_Machine):
    def build(self):
        r, fs = self.r, self.fs
        self._motor_setup(poles=4, slip_nom=r.uniform(0.02, 0.045), vfd=False)
        self.op_spec = OpSpec(
            "dol",
            0.0,
            r.uniform(0.5, 0.8),
            r.uniform(0.1, 0.2),
            r.uniform(0.001, 0.003),
            r.uniform(0.02, 0.05),
            slip=0.04,
        )
        self.belt = r.uniform(2.0, 4.0)
        self.f_c = self.f_motor / self.belt
        self.n_cyl = int(r.integers(1, 4))
        self.cyl_off = (
            np.arange(self.n_cyl) / self.n_cyl if r.random() < 0.7 else np.array([0.0, 0.25, 0.5][: self.n_cyl])
        )
        self.a_so, self.a_sc = r.uniform(0.06, 0.14), r.uniform(0.5, 0.56)
        self.suc_ir = _modal_ir(r, fs, r.uniform(1500, 3500, 3), r.uniform(0.002, 0.006, 3), click=0.8, dur=0.04)
        self.dis_ir = _modal_ir(r, fs, r.uniform(2000, 5000, 3), r.uniform(0.002, 0.006, 3), click=0.8, dur=0.04)
        self.slap_ir = _modal_ir(r, fs, r.uniform(300, 900, 3), r.uniform(0.01, 0.025, 3), click=0.3, dur=0.12)
        self.bank = ImpactBank(
            {"suc": self.suc_ir, "dis": self.dis_ir, "slap": self.slap_ir},
            {k: self._key(k + "_ir") for k in ("suc", "dis", "slap")},
        )
        mo = _max_order(fs, self.f_c)
        k = np.arange(1, min(mo, 40) + 1)
        self.puls = Table(_table(k, np.exp(-k / r.uniform(3, 8)), rng=r))
        fi = r.uniform(200, 600)
        self.intake = Noise(
            self.rng,
            fs,
            lambda f: _band(f, fi, 1.0) * _lp(f, 1500) + 0.1 * _band(f, 3000, 1.0),
            key=self._key("intake"),
        )
        env = np.zeros(_TABLE_LEN)
        x = np.arange(_TABLE_LEN) / _TABLE_LEN
        for o in self.cyl_off:
            u = ((x - o - self.a_so) % 1.0) / (self.a_sc - self.a_so)
            env += np.where(u < 1, np.sin(np.pi * np.clip(u, 0, 1)) ** 2, 0.0)
        self.intake_env = Table(env / _rms(env))
        self.fw_blades = int(r.integers(6, 11))
        self.fw = Table(
            _pulse_table(
                np.arange(self.fw_blades) / self.fw_blades, [0.015] * self.fw_blades, np.ones(self.fw_blades), mo
            )
        )
        self.gains.update(
            suc=_g(r.uniform(-8, -2)),
            dis=1.0,
            slap=_g(r.uniform(-12, -4)),
            intake=_g(r.uniform(-8, -2)),
            puls=_g(r.uniform(-10, -2)),
            fw=_g(r.uniform(-16, -8)),
        )
        self.knock_modes = (r.uniform(400, 1600, 3), r.uniform(0.005, 0.015, 3))
        self.leak_fc = r.uniform(2500, 6000)

    def _rate_norm(self, per_rev: float) -> float:
        return math.sqrt(self.fs / (self.f_c * per_rev))

    def render(self, blk: Block) -> np.ndarray:
        g, n, fs = self.gains, blk.n, self.fs
        if not hasattr(self, "osc"):
            self.osc = Osc(self.f_c, self.op.S, self.rng.random())
            if self.stream:
                self.loaded = Schedule.renewal(self.rng, self.total_s, 150, 70, 0.7, ramp_s=0.3)
                self.drains = EventLayer(fs, _event_times(self.rng, 0, self.total_s, 1 / 900.0), self.rng, _drain_blast)
            else:
                self.loaded = Schedule.for_clip(self.rng, blk.tc[0], blk.n / fs, 0.85, p_change=0.1, ramp_s=0.3)
                self.drains = None
                self.drain_p = self.rng.random() < 0.08
            self.p0 = self.rng.uniform(0.3, 0.7)
            self.p_slow = Slow(self.rng, 20, 300, 4, 0.5)
        if self.drains is None:
            self.drains = EventLayer(
                fs,
                [blk.t0 / fs + self.rng.uniform(0.1, 0.9) * blk.n / fs] if self.drain_p else [],
                self.rng,
                _drain_blast,
            )
        ph, before = self.osc.block(blk)
        load_c = self.op.load(blk.tc)
        act_c = self.loaded(blk.tc)
        press_c = np.clip(self.p0 + 0.25 * self.p_slow(blk.tc) + 0.6 * (load_c - self.op_spec.load_nom), 0, 1)
        self.last = {"ph": ph, "before": before, "act_c": act_c, "press_c": press_c}
        act = blk.up(act_c)
        out = self._motor_render(blk, ph * self.belt, 0.3 + 0.7 * act_c * load_c)
        suc_i, suc_a, dis_i, dis_a, slap_i, slap_a = [], [], [], [], [], []
        a_do = blk.up(0.72 + 0.16 * press_c)
        for o in self.cyl_off:
            for angle, lst_i, lst_a, amp in ((self.a_so, suc_i, suc_a, 1.0), (self.a_sc, suc_i, suc_a, 0.6)):
                idx, _ = _crossings(ph, before, 1.0, o + angle)
                lst_i.append(idx)
                lst_a.append(amp * (0.25 + 0.75 * act[idx]) * self.rng.lognormal(0, 0.15, len(idx)))
            idx, _ = _crossings(ph, before, 1.0, o + a_do)
            dis_i.append(idx)
            dis_a.append((0.5 + 0.8 * blk.up(press_c)[idx]) * act[idx] * self.rng.lognormal(0, 0.15, len(idx)))
            idx2, _ = _crossings(ph, before, 1.0, o + 1.0 - 1e-9)  # discharge close at top dead centre
            dis_i.append(idx2)
            dis_a.append(0.5 * act[idx2] * self.rng.lognormal(0, 0.15, len(idx2)))
            for ang in (0.0, 0.5):
                idx3, _ = _crossings(ph, before, 1.0, o + ang + 0.02)
                slap_i.append(idx3)
                slap_a.append(self.rng.lognormal(0, 0.2, len(idx3)))
        nc = self.n_cyl
        out += self.bank(
            n,
            {
                "suc": (np.concatenate(suc_i), np.concatenate(suc_a) * (g["suc"] * self._rate_norm(1.4 * nc))),
                "dis": (np.concatenate(dis_i), np.concatenate(dis_a) * (g["dis"] * self._rate_norm(1.5 * nc))),
                "slap": (np.concatenate(slap_i), np.concatenate(slap_a) * (g["slap"] * self._rate_norm(2.0 * nc))),
            },
        )
        out += g["intake"] * self.intake(n) * self.intake_env(ph) * (0.3 + 0.7 * act)
        out += g["puls"] * self.puls(ph) * (0.3 + 0.7 * act)
        out += g["fw"] * self.fw(ph)
        out += 0.6 * self.drains(blk)
        return out

    def fault_valve_flutter(self, blk, rng, keep_from):
        n, fs = blk.n, self.fs
        ph, before = self.last["ph"], self.last["before"]
        o = self.cyl_off[int(rng.integers(0, self.n_cyl))]
        which = rng.random() < 0.6
        angle = blk.up(0.72 + 0.16 * self.last["press_c"]) if which else self.a_so
        idx, _ = _crossings(ph, before, 1.0, o + angle)
        nb = int(rng.integers(3, 11))
        period = rng.uniform(1 / 500, 1 / 150)
        ii, aa = [], []
        act = blk.up(self.last["act_c"])
        for j in range(1, nb + 1):
            ii.append(idx + int(j * period * fs) + (rng.normal(0, 0.1 * period, len(idx)) * fs).astype(np.int64))
            aa.append(0.65**j * (0.3 + 0.7 * act[idx]) * rng.lognormal(0, 0.3, len(idx)))
        return Impacts(self.dis_ir if which else self.suc_ir)(n, np.concatenate(ii), np.concatenate(aa))

    def fault_knock(self, blk, rng, keep_from):
        n, fs = blk.n, self.fs
        ph, before = self.last["ph"], self.last["before"]
        o = self.cyl_off[int(rng.integers(0, self.n_cyl))]
        idx, _ = _crossings(ph, before, 1.0, o + rng.uniform(-0.03, 0.05))
        p = rng.uniform(0.7, 1.0)
        a = (rng.random(len(idx)) < p) * rng.lognormal(0, 0.35, len(idx))
        idx = idx + (rng.normal(0, 0.0015, len(idx)) * fs).astype(np.int64)
        ir = _modal_ir(rng, fs, self.knock_modes[0], self.knock_modes[1], click=1.5, dur=0.08)
        return Impacts(ir)(n, idx, a)

    def fault_air_leak(self, blk, rng, keep_from):
        fc = self.leak_fc * rng.uniform(0.9, 1.1)
        hiss = Noise(rng, self.fs, lambda f: _band(f, fc, 0.9) * _hp(f, 1200))(blk.n)
        return hiss * (1 + 0.15 * _sin_cyc(self.last["ph"] + 0.25)) * blk.up(np.sqrt(0.3 + self.last["press_c"]))


def _drain_blast(rng, fs):
    """Automatic condensate drain: a short blast of compressed air and water (benign)."""
    d = rng.uniform(0.3, 1.5)
    n = int(d * fs)
    t = np.arange(n) / fs
    env = _smoothstep(t / 0.02) * np.exp(-t / (d * 0.6))
    nz = StreamFIR(_fir(fs, 256, lambda f: _band(f, rng.uniform(1500, 4000), 1.2)))(rng.standard_normal(n))
    return nz * env * rng.uniform(0.5, 2.0)


_MACHINES = {"conveyor": Conveyor, "fan": Fan, "pump": Pump, "tower": Tower, "compressor": Compressor}


# ----------------------------------------------------------------------------------------------
# Backgrounds
# ----------------------------------------------------------------------------------------------


def _forklift(rng, fs):
    d = rng.uniform(4, 12)
    n = int(d * fs)
    t = np.arange(n) / fs
    tc = d * rng.uniform(0.35, 0.65)
    env = 1.0 / (1.0 + ((t - tc) / (d * 0.18)) ** 2)
    electric = rng.random() < 0.5
    if electric:
        f_wh = rng.uniform(400, 1500)
        ph = f_wh * (t + 0.05 * np.sin(_TWO_PI * 0.3 * t) / (_TWO_PI * 0.3))
        src = 0.3 * np.sin(_TWO_PI * ph)
        nz = StreamFIR(_fir(fs, 256, lambda f: _band(f, 600, 1.5)))(rng.standard_normal(n))
        src += nz
    else:
        f_fire = rng.uniform(25, 60)
        mo = _max_order(fs, f_fire)
        k = np.arange(1, min(mo, 60) + 1)
        tab = Table(_table(k, np.exp(-k / rng.uniform(4, 12)), rng=rng))
        ph = f_fire * (t + 0.08 * (1 - np.cos(_TWO_PI * t / d)) * d / _TWO_PI)
        nz = StreamFIR(_fir(fs, 256, lambda f: _band(f, 250, 1.5)))(rng.standard_normal(n))
        src = tab(ph) + 0.7 * nz
    if rng.random() < 0.5:  # reversing beeper: ~1 kHz square-ish tone, 1-2 Hz on/off
        fb, rate = rng.uniform(950, 1300), rng.uniform(1.0, 2.0)
        on = (np.sin(_TWO_PI * rate * t) > 0).astype(float)
        on = np.convolve(on, np.ones(64) / 64, mode="same")
        beep = sum(np.sin(_TWO_PI * k * fb * t) / k for k in (1, 3, 5) if k * fb < 0.45 * fs)
        src = src + 0.6 * beep * on
    return src * env * rng.uniform(0.7, 1.5)


def _hammering(rng, fs):
    k = int(rng.integers(1, 10))
    gap = rng.uniform(0.25, 1.0)
    freqs = rng.uniform(400, min(6000, 0.44 * fs), int(rng.integers(3, 7)))
    taus = rng.uniform(0.02, 0.3, len(freqs))
    ir = _modal_ir(rng, fs, freqs, taus, click=1.0, dur=float(min(1.2, 4 * taus.max())))
    if rng.random() < 0.3:  # pallet / crate dropped: a dull thud instead
        ir = _modal_ir(rng, fs, rng.uniform(60, 250, 3), rng.uniform(0.01, 0.05, 3), click=1.0, dur=0.3)
        k = 1
    n = int((k * gap + len(ir) / fs + 0.1) * fs)
    x = np.zeros(n)
    for j in range(k):
        s = int((j * gap + rng.normal(0, 0.03)) * fs)
        s = min(max(s, 0), n - len(ir))
        x[s : s + len(ir)] += ir * rng.lognormal(0, 0.3)
    return x * math.sqrt(fs) * 0.05 * rng.uniform(0.5, 2.0)


def _blowoff(rng, fs):
    d = rng.uniform(0.3, 2.0)
    n = int(d * fs)
    t = np.arange(n) / fs
    env = _smoothstep(t / 0.03) * _smoothstep((d - t) / 0.05)
    fc = rng.uniform(1500, 5000)
    return StreamFIR(_fir(fs, 256, lambda f: _band(f, fc, 1.3)))(rng.standard_normal(n)) * env * rng.uniform(0.5, 1.5)


def _bird_song(rng, fs):
    k = int(rng.integers(2, 10))
    parts, t_now = [], 0.0
    f0 = rng.uniform(2000, min(7000, 0.42 * fs))
    for _ in range(k):
        dn = rng.uniform(0.04, 0.25)
        n = int(dn * fs)
        t = np.arange(n) / fs
        sweep = rng.uniform(-0.4, 0.4)
        vib = rng.uniform(0, 0.08)
        fv = rng.uniform(20, 80)
        f = f0 * (1 + sweep * t / dn) * (1 + vib * np.sin(_TWO_PI * fv * t))
        f = np.minimum(f, 0.44 * fs)
        ph = np.cumsum(f) / fs
        note = (np.sin(_TWO_PI * ph) + 0.15 * np.sin(2 * _TWO_PI * ph) * (2 * f < 0.45 * fs)) * np.sin(
            np.pi * t / dn
        ) ** 2
        parts.append((int(t_now * fs), note))
        t_now += dn + rng.uniform(0.02, 0.2)
    out = np.zeros(int(t_now * fs) + 10)
    for s, w in parts:
        out[s : s + len(w)] += w
    return out * rng.uniform(0.3, 1.2)


def _aircraft(rng, fs):
    d = rng.uniform(20, 40)
    n = int(d * fs)
    t = np.arange(n) / fs
    env = 1.0 / (1.0 + ((t - d / 2) / (d * 0.2)) ** 2)
    nz = StreamFIR(_fir(fs, 512, lambda f: _band(f, 250, 1.5)))(rng.standard_normal(n))
    return nz * env


class _Babble:
    """Several talkers, unintelligible by construction: per talker a glottal harmonic series whose harmonics
    are weighted by two vowel formant envelopes (open /a/-like and closed /i/-like, blended by a random
    articulation process), a pitch contour, syllabic envelopes (3.5-6 Hz) and talk spurts, plus fricative
    noise between syllables."""

    _A = ((700, 0.25, 1.0), (1200, 0.2, 0.7), (2600, 0.15, 0.3))
    _I = ((300, 0.3, 1.0), (2200, 0.15, 0.5), (3000, 0.15, 0.4))

    def __init__(self, rng: np.random.Generator, fs: int, n_talkers: int):
        self.rng, self.fs = rng, fs
        self.talkers = []
        for _ in range(n_talkers):
            f0 = rng.uniform(95, 140) if rng.random() < 0.5 else rng.uniform(170, 250)
            mo = min(_max_order(fs, f0 * 1.3), int(4500 / f0))
            k = np.arange(1, mo + 1)
            fk = k * f0 * rng.uniform(0.97, 1.03)
            tabs = []
            for formants in (self._A, self._I):
                env = sum(a * _band(fk, fc * rng.uniform(0.9, 1.1), w) for fc, w, a in formants) + 0.03
                tabs.append(_table(k, env * k**-0.5, np.zeros(len(k))))
            self.talkers.append(
                dict(
                    f0=f0,
                    pitch=Slow(rng, 0.3, 3.0, 4, 0.3),
                    A=Table(tabs[0]),
                    dI=Table(tabs[1] - tabs[0]),
                    syl=rng.uniform(3.5, 6.0),
                    syl_slow=Slow(rng, 1.0, 8.0, 3, 0.3),
                    spurt=Slow(rng, 2.0, 15.0, 3, 0.3),
                    vowel=Slow(rng, 0.12, 0.5, 3, 0.0),
                    p0=rng.random(),
                    thr=rng.uniform(-0.6, 0.2),
                )
            )
        self.fric = Noise(
            rng, fs, lambda f: _band(f, 4500, 0.5) + 0.2 * _band(f, 2000, 0.5), key=("babble_fricatives",)
        )

    def __call__(self, blk: Block) -> np.ndarray:
        n = blk.n
        out = np.zeros(n, dtype=np.float32)
        un = np.zeros(blk.tc.shape)
        for tk in self.talkers:
            ph = tk["f0"] * (blk.times() + 0.12 * blk.up64(tk["pitch"].integral(blk.tc)))
            sph = tk["syl"] * (blk.tc + 0.2 * tk["syl_slow"].integral(blk.tc)) + tk["p0"]
            spurt = _smoothstep((tk["spurt"](blk.tc) - tk["thr"]) / 0.4)
            env = np.maximum(np.sin(_TWO_PI * (sph % 1.0)), 0) ** 2 * spurt
            w = 0.5 + 0.5 * np.tanh(2 * tk["vowel"](blk.tc))
            i, f = Table.index(ph)
            x = tk["A"].at(i, f) + tk["dI"].at(i, f) * blk.up(w)
            out += x * blk.up(env)
            un += 0.35 * np.maximum(-np.sin(_TWO_PI * (sph % 1.0)), 0) ** 6 * spurt
        out += self.fric(n) * blk.up(un)
        return out * (1.6 / math.sqrt(len(self.talkers)))


class _Background:
    """Every non-machine source of an individual's site for one clip or stream, in two path groups."""

    def __init__(
        self,
        ind: Individual,
        rng: np.random.Generator,
        stream: bool,
        t_start: float,
        dur: float,
        weather: Weather | None,
    ):
        self.ind, self.fs, self.rng, self.weather = ind, ind.fs, rng, weather
        fs = self.fs
        self.layers: list[tuple[str, str, float, Schedule, Callable]] = []  # (name, group, gain, schedule, render)
        outdoor = ind.type == "tower"
        share = ind.bg_share
        site = ind.rng("bg_site")  # the site's own installations (its HVAC, neighbouring machines, road)
        key = lambda name: (ind.type, ind.id, ind.seed, "bg", name)  # noqa: E731
        if not outdoor:
            vent_f = site.uniform(80, 250)
            fv = site.uniform(60, 150)
            vent = Noise(
                rng,
                fs,
                lambda f: _tilt(f, 100, -3.0) * _hp(f, 30) + 1.5 * _band(f, fv, 0.5) + 0.3 * _band(f, 2000, 1.0),
                key=key("vent"),
            )
            ph0 = rng.random()
            self._add(
                "ventilation",
                "far",
                _g(rng.uniform(-4, 2)),
                Schedule.always(),
                lambda blk: vent(blk.n) + 0.15 * _sin_cyc(vent_f * blk.times() + ph0),
            )
            which = int(rng.integers(0, 3))  # one of the site's three neighbouring machines
            om = _OtherMachine(_rng(ind.seed, ind.type, ind.id, "other", which), rng, fs, key(f"other{which}"))
            sch = (
                Schedule.renewal(rng, dur, 900, 400, 0.6, 4.0)
                if stream
                else Schedule.for_clip(rng, t_start, dur, 0.5 + 0.4 * share[0])
            )
            self._add("other_machine", "far", _g(rng.uniform(-6, 6)), sch, om)
            n_talk = int(rng.integers(2, 4))
            sch = (
                Schedule.renewal(rng, dur, 300, 900, 0.3, 3.0)
                if stream
                else Schedule.for_clip(rng, t_start, dur, 0.15 + 0.4 * share[1], 0.3)
            )
            g_babble = _g(rng.uniform(-8, 2))
            if len(sch.iv):
                self._add("babble", "far", g_babble, sch, _Babble(rng, fs, n_talk))
            ev = [
                ("forklift", _forklift, 1 / 240.0, 0.12 + 0.3 * share[2], (-4, 6)),
                ("workshop", _hammering, 1 / 120.0, 0.12 + 0.4 * share[3], (-6, 6)),
                ("blowoff", _blowoff, 1 / 900.0, 0.06, (-8, 2)),
            ]
        else:
            ev = []
            w = weather
            wind_lo = Noise(rng, fs, lambda f: _tilt(f, 30, -6.0) * _hp(f, 8, 1) * _lp(f, 400, 1), key=key("wind"))
            rustle = Noise(rng, fs, lambda f: _band(f, 3000, 1.0) * _hp(f, 600), key=key("rustle"))
            foliage = site.uniform(0.0, 1.0) * rng.uniform(0.5, 1.0)  # trees near the site; leaves by season

            def wind(blk):
                U = w.wind(blk.tc)
                return wind_lo(blk.n) * blk.up((U / 5.0) ** 2) + foliage * rustle(blk.n) * blk.up((U / 5.0) ** 1.5)

            self._add("wind", "near", _g(rng.uniform(-4, 4)), Schedule.always(), wind)
            self._add("rain", "near", _g(rng.uniform(-2, 6)), Schedule.always(), _Rain(rng, fs, w, key("rain")))
            f_tr = site.uniform(60, 120)
            tr = Noise(rng, fs, lambda f: _band(f, f_tr, 1.2) + 0.4 * _band(f, 1000, 0.6), key=key("traffic"))
            swell = Slow(rng, 8, 60, 4, 0.3)
            self._add(
                "traffic",
                "far",
                _g(rng.uniform(-4, 6)),
                (
                    Schedule.renewal(rng, dur, 2400, 600, 0.8, 30)
                    if stream
                    else Schedule.for_clip(rng, t_start, dur, 0.75, 0.1)
                ),
                lambda blk: tr(blk.n) * blk.up(np.exp(0.5 * swell(blk.tc))),
            )
            cr = _Crickets(rng, fs)
            self._add(
                "crickets",
                "near",
                _g(rng.uniform(-14, -4)),
                (
                    Schedule.renewal(rng, dur, 3600, 3600, 0.3, 60)
                    if stream
                    else Schedule.for_clip(rng, t_start, dur, 0.2, 0.0)
                ),
                cr,
            )
            ev = [("birds", _bird_song, 1 / 60.0, 0.4, (-8, 4)), ("aircraft", _aircraft, 1 / 1800.0, 0.04, (-6, 4))]
        for name, fn, rate, p_clip, (lo, hi) in ev:
            times = _event_times(rng, t_start, dur, rate) if stream else _event_times(rng, t_start, dur, 0, p_clip)
            layer = EventLayer(fs, times, rng, fn)
            group = "near" if name == "birds" and rng.random() < 0.3 else "far"
            self._add(name, group, _g(rng.uniform(lo, hi)), Schedule.always(), layer)

    def _add(self, name, group, gain, sched, fn):
        self.layers.append((name, group, gain, sched, fn))

    def render(self, blk: Block, all_on: bool = False) -> dict[str, np.ndarray]:
        """The near and far groups for one block; all_on renders every continuous layer fully on, no events."""
        out = {"near": np.zeros(blk.n), "far": np.zeros(blk.n)}
        for _name, group, gain, sched, fn in self.layers:
            if all_on:
                if isinstance(fn, EventLayer):
                    continue
                a = np.ones(len(blk.tc))
            else:
                a = sched(blk.tc)
            if a.max() <= 0:
                if isinstance(fn, EventLayer):
                    fn(blk)  # keeps event bookkeeping consistent
                continue
            x = fn(blk)
            out[group] += gain * x * blk.up(a)
        return out


class _OtherMachine:
    """A neighbouring machine of the site: shaft-harmonic hum, broadband noise, sometimes a press stroke."""

    def __init__(self, rng, noise_rng, fs, key):
        self.f = rng.uniform(10, 50)
        k = np.arange(1, min(_max_order(fs, self.f), int(1500 / self.f)) + 1)
        self.tab = Table(_table(k, np.exp(-k / rng.uniform(2, 10)) * rng.uniform(0.2, 1.0, len(k)), rng=rng))
        fc = rng.uniform(200, 2000)
        self.nz = Noise(noise_rng, fs, lambda f: _band(f, fc, 1.2), key=key)
        self.ph0 = noise_rng.random()
        self.mix = rng.uniform(0.2, 0.8)
        self.press = rng.random() < 0.25
        if self.press:
            self.press_rate = rng.uniform(0.4, 1.5)
            self.press = Impacts(
                _modal_ir(rng, fs, rng.uniform(80, 600, 4), rng.uniform(0.01, 0.06, 4), click=1.0, dur=0.3)
            )

    def __call__(self, blk):
        x = self.mix * self.tab(self.f * blk.times() + self.ph0) + (1 - self.mix) * self.nz(blk.n)
        if self.press:
            idx, _ = _crossings(self.press_rate * blk.times(), self.press_rate * blk.t_before, 1.0, self.ph0)
            x += self.press(blk.n, idx, math.sqrt(blk.fs / self.press_rate) * 0.7)
        return x


class _Rain:
    """Drops: Poisson impulses through three drop responses (bubble ring, surface click, thud) + far hiss."""

    def __init__(self, rng, fs, weather, key=None):
        self.rng, self.fs, self.w = rng, fs, weather
        self.irs = [
            StreamFIR(
                _modal_ir(rng, fs, rng.uniform(1500, min(9000, 0.44 * fs), 2), [0.003, 0.002], click=0.3, dur=0.015)
            ),
            StreamFIR(_modal_ir(rng, fs, rng.uniform(2500, min(6000, 0.44 * fs), 1), [0.0004], click=2.0, dur=0.004)),
            StreamFIR(_modal_ir(rng, fs, rng.uniform(300, 1500, 2), [0.004, 0.003], click=0.5, dur=0.02)),
        ]
        self.hiss = Noise(rng, fs, lambda f: _band(f, 4000, 1.0), key=key)

    def __call__(self, blk):
        r = self.w.rain_rate(blk.tc)
        if r.max() <= 0:
            return np.zeros(blk.n)
        rate = blk.up(r) * 1500.0
        out = np.zeros(blk.n)
        for f in self.irs:
            idx = _poisson_idx(self.rng, blk.n, rate / 3, self.fs, rate_max=500.0)
            a = self.rng.pareto(2.5, len(idx)) * self.rng.choice([-1, 1], len(idx)) * math.sqrt(self.fs / 500.0)
            out += f(_impulses(blk.n, idx, a))
        return out + self.hiss(blk.n) * blk.up(r) * 0.7


class _Crickets:
    def __init__(self, rng, fs):
        self.fc = min(rng.uniform(3500, 5500), 0.42 * fs)
        self.pulse = rng.uniform(25, 45)
        self.chirp = rng.uniform(0.8, 2.5)
        self.n_p = int(rng.integers(3, 6))
        self.p0 = rng.random()

    def __call__(self, blk):
        t = blk.times()
        cph = (self.chirp * t + self.p0) % 1.0
        in_chirp = cph < self.n_p * self.chirp / self.pulse
        env = np.sin(np.pi * ((self.pulse * t) % 1.0)) ** 4 * in_chirp
        return _sin_cyc(self.fc * t) * env * 2.0


# ----------------------------------------------------------------------------------------------
# Rendering clips and streams
# ----------------------------------------------------------------------------------------------


def _soft_limit(x: np.ndarray, knee: float = 0.6, ceiling: float = 0.97) -> np.ndarray:
    """Identity below ``knee``; above it a tanh shoulder that never exceeds ``ceiling``."""
    a = np.abs(x)
    over = a > knee
    if not np.any(over):
        return x
    y = x.copy()
    span = ceiling - knee
    y[over] = np.sign(x[over]) * (knee + span * np.tanh((a[over] - knee) / span))
    return y


@functools.lru_cache(maxsize=48)
def _bg_ir(ind: Individual, temp_c: float) -> np.ndarray:
    h = ind.path.ir("bg", temp_c, np.zeros(3))
    h.setflags(write=False)
    return h


class _Chain:
    """Paths, microphone and analog chain of one clip or stream: turns dry sources into the recorded signal."""

    def __init__(self, ind: Individual, rng: np.random.Generator, stream: bool):
        self.ind, self.fs, self.rng = ind, ind.fs, rng
        mic = ind.mic
        self.hp = StreamSOS(sps.butter(2, mic.hp_hz, btype="highpass", fs=self.fs, output="sos"))
        ps_ = mic.pink_share
        self.self_noise = Noise(
            rng,
            self.fs,
            lambda f: np.sqrt((1 - ps_) + ps_ * 200.0 / np.maximum(f, 5.0)),
            key=(ind.type, ind.id, ind.seed, "self_noise"),
        )
        self.hum_table = Table(_table(mic.hum_orders, mic.hum_amps, np.arange(len(mic.hum_orders)) * 0.6))
        self.temp_slow = Slow(rng, 1200, 7200, 3, 0.5) if stream else None
        self.temp_off = rng.normal(0, 1.5)
        self.gain_slow = Slow(rng, 1200, 10800, 3, 0.5) if stream else None
        self.gain_off = rng.normal(0, 0.3) if not stream else 0.0
        self.jit = rng.normal(0, 0.02, 3)
        self.mains = Mains(rng, ind.mains)

    def temp(self, t: float) -> float:
        v = self.ind.temp_c + self.temp_off
        if self.temp_slow is not None:
            v += 2.0 * float(self.temp_slow(t)[0])
        return v

    def irs(self, t: float, rng: np.random.Generator):
        tc = self.temp(t)
        jit = self.jit + (rng.normal(0, 0.005, 3) if self.temp_slow is not None else 0.0)
        path = self.ind.path
        h_m = path.ir("machine", tc, jit)
        tq = round(tc * 2.0) / 2.0  # the far background's path: 0.5 degC steps are plenty
        self.bg_key = (self.ind.type, self.ind.id, self.ind.seed, self.ind.fs, "bg_ir", tq)
        return h_m, _bg_ir(self.ind, tq)

    def gain_db(self, tc: np.ndarray) -> np.ndarray:
        v = self.ind.level_dbfs + self.gain_off + np.zeros(len(tc))
        if self.gain_slow is not None:
            v = v + 0.75 * self.gain_slow(tc)
        return v

    def electronics(self, blk: Block) -> np.ndarray:
        """Microphone and preamp self-noise (white with a 1/f rise below ~200 Hz) and, for some, mains pick-up."""
        mic = self.ind.mic
        x = _g(mic.noise_dbfs) * self.self_noise(blk.n)
        if mic.hum_dbfs is not None:
            ph, _ = self.mains.osc().block(blk)
            x += _g(mic.hum_dbfs) * self.hum_table(ph)
        return x


def _check_fault(machine_type: str, fault: str | None, fault_level_db):
    if fault is None or fault == "":
        return None
    if fault not in FAULTS_BY_TYPE[machine_type]:
        raise ValueError(
            f"fault {fault!r} is not a {machine_type} fault; choose from {', '.join(FAULTS_BY_TYPE[machine_type])}"
        )
    if fault_level_db is None or not np.isfinite(float(fault_level_db)):
        raise ValueError(f"fault {fault!r} needs a finite fault_level_db")
    return fault


def render_clip(
    machine_type: str,
    machine_id: int,
    clip_seed: int,
    seconds: float = 10.0,
    fault: str | None = None,
    fault_level_db: float | None = None,
    snr_db: float = 6.0,
    sample_rate_hz: int = 16000,
) -> np.ndarray:
    """Render one clip (float64, full scale 1.0) exactly as make_dataset does.

    The dataset seed is ``clip_seed // 10**9`` (it fixes the individual machine). With the same clip seed,
    the normal and the anomalous rendering share every normal sound; the anomalous one adds the fault.
    """
    _check_type(machine_type)
    fault = _check_fault(machine_type, fault, fault_level_db)
    fs = int(sample_rate_hz)
    ind = _individual(machine_type, int(machine_id), int(clip_seed) // 10**9, fs)
    n = int(round(seconds * fs))
    n_pre = min(int(round(PREROLL_S * fs)), ind.path.length + int(0.1 * fs))  # covers the longest response
    r_clip = _rng(clip_seed, "clip")
    t0 = int(r_clip.integers(10 * fs, 86400 * fs))  # time of day: slow processes are at a random point
    blk = Block(t0 - n_pre, n_pre + n, fs)
    weather = Weather(_rng(clip_seed, "weather"), False, seconds) if machine_type == "tower" else None
    param = None
    if fault in PARAMETRIC_FAULTS:
        param = (fault, float(fault_level_db), -1 if _rng(clip_seed, "fault", "sign").random() < 0.6 else 1)
    mach = _MACHINES[machine_type](ind, _rng(clip_seed, "machine"), False, weather, seconds, param)
    dry = mach.render(blk)
    dry_f = None
    if fault is not None and fault not in PARAMETRIC_FAULTS:
        dry_f = mach.fault(fault, blk, _rng(clip_seed, "fault"), n_pre)
        if _rms(dry_f[n_pre:]) < 1e-9:
            raise RuntimeError(f"{machine_type} fault {fault} produced no sound in clip seed {clip_seed}")
        # anchor the fault level to the machine's normal sound (without the parametric part: there is none here)
        dry_f *= _g(fault_level_db) * _rms(dry[n_pre:]) / _rms(dry_f[n_pre:])
    chain = _Chain(ind, _rng(clip_seed, "chain"), False)
    h_m, h_b = chain.irs(blk.tc[0], _rng(clip_seed, "path"))
    # level calibrated at the microphone: the path colours the sound but does not set its level (a tone in a
    # room-mode notch would otherwise make whole clips 10 dB quieter than their neighbours)
    wet = StreamFIR(h_m)(dry)
    m_ref = _rms(wet[n_pre:]) / max(_rms(dry[n_pre:]), 1e-12)
    wet /= m_ref
    if dry_f is not None:
        wet_f = StreamFIR(h_m)(dry_f) / m_ref
    bg = _Background(ind, _rng(clip_seed, "bg"), False, blk.tc[0] + n_pre / fs, seconds, weather)
    groups = bg.render(blk)
    wet_b = StreamFIR(h_b, chain.bg_key)(groups["far"])
    if np.any(groups["near"]):
        wet_b += StreamFIR(ind.mic.fir, (ind.type, ind.id, ind.seed, fs, "mic_fir"))(groups["near"])
    scale = _rms(wet[n_pre:]) / (_rms(wet_b[n_pre:]) * _g(snr_db))
    total = wet + scale * wet_b
    if dry_f is not None:
        total += wet_f
    total *= _g(chain.gain_db(blk.tc[:1])[0])
    total = chain.hp(total + chain.electronics(blk))
    return _soft_limit(total[n_pre:])


def render_clip_from_row(row: dict, sample_rate_hz: int = 16000) -> np.ndarray:
    """Re-render a clip from its manifest row (a dict as read by csv.DictReader)."""
    if row["split"] == "long":
        raise ValueError("long streams are re-rendered with render_stream, from the start")
    level = float(row["fault_level_db"]) if row.get("fault") else None
    return render_clip(
        row["machine_type"],
        int(row["machine_id"]),
        int(row["seed"]),
        float(row["seconds"]),
        row.get("fault") or None,
        level,
        float(row["snr_db"]),
        sample_rate_hz,
    )


def render_stream(
    machine_type: str,
    machine_id: int,
    stream_seed: int,
    total_s: float,
    snr_db_range=(0.0, 12.0),
    sample_rate_hz: int = 16000,
    block_s: float | None = None,
):
    """Yield (samples, machine_power, background_power) per block of a long normal stream (continuous).

    Blocks are ``block_s`` seconds (default LONG_BLOCK_S); filter memories, reverberation tails, noise
    overlaps and event carry-overs continue from block to block, so the concatenation is one recording.
    """
    _check_type(machine_type)
    block_s = LONG_BLOCK_S if block_s is None else float(block_s)
    fs = int(sample_rate_hz)
    ind = _individual(machine_type, int(machine_id), int(stream_seed) // 10**9, fs)
    weather = Weather(_rng(stream_seed, "weather"), True, total_s) if machine_type == "tower" else None
    mach = _MACHINES[machine_type](ind, _rng(stream_seed, "machine"), True, weather, total_s, None)
    chain = _Chain(ind, _rng(stream_seed, "chain"), True)
    bg = _Background(ind, _rng(stream_seed, "bg"), True, 0.0, total_s, weather)
    path_rng = _rng(stream_seed, "path")
    h_m, h_b = chain.irs(0.0, path_rng)
    fir_m, fir_b, fir_n = StreamFIR(h_m), StreamFIR(h_b), StreamFIR(ind.mic.fir)
    snr_slow = Slow(_rng(stream_seed, "snr"), 300, 3600, 4, 0.5)
    lo, hi = snr_db_range
    n_block = int(round(block_s * fs))
    n_total = int(round(total_s * fs))
    xfade = int(0.5 * fs)
    path_every = max(1, int(round(60.0 / block_s)))  # the path (temperature) is updated once a minute
    # reference level of the background: a probe (same site and seed) with every continuous layer on, so the
    # nominal SNR is the SNR when everything is running; layers that are off only raise the SNR
    probe_bg = _Background(ind, _rng(stream_seed, "bg"), True, 0.0, total_s, weather)
    probe_blk = Block(0, min(n_block, n_total), fs)
    pg = probe_bg.render(probe_blk, all_on=True)
    probe = StreamFIR(h_b)(pg["far"]) + StreamFIR(ind.mic.fir)(pg["near"])
    t0, k, bg_ref, m_ref = 0, 0, None, None
    while t0 < n_total:
        n = min(n_block, n_total - t0)
        blk = Block(t0, n, fs)
        dry = mach.render(blk)
        groups = bg.render(blk)
        if k == 0:
            wet, wet_b = fir_m(dry), fir_b(groups["far"])
        elif k % path_every == 0:
            h_m, h_b = chain.irs(blk.tc[0], path_rng)
            wet, wet_b = fir_m.swap(h_m, dry, xfade), fir_b.swap(h_b, groups["far"], xfade)
        else:
            wet, wet_b = fir_m(dry), fir_b(groups["far"])
        wet_b = wet_b + fir_n(groups["near"])
        if k == 0:
            # the machine level is calibrated at the microphone on the first block (as for clips); the
            # background follows its own schedules (it comes and goes) under the slowly wandering nominal SNR
            m_ref = _rms(wet) / max(_rms(dry), 1e-12)
            bg_ref = _rms(probe[len(probe) // 5 :]) / m_ref
        snr_c = np.clip((lo + hi) / 2 + 0.3 * (hi - lo) * snr_slow(blk.tc), lo, hi)
        bpart = wet_b * blk.up(_g(-snr_c) / bg_ref) / m_ref
        wet = wet / m_ref
        gain = blk.up(_g(chain.gain_db(blk.tc)))
        total = gain * (wet + bpart)
        pm, pb = float(np.mean(np.square(wet))), float(np.mean(np.square(bpart)))
        total = chain.hp(total + chain.electronics(blk))
        yield _soft_limit(total), pm, pb
        t0 += n
        k += 1


# ----------------------------------------------------------------------------------------------
# Dataset
# ----------------------------------------------------------------------------------------------


def clip_seed(dataset_seed: int, machine_type: str, machine_id: int, split: str, index: int) -> int:
    """Readable per-clip seed: dataset seed * 1e9 + type * 1e8 + id * 1e6 + split * 1e5 + index."""
    return (
        int(dataset_seed) * 10**9
        + MACHINE_TYPES.index(machine_type) * 10**8
        + int(machine_id) * 10**6
        + _SPLIT_CODE[split] * 10**5
        + int(index)
    )


def _check_type(machine_type: str) -> None:
    if machine_type not in MACHINE_TYPES:
        raise ValueError(f"unknown machine type {machine_type!r}; choose from {', '.join(MACHINE_TYPES)}")


def _validate(
    machine_types,
    machine_ids,
    n_train,
    n_test_normal,
    n_test_anomaly,
    seconds,
    snr_db_range,
    long_minutes,
    seed,
    sample_rate_hz,
):
    if isinstance(machine_types, str):
        machine_types = tuple(t.strip() for t in machine_types.split(",") if t.strip())
    machine_types = tuple(machine_types)
    if not machine_types:
        raise ValueError("machine_types is empty; give at least one of " + ", ".join(MACHINE_TYPES))
    for t in machine_types:
        _check_type(t)
    if len(set(machine_types)) != len(machine_types):
        raise ValueError(f"machine_types has duplicates: {', '.join(machine_types)}")
    ids = tuple(machine_ids)
    if not ids:
        raise ValueError("machine_ids is empty; give at least one id (0 to 99)")
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= int(i) <= 99:
            raise ValueError(f"machine id {i!r} must be an integer from 0 to 99")
    if len(set(ids)) != len(ids):
        raise ValueError("machine_ids has duplicates")
    for name, v, lo in (
        ("n_train", n_train, 1),
        ("n_test_normal", n_test_normal, 0),
        ("n_test_anomaly", n_test_anomaly, 0),
    ):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= int(v) < 10**5:
            raise ValueError(f"{name} must be an integer from {lo} to 99999, got {v!r}")
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or not 0.5 <= float(seconds) <= 600:
        raise ValueError(f"seconds must be a clip length from 0.5 to 600 s, got {seconds!r}")
    try:
        lo, hi = (float(v) for v in snr_db_range)
    except (TypeError, ValueError):
        raise ValueError(f"snr_db_range must be two numbers (low, high) in dB, got {snr_db_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi or lo < -30 or hi > 60:
        raise ValueError(f"snr_db_range must satisfy -30 <= low <= high <= 60 dB, got {snr_db_range!r}")
    if (
        not isinstance(long_minutes, (int, float))
        or not math.isfinite(long_minutes)
        or not 0 <= long_minutes <= 24 * 60
    ):
        raise ValueError(f"long_minutes must be from 0 to 1440 minutes per machine id, got {long_minutes!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed must be an integer from 0 to 2**32-1, got {seed!r}")
    if (
        isinstance(sample_rate_hz, bool)
        or not isinstance(sample_rate_hz, (int, np.integer))
        or not 8000 <= sample_rate_hz <= 96000
    ):
        raise ValueError(f"sample_rate_hz must be an integer from 8000 to 96000, got {sample_rate_hz!r}")
    return machine_types, tuple(int(i) for i in ids), (lo, hi)


def _plan(machine_types, ids, n_train, n_test_normal, n_test_anomaly, snr, seed):
    """Every clip of the dataset: (relpath, type, id, split, label, fault, level, snr, clip seed)."""
    rows = []
    for mt in machine_types:
        faults = FAULTS_BY_TYPE[mt]
        for mid in ids:
            for split, label, count, folder in (
                ("train", "normal", n_train, "train"),
                ("test_normal", "normal", n_test_normal, "test"),
                ("test_anomaly", "anomaly", n_test_anomaly, "test"),
            ):
                for i in range(count):
                    cs = clip_seed(seed, mt, mid, split, i)
                    pr = _rng(cs, "plan")
                    snr_db = round(float(pr.uniform(*snr)), 2)
                    fault, level = "", ""
                    if label == "anomaly":
                        fault = faults[(i + mid) % len(faults)]
                        lo, hi = FAULT_LEVEL_DB[fault]
                        level = round(float(pr.uniform(lo, hi)), 2)
                    rel = f"{mt}/{folder}/{label}_id_{mid:02d}_{i:08d}.wav"
                    rows.append(
                        (rel, mt, mid, "train" if split == "train" else "test", label, fault, level, snr_db, cs)
                    )
    return rows


def make_dataset(
    out_dir,
    machine_types=MACHINE_TYPES,
    machine_ids=(0, 1, 2),
    n_train=60,
    n_test_normal=20,
    n_test_anomaly=20,
    seconds=10.0,
    snr_db_range=(0.0, 12.0),
    long_minutes=0.0,
    seed=0,
    sample_rate_hz=16000,
    progress=False,
) -> pathlib.Path:
    """Write a plant_synth dataset under out_dir and return the path of its manifest.csv (see the module doc)."""
    machine_types, ids, snr = _validate(
        machine_types,
        machine_ids,
        n_train,
        n_test_normal,
        n_test_anomaly,
        seconds,
        snr_db_range,
        long_minutes,
        seed,
        sample_rate_hz,
    )
    out = pathlib.Path(out_dir)
    fs = int(sample_rate_hz)
    rows = _plan(machine_types, ids, n_train, n_test_normal, n_test_anomaly, snr, seed)
    long_s = float(long_minutes) * 60.0
    n_long_blocks = int(math.ceil(long_s / LONG_BLOCK_S)) * len(machine_types) * len(ids) if long_s > 0 else 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(rows) + n_long_blocks, unit="file", desc="plant_synth", smoothing=0.05)
    manifest = []
    try:
        for mt in machine_types:
            for folder in ("train", "test"):
                (out / mt / folder).mkdir(parents=True, exist_ok=True)
        for rel, mt, mid, split, label, fault, level, snr_db, cs in rows:
            x = render_clip(mt, mid, cs, float(seconds), fault or None, level if fault else None, snr_db, fs)
            write_wav(out / rel, x, fs)
            manifest.append((rel, mt, mid, split, label, fault, level, f"{snr_db:.2f}", cs, f"{float(seconds):g}"))
            if bar is not None:
                bar.update(1)
        if long_s > 0:
            for mt in machine_types:
                (out / "long" / mt).mkdir(parents=True, exist_ok=True)
                for mid in ids:
                    cs = clip_seed(seed, mt, mid, "long", 0)
                    manifest.extend(_write_stream(out, mt, mid, cs, long_s, snr, fs, bar))
    finally:
        if bar is not None:
            bar.close()
    path = out / "manifest.csv"
    tmp = out / "manifest.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(MANIFEST_COLUMNS)
        for r in manifest:
            w.writerow(r)
    os.replace(tmp, path)
    return path


def _write_stream(out: pathlib.Path, mt: str, mid: int, cs: int, long_s: float, snr, fs: int, bar) -> list:
    """Generate one long stream in 60 s blocks and write it as 10-minute parts (memory stays bounded)."""
    rows = []
    part_n = int(round(LONG_PART_S * fs))
    buf = np.zeros(part_n, dtype=np.float32)
    fill, part, pm_sum, pb_sum = 0, 0, 0.0, 0.0

    def flush():
        nonlocal fill, part, pm_sum, pb_sum
        rel = f"long/{mt}/normal_id_{mid:02d}_part{part}.wav"
        write_wav(out / rel, buf[:fill], fs)
        snr_db = 10 * math.log10(pm_sum / max(pb_sum, 1e-30))
        rows.append((rel, mt, mid, "long", "normal", "", "", f"{snr_db:.2f}", cs, f"{fill / fs:g}"))
        fill, part, pm_sum, pb_sum = 0, part + 1, 0.0, 0.0

    for x, pm, pb in render_stream(mt, mid, cs, long_s, snr, fs):
        pos = 0
        while pos < len(x):
            k = min(len(x) - pos, part_n - fill)
            buf[fill : fill + k] = x[pos : pos + k]
            frac = k / len(x)
            pm_sum += pm * frac
            pb_sum += pb * frac
            fill += k
            pos += k
            if fill == part_n:
                flush()
        if bar is not None:
            bar.update(1)
    if fill > 0:
        flush()
    return rows


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="plant_synth",
        description="Generate an independent synthetic machine-sound dataset (DCASE 2020 Task 2 layout) for "
        "REPORTING detection quality only - never for choosing models. Writes OUT/<type>/train, "
        "OUT/<type>/test, OUT/long/<type> and OUT/manifest.csv; mono 16-bit PCM WAV.",
        epilog="Machine types and faults: "
        + "; ".join(f"{t}: {', '.join(f)}" for t, f in FAULTS_BY_TYPE.items())
        + ". The same arguments always give byte-identical files.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument(
        "--types",
        default=",".join(MACHINE_TYPES),
        metavar="T1,T2",
        help=f"comma-separated machine types (default: all: {','.join(MACHINE_TYPES)})",
    )
    p.add_argument(
        "--ids", type=int, default=3, metavar="N", help="machine ids per type, ids 0..N-1 (default 3, at most 100)"
    )
    p.add_argument("--train", type=int, default=60, metavar="N", help="normal training clips per id (default 60)")
    p.add_argument("--test-normal", type=int, default=20, metavar="N", help="normal test clips per id (default 20)")
    p.add_argument("--test-anomaly", type=int, default=20, metavar="N", help="anomalous test clips per id (default 20)")
    p.add_argument("--seconds", type=float, default=10.0, metavar="S", help="clip length in seconds (default 10)")
    p.add_argument(
        "--snr-low", type=float, default=0.0, metavar="DB", help="lowest machine-to-background ratio in dB (default 0)"
    )
    p.add_argument(
        "--snr-high",
        type=float,
        default=12.0,
        metavar="DB",
        help="highest machine-to-background ratio in dB (default 12)",
    )
    p.add_argument(
        "--long-minutes",
        type=float,
        default=0.0,
        metavar="MIN",
        help="minutes of continuous normal recording per id, generated in 10 s blocks and written as "
        "10-minute WAV parts under OUT/long/<type>; never for fitting (default 0)",
    )
    p.add_argument("--seed", type=int, default=0, metavar="N", help="dataset seed, 0..2**32-1 (default 0)")
    p.add_argument("--rate", type=int, default=16000, metavar="HZ", help="sample rate in Hz (default 16000)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    if not 1 <= a.ids <= 100:
        p.error(f"--ids must be from 1 to 100, got {a.ids}")
    try:
        t = time.perf_counter()
        path = make_dataset(
            a.out,
            a.types,
            tuple(range(a.ids)),
            a.train,
            a.test_normal,
            a.test_anomaly,
            a.seconds,
            (a.snr_low, a.snr_high),
            a.long_minutes,
            a.seed,
            a.rate,
            progress=not a.quiet,
        )
    except ValueError as e:
        p.error(str(e))
    except (OSError, AudioError) as e:
        p.exit(1, f"plant_synth: error: {str(e).splitlines()[0] if str(e) else e!r}\n")
    print(f"wrote {path} in {time.perf_counter() - t:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

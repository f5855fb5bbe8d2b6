"""Power-line figures of a stream (numpy only): mains frequency tracked from the hum, the strength of the 2f hum
comb, the crackle (impulse) rate and the phase of each crackle in the hum's cycle, per telemetry period.

Method (all of it streaming, output independent of the block sizes audio arrives in):

- Hum. The stream is decimated to about 2 kHz by block means of D samples (a boxcar: the hum harmonics of
  interest lie below 800 Hz, where it loses under 4 dB; what folds down from above is attenuated broadband
  noise, and harmonics of 100 Hz fold onto the 100 Hz comb itself since 2000 is a multiple of 100).
  Hann frames of FRAME_SECONDS (4 s: 0.25 Hz bins) every half frame give power spectra. In the period's sum,
  a harmonic sum finds f: every candidate within +-SEARCH_HZ of the nominal frequency, on a grid fine enough
  for the highest harmonic, scores the sum of its harmonics' levels above their local floors (so a stray tone
  near one harmonic cannot pass for mains). Each harmonic k*f is then refined within 1.5 bins by a parabola
  through the log powers of its peak bin and neighbours (sub-bin: about 0.02 bin for a Hann window), and the
  harmonics that stand LOCK_DB above their floor give f = peak / k, combined weighted by k^2 * SNR (a harmonic
  k pins f k times more finely). The hum locks (mains_hz is not null) when at least two harmonics stand LOCK_DB
  up, one of them a harmonic of 2f. Mains 'auto' tries 50 and 60 Hz and keeps the one with the larger sum.
  Caveat: a machine whose tones are multiples of f/2 or f/3 (a 33.4 Hz fan: 3 x 33.4 = 2 x 50.1) lines up
  with the comb too; real recordings show such locks (README.md's table).
- Comb strength. Per harmonic m*2f: the power of the three bins around the peak over three times the median
  power within +-FLOOR_HZ of the nominal harmonic (the local floor), in dB; comb_db is the mean of those
  ratios (power, then dB), so the strongest harmonics dominate it. It depends on the resolution (0.25 Hz
  bins): a steady tone gains 3 dB per doubling of the frame, broadband noise none.
- Crackle. A second difference (x[n] - 2x[n-1] + x[n-2]: -56 dB at 100 Hz, -36 dB at 1 kHz, +6 dB at the
  Nyquist frequency at 16 kHz) keeps the broadband ticks of corona and drops the hum; its mean square over
  1 ms sub-blocks is the envelope. A sub-block is a crackle onset when its envelope exceeds the running floor
  (the median of the last 2 s of sub-blocks, as medians of 250 ms chunks) by crackle_threshold_db and none of
  the REFRACTORY_MS before it did: a burst of pulses within a few ms counts once. White noise stays about
  25 dB below the default 10 dB threshold (a mean of 16 squared Gaussian samples rarely exceeds 10 times
  its median), so it gives no crackles at 16 kHz; machine noise that is itself impulsive does. A 250 ms chunk
  holding a clipped sample finds none (a clipped waveform's corners are ticks too).
- Phase. Each crackle's time is refined to the sample (the largest |second difference| in its onset
  sub-block) and placed in the cycle of the hum's 2f component: in each frame whose 2f peak stands
  LOCK_DB above the floor, the complex amplitude of the 2f component at the frame's centre (a Hann-weighted
  projection at the frame's own 2f estimate) gives the reference, and a crackle within half a hop of the
  frame's centre gets phase 2*pi*2f*(t - t_centre) + arg(amplitude). 0 degrees is a positive peak of the 2f
  hum. Sound travels the same path from the line to the microphone for hum and crackle, so the phase is
  independent of the distance. Acoustics alone cannot tell the positive from the negative half of the mains
  cycle (the 2f hum is the same in both): phases are of the 2f cycle, half a mains cycle, 0-360 degrees;
  corona, which clusters at both voltage peaks, clusters at one phase here. phase_concentration is the
  resultant length |mean(exp(i*phase))|: 0 for phases spread evenly, 1 for all at one phase. A crackle's
  phase waits for the frame around it: up to FRAME_SECONDS after it, so it may count in the next period.

Cost: about 0.3 ms per second of quiet 16 kHz audio and 0.6 ms with 300 crackles a second, on one core of a
loaded machine; about 1.4 times what the band levels cost (benchmarks/bench_powerline.py, bench_pipeline.py).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..audio.audio_io import MAX_SAMPLE_MAGNITUDE
from ..audio.ring_buffer import RingBuffer

# Decimated rate the hum is analysed at (the exact rate is sample_rate_hz / D).
DECIMATED_RATE_HZ = 2000.0
# Hann frames of the hum spectrum, in seconds: 0.25 Hz bins; one every half frame.
FRAME_SECONDS = 4.0
# How far the mains frequency may stray from its nominal value, in hertz (interconnected grids keep within
# 0.2 Hz, statutory limits are 0.5 Hz; an island or a generator set may stray further and is not followed).
SEARCH_HZ = 0.5
# The local floor of a harmonic: the median power within this many hertz of it.
FLOOR_HZ = 20.0
# A harmonic locks (counts for the frequency, gives a phase reference) this many dB above its floor.
LOCK_DB = 10.0
# Harmonics analysed lie below this fraction of the decimated rate (where the boxcar still passes them).
MAX_HARMONIC_FRACTION = 0.4
# A frame's own estimate (for its phase reference) uses the harmonics up to this order of f.
FRAME_MAX_ORDER = 8
# The 2f comb reported: at most this many harmonics of 2f.
MAX_COMB_HARMONICS = 8
# Crackle detection: chunks of 250 ms, 1 ms sub-blocks, a floor over the last 8 chunk medians (2 s).
CHUNK_SECONDS = 0.25
SUBBLOCK_SECONDS = 0.001
FLOOR_CHUNKS = 8
REFRACTORY_MS = 2
# Mean square (full scale 1.0) below which no sub-block is a crackle: -100 dBFS in the second difference,
# so digital silence and dither give none.
ENVELOPE_FLOOR = 1e-10
# Samples this close to full scale are clipped (audio_io's 16-bit full scale is 32767/32768).
CLIPPED = 0.999
# Crackle times kept for their phase while their frame is pending (a bound against hostile input: beyond
# it crackles are still counted, without a phase).
MAX_PENDING_CRACKLES = 50_000
NOMINAL_MAINS_HZ = (50.0, 60.0)
DEFAULT_PHASE_BINS = 36
DEFAULT_CRACKLE_THRESHOLD_DB = 10.0


@dataclass(frozen=True)
class HumEstimate:
    """The hum found in one power spectrum.

    Attributes:
        nominal_hz: 50 or 60 (the configured one, or the one auto chose).
        mains_hz: the tracked mains frequency, None when no harmonic of 2f locked.
        harmonics_db: per harmonic m*2f (m = 1, 2, ...), its peak above the local floor, dB.
        comb_db: power mean of harmonics_db, dB; None when no harmonic fits below the analysed band.
        ref_db: the 2f harmonic's level above its floor (the phase reference's), dB.
    """

    nominal_hz: float
    mains_hz: float | None
    harmonics_db: tuple[float, ...]
    comb_db: float | None
    ref_db: float

    @property
    def locked(self) -> bool:
        return self.mains_hz is not None


def _median(values: np.ndarray) -> float:
    """The (upper) median, without np.median's overhead (it dominates for a few hundred values)."""
    k = len(values) // 2
    return float(np.partition(values, k)[k])


def estimate_hum(
    power: np.ndarray, bin_hz: float, nominal_hz: float | None, max_hz: float, max_order: int = 64
) -> HumEstimate | None:
    """The hum in a power spectrum (see the module's docstring). Vectorised over the harmonics: a few numpy
    calls per nominal frequency, whatever the number of harmonics.

    Args:
        power: float64 (n,) one-sided power spectrum of a Hann frame (or a sum of them), bins of bin_hz.
        bin_hz: bin spacing, Hz.
        nominal_hz: 50 or 60, or None to choose between them (auto).
        max_hz: no harmonic above this is analysed.
        max_order: nor any of a higher order (of f).

    Returns:
        The estimate, or None when not even the 2f harmonic fits below max_hz.
    """
    best: HumEstimate | None = None
    best_score = -math.inf
    n = len(power)
    half = round(FLOOR_HZ / bin_hz)
    for f0 in NOMINAL_MAINS_HZ if nominal_hz is None else (nominal_hz,):
        k_max = min(max_order, int((max_hz - SEARCH_HZ * 4) // f0))
        if k_max < 2 or 2 * f0 / bin_hz + half + 2 >= n:
            continue
        orders = np.arange(1, k_max + 1)
        # Local floors: the median within +-FLOOR_HZ of each nominal harmonic (one partition for all of them).
        centres = np.rint(orders * f0 / bin_hz).astype(np.int64)
        windows = np.clip(centres[:, None] + np.arange(-half, half + 1)[None, :], 0, n - 1)
        floors = np.partition(power[windows], half, axis=1)[:, half]
        floors = np.maximum(floors, 1e-300)
        # Harmonic sum: every candidate f on a grid fine enough that no harmonic skips a bin, scored by the sum
        # of its harmonics' levels above their floors (0 dB at least: a harmonic below its floor costs nothing).
        # A tone near one harmonic cannot pass for mains; the harmonics must line up.
        grid = f0 + np.arange(-SEARCH_HZ, SEARCH_HZ + 1e-9, bin_hz / (2 * k_max))
        idx = np.clip(np.rint(np.outer(orders, grid) / bin_hz).astype(np.int64), 0, n - 1)
        levels = 10.0 * np.log10(np.maximum(power[idx] / floors[:, None], 1e-30))
        total = np.sum(np.clip(levels, 0.0, 60.0), axis=0)
        best_f = float(grid[int(np.argmax(total))])
        # Each harmonic's own peak within 1.5 bins of where the comb puts it, refined to a fraction of a bin by a
        # parabola through the log powers of the peak bin and its neighbours (about 0.02 bin for a Hann window).
        near = np.rint(orders * best_f / bin_hz).astype(np.int64)
        candidates = np.clip(near[:, None] + np.arange(-1, 2)[None, :], 1, n - 2)
        peak_bin = candidates[np.arange(k_max), np.argmax(power[candidates], axis=1)]
        three = power[peak_bin[:, None] + np.arange(-1, 2)[None, :]]
        logs = np.log(np.maximum(three, 1e-300))
        denom = logs[:, 0] - 2.0 * logs[:, 1] + logs[:, 2]
        safe = np.where(denom < 0, denom, -1.0)
        offset = np.where(denom < 0, np.clip(0.5 * (logs[:, 0] - logs[:, 2]) / safe, -0.5, 0.5), 0.0)
        freqs = (peak_bin + offset) * bin_hz
        snr_db = np.clip(10.0 * np.log10(np.maximum(three.sum(axis=1), 1e-300) / (3.0 * floors)), -200.0, 200.0)
        even = orders % 2 == 0
        comb = snr_db[even][:MAX_COMB_HARMONICS]
        ref_db = float(snr_db[1])
        locked = snr_db >= LOCK_DB
        mains = None
        # Locked: at least two harmonics stand LOCK_DB above their floors, one of them a harmonic of 2f.
        if locked.sum() >= 2 and (locked & even).any():
            f = freqs[locked] / orders[locked]
            w = orders[locked] ** 2 * 10.0 ** (np.minimum(snr_db[locked], 60.0) / 10.0)
            centre = float(np.sum(f * w) / np.sum(w))
            # A stray tone that happens to lie near a harmonic pulls the mean: drop harmonics further than
            # two bins (of that harmonic) from it and average again.
            keep = np.abs(f - centre) <= 2.0 * bin_hz / orders[locked]
            if keep.any():
                centre = float(np.sum(f[keep] * w[keep]) / np.sum(w[keep]))
            mains = centre
        score = float(np.max(total))
        comb_db = 10.0 * math.log10(float(np.mean(10.0 ** (comb / 10.0))))
        estimate = HumEstimate(f0, mains, tuple(float(c) for c in comb), comb_db, ref_db)
        if score > best_score:
            best, best_score = estimate, score
    return best


class PowerlineMeter:
    """Streaming power-line figures of one stream (see the module's docstring for the method).

    Args:
        sample_rate_hz: the stream's rate (at least 1000 Hz: the 2f hum of 60 Hz mains must lie below 0.4 of it).
        mains_hz: 50 or 60, or None to detect it (auto).
        phase_bins: bins of the crackle phase histogram over 360 degrees.
        crackle_threshold_db: a crackle's envelope stands this far above the running floor.

    Raises:
        ValueError: a rate too low, phase_bins < 2; one line.
    """

    def __init__(
        self,
        sample_rate_hz: int,
        mains_hz: float | None = None,
        phase_bins: int = DEFAULT_PHASE_BINS,
        crackle_threshold_db: float = DEFAULT_CRACKLE_THRESHOLD_DB,
    ):
        if sample_rate_hz < 1000:
            raise ValueError(f"powerline: {sample_rate_hz} Hz is too low a rate for the hum (at least 1000 Hz)")
        if phase_bins < 2:
            raise ValueError(f"powerline: phase_bins {phase_bins} must be at least 2")
        self.sample_rate_hz = fs = int(sample_rate_hz)
        self.mains_hz = mains_hz
        self.phase_bins = int(phase_bins)
        self.threshold = 10.0 ** (crackle_threshold_db / 10.0)
        self.decimation = d = max(1, int(fs // DECIMATED_RATE_HZ))
        self.decimated_hz = fs / d
        self.subblock = s = max(1, round(fs * SUBBLOCK_SECONDS))
        step = math.lcm(s, d)
        self.chunk_samples = max(step, int(round(fs * CHUNK_SECONDS)) // step * step)
        self.frame_samples = n = int(round(FRAME_SECONDS * self.decimated_hz)) // 2 * 2
        self.hop_samples = n // 2
        self.bin_hz = self.decimated_hz / n
        self.max_hz = min(MAX_HARMONIC_FRACTION * self.decimated_hz, 0.45 * fs)
        # Periodic Hann, float64 (as the band meter: numpy's float64 FFT is the faster one here).
        self._window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)
        self._refractory = max(1, round(REFRACTORY_MS * 1e-3 / SUBBLOCK_SECONDS))
        self._buffer = np.zeros(self.chunk_samples, dtype=np.float32)  # the chunk being filled
        self._frames = RingBuffer(n, self.hop_samples)
        self.reset()

    def reset(self) -> None:
        """A new stream: every running state starts afresh (the period's sums stay until take())."""
        self._fill, self._chunk_start = 0, 0
        self._frames.reset()
        self._nominal: float | None = None  # auto: the nominal frequency the last period locked to
        self._history: np.ndarray | None = None  # the last two samples, for the second difference
        self._recent = np.zeros(self._refractory, dtype=bool)  # the last sub-blocks' "above threshold"
        self._medians: deque[float] = deque(maxlen=FLOOR_CHUNKS)
        self._pending: list[np.ndarray] = []  # crackle times (s) waiting for their frame's phase reference
        self._pending_count = 0
        if not hasattr(self, "_period_frames"):
            self._clear_period()

    def _clear_period(self) -> None:
        self._power_sum = np.zeros(self.frame_samples // 2 + 1)
        self._period_frames = 0
        self._seconds = 0.0
        self._crackles = 0
        self._histogram = np.zeros(self.phase_bins, dtype=np.int64)
        self._phase_sum = 0j

    # -- streaming ---------------------------------------------------------

    def process(self, block: np.ndarray) -> None:
        """Take a block of float32 samples (NaN, infinite and absurd samples count as 0)."""
        x = np.asarray(block, dtype=np.float32).ravel()
        c = self.chunk_samples
        while len(x):
            take = min(c - self._fill, len(x))
            self._buffer[self._fill : self._fill + take] = x[:take]
            self._fill += take
            x = x[take:]
            if self._fill == c:
                self._chunk(self._buffer, self._chunk_start)  # _chunk keeps nothing of it
                self._chunk_start += c
                self._fill = 0

    def _chunk(self, x: np.ndarray, start: int) -> None:
        if not (-MAX_SAMPLE_MAGNITUDE <= x.min() and x.max() <= MAX_SAMPLE_MAGNITUDE):  # NaN fails this too
            x = np.where(np.abs(x) <= MAX_SAMPLE_MAGNITUDE, x, np.float32(0.0))
        fs, s = self.sample_rate_hz, self.subblock
        self._seconds += len(x) / fs
        # Crackle: second difference (float32: fast, and 24 bits are plenty for a threshold 10 dB up), the sum
        # of squares per sub-block (einsum: numpy's reductions over short rows are several times slower), onsets
        # above the running floor.
        if self._history is None:  # a stream's first sample stands for the ones before it: no start-up tick
            self._history = np.full(2, x[0], dtype=np.float32)
        ext = np.concatenate((self._history, x))
        self._history = ext[-2:].copy()
        hp = ext[2:] - 2.0 * ext[1:-1] + ext[:-2]  # hp[i] peaks at sample i - 1 for an impulse there
        rows = hp.reshape(-1, s)
        energy = np.einsum("ij,ij->i", rows, rows)  # per sub-block: s times its mean square
        self._medians.append(_median(energy))
        floor = _median(np.asarray(self._medians))
        above = energy > max(self.threshold * floor, ENVELOPE_FLOOR * s)
        if x.min() <= -CLIPPED or x.max() >= CLIPPED:
            # A clipped waveform's corners are ticks in the second difference: a chunk holding a clipped sample
            # finds no crackle (clipping is the health monitor's fault, not corona).
            above[:] = False
        if above.any() or self._recent.any():
            self._onsets(above, hp, start)
        # Hum: block means of D samples (each stands at the middle of its samples), frames of the decimated stream.
        d = self.decimation
        decimated = np.einsum("ij->i", x.reshape(-1, d)) * np.float32(1.0 / d) if d > 1 else x
        for frame in self._frames.iter_push(decimated):
            self._frame(frame.samples.astype(np.float64), frame.start_sample)

    def _onsets(self, above: np.ndarray, hp: np.ndarray, start: int) -> None:
        """Count the sub-blocks above the threshold that none of the REFRACTORY_MS before them was, and keep
        their times (refined to the sample) for their phase."""
        r, s = self._refractory, self.subblock
        flags = np.concatenate((self._recent, above))
        self._recent = flags[-r:].copy()
        recent = np.zeros(len(above), dtype=bool)
        for lag in range(1, r + 1):
            recent |= flags[r - lag : r - lag + len(above)]
        onsets = np.flatnonzero(above & ~recent)
        if not len(onsets):
            return
        self._crackles += len(onsets)
        within = np.argmax(np.abs(hp.reshape(-1, s)[onsets]), axis=1) if s > 1 else np.zeros(len(onsets), int)
        times = (start + onsets * s + within - 1) / self.sample_rate_hz
        if self._pending_count + len(times) <= MAX_PENDING_CRACKLES:
            self._pending.append(times)
            self._pending_count += len(times)

    def _frame(self, y: np.ndarray, start: int) -> None:
        d, fs = self.decimation, self.sample_rate_hz
        windowed = (y - y.mean()) * self._window
        spectrum = np.fft.rfft(windowed)
        power = np.square(spectrum.real) + np.square(spectrum.imag)
        self._power_sum += power
        self._period_frames += 1
        # The frame's centre (its sample n/2), in stream seconds: decimated sample j is the mean of samples
        # j*d .. j*d + d - 1.
        t_centre = ((start + self.frame_samples // 2) * d + (d - 1) / 2.0) / fs
        hop_seconds = self.hop_samples * d / fs
        # This frame gives the phase of the crackles nearer its centre than the next frame's (and of any before).
        ready = self._take_pending(t_centre + hop_seconds / 2)
        if not len(ready):
            return
        # The frame's own 2f, from the harmonics up to 8f (enough to pin it, at a quarter of the full search).
        estimate = estimate_hum(power, self.bin_hz, self.mains_hz or self._nominal, self.max_hz, FRAME_MAX_ORDER)
        if estimate is None or estimate.mains_hz is None or estimate.ref_db < LOCK_DB:
            return  # no phase reference in this frame: its crackles are counted without a phase
        if self.mains_hz is None and self._nominal is None:
            self._nominal = estimate.nominal_hz  # auto: the next frames need not choose again
        f_ref = 2.0 * estimate.mains_hz
        # The 2f component's phase at the frame's centre, from the spectrum: the periodic Hann window is symmetric
        # about sample n/2, so a tone's transform referred to that sample is real and positive across the main
        # lobe, and its phase is the tone's phase there whatever its offset from the bin. Referring bin k to
        # sample n/2 multiplies it by exp(i*pi*k).
        k = round(f_ref / self.bin_hz)
        reference = float(np.angle(spectrum[k])) + math.pi * k
        phases = reference + 2.0 * np.pi * f_ref * (ready - t_centre)
        phases = np.mod(phases, 2.0 * np.pi)
        bins = np.minimum((phases * (self.phase_bins / (2.0 * np.pi))).astype(np.int64), self.phase_bins - 1)
        self._histogram += np.bincount(bins, minlength=self.phase_bins)
        self._phase_sum += complex(np.sum(np.exp(1j * phases)))

    def _take_pending(self, limit: float) -> np.ndarray:
        """The pending crackle times before `limit`, taken out (later ones stay pending)."""
        if not self._pending:
            return np.zeros(0)
        times = np.concatenate(self._pending)
        ready, waiting = times[times < limit], times[times >= limit]
        self._pending = [waiting] if len(waiting) else []
        self._pending_count = len(waiting)
        return ready

    # -- per period ----------------------------------------------------------

    def take(self) -> dict[str, Any] | None:
        """Close the period: the telemetry's `powerline` object, or None when no audio came in it."""
        if self._seconds <= 0.0:
            return None
        estimate = None
        if self._period_frames:
            estimate = estimate_hum(self._power_sum, self.bin_hz, self.mains_hz, self.max_hz)
            if estimate is not None and estimate.locked:
                self._nominal = estimate.nominal_hz  # auto: the frames of the next period need not choose again
        phased = int(self._histogram.sum())
        resultant = abs(self._phase_sum) / phased if phased else None
        mean_deg = math.degrees(np.angle(self._phase_sum)) % 360.0 if phased else None
        result = {
            "seconds": round(self._seconds, 3),
            "frames": self._period_frames,
            "nominal_hz": None if estimate is None else estimate.nominal_hz,
            "mains_hz": None if estimate is None or estimate.mains_hz is None else round(estimate.mains_hz, 4),
            "comb_db": None if estimate is None or estimate.comb_db is None else round(estimate.comb_db, 2),
            "harmonics_db": [] if estimate is None else [round(v, 2) for v in estimate.harmonics_db],
            "crackles": self._crackles,
            "crackle_rate_per_s": round(self._crackles / self._seconds, 3),
            "phased_crackles": phased,
            "phase_bins": [int(v) for v in self._histogram],
            "phase_mean_deg": None if mean_deg is None else round(mean_deg, 1),
            "phase_concentration": None if resultant is None else round(resultant, 4),
        }
        self._clear_period()
        return result


def powerline_figures(
    samples: np.ndarray, sample_rate_hz: int, mains_hz: float | None = None, phase_bins: int = DEFAULT_PHASE_BINS
) -> dict[str, Any] | None:
    """The figures of a whole clip, as one period (for measurements and training side features)."""
    meter = PowerlineMeter(sample_rate_hz, mains_hz, phase_bins)
    meter.process(np.asarray(samples, dtype=np.float32))
    return meter.take()

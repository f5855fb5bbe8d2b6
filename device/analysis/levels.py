"""1/3-octave band levels (numpy only): IEC 61260-1 base-10 bands from the FFT power of overlapping frames, and
their Leq, minimum and maximum per telemetry period.

Method. The stream is cut into frames of `frame_seconds` (1 s by default) every half frame; each frame is
Hann-windowed and its one-sided power spectrum summed over the FFT bins whose frequency lies in a band,
[f_m * 10^(-1/20), f_m * 10^(1/20)), f_m = 1000 * 10^(k/10) Hz being the exact mid-band frequency of band k
(IEC 61260-1:2014, base 10). The sum is scaled by 2 / (N * sum(w^2)) so that it is the band's mean square
(Parseval): a steady sine of amplitude A reads A^2/2 in the band that holds it, -3.01 dBFS at full scale.
Accuracy (tests/unit/test_levels.py): a sine at a band's mid frequency reads within 0.05 dB of its level;
white noise reads its band's share of the power (bandwidth / Nyquist) within 0.3 dB over a minute. The band
edges are brick walls on the FFT bins, not the gradual skirts of an IEC class 1 filter: a tone near an edge
is counted whole in one band, not split between two; and a band is resolved only if it spans at least
MIN_BINS_PER_BAND bins (band_table refuses lower bands), which at 1 s frames (1 Hz bins) allows 25 Hz.

The 50 % overlap makes every sample count: a short sound anywhere in a frame reads within -1.8 to +1.2 dB
of its energy in the frames' mean (Hann windows at half overlap weigh a sample by 2/3 to 4/3), so the Leq
of a period misses no transient, while min and max are those of the 1 s frames (not 125 ms "fast" values).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..audio.audio_io import MAX_SAMPLE_MAGNITUDE
from ..audio.ring_buffer import RingBuffer

# Nominal mid-band frequencies of IEC 61260-1 (the labels), band numbers k = -16 (25 Hz) .. 13 (20 kHz),
# exact mid-band frequency 1000 * 10^(k/10).
NOMINAL_CENTRES_HZ: tuple[float, ...] = (
    25, 31.5, 40, 50, 63, 80, 100, 125, 160, 200, 250, 315, 400, 500, 630, 800,
    1000, 1250, 1600, 2000, 2500, 3150, 4000, 5000, 6300, 8000, 10000, 12500, 16000, 20000,
)  # fmt: skip
FIRST_BAND = -16
# A band is resolved when its width spans this many FFT bins: a Hann window's main lobe is 4 bins wide,
# so a tone at the band's middle then lies wholly inside it.
MIN_BINS_PER_BAND = 4.0
# Half-band ratio 10^(1/20): a band's edges are its mid frequency divided and multiplied by it.
HALF_BAND = 10.0 ** (1.0 / 20.0)
# The lowest mean square reported (-150 dB re full scale): digital silence gives this, not -inf.
LEVEL_FLOOR_DB = -150.0
_MEAN_SQUARE_FLOOR = 10.0 ** (LEVEL_FLOOR_DB / 10.0)
DEFAULT_FRAME_SECONDS = 1.0


def exact_centre_hz(nominal_hz: float) -> float:
    """The exact base-10 mid-band frequency of the band a nominal label names, e.g. 31.5 -> 31.62 Hz.

    Raises:
        ValueError: not one of NOMINAL_CENTRES_HZ.
    """
    try:
        k = NOMINAL_CENTRES_HZ.index(nominal_hz)
    except ValueError:
        raise ValueError(
            f"{nominal_hz:g} Hz is not a 1/3-octave band's nominal centre (IEC 61260-1: "
            f"{', '.join(f'{c:g}' for c in NOMINAL_CENTRES_HZ)})"
        ) from None
    return 1000.0 * 10.0 ** ((FIRST_BAND + k) / 10.0)


def lowest_resolved_hz(frame_seconds: float) -> float:
    """The lowest nominal band a frame of this length resolves (MIN_BINS_PER_BAND bins wide)."""
    bin_hz = 1.0 / frame_seconds
    for nominal in NOMINAL_CENTRES_HZ:
        if exact_centre_hz(nominal) * (HALF_BAND - 1.0 / HALF_BAND) >= MIN_BINS_PER_BAND * bin_hz:
            return nominal
    return NOMINAL_CENTRES_HZ[-1]


@dataclass(frozen=True)
class BandTable:
    """The bands one stream is measured in.

    Attributes:
        nominal_hz: the nominal labels, ascending.
        edges_hz: the B + 1 band edges (each band's upper edge is the next one's lower edge).
    """

    nominal_hz: tuple[float, ...]
    edges_hz: tuple[float, ...]

    def index(self, nominal: float) -> int:
        return self.nominal_hz.index(nominal)


def band_table(
    sample_rate_hz: int, fmin_hz: float = 25.0, fmax_hz: float | None = None, frame_seconds: float = 1.0
) -> BandTable:
    """The bands from the first mid frequency >= fmin_hz to the last one whose upper edge is <= fmax_hz
    (the Nyquist frequency when None).

    Raises:
        ValueError: no band fits, fmax_hz above the Nyquist frequency, or fmin_hz below what the frame resolves;
            one line saying what to change.
    """
    nyquist = sample_rate_hz / 2
    top = nyquist if fmax_hz is None else fmax_hz
    if top > nyquist:
        raise ValueError(f"fmax_hz {top:g} is above the Nyquist frequency ({nyquist:g} Hz at {sample_rate_hz} Hz)")
    lowest = lowest_resolved_hz(frame_seconds)
    if fmin_hz < exact_centre_hz(lowest) / HALF_BAND:
        raise ValueError(
            f"fmin_hz {fmin_hz:g}: frames of {frame_seconds:g} s resolve 1/3-octave bands from {lowest:g} Hz up; "
            "raise fmin_hz or lengthen frame_seconds"
        )
    chosen = [
        n
        for n in NOMINAL_CENTRES_HZ
        if exact_centre_hz(n) >= fmin_hz * (1 - 1e-9) and exact_centre_hz(n) * HALF_BAND <= top * (1 + 1e-9)
    ]
    if not chosen:
        raise ValueError(f"no 1/3-octave band lies between {fmin_hz:g} and {top:g} Hz")
    first = FIRST_BAND + NOMINAL_CENTRES_HZ.index(chosen[0])
    # Edges from one array of half-band numbers, so neighbouring bands share theirs exactly.
    edges = 1000.0 * 10.0 ** ((first - 0.5 + np.arange(len(chosen) + 1)) / 10.0)
    return BandTable(tuple(chosen), tuple(float(e) for e in edges))


@dataclass(frozen=True)
class LevelFrame:
    """One frame's band levels.

    Attributes:
        index: the frame's number in the stream.
        end_seconds: stream time at the frame's end.
        mean_square: float64 (B,) mean square per band (full scale 1.0); never below the floor.
    """

    index: int
    end_seconds: float
    mean_square: np.ndarray

    @property
    def levels_db(self) -> np.ndarray:
        return 10.0 * np.log10(self.mean_square)


class BandLevelMeter:
    """1/3-octave band levels of a stream, frame by frame (see the module's docstring for the method).

    Args:
        sample_rate_hz: the stream's rate.
        table: the bands (band_table()).
        frame_seconds: frame length; frames start every half frame.
    """

    def __init__(self, sample_rate_hz: int, table: BandTable, frame_seconds: float = DEFAULT_FRAME_SECONDS):
        self.sample_rate_hz = sample_rate_hz
        self.table = table
        self.frame_samples = max(2, round(frame_seconds * sample_rate_hz))
        self.hop_samples = self.frame_samples // 2
        n = self.frame_samples
        # Periodic Hann, float64: numpy's float64 FFT measured faster than its float32 one for these lengths.
        self._window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)
        bin_hz = np.arange(n // 2 + 1) * sample_rate_hz / n
        # Bins [starts[b], starts[b+1]) make band b; reduceat sums each run.
        self._starts = np.searchsorted(bin_hz, np.asarray(table.edges_hz), side="left")
        # One-sided power to mean square: x2 for the negative frequencies, / (N * sum w^2) for Parseval and the window.
        self._scale = 2.0 / (n * float(np.sum(self._window**2)))
        self._ring = RingBuffer(self.frame_samples, self.hop_samples)

    @property
    def nominal_hz(self) -> tuple[float, ...]:
        return self.table.nominal_hz

    def reset(self) -> None:
        """Start a new stream."""
        self._ring.reset()

    def process(self, block: np.ndarray) -> Iterator[LevelFrame]:
        """The frames a block of float32 samples completes.

        Samples that are NaN, infinite or beyond audio_io.MAX_SAMPLE_MAGNITUDE count as 0 (a filtered stream
        marks damaged samples NaN): a frame holding them reads the rest of its audio, never NaN.
        """
        for window in self._ring.iter_push(block):
            x = window.samples
            if not (-MAX_SAMPLE_MAGNITUDE <= x.min() and x.max() <= MAX_SAMPLE_MAGNITUDE):  # NaN fails this too
                x = np.where(np.abs(x) <= MAX_SAMPLE_MAGNITUDE, x, np.float32(0.0))
            spectrum = np.fft.rfft(x * self._window)
            power = np.square(spectrum.real)
            power += np.square(spectrum.imag)
            sums = np.add.reduceat(power, self._starts)[:-1] * self._scale
            end = (window.start_sample + self.frame_samples) / self.sample_rate_hz
            yield LevelFrame(window.index, end, np.maximum(sums, _MEAN_SQUARE_FLOOR))

    def skip(self, block: np.ndarray) -> None:
        """Advance over a block without measuring it (nobody wants its levels): frames stay aligned to the stream."""
        for _ in self._ring.iter_push(block):
            pass

    def measure(self, samples: np.ndarray) -> np.ndarray:
        """The energy mean of every frame of a whole clip, per band: float64 (B,) mean square (for checks)."""
        self.reset()
        frames = [f.mean_square for f in self.process(np.asarray(samples, dtype=np.float32))]
        self.reset()
        if not frames:
            raise ValueError(f"the clip is shorter than one frame ({self.frame_samples} samples)")
        return np.mean(frames, axis=0)


@dataclass
class LevelPeriod:
    """Leq (energy mean), minimum and maximum of the frames' band levels over one telemetry period.

    Attributes:
        nominal_hz: the bands' nominal centres.
        frame_seconds: the frames' length (reported with the levels).
        offset_db: added to every level (audio.calibration_db: dBFS to dB SPL); 0 reports dBFS.
    """

    nominal_hz: tuple[float, ...]
    frame_seconds: float
    offset_db: float = 0.0
    _sum: np.ndarray = field(init=False)
    _min: np.ndarray = field(init=False)
    _max: np.ndarray = field(init=False)
    _frames: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._clear()

    def _clear(self) -> None:
        b = len(self.nominal_hz)
        self._sum, self._min, self._max = np.zeros(b), np.full(b, np.inf), np.zeros(b)
        self._frames = 0

    def add(self, frame: LevelFrame) -> None:
        self._sum += frame.mean_square
        np.minimum(self._min, frame.mean_square, out=self._min)
        np.maximum(self._max, frame.mean_square, out=self._max)
        self._frames += 1

    def take(self) -> dict[str, Any] | None:
        """Close the period: the telemetry's `bands` object, or None when no frame completed in it."""
        if self._frames == 0:
            return None
        frames, leq, lo, hi = self._frames, self._sum / self._frames, self._min, self._max
        self._clear()
        return {
            "centre_hz": list(self.nominal_hz),
            "leq_db": _db(leq, self.offset_db),
            "min_db": _db(lo, self.offset_db),
            "max_db": _db(hi, self.offset_db),
            "frames": frames,
            "frame_seconds": self.frame_seconds,
            "unit": "dB" if self.offset_db else "dBFS",
        }


def _db(mean_square: np.ndarray, offset_db: float) -> list[float]:
    return [round(10.0 * math.log10(max(float(v), _MEAN_SQUARE_FLOOR)) + offset_db, 2) for v in mean_square]


def energy_mean_db(levels_db: Sequence[float]) -> float:
    """The level of the energy mean of levels in dB: 10 log10(mean(10^(L/10)))."""
    values = np.asarray(levels_db, dtype=np.float64)
    return float(10.0 * np.log10(np.mean(10.0 ** (values / 10.0))))

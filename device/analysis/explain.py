"""What changed in an alarm: the mel bands that rose against the model's normal band levels, and (supervised
models) the fault class the model names. Numpy only.

Training records, per mel band, how loud the band is on normal sound relative to the window's own mean level
(device/analysis/metadata.py BandLevelsRecord, fitted by fit_band_levels). While an event is open, the pipeline
hands each scored window's log-mel frames (the ones it already computed for the model) to an EventExplainer,
which keeps two numbers per band and window; at the event's start and each update it compares their average
with the normal levels and names the contiguous bands that stand out.

Levels are relative to the window's mean level (the same idea as the front end's 'mean' normalization), so
the microphone's gain and distance do not read as a change: a band is "up" when it is louder than usual
*compared with the rest of the spectrum*. A rise of the whole spectrum by the same amount is not a band
change and is not reported here (that is a level alarm's business). Each band is judged twice: its level
averaged over the window's frames (a change that lasts: "steady") and its loudest frame (a change that comes
and goes within the second: "transient", when only the peaks rose).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .features import FeatureParams, mel_band_centres_hz

# A band counts as risen when it is at least this many normal standard deviations above its normal level...
Z_THRESHOLD = 3.0
# ...and at least this many dB: a band that hardly varies on normal sound (a steady hum) would otherwise be
# named for a change nobody could hear or act on.
MIN_RISE_DB = 3.0
# The spread used for z is at least this (dB): a band whose level never moved in training (digital silence
# above a microphone's roll-off, a very short training set) must not turn a fraction of a dB into z = 50.
MIN_SPREAD_DB = 0.5
# At most this many band ranges per message, the strongest (highest z) first.
MAX_BANDS = 3
# z is reported up to this (a band far outside anything normal is "very far"; the digits after that say nothing).
MAX_Z = 99.9

STEADY = "steady"
TRANSIENT = "transient"


@dataclass(frozen=True)
class BandLevels:
    """The normal sound's level per mel band, in dB relative to the window's mean level (from the model's metadata).

    Attributes:
        mean_db: (n_mels,) mean over normal windows of the band's level averaged over the window's frames.
        spread_db: (n_mels,) standard deviation of that over normal windows.
        peak_mean_db: (n_mels,) mean over normal windows of the band's level in its loudest frame.
        peak_spread_db: (n_mels,) standard deviation of that.
        windows: normal windows the statistics were measured on.
    """

    mean_db: np.ndarray
    spread_db: np.ndarray
    peak_mean_db: np.ndarray
    peak_spread_db: np.ndarray
    windows: int

    @classmethod
    def from_record(cls, record: Any) -> BandLevels:
        """From a metadata.BandLevelsRecord (already checked: finite, one value per mel band)."""
        return cls(
            np.asarray(record.mean_db, dtype=np.float64),
            np.asarray(record.spread_db, dtype=np.float64),
            np.asarray(record.peak_mean_db, dtype=np.float64),
            np.asarray(record.peak_spread_db, dtype=np.float64),
            int(record.windows),
        )

    def to_record_fields(self, decimals: int = 3) -> dict[str, Any]:
        """The metadata record's fields (rounded: a thousandth of a dB is far below what the statistics resolve)."""

        def values(a: np.ndarray) -> list[float]:
            return [round(float(v), decimals) for v in a]

        return {
            "mean_db": values(self.mean_db),
            "spread_db": values(self.spread_db),
            "peak_mean_db": values(self.peak_mean_db),
            "peak_spread_db": values(self.peak_spread_db),
            "windows": self.windows,
        }


def band_summary(logmel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each band's level over one window, relative to the window's mean level: what training and the device compare.

    Args:
        logmel: float32 (n_frames, n_mels) from device.analysis.features.compute_logmel (dB, before normalization).

    Returns:
        (mean over frames, max over frames), each float64 (n_mels,), in dB re the mean of the whole patch
        (float64; see the comment on the sum).
    """
    x = np.asarray(logmel, dtype=np.float32)
    # A float32 sum of a window's 64 frames is within a millionth of a dB of float64's, at a quarter of the time
    # of mean(dtype=float64); this runs for every window of an open event.
    mean_db = x.sum(axis=0).astype(np.float64) / len(x)
    level = mean_db.mean()  # every band has the same number of frames: the mean of the band means is the patch's
    return mean_db - level, x.max(axis=0) - level


def fit_band_levels(means: np.ndarray, peaks: np.ndarray) -> BandLevels:
    """Normal band levels from the band_summary of many normal windows.

    Args:
        means, peaks: float (n_windows, n_mels): band_summary's two arrays, one row per window.

    Raises:
        ValueError: fewer than 2 windows, or the two arrays differ in shape.
    """
    m = np.asarray(means, dtype=np.float64)
    p = np.asarray(peaks, dtype=np.float64)
    if m.ndim != 2 or m.shape != p.shape or len(m) < 2:
        raise ValueError(f"need at least 2 windows of band summaries of one shape, got {m.shape} and {p.shape}")
    return BandLevels(m.mean(axis=0), m.std(axis=0), p.mean(axis=0), p.std(axis=0), len(m))


@functools.lru_cache(maxsize=8)
def band_edges_hz(params: FeatureParams) -> tuple[np.ndarray, np.ndarray]:
    """The frequency range each mel band stands for, in hertz: (low edges, high edges), float64 (n_mels,) each.

    The triangular filters overlap by half; a band stands for the range where its filter is the largest,
    from the crossover with the band below (half-way between the two centres) to the crossover with the
    band above. The ranges are contiguous and cover fmin_hz to fmax_hz.
    """
    centres = mel_band_centres_hz(params)
    crossovers = 0.5 * (centres[:-1] + centres[1:])
    low, high = np.concatenate([[params.fmin_hz], crossovers]), np.concatenate([crossovers, [params.fmax_hz]])
    low.setflags(write=False)  # shared between calls
    high.setflags(write=False)
    return low, high


@dataclass(frozen=True)
class BandRise:
    """A range of contiguous mel bands that rose the same way (steady or transient).

    Attributes:
        low_hz, high_hz: the range, in hertz (band_edges_hz).
        db_above_normal: the largest rise of its bands over their normal level, in dB (steady: the level
            averaged over the window; transient: the loudest frame's level).
        z: that rise in normal standard deviations, the largest of its bands.
        kind: 'steady' (the band's average level rose) or 'transient' (only its peaks rose).
        first_band, last_band: the mel band indices it covers (for drawing; not in the payload).
    """

    low_hz: float
    high_hz: float
    db_above_normal: float
    z: float
    kind: str
    first_band: int
    last_band: int

    def to_payload(self) -> dict[str, Any]:
        return {
            "low_hz": round(self.low_hz),
            "high_hz": round(self.high_hz),
            "db_above_normal": round(self.db_above_normal, 1),
            "z": round(min(self.z, MAX_Z), 1),
            "kind": self.kind,
        }


@dataclass(frozen=True)
class FaultGuess:
    """The supervised model's most probable fault class over the windows explained, and its mean probability."""

    label: str
    probability: float

    def to_payload(self) -> dict[str, Any]:
        return {"label": self.label, "probability": round(self.probability, 3)}


@dataclass(frozen=True)
class Explanation:
    """What an event message says changed.

    Attributes:
        bands: the ranges that rose, strongest first; None when the model records no normal band levels
            (a model made before acmon recorded them): the message then has no `bands` key.
        fault: the fault class (supervised models), else None.
        windows: scored windows behind it (since the previous message of the event).
    """

    bands: tuple[BandRise, ...] | None
    fault: FaultGuess | None
    windows: int

    def summary(self) -> str:
        """One line for logs: '2100-2900 Hz +9.5 dB steady; fault bearing 0.93' ('' when there is nothing to say)."""
        parts = [
            f"{round(b.low_hz)}-{round(b.high_hz)} Hz +{b.db_above_normal:.1f} dB {b.kind}" for b in self.bands or ()
        ]
        if self.fault is not None:
            parts.append(f"fault {self.fault.label} {self.fault.probability:.2f}")
        return "; ".join(parts)

    def payload_fields(self) -> dict[str, Any]:
        """The event payload's `bands` and `fault` keys (each only when the model can say it)."""
        fields: dict[str, Any] = {}
        if self.bands is not None:
            fields["bands"] = [b.to_payload() for b in self.bands]
        if self.fault is not None:
            fields["fault"] = self.fault.to_payload()
        return fields


def rises(params: FeatureParams, normal: BandLevels, mean_db: np.ndarray, peak_db: np.ndarray) -> tuple[BandRise, ...]:
    """The band ranges whose level stands out against the normal levels, strongest first (at most MAX_BANDS).

    Args:
        mean_db, peak_db: (n_mels,) band_summary's two arrays (or their average over several windows).

    Returns:
        Contiguous runs of bands of the same kind, each at least Z_THRESHOLD normal spreads and MIN_RISE_DB
        above normal; a band whose average rose is 'steady' (whatever its peaks did), one whose peaks alone
        rose is 'transient'.
    """
    steady_db = np.asarray(mean_db, dtype=np.float64) - normal.mean_db
    peak_rise_db = np.asarray(peak_db, dtype=np.float64) - normal.peak_mean_db
    steady_z = steady_db / np.maximum(normal.spread_db, MIN_SPREAD_DB)
    peak_z = peak_rise_db / np.maximum(normal.peak_spread_db, MIN_SPREAD_DB)
    steady = (steady_z >= Z_THRESHOLD) & (steady_db >= MIN_RISE_DB)
    transient = ~steady & (peak_z >= Z_THRESHOLD) & (peak_rise_db >= MIN_RISE_DB)
    kind = np.where(steady, 1, np.where(transient, 2, 0))
    if not kind.any():
        return ()
    db = np.where(steady, steady_db, peak_rise_db)
    z = np.where(steady, steady_z, peak_z)
    low_hz, high_hz = band_edges_hz(params)
    found = []
    # Runs of equal nonzero kind: where the kind changes, a run ends.
    bounds = np.flatnonzero(np.diff(np.concatenate([[0], kind, [0]])))
    for start, stop in zip(bounds[:-1], bounds[1:]):
        if kind[start] == 0:
            continue
        found.append(
            BandRise(
                float(low_hz[start]),
                float(high_hz[stop - 1]),
                float(db[start:stop].max()),
                float(z[start:stop].max()),
                STEADY if kind[start] == 1 else TRANSIENT,
                int(start),
                int(stop - 1),
            )
        )
    found.sort(key=lambda b: -b.z)
    return tuple(found[:MAX_BANDS])


class EventExplainer:
    """Collects the scored windows of an open event and explains them at each start and update message.

    Per window it adds up each band's frame sum and loudest frame, the window's level and (supervised
    models) the class probabilities: a sum and a max over the frames the pipeline already has, 10 to 20 us
    against the front end's 160 us. take() explains the windows added since the previous take() and starts
    afresh, so an update says what the last minute sounded like.
    """

    def __init__(self, params: FeatureParams, normal: BandLevels | None, labels: Sequence[str] = ()):
        if normal is not None and normal.mean_db.shape != (params.n_mels,):
            raise ValueError(f"normal band levels for {normal.mean_db.shape} bands, the front end has {params.n_mels}")
        self.params = params
        self.normal = normal
        self.labels = tuple(labels)
        self._sums = np.zeros(params.n_mels)  # per band: the sum over windows of its frames' sum, dB
        self._peaks = np.zeros(params.n_mels)  # per band: the sum over windows of its loudest frame, dB
        self._total = 0.0  # the sum of all frames of all bands of all windows, dB
        self._probabilities = np.zeros(len(self.labels))
        self._windows = 0

    def reset(self) -> None:
        self._sums[:] = 0.0
        self._peaks[:] = 0.0
        self._total = 0.0
        self._probabilities[:] = 0.0
        self._windows = 0

    def add(self, logmel: np.ndarray, output: np.ndarray | None) -> None:
        """One scored window of the event: its log-mel frames (before normalization) and the model's output.

        The average of band_summary over the windows is linear in their sums, maxima and levels, so only
        those are kept: a sum and a max over the frames per window (see band_summary on the float32 sum).
        """
        if self.normal is not None:
            sums = logmel.sum(axis=0)
            self._sums += sums
            self._peaks += logmel.max(axis=0)
            self._total += float(sums.sum())
        if self.labels and output is not None:
            self._probabilities += np.asarray(output, dtype=np.float64).reshape(-1)[: len(self.labels)]
        self._windows += 1

    def band_averages(self) -> tuple[np.ndarray, np.ndarray] | None:
        """band_summary's two arrays averaged over the windows added since the last take(); None before any."""
        n = self._windows
        if n == 0:
            return None
        frames, n_mels = self.params.patch_shape
        level = self._total / (n * frames * n_mels)  # the windows' mean level, averaged
        return self._sums / (n * frames) - level, self._peaks / n - level

    def take(self) -> Explanation | None:
        """The explanation of the windows added since the last take(), or None if none was added."""
        n = self._windows
        if n == 0:
            return None
        averages = self.band_averages()
        bands = rises(self.params, self.normal, *averages) if self.normal is not None and averages else None
        fault = None
        if len(self.labels) > 1:
            p = self._probabilities / n
            k = 1 + int(np.argmax(p[1:]))  # label 0 is 'normal': name the most probable fault
            fault = FaultGuess(self.labels[k], float(np.clip(p[k], 0.0, 1.0)))
        self.reset()
        return Explanation(bands, fault, n)

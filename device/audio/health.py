"""Device health: input level, clipping, DC offset, dead microphone, damaged samples, real-time factor, CPU
temperature and the daemon's own faults (storage, publisher, internal errors)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .audio_io import MAX_SAMPLE_MAGNITUDE

logger = logging.getLogger(__name__)

FAULT_MICROPHONE_DEAD = "microphone_dead"
FAULT_MICROPHONE_FLATLINE = "microphone_flatline"
FAULT_STREAM_ERROR = "stream_error"
FAULT_CLIPPING = "clipping"
FAULT_FALLING_BEHIND = "falling_behind"
FAULT_DC_OFFSET = "dc_offset"
# NaN, infinite or absurd samples (a broken converter or driver): those windows are not scored.
FAULT_DAMAGED_AUDIO = "damaged_audio"
# The state directory cannot be written: an evidence clip, the open-alarm record or calibration.yaml
# (disk full, read-only, a file in the way). Alarms are still raised and published.
FAULT_STORAGE = "storage"
# The MQTT publisher stopped making progress: the process exits shortly after (systemd restarts it).
FAULT_PUBLISHER = "publisher"
# A command or the calibration hit an unexpected error (a bug, logged with its traceback); the
# analysis went on. Cleared when a later command or calibration succeeds.
FAULT_INTERNAL_ERROR = "internal_error"

# A sample at or beyond this magnitude counts as clipped (int16 full scale is 32767/32768).
CLIP_LEVEL = 0.999
# A block whose samples vary by less than this (peak to peak) is flat: a stuck converter
# repeats one value, which is not digital silence but carries no sound either.
FLAT_PEAK_TO_PEAK = 1e-6
THERMAL_ROOT = Path("/sys/class/thermal")


@dataclass(frozen=True)
class BlockLevels:
    """Sums over one block of samples, to be accumulated over a telemetry period."""

    n: int
    sum: float
    sum_squares: float
    clipped: int
    silent: bool  # every sample exactly 0
    flat: bool  # not silent, but no variation
    damaged: int = 0  # samples that are NaN, infinite or beyond MAX_SAMPLE_MAGNITUDE (left out of the sums)


def block_levels(block: np.ndarray) -> BlockLevels:
    """Level statistics of one block of mono float samples (full scale 1.0).

    The common clean block costs four passes over its float32 samples and no copy (min, max, sum, sum of
    squares); clipping is counted only when a sample reaches CLIP_LEVEL, and damaged samples (NaN, infinite,
    absurd) take the slower path that leaves them out.
    """
    x = np.asarray(block)
    if x.size == 0:
        return BlockLevels(0, 0.0, 0.0, 0, False, False)
    if x.dtype != np.float32:
        x = x.astype(np.float32)
    lo, hi = float(x.min()), float(x.max())
    if not (-MAX_SAMPLE_MAGNITUDE <= lo and hi <= MAX_SAMPLE_MAGNITUDE):  # NaN fails this too
        return _damaged_block_levels(x)
    silent = lo == 0.0 and hi == 0.0
    clipped = int(np.count_nonzero(np.abs(x) >= CLIP_LEVEL)) if max(hi, -lo) >= CLIP_LEVEL else 0
    return BlockLevels(
        int(x.size),
        float(x.sum(dtype=np.float64)),
        float(np.dot(x, x)),
        clipped,
        silent,
        not silent and hi - lo < FLAT_PEAK_TO_PEAK,
    )


def _damaged_block_levels(block: np.ndarray) -> BlockLevels:
    """block_levels of a block holding NaN, infinite or absurd samples: those count as damaged and as 0."""
    x = np.asarray(block, dtype=np.float64)
    magnitude = np.abs(x)
    sound = magnitude <= MAX_SAMPLE_MAGNITUDE
    damaged = int(x.size - np.count_nonzero(sound))
    x, magnitude = np.where(sound, x, 0.0), np.where(sound, magnitude, 0.0)
    silent = not np.any(x)
    return BlockLevels(
        int(x.size),
        float(x.sum()),
        float(np.dot(x, x)),
        int(np.count_nonzero(magnitude >= CLIP_LEVEL)),
        silent,
        not silent and float(np.ptp(x)) < FLAT_PEAK_TO_PEAK,
        damaged,
    )


def power_dbfs(mean_square: float) -> float | None:
    """10*log10 of a mean square (full scale 1.0), or None for no signal at all."""
    return 10.0 * math.log10(mean_square) if mean_square > 0 else None


def read_cpu_temperature_c(root: Path = THERMAL_ROOT) -> float | None:
    """CPU temperature in degrees Celsius from the kernel's thermal zones, or None where there is none.

    Prefers a zone whose type names the CPU (the Pi's 'cpu-thermal', x86's
    'x86_pkg_temp'); otherwise the first readable zone.
    """
    zones = sorted(root.glob("thermal_zone*"))
    readings: list[tuple[bool, float]] = []
    for zone in zones:
        try:
            kind = (zone / "type").read_text().strip().lower()
            milli = int((zone / "temp").read_text().strip())
        except (OSError, ValueError):
            continue
        readings.append(("cpu" in kind or "pkg" in kind or "soc" in kind, milli / 1000.0))
    if not readings:
        return None
    preferred = [t for is_cpu, t in readings if is_cpu]
    return preferred[0] if preferred else readings[0][1]


@dataclass
class Fault:
    """An active fault: what, since when (wall clock, seconds since the epoch) and a human detail."""

    fault: str
    since: float
    detail: str


@dataclass
class _Period:
    """Accumulators for one telemetry period."""

    samples: int = 0
    total: float = 0.0
    squares: float = 0.0
    clipped: int = 0
    processing_seconds: float = 0.0
    windows: int = 0
    scored: int = 0
    score_sum: float = 0.0
    score_max: float | None = None
    dropped: int = 0
    damaged: int = 0


# Health checks' defaults, declared once: HealthMonitor and the config's `health:` section
# (device/settings/config.py HealthConfig) both take them from here.
DEFAULT_TELEMETRY_SECONDS = 60.0
DEFAULT_SILENCE_SECONDS = 10.0
DEFAULT_CLIPPING_FAULT_RATIO = 0.01
DEFAULT_DC_OFFSET_FAULT = 0.1


@dataclass
class HealthMonitor:
    """Watches the audio and the analysis; reports telemetry per period and a set of active faults.

    Pure apart from the injected clocks: feed add_block() with every block (and
    the time analysing it took), add_window() with every window score. Periods
    are measured in audio time, so a replay gives the same telemetry as the
    live microphone.

    Attributes:
        sample_rate_hz: rate of the blocks.
        telemetry_seconds: audio seconds per telemetry period.
        silence_seconds: digital silence or a flat line lasting this long is a fault.
        clipping_fault_ratio: clipped fraction of a period that is a fault.
        dc_offset_fault: |mean| of a period that is a fault.
    """

    sample_rate_hz: int
    telemetry_seconds: float = DEFAULT_TELEMETRY_SECONDS
    silence_seconds: float = DEFAULT_SILENCE_SECONDS
    clipping_fault_ratio: float = DEFAULT_CLIPPING_FAULT_RATIO
    dc_offset_fault: float = DEFAULT_DC_OFFSET_FAULT
    wall_clock: Callable[[], float] = time.time
    faults: dict[str, Fault] = field(default_factory=dict)
    dropped_blocks: int = 0
    _period: _Period = field(default_factory=_Period)
    _silent_run: int = 0
    _flat_run: int = 0
    _changed: bool = True  # the first health message goes out at start

    # -- inputs -----------------------------------------------------------

    def add_block(self, block: np.ndarray, processing_seconds: float = 0.0) -> None:
        """Account for one block of audio and the time the pipeline took to analyse it."""
        lv = block_levels(block)
        p = self._period
        p.samples += lv.n
        p.total += lv.sum
        p.squares += lv.sum_squares
        p.clipped += lv.clipped
        p.damaged += lv.damaged
        p.processing_seconds += processing_seconds
        self.clear(FAULT_STREAM_ERROR)  # audio is flowing again
        self._silent_run = self._silent_run + lv.n if lv.silent else 0
        self._flat_run = self._flat_run + lv.n if lv.flat else 0
        limit = self.silence_seconds * self.sample_rate_hz
        self._set_if(
            self._silent_run >= limit,
            FAULT_MICROPHONE_DEAD,
            f"digital silence for {self._silent_run / self.sample_rate_hz:.0f} s: microphone unplugged or muted?",
        )
        self._set_if(
            self._flat_run >= limit,
            FAULT_MICROPHONE_FLATLINE,
            f"constant samples for {self._flat_run / self.sample_rate_hz:.0f} s: the converter is stuck",
        )

    def add_window(self, score: float | None) -> None:
        """Account for one analysis window's score (None: skipped by the level gate)."""
        p = self._period
        p.windows += 1
        if score is not None:
            p.scored += 1
            p.score_sum += score
            p.score_max = score if p.score_max is None else max(p.score_max, score)

    def add_dropped_blocks(self, n: int) -> None:
        """Blocks the source had to drop since the last call (analysis too slow): a falling-behind fault."""
        if n > 0:
            self.dropped_blocks += n
            self._period.dropped += n
            self.set(FAULT_FALLING_BEHIND, f"{n} audio block(s) dropped: analysis cannot keep up")

    def set(self, fault: str, detail: str) -> None:
        """Raise a fault (or refresh its detail); its 'since' is kept while it stays active."""
        if fault not in self.faults:
            logger.warning("fault %s: %s", fault, detail)
            self.faults[fault] = Fault(fault, self.wall_clock(), detail)
            self._changed = True
        else:
            self.faults[fault].detail = detail

    def clear(self, fault: str) -> None:
        if self.faults.pop(fault, None) is not None:
            logger.info("fault %s cleared", fault)
            self._changed = True

    def _set_if(self, condition: bool, fault: str, detail: str) -> None:
        if condition:
            self.set(fault, detail)
        else:
            self.clear(fault)

    # -- outputs ----------------------------------------------------------

    def take_changed(self) -> bool:
        """True once after the set of faults changed (time to publish health)."""
        changed, self._changed = self._changed, False
        return changed

    @property
    def telemetry_due(self) -> bool:
        return self._period.samples >= self.telemetry_seconds * self.sample_rate_hz

    def take_telemetry(self) -> dict[str, float | int | None]:
        """Close the current period: its statistics, with period faults (clipping, DC) updated.

        Returns:
            level_dbfs, clipping_ratio, dc_offset, score_mean, score_max, windows,
            scored_windows, realtime_factor (analysis time / audio time: < 1 keeps up),
            dropped_blocks (running total), damaged_samples (this period), audio_seconds.
        """
        p, self._period = self._period, _Period()
        n = max(p.samples, 1)
        audio_seconds = p.samples / self.sample_rate_hz
        clipping = p.clipped / n
        dc = p.total / n
        self._set_if(
            p.samples > 0 and clipping > self.clipping_fault_ratio,
            FAULT_CLIPPING,
            f"{100 * clipping:.1f} % of samples clipped: lower the input gain",
        )
        self._set_if(
            p.samples > 0 and abs(dc) > self.dc_offset_fault,
            FAULT_DC_OFFSET,
            f"mean sample value {dc:+.3f}: faulty microphone or preamp",
        )
        self._set_if(
            p.damaged > 0,
            FAULT_DAMAGED_AUDIO,
            f"{p.damaged} NaN, infinite or absurd sample(s) in the last period: a broken converter or driver; "
            "windows holding them are not scored",
        )
        rtf = p.processing_seconds / audio_seconds if audio_seconds > 0 and p.processing_seconds > 0 else None
        # Live audio arrives in real time: analysis slower than that, or blocks dropped, falls behind.
        self._set_if(
            p.dropped > 0 or (rtf is not None and rtf > 1.0),
            FAULT_FALLING_BEHIND,
            f"{p.dropped} block(s) dropped, analysis at {rtf or 0:.2f}x the audio's duration",
        )
        return {
            "level_dbfs": None if p.samples == 0 else _round(power_dbfs(p.squares / n), 2),
            "clipping_ratio": round(clipping, 6),
            "dc_offset": round(dc, 6),
            "score_mean": _round(p.score_sum / p.scored if p.scored else None, 6),
            "score_max": _round(p.score_max, 6),
            "windows": p.windows,
            "scored_windows": p.scored,
            "realtime_factor": _round(rtf, 5),
            "dropped_blocks": self.dropped_blocks,
            "damaged_samples": p.damaged,
            "audio_seconds": round(audio_seconds, 3),
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)

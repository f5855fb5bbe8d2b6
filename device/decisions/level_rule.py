"""The level-only alarm rule: chosen 1/3-octave bands rising a set number of dB above the site's commissioned
normal, with patience, hysteresis and cooldown; no model involved (no I/O).

Each level frame (device/analysis/levels.py) gives the rule one number, the most any chosen band lies
above its normal, in dB; a Detector turns that series into start/update/end events as it does for model
scores, with threshold = rise_db and release at rise_db - hysteresis_db.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..analysis.levels import LevelFrame
from .detector import Detector, DetectorSettings, Transition

RULE_LEVEL = "level"


@dataclass(frozen=True)
class LevelRuleSettings:
    """What the rule watches.

    Attributes:
        band_indices: positions of the chosen bands in the meter's band table.
        bands_hz: their nominal centres (for messages).
        normal_db: their commissioned normal levels, dBFS.
        detector: the decision rules (threshold = rise_db, off_threshold = rise_db - hysteresis_db, in dB).
    """

    band_indices: tuple[int, ...]
    bands_hz: tuple[float, ...]
    normal_db: tuple[float, ...]
    detector: DetectorSettings


def level_rule_settings(
    table_nominal_hz: Sequence[float],
    bands_hz: Sequence[float],
    normal_db: Mapping[float, float],
    rise_db: float,
    hysteresis_db: float,
    patience_frames: int,
    cooldown_seconds: float,
    update_seconds: float,
) -> LevelRuleSettings:
    """Settings from the config's values.

    Raises:
        ValueError: a band the meter does not measure (above the Nyquist frequency or outside levels.fmin_hz
            .. fmax_hz), or one without a commissioned normal; one line.
    """
    missing = [b for b in bands_hz if b not in table_nominal_hz]
    if missing:
        raise ValueError(
            f"band {missing[0]:g} Hz is not measured (bands measured: {table_nominal_hz[0]:g} to "
            f"{table_nominal_hz[-1]:g} Hz; see levels.fmin_hz, levels.fmax_hz and the sample rate)"
        )
    without = [b for b in bands_hz if b not in normal_db]
    if without:
        raise ValueError(f"band {without[0]:g} Hz has no commissioned normal level (levels.normal_db)")
    settings = DetectorSettings(
        threshold=rise_db,
        patience_windows=patience_frames,
        off_threshold=rise_db - hysteresis_db if hysteresis_db > 0 else None,
        cooldown_seconds=cooldown_seconds,
        update_seconds=update_seconds,
    )
    return LevelRuleSettings(
        tuple(list(table_nominal_hz).index(b) for b in bands_hz),
        tuple(bands_hz),
        tuple(float(normal_db[b]) for b in bands_hz),
        settings,
    )


class LevelRule:
    """The rule over one stream: feed every level frame in order with update()."""

    def __init__(self, settings: LevelRuleSettings):
        self.settings = settings
        self.detector = Detector(settings.detector, rule=RULE_LEVEL)
        self._indices = np.asarray(settings.band_indices)
        self._normal = np.asarray(settings.normal_db)
        self.last_excess_db: float | None = None
        self.last_band_hz: float | None = None
        self.last_index = -1
        self.last_seconds = 0.0

    def reset(self) -> None:
        """A new stream: fresh decisions (stream time restarts at 0); close() the previous stream first."""
        self.detector = Detector(self.settings.detector, rule=RULE_LEVEL)
        self.last_index, self.last_seconds = -1, 0.0

    def excess_db(self, frame: LevelFrame) -> tuple[float, float]:
        """(dB the chosen band furthest above its normal lies above it, that band's nominal centre)."""
        above = 10.0 * np.log10(frame.mean_square[self._indices]) - self._normal
        worst = int(np.argmax(above))
        return float(above[worst]), self.settings.bands_hz[worst]

    def update(self, frame: LevelFrame) -> list[Transition]:
        """Account for one frame; returns its transitions (the open event's band_hz follows the worst band)."""
        excess, band = self.excess_db(frame)
        self.last_excess_db, self.last_band_hz = excess, band
        self.last_index, self.last_seconds = frame.index, frame.end_seconds
        transitions = self.detector.update(frame.index, frame.end_seconds, excess)
        if self.detector.active is not None:
            self.detector.active.band_hz = band
        for t in transitions:
            t.event.band_hz = band
        return transitions

    def mute(self, until_seconds: float) -> list[Transition]:
        return self.detector.mute(until_seconds, max(self.last_index, 0), self.last_seconds)

    def end(self, reason: str | None) -> list[Transition]:
        """End the open event now (schedule, reload, end of stream)."""
        return self.detector.end_now(max(self.last_index, 0), self.last_seconds, reason)

"""Turn per-window anomaly scores into alarm events: patience, hysteresis and cooldown, with no I/O."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class DetectorSettings:
    """Decision rules, all in windows or seconds of stream time.

    Attributes:
        threshold: a window whose score exceeds this counts as anomalous.
        patience_windows: consecutive anomalous windows needed to start an event.
        release_ratio: an event ends after patience_windows consecutive windows
            scoring below threshold * release_ratio (hysteresis: < 1 keeps a
            borderline fault from toggling the alarm on and off).
        cooldown_seconds: after an event ends, no new event starts for this long.
    """

    threshold: float
    patience_windows: int = 2
    release_ratio: float = 0.9
    cooldown_seconds: float = 30.0

    def __post_init__(self) -> None:
        if not self.threshold > 0:
            raise ValueError(f"threshold must be positive (got {self.threshold})")
        if self.patience_windows < 1:
            raise ValueError(f"patience_windows must be >= 1 (got {self.patience_windows})")
        if not 0 < self.release_ratio <= 1:
            raise ValueError(f"release_ratio must be in (0, 1] (got {self.release_ratio})")
        if self.cooldown_seconds < 0:
            raise ValueError(f"cooldown_seconds must be >= 0 (got {self.cooldown_seconds})")


@dataclass
class Event:
    """An alarm, from its start to its end.

    Times are stream time in seconds (the end of the window concerned), so a
    replayed file and the live microphone produce the same events.
    """

    event_id: str
    start_seconds: float
    start_window: int
    peak_score: float
    score_sum: float = 0.0
    n_windows: int = 0
    end_seconds: float | None = None
    end_window: int | None = None
    last_score: float = 0.0

    @property
    def mean_score(self) -> float:
        return self.score_sum / self.n_windows if self.n_windows else 0.0

    @property
    def duration_seconds(self) -> float:
        return 0.0 if self.end_seconds is None else self.end_seconds - self.start_seconds


@dataclass(frozen=True)
class Transition:
    """What update() reports: an event starting or ending at this window."""

    state: str  # "start" or "end"
    event: Event
    window_index: int
    time_seconds: float
    score: float | None


@dataclass
class Detector:
    """Stateful decision rules over a stream of window scores; pure (no clock, no I/O).

    Feed every window in order with update(); skipped (gated) windows pass
    score=None. A gated window never counts toward starting an event, and it
    counts toward ending one: a machine that stops (or a window cut by a
    start or stop) must not hold an alarm open forever.
    """

    settings: DetectorSettings
    new_id: Callable[[], str] = field(default=lambda: uuid.uuid4().hex)
    _above: int = 0
    _below: int = 0
    _event: Event | None = None
    _cooldown_until: float = float("-inf")

    @property
    def active(self) -> Event | None:
        return self._event

    def update(self, window_index: int, time_seconds: float, score: float | None) -> list[Transition]:
        """Account for one window.

        Args:
            window_index: the window's index in the stream.
            time_seconds: stream time at the end of the window, in seconds.
            score: the window's anomaly score, or None if the window was not scored.

        Returns:
            The transitions this window caused (start, end, or none).
        """
        s = self.settings
        if score is None:
            self._above = 0
            if self._event is None:
                return []
            self._below += 1
            return [self._end(window_index, time_seconds, None)] if self._below >= s.patience_windows else []
        if self._event is None:
            self._above = self._above + 1 if score > s.threshold else 0
            if self._above >= s.patience_windows and time_seconds >= self._cooldown_until:
                self._event = Event(self.new_id(), time_seconds, window_index, score)
                self._below = 0
                self._add(score)
                return [Transition("start", self._event, window_index, time_seconds, score)]
            return []
        self._add(score)
        self._below = self._below + 1 if score < s.threshold * s.release_ratio else 0
        if self._below >= s.patience_windows:
            return [self._end(window_index, time_seconds, score)]
        return []

    def close(self, window_index: int, time_seconds: float) -> list[Transition]:
        """End the open event, if any (end of stream or shutdown)."""
        if self._event is None:
            return []
        return [self._end(window_index, time_seconds, None)]

    def _add(self, score: float) -> None:
        ev = self._event
        assert ev is not None
        ev.n_windows += 1
        ev.score_sum += score
        ev.peak_score = max(ev.peak_score, score)
        ev.last_score = score

    def _end(self, window_index: int, time_seconds: float, score: float | None) -> Transition:
        ev = self._event
        assert ev is not None
        ev.end_seconds, ev.end_window = time_seconds, window_index
        self._event = None
        self._above = self._below = 0
        self._cooldown_until = time_seconds + self.settings.cooldown_seconds
        return Transition("end", ev, window_index, time_seconds, score)

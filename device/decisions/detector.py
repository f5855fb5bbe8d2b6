"""Turn per-window anomaly scores into alarm events: smoothing, patience, hysteresis, cooldown, updates
and muting, with no I/O."""

from __future__ import annotations

import collections
import dataclasses
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from ..analysis.explain import Explanation

Smoothing = Literal["mean", "median", "max"]
SMOOTHING_METHODS: tuple[str, ...] = ("mean", "median", "max")
_REDUCERS: dict[str, Callable[[Sequence[float]], float]] = {
    "mean": lambda v: float(np.mean(v)),
    "median": lambda v: float(np.median(v)),
    "max": lambda v: float(np.max(v)),
}


# The decision rules' defaults, declared once: DetectorSettings and the config's `detector:` section
# (device/settings/config.py DetectorConfig) both take them from here.
DEFAULT_PATIENCE_WINDOWS = 2
DEFAULT_RELEASE_RATIO = 0.9
DEFAULT_COOLDOWN_SECONDS = 30.0
DEFAULT_SMOOTHING_WINDOWS = 1
DEFAULT_SMOOTHING: Smoothing = "mean"
DEFAULT_UPDATE_SECONDS = 60.0


@dataclass(frozen=True)
class DetectorSettings:
    """Decision rules, all in windows or seconds of stream time.

    Attributes:
        threshold: a window whose (smoothed) score exceeds this counts as anomalous.
        patience_windows: consecutive anomalous windows needed to start an event.
        release_ratio: an event ends after patience_windows consecutive windows
            scoring below threshold * release_ratio (hysteresis: < 1 keeps a
            borderline fault from toggling the alarm on and off).
        off_threshold: explicit release threshold; when set it replaces
            threshold * release_ratio. Must not exceed threshold.
        cooldown_seconds: after an event ends, no new event starts for this long.
        smoothing_windows: the decision score is the smoothing of the last K
            scored windows (1 = the window's own score).
        smoothing: how the last K scores are combined: mean, median or max.
        update_seconds: while an event is open, an 'update' transition every this
            many seconds of stream time; 0 = no updates.
    """

    threshold: float
    patience_windows: int = DEFAULT_PATIENCE_WINDOWS
    release_ratio: float = DEFAULT_RELEASE_RATIO
    cooldown_seconds: float = DEFAULT_COOLDOWN_SECONDS
    off_threshold: float | None = None
    smoothing_windows: int = DEFAULT_SMOOTHING_WINDOWS
    smoothing: Smoothing = DEFAULT_SMOOTHING
    update_seconds: float = DEFAULT_UPDATE_SECONDS

    def __post_init__(self) -> None:
        if not self.threshold > 0:
            raise ValueError(f"threshold must be positive (got {self.threshold})")
        if self.patience_windows < 1:
            raise ValueError(f"patience_windows must be >= 1 (got {self.patience_windows})")
        if not 0 < self.release_ratio <= 1:
            raise ValueError(f"release_ratio must be in (0, 1] (got {self.release_ratio})")
        if self.cooldown_seconds < 0:
            raise ValueError(f"cooldown_seconds must be >= 0 (got {self.cooldown_seconds})")
        if self.off_threshold is not None and not 0 < self.off_threshold <= self.threshold:
            raise ValueError(f"off_threshold must be in (0, threshold={self.threshold}] (got {self.off_threshold})")
        if self.smoothing_windows < 1:
            raise ValueError(f"smoothing_windows must be >= 1 (got {self.smoothing_windows})")
        if self.smoothing not in SMOOTHING_METHODS:
            raise ValueError(f"smoothing must be one of {SMOOTHING_METHODS} (got {self.smoothing!r})")
        if self.update_seconds < 0:
            raise ValueError(f"update_seconds must be >= 0 (got {self.update_seconds})")

    @property
    def release_threshold(self) -> float:
        """The score an open event must fall below (patience_windows times in a row) to end."""
        return self.off_threshold if self.off_threshold is not None else self.threshold * self.release_ratio


def smooth_series(
    scores: Iterable[float | None], smoothing_windows: int, smoothing: str = "mean"
) -> list[float | None]:
    """The decision scores the Detector computes, for a whole series at once (calibration uses it).

    A gated window (None) stays None and restarts the smoothing history: audio
    on either side of a gap is not averaged together.
    """
    smoother = _Smoother(smoothing_windows, smoothing)
    return [smoother.push(s) for s in scores]


class _Smoother:
    """Running mean, median or max of the last K scores; None (a gated window) clears it."""

    def __init__(self, k: int, method: str):
        self._recent: collections.deque[float] = collections.deque(maxlen=k)
        self._reduce = _REDUCERS[method]

    def push(self, score: float | None) -> float | None:
        if score is None:
            self._recent.clear()
            return None
        self._recent.append(float(score))
        return self._reduce(self._recent) if len(self._recent) > 1 else float(score)


@dataclass
class Event:
    """An alarm, from its start to its end.

    Times are stream time in seconds (the end of the window concerned), so a
    replayed file and the live microphone produce the same events. Scores are
    decision (smoothed) scores.
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
    last_seconds: float = 0.0
    evidence: str | None = None  # evidence file name, set by whoever records it
    evidence_withheld: str | None = None  # why the clip was not kept (the speech guard), then evidence is None
    rule: str = "model"  # what raised it: "model" (anomaly scores) or "level" (decisions/level_rule.py)
    band_hz: float | None = None  # level rule: the chosen band furthest above its normal, at the latest message
    # What changed (device/analysis/explain.py Explanation), set by the pipeline at each start and update.
    explanation: Explanation | None = None

    @property
    def mean_score(self) -> float:
        return self.score_sum / self.n_windows if self.n_windows else 0.0

    @property
    def duration_seconds(self) -> float:
        """Seconds from the start to the end (or, while open, to the last window seen)."""
        end = self.end_seconds if self.end_seconds is not None else self.last_seconds
        return max(0.0, end - self.start_seconds)


@dataclass(frozen=True)
class Transition:
    """What update() reports about an event at this window."""

    state: str  # "start", "update" or "end"
    event: Event
    window_index: int
    time_seconds: float
    score: float | None
    reason: str | None = None  # on an end the detector did not decide itself: "schedule" (outside operating hours)


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
    rule: str = "model"
    held: bool = False
    """No event may start while set (outside operating hours, another rule's alarm open); set by the caller
    before each update. Windows above the threshold still count, so a start deferred by it comes at once."""
    _above: int = 0
    _below: int = 0
    _event: Event | None = None
    _cooldown_until: float = float("-inf")
    _muted_until: float = float("-inf")
    _next_update: float = float("inf")
    _smoother: _Smoother = field(init=False)

    def __post_init__(self) -> None:
        self._smoother = _Smoother(self.settings.smoothing_windows, self.settings.smoothing)

    @property
    def active(self) -> Event | None:
        return self._event

    @property
    def muted_until(self) -> float:
        """Stream time until which no event starts (-inf when not muted)."""
        return self._muted_until

    def is_muted(self, time_seconds: float) -> bool:
        return time_seconds < self._muted_until

    def mute(self, until_seconds: float, window_index: int, time_seconds: float) -> list[Transition]:
        """Suppress events until stream time `until_seconds`; an open event ends now.

        Args:
            until_seconds: stream time the mute lasts to (a past time unmutes).
            window_index, time_seconds: the current window, for the end of an open event.
        """
        self._muted_until = until_seconds
        self._above = 0
        if self._event is not None and until_seconds > time_seconds:
            return [self._end(window_index, time_seconds, None)]
        return []

    def update(self, window_index: int, time_seconds: float, score: float | None) -> list[Transition]:
        """Account for one window.

        Args:
            window_index: the window's index in the stream.
            time_seconds: stream time at the end of the window, in seconds.
            score: the window's anomaly score, or None if the window was not scored.

        Returns:
            The transitions this window caused (start, update, end, or none).
        """
        s = self.settings
        score = self._smoother.push(score)
        if score is None:
            self._above = 0
            if self._event is None:
                return []
            self._event.last_seconds = time_seconds
            self._below += 1
            if self._below >= s.patience_windows:
                return [self._end(window_index, time_seconds, None)]
            return self._maybe_update(window_index, time_seconds, None)
        if self._event is None:
            self._above = self._above + 1 if score > s.threshold else 0
            ready = time_seconds >= self._cooldown_until and not self.is_muted(time_seconds) and not self.held
            if self._above >= s.patience_windows and ready:
                self._event = Event(
                    self.new_id(), time_seconds, window_index, score, last_seconds=time_seconds, rule=self.rule
                )
                self._below = 0
                self._add(score, time_seconds)
                self._next_update = time_seconds + s.update_seconds if s.update_seconds > 0 else float("inf")
                return [Transition("start", self._event, window_index, time_seconds, score)]
            return []
        self._add(score, time_seconds)
        self._below = self._below + 1 if score < s.release_threshold else 0
        if self._below >= s.patience_windows:
            return [self._end(window_index, time_seconds, score)]
        return self._maybe_update(window_index, time_seconds, score)

    def close(self, window_index: int, time_seconds: float) -> list[Transition]:
        """End the open event, if any (end of stream or shutdown)."""
        if self._event is None:
            return []
        return [self._end(window_index, time_seconds, None)]

    def end_now(self, window_index: int, time_seconds: float, reason: str | None) -> list[Transition]:
        """End the open event, if any, for a reason outside the scores (e.g. "schedule"); cooldown follows."""
        if self._event is None:
            return []
        return [dataclasses.replace(self._end(window_index, time_seconds, None), reason=reason)]

    def _maybe_update(self, window_index: int, time_seconds: float, score: float | None) -> list[Transition]:
        if time_seconds < self._next_update:
            return []
        # Catch up in whole periods, so a long gap yields one update, not a burst.
        period = self.settings.update_seconds
        self._next_update += period * (1 + int((time_seconds - self._next_update) // period))
        assert self._event is not None
        return [Transition("update", self._event, window_index, time_seconds, score)]

    def _add(self, score: float, time_seconds: float) -> None:
        ev = self._event
        assert ev is not None
        ev.n_windows += 1
        ev.score_sum += score
        ev.peak_score = max(ev.peak_score, score)
        ev.last_score = score
        ev.last_seconds = time_seconds

    def _end(self, window_index: int, time_seconds: float, score: float | None) -> Transition:
        ev = self._event
        assert ev is not None
        ev.end_seconds, ev.end_window = time_seconds, window_index
        self._event = None
        self._above = self._below = 0
        self._next_update = float("inf")
        self._cooldown_until = time_seconds + self.settings.cooldown_seconds
        return Transition("end", ev, window_index, time_seconds, score)

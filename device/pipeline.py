"""The streaming analysis pipeline shared by live capture, replay, scoring, evaluation and training.

block -> RingBuffer -> analysis windows -> level gate -> front end -> int8 model -> Detector
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np

from .detector import Detector, DetectorSettings, Transition
from .features import FeatureParams, extract_patch, rms_dbfs, steady_level_dbfs
from .inference import AnomalyModel
from .ring_buffer import RingBuffer, Window

logger = logging.getLogger(__name__)


def iter_windows(blocks: Iterable[np.ndarray], params: FeatureParams, hop_samples: int | None = None) -> Iterator[Window]:
    """Analysis windows of a stream, cut by the same RingBuffer the device runs.

    Training calls this too, so its windows are the device's windows.

    Args:
        blocks: mono float32 blocks at params.sample_rate_hz (a whole clip is one block).
        hop_samples: step between windows; params.hop_samples unless given (training may
            cut denser windows from the same stream for more examples).
    """
    ring = RingBuffer(params.window_samples, hop_samples or params.hop_samples)
    for block in blocks:
        yield from ring.iter_push(block)


@dataclass(frozen=True)
class WindowResult:
    """The outcome of one analysis window.

    Attributes:
        index: window index in the stream.
        start_sample: absolute stream position of the window's first sample.
        end_seconds: stream time at the window's end, in seconds.
        rms_dbfs: the window's level, in dBFS.
        steady_dbfs: the level of its quiet part (see features.steady_level_dbfs), which the gate uses.
        score: anomaly score, or None if the window was below the level gate.
        transitions: events that started or ended at this window.
    """

    index: int
    start_sample: int
    end_seconds: float
    rms_dbfs: float
    steady_dbfs: float
    score: float | None
    transitions: tuple[Transition, ...] = ()


@dataclass
class Pipeline:
    """Ring buffer, front end, model and decisions for one stream at a time.

    The same object serves the microphone, replayed WAV files and `score`, so
    a replay is the live pipeline. Call reset() between unrelated streams
    (files): windows never straddle two files.
    """

    model: AnomalyModel
    settings: DetectorSettings
    min_rms_dbfs: float = -80.0
    history_seconds: float = 0.0
    on_window: Callable[[WindowResult], None] | None = None
    _ring: RingBuffer = field(init=False)
    _detector: Detector = field(init=False)

    def __post_init__(self) -> None:
        p = self.model.params
        history = int(self.history_seconds * p.sample_rate_hz)
        self._ring = RingBuffer(p.window_samples, p.hop_samples, capacity_samples=history)
        self._detector = Detector(self.settings)
        self._last_index = -1
        self._last_end_seconds = 0.0

    @property
    def params(self) -> FeatureParams:
        return self.model.params

    @property
    def ring(self) -> RingBuffer:
        return self._ring

    def reset(self) -> None:
        """Start a new stream (new file): empty ring buffer, fresh decisions (no cooldown carried over).

        Stream time restarts at 0, so detector state from the previous stream
        would be meaningless; close() the previous stream first to end its event.
        """
        self._ring.reset()
        self._detector = Detector(self.settings)
        self._last_index = -1
        self._last_end_seconds = 0.0

    def process(self, block: np.ndarray) -> list[WindowResult]:
        """Push one block of mono float32 samples at the model's rate; returns the windows it completed."""
        results = []
        p = self.params
        for window in self._ring.iter_push(block):
            level = rms_dbfs(window.samples)
            steady = steady_level_dbfs(window.samples, p.stft_hop_samples)
            score = None
            if steady >= self.min_rms_dbfs:
                score = self.model.score(extract_patch(window.samples, p))
            end_seconds = (window.start_sample + p.window_samples) / p.sample_rate_hz
            transitions = tuple(self._detector.update(window.index, end_seconds, score))
            result = WindowResult(window.index, window.start_sample, end_seconds, level, steady, score, transitions)
            self._last_index, self._last_end_seconds = window.index, end_seconds
            if self.on_window is not None:
                self.on_window(result)
            results.append(result)
        return results

    def close(self) -> list[Transition]:
        """End an open event (end of stream, shutdown)."""
        return self._detector.close(self._last_index, self._last_end_seconds)


def clip_score(scores: Iterable[float | None]) -> float | None:
    """One score for a whole clip: the mean of its scored windows (the DCASE convention).

    Returns None if no window of the clip was scored (all below the level gate).
    """
    values = [s for s in scores if s is not None]
    return float(np.mean(values)) if values else None

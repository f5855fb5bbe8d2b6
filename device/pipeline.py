"""The streaming analysis pipeline shared by live capture, replay, scoring, evaluation and training.

block -> RingBuffer -> analysis windows -> level gate -> front end -> int8 model -> Detector
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from .analysis.features import FeatureParams, FrameCache, compute_logmel, normalize, window_levels
from .analysis.inference import AnomalyModel
from .audio.audio_io import MAX_SAMPLE_MAGNITUDE
from .audio.ring_buffer import RingBuffer, Window
from .decisions.detector import Detector, DetectorSettings, Transition

logger = logging.getLogger(__name__)

NONFINITE_LOG_INTERVAL_SECONDS = 60.0
"""After the first warning of a stream about windows with NaN, infinite or absurd samples, at most one
more per this many seconds of wall-clock time (a broken source would otherwise log every window)."""


def iter_windows(
    blocks: Iterable[np.ndarray], params: FeatureParams, hop_samples: int | None = None
) -> Iterator[Window]:
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


def window_patches(windows: Iterable[Window], params: FeatureParams) -> list[np.ndarray]:
    """extract_patch of each window of one stream, the frames consecutive windows share computed once.

    The same values as extract_patch window by window (FrameCache), at about half the front end's cost
    for windows one hop apart; training cuts its clips' windows through this, as the Pipeline does.
    """
    return list(iter_patches(windows, params))


def iter_patches(windows: Iterable[Window], params: FeatureParams) -> Iterator[np.ndarray]:
    """window_patches one at a time, for a stream of any length (`python -m device score` of a classifier)."""
    cache = FrameCache(params)
    for w in windows:
        yield normalize(cache.logmel(w.samples, w.start_sample), params)


def logmel_image(samples: np.ndarray, params: FeatureParams) -> np.ndarray:
    """Log-mel frames of a whole clip, as the device computes them, for display.

    The clip is cut into consecutive non-overlapping analysis windows (iter_windows with
    hop = window_samples) and each window's compute_logmel frames are concatenated along time.
    A tail shorter than one window is dropped, as the device drops it. Within a window frames
    are stft_hop_samples apart; at a window boundary the step is window_samples - (n_frames - 1) *
    stft_hop_samples (512 samples with the defaults instead of 256), which a display ignores.

    Args:
        samples: float32 (n,), mono, at params.sample_rate_hz.

    Returns:
        float32 (n_windows * n_frames, n_mels) in dB re full scale, before normalization;
        (0, n_mels) if the clip is shorter than one window.
    """
    frames = [compute_logmel(w.samples, params) for w in iter_windows([samples], params, params.window_samples)]
    if not frames:
        return np.zeros((0, params.n_mels), dtype=np.float32)
    return np.concatenate(frames, axis=0)


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
        transitions: events that started, updated or ended at this window.
        model_score: the model's score even for a gated window when the pipeline
            scores every window (calibration); otherwise equal to score.
        model_output: the model's dequantized output, kept only while scoring every window (calibration
            learns the site's normal statistics from it); otherwise None.
        nonfinite: the window held a sample that is NaN, infinite or beyond audio_io.MAX_SAMPLE_MAGNITUDE;
            it was gated like a quiet window (score and model_score None) and its levels are those of
            the rest of its samples.
    """

    index: int
    start_sample: int
    end_seconds: float
    rms_dbfs: float
    steady_dbfs: float
    score: float | None
    transitions: tuple[Transition, ...] = ()
    model_score: float | None = None
    model_output: np.ndarray | None = None
    nonfinite: bool = False


@dataclass
class Pipeline:
    """Ring buffer, front end, model and decisions for one stream at a time.

    The same object serves the microphone, replayed WAV files and `score`, so
    a replay is the live pipeline. Call reset() between unrelated streams
    (files): windows never straddle two files. With score_all set (calibration),
    windows below the level gate are scored too, for WindowResult.model_score
    only: decisions still see them as gated.

    A window holding a sample that is NaN, infinite or beyond audio_io.MAX_SAMPLE_MAGNITUDE
    (a damaged file, a broken driver, a float stream gone wrong) is never scored, not even
    with score_all: it is gated like a quiet window (the detector sees no score, the score
    context is cleared) and counted in nonfinite_windows.

    While an event is open, each scored window's log-mel frames (already computed for the model)
    go to the model's EventExplainer (device/analysis/explain.py), and each start and update
    transition's event gets the explanation of the windows since the previous message
    (Event.explanation: the bands that rose, the fault class); windows outside events cost nothing.

    Attributes:
        nonfinite_windows: windows skipped for NaN, infinite or absurd samples since the
            pipeline was made; never reset (a counter for health and telemetry).
    """

    model: AnomalyModel
    settings: DetectorSettings
    min_rms_dbfs: float = -80.0
    history_seconds: float = 0.0
    on_window: Callable[[WindowResult], None] | None = None
    score_all: bool = False
    nonfinite_windows: int = field(default=0, init=False)
    _ring: RingBuffer = field(init=False)
    _detector: Detector = field(init=False)

    def __post_init__(self) -> None:
        p = self.model.params
        history = int(self.history_seconds * p.sample_rate_hz)
        self._ring = RingBuffer(p.window_samples, p.hop_samples, capacity_samples=history)
        self._detector = Detector(self.settings)
        self._score_state = self.model.new_score_state()
        self._explainer = self.model.new_explainer()
        self._frames = FrameCache(p)  # overlapping windows share their STFT frames: each computed once
        self._last_index = -1
        self._last_end_seconds = 0.0
        self._nonfinite_in_stream = 0
        self._nonfinite_logged = 0
        self._nonfinite_logged_at = 0.0

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
        self._frames.reset()
        self._detector = Detector(self.settings)
        self._score_state = self.model.new_score_state()
        self._last_index = -1
        self._last_end_seconds = 0.0
        self._nonfinite_in_stream = 0
        self._nonfinite_logged = 0

    @property
    def detector(self) -> Detector:
        return self._detector

    @property
    def stream_seconds(self) -> float:
        """Stream time at the end of the last analysed window, in seconds."""
        return self._last_end_seconds

    def mute(self, until_seconds: float) -> list[Transition]:
        """Suppress events until stream time until_seconds; ends an open event (see Detector.mute)."""
        return self._detector.mute(until_seconds, max(self._last_index, 0), self._last_end_seconds)

    def reconfigure(self, model: AnomalyModel, settings: DetectorSettings, min_rms_dbfs: float) -> list[Transition]:
        """Swap in a new model and decision rules mid-stream, keeping the audio history.

        The open event (if any) ends, as its scores were on the old scale; the mute stays.

        Raises:
            ValueError: the new model's feature parameters differ (the ring's windows would not fit).
        """
        if model.params != self.model.params:
            raise ValueError("the new model's feature parameters differ from the running model's: restart the service")
        ended = self.close()
        muted_until = self._detector.muted_until
        self.model, self.settings, self.min_rms_dbfs = model, settings, min_rms_dbfs
        self._detector = Detector(settings)
        self._score_state = model.new_score_state()
        self._explainer = model.new_explainer()
        self._detector.mute(muted_until, max(self._last_index, 0), self._last_end_seconds)
        return ended

    def process(self, block: np.ndarray) -> list[WindowResult]:
        """Push one block of mono float32 samples at the model's rate; returns the windows it completed."""
        results = []
        p = self.params
        for window in self._ring.iter_push(block):
            samples = window.samples
            # One pass for min and one for max: NaN propagates through both and fails either comparison,
            # so this catches NaN, infinities and absurd magnitudes at about 1 % of a window's cost.
            nonfinite = not (-MAX_SAMPLE_MAGNITUDE <= samples.min() and samples.max() <= MAX_SAMPLE_MAGNITUDE)
            if nonfinite:
                samples = self._count_nonfinite(window)
            level, steady = window_levels(samples, p.stft_hop_samples)
            gated = nonfinite or steady < self.min_rms_dbfs
            model_score, model_output, logmel, output = None, None, None, None
            if gated and self._score_state is not None:
                self._score_state.clear()  # the context never averages across a gap
            if not nonfinite and (not gated or self.score_all):
                # A gated window scored for calibration gets a throwaway state: it is not part of the stream's context.
                state = self._score_state if not gated else None
                logmel = self._frames.logmel(window.samples, window.start_sample)
                model_score, output = self.model.evaluate(normalize(logmel, p), state)
                model_output = output if self.score_all else None
            score = None if gated else model_score
            end_seconds = (window.start_sample + p.window_samples) / p.sample_rate_hz
            transitions = tuple(self._detector.update(window.index, end_seconds, score))
            if self._explainer is not None and (transitions or self._detector.active is not None):
                self._explain(transitions, logmel if score is not None else None, output)
            result = WindowResult(
                window.index,
                window.start_sample,
                end_seconds,
                level,
                steady,
                score,
                transitions,
                model_score,
                model_output,
                nonfinite,
            )
            self._last_index, self._last_end_seconds = window.index, end_seconds
            if self.on_window is not None:
                self.on_window(result)
            results.append(result)
        return results

    def _explain(
        self, transitions: tuple[Transition, ...], logmel: np.ndarray | None, output: np.ndarray | None
    ) -> None:
        """Add a scored window of an open event to the explainer; explain each start and update (see the class)."""
        explainer = self._explainer
        assert explainer is not None
        if any(t.state == "start" for t in transitions):
            explainer.reset()  # windows of an earlier event that ended without a message since
        if logmel is not None and self._detector.active is not None:
            explainer.add(logmel, output)
        for t in transitions:
            if t.state in ("start", "update"):
                explanation = explainer.take()
                if explanation is not None:  # an update at a gated window keeps the last explanation
                    t.event.explanation = explanation

    def close(self) -> list[Transition]:
        """End an open event (end of stream, shutdown)."""
        return self._detector.close(self._last_index, self._last_end_seconds)

    def _count_nonfinite(self, window: Window) -> np.ndarray:
        """Count a window that holds NaN, infinite or absurd samples, warn (rate-limited), return the rest.

        Returns:
            The window with those samples set to 0, so its levels describe the audio that is there
            (and never put NaN into telemetry).
        """
        self.nonfinite_windows += 1
        self._nonfinite_in_stream += 1
        x = window.samples
        bad = ~(np.abs(x) <= MAX_SAMPLE_MAGNITUDE)  # NaN compares False: counted as bad
        now = time.monotonic()
        if self._nonfinite_logged == 0 or now - self._nonfinite_logged_at >= NONFINITE_LOG_INTERVAL_SECONDS:
            p = self.params
            logger.warning(
                "window at %.2f s holds %d sample(s) that are NaN, infinite or beyond %g full scale: not scored "
                "(%d such window(s) in this stream, %d since start); the audio source is damaged",
                (window.start_sample + p.window_samples) / p.sample_rate_hz,
                int(np.count_nonzero(bad)),
                MAX_SAMPLE_MAGNITUDE,
                self._nonfinite_in_stream,
                self.nonfinite_windows,
            )
            self._nonfinite_logged += 1
            self._nonfinite_logged_at = now
        return np.where(bad, np.float32(0.0), x)


def clip_score(scores: Iterable[float | None]) -> float | None:
    """One score for a whole clip: the mean of its scored windows (the DCASE convention).

    Returns None if no window of the clip was scored (all below the level gate).
    """
    values = [s for s in scores if s is not None]
    return float(np.mean(values)) if values else None

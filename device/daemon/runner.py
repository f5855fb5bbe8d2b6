"""Wires config, model, pipeline, evidence, health and publisher together for `run`, `replay`, `score` and `calibrate`,
and supervises them: a worker that fails is contained and reported on health, or ends the process non-zero.

Over 500 lines on purpose: the Runner is the one owner of the stream's mutable state (model, pipeline,
threshold, mute, the calibration being collected), and the commands that change it run here, on the analysis
thread, between blocks, so that no lock is needed. What it says is device/daemon/outbox.py; a calibration's
arithmetic is calibrate.py, its guardrails guardrails.py, its files site_config.py.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import math
import queue
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..analysis.gaussian import Scorer
from ..analysis.inference import AnomalyModel
from ..analysis.levels import LevelFrame
from ..audio.health import (
    FAULT_INTERNAL_ERROR,
    FAULT_PUBLISHER,
    FAULT_STORAGE,
    HealthMonitor,
    read_cpu_temperature_c,
)
from ..audio.sources import Stream, open_source
from ..decisions.detector import DetectorSettings, Transition
from ..decisions.level_rule import RULE_LEVEL
from ..errors import AcmonError, AudioError
from ..evidence.clips import (
    EVIDENCE_CHUNK_BYTES,
    MAX_EVIDENCE_FILE_BYTES,
    EvidenceRecorder,
    default_evidence_directory,
    evidence_files,
    withheld_reason,
)
from ..mqtt.commands import check_args
from ..mqtt.payloads import asset_payload, health_payload, iso_utc, telemetry_payload
from ..pipeline import Pipeline, WindowResult, clip_score
from ..settings.config import feature_pins, parse_broker
from ..settings.schema import AcmonConfig
from ..settings.secret_files import resolve_mqtt_password
from ..state import OpenAlarmFile, open_alarm_path, read_small_file
from .calibrate import CalibrationSession, calibration_reply, decide_site_calibration
from .daemon_config import detector_settings, trusted_keys
from .guardrails import check_calibration_audio, check_threshold_change
from .labels import dataset_folder, false_alarm_clips, store_label
from .level_watch import LevelOnlyModel, LevelWatch, input_filters_record, make_powerline_meter
from .metrics import MetricsServer
from .outbox import Outbox
from .sdnotify import SystemdNotifier
from .site_config import (
    calibration_in_force,
    calibration_paths,
    levels_calibration_document,
    load_site_config,
    prune_site_statistics,
    save_site_calibration,
    write_calibration,
)
from .updates import ModelUpdates

logger = logging.getLogger(__name__)

Reply = Callable[..., None]  # reply(result: dict | None, error: str | None = None)
# Longest pause between checks of the stop event, commands and the watchdog while waiting to reopen a source.
WAIT_STEP_SECONDS = 0.25
# How long a failed publisher may stay failed before the process exits (non-zero, so systemd restarts
# it and the spool is delivered by the new process). Short against the unit's WatchdogSec=30: the
# watchdog pings stop at once, and a clean exit beats systemd's SIGABRT. A publisher that recovers
# within it (a momentary stall) clears the fault instead.
PUBLISHER_GRACE_SECONDS = 5.0
# Windows kept for the commissioning page's score chart (about 2 minutes at the default 0.512 s hop).
RECENT_WINDOWS = 240
# Audio the ring keeps when the page is on: its spectrogram (web.SPECTROGRAM_SECONDS) twice over: room for
# the blocks the analysis writes while the page's thread reads (64 KB of memory per second at 16 kHz).
WEB_HISTORY_SECONDS = 12.0


class WorkerFailure(AcmonError):
    """A worker the daemon cannot go on without failed (the MQTT publisher): exit non-zero so systemd restarts it."""


@dataclass
class StreamSummary:
    """Per-stream outcome, for `score` and for logs."""

    source: str
    windows: int = 0
    scored: int = 0
    scores: list[float] = field(default_factory=list)
    events: int = 0

    @property
    def score(self) -> float | None:
        return clip_score(self.scores)


class Runner:
    """One device: a model, the pipeline and, if configured, evidence, health and an MQTT publisher.

    Every way audio enters (microphone, WAV replay, stdin, calibration) ends in
    run_stream(), so replay exercises exactly the code that runs live. Commands
    (MQTT, SIGHUP) are queued from any thread and carried out on the analysis
    thread, between blocks.
    """

    def __init__(
        self,
        cfg: AcmonConfig,
        model_path: str | None = None,
        broker: str | None = None,
        use_mqtt: bool | None = None,
        events_out: TextIO | None = sys.stdout,
        runtime: str | None = None,
        config_path: str | None = None,
        evidence: bool = False,
        notifier: SystemdNotifier | None = None,
        alarm_state: bool | None = None,
    ):
        """See the class; alarm_state: record the open alarm in the state directory so a restart can end
        it (None = when events are published over MQTT, where a subscriber waits for the end)."""
        self.cfg = cfg
        self.config_path = config_path
        self.model_path = model_path
        self.runtime = runtime
        self.stop_event = threading.Event()
        self.started_monotonic = time.monotonic()
        self.last_period: dict[str, Any] | None = None  # the last telemetry period's figures (metrics)
        self.metrics: MetricsServer | None = None
        self.web: Any = None  # device/daemon/web.py's WebServer when web.enabled (imported only then)
        # The last windows as (wall time, score or None, level dBFS), for the commissioning page's chart.
        self.recent_windows: deque[tuple[float, float | None, float]] = deque(maxlen=RECENT_WINDOWS)
        self.windows_scored = 0  # windows with a score, and alarms started, since start (updates watch them)
        self.alarms_started = 0
        self.updates = ModelUpdates(self, cfg)
        self.model = self._load_first_model(cfg)
        self.settings = detector_settings(cfg, self.model)
        # The threshold of the config and calibration in force: set_threshold moves within a band around it.
        self.calibrated_threshold = self.settings.threshold
        params = self.model.params
        self.evidence: EvidenceRecorder | None = None
        if evidence:  # the daemon passes cfg.evidence.enabled; replays and scoring ask for it explicitly
            e = cfg.evidence
            directory = e.directory or default_evidence_directory()
            self.evidence = EvidenceRecorder(
                directory,
                params,
                e.pre_roll_seconds,
                e.post_roll_seconds,
                e.quota_mb,
                e.max_clips,
                e.max_age_days,
                e.format,
                e.speech_guard,
                e.speech_guard_threshold,
            )
        self.pipeline = Pipeline(
            self.model,
            self.settings,
            min_rms_dbfs=self._gate(cfg, self.model),
            history_seconds=max(
                self.evidence.history_seconds if self.evidence else 0.0,
                WEB_HISTORY_SECONDS if cfg.web.enabled else 0.0,  # the page's spectrogram reads the ring
            ),
        )
        # Input filters, band levels, the level rule and operating hours (ConfigError: one line naming the key).
        self.levels = LevelWatch(cfg, params.sample_rate_hz)
        self.powerline = make_powerline_meter(cfg, params.sample_rate_hz)  # None unless powerline.enabled
        self.last_powerline: dict[str, Any] | None = None  # the last period's power-line figures (metrics)
        self._in_hours = True
        self._last_window_index = -1
        self.measure_levels = False  # measure band levels without MQTT too (tests, benchmarks)
        h = cfg.health
        self.health = HealthMonitor(
            params.sample_rate_hz,
            telemetry_seconds=h.telemetry_seconds,
            silence_seconds=h.silence_seconds,
            clipping_fault_ratio=h.clipping_fault_ratio,
            dc_offset_fault=h.dc_offset_fault,
        )
        self.notifier = notifier or SystemdNotifier()
        self.windows_total = 0
        self.last_score: float | None = None
        self.muted_until_wall = 0.0
        self.source_name = "none"  # the stream being analysed, named in events that commands end
        self._commands: queue.Queue[tuple[str, dict[str, Any], Reply]] = queue.Queue()
        self._calibration: CalibrationSession | None = None
        self._storage_errors: dict[str, str] = {}  # what cannot be written -> why (the storage fault's detail)
        self.publisher_grace_seconds = PUBLISHER_GRACE_SECONDS
        self._publisher_failed_since: float | None = None  # monotonic time the publisher was first seen failed
        self._failing = False  # exiting because a worker failed: leave open alarms to the next start
        publisher = None
        mqtt_wanted = cfg.mqtt.enabled if use_mqtt is None else use_mqtt
        if mqtt_wanted or broker:
            publisher = self._make_publisher(broker)
            publisher.set_command_handler(self.handle_command)
        if alarm_state is None:
            alarm_state = publisher is not None
        open_alarm = OpenAlarmFile(open_alarm_path(cfg.device.site, cfg.device.id)) if alarm_state else None
        self.outbox = Outbox(cfg.device.id, cfg.device.site, events_out, publisher, open_alarm, self._storage)
        d = cfg.device
        self.outbox.asset = asset_payload(d.asset_id, d.location, d.line_voltage_kv)
        logger.info(
            "model %s (%s %s, %s), threshold %.4g, window %.2f s, hop %.2f s",
            self.model.path,
            self.model.metadata.name,
            self.model.metadata.version,
            self.model.runtime.name,
            self.settings.threshold,
            params.window_seconds,
            params.hop_seconds,
        )

    def _load_first_model(self, cfg: AcmonConfig) -> AnomalyModel:
        """The model at start: --model, else an update's (the one before it if it no longer loads), else the config's."""
        try:
            return self._load_model(cfg)
        except AcmonError as exc:
            if self.model_path is not None or self.updates.active is None:
                raise
            self.updates.forget_active(f"it no longer loads: {exc}")
            return self._load_model(cfg)

    def _load_model(self, cfg: AcmonConfig) -> AnomalyModel:
        path = self.model_path or self.updates.model_path() or cfg.model.path
        return LevelOnlyModel(cfg) if path is None else self.load_model(cfg, path)

    @property
    def level_only(self) -> bool:
        """No model (model.path null): the level rule alone raises alarms; no window is scored."""
        return isinstance(self.model, LevelOnlyModel)

    @staticmethod
    def _gate(cfg: AcmonConfig, model: AnomalyModel) -> float:
        """The pipeline's level gate: the config's, or above any level without a model (nothing to score with)."""
        return math.inf if isinstance(model, LevelOnlyModel) else cfg.detector.min_rms_dbfs

    def load_model(self, cfg: AcmonConfig, path: str) -> AnomalyModel:
        """A model as this device runs it: checked against the config's pins and trusted keys, with its site statistics.

        Raises:
            AcmonError: it does not load or does not fit this device (one line naming the file).
        """
        model = AnomalyModel(
            path,
            runtime=self.runtime,
            expected_params=feature_pins(cfg),
            trusted_keys=trusted_keys(cfg),
        )
        model.require_anomaly_task()
        if cfg.model.site_statistics:  # load_site_config made it absolute (beside the file that named it)
            statistics = Path(cfg.model.site_statistics)
            model.use_site_statistics(Scorer.load(statistics), source=str(statistics))
            logger.info("scoring against the site's normal statistics in %s", statistics)
        return model

    def _make_publisher(self, broker: str | None):
        from ..mqtt import publisher as mqtt_publisher  # noqa: PLC0415 - paho only when MQTT is used

        m = self.cfg.mqtt
        host, port = parse_broker(broker, m.port) if broker else (m.host, m.port)
        password = resolve_mqtt_password(m) if m.username else None
        label = "level rule only" if self.level_only else f"{self.model.metadata.name} {self.model.metadata.version}"
        return mqtt_publisher.make_publisher(self.cfg, host=host, port=port, password=password, model_label=label)

    # -- lifecycle -----------------------------------------------------

    def __enter__(self) -> Runner:
        if self.outbox.publisher is not None:
            self.outbox.publisher.start()
        self.end_alarm_left_open()
        self.publish_model_state()
        m = self.cfg.metrics
        if m.enabled:
            self.metrics = MetricsServer(self, m.host, m.port)
            self.metrics.start()
        if self.cfg.web.enabled:
            from .web import WebServer  # noqa: PLC0415 - http.server only when the page is on

            self.web = WebServer(self, self.cfg.web)
            self.web.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT set the one stop event; SIGHUP queues a reload for the analysis thread."""

        def handle_stop(signum, frame) -> None:
            logger.info("received %s, stopping", signal.Signals(signum).name)
            self.stop_event.set()

        def handle_hup(signum, frame) -> None:
            logger.info("received SIGHUP: reloading the config and model")
            self.handle_command("reload", {}, _log_reply("reload (SIGHUP)"))

        signal.signal(signal.SIGTERM, handle_stop)
        signal.signal(signal.SIGINT, handle_stop)
        signal.signal(signal.SIGHUP, handle_hup)

    def close(self, flush_seconds: float = 10.0) -> int:
        """Flush and stop the publisher; returns the number of events not acknowledged by the broker.

        After a publisher failure nothing is flushed (nobody would deliver it): the publisher is
        stopped at once, and what it spooled is delivered by the next process.
        """
        self.notifier.stopping()
        self.notifier.close()
        if self.metrics is not None:
            self.metrics.stop()
            self.metrics = None
        if self.web is not None:
            self.web.stop()
            self.web = None
        publisher = self.outbox.publisher
        if publisher is None:
            return 0
        if self._failing:
            left = publisher.stats.pending
            publisher.stop(1.0)
            self.outbox.publisher = None
            logger.error(
                "%d event(s) not acknowledged: the MQTT publisher failed; those in the spool are delivered "
                "after the restart",
                left,
            )
            return left
        self._publish_state(force=True)
        delivered = publisher.flush(flush_seconds)
        left = publisher.stats.pending
        publisher.stop()
        self.outbox.publisher = None
        if not delivered:
            logger.error(
                "%d event(s) not delivered: the broker did not acknowledge them in %.0f s", left, flush_seconds
            )
        return left

    # -- streams -------------------------------------------------------

    def run_stream(
        self,
        name: str,
        blocks: Iterable,
        on_window: Callable[[WindowResult], None] | None = None,
        dropped_blocks: Callable[[], int] | None = None,
    ) -> StreamSummary:
        """Analyse one stream from start to end (or until stop), emitting events as they happen.

        Args:
            name: the stream's name in events and logs.
            blocks: mono float32 blocks at the model's rate.
            on_window: called with every window's result.
            dropped_blocks: the source's running count of blocks it dropped (microphone).

        Raises:
            AudioError: the source failed; open events are ended and evidence written first.
        """
        summary = StreamSummary(name)
        self.source_name = name
        self.pipeline.reset()
        self.levels.reset_stream()
        if self.powerline is not None:
            self.powerline.reset()
        self._last_window_index = -1
        self._reapply_mute()
        if self._calibration is not None:
            self._calibration.new_segment()
        dropped_seen = 0
        try:
            for block in blocks:
                started = time.perf_counter()
                results, frames = self._analyse(self.levels.filter_block(block))
                if self.powerline is not None:  # the unfiltered block: a notch would take the hum away
                    self.powerline.process(block)
                self.health.add_block(block, time.perf_counter() - started)
                if dropped_blocks is not None:
                    total = dropped_blocks()
                    self.health.add_dropped_blocks(total - dropped_seen)
                    dropped_seen = total
                for result in results:
                    self._account(result, summary, name)
                    if on_window is not None:
                        on_window(result)
                self._account_levels(frames, name)
                if self.evidence is not None:
                    self.evidence.poll(self.pipeline.ring)
                    self._storage("evidence", self.evidence.error)
                    self._mark_withheld()
                self._after_block()
                if self.stop_event.is_set():
                    break
        finally:
            # A failed publisher would lose the ends: the open-alarm record stays, and the next start ends them.
            if not self._failing:
                self._finish_filtered_stream(summary, name, on_window)
                for transition in self.pipeline.close():
                    self.emit(transition, name)
                if self.levels.rule is not None:
                    for transition in self.levels.rule.end(None):
                        self.emit(transition, name)
            if self.evidence is not None:
                self.evidence.flush(self.pipeline.ring)
                self._storage("evidence", self.evidence.error)
        if summary.windows == 0 and not self.stop_event.is_set():
            logger.warning(
                "%s: shorter than one analysis window (%.2f s): nothing analysed",
                name,
                self.model.params.window_seconds,
            )
        return summary

    def run_live(self, open_stream: Callable[[], Stream]) -> None:
        """Run a live source until stopped, reopening it with exponential backoff when it fails.

        A stream that delivered audio before failing is retried after
        health.reopen_min_seconds; each failure without audio doubles the wait up to
        health.reopen_max_seconds. The failure is a 'stream_error' fault until audio flows again.
        """
        h = self.cfg.health
        delay = h.reopen_min_seconds
        while not self.stop_event.is_set():
            before = self.windows_total
            stream = open_stream()
            try:
                self.run_stream(stream.name, stream.blocks(), dropped_blocks=functools.partial(_lost_blocks, stream))
                return  # a stream that simply ends (stdin closed) or a stop request
            except AudioError as exc:
                self.health.set("stream_error", str(exc))
                if self.windows_total > before:
                    delay = h.reopen_min_seconds
                logger.error("%s; reopening in %.1f s", exc, delay)
                self._after_block()
                self.wait(delay)
                delay = min(delay * 2, h.reopen_max_seconds)

    def wait(self, seconds: float) -> None:
        """Wait (for a reopen) while still serving commands and the watchdog: the loop is alive, only idle."""
        deadline = time.monotonic() + seconds
        while not self.stop_event.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.stop_event.wait(min(remaining, WAIT_STEP_SECONDS))
            self._supervise()
            self._watchdog_tick()
            self._drain_commands()

    def _analyse(self, filtered) -> tuple[list[WindowResult], list[LevelFrame]]:
        """One filtered block through the pipeline and the band meter, one alarm open at a time, none off hours."""
        self._check_hours()
        rule = self.levels.rule
        self.pipeline.detector.held = not self._in_hours or (rule is not None and rule.detector.active is not None)
        # Band levels cost an FFT per half second: measured for telemetry, calibration or the level rule only.
        wanted = self.outbox.publisher is not None or self._calibration is not None or self.measure_levels
        return self.pipeline.process(filtered), self.levels.frames(filtered, wanted)

    def _finish_filtered_stream(self, summary: StreamSummary, name: str, on_window) -> None:
        """The samples the input filter still holds at the end of a stream, analysed (nothing without filters)."""
        tail = self.levels.flush()
        if not len(tail):
            return
        results, frames = self._analyse(tail)
        for result in results:
            self._account(result, summary, name)
            if on_window is not None:
                on_window(result)
        self._account_levels(frames, name)

    def _account_levels(self, frames: list[LevelFrame], name: str) -> None:
        """Level frames: the calibration's normal levels, and the level rule's events."""
        if self._calibration is not None:
            self._calibration.level_frames.extend(f.mean_square.astype("float32") for f in frames)
            if self.level_only and len(self._calibration.level_frames) >= self._calibration.target_windows:
                self.finish_calibration()
        rule = self.levels.rule
        if rule is None:
            return
        for frame in frames:
            rule.detector.held = not self._in_hours or self.pipeline.detector.active is not None
            for transition in rule.update(frame):  # not counted in alarms_started: that judges a new model
                self.emit(transition, name)

    def _check_hours(self) -> None:
        """Follow the operating hours (detector.schedule): leaving them ends an open alarm with reason 'schedule'."""
        in_hours = self.levels.in_hours()
        if in_hours == self._in_hours:
            return
        self._in_hours = in_hours
        if in_hours:
            logger.info("operating hours began (detector.schedule): alarms may be raised")
            return
        logger.warning("outside the operating hours (detector.schedule): no alarm until they begin again")
        ended = self.pipeline.detector.end_now(
            max(self._last_window_index, 0), self.pipeline.stream_seconds, "schedule"
        )
        if self.levels.rule is not None:
            ended += self.levels.rule.end("schedule")
        for transition in ended:
            self.emit(transition, self.source_name)

    def _account(self, result: WindowResult, summary: StreamSummary, name: str) -> None:
        self._last_window_index = result.index
        summary.windows += 1
        self.windows_total += 1
        if result.score is not None:
            self.windows_scored += 1
            summary.scored += 1
            summary.scores.append(result.score)
            self.last_score = result.score
        self.health.add_window(result.score)
        self.recent_windows.append((time.time(), result.score, result.rms_dbfs))
        for transition in result.transitions:
            summary.events += transition.state == "start"
            self.alarms_started += transition.state == "start"
            self.emit(transition, name)
        if self._calibration is not None:
            self._calibration.add(result)
            if self._calibration.done:
                self.finish_calibration()
        self.notifier.ready(f"analysing {name}")
        self._watchdog_tick()

    def _after_block(self) -> None:
        """Between blocks: supervision, commands, then telemetry, health and state when due."""
        self._supervise()
        self._drain_commands()
        self.updates.tick()
        if self.health.telemetry_due:
            self._publish_telemetry()
        if self.health.take_changed():
            self.outbox.publish(
                "publish_health",
                health_payload(self.cfg.device.id, self.cfg.device.site, list(self.health.faults.values())),
            )
        self._publish_state()

    # -- supervision -------------------------------------------------------

    def _watchdog_tick(self) -> None:
        """Feed systemd's watchdog: called as the analysis makes progress, and only while publishing does too."""
        if self._publisher_failed_since is None:
            self.notifier.watchdog_tick()

    def _supervise(self) -> None:
        """Check the publisher: a failure is a health fault and stops the watchdog; past the grace the process ends.

        Raises:
            WorkerFailure: the publisher stayed failed for publisher_grace_seconds.
        """
        failure = self.outbox.publisher.failure() if self.outbox.publisher is not None else None
        if failure is None:
            if self._publisher_failed_since is not None:
                logger.warning("MQTT publisher is making progress again")
                self._publisher_failed_since = None
                self.health.clear(FAULT_PUBLISHER)
            return
        failure = " ".join(str(failure).split())
        now = time.monotonic()
        if self._publisher_failed_since is None:
            self._publisher_failed_since = now
            self.health.set(
                FAULT_PUBLISHER,
                f"MQTT publisher: {failure}: events are not delivered; the daemon exits "
                f"in {self.publisher_grace_seconds:g} s so that systemd restarts it",
            )
            self.notifier.status(f"MQTT publisher failed ({failure}); restarting")
            # The health message goes to the publisher's queue too, in case it is only stalled.
            self.outbox.publish(
                "publish_health",
                health_payload(self.cfg.device.id, self.cfg.device.site, list(self.health.faults.values())),
            )
        elif now - self._publisher_failed_since >= self.publisher_grace_seconds:
            self._failing = True
            raise WorkerFailure(
                f"MQTT publisher: {failure}; exiting so that systemd restarts the service (spooled "
                "events are delivered after the restart, an open alarm is ended then)"
            )

    def _storage(self, what: str, error: str | None) -> None:
        """Account for one kind of state write: a failure raises the storage fault, success clears its part."""
        if error is None:
            if self._storage_errors.pop(what, None) is None:
                return
        else:
            self._storage_errors[what] = error
        if self._storage_errors:
            self.health.set(FAULT_STORAGE, "; ".join(self._storage_errors.values()))
        else:
            self.health.clear(FAULT_STORAGE)

    # -- messages (the Outbox says them; the Runner knows when) -------------

    def end_alarm_left_open(self) -> dict[str, Any] | None:
        """End the alarm a previous process left open (Outbox.end_alarm_left_open); None if there was none."""
        return self.outbox.end_alarm_left_open(self.evidence.directory if self.evidence is not None else None)

    def emit(self, transition: Transition, source: str) -> dict[str, Any]:
        """Publish one event message (stdout JSON line and MQTT); a start plans the evidence clip."""
        ev = transition.event
        if transition.state == "start" and self.evidence is not None:
            bands = ev.explanation.bands if ev.explanation is not None else None
            ev.evidence = self.evidence.start(ev.event_id, transition.time_seconds, bands=bands or ())
        meta = self.model.metadata
        threshold = self.settings.threshold
        if ev.rule == RULE_LEVEL and self.levels.rule is not None:
            threshold = self.levels.rule.settings.detector.threshold  # rise_db: the rule's scores are dB above normal
        return self.outbox.event(transition, source, threshold, meta.name, meta.version)

    @property
    def state(self) -> str:
        """'anomaly' while an event is open, else 'fault' with active faults, else 'muted', 'off_hours' or 'ok'."""
        active = self._active_event()
        if active is not None:
            return "anomaly"
        if self.health.faults:
            return "fault"
        if time.time() < self.muted_until_wall:
            return "muted"
        return "ok" if self._in_hours else "off_hours"

    def _mark_withheld(self) -> None:
        """An open alarm whose clip the speech guard withheld says so in its next messages (evidence null)."""
        ev = self._active_event()
        if ev is not None and ev.evidence and self.evidence is not None and self.evidence.withheld_stems:
            why = self.evidence.withheld_stems.get(Path(ev.evidence).stem)
            if why is not None:
                ev.evidence, ev.evidence_withheld = None, why

    def _active_event(self):
        """The open alarm (the model's or the level rule's: one at a time), or None."""
        active = self.pipeline.detector.active
        if active is None and self.levels.rule is not None:
            active = self.levels.rule.detector.active
        return active

    def _publish_state(self, force: bool = False) -> None:
        active = self._active_event()
        score, threshold = self._shown_score()
        self.outbox.state(
            self.state,
            active.event_id if active else None,
            list(self.health.faults),
            score,
            threshold,
            force=force,
        )

    @property
    def uptime_seconds(self) -> float:
        return time.monotonic() - self.started_monotonic

    def _shown_score(self) -> tuple[float | None, float]:
        """(latest score, threshold) for state and telemetry: the model's, or without a model the level rule's
        (dB the watched band furthest above its normal lies above it, and rise_db)."""
        rule = self.levels.rule
        if self.level_only and rule is not None:
            return rule.last_excess_db, rule.settings.detector.threshold
        return self.last_score, self.settings.threshold

    def _publish_telemetry(self) -> None:
        period = self.health.take_telemetry()
        self.last_period = period
        payload = telemetry_payload(
            self.cfg.device.id,
            self.cfg.device.site,
            time.monotonic() - self.started_monotonic,
            period,
            self._shown_score()[1],
            read_cpu_temperature_c(),
            bands=self.levels.take_bands(),
            powerline=self.powerline.take() if self.powerline is not None else None,
            asset=self.outbox.asset,
        )
        self.last_powerline = payload.get("powerline")
        logger.debug("telemetry %s", payload)
        self.outbox.publish("publish_telemetry", payload)
        self._publish_state(force=True)

    # -- commands (queued from any thread, run on the analysis thread) ---

    def handle_command(self, name: str, args: dict[str, Any], reply: Reply) -> None:
        """Queue a command; safe from the MQTT thread or a signal handler (never blocks)."""
        self._commands.put((name, dict(args or {}), reply))

    def _drain_commands(self) -> None:
        """Run the queued commands. A refused one gets its error; a bug in one is contained: an error result,
        the internal_error fault and its traceback in the log, while the analysis goes on."""
        while True:
            try:
                name, args, reply = self._commands.get_nowait()
            except queue.Empty:
                return
            problem = check_args(name, args)  # the same table and bounds as over MQTT
            if problem is not None:
                logger.error("command %s refused: %s", name, problem)
                reply(None, f"{name}: {problem}")  # as the Runner's own refusals read: "<command>: <problem>"
                continue
            try:
                if name == "calibrate":
                    self.start_calibration(float(args["minutes"]), reply, force=args.get("force", False))
                    continue
                if name == "update_model":  # replies when the model is installed or refused
                    if self.level_only:
                        raise AcmonError(
                            "update_model: this device runs without a model (model.path null); set model.path and "
                            "restart to run one"
                        )
                    self.updates.start(
                        str(args["url"]),
                        str(args["sha256"]),
                        reply,
                        drop_calibration=args.get("drop_calibration", False),
                    )
                    continue
                result = self._run_command(name, args)
            except AcmonError as exc:
                logger.error("command %s failed: %s", name, exc)
                reply(None, str(exc))
            except Exception as exc:  # a bug in one command must not stop the monitoring
                logger.exception("command %s: internal error; the analysis goes on", name)
                self.health.set(FAULT_INTERNAL_ERROR, f"command {name}: {type(exc).__name__}: {exc}"[:300])
                reply(None, f"{name}: internal error ({type(exc).__name__}); the daemon goes on, see its log")
            else:
                self.health.clear(FAULT_INTERNAL_ERROR)
                reply(result)

    def _run_command(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """Run a command whose arguments check_args accepted (calibrate, which replies later, is started apart)."""
        handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "ping": lambda a: self.ping(),
            "reload": lambda a: self.reload(),
            "mute": lambda a: self.mute(float(a["minutes"])),
            "set_threshold": lambda a: self.set_threshold(float(a["value"]), force=a.get("force", False)),
            "rollback_model": lambda a: self.updates.rollback("asked for (rollback_model)"),
            "get_evidence": lambda a: self.send_evidence(str(a["event_id"])),
            "label": lambda a: self.label(str(a["event_id"]), str(a["label"])),
        }
        return handlers[name](args)

    def ping(self) -> dict[str, Any]:
        return {
            "uptime_seconds": round(time.monotonic() - self.started_monotonic, 1),
            "model_version": self.model.metadata.version,
            "state": self.state,
        }

    def reload(self) -> dict[str, Any]:
        """Re-read the config (with its calibration) and the model; keep the old ones if either is invalid.

        The model, the model and calibration threshold and the detector section
        take effect at once; other sections need a restart (logged).

        Raises:
            AcmonError: no config file, or the new config or model is invalid (nothing changed).
        """
        if self.config_path is None:
            raise AcmonError("reload: the daemon was started without --config: nothing to reload")
        cfg = load_site_config(self.config_path)
        self.updates.follow_config(cfg)
        model = self._load_model(cfg)
        settings = detector_settings(cfg, model)
        self.levels.check_rule(cfg)  # before anything changes
        try:
            ended = self.pipeline.reconfigure(model, settings, self._gate(cfg, model))
        except ValueError as exc:
            raise AcmonError(f"reload: {exc}") from None
        ended += self._reconfigure_levels(cfg)
        restart_needed = [
            s
            for s in ("device", "audio", "mqtt", "evidence", "health", "features", "logging", "powerline")
            if getattr(cfg, s) != getattr(self.cfg, s)
        ]
        if cfg.levels.model_copy(update={"normal_db": None}) != self.cfg.levels.model_copy(update={"normal_db": None}):
            restart_needed.append("levels (other than normal_db)")
        if restart_needed:
            logger.warning("reload: changes to %s take effect after a restart", ", ".join(restart_needed))
        self.cfg, self.model, self.settings = cfg, model, settings
        self.calibrated_threshold = settings.threshold
        for transition in ended:
            self.emit(transition, self.source_name)
        logger.info(
            "reloaded %s: model %s %s, threshold %.4g, level gate %.1f dBFS",
            self.config_path,
            model.metadata.name,
            model.metadata.version,
            settings.threshold,
            cfg.detector.min_rms_dbfs,
        )
        return {
            "model_version": model.metadata.version,
            "threshold": round(settings.threshold, 6),
            "min_rms_dbfs": cfg.detector.min_rms_dbfs,
        }

    def label(self, event_id: str, label: str) -> dict[str, Any]:
        """Keep an alarm's clip in the device's dataset under its label (device/daemon/labels.py).

        Raises:
            AcmonError: evidence is off, no clip for the event, a bad label, or the dataset cannot be written.
        """
        if self.evidence is None:
            raise AcmonError(
                "label: evidence is off on this device (evidence.enabled: false): there is no clip to keep"
            )
        stored = store_label(self.evidence.directory, dataset_folder(self.cfg), event_id, label)
        logger.info("event %s labelled %s: %s", event_id, label, stored)
        return {"event_id": event_id, "label": label, "clip": str(stored)}

    def send_evidence(self, event_id: str) -> dict[str, Any]:
        """Publish an event's evidence files in chunks on <base>/evidence/<event id>/<file>/<index> (get_evidence).

        Raises:
            AcmonError: evidence is off, MQTT is off, or the event has no evidence (yet, or any more).
        """
        publisher = self.outbox.publisher
        if self.evidence is None:
            raise AcmonError("get_evidence: evidence is off on this device (evidence.enabled: false)")
        if publisher is None:
            raise AcmonError("get_evidence: MQTT is off; the evidence is in " + str(self.evidence.directory))
        files = evidence_files(self.evidence.directory, event_id)
        withheld = withheld_reason(self.evidence.directory, event_id)
        if withheld is not None:
            raise AcmonError(f"get_evidence: event {event_id}: {withheld}")
        if not files:
            raise AcmonError(
                f"get_evidence: no evidence for event {event_id}: it is written evidence.post_roll_seconds after the "
                "alarm starts, and removed by the evidence retention (quota_mb, max_clips, max_age_days)"
            )
        sent = []
        for path in files:
            try:
                data = read_small_file(path, MAX_EVIDENCE_FILE_BYTES)
            except OSError as exc:
                raise AcmonError(f"get_evidence: cannot read {path.name}: {exc.strerror or exc}") from None
            chunks = [data[i : i + EVIDENCE_CHUNK_BYTES] for i in range(0, len(data), EVIDENCE_CHUNK_BYTES)] or [b""]
            topic = f"evidence/{event_id}/{path.name}"
            for index, chunk in enumerate(chunks):
                publisher.publish_evidence(f"{topic}/{index}", chunk)
            sent.append(
                {
                    "name": path.name,
                    "topic": f"{publisher.base_topic}/{topic}",
                    "bytes": len(data),
                    "chunks": len(chunks),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            )
        return {"event_id": event_id, "files": sent}

    def _reconfigure_levels(self, cfg: AcmonConfig) -> list[Transition]:
        """The level rule and operating hours of a reloaded config (a new normal from calibrate); a rule whose
        settings changed ends its open alarm. Raises AcmonError (nothing changed) for a band not measured."""
        old = self.levels.rule
        self.levels.configure_rule(cfg)
        if old is None or self.levels.rule is old:
            return []
        return old.end(None)

    # -- model updates (device/daemon/updates.py) ---------------------------

    def settings_for(self, cfg: AcmonConfig, model: AnomalyModel) -> DetectorSettings:
        return detector_settings(cfg, model)

    def trusted_keys(self) -> dict[str, bytes] | None:
        return trusted_keys(self.cfg)

    def install_model(self, model: AnomalyModel, settings: DetectorSettings, cfg: AcmonConfig | None = None) -> None:
        """Swap the model in between blocks (an open event ends, as on reload); cfg: the config it was loaded with.

        Raises:
            AcmonError: the pipeline cannot take it (its windows differ from the running stream's).
        """
        try:
            ended = self.pipeline.reconfigure(model, settings, self.pipeline.min_rms_dbfs)
        except ValueError as exc:
            raise AcmonError(f"update_model: {exc}") from None
        self.model, self.settings = model, settings
        self.cfg = cfg or self.cfg
        self.calibrated_threshold = settings.threshold
        for transition in ended:
            self.emit(transition, self.source_name)
        self.publish_model_state()

    def publish_model_state(self) -> None:
        """The retained <base>/model message: the model in use, where it came from, the last update's outcome
        (none without a model)."""
        if not self.level_only:
            self.outbox.publish("publish_model", self.updates.payload())

    def report_storage(self, what: str, error: str | None) -> None:
        self._storage(what, error)

    def mute(self, minutes: float) -> dict[str, Any]:
        """Suppress events for `minutes` (wall clock); an open event ends now."""
        _check_args("mute", {"minutes": minutes})
        self.muted_until_wall = time.time() + minutes * 60.0
        for transition in self.pipeline.mute(self.pipeline.stream_seconds + minutes * 60.0):
            self.emit(transition, self.source_name)
        if self.levels.rule is not None:
            for transition in self.levels.rule.mute(self.levels.rule.last_seconds + minutes * 60.0):
                self.emit(transition, self.source_name)
        logger.warning("events muted until %s", iso_utc(self.muted_until_wall))
        return {"muted_until": iso_utc(self.muted_until_wall)}

    def _reapply_mute(self) -> None:
        """A new stream restarts stream time at 0: carry the remaining mute over."""
        remaining = self.muted_until_wall - time.time()
        if remaining > 0:
            self.pipeline.mute(remaining)
            if self.levels.rule is not None:
                self.levels.rule.mute(remaining)

    def set_threshold(self, value: float, force: bool = False) -> dict[str, Any]:
        """Replace the detector threshold at once (not persisted; calibrate persists).

        Args:
            value: the new threshold (score units): within a quarter to 4 times the calibrated
                threshold (guardrails.check_threshold_change), or anything finite and > 0 with force.
            force: the operator confirmed a value outside the band.

        Raises:
            AcmonError: refused (out of the band without force, not a finite number > 0, or below
                detector.off_threshold); the threshold is unchanged.
        """
        if self.level_only:
            raise AcmonError("set_threshold: no model (model.path null): change detector.level_rule.rise_db and reload")
        check_threshold_change(value, self.calibrated_threshold, force)
        value = float(value)  # finite: checked
        try:
            settings = dataclasses.replace(self.settings, threshold=value)
        except ValueError as exc:
            raise AcmonError(f"set_threshold: {exc}") from None
        for transition in self.pipeline.reconfigure(self.model, settings, self.pipeline.min_rms_dbfs):
            self.emit(transition, self.source_name)
        self.settings = settings
        logger.warning(
            "threshold set to %.4g, %.3g times the calibrated %.4g%s (until the next reload or restart)",
            value,
            value / self.calibrated_threshold,
            self.calibrated_threshold,
            " (forced)" if force else "",
        )
        return {"threshold": value, "calibrated_threshold": round(self.calibrated_threshold, 6), "forced": force}

    # -- calibration ------------------------------------------------------

    def start_calibration(self, minutes: float, reply: Reply, force: bool = False) -> None:
        """Collect `minutes` of audio from the running stream(s), then calibrate (see finish_calibration).

        Args:
            minutes: audio to collect, in minutes: at least calibrate.MIN_CALIBRATION_WINDOWS windows, at most 240.
            reply: called once with the result or the error.
            force: apply the result even if the audio looks like a fault (not below the minimum).

        Raises:
            AcmonError: refused at once (too little or too much audio, one already running, no config).
        """
        _check_args("calibrate", {"minutes": minutes, "force": force})
        if self._calibration is not None:
            raise AcmonError("calibrate: a calibration is already running")
        if self.config_path is None:
            raise AcmonError("calibrate: the daemon was started without --config: nowhere to write calibration.yaml")
        hop = self._calibration_hop_seconds()
        target = max(1, round(minutes * 60.0 / hop))
        check_calibration_audio(target, hop)
        self._calibration = CalibrationSession(target, reply, force=force)
        self.pipeline.score_all = not self.level_only  # without a model, level frames are what is collected
        logger.info(
            "calibrating: collecting %.1f min of audio (%d %s)%s",
            minutes,
            target,
            "level frames" if self.level_only else "windows",
            ", forced" if force else "",
        )

    def calibrate(
        self, minutes: float, run: Callable[[], None], force: bool = False
    ) -> tuple[dict[str, Any] | None, str | None]:
        """`python -m device calibrate`: collect `minutes` of what run() streams through this runner, calibrate.

        run() feeds the audio (run_stream or run_live) and should stop when stop_event is set, which
        the calibration's reply sets. Audio that ends early is calibrated on as it is, with a warning.

        Returns:
            (the calibration result, None) or (None, the one-line error).
        """
        outcome: dict[str, Any] = {}

        def reply(result, error=None) -> None:
            outcome.update(result=result, error=error)
            self.stop_event.set()

        self.start_calibration(minutes, reply, force=force)
        run()
        if not outcome:
            logger.warning("calibrate: the audio ended before %.1f minutes: calibrating on what there is", minutes)
            self.finish_calibration()
        return outcome.get("result"), outcome.get("error")

    def finish_calibration(self) -> None:
        """Calibrate on what was collected, write calibration.yaml, apply it (reload) and reply.

        A refusal or a write failure is an error result (the latter also the storage fault);
        a bug is contained the same way, with the internal_error fault: never a crash.
        """
        session, self._calibration = self._calibration, None
        self.pipeline.score_all = False
        if session is None:
            return
        try:
            if self.level_only:
                check_calibration_audio(len(session.level_frames), self._calibration_hop_seconds(), requested=False)
                result = self.calibrate_levels_now(session)
            else:
                false_alarms = self._add_false_alarms(session)
                check_calibration_audio(session.collected, self.model.params.hop_seconds, requested=False)
                result = {**self.calibrate_now(session), "false_alarm_clips": false_alarms}
        except AcmonError as exc:
            logger.error("calibration failed: %s", exc)
            session.reply(None, str(exc))
        except Exception as exc:  # a bug in the calibration must not stop the monitoring
            logger.exception("calibration: internal error; the analysis goes on with the threshold in force")
            self.health.set(FAULT_INTERNAL_ERROR, f"calibration: {type(exc).__name__}: {exc}"[:300])
            session.reply(
                None,
                f"calibrate: internal error ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); "
                "see the daemon's log",
            )
        else:
            self.health.clear(FAULT_INTERNAL_ERROR)
            session.reply(result)

    def _add_false_alarms(self, session: CalibrationSession) -> int:
        """Put the clips labelled false_alarm (device/daemon/labels.py) into the calibration's normal audio, each as
        its own stretch, scored as the stream was; returns how many were used."""
        clips = false_alarm_clips(dataset_folder(self.cfg))
        if not clips:
            return 0
        pipeline = Pipeline(self.model, self.settings, min_rms_dbfs=self.pipeline.min_rms_dbfs, score_all=True)
        used = 0
        for clip in clips:
            try:
                stream = open_source(self.cfg.audio, self.model.params.sample_rate_hz, clip)
                session.new_segment()
                pipeline.reset()
                for block in stream.blocks():
                    for result in pipeline.process(block):
                        session.add(result)
            except AcmonError as exc:
                logger.warning("calibration: labelled false alarm %s skipped: %s", clip.name, exc)
                continue
            used += 1
        session.new_segment()
        logger.info("calibration: %d clip(s) labelled false_alarm joined the site's normal audio", used)
        return used

    def _calibration_hop_seconds(self) -> float:
        """What a calibration counts: analysis windows, or without a model level frames (every half frame)."""
        meter = self.levels.meter
        if self.level_only and meter is not None:
            return meter.hop_samples / meter.sample_rate_hz
        return self.model.params.hop_seconds

    def calibrate_levels_now(self, session: CalibrationSession) -> dict[str, Any]:
        """Without a model: the commissioned normal band levels from the session, written and applied.

        Raises:
            AcmonError: calibration.yaml cannot be written (storage fault); nothing is applied then.
        """
        assert self.config_path is not None
        normal = self.levels.normal_from(session.level_frames, self.cfg.detector.min_rms_dbfs)
        if normal is None:
            raise AcmonError("calibrate: no level frame was measured: is audio flowing?")
        record = {"frames": len(session.level_frames), "input_filters": input_filters_record(self.cfg)}
        try:
            path = write_calibration(self.config_path, levels_calibration_document(normal, record))
        except AcmonError as exc:
            self._storage("calibration", str(exc))
            raise
        self._storage("calibration", None)
        logger.warning(
            "calibration written to %s: the normal band levels of %d frames", path, len(session.level_frames)
        )
        self.reload()
        previous = calibration_paths(self.config_path)[1]
        return {
            "file": str(path),
            "frames": len(session.level_frames),
            "level_normal_db": {f"{k:g}": v for k, v in normal.items()},
            "previous_file": str(previous) if previous.exists() else None,
            "forced": session.force,
        }

    def calibrate_now(self, session: CalibrationSession) -> dict[str, Any]:
        """Threshold (and level gate, site statistics) from the session; checked, written, applied.

        Raises:
            AcmonError: refused by check_calibration_result (the audio looks like a fault), or the
                calibration files cannot be written (storage fault); nothing is applied then.
        """
        assert self.config_path is not None
        per_day = self.cfg.calibration.false_alarms_per_day  # the rate calibrated for (reload may change cfg)
        decided = decide_site_calibration(
            session, self.cfg, self.model, self.calibrated_threshold, calibration_in_force(self.config_path) is not None
        )
        result = decided.result
        # The commissioned normal band levels (the level rule's reference), over the frames the new gate passes;
        # and the input filters they and the threshold were measured through.
        gate = result.min_rms_dbfs if result.min_rms_dbfs is not None else self.cfg.detector.min_rms_dbfs
        level_normal = self.levels.normal_from(session.level_frames, gate)
        result = dataclasses.replace(result, info={**result.info, "input_filters": input_filters_record(self.cfg)})
        decided = dataclasses.replace(decided, result=result)
        try:
            path, site_file = save_site_calibration(
                self.config_path,
                decided,
                f"{self.model.metadata.name} {self.model.metadata.version}",
                level_normal_db=level_normal,
            )
        except AcmonError as exc:
            self._storage("calibration", str(exc))
            raise
        self._storage("calibration", None)
        prune_site_statistics(self.config_path)
        logger.warning(
            "calibration written to %s: threshold %.4g (was %.4g), level gate %s%s",
            path,
            result.threshold,
            decided.threshold_before,
            "unchanged" if result.min_rms_dbfs is None else f"{result.min_rms_dbfs} dBFS",
            " (forced)" if session.force else "",
        )
        if result.info.get("warning"):  # the promise is an extrapolation the audio cannot stand behind: say so
            logger.warning("calibration: %s", result.info["warning"])
        applied = self.reload()
        previous = calibration_paths(self.config_path)[1]
        reply = calibration_reply(
            decided,
            session,
            path,
            site_file,
            applied["min_rms_dbfs"],
            previous if previous.exists() else None,
            per_day,
        )
        reply["level_normal_db"] = None if level_normal is None else {f"{k:g}": v for k, v in level_normal.items()}
        return reply


def _lost_blocks(stream: Stream) -> int:
    """Blocks a live source lost: dropped from its full queue, or overflowed inside PortAudio."""
    return int(getattr(stream, "dropped_blocks", 0)) + int(getattr(stream, "overflows", 0))


def _check_args(name: str, args: dict[str, Any]) -> None:
    """The command table's bounds (mqtt/commands.py COMMANDS) for a call that does not come over MQTT
    (the calibrate command line, a caller of the Runner); one table, so the bounds cannot drift apart.

    Raises:
        AcmonError: '<command>: <problem>', as a refused MQTT command reads.
    """
    problem = check_args(name, args)
    if problem is not None:
        raise AcmonError(f"{name}: {problem}")


def _log_reply(what: str) -> Reply:
    """A reply for commands nobody waits on (SIGHUP): log the outcome."""

    def reply(result: dict[str, Any] | None, error: str | None = None) -> None:
        if error is not None:
            logger.error("%s failed, keeping the running config and model: %s", what, error)
        else:
            logger.info("%s done: %s", what, result)

    return reply

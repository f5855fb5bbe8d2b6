"""Wires config, model, pipeline and publisher together for `run`, `replay` and `score`."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, TextIO

from .config import AcmonConfig, feature_pins, resolve_mqtt_password
from .detector import DetectorSettings, Transition
from .errors import AcmonError
from .inference import AnomalyModel
from .payloads import event_payload
from .pipeline import Pipeline, WindowResult, clip_score

logger = logging.getLogger(__name__)


def parse_broker(text: str, default_port: int = 1883) -> tuple[str, int]:
    """'host' or 'host:port' to (host, port).

    Raises:
        AcmonError: the port is not a number in 1..65535.
    """
    host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if not port_text:
        return text, default_port
    try:
        port = int(port_text)
    except ValueError:
        port = 0
    if not 0 < port < 65536 or not host:
        raise AcmonError(f"--broker {text!r}: expected HOST or HOST:PORT with a port in 1..65535")
    return host, port


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
    """One device: a model, the pipeline and, if configured, an MQTT publisher.

    Every way audio enters (microphone, WAV replay, stdin) ends in run_stream(),
    so replay exercises exactly the code that runs live.
    """

    def __init__(
        self,
        cfg: AcmonConfig,
        model_path: str | None = None,
        broker: str | None = None,
        use_mqtt: bool | None = None,
        events_out: TextIO | None = sys.stdout,
        runtime: str | None = None,
    ):
        self.cfg = cfg
        self.stop_event = threading.Event()
        self.model = AnomalyModel(model_path or cfg.model.path, runtime=runtime, expected_params=feature_pins(cfg))
        threshold = (cfg.model.threshold or self.model.threshold) * cfg.detector.threshold_scale
        self.settings = DetectorSettings(
            threshold=threshold,
            patience_windows=cfg.detector.patience_windows,
            cooldown_seconds=cfg.detector.cooldown_seconds,
        )
        self.pipeline = Pipeline(self.model, self.settings, min_rms_dbfs=cfg.detector.min_rms_dbfs)
        self.events_out = events_out
        self.seq = 0
        self.publisher = None
        mqtt_wanted = cfg.mqtt.enabled if use_mqtt is None else use_mqtt
        if mqtt_wanted or broker:
            self.publisher = self._make_publisher(broker)
        logger.info(
            "model %s (%s %s, %s), threshold %.4g, window %.2f s, hop %.2f s",
            self.model.path,
            self.model.metadata.name,
            self.model.metadata.version,
            self.model.runtime.name,
            threshold,
            self.model.params.window_seconds,
            self.model.params.hop_seconds,
        )

    def _make_publisher(self, broker: str | None):
        from .publisher import MqttPublisher, topic_base  # noqa: PLC0415 - paho only when MQTT is used

        m = self.cfg.mqtt
        host, port = parse_broker(broker, m.port) if broker else (m.host, m.port)
        dev = self.cfg.device
        return MqttPublisher(
            host=host,
            port=port,
            base_topic=topic_base(m.topic_prefix, dev.site, dev.id),
            client_id=m.client_id or f"acmon-{dev.site}-{dev.id}",
            keepalive_seconds=m.keepalive_seconds,
            reconnect_min_seconds=m.reconnect_min_seconds,
            reconnect_max_seconds=m.reconnect_max_seconds,
            max_pending=m.max_pending_alerts,
            username=m.username,
            password=resolve_mqtt_password(m) if m.username else None,
            tls=m.tls,
        )

    # -- lifecycle -----------------------------------------------------

    def __enter__(self) -> "Runner":
        if self.publisher is not None:
            self.publisher.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT both set the one stop event; loops notice it between blocks."""

        def handle(signum, frame) -> None:
            logger.info("received %s, stopping", signal.Signals(signum).name)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def close(self, flush_seconds: float = 10.0) -> int:
        """Flush and stop the publisher; returns the number of events not acknowledged by the broker."""
        if self.publisher is None:
            return 0
        delivered = self.publisher.flush(flush_seconds)
        left = self.publisher.stats.pending
        self.publisher.stop()
        self.publisher = None
        if not delivered:
            logger.error("%d event(s) not delivered: the broker did not acknowledge them in %.0f s", left, flush_seconds)
        return left

    # -- streams -------------------------------------------------------

    def run_stream(self, name: str, blocks: Iterable, on_window: Callable[[WindowResult], None] | None = None) -> StreamSummary:
        """Analyse one stream from start to end (or until stop), emitting events as they happen."""
        summary = StreamSummary(name)
        self.pipeline.reset()
        for block in blocks:
            for result in self.pipeline.process(block):
                summary.windows += 1
                if result.score is not None:
                    summary.scored += 1
                    summary.scores.append(result.score)
                for transition in result.transitions:
                    summary.events += transition.state == "start"
                    self.emit(transition, name)
                if on_window is not None:
                    on_window(result)
            if self.stop_event.is_set():
                break
        for transition in self.pipeline.close():
            self.emit(transition, name)
        if summary.windows == 0:
            logger.warning("%s: shorter than one analysis window (%.2f s): nothing analysed", name, self.model.params.window_seconds)
        return summary

    def emit(self, transition: Transition, source: str) -> dict[str, Any]:
        """Publish one event message (stdout JSON line and MQTT)."""
        payload = event_payload(
            transition,
            seq=self.seq,
            device_id=self.cfg.device.id,
            site=self.cfg.device.site,
            threshold=self.settings.threshold,
            model_name=self.model.metadata.name,
            model_version=self.model.metadata.version,
            source=source,
        )
        self.seq += 1
        log = logger.warning if transition.state == "start" else logger.info
        log(
            "event %s %s at %.2f s in %s (score %s, threshold %.4g)",
            transition.state,
            transition.event.event_id[:8],
            transition.time_seconds,
            source,
            "-" if transition.score is None else f"{transition.score:.4g}",
            self.settings.threshold,
        )
        if self.events_out is not None:
            self.events_out.write(json.dumps(payload) + "\n")
            self.events_out.flush()
        if self.publisher is not None:
            self.publisher.publish_event(payload)
        return payload


"""Prometheus metrics for Grafana: an HTTP endpoint (`metrics.enabled`) read at each scrape from the running daemon.

Off by default: importing `prometheus-client` and its HTTP server costs a bare process 9.5 MB of
resident memory (7.4 of them http.server and what it imports); beside MQTT, whose client already
imports much of that, the daemon's steady RSS grew by 1.8 MB (benchmarks/bench_daemon.py --mqtt
--metrics, 73.2 -> 75.0 MB). A Pi's budget should spend it only where Grafana scrapes. Values are read from the Runner when Prometheus asks,
on the server's thread: plain numbers the analysis thread writes whole, never a lock on the analysis.
The period figures (level, clipping, real-time factor, dropped blocks) are those of the last
telemetry period (health.telemetry_seconds); counters count since the daemon started.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from ..errors import AcmonError

logger = logging.getLogger(__name__)

# The telemetry period's figures exposed as gauges: key in HealthMonitor.take_telemetry() -> (metric, help).
PERIOD_GAUGES = {
    "level_dbfs": ("acmon_level_dbfs", "RMS input level over the last telemetry period, dBFS"),
    "clipping_ratio": ("acmon_clipping_ratio", "share of clipped samples over the last telemetry period"),
    "dc_offset": ("acmon_dc_offset", "mean sample value over the last telemetry period (full scale 1)"),
    "score_mean": ("acmon_score_mean", "mean window score over the last telemetry period"),
    "score_max": ("acmon_score_max", "highest window score over the last telemetry period"),
    "realtime_factor": ("acmon_realtime_factor", "analysis time / audio time over the last telemetry period"),
    "dropped_blocks": ("acmon_dropped_blocks", "audio blocks lost (overflow) in the last telemetry period"),
    "damaged_samples": ("acmon_damaged_samples", "NaN, infinite or absurd samples in the last telemetry period"),
}
# The last period's power-line figures (powerline section; absent when off or not locked).
POWERLINE_GAUGES = {
    "mains_hz": ("acmon_mains_hz", "mains frequency tracked from the hum over the last telemetry period, Hz"),
    "comb_db": ("acmon_hum_comb_db", "2f hum comb above its local floor over the last telemetry period, dB"),
    "crackle_rate_per_s": ("acmon_crackle_rate", "crackles (impulses) per second over the last telemetry period"),
    "phase_concentration": ("acmon_crackle_phase_concentration", "resultant length of the crackles' 2f phases"),
}


class RunnerCollector:
    """A prometheus_client collector over a Runner (duck-typed: the attributes it reads are listed in collect)."""

    def __init__(self, runner: Any):
        self.runner = runner

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily  # noqa: PLC0415

        r = self.runner
        labels = ["site", "device"]
        who = [r.cfg.device.site, r.cfg.device.id]

        def gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily | None:
            if value is None:
                return None
            g = GaugeMetricFamily(name, doc, labels=labels)
            g.add_metric(who, float(value))
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(name, doc, labels=labels)
            c.add_metric(who, float(value))
            return c

        families: list[Any] = [
            gauge("acmon_score", "latest window score (null before the first scored window: absent)", r.last_score),
            gauge("acmon_threshold", "the alarm threshold in force, score units", r.settings.threshold),
            gauge("acmon_uptime_seconds", "seconds since the daemon started", r.uptime_seconds),
            counter("acmon_windows", "analysis windows since start", r.windows_total),
            counter(
                "acmon_windows_scored", "windows scored since start (not skipped by the level gate)", r.windows_scored
            ),
            counter("acmon_alarms", "alarms started since start", r.alarms_started),
            counter(
                "acmon_evidence_withheld",
                "evidence clips the speech guard withheld since start",
                r.evidence.withheld if r.evidence is not None else 0,
            ),
        ]
        state = GaugeMetricFamily(
            "acmon_state", "1 for the current state: ok, anomaly, fault or muted", labels=[*labels, "state"]
        )
        current = r.state
        for name in ("ok", "anomaly", "fault", "muted"):
            state.add_metric([*who, name], 1.0 if name == current else 0.0)
        families.append(state)
        faults = GaugeMetricFamily("acmon_health_fault", "1 for each active health fault", labels=[*labels, "fault"])
        for name in sorted(dict(r.health.faults)):  # dict(): a copy made whole under the GIL
            faults.add_metric([*who, name], 1.0)
        families.append(faults)
        period = r.last_period or {}
        for key, (name, doc) in PERIOD_GAUGES.items():
            families.append(gauge(name, doc, period.get(key)))
        powerline = getattr(r, "last_powerline", None) or {}
        for key, (name, doc) in POWERLINE_GAUGES.items():
            families.append(gauge(name, doc, powerline.get(key)))
        publisher = r.outbox.publisher
        if publisher is not None:
            stats = publisher.stats
            families.append(gauge("acmon_mqtt_connected", "1 while connected to the broker", int(stats.connected)))
            families.append(gauge("acmon_spool_pending", "events not yet acknowledged by the broker", stats.pending))
            families.append(
                counter("acmon_spool_dropped", "events lost to a full spool, inbox or old age", stats.dropped)
            )
            families.append(counter("acmon_events_delivered", "events acknowledged by the broker", stats.delivered))
        meta = r.model.metadata
        info = InfoMetricFamily("acmon_model", "the model in use", labels=labels)
        info.add_metric(who, {"name": meta.name, "version": meta.version, "sha256": r.model.sha256[:16]})
        families.append(info)
        yield from (f for f in families if f is not None)


class MetricsServer:
    """The /metrics endpoint of one Runner; start() binds, stop() closes."""

    def __init__(self, runner: Any, host: str, port: int):
        self.runner, self.host, self.port = runner, host, port
        self._server: Any = None

    def start(self) -> None:
        """Raises: AcmonError: prometheus-client is missing, or the address cannot be bound (one line)."""
        try:
            from prometheus_client import CollectorRegistry, start_http_server  # noqa: PLC0415 - only when enabled
        except ImportError:
            raise AcmonError(
                "metrics.enabled needs the prometheus-client package: pip install 'acmon[metrics]' "
                "(or prometheus-client), or set metrics.enabled: false"
            ) from None
        registry = CollectorRegistry(auto_describe=False)
        registry.register(RunnerCollector(self.runner))
        try:
            server, _thread = start_http_server(self.port, addr=self.host, registry=registry)
        except OSError as exc:
            raise AcmonError(
                f"metrics: cannot listen on {self.host}:{self.port} ({exc.strerror or exc}); choose another "
                "metrics.port or stop what uses it"
            ) from None
        self._server = server
        self.port = server.server_address[1]  # port 0 picks a free one (tests)
        logger.info("Prometheus metrics on http://%s:%d/metrics", self.host, self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

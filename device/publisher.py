"""MQTT publisher on its own thread: events spooled to disk until the broker acknowledges them.

One thread owns the paho client, the spool and every network call: it connects
(exponential backoff with jitter), writes events to the spool, hands them to paho in
order, deletes them on PUBACK, keeps the retained state/health current, publishes Home
Assistant discovery and dispatches commands. The analysis thread only appends to a
bounded in-memory inbox and wakes the thread, so it never waits on the network or the disk.
"""

from __future__ import annotations

import collections
import json
import logging
import random
import select
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .commands import CommandDispatcher, CommandHandler
from .ha_discovery import DeviceInfo, discovery_messages
from .ha_discovery import status_topic as ha_status_topic
from .spool import Spool, SpoolEntry, default_spool_root, remove_empty_parents, spool_directory

if TYPE_CHECKING:
    from .config import AcmonConfig

logger = logging.getLogger(__name__)

STATUS_ONLINE = "online"
STATUS_OFFLINE = "offline"
# paho's default in-flight window; events beyond it wait in the spool, in order.
MAX_INFLIGHT = 20
# Upper bound of one select() wait; events and replies wake the thread at once anyway.
POLL_SECONDS = 1.0
SPOOL_EXPIRE_EVERY_SECONDS = 60.0
OFFLINE_ACK_SECONDS = 2.0
MEGABYTE = 1_000_000
DAY_SECONDS = 86400.0


def topic_base(prefix: str, site: str, device_id: str) -> str:
    """Root of one device's topic tree: <prefix>/<site>/<device_id>."""
    return f"{prefix}/{site}/{device_id}"


def backoff_seconds(failures: int, min_seconds: float, max_seconds: float, uniform: Callable[[], float] = random.random) -> float:
    """Delay before the next connection attempt: exponential, capped, with jitter.

    The nominal delay doubles with each consecutive failure from `min_seconds` up to
    `max_seconds`; the actual delay is drawn uniformly from its upper half, so a
    fleet that lost the broker together does not reconnect in lockstep, yet no device
    retries faster than half the nominal delay.

    Args:
        failures: consecutive failed attempts so far (0 after a connection was lost).
        uniform: a draw from [0, 1) (tests pass a constant).

    Returns:
        Seconds to wait.
    """
    nominal = min(max_seconds, min_seconds * 2 ** min(failures, 32))
    return nominal * (0.5 + 0.5 * uniform())


@dataclass(frozen=True)
class PublisherStats:
    """Counters since start. `pending` counts events in memory or on disk not yet acknowledged;
    `dropped` counts events lost to a full inbox, a full spool or old age."""

    queued: int
    delivered: int
    dropped: int
    pending: int
    connected: bool
    refused: str | None  # the broker's reason for the last refused connection, until one succeeds


@dataclass(frozen=True)
class _Outgoing:
    kind: str  # "event", "retained" (latest wins), "telemetry" (QoS 0, dropped offline) or "reply" (QoS 1)
    topic: str
    payload: bytes


class MqttPublisher:
    """Publishes one device's status, events, state, telemetry and health, and receives its commands.

    Events are written to the on-disk spool (fsync'd) by the publisher thread before
    they are handed to paho, and deleted only when the broker's PUBACK arrives; unsent
    events from a previous run are delivered first, in order. Delivery is at least
    once: subscribers deduplicate on (event_id, seq).

    The status topic is retained: 'online' on every (re)connect, 'offline' on a clean
    stop and, as the Last Will, when the device vanishes. State and health are retained
    at QoS 1 and only the latest value is kept while offline; telemetry is QoS 0 and
    skipped while offline.

    Args:
        host, port: the broker.
        base_topic: `<prefix>/<site>/<device_id>`; also names the spool folder.
        max_pending: messages the inbox holds for the thread (it drains in milliseconds
            unless the disk stalls); beyond it the oldest is dropped and counted.
        spool_dir: root of the spools (null = default_spool_root()).
        device: for Home Assistant discovery; None = no discovery.
        discovery_prefix: Home Assistant's discovery prefix.
    """

    def __init__(
        self,
        host: str,
        port: int,
        base_topic: str,
        client_id: str,
        keepalive_seconds: int = 60,
        reconnect_min_seconds: float = 1.0,
        reconnect_max_seconds: float = 60.0,
        max_pending: int = 10000,
        username: str | None = None,
        password: str | None = None,
        tls: Any = None,
        spool_dir: str | None = None,
        spool_max_bytes: int = 20 * MEGABYTE,
        spool_max_age_seconds: float = 30 * DAY_SECONDS,
        device: DeviceInfo | None = None,
        discovery_prefix: str = "homeassistant",
    ):
        import paho.mqtt.client as mqtt  # the device extra; not needed for offline replay

        self.host, self.port = host, port
        self.base_topic = base_topic
        self.status_topic = f"{base_topic}/status"
        self.events_topic = f"{base_topic}/events"
        self.command_topic = f"{base_topic}/cmd/+"
        self._command_prefix = f"{base_topic}/cmd/"
        self._keepalive = keepalive_seconds
        self._reconnect_range = (reconnect_min_seconds, reconnect_max_seconds)
        self._max_pending = max_pending
        self._spool_root = Path(spool_dir) if spool_dir is not None else default_spool_root()
        self.spool = Spool(spool_directory(self._spool_root, base_topic), spool_max_bytes, spool_max_age_seconds)
        self.commands = CommandDispatcher(base_topic.rsplit("/", 1)[-1], self._enqueue_reply)
        self._discovery = [
            (topic, _encode(payload)) for topic, payload in discovery_messages(device, discovery_prefix)
        ] if device is not None else []
        self._ha_status_topic = ha_status_topic(discovery_prefix) if device is not None else None

        # Shared with the caller's threads, under _lock.
        self._lock = threading.Condition()
        self._inbox: collections.deque[_Outgoing] = collections.deque()
        self._queued = self._delivered = self._inbox_dropped = 0
        self._spool_pending = len(self.spool.pending())
        self._in_transit = 0  # an event taken from the inbox, being written to the spool
        self._connected = False
        self._refused: str | None = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

        # Owned by the publisher thread only.
        self._unsent: collections.deque[SpoolEntry] = collections.deque(self.spool.pending())
        self._by_mid: dict[int, SpoolEntry] = {}
        self._retained: dict[str, bytes] = {}
        self._dirty: set[str] = set()
        self._discovery_due = False
        self._failures = 0
        self._next_attempt = 0.0
        self._thread: threading.Thread | None = None

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        client.will_set(self.status_topic, STATUS_OFFLINE, qos=1, retain=True)
        if username:
            client.username_pw_set(username, password)
        if tls is not None:
            client.tls_set(ca_certs=tls.ca_file, certfile=tls.cert_file, keyfile=tls.key_file)
            if tls.insecure:
                client.tls_insecure_set(True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        self._client = client
        self._mqtt = mqtt

    # -- lifecycle (caller's thread) ----------------------------------------

    def start(self) -> None:
        """Start the publisher thread; returns at once whether or not the broker is reachable."""
        logger.info("MQTT: connecting to %s:%d as %s (spool %s)", self.host, self.port, self.base_topic, self.spool.directory)
        self._thread = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)
        self._thread.start()

    def flush(self, timeout_seconds: float) -> bool:
        """Wait until every event is acknowledged by the broker; False if the time ran out."""
        deadline = time.monotonic() + timeout_seconds
        with self._lock:
            while self._pending_locked():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(min(remaining, 0.1))
        return True

    def stop(self, timeout_seconds: float = 5.0) -> None:
        """Spool what is in memory, publish 'offline', disconnect and join the thread.

        Unacknowledged events stay in the spool for the next start.
        """
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout_seconds)
            if self._thread.is_alive():
                logger.warning("MQTT: publisher thread still alive after %.1f s", timeout_seconds)
                return
        else:
            self._drain_inbox()
        left = len(self.spool.pending())
        if left:
            logger.warning("MQTT: %d event(s) not acknowledged yet; kept in %s for the next start", left, self.spool.directory)
        self.spool.close()
        remove_empty_parents(self.spool.directory, self._spool_root)
        self._wake_r.close()
        self._wake_w.close()

    # -- publishing (any thread; never blocks) ---------------------------------

    def publish_event(self, payload: dict[str, Any]) -> None:
        """Queue an event for the spool and delivery at QoS 1."""
        self._enqueue(_Outgoing("event", self.events_topic, _encode(payload)))

    def publish_state(self, payload: dict[str, Any]) -> None:
        """Retained QoS 1 on <base>/state; while offline only the latest is kept."""
        self._enqueue(_Outgoing("retained", f"{self.base_topic}/state", _encode(payload)))

    def publish_health(self, payload: dict[str, Any]) -> None:
        """Retained QoS 1 on <base>/health; while offline only the latest is kept."""
        self._enqueue(_Outgoing("retained", f"{self.base_topic}/health", _encode(payload)))

    def publish_telemetry(self, payload: dict[str, Any]) -> None:
        """QoS 0 on <base>/telemetry with the spool's counters added as `spool`; skipped while offline."""
        stats = self.stats
        body = {**payload, "spool": {"pending": stats.pending, "dropped": stats.dropped}}
        self._enqueue(_Outgoing("telemetry", f"{self.base_topic}/telemetry", _encode(body)))

    def set_command_handler(self, handler: CommandHandler | None) -> None:
        """Register handler(name, args, reply) for validated commands (called on the publisher thread)."""
        self.commands.handler = handler

    @property
    def stats(self) -> PublisherStats:
        with self._lock:
            return PublisherStats(
                self._queued,
                self._delivered,
                self._inbox_dropped + self.spool.dropped,
                self._pending_locked(),
                self._connected,
                self._refused,
            )

    def _pending_locked(self) -> int:
        return sum(item.kind == "event" for item in self._inbox) + self._in_transit + self._spool_pending

    def _enqueue(self, item: _Outgoing) -> None:
        with self._lock:
            if len(self._inbox) >= self._max_pending:
                lost = self._inbox.popleft()
                if lost.kind == "event":
                    self._inbox_dropped += 1
                logger.error("MQTT: inbox full (%d); dropped the oldest %s message", self._max_pending, lost.kind)
            self._inbox.append(item)
            self._queued += item.kind == "event"
        self._wake()

    def _enqueue_reply(self, name: str, payload: dict[str, Any]) -> None:
        self._enqueue(_Outgoing("reply", f"{self._command_prefix}{name}/result", _encode(payload)))

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already awake (buffer full) or closed at shutdown

    # -- the publisher thread ---------------------------------------------------

    def _run(self) -> None:
        last_expire = time.monotonic()
        while not self._stop.is_set():
            self._drain_inbox()
            if self._client.socket() is None and time.monotonic() >= self._next_attempt:
                self._connect()
            if self._connected:
                self._hand_over()
            if time.monotonic() - last_expire > SPOOL_EXPIRE_EVERY_SECONDS:
                last_expire = time.monotonic()
                self._expire_spool()
            self._poll()
        self._shutdown()

    def _drain_inbox(self) -> None:
        """Write queued events to the spool (fsync'd) and route the other messages."""
        while True:
            with self._lock:
                if not self._inbox:
                    return
                item = self._inbox.popleft()
                self._in_transit = int(item.kind == "event")
            if item.kind == "event":
                entry = self.spool.append(item.topic, item.payload)
                if entry is not None:
                    self._unsent.append(entry)
                self._sync_spool_count()
            elif item.kind == "retained":
                self._retained[item.topic] = item.payload
                self._dirty.add(item.topic)
            elif self._connected:
                self._client.publish(item.topic, item.payload, qos=0 if item.kind == "telemetry" else 1)

    def _connect(self) -> None:
        try:
            self._client.connect(self.host, self.port, keepalive=self._keepalive)
        except (OSError, ValueError) as exc:  # refused, unreachable, TLS handshake, DNS
            self._failures += 1
            delay = self._schedule_retry()
            log = logger.warning if self._failures == 1 else logger.debug
            log("MQTT: broker %s:%d unreachable (%s); keeping events, retry in %.1f s", self.host, self.port, exc, delay)

    def _schedule_retry(self) -> float:
        delay = backoff_seconds(self._failures, *self._reconnect_range)
        self._next_attempt = time.monotonic() + delay
        return delay

    def _hand_over(self) -> None:
        """Give paho the oldest unsent events within the in-flight window, and the latest retained values."""
        while self._unsent and len(self._by_mid) < MAX_INFLIGHT:
            entry = self._unsent.popleft()
            if not self.spool.contains(entry):
                continue  # dropped by the spool's size or age bound
            info = self._client.publish(entry.topic, entry.payload, qos=1)
            self._by_mid[info.mid] = entry
        for topic in sorted(self._dirty):
            self._client.publish(topic, self._retained[topic], qos=1, retain=True)
        self._dirty.clear()
        if self._discovery_due:
            self._discovery_due = False
            for topic, payload in self._discovery:
                self._client.publish(topic, payload, qos=1, retain=True)

    def _poll(self) -> None:
        """Wait for network traffic, a wake-up, or the next reconnect/keepalive time; then run paho's I/O."""
        sock = self._client.socket()
        timeout = POLL_SECONDS if sock is not None else max(0.0, min(POLL_SECONDS, self._next_attempt - time.monotonic()))
        readers = [self._wake_r] + ([sock] if sock is not None else [])
        writers = [sock] if sock is not None and self._client.want_write() else []
        try:
            readable, writable, _ = select.select(readers, writers, [], timeout)
        except (OSError, ValueError):
            readable, writable = [], []  # the socket was closed under us; paho notices below
        if self._wake_r in readable:
            try:
                while self._wake_r.recv(4096):
                    pass
            except BlockingIOError:
                pass
        if sock is not None:
            if sock in readable:
                self._client.loop_read()
            if sock in writable and self._client.socket() is not None:
                self._client.loop_write()
            if self._client.socket() is not None:
                self._client.loop_misc()

    def _expire_spool(self) -> None:
        if self.spool.expire():
            self._sync_spool_count()

    def _sync_spool_count(self) -> None:
        with self._lock:
            self._spool_pending = len(self.spool.pending())
            self._in_transit = 0
            self._lock.notify_all()

    def _shutdown(self) -> None:
        """Spool the inbox, publish 'offline' (a clean stop, so the broker drops the Will) and disconnect."""
        self._drain_inbox()
        deadline = time.monotonic() + OFFLINE_ACK_SECONDS
        if self._connected:
            info = self._client.publish(self.status_topic, STATUS_OFFLINE, qos=1, retain=True)
            while not info.is_published() and self._client.socket() is not None and time.monotonic() < deadline:
                self._poll()
        if self._client.socket() is not None:
            self._client.disconnect()
            while self._client.socket() is not None and self._client.want_write() and time.monotonic() < deadline:
                self._poll()

    # -- paho callbacks (on the publisher thread) ---------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            # A refusal (bad credentials, not authorised) is not a connection.
            self._failures += 1
            with self._lock:
                self._refused = str(reason_code)
            logger.error("MQTT: broker %s:%d refused the connection: %s", self.host, self.port, reason_code)
            return
        client.publish(self.status_topic, STATUS_ONLINE, qos=1, retain=True)
        client.subscribe(self.command_topic, qos=1)
        if self._ha_status_topic:
            client.subscribe(self._ha_status_topic, qos=1)
        # Everything paho had in flight is re-sent by paho itself; retained values and
        # discovery are re-published in case the broker lost them.
        self._dirty.update(self._retained)
        self._discovery_due = bool(self._discovery)
        logger.info("MQTT: connected to %s:%d%s", self.host, self.port, " (after a refusal)" if self._refused else "")
        self._failures = 0
        with self._lock:
            self._connected = True
            self._refused = None
            self._lock.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._lock:
            was_connected = self._connected
            self._connected = False
        delay = self._schedule_retry()
        if was_connected and not self._stop.is_set():
            logger.warning("MQTT: lost connection to %s:%d (%s); retry in %.1f s", self.host, self.port, reason_code, delay)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        entry = self._by_mid.pop(mid, None)
        if entry is None:
            return  # status, state, discovery or a reply
        self.spool.remove(entry)
        with self._lock:
            self._delivered += 1
        self._sync_spool_count()

    def _on_message(self, client, userdata, message) -> None:
        if message.topic == self._ha_status_topic:
            if message.payload == b"online":
                logger.info("MQTT: Home Assistant is online; republishing discovery")
                self._discovery_due = True
            return
        if message.topic.startswith(self._command_prefix):
            self.commands.dispatch(message.topic[len(self._command_prefix):], message.payload)

    def failure(self) -> str | None:
        """None while the publishing thread is alive and making progress, else one line saying what is wrong."""
        thread = getattr(self, "_thread", None)
        return None if thread is None or thread.is_alive() else "publisher thread died"


def _encode(payload: dict[str, Any]) -> bytes:
    """Compact JSON, UTF-8: what every acmon topic carries."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def make_publisher(
    cfg: "AcmonConfig",
    host: str | None = None,
    port: int | None = None,
    password: str | None = None,
    model_label: str | None = None,
) -> MqttPublisher:
    """The publisher the config describes (the Runner's one way to build it).

    Args:
        cfg: the whole config (device identity and the mqtt section).
        host, port: override mqtt.host / mqtt.port (e.g. from --broker).
        password: from config.resolve_mqtt_password(cfg.mqtt).
        model_label: shown as the device model in Home Assistant, e.g. "pump 1.0".
    """
    m, dev = cfg.mqtt, cfg.device
    base = topic_base(m.topic_prefix, dev.site, dev.id)
    device = DeviceInfo(dev.site, dev.id, base, **({"model": model_label} if model_label else {}))
    return MqttPublisher(
        host=host or m.host,
        port=port or m.port,
        base_topic=base,
        client_id=m.client_id or f"acmon-{dev.site}-{dev.id}",
        keepalive_seconds=m.keepalive_seconds,
        reconnect_min_seconds=m.reconnect_min_seconds,
        reconnect_max_seconds=m.reconnect_max_seconds,
        max_pending=m.max_pending_alerts,
        username=m.username,
        password=password,
        tls=m.tls,
        spool_dir=m.spool_dir,
        spool_max_bytes=round(m.spool_max_mb * MEGABYTE),
        spool_max_age_seconds=m.spool_max_age_days * DAY_SECONDS,
        device=device if m.homeassistant_discovery else None,
        discovery_prefix=m.discovery_prefix,
    )

"""MQTT publisher on its own thread: events spooled to disk until the broker acknowledges them.

One thread owns the paho client, the spool and every network call: it connects
(exponential backoff with jitter), writes events to the spool, hands them to paho in
order, deletes them on PUBACK, keeps the retained state/health current, publishes Home
Assistant discovery and dispatches commands. The analysis thread only appends to a
bounded in-memory inbox and wakes the thread, so it never waits on the network or the disk.

The thread is supervised: an exception in one pass of its loop (a callback, paho, the
spool) is logged, counted and the next pass goes on; `failure()` says when the thread
died, or stopped making progress, so the daemon can report it and stop feeding the
watchdog. The spool is the one copy of unacknowledged events: each connection gets a
fresh paho client, and events in flight when a connection ends are handed over again.

Over 500 lines on purpose: it is one thread's loop and the state only that thread touches (connection,
backoff, in-flight messages, retained topics); split across files, that ownership would no longer show.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import random
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..settings.config import mqtt_client_id
from .commands import CommandDispatcher, CommandHandler, ContainedErrors
from .ha_discovery import DeviceInfo, band_level_entities, discovery_messages, powerline_entities
from .ha_discovery import status_topic as ha_status_topic
from .payloads import loads_untrusted_json
from .spool import Spool, SpoolEntry, default_spool_root, remove_empty_parents, spool_directory

if TYPE_CHECKING:
    from ..settings.schema import AcmonConfig

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
# Supervision. A pass of the loop takes at most POLL_SECONDS, or a connection attempt
# (paho's 5 s connect timeout, a TLS handshake, a slow DNS lookup); no pass for this long
# means the thread is stuck, or failing at every pass.
STALL_SECONDS = 60.0
# After a contained exception the next pass waits this long, so a persistent fault cannot spin.
ERROR_PAUSE_SECONDS = 1.0
# A broker that refuses a message closes the connection as it reads it (mosquitto does for
# a packet over max_packet_size, or a topic it cannot accept). A connection lost within
# REFUSAL_WINDOW_SECONDS of handing messages over makes them suspects, handed over one at
# a time; a suspect that loses the connection MAX_REFUSALS times alone is quarantined.
# (A network outage is noticed by the keepalive, after tens of seconds, so it makes no suspects.)
REFUSAL_WINDOW_SECONDS = 10.0
MAX_REFUSALS = 5
# Command results waiting for a connection; older ones are dropped beyond this.
MAX_WAITING_REPLIES = 100
# Events are flat JSON objects with one nested object (`model`); room to grow.
MAX_EVENT_DEPTH = 16


def event_payload_problem(payload: bytes) -> str | None:
    """None if a spooled payload is a JSON object (what every acmon event is), else why not."""
    try:
        data = loads_untrusted_json(payload, MAX_EVENT_DEPTH)
    except ValueError as exc:
        return f"payload is not JSON: {exc}"
    return None if isinstance(data, dict) else "payload is not a JSON object"


def topic_base(prefix: str, site: str, device_id: str) -> str:
    """Root of one device's topic tree: <prefix>/<site>/<device_id>."""
    return f"{prefix}/{site}/{device_id}"


def backoff_seconds(
    failures: int, min_seconds: float, max_seconds: float, uniform: Callable[[], float] = random.random
) -> float:
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
    thread_errors: int = 0  # exceptions contained on the publisher thread (its loop, callbacks, command handler)
    quarantined: int = 0  # spooled messages moved aside: unpublishable, or refused by the broker again and again
    unsaved: int = 0  # pending events held in memory only, because the spool cannot be written
    spool_problem: str | None = None  # why the spool is not durable right now, None when it is


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
        stall_seconds: failure() reports the thread once it has made no progress for this long, in seconds.
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
        stall_seconds: float = STALL_SECONDS,
    ):
        import paho.mqtt.client as mqtt  # noqa: PLC0415 -- the device extra; not needed for offline replay

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
        self.spool = Spool(
            spool_directory(self._spool_root, base_topic),
            spool_max_bytes,
            spool_max_age_seconds,
            topic_prefix=f"{base_topic}/",
            check_payload=event_payload_problem,
        )
        self._errors = ContainedErrors()
        self.commands = CommandDispatcher(base_topic.rsplit("/", 1)[-1], self._enqueue_reply, errors=self._errors)
        self._discovery = (
            [(topic, _encode(payload)) for topic, payload in discovery_messages(device, discovery_prefix)]
            if device is not None
            else []
        )
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
        self._by_mid: dict[int, SpoolEntry | _Outgoing] = {}  # handed to paho, waiting for PUBACK
        self._handed_at: dict[int, float] = {}  # spool number -> monotonic time it was last handed over
        self._suspects: dict[int, SpoolEntry] = {}  # in flight when the broker closed the connection
        self._refusals: collections.Counter[int] = collections.Counter()
        self._replies: collections.deque[_Outgoing] = collections.deque(maxlen=MAX_WAITING_REPLIES)
        self._retained: dict[str, bytes] = {}
        self._dirty: set[str] = set()
        self._discovery_due = False
        self._failures = 0
        self._next_attempt = 0.0
        self._thread: threading.Thread | None = None

        # Supervision: written by the publisher thread, read by failure() on any thread.
        self._stall_seconds = stall_seconds
        self._progress_monotonic = time.monotonic()
        self._last_pass_failed = False
        self._death: str | None = None

        self._mqtt = mqtt
        self._client_settings = (client_id, username, password, tls)
        self._client = self._new_client()
        self._client_used = False

    def _new_client(self):
        """A paho client for one connection, its callbacks guarded so that none can end the thread."""
        client_id, username, password, tls = self._client_settings
        mqtt = self._mqtt
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        client.will_set(self.status_topic, STATUS_OFFLINE, qos=1, retain=True)
        if username:
            client.username_pw_set(username, password)
        if tls is not None:
            client.tls_set(ca_certs=tls.ca_file, certfile=tls.cert_file, keyfile=tls.key_file)
            if tls.insecure:
                client.tls_insecure_set(True)
        client.on_connect = self._guarded("MQTT on_connect", self._on_connect)
        client.on_disconnect = self._guarded("MQTT on_disconnect", self._on_disconnect)
        client.on_publish = self._guarded("MQTT on_publish", self._on_publish)
        client.on_message = self._guarded("MQTT on_message", self._on_message)
        return client

    def _guarded(self, where: str, callback: Callable[..., None]) -> Callable[..., None]:
        def guarded(*args: Any) -> None:
            try:
                callback(*args)
            except Exception as exc:  # noqa: BLE001 - contained: paho's state stays consistent, the thread goes on
                self._errors.record(where, exc)

        return guarded

    # -- lifecycle (caller's thread) ----------------------------------------

    def start(self) -> None:
        """Start the publisher thread; returns at once whether or not the broker is reachable."""
        logger.info(
            "MQTT: connecting to %s:%d as %s (spool %s)", self.host, self.port, self.base_topic, self.spool.directory
        )
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
        # The thread has ended: normally it spooled the inbox on its way out, but a thread that died
        # left its queue in memory. Spool it here, so the next start delivers it.
        try:
            self._drain_inbox()
        except Exception as exc:  # noqa: BLE001 - the spool itself is failing; say what is lost
            logger.error(
                "MQTT: could not spool the queued events at stop (%s: %s); they are lost", type(exc).__name__, exc
            )
        left = sum(entry.path is not None for entry in self.spool.pending())
        if left:
            logger.warning(
                "MQTT: %d event(s) not acknowledged yet; kept in %s for the next start", left, self.spool.directory
            )
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

    def publish_evidence(self, topic_suffix: str, chunk: bytes) -> None:
        """QoS 1 on <base>/<topic_suffix>, raw bytes (get_evidence's chunks); kept in memory while offline, as replies."""
        self._enqueue(_Outgoing("reply", f"{self.base_topic}/{topic_suffix}", chunk))

    def publish_model(self, payload: dict[str, Any]) -> None:
        """Retained QoS 1 on <base>/model (the model in use and the last update); while offline only the latest."""
        self._enqueue(_Outgoing("retained", f"{self.base_topic}/model", _encode(payload)))

    def publish_telemetry(self, payload: dict[str, Any]) -> None:
        """QoS 0 on <base>/telemetry with the spool's counters added as `spool`; skipped while offline."""
        stats = self.stats
        body = {
            **payload,
            "spool": {
                "pending": stats.pending,
                "dropped": stats.dropped,
                "quarantined": stats.quarantined,
                "unsaved": stats.unsaved,
            },
        }
        self._enqueue(_Outgoing("telemetry", f"{self.base_topic}/telemetry", _encode(body)))

    def set_command_handler(self, handler: CommandHandler | None) -> None:
        """Register handler(name, args, reply) for validated commands (called on the publisher thread)."""
        self.commands.handler = handler

    def failure(self) -> str | None:
        """None while the publisher thread is alive and making progress (or not started, or stopped).

        Otherwise one line for health and logs: "publisher thread died: <Type>: <message>",
        "publisher thread failing for <n> s: <where>: <Type>: <message> (<k> errors)" when
        every pass of its loop raises, or "publisher thread stalled for <n> s". Any thread.
        """
        thread = self._thread
        if thread is None:
            return None
        if self._death is not None:
            return f"publisher thread died: {self._death}"
        if self._stop.is_set():
            return None
        if not thread.is_alive():
            return "publisher thread ended unexpectedly"
        idle = time.monotonic() - self._progress_monotonic
        if idle <= self._stall_seconds:
            return None
        if self._last_pass_failed:
            return f"publisher thread failing for {idle:.0f} s: {self._errors.last} ({self._errors.count} errors)"
        return f"publisher thread stalled for {idle:.0f} s"

    @property
    def stats(self) -> PublisherStats:
        spool = self.spool.stats
        with self._lock:
            return PublisherStats(
                self._queued,
                self._delivered,
                self._inbox_dropped + spool.dropped,
                self._pending_locked(),
                self._connected,
                self._refused,
                self._errors.count,
                spool.quarantined,
                spool.unsaved,
                spool.problem,
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
        """The thread: passes of the loop until stop(); an exception ends one pass, not the thread."""
        try:
            self._last_expire = time.monotonic()
            while not self._stop.is_set():
                try:
                    self._pass()
                except Exception as exc:  # noqa: BLE001 - supervised: logged once, counted, carried on
                    self._last_pass_failed = True
                    self._errors.record("MQTT publisher loop", exc)
                    self._stop.wait(ERROR_PAUSE_SECONDS)
                else:
                    self._last_pass_failed = False
                    self._progress_monotonic = time.monotonic()
            try:
                self._shutdown()
            except Exception as exc:  # noqa: BLE001 - stopping anyway; events stay in the spool
                self._errors.record("MQTT publisher shutdown", exc)
        except BaseException as exc:
            # Something no pass could contain (not an Exception): make it visible, for failure() and the log.
            if not self._stop.is_set():
                self._death = f"{type(exc).__name__}: {str(exc)[:300]}"
            logger.critical(
                "MQTT: the publisher thread died: %s: %s; no further event will be published",
                type(exc).__name__,
                exc,
                exc_info=exc,
            )

    def _pass(self) -> None:
        """One pass: spool the inbox, (re)connect when due, hand events over, expire, wait for traffic."""
        self._drain_inbox()
        if self._client.socket() is None and time.monotonic() >= self._next_attempt:
            self._connect()
        if self._connected:
            self._hand_over()
        if time.monotonic() - self._last_expire > SPOOL_EXPIRE_EVERY_SECONDS:
            self._last_expire = time.monotonic()
            self._expire_spool()
        self._poll()

    def _drain_inbox(self) -> None:
        """Write queued events to the spool (fsync'd) and route the other messages."""
        while True:
            with self._lock:
                if not self._inbox:
                    return
                item = self._inbox.popleft()
                self._in_transit = int(item.kind == "event")
            if item.kind == "event":
                try:
                    entry = self.spool.append(item.topic, item.payload)
                except Exception:
                    with self._lock:
                        self._inbox_dropped += 1
                    raise
                finally:
                    self._sync_spool_count()  # also ends _in_transit, whatever happened
                if entry is not None:
                    self._unsent.append(entry)
            elif item.kind == "retained":
                self._retained[item.topic] = item.payload
                self._dirty.add(item.topic)
            elif item.kind == "reply":
                if self._connected:
                    self._publish_reply(item)
                else:
                    self._replies.append(item)  # sent after the next connect
            elif self._connected:
                self._client.publish(item.topic, item.payload, qos=0)

    def _connect(self) -> None:
        if self._client_used:
            # A fresh client: the old one would re-send everything it had in flight, including
            # a message the broker refuses. What was in flight goes back to the front of the queue.
            self._take_back_in_flight()
            self._client = self._new_client()
        self._client_used = True
        try:
            self._client.connect(self.host, self.port, keepalive=self._keepalive)
        except (OSError, ValueError) as exc:  # refused, unreachable, TLS handshake, DNS
            self._failures += 1
            delay = self._schedule_retry()
            log = logger.warning if self._failures == 1 else logger.debug
            log(
                "MQTT: broker %s:%d unreachable (%s); keeping events, retry in %.1f s", self.host, self.port, exc, delay
            )
        except Exception:
            self._failures += 1
            self._schedule_retry()
            raise

    def _take_back_in_flight(self) -> None:
        """Messages handed to the old client and not acknowledged: events to _unsent, replies to _replies, in order."""
        events = sorted((v for v in self._by_mid.values() if isinstance(v, SpoolEntry)), key=lambda e: e.number)
        replies = [v for v in self._by_mid.values() if isinstance(v, _Outgoing)]
        self._by_mid.clear()
        self._unsent.extendleft(reversed(events))
        self._replies.extendleft(reversed(replies))

    def _schedule_retry(self) -> float:
        delay = backoff_seconds(self._failures, *self._reconnect_range)
        self._next_attempt = time.monotonic() + delay
        return delay

    def _hand_over(self) -> None:
        """Give paho the oldest unsent events within the in-flight window, waiting replies, the latest retained values.

        The window is one event while there are suspects (see REFUSAL_WINDOW_SECONDS), so
        that a message the broker refuses is the only one in flight when it does.
        """
        self._suspects = {n: e for n, e in self._suspects.items() if self.spool.contains(e)}
        window = 1 if self._suspects else MAX_INFLIGHT
        in_flight = sum(isinstance(v, SpoolEntry) for v in self._by_mid.values())
        while self._unsent and in_flight < window:
            entry = self._unsent.popleft()
            if not self.spool.contains(entry):
                continue  # dropped by the spool's size or age bound, or quarantined
            problem = self.spool.check(entry.topic, entry.payload)
            if problem is None:
                try:
                    info = self._client.publish(entry.topic, entry.payload, qos=1)
                except ValueError as exc:  # paho refuses it (a topic or size the checks let through)
                    problem = f"refused by the MQTT client: {exc}"
                except Exception:
                    self._unsent.appendleft(entry)
                    raise
            if problem is not None:
                self.spool.quarantine(entry, problem)
                self._sync_spool_count()
                continue
            self._by_mid[info.mid] = entry
            self._handed_at[entry.number] = time.monotonic()
            in_flight += 1
        while self._replies:
            self._publish_reply(self._replies.popleft())
        for topic in sorted(self._dirty):
            self._client.publish(topic, self._retained[topic], qos=1, retain=True)
        self._dirty.clear()
        if self._discovery_due:
            self._discovery_due = False
            for topic, payload in self._discovery:
                self._client.publish(topic, payload, qos=1, retain=True)

    def _publish_reply(self, item: _Outgoing) -> None:
        info = self._client.publish(item.topic, item.payload, qos=1)
        self._by_mid[info.mid] = item

    def _poll(self) -> None:
        """Wait for network traffic, a wake-up, or the next reconnect/keepalive time; then run paho's I/O."""
        sock = self._client.socket()
        timeout = (
            POLL_SECONDS if sock is not None else max(0.0, min(POLL_SECONDS, self._next_attempt - time.monotonic()))
        )
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
        # Forget delivery bookkeeping of messages the spool no longer holds (dropped by its bounds).
        held = {entry.number for entry in self.spool.pending()}
        for book in (self._handed_at, self._refusals):
            for number in [n for n in book if n not in held]:
                del book[number]

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
        # Subscribe before saying online: the broker handles one connection's packets in order, so a dashboard
        # that sends a command as soon as it sees `online` never reaches a device not yet listening.
        client.subscribe(self.command_topic, qos=1)
        if self._ha_status_topic:
            client.subscribe(self._ha_status_topic, qos=1)
        client.publish(self.status_topic, STATUS_ONLINE, qos=1, retain=True)
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
            logger.warning(
                "MQTT: lost connection to %s:%d (%s); retry in %.1f s", self.host, self.port, reason_code, delay
            )
            self._note_refusal()

    def _note_refusal(self) -> None:
        """The connection ended: if it did so right after events were handed over, suspect them (see MAX_REFUSALS)."""
        in_flight = sorted((v for v in self._by_mid.values() if isinstance(v, SpoolEntry)), key=lambda e: e.number)
        now = time.monotonic()
        recent = [e for e in in_flight if now - self._handed_at.get(e.number, -math.inf) <= REFUSAL_WINDOW_SECONDS]
        if not recent:
            return
        if len(in_flight) == 1 and in_flight[0].number in self._suspects:
            entry = in_flight[0]
            self._refusals[entry.number] += 1
            if self._refusals[entry.number] >= MAX_REFUSALS:
                self._forget(entry)
                self.spool.quarantine(
                    entry, f"the broker closed the connection {MAX_REFUSALS} times as it was being delivered"
                )
                self._sync_spool_count()
                return
        for entry in recent:
            self._suspects[entry.number] = entry

    def _forget(self, entry: SpoolEntry) -> None:
        self._suspects.pop(entry.number, None)
        self._refusals.pop(entry.number, None)
        self._handed_at.pop(entry.number, None)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        entry = self._by_mid.pop(mid, None)
        if not isinstance(entry, SpoolEntry):
            return  # status, state, discovery or a reply
        self._forget(entry)
        if not self.spool.contains(entry):
            return  # quarantined while in flight, and delivered after all
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
            self.commands.dispatch(message.topic[len(self._command_prefix) :], message.payload)


def _encode(payload: dict[str, Any]) -> bytes:
    """Compact JSON, UTF-8: what every acmon topic carries."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def make_publisher(
    cfg: AcmonConfig,
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
    bands = band_level_entities(cfg.levels.ha_bands_hz, "dB" if cfg.audio.calibration_db else "dBFS")
    device = DeviceInfo(
        dev.site,
        dev.id,
        base,
        **({"model": model_label} if model_label else {}),
        extra_entities=(bands if cfg.levels.enabled else ()) + (powerline_entities() if cfg.powerline.enabled else ()),
    )
    return MqttPublisher(
        host=host or m.host,
        port=port or m.port,
        base_topic=base,
        client_id=mqtt_client_id(cfg),
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

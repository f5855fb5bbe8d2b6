"""MQTT publisher on its own thread: alerts at QoS 1 kept until the broker acknowledges them."""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

STATUS_ONLINE = "online"
STATUS_OFFLINE = "offline"
# paho's default in-flight window; more unacknowledged messages than this wait in our queue.
MAX_INFLIGHT = 20


def topic_base(prefix: str, site: str, device_id: str) -> str:
    """Root of one device's topic tree: <prefix>/<site>/<device_id>."""
    return f"{prefix}/{site}/{device_id}"


@dataclass
class _Pending:
    topic: str
    payload: bytes
    mid: int | None = None  # set once handed to paho; paho re-sends it after a reconnect
    acked: bool = False


@dataclass(frozen=True)
class PublisherStats:
    queued: int
    delivered: int
    dropped: int
    pending: int
    connected: bool


class MqttPublisher:
    """Publishes a device's status and events; never blocks the analysis.

    Events are appended to a bounded in-memory queue and stay there until the
    broker's PUBACK arrives, so a broker outage loses nothing while the queue
    has room; when it is full the oldest event is dropped and counted. paho
    keeps each handed-over QoS 1 message and re-sends it after a reconnect, so
    an event is handed to paho once and removed from the queue only on its
    acknowledgement. Delivery is at least once; subscribers deduplicate on
    event_id and seq.

    The status topic is retained: 'online' on every (re)connect, 'offline' on
    a clean stop and, as the Last Will, when the device vanishes.
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
    ):
        import paho.mqtt.client as mqtt  # the device extra; not needed for offline replay

        self._mqtt = mqtt
        self.host, self.port = host, port
        self.base_topic = base_topic
        self.status_topic = f"{base_topic}/status"
        self.events_topic = f"{base_topic}/events"
        self._keepalive = keepalive_seconds
        self._lock = threading.Condition()
        self._queue: collections.deque[_Pending] = collections.deque()
        self._max_pending = max_pending
        self._by_mid: dict[int, _Pending] = {}
        self._connected = False
        self._ever_connected = False
        self._failures = 0
        self._stop = threading.Event()
        self._queued = self._delivered = self._dropped = 0
        self._thread: threading.Thread | None = None

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        client.reconnect_delay_set(min_delay=max(1, round(reconnect_min_seconds)), max_delay=round(reconnect_max_seconds))
        client.will_set(self.status_topic, STATUS_OFFLINE, qos=1, retain=True)
        if username:
            client.username_pw_set(username, password)
        if tls is not None:
            client.tls_set(ca_certs=tls.ca_file, certfile=tls.cert_file, keyfile=tls.key_file)
            if tls.insecure:
                client.tls_insecure_set(True)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._client = client

    # -- lifecycle -------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; returns at once whether or not the broker is reachable."""
        logger.info("MQTT: connecting to %s:%d as %s", self.host, self.port, self.base_topic)
        self._client.connect_async(self.host, self.port, keepalive=self._keepalive)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)
        self._thread.start()

    def flush(self, timeout_seconds: float) -> bool:
        """Wait until every queued event is acknowledged; False if the time ran out."""
        deadline = time.monotonic() + timeout_seconds
        with self._lock:
            while self._queue:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(min(remaining, 0.1))
        return True

    def stop(self, timeout_seconds: float = 5.0) -> None:
        """Publish 'offline', disconnect and join the threads (logging any still pending events)."""
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
            connected = self._connected
            left = len(self._queue)
        if connected:
            info = self._client.publish(self.status_topic, STATUS_OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=min(2.0, timeout_seconds))
            except (RuntimeError, ValueError):
                pass
        if left:
            logger.error("MQTT: %d event(s) not acknowledged by the broker at shutdown", left)
        self._client.disconnect()
        self._client.loop_stop()
        if self._thread is not None:
            self._thread.join(timeout_seconds)
            if self._thread.is_alive():
                logger.warning("MQTT: publisher thread still alive after %.1f s", timeout_seconds)

    # -- publishing ------------------------------------------------------

    def publish_event(self, payload: dict[str, Any]) -> None:
        """Queue an event for delivery at QoS 1. Never blocks on the network."""
        data = json.dumps(payload, separators=(",", ":")).encode()
        with self._lock:
            if len(self._queue) >= self._max_pending:
                dropped = self._queue.popleft()
                self._dropped += 1
                if dropped.mid is not None:
                    self._by_mid.pop(dropped.mid, None)
                logger.error("MQTT: pending queue full (%d); dropped the oldest event", self._max_pending)
            self._queue.append(_Pending(self.events_topic, data))
            self._queued += 1
            self._lock.notify_all()

    def publish_now(self, topic: str, payload: str | bytes, qos: int = 0, retain: bool = False) -> None:
        """Best-effort publish (telemetry, state): sent if connected, otherwise dropped."""
        if self._connected:
            self._client.publish(topic, payload, qos=qos, retain=retain)

    @property
    def stats(self) -> PublisherStats:
        with self._lock:
            return PublisherStats(self._queued, self._delivered, self._dropped, len(self._queue), self._connected)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                # Hand over events not yet given to paho, oldest first, within the in-flight window.
                if self._connected:
                    inflight = len(self._by_mid)
                    for item in self._queue:
                        if inflight >= MAX_INFLIGHT:
                            break
                        if item.mid is None:
                            info = self._client.publish(item.topic, item.payload, qos=1)
                            item.mid = info.mid
                            self._by_mid[info.mid] = item
                            inflight += 1
                self._lock.wait(0.5)

    # -- paho callbacks (paho's network thread) ---------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            # A refusal (bad credentials, not authorised) is not a connection.
            logger.error("MQTT: broker %s:%d refused the connection: %s", self.host, self.port, reason_code)
            return
        client.publish(self.status_topic, STATUS_ONLINE, qos=1, retain=True)
        with self._lock:
            self._connected = True
            self._failures = 0
            self._lock.notify_all()
        logger.info("MQTT: %s to %s:%d", "reconnected" if self._ever_connected else "connected", self.host, self.port)
        self._ever_connected = True

    def _on_connect_fail(self, client, userdata) -> None:
        self._failures += 1
        log = logger.warning if self._failures == 1 else logger.debug
        log("MQTT: broker %s:%d unreachable; keeping events and retrying", self.host, self.port)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._lock:
            was_connected = self._connected
            self._connected = False
        if was_connected and not self._stop.is_set():
            logger.warning("MQTT: lost connection to %s:%d (%s); retrying", self.host, self.port, reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            item = self._by_mid.pop(mid, None)
            if item is None:
                return  # status message, or an event dropped from a full queue
            item.acked = True
            # Remove acknowledged events from the head so the queue stays in order.
            while self._queue and self._queue[0].acked:
                self._queue.popleft()
                self._delivered += 1
            self._lock.notify_all()

"""The MQTT contract against a real mosquitto: payload schemas, spool, commands, outages, Home Assistant discovery."""

from __future__ import annotations

import json
import os
import uuid

import pytest

from device.mqtt.ha_discovery import DeviceInfo
from device.mqtt.spool import Spool, spool_directory
from tests.helpers import Mosquitto
from tests.mqtt_support import (
    make_test_publisher,
    own_broker,
    sample_event,
    sample_health,
    sample_state,
    sample_telemetry,
    validate,
    validate_messages,
    wait_until,
)

pytestmark = pytest.mark.broker


def _base(prefix: str) -> str:
    return f"{prefix}/plant-a/pump-7"


def _dedup(events: list[dict]) -> list[dict]:
    """What a subscriber should do: keep the first copy of each (event_id, seq)."""
    seen, out = set(), []
    for event in events:
        key = (event["event_id"], event["seq"])
        if key not in seen:
            seen.add(key)
            out.append(event)
    return out


def test_every_payload_validates_and_lands_on_its_topic(broker, subscribe, unique_prefix, tmp_path):
    base = _base(unique_prefix)
    sub = subscribe(broker.host, broker.port, f"{unique_prefix}/#")
    pub = make_test_publisher(broker.port, base, tmp_path / "spool")
    pub.start()
    try:
        pub.publish_event(sample_event(0))
        pub.publish_state(sample_state())
        pub.publish_health(sample_health())
        assert pub.flush(10)
        assert sub.wait_for(lambda s: {"state", "health"} <= {t.rsplit("/", 1)[-1] for t, _, _ in s.messages}, 10)
        pub.publish_telemetry(sample_telemetry())
        assert sub.wait_for(lambda s: s.json_on("/telemetry"), 10)
    finally:
        pub.stop()
    assert sub.wait_for(lambda s: s.messages[-1][1] == b"offline", 10)
    assert validate_messages(sub.messages) == 4
    telemetry = sub.json_on("/telemetry")[0]
    assert telemetry["spool"] == {"pending": 0, "dropped": 0, "quarantined": 0, "unsaved": 0}
    topics = {t for t, _, _ in sub.messages}
    assert topics == {f"{base}/{leaf}" for leaf in ("status", "events", "state", "health", "telemetry")}
    # The spool is empty and leaves no folders behind.
    assert not (tmp_path / "spool").exists() or not any((tmp_path / "spool").rglob("*.msg"))


def test_state_and_health_are_retained_latest_wins(broker, subscribe, unique_prefix, tmp_path):
    base = _base(unique_prefix)
    pub = make_test_publisher(broker.port, base, tmp_path / "spool")
    pub.start()
    try:
        pub.publish_state(sample_state("anomaly"))
        pub.publish_state(sample_state("ok", score=0.3))
        pub.publish_health(sample_health(ok=True))
        pub.publish_event(sample_event(0))  # flushing an event after them means they were handed over first
        assert pub.flush(10)
        late = subscribe(broker.host, broker.port, f"{base}/+")
        assert late.wait_for(lambda s: len(s.messages) >= 3, 10), late.messages
    finally:
        pub.stop()
    retained = {t.rsplit("/", 1)[-1]: json.loads(p) if t[-6:] != "status" else p for t, p, r in late.messages if r}
    assert retained["state"]["state"] == "ok" and retained["health"]["ok"] is True
    assert retained["status"] == b"online"


def test_broker_outage_every_event_arrives_once_in_order(mosquitto_bin, subscribe, unique_prefix, tmp_path):
    """Events produced before, during and after a broker restart all arrive, in order, once after dedup."""
    broker = own_broker(tmp_path).start()
    base = _base(unique_prefix)
    sub = subscribe(
        broker.host, broker.port, f"{base}/events", client_id=f"s{uuid.uuid4().hex[:20]}", clean_session=False
    )
    pub = make_test_publisher(broker.port, base, tmp_path / "spool")
    pub.start()
    event_id = uuid.uuid4().hex
    total = 60
    try:
        for seq in range(total):
            pub.publish_event(sample_event(seq, event_id, "update"))
            if seq == 19:
                assert sub.wait_for(lambda s: len(s.messages) >= 5, 10)
                broker.stop()  # while events are being produced, some still in flight
                assert wait_until(lambda: not pub.stats.connected)
            if seq == 39:
                assert pub.stats.pending >= 20
                broker.start()
        assert pub.flush(30), pub.stats
        assert sub.wait_for(lambda s: len(_dedup(s.json_on("/events"))) >= total, 30), len(sub.messages)
    finally:
        pub.stop()
        broker.stop()
    events = _dedup(sub.json_on("/events"))
    assert [e["seq"] for e in events] == list(range(total))
    assert pub.stats.dropped == 0
    for event in events:
        validate("event", event)


def test_spool_from_a_previous_run_is_delivered_first(broker, subscribe, unique_prefix, tmp_path):
    """Events left unacknowledged by a stopped publisher are sent by the next one, before new ones."""
    base = _base(unique_prefix)
    sub = subscribe(broker.host, broker.port, f"{base}/events")
    dead_port = Mosquitto(tmp_path).port  # nothing listens there
    first = make_test_publisher(dead_port, base, tmp_path / "spool")
    first.start()
    for seq in range(3):
        first.publish_event(sample_event(seq))
    first.stop()
    assert len(list(spool_directory(tmp_path / "spool", base).glob("*.msg"))) == 3
    second = make_test_publisher(broker.port, base, tmp_path / "spool")
    assert second.stats.pending == 3
    second.publish_event(sample_event(3))
    second.start()
    try:
        assert second.flush(10)
    finally:
        second.stop()
    assert sub.wait_for(lambda s: len(s.messages) >= 4, 10)
    assert [e["seq"] for e in sub.json_on("/events")] == [0, 1, 2, 3]


def test_spool_bounds_drop_oldest_and_telemetry_reports_it(broker, subscribe, unique_prefix, tmp_path):
    base = _base(unique_prefix)
    dead_port = Mosquitto(tmp_path).port
    one = len(json.dumps(sample_event(0), separators=(",", ":"))) + len(base) + 10
    pub = make_test_publisher(dead_port, base, tmp_path / "spool", spool_max_bytes=3 * one)
    pub.start()
    for seq in range(5):
        pub.publish_event(sample_event(seq))
    pub.stop()
    assert pub.stats.dropped == 2 and pub.stats.pending == 3
    left = Spool(spool_directory(tmp_path / "spool", base), 10**6, 3600)
    assert [json.loads(e.payload)["seq"] for e in left.pending()] == [2, 3, 4]
    left.close()


def test_commands_validated_and_answered_never_crash(broker, subscribe, unique_prefix, tmp_path):
    base = _base(unique_prefix)
    pub = make_test_publisher(broker.port, base, tmp_path / "spool")
    calls: list[tuple[str, dict]] = []

    def handler(name, args, reply):
        calls.append((name, args))
        if name == "reload":
            raise RuntimeError("bug in the handler")
        reply({"echo": args, "state": "ok"})

    pub.set_command_handler(handler)
    pub.start()
    results = subscribe(broker.host, broker.port, f"{base}/cmd/+/result")
    # As a dashboard does: command once the device says it is online (it subscribes to its commands first). This
    # test lost its first answers under load when the device said online before subscribing.
    online = subscribe(broker.host, broker.port, f"{base}/status")
    assert online.wait_for(lambda s: any(p == b"online" for _, p, _ in s.messages), 10), online.messages
    other_device = f"{unique_prefix}/plant-a/pump-8/cmd/ping"
    commands = [
        (f"{base}/cmd/ping", b'{"request_id": "r1"}'),
        (f"{base}/cmd/ping", b""),
        (f"{base}/cmd/mute", b'{"minutes": 15}'),
        (f"{base}/cmd/mute", b'{"minutes": 0}'),
        (f"{base}/cmd/mute", b'{"minutes": true}'),
        (f"{base}/cmd/set_threshold", b'{"value": 1.5, "extra": 1}'),
        (f"{base}/cmd/calibrate", b"{not json"),
        (f"{base}/cmd/calibrate", b"[1, 2]"),
        (f"{base}/cmd/selfdestruct", b"{}"),
        (f"{base}/cmd/reload", b"{}"),
        (other_device, b"{}"),  # another device's command topic: not ours, no result
        (f"{base}/cmd/set_threshold", b'{"value": 2, "request_id": "last"}'),
    ]
    try:
        for topic, payload in commands:
            results.client.publish(topic, payload, qos=1)
        assert results.wait_for(lambda s: any(b'"last"' in p for _, p, _ in s.messages), 10), results.messages
    finally:
        pub.stop()
    answers = [(t.split("/")[-2], json.loads(p)) for t, p, _ in results.messages]
    for _, answer in answers:
        validate("command_result", answer)
    assert [(name, a["ok"]) for name, a in answers] == [
        ("ping", True),
        ("ping", True),
        ("mute", True),
        ("mute", False),
        ("mute", False),
        ("set_threshold", False),
        ("calibrate", False),
        ("calibrate", False),
        ("selfdestruct", False),
        ("reload", False),
        ("set_threshold", True),
    ]
    assert answers[0][1]["request_id"] == "r1" and answers[-1][1]["request_id"] == "last"
    assert answers[2][1]["result"]["echo"] == {"minutes": 15}
    assert "internal error" in answers[9][1]["error"]
    assert "unknown command" in answers[8][1]["error"]
    assert calls == [
        ("ping", {}),
        ("ping", {}),
        ("mute", {"minutes": 15}),
        ("reload", {}),
        ("set_threshold", {"value": 2}),
    ]


def test_home_assistant_discovery_retained_and_republished(broker, subscribe, unique_prefix, tmp_path):
    base = _base(unique_prefix)
    ha_prefix = f"{unique_prefix}-ha"
    info = DeviceInfo("plant-a", "pump-7", base, model="pump 1.0")
    pub = make_test_publisher(broker.port, base, tmp_path / "spool", device=info, discovery_prefix=ha_prefix)
    sub = subscribe(broker.host, broker.port, f"{ha_prefix}/#")
    pub.start()
    try:
        assert sub.wait_for(lambda s: len(s.messages) >= 9, 10), sub.messages
        first = len(sub.messages)
        sub.client.publish(f"{ha_prefix}/status", b"online", qos=1)  # Home Assistant restarted
        assert sub.wait_for(lambda s: len(s.messages) >= 2 * first + 1, 10)
    finally:
        pub.stop()
    configs = {t: json.loads(p) for t, p, _ in sub.messages if t.endswith("/config")}
    assert len(configs) == 9
    assert all(t.startswith(f"{ha_prefix}/") and t.split("/")[2] == info.node_id for t in configs)
    late = subscribe(broker.host, broker.port, f"{ha_prefix}/+/{info.node_id}/+/config")
    assert late.wait_for(lambda s: len(s.messages) == 9, 10)
    assert all(retain for _, _, retain in late.messages)


def test_default_spool_root_is_the_systemd_state_directory(monkeypatch, tmp_path):
    from device.mqtt.spool import default_spool_root

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    assert default_spool_root() == tmp_path / "spool"
    monkeypatch.delenv("STATE_DIRECTORY")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "x"))
    assert default_spool_root() == tmp_path / "x" / "acmon" / "spool"
    assert os.fspath(spool_directory(tmp_path, "acmon/a/b")) == os.fspath(tmp_path / "acmon" / "a" / "b")
    with pytest.raises(ValueError):
        spool_directory(tmp_path, "acmon/../b")

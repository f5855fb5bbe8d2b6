"""Hostile MQTT input against a real mosquitto: commands that silenced the publisher, poison spools, a refusing broker.

Each test asserts the three things issue 11 asks for: every bad input gets a clear
answer (an error result, or a quarantine line), nothing raises on the publisher
thread, and every good event is still delivered, with no Last Will `offline` while
the publisher runs.
"""

from __future__ import annotations

import json
import os

import pytest

from device.mqtt.spool import QUARANTINE_DIR, encode_entry, entry_name, spool_directory
from tests.mqtt_support import make_test_publisher, own_broker, sample_event, validate

pytestmark = pytest.mark.broker


def _base(prefix: str) -> str:
    return f"{prefix}/plant-a/pump-7"


def _statuses(sub, base: str) -> list[bytes]:
    return [payload for topic, payload, _ in sub.messages if topic == f"{base}/status"]


def _wait_until_commands_arrive(sub, base: str) -> None:
    """Connected is not yet subscribed: ping until one is answered, so that no test command is lost to the race."""
    for attempt in range(40):
        sub.client.publish(f"{base}/cmd/ping", json.dumps({"request_id": f"ready-{attempt}"}).encode(), qos=1)
        if sub.wait_for(lambda s: any(b'"ready-' in p for t, p, _ in s.messages if t.endswith("/result")), 0.25):
            return
    pytest.fail("the publisher never answered a ping")


# (command name, payload): each must get exactly one error result.
HOSTILE_COMMANDS = [
    ("x", b"[" * 1000 + b"]" * 1000),  # issue 11: RecursionError killed the publisher thread
    ("ping", b'{"a":' * 600 + b"1" + b"}" * 600),
    ("set_threshold", b'{"value": [[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]}'),
    ("set_threshold", b'{"value": 1e308}'),
    ("set_threshold", b'{"value": ' + b"9" * 4000 + b"}"),
    ("set_threshold", b'{"value": Infinity}'),
    ("mute", b'{"minutes": "15"}'),
    ("mute", b"\xff\xfe\x00\x01"),
    ("ping", b'{"request_id": "\\ud800"}'),
    ("ping", b'{"\\ud800\\u0000": 1}'),
    ("calibrate", b"{" * 4096),
    ("reload", b"x" * 5000),
    ("\u00e9v\u00e9nement", b"{}"),
]


def test_hostile_commands_are_answered_and_never_silence_events(broker, subscribe, unique_prefix, tmp_path):
    base = _base(unique_prefix)
    sub = subscribe(broker.host, broker.port, f"{base}/#")
    pub = make_test_publisher(broker.port, base, tmp_path / "spool")
    calls: list[tuple[str, tuple]] = []

    def handler(name, args, reply):
        calls.append((name, tuple(args)))
        reply({"pong": True})

    pub.set_command_handler(handler)
    pub.start()
    try:
        _wait_until_commands_arrive(sub, base)
        for name, payload in HOSTILE_COMMANDS:
            sub.client.publish(f"{base}/cmd/{name}", payload, qos=1)
        sub.client.publish(f"{base}/cmd/ping", b'{"request_id": "after"}', qos=1)
        pub.publish_event(sample_event(0))  # an event after the hostile commands is still delivered
        assert pub.flush(10)
        assert sub.wait_for(lambda s: any(b'"after"' in p for t, p, _ in s.messages if t.endswith("/result")), 10)
        assert sub.wait_for(lambda s: s.json_on("/events"), 10)
        assert pub.failure() is None and pub.stats.thread_errors == 0
        assert _statuses(sub, base) == [b"online"]  # no Last Will while the publisher runs
    finally:
        pub.stop()
    results = [json.loads(p) for t, p, _ in sub.messages if t.endswith("/result")]
    results = [r for r in results if not (r["request_id"] or "").startswith("ready")]
    for result in results:
        validate("command_result", result)
    assert len(results) == len(HOSTILE_COMMANDS) + 1
    assert [r["ok"] for r in results] == [False] * len(HOSTILE_COMMANDS) + [True]
    assert all("\n" not in r["error"] and "internal error" not in r["error"] for r in results[:-1])
    assert set(calls) == {("ping", ())}  # the ready pings and "after": nothing hostile reached the handler
    assert [e["seq"] for e in sub.json_on("/events")] == [0]
    assert _statuses(sub, base) == [b"online", b"offline"]


def test_poison_spool_is_quarantined_and_good_events_delivered_once_in_order(
    broker, subscribe, unique_prefix, tmp_path
):
    base = _base(unique_prefix)
    root = tmp_path / "spool"
    folder = spool_directory(root, base)
    folder.mkdir(parents=True)
    outside = tmp_path / "outside.msg"
    outside.write_bytes(encode_entry(f"{base}/events", json.dumps(sample_event(99)).encode()))
    good = {0: 0, 2: 1, 4: 2, 6: 3}  # spool number -> seq
    for number, seq in good.items():
        (folder / entry_name(number)).write_bytes(
            encode_entry(f"{base}/events", json.dumps(sample_event(seq)).encode())
        )
    poison_topics = {
        1: f"{base}/events/#",
        3: f"{base}/events/+",
        5: f"{base}/events/a\x00b",
        7: f"{base}/" + "x" * 70_000,
    }
    for number, topic in poison_topics.items():
        (folder / entry_name(number)).write_bytes(topic.encode() + b"\n" + json.dumps(sample_event(50)).encode())
    (folder / entry_name(8)).symlink_to(outside)
    (folder / entry_name(9)).mkdir()
    (folder / ".lock").mkdir()
    sub = subscribe(broker.host, broker.port, f"{unique_prefix}/#")
    pub = make_test_publisher(broker.port, base, root)
    pub.start()
    try:
        pub.publish_event(sample_event(4))
        assert pub.flush(10)
        assert sub.wait_for(lambda s: len(s.json_on("/events")) >= 5, 10)
        assert pub.failure() is None and pub.stats.thread_errors == 0
        assert pub.stats.quarantined == 7 and pub.stats.dropped == 0  # six messages and the .lock directory
    finally:
        pub.stop()
    # stop() publishes offline and returns; the subscriber hears it a moment later (under load, after the assert).
    sub.wait_for(lambda s: b"offline" in _statuses(s, base), 5)
    assert [e["seq"] for e in sub.json_on("/events")] == [0, 1, 2, 3, 4]  # once each, in order; 99 never
    assert {t for t, _, _ in sub.messages} == {f"{base}/status", f"{base}/events"}
    assert _statuses(sub, base) == [b"online", b"offline"]
    assert sorted(os.listdir(folder / QUARANTINE_DIR)) == sorted(
        [".lock"] + [entry_name(n) for n in (1, 3, 5, 7, 8, 9)]
    )


def test_a_message_the_broker_keeps_refusing_is_quarantined(mosquitto_bin, subscribe, unique_prefix, tmp_path):
    """mosquitto closes the connection on a packet over max_packet_size: the old publisher re-sent it forever."""
    broker = own_broker(tmp_path, extra_config="max_packet_size 2000\n").start()
    try:
        base = _base(unique_prefix)
        root = tmp_path / "spool"
        folder = spool_directory(root, base)
        folder.mkdir(parents=True)
        big = {**sample_event(1), "source": "x" * 3000}  # valid JSON on a valid topic, but too big for this broker
        for number, event in enumerate([sample_event(0), big, sample_event(2), sample_event(3)]):
            (folder / entry_name(number)).write_bytes(encode_entry(f"{base}/events", json.dumps(event).encode()))
        sub = subscribe(broker.host, broker.port, f"{base}/events")
        pub = make_test_publisher(broker.port, base, root, reconnect_min_seconds=0.05, reconnect_max_seconds=0.2)
        pub.start()
        try:
            assert pub.flush(20), pub.stats
            pub.publish_event(sample_event(4))
            assert pub.flush(10)
            assert sub.wait_for(lambda s: len({e["seq"] for e in s.json_on("/events")}) == 4, 10)
            assert pub.stats.quarantined == 1 and pub.failure() is None and pub.stats.thread_errors == 0
        finally:
            pub.stop()
        seqs = [e["seq"] for e in sub.json_on("/events")]
        assert sorted(set(seqs)) == [0, 2, 3, 4]
        assert len(seqs) <= 6  # at least once, and re-sent at most once when the big one first broke the connection
        assert os.listdir(folder / QUARANTINE_DIR) == [entry_name(1)]
    finally:
        broker.stop()

"""Hostile MQTT input without a broker: fuzzed commands and spool folders, and the publisher thread's supervision.

Property tests (Hypothesis) throw random command payloads (deep nesting, huge numbers,
wrong types, invalid UTF-8) at the parser and dispatcher, and random spool folders
(random bytes, names, links, directories, FIFOs) at the spool. The supervision tests
run a real publisher whose broker is unreachable and inject faults into its loop.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.mqtt.commands import COMMANDS, MAX_COMMAND_DEPTH, CommandDispatcher, parse_command
from device.mqtt.payloads import json_nesting_depth, loads_untrusted_json
from device.mqtt.publisher import MqttPublisher, _encode, event_payload_problem
from device.mqtt.spool import LOCK_NAME, QUARANTINE_DIR, SUFFIX, Spool, check_publish_topic, encode_entry, entry_name
from tests.helpers import free_port
from tests.mqtt_support import validate, wait_until

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- commands ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.integers(min_value=10**300, max_value=10**400),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)


@st.composite
def command_payloads(draw) -> bytes:
    """Bytes a hostile or careless client might send on cmd/<name>."""
    kind = draw(st.sampled_from(["json", "args", "nested", "bytes", "mangled"]))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "args":  # plausible argument objects with hostile values
        args = draw(
            st.dictionaries(st.sampled_from(["minutes", "value", "request_id", "x", "\ud800"]), json_values, max_size=3)
        )
        return json.dumps(args).encode()
    if kind == "nested":
        depth = draw(st.integers(1, 3000))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ('{"value":[', "]}")]))
        return (opener * depth + "1" + closer * depth).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=600))
    text = json.dumps(draw(json_values)).encode()  # valid JSON, then cut or spliced
    cut = draw(st.integers(0, len(text)))
    return text[:cut] + draw(st.binary(max_size=8))


command_names = st.sampled_from(sorted(COMMANDS)) | st.text(max_size=70)


@FUZZ
@given(name=command_names, payload=command_payloads())
def test_parse_command_never_raises_and_accepts_only_valid_arguments(name, payload):
    args, request_id, error = parse_command(name, payload)
    if error is None:
        assert name in COMMANDS
        specs = COMMANDS[name]
        assert set(args) == {spec.name for spec in specs}
        for spec in specs:
            assert spec.check(args[spec.name]) is None
            assert math.isfinite(float(args[spec.name]))
    else:
        assert isinstance(error, str) and "\n" not in error and len(error) < 400


@FUZZ
@given(name=command_names, payload=command_payloads(), handler_fails=st.booleans())
def test_dispatch_answers_every_payload_exactly_once_with_a_sendable_result(name, payload, handler_fails):
    sent: list[tuple[str, dict]] = []
    dispatcher = CommandDispatcher("pump-7", lambda topic_name, body: sent.append((topic_name, body)))

    def handler(command, args, reply):
        if handler_fails:
            raise RuntimeError("handler bug")
        reply({"echo": args})

    dispatcher.handler = handler
    dispatcher.dispatch(name, payload)
    assert len(sent) == 1
    topic_name, body = sent[0]
    assert topic_name.isascii() and "/" not in topic_name and "+" not in topic_name and "#" not in topic_name
    validate("command_result", body)
    _encode(body)  # what the publisher does with it: must not raise (no lone surrogates, etc.)


@FUZZ
@given(value=json_values)
def test_nesting_depth_scan_agrees_with_the_parser(value):
    def depth(v) -> int:
        if isinstance(v, list):
            return 1 + max((depth(x) for x in v), default=0)
        if isinstance(v, dict):
            return 1 + max((depth(x) for x in v.values()), default=0)
        return 0

    text = json.dumps(value, ensure_ascii=False)
    assert json_nesting_depth(text, 1000) == depth(value)
    lone_surrogates = any(0xD800 <= ord(c) <= 0xDFFF for c in text)  # encoded, they are not UTF-8
    try:
        parsed = loads_untrusted_json(text.encode("utf-8", "surrogatepass"), MAX_COMMAND_DEPTH)
    except ValueError:
        assert depth(value) > MAX_COMMAND_DEPTH or lone_surrogates
    else:
        assert depth(value) <= MAX_COMMAND_DEPTH and not lone_surrogates
        assert json.dumps(parsed) == json.dumps(json.loads(text))  # the same value (NaN compares by text)


# -- spool --------------------------------------------------------------------------------

TOPIC = "acmon/plant-a/pump-7/events"


@st.composite
def spool_folders(draw):
    """(specs, expected): files to create in a spool folder, and the (number, payload) that should load, in order."""
    specs = []
    used: set[str] = set()
    for _ in range(draw(st.integers(0, 12))):
        number = draw(st.integers(0, 40))
        name = draw(
            st.sampled_from([entry_name(number), LOCK_NAME, QUARANTINE_DIR])
            | st.text(
                st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), min_size=1, max_size=30
            ).map(lambda t: t + draw(st.sampled_from([SUFFIX, ".tmp", "", ".lock"])))
        )
        if name in used or name in (".", "..") or len(name.encode()) > 200:
            continue
        used.add(name)
        kind = draw(st.sampled_from(["valid", "bytes", "poison_topic", "bad_payload", "link", "dir", "fifo"]))
        specs.append((name, kind, draw(st.binary(max_size=200)), number))
    # Only a well-formed entry under a name the spool writes is a message; everything else must be moved aside.
    expected = sorted(
        (number, f'{{"seq": {number}}}'.encode())
        for name, kind, _, number in specs
        if kind == "valid" and name == entry_name(number)
    )
    return specs, expected


def _create(folder: Path, outside: Path, name: str, kind: str, data: bytes, number: int) -> None:
    path = folder / name
    if kind == "valid":
        path.write_bytes(encode_entry(TOPIC, f'{{"seq": {number}}}'.encode()))
    elif kind == "bytes":
        path.write_bytes(data)
    elif kind == "poison_topic":
        path.write_bytes(TOPIC.encode() + b"/" + data.replace(b"\n", b"#") + b"#\n{}")
    elif kind == "bad_payload":
        path.write_bytes(TOPIC.encode() + b"\n" + b"[" * 5000 + data)
    elif kind == "link":
        path.symlink_to(outside)
    elif kind == "dir":
        path.mkdir()
        (path / "inside").write_bytes(data)
    else:
        os.mkfifo(path)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(folder=spool_folders())
def test_random_spool_folders_never_crash_loading_and_valid_entries_survive(folder):
    specs, expected = folder
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        outside = root / "outside.msg"
        outside.write_bytes(encode_entry(TOPIC, b'{"stolen": true}'))
        spool_dir = root / "spool"
        spool_dir.mkdir()
        for spec in specs:
            _create(spool_dir, outside, *spec)
        spool = Spool(
            spool_dir, 10**6, 10**9, topic_prefix="acmon/plant-a/pump-7/", check_payload=event_payload_problem
        )
        try:
            assert [(entry.number, entry.payload) for entry in spool.pending()] == expected
            # Nothing that looks like a message is left beside the good ones, and the link's target is untouched.
            left = {p.name for p in spool_dir.iterdir() if p.name.endswith((SUFFIX, ".tmp"))}
            assert left == {entry_name(number) for number, _ in expected}
            assert outside.read_bytes().endswith(b'{"stolen": true}')
            new = spool.append(TOPIC, b'{"seq": "new"}')
            assert new is not None and new.path is not None and spool.pending()[-1] == new
        finally:
            spool.close(remove_if_empty=False)
        again = Spool(
            spool_dir, 10**6, 10**9, topic_prefix="acmon/plant-a/pump-7/", check_payload=event_payload_problem
        )
        assert [entry.payload for entry in again.pending()] == [payload for _, payload in expected] + [
            b'{"seq": "new"}'
        ]
        assert again.stats.quarantined == 0
        again.close(remove_if_empty=False)


@FUZZ
@given(suffix=st.text(max_size=40) | st.text(max_size=5).map(lambda t: t * 1000), payload=st.binary(max_size=50))
def test_append_never_raises_and_stores_only_what_a_broker_accepts(suffix, payload):
    import paho.mqtt.client as mqtt

    topic = "acmon/plant-a/pump-7/" + suffix
    with tempfile.TemporaryDirectory() as tmp:
        spool = Spool(tmp, 10**7, 10**9, topic_prefix="acmon/plant-a/pump-7/", check_payload=event_payload_problem)
        entry = spool.append(topic, payload)
        if entry is not None:
            mqtt.Client._raise_for_invalid_topic(topic.encode())  # paho's own check agrees
            assert check_publish_topic(topic) is None and "\n" not in topic
        else:
            assert spool.stats.dropped == 1
        spool.close(remove_if_empty=False)


# -- the publisher thread's supervision ----------------------------------------------------


@pytest.fixture
def publisher(tmp_path):
    """A real publisher whose broker is unreachable (nothing listens on the port): its thread loops reconnecting."""
    made: list[MqttPublisher] = []

    def make(**kwargs) -> MqttPublisher:
        pub = MqttPublisher(
            "127.0.0.1",
            free_port(),
            "acmon/plant-a/pump-7",
            "sup-test",
            reconnect_min_seconds=0.05,
            reconnect_max_seconds=0.1,
            spool_dir=str(tmp_path / "spool"),
            **kwargs,
        )
        made.append(pub)
        return pub

    yield make
    for pub in made:
        pub.stop(timeout_seconds=2)


def _inject(pub: MqttPublisher, fault) -> None:
    """Run `fault()` at the start of every poll of the publisher's loop (before paho's I/O)."""
    real_poll = pub._poll

    def poll():
        fault()
        real_poll()

    pub._poll = poll


def test_failure_is_none_while_the_thread_runs_and_after_a_clean_stop(publisher):
    pub = publisher()
    assert pub.failure() is None  # not started
    pub.start()
    pub.publish_event({"seq": 1})
    assert wait_until(lambda: pub.stats.pending == 1, 5)
    assert pub.failure() is None and pub.stats.thread_errors == 0
    pub.stop()
    assert pub.failure() is None


def test_an_exception_in_the_loop_is_contained_logged_once_and_counted(publisher, caplog):
    pub = publisher()
    raised = {"n": 0}

    def fault():
        if raised["n"] < 3:
            raised["n"] += 1
            raise RuntimeError("paho had a bad day")

    _inject(pub, fault)
    caplog.set_level(logging.ERROR, logger="device")
    pub.start()
    assert wait_until(lambda: pub.stats.thread_errors == 3, 10)
    pub.publish_event({"seq": 1})  # the thread still works: the event reaches the spool
    assert wait_until(lambda: len(pub.spool.pending()) == 1, 5)
    assert pub.failure() is None
    tracebacks = [r for r in caplog.records if r.exc_info and "paho had a bad day" in r.getMessage()]
    assert len(tracebacks) == 1  # once with the traceback; repeats are counted, not re-logged


def test_a_loop_that_fails_at_every_pass_is_reported(publisher):
    pub = publisher(stall_seconds=0.5)

    def fault():
        raise OSError(5, "Input/output error")

    _inject(pub, fault)
    pub.start()
    assert wait_until(lambda: pub.failure() is not None, 10)
    assert pub.failure().startswith("publisher thread failing for ")
    assert "OSError: [Errno 5] Input/output error" in pub.failure()


def test_a_stuck_thread_is_reported(publisher):
    pub = publisher(stall_seconds=0.5)
    release = threading.Event()
    _inject(pub, lambda: release.wait(20))
    pub.start()
    try:
        assert wait_until(lambda: pub.failure() is not None, 10)
        assert pub.failure().startswith("publisher thread stalled for ")
    finally:
        release.set()


class _Fatal(BaseException):
    """Not an Exception: nothing in the loop may swallow it, so the thread really dies."""


def test_a_dead_thread_is_reported(publisher, caplog):
    pub = publisher()

    def fault():
        raise _Fatal("out of everything")

    _inject(pub, fault)
    pub.start()
    assert wait_until(lambda: not pub._thread.is_alive(), 10)
    assert pub.failure() == "publisher thread died: _Fatal: out of everything"
    assert any(r.levelno == logging.CRITICAL and "publisher thread died" in r.getMessage() for r in caplog.records)


def test_events_queued_after_the_thread_died_are_spooled_at_stop(publisher):
    """The runner stops a dead publisher before exiting: what it queued meanwhile reaches the spool."""
    pub = publisher()

    def fault():
        raise _Fatal("out of everything")

    _inject(pub, fault)
    pub.start()
    assert wait_until(lambda: not pub._thread.is_alive(), 10)
    pub.publish_event({"seq": 1})
    pub.publish_event({"seq": 2})
    directory = pub.spool.directory
    pub.stop()
    assert len(list(directory.glob("*.msg"))) == 2


def test_a_spool_that_cannot_be_created_does_not_stop_the_publisher(tmp_path):
    (tmp_path / "state").write_text("a file where the spool folder's parent should be")
    pub = MqttPublisher(
        "127.0.0.1",
        free_port(),
        "acmon/plant-a/pump-7",
        "sup-test",
        reconnect_min_seconds=0.05,
        reconnect_max_seconds=0.1,
        spool_dir=str(tmp_path / "state" / "spool"),
    )
    pub.start()
    try:
        pub.publish_event({"seq": 1})
        assert wait_until(lambda: pub.stats.unsaved == 1, 5)
        assert "cannot create spool folder" in pub.stats.spool_problem and pub.failure() is None
    finally:
        pub.stop(timeout_seconds=2)

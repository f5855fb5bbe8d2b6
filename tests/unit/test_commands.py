"""Command names and arguments are checked before any handler sees them; every command gets one result."""

from __future__ import annotations

import pytest

from device.mqtt.commands import CommandDispatcher, parse_command
from tests.mqtt_support import validate


@pytest.mark.parametrize(
    "name, payload, args, error",
    [
        ("ping", b"", {}, None),
        ("ping", b"  ", {}, None),
        ("reload", b"{}", {}, None),
        ("mute", b'{"minutes": 1440}', {"minutes": 1440}, None),
        ("mute", b'{"minutes": 1441}', None, "'minutes' must be > 0 and <= 1440 (minutes)"),
        ("mute", b'{"minutes": -1}', None, "'minutes' must be > 0"),
        ("mute", b'{"minutes": "5"}', None, "'minutes' must be a number"),
        ("mute", b"{}", None, "mute needs 'minutes'"),
        ("set_threshold", b'{"value": 0.25}', {"value": 0.25}, None),
        ("set_threshold", b'{"value": NaN}', None, "'value' must be a finite number"),
        # An operator cannot switch detection off by accident: absurd and non-finite thresholds are refused.
        ("set_threshold", b'{"value": 1e308}', None, "'value' must be > 0 and <= 1000000 (score units)"),
        ("set_threshold", b'{"value": 1e400}', None, "'value' must be a finite number"),
        ("set_threshold", b'{"value": Infinity}', None, "'value' must be a finite number"),
        ("set_threshold", b'{"value": 1000000}', {"value": 1000000}, None),
        ("mute", b'{"minutes": 1' + b"0" * 400 + b"}", None, "'minutes' must be a finite number"),
        ("mute", b'{"minutes": 1' + b"0" * 4000 + b"}", None, "'minutes' must be a finite number"),
        ("calibrate", b'{"minutes": 240}', {"minutes": 240}, None),
        ("calibrate", b'{"minutes": 241}', None, "<= 240"),
        ("ping", b'{"x": 1}', None, "unknown argument(s) for ping: 'x'"),
        ("ping", b"\xff\xfe", None, "not valid JSON"),
        ("ping", b"3", None, "must be a JSON object"),
        ("ping", b'{"request_id": 7}', None, "'request_id' must be a string"),
        ("format_disk", b"{}", None, "unknown command 'format_disk'"),
        # Found by issue 11: a 2000-byte nested array made json.loads raise RecursionError.
        ("x", b"[" * 1000 + b"]" * 1000, None, "nested deeper than 8 levels"),
        ("ping", b'{"a":' * 600 + b"1" + b"}" * 600, None, "nested deeper than 8 levels"),
        ("ping", b'{"request_id": "' + b"[" * 100 + b'"}', {}, None),  # brackets inside a string are text
        ("ping", b'{"x": [[[[[[[1]]]]]]]}', None, "unknown argument(s) for ping: 'x'"),  # 8 levels
        ("ping", b'{"x": [[[[[[[[1]]]]]]]]}', None, "nested deeper than 8 levels"),  # 9 levels
        ("ping", rb'{"\\": 1, "\\\"": 1, "x": "\\]"}', None, r"""unknown argument(s) for ping: '\\', '\\"', 'x'"""),
        ("ping", b'{"request_id": "\\ud800"}', None, "'request_id' must be a string of at most 128 printable"),
        ("ping", b'{"\\ud800": 1}', None, "unknown argument(s) for ping: '\\ud800'"),
        ("ping", b'"\xff"', None, "not valid JSON"),
        ("ping", b"\xef\xbb\xbf{}", None, "not valid JSON"),
        ("ping", b"{" * 5000, None, "larger than 4096 bytes"),
    ],
)
def test_parse_command(name, payload, args, error):
    got_args, _, got_error = parse_command(name, payload)
    if error is None:
        assert got_error is None and got_args == args
    else:
        assert got_error is not None and error in got_error


def test_dispatcher_replies_once_and_survives_handler_errors():
    sent: list[tuple[str, dict]] = []
    dispatcher = CommandDispatcher("pump-7", lambda name, payload: sent.append((name, payload)))
    dispatcher.dispatch("ping", b"")  # no handler registered yet
    replies = []

    def handler(name, args, reply):
        replies.append(reply)
        if name == "reload":
            raise ValueError("boom")
        reply({"ok": 1})
        reply({"again": 2})  # ignored

    dispatcher.handler = handler
    dispatcher.dispatch("ping", b'{"request_id": "a"}')
    dispatcher.dispatch("reload", b"")
    dispatcher.dispatch("../x/#", b"")
    assert [(n, p["ok"], p["request_id"]) for n, p in sent] == [
        ("ping", False, None),
        ("ping", True, "a"),
        ("reload", False, None),
        ("invalid", False, None),
    ]
    assert "not available" in sent[0][1]["error"] and sent[2][1]["error"] == "internal error: ValueError"
    for _, payload in sent:
        validate("command_result", payload)


def test_dispatcher_answers_once_when_the_parser_itself_fails(monkeypatch):
    """Any exception while checking a command is contained: one error result, and dispatch returns."""
    import device.mqtt.commands as commands

    def broken_parser(name, payload):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(commands, "parse_command", broken_parser)
    sent: list[dict] = []
    dispatcher = CommandDispatcher("pump-7", lambda name, payload: sent.append(payload))
    dispatcher.handler = lambda name, args, reply: reply({})
    dispatcher.dispatch("ping", b"")
    assert [(p["ok"], p["error"]) for p in sent] == [(False, "internal error: RecursionError")]
    assert dispatcher.internal_errors == 1
    validate("command_result", sent[0])


def test_a_result_that_cannot_be_sent_becomes_an_error_result():
    """A handler's reply that fails to publish (e.g. not JSON-encodable) still gets exactly one answer."""
    sent: list[dict] = []

    def publish_result(name, payload):
        if payload["ok"]:
            raise TypeError("Object of type object is not JSON serializable")
        sent.append(payload)

    dispatcher = CommandDispatcher("pump-7", publish_result)
    dispatcher.handler = lambda name, args, reply: reply({"thing": object()})
    dispatcher.dispatch("ping", b'{"request_id": "r"}')
    assert [(p["ok"], p["request_id"], p["error"]) for p in sent] == [
        (False, "r", "internal error: the result could not be sent (TypeError)")
    ]
    assert dispatcher.internal_errors == 1


def test_reply_from_another_thread_never_raises():
    """The runner replies from the analysis thread: a failing publish must not raise there."""

    def publish_result(name, payload):
        raise OSError("closed")

    dispatcher = CommandDispatcher("pump-7", publish_result)
    replies = []
    dispatcher.handler = lambda name, args, reply: replies.append(reply)
    dispatcher.dispatch("ping", b"")
    replies[0]({"late": True})  # must not raise
    assert dispatcher.internal_errors == 1


@pytest.mark.parametrize(
    "name, payload, args, error",
    [
        ("set_threshold", b'{"value": 500, "force": true}', {"value": 500, "force": True}, None),
        ("calibrate", b'{"minutes": 5, "force": false}', {"minutes": 5, "force": False}, None),
        ("calibrate", b'{"minutes": 5}', {"minutes": 5}, None),
        ("set_threshold", b'{"value": 5, "force": "yes"}', None, "'force' must be true or false"),
        ("set_threshold", b'{"value": 5, "force": 1}', None, "'force' must be true or false"),
        ("mute", b'{"minutes": 5, "force": true}', None, "unknown argument(s) for mute: 'force'"),
    ],
)
def test_force_overrides_guardrails_only_where_the_runner_has_them(name, payload, args, error):
    """`force` is an optional boolean of set_threshold and calibrate, and nothing else."""
    parsed, _, problem = parse_command(name, payload)
    assert problem == error
    if error is None:
        assert parsed == args

"""Command names and arguments are checked before any handler sees them; every command gets one result."""

from __future__ import annotations

import pytest

from device.commands import CommandDispatcher, parse_command
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
        ("set_threshold", b'{"value": NaN}', None, "'value' must be a number"),
        ("calibrate", b'{"minutes": 240}', {"minutes": 240}, None),
        ("calibrate", b'{"minutes": 241}', None, "<= 240"),
        ("ping", b'{"x": 1}', None, "unknown argument(s) for ping: x"),
        ("ping", b"\xff\xfe", None, "not valid JSON"),
        ("ping", b"3", None, "must be a JSON object"),
        ("ping", b'{"request_id": 7}', None, "'request_id' must be a string"),
        ("format_disk", b"{}", None, "unknown command 'format_disk'"),
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
        ("ping", False, None), ("ping", True, "a"), ("reload", False, None), ("invalid", False, None),
    ]
    assert "not available" in sent[0][1]["error"] and sent[2][1]["error"] == "internal error: ValueError"
    for _, payload in sent:
        validate("command_result", payload)

"""Commands from MQTT (`<base>/cmd/<name>`): name and argument checks, and one result per command.

The dispatcher runs on the publisher's network thread. It checks the command
name and arguments itself, so the handler (the Runner) only ever sees a known
command with valid arguments; anything else gets an error result on
`<base>/cmd/<name>/result` and a log line, never an exception.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .errors import AcmonError
from .payloads import utc_now_iso

logger = logging.getLogger(__name__)

COMMAND_RESULT_SCHEMA = "acmon.command_result/1"
REQUEST_ID_KEY = "request_id"
MAX_REQUEST_ID_CHARS = 128
MAX_COMMAND_BYTES = 4096

Reply = Callable[..., None]
"""reply(result: dict | None, error: str | None = None): publish the command's result, once."""

CommandHandler = Callable[[str, dict, Reply], None]
"""handler(name, args, reply): must not block; may call reply later from another thread."""


@dataclass(frozen=True)
class NumberArg:
    """A required numeric argument: minimum < value <= maximum (JSON number, not a boolean)."""

    name: str
    minimum_exclusive: float
    maximum: float = math.inf
    unit: str = ""

    def check(self, value: Any) -> str | None:
        """None if valid, else what is wrong."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"'{self.name}' must be a number"
        if not self.minimum_exclusive < value <= self.maximum:
            top = "" if math.isinf(self.maximum) else f" and <= {self.maximum:g}"
            return f"'{self.name}' must be > {self.minimum_exclusive:g}{top}{self.unit}"
        return None


COMMANDS: dict[str, tuple[NumberArg, ...]] = {
    "ping": (),
    "reload": (),
    "mute": (NumberArg("minutes", 0, 1440, " (minutes)"),),
    "set_threshold": (NumberArg("value", 0, unit=" (score units)"),),
    "calibrate": (NumberArg("minutes", 0, 240, " (minutes)"),),
}


def parse_command(name: str, payload: bytes) -> tuple[dict[str, Any], str | None, str | None]:
    """Check one command message.

    Args:
        name: the last topic level (`<base>/cmd/<name>`).
        payload: a JSON object of arguments, or empty for none.

    Returns:
        (args without request_id, request_id or None, error or None). When the
        error is set, args may be incomplete and must not be used.
    """
    if len(payload) > MAX_COMMAND_BYTES:
        return {}, None, f"payload larger than {MAX_COMMAND_BYTES} bytes"
    try:
        data = json.loads(payload) if payload.strip() else {}
    except (ValueError, UnicodeDecodeError):
        return {}, None, "payload is not valid JSON (send a JSON object of arguments, or nothing)"
    if not isinstance(data, dict):
        return {}, None, "payload must be a JSON object of arguments"
    request_id = data.pop(REQUEST_ID_KEY, None)
    if request_id is not None and (not isinstance(request_id, str) or len(request_id) > MAX_REQUEST_ID_CHARS):
        return data, None, f"'{REQUEST_ID_KEY}' must be a string of at most {MAX_REQUEST_ID_CHARS} characters"
    if name not in COMMANDS:
        return data, request_id, f"unknown command {name!r}; known: {', '.join(sorted(COMMANDS))}"
    specs = COMMANDS[name]
    unknown = sorted(set(data) - {spec.name for spec in specs})
    if unknown:
        return data, request_id, f"unknown argument(s) for {name}: {', '.join(unknown)}"
    for spec in specs:
        if spec.name not in data:
            return data, request_id, f"{name} needs '{spec.name}'"
        problem = spec.check(data[spec.name])
        if problem:
            return data, request_id, problem
    return data, request_id, None


def command_result_payload(
    device_id: str,
    command: str,
    request_id: str | None,
    result: Mapping[str, Any] | None,
    error: str | None,
    time_utc: str | None = None,
) -> dict[str, Any]:
    """The JSON body on `<base>/cmd/<name>/result` (schema acmon.command_result/1)."""
    return {
        "schema": COMMAND_RESULT_SCHEMA,
        "device_id": device_id,
        "time": time_utc or utc_now_iso(),
        "command": command,
        "request_id": request_id,
        "ok": error is None,
        "result": None if error is not None or result is None else dict(result),
        "error": error,
    }


class CommandDispatcher:
    """Validates commands, calls the handler, and publishes exactly one result per command.

    Args:
        device_id: echoed in results.
        publish_result: publish_result(command_name, payload_dict); must not block.
    """

    def __init__(self, device_id: str, publish_result: Callable[[str, dict[str, Any]], None]):
        self.device_id = device_id
        self._publish_result = publish_result
        self.handler: CommandHandler | None = None

    def dispatch(self, name: str, payload: bytes) -> None:
        """Handle one message from `<base>/cmd/<name>`. Never raises."""
        args, request_id, error = parse_command(name, payload)
        # Unknown names are echoed in the result topic; keep them to one sane topic level.
        name = name if name.isidentifier() and len(name) <= 64 else "invalid"
        reply = self._make_reply(name, request_id)
        if error is None and self.handler is None:
            error = "commands are not available: the daemon has not registered a handler"
        if error is not None:
            logger.warning("command %s refused: %s", name, error)
            reply(None, error)
            return
        logger.info("command %s %s", name, json.dumps(args))
        try:
            self.handler(name, args, reply)
        except AcmonError as exc:
            reply(None, str(exc))
        except Exception as exc:  # noqa: BLE001 - a handler bug must not kill the network thread
            logger.exception("command %s: handler failed", name)
            reply(None, f"internal error: {type(exc).__name__}")

    def _make_reply(self, name: str, request_id: str | None) -> Reply:
        lock = threading.Lock()
        sent = False

        def reply(result: Mapping[str, Any] | None = None, error: str | None = None) -> None:
            nonlocal sent
            with lock:
                if sent:
                    logger.warning("command %s: result already sent; ignoring a second reply", name)
                    return
                sent = True
            self._publish_result(name, command_result_payload(self.device_id, name, request_id, result, error))

        return reply

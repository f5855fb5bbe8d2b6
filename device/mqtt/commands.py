"""Commands from MQTT (`<base>/cmd/<name>`): name and argument checks, and one result per command.

The dispatcher runs on the publisher's network thread. It checks the command
name and arguments itself, so the handler (the Runner) only ever sees a known
command with valid arguments; anything else gets an error result on
`<base>/cmd/<name>/result` and a log line, never an exception.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import AcmonError
from .payloads import loads_untrusted_json, utc_now_iso

logger = logging.getLogger(__name__)

COMMAND_RESULT_SCHEMA = "acmon.command_result/1"
REQUEST_ID_KEY = "request_id"
MAX_REQUEST_ID_CHARS = 128
MAX_COMMAND_BYTES = 4096
# Arguments are one flat object; a little room for future structured arguments. Bounded so
# that a hostile payload cannot drive the JSON parser into RecursionError (issue 11).
MAX_COMMAND_DEPTH = 8
# Names that are echoed in an error message are cut to this many characters, at most this many.
_ECHO_CHARS = 40
_ECHO_NAMES = 5
# A threshold above this is not a threshold but a way to switch detection off; scores of
# acmon's models are distances of order 1 to 100. The Runner bounds it more tightly,
# relative to the calibrated threshold.
MAX_THRESHOLD = 1e6

Reply = Callable[..., None]
"""reply(result: dict | None, error: str | None = None): publish the command's result, once; never raises."""

CommandHandler = Callable[[str, dict, Reply], None]
"""handler(name, args, reply): must not block; may call reply later from another thread."""


def _number(value: float) -> str:
    """A bound as people write it: 1440, 0.5, 1000000 (not 1e+06)."""
    return format(value, ".15g")


@dataclass(frozen=True)
class NumberArg:
    """A required numeric argument: minimum < value <= maximum (a finite JSON number, not a boolean)."""

    name: str
    minimum_exclusive: float
    maximum: float = math.inf
    unit: str = ""
    required: bool = True

    def check(self, value: Any) -> str | None:
        """None if valid, else what is wrong."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"'{self.name}' must be a number"
        try:
            number = float(value)
        except OverflowError:  # an integer of hundreds of digits
            number = math.inf
        if not math.isfinite(number):
            return f"'{self.name}' must be a finite number"
        if not self.minimum_exclusive < number <= self.maximum:
            top = "" if math.isinf(self.maximum) else f" and <= {_number(self.maximum)}"
            return f"'{self.name}' must be > {_number(self.minimum_exclusive)}{top}{self.unit}"
        return None


@dataclass(frozen=True)
class FlagArg:
    """An optional argument that is true or false (a JSON boolean); absent means false."""

    name: str
    required: bool = False

    def check(self, value: Any) -> str | None:
        """None if valid, else what is wrong."""
        return None if isinstance(value, bool) else f"'{self.name}' must be true or false"


@dataclass(frozen=True)
class TextArg:
    """A required string argument matching a pattern (whole string), at most max_chars long."""

    name: str
    pattern: str
    max_chars: int
    meaning: str  # what it must be, for the message: "an http:// or https:// URL"
    required: bool = True

    def check(self, value: Any) -> str | None:
        """None if valid, else what is wrong."""
        if not isinstance(value, str) or len(value) > self.max_chars or not re.fullmatch(self.pattern, value):
            return f"'{self.name}' must be {self.meaning} (at most {self.max_chars} characters)"
        return None


# The events' ids (uuid4 hex), as the commands about one event take them.
EVENT_ID_ARG = TextArg("event_id", r"[0-9a-f]{32}", 32, "an event id (32 lower-case hex digits)")

# `force` overrides the runner's guardrails (the threshold band around the calibrated one, and
# calibrate's refusal of audio that looks like a fault); the runner reports it in the result.
COMMANDS: dict[str, tuple[NumberArg | FlagArg | TextArg, ...]] = {
    "ping": (),
    "reload": (),
    "mute": (NumberArg("minutes", 0, 1440, " (minutes)"),),
    "set_threshold": (NumberArg("value", 0, MAX_THRESHOLD, " (score units)"), FlagArg("force")),
    "calibrate": (NumberArg("minutes", 0, 240, " (minutes)"), FlagArg("force")),
    # device/daemon/updates.py: fetch a .acmon bundle from the site's server, swap it in, watch it, roll back.
    "update_model": (
        TextArg("url", r"https?://[!-~]+", 2048, "an http:// or https:// URL (printable ASCII, no spaces)"),
        TextArg("sha256", r"[0-9a-f]{64}", 64, "the bundle's SHA-256 as 64 lower-case hex digits"),
        FlagArg("drop_calibration"),  # set a site calibration of the model in use aside (rollback restores it)
    ),
    "rollback_model": (),
    # The clip and spectrogram of an alarm, in chunks on <base>/evidence/<event id>/<file>/<index>.
    "get_evidence": (EVENT_ID_ARG,),
    # Keep an alarm's clip in the device's dataset: false_alarm, or a fault name (device/daemon/labels.py).
    "label": (
        EVENT_ID_ARG,
        TextArg("label", r"[A-Za-z0-9_-]{1,64}", 64, "false_alarm or a fault name (letters, digits, '_' or '-')"),
    ),
}


def _echo(names: list[str]) -> str:
    """Names from a payload, quoted and cut short, for an error message (repr escapes control characters)."""
    shown = [repr(name)[:_ECHO_CHARS] for name in names[:_ECHO_NAMES]]
    return ", ".join(shown) + (", ..." if len(names) > _ECHO_NAMES else "")


def parse_command(name: str, payload: bytes) -> tuple[dict[str, Any], str | None, str | None]:
    """Check one command message. Size and nesting are bounded before the JSON is parsed.

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
        data = loads_untrusted_json(payload, MAX_COMMAND_DEPTH) if payload.strip() else {}
    except ValueError as exc:
        if str(exc).startswith("nested"):
            return {}, None, f"payload {exc} (send a flat JSON object of arguments)"
        return {}, None, f"payload is not valid JSON: {exc} (send a JSON object of arguments, or nothing)"
    if not isinstance(data, dict):
        return {}, None, "payload must be a JSON object of arguments"
    request_id = data.pop(REQUEST_ID_KEY, None)
    if request_id is not None and (
        not isinstance(request_id, str) or len(request_id) > MAX_REQUEST_ID_CHARS or not request_id.isprintable()
    ):
        return (
            data,
            None,
            (f"'{REQUEST_ID_KEY}' must be a string of at most {MAX_REQUEST_ID_CHARS} printable characters"),
        )
    return data, request_id, check_args(name, data)


def check_args(name: str, args: dict[str, Any]) -> str | None:
    """Check a command's name and arguments against COMMANDS, the one table of them; None if valid.

    Every way a command reaches the daemon goes through here: MQTT (parse_command) and the
    Runner's own queue (a SIGHUP reload, tests, code that embeds the Runner).
    """
    if name not in COMMANDS:
        return f"unknown command {_echo([name])}; known: {', '.join(sorted(COMMANDS))}"
    specs = COMMANDS[name]
    unknown = sorted(set(args) - {spec.name for spec in specs})
    if unknown:
        return f"unknown argument(s) for {name}: {_echo(unknown)}"
    for spec in specs:
        if spec.name not in args:
            if spec.required:
                return f"{name} needs '{spec.name}'"
            continue
        problem = spec.check(args[spec.name])
        if problem:
            return problem
    return None


class ContainedErrors:
    """Counts exceptions that were caught so a thread could carry on, and logs them without flooding.

    Each kind (where, exception type) is logged at ERROR with its traceback the first
    time; repeats get one line at most every `repeat_log_seconds`. Thread-safe.
    """

    def __init__(self, repeat_log_seconds: float = 60.0, max_kinds: int = 256):
        self.count = 0
        self.last: str | None = None  # "<where>: <Type>: <message>" of the latest one
        self._repeat_log_seconds = repeat_log_seconds
        self._max_kinds = max_kinds
        self._kinds: dict[tuple[str, str], list] = {}  # kind -> [count, monotonic time of its last log line]
        self._lock = threading.Lock()

    def record(self, where: str, exc: BaseException) -> None:
        """Count and log one contained exception."""
        kind = (where, type(exc).__name__)
        text = str(exc).split("\n")[0][:300]
        now = time.monotonic()
        with self._lock:
            self.count += 1
            self.last = f"{where}: {type(exc).__name__}: {text}" if text else f"{where}: {type(exc).__name__}"
            seen = self._kinds.get(kind)
            if seen is None and len(self._kinds) < self._max_kinds:
                self._kinds[kind] = [1, now]
                first, repeats = True, 0
            else:
                first = False
                if seen is None:  # too many kinds to remember; log each one briefly
                    repeats, due = 1, True
                else:
                    seen[0] += 1
                    repeats, due = seen[0], now - seen[1] >= self._repeat_log_seconds
                    if due:
                        seen[1] = now
                if not due:
                    return
        if first:
            logger.error("%s failed (contained, carrying on): %s: %s", where, type(exc).__name__, text, exc_info=exc)
        else:
            logger.error(
                "%s failed again: %s: %s (%d time(s) so far; traceback logged the first time)",
                where,
                type(exc).__name__,
                text,
                repeats,
            )


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

    Nothing a message can contain makes `dispatch` raise: a failure of the parser, the
    handler or the result's publication is contained, counted in `errors` and answered
    with an error result.

    Args:
        device_id: echoed in results.
        publish_result: publish_result(command_name, payload_dict); must not block.
        errors: where contained exceptions are counted (the publisher shares its own).
    """

    def __init__(
        self,
        device_id: str,
        publish_result: Callable[[str, dict[str, Any]], None],
        errors: ContainedErrors | None = None,
    ):
        self.device_id = device_id
        self._publish_result = publish_result
        self.errors = errors if errors is not None else ContainedErrors()
        self.handler: CommandHandler | None = None

    @property
    def internal_errors(self) -> int:
        """Exceptions contained so far (in the shared counter, if one was given)."""
        return self.errors.count

    def dispatch(self, name: str, payload: bytes) -> None:
        """Handle one message from `<base>/cmd/<name>`. Never raises."""
        # Unknown names are echoed in the result topic; keep them to one sane topic level.
        topic_name = name if name.isascii() and name.isidentifier() and len(name) <= 64 else "invalid"
        try:
            args, request_id, error = parse_command(name, payload)
        except Exception as exc:  # noqa: BLE001 - a parser bug must not kill the network thread
            self.errors.record(f"command {topic_name}: checking the payload", exc)
            args, request_id, error = {}, None, f"internal error: {type(exc).__name__}"
        reply = self._make_reply(topic_name, request_id)
        handler = self.handler
        if error is None and handler is None:
            error = "commands are not available: the daemon has not registered a handler"
        if error is not None:
            logger.warning("command %s refused: %s", topic_name, error)
            reply(None, error)
            return
        logger.info("command %s %s", topic_name, args)
        try:
            assert handler is not None
            handler(topic_name, args, reply)
        except AcmonError as exc:
            reply(None, str(exc))
        except Exception as exc:  # noqa: BLE001 - a handler bug must not kill the network thread
            self.errors.record(f"command {topic_name}: the handler", exc)
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
            try:
                self._publish_result(name, command_result_payload(self.device_id, name, request_id, result, error))
                return
            except Exception as exc:  # noqa: BLE001 - reply runs on the caller's thread; it must not raise there
                self.errors.record(f"command {name}: sending the result", exc)
                failure = exc
            fallback = f"internal error: the result could not be sent ({type(failure).__name__})"
            try:
                self._publish_result(name, command_result_payload(self.device_id, name, request_id, None, fallback))
            except Exception as exc:  # noqa: BLE001 - the last word: nothing more can be sent
                logger.error("command %s: no result could be sent: %s: %s", name, type(exc).__name__, exc)

        return reply

"""`python -m device monitor`: a live terminal table of every acmon device seen on a broker."""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from ..errors import AcmonError

logger = logging.getLogger(__name__)

RECENT_EVENTS = 10
REDRAW_SECONDS = 1.0
CLEAR_SCREEN = "\x1b[H\x1b[2J"
COLUMNS = ("device", "status", "state", "score", "threshold", "level dBFS", "faults", "unsent", "last message")


@dataclass
class DeviceView:
    """What the monitor knows about one device, from its latest messages."""

    site: str
    device_id: str
    status: str = "?"
    state: str = "?"
    score: float | None = None
    threshold: float | None = None
    level_dbfs: float | None = None
    faults: list[str] = field(default_factory=list)
    spool_pending: int | None = None
    last_seen: float = 0.0


@dataclass
class FleetView:
    """Every device seen under a topic prefix, and the fleet's most recent events."""

    prefix: str
    devices: dict[tuple[str, str], DeviceView] = field(default_factory=dict)
    events: collections.deque = field(default_factory=lambda: collections.deque(maxlen=RECENT_EVENTS))
    _seen_events: set = field(default_factory=set)

    def update(self, topic: str, payload: bytes, now: float) -> bool:
        """Apply one message; False if the topic is not a device topic or the payload is unreadable."""
        if not topic.startswith(self.prefix + "/"):
            return False
        levels = topic[len(self.prefix) + 1 :].split("/")
        if len(levels) != 3:
            return False
        site, device_id, leaf = levels
        view = self.devices.setdefault((site, device_id), DeviceView(site, device_id))
        if leaf == "status":
            view.status = payload.decode("utf-8", "replace")[:16]
            view.last_seen = now
            return True
        try:
            body = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            return False
        if not isinstance(body, dict):
            return False
        view.last_seen = now
        _apply(view, leaf, body, self)
        return True


def _apply(view: DeviceView, leaf: str, body: dict[str, Any], fleet: FleetView) -> None:
    if leaf == "state":
        view.state = str(body.get("state", "?"))
        view.score = body.get("score")
        view.threshold = body.get("threshold", view.threshold)
        view.faults = list(body.get("faults") or [])
    elif leaf == "telemetry":
        view.level_dbfs = body.get("level_dbfs")
        view.threshold = body.get("threshold", view.threshold)
        view.spool_pending = (body.get("spool") or {}).get("pending")
    elif leaf == "health":
        view.faults = [f.get("fault", "?") for f in body.get("faults") or [] if isinstance(f, dict)]
    elif leaf == "events":
        key = (body.get("event_id"), body.get("seq"))
        if key in fleet._seen_events:  # at-least-once delivery: drop duplicates
            return
        fleet._seen_events.add(key)
        if body.get("rule") != "level":  # the level rule's score and threshold are dB, not the model's units
            if body.get("score") is not None:
                view.score = body["score"]
            view.threshold = body.get("threshold", view.threshold)
        if body.get("state") == "start":
            view.state = "anomaly"
        fleet.events.append(format_event(view, body))


def format_event(view: DeviceView, body: dict[str, Any]) -> str:
    """One line per event: time, device, state, short id, score/threshold, evidence file, what rose."""
    score = body.get("score")
    evidence = body.get("evidence")
    cause = _cause(body)
    return (
        f"{str(body.get('time', '?'))[:19]}  {view.site}/{view.device_id}  {str(body.get('state', '?')):<6}"
        f"  {str(body.get('event_id', '?'))[:8]}  score {_number(score)} / {_number(body.get('threshold'))}"
        + (
            f"  level rule, {_number(body.get('band_hz'), 5)} Hz band (dB above normal)"
            if body.get("rule") == "level"
            else ""
        )
        + (f"  {evidence}" if evidence else "")
        + (f"  {cause}" if cause else "")
    )


def _cause(body: dict[str, Any]) -> str:
    """The event's strongest band and its fault class, short ('2161-2627 Hz +8.6 dB steady, bearing 0.73'); ''
    when it names neither. Anything on the broker may publish here: what is not as the schema says is left out."""
    parts = []
    bands = body.get("bands")
    band = bands[0] if isinstance(bands, list) and bands and isinstance(bands[0], dict) else {}
    low, high, db, kind = (band.get(k) for k in ("low_hz", "high_hz", "db_above_normal", "kind"))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high, db)) and kind in (
        "steady",
        "transient",
    ):
        parts.append(f"{_number(low, 5)}-{_number(high, 5)} Hz +{_number(db, 3)} dB {kind}")
    fault = body.get("fault")
    if isinstance(fault, dict) and isinstance(fault.get("label"), str):
        label = "".join(c for c in fault["label"][:40] if c.isprintable())
        parts.append(f"{label} {_number(fault.get('probability'), 2)}")
    return ", ".join(parts)


def _number(value: Any, digits: int = 3) -> str:
    return "-" if not isinstance(value, (int, float)) or isinstance(value, bool) else f"{value:.{digits}g}"


def render_table(fleet: FleetView, now: float) -> str:
    """The whole screen as plain text: one row per device (sorted), then recent events.

    Args:
        now: wall-clock time (time.time()) for the "last message" column.
    """
    rows = [COLUMNS]
    for key in sorted(fleet.devices):
        v = fleet.devices[key]
        rows.append(
            (
                f"{v.site}/{v.device_id}",
                v.status,
                v.state,
                _number(v.score),
                _number(v.threshold),
                _number(v.level_dbfs, 4),
                ",".join(v.faults) or "-",
                "-" if v.spool_pending is None else str(v.spool_pending),
                f"{max(0.0, now - v.last_seen):.0f} s ago" if v.last_seen else "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    when = datetime.fromtimestamp(now).strftime("%H:%M:%S")
    header = f"acmon monitor  {fleet.prefix}/#  {len(fleet.devices)} device(s)  {when}"
    recent = ["", "recent events:"] + (list(fleet.events) or ["  (none yet)"])
    return "\n".join([header, "", *lines, *recent]) + "\n"


def add_monitor_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `monitor` on the `python -m device` command group."""
    p = subparsers.add_parser(
        "monitor",
        help="live table of every device on a broker (status, state, score, level, recent events)",
        description="Subscribe to <prefix>/+/+/+ and show every device seen: status, state, last score, "
        "level and recent events. Redraws every second; Ctrl-C to quit.",
    )
    p.add_argument("--broker", required=True, help="MQTT broker HOST[:PORT] (default port 1883, 8883 with --ca-file)")
    p.add_argument("--prefix", default="acmon", help="topic prefix of the fleet (default: acmon)")
    p.add_argument("--username", help="broker user name (a read-only dashboard account is enough)")
    p.add_argument(
        "--password-env", metavar="VAR", help="environment variable holding the password (never on the command line)"
    )
    p.add_argument("--ca-file", help="CA certificate (PEM) to connect with TLS")
    p.add_argument(
        "--once", type=float, metavar="SECONDS", help="listen this long, print one snapshot and exit (seconds)"
    )
    p.set_defaults(func=cmd_monitor)
    return p


def cmd_monitor(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Run the monitor until Ctrl-C, or for --once seconds."""
    import paho.mqtt.client as mqtt  # noqa: PLC0415 - the device extra

    from ..settings.config import parse_broker  # noqa: PLC0415 - the config stack only when the monitor runs

    host, port = parse_broker(args.broker, 8883 if args.ca_file else 1883)
    fleet = FleetView(args.prefix.rstrip("/"))
    lock = threading.Lock()
    connected = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    if args.username:
        password = os.environ.get(args.password_env) if args.password_env else None
        if args.password_env and password is None:
            raise AcmonError(f"--password-env {args.password_env}: the variable is not set")
        client.username_pw_set(args.username, password)
    if args.ca_file:
        client.tls_set(ca_certs=args.ca_file)

    def on_connect(c, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            logger.error("broker %s:%d refused the connection: %s", host, port, reason_code)
            return
        c.subscribe(f"{fleet.prefix}/+/+/+", qos=1)
        connected.set()

    def on_message(c, userdata, message) -> None:
        with lock:
            fleet.update(message.topic, message.payload, time.time())

    client.on_connect, client.on_message = on_connect, on_message
    try:
        client.connect(host, port)
    except (OSError, ValueError) as exc:
        raise AcmonError(f"cannot reach the broker {host}:{port}: {exc}") from None
    client.loop_start()
    try:
        if args.once is not None:
            time.sleep(max(0.0, args.once))
            with lock:
                out.write(render_table(fleet, time.time()))
            return 0 if connected.is_set() else 1
        while True:
            with lock:
                screen = render_table(fleet, time.time())
            out.write(CLEAR_SCREEN + screen)
            out.flush()
            time.sleep(REDRAW_SECONDS)
    finally:
        client.disconnect()
        client.loop_stop()

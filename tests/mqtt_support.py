"""MQTT test support: schema validation of every received message, sample payloads, test publishers."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import jsonschema

from device.mqtt.payloads import utc_now_iso
from device.mqtt.publisher import MqttPublisher
from tests.helpers import REPO, Mosquitto

# mosquitto started as root drops to the 'mosquitto' user, which cannot enter pytest's 0700
# temporary folders (persistence, password files, certificates). 'user root' keeps it as the
# user who started it; mosquitto ignores the option when not started as root.
STAY_AS_STARTER = "\nuser root\n"

SCHEMA_DIR = REPO / "device" / "schemas"
SCHEMAS = {
    path.name.removesuffix(".schema.json"): json.loads(path.read_text()) for path in SCHEMA_DIR.glob("*.schema.json")
}
# The last topic level(s) of a device topic -> its schema.
TOPIC_SCHEMAS = {
    "events": "event",
    "state": "state",
    "telemetry": "telemetry",
    "health": "health",
    "result": "command_result",
    "model": "model",
}


def validate(name: str, payload: dict[str, Any]) -> None:
    """Validate against device/schemas/<name>.schema.json (draft 2020-12, formats checked)."""
    jsonschema.Draft202012Validator(SCHEMAS[name], format_checker=jsonschema.FormatChecker()).validate(payload)
    assert payload["schema"] == SCHEMAS[name]["$id"]


def validate_messages(messages: list[tuple[str, bytes, bool]]) -> int:
    """Validate every JSON message of a device tree by its topic; returns how many were checked.

    status is plain text (online/offline); cmd/<name> are inbound commands and skipped.
    """
    checked = 0
    for topic, payload, _ in messages:
        leaf = topic.rsplit("/", 1)[-1]
        if leaf == "status":
            assert payload in (b"online", b"offline"), (topic, payload)
        elif leaf in TOPIC_SCHEMAS and payload:
            validate(TOPIC_SCHEMAS[leaf], json.loads(payload))
            checked += 1
    return checked


def sample_event(
    seq: int, event_id: str | None = None, state: str = "start", device_id: str = "pump-7", site: str = "plant-a"
) -> dict[str, Any]:
    return {
        "schema": "acmon.event/1",
        "event_id": event_id or uuid.uuid4().hex,
        "state": state,
        "seq": seq,
        "device_id": device_id,
        "site": site,
        "time": utc_now_iso(),
        "stream_seconds": 1.5 + seq,
        "start_stream_seconds": 1.5,
        "duration_seconds": float(seq),
        "score": 2.5,
        "peak_score": 3.0,
        "mean_score": 2.2,
        "threshold": 1.0,
        "model": {"name": "pump", "version": "1"},
        "source": "test.wav",
        "evidence": None,
    }


def sample_state(state: str = "anomaly", score: float | None = 2.5) -> dict[str, Any]:
    return {
        "schema": "acmon.state/1",
        "device_id": "pump-7",
        "site": "plant-a",
        "time": utc_now_iso(),
        "state": state,
        "score": score,
        "threshold": 1.0,
        "event_id": uuid.uuid4().hex if state == "anomaly" else None,
        "faults": [],
    }


def sample_telemetry() -> dict[str, Any]:
    """Without `spool`: the publisher adds it."""
    return {
        "schema": "acmon.telemetry/1",
        "device_id": "pump-7",
        "site": "plant-a",
        "time": utc_now_iso(),
        "uptime_seconds": 12.0,
        "level_dbfs": -31.5,
        "clipping_ratio": 0.0,
        "dc_offset": 0.001,
        "score_mean": 0.4,
        "score_max": 0.9,
        "windows": 100,
        "scored_windows": 98,
        "realtime_factor": 250.0,
        "dropped_blocks": 0,
        "cpu_temperature_c": 48.2,
        "threshold": 1.0,
    }


def sample_health(ok: bool = False) -> dict[str, Any]:
    faults = [] if ok else [{"fault": "clipping", "since": utc_now_iso(), "detail": "3.1 % of samples at full scale"}]
    return {
        "schema": "acmon.health/1",
        "device_id": "pump-7",
        "site": "plant-a",
        "time": utc_now_iso(),
        "faults": faults,
        "ok": ok,
    }


def make_test_publisher(port: int, base_topic: str, spool_root: Path, **kwargs: Any) -> MqttPublisher:
    """A publisher on 127.0.0.1 with a fast reconnect and its spool under the test's folder."""
    options: dict[str, Any] = {"reconnect_min_seconds": 0.2, "reconnect_max_seconds": 1.0, "spool_dir": str(spool_root)}
    options.update(kwargs)
    client_id = kwargs.pop("client_id", None) or "pub-" + base_topic.replace("/", "-")[-40:]
    options.pop("client_id", None)
    return MqttPublisher("127.0.0.1", port, base_topic, client_id, **options)


def own_broker(workdir: Path, template: str | None = None, extra_config: str = "") -> Mosquitto:
    """A broker of the test's own (to stop, restart or configure), able to read and write in workdir."""
    return Mosquitto(workdir, extra_config=STAY_AS_STARTER + extra_config, template=template)


def wait_until(predicate, timeout: float = 10.0) -> bool:
    """Poll a condition every 20 ms; False if it is still false after timeout seconds."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True

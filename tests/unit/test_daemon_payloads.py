"""The daemon's state, telemetry, health and event payloads match the JSON Schemas in device/schemas/."""

from __future__ import annotations

import json

import jsonschema
import numpy as np

from device.audio.health import HealthMonitor
from device.decisions.detector import Detector, DetectorSettings
from device.mqtt.payloads import event_payload, health_payload, state_payload, telemetry_payload
from tests.helpers import REPO


def _schema(name: str) -> dict:
    return json.loads((REPO / "device" / "schemas" / f"{name}.schema.json").read_text())


def test_state_payload_matches_schema():
    for state, event_id in (("ok", None), ("anomaly", "ab" * 16), ("fault", None), ("muted", None)):
        payload = state_payload(
            "pump-1", "plant", state, 0.5, 1.4, event_id, ["microphone_dead"] if state == "fault" else []
        )
        jsonschema.validate(payload, _schema("state"))
    jsonschema.validate(state_payload("pump-1", "plant", "ok", None, 1.4, None, []), _schema("state"))


def test_telemetry_and_health_payloads_match_schema():
    mon = HealthMonitor(16000, telemetry_seconds=1.0, wall_clock=lambda: 0.0)
    mon.add_block(np.full(16000, 1.0, dtype=np.float32), processing_seconds=0.01)
    mon.add_window(2.0)
    period = mon.take_telemetry()
    payload = telemetry_payload("pump-1", "plant", 12.5, period, 1.4, None)
    payload["spool"] = {"pending": 0, "dropped": 0}  # added by the publisher
    jsonschema.validate(payload, _schema("telemetry"))
    health = health_payload("pump-1", "plant", list(mon.faults.values()))
    jsonschema.validate(health, _schema("health"))
    assert not health["ok"] and {f["fault"] for f in health["faults"]} == {"clipping", "dc_offset"}


def test_event_payloads_with_update_and_evidence_match_schema():
    det = Detector(DetectorSettings(threshold=1.0, patience_windows=1, update_seconds=1.0))
    transitions = [t for i, s in enumerate([2.0, 2.0, 2.0, 0.1]) for t in det.update(i, float(i), s)]
    transitions[0].event.evidence = "20261122T055625Z_7b5e06fadc2c.wav"
    states = []
    for seq, t in enumerate(transitions):
        payload = event_payload(t, seq, "pump-1", "plant", 1.0, "pump", "1", "mic", evidence=t.event.evidence)
        jsonschema.validate(payload, _schema("event"))
        states.append(payload["state"])
    assert states == ["start", "update", "update", "end"]

"""The monitor's view of a fleet: topics parsed, duplicates dropped, a stable plain-text table."""

from __future__ import annotations

import json

from device.mqtt.monitor import FleetView, render_table
from tests.mqtt_support import sample_event, sample_state, sample_telemetry


def _feed(fleet: FleetView, topic: str, payload) -> bool:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return fleet.update(topic, data, now=1000.0)


def test_fleet_view_and_table():
    fleet = FleetView("acmon/x")
    assert _feed(fleet, "acmon/x/plant-a/pump-7/status", b"online")
    assert _feed(fleet, "acmon/x/plant-a/pump-7/state", sample_state("anomaly", 2.5))
    assert _feed(
        fleet, "acmon/x/plant-a/pump-7/telemetry", {**sample_telemetry(), "spool": {"pending": 2, "dropped": 0}}
    )
    event = sample_event(4)
    assert _feed(fleet, "acmon/x/plant-a/pump-7/events", event)
    assert _feed(fleet, "acmon/x/plant-a/pump-7/events", event)  # a duplicate delivery
    assert _feed(fleet, "acmon/x/plant-b/fan-1/status", b"offline")
    assert not _feed(fleet, "acmon/x/plant-a/pump-7/cmd/ping/result", b"{}")
    assert not _feed(fleet, "other/plant-a/pump-7/state", b"{}")
    assert not _feed(fleet, "acmon/x/plant-a/pump-7/state", b"not json")
    table = render_table(fleet, now=1003.0)
    lines = table.splitlines()
    assert lines[2].split() == [
        "device",
        "status",
        "state",
        "score",
        "threshold",
        "level",
        "dBFS",
        "faults",
        "unsent",
        "last",
        "message",
    ]
    assert lines[4].split() == ["plant-a/pump-7", "online", "anomaly", "2.5", "1", "-31.5", "-", "2", "3", "s", "ago"]
    assert lines[5].split()[:3] == ["plant-b/fan-1", "offline", "?"]
    assert len(fleet.events) == 1 and event["event_id"][:8] in table


def test_level_rule_events_say_so_and_keep_the_model_score():
    fleet = FleetView("acmon/x")
    _feed(fleet, "acmon/x/plant-a/pump-7/state", sample_state("ok", 0.8))
    level = {**sample_event(5), "rule": "level", "band_hz": 31.5, "score": 14.0, "threshold": 10.0}
    assert _feed(fleet, "acmon/x/plant-a/pump-7/events", level)
    view = fleet.devices[("plant-a", "pump-7")]
    assert view.state == "anomaly" and view.score == 0.8 and view.threshold != 10.0  # dB stay out of the score column
    assert "level rule, 31.5 Hz band" in fleet.events[-1]


def test_events_show_what_rose_and_survive_garbage_in_those_fields():
    fleet = FleetView("acmon/x")
    bands = [{"low_hz": 2161, "high_hz": 2627, "db_above_normal": 8.6, "z": 17.1, "kind": "steady"}]
    named = {**sample_event(1), "bands": bands, "fault": {"label": "bearing\x1b[2J", "probability": 0.734}}
    assert _feed(fleet, "acmon/x/plant-a/pump-7/events", named)
    assert fleet.events[-1].endswith("2161-2627 Hz +8.6 dB steady, bearing[2J 0.73")  # no escape reaches the tty
    for garbage in (
        {"bands": "x"},
        {"bands": [1]},
        {"bands": [{"low_hz": True}]},
        {"fault": {"label": 5}},
        {"fault": []},
    ):
        assert _feed(fleet, "acmon/x/plant-a/pump-7/events", {**sample_event(2), **garbage})
        assert fleet.events[-1].endswith("score 2.5 / 1")

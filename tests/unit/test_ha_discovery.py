"""Home Assistant discovery payloads against the documented MQTT discovery format and our own topics."""

from __future__ import annotations

import json
import re

import jinja2
import pytest

from device.mqtt.ha_discovery import ENTITIES, DeviceInfo, discovery_messages
from tests.mqtt_support import sample_event, sample_health, sample_state, sample_telemetry, validate

INFO = DeviceInfo("plant-a", "pump-7", "acmon/plant-a/pump-7", model="pump 1.0", sw_version="0.1.0")
# https://www.home-assistant.io/integrations/sensor.mqtt/ and binary_sensor.mqtt/ (configuration variables)
DOCUMENTED_KEYS = {
    "name",
    "unique_id",
    "state_topic",
    "value_template",
    "availability_topic",
    "payload_available",
    "payload_not_available",
    "device",
    "origin",
    "device_class",
    "state_class",
    "unit_of_measurement",
    "entity_category",
    "payload_on",
    "payload_off",
    "json_attributes_topic",
    "json_attributes_template",
}
REQUIRED_KEYS = {"state_topic", "unique_id", "availability_topic", "device", "name"}
DEVICE_CLASSES = {"binary_sensor": {None, "problem", "sound"}, "sensor": {None, "temperature"}}
TOPIC = re.compile(r"^homeassistant/(binary_sensor|sensor)/[a-zA-Z0-9_-]+/[a-zA-Z0-9_-]+/config$")


def _samples() -> dict[str, dict]:
    telemetry = {**sample_telemetry(), "spool": {"pending": 3, "dropped": 0}}
    samples = {"state": sample_state("anomaly"), "telemetry": telemetry, "health": sample_health(ok=False)}
    for name, payload in samples.items():
        validate(name, payload)  # the templates are checked against payloads our schemas accept
    return samples


def _render(template: str, payload: dict) -> str:
    """What Home Assistant does: render the Jinja template with the message's JSON as value_json."""
    return jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(template).render(value_json=payload)


def test_topics_keys_and_device_block():
    messages = discovery_messages(INFO)
    assert len({t for t, _ in messages}) == len(messages) == len(ENTITIES)
    unique_ids = [p["unique_id"] for _, p in messages]
    assert len(set(unique_ids)) == len(unique_ids)
    for topic, payload in messages:
        assert TOPIC.match(topic), topic
        component = topic.split("/")[1]
        assert REQUIRED_KEYS <= set(payload) <= DOCUMENTED_KEYS, set(payload) ^ DOCUMENTED_KEYS
        assert payload.get("device_class") in DEVICE_CLASSES[component]
        assert payload["availability_topic"] == "acmon/plant-a/pump-7/status"
        assert (payload["payload_available"], payload["payload_not_available"]) == ("online", "offline")
        assert payload["state_topic"].rsplit("/", 1)[-1] in {"state", "telemetry", "health"}
        assert payload["device"] == {
            "identifiers": ["acmon_plant-a_pump-7"],
            "name": "acmon plant-a/pump-7",
            "manufacturer": "acmon",
            "model": "pump 1.0",
            "sw_version": "0.1.0",
        }
        json.dumps(payload)  # serialisable as is


@pytest.mark.parametrize("entity", ENTITIES, ids=lambda e: e.object_id)
def test_value_templates_read_our_fields(entity):
    payload = _samples()[entity.topic_suffix]
    rendered = _render(entity.value_template, payload)
    fields = re.findall(r"value_json\.([a-z_.]+)", entity.value_template)
    assert fields, "every template reads a field of our JSON"
    if entity.component == "binary_sensor":
        assert rendered in ("ON", "OFF")
    else:
        value = payload
        for part in fields[0].split("."):
            value = value[part]
        assert rendered == str(value)


def test_binary_sensors_follow_the_state():
    anomaly = next(e for e in ENTITIES if e.object_id == "anomaly")
    health = next(e for e in ENTITIES if e.object_id == "health")
    assert _render(anomaly.value_template, sample_state("anomaly")) == "ON"
    assert _render(anomaly.value_template, sample_state("ok", 0.2)) == "OFF"
    assert _render(health.value_template, sample_health(ok=False)) == "ON"
    assert _render(health.value_template, sample_health(ok=True)) == "OFF"


def test_null_score_renders_as_none_which_home_assistant_shows_as_unknown():
    score = next(e for e in ENTITIES if e.object_id == "score")
    assert _render(score.value_template, sample_state("ok", score=None)) == "None"


def test_invalid_node_id_refused():
    with pytest.raises(ValueError):
        discovery_messages(DeviceInfo("a b", "c", "x/a b/c"))


BANDS = [
    {"low_hz": 2161, "high_hz": 2627, "db_above_normal": 8.6, "z": 17.1, "kind": "steady"},
    {"low_hz": 1953, "high_hz": 2161, "db_above_normal": 3.3, "z": 3.6, "kind": "transient"},
]


def _attributes(payload: dict) -> dict:
    """What Home Assistant makes of an event message: json_attributes_template rendered, parsed as a JSON object."""
    validate("event", payload)
    anomaly = dict(discovery_messages(INFO))["homeassistant/binary_sensor/acmon_plant-a_pump-7/anomaly/config"]
    assert anomaly["json_attributes_topic"] == "acmon/plant-a/pump-7/events"
    attributes = json.loads(_render(anomaly["json_attributes_template"], payload))
    assert isinstance(attributes, dict)
    return attributes


def test_anomaly_attributes_name_the_bands_and_the_fault():
    payload = {**sample_event(3), "bands": BANDS, "fault": {"label": "bearing_fault", "probability": 0.93}}
    attributes = _attributes(payload)
    assert attributes["bands"] == BANDS and attributes["fault"] == {"label": "bearing_fault", "probability": 0.93}
    assert attributes["event_id"] == payload["event_id"] and attributes["event_state"] == "start"
    assert attributes["cause"] == (
        "2161-2627 Hz +8.6 dB steady; 1953-2161 Hz +3.3 dB transient; fault bearing_fault 0.93"
    )


def test_anomaly_attributes_of_events_that_name_nothing():
    old_model = _attributes(sample_event(4, state="end"))  # no bands key: a model without normal band levels
    assert old_model["bands"] == [] and old_model["fault"] is None and old_model["cause"] == ""
    assert old_model["event_state"] == "end"
    nothing_rose = _attributes({**sample_event(5), "bands": []})
    assert nothing_rose["cause"] == ""
    unsupervised = _attributes({**sample_event(6), "bands": BANDS[:1]})
    assert unsupervised["cause"] == "2161-2627 Hz +8.6 dB steady" and unsupervised["fault"] is None

"""Home Assistant MQTT discovery: retained configs that make a device appear with its sensors.

Each entity is `<discovery_prefix>/<component>/<node_id>/<object_id>/config`
(https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery), all tied to the
device's retained `status` topic for availability and sharing one `device` block, so
Home Assistant shows one device per acmon unit. Values come from our own topics
(`state`, `telemetry`, `health`) through `value_template`s over their JSON fields; the
anomaly sensor's attributes come from the `events` topic (what the last alarm message
said changed: its bands and fault class).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .. import __version__

COMPONENT_PATTERN = re.compile(r"^[a-z_]+$")
NODE_PATTERN = re.compile(r"^[a-zA-Z0-9_-]+$")  # what Home Assistant accepts for node_id and object_id


@dataclass(frozen=True)
class DeviceInfo:
    """Who the entities belong to.

    Args:
        site, device_id: the device's names (topic levels).
        base_topic: `<topic_prefix>/<site>/<device_id>`.
        model: shown as the device's model in Home Assistant, e.g. the anomaly model's name and version.
    """

    site: str
    device_id: str
    base_topic: str
    model: str = "acmon acoustic monitor"
    sw_version: str = __version__
    extra_entities: tuple[Entity, ...] = ()  # e.g. band_level_entities(): after ENTITIES

    @property
    def node_id(self) -> str:
        return f"acmon_{self.site}_{self.device_id}"


@dataclass(frozen=True)
class Entity:
    """One Home Assistant entity fed from one of our topics."""

    component: str  # binary_sensor or sensor
    object_id: str
    name: str
    topic_suffix: str  # state, telemetry or health
    value_template: str
    extra: tuple[tuple[str, Any], ...] = ()
    attributes_suffix: str | None = None  # the topic whose messages set the entity's attributes
    attributes_template: str | None = None  # renders those messages to a JSON object


DIAGNOSTIC = ("entity_category", "diagnostic")

# The anomaly sensor's attributes, from each event message: what changed (the `bands` and `fault` of
# acmon.event/1, empty when the model cannot say) and a one-line `cause` for cards and notifications,
# e.g. "2161-2627 Hz +8.6 dB steady; fault bearing 0.93". An end keeps its alarm's last cause.
EVENT_ATTRIBUTES_TEMPLATE = (
    "{%- set bands = value_json.bands | default([]) -%}"
    "{%- set fault = value_json.fault | default(none) -%}"
    "{%- set ns = namespace(parts=[]) -%}"
    "{%- for b in bands -%}"
    "{%- set ns.parts = ns.parts + [b.low_hz ~ '-' ~ b.high_hz ~ ' Hz +' ~ b.db_above_normal ~ ' dB ' ~ b.kind] -%}"
    "{%- endfor -%}"
    "{%- if fault -%}{%- set ns.parts = ns.parts + ['fault ' ~ fault.label ~ ' ' ~ fault.probability] -%}{%- endif -%}"
    '{{ {"event_id": value_json.event_id, "event_state": value_json.state, "bands": bands, "fault": fault, '
    '"cause": ns.parts | join("; ")} | tojson }}'
)
MEASUREMENT = ("state_class", "measurement")

ENTITIES: tuple[Entity, ...] = (
    Entity(
        "binary_sensor",
        "anomaly",
        "Anomaly",
        "state",
        "{{ 'ON' if value_json.state == 'anomaly' else 'OFF' }}",
        (("device_class", "problem"), ("payload_on", "ON"), ("payload_off", "OFF")),
        attributes_suffix="events",
        attributes_template=EVENT_ATTRIBUTES_TEMPLATE,
    ),
    Entity("sensor", "score", "Anomaly score", "state", "{{ value_json.score }}", (MEASUREMENT,)),
    Entity("sensor", "threshold", "Threshold", "state", "{{ value_json.threshold }}", (DIAGNOSTIC,)),
    Entity(
        "sensor",
        "level",
        "Sound level",
        "telemetry",
        "{{ value_json.level_dbfs }}",
        (("unit_of_measurement", "dBFS"), MEASUREMENT),
    ),
    Entity(
        "binary_sensor",
        "health",
        "Health problem",
        "health",
        "{{ 'OFF' if value_json.ok else 'ON' }}",
        (("device_class", "problem"), ("payload_on", "ON"), ("payload_off", "OFF"), DIAGNOSTIC),
    ),
    Entity(
        "sensor",
        "realtime_factor",
        "Real-time factor",
        "telemetry",
        "{{ value_json.realtime_factor }}",
        (MEASUREMENT, DIAGNOSTIC),
    ),
    Entity(
        "sensor",
        "dropped_blocks",
        "Dropped audio blocks",
        "telemetry",
        "{{ value_json.dropped_blocks }}",
        (("state_class", "total_increasing"), DIAGNOSTIC),
    ),
    Entity(
        "sensor",
        "cpu_temperature",
        "CPU temperature",
        "telemetry",
        "{{ value_json.cpu_temperature_c }}",
        (("device_class", "temperature"), ("unit_of_measurement", "°C"), MEASUREMENT, DIAGNOSTIC),
    ),
    Entity(
        "sensor",
        "spool_pending",
        "Unsent events",
        "telemetry",
        "{{ value_json.spool.pending }}",
        (MEASUREMENT, DIAGNOSTIC),
    ),
)


def band_level_entities(bands_hz: tuple[float, ...] | list[float], unit: str = "dBFS") -> tuple[Entity, ...]:
    """One sensor per chosen 1/3-octave band: its Leq over the telemetry period (telemetry `bands`).

    The template finds the band by its centre frequency, not by position, so it reads the right value
    whatever other bands the device measures; with `bands` null (no frame in the period) it gives nothing.
    """
    entities = []
    for band in bands_hz:
        label = f"{band:g}"
        template = (
            "{% if value_json.bands %}{% for c in value_json.bands.centre_hz %}"
            f"{{% if c == {label} %}}{{{{ value_json.bands.leq_db[loop.index0] }}}}{{% endif %}}"
            "{% endfor %}{% endif %}"
        )
        entities.append(
            Entity(
                "sensor",
                f"band_{label.replace('.', '_')}hz",
                f"Level {label} Hz band",
                "telemetry",
                template,
                (("unit_of_measurement", unit), MEASUREMENT),
            )
        )
    return tuple(entities)


# Power-line sensors (telemetry `powerline`, when powerline.enabled): (object id, name, key, unit).
POWERLINE_SENSORS = (
    ("mains_frequency", "Mains frequency", "mains_hz", "Hz"),
    ("hum_comb", "Hum comb strength", "comb_db", "dB"),
    ("crackle_rate", "Crackle rate", "crackle_rate_per_s", "1/s"),
    ("crackle_phase_concentration", "Crackle phase concentration", "phase_concentration", None),
)


def powerline_entities() -> tuple[Entity, ...]:
    """One sensor per power-line figure of the telemetry period; nothing while `powerline` is absent or null."""
    return tuple(
        Entity(
            "sensor",
            object_id,
            name,
            "telemetry",
            f"{{{{ value_json.powerline.{key} if value_json.powerline is defined and value_json.powerline else none }}}}",
            ((("unit_of_measurement", unit),) if unit else ()) + (MEASUREMENT,),
        )
        for object_id, name, key, unit in POWERLINE_SENSORS
    )


def discovery_topic(prefix: str, component: str, node_id: str, object_id: str) -> str:
    """`<prefix>/<component>/<node_id>/<object_id>/config`."""
    return f"{prefix}/{component}/{node_id}/{object_id}/config"


def device_block(info: DeviceInfo) -> dict[str, Any]:
    """The `device` mapping every entity shares, so Home Assistant groups them as one device."""
    return {
        "identifiers": [info.node_id],
        "name": f"acmon {info.site}/{info.device_id}",
        "manufacturer": "acmon",
        "model": info.model,
        "sw_version": info.sw_version,
    }


def entity_config(info: DeviceInfo, entity: Entity) -> dict[str, Any]:
    """The discovery payload of one entity."""
    attributes = {}
    if entity.attributes_suffix is not None:
        attributes = {
            "json_attributes_topic": f"{info.base_topic}/{entity.attributes_suffix}",
            "json_attributes_template": entity.attributes_template,
        }
    return {
        "name": entity.name,
        "unique_id": f"{info.node_id}_{entity.object_id}",
        "state_topic": f"{info.base_topic}/{entity.topic_suffix}",
        "value_template": entity.value_template,
        "availability_topic": f"{info.base_topic}/status",
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device_block(info),
        "origin": {"name": "acmon", "sw_version": info.sw_version},
        **attributes,
        **dict(entity.extra),
    }


def discovery_messages(info: DeviceInfo, prefix: str = "homeassistant") -> list[tuple[str, dict[str, Any]]]:
    """Every (topic, payload) to publish retained for this device.

    Raises:
        ValueError: a site or device id Home Assistant would not accept as a node id.
    """
    if not NODE_PATTERN.match(info.node_id):
        raise ValueError(f"node id {info.node_id!r} is not valid for Home Assistant discovery")
    return [
        (discovery_topic(prefix, e.component, info.node_id, e.object_id), entity_config(info, e))
        for e in ENTITIES + info.extra_entities
    ]


def status_topic(prefix: str = "homeassistant") -> str:
    """Where Home Assistant announces `online` after it starts (its birth message)."""
    return f"{prefix}/status"

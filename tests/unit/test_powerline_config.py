"""The powerline section and the device's site metadata: hostile values give one line naming the key; payloads
with the powerline figures and the site metadata match the JSON Schemas; Home Assistant sensors and metrics."""

from __future__ import annotations

import math

import jinja2
import numpy as np
import pytest

from device.analysis.powerline import powerline_figures
from device.daemon.level_watch import check_level_settings, make_powerline_meter
from device.decisions.detector import Detector, DetectorSettings
from device.errors import ConfigError
from device.mqtt.ha_discovery import powerline_entities
from device.mqtt.payloads import asset_payload, event_payload, telemetry_payload
from device.settings.config import config_from_dict
from tests.mqtt_support import validate


@pytest.mark.parametrize(
    "data, where",
    [
        ({"powerline": {"mains_hz": 55}}, "powerline.mains_hz"),
        ({"powerline": {"mains_hz": "50"}}, "powerline.mains_hz"),
        ({"powerline": {"phase_bins": 2}}, "powerline.phase_bins: Input should be greater than or equal to 4"),
        ({"powerline": {"phase_bins": 10_000}}, "powerline.phase_bins: Input should be less than or equal to 360"),
        ({"powerline": {"crackle_threshold_db": math.nan}}, "powerline.crackle_threshold_db: Input should be a finite"),
        ({"powerline": {"enabled": "yes"}}, "powerline.enabled: Input should be a valid boolean"),
        ({"powerline": {"mains": 50}}, "powerline.mains: unknown key; did you mean 'mains_hz'?"),
        ({"device": {"line_voltage_kv": -110}}, "device.line_voltage_kv: Input should be greater than 0"),
        ({"device": {"line_voltage_kv": math.inf}}, "device.line_voltage_kv: Input should be a finite number"),
        ({"device": {"asset_id": "T-1\nforged: line"}}, "device.asset_id: String should match pattern"),
        ({"device": {"asset_id": ""}}, "device.asset_id: String should match pattern"),
        ({"device": {"location": "x" * 129}}, "device.location: String should have at most 128 characters"),
        ({"device": {"asset_id": 117}}, "device.asset_id: Input should be a valid string"),
    ],
)
def test_hostile_values_are_one_line_naming_the_key(data, where):
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert where in str(info.value) and "\n" not in str(info.value)


def test_a_valid_configuration_builds_the_meter():
    cfg = config_from_dict(
        {
            "device": {"asset_id": "T-117", "location": "Line 4, span 117", "line_voltage_kv": 400},
            "powerline": {"enabled": True, "mains_hz": 60, "phase_bins": 12, "crackle_threshold_db": 12},
        }
    )
    meter = make_powerline_meter(cfg, 16000)
    assert meter is not None and meter.mains_hz == 60.0 and meter.phase_bins == 12
    assert make_powerline_meter(config_from_dict({}), 16000) is None  # off by default
    assert cfg.device.line_voltage_kv == 400.0


def test_a_rate_too_low_is_one_line_from_check_config():
    cfg = config_from_dict({"powerline": {"enabled": True}, "levels": {"enabled": False}})
    with pytest.raises(ConfigError, match="too low a rate"):
        make_powerline_meter(cfg, 800)
    assert any("too low a rate" in p for p in check_level_settings(cfg, 800))


def _figures() -> dict:
    t = np.arange(8 * 16000) / 16000
    x = 0.05 * np.cos(2 * np.pi * 100.2 * t) + 0.002 * np.random.default_rng(0).standard_normal(len(t))
    x[::1601] += 0.3
    figures = powerline_figures(x, 16000, phase_bins=12)
    assert figures is not None and figures["mains_hz"] is not None and figures["phased_crackles"] > 0
    return figures


def test_payloads_with_powerline_and_asset_match_their_schemas():
    asset = asset_payload("T-117", "Line 4, span 117", 110.0)
    period = {"windows": 3, "scored_windows": 3, "dropped_blocks": 0, "clipping_ratio": 0.0, "dc_offset": 0.0}
    period |= {"damaged_samples": 0}
    payload = telemetry_payload("tower-1", "line4", 5.0, period, 1.0, None, powerline=_figures(), asset=asset)
    payload["spool"] = {"pending": 0, "dropped": 0}
    validate("telemetry", payload)
    # no lock and no crackle: nulls where nothing was found
    silent = powerline_figures(np.zeros(16000 * 5), 16000)
    validate("telemetry", {**payload, "powerline": silent})
    assert silent["mains_hz"] is None and silent["phase_concentration"] is None
    bare = telemetry_payload("tower-1", "line4", 5.0, period, 1.0, None)
    assert "powerline" not in bare and "asset" not in bare
    det = Detector(DetectorSettings(threshold=1.0, patience_windows=1))
    for transition in [t for i, s in enumerate([2.0, 0.1]) for t in det.update(i, float(i), s)]:
        event = event_payload(transition, 0, "tower-1", "line4", 1.0, "m", "1", "mic", asset=asset)
        validate("event", {**event, "time": "2026-12-03T20:00:00.000Z"})
        assert event["asset"] == asset
        assert "asset" not in event_payload(transition, 0, "tower-1", "line4", 1.0, "m", "1", "mic")
    assert asset_payload(None, None, None) is None
    assert asset_payload(None, None, 20.0) == {"asset_id": None, "location": None, "line_voltage_kv": 20.0}


def test_home_assistant_sensors_read_the_figures_and_nothing_without_them():
    figures = _figures()
    env = jinja2.Environment()
    entities = {e.object_id: e for e in powerline_entities()}
    assert set(entities) == {"mains_frequency", "hum_comb", "crackle_rate", "crackle_phase_concentration"}
    for entity, key in ((entities["mains_frequency"], "mains_hz"), (entities["crackle_rate"], "crackle_rate_per_s")):
        assert float(env.from_string(entity.value_template).render(value_json={"powerline": figures})) == figures[key]
        assert env.from_string(entity.value_template).render(value_json={"level_dbfs": -40}) == "None"

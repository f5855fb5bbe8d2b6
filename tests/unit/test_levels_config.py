"""The config keys of issue 15 item 3 (audio filters, levels, level rule, schedule, time zone, no model): hostile
values give one line naming the key path; check-config's warnings for a rule without a normal and for a calibration
measured through other filters; calibration.yaml may set levels.normal_db."""

from __future__ import annotations

import math

import pytest
import yaml

from device.daemon.daemon_config import load_daemon_config
from device.daemon.site_config import calibration_paths, load_site_config, write_calibration
from device.errors import ConfigError
from device.settings.config import config_from_dict, load_config

RULE = {"bands_hz": [100, 1000]}


@pytest.mark.parametrize(
    "data, where",
    [
        ({"audio": {"highpass_hz": math.nan}}, "audio.highpass_hz: Input should be a finite number"),
        ({"audio": {"highpass_hz": -20.0}}, "audio.highpass_hz: Input should be greater than 0"),
        ({"audio": {"highpass_hz": math.inf}}, "audio.highpass_hz: Input should be a finite number"),
        ({"audio": {"notch_hz": [50, math.nan]}}, "audio.notch_hz[1]: Input should be a finite number"),
        ({"audio": {"notch_hz": [50, -100]}}, "audio.notch_hz: notch frequencies must be > 0 Hz"),
        ({"audio": {"notch_hz": [50, 50]}}, "audio.notch_hz: notch frequencies must not repeat"),
        ({"audio": {"notch_hz": list(range(50, 500, 50))}}, "audio.notch_hz: List should have at most 8 items"),
        ({"audio": {"notch_q": 0}}, "audio.notch_q: Input should be greater than or equal to 1"),
        ({"audio": {"notch_hz": "50"}}, "audio.notch_hz: Input should be a valid list"),
        ({"audio": {"calibration_db": 1e9}}, "audio.calibration_db: Input should be less than or equal to 250"),
        ({"levels": {"frame_seconds": 0.01}}, "levels.frame_seconds: Input should be greater than or equal to 0.125"),
        ({"levels": {"fmin_hz": 25, "frame_seconds": 0.25}}, "levels: frames of 0.25 s resolve bands from 80 Hz up"),
        ({"levels": {"fmin_hz": 1000, "fmax_hz": 500}}, "levels: fmax_hz (500.0) must be above fmin_hz"),
        ({"levels": {"normal_db": {1000: math.nan}}}, "levels.normal_db[1000]: Input should be a finite number"),
        ({"levels": {"normal_db": {999: -40.0}}}, "levels.normal_db: 999 Hz is not a nominal"),
        ({"levels": {"normal_db": {1000: 400.0}}}, "levels.normal_db: 1000 Hz: 400 dBFS is not a level"),
        ({"levels": {"ha_bands_hz": [1000, 1000]}}, "levels.ha_bands_hz: bands must not repeat"),
        ({"detector": {"level_rule": {"bands_hz": []}}}, "detector.level_rule.bands_hz: List should have at least 1"),
        ({"detector": {"level_rule": {"bands_hz": [1001]}}}, "detector.level_rule.bands_hz: 1001 Hz is not a nominal"),
        ({"detector": {"level_rule": {**RULE, "rise_db": -3}}}, "detector.level_rule.rise_db: Input should be greater"),
        ({"detector": {"level_rule": {**RULE, "rise_db": 5, "hysteresis_db": 6}}}, "hysteresis_db (6.0) must be below"),
        ({"detector": {"level_rule": {**RULE, "patience_seconds": 0}}}, "patience_seconds: Input should be greater"),
        ({"detector": {"level_rule": {"rise_db": 5}}}, "detector.level_rule.bands_hz: required key is missing"),
        ({"detector": {"schedule": [{"start": "06:00"}]}}, "detector.schedule[0].end: required key is missing"),
        ({"detector": {"schedule": [{"start": "06:00", "end": "25:00"}]}}, "detector.schedule[0]: '25:00' is not"),
        ({"detector": {"schedule": [{"start": "06:00", "end": "06:00"}]}}, "for the whole day write"),
        ({"detector": {"schedule": [{"days": ["mo"], "start": "06:00", "end": "07:00"}]}}, "schedule[0].days[0]"),
        ({"detector": {"schedule": {"start": "06:00"}}}, "detector.schedule: Input should be a valid list"),
        ({"device": {"timezone": "Europe/Atlantis"}}, "device.timezone: unknown time zone"),
        ({"device": {"timezone": "../../../etc/passwd"}}, "device.timezone: unknown time zone"),
        ({"model": {"path": None}}, "nothing would raise an alarm"),
    ],
)
def test_hostile_values_are_one_line_naming_the_key(data, where):
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert where in str(info.value) and "\n" not in str(info.value)


def test_a_valid_configuration():
    cfg = config_from_dict(
        {
            "model": {"path": None},
            "device": {"timezone": "Europe/Berlin"},
            "audio": {"highpass_hz": 30, "notch_hz": [50, 100, 150], "notch_q": 20, "calibration_db": 120},
            "levels": {"fmin_hz": 31.5, "ha_bands_hz": [125, 1000], "normal_db": {31.5: -60, 1000: -45.5}},
            "detector": {
                "level_rule": {"bands_hz": [31.5, 1000], "rise_db": 8, "hysteresis_db": 2, "patience_seconds": 5},
                "schedule": [
                    {"days": ["mon", "fri"], "start": "22:00", "end": "06:00"},
                    {"start": "00:00", "end": "24:00"},
                ],
            },
        }
    )
    assert cfg.levels.normal_db == {31.5: -60.0, 1000: -45.5} and cfg.detector.schedule[1].days[-1] == "sun"


def _level_only(tmp_path, **audio) -> str:
    path = tmp_path / "device.yaml"
    data = {"model": {"path": None}, "mqtt": {"enabled": False}, "detector": {"level_rule": {"bands_hz": [1000]}}}
    if audio:
        data["audio"] = audio
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_check_config_warns_about_a_rule_without_normal_and_filters_changed_since_calibration(tmp_path):
    path = _level_only(tmp_path)
    warnings = load_daemon_config(path).warnings
    assert any("detector.level_rule" in w and "stays off until" in w for w in warnings)
    write_calibration(
        path,
        "levels:\n  normal_db: {1000: -45.0}\ncalibration:\n  input_filters: {highpass_hz: null, notch_hz: [], notch_q: null}\n",
    )
    assert load_site_config(path).levels.normal_db == {1000: -45.0}  # calibration.yaml may set it
    assert load_daemon_config(path).warnings == ()
    path = _level_only(tmp_path, notch_hz=[50])  # the filters changed since the calibration
    (warning,) = load_daemon_config(path).warnings
    assert str(calibration_paths(path)[0]) in warning and "calibrate again" in warning


def test_calibration_may_not_set_other_level_keys(tmp_path):
    path = _level_only(tmp_path)
    write_calibration(path, "levels:\n  enabled: false\n")
    with pytest.raises(ConfigError, match="may set only .*levels.normal_db"):
        load_site_config(path)
    assert load_config(path).levels.enabled

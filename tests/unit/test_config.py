"""Tests of device/settings/ (schema.py, config.py, yaml_files.py, secret_files.py, reference.py): schema, error messages with key paths and line numbers, secrets, docs."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import pydantic
import pytest

from device.analysis.features import FeatureParams
from device.errors import ConfigError
from device.settings.config import config_from_dict, feature_pins, load_config, mqtt_client_id
from device.settings.reference import config_reference_markdown
from device.settings.schema import AcmonConfig, FeaturesConfig, MqttConfig
from device.settings.secret_files import resolve_mqtt_password

REPO = Path(__file__).resolve().parents[2]

MINIMAL = {
    "device": {"id": "pump-01", "site": "plant-a"},
    "mqtt": {"host": "broker.local"},
}

SECRET = "s3cr3t-Pa55"


def with_override(section: str, **values) -> dict:
    """MINIMAL with keys of one section set (a value of ... deletes the key)."""
    data = copy.deepcopy(MINIMAL)
    part = data.setdefault(section, {})
    for key, value in values.items():
        if value is ...:
            part.pop(key, None)
        else:
            part[key] = value
    return data


def error_of(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    return str(info.value)


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "acmon.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


# --- defaults and examples -------------------------------------------------------------------


def test_minimal_dict_is_valid():
    cfg = config_from_dict(MINIMAL)
    assert cfg.device.id == "pump-01"
    assert cfg.mqtt.host == "broker.local"


def test_defaults():
    cfg = config_from_dict({})
    assert cfg.device.id == "acmon-1" and cfg.device.site == "default"
    assert cfg.model.path == "models/demo/model.tflite" and cfg.model.threshold is None
    assert feature_pins(cfg) == {}
    assert cfg.audio.source == "microphone" and cfg.audio.channels == 1 and cfg.audio.block_samples == 1024
    assert cfg.audio.wav_paths == [] and cfg.audio.realtime is True and cfg.audio.stdin_format == "s16le"
    assert cfg.detector.patience_windows == 2 and cfg.detector.cooldown_seconds == 30
    assert cfg.detector.min_rms_dbfs == -80 and cfg.detector.threshold_scale == 1.0
    assert cfg.mqtt.enabled and cfg.mqtt.port == 1883 and cfg.mqtt.topic_prefix == "acmon"
    assert cfg.mqtt.keepalive_seconds == 60 and cfg.mqtt.max_pending_alerts == 10000
    assert cfg.mqtt.tls is None and cfg.mqtt.username is None
    assert cfg.logging.level == "INFO"
    assert mqtt_client_id(cfg) == "acmon-default-acmon-1"


def test_config_is_frozen():
    cfg = config_from_dict(MINIMAL)
    with pytest.raises(pydantic.ValidationError):
        cfg.mqtt.port = 1  # type: ignore[misc]


def test_null_section_means_defaults():
    assert config_from_dict({"mqtt": None}).mqtt.port == 1883


def test_logging_level_lower_case():
    assert config_from_dict(with_override("logging", level="debug")).logging.level == "DEBUG"


def test_input_device_name_or_index():
    assert config_from_dict(with_override("audio", input_device="USB")).audio.input_device == "USB"
    assert config_from_dict(with_override("audio", input_device=2)).audio.input_device == 2
    assert "audio.input_device:" in error_of(with_override("audio", input_device=True))


@pytest.mark.parametrize("name", ["configs/device.yaml", "configs/demo.yaml"])
def test_example_configs_validate(name):
    cfg = load_config(REPO / name)
    assert isinstance(cfg, AcmonConfig)


def test_demo_config_contents():
    cfg = load_config(REPO / "configs/demo.yaml")
    assert (cfg.device.id, cfg.device.site) == ("demo-pump", "demo")
    assert cfg.audio.source == "wav" and cfg.audio.wav_paths == ["data/demo/pump/test"]
    assert cfg.audio.realtime is False
    assert (cfg.mqtt.host, cfg.mqtt.port) == ("127.0.0.1", 1883)
    assert cfg.model.path == "models/demo/model.tflite"


# --- invalid dicts: the message names the key path -------------------------------------------


def test_unknown_top_level_key_dict():
    data = copy.deepcopy(MINIMAL)
    data["mqt"] = {}
    message = error_of(data)
    assert message.startswith("<dict>: mqt: unknown key")
    assert "did you mean 'mqtt'?" in message


def test_misspelled_nested_key_dict():
    message = error_of(with_override("mqtt", prot=1883))
    assert "mqtt.prot: unknown key; did you mean 'port'?" in message


def test_wrong_type():
    message = error_of(with_override("mqtt", port="1883"))
    assert message == "<dict>: mqtt.port: Input should be a valid integer (got '1883')"


def test_bool_is_not_an_int():
    assert "detector.patience_windows:" in error_of(with_override("detector", patience_windows=True))


def test_number_for_string_hints_quoting():
    message = error_of(with_override("device", id=1234))
    assert "device.id:" in message and "quote" in message


def test_out_of_range_port():
    message = error_of(with_override("mqtt", port=70000))
    assert "mqtt.port: Input should be less than or equal to 65535 (got 70000)" in message


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("device", "id", "pump/01"),
        ("device", "site", ""),
        ("model", "threshold", 0),
        ("audio", "capture_rate_hz", 1000),
        ("audio", "channels", 33),
        ("audio", "block_samples", 0),
        ("audio", "source", "line-in"),
        ("detector", "cooldown_seconds", -1),
        ("detector", "min_rms_dbfs", 3),
        ("detector", "threshold_scale", 0),
        ("detector", "threshold_scale", float("nan")),
        ("mqtt", "keepalive_seconds", 1),
        ("mqtt", "topic_prefix", "acmon/#"),
        ("mqtt", "topic_prefix", "/acmon"),
        ("mqtt", "topic_prefix", ""),
        ("mqtt", "host", "mqtt://broker"),
        ("mqtt", "password_env", "NOT-A-NAME"),
        ("logging", "level", "verbose"),
    ],
)
def test_invalid_value_names_key(section, key, value):
    assert f"{section}.{key}:" in error_of(with_override(section, **{key: value}))


def test_plain_password_rejected_with_hint():
    message = error_of(with_override("mqtt", username="u", password=SECRET))
    assert "mqtt.password: unknown key" in message
    assert "password_file, password_env or password_credential" in message
    assert SECRET not in message


def test_username_without_password_source():
    message = error_of(with_override("mqtt", username="pump"))
    assert message.startswith("<dict>: mqtt: username needs a password source")


def test_password_source_without_username():
    assert "<dict>: mqtt: password_env is set but username is not" in error_of(with_override("mqtt", password_env="PW"))


def test_two_password_sources():
    message = error_of(with_override("mqtt", username="u", password_env="PW", password_file="/etc/pw"))
    assert "<dict>: mqtt: give at most one password source" in message
    assert "password_file and password_env" in message


def test_tls_cert_without_key():
    message = error_of(with_override("mqtt", tls={"ca_file": "ca.crt", "cert_file": "c.crt"}))
    assert message.startswith("<dict>: mqtt.tls: cert_file and key_file go together")


def test_tls_needs_ca_file():
    assert "mqtt.tls.ca_file: required key is missing" in error_of(with_override("mqtt", tls={"insecure": True}))


def test_wav_source_without_paths():
    message = error_of(with_override("audio", source="wav"))
    assert message.startswith("<dict>: audio: source 'wav' needs at least one file")


def test_channel_not_below_channels():
    assert "<dict>: audio: channel 2 does not exist" in error_of(with_override("audio", channel=2, channels=2))


def test_reconnect_max_below_min():
    message = error_of(with_override("mqtt", reconnect_min_seconds=10, reconnect_max_seconds=5))
    assert "<dict>: mqtt: reconnect_max_seconds (5.0) must be >= reconnect_min_seconds (10.0)" in message


def test_one_line_per_error():
    data = with_override("mqtt", port=0, keepalive_seconds=0)
    lines = error_of(data).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("<dict>: mqtt.port:") and lines[1].startswith("<dict>: mqtt.keepalive_seconds:")


def test_non_mapping_dict():
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        config_from_dict(["mqtt"])  # type: ignore[arg-type]


# --- YAML files: messages carry the line ----------------------------------------------------


def test_yaml_unknown_top_level_key_line(tmp_path):
    path = write_yaml(
        tmp_path,
        """
        device:
          id: pump-01
        mqt:
          host: broker
        """,
    )
    message = load_error(path)
    assert message == f"{path}:3: mqt: unknown key; did you mean 'mqtt'?"


def test_yaml_misspelled_nested_key_line(tmp_path):
    path = write_yaml(
        tmp_path,
        """
        # comment
        mqtt:
          host: broker
          keepalive_second: 30
        """,
    )
    assert load_error(path) == f"{path}:4: mqtt.keepalive_second: unknown key; did you mean 'keepalive_seconds'?"


def test_yaml_value_error_line(tmp_path):
    path = write_yaml(
        tmp_path,
        """
        mqtt:
          host: broker

          port: 70000
        """,
    )
    assert load_error(path).startswith(f"{path}:4: mqtt.port: Input should be less than or equal to 65535")


def test_yaml_plain_password_line(tmp_path):
    path = write_yaml(
        tmp_path,
        f"""
        mqtt:
          username: pump
          password: {SECRET}
        """,
    )
    message = load_error(path)
    assert message.startswith(f"{path}:3: mqtt.password: unknown key; plain passwords are not accepted")
    assert "password_file, password_env or password_credential" in message
    assert SECRET not in message


def test_yaml_section_rule_uses_section_line(tmp_path):
    path = write_yaml(
        tmp_path,
        """
        device:
          id: pump-01
        audio:
          source: wav
        """,
    )
    assert load_error(path).startswith(f"{path}:3: audio: source 'wav' needs")


def test_yaml_missing_required_uses_enclosing_section_line(tmp_path):
    path = write_yaml(
        tmp_path,
        """
        mqtt:
          port: 8883
          tls:
            insecure: true
        """,
    )
    assert load_error(path) == f"{path}:3: mqtt.tls.ca_file: required key is missing"


def test_yaml_list_item_line(tmp_path):
    path = write_yaml(
        tmp_path,
        """
        audio:
          source: wav
          wav_paths:
            - a.wav
            - 7
        """,
    )
    assert load_error(path).startswith(f"{path}:5: audio.wav_paths[1]: Input should be a valid string")


def test_yaml_errors_in_file_order(tmp_path):
    path = write_yaml(
        tmp_path,
        """
        mqtt:
          port: 0
        device:
          id: "bad id"
        """,
    )
    lines = load_error(path).splitlines()
    assert [line.split(": ")[0] for line in lines] == [f"{path}:2", f"{path}:4"]


def test_yaml_syntax_error_names_line(tmp_path):
    path = write_yaml(
        tmp_path,
        """
        mqtt:
          host: broker
         port: 1883
        """,
    )
    message = load_error(path)
    assert message.startswith(f"{path}:3:")
    assert "YAML syntax error" in message
    assert "\n" not in message


def test_yaml_duplicate_key(tmp_path):
    path = write_yaml(
        tmp_path,
        """
        mqtt:
          host: a
          host: b
        """,
    )
    assert load_error(path) == f"{path}:3: mqtt.host: duplicate key (first given at line 2)"


def test_yaml_non_mapping_top_level(tmp_path):
    path = write_yaml(tmp_path, "- mqtt\n- audio\n")
    message = load_error(path)
    assert message.startswith(f"{path}: the top level must be a mapping")
    assert "a list" in message


@pytest.mark.parametrize("text", ["", "# only a comment\n", "\n\n"])
def test_yaml_empty_file_is_defaults(tmp_path, text):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    assert load_config(path) == config_from_dict({})


def test_yaml_empty_section_is_defaults(tmp_path):
    path = write_yaml(tmp_path, "mqtt:\n  # host: broker\n")
    assert load_config(path).mqtt.host == "127.0.0.1"


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    assert load_error(path) == f"{path}: no such config file"


def test_unreadable_file(tmp_path):
    assert "cannot read config file" in load_error(tmp_path)  # a directory


# --- features --------------------------------------------------------------------------------


def test_feature_pins_valid():
    data = copy.deepcopy(MINIMAL)
    data["features"] = {"sample_rate_hz": 16000, "fmax_hz": 8000, "normalization": "zscore"}
    cfg = config_from_dict(data)
    assert feature_pins(cfg) == {"sample_rate_hz": 16000, "fmax_hz": 8000.0, "normalization": "zscore"}


def test_feature_pin_unknown_field_rejected():
    data = copy.deepcopy(MINIMAL)
    data["features"] = {"sample_rate": 16000}
    message = error_of(data)
    assert "features.sample_rate: unknown key; did you mean 'sample_rate_hz'?" in message


@pytest.mark.parametrize("key, value", [("n_mels", 64.5), ("sample_rate_hz", "16000"), ("normalization", "l2")])
def test_feature_pin_wrong_type(key, value):
    data = copy.deepcopy(MINIMAL)
    data["features"] = {key: value}
    assert f"features.{key}:" in error_of(data)


def test_features_schema_matches_feature_params():
    assert set(FeaturesConfig.model_fields) == {f.name for f in dataclasses.fields(FeatureParams)}


def test_feature_pins_accept_feature_params_defaults():
    cfg = config_from_dict({"features": FeatureParams().to_dict()})
    assert feature_pins(cfg) == FeatureParams().to_dict()


# --- MQTT password ---------------------------------------------------------------------------


def mqtt(**values) -> MqttConfig:
    return config_from_dict(with_override("mqtt", username="pump", **values)).mqtt


def test_no_password_source():
    assert resolve_mqtt_password(config_from_dict(MINIMAL).mqtt, environ={}) is None


def test_password_from_file(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text(SECRET + "\n")
    assert resolve_mqtt_password(mqtt(password_file=str(secret)), environ={}) == SECRET


def test_password_from_file_strips_only_one_newline(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text(SECRET + " \n\n")
    assert resolve_mqtt_password(mqtt(password_file=str(secret)), environ={}) == SECRET + " \n"


def test_password_from_env():
    assert resolve_mqtt_password(mqtt(password_env="ACMON_PW"), environ={"ACMON_PW": SECRET}) == SECRET


def test_password_from_credential(tmp_path):
    (tmp_path / "mqtt-password").write_text(SECRET + "\n")
    cfg = mqtt(password_credential="mqtt-password")
    assert resolve_mqtt_password(cfg, environ={"CREDENTIALS_DIRECTORY": str(tmp_path)}) == SECRET


def test_password_file_missing(tmp_path):
    path = tmp_path / "nope"
    with pytest.raises(ConfigError, match="mqtt.password_file") as info:
        resolve_mqtt_password(mqtt(password_file=str(path)), environ={})
    assert str(path) in str(info.value)


def test_password_file_empty(tmp_path):
    path = tmp_path / "pw"
    path.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        resolve_mqtt_password(mqtt(password_file=str(path)), environ={})


def test_password_env_missing_and_empty():
    with pytest.raises(ConfigError, match="ACMON_PW is not set"):
        resolve_mqtt_password(mqtt(password_env="ACMON_PW"), environ={"OTHER": SECRET})
    with pytest.raises(ConfigError, match="ACMON_PW is empty"):
        resolve_mqtt_password(mqtt(password_env="ACMON_PW"), environ={"ACMON_PW": ""})


def test_password_credential_missing(tmp_path):
    cfg = mqtt(password_credential="mqtt-password")
    with pytest.raises(ConfigError, match="CREDENTIALS_DIRECTORY is not set") as info:
        resolve_mqtt_password(cfg, environ={})
    assert "mqtt-password" in str(info.value)
    with pytest.raises(ConfigError, match="'mqtt-password'.*no such file") as info:
        resolve_mqtt_password(cfg, environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})


def test_password_errors_never_show_the_password(tmp_path):
    bad = tmp_path / "pw"
    bad.write_bytes(SECRET.encode() + b"\xff\n")
    with pytest.raises(ConfigError) as info:
        resolve_mqtt_password(mqtt(password_file=str(bad)), environ={"X": SECRET})
    assert SECRET not in str(info.value)
    with pytest.raises(ConfigError) as info:
        resolve_mqtt_password(mqtt(password_env="ACMON_PW"), environ={"X": SECRET})
    assert SECRET not in str(info.value)


# --- reference documentation -----------------------------------------------------------------


def _all_key_paths(model, prefix=""):
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        yield path
        sub = field.annotation
        for candidate in getattr(sub, "__args__", (sub,)):
            if isinstance(candidate, type) and hasattr(candidate, "model_fields"):
                yield from _all_key_paths(candidate, path + ".")


def test_reference_mentions_every_field():
    text = config_reference_markdown()
    paths = list(_all_key_paths(AcmonConfig))
    assert "mqtt.tls.ca_file" in paths and "features.sample_rate_hz" in paths
    for path in paths:
        assert f"`{path}`" in text, path
    assert "Generated" in text.splitlines()[0]


def test_docs_configuration_md_is_up_to_date():
    committed = (REPO / "docs/configuration.md").read_text()
    assert committed == config_reference_markdown(), (
        "docs/configuration.md is stale: regenerate it with `python -m device.settings.reference > docs/configuration.md`"
    )


def test_module_entry_point_prints_reference():
    result = subprocess.run(
        [sys.executable, "-m", "device.settings.reference"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout == config_reference_markdown()


def test_config_module_imports_no_heavy_dependencies():
    code = "import sys, device.settings.config; bad = {'scipy', 'tensorflow'} & set(sys.modules); assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)

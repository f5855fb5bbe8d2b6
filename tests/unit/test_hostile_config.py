"""Hostile configs: every YAML file acmon reads is bounded, and the one loader answers a config or one line per problem.

Regression tests for the findings of issue 11 ("Bad config"), then Hypothesis mutating
valid configs and calibration files through load_daemon_config. No model is trained here:
targets that need one are in tests/integration/test_cli_errors.py.
"""

from __future__ import annotations

import copy
import os
import resource
import stat
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.daemon.daemon_config import load_daemon_config
from device.daemon.site_config import calibration_paths, load_site_config, rollback_calibration
from device.errors import AcmonError, ConfigError
from device.settings.config import load_config
from device.settings.secret_files import resolve_mqtt_password
from device.settings.yaml_files import MAX_YAML_ALIASES, MAX_YAML_BYTES, MAX_YAML_DEPTH, MAX_YAML_VALUES, read_yaml_file

# A valid config that uses every kind of value; paths are filled in per test (they need not exist).
VALID = {
    "device": {"id": "pump-01", "site": "plant-a"},
    "model": {"path": "MODEL", "threshold": 2.5},
    "features": {"sample_rate_hz": 16000},
    "audio": {"source": "wav", "wav_paths": ["a.wav", "b.wav"], "block_samples": 1024, "realtime": False},
    "detector": {"patience_windows": 2, "off_threshold": 2.0, "smoothing": "mean"},
    "evidence": {"enabled": False, "quota_mb": 200.0},
    "health": {"reopen_min_seconds": 1.0, "reopen_max_seconds": 60.0},
    "mqtt": {
        "host": "broker.example",
        "port": 8883,
        "username": "pump-01",
        "password_file": "PASSWORD",
        "tls": {"ca_file": "CA"},
    },
    "logging": {"level": "INFO"},
}

CALIBRATION = "model:\n  threshold: 3.1\ndetector:\n  min_rms_dbfs: -55.0\ncalibration:\n  source: test\n"


def one_line_per_problem(message: str, *files: Path) -> None:
    """Each line of an error is a problem that names one of `files`: no traceback text, no blank lines."""
    lines = message.split("\n")
    assert lines and len(lines) <= 20, message[:2000]
    for line in lines:
        assert line.strip() == line and line, repr(message[:2000])
        assert any(line.startswith(str(f)) for f in files), line[:300]
        assert "Traceback" not in line
        assert len(line) < 1000, line[:300]


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    one_line_per_problem(str(info.value), path)
    return str(info.value)


def write(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)  # calibration files live in the state directory
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


@pytest.fixture
def small_memory():
    """Cap this process's address space at 1 GiB while a test runs, so an unbounded input fails fast."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    used = 1 << 30
    resource.setrlimit(resource.RLIMIT_AS, (max(used, _current_vm_bytes() + used), hard))
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _current_vm_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


# --- YAML at the edge: size, nesting, aliases ------------------------------------------------


def billion_laughs(levels: int = 9, fan_out: int = 9) -> str:
    """`fan_out ** levels` values described in a few hundred bytes."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * fan_out) + "]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * fan_out) + "]")
    lines.append(f"device: *l{levels - 1}")
    return "\n".join(lines) + "\n"


def test_billion_laughs_is_refused_quickly(tmp_path, small_memory):
    message = config_error(write(tmp_path / "laughs.yaml", billion_laughs()))
    assert f"more than {MAX_YAML_VALUES} values" in message and "laughs.yaml:" in message


def test_aliases_are_counted(tmp_path):
    text = "x: &x 1\nlist: [" + ", ".join(["*x"] * (MAX_YAML_ALIASES + 1)) + "]\n"
    assert f"more than {MAX_YAML_ALIASES} aliases" in config_error(write(tmp_path / "a.yaml", text))


def test_a_few_aliases_still_work(tmp_path):
    text = "device: {id: &name pump-01, site: *name}\n"
    assert load_config(write(tmp_path / "ok.yaml", text)).device.id == "pump-01"


@pytest.mark.parametrize(
    "text",
    [
        "device: " + "[" * 5000 + "]" * 5000 + "\n",
        "device: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n",
        "".join("  " * i + f"k{i}:\n" for i in range(MAX_YAML_DEPTH + 5)) + "  " * (MAX_YAML_DEPTH + 5) + "x: 1\n",
    ],
    ids=["flow-sequence-5000", "flow-mapping-5000", "block-mapping"],
)
def test_deep_nesting_is_one_line_not_recursion_error(tmp_path, text):
    message = config_error(write(tmp_path / "deep.yaml", text))
    assert f"nested deeper than {MAX_YAML_DEPTH} levels" in message


def test_nesting_is_counted_through_aliases(tmp_path):
    inner = "[" * (MAX_YAML_DEPTH - 2) + "]" * (MAX_YAML_DEPTH - 2)
    text = f"a: &a {inner}\ndevice: [[[[*a]]]]\n"
    assert "once aliases are expanded" in config_error(write(tmp_path / "d.yaml", text))


@pytest.mark.parametrize("text", ["device: &a [*a]\n", "device: &a {x: *a}\n", "a: &a {<<: *a}\n"])
def test_recursive_alias_is_refused(tmp_path, text):
    message = config_error(write(tmp_path / "r.yaml", text))
    assert "recursive" in message


def test_file_larger_than_the_bound_is_not_read(tmp_path):
    path = write(tmp_path / "big.yaml", "device:\n  id: " + "x" * (MAX_YAML_BYTES + 10) + "\n")
    assert "larger than 1 MiB" in config_error(path)


def test_device_fifo_and_folder_are_refused_without_reading(tmp_path):
    assert "not a regular file" in config_error(Path("/dev/zero"))
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    assert "not a regular file" in config_error(fifo)  # opening it would block for ever
    assert "folder" in config_error(tmp_path)


@pytest.mark.parametrize(
    "content,needle",
    [
        ("device:\n  id: 2024-13-45\n", "cannot be converted"),  # a timestamp with month 13
        ("mqtt:\n  port: " + "1" * 5000 + "\n", "cannot be converted"),  # past Python's int digit limit
        ("device:\n  id: a\x00b\n", "U+0000"),
        ("device:\n  id: a\x07b\n", "U+0007"),
        (b"device:\n  id: caf\xe9\n", "not UTF-8"),
        (b"\xff\xfe\x00d\x00e\x00v", "not UTF-8"),
        ("a: !!python/object/apply:os.system ['true']\n", "python/object"),
        ("? [a, b]\n: c\n", "unhashable"),
        ("--- a\n--- b\n", "single document"),
        ("device: *nowhere\n", "undefined alias"),
    ],
    ids=[
        "bad-timestamp",
        "huge-int",
        "nul",
        "bell",
        "latin-1",
        "utf-16",
        "python-tag",
        "list-key",
        "two-docs",
        "alias",
    ],
)
def test_values_yaml_cannot_build_are_one_line(tmp_path, content, needle):
    message = config_error(write(tmp_path / "v.yaml", content))
    assert needle in message and message.startswith(f"{tmp_path / 'v.yaml'}:")


def test_many_problems_are_capped(tmp_path):
    text = "device:\n" + "".join(f"  key{i}: 1\n" for i in range(500))
    lines = config_error(write(tmp_path / "many.yaml", text)).split("\n")
    assert len(lines) == 20 and "more problems" in lines[-1]


def test_huge_key_is_cut_in_the_message(tmp_path):
    message = config_error(write(tmp_path / "k.yaml", "device:\n  ? " + "k" * 500_000 + "\n  : 1\n"))
    assert len(message) < 1000 and "unknown key" in message


def test_read_yaml_file_names_what_it_reads(tmp_path):
    with pytest.raises(ConfigError, match=r"no such training config"):
        read_yaml_file(tmp_path / "t.yaml", "training config")
    assert read_yaml_file(write(tmp_path / "ok.yaml", "a: [1, 2]\n")) == {"a": [1, 2]}


def test_training_config_is_bounded(tmp_path):
    from training.options import load_training_config

    with pytest.raises(AcmonError, match="more than"):
        load_training_config(write(tmp_path / "train.yaml", billion_laughs()))


@pytest.mark.parametrize(
    "text, needle",
    [
        ("features: [1, 2]\n", "features: must be a mapping"),
        ("fit: 3\n", "fit: must be a mapping"),
        ("fit: {augment: [1]}\n", "fit.augment: must be a mapping"),
        ("fit: {false_alarms_per_day: lots}\n", "fit:"),
        ("features: {n_mels: many}\n", "features:"),
    ],
)
def test_training_config_of_the_wrong_shape_is_one_line(tmp_path, text, needle):
    from training.options import load_training_config

    with pytest.raises(AcmonError) as info:
        load_training_config(write(tmp_path / "train.yaml", text))
    assert needle in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "text, where",
    [
        ("fit:\n  epochs: 5\n  batch_sise: 8\n", ":3: fit.batch_sise: unknown key"),
        ("fit:\n  epochs: 5\n  patience_windows: 0\n", ":3: fit: patience_windows must be in 1..100"),
        ("features:\n  n_mels: 64\n\n  n_fft: 500\n", ":4: features:"),
        ("fit:\n  augment:\n    gain_db: 3\n    mix_upp: 1\n", ":4: fit.augment.mix_upp: unknown key"),
        ("fitt:\n  epochs: 5\n", ":1: unknown key 'fitt'"),
        ("fit:\n  augment:\n    gain_db: lots\n", ":3: fit.augment: gain_db must be a number"),
        ("fit:\n  augment:\n    background_snr_db: [30, 10]\n", ":3: fit.augment: background_snr_db must be"),
        ("fit:\n  augment:\n    time_masks: 2.5\n", ":3: fit.augment: time_masks must be an integer"),
    ],
)
def test_training_config_errors_name_the_line(tmp_path, text, where):
    """Training's config went through the bounded reader but its errors named no line, unlike the daemon's."""
    from training.options import load_training_config

    path = write(tmp_path / "train.yaml", text)
    with pytest.raises(AcmonError) as info:
        load_training_config(path)
    assert str(info.value).startswith(f"{path}{where}"), str(info.value)


# --- calibration files -----------------------------------------------------------------------


def test_corrupt_calibration_yaml_is_one_line(tmp_path):
    cfg = write(tmp_path / "acmon.yaml", "")
    current, _ = calibration_paths(cfg)
    for content, needle in (
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (billion_laughs(), "more than"),
        ("[" * 5000, "nested deeper"),
    ):
        write(current, content)
        with pytest.raises(ConfigError) as info:
            load_site_config(cfg)
        one_line_per_problem(str(info.value), current)
        assert needle in str(info.value) and "--rollback" in str(info.value)


def test_rollback_to_a_corrupt_previous_file_is_refused_and_changes_nothing(tmp_path):
    cfg = write(tmp_path / "acmon.yaml", "")
    current, previous = calibration_paths(cfg)
    write(current, CALIBRATION)
    write(previous, b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe garbage")
    with pytest.raises(ConfigError) as info:
        rollback_calibration(cfg)
    one_line_per_problem(str(info.value), previous)
    assert "not UTF-8" in str(info.value) and "nothing was changed" in str(info.value)
    assert current.read_text() == CALIBRATION  # untouched
    write(previous, "mqtt: {host: elsewhere}\n")  # valid YAML, but not a calibration
    with pytest.raises(ConfigError, match="may set only"):
        rollback_calibration(cfg)
    assert current.read_text() == CALIBRATION


def test_rollback_away_from_a_corrupt_current_file(tmp_path):
    cfg = write(tmp_path / "acmon.yaml", "")
    current, previous = calibration_paths(cfg)
    write(current, b"\xff\xfe damaged")
    write(previous, CALIBRATION)
    rollback_calibration(cfg)
    assert load_site_config(cfg).model.threshold == 3.1


# --- the one loader: what the config points to ------------------------------------------------


def daemon_config(tmp_path: Path, **sections) -> Path:
    """VALID with MQTT off and the model at tmp_path/model.tflite, sections replaced."""
    data = copy.deepcopy(VALID)
    data["model"]["path"] = str(tmp_path / "model.tflite")
    data["mqtt"] = {"enabled": False}
    data.update(sections)
    return write(tmp_path / "acmon.yaml", yaml.safe_dump(data))


def daemon_error(path: Path, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_daemon_config(path, **kwargs)
    one_line_per_problem(str(info.value), path)
    return str(info.value)


def test_missing_model_is_refused_by_the_loader(tmp_path):
    message = daemon_error(daemon_config(tmp_path))
    assert "model.path" in message and "no such model file" in message


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage, not a model", b"\x00" * 4 + b"TFL3" + b"\xff" * 64],
    ids=["empty", "text", "tfl3-header"],
)
def test_garbage_model_is_refused_by_the_loader(tmp_path, content):
    write(tmp_path / "model.tflite", content)
    message = daemon_error(daemon_config(tmp_path))
    assert "model.tflite" in message


def test_model_that_is_not_a_regular_file_is_refused_without_reading(tmp_path, small_memory):
    cfg = daemon_config(tmp_path, model={"path": "/dev/zero"})
    assert "/dev/zero is not a regular file" in daemon_error(cfg)
    os.mkfifo(tmp_path / "fifo.tflite")
    cfg = daemon_config(tmp_path, model={"path": str(tmp_path / "fifo.tflite")})
    assert "not a regular file" in daemon_error(cfg)
    assert "--model" in daemon_error(cfg, model_path="/dev/zero")


def test_mqtt_files_are_checked(tmp_path):
    mqtt = {
        "host": "broker.example",
        "username": "u",
        "password_file": str(tmp_path / "pw"),
        "tls": {"ca_file": str(tmp_path / "ca.pem")},
    }
    message = daemon_error(daemon_config(tmp_path, mqtt=mqtt))
    assert "mqtt.password_file" in message and "mqtt.tls.ca_file" in message and "no such file" in message
    write(tmp_path / "ca.pem", "not a certificate\n")
    write(tmp_path / "pw", "")
    message = daemon_error(daemon_config(tmp_path, mqtt=mqtt))
    assert "not a PEM CA certificate" in message and "is empty" in message


def test_mqtt_files_are_not_checked_with_mqtt_off(tmp_path):
    message = daemon_error(daemon_config(tmp_path, mqtt={"enabled": False, "tls": {"ca_file": "/nowhere"}}))
    assert "ca_file" not in message  # only the (missing) model


def test_password_file_that_is_a_device_is_not_read(tmp_path, small_memory):
    from device.settings.schema import MqttConfig

    for path in ("/dev/zero", str(tmp_path)):
        with pytest.raises(ConfigError, match="mqtt.password_file"):
            resolve_mqtt_password(MqttConfig(username="u", password_file=path))
    big = write(tmp_path / "big", "x" * 10_000)
    with pytest.raises(ConfigError, match="larger than"):
        resolve_mqtt_password(MqttConfig(username="u", password_file=str(big)))


def test_check_targets_false_reads_the_files_only(tmp_path):
    cfg = daemon_config(tmp_path)
    write(calibration_paths(cfg)[0], CALIBRATION)
    loaded = load_daemon_config(cfg, check_targets=False)
    assert loaded.config.model.threshold == 3.1 and loaded.warnings == ()  # calibration laid over


# --- Hypothesis: mutated configs through the one loader --------------------------------------

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x1F), max_size=5),  # control characters
    st.just("x" * 20_000),  # long, yet cheap to parse; files past MAX_YAML_BYTES have their own test
    st.sampled_from(["/dev/zero", "/", ".", "", "~", "${HOME}", "2024-13-45", "0x1F", "1e999", ".nan", "yes"]),
)
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
keys = st.one_of(st.sampled_from(sorted({k for s in VALID.values() for k in s} | set(VALID))), st.text(max_size=12))


DAMAGES = ("none", "none", "insert", "truncate", "prepend", "deep", "laughs", "replace")


@st.composite
def mutated_document(draw, damages=DAMAGES) -> bytes:
    """A valid config changed at a few places (keys, types, values), dumped, then maybe damaged as bytes.

    Args:
        damages: what may be done to the bytes after dumping, drawn from DAMAGES.
    """
    data = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.one_of(st.sampled_from(sorted(data)), keys))
        action = draw(st.sampled_from(["set", "set", "delete", "replace-section"]))
        if action == "replace-section":
            data[section] = draw(values)
        elif isinstance(data.get(section), dict):
            key = draw(keys)
            if action == "delete":
                data[section].pop(key, None)
            else:
                data[section][key] = draw(values)
        else:
            data[section] = draw(values)
    text = yaml.safe_dump(data, allow_unicode=draw(st.booleans()), width=10**9)
    raw = text.encode("utf-8", errors="surrogatepass")  # lone surrogates: invalid UTF-8
    damage = draw(st.sampled_from(damages))
    position = draw(st.integers(0, len(raw)))
    if damage == "insert":
        snippet = draw(
            st.one_of(
                st.binary(max_size=8),
                st.sampled_from(
                    [
                        b"\x00",
                        b"\xff\xfe",
                        b"\xef\xbb\xbf",
                        b"&a ",
                        b"*a",
                        b"<<: *a\n",
                        b"&a [*a]",
                        b"\t",
                        b"!!python/object:os.system ",
                        b"!!binary ",
                        b"? [a]\n: b\n",
                        b"---\n",
                        b"%YAML 1.1\n",
                        b"{",
                        b"[",
                        b"'",
                        b'"',
                        b"|\n",
                        b"\n  - ",
                        b"*a" * 200,
                        b"9" * 5000,
                        b"2024-13-45",
                        b"0o" + b"7" * 5000,
                    ]
                ),
            )
        )
        raw = raw[:position] + snippet + raw[position:]
    elif damage == "truncate":
        raw = raw[:position]
    elif damage == "prepend":
        raw = draw(st.binary(min_size=1, max_size=16)) + raw
    elif damage == "deep":
        depth = draw(st.integers(MAX_YAML_DEPTH - 3, 6000))
        opener, closer = draw(st.sampled_from([("[", "]"), ("{a: ", "}")]))
        raw += f"\nextra: {opener * depth}1{closer * depth}\n".encode()
    elif damage == "laughs":
        raw = billion_laughs(draw(st.integers(2, 12)), draw(st.integers(2, 12))).encode() + raw[raw.find(b"\n") + 1 :]
    elif damage == "replace" and raw:
        index = min(position, len(raw) - 1)
        raw = raw[:index] + bytes([draw(st.integers(0, 255))]) + raw[index + 1 :]
    return raw


def _check_loader(raw_config: bytes, raw_calibration: bytes | None) -> None:
    with tempfile.TemporaryDirectory() as folder:
        cfg = write(Path(folder) / "acmon.yaml", raw_config)
        # Only the test's private state directory from the environment: no password variables.
        environ = {"XDG_STATE_HOME": os.environ["XDG_STATE_HOME"]}
        try:
            current, _ = calibration_paths(cfg, environ)  # the config names the device: it may be damaged
        except AcmonError as exc:
            one_line_per_problem(str(exc), cfg)
            current = None
        if raw_calibration is not None and current is not None:
            write(current, raw_calibration)
        for check_targets in (False, True):
            try:
                loaded = load_daemon_config(cfg, check_targets=check_targets, environ=environ)
            except AcmonError as exc:  # ConfigError, ModelError: the user's input, reported
                one_line_per_problem(str(exc), cfg, current)
            else:
                # The full check passes only when the model the config names exists (the default,
                # models/demo/, does after `make demo`, relative to the working directory).
                assert check_targets is False or Path(loaded.config.model.path).exists()
                assert loaded.config.device.id


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated_document())
def test_mutated_configs_give_a_config_or_one_line_per_problem(raw):
    _check_loader(raw, None)


calibration_documents = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda v: yaml.safe_dump({"model": {"threshold": v}}).encode(errors="surrogatepass"), values),
    st.builds(lambda k, v: yaml.safe_dump({k: v}).encode(errors="surrogatepass"), keys, values),
    st.integers(2, 12).map(lambda n: billion_laughs(n, n).encode()),
    st.just(CALIBRATION.encode()),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calibration_documents, calibration_documents)
def test_mutated_calibration_files_and_rollback_give_one_line(current_raw, previous_raw):
    with tempfile.TemporaryDirectory() as folder:
        cfg = write(Path(folder) / "acmon.yaml", "model: {threshold: 2.0}\n")
        current, previous = calibration_paths(cfg)
        write(current, current_raw)
        write(previous, previous_raw)
        for step in (load_site_config, rollback_calibration, load_site_config):
            try:
                step(cfg)
            except AcmonError as exc:
                one_line_per_problem(str(exc), cfg, current, previous)
        assert stat.S_ISREG(os.stat(current).st_mode)  # whatever happened, calibration.yaml is whole

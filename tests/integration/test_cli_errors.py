"""Bad input never produces a traceback: one line naming the file or key, and a non-zero exit."""

from __future__ import annotations

import pytest

from tests.helpers import make_ca, run_cli, write_config


def assert_one_line_error(out, *needles: str) -> None:
    assert out.returncode != 0, out
    assert "Traceback" not in out.stderr, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def test_missing_model_file(tmp_path):
    wav = tmp_path / "x.wav"
    out = run_cli("device", "score", "--model", str(tmp_path / "nope.tflite"), str(wav))
    assert_one_line_error(out, "nope.tflite", "no such model file")


def test_not_a_tflite_model(tmp_path):
    fake = tmp_path / "model.tflite"
    fake.write_text("this is not a model\n")
    out = run_cli("device", "score", "--model", str(fake), str(tmp_path))
    assert_one_line_error(out, "model.tflite", "not a TFLite model")


def test_model_folder_without_model(tmp_path):
    out = run_cli("firmware_tools", "inspect", str(tmp_path))
    assert_one_line_error(out, "model.tflite", "no such model file")


def test_config_error_names_key_and_line(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("device:\n  id: pump\nmqtt:\n  prot: 1883\n")
    out = run_cli("device", "run", "--config", str(cfg), "--check-config")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "bad.yaml:4: mqtt.prot: unknown key; did you mean 'port'?" in out.stderr


def test_missing_config_file(tmp_path):
    out = run_cli("device", "run", "--config", str(tmp_path / "none.yaml"))
    assert_one_line_error(out, "none.yaml")


def test_bad_broker_argument(trained_model, tmp_path):
    out = run_cli("device", "replay", "--model", str(trained_model), "--broker", "localhost:notaport", str(tmp_path))
    assert_one_line_error(out, "--broker", "HOST:PORT")


@pytest.mark.slow
@pytest.mark.parametrize(
    "content,needle",
    [(b"", "empty"), (b"ID3\x03\x00\x00\x00 mp3 data", "not a WAV"), (b"hello world, not audio at all\n", "not a WAV")],
    ids=["empty", "mp3", "text"],
)
def test_bad_wav_files(trained_model, tmp_path, content, needle):
    bad = tmp_path / "recording.wav"
    bad.write_bytes(content)
    for cmd in ("score", "replay"):
        out = run_cli("device", cmd, "--model", str(trained_model), str(bad))
        assert_one_line_error(out, "recording.wav", needle)


@pytest.mark.slow
def test_missing_wav_and_empty_folder(trained_model, tmp_path):
    out = run_cli("device", "score", "--model", str(trained_model), str(tmp_path / "gone.wav"))
    assert_one_line_error(out, "gone.wav", "no such file")
    out = run_cli("device", "score", "--model", str(trained_model), str(tmp_path))
    assert_one_line_error(out, str(tmp_path), "no .wav files")


def test_training_bad_data_folder(tmp_path):
    out = run_cli("training", "fit", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "m"))
    assert_one_line_error(out, "nothing", "no such file or folder")


def test_help_lists_commands():
    for package, commands in (
        ("device", ["run", "replay", "score", "check-config", "list-devices"]),
        ("training", ["synth", "fit"]),
        ("firmware_tools", ["inspect", "verify"]),
    ):
        out = run_cli(package, "--help")
        assert out.returncode == 0
        for command in commands:
            assert command in out.stdout


# --- Bad config (issue 11): check-config, run --check-config and run load alike -------------------


def same_verdict(cfg, *run_args: str):
    """check-config and run --check-config on `cfg`: the same exit code and output; returns it."""
    check = run_cli("device", "check-config", str(cfg))
    run_check = run_cli("device", "run", "--config", str(cfg), "--check-config", *run_args)
    assert (check.returncode, check.stdout, check.stderr) == (run_check.returncode, run_check.stdout, run_check.stderr)
    return check


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory):
    """A self-signed CA certificate (PEM), made with the openssl CLI."""
    return make_ca(tmp_path_factory.mktemp("ca"))


def secure_mqtt(tmp_path, ca_file, **overrides) -> dict:
    password = tmp_path / "mqtt-password"
    password.write_text("s3cret\n")
    password.chmod(0o600)
    return {
        "host": "broker.plant-a.example",
        "port": 8883,
        "username": "pump-01",
        "password_file": str(password),
        "tls": {"ca_file": str(ca_file)},
        **overrides,
    }


def test_check_config_ok_for_a_complete_config(trained_model, ca_file, tmp_path):
    out = same_verdict(write_config(tmp_path, trained_model, secure_mqtt(tmp_path, ca_file)))
    assert out.returncode == 0 and out.stdout.strip().endswith("acmon.yaml: OK"), out
    assert "warning" not in out.stderr


def test_example_config_is_checked_against_its_files():
    """configs/device.yaml is valid YAML for the schema, but names files that exist on a configured Pi only."""
    out = same_verdict("configs/device.yaml")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[0].startswith("error: configs/device.yaml: model.path: /opt/acmon/models/pump/model.tflite: no such")
    assert lines[1:] == [
        "configs/device.yaml: mqtt.tls.ca_file: /etc/acmon/ca.crt: no such file",
        "configs/device.yaml: mqtt.password_file: /etc/acmon/mqtt-password: no such file",
    ]


@pytest.mark.parametrize(
    "case",
    ["billion-laughs", "deep-nesting"],
)
def test_hostile_yaml_same_one_line_verdict(tmp_path, case):
    if case == "billion-laughs":
        text = (
            "a: &a [x, x, x, x, x, x, x, x, x]\n"
            + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8))
            + "device: *i\n"
        )
        needle = "values"
    else:
        text = "device: " + "[" * 5000 + "]" * 5000 + "\n"
        needle = "nested deeper"
    cfg = tmp_path / "acmon.yaml"
    cfg.write_text(text)
    assert_one_line_error(same_verdict(cfg), "acmon.yaml:", needle)


@pytest.mark.parametrize(
    "case", ["missing-model", "garbage-model", "dev-zero-model", "off-threshold-above", "capture-rate-unresamplable"]
)
def test_model_problems_same_one_line_verdict(trained_model, tmp_path, case):
    model, extra, needle = trained_model, {}, ""
    if case == "missing-model":
        model, needle = tmp_path / "gone" / "model.tflite", "no such model file"
    elif case == "garbage-model":
        model, needle = tmp_path / "model.tflite", "not a TFLite model"
        model.write_bytes(b"garbage\n" * 100)
    elif case == "dev-zero-model":
        model, needle = "/dev/zero", "not a regular file"
    elif case == "capture-rate-unresamplable":  # 44101 Hz to 16 kHz: a filter of millions of taps
        extra, needle = {"audio": {"capture_rate_hz": 44101}}, "audio.capture_rate_hz: cannot resample 44101 Hz"
    else:
        extra, needle = (
            {"model": {"path": str(trained_model), "threshold": 2.0}, "detector": {"off_threshold": 3.0}},
            "off_threshold",
        )
    cfg = write_config(tmp_path, model, **extra)
    out = same_verdict(cfg)
    assert_one_line_error(out, "acmon.yaml", needle)
    # run itself refuses the same way, before opening any audio source or broker
    run = run_cli("device", "run", "--config", str(cfg), timeout=60)
    assert_one_line_error(run, "acmon.yaml", needle)


@pytest.mark.parametrize("case", ["missing-ca-file", "missing-password-file"])
def test_mqtt_file_problems_same_one_line_verdict(trained_model, ca_file, tmp_path, case):
    if case == "missing-ca-file":
        mqtt, needle = (
            secure_mqtt(tmp_path, ca_file, tls={"ca_file": str(tmp_path / "gone-ca.crt")}),
            "mqtt.tls.ca_file",
        )
    else:
        mqtt, needle = (
            secure_mqtt(tmp_path, ca_file, password_file=str(tmp_path / "gone-password")),
            "mqtt.password_file",
        )
    out = same_verdict(write_config(tmp_path, trained_model, mqtt))
    assert_one_line_error(out, "acmon.yaml", needle, "no such file")


def test_check_config_lays_calibration_over(trained_model, tmp_path):
    """Only `run --check-config` used to read calibration.yaml: a threshold below off_threshold passed check-config."""
    cfg = write_config(tmp_path, trained_model, detector={"off_threshold": 1.0})
    assert same_verdict(cfg).returncode == 0
    (tmp_path / "calibration.yaml").write_text("model:\n  threshold: 0.5\n")
    assert_one_line_error(same_verdict(cfg), "off_threshold")
    (tmp_path / "calibration.yaml").write_bytes(b"\xff\xfe\x00broken")
    assert_one_line_error(same_verdict(cfg), "calibration.yaml", "not UTF-8", "--rollback")


def test_rollback_to_a_corrupt_previous_calibration_is_one_line(trained_model, tmp_path):
    from device.daemon.site_config import calibration_paths

    cfg = write_config(tmp_path, trained_model)
    current, previous = calibration_paths(cfg)  # in the test's own state directory, as the CLI sees it
    current.parent.mkdir(parents=True, exist_ok=True)
    current.write_text("model:\n  threshold: 3.0\n")
    previous.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    out = run_cli("device", "calibrate", "--config", str(cfg), "--rollback")
    assert_one_line_error(out, "calibration.prev.yaml", "not UTF-8", "nothing was changed")
    assert current.read_text() == "model:\n  threshold: 3.0\n"


def test_permission_warnings(trained_model, ca_file, tmp_path):
    mqtt = secure_mqtt(tmp_path, ca_file, tls=None, port=1883)
    (tmp_path / "mqtt-password").chmod(0o644)
    cfg = write_config(tmp_path, trained_model, mqtt)
    out = same_verdict(cfg)
    assert out.returncode == 0 and "OK (2 warnings)" in out.stdout, out
    assert "Traceback" not in out.stderr
    warnings = [line for line in out.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2, out.stderr
    assert (
        "mqtt.password_file" in warnings[0] and "readable by every user" in warnings[0] and "chmod 600" in warnings[0]
    )
    assert "without TLS" in warnings[1] and "broker.plant-a.example" in warnings[1] and "s3cret" not in out.stderr
    # The daemon logs them at start: here on two bytes of stdin, shorter than a window, then it stops.
    cfg = write_config(tmp_path, trained_model, mqtt, audio={"source": "stdin"}, evidence={"enabled": False})
    run = run_cli("device", "run", "--config", str(cfg), stdin=b"\x00\x00", timeout=60)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    logged = [line for line in run.stderr.splitlines() if line.startswith("WARNING device: ")]
    assert [line.split("WARNING device: ", 1)[1] for line in logged] == [w.split("warning: ", 1)[1] for w in warnings]
    (tmp_path / "mqtt-password").chmod(0o600)
    mqtt["host"] = "127.0.0.1"  # the password stays on this machine: no TLS warning
    out = same_verdict(write_config(tmp_path, trained_model, mqtt))
    assert out.returncode == 0 and "warning" not in out.stderr, out

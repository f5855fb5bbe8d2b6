"""Bad input never produces a traceback: one line naming the file or key, and a non-zero exit."""

from __future__ import annotations

import pytest

from tests.helpers import run_cli


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


def test_check_config_ok():
    out = run_cli("device", "check-config", "configs/device.yaml")
    assert out.returncode == 0 and "OK" in out.stdout


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

"""mic-check records a real PulseAudio null sink's monitor while paplay plays a tone of known level into the sink."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from device.audio.audio_io import write_wav
from tests.helpers import REPO

pytestmark = [pytest.mark.audio]

RATE = 16000


def _mic_check(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "firmware_tools", "mic-check", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _tone(path: Path, amplitude: float, seconds: float = 8.0) -> Path:
    t = np.arange(int(seconds * RATE)) / RATE
    write_wav(path, np.clip(amplitude * np.sin(2 * np.pi * 440 * t), -1.0, 1.0), RATE)
    return path


def _while_playing(wav: Path, pulse_env: dict, *args: str) -> subprocess.CompletedProcess:
    """mic-check while paplay plays the wav into the null sink (the wav outlasts the recording)."""
    player = subprocess.Popen(["paplay", "--device=acmon_test", str(wav)], env={**os.environ, **pulse_env})
    try:
        time.sleep(0.3)  # paplay connected and streaming before the recording starts
        return _mic_check(*args, env=pulse_env)
    finally:
        player.terminate()
        player.wait(10)


def test_a_tone_of_known_level_is_measured(pulse_sink, tmp_path):
    amplitude = 0.1  # RMS -23.0 dBFS, peak -20.0 dBFS
    out = _while_playing(_tone(tmp_path / "tone.wav", amplitude), pulse_sink, "--device", "pulse", "--seconds", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = dict(line.split(None, 1) for line in out.stdout.splitlines() if line and not line.startswith(" "))
    assert lines["verdict"].startswith("OK:"), out.stdout
    level = float(lines["level"].split()[0])
    # int16 through PulseAudio at 100 % volume: the level comes back within a tenth of a dB (measured: exact).
    assert level == pytest.approx(20 * math.log10(amplitude / math.sqrt(2)), abs=0.3), out.stdout
    assert "* " in out.stdout and "'pulse'" in out.stdout  # the device list marks the one recorded


def test_silence_and_clipping_exit_3_with_what_to_do(pulse_sink, tmp_path):
    out = _mic_check("--seconds", "1", "--json", env=pulse_sink)  # nothing plays: the monitor is all zeros
    assert out.returncode == 3, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["verdict"] == "silent" and report["level_dbfs"] is None and "microphone_dead" in report["faults"]

    out = _while_playing(_tone(tmp_path / "loud.wav", 2.0), pulse_sink, "--seconds", "1", "--json")
    assert out.returncode == 3, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["verdict"] == "clipping" and report["clipping_ratio"] > 0.5, report
    assert "lower the capture gain" in report["advice"]


def test_the_config_names_the_device_and_the_thresholds(pulse_sink, tmp_path):
    cfg = tmp_path / "acmon.yaml"
    cfg.write_text("audio: {input_device: nosuchmic}\n")
    out = _mic_check("--config", str(cfg), "--seconds", "1", env=pulse_sink)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith(f"error: audio.input_device 'nosuchmic' in {cfg}: ")
    cfg.write_text("audio: {input_device: pulse}\ndetector: {min_rms_dbfs: -30}\n")
    out = _while_playing(_tone(tmp_path / "tone.wav", 0.1), pulse_sink, "--config", str(cfg), "--seconds", "1")
    assert out.returncode == 3 and "verdict    too quiet: -23.0 dBFS" in out.stdout, out.stdout  # gate -30 + 10 dB


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--device", "nosuchmic"],
            "error: --device 'nosuchmic': No input device matching 'nosuchmic'; input devices: ",
        ),
        (["--device", "999"], "error: --device 999: Error querying device 999; input devices: "),
        (["--device", " "], "error: --device '': give part of a device name or its index"),
        (["--device", "x" * 5000], "error: --device 'xxxxxxxx"),
        (["--seconds", "0"], "error: --seconds 0.0: record between 0.5 and 60 seconds"),
        (["--seconds", "1e9"], "error: --seconds 1000000000.0: record between 0.5 and 60 seconds"),
        (["--seconds", "nan"], "error: --seconds nan: record between 0.5 and 60 seconds"),
        (["--rate", "0"], "error: --rate 0: give a sample rate between 1000 and 384000 Hz"),
        (["--rate", "1000000000"], "error: --rate 1000000000: give a sample rate between 1000 and 384000 Hz"),
    ],
)
def test_hostile_arguments_are_one_line(pulse_sink, args, message):
    out = _mic_check(*args, env=pulse_sink)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 1 and len(errors) == 1 and errors[0].startswith(message), out.stderr
    assert len(errors[0]) < 600 and "Traceback" not in out.stderr


def test_no_input_device_at_all_is_one_line(tmp_path):
    # No PulseAudio server and no sound card: PortAudio lists no input (as in a chroot or a container).
    if Path("/dev/snd").exists():
        pytest.skip("this machine has a sound card, so PortAudio lists its inputs")
    env = {"PULSE_SERVER": f"unix:{tmp_path}/none", "XDG_RUNTIME_DIR": str(tmp_path)}
    out = _mic_check("--seconds", "1", env=env)
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: no audio input device: PortAudio lists none")

"""Microphone loss and return with a real PulseAudio server: killed under the running daemon, then restarted."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, require, stop_daemon

pytestmark = [pytest.mark.audio, pytest.mark.slow]


class PulseServer:
    """A private PulseAudio server with a null sink whose monitor is the default source; killable and restartable."""

    def __init__(self, runtime: Path):
        self.runtime = runtime
        self.socket = runtime / "native"
        self.env = {
            **os.environ,
            "XDG_RUNTIME_DIR": str(runtime),
            "PULSE_SERVER": f"unix:{self.socket}",
            "HOME": str(runtime),
        }
        self.proc: subprocess.Popen | None = None

    def start(self) -> PulseServer:
        self.proc = subprocess.Popen(
            [
                "pulseaudio",
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--disallow-exit",
                "-n",
                "--load=module-null-sink sink_name=acmon_recover rate=16000 channels=1",
                f"--load=module-native-protocol-unix auth-anonymous=1 socket={self.socket}",
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while subprocess.run(["pactl", "info"], env=self.env, capture_output=True).returncode != 0:
            assert self.proc.poll() is None and time.monotonic() < deadline, "pulseaudio did not start"
            time.sleep(0.1)
        subprocess.run(["pactl", "set-default-source", "acmon_recover.monitor"], env=self.env, check=True)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


def _wait_for_log(log: Path, text: str, timeout: float, after: int = 0) -> int:
    """Position of `text` in the log after offset `after`, waiting up to timeout; -1 if it never came."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = log.read_text(errors="replace").find(text, after)
        if found >= 0:
            return found
        time.sleep(0.2)
    return -1


def test_daemon_survives_pulseaudio_dying_and_coming_back(trained_model, tmp_path):
    require(
        shutil.which("pulseaudio") is not None and shutil.which("pactl") is not None,
        "pulseaudio not installed (apt-get install pulseaudio pulseaudio-utils)",
    )
    (tmp_path / "pulse").mkdir()
    pulse = PulseServer(tmp_path / "pulse").start()
    cfg = tmp_path / "device.yaml"
    cfg.write_text(
        f"model: {{path: {trained_model}}}\n"
        "audio: {source: microphone, input_device: pulse}\n"
        "mqtt: {enabled: false}\n"
        f"evidence: {{directory: {tmp_path / 'evidence'}}}\n"
        "health: {reopen_min_seconds: 0.5, reopen_max_seconds: 2}\n"
    )
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "device", "run", "--config", str(cfg)],
            cwd=REPO,
            env=pulse.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        assert _wait_for_log(log, "capturing from microphone:pulse", 60) >= 0, log.read_text()
        pulse.kill()
        lost = _wait_for_log(log, "fault stream_error", 30)
        assert lost >= 0, log.read_text()
        first = _wait_for_log(log, "reopening in", 10, lost)
        assert first >= 0, log.read_text()
        # With the server still down, the reopen fails too and the wait grows (backoff).
        assert _wait_for_log(log, "reopening in 1.0 s", 15, first) >= 0, log.read_text()
        pulse.start()
        assert _wait_for_log(log, "fault stream_error cleared", 30, lost) >= 0, log.read_text()
        assert proc.poll() is None
    finally:
        rc = stop_daemon(proc)
        pulse.kill()
    assert rc == 0, log.read_text()

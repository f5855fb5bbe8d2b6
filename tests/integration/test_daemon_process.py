"""The daemon as a process: systemd notify over a real socket, SIGHUP with a bad config, and `calibrate`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from device.audio.audio_io import read_wav, write_wav
from device.daemon.site_config import calibration_paths
from tests.helpers import REPO, run_cli, stop_daemon

pytestmark = [pytest.mark.slow]


def _normal(demo_data: Path, index: int = 0) -> Path:
    return sorted((demo_data / "pump" / "test").glob("normal_id_00_*.wav"))[index]


@pytest.fixture(scope="module")
def more_normal(site_clips) -> list[Path]:
    """24 normal 6 s clips of the demo pump the model has not seen: calibration needs at least 1.8 minutes."""
    return site_clips["normal"]


class NotifySocket:
    """A unix datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.received: list[str] = []

    def wait_for(self, message: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                return False
            self.received.append(data)
            if message in data.split("\n"):
                return True
        return False

    def close(self) -> None:
        self.sock.close()


def _wait_for_log(log: Path, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return True
        time.sleep(0.1)
    return False


def test_sighup_with_bad_config_keeps_the_running_daemon(trained_model, demo_data, tmp_path):
    cfg = tmp_path / "device.yaml"
    wavs = [str(_normal(demo_data))] * 40  # 4 minutes at real time: the test stops it long before
    good = yaml.safe_dump(
        {
            "model": {"path": str(trained_model)},
            "audio": {"source": "wav", "wav_paths": wavs, "realtime": True},
            "mqtt": {"enabled": False},
            "evidence": {"directory": str(tmp_path / "evidence")},
        }
    )
    cfg.write_text(good)
    notify = NotifySocket(tmp_path / "notify.sock")
    log_path = tmp_path / "daemon.log"
    env = {**os.environ, "NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "1000000"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "device", "run", "--config", str(cfg)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        assert notify.wait_for("READY=1", timeout=60), log_path.read_text()
        assert notify.wait_for("WATCHDOG=1", timeout=10), notify.received
        cfg.write_text(good + "detector: {patience_windows: 0}\n")
        proc.send_signal(signal.SIGHUP)
        assert _wait_for_log(log_path, "reload (SIGHUP) failed, keeping the running config and model", 20), (
            log_path.read_text()
        )
        assert "detector.patience_windows" in log_path.read_text()
        # Still analysing: the watchdog keeps coming after the failed reload.
        notify.received.clear()
        assert notify.wait_for("WATCHDOG=1", timeout=10), log_path.read_text()
        assert proc.poll() is None
        cfg.write_text(good.replace(f"path: {trained_model}", f"path: {trained_model}\n  threshold: 3.0"))
        proc.send_signal(signal.SIGHUP)
        assert _wait_for_log(log_path, "threshold 3", 20), log_path.read_text()
    finally:
        rc = stop_daemon(proc)
    assert rc == 0, log_path.read_text()
    assert notify.wait_for("STOPPING=1", timeout=5), notify.received
    notify.close()


def test_calibrate_sets_the_level_gate_for_a_quiet_room_and_rolls_back(trained_model, demo_data, more_normal, tmp_path):
    """The field problem: room noise at -70 dBFS with the machine off scores far above the threshold."""
    rate = 16000
    machine = [
        np.concatenate([read_wav(clip)[0][:, 0] for clip in half]) for half in (more_normal[:12], more_normal[12:])
    ]
    noise = np.random.default_rng(0).standard_normal(12 * rate)
    room = (noise * 10 ** (-70 / 20) / noise.std()).astype(np.float32)
    site = tmp_path / "site.wav"
    write_wav(site, np.concatenate([machine[0], room, machine[1]]), rate)  # 2.6 minutes
    quiet = tmp_path / "quiet.wav"
    write_wav(quiet, room, rate)
    cfg = tmp_path / "device.yaml"
    cfg.write_text(f"model: {{path: {trained_model}}}\nmqtt: {{enabled: false}}\n")

    before = json.loads(
        run_cli("device", "score", "--model", str(trained_model), "--config", str(cfg), str(quiet)).stdout
    )
    assert before["anomaly"], "room noise should alarm before calibration (the field problem)"

    out = run_cli("device", "calibrate", "--config", str(cfg), "--source", "file", "--minutes", "2.5", str(site))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["gate"].startswith("set") and -70 < result["min_rms_dbfs"] < -33
    current, _ = calibration_paths(cfg)
    assert result["file"] == str(current) and not (tmp_path / "calibration.yaml").exists()
    written = yaml.safe_load(current.read_text())
    assert written["detector"]["min_rms_dbfs"] == result["min_rms_dbfs"]

    after = json.loads(
        run_cli("device", "score", "--model", str(trained_model), "--config", str(cfg), str(quiet)).stdout
    )
    assert not after["anomaly"] and after["score"] is None  # gated: not scored at all
    normal = json.loads(
        run_cli(
            "device", "score", "--model", str(trained_model), "--config", str(cfg), str(_normal(demo_data, 3))
        ).stdout
    )
    assert not normal["anomaly"] and normal["score"] is not None

    out = run_cli("device", "calibrate", "--config", str(cfg), "--rollback")
    assert out.returncode == 1 and out.stderr.strip().startswith("error: ") and "calibration.prev.yaml" in out.stderr
    out = run_cli(
        "device", "calibrate", "--config", str(cfg), "--source", "file", "--minutes", "0.2", str(_normal(demo_data))
    )
    assert out.returncode == 1 and out.stderr.strip().splitlines()[-1].startswith("error: calibrate: ")
    assert "at least 200 analysis windows" in out.stderr
    out = run_cli(
        "device", "calibrate", "--config", str(cfg), "--source", "file", "--minutes", "2", *map(str, more_normal)
    )
    assert out.returncode == 0, out.stderr
    assert run_cli("device", "calibrate", "--config", str(cfg), "--rollback").returncode == 0
    restored = yaml.safe_load(current.read_text())
    assert restored["detector"]["min_rms_dbfs"] == result["min_rms_dbfs"]


def test_calibrate_errors_are_one_line(trained_model, demo_data, tmp_path):
    cfg = tmp_path / "device.yaml"
    cfg.write_text(f"model: {{path: {trained_model}}}\nmqtt: {{enabled: false}}\n")
    out = run_cli("device", "calibrate", "--config", str(cfg), "--source", "file")
    assert out.returncode == 1 and out.stderr.strip().splitlines()[-1].startswith("error: calibrate --source file")
    (tmp_path / "calibration.yaml").write_text("mqtt: {host: elsewhere}\n")
    out = run_cli("device", "replay", "--config", str(cfg), str(_normal(demo_data)))
    last = out.stderr.strip().splitlines()[-1]
    assert out.returncode == 1 and last.startswith("error: ") and "calibration.yaml" in last and "--rollback" in last

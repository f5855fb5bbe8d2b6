"""The Prometheus endpoint of a running daemon, scraped over HTTP as Prometheus does, beside a real mosquitto."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import REPO, free_port, stop_daemon, write_config

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def _scrape(port: int) -> dict[str, list]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def _config(tmp_path, model, wav, port, mqtt) -> str:
    return str(
        write_config(
            tmp_path,
            model,
            mqtt,
            device={"id": "pump-4", "site": "lab"},
            audio={"source": "wav", "wav_paths": [str(wav)] * 30, "realtime": True},
            health={"telemetry_seconds": 1},
            evidence={"enabled": False},
            metrics={"enabled": True, "port": port},
        )
    )


def test_metrics_follow_the_running_daemon(broker, unique_prefix, trained_model, demo_data, tmp_path):
    normal = sorted((demo_data / "pump" / "test").glob("normal_id_00_*.wav"))[0]
    port = free_port()
    mqtt = {"host": broker.host, "port": broker.port, "topic_prefix": unique_prefix}
    log_path = tmp_path / "daemon.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "device", "run", "--config", _config(tmp_path, trained_model, normal, port, mqtt)],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        metrics: dict = {}
        while time.monotonic() < deadline:
            try:
                metrics = _scrape(port)
            except OSError:
                metrics = {}
            # present is not enough: a counter exists at 0 before the first window
            if metrics.get("acmon_level_dbfs") and all(
                metrics.get(name) and metrics[name][0].value >= 1 for name in ("acmon_windows", "acmon_windows_scored")
            ):
                break
            time.sleep(0.5)
        assert metrics.get("acmon_level_dbfs"), log_path.read_text()
        labels = {"site": "lab", "device": "pump-4"}
        windows = metrics["acmon_windows"][0]
        assert windows.name == "acmon_windows_total" and windows.labels == labels and windows.value >= 1
        assert -60 < metrics["acmon_level_dbfs"][0].value < 0
        states = {s.labels["state"]: s.value for s in metrics["acmon_state"]}
        assert states == {"ok": 1.0, "anomaly": 0.0, "fault": 0.0, "muted": 0.0}
        assert metrics["acmon_health_fault"] == []
        assert metrics["acmon_threshold"][0].value > 0 and metrics["acmon_mqtt_connected"][0].value == 1.0
        info = metrics["acmon_model_info"][0]
        assert info.name == "acmon_model_info" and info.labels["name"] and info.labels["version"]
        later = _scrape(port)
        assert later["acmon_windows"][0].value >= windows.value  # a counter
    finally:
        assert stop_daemon(proc) == 0, log_path.read_text()[-2000:]
    with pytest.raises(OSError):  # closed with the daemon
        _scrape(port)


def test_a_port_in_use_is_one_line_at_start(trained_model, demo_data, tmp_path):
    normal = sorted((demo_data / "pump" / "test").glob("normal_id_00_*.wav"))[0]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "device",
                "run",
                "--config",
                _config(tmp_path, trained_model, normal, port, {"enabled": False}),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0] and "metrics.port" in errors[0], out.stderr

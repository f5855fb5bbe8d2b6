"""The real daemon (`python -m device replay`) and MQTT: Last Will on SIGKILL, spool delivered after a restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, demo_wav, run_cli, write_config
from tests.mqtt_support import own_broker, validate_messages

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def _config(tmp_path: Path, model: Path, port: int, prefix: str) -> Path:
    mqtt = {
        "host": "127.0.0.1",
        "port": port,
        "topic_prefix": prefix,
        "spool_dir": str(tmp_path / "spool"),
        "reconnect_min_seconds": 0.2,
        "reconnect_max_seconds": 1,
    }
    return write_config(tmp_path, model, mqtt, device={"site": "plant-a"})


def test_last_will_offline_when_the_daemon_is_killed(
    broker, subscribe, unique_prefix, trained_model, demo_data, tmp_path
):
    status = f"{unique_prefix}/plant-a/pump-7/status"
    sub = subscribe(broker.host, broker.port, f"{unique_prefix}/#")
    cfg = _config(tmp_path, trained_model, broker.port, unique_prefix)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "device",
            "replay",
            "--realtime",
            "--config",
            str(cfg),
            str(demo_wav(demo_data, "anomaly")),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert sub.wait_for(lambda s: (status, b"online", False) in s.messages, 60), proc.stderr
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert sub.wait_for(lambda s: s.messages[-1][:2] == (status, b"offline"), 30), sub.messages[-3:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    validate_messages(sub.messages)
    # The Will is retained: a dashboard connecting later still sees the device as offline.
    late = subscribe(broker.host, broker.port, status)
    assert late.wait_for(lambda s: s.messages == [(status, b"offline", True)], 10), late.messages


def test_events_spooled_while_the_broker_is_down_are_delivered_after_a_daemon_restart(
    mosquitto_bin, subscribe, unique_prefix, trained_model, demo_data, tmp_path
):
    broker = own_broker(tmp_path)  # not started yet: the first run finds no broker
    cfg = _config(tmp_path, trained_model, broker.port, unique_prefix)
    first = run_cli(
        "device", "replay", "--config", str(cfg), "--flush-seconds", "0.5", str(demo_wav(demo_data, "anomaly"))
    )
    assert first.returncode == 3, first.stderr  # 3 = events left undelivered
    spooled = sorted((tmp_path / "spool").rglob("*.msg"))
    assert len(spooled) == 2
    broker.start()
    try:
        sub = subscribe(broker.host, broker.port, f"{unique_prefix}/#")
        second = run_cli("device", "replay", "--config", str(cfg), str(demo_wav(demo_data, "normal")))
        assert second.returncode == 0, second.stderr
        assert sub.wait_for(lambda s: len(s.json_on("/events")) >= 2, 20), sub.messages
    finally:
        broker.stop()
    events = sub.json_on("/events")
    assert [(e["state"], e["seq"]) for e in events] == [("start", 0), ("end", 1)]
    assert events[0]["event_id"] == events[1]["event_id"]
    assert validate_messages(sub.messages) >= 2
    assert not list((tmp_path / "spool").rglob("*.msg"))

"""`python -m device monitor --once` against real messages on a real broker."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from device.mqtt.payloads import utc_now_iso
from tests.helpers import REPO, free_port, run_cli
from tests.mqtt_support import make_test_publisher, sample_event, sample_state, sample_telemetry

pytestmark = pytest.mark.broker


def test_monitor_once_shows_every_device(broker, unique_prefix, tmp_path):
    publishers = [
        make_test_publisher(broker.port, f"{unique_prefix}/plant-a/pump-7", tmp_path / "spool"),
        make_test_publisher(broker.port, f"{unique_prefix}/plant-b/fan-2", tmp_path / "spool"),
    ]
    for pub in publishers:
        pub.start()
    try:
        pump, fan = publishers
        pump.publish_state(sample_state("anomaly", 3.25))
        pump.publish_event(sample_event(0))
        fan.publish_state({**sample_state("ok", 0.125), "device_id": "fan-2", "site": "plant-b", "time": utc_now_iso()})
        for pub in publishers:
            assert pub.flush(10)
        # Retained state and status are what a monitor started later sees at once; telemetry and
        # events are live, so they are repeated until the monitor exits (it drops duplicate events).
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "device",
                "monitor",
                "--broker",
                f"127.0.0.1:{broker.port}",
                "--prefix",
                unique_prefix,
                "--once",
                "3",
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        end = {**sample_event(1), "state": "end"}
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            pump.publish_telemetry(sample_telemetry())
            pump.publish_event(end)
            time.sleep(0.25)
        out, err = proc.communicate(timeout=30)
    finally:
        for pub in publishers:
            pub.stop()
    assert proc.returncode == 0, err
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("plant-")}
    assert rows["plant-a/pump-7"][1:5] == ["online", "anomaly", "2.5", "1"]  # score of the latest event
    assert rows["plant-b/fan-2"][1:4] == ["online", "ok", "0.125"]
    assert "-31.5" in rows["plant-a/pump-7"]
    assert "end" in out  # the live event is listed under recent events
    assert "\x1b[" not in out  # --once prints plain text


def test_monitor_unreachable_broker_is_one_line(tmp_path):
    out = run_cli("device", "monitor", "--broker", f"127.0.0.1:{free_port()}", "--once", "1")
    assert out.returncode == 1 and out.stderr.strip().splitlines()[-1].startswith("error: cannot reach the broker")

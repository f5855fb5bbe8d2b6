"""Live capture: the daemon records a PulseAudio null sink's monitor while paplay plays into the sink."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from tests.helpers import REPO, stop_daemon

pytestmark = [pytest.mark.audio, pytest.mark.broker, pytest.mark.slow]

EVENT_SCHEMA = __import__("json").loads((REPO / "device" / "schemas" / "event.schema.json").read_text())


def _start_daemon(tmp_path: Path, model: Path, broker, prefix: str, pulse_env: dict) -> subprocess.Popen:
    cfg = tmp_path / "live.yaml"
    cfg.write_text(
        "device: {id: live-1, site: lab}\n"
        f"model: {{path: {model}}}\n"
        "audio: {source: microphone, input_device: pulse, block_samples: 1024}\n"
        "detector: {cooldown_seconds: 0}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}, topic_prefix: {prefix}}}\n"
    )
    log = open(tmp_path / "daemon.log", "wb")
    return subprocess.Popen(
        [sys.executable, "-m", "device", "run", "--config", str(cfg)],
        cwd=REPO,
        env={**os.environ, **pulse_env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _stop(proc: subprocess.Popen, tmp_path: Path) -> str:
    rc = stop_daemon(proc)
    log = (tmp_path / "daemon.log").read_text()
    assert rc == 0, log
    return log


def _play(wav: Path, pulse_env: dict) -> None:
    subprocess.run(["paplay", "--device=acmon_test", str(wav)], env={**os.environ, **pulse_env}, check=True, timeout=60)


@pytest.mark.parametrize("label", ["anomaly", "normal"])
def test_live_microphone(label, pulse_sink, broker, subscribe, unique_prefix, trained_model, demo_data, tmp_path):
    sub = subscribe(broker.host, broker.port, f"{unique_prefix}/#")
    daemon = _start_daemon(tmp_path, trained_model, broker, unique_prefix, pulse_sink)
    try:
        assert sub.wait_for(lambda s: any(p == b"online" for _, p, _ in s.messages), timeout=30), (
            tmp_path / "daemon.log"
        ).read_text()
        wav = sorted((demo_data / "pump" / "test").glob(f"{label}_id_00_*.wav"))[0]
        _play(wav, pulse_sink)
        if label == "anomaly":
            assert sub.wait_for(lambda s: any(e["state"] == "start" for e in s.json_on("/events")), timeout=20), (
                tmp_path / "daemon.log"
            ).read_text()
        else:
            time.sleep(3)  # the last windows of the recording reach the model after it ends
    finally:
        log = _stop(daemon, tmp_path)
    events = sub.json_on("/events")
    for event in events:
        jsonschema.validate(event, EVENT_SCHEMA)
        assert event["source"] == "microphone:pulse"
    if label == "anomaly":
        assert events[0]["state"] == "start"
        # Stopping ends the open event, and the end is published before 'offline'.
        assert sub.wait_for(lambda s: any(e["state"] == "end" for e in s.json_on("/events")), timeout=10), log
    else:
        assert events == [], log
    assert sub.wait_for(
        lambda s: [p for t, p, _ in s.messages if t.endswith("/status")][-1:] == [b"offline"], timeout=10
    )

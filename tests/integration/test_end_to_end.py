"""WAV -> device pipeline -> real mosquitto -> subscriber, and alerts surviving a broker outage."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jsonschema
import pytest

from device.audio.sources import WavFileStream
from device.daemon.runner import Runner
from device.settings.config import config_from_dict
from tests.helpers import REPO, Mosquitto, demo_wav, run_cli, write_config

pytestmark = [pytest.mark.broker, pytest.mark.slow]

EVENT_SCHEMA = json.loads((REPO / "device" / "schemas" / "event.schema.json").read_text())


def _config(tmp_path: Path, model: Path, port: int, prefix: str) -> Path:
    return write_config(tmp_path, model, {"host": "127.0.0.1", "port": port, "topic_prefix": prefix})


def test_fault_replay_alert_reaches_subscriber(broker, subscribe, unique_prefix, trained_model, demo_data, tmp_path):
    sub = subscribe(broker.host, broker.port, f"{unique_prefix}/#")
    cfg = _config(tmp_path, trained_model, broker.port, unique_prefix)
    out = run_cli("device", "replay", "--config", str(cfg), str(demo_wav(demo_data, "anomaly")))
    assert out.returncode == 0, out.stderr
    events_topic = f"{unique_prefix}/testsite/pump-7/events"
    assert sub.wait_for(lambda s: len(s.json_on("/events")) >= 2, timeout=20), sub.messages
    events = sub.json_on("/events")
    for event in events:
        jsonschema.validate(event, EVENT_SCHEMA)
        assert event["device_id"] == "pump-7" and event["site"] == "testsite"
    assert [e["state"] for e in events] == ["start", "end"]
    assert events[0]["event_id"] == events[1]["event_id"]
    assert events[0]["score"] > events[0]["threshold"]
    assert all(t == events_topic for t, _, _ in sub.messages if t.endswith("/events"))
    # stdout carries the same events as JSON lines
    printed = [json.loads(line) for line in out.stdout.splitlines()]
    assert [e["event_id"] for e in printed] == [e["event_id"] for e in events]
    # status: retained 'online' on connect, 'offline' on a clean stop
    statuses = [p.decode() for t, p, _ in sub.messages if t.endswith("/status")]
    assert statuses[:1] == ["online"] and statuses[-1] == "offline"


def test_clean_replay_raises_no_alert(broker, subscribe, unique_prefix, trained_model, demo_data, tmp_path):
    sub = subscribe(broker.host, broker.port, f"{unique_prefix}/#")
    cfg = _config(tmp_path, trained_model, broker.port, unique_prefix)
    out = run_cli("device", "replay", "--config", str(cfg), str(demo_wav(demo_data, "normal")))
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""
    # The status 'offline' is published last, after any event: once it is here, nothing else is coming.
    assert sub.wait_for(lambda s: any(p == b"offline" for _, p, _ in s.messages), timeout=20)
    assert sub.json_on("/events") == []


def test_unreachable_broker_keeps_alerts_until_it_returns(
    mosquitto_bin, subscribe, unique_prefix, trained_model, demo_data, tmp_path
):
    """The analysis does not wait on the network, and alerts made during an outage arrive when the broker is back."""
    broker = Mosquitto(tmp_path).start()
    # A persistent session (clean_session=False, restored by mosquitto's persistence) receives
    # QoS 1 messages published while the subscriber itself is still reconnecting.
    sub = subscribe(
        broker.host, broker.port, f"{unique_prefix}/#", client_id=f"sub-{unique_prefix}"[:23], clean_session=False
    )
    broker.stop()
    try:
        cfg = config_from_dict(
            {
                "device": {"id": "pump-8", "site": "outage"},
                "mqtt": {
                    "port": broker.port,
                    "topic_prefix": unique_prefix,
                    "reconnect_min_seconds": 1.0,
                    "reconnect_max_seconds": 2.0,
                },
            }
        )
        runner = Runner(cfg, model_path=str(trained_model), events_out=None)
        with runner:
            started = time.monotonic()
            stream = WavFileStream(demo_wav(demo_data, "anomaly"), 16000)
            summary = runner.run_stream(stream.name, stream.blocks())
            analysis_seconds = time.monotonic() - started
            assert summary.events == 1
            assert runner.outbox.publisher.stats.pending == 2 and not runner.outbox.publisher.stats.connected
            broker.start()
            assert runner.outbox.publisher.flush(20), "events not delivered after the broker came back"
        assert analysis_seconds < 5, "analysis waited on the unreachable broker"
        assert sub.wait_for(lambda s: len(s.json_on("/events")) == 2, timeout=20), sub.messages
        assert [e["state"] for e in sub.json_on("/events")] == ["start", "end"]
        assert [e["seq"] for e in sub.json_on("/events")] == [0, 1]
    finally:
        broker.stop()

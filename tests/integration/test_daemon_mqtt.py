"""A running daemon on a real mosquitto: retained state and health, telemetry, and commands with results."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jsonschema
import paho.mqtt.publish as mqtt_publish
import pytest
import yaml

from tests.helpers import REPO, stop_daemon

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def _schema(name: str) -> dict:
    return json.loads((REPO / "device" / "schemas" / f"{name}.schema.json").read_text())


def test_commands_state_health_and_telemetry(broker, subscribe, unique_prefix, trained_model, demo_data, tmp_path):
    normal = sorted((demo_data / "pump" / "test").glob("normal_id_00_*.wav"))[0]
    cfg = tmp_path / "device.yaml"
    cfg.write_text(yaml.safe_dump({
        "device": {"id": "pump-9", "site": "lab"},
        "model": {"path": str(trained_model)},
        "audio": {"source": "wav", "wav_paths": [str(normal)] * 40, "realtime": True},
        "detector": {"cooldown_seconds": 0},
        "health": {"telemetry_seconds": 1},
        "evidence": {"directory": str(tmp_path / "evidence")},
        "mqtt": {"host": broker.host, "port": broker.port, "topic_prefix": unique_prefix},
    }))
    base = f"{unique_prefix}/lab/pump-9"
    sub = subscribe(broker.host, broker.port, f"{base}/#")
    log_path = tmp_path / "daemon.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "device", "run", "--config", str(cfg)], cwd=REPO,
                                env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)

    def command(name: str, args: dict) -> dict:
        mqtt_publish.single(f"{base}/cmd/{name}", json.dumps({**args, "request_id": name}), qos=1,
                            hostname=broker.host, port=broker.port)
        assert sub.wait_for(lambda s: s.json_on(f"/cmd/{name}/result"), timeout=20), log_path.read_text()
        return sub.json_on(f"/cmd/{name}/result")[-1]

    try:
        assert sub.wait_for(lambda s: s.json_on("/telemetry") and s.json_on("/state") and s.json_on("/health"),
                            timeout=60), log_path.read_text()
        ping = command("ping", {})
        assert ping["ok"] and ping["request_id"] == "ping" and ping["result"]["state"] == "ok"
        low = command("set_threshold", {"value": 1e-6})
        assert low["ok"] and low["result"]["threshold"] == 1e-6
        assert sub.wait_for(lambda s: any(e["state"] == "start" for e in s.json_on("/events")), timeout=20)
        assert sub.wait_for(lambda s: s.json_on("/state")[-1]["state"] == "anomaly", timeout=10)
        mute = command("mute", {"minutes": 1})
        assert mute["ok"] and mute["result"]["muted_until"].endswith("Z")
        assert sub.wait_for(lambda s: s.json_on("/state")[-1]["state"] == "muted", timeout=10)
        assert sub.wait_for(lambda s: any(e["state"] == "end" for e in s.json_on("/events")), timeout=10)
        reload = command("reload", {})
        assert reload["ok"] and reload["result"]["threshold"] != 1e-6  # the config's threshold is back
    finally:
        rc = stop_daemon(proc)
    assert rc == 0, log_path.read_text()
    for name, suffix in (("state", "/state"), ("health", "/health"), ("telemetry", "/telemetry")):
        for payload in sub.json_on(suffix):
            jsonschema.validate(payload, _schema(name))
    telemetry = sub.json_on("/telemetry")[-1]
    assert telemetry["windows"] >= 1 and telemetry["level_dbfs"] < 0 and telemetry["realtime_factor"] < 1
    assert sub.json_on("/health")[0]["ok"] is True

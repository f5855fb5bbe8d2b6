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
    cfg.write_text(
        yaml.safe_dump(
            {
                "device": {"id": "pump-9", "site": "lab"},
                "model": {"path": str(trained_model)},
                "audio": {"source": "wav", "wav_paths": [str(normal)] * 40, "realtime": True},
                "detector": {"cooldown_seconds": 0},
                "health": {"telemetry_seconds": 1},
                "evidence": {"directory": str(tmp_path / "evidence")},
                "mqtt": {"host": broker.host, "port": broker.port, "topic_prefix": unique_prefix},
            }
        )
    )
    base = f"{unique_prefix}/lab/pump-9"
    sub = subscribe(broker.host, broker.port, f"{base}/#")
    log_path = tmp_path / "daemon.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "device", "run", "--config", str(cfg)],
            cwd=REPO,
            env=dict(os.environ),
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def command(name: str, args: dict) -> dict:
        seen = len(sub.json_on(f"/cmd/{name}/result"))
        mqtt_publish.single(
            f"{base}/cmd/{name}",
            json.dumps({**args, "request_id": name}),
            qos=1,
            hostname=broker.host,
            port=broker.port,
        )
        assert sub.wait_for(lambda s: len(s.json_on(f"/cmd/{name}/result")) > seen, timeout=20), log_path.read_text()
        return sub.json_on(f"/cmd/{name}/result")[-1]

    try:
        assert sub.wait_for(
            lambda s: s.json_on("/telemetry") and s.json_on("/state") and s.json_on("/health"), timeout=60
        ), log_path.read_text()
        ping = command("ping", {})
        assert ping["ok"] and ping["request_id"] == "ping" and ping["result"]["state"] == "ok"
        # 1e-6 would alarm on everything: outside the band around the calibrated threshold, refused.
        low = command("set_threshold", {"value": 1e-6})
        assert not low["ok"] and "outside" in low["error"] and "force" in low["error"]
        calibrated = sub.json_on("/state")[-1]["threshold"]
        low = command("set_threshold", {"value": calibrated / 4})  # the published (rounded) threshold's band edge
        assert low["ok"] and low["result"]["threshold"] == pytest.approx(calibrated / 4), low.get("error")
        # A threshold that alarms on normal sound, the way an operator sets one deliberately: in the config.
        good = cfg.read_text()
        cfg.write_text(good.replace(f"path: {trained_model}", f"path: {trained_model}\n  threshold: 1.0e-06"))
        assert command("reload", {})["ok"]
        assert sub.wait_for(lambda s: any(e["state"] == "start" for e in s.json_on("/events")), timeout=20)
        assert sub.wait_for(lambda s: s.json_on("/state")[-1]["state"] == "anomaly", timeout=10)
        mute = command("mute", {"minutes": 1})
        assert mute["ok"] and mute["result"]["muted_until"].endswith("Z")
        assert sub.wait_for(lambda s: s.json_on("/state")[-1]["state"] == "muted", timeout=10)
        assert sub.wait_for(lambda s: any(e["state"] == "end" for e in s.json_on("/events")), timeout=10)
        cfg.write_text(good)
        reload = command("reload", {})
        assert reload["ok"] and reload["result"]["threshold"] == pytest.approx(calibrated)  # the config's is back
    finally:
        rc = stop_daemon(proc)
    assert rc == 0, log_path.read_text()
    for name, suffix in (("state", "/state"), ("health", "/health"), ("telemetry", "/telemetry")):
        for payload in sub.json_on(suffix):
            jsonschema.validate(payload, _schema(name))
    telemetry = sub.json_on("/telemetry")[-1]
    assert telemetry["windows"] >= 1 and telemetry["level_dbfs"] < 0 and telemetry["realtime_factor"] < 1
    assert sub.json_on("/health")[0]["ok"] is True

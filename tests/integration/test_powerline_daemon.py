"""Power-line figures through the daemon's Runner with a real int8 model and a real mosquitto: a tower recording
(hum at 50.1 Hz with corona ticks at one phase of the hum) replayed from a WAV gives telemetry with the powerline
figures and the site metadata, events carrying the site metadata, the Home Assistant sensors and the metrics."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import jinja2
import numpy as np
import pytest
import yaml

from device.audio.audio_io import write_wav
from device.audio.sources import WavFileStream
from device.daemon.runner import Runner
from device.daemon.site_config import load_site_config
from tests.helpers import free_port
from tests.mqtt_support import validate_messages

pytestmark = [pytest.mark.slow]

RATE = 16000
MAINS_HZ = 50.1
ASSET = {"asset_id": "T-117", "location": "Line 4, span 117 (52.1,4.3)", "line_voltage_kv": 110.0}


def tower_wav(path: Path, seconds: float = 12.0, ticks_per_s: float = 40.0) -> Path:
    """Hum on the even harmonics of 50.1 Hz, wind-like noise, and corona ticks 105 degrees into the 2f cycle."""
    rng = np.random.default_rng(3)
    t = np.arange(int(seconds * RATE)) / RATE
    x = sum(a * np.cos(2 * np.pi * k * MAINS_HZ * t) for k, a in ((2, 0.04), (4, 0.015), (6, 0.008)))
    x = x + 0.004 * rng.standard_normal(len(t))
    cycles = np.flatnonzero(rng.random(int(seconds * 2 * MAINS_HZ) - 1) < ticks_per_s / (2 * MAINS_HZ)) + 1
    ticks = (np.radians(105) + 2 * np.pi * cycles) / (2 * np.pi * 2 * MAINS_HZ)
    x[np.round(ticks * RATE).astype(int)] += 0.25
    write_wav(path, x.astype(np.float32), RATE)
    return path


@pytest.mark.broker
def test_a_tower_replay_publishes_powerline_telemetry_and_site_metadata(
    broker, subscribe, unique_prefix, trained_model, tmp_path
):
    wav = tower_wav(tmp_path / "tower.wav")
    data = {
        "device": {"id": "tower-117", "site": "line4", **ASSET},
        "model": {"path": str(trained_model), "threshold": 1e-6},  # every window alarms: events at once
        "detector": {"cooldown_seconds": 0},
        "health": {"telemetry_seconds": 4},
        "powerline": {"enabled": True, "mains_hz": "auto", "phase_bins": 12},
        "evidence": {"directory": str(tmp_path / "evidence")},
        "metrics": {"enabled": True, "port": free_port()},
        "mqtt": {
            "enabled": True,
            "host": broker.host,
            "port": broker.port,
            "topic_prefix": unique_prefix,
            "discovery_prefix": f"{unique_prefix}-ha",
            "spool_dir": str(tmp_path / "spool"),
        },
    }
    cfg_path = tmp_path / "device.yaml"
    cfg_path.write_text(yaml.safe_dump(data))
    base = f"{unique_prefix}/line4/tower-117"
    sub = subscribe(broker.host, broker.port, f"{base}/#")
    ha = subscribe(broker.host, broker.port, f"{unique_prefix}-ha/#")
    with Runner(load_site_config(cfg_path), config_path=str(cfg_path), events_out=None) as runner:
        stream = WavFileStream(wav, RATE, block_samples=1000)
        runner.run_stream(stream.name, stream.blocks())
        last = runner.last_powerline
        with urllib.request.urlopen(f"http://127.0.0.1:{data['metrics']['port']}/metrics", timeout=5) as response:
            metrics = response.read().decode()
    assert sub.wait_for(lambda s: len(s.json_on("/telemetry")) >= 2, timeout=20)
    assert sub.wait_for(lambda s: any(e["state"] == "end" for e in s.json_on("/events")), timeout=20)
    assert validate_messages(sub.messages) >= 4  # every message matches its JSON Schema (asset, powerline too)
    telemetry = sub.json_on("/telemetry")
    for message in telemetry:
        assert message["asset"] == ASSET
    figures = telemetry[1]["powerline"]  # 4 s of audio: the second period has whole 4 s frames
    assert figures["nominal_hz"] == 50.0 and figures["mains_hz"] == pytest.approx(MAINS_HZ, abs=0.05)
    assert figures["comb_db"] > 20
    assert figures["crackle_rate_per_s"] == pytest.approx(40.0, rel=0.25)
    assert len(figures["phase_bins"]) == 12 and int(np.argmax(figures["phase_bins"])) == 3  # 90-120 degrees
    assert figures["phase_concentration"] > 0.9
    assert last == telemetry[-1]["powerline"]
    assert f'acmon_mains_hz{{device="tower-117",site="line4"}} {last["mains_hz"]}' in metrics
    assert "acmon_crackle_rate{" in metrics and "acmon_hum_comb_db{" in metrics
    events = sub.json_on("/events")
    assert events and all(e["asset"] == ASSET for e in events)
    # Home Assistant: a sensor per figure, its template reading the telemetry's value.
    assert ha.wait_for(lambda s: any(t.endswith("/mains_frequency/config") for t, _, _ in s.messages), timeout=10)
    config = next(json.loads(p) for t, p, _ in ha.messages if t.endswith("/mains_frequency/config"))
    assert config["state_topic"] == f"{base}/telemetry" and config["unit_of_measurement"] == "Hz"
    value = jinja2.Environment().from_string(config["value_template"]).render(value_json=telemetry[1])
    assert float(value) == figures["mains_hz"]


def test_off_by_default_and_no_site_metadata_means_no_keys(trained_model, tmp_path):
    cfg_path = tmp_path / "device.yaml"
    cfg_path.write_text(yaml.safe_dump({"model": {"path": str(trained_model)}, "mqtt": {"enabled": False}}))
    runner = Runner(load_site_config(cfg_path), config_path=str(cfg_path), use_mqtt=False, events_out=None)
    assert runner.powerline is None and runner.outbox.asset is None

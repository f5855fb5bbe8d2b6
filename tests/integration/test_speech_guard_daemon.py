"""The speech guard in a running daemon with a real mosquitto: a faulty pump with a man talking beside it alarms,
its clip is not kept, and get_evidence, the event messages and the evidence folder say so in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from device.audio.audio_io import read_wav, to_mono, write_wav
from device.audio.resample import resample
from tests.helpers import DeviceProcess, require, write_config

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ALSA = Path("/usr/share/sounds/alsa")  # alsa-utils: one man's voice saying the channel names


def _talking_beside(fault: Path, out: Path, snr_db: float) -> Path:
    """The fault clip with the alsa-utils words spoken over its whole length, snr_db below the machine."""
    machine, rate = read_wav(fault)
    machine = to_mono(machine).astype(np.float64)
    words = []
    for path in sorted(ALSA.glob("*.wav")):
        if path.stem != "Noise":
            samples, word_rate = read_wav(path)
            words.append(resample(to_mono(samples).astype(np.float64), word_rate, rate))
    speech = np.resize(np.concatenate(words), len(machine))
    active = speech[np.abs(speech) > 0.03 * np.abs(speech).max()]
    gain = np.sqrt(np.mean(machine**2) * 10 ** (snr_db / 10) / np.mean(active**2))
    write_wav(out, machine + gain * speech, rate)
    return out


def test_a_clip_with_speech_is_withheld_and_get_evidence_says_so(
    broker, subscribe, unique_prefix, trained_model, demo_data, tmp_path
):
    require(ALSA.is_dir(), f"{ALSA} not found: apt-get install alsa-utils (scripts/setup.sh does)")
    fault = sorted((demo_data / "pump" / "test").glob("anomaly_id_00_*.wav"))[0]
    clip = _talking_beside(fault, tmp_path / "pump_and_talk.wav", snr_db=0)
    evidence = tmp_path / "evidence"
    cfg = write_config(
        tmp_path,
        trained_model,
        {"host": broker.host, "port": broker.port, "topic_prefix": unique_prefix},
        device={"id": "pump-9", "site": "lab"},
        model={"threshold": 1e-6},  # every window alarms: an event at once
        audio={"source": "wav", "wav_paths": [str(clip)] * 20, "realtime": True},
        evidence={"directory": str(evidence), "pre_roll_seconds": 2, "post_roll_seconds": 2, "speech_guard": True},
    )
    base = f"{unique_prefix}/lab/pump-9"
    sub = subscribe(broker.host, broker.port, f"{base}/#")
    daemon = DeviceProcess(cfg, tmp_path / "daemon.log", broker, sub, base)
    try:
        assert sub.wait_for(lambda s: any(e["state"] == "start" for e in s.json_on("/events")), 60), daemon.log()
        start = next(e for e in sub.json_on("/events") if e["state"] == "start")
        marker = evidence / (start["evidence"].rsplit(".", 1)[0] + ".withheld")
        assert sub.wait_for(lambda s: marker.exists(), 30), daemon.log()
        assert list(evidence.glob("*.wav")) == [] and list(evidence.glob("*.png")) == []
        assert marker.read_text().startswith("evidence withheld: speech detected")
        reply = daemon.command("get_evidence", {"event_id": start["event_id"]})
        assert not reply["ok"] and "evidence withheld: speech detected" in reply["error"], reply
        assert "\n" not in reply["error"]
        # The alarm was still open when its clip was judged: its next message (here its end) says so.
        assert sub.wait_for(
            lambda s: any(
                e.get("evidence_withheld") for e in s.json_on("/events") if e["event_id"] == start["event_id"]
            ),
            30,
        ), daemon.log()
        message = next(e for e in sub.json_on("/events") if e.get("evidence_withheld"))
        assert message["evidence"] is None and message["evidence_withheld"].startswith("evidence withheld")
    finally:
        assert daemon.stop() == 0, daemon.log()

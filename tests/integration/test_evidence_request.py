"""get_evidence on a running daemon and a real mosquitto: an alarm's WAV and PNG arrive in chunks that reassemble to
the files on disk; unknown and malformed event ids are refused with one line."""

from __future__ import annotations

import hashlib

import pytest
import yaml

from tests.helpers import DeviceProcess

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_evidence_arrives_in_chunks_that_match_the_files(
    broker, subscribe, unique_prefix, trained_model, demo_data, tmp_path
):
    fault = sorted((demo_data / "pump" / "test").glob("anomaly_id_00_*.wav"))[0]
    evidence = tmp_path / "evidence"
    cfg = tmp_path / "device.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "device": {"id": "pump-5", "site": "lab"},
                "model": {"path": str(trained_model), "threshold": 1e-6},  # every window alarms: an event at once
                "audio": {"source": "wav", "wav_paths": [str(fault)] * 20, "realtime": True},
                "evidence": {"directory": str(evidence), "pre_roll_seconds": 1, "post_roll_seconds": 1},
                "mqtt": {"host": broker.host, "port": broker.port, "topic_prefix": unique_prefix},
            }
        )
    )
    base = f"{unique_prefix}/lab/pump-5"
    sub = subscribe(broker.host, broker.port, f"{base}/#")
    daemon = DeviceProcess(cfg, tmp_path / "daemon.log", broker, sub, base)

    def command(args: dict) -> dict:
        return daemon.command("get_evidence", args)

    try:
        assert sub.wait_for(lambda s: any(e["state"] == "start" for e in s.json_on("/events")), 60), daemon.log()
        start = next(e for e in sub.json_on("/events") if e["state"] == "start")
        assert sub.wait_for(lambda s: (evidence / start["evidence"]).exists(), 30)  # after the post-roll
        reply = command({"event_id": start["event_id"]})
        assert reply["ok"], reply
        files = {f["name"]: f for f in reply["result"]["files"]}
        wav = start["evidence"]
        assert set(files) == {wav, wav.replace(".wav", ".png")}
        for name, meta in files.items():
            prefix = f"{base}/evidence/{start['event_id']}/{name}/"

            def chunks(s, prefix=prefix):
                return {int(t.rsplit("/", 1)[1]): p for t, p, _ in s.messages if t.startswith(prefix)}

            assert sub.wait_for(lambda s, meta=meta, chunks=chunks: len(chunks(s)) == meta["chunks"], 20)
            got = chunks(sub)
            data = b"".join(got[i] for i in range(meta["chunks"]))
            assert hashlib.sha256(data).hexdigest() == meta["sha256"] and len(data) == meta["bytes"]
            assert data == (evidence / name).read_bytes()
        assert files[wav]["chunks"] >= 1 and meta["topic"].startswith(f"{base}/evidence/")
        unknown = command({"event_id": "0" * 32})
        assert not unknown["ok"] and "no evidence for event" in unknown["error"]
        for bad in ("../../etc/passwd", "A" * 32, 5, ""):
            refused = command({"event_id": bad})
            assert not refused["ok"] and "event id" in refused["error"], refused
    finally:
        assert daemon.stop() == 0, daemon.log()

"""get_evidence on a running daemon and a real mosquitto: an alarm's WAV and PNG arrive in chunks that reassemble to
the files on disk; unknown and malformed event ids are refused with one line."""

from __future__ import annotations

import hashlib

import pytest

from tests.helpers import alarming_daemon

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_evidence_arrives_in_chunks_that_match_the_files(
    broker, subscribe, unique_prefix, trained_model, demo_data, tmp_path
):
    fault = sorted((demo_data / "pump" / "test").glob("anomaly_id_00_*.wav"))[0]
    daemon, start, evidence = alarming_daemon(
        tmp_path, trained_model, fault, broker, subscribe, unique_prefix, "pump-5"
    )
    base, sub = daemon.base, daemon.sub

    def command(args: dict) -> dict:
        return daemon.command("get_evidence", args)

    try:
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

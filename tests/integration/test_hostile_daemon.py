"""Fault injection on the real daemon (`python -m device run`) with a real mosquitto: SIGKILL during an alarm,
an unwritable state directory, a full disk, and hostile commands. Every test asserts no traceback on stderr,
a one-line error or a health fault, and no event lost (every alarm's start has exactly one end).

Audio comes through stdin (audio.source: stdin), so the test decides when the daemon hears what: an alarm
is open exactly while the test withholds the next block, and two minutes of calibration audio take seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import paho.mqtt.publish as mqtt_publish
import pytest

from device.audio.audio_io import read_wav
from tests.helpers import REPO, require, write_config
from tests.mqtt_support import validate_messages, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.slow]

RATE = 16000
SITE, DEVICE = "plant-h", "pump-h"


@pytest.fixture(scope="module")
def normal_pcm(site_clips) -> bytes:
    """2.4 minutes of the demo pump running normally (unseen by the model), as s16le mono at 16 kHz."""
    audio = np.concatenate([read_wav(p)[0].reshape(-1) for p in site_clips["normal"]])
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def _seconds(pcm: bytes, start: float, seconds: float) -> bytes:
    return pcm[int(start * RATE) * 2 : int((start + seconds) * RATE) * 2]


class Daemon:
    """`python -m device run` as systemd runs it, fed through stdin; stderr kept in a file."""

    def __init__(self, cfg: Path, log: Path, env: dict[str, str] | None = None):
        self.log = log
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "device", "run", "--config", str(cfg)],
                cwd=REPO,
                env={**os.environ, **(env or {})},
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    def feed(self, pcm: bytes) -> None:
        assert self.proc.poll() is None, self.stderr
        self.proc.stdin.write(pcm)
        self.proc.stdin.flush()

    def feed_until(self, pcm: bytes, condition, step_seconds: float = 0.5, limit_seconds: float = 30.0) -> float:
        """Feed audio a step at a time until condition() holds; returns the stream position reached (seconds)."""
        position = 0.0
        while not condition():
            assert position < limit_seconds, self.stderr
            self.feed(_seconds(pcm, position, step_seconds))
            position += step_seconds
            wait_until(condition, 0.2)
        return position

    def end_of_audio(self, timeout: float = 30.0) -> int:
        """Close stdin (the stream ends, open alarms end) and wait for the exit code."""
        self.proc.stdin.close()
        return self.proc.wait(timeout)

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    @property
    def stderr(self) -> str:
        return self.log.read_text(errors="replace")


def _config(tmp_path: Path, model_path: Path, broker, prefix: str, **sections: dict) -> Path:
    """The daemon on stdin, publishing to `broker` under `prefix`; `sections` go over these settings."""
    mqtt = {
        "host": broker.host,
        "port": broker.port,
        "topic_prefix": prefix,
        "reconnect_min_seconds": 0.2,
        "reconnect_max_seconds": 1,
        "homeassistant_discovery": False,
        **sections.pop("mqtt", {}),
    }
    base = {
        "device": {"id": DEVICE, "site": SITE},
        "audio": {"source": "stdin", "stdin_format": "s16le"},
        "detector": {"cooldown_seconds": 0, "update_seconds": 1},
        "health": {"telemetry_seconds": 5},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return write_config(tmp_path, model_path, mqtt, **base)


def _base(prefix: str) -> str:
    return f"{prefix}/{SITE}/{DEVICE}"


def _command(broker, prefix: str, name: str, args: dict) -> str:
    request_id = uuid.uuid4().hex[:12]
    mqtt_publish.single(
        f"{_base(prefix)}/cmd/{name}",
        json.dumps({**args, "request_id": request_id}),
        qos=1,
        hostname=broker.host,
        port=broker.port,
    )
    return request_id


def _result(sub, request_id: str) -> dict | None:
    found = [r for r in sub.json_on("/result") if r["request_id"] == request_id]
    return found[0] if found else None


def _events(sub) -> list[dict]:
    """Events as a deduplicating subscriber keeps them: the first copy of each (event_id, seq)."""
    seen, out = set(), []
    for event in sub.json_on("/events"):
        if (event["event_id"], event["seq"]) not in seen:
            seen.add((event["event_id"], event["seq"]))
            out.append(event)
    return out


def _assert_no_event_lost(events: list[dict]) -> None:
    by_id: dict[str, list[str]] = {}
    for event in events:
        by_id.setdefault(event["event_id"], []).append(event["state"])
    for event_id, states in by_id.items():
        assert states.count("start") == 1 and states.count("end") == 1, (event_id, states)
        assert states[0] == "start" and states[-1] == "end", (event_id, states)


def _assert_clean(*daemons: Daemon) -> None:
    for daemon in daemons:
        assert "Traceback" not in daemon.stderr, daemon.stderr


def _faults(sub) -> list[set[str]]:
    return [{f["fault"] for f in h["faults"]} for h in sub.json_on("/health")]


def test_sigkill_during_an_alarm_then_restart_ends_it_with_reason_restart(
    broker, subscribe, unique_prefix, trained_model, normal_pcm, tmp_path
):
    # Threshold 1e-6: every window alarms, so the alarm stays open while the daemon hears audio.
    cfg = _config(tmp_path, trained_model, broker, unique_prefix, model={"threshold": 1.0e-6})
    sub = subscribe(broker.host, broker.port, f"{_base(unique_prefix)}/#")
    first = Daemon(cfg, tmp_path / "first.log")
    try:
        first.feed_until(normal_pcm, lambda: any(e["state"] == "update" for e in _events(sub)))
        first.kill()
    finally:
        first.stop()
    (killed,) = {e["event_id"] for e in _events(sub)}
    assert not [e for e in _events(sub) if e["state"] == "end"]  # the finding: a start and never an end

    second = Daemon(cfg, tmp_path / "second.log")
    try:
        ended = lambda: [e for e in _events(sub) if e["event_id"] == killed and e["state"] == "end"]  # noqa: E731
        assert sub.wait_for(lambda s: ended(), 30), second.stderr  # at start-up, before any audio
        second.feed_until(normal_pcm, lambda: len({e["event_id"] for e in _events(sub)}) == 2)
        assert second.end_of_audio() == 0, second.stderr
    finally:
        second.stop()
    assert sub.wait_for(lambda s: sum(e["state"] == "end" for e in _events(s)) == 2, 20), _events(sub)
    (restart_end,) = ended()
    assert restart_end["reason"] == "restart" and restart_end["duration_seconds"] > 0
    before = [e for e in _events(sub) if e["event_id"] == killed and e["state"] != "end"]
    assert restart_end["seq"] > max(e["seq"] for e in before)
    assert [e for e in _events(sub) if "reason" in e] == [restart_end]
    _assert_no_event_lost(_events(sub))
    assert validate_messages(sub.messages) >= 4
    _assert_clean(first, second)
    spool = Path(os.environ["XDG_STATE_HOME"]) / "acmon" / "spool"
    assert not list(spool.rglob("*.msg"))
    assert not list((Path(os.environ["XDG_STATE_HOME"]) / "acmon" / "alarms").rglob("*.json"))


def test_unwritable_state_directory_calibrate_is_an_error_result_and_the_daemon_stays_up(
    broker, subscribe, unique_prefix, trained_model, normal_pcm, tmp_path
):
    state = tmp_path / "state"
    state.mkdir()
    (state / "calibration").write_text("a file where the calibration folder belongs\n")
    cfg = _config(tmp_path, trained_model, broker, unique_prefix)
    (tmp_path / "calibration.yaml").mkdir()  # where it was written before: IsADirectoryError crashed the daemon
    sub = subscribe(broker.host, broker.port, f"{_base(unique_prefix)}/#")
    daemon = Daemon(cfg, tmp_path / "daemon.log", env={"STATE_DIRECTORY": str(state)})
    try:
        position = daemon.feed_until(normal_pcm, lambda: sub.json_on("/state"))
        # Hostile commands first: each gets a one-line error result, nothing changes.
        refused = {
            _command(broker, unique_prefix, "set_threshold", {"value": 5e5}): "outside",
            _command(broker, unique_prefix, "calibrate", {"minutes": 0.2}): "at least 200 analysis windows",
        }
        calibrate = _command(broker, unique_prefix, "calibrate", {"minutes": 2.0})
        position += daemon.feed_until(normal_pcm, lambda: "calibrating: collecting" in daemon.stderr)
        daemon.feed(_seconds(normal_pcm, position, 2.4 * 60 - position))
        assert sub.wait_for(lambda s: _result(s, calibrate), 30), daemon.stderr
        result = _result(sub, calibrate)
        assert not result["ok"] and result["error"].startswith("calibrate: cannot write ")
        assert str(state / "calibration") in result["error"] and "\n" not in result["error"]
        for request_id, text in refused.items():
            answer = _result(sub, request_id)
            assert answer and not answer["ok"] and text in answer["error"], answer
        assert sub.wait_for(lambda s: any("storage" in f for f in _faults(s)), 10), sub.json_on("/health")
        ping = _command(broker, unique_prefix, "ping", {})
        daemon.feed_until(normal_pcm, lambda: _result(sub, ping))
        assert _result(sub, ping)["ok"] and daemon.proc.poll() is None  # still up, still answering
        assert daemon.end_of_audio() == 0, daemon.stderr
    finally:
        daemon.stop()
    _assert_clean(daemon)
    validate_messages(sub.messages)
    _assert_no_event_lost(_events(sub))


@pytest.fixture
def full_tmpfs(tmp_path):
    """A 256 kB tmpfs mounted for this test and filled up; unmounted afterwards. Needs root (CI runs as root)."""
    mount = tmp_path / "full"
    mount.mkdir()
    can_mount = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mount)], capture_output=True
        ).returncode
        == 0
    )
    require(can_mount, "mounting a tmpfs needs root (the disk-full test)")
    try:
        fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass  # ENOSPC: full
        finally:
            os.close(fd)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_is_a_health_fault_and_every_alarm_still_arrives(
    broker, subscribe, unique_prefix, trained_model, normal_pcm, tmp_path, full_tmpfs
):
    # The state directory (evidence, open alarms, calibration) on the full disk; the spool elsewhere.
    cfg = _config(
        tmp_path,
        trained_model,
        broker,
        unique_prefix,
        model={"threshold": 1.0e-6},
        mqtt={"spool_dir": str(tmp_path / "spool")},
        evidence={"pre_roll_seconds": 1, "post_roll_seconds": 1},
    )
    sub = subscribe(broker.host, broker.port, f"{_base(unique_prefix)}/#")
    daemon = Daemon(cfg, tmp_path / "daemon.log", env={"STATE_DIRECTORY": str(full_tmpfs)})
    try:
        daemon.feed_until(
            normal_pcm,
            lambda: any("storage" in f for f in _faults(sub)) and any(e["state"] == "update" for e in _events(sub)),
        )
        storage = [h for h in sub.json_on("/health") if any(f["fault"] == "storage" for f in h["faults"])][-1]
        detail = next(f["detail"] for f in storage["faults"] if f["fault"] == "storage")
        assert "No space left on device" in detail and "\n" not in detail
        assert daemon.end_of_audio() == 0, daemon.stderr
    finally:
        daemon.stop()
    assert sub.wait_for(lambda s: any(e["state"] == "end" for e in _events(s)), 20), _events(sub)
    _assert_no_event_lost(_events(sub))
    _assert_clean(daemon)
    validate_messages(sub.messages)
    assert not list((tmp_path / "spool").rglob("*.msg"))
    assert not list(full_tmpfs.rglob("*.tmp"))  # nothing half-written left behind

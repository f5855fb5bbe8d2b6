"""Test helpers: a real mosquitto process, a paho subscriber, CLI runner, CI-strict skipping."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
IN_CI = os.environ.get("CI", "").lower() == "true"


def require(condition: bool, reason: str) -> None:
    """Skip when a component is missing on a developer's machine; fail in CI, where everything must be installed."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: every component must be installed; see scripts/setup.sh)")
    pytest.skip(reason)


def write_config(folder: Path, model_path: Path, mqtt: dict | None = None, /, **sections: dict) -> Path:
    """A daemon config, folder/acmon.yaml: device pump-7 at testsite and the model at model_path; MQTT off
    unless an mqtt section is given (it replaces the default whole); each other section's keys go over
    the defaults (model={"threshold": ...} keeps the path)."""
    import yaml

    data: dict = {"device": {"id": "pump-7", "site": "testsite"}, "model": {"path": str(model_path)}}
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    data["mqtt"] = mqtt if mqtt is not None else {"enabled": False}
    path = folder / "acmon.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def make_ca(folder: Path, common_name: str = "acmon test CA") -> Path:
    """A self-signed P-256 CA valid for a day, folder/ca.key and folder/ca.crt, made with the openssl CLI
    (required: fails in CI when missing, skips elsewhere); returns ca.crt."""
    require(shutil.which("openssl") is not None, "openssl is not installed")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        + ["-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", f"/CN={common_name}"],
        cwd=folder,
        check=True,
        capture_output=True,
    )
    return folder / "ca.crt"


def demo_wav(demo_data: Path, label: str, index: int = 0) -> Path:
    """The demo pump's index-th test clip of a label ('normal' or 'anomaly')."""
    return sorted((demo_data / "pump" / "test").glob(f"{label}_id_00_*.wav"))[index]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    """A mosquitto broker process on 127.0.0.1, started from a config file and stopped by PID."""

    def __init__(self, workdir: Path, port: int | None = None, extra_config: str = "", template: str | None = None):
        """template: a whole config with {port} and {workdir} placeholders; default tests/data/mosquitto.conf."""
        self.workdir = workdir
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.extra_config = extra_config
        self.template = template
        self.proc: subprocess.Popen | None = None

    def start(self) -> Mosquitto:
        template = self.template if self.template is not None else (DATA / "mosquitto.conf").read_text()
        conf = self.workdir / f"mosquitto-{self.port}.conf"
        conf.write_text(template.format(port=self.port, workdir=self.workdir) + self.extra_config)
        self.log = open(self.workdir / f"mosquitto-{self.port}.log", "ab")
        self.proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {(self.workdir / f'mosquitto-{self.port}.log').read_text()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening within 10 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class Subscriber:
    """A paho subscriber collecting (topic, payload) pairs; every wait has a timeout."""

    def __init__(
        self, host: str, port: int, topic: str, client_id: str | None = None, clean_session: bool = True, setup=None
    ):
        """setup: called with the paho client before it connects (credentials, TLS)."""
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.topic = topic
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or "", clean_session=clean_session
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.reconnect_delay_set(1, 1)
        if setup is not None:
            setup(self.client)
        self.client.connect_async(host, port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "subscriber did not get SUBACK within 10 s"

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        client.subscribe(self.topic, qos=1)

    def _on_message(self, client, userdata, msg):
        with self._cond:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))
            self._cond.notify_all()

    def json_on(self, suffix: str) -> list[dict]:
        with self._cond:
            return [json.loads(p) for t, p, _ in self.messages if t.endswith(suffix)]

    def wait_for(self, predicate, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def run_cli(*args: str, stdin: bytes | None = None, timeout: float = 120, env: dict | None = None):
    """Run `python -m ...` as a user would; returns the CompletedProcess (text mode)."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        input=stdin.decode() if stdin else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def stop_daemon(proc: subprocess.Popen, timeout: float = 20.0) -> int:
    """SIGTERM a daemon subprocess and wait; SIGKILL it if it does not stop in time. Returns its exit code."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(5)


class DeviceProcess:
    """`python -m device run --config CONFIG` as a subprocess (log in log_path), and its MQTT commands: the pattern of
    the tests that drive a running daemon over a real broker."""

    def __init__(self, config: Path, log_path: Path, broker, sub: Subscriber, base: str):
        self.config, self.log_path, self.broker, self.sub, self.base = config, log_path, broker, sub, base
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "device", "run", "--config", str(config)],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self, tail: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    def command(self, name: str, args: dict, timeout: float = 30) -> dict:
        """Publish <base>/cmd/<name> and return its result (failing with the daemon's log if none comes)."""
        import paho.mqtt.publish as mqtt_publish

        suffix = f"/cmd/{name}/result"
        seen = len(self.sub.json_on(suffix))
        mqtt_publish.single(
            f"{self.base}/cmd/{name}", json.dumps(args), qos=1, hostname=self.broker.host, port=self.broker.port
        )
        assert self.sub.wait_for(lambda s: len(s.json_on(suffix)) > seen, timeout), self.log()
        return self.sub.json_on(suffix)[-1]

    def stop(self) -> int:
        return stop_daemon(self.proc)


def alarming_daemon(
    tmp_path: Path, model: Path, fault_clip: Path, broker, subscribe, prefix: str, device_id: str
) -> tuple[DeviceProcess, dict, Path]:
    """A daemon at site 'lab' replaying a fault clip with a threshold every window exceeds, evidence on (1 s before
    and after), MQTT on: returned once its first alarm's clip is on disk, as (daemon, that start event, the evidence
    folder). The caller stops the daemon."""
    evidence = tmp_path / "evidence"
    cfg = write_config(
        tmp_path,
        model,
        {"host": broker.host, "port": broker.port, "topic_prefix": prefix},
        device={"id": device_id, "site": "lab"},
        model={"threshold": 1e-6},  # every window alarms: an event at once
        audio={"source": "wav", "wav_paths": [str(fault_clip)] * 20, "realtime": True},
        evidence={"directory": str(evidence), "pre_roll_seconds": 1, "post_roll_seconds": 1},
    )
    base = f"{prefix}/lab/{device_id}"
    sub = subscribe(broker.host, broker.port, f"{base}/#")
    daemon = DeviceProcess(cfg, tmp_path / "daemon.log", broker, sub, base)
    try:
        assert sub.wait_for(lambda s: any(e["state"] == "start" for e in s.json_on("/events")), 60), daemon.log()
        start = next(e for e in sub.json_on("/events") if e["state"] == "start")
        assert sub.wait_for(lambda s: (evidence / start["evidence"]).exists(), 30), daemon.log()  # after the post-roll
    except BaseException:
        daemon.stop()
        raise
    return daemon, start, evidence


def calibrate_on_files(config: Path, folder: Path, minutes: float, *options: str):
    """`python -m device calibrate --config CONFIG --source file --minutes M [OPTIONS] FOLDER`, as a technician runs it."""
    return run_cli(
        "device",
        "calibrate",
        "--config",
        str(config),
        "--source",
        "file",
        "--minutes",
        f"{minutes:g}",
        *options,
        str(folder),
    )

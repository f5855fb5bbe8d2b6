"""A private mosquitto on a free loopback port, for benchmarks that publish (bench_fleet, bench_daemon --mqtt)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

START_TIMEOUT_SECONDS = 10.0


def start_broker(workdir: Path, extra_config: str = "") -> tuple[subprocess.Popen, int]:
    """Start mosquitto (anonymous, loopback only) with extra_config lines appended; returns (process, port).

    The caller stops it (terminate, wait). `user root` keeps mosquitto from dropping to the
    mosquitto user when started as root, which could not read a private temporary folder.

    Raises:
        RuntimeError: mosquitto did not accept connections within START_TIMEOUT_SECONDS.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n{extra_config}")
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("mosquitto did not start (is it installed? apt install mosquitto)")

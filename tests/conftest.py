"""Shared fixtures: a real mosquitto on loopback, demo recordings, a tiny int8 model trained in the test run."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from device.daemon.cli import limit_blas_threads
from tests.helpers import Mosquitto, Subscriber, require

limit_blas_threads()  # as the command-line entry points do, before any test runs numpy work


@pytest.fixture(autouse=True)
def private_state_home(tmp_path_factory, monkeypatch):
    """Each test (and the daemons it starts) gets its own state directory, out of ~/.local.

    Spools, evidence, calibration and open alarms default to $XDG_STATE_HOME/acmon, and
    calibration is keyed by device identity only: a session-wide folder would lay one test's
    calibration over the next test's config with the same (default) device id.
    """
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)


@pytest.fixture(scope="session")
def mosquitto_bin() -> str:
    path = shutil.which("mosquitto")
    require(path is not None, "mosquitto is not installed (apt-get install mosquitto mosquitto-clients)")
    return path


@pytest.fixture(scope="session")
def broker(mosquitto_bin, tmp_path_factory):
    """One broker for the session; tests keep apart by using their own topic prefixes."""
    b = Mosquitto(tmp_path_factory.mktemp("mosquitto")).start()
    yield b
    b.stop()


@pytest.fixture
def unique_prefix(request) -> str:
    """A topic prefix of this test's own, so tests sharing a broker never see each other's messages."""
    name = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40]
    return f"t{time.monotonic_ns() % 10**9}-{name}"


@pytest.fixture
def subscribe():
    subs: list[Subscriber] = []

    def make(host: str, port: int, topic: str, **kwargs) -> Subscriber:
        sub = Subscriber(host, port, topic, **kwargs)
        subs.append(sub)
        return sub

    yield make
    for sub in subs:
        sub.close()


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    """The demo's synthetic pump recordings (DCASE layout), made once per session."""
    from training.synth import make_demo_dataset

    out = tmp_path_factory.mktemp("demo-data")
    make_demo_dataset(out, seed=0)
    return out


@pytest.fixture(scope="session")
def trained_model(demo_data, tmp_path_factory) -> Path:
    """A real int8 model trained in this test run on the demo recordings (kept small for speed)."""
    from device.analysis.features import FeatureParams
    from training.fit import FitOptions, fit

    out = tmp_path_factory.mktemp("model")
    fit(demo_data / "pump", out, FeatureParams(), FitOptions(seed=0, cache_dir=str(out / "cache")), progress=False)
    return out


@pytest.fixture(scope="session")
def site_clips(tmp_path_factory) -> dict[str, list[Path]]:
    """24 normal and 24 faulty 6 s clips of the demo pump, unseen by the model (2.4 minutes of each), made
    once per session: what calibration and the daemon's hostile tests feed it."""
    from training.synth import DEMO_FAULT_STRENGTH_RANGE, DEMO_SNR_DB_RANGE, make_dataset

    root = tmp_path_factory.mktemp("site-clips")
    make_dataset(
        root,
        machine_types=("pump",),
        machine_ids=(0,),
        n_train=1,
        n_test_normal=24,
        n_test_anomaly=24,
        seconds=6.0,
        snr_db_range=DEMO_SNR_DB_RANGE,
        fault_strength_range=DEMO_FAULT_STRENGTH_RANGE,
        seed=11,
        progress=False,
    )
    test = root / "pump" / "test"
    return {label: sorted(test.glob(f"{label}_*.wav")) for label in ("normal", "anomaly")}


@pytest.fixture(scope="session")
def pulse_sink(tmp_path_factory):
    """A PulseAudio server with a null sink whose monitor is the default source: a microphone without hardware.

    Yields the environment (PULSE_SERVER) that paplay and the daemon need. Stopped by PID.
    """
    import subprocess

    require(
        shutil.which("pulseaudio") is not None and shutil.which("paplay") is not None,
        "pulseaudio/paplay not installed (apt-get install pulseaudio pulseaudio-utils)",
    )
    runtime = tmp_path_factory.mktemp("pulse")
    socket_path = runtime / "native"
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "PULSE_SERVER": f"unix:{socket_path}", "HOME": str(runtime)}
    proc = subprocess.Popen(
        [
            "pulseaudio",
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--disallow-exit",
            "-n",
            "--load=module-null-sink sink_name=acmon_test rate=16000 channels=1",
            f"--load=module-native-protocol-unix auth-anonymous=1 socket={socket_path}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(runtime / "pulse.log", "wb"),
    )
    deadline = time.monotonic() + 15
    while subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"pulseaudio did not start: {(runtime / 'pulse.log').read_text()[-2000:]}")
        time.sleep(0.1)
    subprocess.run(["pactl", "set-default-source", "acmon_test.monitor"], env=env, check=True)
    subprocess.run(["pactl", "set-default-sink", "acmon_test"], env=env, check=True)
    yield {"PULSE_SERVER": env["PULSE_SERVER"], "XDG_RUNTIME_DIR": env["XDG_RUNTIME_DIR"]}
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()

"""The daemon as a process: start to first analysed window, steady-state memory, and memory over 6 hours of audio.

Usage: python benchmarks/bench_daemon.py [--model models/demo] [--hours 6] [--starts 3] [--mqtt] [--json]

Runs `python -m device run` as a real subprocess (source: wav, as fast as possible, evidence on;
MQTT off, or with --mqtt publishing to a private mosquitto on loopback with its on-disk spool)
and measures it from outside:
- start to first analysed window: from spawning the process to its systemd READY=1 (sent after
  the first window), received on a unix datagram socket given as $NOTIFY_SOCKET; the median of
  --starts runs of a short replay;
- memory: VmRSS from /proc/PID/status sampled every 0.25 s during a replay of --hours of audio
  (a 60 s WAV of the demo pump looped); steady state is the median RSS over the second half,
  growth is the mean of the last tenth minus the mean of the second tenth (after warm-up);
- the whole daemon's speed: audio hours / wall time.
A benchmark, not a test: numbers vary with the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# One OpenBLAS thread, as device/__init__.py sets for the daemon: the front end's matrix products are
# tiny, and on a busy 2-core machine BLAS threads made every window 20-40x slower. Before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from device.audio_io import read_wav, write_wav  # noqa: E402

from broker import start_broker  # noqa: E402

LOOP_SECONDS = 60
SAMPLE_EVERY_SECONDS = 0.25
TARGET_RSS_MB = 80.0
TARGET_START_SECONDS = 1.0


def make_loop_wav(folder: Path) -> Path:
    """A 60 s WAV of normal demo pump sound (training.synth), the unit the 6-hour replay loops over."""
    from training.synth import make_demo_dataset  # noqa: PLC0415 - a benchmark helper, not the device

    make_demo_dataset(folder / "demo", seed=0)
    clips = sorted((folder / "demo" / "pump").rglob("normal_*.wav"))
    audio, rate = [], 16000
    for clip in clips:
        x, rate = read_wav(clip)
        audio.append(x[:, 0])
        if sum(len(a) for a in audio) >= LOOP_SECONDS * rate:
            break
    loop = folder / "loop.wav"
    write_wav(loop, np.concatenate(audio)[: LOOP_SECONDS * rate], rate)
    return loop


def write_config(folder: Path, model: Path, wav: Path, repeats: int, mqtt_port: int | None = None) -> Path:
    cfg = folder / f"daemon-{repeats}.yaml"
    paths = "\n".join(f"    - {wav}" for _ in range(repeats))
    mqtt = (
        f"mqtt: {{enabled: true, host: 127.0.0.1, port: {mqtt_port}, spool_dir: {folder / 'spool'}}}\n"
        if mqtt_port
        else "mqtt: {enabled: false}\n"
    )
    cfg.write_text(
        f"model: {{path: {model}}}\n{mqtt}"
        f"evidence: {{directory: {folder / 'evidence'}, quota_mb: 20}}\n"
        f"audio:\n  source: wav\n  realtime: false\n  wav_paths:\n{paths}\n"
    )
    return cfg


def rss_mb(pid: int) -> float | None:
    """Resident set size of a process from /proc, in MB (10^6 bytes); None once it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
    except (OSError, ValueError):
        return None
    return None


def spawn(cfg: Path, notify_path: str) -> subprocess.Popen:
    """Start the daemon; its log goes to <notify_path>.log (a pipe nobody reads would fill and stall it)."""
    env = {**os.environ, "NOTIFY_SOCKET": notify_path}
    log = open(f"{notify_path}.log", "wb")  # noqa: SIM115 - the child holds it; closed when the file object is collected
    return subprocess.Popen([sys.executable, "-m", "device", "run", "--config", str(cfg)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=log)


def time_to_ready(cfg: Path, folder: Path) -> tuple[float, float | None]:
    """(seconds from spawn to READY=1, RSS in MB at that moment)."""
    path = str(folder / "notify-start.sock")
    if os.path.exists(path):
        os.unlink(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(60)
        started = time.perf_counter()
        proc = spawn(cfg, path)
        while b"READY=1" not in sock.recv(4096):
            pass
        elapsed = time.perf_counter() - started
        rss = rss_mb(proc.pid)
        proc.wait(timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"daemon failed: {Path(path + '.log').read_text(errors='replace')[-2000:]}")
    return elapsed, rss


def long_replay(cfg: Path, folder: Path) -> dict:
    """Replay the long config; sample RSS until the daemon exits."""
    samples: list[tuple[float, float]] = []
    started = time.perf_counter()
    proc = spawn(cfg, str(folder / "notify-long.sock"))
    while proc.poll() is None:
        rss = rss_mb(proc.pid)
        if rss is not None:
            samples.append((time.perf_counter() - started, rss))
        time.sleep(SAMPLE_EVERY_SECONDS)
    wall = time.perf_counter() - started
    err = Path(f"{folder / 'notify-long.sock'}.log").read_text(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"daemon failed: {err[-2000:]}")
    rss = np.array([r for _, r in samples])
    n = len(rss)
    tenth = max(1, n // 10)
    return {
        "wall_seconds": round(wall, 1),
        "rss_samples": n,
        "rss_steady_mb": round(float(np.median(rss[n // 2 :])), 1),
        "rss_peak_mb": round(float(rss.max()), 1),
        "rss_growth_mb": round(float(rss[-tenth:].mean() - rss[tenth : 2 * tenth].mean()), 2),
        "rss_first_mb": round(float(rss[0]), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REPO / "models" / "demo"), help="model folder (default: models/demo)")
    parser.add_argument("--hours", type=float, default=6.0, help="audio replayed for the memory run (hours, default: 6)")
    parser.add_argument("--starts", type=int, default=3, help="start-up measurements, median reported (default: 3)")
    parser.add_argument("--mqtt", action="store_true", help="publish to a private mosquitto (state, telemetry, events)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-daemon-") as tmp:
        folder = Path(tmp)
        broker, port = start_broker(folder, "persistence false\n") if args.mqtt else (None, None)
        try:
            loop = make_loop_wav(folder)
            starts = [time_to_ready(write_config(folder, Path(args.model), loop, 1, port), folder) for _ in range(args.starts)]
            repeats = max(1, round(args.hours * 3600 / LOOP_SECONDS))
            long = long_replay(write_config(folder, Path(args.model), loop, repeats, port), folder)
        finally:
            if broker is not None:
                broker.terminate()
                broker.wait(10)
    audio_seconds = repeats * LOOP_SECONDS
    figures = {
        "start_to_first_window_seconds": round(statistics.median(s for s, _ in starts), 3),
        "start_runs_seconds": [round(s, 3) for s, _ in starts],
        "rss_at_first_window_mb": round(statistics.median(r for _, r in starts if r is not None), 1),
        "audio_hours": round(audio_seconds / 3600, 2),
        **long,
        "realtime_factor_x": round(audio_seconds / long["wall_seconds"], 1),
        "mqtt": bool(args.mqtt),
        "targets": {"rss_mb": TARGET_RSS_MB, "start_seconds": TARGET_START_SECONDS},
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"start to first analysed window: {figures['start_to_first_window_seconds']:.2f} s "
              f"(runs {figures['start_runs_seconds']}; target < {TARGET_START_SECONDS} s)")
        print(f"RSS at first window: {figures['rss_at_first_window_mb']} MB; steady over {figures['audio_hours']} h "
              f"of audio: {long['rss_steady_mb']} MB (peak {long['rss_peak_mb']} MB; target <= {TARGET_RSS_MB} MB)")
        print(f"RSS growth, second tenth to last tenth of the run: {long['rss_growth_mb']:+.2f} MB")
        print(f"whole daemon: {figures['audio_hours']} h of audio in {long['wall_seconds']} s "
              f"= {figures['realtime_factor_x']}x real time")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The daemon as a process: start to first analysed window, steady-state memory, and memory over 6 hours of audio.

Usage: python benchmarks/bench_daemon.py [--model models/demo] [--hours 6] [--starts 3] [--mqtt] [--metrics] [--web]
       [--json]
       python benchmarks/bench_daemon.py --soak [--hours 24]
       python benchmarks/bench_daemon.py --features [--hours 1]

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

--soak (MQTT on): the loop holds a fault, so every minute of audio raises an alarm (events through
the spool, an evidence clip and PNG under the evidence quota), and commands (ping, set_threshold at
the model's own threshold) are published every 0.5 s of wall time; a subscriber checks that every
event arrives (every start has its end, seq without gaps) and every command is answered. Reports
RSS growth per day of audio: a least-squares line through the second half of the RSS samples
(audio time taken as proportional to wall time, which a constant-speed replay gives).
--features (MQTT on): the same replay with band levels off, on (the default), with input filters, and with the
level rule and a schedule, one after the other: CPU seconds per audio hour (the process's user + system time),
real-time factor and steady RSS of each.
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

from broker import start_broker

from device.audio.audio_io import read_wav, write_wav

LOOP_SECONDS = 60
SAMPLE_EVERY_SECONDS = 0.25
TARGET_RSS_MB = 80.0
TARGET_START_SECONDS = 1.0
DEVICE_ID, SITE = "bench-pump", "bench"
BASE_TOPIC = f"acmon/{SITE}/{DEVICE_ID}"
COMMAND_EVERY_SECONDS = 0.5
WEB_TOKEN = "bench-web-token-0123456789"


def make_loop_wav(folder: Path, with_fault: bool = False) -> Path:
    """A 60 s WAV of normal demo pump sound (training.synth), the unit the 6-hour replay loops over."""
    from training.synth import make_demo_dataset  # a benchmark helper, not the device

    make_demo_dataset(folder / "demo", seed=0)
    clips = sorted((folder / "demo" / "pump").rglob("normal_*.wav"))
    audio, rate = [], 16000
    for clip in clips:
        x, rate = read_wav(clip)
        audio.append(x[:, 0])
        if sum(len(a) for a in audio) >= LOOP_SECONDS * rate:
            break
    audio = np.concatenate(audio)[: LOOP_SECONDS * rate]
    if with_fault:  # the last 10 s of every minute: a clip with a fault (an alarm per loop)
        fault, _ = read_wav(sorted((folder / "demo" / "pump").rglob("anomaly_*.wav"))[0])
        n = min(len(fault), 10 * rate)
        audio[-n:] = fault[:n, 0]
    loop = folder / "loop.wav"
    write_wav(loop, audio, rate)
    return loop


def write_config(
    folder: Path,
    model: Path,
    wav: Path,
    repeats: int,
    mqtt_port: int | None = None,
    metrics: bool = False,
    web_port: int | None = None,
    extra: str = "",
    name: str = "",
) -> Path:
    cfg = folder / f"daemon-{repeats}{name}.yaml"
    paths = "\n".join(f"    - {wav}" for _ in range(repeats))
    mqtt = (
        f"mqtt: {{enabled: true, host: 127.0.0.1, port: {mqtt_port}, spool_dir: {folder / 'spool'}}}\n"
        if mqtt_port
        else "mqtt: {enabled: false}\n"
    )
    cfg.write_text(
        f"device: {{id: {DEVICE_ID}, site: {SITE}}}\n"
        f"model: {{path: {model}}}\n{mqtt}"
        f"evidence: {{directory: {folder / 'evidence'}, quota_mb: 20}}\n"
        f"audio:\n  source: wav\n  realtime: false\n  wav_paths:\n{paths}\n{extra}"
        + ("metrics: {enabled: true, port: 0}\n" if metrics else "")
        + (f"web: {{enabled: true, port: {web_port}, token_file: {folder / 'web-token'}}}\n" if web_port else "")
    )
    if web_port:
        (folder / "web-token").write_text(WEB_TOKEN + "\n")
    return cfg


class PagePoller:
    """What an open commissioning page asks for: status and spectrogram every second, events every 5 s."""

    def __init__(self, port: int):
        self.port = port
        self._next = 0.0
        self.polls = 0
        self.failures = 0
        self._answered = False  # failures count once the server has answered (it starts after the model loads)

    def __call__(self) -> None:
        import urllib.request

        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + 1.0
        paths = ["/api/status", "/api/spectrogram"] + (["/api/events"] if self.polls % 5 == 0 else [])
        for path in paths:
            request = urllib.request.Request(
                f"http://127.0.0.1:{self.port}{path}", headers={"Authorization": f"Bearer {WEB_TOKEN}"}
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    response.read()
                self._answered = True
            except OSError as exc:
                if self._answered:
                    self.failures += 1
                    print(f"page poll {path}: {exc}", file=sys.stderr)
        self.polls += 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float | None:
    """Resident set size of a process from /proc, in MB (10^6 bytes); None once it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
    except (OSError, ValueError):
        return None
    return None


def spawn(cfg: Path, notify_path: str, extra_env: dict | None = None) -> subprocess.Popen:
    """Start the daemon; its log goes to <notify_path>.log (a pipe nobody reads would fill and stall it)."""
    env = {**os.environ, **(extra_env or {}), "NOTIFY_SOCKET": notify_path}
    log = open(f"{notify_path}.log", "wb")  # the child holds it; closed when the file object is collected
    return subprocess.Popen(
        [sys.executable, "-m", "device", "run", "--config", str(cfg)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )


def time_to_ready(cfg: Path, folder: Path) -> tuple[float, float | None]:
    """(seconds from spawn to READY=1, RSS in MB at that moment)."""
    path = str(folder / "notify-start.sock")
    if os.path.exists(path):
        os.unlink(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(0.05)
        started = time.perf_counter()
        proc = spawn(cfg, path)
        while True:
            try:
                if b"READY=1" in sock.recv(4096):
                    break
            except TimeoutError:
                pass
            if proc.poll() is not None:  # it died before it was ready: say why, not a timeout a minute later
                lines = Path(f"{path}.log").read_text(errors="replace").strip().splitlines()
                raise SystemExit(f"the daemon exited ({proc.returncode}) before READY=1: {lines[-1] if lines else ''}")
            if time.perf_counter() - started > 60:
                proc.kill()
                raise SystemExit("the daemon was not READY within 60 s")
        elapsed = time.perf_counter() - started
        rss = rss_mb(proc.pid)
        proc.wait(timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"daemon failed: {Path(path + '.log').read_text(errors='replace')[-2000:]}")
    return elapsed, rss


def long_replay(cfg: Path, folder: Path, during=None, env: dict | None = None) -> dict:
    """Replay the long config; sample RSS until the daemon exits (calling during() between samples)."""
    samples: list[tuple[float, float]] = []
    started = time.perf_counter()
    proc = spawn(cfg, str(folder / "notify-long.sock"), env)
    while proc.poll() is None:
        rss = rss_mb(proc.pid)
        if rss is not None:
            samples.append((time.perf_counter() - started, rss))
        if during is not None:
            during()
        time.sleep(SAMPLE_EVERY_SECONDS)
    wall = time.perf_counter() - started
    err = Path(f"{folder / 'notify-long.sock'}.log").read_text(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"daemon failed: {err[-2000:]}")
    rss = np.array([r for _, r in samples])
    t = np.array([w for w, _ in samples])
    n = len(rss)
    tenth = max(1, n // 10)
    slope = float(np.polyfit(t[n // 2 :], rss[n // 2 :], 1)[0]) if n >= 8 else 0.0  # MB per wall second
    return {
        "rss_slope_mb_per_wall_second": slope,
        "wall_seconds": round(wall, 1),
        "rss_samples": n,
        "rss_steady_mb": round(float(np.median(rss[n // 2 :])), 1),
        "rss_peak_mb": round(float(rss.max()), 1),
        "rss_growth_mb": round(float(rss[-tenth:].mean() - rss[tenth : 2 * tenth].mean()), 2),
        "rss_first_mb": round(float(rss[0]), 1),
    }


class SoakClient:
    """Subscribes to the device's events and command results, and publishes commands on a schedule."""

    def __init__(self, port: int, threshold: float):
        import paho.mqtt.client as mqtt

        self.threshold = threshold
        self.events: dict[str, list[tuple[int, str]]] = {}  # event_id -> [(seq, state)]
        self.duplicates = 0
        self.sent = 0
        self.answered: dict[str, bool] = {}  # request_id -> ok
        self._next = 0.0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-soak")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"{BASE_TOPIC}/events", qos=1)
        self.client.subscribe(f"{BASE_TOPIC}/cmd/+/result", qos=1)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        body = json.loads(message.payload)
        if message.topic.endswith("/events"):
            seen = self.events.setdefault(body["event_id"], [])
            if (body["seq"], body["state"]) in seen:
                self.duplicates += 1
            else:
                seen.append((body["seq"], body["state"]))
        elif body.get("request_id"):
            self.answered[body["request_id"]] = bool(body["ok"])

    def tick(self) -> None:
        """Publish the next command when it is due (alternating ping and set_threshold)."""
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + COMMAND_EVERY_SECONDS
        name, args = ("ping", {}) if self.sent % 2 == 0 else ("set_threshold", {"value": self.threshold})
        self.client.publish(f"{BASE_TOPIC}/cmd/{name}", json.dumps({**args, "request_id": f"r{self.sent}"}), qos=1)
        self.sent += 1

    def report(self) -> dict:
        time.sleep(2.0)  # the last results and the final end events
        self.client.loop_stop()
        self.client.disconnect()
        alarms = len(self.events)
        unended = sum(1 for v in self.events.values() if not any(state == "end" for _, state in v))
        seqs = sorted(q for v in self.events.values() for q, _ in v)  # seq orders all of a device's events
        gaps = (seqs[-1] - seqs[0] + 1 - len(seqs)) if seqs else 0
        return {
            "alarms": alarms,
            "alarms_without_end": unended,
            "seq_missing": gaps,
            "messages": len(seqs),
            "duplicates_dropped": self.duplicates,
            "commands_sent": self.sent,
            "commands_answered": len(self.answered),
            "commands_ok": sum(self.answered.values()),
        }


def soak(args: argparse.Namespace) -> int:
    """MQTT, evidence and commands all active over --hours of audio: memory growth per day, nothing lost."""
    from device.analysis.inference import AnomalyModel

    threshold = AnomalyModel(Path(args.model)).threshold
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        folder = Path(tmp)
        broker, port = start_broker(folder, "persistence false\n")
        try:
            loop = make_loop_wav(folder, with_fault=True)
            repeats = max(1, round(args.hours * 3600 / LOOP_SECONDS))
            client = SoakClient(port, threshold)
            long = long_replay(
                write_config(folder, Path(args.model), loop, repeats, port),
                folder,
                client.tick,
                {"STATE_DIRECTORY": str(folder / "state")},
            )
            delivery = client.report()
            evidence = [p for p in (folder / "evidence").rglob("*") if p.is_file()]
            evidence_mb = sum(p.stat().st_size for p in evidence) / 1e6
        finally:
            broker.terminate()
            broker.wait(10)
    audio_seconds = repeats * LOOP_SECONDS
    per_day = long["rss_slope_mb_per_wall_second"] * long["wall_seconds"] / audio_seconds * 86400
    figures = {
        "audio_hours": round(audio_seconds / 3600, 2),
        **long,
        "rss_growth_mb_per_audio_day": round(per_day, 2),
        **delivery,
        "evidence_files": len(evidence),
        "evidence_mb": round(evidence_mb, 1),
        "evidence_quota_mb": 20,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print("| measure (MQTT, evidence and commands on) | value |")
    print("|---|---|")
    print(f"| audio replayed | {figures['audio_hours']} h in {long['wall_seconds']} s |")
    print(
        f"| RSS first / steady (median of the second half) / peak | {long['rss_first_mb']} / {long['rss_steady_mb']} / "
        f"{long['rss_peak_mb']} MB |"
    )
    print(f"| RSS growth per day of audio (line through the second half) | {per_day:+.2f} MB |")
    print(
        f"| alarms / event messages / alarms without an end / seq numbers missing / duplicates dropped | "
        f"{delivery['alarms']} / {delivery['messages']} / {delivery['alarms_without_end']} / {delivery['seq_missing']} / "
        f"{delivery['duplicates_dropped']} |"
    )
    print(
        f"| commands sent / answered / ok (the last few can cross the daemon's exit) | {delivery['commands_sent']} / "
        f"{delivery['commands_answered']} / {delivery['commands_ok']} |"
    )
    print(f"| evidence files kept / size (quota 20 MB) | {len(evidence)} / {evidence_mb:.1f} MB |")
    return 0


# Issue 15 item 3's features, each added to the one before (YAML appended to the config; `audio:` is its last
# section, so filter keys continue it). The level rule's normal is set by hand here (calibrate records it on site).
FEATURE_STEPS = (
    ("levels off", "levels: {enabled: false}\n"),
    ("band levels (default)", ""),
    ("+ input filters (high-pass, 3 notches)", "  highpass_hz: 30\n  notch_hz: [50, 100, 150]\n"),
    (
        "+ level rule and schedule",
        "  highpass_hz: 30\n  notch_hz: [50, 100, 150]\n"
        "levels: {normal_db: {125: -40.0, 1000: -40.0}}\n"
        "detector: {level_rule: {bands_hz: [125, 1000], rise_db: 30}, "
        "schedule: [{start: '00:00', end: '24:00'}]}\n",
    ),
    (
        "+ power-line figures (towers)",
        "  highpass_hz: 30\n  notch_hz: [50, 100, 150]\n"
        "levels: {normal_db: {125: -40.0, 1000: -40.0}}\n"
        "detector: {level_rule: {bands_hz: [125, 1000], rise_db: 30}, "
        "schedule: [{start: '00:00', end: '24:00'}]}\n"
        "powerline: {enabled: true}\n",
    ),
)


def feature_costs(args: argparse.Namespace) -> int:
    """The daemon (MQTT on, so telemetry and its band levels are live) with issue 15 item 3's features added one at
    a time: CPU seconds per audio hour, real-time factor and steady RSS of each, over --hours of audio."""
    import resource

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-features-") as tmp:
        folder = Path(tmp)
        broker, port = start_broker(folder, "persistence false\n")
        try:
            loop = make_loop_wav(folder)
            repeats = max(1, round(args.hours * 3600 / LOOP_SECONDS))
            for i, (label, extra) in enumerate(FEATURE_STEPS):
                cfg = write_config(folder, Path(args.model), loop, repeats, port, extra=extra, name=f"-f{i}")
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                long = long_replay(cfg, folder, env={"STATE_DIRECTORY": str(folder / "state")})
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                hours = repeats * LOOP_SECONDS / 3600
                rows.append(
                    {
                        "feature": label,
                        "cpu_seconds_per_audio_hour": round(cpu / hours, 2),
                        "realtime_factor_x": round(hours * 3600 / long["wall_seconds"], 1),
                        "rss_steady_mb": long["rss_steady_mb"],
                    }
                )
        finally:
            broker.terminate()
            broker.wait(10)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"| daemon, MQTT on, {args.hours:g} h of audio | CPU s per audio hour | real time | steady RSS |")
    print("|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['feature']} | {row['cpu_seconds_per_audio_hour']:.1f} | {row['realtime_factor_x']:.0f}x | "
            f"{row['rss_steady_mb']} MB |"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REPO / "models" / "demo"), help="model folder (default: models/demo)")
    parser.add_argument(
        "--hours", type=float, default=6.0, help="audio replayed for the memory run (hours, default: 6)"
    )
    parser.add_argument("--starts", type=int, default=3, help="start-up measurements, median reported (default: 3)")
    parser.add_argument("--mqtt", action="store_true", help="publish to a private mosquitto (state, telemetry, events)")
    parser.add_argument("--metrics", action="store_true", help="serve the Prometheus endpoint (metrics.enabled)")
    parser.add_argument(
        "--web",
        action="store_true",
        help="serve the commissioning page (web.enabled), polled during the long run as an open page polls it",
    )
    parser.add_argument("--web-idle", action="store_true", help="with --web: serve the page but nobody opens it")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--soak",
        action="store_true",
        help="MQTT, evidence and commands all on, a fault every minute: RSS growth per day of audio, "
        "nothing lost (with --hours, default 6)",
    )
    parser.add_argument(
        "--features",
        action="store_true",
        help="CPU, speed and RSS with band levels, input filters, level rule and schedule added one at a time "
        "(MQTT on; with --hours, e.g. 1)",
    )
    args = parser.parse_args(argv)
    if not Path(args.model).exists():
        raise SystemExit(f"no model at {args.model}: run `make demo` first, or pass --model MODEL")
    if args.soak:
        return soak(args)
    if args.features:
        return feature_costs(args)

    with tempfile.TemporaryDirectory(prefix="bench-daemon-") as tmp:
        folder = Path(tmp)
        broker, port = start_broker(folder, "persistence false\n") if args.mqtt else (None, None)
        web_port = free_port() if args.web else None
        poller = PagePoller(web_port) if web_port and not args.web_idle else None
        try:
            loop = make_loop_wav(folder)
            starts = [
                time_to_ready(write_config(folder, Path(args.model), loop, 1, port, args.metrics, web_port), folder)
                for _ in range(args.starts)
            ]
            repeats = max(1, round(args.hours * 3600 / LOOP_SECONDS))
            long = long_replay(
                write_config(folder, Path(args.model), loop, repeats, port, args.metrics, web_port), folder, poller
            )
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
        "metrics": bool(args.metrics),
        "web": bool(args.web),
        "web_polls": poller.polls if poller else 0,
        "web_poll_failures": poller.failures if poller else 0,
        "targets": {"rss_mb": TARGET_RSS_MB, "start_seconds": TARGET_START_SECONDS},
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(
            f"start to first analysed window: {figures['start_to_first_window_seconds']:.2f} s "
            f"(runs {figures['start_runs_seconds']}; target < {TARGET_START_SECONDS} s)"
        )
        print(
            f"RSS at first window: {figures['rss_at_first_window_mb']} MB; steady over {figures['audio_hours']} h "
            f"of audio: {long['rss_steady_mb']} MB (peak {long['rss_peak_mb']} MB; target <= {TARGET_RSS_MB} MB)"
        )
        print(f"RSS growth, second tenth to last tenth of the run: {long['rss_growth_mb']:+.2f} MB")
        print(
            f"whole daemon: {figures['audio_hours']} h of audio in {long['wall_seconds']} s "
            f"= {figures['realtime_factor_x']}x real time"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

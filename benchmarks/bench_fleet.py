"""A fleet on one machine: N simulated devices replay audio at real-time pace into one mosquitto.

Usage: python benchmarks/bench_fleet.py [--model models/demo] [--devices 100] [--normal-seconds 4] [--json]

Each device is a real Runner (pipeline, int8 model, detector, publisher with its on-disk
spool) on its own thread in this process, replaying the same clip: a normal recording
followed by a faulty one, so the fault's onset in the audio is known. One subscriber on the
broker records when each event arrives. Measured:
- events delivered per second, and events lost (published by a device minus received
  after deduplication on (event_id, seq); must be 0);
- alert latency: arrival of a device's `start` event minus the wall-clock time its replay
  reached the fault onset (replay start + onset seconds). The target is one analysis window
  + one hop + 100 ms.
All devices share this process's 2 cores, so latency includes their contention; a benchmark,
not a test.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import threading
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

from device.audio.audio_io import read_wav, to_mono, write_wav
from device.audio.sources import WavFileStream
from device.daemon.runner import Runner
from device.settings.config import config_from_dict

PREFIX = "fleet"


def make_clip(data: Path, out: Path, normal_seconds: float) -> tuple[float, float]:
    """normal audio then a fault; returns (onset seconds, clip seconds)."""
    normal, rate = read_wav(sorted((data / "test").glob("normal_*.wav"))[0])
    fault, fault_rate = read_wav(sorted((data / "test").glob("anomaly_*.wav"))[0])
    assert rate == fault_rate
    head = to_mono(normal)[: int(normal_seconds * rate)]
    clip = np.concatenate([head, to_mono(fault)])
    write_wav(out, clip, rate)
    return len(head) / rate, len(clip) / rate


class Collector:
    """Subscriber to every device's events; keeps (arrival time, payload)."""

    def __init__(self, port: int):
        import paho.mqtt.client as mqtt

        self.received: list[tuple[float, dict]] = []
        self._lock = threading.Lock()
        ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *a: c.subscribe(f"{PREFIX}/+/+/events", qos=1)
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert ready.wait(10)

    def _on_message(self, client, userdata, message) -> None:
        arrived = time.time()
        with self._lock:
            self.received.append((arrived, json.loads(message.payload)))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def run_device(index: int, port: int, model: Path, clip: Path, spool: Path, results: dict) -> None:
    cfg = config_from_dict(
        {
            "device": {"id": f"dev-{index:03d}", "site": "bench"},
            "mqtt": {
                "host": "127.0.0.1",
                "port": port,
                "topic_prefix": PREFIX,
                "spool_dir": str(spool),
                "homeassistant_discovery": False,
            },
        }
    )
    runner = Runner(cfg, model_path=str(model), events_out=None)
    with runner:
        stream = WavFileStream(clip, runner.model.params.sample_rate_hz, realtime=True)
        started = time.time()
        runner.run_stream(stream.name, stream.blocks())
        queued = runner.outbox.publisher.stats.queued
        undelivered = runner.close(flush_seconds=30)
    results[cfg.device.id] = {"started": started, "queued": queued, "undelivered": undelivered}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(REPO / "models" / "demo"), help="model folder (default: models/demo)")
    parser.add_argument(
        "--data",
        default=str(REPO / "data" / "demo" / "pump"),
        help="DCASE-layout folder with test/normal_* and test/anomaly_*",
    )
    parser.add_argument("--devices", type=int, default=100, help="simulated devices (default: 100)")
    parser.add_argument(
        "--normal-seconds", type=float, default=4.0, help="normal audio before the fault (seconds, default: 4)"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if shutil.which("mosquitto") is None:
        sys.exit("mosquitto is not installed")

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        clip = workdir / "clip.wav"
        onset, clip_seconds = make_clip(Path(args.data), clip, args.normal_seconds)
        broker, port = start_broker(workdir, "max_queued_messages 100000\n")
        collector = Collector(port)
        results: dict[str, dict] = {}
        threads = [
            threading.Thread(
                target=run_device, args=(i, port, Path(args.model), clip, workdir / "spool", results), name=f"dev-{i}"
            )
            for i in range(args.devices)
        ]
        t0 = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join(clip_seconds + 120)
        wall = time.time() - t0
        time.sleep(1.0)  # the last PUBACKed messages reach the subscriber
        collector.close()
        broker.terminate()
        broker.wait(10)

    unique: dict[tuple[str, int], tuple[float, dict]] = {}
    for arrived, event in collector.received:
        unique.setdefault((event["event_id"], event["seq"]), (arrived, event))
    published = sum(r["queued"] for r in results.values())
    latencies = []
    for device, r in results.items():
        starts = sorted(
            a
            for a, e in unique.values()
            if e["device_id"] == device and e["state"] == "start" and e["start_stream_seconds"] >= onset - 1.5
        )
        if starts:
            latencies.append(starts[0] - (r["started"] + onset))
    from device.analysis.features import FeatureParams

    params = FeatureParams()
    figures = {
        "devices": args.devices,
        "devices_finished": len(results),
        "clip_seconds": round(clip_seconds, 2),
        "fault_onset_seconds": round(onset, 2),
        "wall_seconds": round(wall, 1),
        "events_published": published,
        "events_received_unique": len(unique),
        "duplicates": len(collector.received) - len(unique),
        "events_lost": published - len(unique),
        "events_per_second": round(len(unique) / wall, 1),
        "devices_alerted_after_onset": len(latencies),
        "latency_median_seconds": round(statistics.median(latencies), 3) if latencies else None,
        "latency_p95_seconds": round(float(np.percentile(latencies, 95)), 3) if latencies else None,
        "latency_max_seconds": round(max(latencies), 3) if latencies else None,
        "latency_target_seconds": round(params.window_seconds + params.hop_seconds + 0.1, 3),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for key, value in figures.items():
            print(f"{key:30s} {value}")
    return 0 if figures["events_lost"] == 0 and len(results) == args.devices else 1


if __name__ == "__main__":
    sys.exit(main())

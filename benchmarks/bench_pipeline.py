"""Speed of the device path: front end vs a scipy reference, int8 inference, and the whole replay pipeline.

Usage: python benchmarks/bench_pipeline.py [--model models/demo] [--seconds 120] [--json]

Measured in one run on the same windows:
- front end per analysis window: device.analysis.features.compute_logmel against the textbook
  route (scipy.signal.stft + mel matrix product + log), and their agreement;
- int8 inference per window (the runtime the device picks);
- whole pipeline (WavFileStream -> RingBuffer -> features -> int8 model -> Detector)
  real-time factor at the model's hop (50 % overlap by default);
- `device score`'s path (the config's source, the Runner's stream loop with health accounting, level gate
  and decisions) against a minimal reference doing the same job in a few lines (the WAV read with numpy,
  windows at the hop, log-mel with rfft and the mel matrix, the same model and scorer per window), their
  time ratio and whether their clip scores agree (issue 13's budget: at most 1.3x);
- the input filter (high-pass and three mains notches) and the 1/3-octave band levels per second of audio,
  and `device score`'s path with band levels measured and with filters on against neither, and with the
  power-line figures on (powerline.enabled, device/analysis/powerline.py);
- what explaining alarms costs (device/analysis/explain.py): per event window (the band summary of frames the
  pipeline already has) and per start/update message, and the replay with every window inside an event,
  explained or not (models that record normal band levels);
- peak resident memory of this process.
Runs on one core (one BLAS thread, pinned to one CPU). A benchmark, not a test: numbers vary with
the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

# One core, as the budget says ("500x real time on one core"): one BLAS thread, as the daemon runs
# (device/__init__.py sets the same before numpy loads), and this process pinned to one CPU.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from device.analysis.features import POWER_FLOOR, FrameCache, compute_logmel, extract_patch, mel_filterbank
from device.analysis.inference import AnomalyModel
from device.analysis.levels import BandLevelMeter, band_table
from device.audio.audio_io import write_wav
from device.audio.filters import InputFilter
from device.audio.sources import WavFileStream
from device.decisions.detector import DetectorSettings
from device.pipeline import Pipeline, iter_windows


def scipy_reference(windows, params):
    """The same log-mel through scipy.signal.stft (no padding, periodic Hann) and a matrix product."""
    from scipy import signal

    fb = mel_filterbank(params)
    out = []
    for w in windows:
        _, _, z = signal.stft(
            w,
            nperseg=params.n_fft,
            noverlap=params.n_fft - params.stft_hop_samples,
            window="hann",
            boundary=None,
            padded=False,
            scaling="spectrum",
            detrend=False,
            return_onesided=True,
        )
        # scipy scales by 1/sum(window); undo it to compare raw power.
        power = (np.abs(z.T) * np.hanning(params.n_fft + 1)[:-1].sum()) ** 2
        out.append(10 * np.log10(np.maximum(power @ fb, POWER_FLOOR)))
    return out


def minimal_reference_scores(wav: Path, model) -> list[float]:
    """The scoring job in as few steps as numpy allows: what `device score` must not cost much more than.

    16-bit mono PCM with a 44-byte header (as write_wav makes it), windows at the model's hop, the log-mel
    in float64, mean-normalised, and the model with its score state (int8 inference and the scorer).
    """
    p = model.params
    x = np.fromfile(wav, dtype="<i2", offset=44).astype(np.float32) / 32768.0
    window = np.hanning(p.n_fft + 1)[:-1]
    fb = mel_filterbank(p).astype(np.float64)
    state = model.new_score_state()
    scores = []
    for start in range(0, len(x) - p.window_samples + 1, p.hop_samples):
        w = x[start : start + p.window_samples]
        frames = np.lib.stride_tricks.sliding_window_view(w, p.n_fft)[:: p.stft_hop_samples][: p.n_frames]
        spectrum = np.fft.rfft(frames * window, axis=1)
        logmel = 10.0 * np.log10(np.maximum((spectrum.real**2 + spectrum.imag**2) @ fb, POWER_FLOOR))
        scores.append(model.score((logmel - logmel.mean()).astype(np.float32), state))
    return scores


def acmon_score_path(
    wav: Path, model_path: Path, config: dict | None = None, levels: bool = False
) -> tuple[float, list[float]]:
    """`python -m device score`'s path for one file, in process: the Runner (no MQTT, no events out), the source
    the config opens (the default config unless given), run_stream. Returns (seconds, window scores).

    levels: measure the band levels as the daemon does when it publishes telemetry (`score` itself skips them).
    """
    from device.audio.sources import open_source
    from device.daemon.runner import Runner
    from device.settings.config import config_from_dict

    cfg = config_from_dict(config or {})
    runner = Runner(cfg, model_path=str(model_path), use_mqtt=False, events_out=None)
    runner.measure_levels = levels
    started = time.perf_counter()
    stream = open_source(cfg.audio, runner.model.params.sample_rate_hz, wav)
    summary = runner.run_stream(str(wav), stream.blocks())
    return time.perf_counter() - started, summary.scores


def score_command_start(model_path: Path, wav: Path, repeats: int = 3) -> float:
    """Wall time of `python -m device score` on a one-window clip (imports, config, model, one window, exit):
    what starting costs, best of `repeats`."""
    import subprocess

    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "device", "score", "--model", str(model_path), str(wav)],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        times.append(time.perf_counter() - t)
    return min(times)


def explain_costs(model, wav: Path, windows) -> dict:
    """What explaining alarms costs: EventExplainer.add per event window, take per message, and a replay where
    every window is inside one event (threshold near 0, an update a minute) with and without the explainer,
    alternated so that load on the machine falls on both, in CPU time of this process (best of 9: on a shared
    machine wall time swings by 20 % between runs, more than the difference measured). {} when the model can
    explain nothing."""
    explainer = model.new_explainer()
    if explainer is None:
        return {}
    p = model.params
    logmels = [compute_logmel(w, p) for w in windows]
    output = np.full(len(explainer.labels), 1.0 / max(1, len(explainer.labels))) if explainer.labels else None
    add_s = best_of(lambda: [explainer.add(x, output) for x in logmels]) / len(logmels)
    take_s = best_of(lambda: [(explainer.add(x, output), explainer.take()) for x in logmels]) / len(logmels) - add_s
    settings = DetectorSettings(threshold=1e-9, patience_windows=1, update_seconds=60.0)

    def replay(explained: bool) -> float:
        pipe = Pipeline(model, settings)
        if not explained:
            pipe._explainer = None
        started = time.process_time()
        for block in WavFileStream(wav, p.sample_rate_hz, block_samples=1024).blocks():
            pipe.process(block)
        return time.process_time() - started

    with_s, without_s = [], []
    for _ in range(9):
        with_s.append(replay(True))
        without_s.append(replay(False))
    return {
        "explain_add_ms": add_s * 1e3,
        "explain_take_ms": take_s * 1e3,
        "explained_replay_seconds": min(with_s),
        "unexplained_replay_seconds": min(without_s),
        "explained_over_unexplained": min(with_s) / min(without_s),
    }


def best_of(fn, repeats=5):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=str(REPO / "models" / "demo"), help="model file or folder (default: models/demo)"
    )
    parser.add_argument(
        "--seconds", type=float, default=120.0, help="length of the replayed audio (seconds, default: 120)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    args = parser.parse_args()
    model_path = Path(args.model)
    if not (model_path / "model.tflite").exists() and not model_path.is_file():
        print(f"error: {model_path}: no model; run `make demo` first or pass --model", file=sys.stderr)
        return 1
    model = AnomalyModel(model_path)
    p = model.params
    rng = np.random.default_rng(0)
    t = np.arange(int(args.seconds * p.sample_rate_hz)) / p.sample_rate_hz
    audio = (0.1 * np.sin(2 * np.pi * 50 * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    windows = [w.samples for w in iter_windows([audio], p)]
    n = len(windows)

    ours_s = best_of(lambda: [compute_logmel(w, p) for w in windows]) / n
    starts = [k * p.hop_samples for k in range(n)]

    def streamed():
        cache = FrameCache(p)
        return [cache.logmel(w, s) for w, s in zip(windows, starts)]

    stream_s = best_of(streamed) / n
    ref_s = best_of(lambda: scipy_reference(windows, p)) / n
    diff_db = max(
        float(np.max(np.abs(a - compute_logmel(w, p)))) for a, w in zip(scipy_reference(windows[:20], p), windows[:20])
    )
    patches = [extract_patch(w, p) for w in windows]
    # With the stream's score state, as the pipeline runs it (the context member keeps the last windows).
    state = model.new_score_state()
    infer_s = best_of(lambda: [model.score(x, state) for x in patches], repeats=3) / n

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "bench.wav"
        write_wav(wav, audio, p.sample_rate_hz)

        def replay():
            pipe = Pipeline(model, DetectorSettings(threshold=model.threshold))
            for block in WavFileStream(wav, p.sample_rate_hz, block_samples=1024).blocks():
                pipe.process(block)

        replay_s = best_of(replay, repeats=3)
        explain = explain_costs(model, wav, windows)

        # device score's path against the minimal reference, alternated so that load on the machine falls on both.
        acmon_times, reference_times = [], []
        for _ in range(5):
            seconds, acmon_scores = acmon_score_path(wav, model_path)
            acmon_times.append(seconds)
            t0 = time.perf_counter()
            reference_scores = minimal_reference_scores(wav, model)
            reference_times.append(time.perf_counter() - t0)
        agree = float(np.max(np.abs(np.array(acmon_scores) - np.array(reference_scores))))
        # Issue 15 item 3's features on the same path: band levels measured (as with telemetry), and input filters.
        filters = {"audio": {"highpass_hz": 30.0, "notch_hz": [50.0, 100.0, 150.0]}}
        feature_times: dict[str, list[float]] = {"levels": [], "levels_filters": [], "plain": [], "powerline": []}
        for _ in range(3):
            feature_times["plain"].append(acmon_score_path(wav, model_path)[0])
            feature_times["powerline"].append(acmon_score_path(wav, model_path, {"powerline": {"enabled": True}})[0])
            feature_times["levels"].append(acmon_score_path(wav, model_path, levels=True)[0])
            feature_times["levels_filters"].append(acmon_score_path(wav, model_path, filters, levels=True)[0])
        one_window = Path(tmp) / "one_window.wav"
        write_wav(one_window, audio[: p.window_samples], p.sample_rate_hz)
        start_s = score_command_start(model_path, one_window)
    input_filter = InputFilter(p.sample_rate_hz, 30.0, [50.0, 100.0, 150.0])
    blocks = [audio[i : i + 1024] for i in range(0, len(audio), 1024)]

    def run_filter():
        input_filter.reset()
        for block in blocks:
            input_filter.process(block)

    filter_s = best_of(run_filter, repeats=3) / args.seconds
    meter = BandLevelMeter(p.sample_rate_hz, band_table(p.sample_rate_hz))

    def run_meter():
        meter.reset()
        for block in blocks:
            for _ in meter.process(block):
                pass

    levels_s = best_of(run_meter, repeats=3) / args.seconds
    plain_s, levels_path_s, filters_path_s = (min(feature_times[k]) for k in ("plain", "levels", "levels_filters"))
    results = {
        "input_filter_ms_per_audio_second": filter_s * 1e3,
        "band_levels_ms_per_audio_second": levels_s * 1e3,
        "score_path_with_levels_over_without": levels_path_s / plain_s,
        "score_path_with_powerline_over_without": min(feature_times["powerline"]) / plain_s,
        "score_path_with_powerline_real_time_factor": args.seconds / min(feature_times["powerline"]),
        "score_path_with_levels_and_filters_over_without": filters_path_s / plain_s,
        "windows": n,
        "window_seconds": p.window_seconds,
        "hop_seconds": p.hop_seconds,
        "runtime": model.runtime.name,
        "frontend_ms_per_window": ours_s * 1e3,
        "frontend_streamed_ms_per_window": stream_s * 1e3,
        "scipy_reference_ms_per_window": ref_s * 1e3,
        "frontend_max_abs_difference_db": diff_db,
        "int8_inference_ms_per_window": infer_s * 1e3,
        "replay_real_time_factor": args.seconds / replay_s,
        "score_path_seconds": min(acmon_times),
        "minimal_reference_seconds": min(reference_times),
        "score_path_over_reference": min(acmon_times) / min(reference_times),
        "score_path_real_time_factor": args.seconds / min(acmon_times),
        "largest_window_score_difference": agree,
        "score_command_start_seconds": start_s,
        **explain,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"| measure ({n} windows of {p.window_seconds:.2f} s, hop {p.hop_seconds:.2f} s) | value |")
    print("|---|---|")
    print(f"| front end, acmon (numpy rfft + mel matmul) | {ours_s * 1e3:.3f} ms/window |")
    print(
        f"| front end as the pipeline runs it (FrameCache: frames shared by overlapping windows computed once) | "
        f"{stream_s * 1e3:.3f} ms/window |"
    )
    print(f"| front end, reference (scipy.signal.stft + mel matmul) | {ref_s * 1e3:.3f} ms/window |")
    print(f"| largest difference between the two | {diff_db:.4f} dB |")
    print(f"| int8 inference ({model.runtime.name}, 1 thread) | {infer_s * 1e3:.3f} ms/window |")
    print(f"| whole replay pipeline (WAV to decisions) | {args.seconds / replay_s:.0f}x real time |")
    print(
        f"| `device score`'s path / minimal reference (same WAV, same model) | {results['score_path_over_reference']:.2f}x "
        f"({min(acmon_times) * 1e3:.0f} vs {min(reference_times) * 1e3:.0f} ms; window scores within {agree:.1e}) |"
    )
    print(f"| `device score`'s path | {results['score_path_real_time_factor']:.0f}x real time |")
    print(f"| start: `python -m device score` on one window, whole process | {start_s:.2f} s |")
    print(
        f"| input filter (high-pass + notches at 50, 100, 150 Hz), 1024-sample blocks | {filter_s * 1e3:.2f} ms per audio second |"
    )
    print(f"| 1/3-octave band levels (25 bands, 1 s frames every 0.5 s) | {levels_s * 1e3:.2f} ms per audio second |")
    print(
        f"| `device score`'s path with band levels measured / with levels and filters, against neither | "
        f"{levels_path_s / plain_s:.2f}x / {filters_path_s / plain_s:.2f}x ({plain_s * 1e3:.0f}, {levels_path_s * 1e3:.0f}, "
        f"{filters_path_s * 1e3:.0f} ms) |"
    )
    print(
        f"| `device score`'s path with the power-line figures on, against off | "
        f"{results['score_path_with_powerline_over_without']:.2f}x "
        f"({results['score_path_with_powerline_real_time_factor']:.0f}x real time) |"
    )
    if explain:
        print(f"| explanation, per window inside an event (band summary) | {explain['explain_add_ms'] * 1e3:.1f} us |")
        print(f"| explanation, per start/update message (bands named) | {explain['explain_take_ms'] * 1e3:.1f} us |")
        print(
            f"| replay with every window inside an event, CPU time: explained / not explained | "
            f"{explain['explained_over_unexplained']:.3f}x ({explain['explained_replay_seconds'] * 1e3:.0f} vs "
            f"{explain['unexplained_replay_seconds'] * 1e3:.0f} ms) |"
        )
    else:
        print("| explanation | the model records no normal band levels and no fault classes: nothing to explain |")
    print(f"| peak RSS of this process (incl. scipy for the reference) | {results['peak_rss_mb']:.0f} MB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

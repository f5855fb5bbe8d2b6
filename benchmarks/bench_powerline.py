"""Power-line figures (device/analysis/powerline.py) measured: on tower clips of two synthetic families, normal
against corona and the other tower faults, and on real machine recordings (no power line: do crackles appear?).

Usage: python benchmarks/bench_powerline.py [--clips 12] [--ids 4] [--json OUT] [--real ../shared/data/real]

- plant: benchmarks/plant_synth.py's tower (50 or 60 Hz per id, its grid wandering slowly; corona, tracking_arc,
  loose_hardware at levels drawn from FAULT_LEVEL_DB, SNR 0 to 12 dB), 10 s clips. The true mean mains frequency
  of each clip is recomputed from the generator's own grid model (Mains: f + dev * mean(slow(t))).
- synth: training/synth.py's 'transformer' (ids 3, 7, ... on 60 Hz; corona at strengths 0.1 to 1), 10 s clips;
  its grid drifts within 0.2 %, the true value is not exposed: errors are against the nominal frequency.
- real: every WAV under the real-recordings folder (fans, pumps, valves, toy machines, street sounds), resampled
  to 16 kHz as the device would be configured: lock rate, mains found, crackle rate.
- cost: milliseconds per second of 16 kHz audio of PowerlineMeter.process + take on a corona clip (one core).

Per figure and fault, the AUC of the figure as a fault score against the normal clips (no lock: comb 0 dB,
concentration 0). Prints a Markdown table (README.md's); a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from device.analysis.powerline import PowerlineMeter, powerline_figures

RATE = 16000
SECONDS = 10.0
SCORES = ("comb_db", "crackle_rate_per_s", "phase_concentration", "corona_score")
# A clip looks like corona when its crackles are many and locked to the hum: at least this rate and concentration.
CORONA_RATE_PER_S = 5.0
CORONA_CONCENTRATION = 0.5


def auc(normal: list[float], fault: list[float]) -> float:
    """P(fault score > normal score), ties counting half (the Mann-Whitney AUC)."""
    a, b = np.asarray(normal)[:, None], np.asarray(fault)[None, :]
    return float(np.mean((b > a) + 0.5 * (b == a)))


def _score(figures: dict, key: str) -> float:
    if key == "corona_score":  # crackles per second that sit at the hum's phase: rate x concentration
        return _score(figures, "crackle_rate_per_s") * _score(figures, "phase_concentration")
    value = figures.get(key)
    return 0.0 if value is None else float(value)


def plant_true_mains_hz(machine_id: int, seed: int) -> float:
    """The clip's mean mains frequency as plant_synth's grid model makes it (render_clip's own construction)."""
    from plant_synth import Tower, Weather, _individual, _rng

    ind = _individual("tower", machine_id, seed // 10**9, RATE)
    mach = Tower(ind, _rng(seed, "machine"), False, Weather(_rng(seed, "weather"), False, SECONDS), SECONDS, None)
    t0 = int(_rng(seed, "clip").integers(10 * RATE, 86400 * RATE)) / RATE
    mains = mach.mains_
    t = t0 + np.linspace(0.0, SECONDS, 2001)
    return float(mains.f + mains.dev * np.mean(mains.slow(t)))


def plant_set(ids: int, clips: int) -> list[dict]:
    from plant_synth import FAULT_LEVEL_DB, FAULTS_BY_TYPE, clip_seed, render_clip

    rows = []
    rng = np.random.default_rng(7)
    for machine_id in range(ids):
        for fault in (None, *FAULTS_BY_TYPE["tower"]):
            for index in range(clips):
                seed = clip_seed(0, "tower", machine_id, "test_anomaly" if fault else "test_normal", index)
                level = float(rng.uniform(*FAULT_LEVEL_DB[fault])) if fault else None
                x = render_clip("tower", machine_id, seed, SECONDS, fault, level, float(rng.uniform(0, 12)), RATE)
                rows.append(
                    {
                        "set": "plant",
                        "id": machine_id,
                        "fault": fault or "normal",
                        "true_hz": plant_true_mains_hz(machine_id, seed),
                        **powerline_figures(x, RATE),
                    }
                )
    return rows


def synth_set(ids: int, clips: int) -> list[dict]:
    from training.synth import machine_profile, render_clip

    rows = []
    rng = np.random.default_rng(8)
    for machine_id in range(ids):
        nominal = machine_profile("transformer", machine_id).mains_hz
        for fault in (None, "corona"):
            for index in range(clips):
                strength = float(rng.uniform(0.1, 1.0))
                x = render_clip(
                    "transformer",
                    machine_id,
                    SECONDS,
                    RATE,
                    fault=fault,
                    fault_strength=strength,
                    snr_db=float(rng.uniform(0, 12)),
                    seed=1000 * machine_id + index,
                )
                rows.append(
                    {
                        "set": "synth",
                        "id": machine_id,
                        "fault": fault or "normal",
                        "true_hz": None,
                        "nominal_true": nominal,
                        **powerline_figures(x, RATE),
                    }
                )
    return rows


def real_set(folder: Path) -> list[dict]:
    from device.audio.audio_io import read_wav
    from device.audio.resample import resample

    rows = []
    for manifest in sorted(folder.glob("*/manifest.csv")):
        with open(manifest, newline="") as f:
            for row in csv.DictReader(f):
                x, rate = read_wav(folder / row["path"])
                mono = x[:, 0].astype(np.float32)
                if rate != RATE:
                    mono = resample(mono, rate, RATE)
                figures = powerline_figures(mono, RATE)
                if figures is None:
                    continue
                rows.append(
                    {
                        "set": manifest.parent.name,
                        "fault": "anomaly" if row.get("is_anomaly") in ("1", "True", "true") else "normal",
                        "machine_type": (row.get("machine_type") or row.get("label") or "?").split(" ")[0],
                        **figures,
                    }
                )
    return rows


def cost_ms_per_second() -> tuple[float, float]:
    """(PowerlineMeter, BandLevelMeter as telemetry runs it) in ms per second of audio, on the same corona clip:
    the band meter is the reference for what a telemetry feature costs on the same machine and load."""
    from plant_synth import clip_seed, render_clip

    from device.analysis.levels import BandLevelMeter, band_table

    x = render_clip("tower", 0, clip_seed(0, "tower", 0, "test_anomaly", 0), 30.0, "corona", -4.0, 6.0, RATE)
    x = x.astype(np.float32)
    best, reference = np.inf, np.inf
    for _ in range(5):
        meter = PowerlineMeter(RATE)
        started = time.perf_counter()
        for i in range(0, len(x), 1024):
            meter.process(x[i : i + 1024])
        meter.take()
        best = min(best, time.perf_counter() - started)
        levels = BandLevelMeter(RATE, band_table(RATE))
        started = time.perf_counter()
        for i in range(0, len(x), 1024):
            for _frame in levels.process(x[i : i + 1024]):
                pass
        reference = min(reference, time.perf_counter() - started)
    return 1000.0 * best / 30.0, 1000.0 * reference / 30.0


def _median(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    return f"{np.median(values):.3g}" if values else "-"


def summary_table(rows: list[dict]) -> list[str]:
    lines = [
        "| set | clips | locked | mains error, Hz (median / max) | comb dB | crackles/s | phase conc. "
        "| AUC comb | AUC crackle rate | AUC phase conc. | AUC rate x conc. |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["set"] for r in rows):
        group = [r for r in rows if r["set"] == name]
        normal = [r for r in group if r["fault"] == "normal"]
        for fault in dict.fromkeys(r["fault"] for r in group):
            clips = [r for r in group if r["fault"] == fault]
            locked = [r for r in clips if r["mains_hz"] is not None]
            errors = []
            for r in locked:
                truth = r.get("true_hz") or r.get("nominal_true") or r["nominal_hz"]
                errors.append(abs(r["mains_hz"] - truth))
            err = f"{np.median(errors):.3f} / {np.max(errors):.3f}" if errors else "-"
            aucs = ["-"] * len(SCORES)
            if fault != "normal" and normal:
                aucs = [f"{auc([_score(r, k) for r in normal], [_score(r, k) for r in clips]):.2f}" for k in SCORES]
            lines.append(
                f"| {name} {fault} | {len(clips)} | {len(locked)}/{len(clips)} | {err} "
                f"| {_median([r['comb_db'] for r in clips])} | {_median([r['crackle_rate_per_s'] for r in clips])} "
                f"| {_median([r['phase_concentration'] for r in clips])} | {' | '.join(aucs)} |"
            )
    return lines


def real_table(rows: list[dict]) -> list[str]:
    lines = [
        "| recordings | clips | mains locked (found, Hz) | clips with crackle | crackles/s (median / max) "
        f"| corona-like (>= {CORONA_RATE_PER_S:g}/s at conc. >= {CORONA_CONCENTRATION:g}) |",
        "|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["set"] for r in rows):
        for kind in dict.fromkeys(str(r["machine_type"]) for r in rows if r["set"] == name):
            clips = [r for r in rows if r["set"] == name and str(r["machine_type"]) == kind]
            locked = sorted({round(r["mains_hz"], 1) for r in clips if r["mains_hz"] is not None})
            rates = [r["crackle_rate_per_s"] for r in clips]
            found = ", ".join(f"{f:g}" for f in locked[:4]) + (" ..." if len(locked) > 4 else "")
            n_locked = sum(r["mains_hz"] is not None for r in clips)
            corona_like = sum(
                r["crackle_rate_per_s"] >= CORONA_RATE_PER_S
                and _score(r, "phase_concentration") >= CORONA_CONCENTRATION
                for r in clips
            )
            lines.append(
                f"| {name} {kind} | {len(clips)} | {n_locked} ({found or '-'}) "
                f"| {sum(r > 0 for r in rates)} | {np.median(rates):.2g} / {np.max(rates):.2g} | {corona_like} |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ids", type=int, default=4, help="machine ids per family (default: 4)")
    parser.add_argument("--clips", type=int, default=12, help="clips per id and fault (default: 12)")
    parser.add_argument("--real", type=Path, default=REPO.parent / "shared" / "data" / "real", help="real recordings")
    parser.add_argument("--json", type=Path, help="write every clip's figures here")
    args = parser.parse_args(argv)
    started = time.time()
    rows = plant_set(args.ids, args.clips) + synth_set(args.ids, args.clips)
    print(f"synthetic: {len(rows)} clips in {time.time() - started:.0f} s", file=sys.stderr)
    real = real_set(args.real) if args.real.is_dir() else []
    print("\n".join(summary_table(rows)))
    print()
    if real:
        print("\n".join(real_table(real)))
        print()
    cost, reference = cost_ms_per_second()
    print(
        f"cost: {cost:.3f} ms per second of 16 kHz audio (PowerlineMeter, blocks of 1024, one core); the band "
        f"levels of telemetry: {reference:.3f} ms on the same clip; load average {os.getloadavg()[0]:.1f}"
    )
    if args.json:
        args.json.write_text(json.dumps(rows + real, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

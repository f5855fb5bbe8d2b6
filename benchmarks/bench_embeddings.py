"""Pretrained embeddings (BirdNET 2.4, training/embeddings.py) measured beside acmon and the references.

Usage:
    python benchmarks/bench_embeddings.py --work DIR [--detection-work DIR] [--sets choose,real-fan,...]
    python benchmarks/bench_embeddings.py --help

Three measurements in one run:

1. Anomaly detection, on bench_detection.py's sets and with its roles (``choose`` chooses; the others are
   reported only and never steer the decision). Per group (a machine type of a set) the embedding of each
   clip is scored by
   - ``emb-gauss``: Mahalanobis distance of the clip's mean embedding to the normal training clips'
     (Ledoit-Wolf shrinkage, device.analysis.gaussian.fit_gaussian, the estimator acmon itself uses);
   - ``emb-gauss-ms``: the same on the mean and standard deviation over the clip's 3 s segments (2048-d);
   - ``emb-knn``: cosine distance to the nearest normal training clip (k = 1) on the mean embedding.
   Beside them: ``mahalanobis``, the clip-mean log-mel Mahalanobis reference (benchmarks/baselines.py,
   fitted here), and, when ``--detection-work`` names a bench_detection.py work folder that scored the
   same clips, its ``acmon`` (ours-int8: `training fit` + `device score`) and ``dcase2020-ae`` scores.
   Fitting acmon's default again for every group takes hours here, so its scores are taken from that
   run; the report names that run's code stamp and says whether it matches this checkout's.
   AUC per machine id, averaged per type (bench_detection.metrics).
2. Classification of the UrbanSound8K subset (10 classes, 104 clips of 4 s, folds 1, 2 and 10): a
   standardised logistic regression on the embeddings against the same on log-mel mean and standard
   deviation (acmon's front end), leave-one-fold-out accuracy.
3. Cost: seconds of one core per second of audio for the embedding here, the model file's size, and an
   estimate (not a measurement) for a Raspberry Pi 4.

The data of a synthetic set is read from ``--detection-work`` when that folder holds it (nothing is
written there); otherwise bench_detection's own builder generates it under ``--work``. Real sets are
built under ``--work`` by benchmarks/real_sets.py. Embeddings are cached under ``--work/cache``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_detection as bd
from baselines import MahalanobisBaseline

from device.analysis.features import FeatureParams, compute_logmel
from device.analysis.gaussian import fit_gaussian
from device.audio.audio_io import read_wav, to_mono
from device.audio.resample import resample
from training import embeddings

DETECTION_SETS = ("choose", "choose-faint", "plant") + bd.REAL_SETS
DEFAULT_SETS = ("choose", "real-fan", "real-dcase2020-dev", "plant")
EMB_METHODS = ("emb-gauss", "emb-gauss-ms", "emb-knn")
US8K = "data/real/urbansound8k_subset/manifest.csv"
# Estimate only, not measured on a Pi: a Pi 4's Cortex-A72 core against one core here for CNN inference. The
# README's published per-core figures put ncnn CNN inference at about 7x slower; 5 to 9 brackets it.
PI4_SLOWDOWN = (5.0, 9.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    add = parser.add_argument
    add("--work", required=True, help="this benchmark's folder: embedding cache, built sets, results")
    add("--detection-work", help="a bench_detection.py --work folder to read data and acmon's scores from")
    add(
        "--sets", default=",".join(DEFAULT_SETS), help=f"comma-separated detection sets, of {', '.join(DETECTION_SETS)}"
    )
    add("--quick", action="store_true", help="bench_detection's quick sizes for sets generated here")
    add("--shared", default=str(REPO.parent / "shared"), help="the shared data folder")
    add("--seed", type=int, default=0, help="seed of the real sets' cuts and injections (bench_detection's)")
    add("--no-classification", action="store_true", help="skip the UrbanSound8K classification")
    add("--json-out", help="write all results here")
    add("--markdown-out", help="write the Markdown report here")
    args = parser.parse_args(argv)
    args.sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [s for s in args.sets if s not in DETECTION_SETS]
    if unknown:
        parser.error(f"--sets: unknown {unknown}; choose from {', '.join(DETECTION_SETS)}")
    # bench_detection's builders read these; no long streams or site calibration are needed here.
    args.long_minutes, args.site_minutes = 0.0, 0.0
    return args


# ------------------------------------------------------------------------------------------------
# Sets (bench_detection's builders and loaders)
# ------------------------------------------------------------------------------------------------
def detection_groups(args: argparse.Namespace, work: Path) -> tuple[list[bd.Group], dict[str, str]]:
    groups: list[bd.Group] = []
    source: dict[str, str] = {}
    other = Path(args.detection_work).resolve() if args.detection_work else None
    for s in (s for s in args.sets if s not in bd.REAL_SETS):
        root = other / "data" / s if other else None
        if root is not None and (root / "manifest.csv").is_file() and (root / "bench_config.json").is_file():
            groups += bd._manifest_groups(s, root, "fault")  # read only: nothing is generated there
            source[s] = f"{root} ({json.loads((root / 'bench_config.json').read_text())})"
        else:
            groups += bd.synth_groups(s, work, args)
            source[s] = f"generated under {work / 'data' / s} ({'quick' if args.quick else 'full'} sizes)"
    real = [s for s in args.sets if s in bd.REAL_SETS]
    if real:
        groups += bd.real_groups(real, work, args)
        for s in real:
            source[s] = f"benchmarks/real_sets.py under {work / 'data' / 'real'}"
    return groups, source


def _relative(path: str | Path) -> str:
    """A clip's path from its set folder on, so two work folders' clips can be matched."""
    parts = Path(path).parts
    return "/".join(parts[parts.index("data") + 1 :]) if "data" in parts else str(path)


def detection_run_scores(group: bd.Group, other: Path | None) -> tuple[dict[str, list[float]], str | None]:
    """acmon's and the DCASE autoencoder's scores of the same clips from a bench_detection run, if it has them."""
    if other is None:
        return {}, None
    saved = other / "results" / group.set_name / f"{group.machine_type}.json"
    refs = other / "results" / "references" / group.set_name / f"{group.machine_type}.json"
    if not saved.is_file() or not refs.is_file():
        return {}, None
    done, ref = json.loads(saved.read_text()), json.loads(refs.read_text())
    theirs = [_relative(p) for p in ref["key"]["tests"]]
    ours = [_relative(t["path"]) for t in group.tests]
    if theirs != ours or len(done["scores"].get("ours-int8", [])) != len(ours):
        print(f"  {group.set_name}/{group.machine_type}: the detection run scored other clips; acmon left out")
        return {}, None
    out = {"acmon": done["scores"]["ours-int8"]}
    if "dcase2020-ae" in ref["scores"]:
        out["dcase2020-ae"] = ref["scores"]["dcase2020-ae"]
    return out, done["key"].get("code")


def load_clip(path: Path) -> tuple[np.ndarray, int]:
    samples, rate = read_wav(path)
    return to_mono(samples).astype(np.float32), int(rate)


# ------------------------------------------------------------------------------------------------
# Scorers on embeddings
# ------------------------------------------------------------------------------------------------
def gauss_scores(train: np.ndarray, test: np.ndarray) -> list[float]:
    fit = fit_gaussian(train)
    return np.sqrt(fit.distance(test) * train.shape[1]).tolist()


def knn_scores(train: np.ndarray, test: np.ndarray, k: int = 1) -> list[float]:
    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    d = 1.0 - unit(test.astype(np.float64)) @ unit(train.astype(np.float64)).T
    return np.sort(d, axis=1)[:, :k].mean(axis=1).tolist()


def embedding_scores(group: bd.Group, cache: Path) -> dict[str, list[float]]:
    train_paths = sorted((group.data_dir / "train").glob("*.wav"))
    rate = None
    clips = []
    for p in train_paths + [t["path"] for t in group.tests]:
        x, r = load_clip(p)
        if rate is not None and r != rate:
            raise SystemExit(f"{p}: {r} Hz, the group's other clips are {rate} Hz")
        rate = r
        clips.append(x)
    assert rate is not None
    segs = embeddings.segment_embeddings(clips, rate, cache_dir=cache, progress=True)
    mean = np.stack([embeddings.pool(s, "mean") for s in segs])
    mean_std = np.stack([embeddings.pool(s, "mean_std") for s in segs])
    n = len(train_paths)
    return {
        "emb-gauss": gauss_scores(mean[:n], mean[n:]),
        "emb-gauss-ms": gauss_scores(mean_std[:n], mean_std[n:]),
        "emb-knn": knn_scores(mean[:n], mean[n:]),
    }


def detection(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    groups, source = detection_groups(args, work)
    other = Path(args.detection_work).resolve() if args.detection_work else None
    by_id: list[dict[str, Any]] = []
    stamps: dict[str, str | None] = {}
    for group in groups:
        label = f"{group.set_name}/{group.machine_type}"
        started = time.monotonic()
        scores, stamp = detection_run_scores(group, other)
        stamps[label] = stamp
        train = [load_clip(p)[0] for p in sorted((group.data_dir / "train").glob("*.wav"))]
        clips = [load_clip(t["path"])[0] for t in group.tests]
        scores["mahalanobis"] = MahalanobisBaseline().fit(train).score(clips).tolist()
        scores.update(embedding_scores(group, work / "cache"))
        by_id += bd.metrics(group, scores)
        print(f"{label}: {len(train)} train, {len(clips)} test clips, {time.monotonic() - started:.0f} s", flush=True)
    return {"by_id": by_id, "sources": source, "detection_code_stamps": stamps}


def summarize(by_id: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for set_name in dict.fromkeys(e["set"] for e in by_id):
        entries = [e for e in by_id if e["set"] == set_name]
        methods = [m for m in ("acmon", "dcase2020-ae", "mahalanobis", *EMB_METHODS) if all(m in e for e in entries)]
        per_type = {}
        for machine_type in dict.fromkeys(e["machine_type"] for e in entries):
            sel = [e for e in entries if e["machine_type"] == machine_type]
            per_type[machine_type] = {m: float(np.mean([e[m]["auc"] for e in sel])) for m in methods}
        overall = {m: float(np.mean([e[m]["auc"] for e in entries])) for m in methods}
        out[set_name] = {"role": bd.ROLE[set_name], "methods": methods, "per_type": per_type, "mean": overall}
    return out


# ------------------------------------------------------------------------------------------------
# Classification (UrbanSound8K subset)
# ------------------------------------------------------------------------------------------------
def logmel_mean_std(waveforms: list[np.ndarray], sample_rate: int) -> np.ndarray:
    """Mean and standard deviation over a clip's frames of acmon's log-mel (16 kHz), (n, 2 * n_mels)."""
    params = FeatureParams()
    out = []
    for x in waveforms:
        if sample_rate != params.sample_rate_hz:
            x = resample(x, sample_rate, params.sample_rate_hz).astype(np.float32)
        whole = dataclasses.replace(params, window_samples=len(x), hop_samples=len(x))
        logmel = compute_logmel(x, whole).astype(np.float64)
        out.append(np.concatenate([logmel.mean(axis=0), logmel.std(axis=0)]))
    return np.stack(out)


def classification(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    manifest = Path(args.shared) / US8K
    with open(manifest, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    root = manifest.parent.parent
    clips, labels, folds, rate = [], [], [], None
    for r in rows:
        x, r_hz = load_clip(root / r["path"])
        rate = r_hz if rate is None else rate
        if r_hz != rate:
            raise SystemExit(f"{r['path']}: {r_hz} Hz, the others are {rate} Hz")
        clips.append(x)
        labels.append(r["label"])
        # The manifest has no fold column: the fold is the file name's prefix (fold10_119067-0-0-0.wav).
        folds.append(r.get("fold") or Path(r["path"]).name.split("_")[0].removeprefix("fold"))
    assert rate is not None
    started = time.monotonic()
    segs = embeddings.segment_embeddings(clips, rate, cache_dir=work / "cache", progress=True)
    features = {
        "BirdNET embedding (mean, 1024)": np.stack([embeddings.pool(s, "mean") for s in segs]),
        "BirdNET embedding (mean+std, 2048)": np.stack([embeddings.pool(s, "mean_std") for s in segs]),
        "log-mel mean+std (acmon front end, 128)": logmel_mean_std(clips, rate),
    }
    y, f = np.array(labels), np.array(folds)
    results: dict[str, Any] = {}
    for name, x in features.items():
        correct, per_fold = 0, {}
        for fold in sorted(set(folds), key=int):
            test = f == fold
            model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, C=0.1))
            model.fit(x[~test], y[~test])
            hits = int((model.predict(x[test]) == y[test]).sum())
            correct += hits
            per_fold[fold] = f"{hits}/{int(test.sum())}"
        results[name] = {"accuracy": correct / len(y), "correct": correct, "per_fold": per_fold}
    return {
        "clips": len(y),
        "classes": len(set(labels)),
        "folds": sorted(set(folds), key=int),
        "classifier": "StandardScaler + LogisticRegression(C=0.1), leave-one-fold-out",
        "results": results,
        "seconds": time.monotonic() - started,
    }


# ------------------------------------------------------------------------------------------------
# Cost
# ------------------------------------------------------------------------------------------------
def cost() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    audio_s = 60.0
    clip = (0.1 * rng.standard_normal(int(audio_s * 16000))).astype(np.float32)
    started = time.monotonic()
    model = embeddings.BirdNetEmbedder(num_threads=1)
    load_s = time.monotonic() - started
    embeddings.clip_embeddings([clip[: 16000 * 6]], 16000)  # warm up (first invoke prepares the kernels)
    best = []
    for _ in range(3):
        t0 = time.process_time()
        segments = embeddings.clip_segments(clip, 16000)
        t1 = time.process_time()
        model.embed_segments(segments)
        t2 = time.process_time()
        best.append((t1 - t0, t2 - t1))
    resample_s, embed_s = min(b[0] for b in best), min(b[1] for b in best)
    per_audio_s = (resample_s + embed_s) / audio_s
    return {
        **embeddings.describe(),
        "model_load_seconds": load_s,
        "cpu_seconds_per_audio_second": per_audio_s,
        "resample_share": resample_s / (resample_s + embed_s),
        "real_time_factor_one_core": 1.0 / per_audio_s,
        "pi4_estimate_cpu_seconds_per_audio_second": [per_audio_s * k for k in PI4_SLOWDOWN],
        "host": f"{platform.machine()}, {os.cpu_count()} cpu ({_cpu_name()})",
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------
def decision(summary: dict[str, Any]) -> list[str]:
    """Whether an embedding scorer wins, from the choosing set only."""
    choosing = {k: v for k, v in summary.items() if v["role"] == bd.CHOOSING}
    if not choosing:
        return ["No choosing set in this run: no decision."]
    lines = []
    for set_name, s in choosing.items():
        base = "acmon" if "acmon" in s["methods"] else "mahalanobis"
        for m in EMB_METHODS:
            wins = [t for t, v in s["per_type"].items() if v[m] > v[base] + 1e-9]
            verdict = "wins" if s["mean"][m] > s["mean"][base] else "loses"
            lines.append(
                f"{set_name}: {m} mean AUC {s['mean'][m]:.3f} against {base} {s['mean'][base]:.3f}: {verdict}"
                f" (above it on {', '.join(wins) if wins else 'no type'})"
            )
        if base != "acmon":
            lines.append(
                f"{set_name}: acmon's scores were not available (--detection-work): compared with the Mahalanobis "
                "reference only, which says nothing about acmon's default"
            )
    return lines


def markdown(result: dict[str, Any]) -> str:
    lines = ["### Anomaly detection: mean AUC per machine type (AUC per machine id, then averaged)", ""]
    summary = result.get("summary", {})
    methods = ["acmon", "dcase2020-ae", "mahalanobis", *EMB_METHODS]
    lines.append("| set | role | type | " + " | ".join(methods) + " |")
    lines.append("|---|---|---|" + "---:|" * len(methods))
    for set_name, s in summary.items():
        for t, v in [*s["per_type"].items(), ("**mean**", s["mean"])]:
            best = max(v.values())
            cells = [(f"**{v[m]:.3f}**" if v[m] >= best - 1e-9 else f"{v[m]:.3f}") if m in v else "-" for m in methods]
            lines.append(f"| {set_name} | {s['role']} | {t} | " + " | ".join(cells) + " |")
    lines += ["", "Decision (choosing set only):", ""] + [f"- {d}" for d in result.get("decision", [])]
    if "classification" in result:
        c = result["classification"]
        lines += [
            "",
            f"### Classification: UrbanSound8K subset ({c['clips']} clips, {c['classes']} classes, "
            f"leave-one-fold-out over folds {', '.join(c['folds'])})",
            "",
            f"{c['classifier']}.",
            "",
            "| features | accuracy | correct per held-out fold |",
            "|---|---:|---|",
        ]
        for name, r in c["results"].items():
            folds = ", ".join(f"fold {k}: {v}" for k, v in r["per_fold"].items())
            lines.append(f"| {name} | {r['accuracy']:.3f} ({r['correct']}/{c['clips']}) | {folds} |")
    if "cost" in result:
        k = result["cost"]
        lo, hi = k["pi4_estimate_cpu_seconds_per_audio_second"]
        lines += [
            "",
            "### Cost of the embedding",
            "",
            f"- Model: {k['model']}, {k['size_bytes'] / 1e6:.1f} MB float32 weights; input {k['input']}; "
            f"embedding {k['embedding']}.",
            f"- Here ({k['host']}), one thread: {k['cpu_seconds_per_audio_second'] * 1000:.1f} ms of CPU per second "
            f"of audio ({k['real_time_factor_one_core']:.0f}x real time; resampling 16 to 48 kHz is "
            f"{100 * k['resample_share']:.0f} % of it); loading the model {k['model_load_seconds']:.2f} s.",
            f"- Raspberry Pi 4 (an ESTIMATE, not measured: {PI4_SLOWDOWN[0]:g}-{PI4_SLOWDOWN[1]:g}x slower per core "
            f"for CNN inference): {lo * 1000:.0f}-{hi * 1000:.0f} ms per second of audio, "
            f"{1 / hi:.0f}-{1 / lo:.0f}x real time on one core, against acmon's at least 500x.",
        ]
    lines += ["", "Sources:", ""] + [f"- {k}: {v}" for k, v in result.get("sources", {}).items()]
    stamps = {v for v in result.get("detection_code_stamps", {}).values() if v}
    if stamps:
        current = bd._code_stamp()
        lines.append(
            f"- acmon and dcase2020-ae: scores of the bench_detection run in --detection-work (code stamp "
            f"{', '.join(sorted(stamps))}; this checkout's is {current}"
            f"{'' if stamps == {current} else ': acmon has changed since that run'})."
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        embeddings.model_path()
    except embeddings.EmbeddingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    result: dict[str, Any] = {"command": " ".join(sys.argv)}
    if args.sets:
        det = detection(args, work)
        result.update(det)
        result["summary"] = summarize(det["by_id"])
        result["decision"] = decision(result["summary"])
    if not args.no_classification:
        result["classification"] = classification(args, work)
    result["cost"] = cost()
    result["seconds"] = time.monotonic() - started
    report = markdown(result)
    print()
    print(report)
    if args.markdown_out:
        Path(args.markdown_out).write_text(report)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

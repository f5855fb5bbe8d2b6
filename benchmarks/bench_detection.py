"""Detection quality of acmon's int8 model against the DCASE 2020 Task 2 baseline and a Mahalanobis baseline.

Usage:
    python benchmarks/bench_detection.py [--quick] [--work DIR] [--json-out FILE] [--markdown-out FILE]
    python benchmarks/bench_detection.py --help        # sizes, ranges, epochs, seeds

One run, the same synthetic clips for every method (training.synth.make_dataset, DCASE 2020 layout):
per machine type, one model of each kind is trained on the normal training clips of all its machine ids
(as the DCASE 2020 baseline trains one model per machine type), and every test clip gets one score:

- ours-int8: training.fit.fit() with default FeatureParams, then the device's streaming path exactly as
  `python -m device score` runs it (Runner.run_stream over a WavFileStream: the mean of the window scores);
- ours-float: model_float.keras on the same windows (same level gate), scored with
  device.inference.output_score and the model's own score kind, mean over windows;
- dcase2020-ae: the DCASE 2020 Task 2 baseline re-implemented in benchmarks/baselines.py;
- mahalanobis: clip-mean log-mel (device front end, dB) with a Ledoit-Wolf covariance.

AUC and pAUC (FPR <= 0.1, DCASE definition: area / 0.1, chance = 0.05, NOT sklearn's McClish value) come
from training.metrics, per machine type and id as DCASE reports them, then averaged. A benchmark, not a
test: the numbers depend on the seeds, the dataset sizes and (for timing) the machine's load.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import os
import platform
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import DcaseBaseline, DcaseParams, MahalanobisBaseline  # noqa: E402
from device.audio_io import read_wav, to_mono  # noqa: E402
from device.config import AcmonConfig  # noqa: E402
from device.features import FeatureParams, extract_patch, rms_dbfs  # noqa: E402
from device.inference import output_score  # noqa: E402
from device.pipeline import iter_windows  # noqa: E402
from device.runner import Runner  # noqa: E402
from device.sources import WavFileStream  # noqa: E402
from training.metrics import partial_auc, roc_auc  # noqa: E402
from training.synth import FAULTS_BY_TYPE, MACHINE_TYPES, make_dataset  # noqa: E402

METHODS = ("ours-int8", "ours-float", "dcase2020-ae", "mahalanobis")
BASELINES = ("dcase2020-ae", "mahalanobis")
MAX_FPR = 0.1

DEFAULTS = dict(
    machine_types=",".join(MACHINE_TYPES), ids=3, train=30, test_normal=20, test_anomaly=20, seconds=10.0,
    snr_db="-3,9", fault_strength="0.1,1.0", epochs=10, dcase_epochs=50,
)
QUICK = dict(
    machine_types=",".join(MACHINE_TYPES), ids=2, train=8, test_normal=8, test_anomaly=8, seconds=5.0,
    snr_db="-3,9", fault_strength="0.1,1.0", epochs=2, dcase_epochs=10,
)

logger = logging.getLogger("bench_detection")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    add = parser.add_argument
    add("--quick", action="store_true",
        help="smoke-run sizes (about 3 minutes): " + ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    add("--machine-types", help=f"comma-separated types (default {DEFAULTS['machine_types']})")
    add("--ids", type=int, help=f"machine ids per type, 0..N-1 (default {DEFAULTS['ids']})")
    add("--train", type=int, help=f"normal training clips per machine id (default {DEFAULTS['train']})")
    add("--test-normal", type=int, help=f"normal test clips per machine id (default {DEFAULTS['test_normal']})")
    add("--test-anomaly", type=int, help=f"anomalous test clips per machine id (default {DEFAULTS['test_anomaly']})")
    add("--seconds", type=float, help=f"clip length in s (default {DEFAULTS['seconds']})")
    add("--snr-db", help=f"machine-to-background SNR range LO,HI in dB (default {DEFAULTS['snr_db']}; "
        "write negative values as --snr-db=-3,9)")
    add("--fault-strength", help=f"fault strength range LO,HI in (0, 1] (default {DEFAULTS['fault_strength']})")
    add("--epochs", type=int, help=f"max epochs for acmon's fit, early stopping on (default {DEFAULTS['epochs']}; "
        "FitOptions' own default is 40, which takes about 4x longer here)")
    add("--dcase-epochs", type=int, help=f"epochs for the DCASE 2020 AE (default {DEFAULTS['dcase_epochs']}; the original "
        "used 100, its validation loss is within about 1 %% of its 100-epoch value by 50)")
    add("--model", default="auto", choices=("auto", "gaussian", "autoencoder"),
        help="acmon's model kind (FitOptions.model; auto = the Gaussian model on this normal-only data)")
    add("--seed", type=int, default=0, help="seed for the dataset and all training")
    add("--no-float", action="store_true", help="skip scoring the float Keras model")
    add("--work", help="working folder for the dataset and models (default: a temporary folder, deleted at the end); "
        "an existing dataset there with the same configuration is reused")
    add("--json-out", help="write all results (config, per-id metrics, per-fault AUCs, per-clip scores, timings) here")
    add("--markdown-out", help="also write the Markdown report here")
    add("-v", "--verbose", action="store_true", help="show training progress")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else DEFAULTS
    for key, value in base.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def _pair(text: str) -> tuple[float, float]:
    lo, hi = (float(v) for v in str(text).split(","))
    return lo, hi


def dataset_config(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "machine_types": [t.strip() for t in args.machine_types.split(",") if t.strip()],
        "machine_ids": list(range(args.ids)),
        "n_train": args.train,
        "n_test_normal": args.test_normal,
        "n_test_anomaly": args.test_anomaly,
        "seconds": args.seconds,
        "snr_db_range": list(_pair(args.snr_db)),
        "fault_strength_range": list(_pair(args.fault_strength)),
        "seed": args.seed,
    }


def ensure_dataset(data_dir: Path, config: dict[str, Any]) -> tuple[bool, float]:
    """Generate the dataset unless data_dir already holds one made with this exact configuration."""
    stamp = data_dir / "bench_dataset_config.json"
    if stamp.exists() and json.loads(stamp.read_text()) == config and (data_dir / "manifest.csv").exists():
        return False, 0.0
    started = time.monotonic()
    make_dataset(
        data_dir,
        machine_types=config["machine_types"],
        machine_ids=config["machine_ids"],
        n_train=config["n_train"],
        n_test_normal=config["n_test_normal"],
        n_test_anomaly=config["n_test_anomaly"],
        seconds=config["seconds"],
        snr_db_range=tuple(config["snr_db_range"]),
        fault_strength_range=tuple(config["fault_strength_range"]),
        seed=config["seed"],
        progress=False,
    )
    stamp.write_text(json.dumps(config, indent=1) + "\n")
    return True, time.monotonic() - started


def read_manifest(data_dir: Path) -> list[dict[str, Any]]:
    with open(data_dir / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        row["machine_id"] = int(row["machine_id"])
        row["fault_strength"] = float(row["fault_strength"])
        row["snr_db"] = float(row["snr_db"])
        row["y"] = int(row["label"] == "anomaly")
    return rows


def load_audio(path: Path, sample_rate_hz: int) -> np.ndarray:
    samples, rate = read_wav(path)
    if rate != sample_rate_hz:
        raise SystemExit(f"{path}: {rate} Hz, expected {sample_rate_hz} Hz")
    return to_mono(samples).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# acmon: train with training.fit, score int8 through the device path and float on the same windows
# ------------------------------------------------------------------------------------------------
def fit_ours(machine_dir: Path, model_dir: Path, args: argparse.Namespace, cache_dir: Path) -> dict[str, Any]:
    from training.fit import FitOptions, fit  # noqa: PLC0415 - imports TensorFlow

    fields = {f.name for f in dataclasses.fields(FitOptions)}
    overrides: dict[str, Any] = {"seed": args.seed, "model": args.model}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if "cache_dir" in fields:
        overrides["cache_dir"] = str(cache_dir)
    options = FitOptions(**overrides)
    kwargs = {"progress": args.verbose} if "progress" in fit.__code__.co_varnames else {}
    summary = fit(machine_dir, model_dir, FeatureParams(), options, **kwargs)
    summary["fit_options"] = {k: v for k, v in dataclasses.asdict(options).items() if k != "cache_dir"}
    return summary


def score_ours_int8(model_path: Path, paths: list[Path]) -> tuple[Runner, list[float], list[list[float | None]]]:
    """`python -m device score`: one Runner, each file through run_stream; the clip score is summary.score."""
    runner = Runner(AcmonConfig(), model_path=str(model_path), use_mqtt=False, events_out=None)
    rate = runner.model.params.sample_rate_hz
    clip_scores, window_scores = [], []
    for path in paths:
        summary = runner.run_stream(str(path), WavFileStream(path, rate).blocks())
        if summary.score is None:
            raise SystemExit(f"{path}: no window was scored (all below the level gate?)")
        clip_scores.append(float(summary.score))
        window_scores.append([float(s) for s in summary.scores])
    return runner, clip_scores, window_scores


def score_ours_float(model_dir: Path, runner: Runner, clips: list[np.ndarray]) -> tuple[list[float], list[list[float]]]:
    """The float Keras model on the windows the device scored (same cut, same level gate), same score kind."""
    from training.tf_setup import import_tensorflow  # noqa: PLC0415

    keras = import_tensorflow().keras
    model = keras.models.load_model(model_dir / "model_float.keras", compile=False)
    params = runner.model.params
    kind = runner.model.metadata.score_kind
    gate = runner.pipeline.min_rms_dbfs
    patches, owner = [], []
    for k, clip in enumerate(clips):
        for window in iter_windows([clip], params):
            if rms_dbfs(window.samples) >= gate:
                patches.append(extract_patch(window.samples, params))
                owner.append(k)
    x = np.stack(patches)
    outputs = model.predict(x[..., None], batch_size=64, verbose=0)
    scores = np.array([output_score(p, o, kind) for p, o in zip(x, outputs)])
    owner = np.asarray(owner)
    window_scores = [scores[owner == k].tolist() for k in range(len(clips))]
    return [float(np.mean(w)) for w in window_scores], window_scores


# ------------------------------------------------------------------------------------------------
# Metrics and report
# ------------------------------------------------------------------------------------------------
def metrics_by_id(rows: list[dict[str, Any]], methods: list[str]) -> list[dict[str, Any]]:
    out = []
    for machine_type in dict.fromkeys(r["machine_type"] for r in rows):
        for machine_id in sorted({r["machine_id"] for r in rows if r["machine_type"] == machine_type}):
            sel = [r for r in rows if r["machine_type"] == machine_type and r["machine_id"] == machine_id]
            y = np.array([r["y"] for r in sel])
            entry = {"machine_type": machine_type, "machine_id": machine_id, "n_normal": int((y == 0).sum()),
                     "n_anomaly": int(y.sum())}
            for m in methods:
                s = np.array([r["scores"][m] for r in sel])
                entry[m] = {"auc": roc_auc(y, s), "pauc": partial_auc(y, s, max_fpr=MAX_FPR)}
            out.append(entry)
    return out


def metrics_by_fault(rows: list[dict[str, Any]], methods: list[str]) -> list[dict[str, Any]]:
    """AUC of one fault's clips against the normal clips of the same machine id, averaged over ids."""
    out = []
    for machine_type in dict.fromkeys(r["machine_type"] for r in rows):
        for fault in FAULTS_BY_TYPE[machine_type]:
            per_id: dict[str, list[float]] = defaultdict(list)
            n_clips = 0
            for machine_id in sorted({r["machine_id"] for r in rows if r["machine_type"] == machine_type}):
                sel = [r for r in rows if r["machine_type"] == machine_type and r["machine_id"] == machine_id
                       and (r["y"] == 0 or r["fault"] == fault)]
                y = np.array([r["y"] for r in sel])
                if y.sum() == 0 or (y == 0).sum() == 0:
                    continue
                n_clips += int(y.sum())
                for m in methods:
                    per_id[m].append(roc_auc(y, np.array([r["scores"][m] for r in sel])))
            if n_clips:
                out.append({"machine_type": machine_type, "fault": fault, "n_anomaly": n_clips,
                            **{m: float(np.mean(per_id[m])) for m in methods}})
    return out


def summarize(by_id: list[dict[str, Any]], methods: list[str]) -> dict[str, Any]:
    def mean(entries, m, key):
        return float(np.mean([e[m][key] for e in entries]))

    per_type = {}
    for machine_type in dict.fromkeys(e["machine_type"] for e in by_id):
        sel = [e for e in by_id if e["machine_type"] == machine_type]
        per_type[machine_type] = {m: {"auc": mean(sel, m, "auc"), "pauc": mean(sel, m, "pauc")} for m in methods}
    overall = {m: {"auc": mean(by_id, m, "auc"), "pauc": mean(by_id, m, "pauc")} for m in methods}
    better = max(BASELINES, key=lambda m: overall[m]["auc"])
    result = {
        "per_type": per_type,
        "overall": overall,
        "better_baseline": better,
        "ours_int8_minus_better_baseline_auc": overall["ours-int8"]["auc"] - overall[better]["auc"],
        "ours_int8_minus_better_baseline_pauc": overall["ours-int8"]["pauc"] - overall[better]["pauc"],
        "targets": {"ours_minus_better_baseline_auc_at_least": 0.15, "int8_float_auc_within": 0.01},
    }
    if "ours-float" in methods:
        result["ours_int8_minus_float_auc"] = overall["ours-int8"]["auc"] - overall["ours-float"]["auc"]
        diffs = [e["ours-int8"]["auc"] - e["ours-float"]["auc"] for e in by_id]
        result["ours_int8_minus_float_auc_max_abs_per_id"] = float(np.max(np.abs(diffs)))
    result["targets_met"] = {
        "ours_minus_better_baseline": result["ours_int8_minus_better_baseline_auc"] >= 0.15,
        **({"int8_vs_float": abs(result["ours_int8_minus_float_auc"]) <= 0.01} if "ours-float" in methods else {}),
    }
    return result


def markdown(by_id, by_fault, summary, methods, config_lines, timings) -> str:
    head = "| type | id | " + " | ".join(f"{m} AUC | {m} pAUC" for m in methods) + " |"
    rule = "|---|---|" + "---:|---:|" * len(methods)
    lines = ["## Detection quality (AUC / pAUC at FPR <= 0.1, per machine id)", "", head, rule]
    for e in by_id:
        cells = " | ".join(f"{e[m]['auc']:.3f} | {e[m]['pauc']:.3f}" for m in methods)
        lines.append(f"| {e['machine_type']} | {e['machine_id']:02d} | {cells} |")
    for machine_type, per in summary["per_type"].items():
        cells = " | ".join(f"{per[m]['auc']:.3f} | {per[m]['pauc']:.3f}" for m in methods)
        lines.append(f"| **{machine_type}** | mean | {cells} |")
    cells = " | ".join(f"**{summary['overall'][m]['auc']:.3f}** | **{summary['overall'][m]['pauc']:.3f}**" for m in methods)
    lines.append(f"| **all** | mean | {cells} |")
    lines += ["", "## AUC per fault (fault's clips vs the same id's normal clips, mean over ids)", "",
              "| type | fault | clips | " + " | ".join(methods) + " |", "|---|---|---:|" + "---:|" * len(methods)]
    for e in by_fault:
        lines.append(f"| {e['machine_type']} | {e['fault']} | {e['n_anomaly']} | "
                     + " | ".join(f"{e[m]:.3f}" for m in methods) + " |")
    better = summary["better_baseline"]
    lines += ["", "## Summary", "",
              f"- better baseline (mean AUC): **{better}** ({summary['overall'][better]['auc']:.3f})",
              f"- ours-int8 minus better baseline, mean AUC: **{summary['ours_int8_minus_better_baseline_auc']:+.3f}** "
              f"(target >= +0.15: {'met' if summary['targets_met']['ours_minus_better_baseline'] else 'NOT met'}); "
              f"mean pAUC: {summary['ours_int8_minus_better_baseline_pauc']:+.3f}"]
    if "ours_int8_minus_float_auc" in summary:
        lines.append(f"- ours-int8 minus ours-float, mean AUC: **{summary['ours_int8_minus_float_auc']:+.4f}** "
                     f"(largest per id {summary['ours_int8_minus_float_auc_max_abs_per_id']:.4f}; target within 0.01: "
                     f"{'met' if summary['targets_met']['int8_vs_float'] else 'NOT met'})")
    lines.append("- time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    lines += ["", "Configuration:", "", "```", *config_lines, "```", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("device").setLevel(logging.ERROR)  # every replayed anomaly would log its event
    if not args.verbose:
        logging.getLogger("training").setLevel(logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if not args.verbose:
        warnings.filterwarnings("ignore", category=UserWarning, module=r"keras\..*")  # tf.data shuffle notices
    started = time.monotonic()
    config = dataset_config(args)
    methods = [m for m in METHODS if not (args.no_float and m == "ours-float")]
    dcase_params = DcaseParams(epochs=args.dcase_epochs)
    for t in config["machine_types"]:
        if t not in MACHINE_TYPES:
            raise SystemExit(f"--machine-types: unknown type {t!r}; allowed: {', '.join(MACHINE_TYPES)}")

    tmp = None
    if args.work:
        work = Path(args.work)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="acmon-bench-")
        work = Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    data_dir, models_dir = work / "data", work / "models"

    from training.fit import FitOptions  # noqa: PLC0415

    fit_defaults = FitOptions()
    config_lines = [
        f"command: {' '.join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:]))}",
        f"dataset: training.synth.make_dataset {json.dumps(config)}",
        f"  per type: {args.ids} ids x {args.train} train clips, test {args.ids} ids x "
        f"({args.test_normal} normal + {args.test_anomaly} anomaly), {args.seconds:g} s clips",
        f"ours: training.fit.fit, FeatureParams() defaults, FitOptions(model={args.model}, "
        f"epochs={args.epochs or fit_defaults.epochs} [FitOptions default {fit_defaults.epochs}; autoencoder only], "
        f"autoencoder score_kind={fit_defaults.score_kind}, seed={args.seed}); one model per machine type (all ids)",
        "ours-int8: Runner(AcmonConfig()).run_stream(WavFileStream(path, 16000).blocks()).score = mean of window scores",
        "ours-float: model_float.keras on the same windows, device.inference.output_score, mean of windows",
        f"dcase2020-ae: {dataclasses.asdict(dcase_params)}, log-mel 10*log10(mel + eps), 5 frames -> 640 dims, "
        "AE 640-128x4-8-128x4-640 (BN+ReLU), Adam MSE, score = mean MSE over vectors; one model per type",
        "mahalanobis: clip-mean compute_logmel (FeatureParams(), dB), Ledoit-Wolf covariance; one per type",
        f"metrics: training.metrics.roc_auc and partial_auc(max_fpr={MAX_FPR}) per type and id, then means",
        f"host: {platform.machine()}, {os.cpu_count()} cpu, Python {platform.python_version()}; work folder {work}",
    ]
    print("\n".join(config_lines), flush=True)

    timings: dict[str, float] = {}
    generated, seconds = ensure_dataset(data_dir, config)
    timings["dataset"] = seconds
    print(f"dataset: {'generated' if generated else 'reused'} in {seconds:.0f} s", flush=True)
    manifest = read_manifest(data_dir)
    rate = 16000

    rows_out: list[dict[str, Any]] = []
    fit_summaries: dict[str, Any] = {}
    for t in ("ours", "ours-float", "dcase2020-ae", "mahalanobis"):
        timings[t] = 0.0
    for machine_type in config["machine_types"]:
        train_rows = [r for r in manifest if r["machine_type"] == machine_type and r["split"] == "train"]
        test_rows = [dict(r) for r in manifest if r["machine_type"] == machine_type and r["split"] == "test"]
        train_clips = [load_audio(data_dir / r["path"], rate) for r in train_rows]
        test_paths = [data_dir / r["path"] for r in test_rows]
        test_clips = [load_audio(p, rate) for p in test_paths]
        scores: dict[str, list[float]] = {}

        t0 = time.monotonic()
        model_dir = models_dir / machine_type
        summary = fit_ours(data_dir / machine_type, model_dir, args, work / "cache")
        runner, scores["ours-int8"], int8_windows = score_ours_int8(model_dir / "model.tflite", test_paths)
        t1 = time.monotonic()
        fit_summaries[machine_type] = {k: summary.get(k) for k in ("training", "fit_options", "score_kind", "threshold",
                                                                   "float_int8_parity", "seconds")}
        timings["ours"] += t1 - t0
        float_windows = None
        if "ours-float" in methods:
            scores["ours-float"], float_windows = score_ours_float(model_dir, runner, test_clips)
            timings["ours-float"] += time.monotonic() - t1

        t2 = time.monotonic()
        dcase = DcaseBaseline(dcase_params, seed=args.seed).fit(train_clips, verbose=2 if args.verbose else 0)
        scores["dcase2020-ae"] = dcase.score(test_clips).tolist()
        t3 = time.monotonic()
        timings["dcase2020-ae"] += t3 - t2
        maha = MahalanobisBaseline().fit(train_clips)
        scores["mahalanobis"] = maha.score(test_clips).tolist()
        timings["mahalanobis"] += time.monotonic() - t3
        fit_summaries[machine_type]["mahalanobis_shrinkage"] = maha.shrinkage

        for k, row in enumerate(test_rows):
            row["scores"] = {m: scores[m][k] for m in methods}
            row["window_scores"] = {"ours-int8": int8_windows[k]}
            if float_windows is not None:
                row["window_scores"]["ours-float"] = float_windows[k]
            rows_out.append(row)
        print(f"{machine_type}: done at {time.monotonic() - started:.0f} s "
              f"(ours {t1 - t0:.0f} s, {summary['training'].get('model')} model; dcase {t3 - t2:.0f} s)", flush=True)

    by_id = metrics_by_id(rows_out, methods)
    by_fault = metrics_by_fault(rows_out, methods)
    summary = summarize(by_id, methods)
    timings["total"] = time.monotonic() - started
    report = markdown(by_id, by_fault, summary, methods, config_lines, timings)
    print()
    print(report)
    if args.markdown_out:
        Path(args.markdown_out).write_text(report)
    if args.json_out:
        document = {
            "config": {"dataset": config, "dcase": dataclasses.asdict(dcase_params), "epochs": args.epochs,
                       "seed": args.seed, "quick": args.quick, "max_fpr": MAX_FPR, "lines": config_lines},
            "summary": summary,
            "by_id": by_id,
            "by_fault": by_fault,
            "fit": fit_summaries,
            "timings_seconds": timings,
            "clips": rows_out,
        }
        Path(args.json_out).write_text(json.dumps(document, indent=1) + "\n")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

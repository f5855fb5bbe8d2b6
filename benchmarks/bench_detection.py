"""Detection quality of acmon's default model against the DCASE 2020 baseline and a Mahalanobis baseline, by set role.

Usage:
    python benchmarks/bench_detection.py --work DIR [--sets choose,plant,real,...] [--quick]
    python benchmarks/bench_detection.py --help

Sets, kept apart by role (the README's detection table says the same):

- CHOOSING sets: what acmon's design was tuned on.
  - ``choose``: training/synth.py, seed 0 (4 types x 3 ids; the generator the model was first chosen on).
  - ``choose-faint``: training/synth.py, seed 2, faint faults and a fixed microphone gain per machine.
- NEVER-CHOSEN-ON sets, reported only:
  - ``plant``: benchmarks/plant_synth.py, a second synthetic family written independently of
    training/synth.py (other source physics, fault mechanisms, rooms and backgrounds; 5 types x 3 ids), with
    long normal streams for the false-alarm measurement.
  - ``real-fan``, ``real-dcase2020-dev``, ``real-dcase2023``: real recordings from ../shared/data (see
    benchmarks/real_sets.py for each set's split and limits).
  - ``injected-fan``, ``injected-dcase2020``: generator-independent faults (benchmarks/fault_injection.py)
    injected into real normal recordings. Their fault *kinds* resemble the generic faults `fit` validates its
    choice with (training/inject.py, written separately), so they are less independent than the others.

For every group (a machine type of a set) in one run: acmon is fitted with training.fit.fit exactly as
``python -m training fit --data GROUP`` does (one model per group, all its machine ids) and every test clip is
scored through the device's streaming path as ``python -m device score`` does (Runner.run_stream over a
WavFileStream; clip score = mean of window scores; the clip "alarms" if the detector started an event).
The same float model is scored on the same windows (ours-float). The references are fitted on the same
training clips: the DCASE 2020 Task 2 baseline autoencoder and a clip-mean log-mel Mahalanobis distance
(benchmarks/baselines.py). AUC and pAUC (DCASE: FPR <= 0.1, area / 0.1) per machine id, then averaged.

False alarms (``--long-minutes``, on long normal streams never used for fitting: the plant set's, and for
choosing the threshold method, 10-minute renders of choose-faint's machines): each
type's model replays each stream as the daemon would, with (a) the model's own threshold (its promise:
FitOptions.false_alarms_per_day, default 1 per day) and (b) thresholds recalibrated from the model's saved
held-out scores for measurable targets (1 and 10 per hour), in three ways: continuous streams, the same
audio cut into 5 s clips each replayed as its own stream, and the type's normal test clips spliced into one
stream. Alarms per hour observed against promised, with the Poisson 95 % interval; beside it, the share of
fault clips that raise an alarm at the same threshold.

A benchmark, not a test: the numbers depend on seeds, sizes and (for timing) the machine's load.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import math
import os
import platform
import sys
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# One OpenBLAS thread, as device/__init__.py sets for the daemon: the front end's matrix products are
# tiny, and on a busy 2-core machine BLAS threads made every window 20-40x slower. Before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import DcaseBaseline, DcaseParams, MahalanobisBaseline

from device.analysis.features import FeatureParams, extract_patch, steady_level_dbfs
from device.audio.audio_io import read_wav, to_mono
from device.audio.sources import WavFileStream
from device.daemon.runner import Runner
from device.decisions.detector import Detector, DetectorSettings
from device.decisions.threshold import calibrate_threshold
from device.pipeline import iter_windows
from device.settings.schema import AcmonConfig
from training.metrics import partial_auc, roc_auc

logger = logging.getLogger("bench_detection")

CHOOSING = "choosing"
REPORTED = "never chosen on"
SYNTH_SETS = ("choose", "choose-faint")
REAL_SETS = ("real-fan", "real-dcase2020-dev", "real-dcase2023", "injected-fan", "injected-dcase2020")
ALL_SETS = SYNTH_SETS + ("plant",) + REAL_SETS
ROLE = {"choose": CHOOSING, "choose-faint": CHOOSING, **{s: REPORTED for s in ("plant",) + REAL_SETS}}
METHODS = ("ours-int8", "ours-float", "dcase2020-ae", "mahalanobis")
REFERENCES = ("dcase2020-ae", "mahalanobis")
MAX_FPR = 0.1
RECALIBRATED_PER_HOUR = (1.0, 10.0)
PIECE_SECONDS = 5.0
# On-site calibration in the false-alarm measurement: the first this-many minutes of each mounting (at most
# half of it), through `python -m device calibrate`'s path; alarms are counted on the rest.
SITE_CALIBRATION_MINUTES = 30.0  # what `device calibrate` asks for (threshold.MIN_CALIBRATION_SECONDS)
SITE_TARGETS_PER_DAY = (1.0, 24.0, 240.0)  # the default promise, 1 per hour, 10 per hour

SIZES = {  # per synthetic set: ids, train, test normal, test anomaly clips per id (10 s clips)
    "full": {"choose": (3, 30, 20, 20), "choose-faint": (3, 30, 20, 20), "plant": (3, 60, 20, 20)},
    "quick": {"choose": (1, 8, 6, 6), "choose-faint": (1, 8, 6, 6), "plant": (1, 10, 6, 6)},
}


@dataclass
class Group:
    """One fitted model: a machine type of a set, with its test clips."""

    set_name: str
    machine_type: str
    data_dir: Path
    tests: list[dict[str, Any]]  # path, y, machine_id, fault
    note: str = ""
    long_streams: list[Path] = field(default_factory=list)
    long_continuous: bool = False  # the long stream's parts of one machine id follow on from each other
    site_streams: list[Path] = field(default_factory=list)  # continuous drifting streams for on-site calibration


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    add = parser.add_argument
    add("--work", required=True, help="working folder for datasets, models and caches (reused when it exists)")
    add("--sets", default=",".join(ALL_SETS), help="comma-separated sets to run")
    add("--quick", action="store_true", help="small sizes for a smoke run (minutes, not an hour)")
    add(
        "--shared",
        default=str(REPO.parent / "shared"),
        help="the shared data folder (data/real, data/dcase2023_samples)",
    )
    add(
        "--long-minutes",
        type=float,
        default=60.0,
        help="minutes of long normal stream per plant machine id (false-alarm measurement; 0 = skip)",
    )
    add(
        "--site-minutes",
        type=float,
        default=SITE_CALIBRATION_MINUTES,
        help="minutes at the start of each long stream used for on-site calibration (at most half the stream; "
        "0 = skip the site-calibrated false-alarm measurement)",
    )
    add("--dcase-epochs", type=int, default=30, help="epochs of the DCASE 2020 autoencoder (the original: 100)")
    add("--seed", type=int, default=0, help="seed of the plant set and of all fitting")
    add(
        "--fit-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a training.fit.FitOptions field for a candidate (repeatable; VALUE is YAML), e.g. "
        "amplify_representative=1.5; give the run a --tag so its models and results are kept apart",
    )
    add(
        "--tag",
        default="",
        help="name of a candidate run: models and results go to WORK/models/TAG, WORK/results/TAG "
        "(data and caches are shared)",
    )
    add("--no-float", action="store_true", help="skip the float model's scores")
    add("--json-out", help="write all results here")
    add("--markdown-out", help="write the Markdown report here")
    add("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    args.sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [s for s in args.sets if s not in ALL_SETS]
    if unknown:
        parser.error(f"--sets: unknown {unknown}; choose from {', '.join(ALL_SETS)}")
    import yaml

    from training.fit import FitOptions  # light: TensorFlow loads when a model is fitted

    fields = {f.name for f in dataclasses.fields(FitOptions)} - {"seed", "cache_dir"}
    args.fit_options = {}
    for item in args.fit_option:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            parser.error(f"--fit-option {item!r}: give KEY=VALUE with KEY one of {', '.join(sorted(fields))}")
        args.fit_options[key] = yaml.safe_load(value)
    if args.fit_options and not args.tag:
        parser.error("--fit-option: give the candidate a --tag, so its models do not replace the default's")
    if args.quick and args.long_minutes == 60.0:
        args.long_minutes = 3.0
    return args


# ------------------------------------------------------------------------------------------------
# Datasets
# ------------------------------------------------------------------------------------------------
def _stamped(folder: Path, config: dict[str, Any], make) -> None:
    """Run make() unless folder holds a dataset made with this exact config."""
    stamp = folder / "bench_config.json"
    if stamp.exists() and json.loads(stamp.read_text()) == json.loads(json.dumps(config)):  # tuples become lists
        return
    started = time.monotonic()
    make()
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(config, indent=1) + "\n")
    print(f"  {folder.name}: generated in {time.monotonic() - started:.0f} s", flush=True)


def _manifest_groups(set_name: str, root: Path, fault_column: str) -> list[Group]:
    with open(root / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    groups = []
    for machine_type in dict.fromkeys(r["machine_type"] for r in rows):
        tests = [
            {
                "path": root / r["path"],
                "y": int(r["label"] == "anomaly"),
                "machine_id": int(r["machine_id"]),
                "fault": r.get(fault_column, "") or "",
            }
            for r in rows
            if r["machine_type"] == machine_type and r["split"] == "test"
        ]
        long_streams = sorted(root.glob(f"long/{machine_type}/*.wav"))
        groups.append(Group(set_name, machine_type, root / machine_type, tests, long_streams=long_streams))
    return groups


def synth_groups(set_name: str, work: Path, args: argparse.Namespace) -> list[Group]:
    ids, n_train, n_normal, n_anomaly = SIZES["quick" if args.quick else "full"][set_name]
    root = work / "data" / set_name
    if set_name == "plant":
        from plant_synth import MACHINE_TYPES, make_dataset

        config = {
            "ids": ids,
            "train": n_train,
            "normal": n_normal,
            "anomaly": n_anomaly,
            "seed": args.seed,
            "long_minutes": args.long_minutes,
        }
        _stamped(
            root,
            config,
            lambda: make_dataset(
                root,
                MACHINE_TYPES,
                tuple(range(ids)),
                n_train,
                n_normal,
                n_anomaly,
                long_minutes=args.long_minutes,
                seed=args.seed,
                progress=True,
            ),
        )
        groups = _manifest_groups(set_name, root, "fault")
        for g in groups:
            g.long_continuous = True  # plant_synth writes one stream per id in 10-minute parts
        return groups
    from training.synth import MACHINE_TYPES, make_dataset

    seed, snr, strength, jitter = (
        (0, (-3.0, 9.0), (0.1, 1.0), None) if set_name == "choose" else (2, (0.0, 12.0), (0.05, 0.5), 1.0)
    )
    long_minutes = args.long_minutes if set_name == "choose-faint" else 0.0
    config = {
        "ids": ids,
        "train": n_train,
        "normal": n_normal,
        "anomaly": n_anomaly,
        "seed": seed,
        "snr": snr,
        "strength": strength,
        "gain_jitter_db": jitter,
        "long_minutes": long_minutes,
    }

    def make() -> None:
        make_dataset(
            root,
            MACHINE_TYPES,
            tuple(range(ids)),
            n_train,
            n_normal,
            n_anomaly,
            10.0,
            snr_db_range=snr,
            fault_strength_range=strength,
            seed=seed,
            progress=True,
            gain_jitter_db=jitter,
        )
        synth_long_streams(root, MACHINE_TYPES, ids, long_minutes, snr, seed, jitter)

    _stamped(root, config, make)
    groups = _manifest_groups(set_name, root, "fault")
    if long_minutes > 0 and args.site_minutes > 0:
        drift = root / "long_drift"
        drift_config = {
            "ids": ids,
            "minutes": long_minutes,
            "seed": seed,
            "snr": snr,
            "gain_jitter_db": jitter,
            "piece_s": DRIFT_PIECE_SECONDS,
            "step_db": DRIFT_SNR_STEP_DB,
        }
        _stamped(
            drift, drift_config, lambda: synth_drift_streams(drift, MACHINE_TYPES, ids, long_minutes, snr, seed, jitter)
        )
        for g in groups:
            g.site_streams = sorted((drift / g.machine_type).glob("*.wav"))
    return groups


def synth_long_streams(root: Path, machine_types, ids: int, minutes: float, snr, seed: int, jitter) -> None:
    """Long normal streams of the choosing generator: 10-minute continuous renders, each its own file."""
    from device.audio.audio_io import write_wav
    from training.synth import render_clip

    rng = np.random.default_rng([seed, 7])
    for machine_type in machine_types:
        (root / "long" / machine_type).mkdir(parents=True, exist_ok=True)
        for machine_id in range(ids):
            for part in range(int(math.ceil(minutes / 10.0))):
                clip = render_clip(
                    machine_type,
                    machine_id,
                    min(600.0, minutes * 60 - part * 600),
                    16000,
                    None,
                    1.0,
                    float(rng.uniform(*snr)),
                    int(rng.integers(2**31)),
                    jitter,
                )
                write_wav(root / "long" / machine_type / f"normal_id_{machine_id:02d}_part{part}.wav", clip, 16000)


DRIFT_PIECE_SECONDS = 60.0  # a drifting stream: one render per minute (its own operating point and gain) ...
DRIFT_CROSSFADE_SECONDS = 2.0  # ... joined by equal-power crossfades
DRIFT_SNR_STEP_DB = 1.5  # the background's level walks by this much per minute (within the set's range)


def synth_drift_streams(root: Path, machine_types, ids: int, minutes: float, snr, seed: int, jitter) -> None:
    """Continuous normal streams of the choosing generator that drift, for choosing how to calibrate on site.

    The 10-minute renders of synth_long_streams each hold one operating point and background level;
    a mounted sensor hears both change. Here every minute is its own render (a new operating point
    and the microphone's gain jitter) joined to the last by a crossfade, and the background level
    walks within the set's range: a load that wanders and neighbours that come and go.
    """
    from tqdm import tqdm

    from device.audio.audio_io import write_wav
    from training.synth import render_clip

    rate = 16000
    n_pieces = int(math.ceil(minutes * 60.0 / DRIFT_PIECE_SECONDS))
    bar = tqdm(total=len(machine_types) * ids * n_pieces, desc="drifting streams", unit="min")
    fade = int(DRIFT_CROSSFADE_SECONDS * rate)
    ramp = np.sin(np.linspace(0.0, np.pi / 2, fade)) ** 2
    rng = np.random.default_rng([seed, 11])
    for machine_type in machine_types:
        (root / machine_type).mkdir(parents=True, exist_ok=True)
        for machine_id in range(ids):
            snr_db = float(rng.uniform(*snr))
            pieces: list[np.ndarray] = []
            for _ in range(n_pieces):
                bar.update()
                snr_db = float(np.clip(snr_db + rng.normal(0.0, DRIFT_SNR_STEP_DB), *snr))
                piece = render_clip(
                    machine_type,
                    machine_id,
                    DRIFT_PIECE_SECONDS + DRIFT_CROSSFADE_SECONDS,
                    rate,
                    None,
                    1.0,
                    snr_db,
                    int(rng.integers(2**31)),
                    jitter,
                )
                if pieces:
                    last = pieces[-1]
                    last[-fade:] = last[-fade:] * np.sqrt(1.0 - ramp) + piece[:fade] * np.sqrt(ramp)
                    piece = piece[fade:]
                pieces.append(np.asarray(piece, dtype=np.float32))
            audio = np.concatenate(pieces)[: int(minutes * 60.0 * rate)]
            part = int(600 * rate)
            for k in range(0, len(audio), part):
                write_wav(
                    root / machine_type / f"normal_id_{machine_id:02d}_part{k // part}.wav", audio[k : k + part], rate
                )
    bar.close()


def real_groups(sets: list[str], work: Path, args: argparse.Namespace) -> list[Group]:
    from real_sets import build_real_sets

    root = work / "data" / "real"
    built, _ = build_real_sets(Path(args.shared), root, seed=args.seed, sets=sets)
    with open(root / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    groups = []
    for g in built:
        tests = [
            {
                "path": root / r["path"],
                "y": int(r["label"] == "anomaly"),
                "machine_id": 0,
                "fault": (f"{r['fault']} {r['level']}".strip() if r["fault"] != "real" else "real"),
            }
            for r in rows
            if r["set"] == g.set_name and r["machine_type"] == g.machine_type and r["split"] == "test"
        ]
        groups.append(Group(g.set_name, g.machine_type, Path(g.data_dir), tests, note=g.note))
    return groups


def load_mono(path: Path) -> np.ndarray:
    samples, rate = read_wav(path)
    if rate != 16000:
        raise SystemExit(f"{path}: {rate} Hz, expected 16000 Hz")
    return to_mono(samples).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# Methods
# ------------------------------------------------------------------------------------------------
def fit_ours(group: Group, model_dir: Path, args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    from training.fit import FitOptions, fit  # imports TensorFlow

    summary_path = model_dir / "training_summary.json"
    stamp = model_dir / "bench_fit.json"
    key = {"data": str(group.data_dir), "seed": args.seed, "code": _code_stamp(), **args.fit_options}
    if summary_path.exists() and stamp.exists() and json.loads(stamp.read_text()) == json.loads(json.dumps(key)):
        return json.loads(summary_path.read_text())
    options = FitOptions(seed=args.seed, cache_dir=str(cache), **args.fit_options)
    summary = fit(group.data_dir, model_dir, FeatureParams(), options, progress=args.verbose)
    stamp.write_text(json.dumps(key))
    return summary


def _code_stamp() -> str:
    """Changes when the model code changes, so --work reuses models only from the same code."""
    import hashlib

    h = hashlib.sha256()
    for rel in (
        "training/fit.py",
        "training/ensemble.py",
        "training/models.py",
        "training/inject.py",
        "device/analysis/gaussian.py",
        "device/analysis/features.py",
        "device/daemon/calibrate.py",
        "device/decisions/threshold.py",
    ):
        h.update((REPO / rel).read_bytes())
    return h.hexdigest()[:16]


def replay(runner: Runner, name: str, blocks) -> tuple[Any, list[float | None]]:
    """One stream through the daemon's path; returns its summary and every window's score (None: gated)."""
    scores: list[float | None] = []
    summary = runner.run_stream(name, blocks, on_window=lambda r: scores.append(r.score))
    return summary, scores


def replay_in_alarm(runner: Runner, name: str, blocks) -> tuple[Any, int, int]:
    """replay(), counting the windows during which an alarm was open (an alarm that never ends is one event)."""
    state = {"open": False, "in_alarm": 0, "windows": 0}

    def on_window(r) -> None:
        for t in r.transitions:
            state["open"] = {"start": True, "end": False}.get(t.state, state["open"])
        state["windows"] += 1
        state["in_alarm"] += state["open"]

    summary = runner.run_stream(name, blocks, on_window=on_window)
    return summary, state["in_alarm"], state["windows"]


def score_ours(model_path: Path, tests: list[dict[str, Any]]) -> tuple[Runner, list[float], list[bool], list[list]]:
    """`python -m device score`: one Runner, each file through run_stream."""
    runner = Runner(AcmonConfig(), model_path=str(model_path), use_mqtt=False, events_out=None)
    rate = runner.model.params.sample_rate_hz
    scores, alarms, windows = [], [], []
    for t in tests:
        summary, window_scores = replay(runner, str(t["path"]), WavFileStream(t["path"], rate).blocks())
        if summary.score is None:
            raise SystemExit(f"{t['path']}: no window was scored (all below the level gate?)")
        scores.append(float(summary.score))
        alarms.append(bool(summary.events))
        windows.append(window_scores)
    return runner, scores, alarms, windows


def score_float(model_dir: Path, runner: Runner, clips: list[np.ndarray]) -> list[float]:
    """The float Keras model on the windows the device scored (same gate), through the same scorer."""
    from training.tf_setup import import_tensorflow

    keras = import_tensorflow().keras
    model = keras.models.load_model(model_dir / "model_float.keras", compile=False)
    params, scorer = runner.model.params, runner.model.scorer
    gate = runner.pipeline.min_rms_dbfs
    out = []
    for clip in clips:
        wins = list(iter_windows([clip], params))
        keep = [steady_level_dbfs(w.samples, params.stft_hop_samples) >= gate for w in wins]
        x = np.stack([extract_patch(w.samples, params) for w in wins])
        outputs = np.asarray(model.predict(x[..., None], batch_size=256, verbose=0), dtype=np.float64)
        state, scores = scorer.new_state(), []
        for o, k in zip(outputs, keep):
            if k:
                scores.append(scorer.score(o, state))
            else:
                state.clear()
        out.append(float(np.mean(scores)))
    return out


# ------------------------------------------------------------------------------------------------
# False alarms
# ------------------------------------------------------------------------------------------------
def count_alarms(window_scores: list[list], threshold: float, hop_seconds: float) -> int:
    """Events the daemon's Detector (default rules) starts on each stream's window scores at this threshold."""
    settings = DetectorSettings(threshold=threshold)
    n = 0
    for scores in window_scores:
        det = Detector(settings)
        for i, s in enumerate(scores):
            n += sum(t.state == "start" for t in det.update(i, (i + 1) * hop_seconds, s))
    return n


def poisson_interval(k: int) -> tuple[float, float]:
    """95 % interval of a Poisson mean given k observed events (Wilson-Hilferty approximation of the chi-square)."""

    def chi2(p: float, dof: float) -> float:
        z = {0.025: -1.959964, 0.975: 1.959964}[p]
        return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3

    low = 0.0 if k == 0 else chi2(0.025, 2 * k) / 2
    return low, chi2(0.975, 2 * k + 2) / 2


def poisson_at_least(k: int, mean: float) -> float:
    """P(K >= k) for K Poisson with this mean."""
    if k <= 0:
        return 1.0
    term, below = math.exp(-mean), 0.0
    for j in range(k):
        below += term
        term *= mean / (j + 1)
    return max(0.0, 1.0 - below)


def false_alarms(group: Group, model_dir: Path, runner: Runner, test_windows: list[list]) -> dict[str, Any]:
    """Alarms per hour on long normal streams: promised against observed, three ways of replaying them."""
    from training.fit import HELDOUT_SCORES_FILENAME

    params = runner.model.params
    hop = params.hop_seconds
    rate = params.sample_rate_hz
    continuous, pieces = [], []
    seconds = 0.0
    for path in group.long_streams:
        continuous.append(replay(runner, str(path), WavFileStream(path, rate).blocks())[1])
        audio = load_mono(path)
        seconds += len(audio) / rate
        step = int(PIECE_SECONDS * rate)
        for a in range(0, len(audio) - params.window_samples + 1, step):
            pieces.append(replay(runner, f"{path}#{a}", iter([audio[a : a + step]]))[1])
    normal_tests = [t for t in group.tests if t["y"] == 0]
    spliced_audio = np.concatenate([load_mono(t["path"]) for t in normal_tests])
    spliced = [replay(runner, "spliced", iter([spliced_audio]))[1]]
    spliced_seconds = len(spliced_audio) / rate
    with np.load(model_dir / HELDOUT_SCORES_FILENAME) as f:
        heldout = [f[k] for k in f.files]
    targets = [
        (
            "model",
            runner.model.threshold,
            runner.model.metadata.calibration.get("false_alarms_per_day", 1.0) / 24.0,
        )
    ]
    for per_hour in RECALIBRATED_PER_HOUR:
        t, _ = calibrate_threshold(heldout, hop, per_hour * 24.0, DetectorSettings(threshold=1.0).patience_windows)
        targets.append((f"{per_hour:g}/h", t, per_hour))
    out: dict[str, Any] = {"hours": seconds / 3600.0, "spliced_hours": spliced_seconds / 3600.0, "targets": []}
    fault_windows = [w for t, w in zip(group.tests, test_windows) if t["y"] == 1]
    for name, threshold, promised in targets:
        row = {"target": name, "threshold": threshold, "promised_per_hour": promised}
        for mode, scores, hours in (
            ("continuous", continuous, out["hours"]),
            ("5s_clips", pieces, out["hours"]),
            ("spliced", spliced, out["spliced_hours"]),
        ):
            k = count_alarms(scores, threshold, hop)
            lo, hi = poisson_interval(k)
            row[mode] = {"alarms": k, "per_hour": k / hours, "per_hour_95ci": [lo / hours, hi / hours]}
        row["fault_clips_alarming"] = float(np.mean([count_alarms([w], threshold, hop) > 0 for w in fault_windows]))
        out["targets"].append(row)
    return out


def mountings(group: Group) -> list[tuple[str, int, list[Path]]]:
    """The long normal audio as mountings: (name, machine id, files in order) of one uninterrupted stream.

    plant_synth's parts of one id follow on from each other (one mounting per id), and so do the
    choosing generator's drifting streams (synth_drift_streams), used when there are any; its
    10-minute renders each hold their own background and gain, so each is a mounting of its own.
    """
    by_id: dict[int, list[Path]] = defaultdict(list)
    continuous = group.long_continuous or bool(group.site_streams)
    for path in group.site_streams or group.long_streams:
        by_id[int(path.stem.split("_")[2])].append(path)  # normal_id_XX_partK
    out = []
    for machine_id, paths in sorted(by_id.items()):
        paths = sorted(paths, key=lambda p: int(p.stem.rsplit("part", 1)[1]))
        if continuous:
            out.append((f"id{machine_id:02d}", machine_id, paths))
        else:
            out += [(f"id{machine_id:02d}-{p.stem.rsplit('_', 1)[1]}", machine_id, [p]) for p in paths]
    return out


def _calibrate_on(config: Path, name: str, audio: np.ndarray, site_minutes: float, force: bool) -> dict[str, Any]:
    """`python -m device calibrate --config CONFIG` on the first minutes of `audio` (at most half of it)."""
    from device.daemon.site_config import load_site_config

    calibrator = Runner(
        load_site_config(config), use_mqtt=False, events_out=None, config_path=str(config), evidence=False
    )
    rate = calibrator.model.params.sample_rate_hz
    n_cal = int(min(site_minutes * 60.0, len(audio) / rate / 2) * rate)
    result, error = calibrator.calibrate(
        n_cal / rate / 60.0, lambda: calibrator.run_stream(f"{name}#calibration", iter([audio[:n_cal]])), force=force
    )
    calibrator.close()
    return {"n_cal": n_cal, "rate": rate, "result": result, "error": error}


SITE_FAULT_LEVELS = {
    "tone": -20.0,
    "harmonics": -20.0,
    "clicks": -20.0,
    "impulse_train": -20.0,
    "noise_burst": -20.0,
    "am": 0.2,
    "level_shift": 3.0,
    "pitch_shift": 2.0,
}  # middle of fault_injection's grids
SITE_FAULT_SECONDS = 10.0
SITE_FAULTS_PER_KIND = 2  # per mounting


def _mounting_faults(audio: np.ndarray, start: int, rate: int, seed: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(kind, clean segment, the same segment with the fault) from the audio after `start`, evenly spaced."""
    from fault_injection import inject

    n = int(SITE_FAULT_SECONDS * rate)
    kinds = [k for k in SITE_FAULT_LEVELS for _ in range(SITE_FAULTS_PER_KIND)]
    starts = np.linspace(start, len(audio) - n, len(kinds)).astype(int)
    rng = np.random.default_rng(seed)
    out = []
    for kind, a in zip(kinds, starts):
        clean = np.asarray(audio[a : a + n], dtype=np.float32)
        out.append((kind, clean, inject(clean, rate, kind, SITE_FAULT_LEVELS[kind], rng)[0]))
    return out


def site_calibrated_alarms(group: Group, model_path: Path, folder: Path, site_minutes: float) -> dict[str, Any]:
    """Alarms per hour after on-site calibration, on the audio the calibration did not hear.

    What a technician does: mount the sensor, run `python -m device calibrate` on the first minutes
    of the machine's normal sound, then leave `python -m device run` going. Per mounting (one
    uninterrupted normal stream) and per promised rate (calibration.false_alarms_per_day), the first
    `site_minutes` (at most half the stream) go through Runner.start_calibration as `device calibrate`
    does (site statistics and threshold, written to a state directory; a refusal is retried with
    force, and counted), and a Runner built from the config with that calibration laid over it, as
    `device run` builds it, replays the rest; its detector's events are the alarms.

    Beside them, what the same thresholds catch: faults from fault_injection.py (every kind, at the
    middle of its grid) injected into 10 s segments of the mounting's own uncalibrated audio, each
    replayed as its own stream, with the clean segments as the control; and the same machine id's
    test clips, which were recorded under other conditions (background level, gain) than the mounting.
    """
    import shutil

    import yaml

    from device.daemon.site_config import load_site_config

    state = folder / "state"
    shutil.rmtree(state, ignore_errors=True)  # every mounting starts uncalibrated, as a new sensor does
    state.mkdir(parents=True)
    old_state = os.environ.get("STATE_DIRECTORY")
    os.environ["STATE_DIRECTORY"] = str(state)
    rows = {
        per_day: {
            "false_alarms_per_day": per_day,
            "promised_per_hour": per_day / 24.0,
            "alarms": 0,
            "hours": 0.0,
            "windows_in_alarm": 0,
            "windows": 0,
            "calibration_minutes": [],
            "thresholds": [],
            "errors": [],
            "beyond_interval": 0,
            "warned": 0,
            "injected": defaultdict(list),
            "clean_segments_alarming": [],
            "fault_clips_alarming": [],
            "normal_clips_alarming": [],
        }
        for per_day in SITE_TARGETS_PER_DAY
    }
    try:
        for index, (name, machine_id, paths) in enumerate(mountings(group)):
            audio = np.concatenate([load_mono(p) for p in paths])
            faults = None
            for per_day, row in rows.items():
                config = folder / f"{name}-{per_day:g}.yaml"
                device_id = f"{group.machine_type}-{name}-{per_day:g}".replace(".", "_")[:64]
                config.write_text(
                    yaml.safe_dump(
                        {
                            "device": {"id": device_id, "site": "bench"},
                            "model": {"path": str(model_path)},
                            "calibration": {"false_alarms_per_day": per_day},
                            "mqtt": {"enabled": False},
                            "evidence": {"enabled": False},
                        }
                    )
                )
                outcome = _calibrate_on(config, name, audio, site_minutes, force=False)
                if outcome.get("error"):  # refused (the audio looks like a fault to the training statistics)
                    row["errors"].append(f"{name}: {outcome['error']}")
                    outcome = _calibrate_on(config, name, audio, site_minutes, force=True)  # what --force does
                    if outcome.get("error"):
                        continue
                n_cal, rate = outcome["n_cal"], outcome["rate"]
                live = Runner(load_site_config(config), use_mqtt=False, events_out=None, evidence=False)
                summary, open_windows, windows = replay_in_alarm(live, name, iter([audio[n_cal:]]))
                row["alarms"] += summary.events
                # Did the calibration tell the truth about itself? Its 90 % interval of the rate, against
                # the alarms this mounting then raised (a count that improbable under the interval's upper end).
                interval = outcome["result"].get("false_alarms_per_day_90ci") or [per_day, per_day]
                expected_at_high = float(interval[1]) / 24.0 * (len(audio) - n_cal) / rate / 3600.0
                row["beyond_interval"] += int(poisson_at_least(summary.events, expected_at_high) < 0.05)
                row["warned"] += int(bool(outcome["result"].get("warning")))
                row["windows_in_alarm"] += open_windows
                row["windows"] += windows
                row["hours"] += (len(audio) - n_cal) / rate / 3600.0
                row["calibration_minutes"].append(n_cal / rate / 60.0)
                row["thresholds"].append(outcome["result"]["threshold"])
                if faults is None:
                    faults = _mounting_faults(audio, n_cal, rate, seed=index)
                for kind, clean, faulty in faults:
                    row["clean_segments_alarming"].append(bool(replay(live, f"{name}#clean", iter([clean]))[0].events))
                    row["injected"][kind].append(bool(replay(live, f"{name}#{kind}", iter([faulty]))[0].events))
                for t in group.tests:
                    if t["machine_id"] == machine_id:
                        s, _ = replay(live, str(t["path"]), WavFileStream(t["path"], rate).blocks())
                        row["fault_clips_alarming" if t["y"] else "normal_clips_alarming"].append(bool(s.events))
                live.close()
    finally:
        if old_state is None:
            os.environ.pop("STATE_DIRECTORY", None)
        else:
            os.environ["STATE_DIRECTORY"] = old_state
    out = []
    for row in rows.values():
        k = row["alarms"]
        lo, hi = poisson_interval(k)
        hours = max(row["hours"], 1e-9)
        injected = {kind: float(np.mean(v)) for kind, v in row["injected"].items()}
        row.update(
            per_hour=k / hours,
            per_hour_95ci=[lo / hours, hi / hours],
            share_in_alarm=row["windows_in_alarm"] / max(row["windows"], 1),
            ratio=(k / hours) / row["promised_per_hour"],
            mountings=len(row["thresholds"]),
            calibration_minutes=float(np.median(row["calibration_minutes"] or [0.0])),
            injected=injected,
            injected_alarming=float(np.mean([a for v in row["injected"].values() for a in v] or [np.nan])),
            clean_segments_alarming=float(np.mean(row["clean_segments_alarming"] or [np.nan])),
            fault_clips_alarming=float(np.mean(row["fault_clips_alarming"] or [np.nan])),
            normal_clips_alarming=float(np.mean(row["normal_clips_alarming"] or [np.nan])),
        )
        out.append(row)
    return {"site_minutes": site_minutes, "fault_levels": SITE_FAULT_LEVELS, "targets": out}


# ------------------------------------------------------------------------------------------------
# Metrics and report
# ------------------------------------------------------------------------------------------------
def metrics(group: Group, scores: dict[str, list[float]]) -> list[dict[str, Any]]:
    out = []
    for machine_id in sorted({t["machine_id"] for t in group.tests}):
        idx = [i for i, t in enumerate(group.tests) if t["machine_id"] == machine_id]
        y = np.array([group.tests[i]["y"] for i in idx])
        if y.min() == y.max():
            continue
        entry = {
            "set": group.set_name,
            "machine_type": group.machine_type,
            "machine_id": machine_id,
            "n_normal": int((y == 0).sum()),
            "n_anomaly": int(y.sum()),
        }
        for m, s in scores.items():
            v = np.array([s[i] for i in idx])
            entry[m] = {"auc": roc_auc(y, v), "pauc": partial_auc(y, v, MAX_FPR)}
        out.append(entry)
    return out


def per_fault(group: Group, scores: dict[str, list[float]]) -> list[dict[str, Any]]:
    """AUC of each fault's clips against all normal clips of the same machine id, averaged over ids."""
    out = []
    for fault in sorted({t["fault"] for t in group.tests if t["y"] == 1}):
        per: dict[str, list[float]] = defaultdict(list)
        n = 0
        for machine_id in sorted({t["machine_id"] for t in group.tests}):
            idx = [
                i
                for i, t in enumerate(group.tests)
                if t["machine_id"] == machine_id and (t["y"] == 0 or t["fault"] == fault)
            ]
            y = np.array([group.tests[i]["y"] for i in idx])
            if y.min() == y.max():
                continue
            n += int(y.sum())
            for m, s in scores.items():
                per[m].append(roc_auc(y, np.array([s[i] for i in idx])))
        if n:
            out.append(
                {
                    "set": group.set_name,
                    "machine_type": group.machine_type,
                    "fault": fault,
                    "n_anomaly": n,
                    **{m: float(np.mean(v)) for m, v in per.items()},
                }
            )
    return out


def summarize(by_id: list[dict[str, Any]], methods: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for set_name in dict.fromkeys(e["set"] for e in by_id):
        entries = [e for e in by_id if e["set"] == set_name]
        types = {}
        for machine_type in dict.fromkeys(e["machine_type"] for e in entries):
            sel = [e for e in entries if e["machine_type"] == machine_type]
            types[machine_type] = {
                m: {k: float(np.mean([e[m][k] for e in sel])) for k in ("auc", "pauc")} for m in methods
            }
        overall = {m: {k: float(np.mean([e[m][k] for e in entries])) for k in ("auc", "pauc")} for m in methods}
        beaten = [t for t, v in types.items() if v["ours-int8"]["auc"] < max(v[r]["auc"] for r in REFERENCES) - 1e-9]
        summary[set_name] = {
            "role": ROLE[set_name],
            "per_type": types,
            "overall": overall,
            "types_below_better_reference": beaten,
        }
        if "ours-float" in methods:
            summary[set_name]["int8_minus_float_max_abs_per_id"] = float(
                max(abs(e["ours-int8"]["auc"] - e["ours-float"]["auc"]) for e in entries)
            )
    return summary


def markdown(summary, by_fault, alarms, methods, config_lines, timings, site=None) -> str:
    lines = ["## Detection quality: mean AUC / pAUC per machine type (AUC per machine id, then averaged)", ""]
    lines.append("| set | role | type | " + " | ".join(methods) + " |")
    lines.append("|---|---|---|" + "---:|" * len(methods))
    for set_name, s in summary.items():
        for machine_type, v in list(s["per_type"].items()) + [("**mean**", s["overall"])]:
            best_ref = max(v[r]["auc"] for r in REFERENCES)
            cells = []
            for m in methods:
                cell = f"{v[m]['auc']:.3f} / {v[m]['pauc']:.3f}"
                if m == "ours-int8":
                    cell = f"**{cell}**" if v[m]["auc"] >= best_ref - 1e-9 else f"{cell} (below)"
                cells.append(cell)
            lines.append(f"| {set_name} | {s['role']} | {machine_type} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## AUC per fault (the fault's clips against the same id's normal clips)",
        "",
        "| set | type | fault | clips | " + " | ".join(methods) + " |",
        "|---|---|---|---:|" + "---:|" * len(methods),
    ]
    for e in by_fault:
        lines.append(
            f"| {e['set']} | {e['machine_type']} | {e['fault']} | {e['n_anomaly']} | "
            + " | ".join(f"{e[m]:.3f}" for m in methods)
            + " |"
        )
    if alarms:
        lines += [
            "",
            "## False alarms on normal audio never used for fitting (long normal streams)",
            "",
            "| set/type | target | threshold | promised /h | continuous /h (95 % CI) | 5 s clips /h | spliced /h | "
            "fault clips alarming |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for machine_type, a in alarms.items():
            for r in a["targets"]:

                def cell(mode, r=r):
                    v = r[mode]
                    return f"{v['per_hour']:.2f} ({v['per_hour_95ci'][0]:.2f}-{v['per_hour_95ci'][1]:.2f})"

                lines.append(
                    f"| {machine_type} | {r['target']} | {r['threshold']:.3g} | {r['promised_per_hour']:.3g} | "
                    f"{cell('continuous')} | {r['5s_clips']['per_hour']:.2f} | {r['spliced']['per_hour']:.2f} | "
                    f"{r['fault_clips_alarming']:.2f} |"
                )
            lines.append(
                f"| {machine_type} | audio | | | {a['hours']:.2f} h | {a['hours']:.2f} h | "
                f"{a['spliced_hours']:.2f} h | |"
            )
    if site:
        lines += [
            "",
            "## False alarms after on-site calibration (`device calibrate` on the first minutes of each "
            "mounting, alarms counted on the rest)",
            "",
            "| set/type | promised /h | mountings | calibrated on (min) | hours counted | alarms | observed /h "
            "(95 % CI) | observed / promised | time in alarm | refused, then forced | calibration warned | "
            "above the calibration's 90 % interval | injected faults alarming (clean) | "
            "test clips alarming: fault / normal |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for label, a in site.items():
            for r in a["targets"]:
                lines.append(
                    f"| {label} | {r['promised_per_hour']:.3g} | {r['mountings']} | "
                    f"{r['calibration_minutes']:.1f} | {r['hours']:.1f} | {r['alarms']} | {r['per_hour']:.2f} "
                    f"({r['per_hour_95ci'][0]:.2f}-{r['per_hour_95ci'][1]:.2f}) | {r['ratio']:.2f} | "
                    f"{r.get('share_in_alarm', float('nan')):.1%} | {len(r['errors'])} | {r.get('warned', '')} | "
                    f"{r.get('beyond_interval', '')} | {r['injected_alarming']:.2f} ({r['clean_segments_alarming']:.2f}) | "
                    f"{r['fault_clips_alarming']:.2f} / {r['normal_clips_alarming']:.2f} |"
                )
        for per_day in SITE_TARGETS_PER_DAY:
            rs = [r for a in site.values() for r in a["targets"] if r["false_alarms_per_day"] == per_day]
            k, hours = sum(r["alarms"] for r in rs), sum(r["hours"] for r in rs)
            if hours > 0:
                lo, hi = poisson_interval(k)
                lines.append(
                    f"| **all** | {per_day / 24:.3g} | {sum(r['mountings'] for r in rs)} | | {hours:.1f} | {k} | "
                    f"{k / hours:.2f} ({lo / hours:.2f}-{hi / hours:.2f}) | {k / hours / (per_day / 24):.2f} | "
                    f"{sum(r['windows_in_alarm'] for r in rs) / max(sum(r['windows'] for r in rs), 1):.1%} | "
                    f"{sum(len(r['errors']) for r in rs)} | {sum(r.get('warned', 0) for r in rs)} | "
                    f"{sum(r.get('beyond_interval', 0) for r in rs)} | | |"
                )
    lines += [
        "",
        "Time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()),
        "",
        "Configuration:",
        "",
        "```",
        *config_lines,
        "```",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("device").setLevel(logging.ERROR)  # every replayed anomaly would log its event
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"keras\..*")
    started = time.monotonic()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    methods = [m for m in METHODS if not (args.no_float and m == "ours-float")]
    dcase_params = DcaseParams(epochs=args.dcase_epochs)
    config_lines = [
        f"command: {' '.join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:]))}",
        f"sets: {', '.join(f'{s} ({ROLE[s]})' for s in args.sets)}; sizes {'quick' if args.quick else 'full'}",
        "ours: training.fit.fit(GROUP, FeatureParams(), FitOptions(seed)) = python -m training fit; one model per group",
        "ours-int8: Runner(AcmonConfig()).run_stream(WavFileStream) = python -m device score (mean of window scores)",
        "ours-float: model_float.keras on the same windows and level gate, through the model's scorer",
        f"dcase2020-ae: {dataclasses.asdict(dcase_params)}; mahalanobis: clip-mean log-mel, Ledoit-Wolf",
        f"candidate: {args.tag or 'the default'}; fit options {args.fit_options or 'defaults'}",
        f"host: {platform.machine()}, {os.cpu_count()} cpu, Python {platform.python_version()}; work {work}",
    ]
    print("\n".join(config_lines), flush=True)

    groups: list[Group] = []
    for s in args.sets:
        if s in SYNTH_SETS + ("plant",):
            groups += synth_groups(s, work, args)
    real = [s for s in args.sets if s in REAL_SETS]
    if real:
        groups += real_groups(real, work, args)
    timings = {"data": time.monotonic() - started}
    by_id, by_fault, alarms, fits = [], [], {}, {}
    for t in ("ours", "ours-float", "dcase2020-ae", "mahalanobis", "false-alarms"):
        timings[t] = 0.0
    result_key = {
        "code": _code_stamp(),
        "seed": args.seed,
        "dcase_epochs": args.dcase_epochs,
        "long_minutes": args.long_minutes,
        "methods": methods,
        "quick": args.quick,
        **({"fit_options": args.fit_options} if args.fit_options else {}),
    }
    for group in groups:
        label = f"{group.set_name}/{group.machine_type}"
        saved = work / "results" / args.tag / group.set_name / f"{group.machine_type}.json"
        if saved.exists() and (done := json.loads(saved.read_text())).get("key") == result_key:
            by_id += metrics(group, done["scores"])
            by_fault += per_fault(group, done["scores"])
            fits[label] = done["fit"]
            if done.get("alarms"):
                alarms[label] = done["alarms"]
            print(f"{label}: results of an earlier run with the same code and settings", flush=True)
            continue
        train = [load_mono(p) for p in sorted((group.data_dir / "train").glob("*.wav"))]
        clips = [load_mono(t["path"]) for t in group.tests]
        scores: dict[str, list[float]] = {}
        t0 = time.monotonic()
        model_dir = work / "models" / args.tag / group.set_name / group.machine_type
        summary = fit_ours(group, model_dir, args, work / "cache")
        runner, scores["ours-int8"], alarm_flags, test_windows = score_ours(model_dir / "model.tflite", group.tests)
        timings["ours"] += time.monotonic() - t0
        fits[label] = {
            k: summary.get(k) for k in ("members", "choice", "threshold", "calibration", "float_int8_parity", "seconds")
        }
        fits[label]["fault_clips_alarming"] = float(np.mean([a for a, t in zip(alarm_flags, group.tests) if t["y"]]))
        fits[label]["normal_clips_alarming"] = float(
            np.mean([a for a, t in zip(alarm_flags, group.tests) if not t["y"]])
        )
        if "ours-float" in methods:
            t1 = time.monotonic()
            scores["ours-float"] = score_float(model_dir, runner, clips)
            timings["ours-float"] += time.monotonic() - t1
        # The references do not depend on acmon's code: every candidate run (--tag) reuses them.
        refs_path = work / "results" / "references" / group.set_name / f"{group.machine_type}.json"
        refs_key = {
            "seed": args.seed,
            "dcase": dataclasses.asdict(dcase_params),
            "quick": args.quick,
            "tests": [str(t["path"]) for t in group.tests],
        }
        if refs_path.exists() and (refs := json.loads(refs_path.read_text())).get("key") == refs_key:
            scores.update(refs["scores"])
        else:
            t2 = time.monotonic()
            scores["dcase2020-ae"] = DcaseBaseline(dcase_params, seed=args.seed).fit(train).score(clips).tolist()
            t3 = time.monotonic()
            timings["dcase2020-ae"] += t3 - t2
            scores["mahalanobis"] = MahalanobisBaseline().fit(train).score(clips).tolist()
            timings["mahalanobis"] += time.monotonic() - t3
            refs_path.parent.mkdir(parents=True, exist_ok=True)
            refs_path.write_text(json.dumps({"key": refs_key, "scores": {m: scores[m] for m in REFERENCES}}))
        by_id += metrics(group, scores)
        by_fault += per_fault(group, scores)
        if group.long_streams:
            t4 = time.monotonic()
            alarms[label] = false_alarms(group, model_dir, runner, test_windows)
            timings["false-alarms"] += time.monotonic() - t4
        saved.parent.mkdir(parents=True, exist_ok=True)  # a crash later keeps this group's work
        saved.write_text(
            json.dumps(
                {"key": result_key, "scores": scores, "fit": fits[label], "alarms": alarms.get(label)}, default=str
            )
        )
        print(
            f"{label}: done at {time.monotonic() - started:.0f} s (members {'+'.join(summary.get('members') or [])})",
            flush=True,
        )

    site: dict[str, Any] = {}
    if args.site_minutes > 0:
        timings["site-calibrated"] = 0.0
        site_key = {**result_key, "site_minutes": args.site_minutes, "targets": SITE_TARGETS_PER_DAY, "version": 3}
        for group in (g for g in groups if g.long_streams):
            label = f"{group.set_name}/{group.machine_type}"
            saved = work / "results" / args.tag / group.set_name / f"{group.machine_type}.site.json"
            key = {**site_key, **({"drifting": len(group.site_streams)} if group.site_streams else {})}
            if saved.exists() and (done := json.loads(saved.read_text())).get("key") == json.loads(json.dumps(key)):
                site[label] = done["site"]
                continue
            t5 = time.monotonic()
            model_dir = work / "models" / args.tag / group.set_name / group.machine_type
            site[label] = site_calibrated_alarms(
                group,
                model_dir / "model.tflite",
                work / "site" / args.tag / group.set_name / group.machine_type,
                args.site_minutes,
            )
            timings["site-calibrated"] += time.monotonic() - t5
            saved.write_text(json.dumps({"key": key, "site": site[label]}, default=str))
            print(f"{label}: site-calibrated false alarms done at {time.monotonic() - started:.0f} s", flush=True)

    summary = summarize(by_id, methods)
    timings["total"] = time.monotonic() - started
    report = markdown(summary, by_fault, alarms, methods, config_lines, timings, site)
    print()
    print(report)
    if args.markdown_out:
        Path(args.markdown_out).write_text(report)
    if args.json_out:
        doc = {
            "config": {"lines": config_lines, "args": {k: v for k, v in vars(args).items()}},
            "summary": summary,
            "by_id": by_id,
            "by_fault": by_fault,
            "false_alarms": alarms,
            "site_calibrated_false_alarms": site,
            "fits": fits,
            "notes": {f"{g.set_name}/{g.machine_type}": g.note for g in groups if g.note},
            "timings_seconds": timings,
        }
        Path(args.json_out).write_text(json.dumps(doc, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

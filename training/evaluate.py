"""`python -m training evaluate`: AUC, pAUC and alarm decisions of a model on labelled test clips, scored by the device.

Over 500 lines on purpose: one command from test clips to report (finding clips in every layout, scoring
through the device's pipeline, float parity, per-group metrics, the Markdown report and the ROC plot).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from device import __version__
from device.analysis.features import extract_patch
from device.analysis.inference import output_score
from device.analysis.metadata import CLASSIFICATION
from device.analysis.model_file import load_metadata, resolve_model_path
from device.audio.sources import WAV_SUFFIXES, open_source
from device.errors import AcmonError
from device.pipeline import WindowResult, clip_score, iter_windows

from . import datasets
from .class_report import evaluate_classifier
from .datasets import DCASE_NAME
from .metrics import confusion_matrix, harmonic_mean, partial_auc, roc_auc, roc_curve
from .tracking import add_arguments as add_tracking_arguments
from .tracking import tracked_run

logger = logging.getLogger(__name__)

MAX_FPR = 0.1
"""Upper FPR of the partial AUC, as in DCASE Task 2."""
FLOAT_MODEL_FILENAME = "model_float.keras"
FLOAT_BATCH_PATCHES = 2048
"""Patches collected before one Keras predict call (bounds memory on large test sets)."""
REPORT_FILES = {
    "scores_csv": "scores.csv",
    "report_json": "report.json",
    "report_md": "report.md",
    "roc_png": "roc.png",
}
CSV_COLUMNS = ("path", "machine_type", "machine_id", "label", "int8_score", "float_score", "anomaly_decision", "events")


@dataclass
class TestClip:
    """One labelled test recording.

    Attributes:
        path: the WAV file.
        machine_type: the machine folder's name (pump, fan, ...).
        machine_id: the id from the file name, as written there ("00").
        label: "normal", "anomaly", or a fault name (layouts other than DCASE).
        int8_score: the device's clip score (mean of its window scores), None if no window was scored.
        float_score: the float Keras model's clip score on the same windows, if evaluated.
        events: alarm events the device raised while streaming the clip.
        windows: analysis windows in the clip.
    """

    path: Path
    machine_type: str
    machine_id: str
    label: str
    int8_score: float | None = None
    float_score: float | None = None
    events: int = 0
    windows: int = 0

    @property
    def is_anomaly(self) -> bool:
        """Any label but "normal" (a fault name from a manifest or label folder is an anomaly)."""
        return self.label != "normal"

    @property
    def decision(self) -> bool:
        """What a technician would see: the device raised at least one alarm for this clip."""
        return self.events > 0


@dataclass
class TestSet:
    """The clips found under a data folder, and the files left out (with reasons)."""

    clips: list[TestClip] = field(default_factory=list)
    ignored: list[tuple[Path, str]] = field(default_factory=list)


def _parse_test_name(name: str) -> tuple[str, str] | None:
    """(label, machine id) from a DCASE test file name, or None; 2021-2023 names too when datasets knows them."""
    parse = getattr(datasets, "parse_dcase_name", None)
    if parse is not None:
        info = parse(name)
        return None if info is None else (info["label"], info["machine_id"])
    match = DCASE_NAME.match(name)
    return None if match is None else (match.group("label").lower(), match.group("machine_id"))


def find_test_clips(data_dir: str | Path) -> TestSet:
    """Labelled test clips, in the DCASE Task 2 layout or any other layout datasets.discover() knows.

    DCASE: DATA/test/{normal,anomaly}_id_XX_NNNNNNNN.wav for one machine folder,
    or DATA/<machine type>/test/... for a folder of machine folders (2021-2023
    section_XX_..._{normal,anomaly}_... names too where training.datasets
    parses them). WAV files in test/ whose name carries no label are listed in
    TestSet.ignored. Without any DCASE test folder, datasets.discover() is
    asked (a folder per label, a manifest, ...); its train-split records and
    spans inside longer recordings are left out (evaluation streams whole
    files, as the device does), and any label other than "normal" counts as
    an anomaly.

    Raises:
        AcmonError: the folder does not exist or holds no labelled test clip.
    """
    root = Path(data_dir)
    if not root.exists():
        raise AcmonError(f"{root}: no such data folder; give a machine folder with a test/ subfolder (DCASE layout)")
    if root.is_dir() and (root / "test").is_dir():
        machines = [root]
    elif root.is_dir():
        machines = sorted(d for d in root.iterdir() if d.is_dir() and (d / "test").is_dir())
    else:
        machines = []
    found = TestSet()
    for machine in machines:
        for path in sorted((machine / "test").iterdir()):
            if path.suffix.lower() not in WAV_SUFFIXES or not path.is_file():
                continue
            parsed = _parse_test_name(path.name)
            if parsed is None:
                found.ignored.append((path, "name is not {normal,anomaly}_id_XX_NNNNNNNN.wav: no label"))
                continue
            found.clips.append(TestClip(path, machine.name, parsed[1], parsed[0]))
    if not machines and hasattr(datasets, "discover"):
        found = _discovered_test_clips(root)
    if not found.clips:
        looked = ", ".join(str(m / "test") for m in machines) or f"{root}/test or {root}/*/test"
        raise AcmonError(
            f"{root}: no labelled test clips found (looked in {looked}); expected the DCASE layout "
            "MACHINE/test/normal_id_00_00000000.wav and anomaly_id_00_00000000.wav"
        )
    for path, reason in found.ignored:
        logger.warning("ignoring %s: %s", path, reason)
    return found


def _discovered_test_clips(root: Path) -> TestSet:
    """Whole-file, non-training records from datasets.discover() as test clips."""
    found = TestSet()
    load_report = datasets.LoadReport()
    for record in datasets.discover(root, report=load_report):
        if record.split == "train":
            continue
        if record.is_span:
            found.ignored.append((Path(record.describe()), "a span inside a recording: evaluation streams whole files"))
            continue
        found.clips.append(
            TestClip(Path(record.path), record.machine_type or root.name, record.machine_id, record.label)
        )
    for path, reason in load_report.failed:
        found.ignored.append((Path(path), reason))
    return found


@contextlib.contextmanager
def _quiet(logger_name: str, level: int = logging.ERROR) -> Iterator[None]:
    """Raise one logger's level for a while (the runner logs every alarm as a warning)."""
    log = logging.getLogger(logger_name)
    old = log.level
    log.setLevel(max(level, log.getEffectiveLevel()))
    try:
        yield
    finally:
        log.setLevel(old)


def _tee(blocks: Iterable[np.ndarray], keep: list[np.ndarray] | None) -> Iterator[np.ndarray]:
    """Pass blocks through, keeping them if asked (to cut the float model's windows from the same audio)."""
    for block in blocks:
        if keep is not None:
            keep.append(block)
        yield block


class FloatScorer:
    """The float Keras model's clip scores on the windows the device scored, predicted in batches."""

    def __init__(self, model, params, score_kind: str, scorer=None):
        self.model = model
        self.params = params
        self.score_kind = score_kind
        self.scorer = scorer  # a Gaussian model's Scorer: the float outputs go through it as the int8 ones do
        self._pending: list[tuple[TestClip, np.ndarray]] = []
        self._n_pending = 0

    def add(self, clip: TestClip, blocks: list[np.ndarray], scored_indices: set[int]) -> None:
        """Queue a clip: its blocks as the device received them and the indices of the windows it scored."""
        patches = [
            extract_patch(w.samples, self.params)
            for w in iter_windows(blocks, self.params)
            if w.index in scored_indices
        ]
        if len(patches) != len(scored_indices):
            raise RuntimeError(f"{clip.path}: {len(patches)} float windows but the device scored {len(scored_indices)}")
        if not patches:
            return
        self._pending.append((clip, np.stack(patches).astype(np.float32)))
        self._n_pending += len(patches)
        if self._n_pending >= FLOAT_BATCH_PATCHES:
            self.flush()

    def flush(self) -> None:
        """Run the model on every queued patch and set each queued clip's float_score."""
        if not self._pending:
            return
        x = np.concatenate([p for _, p in self._pending])
        out = np.asarray(self.model.predict(x[..., None], verbose=0))
        start = 0
        for clip, patches in self._pending:
            outputs = out[start : start + len(patches)]
            start += len(patches)
            if self.scorer is not None:
                scores = self.scorer.series(outputs.reshape(len(outputs), -1)).tolist()
            else:
                scores = [output_score(p, o, self.score_kind) for p, o in zip(patches, outputs)]
            clip.float_score = clip_score(scores)
        self._pending, self._n_pending = [], 0


def _load_float_model(path: Path) -> tuple[Any, str | None]:
    """(keras model, None), or (None, why not) when it is missing or cannot be loaded."""
    if not path.is_file():
        return None, f"no float model: {path} does not exist, so float-versus-int8 parity was not measured"
    try:
        from .tf_setup import import_tensorflow  # noqa: PLC0415

        tf = import_tensorflow()
    except ImportError as exc:
        return None, f"TensorFlow is not installed ({exc}); float-versus-int8 parity was not measured"
    try:
        return tf.keras.models.load_model(path, compile=False), None
    except Exception as exc:  # noqa: BLE001 - any Keras load failure only disables the parity check
        return None, f"{path}: cannot load the float model ({type(exc).__name__}: {exc}); parity was not measured"


def _rate(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def _safe_metric(fn, y: np.ndarray, s: np.ndarray) -> float | None:
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        return None
    return float(fn(y, s))


def _auc_note(n_normal: int, n_anomaly: int) -> str | None:
    if n_anomaly == 0 and n_normal == 0:
        return "undefined: no scored clip"
    if n_anomaly == 0:
        return "undefined: no scored anomalous clip for this id (AUC needs both normal and anomalous clips)"
    if n_normal == 0:
        return "undefined: no scored normal clip for this id (AUC needs both normal and anomalous clips)"
    return None


def _correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.size < 2 or np.std(a) == 0 or np.std(b) == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _group_metrics(machine_type: str, machine_id: str, clips: list[TestClip], with_float: bool) -> dict[str, Any]:
    """Counts, AUC, pAUC and the confusion matrix of one machine id."""
    scored = [c for c in clips if c.int8_score is not None]
    y = np.array([c.is_anomaly for c in scored], dtype=bool)
    s = np.array([c.int8_score for c in scored], dtype=np.float64)
    n_anomaly = int(y.sum())
    note = _auc_note(len(scored) - n_anomaly, n_anomaly)
    group: dict[str, Any] = {
        "machine_type": machine_type,
        "machine_id": machine_id,
        "n_normal": sum(not c.is_anomaly for c in clips),
        "n_anomaly": sum(c.is_anomaly for c in clips),
        "n_unscored": len(clips) - len(scored),
        "auc": _safe_metric(roc_auc, y, s),
        "pauc": _safe_metric(lambda a, b: partial_auc(a, b, MAX_FPR), y, s),
        "auc_note": note,
        # Every read clip counts here: an unscored (silent, too short) clip raised no alarm, and that is what is seen.
        "confusion": confusion_matrix([c.is_anomaly for c in clips], [c.decision for c in clips]),
    }
    if with_float:
        both = [c for c in scored if c.float_score is not None]
        yf = np.array([c.is_anomaly for c in both], dtype=bool)
        sf = np.array([c.float_score for c in both], dtype=np.float64)
        si = np.array([c.int8_score for c in both], dtype=np.float64)
        auc_float = _safe_metric(roc_auc, yf, sf)
        auc_int8 = _safe_metric(roc_auc, yf, si)
        group["parity"] = {
            "n_clips": len(both),
            "auc_float": auc_float,
            "auc_int8": auc_int8,
            "auc_difference": None if auc_float is None or auc_int8 is None else auc_float - auc_int8,
            "pauc_float": _safe_metric(lambda a, b: partial_auc(a, b, MAX_FPR), yf, sf),
            "score_correlation": _correlation(sf, si),
        }
    return group


def _summary(groups: list[dict[str, Any]], clips: list[TestClip]) -> dict[str, Any]:
    """Means over ids with a defined AUC (arithmetic, harmonic, and the DCASE 2021+ official score)."""
    defined = [g for g in groups if g["auc"] is not None]
    aucs = [g["auc"] for g in defined]
    paucs = [g["pauc"] for g in defined]
    return {
        "n_ids": len(groups),
        "n_ids_with_auc": len(defined),
        "mean_auc": float(np.mean(aucs)) if aucs else None,
        "mean_pauc": float(np.mean(paucs)) if paucs else None,
        "hmean_auc": harmonic_mean(aucs) if aucs else None,
        "hmean_pauc": harmonic_mean(paucs) if paucs else None,
        # DCASE 2021+ ranks systems by the harmonic mean of all AUCs and pAUCs together.
        "dcase_official_score": harmonic_mean(aucs + paucs) if aucs else None,
        "confusion": confusion_matrix([c.is_anomaly for c in clips], [c.decision for c in clips]),
    }


def _parity_summary(groups: list[dict[str, Any]], clips: list[TestClip]) -> dict[str, Any]:
    both = [c for c in clips if c.int8_score is not None and c.float_score is not None]
    pairs = [
        (g["parity"]["auc_float"], g["parity"]["auc_int8"]) for g in groups if g["parity"]["auc_difference"] is not None
    ]
    return {
        "n_clips": len(both),
        "score_correlation": _correlation(
            np.array([c.float_score for c in both], dtype=np.float64),
            np.array([c.int8_score for c in both], dtype=np.float64),
        ),
        "mean_auc_float": float(np.mean([p[0] for p in pairs])) if pairs else None,
        "mean_auc_int8": float(np.mean([p[1] for p in pairs])) if pairs else None,
        "auc_difference": float(np.mean([p[0] - p[1] for p in pairs])) if pairs else None,
        "max_abs_auc_difference": float(max(abs(p[0] - p[1]) for p in pairs)) if pairs else None,
    }


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown_report(report: dict[str, Any]) -> str:
    """The readable report: one table row per machine id, means, parity and notes."""
    model = report["model"]
    lines = [
        f"# Evaluation of {model['name']} {model['version']}",
        "",
        f"Model `{model['path']}` (threshold {model['threshold']:.4g}, {model['score_kind']}, {model['runtime']}); "
        f"data `{report['data']}`. Scores from the device's streaming pipeline (clip score = mean window score); "
        f"decision = the device raised an alarm for the clip. pAUC over FPR 0-{report['max_fpr']:g}, divided by "
        f"{report['max_fpr']:g} (chance = {report['max_fpr'] / 2:g}).",
        "",
        "| machine | id | normal | anomaly | AUC | pAUC | TP | FN | FP | TN | recall | false alarm rate |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for g in report["groups"]:
        cm = g["confusion"]
        lines.append(
            f"| {g['machine_type']} | {g['machine_id'] or '–'} | {g['n_normal']} | {g['n_anomaly']} | {_fmt(g['auc'])} | "
            f"{_fmt(g['pauc'])} | {cm['tp']} | {cm['fn']} | {cm['fp']} | {cm['tn']} | {_fmt(cm['recall'], 2)} | "
            f"{_fmt(cm['false_alarm_rate'], 2)} |"
        )
    scopes = [(f"{t}", s) for t, s in report["machine_types"].items()] if len(report["machine_types"]) > 1 else []
    scopes.append(("all", report["overall"]))
    for name, s in scopes:
        cm = s["confusion"]
        lines.append(
            f"| **{name}: mean** | {s['n_ids_with_auc']}/{s['n_ids']} ids | | | **{_fmt(s['mean_auc'])}** | "
            f"**{_fmt(s['mean_pauc'])}** | {cm['tp']} | {cm['fn']} | {cm['fp']} | {cm['tn']} | "
            f"{_fmt(cm['recall'], 2)} | {_fmt(cm['false_alarm_rate'], 2)} |"
        )
        lines.append(
            f"| **{name}: harmonic mean** | | | | {_fmt(s['hmean_auc'])} | {_fmt(s['hmean_pauc'])} | | | | | | |"
        )
    overall = report["overall"]
    lines += [
        "",
        f"DCASE 2021+ official score (harmonic mean of all AUCs and pAUCs): {_fmt(overall['dcase_official_score'])}",
    ]

    parity = report["float_int8_parity"]
    lines += ["", "## Float versus int8", ""]
    if not parity["available"]:
        lines.append(parity["note"])
    else:
        lines += [
            "| machine | id | AUC float | AUC int8 | difference | score correlation |",
            "|---|---|--:|--:|--:|--:|",
        ]
        for g in report["groups"]:
            p = g["parity"]
            lines.append(
                f"| {g['machine_type']} | {g['machine_id'] or '–'} | {_fmt(p['auc_float'])} | {_fmt(p['auc_int8'])} | "
                f"{_fmt(p['auc_difference'])} | {_fmt(p['score_correlation'], 4)} |"
            )
        o = parity["overall"]
        lines.append(
            f"| **all** | | {_fmt(o['mean_auc_float'])} | {_fmt(o['mean_auc_int8'])} | {_fmt(o['auc_difference'])} | "
            f"{_fmt(o['score_correlation'], 4)} |"
        )

    notes = [
        f"{g['machine_type']} id {g['machine_id']}: AUC {g['auc_note']}" for g in report["groups"] if g["auc_note"]
    ]
    clips = report["clips"]
    notes += [f"unreadable, not counted: `{u['path']}`: {u['error']}" for u in clips["unreadable"]]
    notes += [
        f"no window scored (shorter than one window or below the level gate), left out of AUC: `{p}`"
        for p in clips["unscored"]
    ]
    notes += [f"ignored (no label in the name): `{i['path']}`" for i in clips["ignored"]]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def plot_roc(groups: list[tuple[dict[str, Any], np.ndarray, np.ndarray]], path: Path, max_fpr: float = MAX_FPR) -> None:
    """ROC curves, one per machine id, with the chance diagonal and the pAUC limit, as a PNG.

    Args:
        groups: (group metrics, y_true, scores) for each id with a defined AUC.
        path: the PNG to write.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - no pyplot: no global backend
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=(6, 6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for g, y, s in groups:
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, lw=1.5, label=f"{g['machine_type']} id {g['machine_id']} (AUC {g['auc']:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    ax.axvline(max_fpr, ls=":", color="black", lw=1, label=f"FPR = {max_fpr:g} (pAUC limit)")
    if not groups:
        ax.text(0.5, 0.5, "no id has both normal and anomalous clips", ha="center", va="center")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (normal clips scored above the threshold)")
    ax.set_ylabel("true positive rate (anomalous clips detected)")
    ax.set_title("ROC of clip scores (device int8 pipeline)")
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as exc:
        raise AcmonError(f"{path}: cannot write the report: {exc.strerror or exc}; choose another --out") from None


def evaluate(
    model_dir: str | Path,
    data_dir: str | Path,
    out_dir: str | Path | None = None,
    progress: bool = True,
    config_path: str | Path | None = None,
    machine_type: str | None = None,
) -> dict[str, Any]:
    """Score every labelled test clip through the device's streaming pipeline and write the report.

    Each clip goes through device.daemon.runner.Runner.run_stream exactly as
    `python -m device score` does: same windows, normalization, level gate and
    decisions. If MODEL_DIR/model_float.keras exists, the float model scores
    the same windows for the float-versus-int8 parity check.

    Args:
        model_dir: model folder (with model.tflite) or a .tflite file.
        data_dir: a machine folder with test/ (DCASE 2020 layout), or a folder of machine folders.
        out_dir: where to write scores.csv, report.json, report.md and roc.png;
            MODEL_DIR/evaluation by default.
        progress: show a tqdm progress bar on stderr.
        config_path: device YAML whose detector and feature settings to use; defaults otherwise.
        machine_type: evaluate this machine type only. By default, when the data holds several
            types and one of them is the model's name (fit names a model after its machine),
            that one; a model is trained for one machine and says nothing about the others.

    Returns:
        The report (as written to report.json), plus "markdown": the text of report.md.

    Raises:
        AcmonError: the model or the data folder is unusable, or the report cannot be written.
    """
    from device.daemon.runner import Runner  # noqa: PLC0415
    from device.settings.config import load_config  # noqa: PLC0415
    from device.settings.schema import AcmonConfig  # noqa: PLC0415

    started = time.monotonic()
    model_path = resolve_model_path(model_dir)
    model_folder = model_path.parent
    out = Path(out_dir) if out_dir is not None else model_folder / "evaluation"
    if load_metadata(model_path)[2].task == CLASSIFICATION:  # a sound classifier: accuracy, not AUC
        return evaluate_classifier(model_path, data_dir, out, progress)
    cfg = load_config(config_path) if config_path else AcmonConfig()
    test_set = find_test_clips(data_dir)
    runner = Runner(cfg, model_path=str(model_path), use_mqtt=False, events_out=None)
    params = runner.model.params
    score_kind = runner.model.metadata.score_kind
    types = sorted({c.machine_type for c in test_set.clips})
    if machine_type is None and len(types) > 1 and runner.model.metadata.name in types:
        machine_type = runner.model.metadata.name
        logger.info("evaluating machine type %s (the model's name) out of %s", machine_type, ", ".join(types))
    if machine_type is not None:
        if machine_type not in types:
            raise AcmonError(
                f"--machine-type {machine_type!r}: no test clips of it in {data_dir} (found: {', '.join(types)})"
            )
        test_set.clips = [c for c in test_set.clips if c.machine_type == machine_type]

    float_model, float_note = _load_float_model(model_folder / FLOAT_MODEL_FILENAME)
    if float_note:
        logger.info("%s", float_note)
    scorer = FloatScorer(float_model, params, score_kind, runner.model.scorer) if float_model is not None else None

    read: list[TestClip] = []
    unreadable: list[dict[str, str]] = []
    with _quiet("device.daemon.runner"):
        for clip in tqdm(test_set.clips, desc="evaluate", unit="clip", disable=not progress):
            stream = open_source(cfg.audio, params.sample_rate_hz, clip.path)
            blocks: list[np.ndarray] | None = [] if scorer is not None else None
            scored_indices: set[int] = set()

            def on_window(result: WindowResult, scored=scored_indices) -> None:
                if result.score is not None:
                    scored.add(result.index)

            try:
                summary = runner.run_stream(str(clip.path), _tee(stream.blocks(), blocks), on_window=on_window)
            except AcmonError as exc:
                logger.warning("skipping unreadable clip: %s", exc)
                unreadable.append({"path": str(clip.path), "error": str(exc)})
                continue
            clip.int8_score, clip.events, clip.windows = summary.score, summary.events, summary.windows
            read.append(clip)
            if scorer is not None and blocks is not None:
                scorer.add(clip, blocks, scored_indices)
    if scorer is not None:
        scorer.flush()
    if not read:
        raise AcmonError(f"{data_dir}: none of the {len(test_set.clips)} test clip(s) could be read")

    keys = sorted({(c.machine_type, c.machine_id) for c in read})
    groups, curves = [], []
    for machine_type, machine_id in keys:
        members = [c for c in read if (c.machine_type, c.machine_id) == (machine_type, machine_id)]
        g = _group_metrics(machine_type, machine_id, members, scorer is not None)
        groups.append(g)
        if g["auc"] is not None:
            scored = [c for c in members if c.int8_score is not None]
            curves.append((g, np.array([c.is_anomaly for c in scored]), np.array([c.int8_score for c in scored])))
        logger.info(
            "%s id %s: AUC %s, pAUC %s%s",
            machine_type,
            machine_id,
            _fmt(g["auc"]),
            _fmt(g["pauc"]),
            f" ({g['auc_note']})" if g["auc_note"] else "",
        )
    machine_types = {
        t: _summary([g for g in groups if g["machine_type"] == t], [c for c in read if c.machine_type == t])
        for t in sorted({c.machine_type for c in read})
    }
    parity: dict[str, Any] = {"available": scorer is not None, "model": str(model_folder / FLOAT_MODEL_FILENAME)}
    if scorer is not None:
        parity["note"] = "float Keras model scored on the same windows as the int8 model"
        parity["overall"] = _parity_summary(groups, read)
    else:
        parity["note"] = float_note

    out.mkdir(parents=True, exist_ok=True)
    files = {key: str(out / name) for key, name in REPORT_FILES.items()}
    meta = runner.model.metadata
    report: dict[str, Any] = {
        "acmon_version": __version__,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "path": str(runner.model.path),
            "name": meta.name,
            "version": meta.version,
            "sha256": runner.model.sha256,
            "score_kind": score_kind,
            "runtime": runner.model.runtime.name,
            "threshold": runner.settings.threshold,
        },
        "detector": {
            "threshold": runner.settings.threshold,
            "patience_windows": runner.settings.patience_windows,
            "cooldown_seconds": runner.settings.cooldown_seconds,
            "min_rms_dbfs": cfg.detector.min_rms_dbfs,
        },
        "data": str(data_dir),
        "max_fpr": MAX_FPR,
        "pauc_definition": "area under the ROC for FPR in [0, max_fpr] divided by max_fpr (DCASE; not McClish-standardized)",
        "clips": {
            "total": len(test_set.clips),
            "read": len(read),
            "scored": sum(c.int8_score is not None for c in read),
            "unreadable": unreadable,
            "unscored": [str(c.path) for c in read if c.int8_score is None],
            "ignored": [{"path": str(p), "reason": r} for p, r in test_set.ignored],
        },
        "groups": groups,
        "machine_types": machine_types,
        "overall": _summary(groups, read),
        "float_int8_parity": parity,
        "files": files,
        "seconds": round(time.monotonic() - started, 1),
    }

    csv_path = out / REPORT_FILES["scores_csv"]
    try:
        with open(csv_path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_COLUMNS)
            for c in read:
                writer.writerow(
                    [
                        str(c.path),
                        c.machine_type,
                        c.machine_id,
                        c.label,
                        "" if c.int8_score is None else repr(c.int8_score),
                        "" if c.float_score is None else repr(c.float_score),
                        int(c.decision),
                        c.events,
                    ]
                )
    except OSError as exc:
        raise AcmonError(f"{csv_path}: cannot write the report: {exc.strerror or exc}; choose another --out") from None
    markdown = markdown_report(report)
    _write(out / REPORT_FILES["report_md"], markdown)
    _write(out / REPORT_FILES["report_json"], json.dumps(report, indent=2) + "\n")
    try:
        plot_roc(curves, out / REPORT_FILES["roc_png"])
    except OSError as exc:
        raise AcmonError(f"{files['roc_png']}: cannot write the ROC plot: {exc.strerror or exc}") from None
    logger.info("wrote %s in %.0f s", out, report["seconds"])
    return {**report, "markdown": markdown}


def register(subparsers) -> None:
    """Add the `evaluate` subcommand; it runs run_evaluate(args)."""
    parser = subparsers.add_parser(
        "evaluate",
        help="measure AUC, pAUC and alarm decisions of a model on labelled test clips",
        description="Score every test clip (DCASE 2020 layout: MACHINE/test/{normal,anomaly}_id_XX_*.wav) through "
        "the device's own streaming pipeline, exactly as `python -m device score`, and report per machine id the "
        "AUC, the pAUC (FPR <= 0.1, DCASE definition), the alarms raised at the calibrated threshold, and the "
        "float-versus-int8 parity if MODEL/model_float.keras exists. Writes scores.csv, report.json, report.md "
        "and roc.png; prints the Markdown report.",
    )
    parser.add_argument("--model", required=True, help="model folder (with model.tflite) or .tflite file")
    parser.add_argument(
        "--data",
        required=True,
        help="machine folder with test/, or a folder of machine folders; for a sound classification model, any "
        "labelled data fit reads (its test split if it has one): writes confusion_matrix.png, per_class.md/.json "
        "and training_curves.png",
    )
    parser.add_argument("--out", help="report folder (default: MODEL/evaluation)")
    parser.add_argument("--config", help="device YAML for detector settings (optional; defaults otherwise)")
    parser.add_argument(
        "--machine-type", help="evaluate this machine type only (default: the model's, if the data holds several)"
    )
    add_tracking_arguments(parser)
    parser.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    """Run `evaluate` from parsed arguments and print the Markdown report."""
    with tracked_run(args, "evaluate", args.data) as run:
        report = evaluate(
            args.model,
            args.data,
            getattr(args, "out", None),
            config_path=getattr(args, "config", None),
            machine_type=getattr(args, "machine_type", None),
        )
        run.log_evaluation(report)
    print(report["markdown"], end="")
    return 0

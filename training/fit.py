"""`python -m training fit`: train on normal recordings, export int8 TFLite, calibrate the threshold.

Over 500 lines on purpose: one command's stages in the order they run (collect the recordings, stage a
folder, fit the Gaussian ensemble or train a network, export, calibrate, publish the folder atomically).
Its settings are training/options.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from device import __version__
from device.analysis.features import FeatureParams
from device.analysis.inference import AnomalyModel, output_score
from device.analysis.metadata import CLASSIFICATION, ModelMetadata, ScorerRecord
from device.analysis.model_file import MODEL_FILENAME, SCORER_NAME, sha256_hex
from device.decisions.detector import DetectorSettings
from device.decisions.threshold import calibrate_threshold, sustained_scores  # noqa: F401 - numpy-only, shared with the device
from device.errors import AcmonError
from device.pipeline import Pipeline
from device.state import atomic_write

from .band_levels import measure_band_levels
from .classify import choose_task, fit_classification
from .datasets import ANOMALY, clip_patches, discover, load_record
from .ensemble import fit_ensemble
from .export import convert_int8, embed_metadata
from .models import (
    build_autoencoder,
    build_classifier,
    copy_classifier_for_export,
    copy_for_export,
)
from .options import MODEL_KINDS, FitOptions, load_training_config
from .sampling import WindowSampler, build_cache, make_dataset
from .tf_setup import import_tensorflow
from .tracking import add_arguments as add_tracking_arguments
from .tracking import keras_callbacks, tracked_run

logger = logging.getLogger(__name__)

HELDOUT_SCORES_FILENAME = "heldout_scores.npz"

# Placeholder written before calibration; replaced before fit() returns.
_UNCALIBRATED = 1.0

SUMMARY_FILENAME = "training_summary.json"

# Part of every audio cache key: bump it when decoding changes what a file yields, so a cache written by
# an older reader is not reused. 2: files with NaN, infinite or absurd samples are refused (an older
# reader cached them, and one NaN clip made the fitted statistics NaN).
_DECODE_VERSION = 2


@dataclass(frozen=True)
class TrainingItem:
    """One recording (or span of one) to train or validate on.

    Attributes:
        source: unique name (path, plus span if any), also the cache key.
        label: 'normal' or a fault class name.
        group: recordings sharing a group stay on the same side of the train/validation split.
        load: returns mono float32 samples at the model's rate.
    """

    source: str
    label: str
    group: str
    load: Callable[[], np.ndarray]
    fold: int | None = None
    """Cross-validation fold from the manifest (sound classification), None without one."""


def collect_items(data_dir: str | Path, params: FeatureParams, machine_type: str | None = None) -> list[TrainingItem]:
    """Training recordings of a data folder or manifest, in any layout training.datasets.discover() reads.

    Records of the 'test' split (DCASE test/ folders, manifest rows) are left for
    evaluation. Generic 'anomaly' labels from DCASE names carry no fault class, so
    they are left out of training too. Spans of one recording share a group so they
    land on the same side of the train/validation split.

    Raises:
        AcmonError: no usable recording, or several machine types (one model per machine).
    """
    records = [r for r in discover(data_dir, params) if r.split != "test" and r.label != ANOMALY]
    types = sorted({r.machine_type for r in records if r.machine_type})
    if machine_type is not None:
        if machine_type not in types:
            raise AcmonError(
                f"--machine-type {machine_type!r}: not in {data_dir} (found: {', '.join(types) or 'none'})"
            )
        records = [r for r in records if r.machine_type == machine_type]
    elif len(types) > 1 and any(r.label == "normal" for r in records):  # sound classification ignores types
        raise AcmonError(
            f"{data_dir}: holds {len(types)} machine types ({', '.join(types)}); train one model per machine "
            f"with --machine-type, e.g. --machine-type {types[0]}"
        )
    if not records:
        raise AcmonError(
            f"{data_dir}: no training recordings found (looked for DCASE train/, label folders, a manifest, WAVs)"
        )
    items = []
    for record in records:
        path = Path(record.path)
        try:
            stat = path.stat()
        except OSError:
            stat = None
        version = f"{stat.st_size}|{stat.st_mtime_ns}" if stat else "missing"
        source = (
            f"{path.resolve()}|{record.start_seconds}|{record.end_seconds}|{version}|{params.sample_rate_hz}"
            f"|decode{_DECODE_VERSION}"
        )
        items.append(
            TrainingItem(
                source,
                record.label,
                str(path),
                functools.partial(load_record, record, params.sample_rate_hz),
                record.fold,
            )
        )
    return items


def split_items(items: list[TrainingItem], fraction: float, seed: int) -> tuple[list[TrainingItem], list[TrainingItem]]:
    """Hold out a share of the groups of every label (at least one group when a label has two)."""
    rng = np.random.default_rng(seed)
    train: list[Any] = []
    val: list[Any] = []
    for label in sorted({i.label for i in items}):
        groups = sorted({i.group for i in items if i.label == label})
        order = rng.permutation(len(groups))
        n_val = max(1, round(len(groups) * fraction)) if len(groups) >= 2 and fraction > 0 else 0
        held = {groups[k] for k in order[:n_val]}
        for item in items:
            if item.label == label:
                (val if item.group in held else train).append(item)
    return train, val


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "acmon" / "audio"


def fit(
    data_dir: str | Path,
    out_dir: str | Path,
    params: FeatureParams,
    options: FitOptions,
    items: list[TrainingItem] | None = None,
    progress: bool = True,
    machine_type: str | None = None,
) -> dict[str, Any]:
    """Train, export and calibrate one model; returns the training summary (also written to disk).

    With only normal recordings it fits the Gaussian model of per-band window
    statistics (or, with options.model='autoencoder', trains the autoencoder);
    when the items carry fault labels it trains the classifier (supervised).

    Everything is written to a hidden folder beside out_dir and moved in only when the run
    has succeeded, model.tflite last: a run that fails or is killed leaves out_dir as it was
    (a previous model stays whole), never a model that was not calibrated or checked.

    Args:
        items: recordings to use; collect_items(data_dir) when None.

    Raises:
        AcmonError: no usable recordings, a bad option, or out_dir cannot be written (one line).
    """
    started = time.monotonic()
    out = Path(out_dir)
    stage = _make_stage(out)
    try:
        summary = _fit_into(stage, data_dir, params, options, items, progress, machine_type, started)
        _check_loadable(stage, summary)
        summary["model"] = str(out / MODEL_FILENAME)
        (stage / SUMMARY_FILENAME).write_text(json.dumps(summary, indent=2) + "\n")
        _publish(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return summary


def _check_loadable(stage: Path, summary: dict[str, Any]) -> None:
    """The last gate before publishing: the device's own loader accepts the model and its threshold is a number.

    Raises:
        AcmonError: naming what is wrong; nothing reaches --out.
    """
    threshold = summary.get("threshold")
    if not (isinstance(threshold, (int, float)) and np.isfinite(threshold)):
        raise AcmonError(
            f"the fitted threshold is {threshold!r}, not a number: the training audio is damaged "
            "(see the warnings above); nothing was written to --out"
        )
    try:
        AnomalyModel(stage / MODEL_FILENAME)
    except AcmonError as exc:
        raise AcmonError(f"the fitted model does not load ({exc}); nothing was written to --out") from None


def _make_stage(out: Path) -> Path:
    """A fresh hidden folder beside out (same filesystem, so moving out of it is a rename).

    Raises:
        AcmonError: out is a file, or its folder cannot be created or written.
    """
    if out.exists() and not out.is_dir():
        raise AcmonError(f"--out {out}: is a file, not a folder; give a folder for the model")
    try:
        out.resolve().parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.resolve().name}.partial-", dir=out.resolve().parent))
    except OSError as exc:
        raise AcmonError(
            f"--out {out}: cannot write beside it: {exc.strerror or exc}; choose a writable folder"
        ) from None


def _publish(stage: Path, out: Path) -> None:
    """Move a finished run's files from stage into out, model.tflite last.

    Raises:
        AcmonError: out cannot take them; checked for every file before any is moved, so a
            refused run changes nothing.
    """
    names = sorted((p.name for p in stage.iterdir()), key=lambda name: (name == MODEL_FILENAME, name))
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name in names:
            if (out / name).is_dir() and not (stage / name).is_dir():
                raise AcmonError(
                    f"--out {out}: {name} there is a folder, so the new {name} cannot replace it; "
                    "remove it or choose another --out"
                )
        for name in names:
            os.replace(stage / name, out / name)
    except OSError as exc:
        raise AcmonError(
            f"--out {out}: cannot move the new model in: {exc.strerror or exc}; check the folder"
        ) from None


def _fit_into(
    stage: Path,
    data_dir,
    params: FeatureParams,
    options: FitOptions,
    items: list[TrainingItem] | None,
    progress: bool,
    machine_type: str | None,
    started: float,
) -> dict[str, Any]:
    """fit() writing into the stage folder; returns the summary (fit() writes it and publishes)."""
    tf = import_tensorflow(seed=options.seed)
    items = items if items is not None else collect_items(data_dir, params, machine_type)
    if choose_task({i.label for i in items}, data_dir, options.model) == CLASSIFICATION:
        name = options.name or machine_type or Path(data_dir).resolve().name
        return fit_classification(tf, stage, data_dir, params, options, items, progress, name, started)
    labels = ["normal"] + sorted({i.label for i in items} - {"normal"})
    supervised = len(labels) > 1
    train_items, val_items = split_items(items, options.validation_fraction, options.seed)
    cache_dir = Path(options.cache_dir) if options.cache_dir else default_cache_dir()
    label_index = {name: k for k, name in enumerate(labels)}
    logger.info(
        "%s model: %d training and %d validation recording(s) from %s (labels: %s); audio cache %s",
        "supervised" if supervised else "unsupervised",
        len(train_items),
        len(val_items),
        data_dir,
        ", ".join(labels),
        cache_dir,
    )
    train_clips, train_failed = build_cache(
        [(i.source, label_index[i.label], i.load) for i in train_items], cache_dir, progress
    )
    val_clips, val_failed = build_cache(
        [(i.source, label_index[i.label], i.load) for i in val_items], cache_dir, progress
    )
    if not train_clips:
        raise AcmonError(f"{data_dir}: none of the {len(train_items)} training recording(s) could be read")
    val_normal = [np.asarray(c.samples()) for c in val_clips if c.label == 0]
    if not val_normal:
        logger.warning("no held-out normal recording: calibrating the threshold on training audio (optimistic)")
        val_normal = [np.asarray(c.samples()) for c in train_clips if c.label == 0]

    kind = resolve_model_kind(options.model, supervised, data_dir)
    if kind != "classifier" and supervised:
        logger.info("%s model: training on the normal recordings only; labelled faults are left for evaluate", kind)
        train_clips = [c for c in train_clips if c.label == 0]
        val_clips = [c for c in val_clips if c.label == 0]
    name = options.name or machine_type or Path(data_dir).resolve().name
    version = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    if kind == "gaussian":
        return fit_gaussian_ensemble(
            data_dir,
            stage,
            params,
            options,
            train_clips + val_clips,
            train_failed + val_failed,
            name,
            version,
            progress,
            started,
        )
    rep_rng = np.random.default_rng(options.seed)
    rep = clip_patches([np.asarray(c.samples()) for c in train_clips], params)
    rep = rep[rep_rng.permutation(len(rep))[: options.representative_patches]]
    train_hop = options.train_hop_samples or max(1, params.hop_samples // 4)
    train_seconds = sum(c.n_samples for c in train_clips) / params.sample_rate_hz

    model, history, trained = train_network(
        tf, kind, train_clips, val_clips, params, options, train_hop, len(labels), progress
    )
    export_model = (
        copy_classifier_for_export(model, params, len(labels))
        if kind == "classifier"
        else copy_for_export(model, params)
    )
    model.save(stage / "model_float.keras")

    logger.info("quantizing to int8")
    tflite = convert_int8(export_model, rep)
    score_kind = {"classifier": "anomaly_probability"}.get(kind, options.score_kind)
    normal_clips = [np.asarray(c.samples()) for c in train_clips + val_clips if c.label == 0]
    metadata = _metadata(
        name,
        version,
        params,
        score_kind,
        _UNCALIBRATED,
        labels=tuple(labels) if kind == "classifier" else (),
        band_levels=measure_band_levels(normal_clips, params, progress),
        training={
            "data": str(data_dir),
            "recordings": len(train_clips),
            "validation_recordings": len(val_clips),
            "skipped_recordings": len(train_failed) + len(val_failed),
            "seconds": round(train_seconds, 1),
            "model": kind,
            **trained,
            "seed": options.seed,
            "augmentation": dataclasses.asdict(options.augment),
        },
    )
    model_path = stage / MODEL_FILENAME
    atomic_write(model_path, embed_metadata(tflite, metadata))

    # Calibrate on held-out normal audio streamed through the device's own pipeline.
    device_model = AnomalyModel(model_path)
    pipeline = Pipeline(device_model, DetectorSettings(threshold=_UNCALIBRATED), min_rms_dbfs=-200.0)
    per_clip = []
    for clip in val_normal:
        pipeline.reset()
        per_clip.append(np.array([r.score for r in pipeline.process(clip)], dtype=np.float64))
    int8_scores = np.concatenate(per_clip)
    threshold, info = calibrate_threshold(
        per_clip, params.hop_seconds, options.false_alarms_per_day, options.patience_windows
    )
    float_scores = float_model_scores(model, clip_patches(val_normal, params), score_kind)
    parity = {
        "score_correlation": float(np.corrcoef(float_scores, int8_scores)[0, 1]) if len(int8_scores) > 1 else 1.0,
        "mean_abs_score_difference": float(np.mean(np.abs(float_scores - int8_scores))),
        "mean_float_score": float(float_scores.mean()),
        "mean_int8_score": float(int8_scores.mean()),
    }
    metadata = metadata.replaced(threshold=threshold, calibration=info, float_int8_parity=parity)
    final = embed_metadata(tflite, metadata)
    atomic_write(model_path, final)

    summary = {
        "model": str(model_path),
        "sha256": sha256_hex(final),
        "size_bytes": len(final),
        "model_kind": kind,
        "score_kind": score_kind,
        "labels": list(metadata.labels),
        "threshold": threshold,
        "calibration": info,
        "float_int8_parity": parity,
        "training": metadata.training,
        "skipped": [{"source": s.split("|")[0], "error": e} for s, e in train_failed + val_failed],
        "loss": [float(v) for v in history["loss"]],
        "val_loss": [float(v) for v in history["val_loss"]],
        "seconds": round(time.monotonic() - started, 1),
    }
    return summary


def _metadata(
    name: str, version: str, params: FeatureParams, score_kind: str, threshold: float, **records: Any
) -> ModelMetadata:
    """The model's metadata: what every model carries, and the records (labels, scorer, calibration, training)."""
    return ModelMetadata.model_validate(
        {
            "name": name,
            "version": version,
            "acmon_version": __version__,
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "feature_params": params,
            "score_kind": score_kind,
            "threshold": threshold,
            **records,
        }
    )


def fit_gaussian_ensemble(
    data_dir,
    out: Path,
    params: FeatureParams,
    options: FitOptions,
    clips,
    failed,
    name: str,
    version: str,
    progress: bool,
    started: float,
) -> dict[str, Any]:
    """The normal-only default: fit, choose and calibrate the Gaussian ensemble (training/ensemble.py), write the model
    into out (fit()'s staging folder); returns the summary."""
    gparams = dataclasses.replace(params, normalization="none") if options.level_features else params
    if gparams != params:
        logger.info("Gaussian model: absolute dB input (normalization 'none'): it keeps level and tilt as features")
    normal = [np.asarray(c.samples()) for c in clips if c.label == 0]
    if not normal:
        raise AcmonError(f"{data_dir}: none of the normal recordings could be read")
    result = fit_ensemble(
        normal,
        gparams,
        name=name,
        version=version,
        false_alarms_per_day=options.false_alarms_per_day,
        patience_windows=options.patience_windows,
        representative_patches=options.representative_patches,
        amplify_representative=options.amplify_representative,
        context_windows=options.context_windows,
        seed=options.seed,
        progress=progress,
    )
    result.float_model.save(out / "model_float.keras")
    # The cross-fitted normal scores behind the threshold, so it can be recalibrated for another rate
    # (calibrate_threshold) without fitting again.
    np.savez(out / HELDOUT_SCORES_FILENAME, *result.heldout_scores)
    scorer_bytes = result.scorer.to_bytes()
    seconds = result.trained["seconds"]
    metadata = _metadata(
        name,
        version,
        gparams,
        "gaussian_ensemble",
        result.threshold,
        band_levels=measure_band_levels(normal, gparams, progress),
        scorer=ScorerRecord(
            sha256=sha256_hex(scorer_bytes),
            members=tuple(result.scorer.members),
            context_windows=result.scorer.context_windows,
            choice={**result.choice, "chosen": list(result.choice["chosen"])},
        ),
        calibration=result.calibration,
        float_int8_parity=result.parity,
        training={
            "data": str(data_dir),
            "recordings": len(normal),
            "skipped_recordings": len(failed),
            "seconds": seconds,
            "model": "gaussian",
            **{k: v for k, v in result.trained.items() if k != "seconds"},
            "seed": options.seed,
        },
    )
    final = embed_metadata(result.tflite, metadata, {SCORER_NAME: scorer_bytes})
    model_path = out / MODEL_FILENAME
    atomic_write(model_path, final)
    summary = {
        "model": str(model_path),
        "sha256": sha256_hex(final),
        "size_bytes": len(final),
        "model_kind": "gaussian",
        "score_kind": "gaussian_ensemble",
        "labels": [],
        "threshold": result.threshold,
        "calibration": result.calibration,
        "members": list(result.scorer.members),
        "choice": metadata.scorer.choice if metadata.scorer else {},
        "float_int8_parity": result.parity,
        "training": metadata.training,
        "skipped": [{"source": s.split("|")[0], "error": e} for s, e in failed],
        "loss": [],
        "val_loss": [],
        "seconds": round(time.monotonic() - started, 1),
    }
    return summary


def resolve_model_kind(requested: str, supervised: bool, data_dir) -> str:
    """The model to train: 'auto' picks the classifier for labelled faults, else the Gaussian model.

    Raises:
        AcmonError: a classifier was asked for but the data has no fault labels.
    """
    if requested == "auto":
        return "classifier" if supervised else "gaussian"
    if requested == "mlp":
        raise AcmonError(f"{data_dir}: model 'mlp' is for sound classification (labels with no 'normal'); use auto")
    if requested == "classifier" and not supervised:
        raise AcmonError(f"{data_dir}: model 'classifier' needs recordings labelled with faults; these are all normal")
    return requested


def train_network(
    tf,
    kind: str,
    train_clips,
    val_clips,
    params: FeatureParams,
    options: FitOptions,
    train_hop: int,
    n_classes: int,
    progress: bool,
):
    """Train the autoencoder or the classifier on random augmented windows; returns (model, history dict, summary)."""
    sampler = WindowSampler(train_clips, params, options.augment, options.seed)
    possible = sum(1 + (c.n_samples - params.window_samples) // train_hop for c in sampler.clips)
    per_epoch = int(min(options.max_patches_per_epoch, possible))
    target = "class" if kind == "classifier" else "reconstruction"
    dataset = make_dataset(sampler, per_epoch, options.batch_size, target, n_classes)
    x_val, y_val = _validation_set(val_clips or train_clips, params, target, n_classes)
    logger.info(
        "training the %s on %.1f min of audio: %d random windows per epoch, %d validation windows",
        kind,
        sampler.total_seconds / 60,
        per_epoch,
        len(x_val),
    )
    if kind == "classifier":
        model = build_classifier(params, n_classes)
        model.compile(
            optimizer=tf.keras.optimizers.Adam(options.learning_rate),
            loss="categorical_crossentropy",
            metrics=["accuracy"],
        )
    else:
        model = build_autoencoder(params)
        model.compile(optimizer=tf.keras.optimizers.Adam(options.learning_rate), loss="mse")
    stop = tf.keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=options.early_stopping_patience, restore_best_weights=True
    )
    history = model.fit(
        dataset,
        validation_data=(x_val, y_val),
        epochs=options.epochs,
        shuffle=False,  # the sampler already draws random windows; Keras cannot shuffle a generator
        callbacks=[stop, *keras_callbacks(tf)],  # each epoch's history into the tracked run, if any
        verbose=2 if progress else 0,
    )
    return model, history.history, {"windows_per_epoch": per_epoch, "epochs": len(history.history["loss"])}


def _validation_set(clips, params: FeatureParams, target: str, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Validation windows at the device's hop, without augmentation."""
    xs, ys = [], []
    for clip in clips:
        patches = clip_patches([np.asarray(clip.samples())], params)
        xs.append(patches)
        ys.append(
            patches if target == "reconstruction" else np.repeat(np.eye(n_classes)[clip.label][None], len(patches), 0)
        )
    x = np.concatenate(xs)[..., None].astype(np.float32)
    y = np.concatenate(ys).astype(np.float32)
    return x, (y[..., None] if target == "reconstruction" else y)


def float_model_scores(model, patches: np.ndarray, kind: str) -> np.ndarray:
    """Scores of the float Keras model on given patches, for the float/int8 parity check."""
    out = model.predict(patches[..., None], verbose=0, batch_size=64)
    return np.array([output_score(p, o, kind) for p, o in zip(patches, out)], dtype=np.float64)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "fit",
        help="train an anomaly model on normal recordings and export it as int8 TFLite",
        description="Train on the recordings of one machine and export model.tflite (full-integer int8) with "
        "its feature parameters and calibrated threshold embedded. Normal recordings only (DCASE layout "
        "MACHINE/train/normal_*.wav, a folder of WAVs, long recordings with Audacity labels) fit a "
        "Gaussian model of per-band window statistics (or, with --model autoencoder, a convolutional autoencoder); recordings labelled with faults (a folder per label, a CSV manifest) "
        "train a CNN classifier. Labels with no 'normal' at all (UrbanSound8K) train a plain sound classifier, "
        "cross-validated over the manifest's folds. Test-split recordings are left for `evaluate`.",
    )
    parser.add_argument(
        "--data", required=True, help="machine folder (DCASE train/), label folders, a manifest .csv, or WAVs"
    )
    parser.add_argument("--out", required=True, help="model folder to write (model.tflite, training_summary.json)")
    parser.add_argument("--config", help="training YAML with optional 'features:' and 'fit:' sections")
    parser.add_argument("--machine-type", help="train on this machine type only, when the data holds several")
    parser.add_argument(
        "--false-alarms-per-day",
        type=float,
        help="target false alarms per day on normal sound, for the threshold (default: 1)",
    )
    parser.add_argument(
        "--model",
        choices=MODEL_KINDS,
        help="auto (default): the classifier when faults are labelled, else the Gaussian model of per-band window "
        "statistics; autoencoder: the convolutional autoencoder; mlp (sound classification): scikit-learn's MLP on "
        "log-mel mean and std, exported as int8 instead of the CNN",
    )
    parser.add_argument("--epochs", type=int, help="maximum epochs of the autoencoder or classifier (default: 40)")
    parser.add_argument("--seed", type=int, help="random seed for a reproducible run (default: 0)")
    add_tracking_arguments(parser)
    parser.add_argument(
        "--no-folds",
        dest="cross_validate",
        action="store_false",
        default=None,
        help="sound classification: skip the cross-validation over the manifest's folds (default: run it when the "
        "manifest gives folds, then train the exported model on all the data)",
    )
    parser.set_defaults(func=run_fit)


def run_fit(args: argparse.Namespace) -> int:
    params, options = load_training_config(args.config)
    overrides = {
        k: v
        for k, v in (
            ("epochs", args.epochs),
            ("seed", args.seed),
            ("false_alarms_per_day", args.false_alarms_per_day),
            ("model", args.model),
            ("cross_validate", getattr(args, "cross_validate", None)),
        )
        if v is not None
    }
    try:
        options = dataclasses.replace(options, **overrides)
    except ValueError as exc:
        raise AcmonError(f"fit: {exc}") from None
    with tracked_run(args, "fit", args.data, {"features": params, "fit": options}) as run:
        summary = fit(args.data, args.out, params, options, machine_type=args.machine_type)
        run.log_fit(summary, args.out)
    if summary.get("task") == CLASSIFICATION:
        from .classify import print_summary  # noqa: PLC0415 - beside the task it reports

        print_summary(summary)
        return 0
    parity = summary["float_int8_parity"]
    print(
        f"wrote {summary['model']} ({summary['size_bytes'] / 1024:.0f} KiB, threshold {summary['threshold']:.4g}, "
        f"float/int8 score correlation {parity['score_correlation']:.3f}) in {summary['seconds']:.0f} s"
    )
    return 0

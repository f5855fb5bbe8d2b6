"""Sound classification: `fit` on labels with no 'normal' class (UrbanSound8K and the like).

The anomaly models learn what normal sounds like; a dataset of ten urban sounds has no normal, only classes.
For it `fit` trains the same int8 CNN as the fault classifier (training/models.py build_classifier) as a plain
multi-class classifier, cross-validates it over the manifest's folds when it has them (train on k-1 folds,
test the int8 model on the held-out one, as UrbanSound8K's folds are meant to be used), then trains the
exported model on all the data. The classical baselines (training/classical.py) are measured on the same folds
when scikit-learn is installed. Reports: training/class_report.py.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from device.analysis.features import FeatureParams
from device.analysis.inference import QuantizedGraph
from device.analysis.metadata import CLASSIFICATION
from device.analysis.model_file import MODEL_FILENAME, sha256_hex
from device.errors import AcmonError
from device.state import atomic_write

from . import class_report
from .datasets import clip_patches
from .export import convert_int8, embed_metadata
from .models import copy_classifier_for_export
from .options import FitOptions
from .sampling import CachedClip, build_cache

logger = logging.getLogger(__name__)

ANOMALY_DETECTION = "anomaly_detection"
UNUSED_THRESHOLD = 0.5
"""A classification model's metadata threshold: required by the format, unused (the daemon refuses these models)."""


def choose_task(labels: set[str], data_dir, requested_model: str) -> str:
    """'anomaly_detection' when a label is 'normal', else 'classification'; says which in the log.

    Raises:
        AcmonError: one label only and it is not normal (neither task can learn from it), or a model kind
            that needs normal recordings was asked for on classes.
    """
    faults = sorted(labels - {"normal"})
    if "normal" in labels:
        logger.info(
            "task: anomaly detection, %s",
            f"normal + {len(faults)} fault class(es) ({', '.join(faults)})" if faults else "normal recordings only",
        )
        return ANOMALY_DETECTION
    if len(labels) < 2:
        only = next(iter(labels), "?")
        raise AcmonError(
            f"{data_dir}: every recording is labelled {only!r}: anomaly detection needs recordings labelled normal, "
            "sound classification at least two classes; add recordings or fix the labels"
        )
    if requested_model not in ("auto", "classifier", "mlp"):
        raise AcmonError(
            f"{data_dir}: --model {requested_model} learns normal sound, and no recording is labelled normal "
            f"({len(labels)} classes): use --model auto (sound classification) or label the normal recordings"
        )
    logger.info("task: sound classification, %d classes (no 'normal' label): %s", len(labels), ", ".join(faults))
    return CLASSIFICATION


def check_classes(items, data_dir) -> None:
    """Every class needs two recordings: one to learn from, one to check against.

    Raises:
        AcmonError: naming the class with too few.
    """
    counts = Counter(i.label for i in items)
    for label, n in sorted(counts.items(), key=lambda kv: (kv[1], kv[0])):
        if n < 2:
            raise AcmonError(
                f"{data_dir}: class {label!r} has only {n} recording; sound classification needs at least 2 per "
                "class: add recordings of it or remove its line(s)"
            )


def predict_clips(graph: QuantizedGraph, clips: list[np.ndarray], params: FeatureParams) -> np.ndarray:
    """Per clip, the mean over its windows of the int8 model's class probabilities (n_clips, n_classes), as
    `python -m device score` decides (device/analysis/inference.py classify_clip)."""
    out = []
    for samples in clips:
        patches = clip_patches([samples], params)
        out.append(graph.outputs(patches).mean(axis=0) if len(patches) else np.zeros(graph.output_shape[-1]))
    return np.asarray(out, dtype=np.float64)


def _train_and_export(tf, train_items, clip_of, params, options, n_classes, progress, seed):
    """Train the CNN on items (a validation share held out for early stopping) and quantize it to int8.

    Returns:
        (float Keras model, int8 TFLite bytes, history dict, training record).
    """
    from .fit import split_items, train_network  # noqa: PLC0415 - fit imports this module

    fit_items, val_items = split_items(train_items, options.validation_fraction, seed)
    fit_clips = [clip_of[i.source] for i in fit_items if i.source in clip_of]
    val_clips = [clip_of[i.source] for i in val_items if i.source in clip_of]
    train_hop = options.train_hop_samples or max(1, params.hop_samples // 4)
    model, history, trained = train_network(
        tf, "classifier", fit_clips, val_clips, params, options, train_hop, n_classes, progress
    )
    rng = np.random.default_rng(seed)
    rep = clip_patches([np.asarray(c.samples()) for c in fit_clips], params)
    rep = rep[rng.permutation(len(rep))[: options.representative_patches]]
    logger.info("quantizing to int8")
    tflite = convert_int8(copy_classifier_for_export(model, params, n_classes), rep)
    return model, tflite, history, {**trained, "recordings": len(fit_clips), "validation_recordings": len(val_clips)}


def cross_validate(tf, items, clip_of, labels, params, options, progress) -> dict[str, Any] | None:
    """Leave-one-fold-out over the items' folds: per fold the int8 model's clip accuracy on the held-out fold.

    Returns:
        None when fewer than two folds are given; else {"folds": [...], "mean_accuracy", "std_accuracy",
        "y_true", "y_pred" (pooled over folds, label indices), "histories"}.
    """
    folds = sorted({i.fold for i in items if i.fold is not None})
    if len(folds) < 2:
        if options.cross_validate:
            logger.info("no folds in the data (a manifest 'fold' column): no cross-validation")
        return None
    index = {name: k for k, name in enumerate(labels)}
    results, y_true, y_pred, histories = [], [], [], []
    for n, fold in enumerate(folds, 1):
        started = time.monotonic()
        train = [i for i in items if i.fold != fold]
        test = [i for i in items if i.fold == fold and i.source in clip_of]
        logger.info(
            "fold %d (%d of %d): training on %d recordings, testing on %d", fold, n, len(folds), len(train), len(test)
        )
        tf.keras.backend.clear_session()
        _, tflite, history, _ = _train_and_export(
            tf, train, clip_of, params, options, len(labels), progress, options.seed + n
        )
        graph = QuantizedGraph(tflite, params, f"fold {fold} model")
        probabilities = predict_clips(graph, [np.asarray(clip_of[i.source].samples()) for i in test], params)
        truth = [index[i.label] for i in test]
        predicted = [int(np.argmax(p)) for p in probabilities]
        accuracy = float(np.mean(np.equal(truth, predicted))) if test else float("nan")
        logger.info(
            "fold %d: int8 accuracy %.3f (%d of %d clips)", fold, accuracy, sum(np.equal(truth, predicted)), len(test)
        )
        results.append(
            {
                "fold": fold,
                "test_clips": len(test),
                "correct": int(np.sum(np.equal(truth, predicted))),
                "accuracy": round(accuracy, 4),
                "epochs": len(history["loss"]),
                "seconds": round(time.monotonic() - started, 1),
            }
        )
        y_true += truth
        y_pred += predicted
        histories.append({k: [float(v) for v in vals] for k, vals in history.items()})
    accuracies = np.array([r["accuracy"] for r in results])
    return {
        "folds": results,
        "mean_accuracy": round(float(accuracies.mean()), 4),
        "std_accuracy": round(float(accuracies.std()), 4),
        "pooled_accuracy": round(float(np.mean(np.equal(y_true, y_pred))), 4),
        "y_true": y_true,
        "y_pred": y_pred,
        "histories": histories,
    }


def fit_classification(
    tf,
    stage: Path,
    data_dir,
    params: FeatureParams,
    options: FitOptions,
    items,
    progress: bool,
    name: str,
    started: float,
) -> dict[str, Any]:
    """Cross-validate (when the data has folds), train the exported classifier on everything, write the reports.

    Returns:
        fit's training summary.
    """
    from .fit import _metadata, default_cache_dir  # noqa: PLC0415 - fit imports this module

    check_classes(items, data_dir)
    labels = sorted({i.label for i in items})
    index = {label: k for k, label in enumerate(labels)}
    cache_dir = Path(options.cache_dir) if options.cache_dir else default_cache_dir()
    clips, failed = build_cache([(i.source, index[i.label], i.load) for i in items], cache_dir, progress)
    if not clips:
        raise AcmonError(f"{data_dir}: none of the {len(items)} recording(s) could be read")
    clip_of: dict[str, CachedClip] = {c.source: c for c in clips}
    check_classes([i for i in items if i.source in clip_of], data_dir)

    if options.model == "mlp":
        cv, tflite, history, trained = _mlp(items, clip_of, labels, params, options)
    else:
        cv = cross_validate(tf, items, clip_of, labels, params, options, progress) if options.cross_validate else None
        tf.keras.backend.clear_session()
        logger.info("final model: training on all %d recordings", len(clip_of))
        model, tflite, history, trained = _train_and_export(
            tf, items, clip_of, params, options, len(labels), progress, options.seed
        )
        model.save(stage / "model_float.keras")
    version = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    cv_record = None
    if cv is not None:
        keys = ("model", "folds", "mean_accuracy", "std_accuracy", "mean_float_accuracy", "pooled_accuracy")
        cv_record = {k: cv[k] for k in keys if k in cv}
    metadata = _metadata(
        name,
        version,
        params,
        "class_probability",
        UNUSED_THRESHOLD,
        task=CLASSIFICATION,
        labels=tuple(labels),
        training={
            "data": str(data_dir),
            "skipped_recordings": len(failed),
            "seconds": round(sum(c.n_samples for c in clips) / params.sample_rate_hz, 1),
            "model": options.model if options.model == "mlp" else "classifier",
            **trained,
            "seed": options.seed,
            "augmentation": dataclasses.asdict(options.augment),
            "cross_validation": cv_record,
        },
    )
    final = embed_metadata(tflite, metadata)
    atomic_write(stage / MODEL_FILENAME, final)

    history = {k: [float(v) for v in vals] for k, vals in history.items()}
    reports = class_report.write_fit_reports(stage, labels, cv, history)
    comparison = None
    if cv is not None:
        comparison = _baselines(items, clip_of, labels, params, cv, stage, progress)
    summary = {
        "task": CLASSIFICATION,
        "sha256": sha256_hex(final),
        "size_bytes": len(final),
        "model_kind": metadata.training["model"],
        "score_kind": "class_probability",
        "labels": labels,
        "threshold": UNUSED_THRESHOLD,
        "cross_validation": cv_record,
        "per_class": reports.get("per_class"),
        "comparison": comparison,
        "reports": sorted(reports.get("files", [])),
        "training": metadata.training,
        "skipped": [{"source": s.split("|")[0], "error": e} for s, e in failed],
        "history": history,
        "loss": history.get("loss", []),
        "val_loss": history.get("val_loss", []),
        "seconds": round(time.monotonic() - started, 1),
    }
    return summary


def _mlp(
    items, clip_of, labels, params, options
) -> tuple[dict[str, Any] | None, bytes, dict[str, list[float]], dict[str, Any]]:
    """`--model mlp`: scikit-learn's MLP on per-window features, cross-validated float against int8, then fitted
    on everything and exported (training/mlp_export.py). Returns what the CNN's path returns."""
    try:
        from . import mlp_export  # noqa: PLC0415 - scikit-learn is the optional 'workbench' extra
    except ImportError as exc:
        raise AcmonError(
            f"--model mlp needs scikit-learn ({exc}); install it: pip install 'acmon[workbench]'"
        ) from None
    usable = [i for i in items if i.source in clip_of]
    clips = [np.asarray(clip_of[i.source].samples()) for i in usable]
    y = np.array([labels.index(i.label) for i in usable])
    folds = np.array([i.fold if i.fold is not None else -1 for i in usable])
    cv = None
    if options.cross_validate and len(np.unique(folds[folds >= 0])) >= 2:
        rows, y_true, y_pred = mlp_export.cross_validate(clips, y, folds, params, options.seed)
        accuracies = np.array([r["accuracy"] for r in rows])
        cv = {
            "model": "mlp",
            "folds": rows,
            "mean_accuracy": round(float(accuracies.mean()), 4),
            "std_accuracy": round(float(accuracies.std()), 4),
            "mean_float_accuracy": round(float(np.mean([r["float_accuracy"] for r in rows])), 4),
            "pooled_accuracy": round(float(sum(r["correct"] for r in rows) / max(1, len(clips))), 4),
            "y_true": y_true,
            "y_pred": y_pred,
            "histories": [],
        }
    logger.info("final model: fitting the MLP on all %d recordings", len(clips))
    pipeline, chosen = mlp_export.fit_mlp(clips, y, folds, params, options.seed)
    tflite = mlp_export.export(pipeline, clips, params, options.seed, options.representative_patches)
    float_accuracy, int8_accuracy = mlp_export.clip_accuracy_float_int8(pipeline, tflite, clips, y, params)
    logger.info("MLP on its training clips: float accuracy %.3f, int8 %.3f", float_accuracy, int8_accuracy)
    loss = [float(v) for v in pipeline.named_steps["mlpclassifier"].loss_curve_]
    trained = {
        "chosen": chosen,
        "training_clip_accuracy": {"float": round(float_accuracy, 4), "int8": round(int8_accuracy, 4)},
        "recordings": len(clips),
    }
    return cv, tflite, {"loss": loss}, trained


def _baselines(items, clip_of, labels, params, cv, stage: Path, progress: bool) -> list[dict[str, Any]] | None:
    """The classical models on the same folds, beside the CNN (training/classical.py); None without scikit-learn."""
    try:
        from . import classical  # noqa: PLC0415 - scikit-learn is the optional 'workbench' extra
    except ImportError as exc:
        logger.info("no classical baselines: %s (install them with pip install 'acmon[workbench]')", exc)
        return None
    usable = [i for i in items if i.source in clip_of]
    waveforms = [np.asarray(clip_of[i.source].samples()) for i in usable]
    y = np.array([labels.index(i.label) for i in usable])
    folds = np.array([i.fold if i.fold is not None else -1 for i in usable])
    rows = classical.compare(waveforms, y, folds, classical.default_extractors(params), progress=progress)
    if cv.get("model") == "mlp":
        rows.insert(0, classical.row_from_folds("log-mel window mean+std", "MLP (int8, device)", cv["folds"]))
    else:
        rows.insert(0, classical.row_from_folds("log-mel patches", "CNN (int8)", cv["folds"]))
    classical.write_table(rows, stage)
    return rows


def print_summary(summary: dict[str, Any]) -> None:
    """fit's closing lines for a sound classifier: the model, the cross-validation and the baselines' table."""
    cv = summary.get("cross_validation")
    print(
        f"wrote {summary['model']} ({summary['size_bytes'] / 1024:.0f} KiB, sound classifier, "
        f"{len(summary['labels'])} classes) in {summary['seconds']:.0f} s"
    )
    if cv:
        folds = ", ".join(
            f"fold {f['fold']} {f['accuracy']:.3f} ({f['correct']}/{f['test_clips']})" for f in cv["folds"]
        )
        print(
            f"cross-validation, int8 accuracy per held-out fold: {folds}; mean {cv['mean_accuracy']:.3f} ± {cv['std_accuracy']:.3f}"
        )
        if cv.get("mean_float_accuracy") is not None:
            print(f"scikit-learn's float MLP on the same folds: mean {cv['mean_float_accuracy']:.3f}")
    if summary.get("comparison"):
        from .classical import table_markdown  # noqa: PLC0415 - only with scikit-learn

        print(table_markdown(summary["comparison"]), end="")

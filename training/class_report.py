"""Reports of a sound classifier: multi-class confusion matrix, per-class precision and recall, training curves.

`fit` writes them from its cross-validation (the held-out folds' int8 predictions, pooled) and the final
model's training history; `evaluate` writes them for a classification model on labelled clips
(evaluate_classifier).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from device.errors import AcmonError

logger = logging.getLogger(__name__)

CONFUSION_PNG = "confusion_matrix.png"
CURVES_PNG = "training_curves.png"
PER_CLASS_JSON = "per_class.json"
PER_CLASS_MD = "per_class.md"


def confusion(y_true: list[int], y_pred: list[int], n_classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    for t, p in zip(y_true, y_pred):
        counts[t, p] += 1
    return counts


def per_class(counts: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Precision, recall and support per class, and accuracy and the macro averages (None where undefined)."""
    rows = {}
    for k, label in enumerate(labels):
        predicted, actual = int(counts[:, k].sum()), int(counts[k].sum())
        rows[label] = {
            "precision": round(counts[k, k] / predicted, 4) if predicted else None,
            "recall": round(counts[k, k] / actual, 4) if actual else None,
            "support": actual,
        }
    total = int(counts.sum())
    precisions = [r["precision"] for r in rows.values() if r["precision"] is not None]
    recalls = [r["recall"] for r in rows.values() if r["recall"] is not None]
    return {
        "accuracy": round(float(np.trace(counts)) / total, 4) if total else None,
        "clips": total,
        "macro_precision": round(float(np.mean(precisions)), 4) if precisions else None,
        "macro_recall": round(float(np.mean(recalls)), 4) if recalls else None,
        "classes": rows,
        "confusion": counts.tolist(),
        "labels": labels,
    }


def per_class_markdown(report: dict[str, Any], title: str) -> str:
    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    lines = [
        f"# {title}",
        "",
        f"Accuracy {fmt(report['accuracy'])} on {report['clips']} clips; macro precision "
        f"{fmt(report['macro_precision'])}, macro recall {fmt(report['macro_recall'])}.",
        "",
        "| class | precision | recall | clips |",
        "|---|---|---|---|",
    ]
    for label, r in report["classes"].items():
        lines.append(f"| {label} | {fmt(r['precision'])} | {fmt(r['recall'])} | {r['support']} |")
    return "\n".join(lines) + "\n"


def plot_confusion(counts: np.ndarray, labels: list[str], path: Path, title: str) -> None:
    """Rows are the true class, normalized to recall (colour), with the clip counts written in."""
    import matplotlib  # noqa: PLC0415 - training only

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    n = len(labels)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape, dtype=np.float64), where=rows > 0)
    size = max(4.0, 0.6 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if counts[i, j]:
                ax.text(
                    j, i, str(counts[i, j]), ha="center", va="center", color="white" if share[i, j] > 0.5 else "black"
                )
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(
    history: dict[str, list[float]], path: Path, fold_histories: list[dict[str, list[float]]] | None = None
) -> None:
    """Loss and accuracy per epoch (training and validation) of the final model; the folds' validation curves faint."""
    import matplotlib  # noqa: PLC0415 - training only

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("loss", "accuracy")):
        for k, fold in enumerate(fold_histories or []):
            if fold.get(f"val_{key}"):
                ax.plot(
                    range(1, len(fold[f"val_{key}"]) + 1),
                    fold[f"val_{key}"],
                    color="grey",
                    alpha=0.4,
                    label="folds: validation" if k == 0 else None,
                )
        for name, style in ((key, "-"), (f"val_{key}", "--")):
            if history.get(name):
                ax.plot(
                    range(1, len(history[name]) + 1), history[name], style, label=name.replace("val_", "validation ")
                )
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # an MLP's history has its loss only
            ax.legend()
    fig.suptitle("training curves (final model)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_fit_reports(
    out: Path, labels: list[str], cv: dict[str, Any] | None, history: dict[str, list[float]]
) -> dict[str, Any]:
    """fit's reports into its staging folder: curves always, the confusion matrix and per-class figures of the
    cross-validation when there was one. Returns {"files": [...], "per_class": report or None}."""
    files = [CURVES_PNG]
    plot_curves(history, out / CURVES_PNG, cv["histories"] if cv else None)
    (out / "history.json").write_text(json.dumps(history) + "\n")
    files.append("history.json")
    report = None
    if cv is not None:
        counts = confusion(cv["y_true"], cv["y_pred"], len(labels))
        report = per_class(counts, labels)
        title = f"Cross-validation over {len(cv['folds'])} folds (int8 model, held-out clips pooled)"
        folds = ", ".join(f"fold {f['fold']}: {f['accuracy']:.3f}" for f in cv["folds"])
        markdown = (
            per_class_markdown(report, title)
            + f"\nPer fold: {folds}; mean {cv['mean_accuracy']:.3f} ± {cv['std_accuracy']:.3f}.\n"
        )
        (out / PER_CLASS_JSON).write_text(json.dumps({**report, "folds": cv["folds"]}, indent=2) + "\n")
        (out / PER_CLASS_MD).write_text(markdown)
        plot_confusion(counts, labels, out / CONFUSION_PNG, "held-out folds, int8")
        files += [PER_CLASS_JSON, PER_CLASS_MD, CONFUSION_PNG]
    return {"files": files, "per_class": report}


def evaluate_classifier(model_path: Path, data_dir, out: Path, progress: bool = True) -> dict[str, Any]:
    """`evaluate` of a classification model: every labelled clip of the data (its test split when it has one)
    classified as `python -m device score` does; writes the confusion matrix, per-class figures and (from the
    model folder's history.json) the training curves.

    Raises:
        AcmonError: no clip carries one of the model's labels, or the report cannot be written.
    """
    from tqdm import tqdm  # noqa: PLC0415

    from device.analysis.inference import AnomalyModel, classify_clip  # noqa: PLC0415
    from device.pipeline import iter_patches, iter_windows  # noqa: PLC0415

    from .datasets import discover, load_record  # noqa: PLC0415

    model = AnomalyModel(model_path)
    labels = list(model.metadata.labels)
    params = model.params
    records = discover(data_dir, params)
    if any(r.split == "test" for r in records):
        records = [r for r in records if r.split == "test"]
    else:
        logger.warning("%s has no test split: evaluating on every clip (those the model was trained on too)", data_dir)
    unknown = sorted({r.label for r in records} - set(labels))
    if unknown:
        logger.warning("clips of classes the model does not know are left out: %s", ", ".join(unknown))
    records = [r for r in records if r.label in labels]
    if not records:
        raise AcmonError(f"{data_dir}: no clip labelled with one of the model's classes ({', '.join(labels)})")
    y_true, y_pred, rows = [], [], []
    for record in tqdm(records, desc="evaluate", unit="clip", disable=not progress):
        samples = load_record(record, params.sample_rate_hz)
        result = classify_clip(model, iter_patches(iter_windows([samples], params), params))
        if result.label is None:
            continue
        y_true.append(labels.index(record.label))
        y_pred.append(labels.index(result.label))
        rows.append(
            {
                "path": str(record.path),
                "label": record.label,
                "predicted": result.label,
                "probability": result.probability,
            }
        )
    report = per_class(confusion(y_true, y_pred, len(labels)), labels)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / PER_CLASS_JSON).write_text(json.dumps({**report, "clips_scored": rows}, indent=2) + "\n")
        markdown = per_class_markdown(report, f"Evaluation of {model_path.name} on {data_dir}")
        (out / PER_CLASS_MD).write_text(markdown)
        plot_confusion(np.array(report["confusion"]), labels, out / CONFUSION_PNG, "evaluation, int8")
        history_path = model_path.parent / "history.json"
        if history_path.is_file():
            plot_curves(json.loads(history_path.read_text()), out / CURVES_PNG)
    except OSError as exc:
        raise AcmonError(f"{out}: cannot write the report: {exc.strerror or exc}; choose a writable --out") from None
    files = {
        name: str(out / name)
        for name in (PER_CLASS_JSON, PER_CLASS_MD, CONFUSION_PNG, CURVES_PNG)
        if (out / name).is_file()
    }
    meta = model.metadata
    described = {"name": meta.name, "version": meta.version, "sha256": model.sha256, "score_kind": meta.score_kind}
    return {**report, "model": described, "files": files, "markdown": markdown}

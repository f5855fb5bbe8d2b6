"""Classical baselines for sound classification: scikit-learn models on clip features, cross-validated over folds.

Features come from the device's one front end (device/analysis/features.py through training.datasets.clip_patches):
per clip, the mean and standard deviation over time of every mel band of the normalized log-mel patches the
CNN sees. The models (SVM, random forest, gradient boosting, MLP) choose their hyperparameters by an inner
cross-validation over the training folds, and are scored on the held-out fold (nested: the held-out fold never
chooses). compare() takes {name: extractor}, an extractor being callable(list of waveforms) -> 2D array, so
another feature set (a pretrained embedding) is one more entry.

scikit-learn is the optional 'workbench' extra (pip install 'acmon[workbench]').
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, LeaveOneGroupOut, StratifiedKFold
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from device.analysis.features import FeatureParams
from device.errors import AcmonError

from .datasets import clip_patches

logger = logging.getLogger(__name__)

FeatureExtractor = Callable[[Sequence[np.ndarray]], np.ndarray]
TABLE_MD = "comparison.md"
TABLE_JSON = "comparison.json"


def logmel_mean_std(params: FeatureParams) -> FeatureExtractor:
    """Per clip: mean and standard deviation over all frames of its normalized log-mel patches, per mel band."""

    def extract(waveforms: Sequence[np.ndarray]) -> np.ndarray:
        rows = []
        for k, samples in enumerate(waveforms):
            patches = clip_patches([np.asarray(samples)], params)
            if not len(patches):
                raise AcmonError(f"clip {k}: shorter than one analysis window ({params.window_seconds:.2f} s)")
            frames = patches.reshape(-1, params.n_mels)
            rows.append(np.concatenate([frames.mean(axis=0), frames.std(axis=0)]))
        return np.asarray(rows, dtype=np.float64)

    return extract


def default_extractors(params: FeatureParams) -> dict[str, FeatureExtractor]:
    """The feature sets compared by default: the log-mel mean and std, and BirdNET's embedding when its model is
    installed (the 'embeddings' extra; training/embeddings.py, 65 times real time here)."""
    extractors = {"log-mel mean+std": logmel_mean_std(params)}
    from . import embeddings  # noqa: PLC0415 - imports nothing heavy until a clip is embedded

    try:
        embeddings.model_path()
    except embeddings.EmbeddingError as exc:
        logger.info("no pretrained-embedding baselines: %s", exc)
        return extractors
    rate = params.sample_rate_hz
    extractors["BirdNET embedding"] = lambda waveforms: embeddings.clip_embeddings(list(waveforms), rate)
    return extractors


def models(seed: int = 0) -> dict[str, tuple[Any, dict[str, list[Any]]]]:
    """{name: (estimator, hyperparameter grid)}; small grids, as the subsets here are small."""
    return {
        "SVM (RBF)": (
            make_pipeline(StandardScaler(), SVC()),
            {"svc__C": [1.0, 10.0, 100.0], "svc__gamma": ["scale", 0.003]},
        ),
        "random forest": (
            RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=1),
            {"max_features": ["sqrt", 0.3], "min_samples_leaf": [1, 3]},
        ),
        "gradient boosting": (
            GradientBoostingClassifier(n_estimators=40, random_state=seed, subsample=0.8),
            {"learning_rate": [0.1], "max_depth": [2, 3]},
        ),
        "MLP": (
            make_pipeline(StandardScaler(), MLPClassifier(max_iter=800, random_state=seed)),
            {"mlpclassifier__hidden_layer_sizes": [(32,), (64,)], "mlpclassifier__alpha": [1e-2, 1.0]},
        ),
    }


def _inner_cv(y: np.ndarray, groups: np.ndarray, seed: int):
    """Leave-one-fold-out over the training folds when there are two or more, else a stratified split."""
    if len(np.unique(groups[groups >= 0])) >= 2:
        return list(LeaveOneGroupOut().split(np.zeros(len(y)), y, groups))
    n = max(2, min(3, int(np.bincount(y).min()) if len(y) else 2))
    return list(StratifiedKFold(n_splits=n, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def cross_validate_model(
    estimator, grid, x: np.ndarray, y: np.ndarray, folds: np.ndarray, seed: int = 0
) -> dict[str, Any]:
    """Nested cross-validation: per held-out fold, the grid is searched on the other folds and the best refit there."""
    out = []
    for fold in sorted(int(f) for f in np.unique(folds[folds >= 0])):
        train, test = folds != fold, folds == fold
        search = GridSearchCV(
            estimator, grid, cv=_inner_cv(y[train], folds[train], seed), scoring="accuracy", n_jobs=1, error_score=0.0
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", UserWarning)  # a class missing from an inner split
            search.fit(x[train], y[train])
        predicted = search.predict(x[test])
        out.append(
            {
                "fold": fold,
                "test_clips": int(test.sum()),
                "correct": int(np.sum(predicted == y[test])),
                "accuracy": round(float(np.mean(predicted == y[test])), 4),
                "chosen": {k.split("__")[-1]: v for k, v in search.best_params_.items()},
            }
        )
    return {"folds": out}


def row_from_folds(features: str, model: str, folds: list[dict[str, Any]]) -> dict[str, Any]:
    accuracies = np.array([f["accuracy"] for f in folds], dtype=np.float64)
    return {
        "features": features,
        "model": model,
        "folds": [
            {k: v for k, v in f.items() if k in ("fold", "test_clips", "correct", "accuracy", "chosen")} for f in folds
        ],
        "mean_accuracy": round(float(accuracies.mean()), 4),
        "std_accuracy": round(float(accuracies.std()), 4),
    }


def compare(
    waveforms: Sequence[np.ndarray],
    y: np.ndarray,
    folds: np.ndarray,
    extractors: dict[str, FeatureExtractor],
    seed: int = 0,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Every model on every feature set, nested-cross-validated over the folds; one row each.

    Args:
        waveforms: mono float32 clips at the front end's rate.
        y: class index per clip.
        folds: fold per clip (-1: always in training).
    """
    from tqdm import tqdm  # noqa: PLC0415

    if len(np.unique(folds[folds >= 0])) < 2:
        raise AcmonError("the classical baselines need at least two folds to cross-validate over")
    rows = []
    jobs = [(f, m) for f in extractors for m in models(seed)]
    features: dict[str, np.ndarray] = {}
    for feature_name, model_name in tqdm(jobs, desc="baselines", unit="model", disable=not progress):
        if feature_name not in features:
            features[feature_name] = extractors[feature_name](waveforms)
        estimator, grid = models(seed)[model_name]
        result = cross_validate_model(estimator, grid, features[feature_name], np.asarray(y), np.asarray(folds), seed)
        row = row_from_folds(feature_name, model_name, result["folds"])
        logger.info(
            "%s on %s: accuracy %.3f ± %.3f", model_name, feature_name, row["mean_accuracy"], row["std_accuracy"]
        )
        rows.append(row)
    return rows


def table_markdown(rows: list[dict[str, Any]]) -> str:
    """One table: accuracy per held-out fold, and the mean over folds ± their standard deviation."""
    folds = [f["fold"] for f in rows[0]["folds"]] if rows else []
    lines = [
        "| features | model | " + " | ".join(f"fold {f}" for f in folds) + " | mean ± std |",
        "|---|---|" + "---|" * len(folds) + "---|",
    ]
    for r in rows:
        cells = " | ".join(f"{f['accuracy']:.3f} ({f['correct']}/{f['test_clips']})" for f in r["folds"])
        lines.append(
            f"| {r['features']} | {r['model']} | {cells} | {r['mean_accuracy']:.3f} ± {r['std_accuracy']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def write_table(rows: list[dict[str, Any]], out: Path) -> None:
    (out / TABLE_JSON).write_text(json.dumps(rows, indent=2) + "\n")
    (out / TABLE_MD).write_text("# Accuracy by cross-validation over the folds\n\n" + table_markdown(rows))

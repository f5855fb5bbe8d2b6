"""The classical MLP as a device model: scikit-learn's MLP on per-window log-mel mean and std, rebuilt as int8 TFLite.

The device feeds a model one normalized log-mel patch per window, so the exported graph computes the features
itself (mean and standard deviation over the patch's frames of every mel band: MEAN, SUB, MUL and SQRT, all
int8 ops) and then the MLP with the StandardScaler folded into its first layer. The MLP is trained on the same
per-window features computed in numpy (features below), and a clip's class is the mean of its windows'
probabilities, as `python -m device score` decides. `fit --model mlp` exports it and checks the int8 model's
clip accuracy against scikit-learn's float accuracy on every held-out fold.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, GroupKFold, LeaveOneGroupOut
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from device.analysis.features import FeatureParams
from device.analysis.inference import QuantizedGraph

from .datasets import clip_patches
from .export import convert_int8
from .tf_setup import import_tensorflow

logger = logging.getLogger(__name__)

GRID = {"mlpclassifier__hidden_layer_sizes": [(32,), (64,)], "mlpclassifier__alpha": [1e-2, 1.0]}


def window_features(patches: np.ndarray) -> np.ndarray:
    """(n, n_frames, n_mels) patches -> (n, 2 * n_mels): per band the mean over frames, then the standard deviation."""
    mean = patches.mean(axis=1)
    std = np.sqrt(np.mean((patches - mean[:, None, :]) ** 2, axis=1))
    return np.concatenate([mean, std], axis=1).astype(np.float32)


def _windows(clips: list[np.ndarray], params: FeatureParams) -> tuple[list[np.ndarray], np.ndarray]:
    """Per clip its patches, and the clip index of every window."""
    patches = [clip_patches([c], params) for c in clips]
    owner = np.concatenate([np.full(len(p), k) for k, p in enumerate(patches)]) if patches else np.zeros(0, int)
    return patches, owner.astype(int)


def fit_mlp(clips: list[np.ndarray], y: np.ndarray, folds: np.ndarray, params: FeatureParams, seed: int = 0):
    """scikit-learn's MLP on the windows of clips, hyperparameters by cross-validation over the clips' folds."""
    patches, owner = _windows(clips, params)
    x = window_features(np.concatenate(patches))
    wy, groups = y[owner], folds[owner]
    if len(np.unique(groups[groups >= 0])) >= 2:
        cv: Any = list(LeaveOneGroupOut().split(x, wy, groups))
    else:  # windows of one clip stay together
        cv = list(GroupKFold(n_splits=min(3, len(clips))).split(x, wy, owner))
    estimator = make_pipeline(StandardScaler(), MLPClassifier(max_iter=500, random_state=seed))
    search = GridSearchCV(estimator, GRID, cv=cv, scoring="accuracy", n_jobs=1, error_score=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)
        search.fit(x, wy)
    return search.best_estimator_, {k.split("__")[-1]: v for k, v in search.best_params_.items()}


def to_keras(pipeline, params: FeatureParams):
    """The fitted StandardScaler + MLPClassifier as a Keras model from one patch (batch 1) to class probabilities."""
    tf = import_tensorflow()
    keras = tf.keras
    layers = keras.layers
    scaler, mlp = pipeline.named_steps["standardscaler"], pipeline.named_steps["mlpclassifier"]
    if mlp.activation != "relu" or len(mlp.classes_) < 3:
        raise ValueError("exported MLPs are relu networks over at least three classes (softmax output)")
    n_frames, n_mels = params.patch_shape
    inputs = keras.Input(shape=(n_frames, n_mels, 1), batch_size=1, name="logmel")
    x = layers.Reshape((n_frames, n_mels))(inputs)
    mean = layers.GlobalAveragePooling1D(name="band_mean")(x)
    deviation = layers.Lambda(lambda t: t[0] - keras.ops.expand_dims(t[1], 1), name="deviation")([x, mean])
    variance = layers.GlobalAveragePooling1D(name="band_variance")(layers.Multiply()([deviation, deviation]))
    std = layers.Lambda(lambda v: keras.ops.sqrt(keras.ops.relu(v)), name="band_std")(variance)
    h = layers.Concatenate(name="features")([mean, std])
    weights = []
    for k, (w, b) in enumerate(zip(mlp.coefs_, mlp.intercepts_)):
        if k == 0:  # fold the scaler in: ((f - mu) / s) @ W + b = f @ (W / s) + (b - (mu / s) @ W)
            w, b = w / scaler.scale_[:, None], b - (scaler.mean_ / scaler.scale_) @ w
        last = k == len(mlp.coefs_) - 1
        dense = layers.Dense(w.shape[1], activation="softmax" if last else "relu", name=f"dense_{k}")
        h = dense(h)
        weights.append((dense, w, b))
    model = keras.Model(inputs, h, name="acmon_mlp")
    for dense, w, b in weights:
        dense.set_weights([np.asarray(w, np.float32), np.asarray(b, np.float32)])
    return model


def clip_accuracy_float_int8(pipeline, tflite: bytes, clips: list[np.ndarray], y: np.ndarray, params: FeatureParams):
    """(scikit-learn float, int8 TFLite) clip accuracy, a clip's class the mean of its windows' probabilities."""
    float_accuracy, int8_accuracy, _ = _clip_predictions(pipeline, tflite, clips, y, params)
    return float_accuracy, int8_accuracy


def _clip_predictions(pipeline, tflite: bytes, clips: list[np.ndarray], y: np.ndarray, params: FeatureParams):
    """(float accuracy, int8 accuracy, int8 class per clip); a clip shorter than one window counts as wrong (-1)."""
    graph = QuantizedGraph(tflite, params, "exported MLP")
    float_right = int8_right = 0
    predicted = []
    for samples, label in zip(clips, y):
        patches = clip_patches([samples], params)
        if not len(patches):
            predicted.append(-1)
            continue
        float_right += int(np.argmax(pipeline.predict_proba(window_features(patches)).mean(axis=0)) == label)
        predicted.append(int(np.argmax(graph.outputs(patches).mean(axis=0))))
        int8_right += int(predicted[-1] == label)
    n = max(1, len(clips))
    return float_right / n, int8_right / n, predicted


def export(
    pipeline, clips: list[np.ndarray], params: FeatureParams, seed: int = 0, n_representative: int = 300
) -> bytes:
    """int8 TFLite of the fitted pipeline, its activation ranges from windows of clips."""
    patches = np.concatenate([clip_patches([c], params) for c in clips])
    rep = patches[np.random.default_rng(seed).permutation(len(patches))[:n_representative]]
    return convert_int8(to_keras(pipeline, params), rep)


def cross_validate(clips: list[np.ndarray], y: np.ndarray, folds: np.ndarray, params: FeatureParams, seed: int = 0):
    """Per held-out fold: the MLP fitted on the other folds, its float and int8 clip accuracy on the held-out one.

    Returns:
        (a row per fold, true class per held-out clip, int8 class per held-out clip), folds in order.
    """
    out, y_true, y_pred = [], [], []
    for fold in sorted(int(f) for f in np.unique(folds[folds >= 0])):
        train = np.flatnonzero(folds != fold)
        test = np.flatnonzero(folds == fold)
        pipeline, chosen = fit_mlp([clips[i] for i in train], y[train], folds[train], params, seed)
        tflite = export(pipeline, [clips[i] for i in train], params, seed)
        f32, i8, predicted = _clip_predictions(pipeline, tflite, [clips[i] for i in test], y[test], params)
        y_true += [int(v) for v in y[test]]
        y_pred += [max(0, p) for p in predicted]
        logger.info("fold %d: MLP accuracy float %.3f, int8 %.3f (%d clips)", fold, f32, i8, len(test))
        out.append(
            {
                "fold": fold,
                "test_clips": len(test),
                "correct": round(i8 * len(test)),
                "accuracy": round(i8, 4),
                "float_accuracy": round(f32, 4),
                "chosen": chosen,
            }
        )
    return out, y_true, y_pred

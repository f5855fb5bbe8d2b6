"""On-device int8 inference: pick a TFLite runtime, check the model against the front end, score patches."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from .explain import BandLevels, EventExplainer
from .features import FeatureParams
from .gaussian import Scorer, ScoreState, identity_fit
from .metadata import CLASSIFICATION, GAUSSIAN_KINDS
from .model_file import SCORER_NAME, embedded_metadata, load_metadata, sha256_hex

logger = logging.getLogger(__name__)

# Tried in this order. ai-edge-litert is the maintained runtime (64-bit only);
# tflite-runtime 2.14 is the last build for 32-bit ARM Pis; full TensorFlow is a
# last resort for a development machine and is never needed on a device.
RUNTIMES = (
    ("ai_edge_litert", "ai_edge_litert.interpreter"),
    ("tflite_runtime", "tflite_runtime.interpreter"),
    ("tensorflow", "tensorflow.lite"),
)


@dataclass(frozen=True)
class Runtime:
    name: str
    interpreter_class: Callable[..., Any]


def select_runtime(preferred: str | None = None) -> Runtime:
    """The first TFLite runtime that imports.

    Args:
        preferred: a name from RUNTIMES to use that one only.

    Raises:
        ModelError: no runtime (or not the preferred one) can be imported.
    """
    candidates = [r for r in RUNTIMES if preferred in (None, r[0])]
    if not candidates:
        raise ModelError(f"unknown runtime {preferred!r}; choose one of {[r[0] for r in RUNTIMES]}")
    failures = []
    for name, module_name in candidates:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            failures.append(f"{name}: {exc}")
            continue
        return Runtime(name, module.Interpreter)
    raise ModelError(
        "no TFLite runtime could be imported ("
        + "; ".join(failures)
        + "); install one: pip install ai-edge-litert (64-bit) or tflite-runtime (32-bit Pi)"
    )


def check_params(model_params: FeatureParams, expected: Mapping[str, Any], source: str) -> None:
    """Refuse a model whose feature parameters differ from what this device computes.

    Args:
        model_params: the parameters the model was trained with.
        expected: the values this device will use (pinned in its config, or fixed by its code),
            as {FeatureParams field name: value}.

    Raises:
        ModelError: naming the first differing field and both values.
    """
    for name, value in expected.items():
        if not hasattr(model_params, name):
            raise ModelError(f"{source}: unknown feature parameter {name!r} pinned in the config")
        if getattr(model_params, name) != value:
            raise ModelError(
                f"{source}: model was trained with {name}={getattr(model_params, name)!r} but this device "
                f"uses {name}={value!r}; retrain the model or change features.{name} in the config"
            )


class QuantizedGraph:
    """A full-integer int8 TFLite graph on one runtime: quantize a float patch, invoke, dequantize.

    Loading checks the input tensor's shape against the feature parameters and
    reads the quantization parameters from the interpreter (never hard-coded).
    Training uses it alone to score the graph it has just exported, exactly as
    the device will; AnomalyModel adds the metadata and the scorer.
    """

    def __init__(
        self, data: bytes, params: FeatureParams, source: str, runtime: str | None = None, num_threads: int | None = 1
    ):
        self.runtime = select_runtime(runtime)
        try:
            kwargs: dict[str, Any] = {"model_content": data}
            if num_threads is not None:
                kwargs["num_threads"] = num_threads
            self._interpreter = self.runtime.interpreter_class(**kwargs)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{source}: {self.runtime.name} cannot load this model: {exc}") from None
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"{source}: expected 1 input and 1 output tensor, found {len(inputs)} and {len(outputs)}")
        self._input, self._output = inputs[0], outputs[0]
        expected_shape = (1, *params.patch_shape, 1)
        input_shape = tuple(int(d) for d in self._input["shape"])
        if input_shape != expected_shape:
            raise ModelError(
                f"{source}: input shape {input_shape} does not match the feature parameters "
                f"{expected_shape} (n_frames, n_mels); the metadata and the model disagree: re-export it"
            )
        if self._input["dtype"] != np.int8 or self._output["dtype"] != np.int8:
            raise ModelError(
                f"{source}: input/output are {np.dtype(self._input['dtype']).name}/"
                f"{np.dtype(self._output['dtype']).name}, need int8/int8 (full-integer quantization)"
            )
        self.input_scale, self.input_zero_point = _quantization(self._input, source, "input")
        self.output_scale, self.output_zero_point = _quantization(self._output, source, "output")
        self.output_shape = tuple(int(d) for d in self._output["shape"])
        logger.debug(
            "loaded %s with %s: input %s scale %.6g zp %d",
            source,
            self.runtime.name,
            expected_shape,
            self.input_scale,
            self.input_zero_point,
        )

    def quantize(self, patch: np.ndarray) -> np.ndarray:
        """Float patch to the model's int8 input: q = round(x / scale) + zero_point, saturated."""
        q = np.round(patch / self.input_scale) + self.input_zero_point
        return np.clip(q, -128, 127).astype(np.int8)

    def dequantize_input(self, q: np.ndarray) -> np.ndarray:
        return ((q.astype(np.float32) - self.input_zero_point) * self.input_scale).astype(np.float32)

    def run_int8(self, q_patch: np.ndarray) -> np.ndarray:
        """Raw int8 output for one quantized patch (n_frames, n_mels)."""
        self._interpreter.set_tensor(self._input["index"], q_patch.reshape(self._input["shape"]))
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output["index"]).copy()

    def infer(self, patch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Quantize a normalized patch, run the model and dequantize its output.

        Args:
            patch: float32 (n_frames, n_mels) from device.analysis.features.extract_patch.

        Returns:
            (int8 input as fed to the model, float32 dequantized output).
        """
        q = self.quantize(patch)
        raw = self.run_int8(q)
        out = (raw.astype(np.float32) - self.output_zero_point) * self.output_scale
        return q, out

    def outputs(self, patches: np.ndarray) -> np.ndarray:
        """Dequantized outputs of many patches (n, n_frames, n_mels), flattened: float32 (n, output size)."""
        size = int(np.prod(self.output_shape))
        return (
            np.stack([self.infer(p)[1].reshape(-1) for p in patches])
            if len(patches)
            else np.zeros((0, size), np.float32)
        )


class AnomalyModel(QuantizedGraph):
    """An int8 TFLite anomaly model with its front-end parameters, threshold and (Gaussian models) scorer.

    Loading checks, once, everything that could make scores silently wrong:
    the file's content against the checksum recorded at export
    (device/analysis/model_file.py), the metadata's front-end version and any pinned
    parameters, the input tensor's shape and dtype against FeatureParams, the
    quantization parameters, and the scorer's statistics against their
    recorded hash. The damaged file never reaches the TFLite runtime.
    """

    def __init__(
        self,
        path: str | Path,
        runtime: str | None = None,
        expected_params: Mapping[str, Any] | None = None,
        num_threads: int | None = 1,
        trusted_keys: Mapping[str, bytes] | None = None,
    ):
        """trusted_keys: {key id: Ed25519 public key}; given, the model must be a bundle signed by one of them."""
        self.path, data, self.metadata = load_metadata(path, trusted_keys)
        self.sha256 = sha256_hex(data)
        source = str(self.path)
        params = self.metadata.feature_params
        check_params(params, {"frontend_version": FeatureParams().frontend_version, **(expected_params or {})}, source)
        super().__init__(data, params, source, runtime, num_threads)
        labels, outputs = self.metadata.labels, int(np.prod(self.output_shape))
        if (
            self.metadata.score_kind in ("anomaly_probability", "class_probability")
            and labels
            and len(labels) != outputs
        ):
            raise ModelError(
                f"{source}: the metadata names {len(labels)} classes but the model outputs {outputs} "
                "probabilities; re-export the model"
            )
        self.training_scorer = self._load_scorer(data, source)
        self.scorer = self.training_scorer
        self.site: Scorer | None = None

    @property
    def params(self) -> FeatureParams:
        return self.metadata.feature_params

    @property
    def threshold(self) -> float:
        return self.metadata.threshold

    def _load_scorer(self, data: bytes, source: str) -> Scorer | None:
        """The scorer of a Gaussian model: stored in the model file, or (older models) the plain window distance."""
        kind = self.metadata.score_kind
        size = int(np.prod(self.output_shape))
        if kind == "gaussian_distance":  # acmon 0.1: the mean square of the (already whitened) output
            return Scorer(
                identity_fit(size),
                None,
                1,
                ("window",),
                (0.0, 1.0),
                (0.0,),
                (1.0,),
                self.metadata.name,
                self.metadata.version,
            )
        if kind != "gaussian_ensemble":
            return None
        raw = embedded_metadata(data, source).get(SCORER_NAME)
        record = self.metadata.scorer
        if raw is None or record is None:
            raise ModelError(
                f"{source}: a {kind} model without its scorer statistics; re-export it with python -m training fit"
            )
        # The file checksum covers these bytes too; this check is what protects models made before it.
        if sha256_hex(raw) != record.sha256:
            raise ModelError(
                f"{source}: the scorer statistics do not match their recorded SHA-256: the file is damaged; "
                "copy the model again or re-export it"
            )
        scorer = Scorer.from_bytes(raw, source)
        if scorer.size != size or (scorer.model_name, scorer.model_version) != (
            self.metadata.name,
            self.metadata.version,
        ):
            raise ModelError(
                f"{source}: the scorer statistics belong to another model ({scorer.model_name} "
                f"{scorer.model_version}, {scorer.size} outputs); re-export the model"
            )
        return scorer

    def require_anomaly_task(self) -> None:
        """Refuse a sound classification model where alarms are wanted (the daemon, replay, calibrate).

        A classifier trained without a 'normal' class has no notion of normal: its top-class probability
        says which sound it heard, not that something is wrong, so no threshold on it is an alarm.

        Raises:
            ModelError: one line saying what to do instead.
        """
        meta = self.metadata
        if meta.task == CLASSIFICATION:
            shown = ", ".join(meta.labels[:4]) + (", ..." if len(meta.labels) > 4 else "")
            raise ModelError(
                f"{self.path}: a sound classification model ({len(meta.labels)} classes: {shown}), not an anomaly "
                f"model, so it cannot raise alarms; classify recordings with python -m device score FILES --model "
                f"{self.path}, or train an anomaly model on recordings labelled normal (python -m training fit)"
            )

    def new_explainer(self) -> EventExplainer | None:
        """What explains this model's events (device/analysis/explain.py): None when it can say nothing (no normal
        band levels recorded, not a classifier with fault classes)."""
        meta = self.metadata
        levels = BandLevels.from_record(meta.band_levels) if meta.band_levels is not None else None
        labels = meta.labels if meta.score_kind == "anomaly_probability" and len(meta.labels) > 1 else ()
        if levels is None and not labels:
            return None
        return EventExplainer(self.params, levels, labels)

    def new_score_state(self) -> ScoreState | None:
        """Per-stream memory for the scorer's context (None for models without a scorer)."""
        return self.scorer.new_state() if self.scorer is not None else None

    def use_site_statistics(self, site: Scorer | None, source: str = "site statistics") -> None:
        """Score against the site's normal statistics (from on-site calibration) instead of the training data's.

        Raises:
            ModelError: this model has no Gaussian output, or the statistics were measured with another model.
        """
        if site is not None:
            if self.metadata.score_kind not in GAUSSIAN_KINDS:
                raise ModelError(
                    f"{source}: site statistics apply to Gaussian models only; {self.path} scores by "
                    f"{self.metadata.score_kind}: remove model.site_statistics or recalibrate"
                )
            size = int(np.prod(self.output_shape))
            meta = self.metadata
            if site.size != size or (site.model_name, site.model_version) != (meta.name, meta.version):
                raise ModelError(
                    f"{source}: measured with model {site.model_name} {site.model_version} ({site.size} "
                    f"outputs), but the model is {meta.name} {meta.version} ({size} outputs): recalibrate on site "
                    "(python -m device calibrate) or roll back"
                )
        self.site = site
        self.scorer = site if site is not None else self.training_scorer

    def score(self, patch: np.ndarray, state: ScoreState | None = None) -> float:
        """Anomaly score of one normalized patch; higher is more anomalous (see evaluate)."""
        return self.evaluate(patch, state)[0]

    def evaluate(self, patch: np.ndarray, state: ScoreState | None = None) -> tuple[float, np.ndarray]:
        """(anomaly score, dequantized model output) of one normalized patch.

        Gaussian models score through their Scorer (the site's, after on-site
        calibration), which remembers the stream's recent outputs in `state`
        (a fresh state when None: the window as if a stream started there).
        Other models: output_score of the model's kind. Reconstruction scores
        compare the model's input as the model saw it (after int8
        quantization) with its reconstruction, which keeps input rounding
        noise out of the score.
        """
        q, out = self.infer(patch)
        if self.scorer is not None:
            return self.scorer.score(out, state if state is not None else self.scorer.new_state()), out
        return output_score(patch_of(self.dequantize_input(q), self.params), out, self.metadata.score_kind), out


@dataclass(frozen=True)
class ClipClass:
    """What a sound classifier says about one clip: the most probable label and the probabilities it averaged."""

    label: str | None
    """The most probable class over the clip's windows; None for a clip shorter than one window."""
    probability: float | None
    """Its probability: the mean over the clip's windows of the model's (dequantized) output for it."""
    probabilities: dict[str, float]
    """Every class's mean probability."""
    windows: int


def classify_clip(model: AnomalyModel, patches: Iterable[np.ndarray]) -> ClipClass:
    """The class of a clip from its normalized patches (device.pipeline.window_patches), by the mean of the
    windows' probabilities: a clip-level decision, as UrbanSound8K's clips are labelled.

    Raises:
        ModelError: the model is not a classification model.
    """
    meta = model.metadata
    if meta.task != CLASSIFICATION:
        raise ModelError(f"{model.path}: not a classification model (task {meta.task!r}); it scores anomalies")
    outputs = [model.infer(p)[1].reshape(-1) for p in patches]
    if not outputs:
        return ClipClass(None, None, {}, 0)
    mean = np.clip(np.mean(outputs, axis=0), 0.0, 1.0)
    top = int(np.argmax(mean))
    return ClipClass(
        meta.labels[top], float(mean[top]), {k: round(float(v), 6) for k, v in zip(meta.labels, mean)}, len(outputs)
    )


def patch_of(x: np.ndarray, params: FeatureParams) -> np.ndarray:
    return x.reshape(params.patch_shape)


def output_score(patch: np.ndarray, output: np.ndarray, kind: str) -> float:
    """A model's output for one patch (n_frames, n_mels) as an anomaly score; the device and training's float checks share it.

    gaussian_distance: the output is the whitened per-band statistics of the
    window; the mean of their squares is the Mahalanobis distance to normal
    (squared, per dimension): about 1 on normal sound.
    reconstruction_band_max: squared error averaged over time in each mel
    band, then the worst band. A fault that lives in a few bands (a bearing
    resonance, a mains harmonic) stands out against the reconstruction noise
    that a mean over all bands would dilute it into.
    reconstruction_mse: mean squared error over the whole patch.
    anomaly_probability: 1 - P(normal), P(normal) being output 0.
    class_probability: a sound classifier's top class probability (not an anomaly score: see classify_clip).
    """
    out = np.asarray(output, dtype=np.float32).reshape(-1)
    if kind == "class_probability":
        return float(out.max())
    if kind == "gaussian_distance":
        return float(np.mean(out * out))
    if kind == "anomaly_probability":
        return float(1.0 - out[0])
    err = (out.reshape(patch.shape) - patch.astype(np.float32)) ** 2
    if kind == "reconstruction_mse":
        return float(err.mean())
    if kind == "reconstruction_band_max":
        return float(err.mean(axis=0).max())
    raise ValueError(f"unknown score kind: {kind!r}")


def _quantization(details: Mapping[str, Any], source: str, which: str) -> tuple[float, int]:
    scale, zero_point = details.get("quantization", (0.0, 0))
    if not scale:
        raise ModelError(f"{source}: the {which} tensor has no quantization parameters; export a full-integer model")
    return float(scale), int(zero_point)

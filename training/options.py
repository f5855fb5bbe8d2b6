"""Training settings: the `fit:` section of a training config (FitOptions) and the config file that holds it with
the front end's `features:` (load_training_config), read through the device's bounded YAML reader."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from device.analysis.features import FeatureParams, one_line
from device.analysis.gaussian import DEFAULT_CONTEXT_WINDOWS
from device.decisions.detector import DEFAULT_PATIENCE_WINDOWS
from device.errors import AcmonError
from device.settings.yaml_files import read_yaml_file_with_lines

from .sampling import AugmentOptions

MODEL_KINDS = ("auto", "gaussian", "autoencoder", "classifier", "mlp")


@dataclass(frozen=True)
class FitOptions:
    """Training settings (the `fit:` section of a training config)."""

    epochs: int = 40
    """Maximum passes over the training patches; early stopping usually ends sooner."""
    batch_size: int = 32
    learning_rate: float = 1e-3
    early_stopping_patience: int = 6
    """Epochs without validation improvement before stopping (best weights are kept)."""
    validation_fraction: float = 0.2
    """Share of the normal files held out for validation and threshold calibration."""
    train_hop_samples: int | None = None
    """Window step for cutting training patches; None = a quarter of the device's hop (4x more patches)."""
    false_alarms_per_day: float = 1.0
    """Target rate of false alarms on normal sound, per day of continuous monitoring at the model's hop."""
    patience_windows: int = DEFAULT_PATIENCE_WINDOWS
    """Consecutive windows above threshold that start an alarm, assumed in calibration (the device's
    detector.patience_windows default); a device configured with more patience alarms less often."""
    representative_patches: int = 300
    """Patches used to calibrate int8 activation ranges."""
    max_patches_per_epoch: int = 4000
    """Random training windows per epoch at most (fewer for short datasets: one per train_hop_samples)."""
    augment: AugmentOptions = field(default_factory=AugmentOptions)
    """Augmentation of training windows (gain, background mixing, SpecAugment, mixup)."""
    cache_dir: str | None = None
    """Where decoded audio is cached as float32 .npy (default: ~/.cache/acmon/audio)."""
    model: str = "auto"
    """'auto' (the classifier when fault labels exist, else the Gaussian model), 'gaussian', 'autoencoder' or
    'classifier', or for sound classification (no 'normal' label) 'mlp': scikit-learn's MLP on per-window log-mel
    mean and std exported as int8 (training/mlp_export.py) instead of the CNN. The Gaussian model of per-band window statistics is the measured best on normal-only data
    (benchmarks/bench_detection.py); the autoencoder is kept for comparison."""
    score_kind: str = "reconstruction_band_max"
    """The autoencoder's score: 'reconstruction_band_max' or 'reconstruction_mse'."""
    amplify_representative: float = 3.0
    """Gaussian model: representative patches include normal patches with their deviation from the mean patch
    multiplied by this, so the int8 output range covers clear faults instead of saturating near normal."""
    level_features: bool = False
    """Gaussian model: feed it absolute dB (features.normalization 'none') so it also keeps the window's level
    and spectral tilt beside the spectrum's shape. Off by default: measured on the choosing sets it gained
    0.01 AUC on level faults but lost 0.02-0.05 whenever the microphone gain differs from the training
    recordings' by 6-10 dB (and would alarm until calibrated on site). Turn it on when the training
    recordings come from the mounted sensor itself."""
    context_windows: int = DEFAULT_CONTEXT_WINDOWS
    """Gaussian model: windows averaged by the scorer's context member (8 = 4.6 s at the default hop)."""
    cross_validate: bool = True
    """Sound classification (no 'normal' label): cross-validate over the manifest's folds (train on all folds but
    one, test the int8 model on that one, for each) before training the exported model on all the data. Costs
    one training per fold; off with `fit --no-folds`. Anomaly detection ignores folds."""
    seed: int = 0
    name: str | None = None
    """Model name; defaults to the data folder's name (usually the machine type)."""

    def __post_init__(self) -> None:
        if self.model not in MODEL_KINDS:
            raise ValueError(f"model must be one of {MODEL_KINDS} (got {self.model!r})")
        kinds = ("reconstruction_band_max", "reconstruction_mse")
        if self.score_kind not in kinds:
            raise ValueError(f"score_kind must be one of {kinds} (got {self.score_kind!r})")
        if not 0 < self.false_alarms_per_day <= 10_000:
            raise ValueError(f"false_alarms_per_day must be in (0, 10000] (got {self.false_alarms_per_day})")
        if not 1 <= self.patience_windows <= 100:
            raise ValueError(f"patience_windows must be in 1..100 (got {self.patience_windows})")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in [0, 1) (got {self.validation_fraction})")
        if not 1 <= self.context_windows <= 64:
            raise ValueError(f"context_windows must be in 1..64 (got {self.context_windows})")


def load_training_config(path: str | Path | None) -> tuple[FeatureParams, FitOptions]:
    """Read a training YAML with optional `features:` and `fit:` sections.

    Raises:
        AcmonError: the file is unreadable or has an unknown key or bad value (named).
    """
    if path is None:
        return FeatureParams(), FitOptions()
    p = Path(path)
    data, lines = read_yaml_file_with_lines(p, "training config")  # bounded: size, nesting, aliases
    data = data or {}

    def where(*keys: Any) -> str:
        """'<file>:<line>' of the deepest of these keys the file gives, for a message that names it."""
        for n in range(len(keys), 0, -1):
            if keys[:n] in lines:
                return f"{p}:{lines[keys[:n]]}"
        return str(p)

    if not isinstance(data, dict):
        raise AcmonError(f"{p}: training config must be a mapping with 'features' and/or 'fit' sections")
    unknown = sorted(set(data) - {"features", "fit"}, key=str)
    if unknown:
        raise AcmonError(f"{where(unknown[0])}: unknown key {unknown[0]!r}; allowed: features, fit")
    sections: list[Any] = []
    for key, cls in (("features", FeatureParams), ("fit", FitOptions)):
        raw = data.get(key) or {}
        if not isinstance(raw, dict):
            raise AcmonError(
                f"{where(key)}: {key}: must be a mapping of settings (key: value), got {type(raw).__name__}"
            )
        section = dict(raw)
        names = {f.name for f in dataclasses.fields(cls)}
        if key == "fit" and "augment" in section and not isinstance(section["augment"], dict):
            raise AcmonError(
                f"{where(key, 'augment')}: fit.augment: must be a mapping of settings, "
                f"got {type(section['augment']).__name__}"
            )
        if key == "fit" and isinstance(section.get("augment"), dict):
            aug_names = {f.name for f in dataclasses.fields(AugmentOptions)}
            bad_aug = sorted(set(section["augment"]) - aug_names, key=str)
            if bad_aug:
                raise AcmonError(
                    f"{where(key, 'augment', bad_aug[0])}: fit.augment.{bad_aug[0]}: unknown key; "
                    f"allowed: {', '.join(sorted(aug_names))}"
                )
            try:
                section["augment"] = AugmentOptions(**section["augment"])
            except (TypeError, ValueError) as exc:
                named = [k for k in section["augment"] if str(k) in str(exc)]
                raise AcmonError(f"{where(key, 'augment', *named[:1])}: fit.augment: {exc}") from None
        bad = sorted(set(section) - names, key=str)
        if bad:
            raise AcmonError(f"{where(key, bad[0])}: {key}.{bad[0]}: unknown key; allowed: {', '.join(sorted(names))}")
        try:
            sections.append(cls(**section))
        except (TypeError, ValueError) as exc:
            text = one_line(exc) if isinstance(exc, ValidationError) else str(exc)
            named = [k for k in section if str(k) in text]
            raise AcmonError(f"{where(key, *named[:1])}: {key}: {text}") from None
    return sections[0], sections[1]

"""What a model file says about itself: the one typed ModelMetadata that training writes and the device reads.

Training builds a ModelMetadata and embeds `document()` in the .tflite file
(training/export.py embed_metadata); the device parses it back with
`from_document()` (device/analysis/model_file.py load_metadata), so a key is declared,
typed and checked in one place. The document is JSON with sorted keys; keys
this acmon does not know are kept (a newer training may add a record an
older device ignores), a schema_version it does not know is refused. So an optional record
is added without a new schema_version (band_levels was): an older acmon loads the model and
ignores the record, this one loads older models without it. A new schema_version is for
changes an older acmon would misread.
"""

from __future__ import annotations

import math
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from ..errors import ModelError
from .features import FeatureParams, one_line

METADATA_SCHEMA_VERSION: Literal[1] = 1

ScoreKind = Literal[
    "gaussian_ensemble",
    "gaussian_distance",
    "reconstruction_band_max",
    "reconstruction_mse",
    "anomaly_probability",
    "class_probability",
]
SCORE_KINDS: tuple[str, ...] = typing.get_args(ScoreKind)
GAUSSIAN_KINDS = ("gaussian_ensemble", "gaussian_distance")

Task = Literal["anomaly_detection", "classification"]
CLASSIFICATION = "classification"
"""A plain multi-class sound classifier (labels with no 'normal'): it names a class per clip and raises no alarm."""

REQUIRED_KEYS = ("feature_params", "score_kind", "threshold", "name", "version")
_REEXPORT = "re-export the model with python -m training fit"


class ScorerRecord(BaseModel):
    """The Gaussian ensemble's scorer: what its statistics buffer must be, and how fit chose its members."""

    model_config = ConfigDict(frozen=True, extra="allow", use_attribute_docstrings=True)

    sha256: str
    """SHA-256 of the scorer statistics buffer (device/analysis/gaussian.py Scorer.to_bytes)."""
    members: tuple[str, ...]
    """The members fit chose ('window', 'context')."""
    context_windows: int = Field(gt=0)
    """Windows the context member averages over."""
    choice: dict[str, Any] = Field(default_factory=dict)
    """How fit chose: validation AUC per candidate, fault clips and normal recordings used."""


# Bounds on the normal band levels a model may carry (dB relative to the window's mean level): a log-mel band
# spans at most about 200 dB (power floor -100 dB to full scale and beyond), and a spread beyond 100 dB is noise.
BAND_LEVEL_MAX_DB = 200.0
BAND_SPREAD_MAX_DB = 100.0


def _band_values(value: Any, low: float, high: float) -> tuple[float, ...]:
    """A list of finite numbers within [low, high] (bool and strings refused), or ValueError naming the first bad one."""
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"must be a list of numbers, one per mel band (got {type(value).__name__})")
    out = []
    for k, v in enumerate(value):
        number = None
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            try:
                number = float(v)
            except OverflowError:
                number = None
        if number is None or not (math.isfinite(number) and low <= number <= high):
            raise ValueError(f"band {k}: must be a finite number within {low:g} to {high:g} dB (got {str(v)[:40]})")
        out.append(number)
    return tuple(out)


class BandLevelsRecord(BaseModel):
    """The normal sound's level per mel band, relative to each window's mean level (device/analysis/explain.py).

    What an event's `bands` are measured against. Absent in models made before acmon recorded it: their
    events name no bands.
    """

    model_config = ConfigDict(frozen=True, extra="allow", use_attribute_docstrings=True)

    mean_db: tuple[float, ...]
    """Per mel band: mean over normal windows of the band's level averaged over the window's frames, in dB re the
    window's mean level."""
    spread_db: tuple[float, ...]
    """Per mel band: standard deviation of that over normal windows, in dB."""
    peak_mean_db: tuple[float, ...]
    """Per mel band: mean over normal windows of the band's level in the window's loudest frame for that band, in dB
    re the window's mean level."""
    peak_spread_db: tuple[float, ...]
    """Per mel band: standard deviation of that over normal windows, in dB."""
    windows: int = Field(gt=1)
    """Normal windows the statistics were measured on."""

    @field_validator("mean_db", "peak_mean_db", mode="before")
    @classmethod
    def _levels(cls, value: Any) -> tuple[float, ...]:
        return _band_values(value, -BAND_LEVEL_MAX_DB, BAND_LEVEL_MAX_DB)

    @field_validator("spread_db", "peak_spread_db", mode="before")
    @classmethod
    def _spreads(cls, value: Any) -> tuple[float, ...]:
        return _band_values(value, 0.0, BAND_SPREAD_MAX_DB)


class ModelMetadata(BaseModel):
    """What training records about a model, read back on the device."""

    model_config = ConfigDict(frozen=True, extra="allow", use_attribute_docstrings=True)

    schema_version: Literal[1] = METADATA_SCHEMA_VERSION
    """Layout of this document; a device refuses one it does not know."""
    name: str
    """Model name (usually the machine type)."""
    version: str
    """Model version string (training's UTC timestamp unless set)."""
    acmon_version: str | None = None
    """The acmon that trained the model."""
    created_utc: str | None = None
    """When the model was made (ISO 8601, UTC)."""
    feature_params: FeatureParams
    """The front end the model was trained with."""
    score_kind: ScoreKind
    """How the model's output becomes an anomaly score."""
    threshold: float
    """Calibrated score threshold (alarm when a window's score exceeds it)."""
    task: Task = "anomaly_detection"
    """What the model is for: 'anomaly_detection' (a score against a threshold: the daemon's alarms) or
    'classification' (score_kind 'class_probability': the most probable of `labels`, which `python -m device score`
    reports and the daemon refuses). Absent in models made before acmon recorded it: all anomaly detection."""
    labels: tuple[str, ...] = ()
    """Class names for supervised models (in output order), () otherwise."""
    scorer: ScorerRecord | None = None
    """The Gaussian ensemble's scorer record; None for other score kinds."""
    band_levels: BandLevelsRecord | None = None
    """The normal sound's level per mel band, which events' `bands` are measured against; None in models made
    before acmon recorded it (an older acmon keeps the key as an unknown one and ignores it)."""
    calibration: dict[str, Any] = Field(default_factory=dict)
    """How the threshold was calibrated (device/decisions/threshold.py calibrate_threshold's info)."""
    float_int8_parity: dict[str, Any] = Field(default_factory=dict)
    """How closely the int8 model's scores follow the float model's on held-out audio."""
    training: dict[str, Any] = Field(default_factory=dict)
    """The training record: data, recordings, seconds, model, seed."""
    content_sha256: str | None = Field(None, exclude=True)
    """The content checksum load_metadata verified; None for a model made before acmon recorded one, or
    metadata not read from its file. Not part of document(): embed_metadata writes the file's own."""

    @field_validator("feature_params", mode="before")
    @classmethod
    def _feature_params(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, dict):  # the named one-line errors of FeatureParams.from_dict (a newer front end)
            return FeatureParams.from_dict(value, source=(info.context or {}).get("source", "model metadata"))
        return value

    @field_validator("threshold", mode="before")
    @classmethod
    def _threshold(cls, value: Any) -> float:
        # bool is an int to Python; inf would switch detection off, NaN compares false with every score.
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an integer of hundreds of digits
                number = None
        if number is None or not (math.isfinite(number) and number > 0):
            raise ValueError(f"must be a positive finite number (got {str(value)[:40]})")
        return number

    @model_validator(mode="after")
    def _task_fits_the_score(self) -> ModelMetadata:
        classifies = self.score_kind == "class_probability"
        if classifies != (self.task == CLASSIFICATION):
            raise ValueError(
                f"task {self.task!r} does not fit score_kind {self.score_kind!r} (a classification model scores by "
                "class_probability, and only it)"
            )
        if classifies and len(self.labels) < 2:
            raise ValueError(f"a classification model needs at least 2 labels (got {len(self.labels)})")
        return self

    @model_validator(mode="after")
    def _band_levels_fit_the_front_end(self) -> ModelMetadata:
        levels = self.band_levels
        if levels is not None:
            n_mels = self.feature_params.n_mels
            for name in ("mean_db", "spread_db", "peak_mean_db", "peak_spread_db"):
                if len(getattr(levels, name)) != n_mels:
                    raise ValueError(
                        f"band_levels.{name} has {len(getattr(levels, name))} values but the front end has "
                        f"{n_mels} mel bands"
                    )
        return self

    @classmethod
    def from_document(cls, document: dict[str, Any], source: str) -> ModelMetadata:
        """Validate a metadata document read from a model file.

        Raises:
            ModelError: one line naming the file and the missing or bad key.
        """
        version = document.get("schema_version")
        if version != METADATA_SCHEMA_VERSION:
            raise ModelError(
                f"{source}: metadata schema_version {version!r} is not {METADATA_SCHEMA_VERSION}; "
                "this acmon cannot read it: upgrade acmon or re-export the model"
            )
        for key in REQUIRED_KEYS:
            if key not in document:
                raise ModelError(f"{source}: metadata has no {key!r}; {_REEXPORT}")
        kind = document["score_kind"]
        if not isinstance(kind, str) or kind not in SCORE_KINDS:
            raise ModelError(f"{source}: unknown score_kind {str(kind)[:80]!r} (this acmon knows {SCORE_KINDS})")
        fields = {k: v for k, v in document.items() if k != "content_sha256"}
        try:
            return cls.model_validate(fields, context={"source": source})
        except ValidationError as exc:
            raise ModelError(f"{source}: metadata {one_line(exc)}; {_REEXPORT}") from None

    def document(self) -> dict[str, Any]:
        """The JSON document to embed (embed_metadata adds the integrity keys)."""
        return self.model_dump(mode="json")

    def replaced(self, **changes: Any) -> ModelMetadata:
        """A copy with some keys changed, validated again."""
        return type(self).model_validate({**self.model_dump(), **changes})

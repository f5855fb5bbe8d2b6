"""Read the acmon metadata that training embeds in a .tflite file, without TensorFlow.

A .tflite file is a FlatBuffer (schema: tensorflow/lite/schema/schema.fbs).
Its root `Model` table has a `metadata` vector of (name, buffer index) pairs;
training stores a JSON document in a buffer under the name METADATA_NAME. The
model file is therefore self-describing: feature parameters, score kind and
calibrated threshold travel with the weights and cannot get separated from them.

Only the handful of FlatBuffer rules needed to reach that buffer are
implemented here; everything is bounds-checked so a corrupt file gives a
ModelError, never an IndexError.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelError
from .features import FeatureParams

METADATA_NAME = "acmon"
# A second metadata buffer: the Gaussian ensemble's scorer (device/gaussian.py Scorer.to_bytes).
SCORER_NAME = "acmon_scorer"
METADATA_SCHEMA_VERSION = 1
TFLITE_IDENTIFIER = b"TFL3"
MODEL_FILENAME = "model.tflite"

# Field slots of the tables we read (order of fields in schema.fbs).
_MODEL_BUFFERS = 4
_MODEL_METADATA = 6
_METADATA_NAME = 0
_METADATA_BUFFER = 1
_BUFFER_DATA = 0
_BUFFER_OFFSET = 1
_BUFFER_SIZE = 2

SCORE_KINDS = (
    "gaussian_ensemble", "gaussian_distance", "reconstruction_band_max", "reconstruction_mse", "anomaly_probability",
)
GAUSSIAN_KINDS = ("gaussian_ensemble", "gaussian_distance")


class _FlatBuffer:
    """Minimal bounds-checked FlatBuffer table reader."""

    def __init__(self, data: bytes, source: str):
        self.data = data
        self.source = source

    def _u(self, fmt: str, pos: int) -> int:
        size = struct.calcsize(fmt)
        if pos < 0 or pos + size > len(self.data):
            raise ModelError(f"{self.source}: corrupt TFLite file (offset {pos} out of range); re-export the model")
        return struct.unpack_from(fmt, self.data, pos)[0]

    def root(self) -> int:
        return self._u("<I", 0)

    def field_pos(self, table: int, slot: int) -> int | None:
        """Absolute position of a field's value in a table, or None if absent."""
        vtable = table - self._u("<i", table)
        vtable_size = self._u("<H", vtable)
        entry = 4 + 2 * slot
        if entry >= vtable_size:
            return None
        rel = self._u("<H", vtable + entry)
        return table + rel if rel else None

    def indirect(self, pos: int) -> int:
        return pos + self._u("<I", pos)

    def table_field(self, table: int, slot: int) -> int | None:
        pos = self.field_pos(table, slot)
        return None if pos is None else self.indirect(pos)

    def vector(self, table: int, slot: int) -> tuple[int, int] | None:
        """(position of first element, length) of a vector field."""
        start = self.table_field(table, slot)
        if start is None:
            return None
        return start + 4, self._u("<I", start)

    def string(self, table: int, slot: int) -> str | None:
        vec = self.vector(table, slot)
        if vec is None:
            return None
        start, length = vec
        if start + length > len(self.data):
            raise ModelError(f"{self.source}: corrupt TFLite file (string out of range); re-export the model")
        return self.data[start : start + length].decode("utf-8", errors="replace")

    def scalar(self, table: int, slot: int, fmt: str, default: int = 0) -> int:
        pos = self.field_pos(table, slot)
        return default if pos is None else self._u(fmt, pos)


def resolve_model_path(path: str | Path) -> Path:
    """A .tflite file, or a model folder containing model.tflite."""
    p = Path(path)
    if p.is_dir():
        p = p / MODEL_FILENAME
    return p


def read_model_bytes(path: str | Path) -> tuple[Path, bytes]:
    """Read a model file, checking that it is TFLite.

    Raises:
        ModelError: missing, unreadable or not a TFLite FlatBuffer.
    """
    p = resolve_model_path(path)
    if not p.exists():
        hint = "train one with: python -m training fit --data DIR --out MODEL_DIR"
        raise ModelError(f"{p}: no such model file; {hint}")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ModelError(f"{p}: cannot read model file: {exc.strerror or exc}") from None
    if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
        raise ModelError(f"{p}: not a TFLite model (no 'TFL3' identifier); export one with python -m training fit")
    return p, data


def embedded_metadata(data: bytes, source: str) -> dict[str, bytes]:
    """All named metadata buffers of a .tflite FlatBuffer, as {name: raw bytes}."""
    fb = _FlatBuffer(data, source)
    model = fb.root()
    metadata = fb.vector(model, _MODEL_METADATA)
    buffers = fb.vector(model, _MODEL_BUFFERS)
    if metadata is None or buffers is None:
        return {}
    out: dict[str, bytes] = {}
    meta_start, meta_len = metadata
    buf_start, buf_len = buffers
    for i in range(meta_len):
        entry = fb.indirect(meta_start + 4 * i)
        name = fb.string(entry, _METADATA_NAME)
        index = fb.scalar(entry, _METADATA_BUFFER, "<I")
        if name is None or index >= buf_len:
            continue
        buffer = fb.indirect(buf_start + 4 * index)
        vec = fb.vector(buffer, _BUFFER_DATA)
        if vec is not None:
            start, length = vec
            out[name] = data[start : start + length]
        else:  # Models over 2 GB keep buffer data outside the FlatBuffer.
            offset = fb.scalar(buffer, _BUFFER_OFFSET, "<Q")
            size = fb.scalar(buffer, _BUFFER_SIZE, "<Q")
            out[name] = data[offset : offset + size] if offset > 1 else b""
    return out


@dataclass(frozen=True)
class ModelMetadata:
    """What training records about a model, read back on the device.

    Attributes:
        feature_params: the front end the model was trained with.
        score_kind: how the model's output becomes an anomaly score (SCORE_KINDS).
        threshold: calibrated score threshold (alarm when a window's score exceeds it).
        name: model name (usually the machine type).
        version: model version string (training's UTC timestamp unless set).
        labels: class names for supervised models, [] otherwise.
        extra: the whole metadata document, for inspection.
    """

    feature_params: FeatureParams
    score_kind: str
    threshold: float
    name: str
    version: str
    labels: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def parse_metadata(document: dict[str, Any], source: str) -> ModelMetadata:
    """Validate a metadata document.

    Raises:
        ModelError: naming the missing or bad key.
    """
    version = document.get("schema_version")
    if version != METADATA_SCHEMA_VERSION:
        raise ModelError(
            f"{source}: metadata schema_version {version!r} is not {METADATA_SCHEMA_VERSION}; "
            "this acmon cannot read it: upgrade acmon or re-export the model"
        )
    for key in ("feature_params", "score_kind", "threshold", "name", "version"):
        if key not in document:
            raise ModelError(f"{source}: metadata has no {key!r}; re-export the model with python -m training fit")
    if document["score_kind"] not in SCORE_KINDS:
        raise ModelError(f"{source}: unknown score_kind {document['score_kind']!r} (this acmon knows {SCORE_KINDS})")
    threshold = document["threshold"]
    if not isinstance(threshold, (int, float)) or not threshold > 0:
        raise ModelError(f"{source}: metadata threshold must be a positive number (got {threshold!r})")
    return ModelMetadata(
        feature_params=FeatureParams.from_dict(document["feature_params"], source=source),
        score_kind=document["score_kind"],
        threshold=float(threshold),
        name=str(document["name"]),
        version=str(document["version"]),
        labels=tuple(document.get("labels", ())),
        extra=document,
    )


def load_metadata(path: str | Path) -> tuple[Path, bytes, ModelMetadata]:
    """Read a model file and its acmon metadata.

    Returns:
        (resolved path, model bytes, metadata).

    Raises:
        ModelError: the file is missing, not TFLite, or carries no valid acmon metadata.
    """
    p, data = read_model_bytes(path)
    raw = embedded_metadata(data, str(p)).get(METADATA_NAME)
    if raw is None:
        raise ModelError(
            f"{p}: TFLite model without acmon metadata (feature parameters, threshold); "
            "export it with python -m training fit"
        )
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{p}: acmon metadata is not valid JSON ({exc}); re-export the model") from None
    if not isinstance(document, dict):
        raise ModelError(f"{p}: acmon metadata is not a JSON object; re-export the model")
    return p, data, parse_metadata(document, str(p))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

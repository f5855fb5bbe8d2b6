"""Read the acmon metadata that training embeds in a .tflite file, without TensorFlow.

A .tflite file is a FlatBuffer (schema: tensorflow/lite/schema/schema.fbs).
Its root `Model` table has a `metadata` vector of (name, buffer index) pairs;
training stores a JSON document in a buffer under the name METADATA_NAME. The
model file is therefore self-describing: feature parameters, score kind and
calibrated threshold travel with the weights and cannot get separated from them.

Only the handful of FlatBuffer rules needed to reach that buffer are
implemented here; everything is bounds-checked so a corrupt file gives a
ModelError, never an IndexError.

Nothing in a model file is trusted before it is checked: the path must name
a regular file of at most MODEL_MAX_BYTES, the metadata JSON is bounded in
size and depth before it is parsed, and the content checksum that training
recorded in the metadata (DIGEST_KEY) must match the file, so a model damaged
after export (a bad copy, a failing SD card) is refused instead of scoring.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from .metadata import ModelMetadata

logger = logging.getLogger(__name__)

METADATA_NAME = "acmon"
# A second metadata buffer: the Gaussian ensemble's scorer (device/analysis/gaussian.py Scorer.to_bytes).
SCORER_NAME = "acmon_scorer"
TFLITE_IDENTIFIER = b"TFL3"
MODEL_FILENAME = "model.tflite"

# Limits on what the device reads before it trusts anything in a model file. A micro model is under
# 1 MiB (the demo's Gaussian ensemble is 160 KiB); 64 MiB leaves room for far larger models while
# `model.path: /dev/zero` or a mistyped path to a disk image is refused instead of read into memory.
MIB = 1024 * 1024
MODEL_MAX_BYTES = 64 * MIB
# The metadata JSON of a real model is a few KiB, about 4 levels deep. The bounds stop a crafted file
# from making the parser allocate without limit or recurse until RecursionError.
METADATA_MAX_BYTES = 1 * MIB
METADATA_MAX_DEPTH = 32

# Integrity: training records a SHA-256 of the model's own content in the metadata document. The digest
# cannot hash a file that contains it, so it covers the whole file with its own 64 hex digits read as
# DIGEST_PLACEHOLDER. Everything else, the weights, the graph, the scorer statistics and every other
# metadata byte, is covered. Two keys mark a checked model, so one damaged byte can remove at most one of
# them, and a checked model can never be taken for an unchecked one from before the checksum.
DIGEST_KEY = "content_sha256"
INTEGRITY_KEY = "integrity"
INTEGRITY_SCHEME = "sha256 of the file with content_sha256's 64 hex digits read as '0'"
DIGEST_PLACEHOLDER = "0" * 64
_DIGEST_FIELD = re.compile(rb'"content_sha256"\s*:\s*"([0-9a-f]{64})"')
DAMAGED_HINT = "copy the model again or re-export it"

# Field slots of the tables we read (order of fields in schema.fbs).
_MODEL_BUFFERS = 4
_MODEL_METADATA = 6
_METADATA_NAME = 0
_METADATA_BUFFER = 1
_BUFFER_DATA = 0
_BUFFER_OFFSET = 1
_BUFFER_SIZE = 2


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

    def vector(self, table: int, slot: int, element_size: int = 1) -> tuple[int, int] | None:
        """(position of first element, length) of a vector field, checked to lie inside the file."""
        start = self.table_field(table, slot)
        if start is None:
            return None
        length = self._u("<I", start)
        if start + 4 + length * element_size > len(self.data):
            raise ModelError(
                f"{self.source}: corrupt TFLite file (vector of {length} runs past the end); re-export the model"
            )
        return start + 4, length

    def string(self, table: int, slot: int) -> str | None:
        vec = self.vector(table, slot)
        if vec is None:
            return None
        start, length = vec
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


def read_model_bytes(path: str | Path, trusted_keys: Mapping[str, bytes] | None = None) -> tuple[Path, bytes]:
    """Read a model file (or the model of a .acmon bundle), checking that it is a regular file of bounded
    size and TFLite.

    Args:
        trusted_keys: {key id: Ed25519 public key}: the model must then come from a bundle signed by one
            of them (device/analysis/bundle.py); None: any model, a bundle's manifest still checked.

    Raises:
        ModelError: missing, not a regular file, larger than MODEL_MAX_BYTES, unreadable, or not a
            TFLite FlatBuffer; a bundle that fails its checks (BundleError); keys given and no bundle.
    """
    from . import bundle  # noqa: PLC0415 - bundle.py imports this module

    if bundle.is_bundle_path(path):
        b = bundle.read_bundle(path, trusted_keys)
        p, data = b.path, b.model_bytes
    elif trusted_keys:
        raise ModelError(
            f"{path}: trusted keys are configured (model.trusted_keys), so the model must be a signed .acmon bundle; "
            "make one with python -m firmware_tools bundle and sign it"
        )
    else:
        p = resolve_model_path(path)
        data = read_model_file(p)
    if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
        raise ModelError(f"{p}: not a TFLite model (no 'TFL3' identifier); export one with python -m training fit")
    return p, data


def read_model_file(p: Path) -> bytes:
    return read_regular_file(
        p,
        MODEL_MAX_BYTES,
        what="model file",
        missing_hint="train one with: python -m training fit --data DIR --out MODEL_DIR",
        kind_hint=f"give the path of a .tflite model or of the folder holding its {MODEL_FILENAME}",
        size_hint="an acmon model is under 1 MiB: check the path points at the model",
    )


def read_regular_file(
    path: Path, max_bytes: int, *, what: str, missing_hint: str, kind_hint: str, size_hint: str
) -> bytes:
    """Read a whole file that must be a regular file of at most max_bytes, as one bounded read.

    The file is opened before it is examined (no gap for it to be swapped between a check and the
    read), and without blocking, so a FIFO cannot stall the caller waiting for a writer; a device such
    as /dev/zero or a directory is refused before anything is read.

    Args:
        what: the file's role in messages ("model file").
        missing_hint, kind_hint, size_hint: what to do, for a missing file, one that is not a regular
            file, and one over max_bytes.

    Raises:
        ModelError: one line naming the path, what is wrong and what to do.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ModelError(f"{path}: no such {what}; {missing_hint}") from None
    except OSError as exc:
        try:  # a socket refuses open() (ENXIO): name what it is
            mode = os.stat(path).st_mode
        except OSError:
            mode = stat.S_IFREG
        if not stat.S_ISREG(mode):
            raise ModelError(f"{path}: not a regular file ({_file_kind(mode)}); {kind_hint}") from None
        raise ModelError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ModelError(f"{path}: not a regular file ({_file_kind(info.st_mode)}); {kind_hint}")
        too_large = f"{path}: {{:.1f}} MiB is larger than a {what} may be ({max_bytes / MIB:g} MiB); {size_hint}"
        if info.st_size > max_bytes:
            raise ModelError(too_large.format(info.st_size / MIB))
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:  # it grew while we read it
        raise ModelError(too_large.format(len(data) / MIB))
    return data


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "not a plain file"


def metadata_spans(data: bytes, source: str) -> dict[str, tuple[int, int]]:
    """Where each named metadata buffer of a .tflite FlatBuffer lies in the file, as {name: (offset, length)}.

    Raises:
        ModelError: the FlatBuffer is corrupt (an offset or a length points outside the file).
    """
    fb = _FlatBuffer(data, source)
    model = fb.root()
    metadata = fb.vector(model, _MODEL_METADATA, element_size=4)
    buffers = fb.vector(model, _MODEL_BUFFERS, element_size=4)
    if metadata is None or buffers is None:
        return {}
    out: dict[str, tuple[int, int]] = {}
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
            out[name] = vec
        else:  # Models over 2 GB keep buffer data outside the FlatBuffer.
            offset = fb.scalar(buffer, _BUFFER_OFFSET, "<Q")
            size = fb.scalar(buffer, _BUFFER_SIZE, "<Q")
            if offset > 1 and offset + size > len(data):
                raise ModelError(
                    f"{source}: corrupt TFLite file (buffer {index} runs past the end); re-export the model"
                )
            out[name] = (offset, size) if offset > 1 else (0, 0)
    return out


def embedded_metadata(data: bytes, source: str) -> dict[str, bytes]:
    """All named metadata buffers of a .tflite FlatBuffer, as {name: raw bytes}."""
    return {name: data[start : start + length] for name, (start, length) in metadata_spans(data, source).items()}


def content_digest(data: bytes, digest_at: int) -> str:
    """SHA-256 (hex) of a model file with the 64 bytes at digest_at read as DIGEST_PLACEHOLDER."""
    view = memoryview(data)
    h = hashlib.sha256(view[:digest_at])
    h.update(DIGEST_PLACEHOLDER.encode())
    h.update(view[digest_at + len(DIGEST_PLACEHOLDER) :])
    return h.hexdigest()


def digest_position(raw: bytes, digest: str) -> int | None:
    """Offset, in the raw metadata JSON, of the digits of its one content_sha256 field (None: not exactly one).

    Found in the bytes rather than by re-serialising the document, so the check never depends on how the
    writer formatted its JSON.
    """
    fields = list(_DIGEST_FIELD.finditer(raw))
    if len(fields) != 1 or fields[0].group(1).decode() != digest:
        return None
    return fields[0].start(1)


def parse_document(raw: bytes, source: str) -> dict[str, Any]:
    """The metadata JSON as a dict, refusing one too large or too deeply nested to parse safely.

    Raises:
        ModelError: over METADATA_MAX_BYTES, nested deeper than METADATA_MAX_DEPTH, not JSON, or not an object.
    """
    if len(raw) > METADATA_MAX_BYTES:
        raise ModelError(
            f"{source}: acmon metadata of {len(raw)} bytes is larger than the {METADATA_MAX_BYTES // MIB} MiB it may be; "
            "the file is damaged or not from acmon: re-export the model"
        )
    depth = json_depth(raw)
    if depth > METADATA_MAX_DEPTH:
        raise ModelError(
            f"{source}: acmon metadata is nested {depth} deep (at most {METADATA_MAX_DEPTH}); "
            "the file is damaged or not from acmon: re-export the model"
        )
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: also a 5000-digit number
        raise ModelError(f"{source}: acmon metadata is not valid JSON ({exc}); re-export the model") from None
    if not isinstance(document, dict):
        raise ModelError(f"{source}: acmon metadata is not a JSON object; re-export the model")
    return document


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)


def json_depth(raw: bytes) -> int:
    """How deeply arrays and objects nest in a JSON text, without parsing it (brackets inside strings do not count)."""
    codes = np.frombuffer(_JSON_STRING.sub(b"", raw), dtype=np.uint8)
    if not len(codes):
        return 0
    steps = np.isin(codes, (ord("["), ord("{"))).astype(np.int64) - np.isin(codes, (ord("]"), ord("}")))
    return int(np.cumsum(steps).max())


def verify_integrity(data: bytes, span: tuple[int, int], document: Mapping[str, Any], source: str) -> str | None:
    """Check the content checksum that training recorded in the metadata document.

    Args:
        data: the whole model file.
        span: (offset, length) of the acmon metadata buffer in data.
        document: that buffer's JSON, parsed.

    Returns:
        The verified digest (hex), or None for a model made before acmon recorded one (a warning is logged).

    Raises:
        ModelError: the digest does not match (the file was changed after export), or the record is incomplete.
    """
    has_digest, has_scheme = DIGEST_KEY in document, INTEGRITY_KEY in document
    if not has_digest and not has_scheme:
        logger.warning(
            "%s: model made before acmon recorded a checksum: its integrity cannot be checked; "
            "re-export it with python -m training fit to add one",
            source,
        )
        return None
    damaged = f"{source}: the model file is damaged (its content does not match the checksum recorded at export)"
    digest = document.get(DIGEST_KEY)
    if has_scheme and document[INTEGRITY_KEY] != INTEGRITY_SCHEME:
        raise ModelError(
            f"{source}: integrity scheme {str(document[INTEGRITY_KEY])[:80]!r} is unknown to this acmon: the file is "
            f"damaged or made by a newer acmon: {DAMAGED_HINT}, or upgrade acmon"
        )
    if not (has_digest and has_scheme) or not isinstance(digest, str):
        raise ModelError(f"{damaged}: its integrity record is incomplete; {DAMAGED_HINT}")
    start, length = span
    at = digest_position(data[start : start + length], digest)
    if at is None or content_digest(data, start + at) != digest:
        raise ModelError(f"{damaged}; {DAMAGED_HINT}")
    return digest


def read_document(data: bytes, source: str) -> tuple[tuple[int, int], dict[str, Any], str | None]:
    """The acmon metadata of a model file's bytes, its integrity checked.

    Returns:
        ((offset, length) of the metadata buffer, the metadata document, verified digest or None for an
        older model without one).

    Raises:
        ModelError: no acmon metadata, metadata unreadable or out of bounds, or the file is damaged.
    """
    span = metadata_spans(data, source).get(METADATA_NAME)
    if span is None:
        raise ModelError(
            f"{source}: TFLite model without acmon metadata (feature parameters, threshold); "
            "export it with python -m training fit"
        )
    start, length = span
    document = parse_document(data[start : start + length], source)
    return span, document, verify_integrity(data, span, document, source)


def load_metadata(
    path: str | Path, trusted_keys: Mapping[str, bytes] | None = None
) -> tuple[Path, bytes, ModelMetadata]:
    """Read a model file and its acmon metadata, checking the file's recorded checksum.

    Returns:
        (resolved path, model bytes, metadata).

    Raises:
        ModelError: the file is missing, not a regular file, too large, not TFLite, damaged, or carries
            no valid acmon metadata.
    """
    p, data = read_model_bytes(path, trusted_keys)
    _, document, digest = read_document(data, str(p))
    return p, data, ModelMetadata.from_document(document, str(p)).model_copy(update={"content_sha256": digest})


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

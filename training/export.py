"""Full-integer int8 TFLite export with the acmon metadata embedded in the model file."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterable
from typing import Any

import numpy as np

from device.analysis.metadata import METADATA_SCHEMA_VERSION, ModelMetadata
from device.analysis.model_file import (
    DIGEST_KEY,
    DIGEST_PLACEHOLDER,
    INTEGRITY_KEY,
    INTEGRITY_SCHEME,
    METADATA_NAME,
    content_digest,
    digest_position,
    embedded_metadata,
    metadata_spans,
    read_document,
)

from .tf_setup import import_tensorflow

logger = logging.getLogger(__name__)


def convert_int8(model, representative_patches: np.ndarray) -> bytes:
    """Quantize a Keras model to full-integer int8 TFLite (int8 input and output).

    The representative patches set the activation ranges; they must be
    normalized patches from the same front end the device runs, or the
    int8 input scale will not fit what the device feeds in.

    Args:
        model: a keras.Model built with batch_size=1.
        representative_patches: float32 (n, n_frames, n_mels); a few hundred suffice.

    Returns:
        The .tflite FlatBuffer.
    """
    tf = import_tensorflow()

    def representative_dataset() -> Iterable[list[np.ndarray]]:
        for patch in representative_patches:
            yield [patch[None, :, :, None].astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    with quiet_native_output():
        return bytes(converter.convert())


@contextlib.contextmanager
def quiet_native_output():
    """Capture what the converter prints to file descriptors 1 and 2 (C++ logs, saved-model chatter).

    The converter writes hundreds of lines a user cannot act on; they are kept
    out of the terminal and logged at DEBUG, or shown in full if conversion fails.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        failed = False
        try:
            with contextlib.redirect_stdout(sys.stderr):
                yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            text = sink.read().decode(errors="replace")
            if failed:
                sys.stderr.write(text)
            else:
                logger.debug("converter output:\n%s", text)


def embed_metadata(
    tflite_bytes: bytes, metadata: ModelMetadata | dict[str, Any], buffers: dict[str, bytes] | None = None
) -> bytes:
    """Store a JSON document in the model's FlatBuffer metadata under METADATA_NAME (and raw buffers by name).

    An existing entry of the same name is replaced, so the threshold can be
    recalibrated without touching the weights. The document gets the file's
    content checksum (device/analysis/model_file.py, DIGEST_KEY), which the device
    verifies at load: any byte changed after this point is refused. A
    checksum already in the document (from the model being re-embedded) is
    replaced by the new file's.

    Args:
        metadata: the model's ModelMetadata (a raw document only in tests that write hostile ones).
        buffers: further named metadata buffers (the Gaussian ensemble's scorer statistics).

    Returns:
        The .tflite FlatBuffer with the metadata and its checksum.
    """
    import_tensorflow()
    from tensorflow.lite.python import schema_py_generated as schema_fb  # noqa: PLC0415
    from tensorflow.lite.tools import flatbuffer_utils  # noqa: PLC0415

    # The digest goes in last, over a placeholder of the same length: the FlatBuffer is laid out once
    # and writing the digits moves no offset.
    document = {
        "schema_version": METADATA_SCHEMA_VERSION,
        **(metadata.document() if isinstance(metadata, ModelMetadata) else metadata),
        INTEGRITY_KEY: INTEGRITY_SCHEME,
        DIGEST_KEY: DIGEST_PLACEHOLDER,
    }
    payload = json.dumps(document, sort_keys=True, indent=1).encode()
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite_bytes))
    model.metadata = model.metadata or []
    for name, data in {METADATA_NAME: payload, **(buffers or {})}.items():
        existing = [m for m in model.metadata if _name(m) == name]
        if existing:
            buffer = model.buffers[existing[0].buffer]
        else:
            buffer = schema_fb.BufferT()
            model.buffers.append(buffer)
            entry = schema_fb.MetadataT()
            entry.name = name
            entry.buffer = len(model.buffers) - 1
            model.metadata.append(entry)
        buffer.data = np.frombuffer(data, dtype=np.uint8)
    out = bytearray(flatbuffer_utils.convert_object_to_bytearray(model))
    start, length = metadata_spans(bytes(out), "exported model")[METADATA_NAME]
    at = digest_position(bytes(out[start : start + length]), DIGEST_PLACEHOLDER)
    if at is None:
        raise ValueError(f"the metadata document must hold {DIGEST_KEY!r} once, at its top level")
    at += start
    out[at : at + len(DIGEST_PLACEHOLDER)] = content_digest(bytes(out), at).encode()
    out = bytes(out)  # type: ignore[assignment]  # frozen: what is returned and checked below
    # Read it back with the device's own reader: what we wrote is what the device will see, checksum included.
    # (Compared as JSON text: a NaN in the document is equal to itself there.)
    _, stored_document, digest = read_document(out, "exported model")
    assert digest is not None
    assert json.dumps(stored_document, sort_keys=True) == json.dumps({**document, DIGEST_KEY: digest}, sort_keys=True)
    stored = embedded_metadata(out, "exported model")
    assert all(stored[name] == data for name, data in (buffers or {}).items())
    return out


def _name(entry) -> str:
    name = entry.name
    return name.decode() if isinstance(name, bytes) else str(name)

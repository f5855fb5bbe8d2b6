"""Remove acmon's metadata buffers from a .tflite FlatBuffer for firmware flash, leaving the graph as it was.

An acmon model file carries its metadata (the 'acmon' JSON document and, for the Gaussian ensemble, the
scorer's statistics in 'acmon_scorer') as FlatBuffer metadata buffers, which TFLite Micro never reads: for the
default model they are most of the file. Firmware gets the graph without them; export-c writes the scorer's
statistics as C (export_scorer.py) and the metadata's constants into the model header.

The FlatBuffer is unpacked and packed again with the TFLite schema's generated object API, the one
training/export.py uses to write the metadata in: LiteRT's copy of the schema (ai-edge-litert, which export-c
needs anyway to read the model), else TensorFlow's. Nothing else changes: the tensors, operators, their
buffers' bytes and TensorFlow's own metadata ('min_runtime_version', 'CONVERSION_METADATA') are kept, and
buffer indices are renumbered where a dropped buffer sat before others.
"""

from __future__ import annotations

from types import ModuleType

from device.analysis.model_file import TFLITE_IDENTIFIER

from .c_source import ExportError

ACMON_PREFIX = b"acmon"  # device/analysis/model_file.py METADATA_NAME, SCORER_NAME


def tflite_schema() -> ModuleType:
    """The TFLite schema's generated Python module (LiteRT's, else TensorFlow's, imported only then).

    Raises:
        ExportError: neither is installed.
    """
    try:
        from ai_edge_litert import schema_py_generated  # noqa: PLC0415

        return schema_py_generated
    except ImportError:
        pass
    try:
        from training.tf_setup import import_tensorflow  # noqa: PLC0415

        import_tensorflow()  # quiet TensorFlow's logging before the import
        from tensorflow.lite.python import schema_py_generated as tf_schema  # noqa: PLC0415

        return tf_schema
    except ImportError:
        raise ExportError(
            "removing the metadata needs the TFLite schema of ai-edge-litert or TensorFlow: pip install "
            "ai-edge-litert, or pass --keep-metadata"
        ) from None


def _name(entry) -> bytes:
    name = entry.name
    return name if isinstance(name, bytes) else str(name).encode()


def strip_acmon_metadata(data: bytes, source: str) -> tuple[bytes, int]:
    """The model without acmon's metadata buffers.

    Args:
        data: a .tflite file's bytes (an acmon model, already checked).
        source: the file's name, for messages.

    Returns:
        (the FlatBuffer without them, how many bytes of metadata were dropped).

    Raises:
        ExportError: the schema is not installed, or the model is one this cannot strip safely (buffers
            stored outside the FlatBuffer, or a tensor that uses an acmon metadata buffer).
    """
    import flatbuffers  # type: ignore[import-untyped]  # noqa: PLC0415 -- ai-edge-litert and TensorFlow need it

    schema = tflite_schema()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    buffers = model.buffers or []
    if any(b.offset > 1 for b in buffers):  # the > 2 GB layout: data after the FlatBuffer, by offset
        raise ExportError(f"{source}: buffers stored outside the FlatBuffer; pass --keep-metadata")
    entries = model.metadata or []
    dropped = {int(e.buffer) for e in entries if _name(e).startswith(ACMON_PREFIX)}
    tensors = [t for subgraph in model.subgraphs or [] for t in subgraph.tensors or []]
    if any(int(t.buffer) in dropped for t in tensors) or 0 in dropped:
        raise ExportError(f"{source}: an acmon metadata buffer is also a tensor's: not an acmon model; re-export it")
    if any(i >= len(buffers) for i in dropped):
        raise ExportError(f"{source}: metadata names buffer {max(dropped)} of {len(buffers)}; re-export the model")
    kept = [i for i in range(len(buffers)) if i not in dropped]
    new_index = {old: new for new, old in enumerate(kept)}
    saved = sum(0 if buffers[i].data is None else len(buffers[i].data) for i in dropped)
    model.buffers = [buffers[i] for i in kept]
    for tensor in tensors:
        tensor.buffer = new_index[int(tensor.buffer)]
    model.metadata = [e for e in entries if int(e.buffer) not in dropped] or None
    for e in model.metadata or []:
        e.buffer = new_index[int(e.buffer)]
    if model.metadataBuffer is not None:  # deprecated list of metadata buffer indices
        model.metadataBuffer = [new_index[int(i)] for i in model.metadataBuffer if int(i) not in dropped] or None
    builder = flatbuffers.Builder(len(data))
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    return bytes(builder.Output()), saved

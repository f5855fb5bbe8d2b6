"""What a model path may point at, and the bounds on the metadata JSON, checked before anything trusts the file.

No model is needed here: every case is refused before the FlatBuffer is read (tests/integration/
test_model_integrity.py damages real models). Each must be one ModelError line naming the path, read
nothing unbounded and never block.
"""

from __future__ import annotations

import os
import socket
import struct
import threading

import pytest

from device.analysis.model_file import (
    METADATA_MAX_BYTES,
    METADATA_MAX_DEPTH,
    MODEL_MAX_BYTES,
    json_depth,
    load_metadata,
    parse_document,
    read_model_bytes,
)
from device.errors import ModelError

HEADER = struct.pack("<I", 16) + b"TFL3"  # a FlatBuffer root offset and the TFLite identifier


def refused(path, *needles: str) -> str:
    with pytest.raises(ModelError) as info:
        load_metadata(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    for needle in needles:
        assert needle in message, message
    return message


def test_dev_zero_is_refused_without_reading_it():
    """`model.path: /dev/zero` read 2.6 GB before failing."""
    refused("/dev/zero", "not a regular file (a character device)", "give the path of a .tflite model")


def test_a_symlink_to_a_device_is_refused(tmp_path):
    link = tmp_path / "model.tflite"
    link.symlink_to("/dev/zero")
    refused(link, "not a regular file (a character device)")


def test_a_symlink_to_a_model_is_followed(tmp_path):
    """Deployments point model.tflite at a versioned file; the link is the operator's choice."""
    target = tmp_path / "model-v2.tflite"
    target.write_bytes(HEADER + bytes(32))
    (tmp_path / "model.tflite").symlink_to(target.name)
    assert read_model_bytes(tmp_path)[1] == target.read_bytes()


def test_a_directory_where_the_model_should_be_is_refused(tmp_path):
    (tmp_path / "model.tflite").mkdir()
    refused(tmp_path, "model.tflite: not a regular file (a directory)")


def test_a_folder_without_a_model_names_the_file_it_looked_for(tmp_path):
    refused(tmp_path, "model.tflite: no such model file", "python -m training fit")


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "model.tflite"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def load():
        try:
            load_metadata(fifo)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():  # release the blocked open() so the thread ends, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(10)
        pytest.fail("loading a FIFO blocked until a writer came")
    assert len(outcome) == 1 and isinstance(outcome[0], ModelError), outcome
    assert "not a regular file (a FIFO)" in str(outcome[0])


def test_a_socket_is_refused(tmp_path):
    path = tmp_path / "model.tflite"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        refused(path, "not a regular file (a socket)")


def test_a_100_mib_sparse_file_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "model.tflite"
    with open(path, "wb") as f:
        f.write(HEADER)
        f.truncate(100 * 1024 * 1024)
    refused(path, "100.0 MiB is larger than a model file may be (64 MiB)", "check the path points at the model")


def test_the_size_bound_is_inclusive(tmp_path):
    path = tmp_path / "model.tflite"
    with open(path, "wb") as f:
        f.write(HEADER)
        f.truncate(MODEL_MAX_BYTES)
    assert len(read_model_bytes(path)[1]) == MODEL_MAX_BYTES
    with open(path, "r+b") as f:
        f.truncate(MODEL_MAX_BYTES + 1)
    refused(path, "larger than a model file may be")


@pytest.mark.parametrize(
    "content, needle",
    [
        pytest.param(b"", "not a TFLite model", id="empty"),
        pytest.param(b"PK\x03\x04 a zip archive, not a model" * 4, "not a TFLite model", id="zip"),
        pytest.param(b"model:\n  path: x\n", "not a TFLite model", id="yaml"),
        pytest.param(struct.pack("<I", 0xFFFFFF00) + b"TFL3" + bytes(64), "corrupt TFLite file", id="root-past-end"),
        pytest.param(HEADER + bytes(64), "TFLite model without acmon metadata", id="zeroed-tables"),
    ],
)
def test_a_file_that_is_not_an_acmon_model_is_refused(tmp_path, content, needle):
    path = tmp_path / "model.tflite"
    path.write_bytes(content)
    refused(path, needle)


# --- metadata JSON bounds ---------------------------------------------------------------------------------


def test_json_depth_ignores_brackets_in_strings():
    assert json_depth(b'{"a": [1, {"b": "[[[{{{"}], "c": "\\"[["}') == 3
    assert json_depth(b"[]") == 1 and json_depth(b"3") == 0 and json_depth(b"") == 0
    assert json_depth(b'"unterminated [[[[') == 4  # not JSON: counted, and the parser refuses it next


@pytest.mark.parametrize(
    "raw, needle",
    [
        pytest.param(b'{"x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested 5001 deep (at most 32)", id="nested-5000"),
        pytest.param(b"[" * 5000, "nested 5000 deep", id="unclosed-5000"),
        pytest.param(b'{"x": "' + b"a" * METADATA_MAX_BYTES + b'"}', "larger than the 1 MiB", id="over-1-MiB"),
        pytest.param(b'{"threshold": ' + b"7" * 5000 + b"}", "not valid JSON", id="5000-digit-number"),
        pytest.param(b"\xff\xfe{}", "not valid JSON", id="not-utf-8"),
        pytest.param(b'{"a": 1', "not valid JSON", id="truncated"),
        pytest.param(b"[1, 2, 3]", "not a JSON object", id="array"),
    ],
)
def test_metadata_json_out_of_bounds_is_one_line_error(raw, needle):
    with pytest.raises(ModelError) as info:
        parse_document(raw, "m.tflite")
    assert str(info.value).startswith("m.tflite: ") and "\n" not in str(info.value)
    assert needle in str(info.value)


def test_metadata_json_at_the_depth_bound_is_read():
    raw = b'{"x": ' + b"[" * (METADATA_MAX_DEPTH - 1) + b"]" * (METADATA_MAX_DEPTH - 1) + b"}"
    assert "x" in parse_document(raw, "m.tflite")


# --- the typed metadata ---------------------------------------------------------------------------------------


def test_metadata_document_round_trips_and_keeps_unknown_keys():
    from device.analysis.features import FeatureParams
    from device.analysis.metadata import ModelMetadata, ScorerRecord

    meta = ModelMetadata(
        name="pump",
        version="v1",
        feature_params=FeatureParams(),
        score_kind="gaussian_ensemble",
        threshold=2.5,
        scorer=ScorerRecord(sha256="ab" * 32, members=("window",), context_windows=8),
    )
    document = meta.document()
    assert document["feature_params"] == FeatureParams().to_dict() and "content_sha256" not in document
    again = ModelMetadata.from_document({**document, "from_a_newer_trainer": {"x": 1}}, "m.tflite")
    assert again.scorer == meta.scorer and again.feature_params == meta.feature_params
    assert again.document()["from_a_newer_trainer"] == {"x": 1}  # kept, not refused: same schema version
    assert meta.replaced(threshold=3.0).threshold == 3.0
    with pytest.raises(ValueError):
        meta.replaced(threshold=-1.0)


def test_metadata_of_another_schema_version_is_refused_by_name():
    from device.analysis.metadata import ModelMetadata

    with pytest.raises(ModelError, match="schema_version 2 is not 1; this acmon cannot read it: upgrade acmon"):
        ModelMetadata.from_document({"schema_version": 2}, "m.tflite")

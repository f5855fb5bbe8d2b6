"""Hostile model files: damage anywhere in a model acmon wrote is refused at load.

Every case is a real int8 model (the session's `trained_model`) damaged the way a copy, a card or a
crafted file can damage it, and each must end in one ModelError line naming the file and what to do,
never a traceback, a hang or a silently different model. What the path points at (devices, FIFOs,
folders) and the metadata JSON bounds are tested without a model in tests/unit/test_model_file.py.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.analysis.features import extract_patch
from device.analysis.inference import AnomalyModel
from device.analysis.model_file import METADATA_NAME, SCORER_NAME, embedded_metadata, load_metadata
from device.errors import ModelError
from tests.helpers import run_cli

pytestmark = pytest.mark.slow

DAMAGED = "copy the model again or re-export it"


# --- builders: real models, damaged ---------------------------------------------------------------------


class ModelBytes(bytes):
    """A model file's bytes that Hypothesis reports by size, not by 160 KiB of content."""

    def __repr__(self) -> str:
        return f"<model.tflite, {len(self)} bytes>"


@pytest.fixture(scope="module")
def model_bytes(trained_model) -> bytes:
    return ModelBytes((trained_model / "model.tflite").read_bytes())


def span_of(data: bytes, name: str) -> tuple[int, int]:
    """(offset, length) of a named metadata buffer in the file."""
    raw = embedded_metadata(data, "model")[name]
    return data.index(raw), len(raw)


def weights_span(data: bytes) -> tuple[int, int]:
    """(offset, length) of the largest weight buffer (the Gaussian graph's whitening matrix)."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    named = {m.buffer for m in model.metadata}
    sizes = [(len(b.data), i) for i, b in enumerate(model.buffers) if b.data is not None and i not in named]
    length, index = max(sizes)
    raw = bytes(model.buffers[index].data)
    assert data.count(raw) == 1
    return data.index(raw), length


def legacy(data: bytes) -> bytes:
    """The same model as acmon wrote it before it recorded a checksum: the metadata without the integrity keys.

    The JSON is rewritten in place, padded with spaces to its old length, so every offset stays put.
    """
    start, length = span_of(data, METADATA_NAME)
    document = json.loads(data[start : start + length])
    document.pop("content_sha256", None)
    document.pop("integrity", None)
    text = json.dumps(document, sort_keys=True, indent=1).encode()
    assert len(text) <= length
    return data[:start] + text.ljust(length) + data[start + length :]


def with_raw_metadata(data: bytes, raw: bytes) -> bytes:
    """The model with its acmon metadata buffer replaced by arbitrary bytes (what a crafted file could carry)."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    for entry in model.metadata:
        name = entry.name.decode() if isinstance(entry.name, bytes) else entry.name
        if name == METADATA_NAME:
            model.buffers[entry.buffer].data = np.frombuffer(raw, dtype=np.uint8)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def metadata_text(data: bytes) -> str:
    start, length = span_of(data, METADATA_NAME)
    return data[start : start + length].decode()


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "model.tflite"
    path.write_bytes(data)
    return path


def assert_refused(path: Path, *needles: str) -> str:
    with pytest.raises(ModelError) as info:
        AnomalyModel(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    for needle in needles:
        assert needle in message, message
    return message


# --- damage inside a model acmon wrote --------------------------------------------------------------------


def test_export_records_a_checksum_the_device_verifies(model_bytes, trained_model):
    digest = json.loads(metadata_text(model_bytes))["content_sha256"]
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    _, _, meta = load_metadata(trained_model)
    assert meta.content_sha256 == digest
    assert AnomalyModel(trained_model).metadata.content_sha256 == digest


def test_2000_zeroed_bytes_in_the_middle_are_refused(model_bytes, tmp_path):
    """The measured bug: 2000 bytes zeroed in the middle loaded and ran."""
    middle = len(model_bytes) // 2
    data = model_bytes[: middle - 1000] + bytes(2000) + model_bytes[middle + 1000 :]
    assert_refused(write(tmp_path, data), "damaged", DAMAGED)


def test_a_flipped_byte_in_the_weights_is_refused(model_bytes, tmp_path):
    start, length = weights_span(model_bytes)
    assert_refused(write(tmp_path, flip(model_bytes, start + length // 2)), "damaged", DAMAGED)


def test_a_flipped_byte_in_the_metadata_is_refused(model_bytes, tmp_path):
    """A changed digit of the threshold still parses as JSON: only the checksum can tell."""
    start, _ = span_of(model_bytes, METADATA_NAME)
    text = metadata_text(model_bytes)
    digit = re.search(r'"threshold": \d', text).end() - 1
    data = bytearray(model_bytes)
    data[start + digit] = ord("9") if text[digit] != "9" else ord("8")
    assert_refused(write(tmp_path, bytes(data)), "damaged", DAMAGED)


def test_a_flipped_byte_in_the_recorded_checksum_is_refused(model_bytes, tmp_path):
    start, _ = span_of(model_bytes, METADATA_NAME)
    at = start + metadata_text(model_bytes).index('"content_sha256": "') + len('"content_sha256": "')
    data = bytearray(model_bytes)
    data[at] = ord("a") if data[at] != ord("a") else ord("b")
    assert_refused(write(tmp_path, bytes(data)), "damaged", DAMAGED)


def test_a_renamed_checksum_key_is_refused_not_taken_for_an_old_model(model_bytes, tmp_path):
    """One damaged byte must not turn a checked model into an unchecked 'old' one."""
    start, _ = span_of(model_bytes, METADATA_NAME)
    at = start + metadata_text(model_bytes).index('"content_sha256"') + 1
    assert_refused(write(tmp_path, flip(model_bytes, at)), "damaged", DAMAGED)


def test_a_flipped_byte_in_the_scorer_statistics_is_refused(model_bytes, tmp_path):
    start, length = span_of(model_bytes, SCORER_NAME)
    assert_refused(write(tmp_path, flip(model_bytes, start + length // 2)), "damaged", DAMAGED)


def test_a_truncated_model_is_refused(model_bytes, tmp_path):
    for keep in (len(model_bytes) // 2, len(model_bytes) - 1, 12):
        assert_refused(write(tmp_path, model_bytes[:keep]))


def test_appended_garbage_is_refused(model_bytes, tmp_path):
    assert_refused(write(tmp_path, model_bytes + b"\x00garbage" * 100), "damaged", DAMAGED)


def test_re_exporting_recomputes_the_checksum(model_bytes, tmp_path):
    """Recalibration re-embeds the metadata of a model that already has a checksum: the new one is right."""
    from training.export import embed_metadata

    document = json.loads(metadata_text(model_bytes))
    document.pop("schema_version")
    document["threshold"] = 2 * document["threshold"]
    path = write(tmp_path, embed_metadata(model_bytes, document))
    model = AnomalyModel(path)
    assert model.metadata.content_sha256 not in (None, json.loads(metadata_text(model_bytes))["content_sha256"])
    assert model.threshold == document["threshold"]


# --- models written before the checksum -----------------------------------------------------------------


def test_a_model_without_a_checksum_loads_with_a_warning(model_bytes, tmp_path, caplog):
    path = write(tmp_path, legacy(model_bytes))
    with caplog.at_level(logging.WARNING, logger="device.analysis.model_file"):
        model = AnomalyModel(path)
    assert model.metadata.content_sha256 is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(path) in w and "cannot be checked" in w for w in warnings), warnings
    patch = extract_patch(np.zeros(model.params.window_samples, np.float32) + 0.01, model.params)
    assert model.score(patch) == AnomalyModel(write(tmp_path, model_bytes)).score(patch)


def test_old_models_keep_the_scorer_statistics_check(model_bytes, tmp_path):
    """Without the file checksum, the scorer's own SHA-256 still catches damage to its statistics."""
    data = legacy(model_bytes)
    start, length = span_of(data, SCORER_NAME)
    assert_refused(write(tmp_path, flip(data, start + length // 2)), "scorer statistics do not match")


def test_inspect_and_verify_report_the_check(model_bytes, tmp_path):
    checked = write(tmp_path, model_bytes)
    out = run_cli("firmware_tools", "inspect", str(checked))
    assert out.returncode == 0, out.stderr
    assert re.search(r"integrity   content SHA-256 verified \([0-9a-f]{16}", out.stdout), out.stdout
    out = run_cli("firmware_tools", "inspect", "--json", str(checked))
    assert json.loads(out.stdout)["integrity"] == "verified", out.stdout
    out = run_cli("firmware_tools", "verify", str(checked))
    assert out.returncode == 0 and "content checksum verified" in out.stdout, out.stderr

    old = tmp_path / "old"
    old.mkdir()
    write(old, legacy(model_bytes))
    out = run_cli("firmware_tools", "inspect", str(old))
    assert out.returncode == 0 and "integrity   not recorded" in out.stdout, out.stdout + out.stderr
    assert "cannot be checked" in out.stderr
    out = run_cli("firmware_tools", "verify", str(old))
    assert out.returncode == 0 and "no content checksum" in out.stdout, out.stdout + out.stderr

    damaged = tmp_path / "damaged"
    damaged.mkdir()
    start, length = weights_span(model_bytes)
    write(damaged, flip(model_bytes, start + length // 2))
    for command in ("inspect", "verify"):
        out = run_cli("firmware_tools", command, str(damaged))
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
        errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "damaged" in errors[0], out.stderr


# --- what the path points at -----------------------------------------------------------------------------


def test_a_100_mib_sparse_file_is_refused_before_it_is_read(model_bytes, tmp_path):
    path = write(tmp_path, model_bytes)
    with open(path, "r+b") as f:
        f.truncate(100 * 1024 * 1024)
    assert_refused(path, "100.0 MiB is larger than a model file may be (64 MiB)")


def test_cli_errors_are_one_line(tmp_path, model_bytes):
    fifo = tmp_path / "fifo.tflite"
    os.mkfifo(fifo)
    middle = len(model_bytes) // 2
    zeroed = write(tmp_path, model_bytes[: middle - 1000] + bytes(2000) + model_bytes[middle + 1000 :])
    for model, needle in (
        ("/dev/zero", "not a regular file"),
        (str(fifo), "not a regular file"),
        (str(zeroed), "damaged"),
    ):
        out = run_cli("device", "score", "--model", model, str(tmp_path), timeout=60)
        assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
        errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and needle in errors[0] and model in errors[0], out.stderr


# --- crafted metadata -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, needle",
    [
        pytest.param(b'{"x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested 5001 deep", id="nested-5000"),
        pytest.param(b'{"x": "' + b"a" * (2 * 1024 * 1024) + b'"}', "larger than", id="2-MiB"),
        pytest.param(b'{"threshold": ' + b"7" * 5000 + b"}", "not valid JSON", id="5000-digit-number"),
        pytest.param(b"\xff\xfe not utf-8", "not valid JSON", id="not-utf-8"),
        pytest.param(b"[1, 2, 3]", "not a JSON object", id="array"),
        pytest.param(
            b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', "schema_version", id="brackets-in-a-string"
        ),
    ],
)
def test_crafted_metadata_is_one_line_error(model_bytes, tmp_path, raw, needle):
    assert_refused(write(tmp_path, with_raw_metadata(legacy(model_bytes), raw)), needle)


@pytest.mark.parametrize(
    "change, needle",
    [
        pytest.param({"threshold": float("inf")}, "positive finite number", id="threshold-inf"),
        pytest.param({"threshold": True}, "positive finite number", id="threshold-bool"),
        pytest.param({"labels": 5}, "labels", id="labels-number"),
        pytest.param({"feature_params": [1, 2]}, "feature_params", id="feature-params-list"),
        pytest.param({"score_kind": ["gaussian_ensemble"]}, "score_kind", id="score-kind-list"),
        pytest.param({"threshold": "0.5"}, "positive finite number", id="threshold-string"),
        pytest.param({"labels": ["normal", 3]}, "labels.1", id="labels-not-names"),
        pytest.param({"name": {"a": 1}}, "metadata name:", id="name-mapping"),
        pytest.param({"feature_params": {"n_fft": "512"}}, "n_fft", id="feature-param-string"),
        pytest.param({"scorer": {"members": ["window"]}}, "scorer.sha256", id="scorer-without-digest"),
        pytest.param({"scorer": {"sha256": "x", "members": [], "context_windows": 0}}, "context_windows", id="ctx-0"),
        pytest.param({"training": [1]}, "metadata training:", id="training-list"),
    ],
)
def test_invalid_metadata_values_are_one_line_errors(model_bytes, tmp_path, change, needle):
    """Metadata the checksum vouches for (written by export) whose values this device cannot use."""
    from training.export import embed_metadata

    document = json.loads(metadata_text(model_bytes))
    document.pop("schema_version")
    assert_refused(write(tmp_path, embed_metadata(model_bytes, {**document, **change})), needle)


def test_an_unknown_integrity_scheme_is_refused(model_bytes, tmp_path):
    document = json.loads(metadata_text(model_bytes))
    raw = json.dumps({**document, "integrity": "sha512 of everything"}, sort_keys=True, indent=1).encode()
    assert_refused(write(tmp_path, with_raw_metadata(model_bytes, raw)), "integrity scheme")


# --- fuzzing ------------------------------------------------------------------------------------------------


mutations = st.one_of(
    st.tuples(
        st.just("set"),
        st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=4),
    ),
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True)),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("insert"), st.tuples(st.floats(0, 1), st.binary(min_size=1, max_size=16))),
)


def mutate(data: bytes, mutation) -> bytes:
    kind, arg = mutation
    out = bytearray(data)
    if kind == "set":
        for where, value in arg:
            out[int(where * len(out))] = value
    elif kind == "truncate":
        del out[int(arg * len(out)) :]
    elif kind == "append":
        out += arg
    else:
        where, blob = arg
        out[int(where * len(out)) : int(where * len(out))] = blob
    return bytes(out)


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutation=mutations)
def test_any_change_to_a_checked_model_is_refused(model_bytes, scratch, mutation):
    """Load succeeds with the identical model (the mutation changed nothing) or raises one ModelError line."""
    data = mutate(model_bytes, mutation)
    path = write(scratch, data)
    if data == model_bytes:
        model = AnomalyModel(path)
        assert model.sha256 == AnomalyModel(write(scratch, model_bytes)).sha256
        return
    with pytest.raises(ModelError) as info:
        AnomalyModel(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutation=mutations, in_metadata=st.booleans())
def test_the_metadata_reader_survives_any_damage_to_an_old_model(model_bytes, mutation, in_metadata):
    """Models without a checksum: the device's own FlatBuffer and JSON reader returns or raises ModelError.

    (It does not hand the damaged graph to the TFLite runtime: without a checksum, a changed weight loads
    as a different model, which is why exports now carry one.) Half the mutations aim at the metadata JSON.
    """
    old = legacy(model_bytes)
    if in_metadata and mutation[0] == "set":
        start, length = span_of(old, METADATA_NAME)
        mutation = ("set", [((start + where * length) / len(old), value) for where, value in mutation[1]])
    data = mutate(old, mutation)
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder), data)
        try:
            load_metadata(path)
        except ModelError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc)

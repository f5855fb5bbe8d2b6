"""Fixtures of the ARM check: the host's reference values and the measured differences, written for the host to read."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from device.analysis.inference import AnomalyModel
from tests.arm.reference import INT8_CLIP, MAX_CLIPS, REFERENCE_NAME

RUNTIMES = ("ai_edge_litert", "tflite_runtime")  # the host records both: the 64-bit Pi's and the 32-bit Pi's
MAX_REFERENCE_BYTES = 20_000_000  # the host writes about 0.5 MB; anything far larger is not ours


def _environment(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        # A failure, not a skip: this folder runs only when scripts/pi_check.sh calls it, which sets these.
        pytest.fail(f"{name} is not set: tests/arm runs inside an ARM root through scripts/pi_check.sh (make pi-check)")
    return value


@pytest.fixture(scope="session")
def check_dir() -> Path:
    """The folder the host filled: reference.json, model/, clips/; the measurements are written back to it."""
    path = Path(_environment("ACMON_ARM_CHECK_DIR"))
    assert (path / REFERENCE_NAME).is_file(), f"{path}: no {REFERENCE_NAME}: run the check through make pi-check"
    return path


@pytest.fixture(scope="session")
def broker_address() -> tuple[str, int]:
    """HOST:PORT of the mosquitto the host runs on its loopback (the root shares the host's network)."""
    host, _, port = _environment("ACMON_ARM_BROKER").rpartition(":")
    assert host in ("127.0.0.1", "localhost") and port.isdigit(), f"ACMON_ARM_BROKER={host}:{port}: want 127.0.0.1:PORT"
    return host, int(port)


@pytest.fixture(scope="session")
def reference(check_dir: Path) -> dict[str, Any]:
    """reference.json, its shapes checked before any test reads it."""
    path = check_dir / REFERENCE_NAME
    size = path.stat().st_size
    assert size <= MAX_REFERENCE_BYTES, f"{path}: {size} bytes, more than the {MAX_REFERENCE_BYTES} a reference needs"
    data = json.loads(path.read_text())
    assert set(data) == {"platform", "golden", "int8_inputs", "runtimes"}, f"{path}: keys {sorted(data)}"
    assert data["int8_inputs"]["clip"] == INT8_CLIP, f"{path}: int8 values are of {data['int8_inputs']['clip']!r}"
    inputs = np.asarray(data["int8_inputs"]["values"])
    assert inputs.ndim == 3 and len(inputs) > 0 and inputs.min() >= -128 and inputs.max() <= 127, inputs.shape
    assert set(data["runtimes"]) == set(RUNTIMES), f"{path}: runtimes {sorted(data['runtimes'])}, want {RUNTIMES}"
    for name, runtime in data["runtimes"].items():
        outputs = np.asarray(runtime["outputs"])
        assert outputs.ndim == 2 and len(outputs) == len(inputs), f"{path}: {name} outputs {outputs.shape}"
        assert outputs.min() >= -128 and outputs.max() <= 127, f"{path}: {name} outputs are not int8"
        assert 0 < len(runtime["scores"]) <= MAX_CLIPS, f"{path}: {len(runtime['scores'])} {name} score rows"
    for name, values in data["golden"].items():
        assert np.asarray(values).ndim == 2, f"{path}: golden {name} is not (n_frames, n_mels)"
    return data


@pytest.fixture(scope="session")
def model(check_dir: Path) -> AnomalyModel:
    """The host's int8 model, loaded by whichever runtime this root picks (the device's own choice)."""
    return AnomalyModel(check_dir / "model")


@pytest.fixture(scope="session")
def measured(check_dir: Path):
    """What the tests measured on this machine, written to results-<machine>.json when the session ends."""
    found: dict[str, Any] = {"machine": platform.machine()}
    yield found
    (check_dir / f"results-{platform.machine()}.json").write_text(json.dumps(found, indent=1, sort_keys=True))

"""The device inside an emulated ARM root (scripts/pi_check.sh, `make pi-check`) against the values the x86_64 host
computed in the same run: golden front-end features, int8 model inputs and outputs, clip scores and decisions, and
the daemon delivering an alert to the host's mosquitto, on the runtime a Pi of that kind uses.

The x86 suite does not collect this folder (pyproject.toml norecursedirs): it needs the host's reference values.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.arm.reference import INT8_CLIP, golden_features, int8_outputs, quantized_inputs, score_clips
from tests.helpers import REPO, Subscriber, write_config

# The runtime each Pi uses: ai-edge-litert has wheels for 64-bit ARM only; tflite-runtime 2.14 is the last build
# for 32-bit ARM (and needs numpy < 2, which Debian's python3-numpy is).
EXPECTED_RUNTIME = {"aarch64": "ai_edge_litert", "armv7l": "tflite_runtime"}
OTHER_RUNTIME = {"ai_edge_litert": "tflite_runtime", "tflite_runtime": "ai_edge_litert"}

# Tolerances, stated from what pi_check measured (results-<machine>.json, printed at its end; the README's
# "Checked on ARM (emulated)" has the figures).
# Front end, float32: FFT and matrix products round differently on each CPU. Measured: 3.8e-6 dB (aarch64),
# 2.6e-6 dB (armv7l); the normalized patch 9.5e-7 and 8.3e-7.
LOGMEL_MAX_DB = 1e-4
PATCH_MAX = 1e-5
# int8 model inputs: measured identical on both. A feature lying within 1e-6 of a rounding edge may land one
# step over, so one step on a rare value is allowed.
INPUT_MAX_STEPS = 1
INPUT_MAX_SHARE_DIFFERENT = 1e-3
# The same runtime on ARM and on x86_64, for the same int8 inputs: measured identical on both (every output
# value, every clip score to the 6 decimals device score prints). The bounds leave room for one requantization
# rounding and for the float scorer's last digits.
SAME_RUNTIME_MAX_STEPS = 1
SAME_RUNTIME_MIN_SHARE_EQUAL = 0.99
SAME_RUNTIME_SCORE_MAX_RELATIVE = 1e-4
# The other runtime on x86_64 (ai-edge-litert's XNNPACK against tflite-runtime's reference kernels): the
# tolerances of tests/integration/test_tflite_runtime.py, where the same two differ by the same amounts on x86
# (measured on armv7l: 1115 equal, 160 one step, 3 two, 1 three, 1 six of 1280; scores 0.6 % apart at most).
OTHER_RUNTIME_MAX_STEPS = 8
OTHER_RUNTIME_MIN_SHARE_WITHIN_2 = 0.99
OTHER_RUNTIME_SCORE_MAX_RELATIVE = 0.02

DAEMON_TIMEOUT_SECONDS = 600  # emulated: starting Python with numpy, pydantic and the runtime takes a while


def _steps(ours: np.ndarray, theirs: list) -> np.ndarray:
    """|ours - theirs| in int8 steps, the shapes checked."""
    other = np.asarray(theirs, dtype=np.int16)
    assert ours.shape == other.shape, (ours.shape, other.shape)
    return np.abs(ours.astype(np.int16) - other)


def _relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


@pytest.fixture(scope="session")
def machine() -> str:
    return platform.machine()


def test_runs_on_the_arm_machine_the_check_asked_for(machine, reference, measured):
    expected = os.environ.get("ACMON_ARM_EXPECT_MACHINE")
    assert machine in EXPECTED_RUNTIME, f"running on {machine}, not on an emulated ARM"
    assert machine == expected, f"running on {machine}, the check asked for {expected}"
    assert reference["platform"]["machine"] == "x86_64", reference["platform"]
    measured["platform"] = {"python": platform.python_version(), "numpy": np.__version__}


def test_the_device_picks_the_pis_runtime(machine, model, measured):
    """The runtime AnomalyModel chooses by itself (the daemon's choice), with the versions a Pi would install."""
    assert model.runtime.name == EXPECTED_RUNTIME[machine]
    if machine == "armv7l":
        with pytest.raises(ImportError):
            importlib.import_module("ai_edge_litert")  # no 32-bit ARM wheels: the choice is not by preference
        import tflite_runtime

        version = tflite_runtime.__version__
        assert version == "2.14.0"
        assert np.__version__.startswith("1."), np.__version__
    else:
        version = importlib.metadata.version("ai-edge-litert")
    assert "tensorflow" not in sys.modules
    measured["runtime"] = {"name": model.runtime.name, "version": version}


def test_golden_features_match_x86(reference, measured):
    ours = golden_features()
    differences = {}
    for name, values in ours.items():
        theirs = np.asarray(reference["golden"][name], dtype=np.float32)
        assert values.shape == theirs.shape, (name, values.shape, theirs.shape)
        differences[name] = float(np.max(np.abs(values - theirs)))
    measured["golden_max_abs_difference"] = differences
    assert differences["logmel"] <= LOGMEL_MAX_DB and differences["logmel_default_hop"] <= LOGMEL_MAX_DB, differences
    assert differences["patch"] <= PATCH_MAX, differences
    # and the committed values, with the tolerance tests/unit/test_features.py holds every machine to
    golden = REPO / "tests" / "data" / "golden"
    np.testing.assert_allclose(ours["logmel"], np.load(golden / "machine_logmel.npy"), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(ours["patch"], np.load(golden / "machine_patch.npy"), rtol=1e-4, atol=1e-4)


def test_int8_inputs_match_x86(model, check_dir, reference, measured):
    """The whole front end up to the model: the clip's windows quantized here against the host's."""
    ours = quantized_inputs(model, check_dir / "clips" / INT8_CLIP)
    steps = _steps(ours, reference["int8_inputs"]["values"])
    measured["int8_inputs"] = {"max_steps": int(steps.max()), "share_different": float(np.mean(steps > 0))}
    assert steps.max() <= INPUT_MAX_STEPS, measured["int8_inputs"]
    assert np.mean(steps > 0) <= INPUT_MAX_SHARE_DIFFERENT, measured["int8_inputs"]


def test_int8_outputs_match_x86(machine, model, reference, measured):
    """The runtime's kernels alone: the host's int8 inputs through this root's runtime, against the same runtime's
    outputs on x86_64 and the other runtime's."""
    ours = int8_outputs(model, np.asarray(reference["int8_inputs"]["values"], dtype=np.int8))
    assert ours.dtype == np.int8
    same = _steps(ours, reference["runtimes"][model.runtime.name]["outputs"])
    other = _steps(ours, reference["runtimes"][OTHER_RUNTIME[model.runtime.name]]["outputs"])
    measured["int8_outputs"] = {
        "values": int(same.size),
        "same_runtime_max_steps": int(same.max()),
        "same_runtime_share_equal": float(np.mean(same == 0)),
        "other_runtime_max_steps": int(other.max()),
        "other_runtime_share_within_2": float(np.mean(other <= 2)),
        "other_runtime_steps_histogram": np.bincount(other.ravel()).tolist(),
    }
    assert same.max() <= SAME_RUNTIME_MAX_STEPS, measured["int8_outputs"]
    assert np.mean(same == 0) >= SAME_RUNTIME_MIN_SHARE_EQUAL, measured["int8_outputs"]
    assert other.max() <= OTHER_RUNTIME_MAX_STEPS, measured["int8_outputs"]
    assert np.mean(other <= 2) >= OTHER_RUNTIME_MIN_SHARE_WITHIN_2, measured["int8_outputs"]


def test_device_score_matches_x86(machine, model, check_dir, reference, measured):
    """`python -m device score` on every clip: the same decisions as both runtimes on x86_64, the scores within
    the bounds above; and the runtime's CPU detection worked (XNNPACK on a 64-bit Pi)."""
    clips = sorted((check_dir / "clips").glob("*.wav"))
    started = time.monotonic()
    ours, stderr = score_clips(sys.executable, check_dir / "model", clips, timeout_seconds=1800)
    seconds = time.monotonic() - started
    # Without a CPU it recognises, LiteRT runs without XNNPACK, on the reference kernels: other scores than the
    # Pi's (this is what the check's /proc/cpuinfo is for).
    assert "Error in cpuinfo" not in stderr, stderr[-2000:]
    if machine == "aarch64":
        assert "XNNPACK delegate" in stderr, stderr[-2000:]
    figures: dict = {
        "clips": len(ours),
        "anomalies": sum(row["anomaly"] for row in ours),
        "emulated_seconds": round(seconds, 1),
    }
    for kind, name in (("same", model.runtime.name), ("other", OTHER_RUNTIME[model.runtime.name])):
        theirs = {row["path"]: row for row in reference["runtimes"][name]["scores"]}
        assert [row["path"] for row in ours] == sorted(theirs), "not the clips the host scored"
        for row in ours:
            other = theirs[row["path"]]
            assert (row["windows"], row["anomaly"]) == (other["windows"], other["anomaly"]), (name, row, other)
        figures[f"{kind}_runtime_max_relative_difference"] = max(
            _relative(row["score"], theirs[row["path"]]["score"]) for row in ours
        )
    x86 = {
        name: {r["path"]: r["score"] for r in reference["runtimes"][name]["scores"]} for name in sorted(OTHER_RUNTIME)
    }
    figures["scores"] = {"columns": ["clip", "here", *sorted(x86)]}
    figures["scores"]["rows"] = [
        [row["path"], row["score"], *(x86[n][row["path"]] for n in sorted(x86))] for row in ours
    ]
    measured["scores"] = figures
    assert figures["same_runtime_max_relative_difference"] <= SAME_RUNTIME_SCORE_MAX_RELATIVE, figures
    assert figures["other_runtime_max_relative_difference"] <= OTHER_RUNTIME_SCORE_MAX_RELATIVE, figures


def test_daemon_delivers_a_start_alert_to_the_hosts_broker(machine, check_dir, broker_address, tmp_path, measured):
    """`python -m device run` replaying a fault clip, MQTT on: the host's mosquitto gets the `start` event."""
    host, port = broker_address
    device_id, site, prefix = f"pump-{machine}", "arm-check", "acmon-pi-check"
    mqtt = {
        "host": host,
        "port": port,
        "topic_prefix": prefix,
        "spool_dir": str(tmp_path / "spool"),
        "reconnect_min_seconds": 0.5,
        "reconnect_max_seconds": 2,
    }
    cfg = write_config(
        tmp_path,
        check_dir / "model",
        mqtt,
        device={"id": device_id, "site": site},
        audio={"source": "wav", "wav_paths": [str(check_dir / "clips" / INT8_CLIP)], "realtime": False},
    )
    events_topic = f"{prefix}/{site}/{device_id}/events"
    sub = Subscriber(host, port, events_topic)
    started = time.monotonic()
    try:
        out = subprocess.run(
            [sys.executable, "-m", "device", "run", "--config", str(cfg)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=DAEMON_TIMEOUT_SECONDS,
        )
        seconds = time.monotonic() - started
        assert out.returncode == 0, out.stderr[-3000:]
        assert sub.wait_for(lambda s: any(e["state"] == "start" for e in s.json_on("/events")), 30), sub.messages
        events = sub.json_on("/events")
    finally:
        sub.close()
    start = next(e for e in events if e["state"] == "start")
    assert (start["device_id"], start["site"]) == (device_id, site), start
    # The daemon's own account of the runtime it loaded: "model PATH (NAME VERSION, RUNTIME), threshold ..."
    assert f", {EXPECTED_RUNTIME[machine]}), threshold" in out.stderr, out.stderr[-3000:]
    measured["daemon"] = {"events": [e["state"] for e in events], "emulated_seconds": round(seconds, 1)}
    print(json.dumps(start))


def test_the_installed_signed_bundle_is_verified_and_scores_as_on_x86(model, check_dir, reference, measured):
    """What scripts/install.sh installed from the host's signed bundle (pi_check.sh runs it before these tests): the
    config points at it and at the trusted key, the device verifies it, scores through it as through the plain
    model on x86_64 with the same runtime, and refuses it once a byte is changed."""
    import yaml

    installed = yaml.safe_load(open("/etc/acmon/acmon.yaml"))["model"]
    assert installed["path"] == "/etc/acmon/model.acmon" and installed["trusted_keys"], installed
    verify = subprocess.run(
        [
            sys.executable,
            "-m",
            "firmware_tools",
            "verify",
            installed["path"],
            "--trusted-keys",
            installed["trusted_keys"],
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert verify.returncode == 0 and "signature by trusted key" in verify.stdout, verify.stderr[-2000:]
    clip = check_dir / "clips" / INT8_CLIP
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "device",
            "score",
            "--model",
            installed["path"],
            "--config",
            "/etc/acmon/acmon.yaml",
            str(clip),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    ours = json.loads(out.stdout)["score"]
    theirs = {r["path"]: r["score"] for r in reference["runtimes"][model.runtime.name]["scores"]}[INT8_CLIP]
    assert _relative(ours, theirs) <= SAME_RUNTIME_SCORE_MAX_RELATIVE, (ours, theirs)
    tampered = check_dir / "tampered.acmon"
    data = bytearray(open(installed["path"], "rb").read())
    data[len(data) // 2] ^= 1
    tampered.write_bytes(bytes(data))
    refused = subprocess.run(
        [sys.executable, "-m", "firmware_tools", "verify", str(tampered), "--trusted-keys", installed["trusted_keys"]],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert refused.returncode != 0 and len(errors) == 1 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
    measured["installed_bundle"] = {"score": ours, "x86_score": theirs, "tampered_refused": errors[0]}

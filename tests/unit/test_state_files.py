"""State that outlives the daemon (issue 11): where it lives, private atomic writes, the open-alarm record under
hostile bytes, calibration files in the state directory, and the guardrails on threshold changes."""

from __future__ import annotations

import json
import logging
import math
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.analysis.features import FeatureParams
from device.audio.ring_buffer import RingBuffer
from device.daemon.calibrate import CalibrationResult
from device.daemon.guardrails import (
    MAX_SHARE_ABOVE_THRESHOLD,
    check_calibration_audio,
    check_calibration_result,
    check_threshold_change,
)
from device.daemon.site_config import (
    calibration_document,
    calibration_paths,
    legacy_calibration_path,
    load_site_config,
    rollback_calibration,
    write_calibration,
)
from device.decisions.threshold import MIN_CALIBRATION_WINDOWS
from device.errors import AcmonError
from device.evidence.clips import EvidenceRecorder
from device.settings.config import calibration_directory
from device.settings.schema import AcmonConfig
from device.state import (
    PRIVATE_FILE_MODE,
    OpenAlarmFile,
    atomic_open,
    atomic_write,
    open_alarm_path,
    state_root,
    validate_record,
)

RECORD = {
    "event_id": "0123456789abcdef0123456789abcdef",
    "seq": 3,
    "start_time": "2026-01-01T00:00:00.000Z",
    "start_stream_seconds": 1.5,
    "last_stream_seconds": 4.5,
    "peak_score": 9.0,
    "mean_score": 7.5,
    "threshold": 3.9,
    "model": {"name": "pump", "version": "1"},
    "source": "microphone:default",
    "evidence": "x_0123456789ab.wav",
}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


# -- where state lives ------------------------------------------------------------------------


def test_state_root_is_systemds_state_directory_else_xdg():
    assert state_root({"STATE_DIRECTORY": "/var/lib/acmon:/var/lib/other"}) == Path("/var/lib/acmon")
    assert state_root({"XDG_STATE_HOME": "/x"}) == Path("/x/acmon")
    assert state_root({"HOME": "/home/pi"}) == Path("/home/pi/.local/state/acmon")


def test_calibration_and_open_alarms_are_keyed_by_device_identity():
    cfg = AcmonConfig.model_validate({"device": {"id": "pump-7", "site": "plant-a"}})
    env = {"STATE_DIRECTORY": "/var/lib/acmon"}
    assert calibration_directory(cfg, env) == Path("/var/lib/acmon/calibration/plant-a/pump-7")
    assert open_alarm_path("plant-a", "pump-7", env) == Path("/var/lib/acmon/alarms/plant-a/pump-7/open-alarm.json")


# -- private atomic writes --------------------------------------------------------------------


def test_private_atomic_write_is_owner_only_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        atomic_write(tmp_path / "a", b"secret", PRIVATE_FILE_MODE)
    finally:
        os.umask(old)
    assert (tmp_path / "a").read_bytes() == b"secret" and _mode(tmp_path / "a") == 0o600
    assert os.listdir(tmp_path) == ["a"]


def test_atomic_write_never_writes_through_a_planted_link(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (tmp_path / "a.tmp").symlink_to(victim)
    atomic_write(tmp_path / "a", b"new", PRIVATE_FILE_MODE)
    assert victim.read_bytes() == b"keep" and (tmp_path / "a").read_bytes() == b"new"


def test_atomic_write_on_a_missing_folder_raises_and_leaves_nothing(tmp_path):
    with pytest.raises(OSError):
        atomic_write(tmp_path / "missing" / "a", b"x")
    assert os.listdir(tmp_path) == []


def test_public_atomic_write_follows_the_umask_as_open_does(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "model.tflite", b"m")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "model.tflite") == 0o644


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "calibration.yaml"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk gone"):
        with atomic_open(target) as f:
            f.write(b"half of the new")
            raise RuntimeError("disk gone")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["calibration.yaml"]


# -- the open-alarm record --------------------------------------------------------------------


def test_open_alarm_round_trip_and_clear(tmp_path):
    record = OpenAlarmFile(tmp_path / "alarms" / "s" / "d" / "open-alarm.json")
    record.save(RECORD)
    assert record.load() == RECORD and _mode(record.path) == 0o600
    record.clear()
    record.clear()  # twice is fine
    assert record.load() is None


@pytest.mark.parametrize("make", ["symlink", "directory", "huge", "fifo"])
def test_open_alarm_record_that_is_not_a_small_regular_file_is_moved_aside(tmp_path, make, caplog):
    record = OpenAlarmFile(tmp_path / "open-alarm.json")
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps(RECORD))
    if make == "symlink":
        record.path.symlink_to(target)
    elif make == "directory":
        record.path.mkdir()
    elif make == "huge":
        record.path.write_bytes(b" " * (70 * 1024) + json.dumps(RECORD).encode())
    else:
        os.mkfifo(record.path)
    with caplog.at_level(logging.ERROR):
        assert record.load() is None
    assert not record.path.exists() and "open alarm record" in caplog.text
    assert json.loads(target.read_text()) == RECORD  # a link is never followed


_json = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=6),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.one_of(
        st.binary(max_size=300),
        _json.map(lambda v: json.dumps(v).encode()),
        st.dictionaries(st.sampled_from(sorted(RECORD)), _json, max_size=12).map(
            lambda d: json.dumps({**RECORD, **d}).encode()
        ),
    )
)
def test_open_alarm_record_fuzz_never_raises_and_only_returns_valid_records(tmp_path, data):
    record = OpenAlarmFile(tmp_path / "open-alarm.json")
    record.path.write_bytes(data)
    loaded = record.load()
    if loaded is None:
        assert not record.path.exists()  # moved aside: it never blocks the next start
    else:
        assert validate_record(loaded) == loaded
        assert all(math.isfinite(loaded[k]) for k in ("start_stream_seconds", "peak_score", "mean_score", "threshold"))
    for leftover in tmp_path.iterdir():
        leftover.unlink()


# -- calibration files in the state directory -------------------------------------------------


def _document(threshold: float) -> str:
    return calibration_document(CalibrationResult(threshold, None, {"method": "test"}), "test")


def test_calibration_goes_to_the_state_directory_owner_only(tmp_path):
    cfg = tmp_path / "etc" / "acmon.yaml"
    cfg.parent.mkdir()
    cfg.write_text("device: {id: pump-7, site: plant-a}\n")
    path = write_calibration(cfg, _document(2.5))
    assert path == calibration_paths(cfg)[0] and tmp_path / "etc" not in path.parents
    assert path.parent == Path(os.environ["XDG_STATE_HOME"]) / "acmon" / "calibration" / "plant-a" / "pump-7"
    assert _mode(path) == 0o600 and _mode(path.parent) & 0o077 == 0
    assert load_site_config(cfg).model.threshold == 2.5


def test_a_calibration_beside_the_config_is_still_read_with_a_warning_and_kept_for_rollback(tmp_path, caplog):
    cfg = tmp_path / "acmon.yaml"
    cfg.write_text("")
    legacy_calibration_path(cfg).write_text(_document(3.9))
    with caplog.at_level(logging.WARNING):
        assert load_site_config(cfg).model.threshold == 3.9
    assert "beside the config" in caplog.text
    write_calibration(cfg, _document(4.2))
    assert load_site_config(cfg).model.threshold == 4.2  # the state directory's wins
    rollback_calibration(cfg)
    assert load_site_config(cfg).model.threshold == 3.9


def test_a_folder_named_calibration_yaml_beside_the_config_is_not_a_calibration(tmp_path):
    cfg = tmp_path / "acmon.yaml"
    cfg.write_text("")
    legacy_calibration_path(cfg).mkdir()  # IsADirectoryError crashed calibrate and start-up before
    assert load_site_config(cfg).model.threshold is None


def test_an_unwritable_state_directory_is_one_line_naming_the_path(tmp_path, monkeypatch):
    (tmp_path / "state").write_text("a file, not a folder")
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    cfg = tmp_path / "acmon.yaml"
    cfg.write_text("")
    with pytest.raises(AcmonError) as err:
        write_calibration(cfg, _document(2.5))
    message = str(err.value)
    assert message.startswith("calibrate: cannot write ") and str(tmp_path / "state") in message
    assert "\n" not in message and "STATE_DIRECTORY" in message


@pytest.mark.parametrize("garbage", [b"\xff\xfe\x00garbage", b"[1, 2", b"a: [" * 3000])
def test_rollback_to_a_damaged_previous_is_one_line_and_changes_nothing(tmp_path, garbage):
    cfg = tmp_path / "acmon.yaml"
    cfg.write_text("")
    write_calibration(cfg, _document(2.5))
    current, previous = calibration_paths(cfg)
    previous.write_bytes(garbage)
    with pytest.raises(AcmonError, match="nothing was changed"):
        rollback_calibration(cfg)
    assert load_site_config(cfg).model.threshold == 2.5 and previous.read_bytes() == garbage


# -- guardrails ---------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    value=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-10, 10**400),
        st.booleans(),
        st.none(),
        st.text(max_size=5),
    ),
    calibrated=st.floats(1e-6, 1e6),
    force=st.booleans(),
)
def test_threshold_changes_are_bounded_unless_forced(value, calibrated, force):
    number = (
        value
        if isinstance(value, float)
        else float(value)
        if (isinstance(value, int) and not isinstance(value, bool) and abs(value) < 1e308)
        else None
    )
    sane = number is not None and math.isfinite(number) and number > 0  # a 400-digit integer is not a threshold
    slack = 4e-6 * calibrated  # published thresholds are rounded to 6 decimals: the band's edge may be a step off
    inside = sane and calibrated / 4 - slack <= value <= calibrated * 4 + slack
    try:
        check_threshold_change(value, calibrated, force)
    except AcmonError as exc:
        assert not (inside or (force and sane)) and "\n" not in str(exc) and str(exc).startswith("set_threshold: ")
    else:
        assert inside or (force and sane)


def test_calibration_needs_200_windows_whatever_the_force():
    check_calibration_audio(MIN_CALIBRATION_WINDOWS, 0.52)
    with pytest.raises(AcmonError, match=r"at least 200 analysis windows \(1.8 minutes"):
        check_calibration_audio(MIN_CALIBRATION_WINDOWS - 1, 0.52)
    with pytest.raises(AcmonError, match="the audio ended after 23 windows"):
        check_calibration_audio(23, 0.52, requested=False)


def test_a_calibration_that_looks_like_a_fault_is_refused_unless_forced():
    check_calibration_result(3.9, 3.9 * 4, 0.0, True)  # at the bound: allowed
    with pytest.raises(AcmonError, match=r"56.9, would be 14.6 times the current 3.9"):
        check_calibration_result(3.9, 56.9, 0.0, False)  # the finding
    busy = MAX_SHARE_ABOVE_THRESHOLD + 0.01
    with pytest.raises(AcmonError, match="scores 11% of its windows above"):
        check_calibration_result(3.9, 5.0, busy, True)  # a site calibration in force alarms on it
    check_calibration_result(3.9, 5.0, busy, False)  # a first calibration: the training model may misjudge a site
    check_calibration_result(3.9, 56.9, 1.0, True, force=True)


# -- evidence on a disk that cannot take it -----------------------------------------------------


def test_evidence_that_cannot_be_written_is_an_error_not_an_exception_and_recovers(tmp_path):
    params = FeatureParams()
    blocked = tmp_path / "evidence"
    blocked.write_text("a file where the evidence folder belongs")
    recorder = EvidenceRecorder(blocked, params, 1.0, 1.0, 10)  # used to raise: the daemon would not start
    assert recorder.error and str(blocked) in recorder.error
    ring = RingBuffer(params.window_samples, params.hop_samples, capacity_samples=int(recorder.history_seconds * 16000))
    ring.push(0.1 * __import__("numpy").ones(3 * 16000, dtype="float32"))
    recorder.start("a" * 32, 1.0, wall_time=0.0)
    assert recorder.poll(ring) == [] and recorder.failed == 1 and recorder.error
    blocked.unlink()
    recorder.start("b" * 32, 1.5, wall_time=1.0)
    (written,) = recorder.poll(ring)
    assert recorder.error is None and _mode(written) == 0o640 and _mode(blocked) == 0o750

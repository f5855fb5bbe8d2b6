"""The daemon's runner with a real int8 model: commands, mute, reload, calibration, microphone loss and return,
and the guardrails and supervision of issue 11 (bounded thresholds, guarded calibration, contained workers,
alarms that survive a restart)."""

from __future__ import annotations

import io
import json
import re
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from device.audio.sources import WavFileStream
from device.daemon.runner import Runner, WorkerFailure
from device.daemon.sdnotify import SystemdNotifier
from device.daemon.site_config import calibration_paths, load_site_config
from device.errors import AcmonError, AudioError
from tests.mqtt_support import validate

pytestmark = [pytest.mark.slow]


class Replies:
    """Collects command replies (result, error), as the MQTT dispatcher would publish them."""

    def __init__(self) -> None:
        self.got: list[tuple[dict | None, str | None]] = []

    def __call__(self, result=None, error=None) -> None:
        self.got.append((result, error))


def _config(tmp_path: Path, model: Path, extra: str = "") -> Path:
    path = tmp_path / "device.yaml"
    path.write_text(
        f"model: {{path: {model}}}\nmqtt: {{enabled: false}}\ndetector: {{cooldown_seconds: 0}}\n"
        f"evidence: {{directory: {tmp_path / 'evidence'}}}\n{extra}"
    )
    return path


def _runner(cfg_path: Path, **kwargs) -> Runner:
    return Runner(load_site_config(cfg_path), config_path=str(cfg_path), use_mqtt=False, events_out=None, **kwargs)


def _wav(demo_data: Path, label: str, index: int = 0) -> Path:
    return sorted((demo_data / "pump" / "test").glob(f"{label}_id_00_*.wav"))[index]


def _calibrate(runner: Runner, clips: list[Path], minutes: float, **args) -> tuple[dict | None, str | None]:
    """The calibrate command on these clips, as the daemon runs it; returns its one reply."""
    replies = Replies()
    runner.handle_command("calibrate", {"minutes": minutes, **args}, replies)
    for clip in clips:
        _replay(runner, clip)
        if replies.got:
            break
    assert len(replies.got) == 1, replies.got
    return replies.got[0]


def _replay(runner: Runner, path: Path):
    stream = WavFileStream(path, runner.model.params.sample_rate_hz)
    return runner.run_stream(stream.name, stream.blocks())


def test_anomaly_raises_event_with_evidence_clip(trained_model, demo_data, tmp_path):
    runner = _runner(_config(tmp_path, trained_model), evidence=True)
    out = io.StringIO()
    runner.outbox.events_out = out
    assert _replay(runner, _wav(demo_data, "anomaly")).events >= 1
    start = next(e for e in map(json.loads, out.getvalue().splitlines()) if e["state"] == "start")
    clip = tmp_path / "evidence" / start["evidence"]
    assert clip.exists() and clip.with_suffix(".png").exists()
    for path in (clip, clip.with_suffix(".png")):  # audio from the site: not for every local user
        assert stat.S_IMODE(path.stat().st_mode) & 0o007 == 0, oct(path.stat().st_mode)


def test_commands_are_queued_and_run_on_the_analysis_thread(trained_model, demo_data, tmp_path):
    runner = _runner(_config(tmp_path, trained_model))
    replies = Replies()
    caller = threading.Thread(target=runner.handle_command, args=("mute", {"minutes": 5}, replies))
    caller.start()
    caller.join(5)
    runner.handle_command("ping", {}, replies)
    assert replies.got == []  # nothing runs on the caller's thread
    assert _replay(runner, _wav(demo_data, "anomaly")).events == 0  # muted
    (mute, _), (ping, _) = replies.got
    assert mute["muted_until"].endswith("Z") and ping["state"] == "muted" and ping["model_version"]
    runner.muted_until_wall = 0.0
    runner.pipeline.mute(float("-inf"))
    assert _replay(runner, _wav(demo_data, "anomaly")).events >= 1


def test_set_threshold_takes_effect_at_once(trained_model, demo_data, tmp_path):
    runner = _runner(_config(tmp_path, trained_model))
    replies = Replies()
    runner.handle_command("set_threshold", {"value": 1e6, "force": True}, replies)
    assert _replay(runner, _wav(demo_data, "anomaly")).events == 0
    ((result, error),) = replies.got
    assert error is None and result["threshold"] == 1e6 and runner.settings.threshold == 1e6


def test_commands_queued_in_process_are_checked_by_the_same_table_as_mqtt(trained_model, tmp_path):
    """The bounds lived twice (commands.py for MQTT, the Runner for everything else) and could drift."""
    from device.mqtt.commands import parse_command

    runner = _runner(_config(tmp_path, trained_model))
    replies = Replies()
    cases = [
        ("mute", {"minutes": 5000}),
        ("mute", {}),
        ("calibrate", {"minutes": 5, "force": "yes"}),
        ("set_threshold", {"value": 5, "colour": "red"}),
        ("explode", {}),
    ]
    for name, args in cases:
        runner.handle_command(name, args, replies)
    runner.wait(0.01)
    assert all(result is None for result, _ in replies.got)
    for (name, args), (_, error) in zip(cases, replies.got):
        _, _, mqtt_error = parse_command(name, json.dumps(args).encode())
        assert mqtt_error and mqtt_error in error, (name, error, mqtt_error)


@pytest.mark.parametrize("value", [1e308, 1e-300, float("inf"), float("nan"), 0.0, -1.0, "2", True, None, 10**400])
def test_set_threshold_outside_the_calibrated_band_is_refused(trained_model, tmp_path, value):
    """`set_threshold 1e308` switched detection off: now the band is a quarter to 4 times the calibrated threshold."""
    runner = _runner(_config(tmp_path, trained_model))
    calibrated = runner.settings.threshold
    replies = Replies()
    runner.handle_command("set_threshold", {"value": value}, replies)
    runner.wait(0.01)  # commands run on the analysis thread
    ((result, error),) = replies.got
    assert result is None and error.startswith("set_threshold: ") and "\n" not in error
    assert runner.settings.threshold == calibrated
    if isinstance(value, float) and 1e6 < value < float("inf"):  # the bound every command path checks
        assert error == "set_threshold: 'value' must be > 0 and <= 1000000 (score units)"
    elif isinstance(value, float) and 0 < value < float("inf"):
        assert f"{calibrated / 4:.4g}" in error and f"{calibrated * 4:.4g}" in error and "force" in error


def test_set_threshold_inside_the_band_and_back(trained_model, tmp_path):
    runner = _runner(_config(tmp_path, trained_model))
    calibrated = runner.settings.threshold
    replies = Replies()
    for value in (calibrated * 4, calibrated / 4, calibrated * 3.9, calibrated * 50):
        runner.handle_command("set_threshold", {"value": value}, replies)
    runner.handle_command("set_threshold", {"value": calibrated * 50, "force": True}, replies)
    runner.wait(0.01)
    assert [error is None for _, error in replies.got] == [True, True, True, False, True]
    assert replies.got[2][0]["calibrated_threshold"] == pytest.approx(calibrated, rel=1e-5)
    assert runner.settings.threshold == calibrated * 50


def test_reload_keeps_old_config_and_model_when_the_new_ones_are_invalid(trained_model, demo_data, tmp_path):
    cfg = _config(tmp_path, trained_model)
    runner = _runner(cfg)
    old_threshold, old_model = runner.settings.threshold, runner.model
    good = cfg.read_text()

    def reload_with(text: str) -> tuple[dict | None, str | None]:
        cfg.write_text(text)
        replies = Replies()
        runner.handle_command("reload", {}, replies)
        _replay(runner, _wav(demo_data, "normal"))  # commands run between blocks of a stream
        (reply,) = replies.got
        return reply

    result, error = reload_with(good + "calibration: {false_alarms_per_day: -1}\n")
    assert result is None and "device.yaml" in error and "calibration.false_alarms_per_day" in error
    result, error = reload_with(good.replace(str(trained_model), str(tmp_path / "missing-model")))
    assert result is None and "missing-model" in error
    assert runner.settings.threshold == old_threshold and runner.model is old_model
    result, error = reload_with(good.replace(f"path: {trained_model}}}", f"path: {trained_model}, threshold: 2.5}}"))
    assert error is None and result["threshold"] == 2.5 and runner.settings.threshold == 2.5


def test_calibrate_command_writes_and_applies_the_site_threshold(trained_model, site_clips, tmp_path):
    cfg = _config(tmp_path, trained_model)
    runner = _runner(cfg)
    before = runner.settings.threshold
    result, error = _calibrate(runner, site_clips["normal"], 2.0)  # 231 windows of the machine running normally
    assert error is None and result["windows"] >= 231
    current, _ = calibration_paths(cfg)
    assert Path(result["file"]) == current and current.exists()
    # Under the state directory, never beside the config (read-only under ProtectSystem=strict), and private.
    assert current.parent != tmp_path and not (tmp_path / "calibration.yaml").exists()
    assert stat.S_IMODE(current.stat().st_mode) & 0o077 == 0
    assert runner.settings.threshold == pytest.approx(result["threshold"], rel=1e-5)
    assert load_site_config(cfg).model.threshold == pytest.approx(result["threshold"], rel=1e-5)
    assert result["threshold_before"] == pytest.approx(before, rel=1e-5)
    # Two minutes cannot stand behind one false alarm a day: the result says so (it was only in calibration.yaml).
    assert result["false_alarms_per_day"] == 1.0 and len(result["false_alarms_per_day_90ci"]) == 2
    assert "point_threshold" in result
    assert "cannot pin down" in result["warning"] and "30 minutes" in result["warning"]


@pytest.mark.parametrize("minutes", [0.2, 1.0])
def test_calibrate_refuses_too_little_audio(trained_model, site_clips, tmp_path, minutes):
    cfg = _config(tmp_path, trained_model)
    runner = _runner(cfg)
    before = runner.settings.threshold
    result, error = _calibrate(runner, site_clips["normal"][:1], minutes, force=True)
    assert result is None and "at least 200 analysis windows" in error and "minutes" in error
    assert runner.settings.threshold == before and not calibration_paths(cfg)[0].exists()


@pytest.mark.parametrize("minutes, needle", [(300.0, "<= 240"), (0.0, "> 0"), (float("nan"), "finite")])
def test_calibrate_outside_the_command_tables_bounds_is_refused_the_same_way_off_mqtt(
    trained_model, tmp_path, minutes, needle
):
    """The command line (Runner.calibrate) and mute use the MQTT command table's bounds, not a copy of them."""
    runner = _runner(_config(tmp_path, trained_model))
    with pytest.raises(AcmonError, match=f"^calibrate: 'minutes' must be .*{re.escape(needle)}"):
        runner.calibrate(minutes, lambda: None)
    with pytest.raises(AcmonError, match="^mute: 'minutes' must be > 0 and <= 1440"):
        runner.mute(2000.0)


def test_calibrate_on_a_fault_is_refused_unless_forced_and_keeps_rollback(trained_model, site_clips, tmp_path):
    """The finding: calibrating on audio with a fault raised the threshold 3.9 -> 56.9 and applied it at once."""
    cfg = _config(tmp_path, trained_model)
    runner = _runner(cfg)
    trained = runner.settings.threshold
    result, error = _calibrate(runner, site_clips["anomaly"], 2.0)
    assert result is None and "looks like a fault" in error and "force" in error and "\n" not in error
    assert f"{trained:.4g}" in error  # before, and the refused after
    assert runner.settings.threshold == trained and not calibration_paths(cfg)[0].exists()

    normal, error = _calibrate(runner, site_clips["normal"], 2.0)
    assert error is None and normal["threshold_before"] == pytest.approx(trained, rel=1e-5)
    # With a site calibration in force, audio the current model alarms on is refused too.
    result, error = _calibrate(runner, site_clips["anomaly"], 2.0)
    assert result is None and "looks like a fault" in error
    assert runner.settings.threshold == pytest.approx(normal["threshold"], rel=1e-5)

    forced, error = _calibrate(runner, site_clips["anomaly"], 2.0, force=True)
    assert error is None and forced["forced"] and forced["threshold"] > normal["threshold"]
    assert forced["threshold_before"] == pytest.approx(normal["threshold"], rel=1e-5)
    current, previous = calibration_paths(cfg)
    assert Path(forced["previous_file"]) == previous and f"threshold: {normal['threshold']}" in previous.read_text()


def test_calibrate_that_cannot_write_is_an_error_result_and_a_fault(trained_model, site_clips, tmp_path, monkeypatch):
    """Under ProtectSystem=strict calibration.yaml could not be written: the daemon crashed and sent no result."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "calibration").write_text("a file where the calibration folder should be\n")
    monkeypatch.setenv("STATE_DIRECTORY", str(state))
    runner = _runner(_config(tmp_path, trained_model))
    before = runner.settings.threshold
    result, error = _calibrate(runner, site_clips["normal"], 2.0)
    assert result is None and error.startswith("calibrate: cannot write ") and str(state / "calibration") in error
    assert "storage" in runner.health.faults and runner.settings.threshold == before
    assert _replay(runner, site_clips["normal"][0]).windows > 0  # still analysing
    (state / "calibration").unlink()
    result, error = _calibrate(runner, site_clips["normal"], 2.0)
    assert error is None and "storage" not in runner.health.faults


def test_a_bug_in_a_command_or_the_calibration_is_contained(trained_model, site_clips, tmp_path, monkeypatch):
    import device.daemon.calibrate

    runner = _runner(_config(tmp_path, trained_model))

    def broken(*args, **kwargs):
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(device.daemon.calibrate, "calibrate_site", broken)
    result, error = _calibrate(runner, site_clips["normal"], 2.0)
    assert result is None and "internal error" in error and "ZeroDivisionError" in error
    assert "internal_error" in runner.health.faults
    monkeypatch.setattr(runner, "ping", broken)
    replies = Replies()
    runner.handle_command("ping", {}, replies)
    runner.handle_command("mute", {"minutes": 1}, replies)
    assert _replay(runner, site_clips["normal"][0]).windows > 0  # the analysis loop survived both
    assert "internal error" in replies.got[0][1] and replies.got[1][1] is None
    assert "internal_error" not in runner.health.faults  # a command worked again


class FlakyMicrophone:
    """A source that delivers audio, dies, stays dead for one reopen, then comes back (PortAudio raising AudioError)."""

    def __init__(self, runner: Runner, seconds_per_life: float = 3.0):
        self.opened = 0
        self.runner = runner
        self.rate = runner.model.params.sample_rate_hz
        self.seconds = seconds_per_life
        self.faults_seen: list[set[str]] = []

    def open(self):
        self.opened += 1
        attempt = self.opened
        mic = self

        class _Stream:
            name = "microphone:flaky"
            dropped_blocks = 0

            def blocks(self) -> Iterator[np.ndarray]:
                mic.faults_seen.append(set(mic.runner.health.faults))
                if attempt == 2:
                    raise AudioError("microphone 'flaky': cannot open (device unplugged)")
                rng = np.random.default_rng(attempt)
                for _ in range(int(mic.seconds * mic.rate / 1024)):
                    yield (0.05 * rng.standard_normal(1024)).astype(np.float32)
                if attempt == 1:
                    raise AudioError("microphone:flaky: no audio for 5 s; the microphone hung or was disconnected")
                mic.runner.stop_event.set()

        return _Stream()


def test_microphone_loss_is_a_fault_and_the_stream_is_reopened(trained_model, tmp_path):
    cfg = _config(tmp_path, trained_model, "health: {reopen_min_seconds: 0.05, reopen_max_seconds: 0.2}\n")
    runner = _runner(cfg)
    mic = FlakyMicrophone(runner)
    runner.run_live(mic.open)
    assert mic.opened == 3
    # Open 2 and 3 saw the stream_error fault raised by the failures before them; audio flowing clears it.
    assert "stream_error" in mic.faults_seen[1] and "stream_error" in mic.faults_seen[2]
    assert "stream_error" not in runner.health.faults
    assert runner.windows_total >= 2 * int(3.0 / runner.model.params.hop_seconds) - 4


class RecordingNotifier(SystemdNotifier):
    """The real notifier (watchdog enabled), recording what it would send and the faults active at that moment."""

    def __init__(self, runner_ref: list):
        super().__init__({"NOTIFY_SOCKET": "@unused", "WATCHDOG_USEC": "100000"})
        self.sent: list[tuple[str, set[str]]] = []
        self.runner_ref = runner_ref

    def notify(self, *fields: str) -> bool:
        faults = set(self.runner_ref[0].health.faults) if self.runner_ref else set()
        self.sent.extend((f, faults) for f in fields)
        return True


@pytest.mark.broker
def test_a_dead_publisher_stops_the_watchdog_and_ends_the_process(broker, trained_model, site_clips, tmp_path):
    """The finding: the publisher thread died, the process ran on feeding the watchdog, and nothing was delivered."""
    cfg = (
        _config(tmp_path, trained_model)
        .read_text()
        .replace("mqtt: {enabled: false}", f"mqtt: {{host: 127.0.0.1, port: {broker.port}}}")
    )
    (tmp_path / "device.yaml").write_text(cfg)
    ref: list = []
    notifier = RecordingNotifier(ref)
    runner = Runner(
        load_site_config(tmp_path / "device.yaml"),
        config_path=str(tmp_path / "device.yaml"),
        events_out=None,
        notifier=notifier,
    )
    ref.append(runner)
    runner.publisher_grace_seconds = 0.3
    clips = [c for pair in zip(site_clips["normal"], site_clips["normal"]) for c in pair]
    with runner:
        _replay(runner, clips[0])
        assert any(f == "WATCHDOG=1" for f, _ in notifier.sent)

        def injected():  # not an Exception: the publisher contains those, so this one really kills the thread
            raise _ThreadKiller("injected fault in the publisher thread")

        runner.outbox.publisher._poll = injected
        started = time.monotonic()
        with pytest.raises(WorkerFailure) as failure:
            for clip in clips[1:]:
                stream = WavFileStream(clip, runner.model.params.sample_rate_hz, realtime=False)
                runner.run_stream(stream.name, _paced(stream.blocks(), 0.002))
        raised = time.monotonic()
    closed = time.monotonic()
    assert raised - started < 10 and closed - raised < 3  # no 10 s flush into a dead publisher
    message = str(failure.value)
    assert "publisher thread died" in message and "\n" not in message and "restart" in message
    assert "publisher" in runner.health.faults
    # Not one watchdog ping while the publisher was failing: systemd restarts a stuck process too.
    assert not [f for f, faults in notifier.sent if f == "WATCHDOG=1" and "publisher" in faults]


class _ThreadKiller(BaseException):
    """What the publisher's loop cannot contain (it catches Exception per pass)."""


def _paced(blocks, seconds: float):
    for block in blocks:
        time.sleep(seconds)
        yield block


def test_an_alarm_open_when_the_process_died_is_ended_after_the_restart(trained_model, site_clips, tmp_path):
    """The finding: after a SIGKILL during an alarm the alarm had a start and never an end."""
    cfg = _config(tmp_path, trained_model, "detector: {cooldown_seconds: 0, update_seconds: 1}\n").read_text()
    cfg = cfg.replace("detector: {cooldown_seconds: 0}\n", "").replace(
        f"path: {trained_model}}}", f"path: {trained_model}, threshold: 1.0e-6}}"
    )
    (tmp_path / "device.yaml").write_text(cfg)
    out = io.StringIO()
    first = _runner(tmp_path / "device.yaml", alarm_state=True)
    first.outbox.events_out = out
    left_open: dict[str, bytes] = {}

    def blocks_until_killed(stream):
        for block in stream.blocks():
            yield block
            record = first.outbox.open_alarm.path
            if record.exists() and "update" in out.getvalue():
                left_open["record"] = record.read_bytes()  # what a SIGKILL now would leave behind
                left_open["mode"] = stat.S_IMODE(record.stat().st_mode)
                return

    stream = WavFileStream(site_clips["normal"][0], first.model.params.sample_rate_hz)
    first.run_stream(stream.name, blocks_until_killed(stream))
    sent = [json.loads(line) for line in out.getvalue().splitlines()]
    assert left_open and left_open["mode"] == 0o600
    assert not first.outbox.open_alarm.path.exists()  # the stream's end ended the alarm and removed its record
    first.outbox.open_alarm.path.write_bytes(left_open["record"])

    out2 = io.StringIO()
    second = _runner(tmp_path / "device.yaml", alarm_state=True)
    second.outbox.events_out = out2
    with second:
        pass
    (ended,) = [json.loads(line) for line in out2.getvalue().splitlines()]
    start = sent[0]
    last_before_kill = [e for e in sent if e["event_id"] == start["event_id"] and e["state"] != "end"][-1]
    assert ended["state"] == "end" and ended["reason"] == "restart" and ended["event_id"] == start["event_id"]
    assert ended["seq"] == last_before_kill["seq"] + 1  # (event_id, seq) stays unique for deduplicating subscribers
    assert ended["duration_seconds"] >= last_before_kill["duration_seconds"] > 0
    validate("event", ended)
    assert not second.outbox.open_alarm.path.exists()
    with _runner(tmp_path / "device.yaml", alarm_state=True) as third:  # closed once, never twice
        third.outbox.events_out = out2
    assert len(out2.getvalue().splitlines()) == 1


@pytest.mark.parametrize(
    "garbage",
    [b"", b"{", b"[]", b'{"event_id": "../../x"}', b"\xff\xfe" * 10, b'{"event_id": "' + b"a" * 32 + b'", "seq": -1}'],
)
def test_a_damaged_open_alarm_record_never_blocks_start_up(trained_model, tmp_path, garbage, caplog):
    runner = _runner(_config(tmp_path, trained_model), alarm_state=True)
    runner.outbox.open_alarm.path.parent.mkdir(parents=True, exist_ok=True)
    runner.outbox.open_alarm.path.write_bytes(garbage)
    out = io.StringIO()
    runner.outbox.events_out = out
    with runner:
        pass
    assert out.getvalue() == "" and not runner.outbox.open_alarm.path.exists()
    assert "open alarm" in caplog.text


def test_the_margin_for_a_rare_rate_does_not_make_normal_audio_look_like_a_fault(
    trained_model, site_clips, tmp_path, monkeypatch
):
    """The refusal (a new threshold over 4 times the current) is judged on what the audio's scores call for
    on average: the 95 % margin for a rate the audio cannot show measures drift between its stretches, not a
    fault. A margin of 10 times (drifting audio) must not refuse the machine's normal sound."""
    import device.decisions.threshold as threshold

    cfg = _config(tmp_path, trained_model)
    runner = _runner(cfg)
    monkeypatch.setattr(threshold, "_upper_threshold", lambda boot, probability, confidence: 1e6)
    result, error = _calibrate(runner, site_clips["normal"], 2.0)
    assert error is None and not result["forced"], error
    assert result["method"].endswith("_upper95") and result["threshold"] == pytest.approx(1e6)
    assert result["point_threshold"] < result["threshold_before"] * 4

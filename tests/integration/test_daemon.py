"""The daemon's runner with a real int8 model: commands, mute, reload, calibration, microphone loss and return."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from device.calibrate import calibration_paths, load_site_config
from device.errors import AudioError
from device.runner import Runner
from device.sources import WavFileStream

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


def _replay(runner: Runner, path: Path):
    stream = WavFileStream(path, runner.model.params.sample_rate_hz)
    return runner.run_stream(stream.name, stream.blocks())


def test_anomaly_raises_event_with_evidence_clip(trained_model, demo_data, tmp_path):
    runner = _runner(_config(tmp_path, trained_model), evidence=True)
    out = io.StringIO()
    runner.events_out = out
    assert _replay(runner, _wav(demo_data, "anomaly")).events >= 1
    start = next(e for e in map(json.loads, out.getvalue().splitlines()) if e["state"] == "start")
    assert start["evidence"] and (tmp_path / "evidence" / start["evidence"]).exists()
    assert (tmp_path / "evidence" / start["evidence"]).with_suffix(".png").exists()


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
    runner.handle_command("set_threshold", {"value": 1e6}, replies)
    assert _replay(runner, _wav(demo_data, "anomaly")).events == 0
    assert replies.got == [({"threshold": 1e6}, None)] and runner.settings.threshold == 1e6


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


def test_calibrate_command_writes_and_applies_the_site_threshold(trained_model, demo_data, tmp_path):
    cfg = _config(tmp_path, trained_model)
    runner = _runner(cfg)
    replies = Replies()
    runner.handle_command("calibrate", {"minutes": 0.25}, replies)  # 15 s: 29 windows, three 6 s clips
    for index in range(4):
        _replay(runner, _wav(demo_data, "normal", index))
    ((result, error),) = replies.got
    assert error is None and result["windows"] >= 29
    current, _ = calibration_paths(cfg)
    assert Path(result["file"]) == current and current.exists()
    assert runner.settings.threshold == pytest.approx(result["threshold"], rel=1e-5)
    assert load_site_config(cfg).model.threshold == pytest.approx(result["threshold"], rel=1e-5)


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

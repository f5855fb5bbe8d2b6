"""Issue 15 item 3 through the daemon's Runner with a real int8 model (and a real mosquitto): input filters before
the analysis and the band levels, calibration recording the commissioned normal, the level rule's alarms, the
operating-hours schedule with an injected clock, and band levels and their Home Assistant sensors over MQTT."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from pathlib import Path

import jinja2
import numpy as np
import pytest
import yaml

from device.audio.audio_io import read_wav, write_wav
from device.audio.sources import WavFileStream
from device.daemon.daemon_config import load_daemon_config
from device.daemon.runner import Runner
from device.daemon.site_config import calibration_paths, load_site_config
from device.errors import ConfigError
from tests.mqtt_support import validate, validate_messages

pytestmark = [pytest.mark.slow]

RATE = 16000


class Replies:
    def __init__(self) -> None:
        self.got: list[tuple[dict | None, str | None]] = []

    def __call__(self, result=None, error=None) -> None:
        self.got.append((result, error))


def _config(tmp_path: Path, model: Path | None, **sections) -> Path:
    data = {
        "model": {"path": str(model)} if model is not None else {"path": None},
        "mqtt": {"enabled": False},
        "evidence": {"directory": str(tmp_path / "evidence")},
        **sections,
    }
    data["detector"] = {"cooldown_seconds": 0, **sections.get("detector", {})}
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _runner(cfg_path: Path, **kwargs) -> Runner:
    runner = Runner(load_site_config(cfg_path), config_path=str(cfg_path), use_mqtt=False, events_out=None, **kwargs)
    runner.measure_levels = True  # without MQTT nobody would read them: the Runner skips the FFTs then
    return runner


def _events(runner: Runner) -> io.StringIO:
    out = io.StringIO()
    runner.outbox.events_out = out
    return out


def _read_events(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def _replay(runner: Runner, path: Path, block: int = 1024):
    stream = WavFileStream(path, RATE, block_samples=block)
    return runner.run_stream(stream.name, stream.blocks())


def _calibrate(runner: Runner, clips: list[Path], minutes: float = 2.0) -> dict:
    """The calibrate command, fed the clips until it replies; its result (failing on an error reply)."""
    replies = Replies()
    runner.handle_command("calibrate", {"minutes": minutes}, replies)
    for clip in clips:
        _replay(runner, clip)
        if replies.got:
            break
    result, error = replies.got[0]
    assert error is None, error
    return result


def _with_tone(src: Path, dst: Path, freq_hz: float, amplitude: float, start_seconds: float = 0.0) -> Path:
    x, rate = read_wav(src)
    mono = x[:, 0].astype(np.float64)
    n = np.arange(len(mono))
    tone = amplitude * np.sin(2 * np.pi * freq_hz * n / rate) * (n >= start_seconds * rate)
    write_wav(dst, np.clip(mono + tone, -1, 1).astype(np.float32), rate)
    return dst


def _band(bands: dict, nominal: float, key: str = "leq_db") -> float:
    return bands[key][bands["centre_hz"].index(nominal)]


def test_filters_act_before_the_band_levels_and_the_model(trained_model, site_clips, tmp_path):
    hum = _with_tone(site_clips["normal"][0], tmp_path / "hum.wav", 50.0, 0.2)
    plain = _runner(_config(tmp_path, trained_model))
    _replay(plain, hum)
    unfiltered = plain.levels.take_bands()
    filtered_cfg = _config(tmp_path, trained_model, audio={"highpass_hz": 30.0, "notch_hz": [50, 100, 150]})
    runner = _runner(filtered_cfg)
    scores = {}
    for block in (256, 1000, 1024, 16384):
        scores[block] = _replay(runner, hum, block).scores
        bands = runner.levels.take_bands()
    _replay(runner, site_clips["normal"][0])
    clean = runner.levels.take_bands()
    assert unfiltered is not None and bands is not None and clean is not None
    # The hum (-17 dBFS) dominated the 50 Hz band, 24 dB above the pump's own sound there; through the notch
    # that band reads as if there were no hum (the pump's sound in it, partly notched too).
    assert _band(unfiltered, 50) - _band(clean, 50) > 20.0
    assert abs(_band(bands, 50) - _band(clean, 50)) < 0.5
    assert abs(_band(unfiltered, 1000) - _band(bands, 1000)) < 0.5  # the passband is untouched
    # Filtered windows reach the model, and their scores do not depend on how the audio was cut into blocks.
    assert scores[256] and all(scores[b] == scores[256] for b in scores)
    assert scores[256] != plain.run_stream("again", WavFileStream(hum, RATE).blocks()).scores


def test_calibration_records_the_normal_and_the_level_rule_raises_alarms(trained_model, site_clips, tmp_path):
    cfg = _config(
        tmp_path,
        trained_model,
        # The model's alarms are kept out of the way (100 x its threshold): this test is about the level rule.
        detector={"threshold_scale": 100, "level_rule": {"bands_hz": [1000], "rise_db": 10, "patience_seconds": 1.0}},
    )
    runner = _runner(cfg)
    assert runner.levels.rule is None and "no commissioned normal" in runner.levels.rule_problem
    result = _calibrate(runner, site_clips["normal"])
    normal = result["level_normal_db"]
    assert set(normal) == {f"{c:g}" for c in runner.levels.nominal_hz} and all(-120 < v < 0 for v in normal.values())
    written = yaml.safe_load(calibration_paths(cfg)[0].read_text())
    assert written["levels"]["normal_db"][1000.0] == normal["1000"]
    assert written["calibration"]["input_filters"] == {"highpass_hz": None, "notch_hz": [], "notch_q": None}
    # Applied at once (calibrate reloads): the rule now runs against the normal it recorded.
    assert runner.levels.rule is not None and runner.levels.rule.settings.normal_db == (normal["1000"],)

    out = _events(runner)
    _replay(runner, site_clips["normal"][-1])  # normal sound: no alarm
    assert _read_events(out) == []
    amplitude = math.sqrt(2 * 10 ** ((normal["1000"] + 20) / 10))  # a 1 kHz whine 20 dB above the band's normal
    whine = _with_tone(site_clips["normal"][-1], tmp_path / "whine.wav", 1000.0, amplitude, start_seconds=2.0)
    summary = _replay(runner, whine)
    events = _read_events(out)
    assert [e["state"] for e in events] == ["start", "end"], events
    start = events[0]
    assert start["rule"] == "level" and start["band_hz"] == 1000 and start["threshold"] == 10
    assert start["score"] == pytest.approx(20.0, abs=1.5)
    assert 2.0 < start["stream_seconds"] < 4.5  # the whine starts at 2 s; 1 s of patience in 0.5 s frames
    for event in events:
        validate("event", event)
    assert summary.events == 0  # the model raised nothing (the summary counts the model's alarms)


def test_schedule_ends_an_alarm_and_holds_new_ones(trained_model, site_clips, tmp_path):
    cfg = _config(
        tmp_path,
        trained_model,
        device={"timezone": "UTC"},
        detector={"schedule": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "06:00", "end": "22:00"}]},
    )
    runner = _runner(cfg)
    clock = [1741003200.0]  # Monday 2025-03-03 12:00 UTC
    runner.levels.wall_clock = lambda: clock[0]
    out = _events(runner)
    states = []

    def blocks() -> Iterator[np.ndarray]:
        """Faulty pump audio; the clock leaves the operating hours after the first alarm starts."""
        for clip in site_clips["anomaly"][:6]:
            for block in WavFileStream(clip, RATE).blocks():
                if any(e["state"] == "start" for e in _read_events(out)) and clock[0] < 1741039200:
                    clock[0] = 1741039200.0  # 22:00: closing time
                yield block
                states.append(runner.state)

    runner.run_stream("faulty", blocks())
    events = _read_events(out)
    assert [e["state"] for e in events] == ["start", "end"], events
    assert events[1]["reason"] == "schedule" and events[1]["event_id"] == events[0]["event_id"]
    for event in events:
        validate("event", event)
    assert states[-1] == "off_hours" and "anomaly" in states
    clock[0] = 1741078800.0  # Tuesday 09:00: in hours again, and the fault is still there
    _replay(runner, site_clips["anomaly"][0])
    assert [e["state"] for e in _read_events(out)][2:3] == ["start"]


def test_settings_the_model_rate_cannot_take_are_one_line_errors(trained_model, tmp_path):
    for sections, needle in (
        ({"audio": {"highpass_hz": 9000.0}}, "audio.highpass_hz: 9000 Hz is not below the Nyquist frequency"),
        ({"audio": {"notch_hz": [50, 8000]}}, "audio.notch_hz: 8000 Hz is not below the Nyquist"),
        ({"levels": {"fmax_hz": 12000.0}}, "levels: fmax_hz 12000 is above the Nyquist"),
        ({"levels": {"ha_bands_hz": [8000]}}, "levels.ha_bands_hz: 8000 Hz is not measured"),
        ({"detector": {"level_rule": {"bands_hz": [10000]}}}, "detector.level_rule.bands_hz: 10000 Hz is not measured"),
    ):
        cfg = _config(tmp_path, trained_model, **sections)
        with pytest.raises(ConfigError, match=needle) as info:
            load_daemon_config(cfg)
        assert "\n" not in str(info.value)
        with pytest.raises(ConfigError, match=needle):
            _runner(cfg)
    cfg = _config(tmp_path, trained_model, detector={"level_rule": {"bands_hz": [1000]}})
    assert any("stays off until" in w for w in load_daemon_config(cfg).warnings)


@pytest.mark.broker
def test_band_levels_in_telemetry_and_home_assistant_sensors(
    broker, subscribe, unique_prefix, trained_model, site_clips, tmp_path
):
    cfg_path = _config(
        tmp_path,
        trained_model,
        device={"id": "pump-3", "site": "lab"},
        health={"telemetry_seconds": 2},
        levels={"ha_bands_hz": [125, 1000]},
        audio={"calibration_db": 110.0},
    )
    data = yaml.safe_load(cfg_path.read_text())
    data["mqtt"] = {
        "enabled": True,
        "host": broker.host,
        "port": broker.port,
        "topic_prefix": unique_prefix,
        "discovery_prefix": f"{unique_prefix}-ha",
        "spool_dir": str(tmp_path / "spool"),
    }
    cfg_path.write_text(yaml.safe_dump(data))
    base = f"{unique_prefix}/lab/pump-3"
    sub = subscribe(broker.host, broker.port, f"{base}/#")
    ha = subscribe(broker.host, broker.port, f"{unique_prefix}-ha/#")
    with Runner(load_site_config(cfg_path), config_path=str(cfg_path), events_out=None) as runner:
        for clip in site_clips["normal"][:2]:
            _replay(runner, clip)
    assert sub.wait_for(lambda s: len(s.json_on("/telemetry")) >= 3, timeout=20)
    assert validate_messages(sub.messages) >= 3
    telemetry = sub.json_on("/telemetry")
    bands = telemetry[0]["bands"]
    assert bands["unit"] == "dB" and bands["frame_seconds"] == 1.0 and bands["centre_hz"][0] == 25
    assert bands["centre_hz"][-1] == 6300 and len(bands["leq_db"]) == 25
    assert 2 <= bands["frames"] <= 5  # 2 s of audio per message, a frame every 0.5 s
    assert all(lo <= leq <= hi for lo, leq, hi in zip(bands["min_db"], bands["leq_db"], bands["max_db"]))
    assert ha.wait_for(lambda s: any(t.endswith("/band_1000hz/config") for t, _, _ in s.messages), timeout=10)
    config = next(json.loads(p) for t, p, _ in ha.messages if t.endswith("/band_1000hz/config"))
    assert config["state_topic"] == f"{base}/telemetry" and config["unit_of_measurement"] == "dB"
    value = jinja2.Environment().from_string(config["value_template"]).render(value_json=telemetry[0])
    assert float(value) == _band(bands, 1000)


def test_without_a_model_the_level_rule_runs_alone(site_clips, tmp_path):
    cfg = _config(tmp_path, None, detector={"level_rule": {"bands_hz": [1000], "patience_seconds": 1.0}})
    assert load_daemon_config(cfg).config.model.path is None  # check-config accepts it (with the warning)
    runner = _runner(cfg)
    assert runner.level_only and runner.model.params.sample_rate_hz == RATE
    result = _calibrate(runner, site_clips["normal"])
    assert result["frames"] == 240 and "threshold" not in result
    written = yaml.safe_load(calibration_paths(cfg)[0].read_text())
    assert set(written) == {"levels", "calibration"}  # no model threshold to write
    assert runner.levels.rule is not None

    out = _events(runner)
    normal = result["level_normal_db"]["1000"]
    amplitude = math.sqrt(2 * 10 ** ((normal + 20) / 10))
    whine = _with_tone(site_clips["normal"][-1], tmp_path / "whine.wav", 1000.0, amplitude, start_seconds=2.0)
    summary = _replay(runner, whine)
    events = _read_events(out)
    assert [e["state"] for e in events] == ["start", "end"], events
    assert events[0]["rule"] == "level" and events[0]["model"] == {"name": "none", "version": "none"}
    for event in events:
        validate("event", event)
    assert summary.windows > 0 and summary.scored == 0  # windows are cut, never scored
    score, threshold = runner._shown_score()
    assert threshold == 10.0 and score == pytest.approx(20.0, abs=1.5)  # state shows the rule's: dB above normal
    with pytest.raises(Exception, match="no model"):
        runner.set_threshold(1.0)


def test_band_levels_cost_nothing_when_nobody_reads_them(trained_model, site_clips, tmp_path):
    cfg = _config(tmp_path, trained_model)
    runner = Runner(load_site_config(cfg), config_path=str(cfg), use_mqtt=False, events_out=None)
    _replay(runner, site_clips["normal"][0])  # `score` and `replay` without MQTT: no telemetry to fill
    assert runner.levels.take_bands() is None
    runner.measure_levels = True  # the meter kept its place: frames measured from now on are the stream's
    stream = WavFileStream(site_clips["normal"][0], RATE)
    runner.run_stream(stream.name, stream.blocks())
    assert runner.levels.take_bands()["frames"] == 11  # 6 s: a 1 s frame every 0.5 s

"""Health: levels, clipping, DC offset, dead and flat-lined microphones, falling behind, CPU temperature."""

from __future__ import annotations

import numpy as np
import pytest

from device.audio.health import HealthMonitor, read_cpu_temperature_c

RATE = 16000


def _monitor(**kwargs) -> HealthMonitor:
    return HealthMonitor(RATE, telemetry_seconds=1.0, silence_seconds=2.0, wall_clock=lambda: 1000.0, **kwargs)


def _feed(mon: HealthMonitor, x: np.ndarray, block: int = 1600) -> None:
    for i in range(0, len(x), block):
        mon.add_block(x[i : i + block])


def test_level_dc_and_clipping_of_a_period():
    mon = _monitor()
    t = np.arange(RATE) / RATE
    _feed(mon, (0.5 * np.sin(2 * np.pi * 100 * t)).astype(np.float32))
    assert mon.telemetry_due
    period = mon.take_telemetry()
    assert period["level_dbfs"] == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.01)
    assert period["clipping_ratio"] == 0 and abs(period["dc_offset"]) < 1e-6
    assert mon.faults == {} and not mon.telemetry_due


def test_clipping_and_dc_offset_are_faults_of_the_period():
    mon = _monitor()
    x = np.full(RATE, 0.3, dtype=np.float32)
    x[::10] = 1.0  # 10 % clipped, mean well above 0.1
    x += np.random.default_rng(0).normal(0, 0.01, RATE).astype(np.float32)
    _feed(mon, x)
    mon.take_telemetry()
    assert set(mon.faults) == {"clipping", "dc_offset"}
    assert mon.faults["clipping"].since == 1000.0
    _feed(mon, np.random.default_rng(1).normal(0, 0.05, RATE).astype(np.float32))
    mon.take_telemetry()
    assert mon.faults == {}


def test_damaged_samples_are_a_fault_and_stay_out_of_the_levels():
    """NaN, Inf and 1e30 from a broken driver: counted, a fault, and the level is the sound samples' level."""
    mon = _monitor()
    x = (0.1 * np.random.default_rng(2).standard_normal(RATE)).astype(np.float32)
    x[[10, 20, 30]] = [np.nan, np.inf, 1e30]
    _feed(mon, x)
    period = mon.take_telemetry()
    assert period["damaged_samples"] == 3
    assert period["level_dbfs"] == pytest.approx(-20.0, abs=0.2) and period["clipping_ratio"] == 0
    assert set(mon.faults) == {"damaged_audio"} and "3 NaN, infinite or absurd" in mon.faults["damaged_audio"].detail
    _feed(mon, (0.1 * np.random.default_rng(3).standard_normal(RATE)).astype(np.float32))
    assert mon.take_telemetry()["damaged_samples"] == 0 and mon.faults == {}


def test_digital_silence_is_a_dead_microphone_until_sound_returns():
    mon = _monitor()
    _feed(mon, np.zeros(int(1.9 * RATE), dtype=np.float32))
    assert "microphone_dead" not in mon.faults  # not yet 2 s
    _feed(mon, np.zeros(int(0.2 * RATE), dtype=np.float32))
    assert "microphone_dead" in mon.faults and mon.take_changed()
    _feed(mon, np.random.default_rng(0).normal(0, 0.01, 1600).astype(np.float32))
    assert "microphone_dead" not in mon.faults and mon.take_changed()


def test_a_stuck_converter_is_a_flatline():
    mon = _monitor()
    _feed(mon, np.full(3 * RATE, 0.25, dtype=np.float32))
    assert "microphone_flatline" in mon.faults and "microphone_dead" not in mon.faults


def test_stream_error_clears_when_audio_flows_again():
    mon = _monitor()
    mon.set("stream_error", "no audio for 5 s")
    assert "stream_error" in mon.faults
    mon.add_block(np.random.default_rng(0).normal(0, 0.01, 100).astype(np.float32))
    assert mon.faults == {}


def test_dropped_blocks_and_slow_analysis_mean_falling_behind():
    mon = _monitor()
    mon.add_dropped_blocks(3)
    assert "falling_behind" in mon.faults
    _feed(mon, np.random.default_rng(0).normal(0, 0.01, RATE).astype(np.float32))
    period = mon.take_telemetry()
    assert period["dropped_blocks"] == 3 and "falling_behind" in mon.faults
    mon.add_block(np.random.default_rng(1).normal(0, 0.01, RATE).astype(np.float32), processing_seconds=0.01)
    assert mon.take_telemetry()["realtime_factor"] == pytest.approx(0.01)
    assert "falling_behind" not in mon.faults
    mon.add_block(np.random.default_rng(2).normal(0, 0.01, RATE).astype(np.float32), processing_seconds=1.5)
    mon.take_telemetry()
    assert "falling_behind" in mon.faults


def test_window_scores_summarised_per_period():
    mon = _monitor()
    for s in (1.0, None, 3.0):
        mon.add_window(s)
    mon.add_block(np.zeros(10, dtype=np.float32))
    period = mon.take_telemetry()
    assert (period["windows"], period["scored_windows"], period["score_mean"], period["score_max"]) == (3, 2, 2.0, 3.0)


def test_cpu_temperature_prefers_the_cpu_zone(tmp_path):
    for name, kind, milli in (("thermal_zone0", "acpitz", "27800"), ("thermal_zone1", "cpu-thermal", "51234")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "type").write_text(kind + "\n")
        (tmp_path / name / "temp").write_text(milli + "\n")
    assert read_cpu_temperature_c(tmp_path) == pytest.approx(51.234)
    assert read_cpu_temperature_c(tmp_path / "nothing") is None


def test_defaults_are_declared_once_for_the_monitor_and_the_config():
    import dataclasses

    from device.settings.schema import HealthConfig

    config = HealthConfig()
    shared = {f.name: f.default for f in dataclasses.fields(HealthMonitor) if hasattr(config, f.name)}
    assert set(shared) == {"telemetry_seconds", "silence_seconds", "clipping_fault_ratio", "dc_offset_fault"}
    for name, default in shared.items():
        assert getattr(config, name) == default, name

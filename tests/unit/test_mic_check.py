"""mic-check's judgement of a recording (the daemon's health checks) and the installer's comment-keeping config edit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from device.errors import ConfigError
from firmware_tools import config_edit
from firmware_tools.mic_check import (
    QUIET_MARGIN_DB,
    VERDICT_CLIPPING,
    VERDICT_DAMAGED,
    VERDICT_DC_OFFSET,
    VERDICT_OK,
    VERDICT_SILENT,
    VERDICT_TOO_QUIET,
    assess_levels,
)
from tests.helpers import REPO

RATE = 16000
SECONDS = 2.0


def _assess(signal: np.ndarray, min_rms_dbfs: float = -80.0):
    blocks = [signal[i : i + 1024].astype(np.float32) for i in range(0, len(signal), 1024)]
    return assess_levels(blocks, RATE, len(signal) / RATE, min_rms_dbfs, 0.01, 0.1)


def _sine(amplitude: float) -> np.ndarray:
    t = np.arange(int(SECONDS * RATE)) / RATE
    return amplitude * np.sin(2 * np.pi * 440 * t)


def test_a_tone_reports_its_level_and_peak():
    report = _assess(_sine(0.1))
    assert report.verdict == VERDICT_OK
    # RMS of a sine is amplitude / sqrt(2): 0.1 -> -23.01 dBFS; its peak 0.1 -> -20 dBFS.
    assert report.level_dbfs == pytest.approx(20 * math.log10(0.1 / math.sqrt(2)), abs=0.01)
    assert report.peak_dbfs == pytest.approx(-20.0, abs=0.01)
    assert report.clipping_ratio == 0 and abs(report.dc_offset) < 1e-4 and report.faults == {}


def test_digital_silence_and_a_flat_line_are_silent():
    for signal in (np.zeros(int(SECONDS * RATE)), np.full(int(SECONDS * RATE), 0.02)):
        report = _assess(signal)
        assert report.verdict == VERDICT_SILENT, report
        assert "unplugged" in report.advice


def test_clipping_beyond_the_daemons_fault_ratio():
    report = _assess(np.clip(_sine(2.0), -1, 1))
    assert report.verdict == VERDICT_CLIPPING
    assert report.clipping_ratio > 0.5 and "lower the capture gain" in report.advice
    # A few clipped samples, under the 1 % fault level, are noted but OK.
    few = _sine(0.5)
    few[:100] = 1.0
    report = _assess(few)
    assert report.verdict == VERDICT_OK and "clipped" in report.advice


def test_a_dc_offset_is_reported():
    report = _assess(_sine(0.05) + 0.3)
    assert report.verdict == VERDICT_DC_OFFSET and report.dc_offset == pytest.approx(0.3, abs=1e-3)


def test_too_quiet_is_judged_against_the_daemons_level_gate():
    quiet = _sine(1e-3 * math.sqrt(2))  # -60 dBFS RMS
    assert _assess(quiet).verdict == VERDICT_OK  # 20 dB above the default gate of -80
    report = _assess(quiet, min_rms_dbfs=-60 - QUIET_MARGIN_DB + 1)
    assert report.verdict == VERDICT_TOO_QUIET and "detector.min_rms_dbfs" in report.advice


def test_damaged_samples_come_first():
    signal = _sine(0.1)
    signal[500] = np.nan
    report = _assess(signal)
    assert report.verdict == VERDICT_DAMAGED and math.isfinite(report.peak)


TEMPLATE = """\
# site config
device:
  id: pump-7   # the machine
model:
  # the model
  path: /opt/acmon/models/pump/model.tflite  # keep this comment
  threshold: null
mqtt:
  enabled: false
"""


def test_config_edit_replaces_values_in_place_and_keeps_comments():
    text, kept = config_edit.set_values(
        TEMPLATE, [("model", "path", "/etc/acmon/model.acmon"), ("model", "trusted_keys", "/etc/acmon/keys")]
    )
    assert kept
    assert "# keep this comment" in text and "# the model" in text and "# the machine" in text
    data = yaml.safe_load(text)
    assert data["model"] == {"path": "/etc/acmon/model.acmon", "threshold": None, "trusted_keys": "/etc/acmon/keys"}
    assert data["device"] == {"id": "pump-7"} and data["mqtt"] == {"enabled": False}


def test_config_edit_adds_a_missing_section_and_falls_back_for_flow_style():
    text, kept = config_edit.set_values("device: {id: a}\n", [("model", "path", "m.acmon")])
    assert kept and yaml.safe_load(text) == {"device": {"id": "a"}, "model": {"path": "m.acmon"}}
    text, kept = config_edit.set_values("model: {path: x}  # flow\n", [("model", "path", "y")])
    assert not kept and yaml.safe_load(text) == {"model": {"path": "y"}}


def test_config_edit_quotes_hostile_values():
    value = 'a "b" # c: d, [e]'
    text, _ = config_edit.set_values(TEMPLATE, [("model", "path", value)])
    assert yaml.safe_load(text)["model"]["path"] == value


@pytest.mark.parametrize(
    ("text", "message"),
    [("model: [1, 2]\n", "model must be a mapping"), ("- a\n", "top level must be a mapping"), ("a: [\n", "not valid")],
)
def test_config_edit_refuses_what_it_cannot_edit(text, message):
    with pytest.raises(ConfigError, match=message):
        config_edit.set_values(text, [("model", "path", "x")])


def test_config_edit_cli(tmp_path, capsys):
    out = tmp_path / "out.yaml"
    assert (
        config_edit.main([str(REPO / "configs" / "device.yaml"), "--set", "model.path=/x.acmon", "-o", str(out)]) == 0
    )
    assert config_edit.main([str(out), "--get", "model.path"]) == 0
    assert capsys.readouterr().out == "/x.acmon\n"
    # Every line of the template but the one set is kept.
    before = (REPO / "configs" / "device.yaml").read_text().splitlines()
    after = out.read_text().splitlines()
    assert [a for a, b in zip(before, after) if a != b] == ["  path: /opt/acmon/models/pump/model.tflite"]
    assert config_edit.main([str(out), "--set", "model=x"]) == 1
    assert "write SECTION.KEY=VALUE" in capsys.readouterr().err

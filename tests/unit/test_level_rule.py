"""The level-only rule over synthetic level frames: rise, patience, hysteresis, deferral while held, an end
for a reason, and bands it cannot watch."""

from __future__ import annotations

import numpy as np
import pytest

from device.analysis.levels import LevelFrame
from device.decisions.level_rule import LevelRule, level_rule_settings

BANDS = (100, 125, 160)
NORMAL = {100: -50.0, 125: -52.0, 160: -55.0}


def _rule(**overrides) -> LevelRule:
    kwargs = dict(
        table_nominal_hz=BANDS,
        bands_hz=[125, 160],
        normal_db=NORMAL,
        rise_db=10.0,
        hysteresis_db=3.0,
        patience_frames=2,
        cooldown_seconds=0.0,
        update_seconds=0.0,
    )
    kwargs.update(overrides)
    return LevelRule(level_rule_settings(**kwargs))


def _frame(index: int, levels_db: tuple[float, float, float]) -> LevelFrame:
    return LevelFrame(index, 0.5 * (index + 2), 10 ** (np.asarray(levels_db) / 10))


def _run(rule: LevelRule, levels: list[tuple[float, float, float]]) -> list[tuple[int, str]]:
    return [(i, t.state) for i, lv in enumerate(levels) for t in rule.update(_frame(i, lv))]


def test_a_watched_band_rising_raises_and_ends_an_alarm():
    rule = _rule()
    normal = (-50.0, -52.0, -55.0)
    loud = (-50.0, -52.0, -43.0)  # 160 Hz 12 dB above its normal
    fading = (-50.0, -52.0, -47.0)  # 8 dB above: between release (7) and rise (10): stays open
    quiet = (-50.0, -52.0, -49.0)  # 6 dB above: below the release
    got = _run(rule, [normal, loud, loud, fading, fading, quiet, quiet])
    assert got == [(2, "start"), (6, "end")]
    assert rule.last_band_hz == 160


def test_unwatched_band_and_a_single_frame_do_not_alarm():
    rule = _rule()
    assert _run(rule, [(-20.0, -52.0, -55.0)] * 5) == []  # 100 Hz is not watched
    assert _run(rule, [(-50.0, -30.0, -55.0), (-50.0, -52.0, -55.0)] * 3) == []  # never two frames in a row


def test_held_defers_the_start_and_end_now_gives_the_reason():
    rule = _rule()
    loud = (-50.0, -30.0, -55.0)
    rule.detector.held = True
    assert _run(rule, [loud] * 4) == []
    rule.detector.held = False
    transitions = rule.update(_frame(4, loud))
    assert [t.state for t in transitions] == ["start"]
    event = transitions[0].event
    assert event.rule == "level" and event.band_hz == 125 and transitions[0].score == pytest.approx(22.0)
    (end,) = rule.end("schedule")
    assert end.state == "end" and end.reason == "schedule" and end.event is event


def test_bands_it_cannot_watch_are_refused():
    with pytest.raises(ValueError, match="8000 Hz is not measured"):
        _rule(bands_hz=[8000])
    with pytest.raises(ValueError, match="125 Hz has no commissioned normal"):
        _rule(normal_db={160: -55.0})

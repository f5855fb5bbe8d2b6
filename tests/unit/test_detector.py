"""Decision rules: patience, hysteresis, cooldown, gated windows."""

from __future__ import annotations

import itertools

import pytest

from device.detector import Detector, DetectorSettings


def run(scores, **settings):
    counter = itertools.count()
    det = Detector(DetectorSettings(threshold=1.0, **settings), new_id=lambda: f"ev{next(counter)}")
    out = []
    for i, s in enumerate(scores):
        out += [(t.state, i, t.event.event_id) for t in det.update(i, float(i), s)]
    out += [(t.state, "close", t.event.event_id) for t in det.close(len(scores), float(len(scores)))]
    return out


def test_patience_needs_consecutive_windows():
    assert run([2, 0, 2, 0, 2], patience_windows=2) == []
    assert run([2, 2, 0, 0], patience_windows=2, cooldown_seconds=0) == [("start", 1, "ev0"), ("end", 3, "ev0")]


def test_single_window_patience():
    assert run([0, 2, 0], patience_windows=1, cooldown_seconds=0) == [("start", 1, "ev0"), ("end", 2, "ev0")]


def test_hysteresis_keeps_event_open_between_thresholds():
    # 0.95 is below the threshold but above threshold * release_ratio (0.9): the event stays open.
    scores = [2, 2, 0.95, 0.95, 0.95, 0.5, 0.5]
    assert run(scores, patience_windows=2, release_ratio=0.9) == [("start", 1, "ev0"), ("end", 6, "ev0")]


def test_no_second_event_inside_cooldown():
    # Event ends at t=3; cooldown 5 s: the burst at t=5..6 must not start a new event.
    scores = [2, 2, 0, 0, 0, 2, 2, 0, 0, 2, 2, 2]
    events = run(scores, patience_windows=2, cooldown_seconds=5)
    starts = [e for e in events if e[0] == "start"]
    # After the cooldown (t >= 8) two fresh consecutive windows (9, 10) are needed again.
    assert starts == [("start", 1, "ev0"), ("start", 10, "ev1")]


def test_gated_window_breaks_a_run_of_anomalous_windows():
    # Patience counts consecutive scored windows: a window skipped by the level gate breaks the run.
    assert run([2, None, 2], patience_windows=2, cooldown_seconds=0) == []
    assert run([2, None, 2, 2], patience_windows=2, cooldown_seconds=0)[0] == ("start", 3, "ev0")


def test_machine_stopping_ends_the_event():
    # After the alarm, the machine stops: gated (silent) windows end the event instead of holding it open.
    assert run([2, 2, None, None, None], patience_windows=2, cooldown_seconds=0) == [
        ("start", 1, "ev0"),
        ("end", 3, "ev0"),
    ]


def test_close_ends_open_event_with_stats():
    det = Detector(DetectorSettings(threshold=1.0, patience_windows=1))
    (start,) = det.update(0, 1.0, 3.0)
    det.update(1, 2.0, 5.0)
    (end,) = det.close(1, 2.0)
    assert start.state == "start" and end.state == "end" and end.score is None
    assert end.event.peak_score == 5.0 and end.event.mean_score == 4.0 and end.event.duration_seconds == 1.0
    assert det.close(2, 3.0) == []


@pytest.mark.parametrize(
    "kwargs,field",
    [({"threshold": 0}, "threshold"), ({"threshold": 1, "patience_windows": 0}, "patience_windows"),
     ({"threshold": 1, "release_ratio": 1.5}, "release_ratio"), ({"threshold": 1, "cooldown_seconds": -1}, "cooldown")],
)
def test_settings_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        DetectorSettings(**kwargs)

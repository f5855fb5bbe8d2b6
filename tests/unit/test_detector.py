"""Decision rules: patience, hysteresis, cooldown, gated windows."""

from __future__ import annotations

import itertools

import pytest

from device.decisions.detector import Detector, DetectorSettings, smooth_series


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
    [
        ({"threshold": 0}, "threshold"),
        ({"threshold": 1, "patience_windows": 0}, "patience_windows"),
        ({"threshold": 1, "release_ratio": 1.5}, "release_ratio"),
        ({"threshold": 1, "cooldown_seconds": -1}, "cooldown"),
    ],
)
def test_settings_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        DetectorSettings(**kwargs)


def run_full(scores, **settings):
    """(state, window, event id) for every transition, updates included."""
    counter = itertools.count()
    det = Detector(DetectorSettings(threshold=1.0, **settings), new_id=lambda: f"ev{next(counter)}")
    out = []
    for i, s in enumerate(scores):
        out += [(t.state, i, t.event.event_id) for t in det.update(i, float(i), s)]
    return out, det


def test_explicit_off_threshold_replaces_release_ratio():
    # 0.7 is above off_threshold 0.6: the event stays open although release_ratio alone would end it.
    scores = [2, 2, 0.7, 0.7, 0.7, 0.5, 0.5]
    assert run(scores, patience_windows=2, release_ratio=0.9, off_threshold=0.6) == [
        ("start", 1, "ev0"),
        ("end", 6, "ev0"),
    ]
    assert run(scores, patience_windows=2, release_ratio=0.9)[1] == ("end", 3, "ev0")


@pytest.mark.parametrize(
    "method,expected",
    [("mean", [1.0, 2.0, 3.0, 17 / 3]), ("median", [1.0, 2.0, 3.0, 5.0]), ("max", [1.0, 3.0, 5.0, 9.0])],
)
def test_smoothing_over_last_k_windows(method, expected):
    assert smooth_series([1.0, 3.0, 5.0, 9.0, None, 4.0], 3, method) == expected + [None, 4.0]


def test_mean_smoothing_ignores_a_single_spike():
    spike = [0.5, 0.5, 3.0, 0.5, 0.5, 0.5]
    assert run(spike, patience_windows=1, cooldown_seconds=0)[0][0] == "start"
    assert run(spike, patience_windows=1, cooldown_seconds=0, smoothing_windows=4, smoothing="median") == []


def test_periodic_updates_carry_peak_mean_and_duration():
    counter = itertools.count()
    det = Detector(
        DetectorSettings(threshold=1.0, patience_windows=1, update_seconds=2.0, cooldown_seconds=0),
        new_id=lambda: f"ev{next(counter)}",
    )
    seen = []
    for i, s in enumerate([2.0, 3.0, 4.0, 2.0, 6.0, 0.1]):
        seen += det.update(i, float(i), s)
    assert [(t.state, t.window_index) for t in seen] == [("start", 0), ("update", 2), ("update", 4), ("end", 5)]
    update = seen[2]
    assert update.event.peak_score == 6.0 and update.event.event_id == "ev0"
    assert update.event.mean_score == pytest.approx((2 + 3 + 4 + 2 + 6 + 0.1) / 6)  # the end window counts too
    assert seen[-1].event.duration_seconds == 5.0


def test_no_updates_when_update_seconds_is_zero():
    events, _ = run_full([2, 2, 2, 2, 2, 2], patience_windows=1)
    assert [e[0] for e in events] == ["start"]


def test_mute_ends_open_event_and_suppresses_until_the_time():
    counter = itertools.count()
    det = Detector(
        DetectorSettings(threshold=1.0, patience_windows=1, cooldown_seconds=0), new_id=lambda: f"ev{next(counter)}"
    )
    assert det.update(0, 0.0, 2.0)[0].state == "start"
    (end,) = det.mute(until_seconds=5.0, window_index=0, time_seconds=0.0)
    assert end.state == "end" and det.is_muted(4.9)
    assert [det.update(i, float(i), 2.0) for i in range(1, 5)] == [[], [], [], []]
    assert det.update(5, 5.0, 2.0)[0].state == "start"  # the mute has expired


def test_no_second_event_inside_the_cooldown_with_smoothing_and_updates():
    # A fault that flickers: one event, then silence for the whole cooldown despite bursts above threshold.
    scores = [3, 3, 0, 0, 3, 3, 3, 0, 0, 3, 3, 0, 0]
    events, _ = run_full(scores, patience_windows=2, cooldown_seconds=10, smoothing_windows=2, smoothing="max")
    assert [e for e in events if e[0] == "start"] == [("start", 1, "ev0")]


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"threshold": 1, "off_threshold": 2}, "off_threshold"),
        ({"threshold": 1, "smoothing_windows": 0}, "smoothing_windows"),
        ({"threshold": 1, "smoothing": "mode"}, "smoothing"),
        ({"threshold": 1, "update_seconds": -1}, "update_seconds"),
    ],
)
def test_new_settings_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        DetectorSettings(**kwargs)


def test_defaults_are_declared_once_for_the_settings_and_the_config():
    """DetectorConfig said update_seconds 60 and DetectorSettings 0: a library user got no updates."""
    import dataclasses

    from device.settings.schema import DetectorConfig

    config = DetectorConfig()
    for field in dataclasses.fields(DetectorSettings):
        if field.name != "threshold":
            assert getattr(config, field.name) == field.default, field.name

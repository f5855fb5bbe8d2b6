"""replay --plot: the score line, the dashed threshold and shaded events land where they should."""

from __future__ import annotations

import numpy as np

from device.plot import EVENT_SHADE, SCORE, THRESHOLD, score_plot_rgb


def test_plot_marks_threshold_events_and_scores():
    times = np.arange(1, 101) * 0.5
    scores = [0.5] * 40 + [2.0] * 20 + [None] * 5 + [0.5] * 35
    img = score_plot_rgb(times, scores, threshold=1.0, events=[(20.0, 30.0)], width=500, height=200)
    assert img.shape == (200, 500, 3)
    colours = {tuple(c) for c in img.reshape(-1, 3)}
    assert {SCORE, THRESHOLD, EVENT_SHADE} <= colours
    # Inside the event span the background is shaded; outside it is not.
    x_event, x_before = int(25 / 50 * 499), int(5 / 50 * 499)
    assert tuple(img[5, x_event]) == EVENT_SHADE and tuple(img[5, x_before]) != EVENT_SHADE
    # The score line is higher (smaller row) inside the burst than before it.
    rows = lambda x: np.where((img[:, x] == SCORE).all(axis=1))[0]  # noqa: E731
    assert rows(x_event).mean() < rows(x_before).mean()

"""replay --plot: the score line, the dashed threshold and shaded events land where they should."""

from __future__ import annotations

import sys

import numpy as np

from device.evidence.plot import EVENT_SHADE, SCORE, THRESHOLD, score_plot_rgb, write_score_plot


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


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_write_score_plot_labels_files_with_matplotlib(tmp_path):
    """On a laptop (matplotlib installed) the plot is a labelled figure; files are named on the time axis."""
    times = [1.0, 1.5, 2.0, 3.0, 3.5, 4.0]
    scores = [1.0, None, 5.0, 1.2, 1.1, 90.0]
    out = write_score_plot(tmp_path / "a.png", times, scores, 3.0, [(2.0, 2.5)], [(0.0, "a.wav"), (2.5, "b.wav")])
    assert _png_size(out) == (1200, 360)


def test_write_score_plot_falls_back_to_numpy_without_matplotlib(tmp_path, monkeypatch):
    """On a bare Pi (no matplotlib) the numpy drawing is written instead."""
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)  # import raises ImportError
    out = write_score_plot(tmp_path / "b.png", [1.0, 2.0], [1.0, 2.0], 3.0)
    assert _png_size(out) == (1200, 320)

"""Score-over-time plot for `replay --plot`: with matplotlib when it is installed (axes, labels, file
names), else drawn with numpy into a PNG, so the plot also works on a bare Pi."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .png import write_png

BACKGROUND = (255, 255, 255)
EVENT_SHADE = (255, 214, 214)
THRESHOLD = (200, 30, 30)
SCORE = (31, 90, 180)
GATED = (190, 190, 190)
GRID = (232, 232, 232)
MARGIN_PIXELS = 8


def score_plot_rgb(
    times_seconds: Sequence[float],
    scores: Sequence[float | None],
    threshold: float,
    events: Sequence[tuple[float, float]] = (),
    width: int = 1200,
    height: int = 320,
) -> np.ndarray:
    """Draw window scores over stream time, the threshold and the event spans.

    Time runs left to right over [0, last time]; scores bottom to top over
    [0, 1.2 * max(scores, threshold)]; consecutive scored windows are joined by
    straight lines. Gated windows (None) are ticks along the bottom; events are
    shaded from start to end; the threshold is a dashed red line. Faint grid
    lines mark every tenth of the score range. There is no text: the axes'
    spans are in the caller's log line.

    Args:
        times_seconds: stream time at each window's end (seconds).
        scores: the windows' scores, None for gated windows.
        threshold: the detector threshold (score units).
        events: (start, end) stream times of each event, seconds.

    Returns:
        uint8 (height, width, 3).
    """
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[:] = BACKGROUND
    t = np.asarray(times_seconds, dtype=np.float64)
    valid = np.array([s is not None for s in scores], dtype=bool)
    values = np.array([np.nan if s is None else float(s) for s in scores], dtype=np.float64)
    t_max = float(t.max()) if len(t) else 1.0
    top = 1.2 * max(float(np.nanmax(values)) if valid.any() else 0.0, threshold, 1e-9)
    inner_h = height - 2 * MARGIN_PIXELS

    def x_of(seconds: np.ndarray | float) -> np.ndarray:
        return np.clip(np.round(np.asarray(seconds) / max(t_max, 1e-9) * (width - 1)), 0, width - 1).astype(int)

    def y_of(value: np.ndarray | float) -> np.ndarray:
        y = MARGIN_PIXELS + (1.0 - np.asarray(value) / top) * inner_h
        return np.clip(np.round(y), 0, height - 1).astype(int)

    for k in range(1, 10):
        img[y_of(top * k / 10), :] = GRID
    for start, end in events:
        img[:, x_of(start) : x_of(end) + 1] = EVENT_SHADE
    dash = (np.arange(width) // 8) % 2 == 0
    img[y_of(threshold), dash] = THRESHOLD
    img[height - 3 :, x_of(t[~valid])] = GATED
    _polyline(img, x_of(t[valid]), y_of(values[valid]), SCORE)
    return img


def _polyline(img: np.ndarray, xs: np.ndarray, ys: np.ndarray, colour: tuple[int, int, int]) -> None:
    """Join consecutive (x, y) points with 2-pixel-thick straight segments, in place."""
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        cols = np.arange(x0, x1 + 1)
        if len(cols) == 0:
            continue
        # The segment's y at each column's left and right edge; the column covers both.
        frac = (cols - x0) / max(x1 - x0, 1)
        y_left = y0 + (y1 - y0) * np.clip(frac - 0.5 / max(x1 - x0, 1), 0, 1)
        y_right = y0 + (y1 - y0) * np.clip(frac + 0.5 / max(x1 - x0, 1), 0, 1)
        lo = np.floor(np.minimum(y_left, y_right)).astype(int)
        hi = np.ceil(np.maximum(y_left, y_right)).astype(int) + 1
        for c, a, b in zip(cols, lo, hi):
            img[max(a, 0) : min(b + 1, img.shape[0]), c] = colour


def write_score_plot(
    path: str | os.PathLike,
    times_seconds: Sequence[float],
    scores: Sequence[float | None],
    threshold: float,
    events: Sequence[tuple[float, float]] = (),
    streams: Sequence[tuple[float, str]] = (),
) -> Path:
    """The score plot as a PNG file: a labelled matplotlib figure if matplotlib is installed, else score_plot_rgb.

    Args:
        streams: (start time in seconds, name) of each replayed file on the common time axis.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - optional, slow to import
        from matplotlib.figure import Figure  # noqa: PLC0415
    except ImportError:
        return write_png(path, score_plot_rgb(times_seconds, scores, threshold, events))
    t = np.asarray(times_seconds, dtype=np.float64)
    values = np.array([np.nan if v is None else float(v) for v in scores], dtype=np.float64)
    breaks = np.searchsorted(t, [start for start, _ in streams[1:]], side="right")
    line_t, line_v = np.insert(t, breaks, np.nan), np.insert(values, breaks, np.nan)  # no line joins two files
    fig = Figure(figsize=(12, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for k, (start, end) in enumerate(events):
        ax.axvspan(start, end, color="#ffd6d6", label="event" if k == 0 else None)
    ax.plot(line_t, line_v, color="#1f5ab4", lw=1.5, marker=".", ms=3, label="window score")
    gated = np.isnan(values)
    if gated.any():
        floor = np.full(int(gated.sum()), np.nanmin(values) if np.isfinite(values).any() else 0.0)
        ax.plot(t[gated], floor, "|", color="#999999", label="below level gate")
    ax.axhline(threshold, color="#c81e1e", ls="--", lw=1, label=f"threshold {threshold:.4g}")
    for k, (start, name) in enumerate(streams):
        if k:
            ax.axvline(start, color="#888888", lw=0.8)
        ax.annotate(
            Path(name).name,
            (start, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -3),
            textcoords="offset points",
            va="top",
            fontsize=7,
            color="#444444",
        )
    ax.set_xlabel("time (s, files one after another)" if len(streams) > 1 else "time (s)")
    ax.set_ylabel("anomaly score")
    ax.set_xlim(0, max(float(t.max()) if len(t) else 1.0, 1e-6))
    top = float(np.nanmax(values)) if np.isfinite(values).any() else threshold
    if top > 20 * threshold:  # clear faults would flatten everything near the threshold
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, format="png")
    return out

"""The evidence spectrogram marks the bands an alarm names: brackets on the frequency axis, labels, edge lines."""

from __future__ import annotations

import numpy as np

from device.analysis.explain import STEADY, TRANSIENT, BandRise
from device.analysis.features import FeatureParams
from device.audio.ring_buffer import RingBuffer
from device.evidence.clips import EvidenceRecorder
from device.evidence.marks import (
    BRACKET_LEFT,
    LABEL_HEIGHT,
    MARGIN_PIXELS,
    STEADY_COLOUR,
    TRANSIENT_COLOUR,
    _label_tops,
    band_rows,
    label_text,
    mark_bands,
)
from device.evidence.png import spectrogram_rgb
from tests.unit.test_evidence import _decode_png

PARAMS = FeatureParams()
RATE = PARAMS.sample_rate_hz
N = PARAMS.n_mels


def _band(first: int, last: int, kind: str = STEADY, db: float = 8.6) -> BandRise:
    return BandRise(100.0 * first, 100.0 * (last + 1), db, 5.0, kind, first, last)


def _colour_rows(image: np.ndarray, column: int, colour) -> set[int]:
    return {int(r) for r in np.flatnonzero(np.all(image[:, column] == colour, axis=1))}


def test_no_band_leaves_the_spectrogram_as_it_is():
    spectrogram = spectrogram_rgb(np.full((20, N), -50.0))
    assert mark_bands(spectrogram, (), N) is spectrogram


def test_brackets_cover_exactly_their_bands_rows():
    spectrogram = spectrogram_rgb(np.full((40, N), -50.0))  # scale 2: 128 rows
    steady, transient = _band(20, 23), _band(50, 52, TRANSIENT, db=4.0)
    image = mark_bands(spectrogram, (steady, transient), N)
    assert image.shape[0] == spectrogram.shape[0] and image.shape[1] > spectrogram.shape[1]
    margin = image.shape[1] - spectrogram.shape[1]
    assert margin == MARGIN_PIXELS
    np.testing.assert_array_equal(
        image[:, margin:][~_edge_rows(image, margin)], spectrogram[~_edge_rows(image, margin)]
    )
    column = BRACKET_LEFT + 1  # inside the bracket
    top, bottom = band_rows(steady, N, 2)
    assert (top, bottom) == ((N - 1 - 23) * 2, (N - 20) * 2 - 1)  # low bands at the bottom
    assert _colour_rows(image, column, STEADY_COLOUR) == set(range(top, bottom + 1))  # solid
    t_top, t_bottom = band_rows(transient, N, 2)
    dashed = _colour_rows(image, column, TRANSIENT_COLOUR)
    assert dashed and dashed < set(range(t_top, t_bottom + 1))  # dashed: some rows, only its own


def _edge_rows(image: np.ndarray, margin: int) -> np.ndarray:
    """Rows where a dashed edge line crosses the spectrogram."""
    inside = image[:, margin:]
    return np.any(np.all(inside == STEADY_COLOUR, axis=2) | np.all(inside == TRANSIENT_COLOUR, axis=2), axis=1)


def test_labels_do_not_overlap_and_stay_inside():
    rows = [band_rows(_band(k, k), N, 2) for k in (30, 31, 32)]  # three neighbouring single bands
    tops = sorted(_label_tops(rows, 128))
    assert all(b - a >= LABEL_HEIGHT for a, b in zip(tops, tops[1:]))
    edge = sorted(_label_tops([band_rows(_band(0, 0), N, 2), band_rows(_band(1, 1), N, 2)], 128))
    assert edge[-1] + LABEL_HEIGHT <= 128 and edge[1] - edge[0] >= LABEL_HEIGHT
    assert label_text(_band(0, 0, db=8.64)) == "+8.6dB" and label_text(_band(0, 0, db=123.4)) == "+123dB"


def test_the_recorder_writes_the_marked_png(tmp_path):
    rec = EvidenceRecorder(tmp_path, PARAMS, pre_roll_seconds=1.0, post_roll_seconds=2.0, quota_mb=10)
    ring = RingBuffer(PARAMS.window_samples, PARAMS.hop_samples, capacity_samples=int(rec.history_seconds * RATE))
    rng = np.random.default_rng(0)
    ring.push((0.05 * rng.standard_normal(2 * RATE)).astype(np.float32))
    band = _band(40, 43)
    name = rec.start("marked", start_seconds=2.0, wall_time=0.0, bands=(band,))
    plain = rec.start("plain", start_seconds=2.0, wall_time=0.0)
    ring.push((0.05 * rng.standard_normal(3 * RATE)).astype(np.float32))
    rec.poll(ring)
    marked = _decode_png((tmp_path / name.replace(".wav", ".png")).read_bytes())
    unmarked = _decode_png((tmp_path / plain.replace(".wav", ".png")).read_bytes())
    margin = marked.shape[1] - unmarked.shape[1]
    assert margin > 0 and marked.shape[0] == unmarked.shape[0] == 2 * N
    top, bottom = band_rows(band, N, 2)
    assert _colour_rows(marked, BRACKET_LEFT + 1, STEADY_COLOUR) == set(range(top, bottom + 1))
    # The label is drawn in the bracket's colour left of it, beside the band.
    label_rows = set(
        np.flatnonzero(np.all(marked[:, : BRACKET_LEFT - 1] == STEADY_COLOUR, axis=2).any(axis=1)).tolist()
    )
    assert label_rows and min(label_rows) >= top - LABEL_HEIGHT and max(label_rows) <= bottom + LABEL_HEIGHT

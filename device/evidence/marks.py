"""Marks on the evidence spectrogram: the bands an alarm names, bracketed on the frequency axis with their rise in dB.

Drawn with numpy into the RGB array png.py writes (a 3x5 pixel font for the labels), so a bare Pi draws them
with no imaging library.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..analysis.explain import STEADY, BandRise

STEADY_COLOUR = (235, 40, 40)  # red: the band's average level rose; solid bracket
TRANSIENT_COLOUR = (235, 40, 235)  # magenta: only its peaks rose; dashed bracket (told apart without colour too)
MARGIN_BACKGROUND = (24, 24, 24)
FONT_SCALE = 2  # each font pixel is 2 x 2 image pixels: 6 x 10 per character
BRACKET_WIDTH = 3
DASH_PIXELS = 4

# 3 x 5 glyphs, rows top to bottom, '#' set: the characters a label needs ('+8.6dB', '-', 'k', 'Hz').
_GLYPHS = {
    "0": ("###", "#.#", "#.#", "#.#", "###"),
    "1": (".#.", "##.", ".#.", ".#.", "###"),
    "2": ("###", "..#", "###", "#..", "###"),
    "3": ("###", "..#", ".##", "..#", "###"),
    "4": ("#.#", "#.#", "###", "..#", "..#"),
    "5": ("###", "#..", "###", "..#", "###"),
    "6": ("###", "#..", "###", "#.#", "###"),
    "7": ("###", "..#", ".#.", ".#.", ".#."),
    "8": ("###", "#.#", "###", "#.#", "###"),
    "9": ("###", "#.#", "###", "..#", "###"),
    "+": ("...", ".#.", "###", ".#.", "..."),
    "-": ("...", "...", "###", "...", "..."),
    ".": ("...", "...", "...", "...", ".#."),
    "d": ("..#", "..#", "###", "#.#", "###"),
    "B": ("##.", "#.#", "##.", "#.#", "##."),
    " ": ("...", "...", "...", "...", "..."),
}
_GLYPH_W, _GLYPH_H = 3, 5
CHAR_PIXELS = (_GLYPH_W + 1) * FONT_SCALE  # one blank column between characters
LABEL_HEIGHT = _GLYPH_H * FONT_SCALE
# The margin left of the spectrogram: 2 px, a 6-character label, 2 px, the bracket, 3 px (its ticks).
BRACKET_LEFT = 2 + 6 * CHAR_PIXELS + 2
MARGIN_PIXELS = BRACKET_LEFT + BRACKET_WIDTH + 3


def label_text(band: BandRise) -> str:
    """'+8.6dB' (one decimal; whole dB from 100 on, so the label stays 6 characters)."""
    db = band.db_above_normal
    return f"+{db:.1f}dB" if db < 99.95 else f"+{min(db, 999.0):.0f}dB"


def draw_text(image: np.ndarray, text: str, top: int, left: int, colour: tuple[int, int, int]) -> None:
    """Draw text in the 3x5 font at FONT_SCALE, in place; pixels outside the image are skipped."""
    height, width = image.shape[:2]
    for k, char in enumerate(text):
        glyph = _GLYPHS.get(char, _GLYPHS[" "])
        mask = np.array([[c == "#" for c in row] for row in glyph], dtype=bool)
        mask = np.repeat(np.repeat(mask, FONT_SCALE, axis=0), FONT_SCALE, axis=1)
        y0, x0 = top, left + k * CHAR_PIXELS
        ys, xs = np.nonzero(mask)
        ys, xs = ys + y0, xs + x0
        inside = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
        image[ys[inside], xs[inside]] = colour


def band_rows(band: BandRise, n_mels: int, scale: int) -> tuple[int, int]:
    """(top row, bottom row) of a band range in spectrogram_rgb's image (low bands at the bottom), inclusive."""
    return (n_mels - 1 - band.last_band) * scale, (n_mels - band.first_band) * scale - 1


def mark_bands(spectrogram: np.ndarray, bands: Sequence[BandRise], n_mels: int) -> np.ndarray:
    """The spectrogram image with a margin on its left that brackets each named band range and gives its rise.

    A solid red bracket is a steady rise, a dashed magenta one a transient rise; dashed lines of the same
    colour run across the spectrogram at the range's edges, and the label ('+8.6dB') is in the same colour,
    beside its bracket or, when neighbouring ranges crowd it, just above or below in frequency order. The
    strongest range is drawn last (on top).

    Args:
        spectrogram: uint8 (n_mels * scale, width, 3) from png.spectrogram_rgb.
        bands: the event's band ranges (explain.BandRise), strongest first.

    Returns:
        uint8 (n_mels * scale, MARGIN_PIXELS + width, 3); the spectrogram unchanged if there is no band.
    """
    if not bands:
        return spectrogram
    height, width = spectrogram.shape[:2]
    scale = max(1, height // n_mels)
    bracket_left, margin = BRACKET_LEFT, MARGIN_PIXELS
    image = np.empty((height, margin + width, 3), dtype=np.uint8)
    image[:, :margin] = MARGIN_BACKGROUND
    image[:, margin:] = spectrogram
    dashes = (np.arange(width) // DASH_PIXELS) % 2 == 0
    label_tops = _label_tops([band_rows(b, n_mels, scale) for b in bands], height)
    for band, label_top in reversed(list(zip(bands, label_tops))):
        colour = STEADY_COLOUR if band.kind == STEADY else TRANSIENT_COLOUR
        top, bottom = band_rows(band, n_mels, scale)
        top, bottom = max(0, top), min(height - 1, bottom)
        rows = np.arange(top, bottom + 1)
        if band.kind != STEADY:  # dashed bracket for a transient rise
            rows = rows[((rows - top) // 2) % 2 == 0]
        image[rows, bracket_left : bracket_left + BRACKET_WIDTH] = colour
        for edge in (top, bottom):  # ticks into the spectrogram's edge, dashed lines across it
            image[edge, bracket_left:margin] = colour
            image[edge, margin:][dashes] = colour
        draw_text(image, label_text(band), label_top, 2, colour)  # in its bracket's colour: which label is whose
    return image


def _label_tops(rows: Sequence[tuple[int, int]], height: int) -> list[int]:
    """Top row of each band's label: centred on its band, pushed apart so that no two overlap, inside the image.

    Adjacent bands (a fault often raises neighbouring ranges differently) would otherwise print their labels
    over each other. The labels are laid out top to bottom, each at least one label below the one above it,
    then pushed back up from the bottom edge; a stack taller than the image overlaps as little as it can.
    """
    gap = LABEL_HEIGHT + 2
    wanted = [(top + bottom + 1) // 2 - LABEL_HEIGHT // 2 for top, bottom in rows]
    order = sorted(range(len(rows)), key=lambda k: wanted[k])
    placed = [0] * len(rows)
    previous = None
    for k in order:
        placed[k] = max(wanted[k], 0 if previous is None else previous + gap)
        previous = placed[k]
    following = None
    for k in reversed(order):
        limit = height - LABEL_HEIGHT if following is None else following - gap
        placed[k] = max(0, min(placed[k], limit))
        following = placed[k]
    return placed

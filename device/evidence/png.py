"""Minimal PNG writing with numpy and zlib only, so a bare Raspberry Pi can draw evidence and score plots."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ..state import atomic_write

# Anchor colours of a perceptually ordered dark-blue -> green -> yellow map (close to matplotlib's
# viridis at 0, 0.25, 0.5, 0.75 and 1), interpolated linearly in between.
_COLORMAP_ANCHORS = np.array(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64
)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(rgb: np.ndarray) -> bytes:
    """The bytes of an 8-bit RGB PNG.

    Args:
        rgb: uint8 array (height, width, 3), row 0 at the top.

    Returns:
        A complete PNG file: signature, IHDR, one zlib-compressed IDAT (filter 0 on
        every row) and IEND.
    """
    image = np.ascontiguousarray(rgb, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"expected a non-empty (height, width, 3) array, got shape {image.shape}")
    height, width, _ = image.shape
    rows = np.concatenate([np.zeros((height, 1), dtype=np.uint8), image.reshape(height, width * 3)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit, colour type 2 (RGB)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + _chunk(b"IEND", b"")
    )


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write an RGB image (see encode_png) atomically (device.state.atomic_write)."""
    target = Path(path)
    atomic_write(target, encode_png(rgb))
    return target


def colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (clipped) to uint8 RGB with a dark-to-bright perceptual colour map.

    Args:
        values: float array of any shape.

    Returns:
        uint8 array of shape values.shape + (3,).
    """
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)), 0.0, 1.0)
    stops = np.linspace(0.0, 1.0, len(_COLORMAP_ANCHORS))
    channels = [np.interp(v, stops, _COLORMAP_ANCHORS[:, c]) for c in range(3)]
    return np.stack(channels, axis=-1).round().astype(np.uint8)


def spectrogram_rgb(logmel: np.ndarray, dynamic_range_db: float = 80.0, scale: int = 2) -> np.ndarray:
    """An image of a log-mel spectrogram: time left to right, low bands at the bottom.

    Args:
        logmel: float array (n_frames, n_mels) in dB.
        dynamic_range_db: the colours span [max - range, max] dB; quieter is the darkest colour.
        scale: each frame and band becomes a scale x scale block of pixels.

    Returns:
        uint8 (n_mels * scale, n_frames * scale, 3).
    """
    x = np.asarray(logmel, dtype=np.float64)
    if x.size == 0:
        x = np.full((1, max(1, x.shape[-1] if x.ndim == 2 else 1)), -100.0)
    top = float(x.max())
    image = colormap((x.T[::-1] - (top - dynamic_range_db)) / dynamic_range_db)
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)

"""Find and load training recordings, and cut them into patches with the device's own front end."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from device.audio_io import read_wav, to_mono
from device.errors import AcmonError
from device.features import FeatureParams, extract_patch
from device.pipeline import iter_windows
from device.resample import resample
from device.sources import WAV_SUFFIXES

logger = logging.getLogger(__name__)

# DCASE 2020 Task 2 file names: normal_id_00_00000000.wav, anomaly_id_02_00000123.wav
DCASE_NAME = re.compile(r"^(?P<label>normal|anomaly)_id_(?P<machine_id>\d+)_(?P<index>\d+)\.wav$", re.IGNORECASE)


@dataclass
class LoadReport:
    """What loading a set of files did: files used, files skipped (with reasons), audio duration."""

    loaded: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        text = f"{len(self.loaded)} file(s), {self.seconds / 60:.1f} min of audio"
        if self.failed:
            text += f"; {len(self.failed)} unreadable file(s) skipped"
        return text


def find_normal_training_files(data_dir: str | Path) -> list[Path]:
    """Normal training clips: DATA/train/normal_*.wav (DCASE layout), else every .wav in DATA.

    Raises:
        AcmonError: the folder does not exist or holds no usable file.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise AcmonError(f"{root}: no such data folder; give the machine folder with its train/ subfolder")
    train = root / "train"
    if train.is_dir():
        files = sorted(p for p in train.iterdir() if p.suffix.lower() in WAV_SUFFIXES)
        dcase = [p for p in files if DCASE_NAME.match(p.name)]
        if dcase:
            files = [p for p in dcase if DCASE_NAME.match(p.name).group("label").lower() == "normal"]
    else:
        files = sorted(p for p in root.iterdir() if p.suffix.lower() in WAV_SUFFIXES)
    if not files:
        raise AcmonError(f"{root}: no .wav files found (looked in {train if train.is_dir() else root})")
    return files


def load_clip(path: Path, sample_rate_hz: int, channel: int | None = None) -> np.ndarray:
    """A recording as mono float32 at sample_rate_hz (polyphase resampling when needed)."""
    samples, rate = read_wav(path)
    mono = to_mono(samples, channel)
    if rate != sample_rate_hz:
        mono = resample(mono, rate, sample_rate_hz).astype(np.float32)
    return mono


def load_clips(paths: Sequence[Path], sample_rate_hz: int) -> tuple[list[np.ndarray], LoadReport]:
    """Load many recordings; an unreadable one is logged, counted and skipped, never fatal."""
    report = LoadReport()
    clips = []
    for path in paths:
        try:
            clip = load_clip(path, sample_rate_hz)
        except AcmonError as exc:
            logger.warning("skipping %s", exc)
            report.failed.append((path, str(exc)))
            continue
        clips.append(clip)
        report.loaded.append(path)
        report.seconds += len(clip) / sample_rate_hz
    return clips, report


def clip_patches(clips: Iterable[np.ndarray], params: FeatureParams, hop_samples: int | None = None) -> np.ndarray:
    """Normalized log-mel patches of whole clips, windowed exactly as the device windows a stream.

    Args:
        clips: mono float32 arrays at params.sample_rate_hz.
        hop_samples: window step; the device's params.hop_samples unless given.

    Returns:
        float32 (n_patches, n_frames, n_mels).
    """
    patches = [
        extract_patch(window.samples, params) for clip in clips for window in iter_windows([clip], params, hop_samples)
    ]
    if not patches:
        return np.zeros((0, *params.patch_shape), dtype=np.float32)
    return np.stack(patches).astype(np.float32)

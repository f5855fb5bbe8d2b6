"""The normal sound's level per mel band, measured on the normal training recordings and stored in the model.

Events name the bands that rose against these levels (device/analysis/explain.py). They are measured on the
device's own windows (the pipeline's ring buffer and front end, at the device's hop) of every normal
recording, whatever model is trained on them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from device.analysis.explain import band_summary, fit_band_levels
from device.analysis.features import FeatureParams, FrameCache
from device.analysis.metadata import BandLevelsRecord
from device.pipeline import iter_windows

logger = logging.getLogger(__name__)


def measure_band_levels(
    clips: Sequence[np.ndarray], params: FeatureParams, progress: bool = False
) -> BandLevelsRecord | None:
    """The metadata record of the normal band levels of clips.

    Args:
        clips: normal recordings, mono float32 at params.sample_rate_hz.
        progress: show a progress bar on stderr.

    Returns:
        The record, or None (logged) when the clips hold fewer than 2 analysis windows.
    """
    means, peaks = [], []
    for clip in tqdm(clips, desc="band levels", unit="recording", disable=not progress, leave=False):
        frames = FrameCache(params)
        for window in iter_windows([clip], params):
            mean_db, peak_db = band_summary(frames.logmel(window.samples, window.start_sample))
            means.append(mean_db)
            peaks.append(peak_db)
    if len(means) < 2:
        logger.warning("fewer than 2 normal windows: the model records no normal band levels, its events name no bands")
        return None
    levels = fit_band_levels(np.stack(means), np.stack(peaks))
    return BandLevelsRecord.model_validate(levels.to_record_fields())

"""The one log-mel front end: framing, window, FFT, mel filterbank, log and per-window normalization.

Training imports this module; nothing else in the project computes features.
It imports numpy only, so it runs unchanged on the device, in training and in
tests (a test checks that importing it pulls in no tensorflow, sounddevice or
paho).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import ConfigDict, ValidationError
from pydantic.dataclasses import dataclass

from ..errors import ModelError

# Bumped whenever the arithmetic below changes in a way that changes feature
# values. A model records the version it was trained with and the device
# refuses a model trained on a different front end.
FRONTEND_VERSION = 1

NORMALIZATIONS = ("zscore", "mean", "none")

# Power below this is treated as this (-100 dB re full scale). Keeps log() finite
# on digital silence and bounds the dynamic range the int8 input must cover.
POWER_FLOOR = 1e-10

# Added to the standard deviation in z-score normalization so that a constant
# window (digital silence, a flat-lined microphone) maps to zeros, not NaN.
STD_EPSILON = 1e-3


# Strict: a metadata document with "n_fft": "512" or 512.5 is refused, not coerced. extra="forbid": an unknown
# field is a newer front end. The docstrings under the fields are their descriptions (the config's
# `features` section shows them).
_FEATURE_PARAMS_CONFIG = ConfigDict(strict=True, extra="forbid", use_attribute_docstrings=True)


@dataclass(frozen=True, config=_FEATURE_PARAMS_CONFIG)
class FeatureParams:
    """Every parameter that changes feature values; stored in each model's metadata.

    If you change the way you preprocess the input, change these and retrain:
    the device refuses a model whose parameters differ from what it computes.
    Invalid values raise ValueError (pydantic's ValidationError is one).
    """

    frontend_version: int = FRONTEND_VERSION
    """Version of the arithmetic in device/analysis/features.py the model was trained with."""
    sample_rate_hz: int = 16000
    """Sample rate the front end expects, in hertz. Other rates are resampled first."""
    n_fft: int = 512
    """STFT frame length and FFT size, in samples (512 = 32 ms at 16 kHz)."""
    stft_hop_samples: int = 256
    """Step between STFT frames, in samples (256 = 16 ms at 16 kHz)."""
    n_mels: int = 64
    """Number of mel bands."""
    fmin_hz: float = 50.0
    """Lower edge of the lowest mel band, in hertz."""
    fmax_hz: float = 8000.0
    """Upper edge of the highest mel band, in hertz (at most sample_rate_hz / 2)."""
    window_samples: int = 16640
    """Length of one analysis window (one model input), in samples (1.04 s at 16 kHz: 64 frames)."""
    hop_samples: int = 8192
    """Step between analysis windows, in samples (0.512 s at 16 kHz: 32 STFT hops, so overlapping windows share
    32 of their 64 frames and each frame is computed once; models made before acmon 0.2 have 8320)."""
    normalization: str = "mean"
    """Per-window normalization: 'mean' (subtract the window's mean level), 'zscore' (also divide by its spread) or 'none'."""

    def __post_init__(self) -> None:
        problems = []
        if self.sample_rate_hz <= 0:
            problems.append(f"sample_rate_hz must be positive (got {self.sample_rate_hz})")
        if self.n_fft < 16 or self.n_fft & (self.n_fft - 1):
            problems.append(f"n_fft must be a power of two >= 16 (got {self.n_fft})")
        if not 0 < self.stft_hop_samples <= self.n_fft:
            problems.append(f"stft_hop_samples must be in 1..n_fft (got {self.stft_hop_samples})")
        if self.n_mels < 1:
            problems.append(f"n_mels must be >= 1 (got {self.n_mels})")
        if not 0 <= self.fmin_hz < self.fmax_hz <= self.sample_rate_hz / 2:
            problems.append(f"need 0 <= fmin_hz < fmax_hz <= sample_rate_hz/2 (got {self.fmin_hz}, {self.fmax_hz})")
        if self.window_samples < self.n_fft:
            problems.append(f"window_samples must be >= n_fft (got {self.window_samples})")
        if not 0 < self.hop_samples <= self.window_samples:
            problems.append(f"hop_samples must be in 1..window_samples (got {self.hop_samples})")
        if self.normalization not in NORMALIZATIONS:
            problems.append(f"normalization must be one of {NORMALIZATIONS} (got {self.normalization!r})")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def n_frames(self) -> int:
        """STFT frames in one analysis window (no padding: frames lie wholly inside the window)."""
        return 1 + (self.window_samples - self.n_fft) // self.stft_hop_samples

    @property
    def patch_shape(self) -> tuple[int, int]:
        """Shape of one normalized feature patch: (n_frames, n_mels)."""
        return (self.n_frames, self.n_mels)

    @property
    def window_seconds(self) -> float:
        return self.window_samples / self.sample_rate_hz

    @property
    def hop_seconds(self) -> float:
        return self.hop_samples / self.sample_rate_hz

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "model metadata") -> FeatureParams:
        """Build from a dict, refusing unknown fields by name.

        Raises:
            ModelError: a field is unknown (the model is newer than this code) or invalid.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelError(
                f"{source}: unknown feature parameter {unknown[0]!r}; the model was made by a newer "
                "acmon than this device runs: upgrade acmon on the device"
            )
        try:
            return cls(**dict(data))
        except ValidationError as exc:
            raise ModelError(f"{source}: invalid feature parameters: {one_line(exc)}") from None
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{source}: invalid feature parameters: {exc}") from None

    @classmethod
    def field_descriptions(cls) -> dict[str, str]:
        """Each field's docstring, by name, one line each."""
        fields = cls.__pydantic_fields__  # type: ignore[attr-defined]
        return {name: " ".join((info.description or "").split()) for name, info in fields.items()}

    def differences(self, other: FeatureParams) -> list[tuple[str, Any, Any]]:
        """Fields whose values differ, as (name, self's value, other's value)."""
        return [
            (f.name, getattr(self, f.name), getattr(other, f.name))
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]


def one_line(exc: ValidationError) -> str:
    """A pydantic ValidationError as one line: 'field: message; field: message'."""
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: 2595 * log10(1 + f / 700)."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of hz_to_mel."""
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=8)
def mel_filterbank(params: FeatureParams) -> np.ndarray:
    """Triangular mel filters on the FFT bin frequencies.

    Band edges are n_mels + 2 points equally spaced on the HTK mel scale between
    fmin_hz and fmax_hz; filter m rises linearly from edge m to a peak of 1 at
    edge m+1 and falls to 0 at edge m+2. Filters are not area-normalized: with
    per-window normalization after the log, a constant gain per band would only
    shift the features.

    Returns:
        float32 array (n_fft // 2 + 1, n_mels); read-only, shared between calls.
    """
    n_bins = params.n_fft // 2 + 1
    bin_hz = np.arange(n_bins, dtype=np.float64) * params.sample_rate_hz / params.n_fft
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(params.fmin_hz), hz_to_mel(params.fmax_hz), params.n_mels + 2))
    lower, centre, upper = edges_hz[:-2], edges_hz[1:-1], edges_hz[2:]
    rising = (bin_hz[:, None] - lower[None, :]) / (centre - lower)[None, :]
    falling = (upper[None, :] - bin_hz[:, None]) / (upper - centre)[None, :]
    weights = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    weights.setflags(write=False)
    return weights


def mel_band_centres_hz(params: FeatureParams) -> np.ndarray:
    """Centre (peak) frequency of each mel band, in hertz: float64 (n_mels,)."""
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(params.fmin_hz), hz_to_mel(params.fmax_hz), params.n_mels + 2))
    return edges_hz[1:-1]


def tilt_weights(params: FeatureParams) -> np.ndarray:
    """Weights w with w @ band_levels_db = the least-squares slope of the band levels in dB per octave.

    The spectral tilt: how much the sound leans to low or high frequencies. The
    slope is against log2 of the band centres, so every octave counts the same
    whatever the number of mel bands in it. Adding a constant to every band
    (gain) does not change it.
    """
    octaves = np.log2(mel_band_centres_hz(params))
    centred = octaves - octaves.mean()
    return centred / np.sum(centred * centred)


@functools.lru_cache(maxsize=8)
def analysis_window(n_fft: int) -> np.ndarray:
    """Periodic Hann window of n_fft samples (the DFT-even form used for spectral analysis)."""
    n = np.arange(n_fft, dtype=np.float64)
    window = (0.5 - 0.5 * np.cos(2.0 * np.pi * n / n_fft)).astype(np.float32)
    window.setflags(write=False)
    return window


def shared_frames(params: FeatureParams) -> int | None:
    """STFT frames by which consecutive analysis windows are apart, when they share their other frames.

    With a hop that is a whole number of STFT hops (and divides the window's frames), window k+1's first
    frames are window k's last ones, sample for sample. compute_logmel then computes a window's power
    log-mel in chunks of this many frames, so that a stream (FrameCache) computes each chunk once and
    reuses it, with the same arithmetic on the same samples: features identical to the window computed
    alone, in training and on the device. None: no sharing (e.g. the 8320-sample hop of models made
    before the 8192 default, 32.5 STFT hops), one chunk of all frames.
    """
    hop, stft_hop = params.hop_samples, params.stft_hop_samples
    if hop % stft_hop:
        return None
    step = hop // stft_hop
    return step if step < params.n_frames and params.n_frames % step == 0 else None


def _chunk_logmel(samples: np.ndarray, params: FeatureParams, n: int) -> np.ndarray:
    """10*log10(max(|X|^2 @ mel, floor)) of the first n STFT frames of samples: float32 (n, n_mels).

    The same float32 arithmetic as the textbook expression, with no temporary it does not need.
    """
    frames = np.lib.stride_tricks.sliding_window_view(samples, params.n_fft)[:: params.stft_hop_samples][:n]
    spectrum = np.fft.rfft(frames * analysis_window(params.n_fft), axis=1)
    power = np.square(spectrum.real)
    power += np.square(spectrum.imag)
    mel_power = power @ mel_filterbank(params)
    np.maximum(mel_power, np.float32(POWER_FLOOR), out=mel_power)
    np.log10(mel_power, out=mel_power)
    mel_power *= np.float32(10.0)
    return mel_power


def window_chunks(samples: np.ndarray, params: FeatureParams) -> list[np.ndarray]:
    """A window's log-mel frames in the chunks compute_logmel joins (one chunk of all frames without sharing)."""
    step = shared_frames(params)
    if step is None:
        return [_chunk_logmel(samples, params, params.n_frames)]
    span = step * params.stft_hop_samples
    return [
        _chunk_logmel(samples[c * span : c * span + params.n_fft + span - params.stft_hop_samples], params, step)
        for c in range(params.n_frames // step)
    ]


def _joined(chunks: list[np.ndarray]) -> np.ndarray:
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks, axis=0)


def compute_logmel(samples: np.ndarray, params: FeatureParams) -> np.ndarray:
    """Log-mel spectrogram of one analysis window, before normalization.

    Frames start at 0, stft_hop_samples, ... and lie wholly inside the window
    (no centring, no padding), so a window's features depend on its own samples
    only: the same window gives the same features however the stream around it
    was cut into blocks, and whether a FrameCache reused its first frames.

    Args:
        samples: float32 array (window_samples,), mono, full scale = 1.0.
        params: the front end's parameters.

    Returns:
        float32 array (n_frames, n_mels): 10*log10 of the mel band power,
        floored at POWER_FLOOR (-100 dB).
    """
    return _joined(window_chunks(_window(samples, params), params))


def _window(samples: np.ndarray, params: FeatureParams) -> np.ndarray:
    """One analysis window's samples as float32, or ValueError for any other shape."""
    x = np.asarray(samples, dtype=np.float32)
    if x.shape != (params.window_samples,):
        raise ValueError(f"expected {params.window_samples} samples, got shape {x.shape}")
    return x


class FrameCache:
    """compute_logmel for the consecutive windows of one stream, each shared chunk of frames computed once.

    Windows one hop apart share all but their last chunk (shared_frames); any other step (a gated window
    in between, a new stream) computes the window whole. The result equals compute_logmel's exactly.
    """

    def __init__(self, params: FeatureParams) -> None:
        self.params = params
        self.step = shared_frames(params)
        self._start: int | None = None
        self._chunks: list[np.ndarray] = []

    def reset(self) -> None:
        self._start, self._chunks = None, []

    def logmel(self, samples: np.ndarray, start_sample: int) -> np.ndarray:
        """compute_logmel(samples) of the window that starts at stream sample start_sample."""
        p = self.params
        x = _window(samples, p)
        if self.step is not None and self._start is not None and start_sample == self._start + p.hop_samples:
            span = self.step * p.stft_hop_samples
            last = p.window_samples - (p.n_fft + span - p.stft_hop_samples)
            chunks = self._chunks[1:] + [_chunk_logmel(x[last:], p, self.step)]
        else:
            chunks = window_chunks(x, p)
        self._start, self._chunks = start_sample, chunks
        return _joined(chunks)


def normalize(logmel: np.ndarray, params: FeatureParams) -> np.ndarray:
    """Per-window normalization of a log-mel patch, as the model was trained.

    'mean' (the default) removes the window's mean level, so the model sees
    spectral shape and its changes in dB independent of microphone gain and
    distance. 'zscore' also divides by the window's spread, which removes how
    far the loud and quiet bands lie apart: measured on the detection
    benchmark, the Gaussian model lost 0.03 mean AUC with it. 'none' passes dB
    values through.

    Args:
        logmel: float32 array (n_frames, n_mels) from compute_logmel.

    Returns:
        float32 array of the same shape.
    """
    if params.normalization == "none":
        return logmel.astype(np.float32, copy=False)
    centred = logmel - np.float32(logmel.mean())
    if params.normalization == "mean":
        return centred.astype(np.float32, copy=False)
    return (centred / np.float32(logmel.std() + STD_EPSILON)).astype(np.float32)


def extract_patch(samples: np.ndarray, params: FeatureParams) -> np.ndarray:
    """The model input for one analysis window: compute_logmel then normalize.

    Args:
        samples: float32 array (window_samples,), mono, full scale = 1.0.

    Returns:
        float32 array (n_frames, n_mels).
    """
    return normalize(compute_logmel(samples, params), params)


def steady_level_dbfs(samples: np.ndarray, frame_samples: int, percentile: float = 10.0) -> float:
    """Level of the quiet part of a window: a low percentile of its per-frame RMS levels, in dBFS.

    A window where a machine starts or stops is part sound, part silence; its
    overall RMS looks like sound, but its patch (z-scored around a near-silent
    floor) looks like nothing the model was trained on and scores as a huge
    anomaly. Gating on the quiet part scores only windows that are sound
    throughout.

    Args:
        samples: float32 (n,), full scale 1.0.
        frame_samples: frame length for the per-frame RMS (the STFT hop is a good choice).
        percentile: which low percentile of frame levels to report.
    """
    return window_levels(samples, frame_samples, percentile)[1]


def window_levels(samples: np.ndarray, frame_samples: int, percentile: float = 10.0) -> tuple[float, float]:
    """(rms_dbfs, steady_level_dbfs) of one window from one pass of squares: the pipeline's level gate.

    The same values as the two functions (the percentile as numpy's linear method computes it), at a
    quarter of their cost: one float64 copy instead of three, and a partial sort of the frame powers.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        return float("-inf"), float("-inf")
    squares = x * x
    mean_square = float(np.mean(squares))
    rms = 10.0 * math.log10(mean_square) if mean_square > 0 else float("-inf")
    n = (len(x) // frame_samples) * frame_samples
    if n == 0:
        return rms, rms
    low = _percentile_linear(np.mean(squares[:n].reshape(-1, frame_samples), axis=1), percentile)
    return rms, (10.0 * math.log10(low) if low > 0 else float("-inf"))


def _percentile_linear(values: np.ndarray, percentile: float) -> float:
    """np.percentile(values, percentile) (method 'linear') bit for bit, by a partial sort of two elements."""
    n = len(values)
    k = (n - 1) * (percentile / 100.0)
    lo = int(math.floor(k))
    hi = min(lo + 1, n - 1)
    part = np.partition(values, [lo, hi]) if hi != lo else np.partition(values, lo)
    a, b = float(part[lo]), float(part[hi])
    t = k - lo
    diff = b - a
    return b - diff * (1.0 - t) if t >= 0.5 else a + diff * t


def rms_dbfs(samples: np.ndarray) -> float:
    """Root-mean-square level in dB relative to full scale (a full-scale sine is -3 dBFS)."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        return float("-inf")
    mean_square = float(np.mean(x * x))
    return 10.0 * math.log10(mean_square) if mean_square > 0 else float("-inf")

"""Reference baselines for benchmarks/bench_detection.py: the DCASE 2020 Task 2 autoencoder and a Mahalanobis detector.

These are re-implementations of other people's systems (or textbook methods), kept apart from the
project's code on purpose:

- DCASE 2020 Task 2 baseline (Koizumi et al., "Description and discussion on DCASE2020 Challenge Task2",
  and the public dcase2020_task2_baseline code). Its front end is NOT acmon's: librosa-style log-mel with
  128 Slaney mel bands (area-normalized, 0 Hz to sr/2), n_fft 1024, hop 512, centred frames with reflect
  padding, power 2, and log as 20 / power * log10(mel + eps) (= 10 * log10(mel + eps), eps = the float64
  machine epsilon, as the baseline's sys.float_info.epsilon). device/analysis/features.py cannot produce this
  (HTK mel, no area normalization, 50 Hz lower edge, no centring, a -100 dB floor), so the front end is
  implemented here in numpy, as a faithful stand-in for librosa.feature.melspectrogram (librosa is not a
  project dependency). This is the one deliberate exception to "one front end": it belongs to the
  reference system, not to acmon.
  Five consecutive frames are concatenated into 640-dim vectors; a dense autoencoder
  640-128-128-128-128-8-128-128-128-128-640 (Dense, BatchNorm, ReLU per hidden layer, linear output)
  is trained with Adam on MSE; a clip's score is the mean over its vectors of the mean squared error.
- Mahalanobis: acmon's own front end (compute_logmel, default FeatureParams, dB, no normalization),
  averaged over all frames of a clip into one 64-dim vector; the score is the Mahalanobis distance to
  the mean of the normal training clips, with a Ledoit-Wolf shrinkage covariance (few clips, 64 dims).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

# One OpenBLAS thread, as device/__init__.py sets for the daemon: the front end's matrix products are
# tiny, and on a busy 2-core machine BLAS threads made every window 20-40x slower. Before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from device.analysis.features import FeatureParams, compute_logmel
from device.analysis.gaussian import fit_gaussian

# ----------------------------------------------------------------------------------------------
# DCASE 2020 Task 2 baseline
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DcaseParams:
    """The baseline's baseline.yaml values (feature and fit sections)."""

    sample_rate_hz: int = 16000
    n_mels: int = 128
    frames: int = 5
    n_fft: int = 1024
    hop_length: int = 512
    power: float = 2.0
    epochs: int = 100
    batch_size: int = 512
    validation_split: float = 0.1
    learning_rate: float = 1e-3  # keras Adam default, as the baseline's optimizer: adam

    @property
    def dims(self) -> int:
        return self.n_mels * self.frames


def _hz_to_mel_slaney(hz: np.ndarray) -> np.ndarray:
    """Slaney's auditory-toolbox mel scale (librosa's default, htk=False): linear below 1 kHz, log above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    mel = hz / f_sp
    return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-12) / min_log_hz) / logstep, mel)


def _mel_to_hz_slaney(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


@functools.lru_cache(maxsize=4)
def slaney_mel_filterbank(sample_rate_hz: int, n_fft: int, n_mels: int) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels) with its defaults (fmin 0, fmax sr/2, htk False, norm 'slaney').

    Returns:
        float64 (n_fft // 2 + 1, n_mels).
    """
    fft_hz = np.linspace(0.0, sample_rate_hz / 2.0, n_fft // 2 + 1)
    mel_hz = _mel_to_hz_slaney(np.linspace(_hz_to_mel_slaney(0.0), _hz_to_mel_slaney(sample_rate_hz / 2.0), n_mels + 2))
    fdiff = np.diff(mel_hz)
    ramps = mel_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]  # area normalization ('slaney')
    return weights.T


def dcase_logmel(samples: np.ndarray, p: DcaseParams = DcaseParams()) -> np.ndarray:
    """The baseline's log-mel: centred STFT (reflect padding), periodic Hann, power 2, Slaney mel, 10*log10(x + eps).

    Returns:
        float32 (n_frames, n_mels), n_frames = 1 + len(samples) // hop_length.
    """
    x = np.asarray(samples, dtype=np.float64)
    pad = p.n_fft // 2
    x = np.pad(x, pad, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(x, p.n_fft)[:: p.hop_length]
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(p.n_fft) / p.n_fft)
    spectrum = np.fft.rfft(frames * window, axis=1)
    power = np.abs(spectrum) ** p.power
    mel = power @ slaney_mel_filterbank(p.sample_rate_hz, p.n_fft, p.n_mels)
    return (20.0 / p.power * np.log10(mel + sys.float_info.epsilon)).astype(np.float32)


def dcase_vectors(samples: np.ndarray, p: DcaseParams = DcaseParams()) -> np.ndarray:
    """Five consecutive log-mel frames concatenated: float32 (n_vectors, frames * n_mels), frame-major as the baseline."""
    logmel = dcase_logmel(samples, p)
    n = logmel.shape[0] - p.frames + 1
    if n < 1:
        return np.zeros((0, p.dims), dtype=np.float32)
    return np.concatenate([logmel[t : t + n] for t in range(p.frames)], axis=1)


def build_dcase_autoencoder(input_dim: int):
    """keras_model.get_model of the baseline: Dense(128)+BN+ReLU x4, Dense(8)+BN+ReLU, Dense(128)+BN+ReLU x4, Dense(input_dim)."""
    from training.tf_setup import import_tensorflow

    keras = import_tensorflow().keras
    layers = keras.layers
    inputs = keras.Input(shape=(input_dim,))
    h = inputs
    for units in (128, 128, 128, 128, 8, 128, 128, 128, 128):
        h = layers.Dense(units)(h)
        h = layers.BatchNormalization()(h)
        h = layers.Activation("relu")(h)
    outputs = layers.Dense(input_dim)(h)
    return keras.Model(inputs, outputs, name="dcase2020_baseline_ae")


class DcaseBaseline:
    """Train on normal clips, score clips by mean reconstruction error (the baseline's 00_train / 01_test)."""

    def __init__(self, params: DcaseParams = DcaseParams(), seed: int = 0):
        self.params = params
        self.seed = seed
        self.model = None
        self.epochs_run = 0

    def fit(self, clips: Sequence[np.ndarray], verbose: int = 0) -> DcaseBaseline:
        from training.tf_setup import import_tensorflow

        tf = import_tensorflow(seed=self.seed)
        p = self.params
        x = np.concatenate([dcase_vectors(c, p) for c in clips])
        self.model = build_dcase_autoencoder(p.dims)
        self.model.compile(optimizer=tf.keras.optimizers.Adam(p.learning_rate), loss="mean_squared_error")
        # The baseline shuffles within fit() and takes validation_split from the end of the (file-ordered) array.
        history = self.model.fit(
            x,
            x,
            epochs=p.epochs,
            batch_size=p.batch_size,
            shuffle=True,
            validation_split=p.validation_split,
            verbose=verbose,
        )
        self.epochs_run = len(history.history["loss"])
        return self

    def score(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """Per clip: mean over its 640-dim vectors of the mean squared reconstruction error."""
        vectors = [dcase_vectors(c, self.params) for c in clips]
        recon = self.model.predict(np.concatenate(vectors), batch_size=2048, verbose=0)
        bounds = np.cumsum([0] + [len(v) for v in vectors])
        x = np.concatenate(vectors)
        errors = np.mean(np.square(x - recon), axis=1)
        return np.array([errors[a:b].mean() for a, b in zip(bounds[:-1], bounds[1:])], dtype=np.float64)


# ----------------------------------------------------------------------------------------------
# Mahalanobis on clip-mean log-mel (acmon's front end)
# ----------------------------------------------------------------------------------------------


def clip_mean_logmel(samples: np.ndarray, params: FeatureParams = FeatureParams()) -> np.ndarray:
    """Mean over all STFT frames of a clip of device.analysis.features.compute_logmel (dB, unnormalized): (n_mels,).

    compute_logmel frames one analysis window; a window as long as the clip gives every frame of it.
    """
    x = np.asarray(samples, dtype=np.float32)
    whole = dataclasses.replace(params, window_samples=len(x), hop_samples=len(x))
    return compute_logmel(x, whole).astype(np.float64).mean(axis=0)


class MahalanobisBaseline:
    """Mahalanobis distance of a clip's mean log-mel spectrum to the normal training clips."""

    def __init__(self, params: FeatureParams = FeatureParams()):
        self.params = params
        self.mean = None
        self.shrinkage = None
        self.fit_ = None

    def fit(self, clips: Sequence[np.ndarray]) -> MahalanobisBaseline:
        x = np.stack([clip_mean_logmel(c, self.params) for c in clips])
        # The Ledoit-Wolf covariance, inverted through its eigenvectors with the smallest eigenvalues floored
        # (fit_gaussian): with 2 training clips (DCASE 2023 samples) a plain inverse gave negative distances.
        self.fit_ = fit_gaussian(x)
        self.mean, self.shrinkage = self.fit_.mean, self.fit_.shrinkage
        return self

    def score(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        x = np.stack([clip_mean_logmel(c, self.params) for c in clips])
        return np.sqrt(self.fit_.distance(x) * x.shape[1])

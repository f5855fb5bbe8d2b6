"""The Gaussian model of normal sound: per-band window statistics and their whitening.

Measured on the detection benchmark (benchmarks/bench_detection.py, 4 machine
types x 3 ids, SNR -3 to +9 dB): a Gaussian over each window's per-band mean
and maximum (log-mel, level removed) separates faults better than the
convolutional autoencoder (mean AUC 0.95 against 0.76) and than both
published baselines (0.79), because it keeps what each band does over the
window (steady balance and brief peaks) and models how the bands vary
together on a healthy machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GaussianFit:
    """Mean and whitening of normal descriptors.

    Attributes:
        mean: (d,) mean descriptor.
        whitening: (d, d) matrix W with W.T @ cov @ W = I (cov shrunk by Ledoit-Wolf).
        shrinkage: the Ledoit-Wolf shrinkage intensity used, in [0, 1].
        n: descriptors the fit saw.
    """

    mean: np.ndarray
    whitening: np.ndarray
    shrinkage: float
    n: int


def ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Ledoit-Wolf shrunk covariance of rows x (n, d), toward a scaled identity.

    Ledoit & Wolf (2004), "A well-conditioned estimator for large-dimensional
    covariance matrices"; the same estimator as sklearn.covariance.LedoitWolf.

    Returns:
        (covariance (d, d), shrinkage intensity in [0, 1]).
    """
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    if n < 2:
        raise ValueError(f"need at least 2 descriptors to estimate a covariance, got {n}")
    xc = x - x.mean(axis=0)
    sample = xc.T @ xc / n
    mu = np.trace(sample) / d
    delta = np.sum((sample - mu * np.eye(d)) ** 2) / d
    x2 = xc**2
    beta = min((np.sum(x2.T @ x2) / n - np.sum(sample**2)) / (d * n), delta)  # sum_k |x_k x_k' - S|^2 / (d n^2)
    shrinkage = beta / delta if delta > 0 else 1.0  # all variances equal: the identity target is exact
    return (1 - shrinkage) * sample + shrinkage * mu * np.eye(d), float(shrinkage)


def fit_gaussian(descriptors: np.ndarray, eigen_floor: float = 1e-6) -> GaussianFit:
    """Mean and PCA whitening of normal descriptors (n, d).

    Eigenvalues below eigen_floor times the largest are raised to it, so a
    band that never varies (digital silence above a microphone's roll-off)
    cannot produce an infinite distance.
    """
    x = np.asarray(descriptors, dtype=np.float64)
    cov, shrinkage = ledoit_wolf(x)
    eigenvalues, vectors = np.linalg.eigh(cov)
    eigenvalues = np.maximum(eigenvalues, eigen_floor * eigenvalues.max())
    return GaussianFit(mean=x.mean(axis=0), whitening=vectors / np.sqrt(eigenvalues), shrinkage=shrinkage, n=len(x))


def amplified_deviations(patches: np.ndarray, factor: float) -> np.ndarray:
    """Patches whose deviation from the mean patch is multiplied by factor.

    Used only to set int8 activation ranges: calibrated on normal patches
    alone, the whitened output would saturate at about 6 standard deviations
    and flatten the scores of clear faults. Amplified deviations widen the
    calibrated output range (factor 3: about 40 standard deviations) while the
    input range grows far less than it would with added noise.
    """
    centre = patches.mean(axis=0, keepdims=True)
    return (centre + factor * (patches - centre)).astype(np.float32)

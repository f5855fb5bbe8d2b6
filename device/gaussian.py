"""Gaussian statistics of normal sound, numpy only: training fits them, the device re-fits them on site.

The Gaussian model (training/models.py build_gaussian) outputs each window's
per-band statistics whitened by the training data's normal statistics; its
score is the mean square of that output. On site, `python -m device calibrate`
learns the site's own normal statistics of that output (SiteStatistics): a new
microphone position, a different room or a neighbouring machine shift what
"normal" looks like, and re-centring on the site's normal keeps those shifts
from reading as faults while a fault still moves the window away from it.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ModelError

# Site statistics need this many windows per dimension of the model's output (2 x 128 = 256
# windows, 2.2 minutes at the default hop); with fewer, calibration keeps the training statistics.
MIN_WINDOWS_PER_DIMENSION = 2
SITE_FILE_PREFIX = "calibration-site-"


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

    def distance(self, x: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance per dimension of each row of x (n, d), or of one vector (d,)."""
        z = (np.asarray(x, dtype=np.float64) - self.mean) @ self.whitening
        return np.mean(z * z, axis=-1)


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


def cross_fitted_distances(outputs: np.ndarray) -> np.ndarray:
    """Distances of every row to a Gaussian fitted WITHOUT it: first half scored by the second half's fit and back.

    A Gaussian scores the windows it was fitted on lower than new ones (with
    128 dimensions and a few hundred windows, by 20-50 %), so a threshold set
    on in-sample distances would alarm too often. The halves are contiguous in
    time, so neighbouring, overlapping windows never sit on both sides.
    """
    x = np.asarray(outputs, dtype=np.float64)
    half = len(x) // 2
    first, second = x[:half], x[half:]
    return np.concatenate([fit_gaussian(second).distance(first), fit_gaussian(first).distance(second)])


@dataclass(frozen=True)
class SiteStatistics:
    """A site's normal statistics of a Gaussian model's output, learnt by on-site calibration.

    Attributes:
        fit: the Gaussian of the model's (training-whitened) output on the site's normal windows.
        model_name, model_version: the model they were measured with; another model cannot use them.
    """

    fit: GaussianFit
    model_name: str
    model_version: str

    def distance(self, output: np.ndarray) -> float:
        """The site score of one window's model output."""
        return float(self.fit.distance(np.asarray(output, dtype=np.float64).reshape(-1)))

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(
            buffer,
            mean=self.fit.mean,
            whitening=self.fit.whitening,
            shrinkage=np.float64(self.fit.shrinkage),
            windows=np.int64(self.fit.n),
            model_name=np.str_(self.model_name),
            model_version=np.str_(self.model_version),
        )
        return buffer.getvalue()

    def file_name(self) -> str:
        """A name that changes with the content, so a rollback can point at the previous file."""
        return _content_name(self.to_bytes())

    def save(self, folder: str | os.PathLike) -> Path:
        """Write atomically into folder under file_name(); returns the path."""
        data = self.to_bytes()
        path = Path(folder) / _content_name(data)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SiteStatistics":
        """Read a file written by save().

        Raises:
            ModelError: unreadable, or not a site statistics file (named, with what to do).
        """
        try:
            with np.load(path, allow_pickle=False) as data:
                mean, whitening = np.asarray(data["mean"], np.float64), np.asarray(data["whitening"], np.float64)
                fit = GaussianFit(mean, whitening, float(data["shrinkage"]), int(data["windows"]))
                name, version = str(data["model_name"]), str(data["model_version"])
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(
                f"{path}: cannot read site statistics ({exc}); recalibrate, or roll back with "
                "python -m device calibrate --config FILE --rollback"
            ) from None
        if mean.ndim != 1 or whitening.shape != (mean.size, mean.size):
            raise ModelError(f"{path}: site statistics have inconsistent shapes {mean.shape} and {whitening.shape}; recalibrate")
        return cls(fit, name, version)


def _content_name(data: bytes) -> str:
    return f"{SITE_FILE_PREFIX}{hashlib.sha256(data).hexdigest()[:12]}.npz"


def fit_site_statistics(outputs: np.ndarray, model_name: str, model_version: str) -> tuple[SiteStatistics, np.ndarray]:
    """The site's statistics of the model outputs (n, d), and every window's cross-fitted site score.

    Raises:
        ValueError: fewer than MIN_WINDOWS_PER_DIMENSION * d windows.
    """
    x = np.asarray(outputs, dtype=np.float64)
    needed = MIN_WINDOWS_PER_DIMENSION * x.shape[1]
    if len(x) < needed:
        raise ValueError(f"site statistics need at least {needed} analysis windows, got {len(x)}")
    return SiteStatistics(fit_gaussian(x), model_name, model_version), cross_fitted_distances(x)

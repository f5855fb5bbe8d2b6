"""Gaussian statistics of normal sound and the scorer built on them, numpy only.

The Gaussian model (training/models.py build_gaussian) outputs each window's
per-band statistics, level and tilt, whitened by the training data's normal
statistics. The Scorer turns that output into one anomaly score from two
members: the window's own distance to normal, and the distance of the mean
output over the last few seconds (the context), which hears small steady
changes that a single second of audio hides in its own fluctuation. Each
member's distance is normalised by its spread on normal audio it was not
fitted on, and the chosen members are averaged.

Training fits the Scorer (training/fit.py) and stores it in the model file;
on site, `python -m device calibrate` fits it again on the site's own sound
and saves it beside the config (a new microphone position, room or
neighbouring machine shifts what "normal" looks like; re-centring on the
site's normal keeps those shifts from reading as faults while a fault still
moves the window away from it). Both go through fit_scorer().

Over 500 lines on purpose: the statistics, the Scorer that uses them, its cross-fitting and its bounded file
format (a site file is read from disk, so each array is checked) change together with every scorer change.
"""

from __future__ import annotations

import collections
import hashlib
import io
import math
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from ..state import PRIVATE_FILE_MODE, atomic_write
from .model_file import read_regular_file

# Site statistics need this many windows per dimension of the model's output (2 x 130 = 260
# windows, 2.3 minutes at the default hop); with fewer, calibration keeps the training statistics.
MIN_WINDOWS_PER_DIMENSION = 2
SITE_FILE_PREFIX = "calibration-site-"

MEMBERS = ("window", "context")
# The context member averages the model's output over this many windows (4.6 s at the default
# 0.51 s hop): long enough to average away most of a window's own fluctuation, short enough to
# follow a machine that changes state within a minute.
DEFAULT_CONTEXT_WINDOWS = 8
# Cross-fitting splits the normal audio into at most this many folds of whole recordings.
CROSS_FIT_FOLDS = 5
SCORER_FORMAT = 2  # 1: the window-only site statistics files of acmon 0.1 (still read)


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


def identity_fit(size: int) -> GaussianFit:
    """A fit whose distance is the mean square of the vector itself (outputs already whitened in the model)."""
    return GaussianFit(mean=np.zeros(size), whitening=np.eye(size), shrinkage=0.0, n=0)


# ---------------------------------------------------------------------------------------------
# The scorer: a Gaussian model's per-window output to one anomaly score


class ScoreState:
    """What one stream's scorer remembers: the outputs of the last windows of an uninterrupted stretch.

    A gated window or a new stream clears it (Pipeline does), so the context
    never averages audio from either side of a gap.
    """

    def __init__(self, context_windows: int):
        self._recent: collections.deque[np.ndarray] = collections.deque(maxlen=max(1, context_windows))

    def clear(self) -> None:
        self._recent.clear()

    def push(self, output: np.ndarray) -> tuple[np.ndarray, int]:
        """Add a window's output; returns (mean output over the remembered windows, how many)."""
        self._recent.append(output)
        return np.mean(self._recent, axis=0), len(self._recent)


@dataclass(frozen=True)
class Scorer:
    """A Gaussian model's per-window output (float, dequantized) to one anomaly score.

    Members:
        window: squared Mahalanobis distance per dimension of the window's output to normal outputs.
        context: the same for the mean output over the last `context_windows` windows of the stretch,
            against the statistics of such means on normal audio.
    Each member's distance d is normalised on normal audio the fits had not seen (cross-fitted):
    z = (log d - loc) / scale; the score is exp(s * mean of the chosen members' z), s the mean of
    their scales. So the score is about 1 on typical normal sound, and with the window member alone
    it is the window's distance divided by its typical normal value. While fewer than
    context_windows windows are remembered (after a start or a gap), the context's loc for that
    count is used: a mean of fewer windows lies further from normal by chance.

    Attributes:
        window, context: the fits (context None when it is not a member and was not fitted).
        window_norm: (loc, scale) of the window member's log distance.
        context_locs, context_scales: loc and scale of the context member's log distance by number of
            windows averaged (1..K); the last (a full context) is the member's scale in the combination.
        model_name, model_version: the model whose output this scores; another model cannot use it.
        info: how it was fitted (windows, folds, shrinkage), for inspection.
    """

    window: GaussianFit
    context: GaussianFit | None
    context_windows: int
    members: tuple[str, ...]
    window_norm: tuple[float, float]
    context_locs: tuple[float, ...]
    context_scales: tuple[float, ...]
    model_name: str
    model_version: str
    info: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.members or any(m not in MEMBERS for m in self.members):
            raise ValueError(f"members must be a non-empty subset of {MEMBERS}, got {self.members}")
        if "context" in self.members and (
            self.context is None
            or len(self.context_locs) != self.context_windows
            or len(self.context_scales) != self.context_windows
        ):
            raise ValueError("the context member needs a context fit and one loc and scale per window count")

    @property
    def size(self) -> int:
        return int(self.window.mean.size)

    def new_state(self) -> ScoreState:
        return ScoreState(self.context_windows if "context" in self.members else 1)

    def score(self, output: np.ndarray, state: ScoreState) -> float:
        """The score of one window's output, remembering it in state (for the context)."""
        x = np.asarray(output, dtype=np.float64).reshape(-1)
        z = []
        if "window" in self.members:
            z.append(self._z_window(float(self.window.distance(x))))
        if "context" in self.members:
            mean, k = state.push(x)
            z.append(self._z_context(float(self.context.distance(mean)), k))  # type: ignore[union-attr]
        return self._combine(z)

    def series(self, outputs: np.ndarray) -> np.ndarray:
        """Scores of one uninterrupted stretch of outputs (n, d), exactly as score() gives them one by one."""
        state = self.new_state()
        return np.array([self.score(o, state) for o in np.asarray(outputs)], dtype=np.float64)

    def fused(
        self,
        window_distances: np.ndarray | None,
        context_distances: np.ndarray | None,
        counts: np.ndarray | None,
        members: Sequence[str] | None = None,
    ) -> np.ndarray:
        """Vectorised combination of precomputed member distances (training's cross-fitted series).

        Args:
            counts: windows averaged by each context distance (1..context_windows).
            members: the members to combine (default: this scorer's).
        """
        members = tuple(members or self.members)
        z = []
        if "window" in members:
            assert window_distances is not None
            z.append((np.log(window_distances) - self.window_norm[0]) / self.window_norm[1])
        if "context" in members:
            assert context_distances is not None
            k = np.minimum(np.asarray(counts), self.context_windows) - 1
            z.append(
                (np.log(context_distances) - np.asarray(self.context_locs)[k]) / np.asarray(self.context_scales)[k]
            )
        scale = np.mean([self._scale(m) for m in members])
        return np.exp(scale * np.mean(z, axis=0))

    def with_members(self, members: Sequence[str]) -> Scorer:
        return Scorer(
            self.window,
            self.context,
            self.context_windows,
            tuple(members),
            self.window_norm,
            self.context_locs,
            self.context_scales,
            self.model_name,
            self.model_version,
            self.info,
        )

    def _scale(self, member: str) -> float:
        return self.window_norm[1] if member == "window" else self.context_scales[-1]

    def _z_window(self, d: float) -> float:
        return (math.log(max(d, 1e-300)) - self.window_norm[0]) / self.window_norm[1]

    def _z_context(self, d: float, k: int) -> float:
        i = min(k, self.context_windows) - 1
        return (math.log(max(d, 1e-300)) - self.context_locs[i]) / self.context_scales[i]

    def _combine(self, z: list[float]) -> float:
        scale = sum(self._scale(m) for m in self.members) / len(self.members)
        return math.exp(scale * sum(z) / len(z))

    # -- files ----------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        arrays: dict[str, Any] = {
            "format": np.int64(SCORER_FORMAT),
            # float32 halves the model file; the distances are still computed in float64.
            "window_mean": self.window.mean.astype(np.float32),
            "window_whitening": self.window.whitening.astype(np.float32),
            "window_shrinkage": np.float64(self.window.shrinkage),
            "window_n": np.int64(self.window.n),
            "context_windows": np.int64(self.context_windows),
            "members": np.array(self.members),
            "window_norm": np.asarray(self.window_norm, dtype=np.float64),
            "context_locs": np.asarray(self.context_locs, dtype=np.float64),
            "context_scales": np.asarray(self.context_scales, dtype=np.float64),
            "model_name": np.str_(self.model_name),
            "model_version": np.str_(self.model_version),
        }
        if self.context is not None:
            arrays.update(
                context_mean=self.context.mean.astype(np.float32),
                context_whitening=self.context.whitening.astype(np.float32),
                context_shrinkage=np.float64(self.context.shrinkage),
                context_n=np.int64(self.context.n),
            )
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, source: str) -> Scorer:
        """Read what to_bytes() wrote (or a window-only site statistics file of acmon 0.1).

        Raises:
            ModelError: unreadable or inconsistent, naming the source and what to do.
        """
        try:
            # Bounded before anything is unpacked: a few hundred KiB of statistics, not a zip bomb.
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                unpacked = sum(info.file_size for info in archive.infolist())
            if unpacked > SCORER_MAX_UNPACKED_BYTES:
                raise ModelError(
                    f"{source}: the scorer's statistics unpack to {unpacked / 2**20:.0f} MiB (at most "
                    f"{SCORER_MAX_UNPACKED_BYTES / 2**20:.0f} MiB): not acmon statistics"
                )
            with np.load(io.BytesIO(data), allow_pickle=False) as f:
                if "format" not in f:  # acmon 0.1 site statistics: the window member alone, unnormalised
                    window = GaussianFit(
                        np.asarray(f["mean"], np.float64),
                        np.asarray(f["whitening"], np.float64),
                        float(f["shrinkage"]),
                        int(f["windows"]),
                    )
                    scorer = cls(
                        window,
                        None,
                        1,
                        ("window",),
                        (0.0, 1.0),
                        (0.0,),
                        (1.0,),
                        str(f["model_name"]),
                        str(f["model_version"]),
                    )
                else:
                    context = None
                    if "context_mean" in f:
                        context = GaussianFit(
                            np.asarray(f["context_mean"], np.float64),
                            np.asarray(f["context_whitening"], np.float64),
                            float(f["context_shrinkage"]),
                            int(f["context_n"]),
                        )
                    window = GaussianFit(
                        np.asarray(f["window_mean"], np.float64),
                        np.asarray(f["window_whitening"], np.float64),
                        float(f["window_shrinkage"]),
                        int(f["window_n"]),
                    )
                    norm = np.asarray(f["window_norm"], np.float64)
                    scorer = cls(
                        window,
                        context,
                        int(f["context_windows"]),
                        tuple(str(m) for m in f["members"]),
                        (float(norm[0]), float(norm[1])),
                        tuple(float(v) for v in f["context_locs"]),
                        tuple(float(v) for v in f["context_scales"]),
                        str(f["model_name"]),
                        str(f["model_version"]),
                    )
        except (OSError, ValueError, KeyError, IndexError, TypeError, EOFError, zipfile.BadZipFile) as exc:
            raise ModelError(f"{source}: cannot read the scorer's statistics ({exc})") from None
        fits = [scorer.window] + ([scorer.context] if scorer.context is not None else [])
        for fit in fits:
            d = fit.mean.size
            if fit.mean.ndim != 1 or fit.whitening.shape != (d, d) or d != scorer.size:
                raise ModelError(
                    f"{source}: the scorer's statistics have inconsistent shapes {fit.mean.shape} and "
                    f"{fit.whitening.shape}"
                )
            if not (np.all(np.isfinite(fit.mean)) and np.all(np.isfinite(fit.whitening))):
                raise ModelError(f"{source}: the scorer's statistics are not finite")
        if not (
            scorer.window_norm[1] > 0 and min(scorer.context_scales) > 0 and np.all(np.isfinite(scorer.context_locs))
        ):
            raise ModelError(f"{source}: the scorer's normalisation is invalid")
        return scorer

    def file_name(self) -> str:
        """A name that changes with the content, so a rollback can point at the previous file."""
        return _content_name(self.to_bytes())

    def save(self, folder: str | os.PathLike) -> Path:
        """Write atomically into folder under file_name(), readable by the owner only (site state); returns the path."""
        data = self.to_bytes()
        path = Path(folder) / _content_name(data)
        atomic_write(path, data, PRIVATE_FILE_MODE)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Scorer:
        """Read a site statistics file written by save().

        Raises:
            ModelError: unreadable, or not a site statistics file (named, with what to do).
        """
        what_to_do = "recalibrate, or roll back with python -m device calibrate --config FILE --rollback"
        data = read_regular_file(
            Path(path),
            SITE_FILE_MAX_BYTES,
            what="site statistics file",
            missing_hint=what_to_do,
            kind_hint=what_to_do,
            size_hint=f"a site statistics file is under 1 MiB; {what_to_do}",
        )
        try:
            return cls.from_bytes(data, str(path))
        except ModelError as exc:
            raise ModelError(
                f"{exc}; recalibrate, or roll back with python -m device calibrate --config FILE --rollback"
            ) from None


# A site statistics file is about 100 KiB; anything far larger is not one (or is /dev/zero).
SITE_FILE_MAX_BYTES = 16 * 1024 * 1024
SCORER_MAX_UNPACKED_BYTES = 64 * 1024 * 1024


def _content_name(data: bytes) -> str:
    return f"{SITE_FILE_PREFIX}{hashlib.sha256(data).hexdigest()[:12]}.npz"


# ---------------------------------------------------------------------------------------------
# Fitting, cross-fitted


def causal_means(outputs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of each row with up to k-1 rows before it (as ScoreState gives them), and how many rows each mean has."""
    x = np.asarray(outputs, dtype=np.float64)
    csum = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)])
    end = np.arange(1, len(x) + 1)
    start = np.maximum(0, end - k)
    counts = end - start
    return (csum[end] - csum[start]) / counts[:, None], counts


@dataclass
class FoldFit:
    """The fits of one fold (on all the other folds), and how that fold's fitting saw the model's outputs."""

    window: GaussianFit
    context: GaussianFit | None
    stage1: GaussianFit | None = None
    inverse: tuple[np.ndarray, np.ndarray] | None = None

    def transform(self, outputs: np.ndarray) -> np.ndarray:
        """Outputs as this fold's own first stage would have whitened them (identity without one)."""
        x = np.asarray(outputs, dtype=np.float64)
        if self.stage1 is None or self.inverse is None:
            return x
        mean, inverse = self.inverse
        return (x @ inverse + mean - self.stage1.mean) @ self.stage1.whitening

    def distances(self, outputs: np.ndarray, context_windows: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(window distances, context distances, windows per context mean) of one uninterrupted stretch."""
        return member_distances((self.window, self.context), self.transform(outputs), context_windows)


@dataclass
class CrossFit:
    """Member distances of every normal window, each from fits that did not see its recording.

    Attributes:
        window, context: per segment, the out-of-sample distances.
        counts: per segment, the windows averaged into each context distance.
        fold_of_segment: which fold each segment was held out in.
        folds: per fold, its fits on the other folds, to score new audio made from a held-out segment
            (injected faults) out of sample too.
    """

    window: list[np.ndarray]
    context: list[np.ndarray]
    counts: list[np.ndarray]
    fold_of_segment: list[int]
    folds: list[FoldFit]


def _fit_pair(segments: Sequence[np.ndarray], k: int | None) -> tuple[GaussianFit, GaussianFit | None]:
    window = fit_gaussian(np.concatenate(segments))
    if k is None:
        return window, None
    means = [causal_means(s, k) for s in segments]
    full = [m[c == k] for m, c in means]
    rows = np.concatenate(full) if sum(len(f) for f in full) >= 2 else np.concatenate([m for m, _ in means])
    return window, fit_gaussian(rows)


def cross_fit(
    segments: Sequence[np.ndarray],
    groups: Sequence[object],
    context_windows: int,
    folds: int = CROSS_FIT_FOLDS,
    stage1: tuple[np.ndarray, np.ndarray] | None = None,
) -> CrossFit:
    """Fit on all folds but one and score the one left out, for every fold.

    Args:
        segments: per uninterrupted stretch of normal audio, the model's outputs (n_i, d) in stream order.
        groups: per segment, the recording it came from: a recording's segments stay in one fold, so
            no fit sees audio it is then scored on (or the overlapping windows next to it).
        context_windows: K for the context member.
        stage1: when the outputs were whitened by statistics of ALL this audio (the model's own
            whitening, at training time), (mean, inverse whitening) that map them back to the
            descriptors: each fold then whitens by its own first stage too, or the held-out audio
            would leak into its fold through the shared whitening (measured: cross-fitted scores
            then understate new normal audio by a third on the demo's 2.4 minutes).

    Raises:
        ValueError: fewer than 2 groups (nothing to hold out).
    """
    names = sorted({str(g) for g in groups})
    if len(names) < 2:
        raise ValueError("cross-fitting needs normal audio from at least 2 recordings (or 2 stretches)")
    n_folds = min(folds, len(names))
    fold_of_group = {name: i % n_folds for i, name in enumerate(names)}
    fold_of_segment = [fold_of_group[str(g)] for g in groups]
    out_w: list[np.ndarray] = [np.zeros(0)] * len(segments)
    out_c: list[np.ndarray] = [np.zeros(0)] * len(segments)
    counts: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(segments)
    fits = []
    for fold in range(n_folds):
        train = [np.asarray(s, dtype=np.float64) for s, f in zip(segments, fold_of_segment) if f != fold]
        first = None
        if stage1 is not None:
            mean, inverse = stage1
            first = fit_gaussian(np.concatenate([s @ inverse + mean for s in train]))
        fit = FoldFit(
            *_fit_pair(
                [FoldFit(None, None, first, stage1).transform(s) for s in train],  # type: ignore[arg-type]
                context_windows,
            ),
            first,
            stage1,
        )
        fits.append(fit)
        for i, (s, f) in enumerate(zip(segments, fold_of_segment)):
            if f == fold:
                out_w[i], out_c[i], counts[i] = fit.distances(s, context_windows)
    return CrossFit(out_w, out_c, counts, fold_of_segment, fits)


def member_distances(
    pair: tuple[GaussianFit, GaussianFit | None], outputs: np.ndarray, context_windows: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(window distances, context distances, windows per context mean) of one uninterrupted stretch."""
    window, context = pair
    x = np.asarray(outputs, dtype=np.float64)
    dw = window.distance(x)
    if context is None or not context_windows:
        return dw, np.ones_like(dw), np.ones(len(x), dtype=np.int64)
    means, counts = causal_means(x, context_windows)
    return dw, context.distance(means), counts


def fit_scorer(
    segments: Sequence[np.ndarray],
    groups: Sequence[object],
    members: Sequence[str],
    model_name: str,
    model_version: str,
    context_windows: int = DEFAULT_CONTEXT_WINDOWS,
    folds: int = CROSS_FIT_FOLDS,
    stage1: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[Scorer, CrossFit]:
    """Fit the scorer on normal outputs, with its normalisation from cross-fitted distances.

    Both members are always fitted (the choice between them is the caller's, on the same
    cross-fitted distances); the final fits use all segments, the normalisation their out-of-sample
    distances (a fit on all the data scores new audio about as its folds scored the held-out ones).
    stage1: see cross_fit.

    Returns:
        (the scorer with the given members, the cross-fit for thresholds and choices).

    Raises:
        ValueError: too little audio (fewer than 2 recordings, or fewer than 2 windows).
    """
    cf = cross_fit(segments, groups, context_windows, folds, stage1)
    window, context = _fit_pair(segments, context_windows)
    log_w = np.log(np.maximum(np.concatenate(cf.window), 1e-300))
    window_norm = (float(np.mean(log_w)), float(max(np.std(log_w), 1e-3)))
    log_c = np.log(np.maximum(np.concatenate(cf.context), 1e-300))
    ks = np.concatenate(cf.counts)
    locs, scales = _context_norm(log_c, ks, context_windows)
    info = {
        "windows": int(sum(len(s) for s in segments)),
        "recordings": len({str(g) for g in groups}),
        "folds": len(cf.folds),
        "window_shrinkage": round(window.shrinkage, 4),
        "context_shrinkage": round(context.shrinkage, 4) if context is not None else None,
    }
    scorer = Scorer(
        window, context, context_windows, tuple(members), window_norm, locs, scales, model_name, model_version, info
    )
    return scorer, cf


def _context_norm(log_c: np.ndarray, counts: np.ndarray, k_max: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Loc and scale of the context's log distance for each number of windows averaged, 1..k_max.

    Where fewer than 5 windows had exactly k (short recordings), the independent-window
    approximation fills in: a mean of k windows lies about K/k times further from normal than a
    mean of K, and its log distance spreads like the full context's.
    """
    locs: list[float | None] = []
    scales: list[float | None] = []
    for k in range(1, k_max + 1):
        sel = log_c[counts == k]
        locs.append(float(np.mean(sel)) if len(sel) >= 5 else None)
        scales.append(float(max(np.std(sel), 1e-3)) if len(sel) >= 5 else None)
    full_loc = locs[-1] if locs[-1] is not None else float(np.mean(log_c))
    full_scale = scales[-1] if scales[-1] is not None else float(max(np.std(log_c), 1e-3))
    return (
        tuple(v if v is not None else full_loc + math.log(k_max / k) for k, v in enumerate(locs, 1)),
        tuple(v if v is not None else full_scale for v in scales),
    )


def cross_fitted_scores(scorer: Scorer, cf: CrossFit, members: Sequence[str] | None = None) -> list[np.ndarray]:
    """Per segment, the scores the scorer (with these members) would give it out of sample."""
    return [scorer.fused(w, c, k, members) for w, c, k in zip(cf.window, cf.context, cf.counts)]

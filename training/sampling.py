"""Training examples: a memory-mapped audio cache, random windows, augmentation, and a tf.data pipeline.

Every recording is decoded once (any WAV format, resampled, mixed to mono)
into a float32 .npy file at the model's rate and memory-mapped from then on,
so a dataset larger than memory streams from disk through the OS page cache
while a small one stays in memory. Each epoch draws a fixed number of random
analysis windows: training time depends on that budget, not on the hours of
audio, and random window offsets are the time-shift augmentation.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.analysis.features import FeatureParams, compute_logmel, normalize
from device.errors import AcmonError
from device.state import atomic_open

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AugmentOptions:
    """Augmentations applied to training windows (never to validation or calibration audio).

    Attributes:
        gain_db: random gain in [-gain_db, +gain_db] dB applied to the waveform.
        background_snr_db: (low, high) SNR range in dB for mixing in a window of another
            random training clip (a plant is never quiet twice the same way); None = off.
        background_probability: share of windows that get background mixed in.
        time_masks, time_mask_frames: SpecAugment masks along time (count, max width in frames).
        freq_masks, freq_mask_bands: SpecAugment masks along mel bands (count, max width in bands).
        mixup_alpha: Beta(alpha, alpha) mixup of patches and one-hot labels (supervised only); 0 = off.
    """

    gain_db: float = 6.0
    background_snr_db: tuple[float, float] | None = (10.0, 30.0)
    background_probability: float = 0.5
    time_masks: int = 1
    time_mask_frames: int = 6
    freq_masks: int = 1
    freq_mask_bands: int = 4
    mixup_alpha: float = 0.2

    def __post_init__(self) -> None:
        """Refuse values training would only fail on later (or silently misuse): one message naming the key."""

        def number(name: str, lo: float, hi: float, integer: bool = False) -> None:
            value = getattr(self, name)
            kind = int if integer else (int, float)
            if isinstance(value, bool) or not isinstance(value, kind) or not lo <= value <= hi:
                what = "an integer" if integer else "a number"
                raise ValueError(f"{name} must be {what} in [{lo:g}, {hi:g}] (got {str(value)[:40]})")

        number("gain_db", 0, 40)
        number("background_probability", 0, 1)
        number("mixup_alpha", 0, 10)
        for name in ("time_masks", "time_mask_frames", "freq_masks", "freq_mask_bands"):
            number(name, 0, 64, integer=True)
        snr = self.background_snr_db
        if snr is not None:
            ok = isinstance(snr, (tuple, list)) and len(snr) == 2
            ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) and -20 <= v <= 80 for v in snr)
            if not ok or snr[0] > snr[1]:
                raise ValueError(
                    f"background_snr_db must be [low, high] in dB within [-20, 80], or null (got {str(snr)[:40]})"
                )
            object.__setattr__(self, "background_snr_db", (float(snr[0]), float(snr[1])))


NO_AUGMENTATION = AugmentOptions(gain_db=0.0, background_snr_db=None, time_masks=0, freq_masks=0, mixup_alpha=0.0)


@dataclass(frozen=True)
class CachedClip:
    """One decoded recording (or span) in the cache: float32 mono samples at the model's rate."""

    source: str
    cache_path: Path
    n_samples: int
    label: int

    def samples(self) -> np.ndarray:
        """The clip as a read-only memory map (no copy, no read until used)."""
        return np.load(self.cache_path, mmap_mode="r")


def build_cache(
    items: Sequence[tuple[str, int, Callable[[], np.ndarray]]],
    cache_dir: Path,
    progress: bool = True,
) -> tuple[list[CachedClip], list[tuple[str, str]]]:
    """Decode recordings into the cache, reusing entries from an earlier run.

    Args:
        items: (source name, label index, loader returning mono float32 at the model rate).
            The source name must identify the audio uniquely (path plus span).
        cache_dir: folder for the .npy files (created).

    Returns:
        (cached clips, failures as (source, error message)); a failing file is
        logged and skipped, never fatal.
    """
    from tqdm import tqdm  # noqa: PLC0415

    cache_dir.mkdir(parents=True, exist_ok=True)
    clips, failed = [], []
    for source, label, load in tqdm(items, desc="decode", unit="file", disable=not progress):
        key = hashlib.sha1(source.encode()).hexdigest()[:16]
        path = cache_dir / f"{key}.npy"
        try:
            if not path.exists():
                samples = np.ascontiguousarray(load(), dtype=np.float32)
                with atomic_open(path) as f:
                    np.save(f, samples)
            n = int(np.load(path, mmap_mode="r").shape[0])
        except AcmonError as exc:
            logger.warning("skipping %s", exc)
            failed.append((source, str(exc)))
            continue
        clips.append(CachedClip(source, path, n, label))
    return clips, failed


class WindowSampler:
    """Draws random analysis windows from cached clips and turns them into augmented patches.

    Windows come from clips in proportion to their length, at uniformly random
    offsets. Features always go through device.analysis.features (compute_logmel,
    normalize): augmentation happens on the waveform before the front end and
    on the patch after it, never inside it.
    """

    def __init__(self, clips: Sequence[CachedClip], params: FeatureParams, augment: AugmentOptions, seed: int):
        usable = [c for c in clips if c.n_samples >= params.window_samples]
        if not usable:
            raise AcmonError(f"no training clip is as long as one analysis window ({params.window_seconds:.2f} s)")
        self.clips = usable
        self.params = params
        self.augment = augment
        self.seed = seed
        spans = np.array([c.n_samples - params.window_samples + 1 for c in usable], dtype=np.float64)
        self._weights = spans / spans.sum()
        self._spans = spans.astype(np.int64)
        self._maps: list[np.ndarray | None] = [None] * len(usable)

    @property
    def total_seconds(self) -> float:
        return sum(c.n_samples for c in self.clips) / self.params.sample_rate_hz

    def _map(self, i: int) -> np.ndarray:
        m = self._maps[i]
        if m is None:
            m = self._maps[i] = self.clips[i].samples()
        return m

    def _window(self, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        i = int(rng.choice(len(self.clips), p=self._weights))
        start = int(rng.integers(self._spans[i]))
        return np.array(self._map(i)[start : start + self.params.window_samples], dtype=np.float32), i

    def patch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
        """One training example.

        Returns:
            (augmented input patch, clean target patch, label index); the two patches
            differ only by SpecAugment masks (the autoencoder learns to fill them in).
        """
        a = self.augment
        x, i = self._window(rng)
        if a.gain_db:
            x *= np.float32(10.0 ** (rng.uniform(-a.gain_db, a.gain_db) / 20.0))
        if a.background_snr_db is not None and rng.random() < a.background_probability:
            background, _ = self._window(rng)
            x = mix_at_snr(x, background, rng.uniform(*a.background_snr_db))
        clean = normalize(compute_logmel(x, self.params), self.params)
        return spec_augment(clean, a, rng), clean, self.clips[i].label

    def iterate(self, n_per_epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        """n_per_epoch examples; each call starts a new reproducible epoch."""
        self._epoch = getattr(self, "_epoch", -1) + 1
        rng = np.random.default_rng([self.seed, self._epoch])
        for _ in range(n_per_epoch):
            yield self.patch(rng)


def mix_at_snr(signal: np.ndarray, background: np.ndarray, snr_db: float) -> np.ndarray:
    """signal + background scaled so that signal power / background power = snr_db."""
    p_signal = float(np.mean(signal.astype(np.float64) ** 2))
    p_background = float(np.mean(background.astype(np.float64) ** 2))
    if p_signal <= 0 or p_background <= 0:
        return signal
    scale = np.sqrt(p_signal / (p_background * 10.0 ** (snr_db / 10.0)))
    return (signal + np.float32(scale) * background).astype(np.float32)


def spec_augment(patch: np.ndarray, a: AugmentOptions, rng: np.random.Generator) -> np.ndarray:
    """SpecAugment time and frequency masks (Park et al. 2019), filled with the patch mean.

    The mean (0 after z-score normalization) rather than a constant keeps
    masks neutral for every normalization mode.
    """
    if not (a.time_masks or a.freq_masks):
        return patch
    out = patch.copy()
    fill = np.float32(patch.mean())
    n_frames, n_mels = patch.shape
    for _ in range(a.time_masks):
        width = int(rng.integers(0, a.time_mask_frames + 1))
        start = int(rng.integers(0, max(1, n_frames - width)))
        out[start : start + width, :] = fill
    for _ in range(a.freq_masks):
        width = int(rng.integers(0, a.freq_mask_bands + 1))
        start = int(rng.integers(0, max(1, n_mels - width)))
        out[:, start : start + width] = fill
    return out


def make_dataset(sampler: WindowSampler, n_per_epoch: int, batch_size: int, target: str, n_classes: int = 0):
    """A tf.data pipeline of (input, target) batches computed on the fly by the sampler.

    Args:
        target: 'reconstruction' (autoencoder: target is the clean patch) or 'class'
            (classifier: one-hot labels, with mixup when sampler.augment.mixup_alpha > 0).

    The Python generator (front end, augmentation) runs ahead of the model by
    prefetching, so on two cores feature extraction overlaps with training.
    """
    from .tf_setup import import_tensorflow  # noqa: PLC0415

    tf = import_tensorflow()
    n_frames, n_mels = sampler.params.patch_shape
    alpha = sampler.augment.mixup_alpha if target == "class" else 0.0
    mix_rng = np.random.default_rng([sampler.seed, 99])

    def batches():
        xs, ys = [], []
        for x, clean, label in sampler.iterate(n_per_epoch):
            xs.append(x[..., None])
            if target == "reconstruction":
                ys.append(clean[..., None])
            else:
                ys.append(np.eye(n_classes, dtype=np.float32)[label])
            if len(xs) == batch_size:
                yield _mixup(np.stack(xs), np.stack(ys), alpha, mix_rng)
                xs, ys = [], []
        if xs:
            yield _mixup(np.stack(xs), np.stack(ys), alpha, mix_rng)

    y_shape = (None, n_frames, n_mels, 1) if target == "reconstruction" else (None, n_classes)
    signature = (
        tf.TensorSpec((None, n_frames, n_mels, 1), tf.float32),
        tf.TensorSpec(y_shape, tf.float32),
    )
    n_batches = -(-n_per_epoch // batch_size)
    dataset = tf.data.Dataset.from_generator(batches, output_signature=signature)
    # Tell Keras the epoch length up front, or it warns that the input "ran out of data".
    return dataset.apply(tf.data.experimental.assert_cardinality(n_batches)).prefetch(4)


def _mixup(x: np.ndarray, y: np.ndarray, alpha: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if alpha <= 0 or len(x) < 2:
        return x.astype(np.float32), y.astype(np.float32)
    lam = rng.beta(alpha, alpha, size=(len(x), 1, 1, 1)).astype(np.float32)
    order = rng.permutation(len(x))
    x_mixed = lam * x + (1 - lam) * x[order]
    y_mixed = lam[:, :, 0, 0] * y + (1 - lam[:, :, 0, 0]) * y[order]
    return x_mixed.astype(np.float32), y_mixed.astype(np.float32)

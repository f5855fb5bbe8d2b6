"""Input filters (numpy only): a 2nd-order Butterworth high-pass and notches for mains hum, run on the stream
block by block with their state carried across blocks.

Each filter is a biquad designed as in R. Bristow-Johnson's "Audio EQ Cookbook" (the bilinear transform with
the cut-off prewarped, so the response at the design frequency is exact at any sample rate). The cascade is
run as one linear state-space system over chunks of CHUNK_SAMPLES samples: within a chunk the output is a
matrix product (the chunk's inputs times the cascade's impulse response, plus the state's free response), and
only the state (2 numbers per biquad) is carried from chunk to chunk. That keeps the per-sample work in BLAS
instead of a Python loop over samples (scipy.signal.lfilter would do it in C, but `import scipy.signal` costs
about a second and 70 MB on a Pi, for a few lines of arithmetic).

The stream is cut into fixed frames (FRAME_CHUNKS chunks, 1024 samples) aligned to its start, not to the
blocks, and each frame is computed with the same fixed-shape matrix products: the output is the same bit for
bit whatever the block size. The price is latency: a frame comes out once it is complete (at most 1023
samples wait, 64 ms at 16 kHz), and flush() filters the rest at the end of a stream. Against
scipy.signal.sosfilt in float64 the output differs by the float32 rounding of the result (about 1e-8 of
full scale); measured cost with a high-pass and three notches: 0.5 ms per second of 16 kHz audio on one core
of the benchmark machine (benchmarks/bench_pipeline.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .audio_io import MAX_SAMPLE_MAGNITUDE

# Samples per chunk of the state-space recursion: the matrix product within a chunk costs CHUNK_SAMPLES
# multiply-adds per sample; the chunk states are solved per frame (below), so no Python loop runs per chunk.
CHUNK_SAMPLES = 64
# Chunks per frame: the chunk states are themselves solved by one matrix product per frame of 16 chunks.
FRAME_CHUNKS = 16
# A Butterworth high-pass: Q = 1/sqrt(2) gives the maximally flat passband (-3.01 dB at the cut-off).
BUTTERWORTH_Q = 1.0 / math.sqrt(2.0)
DEFAULT_NOTCH_Q = 10.0
MAX_NOTCHES = 8


@dataclass(frozen=True)
class Biquad:
    """One second-order section, normalised so that a0 = 1: y[n] = b0 x[n] + b1 x[n-1] + b2 x[n-2] - a1 y[n-1] - a2 y[n-2]."""

    b: tuple[float, float, float]
    a: tuple[float, float]  # a1, a2

    def response(self, freqs_hz: np.ndarray, sample_rate_hz: float) -> np.ndarray:
        """Complex frequency response at the given frequencies."""
        z1 = np.exp(-2j * np.pi * np.asarray(freqs_hz, dtype=np.float64) / sample_rate_hz)  # z^-1
        b0, b1, b2 = self.b
        a1, a2 = self.a
        return (b0 + b1 * z1 + b2 * z1 * z1) / (1.0 + a1 * z1 + a2 * z1 * z1)


def _normalised(b: Sequence[float], a: Sequence[float]) -> Biquad:
    a0 = a[0]
    return Biquad((b[0] / a0, b[1] / a0, b[2] / a0), (a[1] / a0, a[2] / a0))


def highpass_biquad(cutoff_hz: float, sample_rate_hz: float, q: float = BUTTERWORTH_Q) -> Biquad:
    """2nd-order high-pass (Butterworth with the default Q): -3.01 dB at cutoff_hz, -12 dB per octave below.

    Raises:
        ValueError: cutoff_hz not in (0, sample_rate_hz / 2).
    """
    if not 0 < cutoff_hz < sample_rate_hz / 2:
        raise ValueError(f"high-pass cut-off must be between 0 and {sample_rate_hz / 2:g} Hz (got {cutoff_hz})")
    w0 = 2.0 * math.pi * cutoff_hz / sample_rate_hz
    cos_w0, alpha = math.cos(w0), math.sin(w0) / (2.0 * q)
    return _normalised(
        ((1 + cos_w0) / 2, -(1 + cos_w0), (1 + cos_w0) / 2),
        (1 + alpha, -2 * cos_w0, 1 - alpha),
    )


def notch_biquad(centre_hz: float, sample_rate_hz: float, q: float = DEFAULT_NOTCH_Q) -> Biquad:
    """Band-reject (notch): zero gain at centre_hz, -3 dB at centre_hz ± centre_hz / (2 q).

    Raises:
        ValueError: centre_hz not in (0, sample_rate_hz / 2) or q not > 0.
    """
    if not 0 < centre_hz < sample_rate_hz / 2:
        raise ValueError(f"notch frequency must be between 0 and {sample_rate_hz / 2:g} Hz (got {centre_hz})")
    if not q > 0:
        raise ValueError(f"notch Q must be > 0 (got {q})")
    w0 = 2.0 * math.pi * centre_hz / sample_rate_hz
    cos_w0, alpha = math.cos(w0), math.sin(w0) / (2.0 * q)
    return _normalised((1.0, -2 * cos_w0, 1.0), (1 + alpha, -2 * cos_w0, 1 - alpha))


def _state_space(sections: Sequence[Biquad]) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(A, B, C, D) of the cascade: s' = A s + B x, y = C s + D x, two states per section.

    Each section in transposed direct form II: y = b0 x + s1, s1' = b1 x - a1 y + s2, s2' = b2 x - a2 y; with
    y substituted, A = [[-a1, 1], [-a2, 0]], B = [b1 - a1 b0, b2 - a2 b0], C = [1, 0], D = b0. Cascading
    feeds each section's output (C_prev s_prev + D_prev x) into the next.
    """
    A = np.zeros((0, 0))
    B = np.zeros(0)
    C = np.zeros(0)
    D = 1.0
    for sec in sections:
        b0, b1, b2 = sec.b
        a1, a2 = sec.a
        Ak = np.array([[-a1, 1.0], [-a2, 0.0]])
        Bk = np.array([b1 - a1 * b0, b2 - a2 * b0])
        Ck = np.array([1.0, 0.0])
        n = len(B)
        A_new = np.zeros((n + 2, n + 2))
        A_new[:n, :n] = A
        A_new[n:, :n] = np.outer(Bk, C)
        A_new[n:, n:] = Ak
        A, B, C, D = A_new, np.concatenate([B, Bk * D]), np.concatenate([b0 * C, Ck]), b0 * D
    return A, B, C, D


class InputFilter:
    """The configured input filters as one streaming filter: float32 blocks in, float32 blocks out.

    The stream is cut into frames of FRAME_CHUNKS chunks of CHUNK_SAMPLES samples (1024 samples) aligned to
    its start, and every frame is computed with the same fixed-shape matrix products: the output is the
    same bit for bit whatever the block size (BLAS may sum in another order for another shape). A frame's
    samples come out once it is complete, so up to FRAME_CHUNKS * CHUNK_SAMPLES - 1 samples wait (64 ms
    at 16 kHz); flush() filters them at the end of a stream.

    Samples that are NaN, infinite or beyond audio_io.MAX_SAMPLE_MAGNITUDE are filtered as 0 (so the state
    stays finite) and come out as NaN at their own positions, for the pipeline to gate and count the windows
    that hold them as it does without filters.

    Args:
        sample_rate_hz: the stream's rate.
        highpass_hz: 2nd-order Butterworth high-pass cut-off, or None for none.
        notch_hz: centre frequencies of notches (e.g. mains hum and its harmonics: 50, 100, 150).
        notch_q: quality factor of every notch (its -3 dB width is centre / Q).

    Raises:
        ValueError: a frequency outside (0, Nyquist), more than MAX_NOTCHES notches, or no filter at all.
    """

    def __init__(
        self,
        sample_rate_hz: int,
        highpass_hz: float | None = None,
        notch_hz: Sequence[float] = (),
        notch_q: float = DEFAULT_NOTCH_Q,
    ):
        if len(notch_hz) > MAX_NOTCHES:
            raise ValueError(f"at most {MAX_NOTCHES} notches (got {len(notch_hz)})")
        sections = [highpass_biquad(highpass_hz, sample_rate_hz)] if highpass_hz is not None else []
        sections += [notch_biquad(f, sample_rate_hz, notch_q) for f in notch_hz]
        if not sections:
            raise ValueError("no filter configured")
        self.sample_rate_hz = sample_rate_hz
        self.sections = tuple(sections)
        A, B, C, D = _state_space(sections)
        L, M, n = CHUNK_SAMPLES, FRAME_CHUNKS, len(B)
        self.frame_samples = L * M
        powers = [np.eye(n)]  # A^0 .. A^L
        for _ in range(L):
            powers.append(A @ powers[-1])
        # Within a chunk (row vectors): y = x @ T^T + s @ F, next s = s @ (A^L)^T + x @ G, where the
        # impulse response h[0] = D, h[k] = C A^(k-1) B gives T[i, j] = h[i - j] (lower triangular), F's
        # column i is (C A^i)^T (the state's free response) and G's row j is (A^(L-1-j) B)^T.
        h = np.array([D] + [C @ powers[k - 1] @ B for k in range(1, L)])
        i, j = np.indices((L, L))
        self._toeplitz_t = np.where(i >= j, h[np.clip(i - j, 0, L - 1)], 0.0).T.copy()
        self._free = np.stack([C @ powers[k] for k in range(L)]).T.copy()  # (n, L)
        self._drive = np.stack([powers[L - 1 - k] @ B for k in range(L)])  # (L, n)
        advance = powers[L].T  # (A^L)^T
        self._advance = advance.copy()
        # Across the M chunks of a frame the chunk states obey the same kind of recursion, solved the same
        # way: states (M, n) = s0 @ P + drive (M n,) @ Q, with P's block k = ((A^L)^k)^T and Q's block
        # (j, k) = ((A^L)^(k-1-j))^T for k > j, zero otherwise.
        adv_powers = [np.eye(n)]
        for _ in range(M):
            adv_powers.append(adv_powers[-1] @ advance)
        self._start_states = np.concatenate(adv_powers[:M], axis=1)  # (n, M n)
        q = np.zeros((M * n, M * n))
        for jj in range(M):
            for kk in range(jj + 1, M):
                q[jj * n : (jj + 1) * n, kk * n : (kk + 1) * n] = adv_powers[kk - 1 - jj]
        self._chained = q
        self._state = np.zeros(n)
        self._pending = np.zeros(0)

    @property
    def latency_samples(self) -> int:
        """Most samples process() holds back (they come out with a later block or flush())."""
        return self.frame_samples - 1

    def reset(self) -> None:
        """Start a new stream: zero state, nothing pending."""
        self._state = np.zeros_like(self._state)
        self._pending = np.zeros(0)

    def response(self, freqs_hz: np.ndarray) -> np.ndarray:
        """The cascade's complex frequency response at the given frequencies (for checks and docs)."""
        f = np.atleast_1d(np.asarray(freqs_hz, dtype=np.float64))
        out = np.ones(len(f), dtype=np.complex128)
        for sec in self.sections:
            out *= sec.response(f, self.sample_rate_hz)
        return out

    def process(self, block: np.ndarray) -> np.ndarray:
        """Filter one block; returns the filtered samples of every frame it completed (float32, maybe empty)."""
        x = np.asarray(block, dtype=np.float64).reshape(-1)
        if self._pending.size:
            x = np.concatenate([self._pending, x])
        complete = (len(x) // self.frame_samples) * self.frame_samples
        self._pending = x[complete:].copy()
        if not complete:
            return np.zeros(0, dtype=np.float32)
        x = x[:complete]
        bad = _bad_samples(x)
        if bad is not None:
            x = np.where(bad, 0.0, x)
        y = np.empty(complete)
        for start in range(0, complete, self.frame_samples):
            y[start : start + self.frame_samples] = self._frame(x[start : start + self.frame_samples])
        return _mark_bad(y, bad)

    def flush(self) -> np.ndarray:
        """The samples still held back, filtered (the end of a stream); the filter is then reset."""
        tail, self._pending = self._pending, np.zeros(0)
        out = np.zeros(0, dtype=np.float32)
        if len(tail):
            bad = _bad_samples(tail)
            x = np.where(bad, 0.0, tail) if bad is not None else tail
            L, y = CHUNK_SAMPLES, np.empty(len(tail))
            for start in range(0, len(x), L):  # chunk by chunk: at most FRAME_CHUNKS of them, once per stream
                chunk = x[start : start + L]
                r = len(chunk)
                y[start : start + r] = chunk @ self._toeplitz_t[:r, :r] + self._state @ self._free[:, :r]
                self._state = self._state @ self._advance + chunk @ self._drive[L - r :]
            out = _mark_bad(y, bad)
        self.reset()
        return out

    def _frame(self, x: np.ndarray) -> np.ndarray:
        """Filter one frame of frame_samples samples and advance the state: fixed-shape products only."""
        chunks = x.reshape(FRAME_CHUNKS, CHUNK_SAMPLES)
        drive = chunks @ self._drive  # (M, n): each chunk's inputs' contribution to the state after it
        states = (self._state @ self._start_states + drive.reshape(-1) @ self._chained).reshape(FRAME_CHUNKS, -1)
        self._state = states[-1] @ self._advance + drive[-1]
        y = chunks @ self._toeplitz_t
        y += states @ self._free
        return y.reshape(-1)


def _bad_samples(x: np.ndarray) -> np.ndarray | None:
    """Mask of NaN, infinite or absurd samples, or None when there are none (the common case: two passes)."""
    if len(x) == 0 or (-MAX_SAMPLE_MAGNITUDE <= x.min() and x.max() <= MAX_SAMPLE_MAGNITUDE):
        return None
    return ~(np.abs(x) <= MAX_SAMPLE_MAGNITUDE)


def _mark_bad(y: np.ndarray, bad: np.ndarray | None) -> np.ndarray:
    out = y.astype(np.float32)
    if bad is not None:
        out[bad] = np.float32(np.nan)
    return out

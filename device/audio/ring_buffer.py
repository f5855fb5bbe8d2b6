"""Fixed-capacity ring buffer that cuts a sample stream into overlapping analysis windows."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    """One analysis window cut from the stream.

    Attributes:
        index: 0 for the first window of the stream, then 1, 2, ...
        start_sample: absolute position of the window's first sample in the stream.
        samples: float32 array (window_samples,), a copy owned by the receiver.
    """

    index: int
    start_sample: int
    samples: np.ndarray


class RingBuffer:
    """Emits window_samples every hop_samples, whatever the sizes of the blocks pushed in.

    Window k covers stream samples [k*hop, k*hop + window). The buffer keeps the
    last `capacity_samples` of the stream (at least one window), carries what
    is left over between blocks, and never reallocates, so its memory is fixed
    for the life of the daemon. Because windows are defined by absolute stream
    positions, the output is identical for blocks of 1, 256, 1000 or 1024 samples.
    The extra capacity beyond one window is history kept for evidence clips.
    """

    def __init__(self, window_samples: int, hop_samples: int, capacity_samples: int | None = None):
        if window_samples <= 0 or hop_samples <= 0:
            raise ValueError("window_samples and hop_samples must be positive")
        capacity = max(int(capacity_samples or 0), window_samples + hop_samples)
        self.window_samples = int(window_samples)
        self.hop_samples = int(hop_samples)
        self.capacity_samples = capacity
        self._buffer = np.zeros(capacity, dtype=np.float32)
        self._written = 0  # samples pushed since the stream started
        self._next_window = 0  # index of the next window to emit

    @property
    def samples_written(self) -> int:
        """Total samples pushed since the start of the stream."""
        return self._written

    def reset(self) -> None:
        """Start a new stream: forget history and restart window numbering."""
        self._written = 0
        self._next_window = 0

    def push(self, block: np.ndarray) -> list[Window]:
        """Append a block of samples and return the windows it completes, oldest first.

        Args:
            block: float32 array (n,), mono; any n >= 0.

        Returns:
            The windows whose last sample lies in this block (possibly none, possibly several).
        """
        return list(self.iter_push(block))

    def iter_push(self, block: np.ndarray) -> Iterator[Window]:
        """Like push(), but yields each window as soon as its samples are in the buffer.

        A large block is written in pieces that each end where the next window
        does, so a block longer than the whole capacity still produces every window.
        """
        x = np.asarray(block, dtype=np.float32).reshape(-1)
        offset = 0
        while offset < len(x):
            # Write at most up to the end of the next window, so it can be read
            # before later samples overwrite its beginning.
            next_end = self._next_window * self.hop_samples + self.window_samples
            take = min(len(x) - offset, max(1, next_end - self._written))
            self._write(x[offset : offset + take])
            offset += take
            while self._next_window * self.hop_samples + self.window_samples <= self._written:
                start = self._next_window * self.hop_samples
                yield Window(self._next_window, start, self.read(start, self.window_samples))
                self._next_window += 1

    def _write(self, x: np.ndarray) -> None:
        pos = self._written % self.capacity_samples
        first = min(len(x), self.capacity_samples - pos)
        self._buffer[pos : pos + first] = x[:first]
        if first < len(x):
            self._buffer[: len(x) - first] = x[first:]
        self._written += len(x)

    def read(self, start_sample: int, n_samples: int) -> np.ndarray:
        """Copy of stream samples [start_sample, start_sample + n_samples).

        Raises:
            ValueError: the range is not (or no longer) in the buffer.
        """
        oldest = max(0, self._written - self.capacity_samples)
        if start_sample < oldest or start_sample + n_samples > self._written or n_samples < 0:
            raise ValueError(
                f"samples [{start_sample}, {start_sample + n_samples}) not in buffer [{oldest}, {self._written})"
            )
        pos = start_sample % self.capacity_samples
        first = min(n_samples, self.capacity_samples - pos)
        if first == n_samples:
            return self._buffer[pos : pos + n_samples].copy()
        return np.concatenate([self._buffer[pos:], self._buffer[: n_samples - first]])

    def latest(self, n_samples: int) -> np.ndarray:
        """Copy of the most recent n_samples (fewer if the stream is shorter or history is smaller)."""
        n = min(n_samples, self._written, self.capacity_samples)
        return self.read(self._written - n, n)

"""Windowing: which rows make up each window, a firmware-style ring buffer, and batch window views.

A window of ``window`` rows ends at row ``window - 1`` and then every ``stride`` rows. The streaming
path (:class:`RingBuffer`, one sample at a time) and the batch path (:func:`batch_windows`) produce the
same windows in the same row order, so the features computed from them are identical.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from tinywarden.errors import ConfigError


def check_window(window: int, stride: int) -> None:
    """Raise :class:`ConfigError` unless ``1 <= stride <= window`` and ``window >= 2``."""
    if not isinstance(window, int | np.integer) or window < 2:
        raise ConfigError(f"window must be an integer >= 2, got {window!r}")
    if not isinstance(stride, int | np.integer) or not 1 <= stride <= window:
        raise ConfigError(f"stride must be an integer in [1, window={window}], got {stride!r}")


#: Blocks shorter than this do not hold enough samples to count crossings in (a block of one has none).
MIN_CROSSINGS_BLOCK = 16


def block_size(window: int, stride: int) -> int:
    """Rows per aggregate block, ``gcd(window, stride)``: every window (and every stride) is a whole number of
    blocks, so a device can fold each sample once into its block and combine a window from its blocks.

    >>> block_size(128, 64), block_size(64, 16), block_size(100, 30)
    (64, 16, 10)
    """
    check_window(window, stride)
    return math.gcd(window, stride)


def crossings_block(window: int, stride: int) -> int:
    """Rows per block for ``crossings`` counted per block (``Pipeline(crossings_block=...)``, an option: the
    default counts over the whole window): the aggregate block (:func:`block_size`) when it holds at least
    :data:`MIN_CROSSINGS_BLOCK` rows, else the whole window.

    >>> crossings_block(128, 64), crossings_block(64, 4)
    (64, 64)
    """
    g = block_size(window, stride)
    return g if g >= MIN_CROSSINGS_BLOCK else window


def window_end_rows(n_rows: int, window: int, stride: int) -> np.ndarray:
    """Index of the last row of every complete window in a series of ``n_rows`` rows.

    >>> window_end_rows(10, 4, 2).tolist()
    [3, 5, 7, 9]
    """
    check_window(window, stride)
    if n_rows < window:
        return np.zeros(0, dtype=np.int64)
    return np.arange(window - 1, n_rows, stride, dtype=np.int64)


def batch_windows(values: np.ndarray, window: int, stride: int, chunk: int = 4096) -> Iterator[np.ndarray]:
    """Yield contiguous ``(n, window, channels)`` float64 blocks of consecutive windows, ``chunk`` at a time.

    Chunking bounds memory on long series (100k windows of 128 x 38 would not fit otherwise).
    """
    ends = window_end_rows(len(values), window, stride)
    vals = np.asarray(values, dtype=np.float64)
    view = np.lib.stride_tricks.sliding_window_view(vals, window, axis=0)  # (rows-w+1, C, w)
    for lo in range(0, len(ends), chunk):
        starts = ends[lo : lo + chunk] - (window - 1)
        yield np.ascontiguousarray(view[starts].transpose(0, 2, 1))


class RingBuffer:
    """The on-device sample buffer: holds the last ``window`` samples, reports every ``stride`` pushes.

    Invariants: ``count`` is the number of samples pushed since :meth:`reset` (saturating is not needed
    in Python); ``head`` is where the next sample is written; the buffer holds a complete window once
    ``count >= window``, and a window is *due* when additionally ``(count - window) % stride == 0``.

    >>> rb = RingBuffer(window=4, stride=2, n_channels=1)
    >>> [rb.push([float(i)]) is not None for i in range(6)]
    [False, False, False, True, False, True]
    """

    def __init__(self, window: int, stride: int, n_channels: int) -> None:
        check_window(window, stride)
        if n_channels < 1:
            raise ConfigError(f"n_channels must be >= 1, got {n_channels}")
        self.window = int(window)
        self.stride = int(stride)
        self.n_channels = int(n_channels)
        self._buf = np.zeros((self.window, self.n_channels), dtype=np.float64)
        self.reset()

    def reset(self) -> None:
        """Forget every sample (after a gap, a reboot, or a model swap)."""
        self.head = 0
        self.count = 0

    def push(self, sample: np.ndarray | list[float]) -> np.ndarray | None:
        """Add one sample; return the completed window (oldest row first) when one is due, else None."""
        x = np.asarray(sample, dtype=np.float64)
        if x.shape != (self.n_channels,):
            raise ConfigError(f"sample has shape {x.shape}, expected ({self.n_channels},)")
        self._buf[self.head] = x
        self.head = (self.head + 1) % self.window
        self.count += 1
        if self.count < self.window or (self.count - self.window) % self.stride:
            return None
        return np.concatenate((self._buf[self.head :], self._buf[: self.head]), axis=0)

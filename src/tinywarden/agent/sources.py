"""Where the agent's samples come from: recorded telemetry replayed, or the host sampled live.

A source yields ``(timestamp, row)`` pairs and names its ``channels``; ``simulated`` says whether the
agent's clock must follow the data's timestamps (a replay) or the wall clock (live).
:func:`open_source` is the choice the ``agent`` command makes.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinywarden.errors import ConfigError, DataError
from tinywarden.telemetry.live import LiveSampler, sampling_period

if TYPE_CHECKING:  # a replay reads files with numpy; the live source of the lean agent needs none
    import numpy as np

    from tinywarden.telemetry.series import Series

__all__ = ["LiveSource", "ReplaySource", "channel_indices", "open_source"]


class ReplaySource:
    """Recorded telemetry as a sample source: ``(timestamp, row)`` in order, as fast as possible.

    ``series`` is the recording, or its first chunk when ``rest`` yields the others (:meth:`open` streams a
    file or folder in chunks, so a long recording is never held whole).

    >>> import numpy as np
    >>> from tinywarden.telemetry import Series
    >>> s = Series(np.array([0.0, 10.0]), np.ones((2, 2)), ("cpu_pct", "mem_pct"))
    >>> src = ReplaySource(s); src.channels, [t for t, _ in src]
    (('cpu_pct', 'mem_pct'), [0.0, 10.0])
    """

    simulated = True

    def __init__(self, series: Series, rest: Iterator[Series] | None = None, name: str | None = None) -> None:
        from tinywarden.telemetry.series import GapWatch

        self.series = series
        self._rest = rest
        self.channels: tuple[str, ...] = tuple(series.channels)
        self.name = name or series.source
        self._gaps = GapWatch()

    @classmethod
    def open(cls, path: str | Path, chunk_rows: int | None = None, drop_unordered: bool = False) -> ReplaySource:
        """Stream the telemetry at ``path`` in chunks of ``chunk_rows`` (default
        :data:`~tinywarden.telemetry.io.CHUNK_ROWS`; :func:`~tinywarden.telemetry.io.iter_series`, which refuses
        a duplicate or decreasing timestamp unless ``drop_unordered``); an unreadable first chunk is an error
        here, a bad row further on when the replay reaches it."""
        from tinywarden.telemetry.io import CHUNK_ROWS, iter_series

        chunks = iter_series(path, chunk_rows or CHUNK_ROWS, drop_unordered)
        first = next(chunks, None)
        if first is None:
            raise DataError(f"{path}: no rows of telemetry")
        return cls(first, chunks, str(path))

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        for chunk in itertools.chain([self.series], self._rest or ()):
            self._gaps.add(chunk)
            ts, vals = chunk.timestamps, chunk.values
            for i in range(len(ts)):
                yield float(ts[i]), vals[i]

    def notes(self, rows: int) -> list[str]:
        """What ``score`` would say of the telemetry replayed so far (:meth:`GapWatch.notes`: times read in another
        unit, rows dropped out of time order, gaps among the first ``rows`` rows)."""
        return self._gaps.notes(rows)


class LiveSource:
    """The host's own telemetry, sampled with psutil every ``sampler.period_s`` (``n`` samples or forever);
    with ``lists`` each sample is a list of floats (the lean agent's, without numpy), else an array."""

    simulated = False

    def __init__(self, sampler: LiveSampler, n: int | None = None, lists: bool = False) -> None:
        self.sampler = sampler
        self.n = n
        self.lists = lists
        self.channels: tuple[str, ...] = tuple(sampler.channels)
        self.name = "live:psutil"
        self._wake = threading.Event()

    def __iter__(self) -> Iterator[tuple[float, Any]]:
        return self.sampler.stream(self.n, values=self.lists, sleep=self._sleep)

    def _sleep(self, seconds: float) -> None:
        self._wake.wait(seconds)

    def wake(self) -> None:
        """End the wait for the next sample now, and every later one (safe from a signal handler): a stop signal
        then takes effect after one more sample, not after a whole period (at a low ``--rate``, longer than a
        service manager waits before it kills the agent)."""
        self._wake.set()


def channel_indices(
    model_channels: Sequence[str],
    source_channels: Sequence[str],
    channel_map: Mapping[str, str] | None = None,
    *,
    what: str = "model",
) -> list[int]:
    """Where each model channel sits in the source's samples; ``channel_map`` maps model -> source names.

    A map entry for a channel the model does not have, or one that makes two model channels read the same
    source channel, is a :class:`ConfigError` naming the entry; a channel the source lacks is a :class:`DataError`.

    >>> channel_indices(["mem_pct", "cpu"], ["cpu_pct", "mem_pct"], {"cpu": "cpu_pct"})
    [1, 0]
    """
    mapping = dict(channel_map or {})
    model = list(model_channels)
    src = list(source_channels)
    for m, s in mapping.items():
        if m not in model:
            raise ConfigError(f"--map {f'{m}={s}'!r}: {what} has no channel {m} (its channels: {', '.join(model)})")
    missing = [f"{c}" + (f" (mapped to {mapping[c]})" if c in mapping else "") for c in model
               if mapping.get(c, c) not in src]  # fmt: skip
    if missing:
        raise DataError(
            f"{what} needs channel(s) {', '.join(missing)} that the telemetry source does not provide "
            f"(it has {', '.join(src) or 'none'}); map them with --map MODEL_CHANNEL=SOURCE_CHANNEL"
        )
    index = [src.index(mapping.get(c, c)) for c in model]
    reader: dict[int, str] = {}  # source column -> the model channel that reads it
    for c, i in zip(model, index, strict=True):
        if i in reader:  # only a map entry can do this: the model's channels are distinct
            m = c if c in mapping else reader[i]
            raise ConfigError(f"--map {f'{m}={src[i]}'!r}: model channels {reader[i]} and {c} would both read "
                              f"source channel {src[i]}; map each to a channel of its own")
        reader[i] = c
    return index


def open_source(
    replay: str | Path | None, rate_hz: float = 1.0, interfaces: Sequence[str] = (), lists: bool = False,
    drop_unordered: bool = False,
) -> ReplaySource | LiveSource:
    """Recorded telemetry at ``replay`` (CSV/Parquet file or folder, streamed in chunks; rows out of time order
    dropped with ``drop_unordered``, else refused), or, without it, the host sampled at ``rate_hz`` (samples as
    lists of floats with ``lists``)."""
    if replay is not None:
        return ReplaySource.open(replay, drop_unordered=drop_unordered)
    return LiveSource(LiveSampler(sampling_period(rate_hz), list(interfaces) or None), lists=lists)

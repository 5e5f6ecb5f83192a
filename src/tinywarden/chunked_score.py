"""Score a series that arrives in chunks (:func:`~tinywarden.telemetry.iter_series`) with memory bounded by the
chunk, not the file: the per-window results equal those of the whole series scored at once; and evaluate it
(:func:`evaluate_chunks`), which keeps only per-window results (17 bytes a window) and the incidents.

A window may span chunks, so the last ``window - 1`` rows (or fewer, down to where the next window starts) are
carried into the next chunk, which is then scored with the batch path (:meth:`Pipeline.score` or the int8
reference). The two things that depend on earlier windows are carried as streams: k-of-n persistence
(:class:`~tinywarden.calibrate.Persistence`) and the calibrated confidence (a fresh
:class:`~tinywarden.likelihood.AnomalyLikelihood` stream fed each window's score and new rows, which
:meth:`Pipeline.confidence` replays whole).
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from tinywarden.calibrate import Persistence
from tinywarden.errors import DataError
from tinywarden.evaluate.metrics import Evaluation, IncidentScan, WindowScores, evaluate_windows, window_labels
from tinywarden.features import window_end_rows
from tinywarden.likelihood import window_new_rows
from tinywarden.pipeline import SCORE_BLOCK, Pipeline
from tinywarden.program import Program
from tinywarden.telemetry.series import Series


@dataclass(frozen=True)
class WindowChunk:
    """Per-window results of the windows that end in one chunk (``end_rows`` count from the series' first row)."""

    end_rows: np.ndarray  # int64
    end_times: np.ndarray  # float64
    scores: np.ndarray  # float64, or int32 scores of the int8 program
    raw_flags: np.ndarray  # uint8, score > threshold
    alarms: np.ndarray  # uint8, after k-of-n persistence over the whole stream
    confidence: np.ndarray | None  # float in [0, 1]; None with int8 or a pipeline without a likelihood
    labels: np.ndarray | None  # uint8, 1 when the window holds a row labelled 1; None without labels
    threshold: float


def score_chunks(pipeline: Pipeline, chunks: Iterable[Series], program: Program | None = None
                 ) -> Iterator[WindowChunk]:
    """Score ``chunks`` (consecutive pieces of one series) with ``pipeline``, or with its int8 ``program``.

    Yields one :class:`WindowChunk` per input chunk that completes at least one window. Concatenated, they
    equal :meth:`Pipeline.score` (or :func:`~tinywarden.quantize.score_int8`) of the whole series, with
    :meth:`Pipeline.confidence` of its scores (and the series, for the value record) and
    :func:`~tinywarden.evaluate.metrics.window_labels` of its labels. A series shorter than one window is a
    :class:`~tinywarden.errors.DataError` once it has ended.

    >>> from tinywarden.detectors import EWMAZScore
    >>> rng = np.random.default_rng(0)
    >>> s = Series(np.arange(4000.0), rng.normal(size=(4000, 2)), ("a", "b"))
    >>> p = Pipeline(EWMAZScore(), window=32, stride=16).fit(s)
    >>> parts = [s.slice(i, i + 100) for i in range(0, 4000, 100)]
    >>> scores = np.concatenate([c.scores for c in score_chunks(p, parts)])
    >>> bool((scores == p.score(s).scores).all())
    True
    """
    window = pipeline.window if program is None else program.window
    stride = pipeline.stride if program is None else program.stride
    k, n = (pipeline.k, pipeline.n) if program is None else (program.k, program.n)
    threshold = float(pipeline.threshold_ if program is None else program.threshold)
    persistence = Persistence(k, n)
    lik = getattr(pipeline, "likelihood_", None) if program is None else None
    stream = None if lik is None else lik.fresh()

    def finish(ends: np.ndarray, times: np.ndarray, scores: np.ndarray, labels: np.ndarray | None,
               rows: list[np.ndarray] | None = None) -> WindowChunk:
        flags = (scores > threshold).astype(np.uint8)
        alarms = np.array([persistence.push(bool(f)) for f in flags], dtype=np.uint8)
        conf = None if stream is None else stream.update_many(scores, rows)
        return WindowChunk(ends, times, scores, flags, alarms, conf, labels, threshold)

    if program is not None:
        from tinywarden.quantize import score_int8

        for part, start, labels in _windowed(pipeline, chunks, window, stride):
            scored = score_int8(pipeline, program, part)
            yield finish(scored.end_rows + start, scored.end_times, scored.scores,
                         None if labels is None else window_labels(labels, scored.end_rows, window))
        return
    # Float scores are computed in the blocks Pipeline.score uses (SCORE_BLOCK windows from the first).
    # Each window's new rows (the value record's input) are kept with it until it is scored: the first window's
    # from the series' first row, every later one's the ``stride`` rows after the previous window's end.
    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray, list[np.ndarray]]] = []
    held = 0
    for part, start, labels in _windowed(pipeline, chunks, window, stride):
        ends, raw = pipeline.window_inputs(part)
        first = 0 if start == 0 else int(ends[0]) - stride + 1 if len(ends) else 0
        pending.append((ends + start, part.timestamps[ends],
                        None if labels is None else window_labels(labels, ends, window), raw,
                        window_new_rows(part.values, ends, first)))
        held += len(ends)
        while held >= SCORE_BLOCK:
            yield _flush(pipeline, pending, finish)
            held = sum(len(p[0]) for p in pending)
    while pending:
        yield _flush(pipeline, pending, finish)


def _flush(pipeline: Pipeline,
           pending: list[tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray, list[np.ndarray]]],
           finish: Callable[..., WindowChunk]) -> WindowChunk:
    """Score the first :data:`SCORE_BLOCK` pending windows (or all, if fewer) and take them off ``pending``."""
    rows = [r for p in pending for r in p[4]]
    ends, times, labels, raw = (np.concatenate(parts) if parts[0] is not None else None
                                for parts in list(zip(*pending, strict=True))[:4])
    assert ends is not None and times is not None and raw is not None
    take = min(SCORE_BLOCK, len(ends))
    pending.clear()
    if take < len(ends):
        pending.append((ends[take:], times[take:], None if labels is None else labels[take:], raw[take:], rows[take:]))
    return finish(ends[:take], times[:take], pipeline.score_inputs(raw[:take]),
                  None if labels is None else labels[:take], rows[:take])


def _windowed(pipeline: Pipeline, chunks: Iterable[Series], window: int, stride: int
              ) -> Iterator[tuple[Series, int, np.ndarray | None]]:
    """``(part, first row, labels)`` for each chunk that completes a window: ``part`` holds the rows carried
    from before (from where the next window starts) and the chunk's, in the model's channel order."""
    channels = tuple(pipeline.channels_)
    ts = np.zeros(0)
    vals = np.zeros((0, len(channels)))
    labs: np.ndarray | None = None
    start = total = 0
    source = "<memory>"
    for chunk in chunks:
        source = chunk.source
        total += len(chunk)
        ts = np.concatenate((ts, chunk.timestamps))
        vals = np.concatenate((vals, pipeline.select_channels(chunk)))
        if chunk.labels is not None:
            labs = np.concatenate((np.zeros(0, np.int8) if labs is None else labs, chunk.labels))
        if len(ts) < window:
            continue
        yield Series(ts, vals, channels, source=source), start, labs
        used = len(window_end_rows(len(ts), window, stride)) * stride
        start += used
        ts, vals = ts[used:], vals[used:]
        labs = None if labs is None else labs[used:]
    if total < window:
        raise DataError(f"{source}: {total} rows are fewer than one window of {window}")


def evaluate_chunks(pipeline: Pipeline, chunks: Iterable[Series], skip_rows: Callable[[int], int],
                    program: Program | None = None) -> tuple[WindowScores, Evaluation]:
    """:func:`~tinywarden.evaluate.evaluate` of the series that ``chunks`` make up, scored with :func:`score_chunks`,
    equal to scoring and evaluating the whole series at once. ``skip_rows(n_rows)`` gives the rows to leave out
    once the length is known. Memory grows with the number of windows (rows / stride, 17 bytes each), not with the rows.
    """
    scan = IncidentScan()
    first: list[Series] = []

    def watched() -> Iterator[Series]:
        for chunk in chunks:
            if chunk.labels is None:
                raise DataError(f"{chunk.source}: evaluate needs a label column (0 normal / 1 anomalous)")
            if not first:
                first.append(chunk)
            scan.push(chunk)
            yield chunk

    # Only what the metrics read is kept of each chunk's windows, compactly: each window's end time and score and
    # one byte of flags (raw flag, alarm, label); not its end row, which the windows' grid gives (they are
    # ``stride`` rows apart from the first, across chunks), nor its confidence. 17 bytes a window (13 for the
    # int8 program's int32 scores), joined once at the end.
    window = pipeline.window if program is None else program.window
    stride = pipeline.stride if program is None else program.stride
    times: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    flags: list[np.ndarray] = []
    threshold, n = 0.0, 0
    for part in score_chunks(pipeline, watched(), program):
        grid = window - 1 + stride * np.arange(n, n + len(part.end_rows), dtype=np.int64)
        assert np.array_equal(part.end_rows, grid), "chunked windows left the stride grid"
        assert part.labels is not None  # watched() refuses chunks without labels
        threshold, n = part.threshold, n + len(part.end_rows)
        times.append(part.end_times)
        scores.append(part.scores)
        flags.append(part.raw_flags | (part.alarms << 1) | (part.labels << 2))
    if not n:
        raise DataError(f"{first[0].source if first else 'telemetry'}: no scored windows to evaluate")
    packed = np.concatenate(flags)
    del flags
    end_times = np.concatenate(times)
    del times
    joined = np.concatenate(scores).astype(np.float64, copy=False)
    del scores
    release_free_memory()  # what the chunks left in the allocators' caches, before the metrics' own arrays
    ws = WindowScores(window - 1 + stride * np.arange(n, dtype=np.int64), window, joined, packed & 1,
                      (packed >> 1) & 1, threshold)
    skip = int(skip_rows(scan.rows))
    ev = evaluate_windows(ws, (packed >> 2) & 1, end_times, scan.finish(), period=first[0].period,
                          params=pipeline.n_params_, model_bytes=pipeline.model_bytes_,
                          detector=pipeline.detector.name, skip_rows=skip)
    return ws, ev


def release_free_memory() -> None:
    """Give the memory freed so far back to the OS: Arrow's pool (the CSV and Parquet readers' buffers) and,
    with glibc, ``malloc_trim`` (numpy's arrays come from malloc, whose heap keeps freed pages otherwise, so a
    long chunked run's resident size would follow its largest passing chunk, not what it holds)."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    trim = getattr(_own_symbols(), "malloc_trim", None)  # glibc only
    if trim is not None:
        trim(0)


@functools.cache
def _own_symbols() -> ctypes.CDLL:
    return ctypes.CDLL(None)

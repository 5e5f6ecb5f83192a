"""Streaming telemetry in chunks (iter_series, agent --replay): the same series as the whole-file reader,
the same one-line errors with the same row numbers, and memory that does not grow with the file."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from test_agent import build_kit, config
from tinywarden.agent.loop import Agent, WindowScore
from tinywarden.agent.sources import ReplaySource, open_source
from tinywarden.errors import DataError
from tinywarden.simulate import simulate
from tinywarden.telemetry import Series, iter_series, read_series, write_csv, write_parquet


def joined(chunks: list[Series]) -> tuple[np.ndarray, ...]:
    cat = np.concatenate
    lab = None if chunks[0].labels is None else cat([c.labels for c in chunks])
    att = None if chunks[0].attacks is None else cat([c.attacks for c in chunks])
    return cat([c.timestamps for c in chunks]), cat([c.values for c in chunks]), lab, att


@pytest.fixture(scope="module")
def sim() -> Series:
    return simulate("camera", 1, "all", seed=5)


@pytest.mark.parametrize("writer", [write_csv, write_parquet])
@pytest.mark.parametrize("chunk", [1, 37, 1000, 10**9])
def test_chunks_join_to_the_whole_file(sim: Series, tmp_path: Path, writer, chunk: int) -> None:
    path = tmp_path / ("s.csv" if writer is write_csv else "s.parquet")
    writer(sim, path)
    whole = read_series(path)
    chunks = list(iter_series(path, chunk))
    assert all(len(c) <= chunk for c in chunks) and {c.channels for c in chunks} == {whole.channels}
    ts, vals, lab, att = joined(chunks)
    np.testing.assert_array_equal(ts, whole.timestamps)
    np.testing.assert_array_equal(vals, whole.values)
    np.testing.assert_array_equal(lab, whole.labels)
    np.testing.assert_array_equal(att, whole.attacks)


def _with_rows(sim: Series, path: Path, edit) -> None:
    """The first 300 rows of ``sim`` as a CSV, after ``edit(ts, vals)`` (which may break the order)."""
    ts, vals = sim.timestamps[:300].copy(), sim.values[:300].copy()
    ts, vals = edit(ts, vals)
    header = "timestamp," + ",".join(sim.channels)
    lines = [header] + [",".join([repr(float(t))] + [repr(float(v)) for v in row])
                        for t, row in zip(ts, vals, strict=True)]
    path.write_text("\n".join(lines) + "\n")


def test_drop_unordered_across_chunk_boundaries_equals_the_whole_file(sim: Series, tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"

    def dup(ts, vals):  # rows 50 and 51 repeat row 49's time: a duplicate right at a boundary of 50-row chunks
        ts[50] = ts[51] = ts[49]
        return ts, vals

    _with_rows(sim, path, dup)
    whole = read_series(path, drop_unordered=True)
    ts, vals, _, _ = joined(list(iter_series(path, 50, drop_unordered=True)))
    np.testing.assert_array_equal(ts, whole.timestamps)
    np.testing.assert_array_equal(vals, whole.values)
    with pytest.raises(DataError) as a:
        read_series(path)
    with pytest.raises(DataError) as b:
        list(iter_series(path, 50))
    assert str(a.value) == str(b.value) and "row 52, column 'timestamp': duplicate timestamp" in str(b.value)


@pytest.mark.parametrize("writer", [write_csv, write_parquet])
def test_a_bad_value_late_in_the_file_names_the_same_row(sim: Series, tmp_path: Path, writer) -> None:
    path = tmp_path / ("bad.csv" if writer is write_csv else "bad.parquet")
    vals = sim.values[:500].copy()
    vals[333, 2] = np.inf
    writer(_unchecked(sim, vals), path)
    with pytest.raises(DataError) as a:
        read_series(path)
    with pytest.raises(DataError) as b:
        list(iter_series(path, 64))
    assert str(a.value) == str(b.value) and f"{path}: row " in str(b.value)


def _unchecked(sim: Series, vals: np.ndarray) -> Series:
    """A series holding a value the constructor would refuse, to write a bad file."""
    s = object.__new__(Series)
    for name, v in (("timestamps", sim.timestamps[: len(vals)]), ("values", vals), ("channels", sim.channels),
                    ("labels", None), ("attacks", None), ("source", "<bad>"), ("meta", {})):
        object.__setattr__(s, name, v)
    return s


def test_a_folder_streams_in_time_order(sim: Series, tmp_path: Path) -> None:
    write_csv(sim.slice(700, len(sim)), tmp_path / "a.csv")
    write_parquet(sim.slice(0, 700), tmp_path / "b.parquet")
    ts, vals, _, _ = joined(list(iter_series(tmp_path, 100)))
    np.testing.assert_array_equal(ts, read_series(tmp_path).timestamps)
    np.testing.assert_array_equal(vals, read_series(tmp_path).values)
    write_csv(sim.slice(650, 660), tmp_path / "c.csv")
    with pytest.raises(DataError, match="overlap in time"):
        list(iter_series(tmp_path, 100))


def test_agent_replay_streamed_in_chunks_equals_the_in_memory_replay(tmp_path: Path) -> None:
    kit = build_kit()
    path = tmp_path / "stream.parquet"
    write_parquet(kit.stream, path)
    runs = []
    for name, source in (("memory", ReplaySource(read_series(path))), ("chunks", ReplaySource.open(path, 97))):
        windows: list[WindowScore] = []
        incidents = []
        (tmp_path / name).mkdir()
        cfg = config(kit, tmp_path / name, kit.signed(kit.m1, 1))
        with Agent(cfg, source.channels, replay=True, on_window=windows.append, on_incident=incidents.append) as a:
            assert a.run(source) == len(kit.stream)
        runs.append(([(w.time, w.score, w.tier) for w in windows], [(i.window_end, i.tier) for i in incidents]))
    assert runs[0] == runs[1] and runs[0][1]
    assert isinstance(open_source(path), ReplaySource)


def test_streaming_memory_does_not_grow_with_the_file(tmp_path: Path) -> None:
    # 100 chunks to the file (50 000 rows, chunks of 500): the ratio that makes a reader holding every line show,
    # at a quarter of the rows the test once used (200 000 in chunks of 2000; the ratio was about 55 both ways)
    rng = np.random.default_rng(0)
    n, rows = 50_000, 500
    path = tmp_path / "long.csv"
    write_csv(Series(np.arange(n, dtype=float), rng.normal(size=(n, 8)), tuple(f"c{i}" for i in range(8))), path)

    def peak(fn) -> int:
        tracemalloc.start()
        try:
            fn()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    def stream(rows: int) -> None:
        for _ in iter_series(path, rows):
            pass

    whole = peak(lambda: read_series(path))
    chunked = peak(lambda: stream(rows))
    assert chunked * 10 < whole  # the whole-file reader holds every parsed line; the stream one chunk

"""`evaluate` in chunks: the incidents found chunk by chunk and the whole evaluation equal the in-memory path's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inprocess import run_tinywarden
from tinywarden.chunked_score import evaluate_chunks
from tinywarden.cli.core import evaluate_pipeline
from tinywarden.detectors import make_detector
from tinywarden.errors import DataError
from tinywarden.evaluate import IncidentScan, find_incidents
from tinywarden.modelfile import save_pipeline
from tinywarden.pipeline import Pipeline
from tinywarden.simulate import simulate
from tinywarden.telemetry import Series, iter_series, read_series, write_csv, write_parquet


def pieces(series: Series, cuts: list[int]) -> list[Series]:
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(series)}), len(series)]
    return [series.slice(a, b) for a, b in zip(bounds, bounds[1:], strict=False)]


@settings(max_examples=200, deadline=None)
@given(labels=st.lists(st.integers(0, 1), min_size=1, max_size=60),
       names=st.lists(st.sampled_from(["", "scan", "flood"]), min_size=60, max_size=60),
       cuts=st.lists(st.integers(1, 59), max_size=8))
def test_incidents_found_in_chunks_equal_the_whole_series(labels: list[int], names: list[str],
                                                          cuts: list[int]) -> None:
    n = len(labels)
    s = Series(np.arange(n, dtype=float) * 2.0, np.zeros((n, 1)), ("x",), labels=np.array(labels),
               attacks=np.array(names[:n], dtype=object))
    scan = IncidentScan()
    for part in pieces(s, cuts):
        scan.push(part)
    whole = [(a, b, name, float(s.timestamps[a]), float(s.timestamps[b])) for a, b, name in find_incidents(s)]
    assert scan.finish() == whole and scan.rows == n


@pytest.fixture(scope="module")
def attacked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Series, Pipeline]:
    """A model trained on normal camera days, and three days with attacks as a folder of CSV and Parquet files."""
    work = tmp_path_factory.mktemp("chunked")
    p = Pipeline(make_detector("ewma"), window=32, stride=8).fit(simulate("camera", 2, "none", seed=3))
    model = work / "m.twb"
    save_pipeline(p, model)
    s = simulate("camera", 3, "all", seed=4)
    folder = work / "rec"
    cut = len(s) // 3
    write_csv(s.slice(0, cut), folder / "a.csv")
    write_parquet(s.slice(cut, 2 * cut), folder / "b.parquet")
    write_csv(s.slice(2 * cut, len(s)), folder / "c.csv")
    return model, folder, s, p


@pytest.mark.parametrize("skip_fraction", [None, 0.3])
def test_the_evaluate_command_reads_chunks_and_equals_the_whole_file(
        attacked: tuple[Path, Path, Series, Pipeline], skip_fraction: float | None) -> None:
    model, folder, s, p = attacked
    assert s.labels is not None and len(find_incidents(s)) >= 3  # incidents to cross chunk ends
    skip = 0 if skip_fraction is None else int(round(len(s) * skip_fraction))
    _, whole = evaluate_pipeline(p, read_series(folder), skip)
    argv = ["evaluate", str(model), str(folder), "--json", "--chunk-rows", "997"]
    argv += [] if skip_fraction is None else ["--skip-fraction", str(skip_fraction)]
    r = run_tinywarden(*argv)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got == json.loads(json.dumps(whole.to_dict()))  # every figure, every incident, to the last bit
    assert got["n_incidents"] >= 3 and got["skip_rows"] == skip


def test_evaluate_chunks_with_any_chunk_size_equals_the_in_memory_evaluation(
        attacked: tuple[Path, Path, Series, Pipeline]) -> None:
    _, folder, s, p = attacked
    _, whole = evaluate_pipeline(p, s, 100)
    for rows in (1, 31, 5000):
        ws, ev = evaluate_chunks(p, iter_series(folder, rows), lambda n: 100)
        assert ev == whole and len(ws.end_rows) == whole.n_windows + int((ws.end_rows < 100).sum())


def test_evaluate_chunks_refuses_data_without_labels(attacked: tuple[Path, Path, Series, Pipeline]) -> None:
    _, _, s, p = attacked
    bare = Series(s.timestamps, s.values, s.channels)
    with pytest.raises(DataError, match="needs a label column"):
        evaluate_chunks(p, [bare], lambda n: 0)


@pytest.mark.slow
def test_evaluate_chunks_memory_per_window_is_bounded() -> None:
    """What grows with a long recording is what evaluate keeps per window (17 bytes: its end time, score and one
    byte of flags) and the ranking metrics' arrays at the end: measured with tracemalloc (numpy's buffers
    included) as the peak's growth from 20 000 to 80 000 windows, on a model whose inputs are small so the
    windows' share shows. The old path (27 bytes kept a window, joined, then sklearn's three curves with their
    validation copies) grew 124 bytes a window here; this one 72."""
    import tracemalloc

    rng = np.random.default_rng(0)

    def series(n: int) -> Series:
        lab = (np.arange(n) % 5000 >= 2500) & (np.arange(n) % 5000 < 2550)
        return Series(np.arange(n, dtype=float), rng.normal(size=(n, 4)) + 5 * lab[:, None], ("a", "b", "c", "d"),
                      labels=lab.astype(np.int8))

    p = Pipeline(make_detector("ewma"), window=4, stride=1, features=["mean", "std"]).fit(series(5000))

    def peak(n: int) -> tuple[int, int]:
        s = series(n)
        parts = [s.slice(i, i + 2048) for i in range(0, n, 2048)]
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            ws, _ = evaluate_chunks(p, parts, lambda rows: 0)
            return tracemalloc.get_traced_memory()[1] - base, len(ws.end_rows)
        finally:
            tracemalloc.stop()

    (small, n_small), (large, n_large) = peak(20_000), peak(80_000)
    assert (large - small) / (n_large - n_small) < 100

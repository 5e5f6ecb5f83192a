"""`tinywarden score` in chunks: the CSV equals, byte for byte, the one the whole series scored at once gives."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tinywarden.chunked_score import score_chunks
from tinywarden.cli import app
from tinywarden.detectors import make_detector
from tinywarden.errors import DataError
from tinywarden.evaluate.metrics import window_labels
from tinywarden.modelfile import load_pipeline, save_pipeline
from tinywarden.pipeline import Pipeline
from tinywarden.quantize import int8_sections, load_program, score_int8
from tinywarden.simulate import simulate
from tinywarden.telemetry import Series, read_series, write_csv

runner = CliRunner()


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A labelled simulated file whose windows are 48 rows at stride 20 (windows straddle every chunk size
    tried), and a model (float and int8) trained on its attack-free start."""
    d = tmp_path_factory.mktemp("chunked")
    series = simulate("camera", 3, "all", seed=5, attack_free_days=1.5)
    data = d / "cam.csv"
    write_csv(series, data)
    train = series.slice(0, len(series) // 2)
    pipeline = Pipeline(make_detector("dense_ae"), window=48, stride=20).fit(train)
    extra, arrays, _ = int8_sections(pipeline, train)
    model = d / "m.twb"
    save_pipeline(pipeline, model, extra=extra, extra_arrays=arrays)
    assert series.labels is not None and series.labels.any()
    return model, data


def in_memory_csv(model: Path, data: Path, int8: bool) -> bytes:
    """What `score` wrote before it read in chunks: the whole series scored at once (kept here as the reference)."""
    pipeline = load_pipeline(str(model))
    series = read_series(data, split="test")
    scored = (score_int8(pipeline, load_program(pipeline, str(model)), series) if int8
              else pipeline.score(series))
    assert series.labels is not None
    labels = window_labels(series.labels, scored.end_rows, pipeline.window)
    conf = None if int8 else pipeline.confidence(scored.scores, series, scored.end_rows)
    assert int8 or conf is not None
    fh = io.StringIO(newline="")
    w = csv.writer(fh)
    w.writerow(["window_end", "score", "anomaly", "threshold", *(["confidence"] if conf is not None else []),
                "label"])
    threshold = int(scored.threshold) if int8 else repr(float(scored.threshold))
    for i in range(len(scored.scores)):
        value = int(scored.scores[i]) if int8 else repr(float(scored.scores[i]))
        row = [repr(float(scored.end_times[i])), value, int(scored.alarms[i]), threshold]
        row += [f"{conf[i]:.6f}"] if conf is not None else []
        w.writerow([*row, int(labels[i])])
    return fh.getvalue().encode()


@pytest.mark.parametrize("int8", [False, True], ids=["float", "int8"])
def test_score_in_chunks_writes_the_in_memory_csv_byte_for_byte(kit: tuple[Path, Path], tmp_path: Path,
                                                                 int8: bool) -> None:
    model, data = kit
    expected = in_memory_csv(model, data, int8)
    assert expected.count(b"\n") > 100 and b",1\r\n" in expected  # labelled windows are present
    for rows in (1, 37, 1000, 10**9):
        out = tmp_path / f"s{rows}.csv"
        r = runner.invoke(app, ["score", str(model), str(data), "--out", str(out), "--chunk-rows", str(rows),
                                *(["--int8"] if int8 else [])])
        assert r.exit_code == 0, r.output
        assert out.read_bytes() == expected, f"chunks of {rows} rows"


def test_score_reads_a_parquet_folder_in_chunks_like_the_joined_file(kit: tuple[Path, Path], tmp_path: Path) -> None:
    """A recording folder (what `record` writes) scores as its files joined, with windows across file ends."""
    from tinywarden.telemetry import write_parquet

    model, data = kit
    series = read_series(data)
    folder = tmp_path / "rec"
    folder.mkdir()
    cuts = [0, 1111, 2345, len(series)]
    for i, (a, b) in enumerate(zip(cuts, cuts[1:], strict=False)):
        write_parquet(series.slice(a, b), folder / f"part{i}.parquet")
    out = tmp_path / "folder.csv"
    r = runner.invoke(app, ["score", str(model), str(folder), "--out", str(out), "--chunk-rows", "500"])
    assert r.exit_code == 0, r.output
    assert out.read_bytes() == in_memory_csv(model, data, int8=False)


def test_a_file_shorter_than_one_window_is_one_error_and_writes_nothing(kit: tuple[Path, Path],
                                                                        tmp_path: Path) -> None:
    model, data = kit
    short = tmp_path / "short.csv"
    write_csv(read_series(data).slice(0, 47), short)
    out = tmp_path / "none.csv"
    r = runner.invoke(app, ["score", str(model), str(short), "--out", str(out), "--chunk-rows", "10"])
    assert isinstance(r.exception, DataError)  # the entry point prints it as one line
    assert "47 rows are fewer than one window of 48" in str(r.exception)
    assert not out.exists()


@pytest.mark.parametrize("block", [8192, 100])
def test_score_chunks_equals_the_batch_path_for_any_split(kit: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
                                                          block: int) -> None:
    """Also with detector blocks smaller than the series, so windows of one block come from several chunks."""
    import tinywarden.chunked_score
    import tinywarden.pipeline

    monkeypatch.setattr(tinywarden.pipeline, "SCORE_BLOCK", block)
    monkeypatch.setattr(tinywarden.chunked_score, "SCORE_BLOCK", block)
    model, data = kit
    pipeline = load_pipeline(str(model))
    whole = pipeline.score(read_series(data))
    rng = np.random.default_rng(0)
    series = read_series(data)
    cuts = np.unique(np.concatenate(([0, len(series)], rng.integers(1, len(series), 40))))
    parts: list[Series] = [series.slice(int(a), int(b)) for a, b in zip(cuts, cuts[1:], strict=False)]
    got = list(score_chunks(pipeline, parts))
    assert np.array_equal(np.concatenate([g.end_rows for g in got]), whole.end_rows)
    assert np.array_equal(np.concatenate([g.scores for g in got]), whole.scores)
    assert np.array_equal(np.concatenate([g.alarms for g in got]), whole.alarms)
    conf = pipeline.confidence(whole.scores, series, whole.end_rows)
    assert conf is not None and np.array_equal(np.concatenate([g.confidence for g in got]), conf)
    with pytest.raises(DataError, match="fewer than one window"):
        list(score_chunks(pipeline, [series.slice(0, 10)]))


def test_a_gap_at_a_chunk_end_is_reported_once_with_its_row(kit: tuple[Path, Path], tmp_path: Path) -> None:
    from inprocess import run_tinywarden

    model, data = kit
    s = read_series(data).slice(0, 300)
    ts = s.timestamps.copy()
    ts[74:] += 3600.0  # an hour missing after the 74th data row: between chunks 2 and 3 of 37 rows
    gapped = tmp_path / "gap.csv"
    write_csv(Series(ts, s.values, s.channels, s.labels, s.attacks), gapped)
    r = run_tinywarden("score", str(model), str(gapped), "--out", str(tmp_path / "g.csv"), "--chunk-rows", "37")
    assert r.returncode == 0, r.stderr
    note = " ".join(r.stderr.split())
    (gap,) = read_series(gapped).gaps()  # what the whole-file report said
    assert f"1 gap(s) in time, largest {gap.seconds:.0f} s after row {gap.after_row + 2};" in note, note
    assert gap.after_row + 2 == 75

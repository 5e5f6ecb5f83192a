"""Readers: round trips, public datasets, and one clear error per kind of bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinywarden.errors import DataError
from tinywarden.telemetry import Series, read_series, write_csv, write_parquet
from tinywarden.telemetry.io import parse_timestamp


def _write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_csv_round_trip_keeps_everything(tmp_path: Path) -> None:
    s = Series(np.arange(5.0) * 10 + 1.7e9, np.arange(10.0).reshape(5, 2) / 3, ("cpu_pct", "tx_pkts"),
               np.array([0, 0, 1, 1, 0]), np.array(["", "", "miner", "miner", ""], dtype=object))
    write_csv(s, tmp_path / "a.csv")
    r = read_series(tmp_path / "a.csv")
    assert r.channels == s.channels
    np.testing.assert_array_equal(r.timestamps, s.timestamps)
    np.testing.assert_allclose(r.values, s.values, rtol=1e-5)
    np.testing.assert_array_equal(r.labels, s.labels)
    assert list(r.attacks) == list(s.attacks)


def test_parquet_round_trip(tmp_path: Path) -> None:
    s = Series(np.arange(4.0), np.ones((4, 3)) * np.arange(3), ("a", "b", "c"), np.array([0, 1, 0, 0]))
    write_parquet(s, tmp_path / "a.parquet")
    r = read_series(tmp_path / "a.parquet")
    np.testing.assert_array_equal(r.values, s.values)
    np.testing.assert_array_equal(r.labels, s.labels)


def test_iso_timestamps_are_epoch_seconds(tmp_path: Path) -> None:
    p = _write(tmp_path, "timestamp,v\n2026-01-01T00:00:00Z,1\n2026-01-01 00:00:10,2\n")
    r = read_series(p)
    assert r.timestamps[1] - r.timestamps[0] == 10.0
    assert parse_timestamp("2026-01-01T00:00:00+01:00") == parse_timestamp("2025-12-31T23:00:00Z")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("timestamp,v\n1,2\n2,abc\n", "row 3, column 'v': 'abc' is not a number"),
        ("timestamp,v\n1,2\n2,nan\n", "row 3, column 'v': 'nan' is not finite"),
        ("timestamp,v\n1,2\n2,inf\n", "row 3, column 'v': 'inf' is not finite"),
        ("timestamp,v\n1,2\n1,3\n", "row 3, column 'timestamp': duplicate timestamp"),
        ("timestamp,v\n5,2\n4,3\n", "row 3, column 'timestamp': decreasing timestamp"),
        ("timestamp,label\n1,0\n", "no channel columns"),
        ("", "empty file"),
        ("timestamp,v\n", "no data rows"),
        ("time,v\n1,2\n", "no 'timestamp' column"),
        ("timestamp,v\n1,2,3\n", "row 2: 3 cells, header has 2"),
        ("timestamp,v,label\n1,2,7\n", "row 2, column 'label': '7' is not 0 or 1"),
        ("timestamp,v\nyesterday,2\n", "row 2, column 'timestamp': 'yesterday' is not a time"),
        ("timestamp,v,v\n1,2,3\n", "column 'v' appears twice"),
    ],
)
def test_bad_csv_gives_one_clear_error(tmp_path: Path, text: str, needle: str) -> None:
    p = _write(tmp_path, text)
    with pytest.raises(DataError) as err:
        read_series(p)
    msg = str(err.value)
    assert needle in msg and str(p) in msg and "\n" not in msg


def test_missing_and_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_series(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="unknown file type"):
        read_series(_write(tmp_path, "x", "a.txt"))
    with pytest.raises(DataError, match="not a readable Parquet"):
        read_series(_write(tmp_path, "not parquet", "a.parquet"))
    with pytest.raises(DataError, match="not UTF-8"):
        (tmp_path / "b.csv").write_bytes(b"timestamp,v\n1,\xff\xfe\n")
        read_series(tmp_path / "b.csv")


def test_parquet_errors_name_row_and_column(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"timestamp": [1.0, 2.0, 3.0], "v": [1.0, None, 2.0]}), tmp_path / "n.parquet")
    with pytest.raises(DataError, match=r"row 2, column 'v': missing value"):
        read_series(tmp_path / "n.parquet")
    pq.write_table(pa.table({"timestamp": [1.0, 3.0, 2.0], "v": [1.0, 2.0, 2.0]}), tmp_path / "o.parquet")
    with pytest.raises(DataError, match="decreasing timestamp"):
        read_series(tmp_path / "o.parquet")
    pq.write_table(pa.table({"timestamp": [1.0, 2.0], "v": ["a", "b"]}), tmp_path / "s.parquet")
    with pytest.raises(DataError, match="column 'v' has type string"):
        read_series(tmp_path / "s.parquet")


def test_gaps_are_reported_not_filled(tmp_path: Path) -> None:
    p = _write(tmp_path, "timestamp,v\n0,1\n10,1\n20,1\n500,1\n510,1\n")
    s = read_series(p)
    assert len(s) == 5
    gaps = s.gaps()
    assert len(gaps) == 1 and gaps[0].after_row == 2 and gaps[0].seconds == 480.0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_parser_never_crashes_on_garbage(tmp_path: Path, blob: bytes) -> None:
    p = tmp_path / "fuzz.csv"
    p.write_bytes(b"timestamp,v\n" + blob)
    try:
        s = read_series(p)
    except DataError:
        return
    assert np.isfinite(s.values).all() and (np.diff(s.timestamps) > 0).all()


def test_shared_nab_labels_are_attached(shared_data: Path) -> None:
    s = read_series(shared_data / "nab" / "data" / "realKnownCause" / "machine_temperature_system_failure.csv")
    assert s.labels is not None and 0.05 < s.labels.mean() < 0.2
    clean = read_series(shared_data / "nab" / "data" / "realAWSCloudwatch" / "ec2_cpu_utilization_c6585a.csv")
    assert clean.labels is not None and clean.labels.sum() == 0


def test_shared_npz_splits(shared_data: Path) -> None:
    path = shared_data / "smd_asd" / "npz" / "machine-2-1.npz"
    tr = read_series(f"{path}:train")
    te = read_series(path)
    assert tr.labels is None and te.labels is not None and te.n_channels == 38
    assert te.period == 60.0
    assert read_series(shared_data / "smd_asd" / "npz" / "omi-1.npz").period == 300.0


def test_drop_unordered_keeps_only_increasing_rows(tmp_path: Path) -> None:
    p = _write(tmp_path, "timestamp,v\n1,1\n2,2\n2,3\n1.5,4\n3,5\n")
    with pytest.raises(DataError, match="--drop-unordered"):
        read_series(p)
    s = read_series(p, drop_unordered=True)
    assert s.timestamps.tolist() == [1.0, 2.0, 3.0] and s.values[:, 0].tolist() == [1.0, 2.0, 5.0]
    assert s.meta["dropped_rows"] == "2"

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
        ("timestamp,v\n1,2\n2,1e308\n", "row 3, column 'v': '1e308' is out of range (|value| > 1e+30)"),
        ("timestamp,v\n1,2\n2,-2e30\n", "row 3, column 'v': '-2e30' is out of range"),
        ("timestamp,v\n1,2\nnan,2\n", "row 3, column 'timestamp': 'nan' is not finite"),
    ],
)
def test_bad_csv_gives_one_clear_error(tmp_path: Path, text: str, needle: str) -> None:
    p = _write(tmp_path, text)
    with pytest.raises(DataError) as err:
        read_series(p)
    msg = str(err.value)
    assert needle in msg and str(p) in msg and "\n" not in msg


@pytest.mark.parametrize("blank", ["", " ", "\t "])
def test_a_column_without_a_name_is_refused_naming_file_and_position(tmp_path: Path, blank: str) -> None:
    # a blank header cell (a trailing comma, a deleted name) became a channel named "", in CSV and in Parquet
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tinywarden.telemetry import iter_series

    text = _write(tmp_path, f"timestamp,v,{blank}\n1,2,3\n2,3,4\n")
    pq.write_table(pa.table({"timestamp": [1.0, 2.0], "v": [2.0, 3.0], blank: [3.0, 4.0]}), tmp_path / "t.parquet")
    for path in (text, tmp_path / "t.parquet"):
        for read in (read_series, lambda p: list(iter_series(p))):
            with pytest.raises(DataError) as err:
                read(path)
            assert str(err.value) == f"{path}: row 1, column 3: the column has no name; name every column"


def test_names_are_compared_and_kept_without_surrounding_spaces_in_csv_and_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"timestamp": [1.0, 2.0], " v ": [2.0, 3.0]}), tmp_path / "s.parquet")
    assert read_series(_write(tmp_path, "timestamp, v \n1,2\n2,3\n")).channels == ("v",)
    assert read_series(tmp_path / "s.parquet").channels == ("v",)
    pq.write_table(pa.table({"timestamp": [1.0, 2.0], "v": [2.0, 3.0], "v ": [2.0, 3.0]}), tmp_path / "d.parquet")
    for path in (_write(tmp_path, "timestamp,v,v \n1,2,3\n", "d.csv"), tmp_path / "d.parquet"):
        with pytest.raises(DataError, match=r"row 1: column 'v' appears twice"):
            read_series(path)


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


def test_values_up_to_the_bound_are_kept(tmp_path: Path) -> None:
    # 64-bit byte counters and nanosecond clocks are real telemetry: far below the bound, read as they are
    r = read_series(_write(tmp_path, "timestamp,bytes\n1,1.8e19\n2,1e30\n"))
    assert r.values[:, 0].tolist() == [1.8e19, 1e30]


def test_huge_parquet_value_names_row_and_column(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"timestamp": [1.0, 2.0, 3.0], "v": [1.0, 2.0, -1e308]}), tmp_path / "h.parquet")
    with pytest.raises(DataError, match=r"h.parquet: row 3, column 'v': -1e\+308 is out of range"):
        read_series(tmp_path / "h.parquet")


def test_series_refuses_huge_values_from_any_source() -> None:
    with pytest.raises(DataError, match=r"row 1, column 'v': value 1e\+31 is out of range"):
        Series(np.arange(2.0), np.array([[1.0], [1e31]]), ("v",))


def test_utf8_bom_is_not_part_of_the_first_column_name(tmp_path: Path) -> None:
    p = tmp_path / "bom.csv"
    p.write_bytes("timestamp,cpu_pct\n0,1\n10,2\n".encode("utf-8-sig"))
    r = read_series(p)
    assert r.channels == ("cpu_pct",) and r.timestamps.tolist() == [0.0, 10.0]


@pytest.mark.parametrize(("scale", "unit"), [(1e3, "ms"), (1e6, "us"), (1e9, "ns")])
def test_epoch_milli_micro_nano_seconds_are_converted_and_recorded(tmp_path: Path, scale: float, unit: str) -> None:
    t0 = 1_767_225_600  # 2026-01-01T00:00:00Z
    rows = "".join(f"{int((t0 + 10 * i) * scale)},{i}\n" for i in range(4))
    r = read_series(_write(tmp_path, "timestamp,v\n" + rows))
    assert r.timestamps.tolist() == [t0 + 10.0 * i for i in range(4)]
    assert r.period == 10.0 and r.meta["time_unit"] == unit


def test_epoch_milliseconds_in_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"timestamp": pa.array([1_767_225_600_000, 1_767_225_610_000], pa.int64()),
                             "v": [1.0, 2.0]}), tmp_path / "ms.parquet")
    r = read_series(tmp_path / "ms.parquet")
    assert r.timestamps.tolist() == [1_767_225_600.0, 1_767_225_610.0] and r.meta["time_unit"] == "ms"


def test_epoch_seconds_and_iso_times_are_left_as_they_are(tmp_path: Path) -> None:
    r = read_series(_write(tmp_path, "timestamp,v\n1767225600,1\n1767225610,2\n"))
    assert r.timestamps.tolist() == [1_767_225_600.0, 1_767_225_610.0] and "time_unit" not in r.meta
    r = read_series(_write(tmp_path, "timestamp,v\n2026-01-01T00:00:00Z,1\n1767225610,2\n", "iso.csv"))
    assert r.period == 10.0 and "time_unit" not in r.meta


#: Fuzz finding (issue 12): a 3.1 KB Parquet file whose row group claims 488,394,126,936 rows (the file: 40)
PARQUET_OOM = Path(__file__).parent / "fuzz" / "regressions" / "parquet-arrowmemoryerror-io-py-240.bin"

_READ_CAPPED = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from tinywarden.errors import DataError
from tinywarden import telemetry
try:
    for _ in getattr(telemetry, sys.argv[2])(sys.argv[1]):
        pass
except DataError as exc:
    print(exc)
"""


@pytest.mark.parametrize("reader", ["read_series", "iter_series"])  # the whole-file and the streaming reader
def test_parquet_footer_claiming_billions_of_rows_is_refused_before_arrow_allocates(tmp_path: Path,
                                                                                     reader: str) -> None:
    """Arrow sizes its buffers from the row group's stated row count: for this file it asked for 1 TiB. The read
    runs in a child capped at 1 GiB of address space, so an unbounded reader fails there (its allocation refused)
    and not on the machine; the fixed reader refuses the footer before reading any data."""
    import subprocess
    import sys

    f = tmp_path / "oom.parquet"
    f.write_bytes(PARQUET_OOM.read_bytes())
    proc = subprocess.run([sys.executable, "-c", _READ_CAPPED, str(f), reader], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == (f"{f}: corrupt Parquet footer: the row groups claim 488394126936 rows in all "
                                   "(488394126936), the file 40")


def test_parquet_decoded_size_limit_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A consistent footer is still refused when the decoded table would exceed the limit (8 bytes a cell)."""
    s = Series(np.arange(100.0) + 1.7e9, np.ones((100, 2)), ("a", "b"))
    write_parquet(s, tmp_path / "a.parquet")
    assert read_series(tmp_path / "a.parquet").values.shape == (100, 2)
    monkeypatch.setenv("TINYWARDEN_MAX_DECODED_BYTES", str(8 * 100 * 3 - 1))
    with pytest.raises(DataError, match=r"a\.parquet: 100 rows x 3 columns would take 2400 bytes decoded, over the "
                                        r"limit of 2399 \(TINYWARDEN_MAX_DECODED_BYTES raises it\)$"):
        read_series(tmp_path / "a.parquet")
    monkeypatch.setenv("TINYWARDEN_MAX_DECODED_BYTES", "2400")
    assert read_series(tmp_path / "a.parquet").values.shape == (100, 2)
    monkeypatch.setenv("TINYWARDEN_MAX_DECODED_BYTES", "lots")
    with pytest.raises(DataError, match="TINYWARDEN_MAX_DECODED_BYTES='lots': expected a positive number of bytes"):
        read_series(tmp_path / "a.parquet")


def test_a_parquet_file_replaced_while_read_is_read_whole_as_it_was_checked(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The recorder rewrites its open segment by rename while a reader may be reading it (the CI caught `record`'s
    rename test reading a folder mid-flush: 'Page was smaller (12) than expected (18)', the old reader opened the
    path twice). The footer that was checked and the rows that are read must come from one file: the old one."""
    import tinywarden.telemetry.io as tio

    path = tmp_path / "rec.parquet"
    old = Series(np.arange(4.0) + 1.7e9, np.ones((4, 2)), ("a", "b"))
    write_parquet(old, path)
    checked = tio._check_parquet_footer

    def swap_after_check(p: Path, md: object) -> None:
        checked(p, md)
        write_parquet(Series(np.arange(9.0) + 1.7e9, np.full((9, 2), 2.0), ("a", "b")), path)  # by rename

    monkeypatch.setattr(tio, "_check_parquet_footer", swap_after_check)
    got = read_series(path)
    np.testing.assert_array_equal(got.values, old.values)
    monkeypatch.undo()
    assert read_series(path).values.shape == (9, 2)  # the next read sees the new file

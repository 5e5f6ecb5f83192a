"""`tinywarden record` and recording folders: real short recordings, a SIGKILL mid-run, resume, bad folders."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tinywarden.errors import ConfigError, DataError
from tinywarden.simulate import simulate
from tinywarden.telemetry import Series, read_series, write_csv, write_parquet
from tinywarden.telemetry import record as rec
from tinywarden.telemetry.live import LiveSampler
from tinywarden.telemetry.record import Recorder, parse_duration


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tinywarden", *args]


def files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def test_a_killed_recording_keeps_every_flushed_row_and_a_restart_appends(tmp_path: Path) -> None:
    out = tmp_path / "rec"
    proc = subprocess.Popen(cli("record", "--out", str(out), "--rate", "20", "--interface", "lo", "--flush", "0.2s"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        rows = 0
        while rows < 10:  # wait until at least two flushes are on disk
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the recorder wrote nothing"
            time.sleep(0.2)
            if out.exists() and files(out):
                rows = len(read_series(out))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    killed = files(out)
    assert len(killed) == 1 and killed[0].suffix == ".parquet"
    first = read_series(out)  # whole after the kill: every write was atomic
    assert len(first) >= rows
    before = killed[0].read_bytes()

    r = subprocess.run(cli("record", "--out", str(out), "--rate", "20", "--interface", "lo", "--duration", "1s",
                           "--format", "csv"), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "continuing" in r.stdout and "channels" in r.stdout and "gaps" in r.stdout
    after = files(out)
    assert len(after) == 2 and after[0].read_bytes() == before  # appended, nothing overwritten
    both = read_series(out)
    assert both.channels == LiveSampler(0.05, ["lo"]).channels
    assert both.meta["files"] == "2"
    second = read_series(after[1])
    assert len(both) == len(first) + len(second) and 0 < len(second) <= 21
    assert (np.diff(both.timestamps) > 0).all()
    assert len(both.gaps()) >= 1  # the restart is a gap, reported (not filled)


def test_a_full_disk_stops_cleanly_and_keeps_what_was_written(tmp_path: Path, monkeypatch) -> None:
    real = rec.write_parquet
    calls = 0

    def write(series: Series, path: Path) -> None:
        nonlocal calls
        calls += 1
        if calls > 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(series, path)

    monkeypatch.setattr(rec, "write_parquet", write)
    r = Recorder(LiveSampler(0.02, ["lo"]), tmp_path, flush_s=0.05)
    st = r.run(30.0)
    assert st.stopped is not None and "No space left" in st.stopped and "kept" in st.stopped
    kept = read_series(tmp_path)
    assert len(kept) == st.rows_flushed > 0 and st.rows > st.rows_flushed


def test_a_folder_of_other_channels_is_refused_at_start(tmp_path: Path) -> None:
    write_csv(Series(np.array([1.0, 2.0]), np.ones((2, 1)), ("other",)), tmp_path / "old.csv")
    with pytest.raises(ConfigError, match="old.csv was recorded with channels other"):
        Recorder(LiveSampler(1.0, ["lo"]), tmp_path)


def test_rotation_starts_new_files_that_read_back_in_order(tmp_path: Path) -> None:
    st = Recorder(LiveSampler(0.02, ["lo"]), tmp_path, fmt="csv", rotate_s=10, max_rows=5, flush_s=0.1).run(0.4)
    assert st.stopped is None and len(st.files) >= 3
    s = read_series(tmp_path)
    assert len(s) == st.rows == st.rows_flushed and s.meta["files"] == str(len(st.files))


def test_parse_duration() -> None:
    assert parse_duration("2h") == 7200 and parse_duration("1d") == 86400 and parse_duration("0.5s") == 0.5
    for bad in ("", "h", "-1m", "nan", "2 weeks", "0"):
        with pytest.raises(ConfigError, match="--duration"):
            parse_duration(bad)


# -- folders as one series ------------------------------------------------------------------------


@pytest.fixture()
def parts(tmp_path: Path) -> tuple[Path, Series]:
    s = simulate("camera", 1, "none", seed=1)
    a, b, c = s.slice(0, 300), s.slice(300, 700), s.slice(700, len(s))
    write_csv(c, tmp_path / "z.csv")  # names out of time order: the folder is read by time
    write_parquet(a, tmp_path / "b.parquet")
    write_csv(b, tmp_path / "a.csv")
    (tmp_path / "notes.txt").write_text("ignored")
    return tmp_path, s


def test_a_folder_reads_as_the_whole_series_in_time_order(parts: tuple[Path, Series]) -> None:
    folder, s = parts
    got = read_series(folder)
    assert got.channels == s.channels and got.meta["files"] == "3"
    np.testing.assert_array_equal(got.timestamps, s.timestamps)
    np.testing.assert_allclose(got.values, s.values, rtol=1e-9)


def test_a_corrupt_file_in_a_folder_is_skipped_and_named(parts: tuple[Path, Series]) -> None:
    folder, s = parts
    (folder / "m.parquet").write_bytes(b"PAR1 truncated")
    got = read_series(folder)
    assert len(got) == len(s) and "m.parquet" in got.meta["skipped_files"]


def test_folder_errors_are_one_line(parts: tuple[Path, Series], tmp_path_factory: pytest.TempPathFactory) -> None:
    folder, s = parts
    write_csv(s.slice(250, 260), folder / "y.csv")
    with pytest.raises(DataError, match="overlap in time") as exc:
        read_series(folder)
    assert "\n" not in str(exc.value)
    (folder / "y.csv").unlink()
    write_csv(Series(s.timestamps[-1] + np.arange(1.0, 4.0), np.ones((3, 1)), ("x",)), folder / "y.csv")
    with pytest.raises(DataError, match="has channels x, but .* one kind of recording"):
        read_series(folder)
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(DataError, match="holds no telemetry files"):
        read_series(empty)
    (empty / "bad.csv").write_text("no,timestamp\n")
    with pytest.raises(DataError, match="no readable telemetry file"):
        read_series(empty)


def test_train_and_evaluate_take_a_folder(parts: tuple[Path, Series], tmp_path: Path) -> None:
    folder, _ = parts
    model = tmp_path / "m.twb"
    r = subprocess.run(cli("train", str(folder), "--model", "ewma", "--out", str(model)),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert model.exists()

"""`tinywarden record` and recording folders: real short recordings, a SIGKILL mid-run, resume, bad folders."""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from inprocess import run_tinywarden
from tinywarden.errors import ConfigError, DataError
from tinywarden.simulate import simulate
from tinywarden.telemetry import Series, iter_series, read_series, write_csv, write_parquet
from tinywarden.telemetry import record as rec
from tinywarden.telemetry.live import LiveSampler
from tinywarden.telemetry.record import CLOCK_STEP_S, Recorder, parse_duration


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


def _root_tools(*tools: str) -> str | None:
    """Why a test that needs root and these commands cannot run here (None: it can)."""
    if os.geteuid() != 0:
        return "needs root"
    missing = [t for t in tools if shutil.which(t) is None]
    return f"needs {', '.join(missing)}" if missing else None


@pytest.mark.skipif(_root_tools("unshare", "mount") is not None, reason=str(_root_tools("unshare", "mount")))
def test_a_real_full_disk_stops_the_command_in_one_line_and_keeps_what_was_written(tmp_path: Path) -> None:
    """`record` on a 16 KiB tmpfs, in a mount namespace of its own: the disk fills, the command says so."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    read_back = ("from tinywarden.telemetry import read_series; import sys; "
                 "print('READ', len(read_series(sys.argv[1])))")
    script = (f"mount -t tmpfs -o size=16k tmpfs {mnt} && "
              f"{sys.executable} -m tinywarden record --out {mnt}/rec --rate 50 --interface lo --flush 0.1s "
              f"--format csv --duration 10m; echo RC=$?; {sys.executable} -c {shlex.quote(read_back)} {mnt}/rec")
    r = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "COLUMNS": "300"})
    out = r.stdout
    assert "RC=1" in out and "Traceback" not in r.stderr + out, r.stderr[-2000:]
    stopped = next(ln for ln in out.splitlines() if ln.startswith("stopped:"))
    assert "No space left on device" in stopped and "kept" in stopped
    kept = int(stopped.split("recording stopped; ")[1].split()[0])
    assert kept > 0 and f"READ {kept}" in out  # what it says it kept is on disk, readable


class _Clock:
    """``time.monotonic`` that remembers its last reading: the fake counters grow with the sampler's own clock, so
    a rate is exact however the test process is scheduled (a pause between the sampler's clock reading and its
    counter reading would otherwise read as a burst of packets)."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def __call__(self) -> float:
        self.last = time.monotonic()
        return self.last


class _Counters:
    """psutil.net_io_counters(pernic=True) over real loopback, with an interface ``eth9`` that comes and goes."""

    def __init__(self, clock: _Clock) -> None:
        self.calls = 0
        self.gone: range = range(0)
        self.clock = clock
        self.real = psutil.net_io_counters  # the real one: made before the test patches it

    def __call__(self, pernic: bool = True, nowrap: bool = True) -> dict:
        self.calls += 1
        per = dict(self.real(pernic=True))
        if self.calls not in self.gone:
            # counters as a busy interface has them: large, growing at 5000 packets a second of the sampler's clock
            per["eth9"] = per["lo"]._replace(packets_recv=10**6 + round(5000 * self.clock.last),
                                             packets_sent=10**6, bytes_recv=10**9, bytes_sent=10**9)
        return per


def test_an_interface_that_disappears_is_noted_reads_zero_and_comes_back_without_a_spike(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    fake = _Counters(clock)
    monkeypatch.setattr(psutil, "net_io_counters", fake)
    sampler = LiveSampler(0.02, ["lo", "eth9"], clock=clock)
    fake.gone = range(fake.calls + 6, fake.calls + 12)  # gone for six readings, then back
    r = Recorder(sampler, tmp_path, flush_s=0.05)
    st = r.run(None, should_stop=lambda: fake.calls > 25 or r.stats.rows >= 200)
    assert st.stopped is None
    gone = [n for n in st.notes if "interface eth9 disappeared" in n]
    back = [n for n in st.notes if "interface eth9 is back" in n]
    assert len(gone) == 1 and len(back) == 1, st.notes
    row_gone, row_back = (int(n.split()[1].rstrip(":")) for n in (gone[0], back[0]))
    s = read_series(tmp_path)
    assert len(s) == st.rows and row_back - row_gone == 6
    rx = s.values[:, s.channels.index("eth9.rx_pkts_s")]
    # rows are 1-based in the notes: gone rows and the first one back read 0, none reads the counters' restart
    assert (rx[row_gone - 1:row_back] == 0).all()
    # no spike of the restarted counters (10**6 packets in one 20 ms step); the first row's span starts inside
    # the sampler's construction, before its clock is read, so the fake cannot follow it there
    assert rx[1:].max() < 5000 * 3
    assert (rx[row_back:] > 0).all() and (rx[1:row_gone - 1] > 0).all()
    lo = s.values[:, s.channels.index("lo.rx_pkts_s")]
    assert np.isfinite(lo).all() and len(lo) > row_back  # the other channels were recorded throughout


def _veth_ns() -> str | None:
    return _root_tools("ip")


@pytest.mark.skipif(_veth_ns() is not None, reason=str(_veth_ns()))
def test_an_interface_renamed_mid_recording_is_named_in_a_note(tmp_path: Path) -> None:
    """A real rename, in a network namespace this test makes: `ip link set b0 name b9` while `record` runs."""
    ns = f"twrec{os.getpid()}"
    ip = ["ip", "-n", ns]
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for pair in ("a", "b"):
            subprocess.run([*ip, "link", "add", f"{pair}0", "type", "veth", "peer", "name", f"{pair}1"], check=True)
        out = tmp_path / "rec"
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *cli("record", "--out", str(out), "--rate", "20",
                                 "--interface", "a0", "--interface", "b0", "--flush", "0.1s")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "COLUMNS": "300"})

        def rows() -> int:
            return len(read_series(out)) if out.exists() and files(out) else 0

        def wait_rows(n: int) -> None:
            deadline = time.monotonic() + 120
            while rows() < n:
                assert proc.poll() is None and time.monotonic() < deadline, "the recorder stopped or wrote nothing"
                time.sleep(0.1)

        wait_rows(5)
        subprocess.run([*ip, "link", "set", "b0", "name", "b9"], check=True)
        wait_rows(rows() + 5)
        subprocess.run([*ip, "link", "set", "b9", "name", "b0"], check=True)
        wait_rows(rows() + 5)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr
    assert "interface b0 disappeared (renamed to b9: same interface index)" in stdout, stdout
    assert "interface b0 is back" in stdout and "notes" in stdout
    s = read_series(out)
    assert "a0.rx_pkts_s" in s.channels and "b0.rx_pkts_s" in s.channels and len(s) >= 15


def test_wall_clock_steps_are_followed_forward_never_back_and_said(tmp_path: Path) -> None:
    calls = 0

    def wall() -> float:  # the real clock, stepped forward an hour at the 10th reading and back two at the 20th
        nonlocal calls
        calls += 1
        return time.time() + (3600.0 if calls >= 10 else 0.0) - (7200.0 if calls >= 20 else 0.0)

    r = Recorder(LiveSampler(0.02, ["lo"]), tmp_path, flush_s=0.05, wallclock=wall)
    st = r.run(None, should_stop=lambda: calls >= 30 or r.stats.rows >= 200)
    s = read_series(tmp_path)
    assert len(s) == st.rows and (np.diff(s.timestamps) > 0).all()  # nothing out of order on disk
    fwd = [n for n in st.notes if "jumped forward" in n]
    back = [n for n in st.notes if "stepped back" in n]
    assert len(fwd) == 1 and len(back) == 1 and len(st.notes) == 2, st.notes
    assert "3600 s" in fwd[0] and "7200 s" in back[0] and "in order" in back[0]
    big = [g for g in s.gaps() if g.seconds > 3000]
    assert len(big) == 1 and st.gaps >= 1  # the forward step is a gap, said as one
    assert np.diff(s.timestamps).max() < 3600 + 60 and CLOCK_STEP_S < 10


def test_a_restart_with_the_wall_clock_behind_the_folder_continues_after_it_and_says_so(tmp_path: Path) -> None:
    with Recorder(LiveSampler(0.02, ["lo"]), tmp_path, flush_s=0.05) as r:
        first = r.run(0.2)
    past = Recorder(LiveSampler(0.02, ["lo"]), tmp_path, flush_s=0.05, wallclock=lambda: time.time() - 86400)
    st = past.run(0.2)
    s = read_series(tmp_path)
    assert len(s) == first.rows + st.rows and (np.diff(s.timestamps) > 0).all()
    assert len(st.notes) == 1 and "before the folder's last timestamp" in st.notes[0], st.notes



def test_a_file_with_an_upper_case_suffix_is_resumed_after_as_the_readers_read_it(tmp_path: Path) -> None:
    # the recorder listed the folder case-sensitively, its readers did not: after a day recorded as "day.CSV" (ahead
    # of this clock), a restart wrote files overlapping it, and the folder could no longer be read
    channels = LiveSampler(1.0, ["lo"]).channels
    ahead = time.time() + 3600.0
    write_csv(Series(ahead + np.arange(3.0), np.ones((3, len(channels))), channels), tmp_path / "day.CSV")
    with Recorder(LiveSampler(0.02, ["lo"]), tmp_path, fmt="csv", flush_s=0.05) as r:
        st = r.run(0.2)
    assert st.resumed_after == ahead + 2.0
    s = read_series(tmp_path)
    assert len(s) == 3 + st.rows and (np.diff(s.timestamps) > 0).all()

def test_a_folder_of_other_channels_is_refused_at_start(tmp_path: Path) -> None:
    write_csv(Series(np.array([1.0, 2.0]), np.ones((2, 1)), ("other",)), tmp_path / "old.csv")
    with pytest.raises(ConfigError, match="old.csv was recorded with channels other"):
        Recorder(LiveSampler(1.0, ["lo"]), tmp_path)


def test_a_planted_file_dated_past_the_year_9999_is_refused_at_start_not_a_crash_mid_run(tmp_path: Path) -> None:
    # numeric times from 1e17 are read as ns: 1e30 is 1e21 s, which no clock or file name can follow; the recorder
    # continued "after" it and died in gmtime (a traceback, nothing recorded) instead of saying which file it is
    channels = LiveSampler(1.0, ["lo"]).channels
    write_csv(Series(np.array([1e30, 2e30]), np.ones((2, len(channels))), channels), tmp_path / "planted.csv")
    with pytest.raises(ConfigError, match=r"planted\.csv.*9999") as info:
        Recorder(LiveSampler(0.02, ["lo"]), tmp_path, flush_s=0.05).run(0.1)
    assert "\n" not in str(info.value)


def test_rotation_starts_new_files_that_read_back_in_order(tmp_path: Path) -> None:
    r = Recorder(LiveSampler(0.02, ["lo"]), tmp_path, fmt="csv", rotate_s=10, max_rows=5, flush_s=0.1)
    st = r.run(None, should_stop=lambda: r.stats.rows >= 16)  # a row count, not a time: the host may be slow
    assert st.stopped is None and len(st.files) >= 3
    s = read_series(tmp_path)
    assert len(s) == st.rows == st.rows_flushed and s.meta["files"] == str(len(st.files))


def test_a_second_recorder_on_the_same_folder_is_refused_in_one_line_naming_the_first(tmp_path: Path) -> None:
    # two recorders on one folder each picked the next sequence number from the same listing and rewrote their own
    # open segment: names could collide and the folder no longer read as one series (files overlapping in time)
    first = Recorder(LiveSampler(0.02, ["lo"]), tmp_path, flush_s=0.05)
    holder = rf"--out {re.escape(str(tmp_path))}: .*recorder \(pid {os.getpid()}\)"
    with pytest.raises(ConfigError, match=holder) as info:
        Recorder(LiveSampler(0.02, ["lo"]), tmp_path)
    assert "\n" not in str(info.value)
    r = run_tinywarden("record", "--out", tmp_path, "--interface", "lo", "--duration", "1s")
    assert r.returncode == 2 and r.stderr.startswith("error:") and len(r.stderr.strip().splitlines()) == 1, r
    assert str(tmp_path) in r.stderr and f"pid {os.getpid()}" in r.stderr, r.stderr
    st = first.run(0.1)
    first.close()
    assert st.stopped is None and (tmp_path / rec.LOCK_FILE).exists()
    whole = read_series(tmp_path)  # the lock file is not telemetry, read whole or in chunks
    assert len(whole) == st.rows and whole.meta["files"] == "1" and "skipped_files" not in whole.meta
    assert sum(len(c) for c in iter_series(tmp_path)) == st.rows
    with Recorder(LiveSampler(0.02, ["lo"]), tmp_path, flush_s=0.05) as again:  # released when the first closed
        again.run(0.1)
    assert read_series(tmp_path).meta["files"] == "2"


def test_a_lock_file_left_by_a_killed_recorder_does_not_refuse(tmp_path: Path) -> None:
    # flock is the kernel's, released when the process dies: the file a SIGKILLed recorder leaves says nothing
    code = ("import os, signal, sys; from tinywarden.telemetry.live import LiveSampler; "
            "from tinywarden.telemetry.record import Recorder; r = Recorder(LiveSampler(1.0, ['lo']), sys.argv[1]); "
            "os.kill(os.getpid(), signal.SIGKILL)")
    dead = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stderr=subprocess.PIPE)
    _, err = dead.communicate(timeout=120)
    assert dead.returncode == -signal.SIGKILL, err.decode()
    assert (tmp_path / rec.LOCK_FILE).read_text().strip() == str(dead.pid)  # left behind, naming the dead recorder
    with Recorder(LiveSampler(0.02, ["lo"]), tmp_path, flush_s=0.05) as r:
        assert r.run(0.1).rows > 0



def test_a_lock_file_planted_as_a_link_is_refused_and_its_target_left_alone(tmp_path: Path) -> None:
    # the lock file was opened following links and then truncated for the pid: a recorder run as root on a folder
    # someone else can write would empty whatever file the link names
    victim = tmp_path / "victim.conf"
    victim.write_text("keep me\n")
    out = tmp_path / "rec"
    out.mkdir()
    (out / rec.LOCK_FILE).symlink_to(victim)
    with pytest.raises(ConfigError, match=r"--out .*rec: cannot lock .*\.record\.lock"):
        Recorder(LiveSampler(1.0, ["lo"]), out)
    assert victim.read_text() == "keep me\n"
    (out / rec.LOCK_FILE).unlink()
    os.mkfifo(out / rec.LOCK_FILE)  # nor a FIFO (or device) in its place
    with pytest.raises(ConfigError, match=r"cannot lock .*\(not a regular file\)"):
        Recorder(LiveSampler(1.0, ["lo"]), out)

def test_a_name_ending_in_a_newline_is_not_a_segment(tmp_path: Path) -> None:
    # the segment pattern was "^...$" applied with re.match, whose "$" also matches before a final newline
    name = "rec-20260101T000000Z-0042.csv"
    assert rec.segment_number(name) == 42 and rec.segment_number(name + "\n") is None
    channels = LiveSampler(1.0, ["lo"]).channels
    write_csv(Series(np.array([1.0]), np.ones((1, len(channels))), channels), tmp_path / f"{name[:-8]}0003.csv")
    (tmp_path / (name + "\n")).write_text("not a segment")
    with Recorder(LiveSampler(0.02, ["lo"]), tmp_path, fmt="csv", flush_s=0.05) as r:
        st = r.run(0.1)
    assert [f.name[-8:] for f in st.files] == ["0004.csv"]  # past the real segment, not past the planted name


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


def test_train_tune_evaluate_and_agent_replay_take_a_folder_and_name_a_corrupt_file(
        parts: tuple[Path, Series], tmp_path_factory: pytest.TempPathFactory) -> None:
    folder, s = parts
    (folder / "m.parquet").write_bytes(b"PAR1 truncated")  # a damaged segment: skipped, and named
    work = tmp_path_factory.mktemp("out")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(cli(*args), capture_output=True, text=True, timeout=600, cwd=work,
                           env={**os.environ, "COLUMNS": "300"})
        assert r.returncode == 0 and "Traceback" not in r.stderr, f"{args}: {r.stdout[-1500:]} {r.stderr[-1500:]}"
        return r

    r = run("train", str(folder), "--model", "ewma", "--window", "32", "--stride", "16", "--out", "m.twb")
    assert "m.parquet" in r.stderr and "skipped unreadable" in r.stderr
    r = run("evaluate", "m.twb", str(folder), "--json")
    assert "m.parquet" in r.stderr
    assert json.loads(r.stdout)["n_windows"] == (len(s) - 32) // 16 + 1  # every row of the three files
    r = run("tune", str(folder), "--families", "ewma", "--windows", "32", "--trials", "1", "--no-count",
            "--out", "tuned.twb")
    assert "m.parquet" in r.stderr and (work / "tuned.twb").exists()
    run("keygen", "--out", "fleet")
    run("bundle", "m.twb", "--policy", str(Path(__file__).parents[1] / "examples" / "policy.toml"),
        "--model-id", "folder", "--profile", "camera", "--out", "m.twbundle")
    run("sign", "m.twbundle", "--key", "fleet.key", "--version", "1")
    r = run("agent", "--pubkey", "fleet.pub", "--state-dir", "state", "--bundle", "m.twbundle", "--replay",
            str(folder), "--drain", "0")
    assert f"{len(s)} / " in r.stdout  # samples seen: every row of the folder, once
    assert "m.parquet" in r.stderr


def test_tune_reads_at_most_max_rows_and_says_so(parts: tuple[Path, Series], tmp_path_factory: pytest.TempPathFactory
                                                 ) -> None:
    from tinywarden.telemetry.io import read_head

    folder, s = parts
    whole, more = read_head(folder, len(s))
    assert not more and whole.meta == read_series(folder).meta
    np.testing.assert_array_equal(whole.values, read_series(folder).values)
    head, more = read_head(folder, 500)
    assert more and len(head) == 500 and head.meta["read_rows"] == "500"
    np.testing.assert_array_equal(head.timestamps, s.timestamps[:500])
    np.testing.assert_allclose(head.values, s.values[:500], rtol=1e-9)
    work = tmp_path_factory.mktemp("tune")
    r = subprocess.run(cli("tune", str(folder), "--families", "ewma", "--windows", "32", "--trials", "1",
                           "--no-count", "--max-rows", "500", "--out", str(work / "t.twb"), "--json"),
                       capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "300"})
    assert r.returncode == 0, r.stderr
    assert "tune reads the first 500 rows" in r.stderr


def test_a_csv_segment_formats_each_row_once_and_reads_as_write_csv_writes_it(tmp_path: Path, monkeypatch) -> None:
    # Before, every flush formatted the whole open segment again: at 10 Hz with a 2 s flush the range's
    # 40-minute recording lost 18% of its sampling slots by the end to that formatting.
    from tinywarden.telemetry import io as tio

    formatted = 0
    real = tio.csv_rows

    def counting(series: Series) -> str:
        nonlocal formatted
        formatted += len(series)
        return real(series)

    monkeypatch.setattr(rec, "csv_rows", counting, raising=False)
    monkeypatch.setattr(tio, "csv_rows", counting)
    r = Recorder(LiveSampler(0.02, ["lo"]), tmp_path, fmt="csv", flush_s=0.05)
    st = r.run(1.0)
    assert st.stopped is None and st.rows > 20 and len(st.files) == 1
    assert formatted == st.rows  # each row once, however many flushes
    written = st.files[0].read_bytes()
    again = tmp_path / "again" / "x.csv"
    write_csv(read_series(st.files[0]), again)
    assert written == again.read_bytes()  # the text write_csv writes for the same rows

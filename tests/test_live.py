"""The psutil live sampler, on this host's real counters, with an injected clock for the rates."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinywarden.errors import ConfigError
from tinywarden.telemetry.live import (
    LiveSampler,
    counter_rate,
    diag_remotes,
    distinct_remotes,
    inet_remotes,
    parse_proc_net,
    process_cpu_pct,
    process_cpu_ticks,
)
from tinywarden.telemetry.series import Series


class FakeClock:
    """A monotonic clock the test moves by hand, so rates have a known denominator."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def udp_burst(n: int, size: int) -> None:
    """Send ``n`` datagrams of ``size`` bytes over the loopback interface and receive them."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
    ):
        rx.bind(("127.0.0.1", 0))
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        rx.settimeout(2)
        for _ in range(n):
            tx.sendto(b"x" * size, rx.getsockname())
        for _ in range(n):
            rx.recv(size)


def test_channels_are_fixed_and_every_value_is_finite_float64():
    s = LiveSampler(1.0, interfaces=["lo"])
    assert s.channels[:4] == ("cpu_pct", "mem_pct", "load1", "proc_count")
    assert s.channels[4:8] == ("lo.rx_pkts_s", "lo.tx_pkts_s", "lo.rx_bytes_s", "lo.tx_bytes_s")
    assert "distinct_remote_addrs" in s.channels  # root on Linux can read the connection table
    for _ in range(3):
        v = s.sample()
        assert v.dtype == np.float64 and v.shape == (len(s.channels),) and np.isfinite(v).all()
    d = dict(zip(s.channels, v, strict=True))
    assert 0 <= d["mem_pct"] <= 100 and 0 <= d["cpu_pct"] <= 100 * psutil.cpu_count()
    assert d["proc_count"] >= 1


def test_default_interfaces_skip_loopback():
    s = LiveSampler(1.0)
    assert "lo" not in s.interfaces
    assert set(s.interfaces) <= set(psutil.net_io_counters(pernic=True))


def test_loopback_rates_follow_the_counter_deltas_and_the_clock():
    clock = FakeClock()
    s = LiveSampler(1.0, interfaces=["lo"], clock=clock)
    i = {c: k for k, c in enumerate(s.channels)}
    n, size = 400, 1000
    udp_burst(n, size)
    clock.t += 2.0
    v = s.sample()
    assert v[i["lo.rx_pkts_s"]] >= n / 2.0
    assert v[i["lo.tx_pkts_s"]] >= n / 2.0
    assert v[i["lo.rx_bytes_s"]] >= n * size / 2.0
    # the same traffic over a 1000x longer interval is a 1000x smaller rate (other loopback users
    # add a little, never 100x the burst in the few milliseconds this takes)
    udp_burst(n, size)
    clock.t += 2000.0
    v = s.sample()
    assert n / 2000.0 <= v[i["lo.rx_pkts_s"]] < n / 20.0


def test_a_clock_that_did_not_advance_repeats_the_previous_rates():
    clock = FakeClock()
    s = LiveSampler(1.0, interfaces=["lo"], clock=clock)
    udp_burst(50, 100)
    clock.t += 1.0
    first = s.sample()
    udp_burst(50, 100)
    again = s.sample()  # dt == 0
    assert np.array_equal(first[4:8], again[4:8])
    clock.t -= 5.0  # a clock stepping back is no better
    assert np.array_equal(s.sample()[4:8], first[4:8])


def test_a_counter_that_goes_back_reads_zero_not_its_whole_value(monkeypatch):
    """psutil's default ``nowrap`` turns a counter that went back into "old total + new", so a driver whose
    counter dips by a few bytes (or an interface re-created between two samples) read as the interface's whole
    lifetime traffic in one second: a 20 MB/s spike the model scores. The module's rule (0 for that step) must
    hold through psutil's own reader."""
    raw = {"eth9": (10_000_000, 20_000_000, 10_000, 20_000, 0, 0, 0, 0)}
    monkeypatch.setattr(psutil._psplatform, "net_io_counters", lambda: dict(raw))
    psutil.net_io_counters.cache_clear()
    clock = FakeClock()
    s = LiveSampler(1.0, interfaces=["eth9"], clock=clock)
    net = slice(4, 8)  # rx_pkts_s, tx_pkts_s, rx_bytes_s, tx_bytes_s
    try:
        raw["eth9"] = (10_000_100, 20_000_100, 10_001, 20_001, 0, 0, 0, 0)
        clock.t += 1.0
        assert s.sample_values()[net] == [1.0, 1.0, 100.0, 100.0]
        raw["eth9"] = (10_000_050, 20_000_050, 10_000, 20_000, 0, 0, 0, 0)  # every counter dipped a little
        clock.t += 1.0
        assert s.sample_values()[net] == [0.0, 0.0, 0.0, 0.0]
        raw["eth9"] = (50, 60, 1, 1, 0, 0, 0, 0)  # re-created between two samples: its counters restarted
        clock.t += 1.0
        assert s.sample_values()[net] == [0.0, 0.0, 0.0, 0.0]
        raw["eth9"] = (150, 260, 2, 3, 0, 0, 0, 0)  # and counts on from there
        clock.t += 1.0
        assert s.sample_values()[net] == [2.0, 1.0, 200.0, 100.0]
    finally:
        psutil.net_io_counters.cache_clear()


def test_distinct_remote_addresses_and_ports_count_real_connections():
    import subprocess
    import sys

    s = LiveSampler(1.0, interfaces=["lo"])
    i = {c: k for k, c in enumerate(s.channels)}
    k = 5
    # Held by another process: the sampler leaves out its own sockets (see the next test).
    hold = f"import socket,time\nks=[]\nfor _ in range({k}):\n" \
           " s=socket.socket();s.bind(('127.0.0.1',0));s.listen(1)\n" \
           " c=socket.create_connection(s.getsockname());ks+=[s,c,s.accept()[0]]\n" \
           " print(s.getsockname()[1],c.getsockname()[1],flush=True)\ntime.sleep(30)"  # fmt: skip
    child = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    try:
        mine = {int(p) for _ in range(k) for p in child.stdout.readline().split()}
        ours = [c.raddr for c in psutil.net_connections("inet") if c.raddr and c.laddr.port in mine]
        read = [r for r in inet_remotes() or [] if r[1] in mine]  # the kernel's tables, as the sampler reads
        v = s.sample()
    finally:
        child.kill()
        child.wait()
    # k client ends reach k server ports; k accepted ends reach k client ports; one address
    assert distinct_remotes(ours) == (1, 2 * k)
    assert distinct_remotes(read) == (1, 2 * k) and len(read) == 2 * k
    assert v[i["distinct_remote_ports"]] >= 2 * k and v[i["distinct_remote_addrs"]] >= 1
    assert distinct_remotes([]) == (0, 0)


def test_sock_diag_reads_what_proc_net_reads_spelt_the_same():
    """The sampler asks the kernel's sock_diag netlink interface (cheap) before /proc/net (a walk of the whole
    socket hash table): both must give the same remote ends, spelt the same, so a model recorded with one
    scores telemetry read with the other."""
    import subprocess
    import sys

    hold = "import socket,time\nks=[]\nfor _ in range(3):\n" \
           " s=socket.socket();s.bind(('127.0.0.1',0));s.listen(1)\n" \
           " c=socket.create_connection(s.getsockname());ks+=[s,c,s.accept()[0]]\n" \
           " print(s.getsockname()[1],c.getsockname()[1],flush=True)\ntime.sleep(30)"  # fmt: skip
    child = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    try:
        held = {int(p) for _ in range(3) for p in child.stdout.readline().split()}
        via_diag = diag_remotes()
        via_proc = [r for n in ("tcp", "tcp6", "udp", "udp6") if (Path("/proc/net") / n).is_file()
                    for r in parse_proc_net((Path("/proc/net") / n).read_text())]
    finally:
        child.kill()
        child.wait()
    if via_diag is None:
        pytest.skip("this kernel refuses sock_diag (the sampler then reads /proc/net)")
    assert sorted(r for r in via_diag if r[1] in held) == sorted(r for r in via_proc if r[1] in held)
    assert len([r for r in via_diag if r[1] in held]) == 6 and {a for a, _ in via_diag if a} >= {"0100007F"}


def test_proc_net_tables_give_the_remote_ends_psutil_gives(tmp_path: Path):
    """Listening and unconnected sockets have no remote end; tcp6/udp6 may be missing; an unreadable
    table (other than a missing v6 one) means the connection table is denied, not an empty one."""
    (tmp_path / "tcp").write_text(
        "  sl  local_address rem_address   st\n"
        "   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1\n"
        "   1: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000 0 0 2\n"
        "   2: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000 0 0 3\n"
    )
    (tmp_path / "udp").write_text(
        "  sl  local_address rem_address   st\n"
        "   7: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 4\n"
        "   8: 0200000A:D431 0100000A:0035 01 00000000:00000000 00:00000000 00000000 0 0 5\n"
    )
    got = inet_remotes(tmp_path)
    assert got == [("0100007F", 8080), ("0100007F", 40000), ("0100000A", 53)]
    assert distinct_remotes(got) == (2, 3)
    assert parse_proc_net("header only\n") == []
    (tmp_path / "udp6").mkdir()  # reading it fails with an OSError other than "missing"
    assert inet_remotes(tmp_path) is None


def test_unknown_or_repeated_interfaces_and_bad_periods_are_refused():
    with pytest.raises(ConfigError, match="no-such-if0"):
        LiveSampler(1.0, interfaces=["no-such-if0"])
    with pytest.raises(ConfigError, match="twice"):
        LiveSampler(1.0, interfaces=["lo", "lo"])
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="period_s"):
            LiveSampler(bad)


def test_stream_keeps_the_cadence_on_the_injected_clock():
    clock = FakeClock()
    slept: list[float] = []

    def sleep(dt: float) -> None:
        slept.append(dt)
        clock.t += dt

    s = LiveSampler(0.5, interfaces=["lo"], clock=clock)
    wall = iter(range(100, 200))
    out = list(s.stream(4, sleep=sleep, wallclock=lambda: float(next(wall))))
    assert [t for t, _ in out] == [100.0, 101.0, 102.0, 103.0]
    assert slept == [0.5, 0.5, 0.5]
    # a sample that overran two slots: the next one waits for the following slot, no burst
    slept.clear()
    gen = s.stream(3, sleep=sleep, wallclock=lambda: float(next(wall)))
    next(gen)
    clock.t += 1.2
    next(gen)
    assert slept == [pytest.approx(0.3)]


def test_collect_builds_a_series_with_the_sampler_channels():
    clock = FakeClock()

    def sleep(dt: float) -> None:
        clock.t += dt

    s = LiveSampler(0.25, interfaces=["lo"], clock=clock)
    stamps = iter([10.0, 10.5, 10.5, 11.0])  # a repeated wall-clock reading must not break the series
    ser = s.collect(4, sleep=sleep, wallclock=lambda: next(stamps))
    assert isinstance(ser, Series) and ser.channels == s.channels
    assert ser.values.shape == (4, len(s.channels))
    assert np.all(np.diff(ser.timestamps) > 0)
    with pytest.raises(ConfigError):
        s.collect(0)


@given(st.integers(0, 2**63), st.integers(0, 2**63), st.floats(-10, 1e6, allow_nan=False))
def test_counter_rate_is_never_negative(prev, cur, dt):
    r = counter_rate(prev, cur, dt)
    assert r >= 0.0
    if dt > 0 and cur >= prev:
        assert r == pytest.approx((cur - prev) / dt)


def test_the_samplers_own_connections_are_not_device_behaviour():
    """The agent's own sockets (its MQTT client, paho's wake-up socket pair, syslog) must not count: `record`
    has none of them, so counting them shifts distinct_remote_* the moment the agent escalates to a broker."""
    import subprocess
    import sys

    hold = "import socket,sys,time\ns=socket.socket();s.bind(('127.0.0.1',0));s.listen(1)\n" \
           "c=socket.create_connection(s.getsockname());a=s.accept()[0]\nprint(c.getsockname()[1],flush=True)\n" \
           "time.sleep(30)"  # fmt: skip
    child = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    try:
        child_port = int(child.stdout.readline())
        with socket.socket() as srv:
            srv.bind(("127.0.0.1", 0))
            srv.listen(1)
            with socket.create_connection(srv.getsockname()) as cli, srv.accept()[0]:
                own_ports = {srv.getsockname()[1], cli.getsockname()[1]}
                seen = inet_remotes()
        assert seen is not None
        ports = {p for _, p in seen}
        assert not ports & own_ports  # neither end of this process's own connection counts
        assert child_port in ports  # another process's still does (its accepted end reaches the child's port)
    finally:
        child.kill()
        child.wait()


def _fake_stat(root: Path, pid: int, comm: str, ppid: int, utime: int, stime: int) -> None:
    (root / str(pid)).mkdir(parents=True)
    rest = ["S", str(ppid)] + ["0"] * 9 + [str(utime), str(stime)] + ["0"] * 10
    (root / str(pid) / "stat").write_text(f"{pid} ({comm}) {' '.join(rest)}\n")


def test_process_cpu_ticks_reads_every_process_but_the_sampler_and_its_children(tmp_path: Path):
    _fake_stat(tmp_path, 1, "init", 0, 5, 1)
    _fake_stat(tmp_path, 40, "agent", 1, 900, 100)  # the sampler itself
    _fake_stat(tmp_path, 41, "nft", 40, 7, 3)  # its child (an actuator call)
    _fake_stat(tmp_path, 42, "tw-miner) S 1 (x", 1, 300, 20)  # a name with spaces and parentheses
    (tmp_path / "self").symlink_to(tmp_path / "40")
    (tmp_path / "43").mkdir()  # ended between the listing and the read: no stat
    (tmp_path / "net").mkdir()
    assert process_cpu_ticks(tmp_path, skip=40) == {1: 6, 42: 320}
    assert process_cpu_ticks(tmp_path) == {1: 6, 40: 1000, 41: 10, 42: 320}
    assert process_cpu_ticks(tmp_path / "net") is None  # no per-process stat: not Linux


def test_process_cpu_pct_counts_each_process_delta_and_new_ones_whole():
    before = {1: 100, 2: 50, 3: 70}
    # 1 used 50 ticks, 2 ended, 3 is a new process under a reused PID (its counter restarted), 4 is new
    now = {1: 150, 3: 10, 4: 40}
    assert process_cpu_pct(before, now, dt=2.0, ticks_per_s=100, cpus=1) == 50.0
    assert process_cpu_pct(before, now, dt=2.0, ticks_per_s=100, cpus=2) == 25.0
    assert process_cpu_pct(before, now, dt=0.0, ticks_per_s=100, cpus=1) == 0.0


def test_proc_cpu_pct_sees_a_busy_process_but_not_the_samplers_own_children():
    import subprocess
    import sys

    s = LiveSampler(1.0, interfaces=["lo"])
    assert "proc_cpu_pct" in s.channels  # Linux
    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 30: pass\n"
    # a direct child of the sampler is left out (the agent's own nft/tc calls); a grandchild is not
    child = subprocess.Popen([sys.executable, "-c", busy])
    wrapper = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys\nsubprocess.run([sys.executable, "
                                                      f"'-c', {busy!r}])"])
    try:
        import time

        deadline = time.monotonic() + 20
        grandchild = None
        while grandchild is None and time.monotonic() < deadline:
            kids = psutil.Process(wrapper.pid).children()
            grandchild = kids[0].pid if kids else None
            time.sleep(0.05)
        assert grandchild is not None
        ticks = process_cpu_ticks(skip=os.getpid())
        assert ticks is not None and child.pid not in ticks and wrapper.pid not in ticks and os.getpid() not in ticks
        assert grandchild in ticks
        v = dict(zip(s.channels, s.sample(), strict=True))["proc_cpu_pct"]
        assert np.isfinite(v) and v >= 0
    finally:
        for p in (child, wrapper):
            p.kill()
            p.wait()


def test_waking_a_live_source_ends_its_wait_for_the_next_sample() -> None:
    # a stop signal took effect only after the next sample: at a low --rate that is longer than a service manager
    # waits (TimeoutStopSec=30), so the agent was killed before its agent_stop record. The alarm fails the test
    # (rather than hanging 1,000 s) if the wait does not end.
    import signal

    from tinywarden.agent.sources import LiveSource

    source = LiveSource(LiveSampler(1000.0, ["lo"]))
    samples = iter(source)
    next(samples)  # the first sample is due at once
    source.wake()

    def timed_out(*_: object) -> None:
        raise TimeoutError("the live source still waited a whole period after wake()")

    previous = signal.signal(signal.SIGALRM, timed_out)
    signal.alarm(60)
    try:
        t, sample = next(samples)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert len(sample) == len(source.channels) and t > 0

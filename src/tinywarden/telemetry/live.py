"""Live telemetry from the running host, sampled with psutil at a fixed rate.

:class:`LiveSampler` fixes its channel list at construction and then returns one float64 value per
channel on every :meth:`LiveSampler.sample`:

- ``cpu_pct``, ``mem_pct``, ``load1`` (1-minute load average), ``proc_count``;
- per interface ``<if>.rx_pkts_s``, ``<if>.tx_pkts_s``, ``<if>.rx_bytes_s``, ``<if>.tx_bytes_s``:
  rates from counter deltas divided by the time between samples (``clock`` is injectable);
- ``distinct_remote_addrs``, ``distinct_remote_ports``: over the host's inet sockets that have a
  remote end, leaving out the sampling process's own (:func:`inet_remotes`; omitted, with a warning,
  where the OS denies the connection table);
- ``proc_cpu_pct``: the CPU time of the processes this sampler can see (its PID namespace: the whole host on
  a gateway, the container's or the device's own where it runs in one), leaving out the sampling process and
  its children, in percent of all CPUs like ``cpu_pct`` (:func:`process_cpu_ticks`; Linux only, omitted
  elsewhere). ``cpu_pct`` and ``load1`` read the kernel's host-wide figures, which inside a container or
  PID namespace are every other tenant's too;
- ``temp_c`` (hottest sensor) and ``power_w`` (sum of ``/sys/class/power_supply/*/power_now``), only
  when the host exposes them at construction.

Fail-safes, so a live agent never dies on a sensor: a counter that went backwards (interface reset or
wrap) contributes a rate of 0 for that step; an interface that disappeared (removed, or renamed) reads 0
and is listed in :attr:`LiveSampler.missing_interfaces`, and its first step after it is back reads 0 too
(its counters restarted, so that delta is no rate); a clock that did not advance repeats the previous
rates; a temperature or power reading that vanished repeats its last value.

>>> s = LiveSampler(period_s=1.0, interfaces=["lo"])
>>> v = s.sample()
>>> v.shape == (len(s.channels),) and "lo.rx_bytes_s" in s.channels
True
"""

from __future__ import annotations

import logging
import math
import os
import socket
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from tinywarden.errors import ConfigError

if TYPE_CHECKING:  # numpy loads only for sample()/collect(): the lean agent reads sample_values()
    import numpy as np

    from tinywarden.telemetry.series import Series

__all__ = ["LiveSampler", "counter_rate", "distinct_remotes", "inet_remotes", "own_socket_inodes", "parse_proc_net",
           "process_cpu_pct", "process_cpu_ticks"]

log = logging.getLogger(__name__)

_NET_FIELDS = (("rx_pkts_s", "packets_recv"), ("tx_pkts_s", "packets_sent"), ("rx_bytes_s", "bytes_recv"),
               ("tx_bytes_s", "bytes_sent"))  # fmt: skip
_POWER_ROOT = Path("/sys/class/power_supply")
_PROC_NET = Path("/proc/net")
_INET_TABLES = ("tcp", "tcp6", "udp", "udp6")
#: Linux's sock_diag netlink interface (linux/sock_diag.h, linux/inet_diag.h, linux/netlink.h): the protocol, the
#: request type, NLM_F_REQUEST | NLM_F_DUMP, the replies that end a dump or report an error, and the byte offsets
#: in a reply's ``inet_diag_msg`` of the remote port (big-endian), the remote address and the inode.
_SOCK_DIAG, _SOCK_DIAG_BY_FAMILY, _DUMP_REQUEST, _NLMSG_ERROR, _NLMSG_DONE = 4, 20, 0x301, 2, 3
_DIAG_DPORT, _DIAG_DST, _DIAG_INODE, _DIAG_MSG_BYTES = 6, 24, 68, 72
#: The tables inet_remotes reads, in /proc/net's order, as (address family, IP protocol) dumps.
_DIAG_TABLES = ((socket.AF_INET, socket.IPPROTO_TCP), (socket.AF_INET6, socket.IPPROTO_TCP),
                (socket.AF_INET, socket.IPPROTO_UDP), (socket.AF_INET6, socket.IPPROTO_UDP))
_PROC = Path("/proc")


def counter_rate(previous: int, current: int, dt: float) -> float:
    """Events per second between two readings of a monotonic counter; 0 when it went backwards.

    >>> counter_rate(100, 160, 2.0), counter_rate(500, 3, 1.0)
    (30.0, 0.0)
    """
    if dt <= 0 or current < previous:
        return 0.0
    return (current - previous) / dt


def distinct_remotes(remotes: Iterable[tuple[str, int]]) -> tuple[int, int]:
    """How many distinct remote addresses and remote ports the ``(address, port)`` remote ends reach.

    >>> distinct_remotes([("10.0.0.1", 443), ("10.0.0.1", 8883), ("10.0.0.2", 443)])
    (2, 2)
    """
    pairs = list(remotes)
    return len({a for a, _ in pairs}), len({p for _, p in pairs})


def parse_proc_net(text: str, skip_inodes: frozenset[str] = frozenset()) -> list[tuple[str, int]]:
    r"""The remote ends in one of Linux's ``/proc/net/{tcp,tcp6,udp,udp6}`` tables: (address, port) pairs.

    The address stays in the kernel's hex spelling (distinct addresses are what is counted, so it need
    not be decoded); a socket whose remote port is 0 (listening, or UDP not connected) has no remote end,
    as in psutil. Sockets whose inode is in ``skip_inodes`` are left out.

    >>> parse_proc_net("  sl local rem st\n 0: 0100007F:0016 00000000:0000 0A\n 1: 0100007F:A2C4 0100007F:0016 01\n")
    [('0100007F', 22)]
    """
    out: list[tuple[str, int]] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 3 or (len(fields) > 9 and fields[9] in skip_inodes):
            continue
        addr, _, port = fields[2].partition(":")
        try:
            number = int(port, 16)
        except ValueError:
            continue
        if number:
            out.append((addr, number))
    return out


def diag_remotes(skip_inodes: frozenset[str] = frozenset(), timeout_s: float = 1.0) -> list[tuple[str, int]] | None:
    """The remote ends of this network namespace's inet sockets from Linux's sock_diag netlink interface (what
    ``ss`` reads), spelt as :func:`parse_proc_net` spells them, or None where the kernel refuses or lacks it.

    The same sockets as ``/proc/net/{tcp,tcp6,udp,udp6}``, at a fraction of the cost: reading ``/proc/net/tcp``
    walks the kernel's whole socket hash table under its locks (3.4 ms of CPU a read on the development host
    for a two-line table, 6.9 ms for the four tables: 0.7% of a core for an agent at 1 Hz). Nothing is sent
    on any network: a netlink socket talks to the local kernel only.
    """
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _SOCK_DIAG)
    except (OSError, AttributeError):  # not Linux, or netlink denied
        return None
    out: list[tuple[str, int]] = []
    with sock:
        sock.settimeout(timeout_s)
        for seq, (family, proto) in enumerate(_DIAG_TABLES, 1):
            # inet_diag_req_v2: family, protocol, no extensions, every state, an empty socket id
            req = struct.pack("=BBBBI", family, proto, 0, 0, 0xFFFFFFFF) + bytes(48)
            try:
                sock.send(struct.pack("=IHHII", 16 + len(req), _SOCK_DIAG_BY_FAMILY, _DUMP_REQUEST, seq, 0) + req)
                if not _read_diag_dump(sock, seq, skip_inodes, out):
                    return None
            except OSError:  # a timeout included
                return None
    return out


def _read_diag_dump(sock: socket.socket, seq: int, skip_inodes: frozenset[str], out: list[tuple[str, int]]) -> bool:
    """Append the remote ends of one sock_diag dump's replies to ``out``; False when the kernel answers with
    an error (a protocol it has no diag module for) or a malformed message."""
    while True:
        data = sock.recv(1 << 16)
        off = 0
        while off + 16 <= len(data):
            length, kind, _, got_seq, _ = struct.unpack_from("=IHHII", data, off)
            if length < 16 or off + length > len(data):
                return False
            if got_seq == seq:
                if kind == _NLMSG_DONE:
                    return True
                if kind == _NLMSG_ERROR:
                    return False
                if kind == _SOCK_DIAG_BY_FAMILY and length >= 16 + _DIAG_MSG_BYTES:
                    msg = off + 16
                    port = int.from_bytes(data[msg + _DIAG_DPORT:msg + _DIAG_DPORT + 2], "big")
                    inode = struct.unpack_from("=I", data, msg + _DIAG_INODE)[0]
                    if port and str(inode) not in skip_inodes:
                        words = 1 if data[msg] == socket.AF_INET else 4
                        addr = "".join(f"{w:08X}" for w in struct.unpack_from(f"={words}I", data, msg + _DIAG_DST))
                        out.append((addr, port))
            off += (length + 3) & ~3
        if not data:
            return False


def own_socket_inodes(fd_dir: Path = Path("/proc/self/fd")) -> frozenset[str]:
    """The inodes of this process's own sockets (``socket:[INODE]`` links in ``fd_dir``)."""
    out: set[str] = set()
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return frozenset()
    for name in names:
        try:
            link = os.readlink(fd_dir / name)
        except OSError:  # closed since the listing
            continue
        if link.startswith("socket:["):
            out.add(link[8:-1])
    return frozenset(out)


def inet_remotes(proc_net: Path = _PROC_NET) -> list[tuple[str, int]] | None:
    """The remote ends of this host's inet sockets (in this network namespace), leaving out this process's
    own, or None where the OS denies the connection table.

    This process's own sockets (the agent's MQTT client and paho's wake-up socket pair, syslog) are not the
    device's behaviour: ``record`` has none of them, so counting them would shift the channels the moment
    the agent talks to a broker. On Linux the kernel's own tables are read (``proc_net``/tcp, tcp6, udp,
    udp6) and this process's sockets found by inode in ``/proc/self/fd``: psutil's ``net_connections``
    maps every socket to its process by reading every ``/proc/PID/fd``, about 30 ms a call on a busy host,
    which the live agent would pay every second. Elsewhere psutil's table is used.
    """
    if (proc_net / "tcp").is_file():
        mine = own_socket_inodes()
        if proc_net == _PROC_NET:  # the kernel's own tables: ask sock_diag first, /proc/net when it refuses
            got = diag_remotes(mine)
            if got is not None:
                return got
        out: list[tuple[str, int]] = []
        for name in _INET_TABLES:
            try:
                out += parse_proc_net((proc_net / name).read_text(), mine)
            except FileNotFoundError:  # tcp6/udp6 are absent on a kernel without IPv6
                continue
            except OSError:
                return None
        return out
    me = os.getpid()
    try:
        return [(c.raddr[0], c.raddr[1]) for c in psutil.net_connections(kind="inet") if c.raddr and c.pid != me]
    except (psutil.AccessDenied, PermissionError, OSError):
        return None


def process_cpu_ticks(proc: Path = _PROC, skip: int | None = None) -> dict[int, int] | None:
    """CPU time (``utime + stime``, clock ticks) of every process listed in ``proc`` (``/proc``: this PID
    namespace), leaving out process ``skip`` and its direct children; None where ``proc`` has no
    per-process ``stat`` (not Linux).

    The sampling process and its children (an agent's ``nft`` and ``tc`` calls) are not the device's
    behaviour: ``record`` does not score or act, the agent does, so counting them would shift the channel
    between the recording and the live agent (as its own sockets would shift ``distinct_remote_*``).
    A process that ends between two listings is simply absent; one that cannot be read is skipped.
    """
    if not (proc / "self" / "stat").is_file():
        return None
    out: dict[int, int] = {}
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            fd = os.open(proc / name / "stat", os.O_RDONLY)
            try:
                raw = os.read(fd, 1024)
            finally:
                os.close(fd)
        except OSError:  # ended since the listing
            continue
        # "pid (comm) state ppid ... utime stime ...": comm may hold spaces and parentheses, so split after
        # its last ")"; then ppid is field 1 and utime, stime fields 11 and 12
        fields = raw[raw.rfind(b")") + 2:].split(b" ", 13)
        try:
            pid, ppid, ticks = int(name), int(fields[1]), int(fields[11]) + int(fields[12])
        except (IndexError, ValueError):
            continue
        if skip is not None and skip in (pid, ppid):
            continue
        out[pid] = ticks
    return out


def process_cpu_pct(previous: dict[int, int], current: dict[int, int], dt: float, ticks_per_s: float,
                    cpus: int) -> float:
    """Percent of all ``cpus`` the processes used between two :func:`process_cpu_ticks` readings ``dt``
    seconds apart: each process's own tick delta (a process new since ``previous`` counts all its ticks);
    0 when the clock did not advance. A process whose counter went back (its PID reused) counts its ticks
    as new.

    >>> process_cpu_pct({1: 100, 2: 50}, {1: 150, 3: 50}, dt=1.0, ticks_per_s=100, cpus=2)
    50.0
    """
    if dt <= 0:
        return 0.0
    used = 0
    for pid, ticks in current.items():
        before = previous.get(pid, 0)
        used += ticks - before if ticks >= before else ticks
    return 100.0 * used / ticks_per_s / dt / max(1, cpus)


#: The fastest live sampling rate the agent and ``record`` take (Hz): a psutil sample costs about a millisecond.
MAX_RATE_HZ = 1000.0


def sampling_period(rate_hz: float, option: str = "--rate") -> float:
    """The period in seconds of a live sampling rate in Hz; a :class:`ConfigError` naming ``option`` unless the rate
    is in (0, :data:`MAX_RATE_HZ`] with a finite period."""
    period = 1.0 / rate_hz if rate_hz > 0 else math.inf  # NaN fails the test below too
    if not (0 < rate_hz <= MAX_RATE_HZ and math.isfinite(period)):
        raise ConfigError(f"{option} must be a number of Hz in (0, {MAX_RATE_HZ:g}] with a finite period, got "
                          f"{rate_hz}")
    return period


class LiveSampler:
    """Samples host telemetry every ``period_s`` seconds into fixed channels (see the module docstring).

    ``interfaces`` defaults to every non-loopback interface present at construction; ``clock`` (seconds,
    monotonic) times the rate computations and the sampling cadence.
    """

    def __init__(
        self,
        period_s: float,
        interfaces: Sequence[str] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (isinstance(period_s, int | float) and math.isfinite(period_s) and period_s > 0):
            raise ConfigError(f"live sampler period_s must be a finite number > 0, got {period_s!r}")
        self.period_s = float(period_s)
        self.clock = clock
        counters = psutil.net_io_counters(pernic=True, nowrap=False)
        if interfaces is None:
            loopback = {
                n for n, st in psutil.net_if_stats().items() if "loopback" in getattr(st, "flags", "")
            }
            self.interfaces = tuple(sorted(n for n in counters if n != "lo" and n not in loopback))
        else:
            missing = [n for n in interfaces if n not in counters]
            if missing:
                raise ConfigError(
                    f"network interface(s) {', '.join(missing)} not found; "
                    f"this host has {', '.join(sorted(counters))}"
                )
            if len(set(interfaces)) != len(interfaces):
                raise ConfigError(f"network interfaces listed twice: {list(interfaces)}")
            self.interfaces = tuple(interfaces)

        self._proc_ticks = process_cpu_ticks(skip=os.getpid())
        self._ticks_per_s = float(os.sysconf("SC_CLK_TCK")) if self._proc_ticks is not None else 100.0
        self._cpus = psutil.cpu_count() or 1
        self._proc_cpu = 0.0
        self._has_conns = inet_remotes() is not None
        if not self._has_conns:
            log.warning("connection table not readable here; distinct_remote_* channels are left out")
        self._last_temp = self._temperature()
        self._last_power = self._power()

        chans = ["cpu_pct", "mem_pct", "load1", "proc_count"]
        chans += [f"{i}.{name}" for i in self.interfaces for name, _ in _NET_FIELDS]
        if self._has_conns:
            chans += ["distinct_remote_addrs", "distinct_remote_ports"]
        if self._proc_ticks is not None:
            chans.append("proc_cpu_pct")
        if self._last_temp is not None:
            chans.append("temp_c")
        if self._last_power is not None:
            chans.append("power_w")
        self.channels: tuple[str, ...] = tuple(chans)

        psutil.cpu_percent(interval=None)  # the first call only starts psutil's CPU interval
        #: Interfaces absent from the host's counters at the last sample (their channels read 0).
        self.missing_interfaces: frozenset[str] = frozenset()
        #: The wall clock minus ``clock`` when :meth:`stream` read its last sample's time (None before): it changes
        #: only when the wall clock steps (an NTP step; on Linux also a suspend, which ``time.monotonic`` skips).
        self.clock_offset: float | None = None
        self._prev_counters, self._prev_missing = self._read_counters()
        self._prev_t = clock()
        self._rates = [0.0] * (len(self.interfaces) * len(_NET_FIELDS))

    def sample(self) -> np.ndarray:
        """One reading: float64, one finite value per entry of :attr:`channels`."""
        import numpy as np

        return np.asarray(self.sample_values(), dtype=np.float64)

    def sample_values(self) -> list[float]:
        """One reading as a list of floats (what :meth:`sample` returns, without numpy): one finite value per
        entry of :attr:`channels`."""
        now = self.clock()
        dt = now - self._prev_t
        counters, missing = self._read_counters()
        if dt > 0:
            self._rates = [counter_rate(p, c, dt) for p, c in zip(self._prev_counters, counters, strict=True)]
            per = len(_NET_FIELDS)
            for j, iface in enumerate(self.interfaces):
                if iface in missing or iface in self._prev_missing:
                    self._rates[j * per:(j + 1) * per] = [0.0] * per
            self._prev_counters, self._prev_missing, self._prev_t = counters, missing, now
        self.missing_interfaces = missing
        vals = [
            psutil.cpu_percent(interval=None),
            psutil.virtual_memory().percent,
            os.getloadavg()[0],
            float(len(psutil.pids())),
            *self._rates,
        ]
        if self._has_conns:
            addrs, ports = distinct_remotes(inet_remotes() or [])
            vals += [float(addrs), float(ports)]
        if self._proc_ticks is not None:
            ticks = process_cpu_ticks(skip=os.getpid()) or {}
            if dt > 0:  # a clock that did not advance repeats the previous figure
                self._proc_cpu = process_cpu_pct(self._proc_ticks, ticks, dt, self._ticks_per_s, self._cpus)
                self._proc_ticks = ticks
            vals.append(self._proc_cpu)
        if self._last_temp is not None:
            temp = self._temperature()
            self._last_temp = self._last_temp if temp is None else temp
            vals.append(self._last_temp)
        if self._last_power is not None:
            power = self._power()
            self._last_power = self._last_power if power is None else power
            vals.append(self._last_power)
        # a sensor can report NaN transiently; a series must stay finite
        return [v if math.isfinite(v) else 0.0 for v in map(float, vals)]

    def stream(
        self,
        n: int | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        wallclock: Callable[[], float] = time.time,
        values: bool = False,
    ) -> Iterator[tuple[float, Any]]:
        """Yield ``(epoch seconds, sample)`` every ``period_s`` (``n`` times, or forever when ``None``); the
        sample is :meth:`sample`'s array, or with ``values`` :meth:`sample_values`'s list.

        The schedule is fixed on ``clock``: a slow sample delays the next one, but missed slots are
        skipped rather than fired in a burst. :attr:`clock_offset` is set at each yielded time (wall minus
        ``clock``, read together), so a consumer can tell a wall clock that stepped from time that passed.
        """
        due = self.clock()
        count = 0
        while n is None or count < n:
            wait = due - self.clock()
            if wait > 0:
                sleep(wait)
            t = wallclock()
            self.clock_offset = t - self.clock()
            yield t, self.sample_values() if values else self.sample()
            count += 1
            due += self.period_s
            now = self.clock()
            if due < now:
                due += math.ceil((now - due) / self.period_s) * self.period_s

    def collect(
        self,
        n: int,
        *,
        sleep: Callable[[float], None] = time.sleep,
        wallclock: Callable[[], float] = time.time,
    ) -> Series:
        """Take ``n`` samples at the set rate into a :class:`~tinywarden.telemetry.series.Series`."""
        import numpy as np

        from tinywarden.telemetry.series import Series

        if n < 1:
            raise ConfigError(f"collect needs n >= 1 samples, got {n}")
        ts, vals = [], []
        last = -math.inf
        for t, v in self.stream(n, sleep=sleep, wallclock=wallclock):
            t = max(t, math.nextafter(last, math.inf))  # a wall clock stepped back must not break order
            ts.append(t)
            vals.append(v)
            last = t
        return Series(np.array(ts), np.vstack(vals), self.channels, source="live:psutil")

    # ---- readers

    def _read_counters(self) -> tuple[list[int], frozenset[str]]:
        # nowrap=False: psutil's default turns a counter that went back into "old total + new", so a dip of a few
        # bytes (or an interface re-created between two samples) would read as its whole lifetime's traffic in
        # one step; the raw counters let counter_rate's rule (0 for that step) hold
        per = psutil.net_io_counters(pernic=True, nowrap=False)
        out: list[int] = []
        for iface in self.interfaces:
            c = per.get(iface)
            out += [getattr(c, attr) if c is not None else 0 for _, attr in _NET_FIELDS]
        return out, frozenset(i for i in self.interfaces if i not in per)

    @staticmethod
    def _temperature() -> float | None:
        read = getattr(psutil, "sensors_temperatures", None)
        if read is None:
            return None
        try:
            temps = [t.current for group in read().values() for t in group if math.isfinite(t.current)]
        except (OSError, RuntimeError):
            return None
        return max(temps) if temps else None

    @staticmethod
    def _power() -> float | None:
        total, found = 0.0, False
        for p in sorted(_POWER_ROOT.glob("*/power_now")):
            try:
                total += int(p.read_text().strip()) / 1e6  # sysfs reports microwatts
                found = True
            except (OSError, ValueError):
                continue
        return total if found else None

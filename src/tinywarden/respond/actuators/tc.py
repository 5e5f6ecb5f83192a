"""Egress bandwidth cap with ``tc``: a token-bucket root qdisc on one interface.

The qdisc carries a fixed handle (``7477:``, "tw"), so :meth:`TcRateLimit.is_applied` recognises ours
and :meth:`TcRateLimit.revert` deletes only ours; the interface falls back to its default qdisc.

:func:`tbf_problem` holds ``rate`` and ``burst`` to what ``tc ... tbf`` itself takes and turns into a working
qdisc (iproute2 ``get_rate64``, ``get_size`` and ``q_tbf.c``), so the policy loader refuses at load what would
otherwise fail, or install a qdisc that drops every full-size packet, only when the cap is applied mid-attack.
"""

from __future__ import annotations

import re
from decimal import Decimal

from tinywarden.respond.actuators.base import Actuator, ActuatorError, CommandRunner, Targets, interface_names

HANDLE = "7477:"
LATENCY_S = Decimal("0.4")
"""The ``latency`` every cap is installed with (``400ms``)."""

# tc's rate units (bits per second; "bps" is bytes per second) and size units (bytes; "kbit" is 1024 bits),
# lower-case, each after a plain decimal number (no sign, exponent, hex, inf or nan, which tc's strtod reads too).
RATE_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9,
              "bps": 8, "kbps": 8 * 10**3, "mbps": 8 * 10**6, "gbps": 8 * 10**9}  # fmt: skip
SIZE_UNITS = {"b": 1, "k": 1024, "kb": 1024, "m": 2**20, "mb": 2**20, "g": 2**30, "gb": 2**30,
              "kbit": 1024 // 8, "mbit": 2**20 // 8, "gbit": 2**30 // 8}  # fmt: skip
_NUMBER = r"([0-9]{1,20}(?:\.[0-9]{1,20})?)"
_RATE = re.compile(_NUMBER + "(" + "|".join(RATE_UNITS) + ")")
_SIZE = re.compile(_NUMBER + "(" + "|".join(SIZE_UNITS) + ")?")
U32 = 2**32 - 1
MIN_BURST = 1514
"""Smallest burst, in bytes: a full Ethernet frame (MTU 1500 and its 14-byte header). The kernel's tbf drops every
packet longer than the burst (it only logs "burst is lower than device mtu"), so a smaller one is a block of
full-size packets, not a cap."""


def rate_bytes(text: str) -> Decimal | None:
    """Bytes per second of the tc rate ``text`` (``"256kbit"``), or ``None`` when tc's syntax is not that.

    >>> rate_bytes("256kbit"), rate_bytes("1mbps"), rate_bytes("1e3kbit"), rate_bytes("-1mbit")
    (Decimal('32000'), Decimal('1000000'), None, None)
    """
    m = _RATE.fullmatch(text)
    return None if m is None else Decimal(m.group(1)) * RATE_UNITS[m.group(2)] / 8


def size_bytes(text: str) -> Decimal | None:
    """Bytes of the tc size ``text`` (``"32kbit"`` is 4096), or ``None`` when tc's syntax is not that.

    >>> size_bytes("32kbit"), size_bytes("1500"), size_bytes("32kbps")
    (Decimal('4096'), Decimal('1500'), None)
    """
    m = _SIZE.fullmatch(text)
    return None if m is None else Decimal(m.group(1)) * SIZE_UNITS[m.group(2) or "b"]


def tbf_problem(rate: object, burst: object) -> tuple[str, str] | None:
    """``(key, reason)`` when ``tc qdisc add ... tbf rate RATE burst BURST latency 400ms`` would be refused or would
    not cap as asked; ``None`` when it installs the cap. Measured with tc (iproute2 6.1) and the kernel in a namespace:

    * tc refuses a rate under 8bit (1 byte/s: "the rate parameter is mandatory"), a burst of 0 bytes or of 4 GiB
      and more (32 bits), and a burst in rate units (``32kbps``: tc's sizes are b, k, kb, m, mb, g, gb, kbit, mbit,
      gbit);
    * the kernel drops every packet longer than the burst, so a burst under :data:`MIN_BURST` blocks full-size
      packets instead of capping them;
    * the queue limit tc computes (rate * 400ms + burst) wraps around its 32-bit field above about 85gbit.

    >>> tbf_problem("256kbit", "32kbit") is None
    True
    >>> tbf_problem("0bit", "32kbit")[0], tbf_problem("1mbit", "1kbit")[0], tbf_problem("1mbit", "32kbps")[0]
    ('rate', 'burst', 'burst')
    """
    if not isinstance(rate, str) or (r := rate_bytes(rate)) is None:
        return "rate", f"must be a tc rate such as '256kbit' or '1mbit' (units {', '.join(RATE_UNITS)}; got {rate!r})"
    if not isinstance(burst, str) or (b := size_bytes(burst)) is None:
        return "burst", (f"must be a tc size such as '32kbit' or '4kb' (units {', '.join(SIZE_UNITS)}; got {burst!r})")
    if r < 1:
        return "rate", f"must be at least 8bit (1 byte per second; tc refuses less) (got {rate!r})"
    if b > U32:
        return "burst", f"must be under 4 GiB, tc's 32-bit burst (got {burst!r})"
    if b < MIN_BURST:
        return "burst", (
            f"must be at least {MIN_BURST} bytes, a full Ethernet frame (got {burst!r}, {int(b)} bytes): "
            "the kernel drops every packet longer than the burst, so the cap would block them"
        )
    if r * LATENCY_S + b > U32:
        return "rate", (
            f"{rate!r} queues {int(r * LATENCY_S + b)} bytes in 400ms, over tc's 32-bit queue limit "
            "(at most about 85gbit)"
        )
    return None


class TcRateLimit(Actuator):
    """Cap egress on ``interface`` at ``rate`` (tc units, e.g. ``"256kbit"``) with a ``tbf`` qdisc."""

    def __init__(
        self, name: str, interface: str, rate: str, burst: str = "32kbit", runner: CommandRunner | None = None
    ) -> None:
        problem = tbf_problem(rate, burst)
        if problem is not None:
            raise ActuatorError(f"{name}: {problem[0]}: {problem[1]}")
        self.name = name
        self.interface = interface
        self.rate = rate
        self.burst = burst
        self.runner = runner or CommandRunner()

    def _cmd(self) -> list[str]:
        return ["tc", "qdisc", "add", "dev", self.interface, "root", "handle", HANDLE, "tbf",
                "rate", self.rate, "burst", self.burst, "latency", f"{int(LATENCY_S * 1000)}ms"]  # fmt: skip

    def apply(self) -> None:
        if not self.is_applied():
            self.runner.run(self._cmd())

    def revert(self) -> None:
        if self.is_applied():
            self.runner.run(["tc", "qdisc", "del", "dev", self.interface, "root", "handle", HANDLE])

    def is_applied(self) -> bool:
        out = self.runner.run(["tc", "qdisc", "show", "dev", self.interface, "root"]).stdout
        return any(line.split()[:3] == ["qdisc", "tbf", HANDLE] for line in out.splitlines())

    def describe(self) -> str:
        return f"cap egress on {self.interface} at {self.rate} ({' '.join(self._cmd())})"

    def targets(self) -> Targets:
        return Targets(interfaces=interface_names(self.runner, self.interface))

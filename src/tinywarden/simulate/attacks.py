"""Attack injectors and the seeded placement of attack incidents in time.

An injector changes the attack-free telemetry of one incident's rows in place and returns the few
parameters it drew (intensity, variant ...) so a report can say what happened. Injectors only touch
rows inside their incident, so everything outside the incidents equals the attack-free run.
Some attacks are loud (a flood), some are built to be hard: exfiltration hides a trickle of bytes
under daytime traffic, a sensor drift starts imperceptibly and grows for hours.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tinywarden.errors import ConfigError
from tinywarden.simulate.modes import Window
from tinywarden.simulate.noise import onset, rows_for
from tinywarden.simulate.profiles import DeviceProfile

ATTACKS: tuple[str, ...] = ("cryptominer", "botnet_flood", "exfiltration", "memory_exploit", "sensor_drift")

GAP_BETWEEN_INCIDENTS_S = 1800.0  # so a windowed detector can tell two incidents apart
MARGIN_AROUND_SCHEDULE_S = 600.0  # attacks stay clear of boots, updates and maintenance
MIN_INCIDENT_ROWS = 3


@dataclass(frozen=True)
class InjectContext:
    """What an injector may use besides the rows it changes."""

    profile: DeviceProfile
    period_s: float
    typical: dict[str, float]  # median of each channel over the attack-free run


Channels = dict[str, np.ndarray]  # channel name -> values of the whole run, changed in place
Detail = dict[str, float | str]
Injector = Callable[[Channels, slice, InjectContext, np.random.Generator], Detail]


@dataclass(frozen=True)
class AttackSpec:
    """One attack type: how long an incident lasts, how often it happens, what it changes.

    ``targets`` lists the channels the attack is meant to shift (those a profile has); other
    channels may move too, as side effects.
    """

    name: str
    description: str
    duration_s: tuple[float, float]
    per_day: float  # incidents per attack day
    targets: tuple[str, ...]
    inject: Injector


@dataclass(frozen=True)
class Incident:
    """One injected attack: rows ``start_row:stop_row``, times ``start``..``end`` (end exclusive)."""

    attack: str
    start_row: int
    stop_row: int
    start: float
    end: float
    detail: dict[str, float | str]

    @property
    def rows(self) -> slice:
        return slice(self.start_row, self.stop_row)


def _shift_power(v: Channels, sl: slice, ctx: InjectContext, cpu: np.ndarray, pkts: np.ndarray) -> None:
    """Add the power that extra CPU load and extra packets draw."""
    prof = ctx.profile
    v["power_mw"][sl] += prof.power_mw_per_cpu_pct * cpu + prof.power_mw_per_pkt_s * pkts / ctx.period_s


def _cryptominer(v: Channels, sl: slice, ctx: InjectContext, rng: np.random.Generator) -> Detail:
    """A miner takes a share of the idle CPU for hours: a CPU and power plateau, a pool connection."""
    k, p = sl.stop - sl.start, ctx.period_s
    share = rng.uniform(0.35, 0.95)  # stealthy miners cap themselves well below 100 %
    env = onset(k, 90.0 / p)
    cpu = v["cpu_pct"][sl]
    extra_cpu = env * share * np.clip(100.0 - cpu, 0.0, None) + rng.normal(0.0, 1.5, k)
    v["cpu_pct"][sl] += extra_cpu
    v["mem_pct"][sl] += env * rng.uniform(1.0, 4.0)  # a light miner (no RandomX dataset)
    shares = rng.poisson(0.15 * p, k).astype(np.float64)  # share submissions and pool keep-alives
    v["tx_pkts"][sl] += shares
    v["tx_bytes"][sl] += shares * rng.normal(180.0, 20.0, k)
    v["distinct_dst"][sl] += shares > 0
    if "rx_pkts" in v:
        v["rx_pkts"][sl] += rng.poisson(0.1 * p, k)
    # Hashing keeps the vector units busy: more power per CPU percent than the device's usual load.
    _shift_power(v, sl, ctx, 1.4 * extra_cpu, shares)
    return {"cpu_share": round(share, 3)}


def _botnet_flood(v: Channels, sl: slice, ctx: InjectContext, rng: np.random.Generator) -> Detail:
    """The device joins a DDoS: pulses of small packets at a rate no normal hour reaches."""
    k, p = sl.stop - sl.start, ctx.period_s
    kind = str(rng.choice(["syn", "udp", "scan"]))
    rate = ctx.profile.max_pkt_s * rng.uniform(0.1, 0.6)
    # Pulse-wave floods switch on and off every few tens of seconds.
    cycle_s, duty = rng.uniform(30.0, 90.0), rng.uniform(0.5, 1.0)
    if p < cycle_s:
        on = (np.mod(np.arange(k) * p + rng.uniform(0, cycle_s), cycle_s) < duty * cycle_s).astype(np.float64)
    else:
        on = np.full(k, duty)
    pkts = rng.poisson(rate * p * on).astype(np.float64)
    size = {"syn": 60.0, "scan": 60.0, "udp": rng.uniform(400.0, 1200.0)}[kind]
    v["tx_pkts"][sl] += pkts
    v["tx_bytes"][sl] += pkts * size
    if kind == "scan":
        v["distinct_dst"][sl] += rng.binomial(pkts.astype(np.int64), 0.95)
    else:
        v["distinct_dst"][sl] += pkts > 0  # the victim
    if "rx_pkts" in v and kind == "scan":
        v["rx_pkts"][sl] += rng.binomial(pkts.astype(np.int64), 0.05)  # RSTs from closed ports
    extra_cpu = on * rng.uniform(10.0, 30.0)
    v["cpu_pct"][sl] += extra_cpu
    _shift_power(v, sl, ctx, extra_cpu, pkts)
    return {"kind": kind, "pkt_s": round(rate, 1), "duty": round(duty, 2)}


def _exfiltration(v: Channels, sl: slice, ctx: InjectContext, rng: np.random.Generator) -> Detail:
    """Low and slow: small encrypted chunks every minute or two to a rotating set of new hosts."""
    k, p = sl.stop - sl.start, ctx.period_s
    per_row = max(ctx.typical["tx_bytes"], 2000.0) * rng.uniform(0.08, 0.35)
    every = rng.uniform(30.0, 120.0) / p  # rows between chunks
    sending = rng.random(k) < min(1.0, 1.0 / every)
    chunk = sending * per_row * max(every, 1.0) * rng.uniform(0.8, 1.2, k)
    pkts = np.ceil(chunk / 1400.0)
    v["tx_bytes"][sl] += chunk
    v["tx_pkts"][sl] += pkts
    v["distinct_dst"][sl] += sending * rng.integers(1, 3, k)
    if "rx_pkts" in v:
        v["rx_pkts"][sl] += np.ceil(pkts / 2.0)  # TCP ACKs
    extra_cpu = sending * rng.uniform(1.0, 4.0, k)  # compression and TLS
    v["cpu_pct"][sl] += extra_cpu
    _shift_power(v, sl, ctx, extra_cpu, pkts)
    return {"bytes_per_row": round(per_row, 1)}


def _memory_exploit(v: Channels, sl: slice, ctx: InjectContext, rng: np.random.Generator) -> Detail:
    """Heap spray (memory climbs, CPU busy), kernel panic (network dead), watchdog reboot."""
    k, p = sl.stop - sl.start, ctx.period_s
    spray = max(1, int(round(0.55 * k)))
    hang = max(1, int(round(0.15 * k)))
    spray = min(spray, k - 2)
    a, b = sl.start, sl.start + spray
    c = b + hang
    peak = rng.uniform(90.0, 99.0)
    mem0 = v["mem_pct"][a]
    v["mem_pct"][a:b] = mem0 + (peak - mem0) * np.linspace(0.0, 1.0, spray + 1)[1:] ** 1.5
    spray_cpu = rng.uniform(20.0, 45.0) + rng.normal(0.0, 5.0, spray)
    v["cpu_pct"][a:b] += spray_cpu
    payload = rng.poisson(5.0 * p, spray).astype(np.float64)
    if "rx_pkts" in v:
        v["rx_pkts"][a:b] += payload
    callback = rng.random(spray) < 0.5  # the shellcode phones home
    v["tx_pkts"][a:b] += callback * 3.0
    v["tx_bytes"][a:b] += callback * 3.0 * 120.0
    v["distinct_dst"][a:b] += callback
    v["power_mw"][a:b] += ctx.profile.power_mw_per_cpu_pct * spray_cpu
    # Panic loop: the CPU spins, memory is frozen, the network stack is gone.
    v["cpu_pct"][b:c] = 100.0 - rng.uniform(0.0, 2.0, hang)
    v["mem_pct"][b:c] = peak
    for name in ("tx_pkts", "tx_bytes", "distinct_dst", "rx_pkts"):
        if name in v:
            v[name][b:c] = 0.0
    v["power_mw"][b:c] = ctx.profile.power_idle_mw + ctx.profile.power_mw_per_cpu_pct * 100.0
    # The reboot does not reset the benign memory creep of the rows after the incident: rows outside
    # incidents must equal the attack-free run, and the creep (<= 1.2 %/day) is within noise.
    rebooted = ctx.profile.boot(np.arange(sl.stop - c) / max(sl.stop - c, 1), p, rng)
    for name, values in rebooted.items():
        v[name][c : sl.stop] = values
    return {"mem_peak_pct": round(peak, 1)}


def _sensor_drift(v: Channels, sl: slice, ctx: InjectContext, rng: np.random.Generator) -> Detail:
    """The profile's drift channel is tampered with: a slow ramp away from truth, or a stuck reading."""
    k = sl.stop - sl.start
    name = ctx.profile.drift_channel
    x = v[name][sl]
    if rng.random() < 0.75:
        magnitude = rng.uniform(*ctx.profile.drift_range) * rng.choice([-1.0, 1.0])
        shape = ((np.arange(k) + 1.0) / k) ** rng.uniform(1.0, 2.0)  # imperceptible at first
        v[name][sl] = x + magnitude * shape
        return {"channel": name, "variant": "ramp", "magnitude": round(float(magnitude), 3)}
    # A replayed constant: the reading freezes at its last true value with a hint of noise.
    v[name][sl] = x[0] + rng.normal(0.0, 0.02 * ctx.profile.drift_range[0], k)
    return {"channel": name, "variant": "stuck", "value": round(float(x[0]), 3)}


SPECS: dict[str, AttackSpec] = {
    spec.name: spec
    for spec in (
        AttackSpec("cryptominer", _cryptominer.__doc__ or "", (3600.0, 10800.0), 0.75,
                   ("cpu_pct", "power_mw"), _cryptominer),
        AttackSpec("botnet_flood", _botnet_flood.__doc__ or "", (300.0, 1800.0), 1.5,
                   ("tx_pkts", "tx_bytes", "distinct_dst"), _botnet_flood),
        AttackSpec("exfiltration", _exfiltration.__doc__ or "", (7200.0, 21600.0), 0.5,
                   ("tx_bytes", "distinct_dst"), _exfiltration),
        AttackSpec("memory_exploit", _memory_exploit.__doc__ or "", (180.0, 600.0), 1.5,
                   ("mem_pct", "cpu_pct"), _memory_exploit),
        AttackSpec("sensor_drift", _sensor_drift.__doc__ or "", (3600.0, 18000.0), 0.5,
                   (), _sensor_drift),  # the target is the profile's drift_channel
    )
}
assert tuple(SPECS) == ATTACKS


def targets(attack: str, profile: DeviceProfile) -> tuple[str, ...]:
    """The channels of ``profile`` that ``attack`` is meant to shift.

    >>> from tinywarden.simulate.profiles import PROFILES
    >>> targets("sensor_drift", PROFILES["valve"])
    ('pressure_kpa',)
    """
    spec = SPECS[attack]
    wanted = spec.targets or (profile.drift_channel,)
    return tuple(c for c in wanted if c in profile.channels)


def parse_attacks(attacks: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Normalise ``"all"``, ``"none"``, ``"a,b"`` or a sequence of names to attack names in canonical order.

    >>> parse_attacks("exfiltration, cryptominer")
    ('cryptominer', 'exfiltration')
    """
    if isinstance(attacks, str):
        text = attacks.strip().lower()
        if text == "all":
            return ATTACKS
        if text in ("none", ""):
            return ()
        names = [a.strip() for a in text.split(",") if a.strip()]
        if not names:
            raise ConfigError(f"attacks: {attacks!r} names no attack (choose from all, none, {', '.join(ATTACKS)})")
    else:
        names = [str(a).strip().lower() for a in attacks]
        if names == ["all"]:
            return ATTACKS
        if names == ["none"]:
            return ()
    unknown = [a for a in names if a not in SPECS]
    if unknown:
        raise ConfigError(
            f"attacks: unknown attack {unknown[0]!r} (choose from all, none, {', '.join(ATTACKS)})"
        )
    return tuple(a for a in ATTACKS if a in names)


def place_incidents(
    attacks: tuple[str, ...],
    n_rows: int,
    first_row: int,
    period_s: float,
    busy: tuple[Window, ...],
    rng: np.random.Generator,
) -> list[tuple[str, int, int]]:
    """Choose non-overlapping ``(attack, start_row, stop_row)`` incidents in rows ``first_row:n_rows``.

    Each attack gets ``round(per_day * attack_days)`` incidents (at least one) with a uniform random
    duration in its range, placed uniformly among the positions still free: away from the scheduled
    ``busy`` windows and at least :data:`GAP_BETWEEN_INCIDENTS_S` apart. The first incident of every
    type is placed before any second one, longest first, so every requested type fits when any room
    is left; an incident longer than the largest free stretch is shortened to fit. Raises
    :class:`ConfigError` when some requested type finds no room at all.
    """
    attack_days = (n_rows - first_row) * period_s / 86400.0
    gap = rows_for(GAP_BETWEEN_INCIDENTS_S, period_s)
    margin = rows_for(MARGIN_AROUND_SCHEDULE_S, period_s)

    free: list[tuple[int, int]] = [(first_row, n_rows)]
    for w in busy:
        free = _cut(free, w.start - margin, w.stop + margin)

    rounds: list[list[tuple[str, int]]] = []
    for name in attacks:
        spec = SPECS[name]
        count = max(1, int(round(spec.per_day * attack_days)))
        lengths = [rows_for(rng.uniform(*spec.duration_s), period_s, MIN_INCIDENT_ROWS) for _ in range(count)]
        for i, length in enumerate(lengths):
            while len(rounds) <= i:
                rounds.append([])
            rounds[i].append((name, length))

    placed: list[tuple[str, int, int]] = []
    for batch in rounds:
        for name, length in sorted(batch, key=lambda item: -item[1]):
            longest = max((b - a for a, b in free), default=0)
            if longest < MIN_INCIDENT_ROWS:
                break
            length = min(length, longest)
            spans = [(a, b - length) for a, b in free if b - a >= length]
            weights = np.array([hi - lo + 1 for lo, hi in spans], dtype=np.float64)
            lo, hi = spans[int(rng.choice(len(spans), p=weights / weights.sum()))]
            start = int(rng.integers(lo, hi + 1))
            placed.append((name, start, start + length))
            free = _cut(free, start - gap, start + length + gap)
    missing = [a for a in attacks if a not in {name for name, _, _ in placed}]
    if missing:
        raise ConfigError(
            f"attacks: no room for {', '.join(missing)} in {attack_days:.2f} attack day(s); "
            "increase --days or lower --attack-free-days"
        )
    return sorted(placed, key=lambda item: item[1])


def _cut(free: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """Remove rows ``lo:hi`` from a list of free ``(start, stop)`` stretches."""
    out = []
    for a, b in free:
        if hi <= a or lo >= b:
            out.append((a, b))
            continue
        if a < lo:
            out.append((a, lo))
        if hi < b:
            out.append((hi, b))
    return out

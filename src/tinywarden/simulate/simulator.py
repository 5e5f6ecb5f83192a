"""Put profiles, schedule and attacks together into one labelled :class:`~tinywarden.telemetry.Series`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tinywarden.errors import ConfigError
from tinywarden.simulate.attacks import SPECS, Incident, InjectContext, parse_attacks, place_incidents
from tinywarden.simulate.modes import build_schedule
from tinywarden.simulate.profiles import PROFILES, DeviceProfile, finalize, normal_telemetry
from tinywarden.simulate.scenarios import (
    RAMPED_ATTACK,
    Change,
    check_scenario,
    ramp,
    seasonal,
    sensor_drift_ramp,
    splice,
)
from tinywarden.telemetry.series import Series

DEFAULT_START = 1767225600.0  # 2026-01-01T00:00:00Z
MAX_ROWS = 20_000_000  # about 1.5 GB of float64 for a 9-channel profile

# Independent random streams: the attack-free telemetry never depends on which attacks are asked for.
_STREAM_SCHEDULE, _STREAM_NORMAL, _STREAM_PLACEMENT, _STREAM_EFFECTS, _STREAM_SCENARIO = range(5)


@dataclass(frozen=True)
class Simulation:
    """A simulated run: the labelled series, the operating mode of every row, the incidents and the
    lasting changes of a scenario (:mod:`~tinywarden.simulate.scenarios`)."""

    series: Series
    modes: np.ndarray
    incidents: tuple[Incident, ...]
    changes: tuple[Change, ...] = ()


def simulate(
    profile: str,
    days: float,
    attacks: Sequence[str] | str = "all",
    seed: int = 0,
    period_s: float = 10.0,
    start: float = DEFAULT_START,
    attack_free_days: float = 0.0,
    scenario: str | None = None,
    change_day: float | None = None,
) -> Series:
    """Labelled telemetry of a ``profile`` device over ``days``, with the chosen ``attacks`` injected.

    ``attacks`` is ``"all"``, ``"none"``, a comma list or a sequence of names from
    :data:`~tinywarden.simulate.ATTACKS`. The first ``attack_free_days`` hold no attack (train on
    them). Rows inside an incident have ``label`` 1 and ``attacks`` naming it; every other row is
    label 0 with ``""`` and equals the same seed's attack-free run exactly (with the same ``scenario``,
    if any). The same arguments always give the same arrays. ``scenario`` and ``change_day``: see
    :func:`simulate_detailed`. Raises :class:`~tinywarden.errors.ConfigError` for a bad argument.

    >>> s = simulate("camera", days=0.5, attacks="none", seed=1)
    >>> len(s), s.channels[:2], int(s.labels.sum())
    (4320, ('cpu_pct', 'mem_pct'), 0)
    """
    return simulate_detailed(profile, days, attacks, seed, period_s, start, attack_free_days, scenario,
                             change_day).series


def simulate_detailed(
    profile: str | DeviceProfile,
    days: float,
    attacks: Sequence[str] | str = "all",
    seed: int = 0,
    period_s: float = 10.0,
    start: float = DEFAULT_START,
    attack_free_days: float = 0.0,
    scenario: str | None = None,
    change_day: float | None = None,
) -> Simulation:
    """Like :func:`simulate`, also returning each row's operating mode, the incidents and the changes.

    ``profile`` is a name from :data:`~tinywarden.simulate.PROFILES` or a :class:`DeviceProfile` (a variant
    of one, made with :func:`dataclasses.replace`, as the fleet simulator gives each device).

    ``scenario`` (a name from :data:`~tinywarden.simulate.SCENARIOS`) adds one lasting change from
    ``change_day`` days into the run (default: ``attack_free_days`` when positive, else half the run)
    to its end: a regime change keeps label 0, a poisoning ramp is labelled 1 under its own name.
    """
    prof = _check_profile(profile)
    names = parse_attacks(list(attacks) if not isinstance(attacks, str) else attacks)
    _check_number("days", days, positive=True)
    _check_number("period_s", period_s, positive=True)
    _check_number("start", start, positive=False)
    _check_number("attack_free_days", attack_free_days, positive=False)
    if attack_free_days < 0:
        raise ConfigError(f"attack_free_days: must be 0 or more, got {attack_free_days}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed: must be a non-negative integer, got {seed!r}")
    n = int(math.floor(days * 86400.0 / period_s + 1e-9))
    if n < 1:
        raise ConfigError(f"days: {days} day(s) is shorter than one sampling period of {period_s} s")
    if n > MAX_ROWS:
        raise ConfigError(f"days: {days} days at {period_s} s per sample is {n} rows, more than {MAX_ROWS}")
    first_attack_row = int(math.ceil(attack_free_days * 86400.0 / period_s))
    if names and first_attack_row >= n:
        raise ConfigError(
            f"attack_free_days: {attack_free_days} leaves no time for attacks in {days} day(s); "
            "use --attacks none or more days"
        )

    def stream(which: int) -> np.random.Generator:
        return np.random.default_rng([int(seed), which])

    timestamps = start + np.arange(n) * period_s
    rhythm = prof.rhythm(timestamps)
    schedule = build_schedule(timestamps, period_s, rhythm, prof.schedule, stream(_STREAM_SCHEDULE))
    values = normal_telemetry(prof, timestamps, period_s, rhythm, schedule, stream(_STREAM_NORMAL))
    modes = schedule.modes

    change: Change | None = None
    if scenario is not None:
        spec = check_scenario(scenario, prof)
        if change_day is None:
            change_day = attack_free_days if attack_free_days > 0 else days / 2.0
        _check_number("change_day", change_day, positive=False)
        change_row = int(math.ceil(change_day * 86400.0 / period_s))
        if not 0 <= change_row < n:
            raise ConfigError(f"change_day: {change_day} is outside the run of {days} day(s)")
        ramp_rows = max(1, int(round(spec.ramp_s / period_s)))
        weight = ramp(n, change_row, ramp_rows)
        scen_rng = stream(_STREAM_SCENARIO)
        detail: dict[str, float | str] = {"description": spec.description}
        if spec.changed_profile is not None:
            new = spec.changed_profile(prof)
            new_rhythm = new.rhythm(timestamps)
            new_schedule = build_schedule(timestamps, period_s, new_rhythm, new.schedule, stream(_STREAM_SCHEDULE))
            after = normal_telemetry(new, timestamps, period_s, new_rhythm, new_schedule, stream(_STREAM_NORMAL))
            splice(values, after, weight)
            modes = np.where(np.arange(n) >= change_row, new_schedule.modes, modes).astype(np.int8)
        elif spec.name == "seasonal":
            detail |= seasonal(values, weight, period_s)
        elif spec.name == "sensor_drift_ramp":
            detail |= sensor_drift_ramp(values, weight, prof, scen_rng)
        else:
            attacked = {name: x.copy() for name, x in values.items()}
            typical = {name: float(np.median(x)) for name, x in values.items()}
            detail |= SPECS[RAMPED_ATTACK[spec.name]].inject(
                attacked, slice(change_row, n), InjectContext(prof, period_s, typical), scen_rng)
            for name, x in values.items():
                x += weight * (attacked[name] - x)
        change = Change(spec.name, spec.kind, change_row, min(change_row + ramp_rows, n), detail)

    incidents: list[Incident] = []
    if names:
        typical = {name: float(np.median(x)) for name, x in values.items()}
        ctx = InjectContext(prof, period_s, typical)
        placed = place_incidents(
            names, n, first_attack_row, period_s, schedule.windows, stream(_STREAM_PLACEMENT)
        )
        effects = stream(_STREAM_EFFECTS)
        for name, a, b in placed:
            detail = SPECS[name].inject(values, slice(a, b), ctx, effects)
            t_a = float(timestamps[a])
            incidents.append(Incident(name, a, b, t_a, t_a + (b - a) * period_s, detail))
    finalize(values)

    labels = np.zeros(n, dtype=np.int8)
    attack_col = np.full(n, "", dtype=object)
    if change is not None and change.is_attack:
        labels[change.start_row:] = 1
        attack_col[change.start_row:] = change.scenario
    for inc in incidents:  # an incident inside a poisoning ramp keeps its own name
        labels[inc.rows] = 1
        attack_col[inc.rows] = inc.attack
    meta = {
        "generator": "tinywarden.simulate",
        "profile": prof.name,
        "seed": str(int(seed)),
        "period_s": repr(float(period_s)),
        "attacks": ",".join(names),
        "attack_free_days": repr(float(attack_free_days)),
    }
    if change is not None:
        meta |= {"scenario": change.scenario, "scenario_kind": change.kind,
                 "change_start": repr(float(timestamps[change.start_row])),
                 "change_full": repr(float(start + change.full_row * period_s))}
    series = Series(
        timestamps,
        np.column_stack([values[c] for c in prof.channels]),
        prof.channels,
        labels,
        attack_col,
        f"simulate:{prof.name}:seed={int(seed)}",
        meta,
    )
    return Simulation(series, modes, tuple(incidents), (change,) if change is not None else ())


def _check_profile(name: str | DeviceProfile) -> DeviceProfile:
    if isinstance(name, DeviceProfile):  # a variant of a named profile (a fleet device's own rhythm, schedule)
        return name
    try:
        return PROFILES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"profile: unknown profile {name!r} (choose from {', '.join(PROFILES)})") from None


def _check_number(field: str, value: float, positive: bool) -> None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{field}: {value!r} is not a number") from None
    if not math.isfinite(x):
        raise ConfigError(f"{field}: {value!r} is not finite")
    if positive and x <= 0:
        raise ConfigError(f"{field}: must be greater than 0, got {value!r}")

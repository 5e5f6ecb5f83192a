"""Scenarios of lasting change: legitimate regime changes a baseline must follow, and poisoning it must not.

A scenario starts at one row (``change_row``) and lasts to the end of the run. Two kinds:

- *regime* (NORMAL behaviour, labelled 0): ``firmware_update`` (a new firmware permanently uses more
  CPU and memory and sends more, a little larger, control traffic to one more cloud endpoint),
  ``new_routine`` (the daily rhythm moves four hours later: a new shift pattern or people working
  late) and ``seasonal`` (the room warms by a season's worth over two days and stays warm; humidity
  follows; thermostat only). The first two re-run the attack-free model with the changed profile on
  the same random streams and splice it in at the change, so the new regime is as realistic as the old.
- *poisoning* (an ATTACK, labelled 1 with the scenario's name from the change to the end):
  ``miner_ramp`` and ``exfiltration_ramp`` run the ordinary injectors and scale what they add by a ramp
  from 0 to 1 over :data:`RAMP_S` (three days), far slower than any window can see;
  ``sensor_drift_ramp`` moves the profile's drift channel by the top of its drift range over the same
  three days. :attr:`Change.full_row` is where the ramp reaches its full rate: a defence must raise
  an alarm or a baseline-drift flag before it.

>>> from tinywarden.simulate import simulate_detailed
>>> sim = simulate_detailed("camera", 6, "none", seed=1, scenario="miner_ramp", change_day=2)
>>> c = sim.changes[0]
>>> c.kind, (c.full_row - c.start_row) * 10.0 / 86400, int(sim.series.labels[c.start_row:].min())
('poisoning', 3.0, 1)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tinywarden.errors import ConfigError
from tinywarden.simulate.noise import lag
from tinywarden.simulate.profiles import DeviceProfile

RAMP_S = 3 * 86400.0  # a poisoning ramp reaches its full rate after three days
SEASON_S = 2 * 86400.0  # a season's warming, compressed into two days
SEASON_WARMING_C = 2.5
ROUTINE_SHIFT_H = 4
TRANSITION_S = 600.0  # a regime change takes effect over ten minutes (the update's reboot, a new day)


@dataclass(frozen=True)
class Change:
    """One lasting change: from ``start_row`` to the end of the run, at full size from ``full_row``."""

    scenario: str
    kind: str  # "regime" (normal, label 0) or "poisoning" (attack, label 1)
    start_row: int
    full_row: int
    detail: dict[str, float | str]

    @property
    def is_attack(self) -> bool:
        return self.kind == "poisoning"


@dataclass(frozen=True)
class ScenarioSpec:
    """A scenario: its kind, what it is, and (regime changes) the changed profile or a post-hoc effect."""

    name: str
    kind: str
    description: str
    ramp_s: float
    changed_profile: Callable[[DeviceProfile], DeviceProfile] | None = None


def _firmware_update(p: DeviceProfile) -> DeviceProfile:
    return dataclasses.replace(
        p,
        cpu_idle_pct=p.cpu_idle_pct * 1.6,  # a new telemetry agent runs all the time
        cpu_active_pct=p.cpu_active_pct * 1.2,
        mem_base_pct=p.mem_base_pct + 7.0,
        tx_base_pkt_s=p.tx_base_pkt_s * 1.6,
        small_pkt_bytes=p.small_pkt_bytes * 1.3,
        dst_fixed=p.dst_fixed + 1,  # the vendor's new metrics endpoint
    )


def _rotate(hours: tuple[float, ...], by: int) -> tuple[float, ...]:
    return hours[-by:] + hours[:-by]


def _new_routine(p: DeviceProfile) -> DeviceProfile:
    return dataclasses.replace(p, weekday_rhythm=_rotate(p.weekday_rhythm, ROUTINE_SHIFT_H),
                               weekend_rhythm=_rotate(p.weekend_rhythm, ROUTINE_SHIFT_H))


SCENARIO_SPECS: dict[str, ScenarioSpec] = {
    s.name: s
    for s in (
        ScenarioSpec("firmware_update", "regime", "firmware update: more CPU, memory and control traffic, for good",
                     TRANSITION_S, _firmware_update),
        ScenarioSpec("new_routine", "regime", f"the daily rhythm moves {ROUTINE_SHIFT_H} h later, for good",
                     TRANSITION_S, _new_routine),
        ScenarioSpec("seasonal", "regime", f"the room warms by {SEASON_WARMING_C} C over two days (thermostat)",
                     SEASON_S),
        ScenarioSpec("miner_ramp", "poisoning", "a cryptominer ramped from nothing to full rate over three days",
                     RAMP_S),
        ScenarioSpec("exfiltration_ramp", "poisoning", "exfiltration ramped up over three days", RAMP_S),
        ScenarioSpec("sensor_drift_ramp", "poisoning", "the drift channel tampered with, ramped over three days",
                     RAMP_S),
    )
}
SCENARIOS: tuple[str, ...] = tuple(SCENARIO_SPECS)
#: Poisoning scenario -> the attack injector it ramps (sensor drift has its own linear ramp).
RAMPED_ATTACK = {"miner_ramp": "cryptominer", "exfiltration_ramp": "exfiltration"}


def check_scenario(name: str, profile: DeviceProfile) -> ScenarioSpec:
    """The spec of scenario ``name``, or a one-line :class:`ConfigError`."""
    spec = SCENARIO_SPECS.get(str(name).strip().lower())
    if spec is None:
        raise ConfigError(f"scenario: unknown scenario {name!r} (choose from {', '.join(SCENARIOS)})")
    if spec.name == "seasonal" and "temp_c" not in profile.channels:
        raise ConfigError(f"scenario: seasonal needs a temperature channel (temp_c); profile {profile.name!r} "
                          "has none (use --profile thermostat)")
    return spec


def ramp(n_rows: int, start: int, rows: int) -> np.ndarray:
    """0 before ``start``, rising linearly to 1 over ``rows`` rows, then 1 (length ``n_rows``).

    >>> ramp(6, 2, 2).tolist()
    [0.0, 0.0, 0.5, 1.0, 1.0, 1.0]
    """
    return np.clip((np.arange(n_rows) - start + 1.0) / max(rows, 1), 0.0, 1.0)


def splice(before: dict[str, np.ndarray], after: dict[str, np.ndarray], weight: np.ndarray) -> None:
    """``before`` becomes ``after`` with ``weight`` (0..1 per row), in place."""
    for name, x in before.items():
        x += weight * (after[name] - x)


def seasonal(values: dict[str, np.ndarray], weight: np.ndarray, period_s: float) -> dict[str, float | str]:
    """Warm the room by :data:`SEASON_WARMING_C` times ``weight``; humidity falls as in the thermostat model."""
    warming = SEASON_WARMING_C * lag(weight, period_s, 3600.0)
    values["temp_c"] += warming
    if "humidity_pct" in values:
        values["humidity_pct"] -= 1.5 * warming
    return {"warming_c": SEASON_WARMING_C}


def sensor_drift_ramp(values: dict[str, np.ndarray], weight: np.ndarray, profile: DeviceProfile,
                      rng: np.random.Generator) -> dict[str, float | str]:
    """Move the drift channel by the top of its drift range, times ``weight``, up or down."""
    magnitude = profile.drift_range[1] * float(rng.choice([-1.0, 1.0]))
    values[profile.drift_channel] += magnitude * weight
    return {"channel": profile.drift_channel, "magnitude": magnitude}

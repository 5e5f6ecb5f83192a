"""Device simulator: realistic, seeded, labelled telemetry for a few IoT device profiles.

Normal behaviour has a daily rhythm, noise, bursts and scheduled modes (boot, nightly firmware check,
weekly firmware update with reboot, maintenance) that a detector must accept; attacks
(:data:`ATTACKS`) are injected at seeded random times and labelled per row.

>>> from tinywarden.simulate import simulate
>>> s = simulate("valve", days=1, attacks="cryptominer", seed=3)
>>> sorted(set(s.attacks) - {""}), bool(s.labels.any())
(['cryptominer'], True)
"""

from tinywarden.simulate.attacks import ATTACKS, SPECS, AttackSpec, Incident, targets
from tinywarden.simulate.modes import MODES, Mode, ScheduleSpec
from tinywarden.simulate.profiles import PROFILES, DeviceProfile
from tinywarden.simulate.scenarios import SCENARIO_SPECS, SCENARIOS, Change, ScenarioSpec
from tinywarden.simulate.simulator import DEFAULT_START, Simulation, simulate, simulate_detailed

__all__ = [
    "ATTACKS",
    "DEFAULT_START",
    "MODES",
    "PROFILES",
    "SPECS",
    "SCENARIOS",
    "SCENARIO_SPECS",
    "AttackSpec",
    "Change",
    "DeviceProfile",
    "Incident",
    "Mode",
    "ScenarioSpec",
    "ScheduleSpec",
    "Simulation",
    "simulate",
    "simulate_detailed",
    "targets",
]

"""Autonomous response: a policy (:mod:`.policy`), a pure state machine (:mod:`.machine`), the engine
that drives it (:mod:`.engine`) and the actuators that carry out its actions (:mod:`.actuators`).

Data flows one way into this package: it reads detector scores and a threshold, never detector or
feature code.
"""

from tinywarden.respond.engine import ActionEvent, ResponseEngine, SimulatedClock, SystemClock, compile_tables
from tinywarden.respond.policy import Policy, PolicyError, load_policy, parse_policy

__all__ = [
    "ActionEvent",
    "Policy",
    "PolicyError",
    "ResponseEngine",
    "SimulatedClock",
    "SystemClock",
    "compile_tables",
    "load_policy",
    "parse_policy",
]

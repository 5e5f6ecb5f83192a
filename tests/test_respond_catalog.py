"""One list of action types: the policy loader, the actuator builder and docs/policy.md all read it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinywarden.respond import parse_policy
from tinywarden.respond.actuators import ACTUATOR_TYPES, build_actuator, build_actuators
from tinywarden.respond.actuators.catalog import markdown_table
from tinywarden.respond.policy import ACTION_TYPES, PolicyError

DOCS = Path(__file__).resolve().parents[1] / "docs" / "policy.md"
EXAMPLE = {
    "addresses": '["203.0.113.7"]',
    "interface": '"eth9"',
    "rate": '"256kbit"',
    "process": '"not-a-real-process"',
}


def _policy(kind: str) -> str:
    params = "\n".join(f"{k} = {EXAMPLE[k]}" for k in ACTUATOR_TYPES[kind].required)
    return f"""
[policy]
name = "t"
version = "1"
[actions.act]
type = "{kind}"
{params}
[tiers.alert]
actions = ["act"]
dead_man_s = 60
"""


def test_docs_table_is_the_catalog() -> None:
    assert markdown_table() in DOCS.read_text(encoding="utf-8")


def test_policy_loader_accepts_exactly_the_catalog() -> None:
    assert tuple(ACTUATOR_TYPES) == ACTION_TYPES
    with pytest.raises(PolicyError, match="must be one of " + ", ".join(ACTUATOR_TYPES)):
        parse_policy(_policy("log").replace('type = "log"', 'type = "reboot"'))


@pytest.mark.parametrize("kind", list(ACTUATOR_TYPES))
def test_every_type_loads_with_its_defaults_and_builds(kind: str) -> None:
    policy = parse_policy(_policy(kind))
    spec = policy.actions[0]
    assert spec.type == kind
    assert set(spec.params) == {*ACTUATOR_TYPES[kind].required, *ACTUATOR_TYPES[kind].optional}
    real = build_actuator(spec, policy)
    assert real.name == "act" and real.describe()
    (dry,) = build_actuators(policy)
    assert dry.describe() == real.describe()

"""What the agent is told: its configuration, where incidents go, and the one error it raises."""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tinywarden.agent.escalate import BrokerConfig, EscalationPolicy, Incident
from tinywarden.errors import TinywardenError
from tinywarden.respond import Policy

__all__ = ["RUNTIMES", "AgentConfig", "AgentError", "EscalationConfig", "default_device_id"]

#: How the agent scores: the int8 program (light) or the float pipeline.
RUNTIMES = ("native", "int8", "float")


class AgentError(TinywardenError):
    """The agent cannot start or go on as configured; the message names the file or option at fault."""


def default_device_id() -> str:
    """This host's name, reduced to what an MQTT topic level and an incident accept."""
    name = "".join(ch if ch.isalnum() or ch in "_.-" else "-" for ch in socket.gethostname())
    name = name.lstrip("_.-")[:128]
    return name or "device"


@dataclass(frozen=True)
class EscalationConfig:
    """Where incidents go: the broker, which incidents qualify, and the on-disk spool's place and bound."""

    broker: BrokerConfig
    policy: EscalationPolicy = EscalationPolicy(min_tier=1)
    spool_dir: Path | None = None  # default: <state_dir>/spool
    spool_max: int = 1000
    syslog: Callable[[Incident], None] | None = None


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent needs to run; paths default to files inside ``state_dir``.

    ``pubkey`` is the device's provisioned raw Ed25519 public key. ``policy_override`` replaces every
    bundle's own policy. ``persist_engine`` keeps the response engine's state (and the int8 and native runtimes'
    adapted baseline, sealed with the audit key: :mod:`tinywarden.agent.adaptstate`) in ``state_dir`` so a
    restarted agent resumes its tier and baseline (live mode; a replay starts afresh).
    ``summary_features`` is how many of the most deviating features an incident carries. ``audit_key_path`` (default
    ``state_dir/keys/audit.key``, made 0600 if missing) keys the audit log (docs/audit.md).
    ``runtime`` is ``"native"`` (the model file's int8 program as the generated C, built on this host and
    loaded through ctypes, :mod:`tinywarden.native`: the agent's process imports no numpy; without a C
    compiler it falls back to ``"int8"`` with one warning line), ``"int8"`` (score with the model file's
    int8 program, numpy only: the light runtime of :mod:`tinywarden.runtime`; a model file without one runs
    its float pipeline) or ``"float"`` (always
    the float pipeline, which loads the training stack; it adapts the baseline of every family, the int8
    program only that of families with the integer adaptation step).
    """

    pubkey: bytes
    state_dir: Path
    bundle_path: Path | None = None
    policy_override: Policy | None = None
    device_id: str = field(default_factory=default_device_id)
    status_path: Path | None = None
    audit_path: Path | None = None
    audit_key_path: Path | None = None
    audit_fsync: bool = True
    audit_max_bytes: int = 1_000_000
    channel_map: Mapping[str, str] = field(default_factory=dict)
    poll_interval_s: float = 30.0
    status_interval_s: float = 1.0
    last_scores: int = 32
    summary_features: int = 5
    real_actuators: bool = False
    persist_engine: bool = True
    escalation: EscalationConfig | None = None
    runtime: str = "int8"

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise AgentError(f"runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        if not (isinstance(self.pubkey, bytes) and len(self.pubkey) == 32):
            raise AgentError("pubkey must be the 32 raw bytes of an Ed25519 public key")
        if not self.poll_interval_s > 0:
            raise AgentError(f"poll interval must be > 0 s, got {self.poll_interval_s!r}")
        if self.last_scores < 1 or not 1 <= self.summary_features <= 64:
            raise AgentError("last_scores must be >= 1 and summary_features in 1..64")

"""The on-device agent: one loop, live or replayed, from samples to scores, responses, audit and escalation.

For every sample the :class:`Agent` pushes the model's channels into the streaming scorer of the
running bundle; every ``stride`` samples the window's score goes to the
:class:`~tinywarden.respond.ResponseEngine`, whose events are written to the audit log. Each time the
engine enters a tier, an :class:`~tinywarden.agent.escalate.Incident` is built (device, model id and
version, tier, score, threshold, confidence, the window's time span and the most deviating scaled
features, never raw samples) and handed to the MQTT publisher, which spools it on disk first. A status
file (:mod:`tinywarden.agent.status`) says what the agent is doing.

Sources. :class:`ReplaySource` feeds a recorded :class:`~tinywarden.telemetry.Series` as fast as
possible and the agent's clock follows the data's timestamps (a
:class:`~tinywarden.respond.SimulatedClock`), so a replay gives the same timeline as a live run.
:class:`LiveSource` samples the host with :class:`~tinywarden.telemetry.live.LiveSampler`. The model's
channels are looked up by name in the source's channels (``channel_map`` renames model channels to
source channels); a missing one is a clear error naming it.

Bundles. At start the agent installs ``bundle_path`` (verify, anti-rollback, copy into ``state_dir``);
if that file is refused but ``state_dir`` holds an installed bundle, that one runs and the refusal is
audited. While running it polls ``bundle_path`` and ``state_dir/trust.json`` every ``poll_interval_s``.
A changed file is verified and its model, policy and channel mapping are built *before* it is
installed, so a bundle the agent cannot run never becomes the accepted version; a refused bundle is
audited and the current one keeps running.

Hot swap without a gap. A newly accepted model starts its own window buffer at once, fed with the same
samples, while the old model keeps scoring. At the new model's first full window the agent switches:
that window's score is the first of the new model and no window goes unscored. With the same policy,
the engine's tier, evidence and applied actions carry over to the new threshold; with a different
policy the old policy's applied actions are reverted (and audited) and the new engine starts at tier 0.

Bounded memory: the agent keeps fixed-size buffers only (windows, the last scores, the engine's
recent scores); incidents and events go to disk (spool, rotating audit log), not to lists.

Fail-safe guard. When the model path fails on a window (an exception while scoring it, or a non-finite
score), the raw window the agent still holds is judged by the model file's rule-based bounds
(:meth:`~tinywarden.pipeline.Pipeline.judge_window`) and the verdict goes to the engine
(:meth:`~tinywarden.respond.ResponseEngine.observe_guarded`): a violation is a detection whose events
say ``failsafe_bounds``, a clean window a quiet one. The fault is still counted, audited
(``model_fault`` once per streak, with the guard's state) and shown in the status file. A sample that
cannot even be placed in the window, NaN/inf telemetry and a model file without a guard cannot be
judged: those stay faults for the policy's ``fault_tolerance``/``fail_safe_tier`` rules.

Confidence of an incident: for a tier entered on evidence, the fraction of that tier's last ``n``
scores above its bar (at least ``k / n``); for a fail-safe entry (a fault) or a fail-safe bounds
detection, 1.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import queue
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tinywarden import bundle as tb
from tinywarden.agent.escalate import (
    BrokerConfig,
    EscalationError,
    EscalationPolicy,
    Incident,
    MqttPublisher,
    Spool,
)
from tinywarden.agent.status import write_status
from tinywarden.audit import AuditKeyMismatch, AuditLog, load_key, set_aside
from tinywarden.errors import DataError, TinywardenError
from tinywarden.features import extract, feature_names
from tinywarden.payload import load_payload
from tinywarden.pipeline import GuardVerdict, Pipeline
from tinywarden.respond import ActionEvent, Policy, ResponseEngine, SimulatedClock, SystemClock
from tinywarden.respond.actuators import ActuatorError, build_actuators
from tinywarden.respond.engine import REASON_FAILSAFE_BOUNDS, StateFileError
from tinywarden.respond.machine import next_deadline
from tinywarden.telemetry.live import LiveSampler
from tinywarden.telemetry.series import Series

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentError",
    "EscalationConfig",
    "LiveSource",
    "LoadedBundle",
    "ReplaySource",
    "WindowScore",
    "channel_indices",
    "default_device_id",
    "load_bundle_contents",
    "open_audit_log",
]

TIER_NONE = "none"

_log = logging.getLogger(__name__)


class AgentError(TinywardenError):
    """The agent cannot start or go on as configured; the message names the file or option at fault."""


# ------------------------------------------------------------------------------------------- sources


class ReplaySource:
    """Recorded telemetry as a sample source: ``(timestamp, row)`` in order, as fast as possible.

    >>> s = Series(np.array([0.0, 10.0]), np.ones((2, 2)), ("cpu_pct", "mem_pct"))
    >>> src = ReplaySource(s); src.channels, [t for t, _ in src]
    (('cpu_pct', 'mem_pct'), [0.0, 10.0])
    """

    simulated = True

    def __init__(self, series: Series) -> None:
        self.series = series
        self.channels: tuple[str, ...] = tuple(series.channels)
        self.name = series.source

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        ts, vals = self.series.timestamps, self.series.values
        for i in range(len(ts)):
            yield float(ts[i]), vals[i]


class LiveSource:
    """The host's own telemetry, sampled with psutil every ``sampler.period_s`` (``n`` samples or forever)."""

    simulated = False

    def __init__(self, sampler: LiveSampler, n: int | None = None) -> None:
        self.sampler = sampler
        self.n = n
        self.channels: tuple[str, ...] = tuple(sampler.channels)
        self.name = "live:psutil"

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        return self.sampler.stream(self.n)


def channel_indices(
    model_channels: Sequence[str],
    source_channels: Sequence[str],
    channel_map: Mapping[str, str] | None = None,
    *,
    what: str = "model",
) -> np.ndarray:
    """Where each model channel sits in the source's samples; ``channel_map`` maps model -> source names.

    >>> channel_indices(["mem_pct", "cpu"], ["cpu_pct", "mem_pct"], {"cpu": "cpu_pct"}).tolist()
    [1, 0]
    """
    mapping = dict(channel_map or {})
    src = list(source_channels)
    missing = [f"{c}" + (f" (mapped to {mapping[c]})" if c in mapping else "") for c in model_channels
               if mapping.get(c, c) not in src]  # fmt: skip
    if missing:
        raise DataError(
            f"{what} needs channel(s) {', '.join(missing)} that the telemetry source does not provide "
            f"(it has {', '.join(src) or 'none'}); map them with --map MODEL_CHANNEL=SOURCE_CHANNEL"
        )
    return np.array([src.index(mapping.get(c, c)) for c in model_channels], dtype=np.int64)


def default_device_id() -> str:
    """This host's name, reduced to what an MQTT topic level and an incident accept."""
    name = "".join(ch if ch.isalnum() or ch in "_.-" else "-" for ch in socket.gethostname())
    name = name.lstrip("_.-")[:128]
    return name or "device"


# ------------------------------------------------------------------------------------------- bundles


@dataclass(frozen=True)
class LoadedBundle:
    """A verified bundle turned into what the loop runs: the fitted pipeline and the response policy."""

    bundle: tb.Bundle
    pipeline: Pipeline
    policy: Policy
    policy_overridden: bool

    @property
    def label(self) -> str:
        """``model_id@vN``: how audit records and the engine name this model."""
        return f"{self.bundle.model_id}@v{self.bundle.version}"

    def describe(self) -> dict[str, Any]:
        p = self.pipeline
        return {
            "id": self.bundle.model_id,
            "version": self.bundle.version,
            "digest": self.bundle.digest,
            "profile": self.bundle.profile,
            "threshold": float(p.threshold_),
            "window": p.window,
            "stride": p.stride,
            "channels": list(p.channels_),
            "policy": f"{self.policy.name} {self.policy.version}",
        }


def load_bundle_contents(bundle: tb.Bundle, policy_override: Policy | None = None) -> LoadedBundle:
    """Load a verified bundle's model and policy with the checks install makes
    (:func:`tinywarden.payload.load_payload`; the bundle's own policy must load even when overridden);
    raises a :class:`TinywardenError` naming the bundle."""
    payload = load_payload(bundle.model, bundle.policy, source=bundle.source)
    if policy_override is not None:
        return LoadedBundle(bundle, payload.pipeline, policy_override, True)
    return LoadedBundle(bundle, payload.pipeline, payload.policy, False)


# --------------------------------------------------------------------------------------------- config


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
    bundle's own policy. ``persist_engine`` keeps the response engine's state in ``state_dir`` so a
    restarted agent resumes its tier (live mode; a replay starts afresh). ``summary_features`` is how
    many of the most deviating features an incident carries. ``audit_key_path`` (default
    ``state_dir/keys/audit.key``, made 0600 if missing) keys the audit log (docs/audit.md).
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

    def __post_init__(self) -> None:
        if not (isinstance(self.pubkey, bytes) and len(self.pubkey) == 32):
            raise AgentError("pubkey must be the 32 raw bytes of an Ed25519 public key")
        if not self.poll_interval_s > 0:
            raise AgentError(f"poll interval must be > 0 s, got {self.poll_interval_s!r}")
        if self.last_scores < 1 or not 1 <= self.summary_features <= 64:
            raise AgentError("last_scores must be >= 1 and summary_features in 1..64")


@dataclass(frozen=True)
class WindowScore:
    """One scored window: when it ended, its score, the tier after it, and which model scored it."""

    time: float
    score: float
    tier: int
    model: str


# ---------------------------------------------------------------------------------------------- audit


def open_audit_log(config: AgentConfig) -> tuple[AuditLog, dict[str, Any] | None]:
    """The agent's keyed audit log, and what was set aside to open it (``None`` if nothing was).

    A keyed log that the agent's key cannot continue (the key was lost and made anew, or replaced) would
    otherwise keep the agent from starting, and monitoring down until someone acts. Instead the old log
    is set aside (:func:`tinywarden.audit.set_aside`: renamed, nothing deleted), a new keyed log starts
    whose ``genesis`` record names the set-aside file and says why, and one warning line says so. The
    fleet's anchors into the old log no longer hold for the new one: a visible discontinuity, not silence.
    """
    sdir = Path(config.state_dir)
    key = load_key(config.audit_key_path or sdir / "keys" / "audit.key", create=True)
    path = Path(config.audit_path or sdir / "audit.log")

    def open_log(genesis: Mapping[str, Any] | None = None) -> AuditLog:
        return AuditLog(path, max_bytes=config.audit_max_bytes, fsync=config.audit_fsync, key=key,
                        device_id=config.device_id, genesis=genesis)  # fmt: skip

    try:
        return open_log(), None
    except AuditKeyMismatch as exc:
        reason = (f"the log was keyed with key id {exc.log_key_id}, the agent's key {key.path} has id "
                  f"{key.key_id} (lost and made anew, or replaced)")  # fmt: skip
        aside = set_aside(path)
        log = open_log({"set_aside": aside.name, "set_aside_reason": reason})
        _log.warning("audit log %s set aside as %s and a new keyed log started: %s", path, aside.name, reason)
        return log, {"file": str(aside), "reason": reason, "old_key_id": exc.log_key_id, "key_id": key.key_id}


# --------------------------------------------------------------------------------------------- runner


class _Runner:
    """One model's streaming state: its scorer, channel selection and the current window for summaries.

    ``rows`` and ``times`` hold the last ``window`` mapped samples and their timestamps (bounded deques),
    so an incident can describe the window that triggered it after the scorer has moved on.
    """

    def __init__(self, loaded: LoadedBundle, index: np.ndarray) -> None:
        self.loaded = loaded
        self.index = index
        self.scorer = loaded.pipeline.stream()
        self.rows: deque[np.ndarray] = deque(maxlen=loaded.pipeline.window)
        self.times: deque[float] = deque(maxlen=loaded.pipeline.window)
        self.pushed = 0
        self.placed = False  # the last sample pushed made it into the raw window (``rows``)
        self.due = False  # ... and completed a window (so a fault there loses that window's score)

    def push(self, t: float, sample: np.ndarray) -> float | None:
        self.placed = self.due = False
        x = np.asarray(sample, dtype=np.float64)[self.index]
        self.rows.append(x)
        self.placed = True
        self.times.append(t)
        self.pushed += 1
        w, stride = self.loaded.pipeline.window, self.loaded.pipeline.stride
        self.due = self.pushed >= w and (self.pushed - w) % stride == 0
        out = self.scorer.push(x)
        return None if out is None else out[0]

    def judge(self) -> GuardVerdict | None:
        """The fail-safe guard's verdict on the raw window that the last sample completed."""
        if not self.due:
            return None
        return self.loaded.pipeline.judge_window(np.stack(self.rows))

    def span(self, t: float) -> tuple[float, float]:
        return (self.times[0], self.times[-1]) if self.times else (t, t)

    def summary(self, top: int) -> dict[str, float]:
        """The ``top`` most deviating scaled values of the current window, by name (z relative to training)."""
        p = self.loaded.pipeline
        if len(self.rows) < p.window:
            return {}
        try:
            return self._summary(p, np.stack(self.rows), top)
        except Exception:  # the model path may be what failed; an incident without a summary still goes out
            return {}

    @staticmethod
    def _summary(p: Pipeline, win: np.ndarray, top: int) -> dict[str, float]:
        if p.input_kind == "features":
            z = (extract(win[None], p.features)[0] - p.offset_) / p.scale_
            names = feature_names(p.channels_, p.features)
        else:
            scaled = (win - p.offset_) / p.scale_
            z = scaled[np.argmax(np.abs(scaled), axis=0), np.arange(scaled.shape[1])]
            names = [f"{c}:peak_z" for c in p.channels_]
        order = np.argsort(-np.abs(z), kind="stable")[:top]
        return {names[i]: round(float(z[i]), 4) for i in order if math.isfinite(z[i])}


# ---------------------------------------------------------------------------------------------- agent


class Agent:
    """The monitoring loop of one device (see the module docstring).

    ``channels`` are the sample source's channel names; ``replay`` makes the agent's clock follow the
    samples' timestamps. ``on_window`` and ``on_incident`` are called for every scored window and every
    incident built (whether or not escalation admits it). Use as a context manager, or call
    :meth:`close`.
    """

    def __init__(
        self,
        config: AgentConfig,
        channels: Sequence[str],
        *,
        replay: bool = False,
        on_window: Callable[[WindowScore], None] | None = None,
        on_incident: Callable[[Incident], None] | None = None,
    ) -> None:
        self.config = config
        self.channels = tuple(channels)
        self.replay = replay
        self.on_window = on_window
        self.on_incident = on_incident
        self.clock: SimulatedClock | SystemClock = SimulatedClock() if replay else SystemClock()
        sdir = Path(config.state_dir)
        try:
            sdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AgentError(f"{sdir}: cannot create state directory ({exc.strerror or exc})") from None
        self.state_dir = sdir
        self.status_path = Path(config.status_path) if config.status_path else sdir / "status.json"
        self.audit, self.audit_set_aside = open_audit_log(config)
        # Spool callbacks may run on the sender thread; the audit log is written from this thread only.
        self._notices: queue.SimpleQueue[tuple[str, dict[str, Any]]] = queue.SimpleQueue()
        self.samples_seen = 0
        self.windows_scored = 0
        self.incidents = 0
        self.model_faults = 0
        self.guarded_windows = 0
        self.guard_violations = 0
        self.last_guard = ""
        self.swaps = 0
        self.refused = 0
        self.spool_dropped = 0
        self.last_fault = ""
        self.last_refusal = ""
        self.last_scores: deque[WindowScore] = deque(maxlen=config.last_scores)
        self.started_at: float | None = None
        self.last_time: float | None = None
        self._fault_streak = 0
        self._pending: _Runner | None = None
        self._next_poll = -math.inf
        self._seen: dict[Path, tuple[int, int, int] | None] = {}
        self._trust_path = sdir / tb.STATE_FILE
        self._bundle_path = Path(config.bundle_path) if config.bundle_path is not None else None
        self._status_due = -math.inf
        self._stopping = False

        bundle, refusal, fresh = self._initial_bundle()
        try:
            loaded = load_bundle_contents(bundle, config.policy_override)
            index = channel_indices(loaded.pipeline.channels_, self.channels, config.channel_map,
                                    what=f"model {bundle.model_id} v{bundle.version}")  # fmt: skip
        except TinywardenError as exc:
            raise AgentError(f"cannot run bundle {bundle.source}: {exc}") from None
        if fresh and self._bundle_path is not None:
            # Installed only now that it is known to run here, so a bundle this device cannot use never
            # becomes its accepted version (install verifies again and refuses a file changed meanwhile).
            try:
                installed, _ = tb.install_bundle(self._bundle_path, config.pubkey, sdir)
            except tb.BundleError as exc:
                raise AgentError(f"cannot install bundle: {exc}") from None
            if installed.digest != bundle.digest:
                raise AgentError(f"{self._bundle_path}: changed while the agent was starting; start it again")
        self._active = _Runner(loaded, index)
        self.engine = self._new_engine(loaded)
        for p in (self._trust_path, self._bundle_path):
            if p is not None:
                self._seen[p] = _stat(p)
        self.publisher: MqttPublisher | None = None
        if config.escalation is not None:
            esc = config.escalation
            spool = Spool(
                esc.spool_dir or sdir / "spool",
                esc.spool_max,
                on_drop=lambda inc, why: self._notices.put(
                    ("spool_drop", {"incident_id": inc.incident_id, "tier": inc.tier, "reason": why})
                ),
                on_corrupt=lambda path, why: self._notices.put(("spool_corrupt", {"file": str(path), "reason": why})),
            )
            self.publisher = MqttPublisher(config.device_id, spool, esc.broker, esc.policy, syslog=esc.syslog)
            self.publisher.start()
        if self.audit_set_aside is not None:
            self._audit("audit_log_set_aside", self.audit_set_aside)
        self._audit("agent_start", {
            "device_id": config.device_id,
            "mode": "replay" if replay else "live",
            "model": loaded.describe(),
            "channels": list(self.channels),
        })  # fmt: skip
        if refusal is not None:
            self._refuse(str(config.bundle_path), f"{refusal} (running the installed bundle v{bundle.version})")

    # ---- public API

    @property
    def model(self) -> LoadedBundle:
        """The bundle whose scores drive the engine now."""
        return self._active.loaded

    @property
    def pending(self) -> LoadedBundle | None:
        """A newly accepted bundle still filling its first window, or ``None``."""
        return self._pending.loaded if self._pending is not None else None

    def run(self, samples: Iterable[tuple[float, np.ndarray]], max_samples: int | None = None) -> int:
        """Process ``samples`` until they end, ``max_samples`` were taken, or :meth:`stop`; return the count.

        Pass the same iterator again to continue where the previous call stopped.
        """
        n = 0
        if max_samples is not None and max_samples <= 0:
            return 0
        for t, sample in samples:
            self.process(t, sample)
            n += 1
            if self._stopping or (max_samples is not None and n >= max_samples):
                break
        return n

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current sample (safe from a signal handler)."""
        self._stopping = True

    def process(self, t: float, sample: np.ndarray) -> list[ActionEvent]:
        """One sample at time ``t`` (epoch seconds): score, respond, audit, escalate; return the engine's events."""
        t = float(t)
        if self.replay:
            assert isinstance(self.clock, SimulatedClock)
            self.clock.set(t)
        if self.started_at is None:
            self.started_at = t
        self.last_time = t
        self.samples_seen += 1
        self._drain_notices(t)
        if t >= self._next_poll or t < self._next_poll - 2 * self.config.poll_interval_s:
            self._next_poll = t + self.config.poll_interval_s
            self.poll_bundles()

        new_score = self._push_pending(t, sample)
        events: list[ActionEvent] = []
        old_score: float | None = None
        try:
            old_score = self._active.push(t, sample)
        except Exception as exc:  # any failure of the model path must reach the guard or the engine's fail-safe
            events += self._model_fault(t, f"{type(exc).__name__}: {exc}")
        if new_score is not None:
            self._commit_swap(t)
            score: float | None = new_score
        else:
            score = old_score

        if score is not None:
            if math.isfinite(score):
                if self._fault_streak:  # recovered only once a window scores again
                    self._audit("model_recovered", {"after_faults": self._fault_streak}, t)
                    self._fault_streak = 0
                events += self.engine.observe(score, at=t)
            else:
                events += self._model_fault(t, f"non-finite score {score!r}", score_fault=True)
            self.windows_scored += 1
            ws = WindowScore(t, score, self.engine.tier, self._active.loaded.label)
            self.last_scores.append(ws)
            if self.on_window is not None:
                self.on_window(ws)
        elif next_deadline(self.engine.state, self.engine.tables) <= t + self.engine.state.skew:
            events += self.engine.tick(at=t)  # timers (dead-man, de-escalation) fire on time between windows

        self._escalate(events, t, score)
        # Status is rewritten when something changed, but at most every status_interval_s of real time:
        # a replay runs thousands of windows a second and readers only need the current picture.
        if events or (score is not None and time.monotonic() >= self._status_due):
            self.write_status()
        return events

    def poll_bundles(self) -> None:
        """Look for a new bundle at ``bundle_path`` or newly installed in ``state_dir``; offer it for a swap."""
        bpath = self._bundle_path
        if bpath is not None:
            sig = _stat(bpath)
            if sig != self._seen.get(bpath):
                self._seen[bpath] = sig
                if sig is not None:
                    self._offer_file(bpath)
        trust = self._trust_path
        sig = _stat(trust)
        if sig != self._seen.get(trust):
            self._seen[trust] = sig
            try:
                state = tb.read_state(self.state_dir)
                if state is not None and state.bundle_sha256 not in self._known_digests():
                    self._offer(tb.load_installed_bundle(self.state_dir, self.config.pubkey), install_from=None)
            except tb.BundleError as exc:
                self._refuse(str(trust), str(exc))

    def write_status(self) -> None:
        """Rewrite the status file now (the loop does this after scored windows and every event)."""
        write_status(self.status_path, self.status())
        self._status_due = time.monotonic() + self.config.status_interval_s

    def status(self) -> dict[str, Any]:
        """The status document (see :mod:`tinywarden.agent.status`)."""
        esc = None
        if self.publisher is not None:
            esc = {
                "spooled": len(self.publisher.spool),
                "delivered": self.publisher.delivered,
                "connected": self.publisher.connected,
                "last_error": self.publisher.last_error,
                "dropped": self.spool_dropped,
                "topic": self.publisher.topic,
            }
        tier = self.engine.tier
        return {
            "device_id": self.config.device_id,
            "mode": "replay" if self.replay else "live",
            "model": self.model.describe(),
            "pending_model": self.pending.describe() if self.pending is not None else None,
            "tier": tier,
            "tier_name": self._tier_name(tier),
            "last_scores": [[w.time, w.score if math.isfinite(w.score) else None] for w in self.last_scores],
            "samples_seen": self.samples_seen,
            "windows_scored": self.windows_scored,
            "incidents": self.incidents,
            "started_at": self.started_at,
            "last_update": self.last_time,
            "faults": {
                "model_faults": self.model_faults,
                "last": self.last_fault,
                "engine_fault": self.engine.state.fault != 0,
                "guard": self._guard_state(),
                "guarding": self.engine.guarded > 0,
                "guarded_windows": self.guarded_windows,
                "guard_violations": self.guard_violations,
                "last_guard": self.last_guard,
            },
            "bundles": {"swaps": self.swaps, "refused": self.refused, "last_refusal": self.last_refusal},
            "audit": {
                "log": str(self.audit.path),
                "key_id": self.audit.key.key_id if self.audit.key is not None else None,
                "set_aside": self.audit_set_aside["file"] if self.audit_set_aside else None,
                "set_aside_reason": self.audit_set_aside["reason"] if self.audit_set_aside else None,
            },
            "escalation": esc,
        }

    def drain(self, timeout_s: float = 10.0) -> bool:
        """Try to deliver every spooled incident within ``timeout_s``; True when the spool is empty."""
        if self.publisher is None:
            return True
        deadline = time.monotonic() + timeout_s
        while len(self.publisher.spool) and time.monotonic() < deadline:
            if self.publisher.flush(timeout_s=max(0.1, deadline - time.monotonic())) == 0:
                time.sleep(0.05)
        return len(self.publisher.spool) == 0

    def close(self) -> None:
        """Stop the sender (spooled incidents stay on disk), audit the stop and write the final status."""
        if self.publisher is not None:
            self.publisher.close()
        self._drain_notices(None)
        self._audit("agent_stop", {"samples": self.samples_seen, "windows": self.windows_scored,
                                   "incidents": self.incidents, "tier": self.engine.tier})  # fmt: skip
        self.write_status()

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- bundles

    def _known_digests(self) -> set[str]:
        known = {self._active.loaded.bundle.digest}
        if self._pending is not None:
            known.add(self._pending.loaded.bundle.digest)
        return known

    def _initial_bundle(self) -> tuple[tb.Bundle, str | None, bool]:
        """The bundle to start with, why ``bundle_path`` was refused if the installed one runs instead, and
        whether it still has to be installed (it is ``bundle_path``, verified but not yet accepted)."""
        cfg = self.config
        refusal = None
        if cfg.bundle_path is not None:
            try:
                state = tb.read_state(self.state_dir)
                data = tb.read_file(cfg.bundle_path, "bundle")
                if state is None or hashlib.sha256(data).hexdigest() != state.bundle_sha256:
                    return tb.load_verified_bundle(cfg.bundle_path, cfg.pubkey, self.state_dir), None, True
            except tb.BundleError as exc:
                refusal = str(exc)
        try:
            b = tb.load_installed_bundle(self.state_dir, cfg.pubkey)
        except tb.BundleError as exc:
            raise AgentError(f"no bundle to run: {refusal + '; ' if refusal else ''}{exc}") from None
        return b, refusal, False

    def _offer_file(self, path: Path) -> None:
        try:
            data = tb.read_file(path, "bundle")
            if hashlib.sha256(data).hexdigest() in self._known_digests():
                return
            b = tb.load_verified_bundle(path, self.config.pubkey, self.state_dir)
        except tb.BundleError as exc:
            self._refuse(str(path), str(exc))
            return
        self._offer(b, install_from=path)

    def _offer(self, b: tb.Bundle, install_from: Path | None) -> None:
        """Build the runner for a verified bundle, install it when it came from a file, make it pending."""
        try:
            loaded = load_bundle_contents(b, self.config.policy_override)
            index = channel_indices(loaded.pipeline.channels_, self.channels, self.config.channel_map,
                                    what=f"model {b.model_id} v{b.version}")  # fmt: skip
            runner = _Runner(loaded, index)
            if install_from is not None:
                installed, _ = tb.install_bundle(install_from, self.config.pubkey, self.state_dir)
                if installed.digest != b.digest:
                    raise tb.BundleError(f"{install_from}: changed while it was being installed; will retry")
                self._seen[self._trust_path] = _stat(self._trust_path)
        except Exception as exc:  # nothing in a new bundle may stop monitoring with the current one
            detail = str(exc) if isinstance(exc, TinywardenError) else f"{type(exc).__name__}: {exc}"
            self._refuse(b.source, detail)
            return
        if self._pending is not None:
            self._audit("bundle_superseded", {"model": self._pending.loaded.describe()})
        self._pending = runner
        self._audit("bundle_accepted", {"model": loaded.describe(), "from": self._active.loaded.describe()})
        self.write_status()

    def _refuse(self, source: str, reason: str) -> None:
        self.refused += 1
        self.last_refusal = reason
        self._audit("bundle_refused", {"source": source, "reason": reason, "running": self.model.describe()})
        self.write_status()

    def _push_pending(self, t: float, sample: np.ndarray) -> float | None:
        if self._pending is None:
            return None
        try:
            return self._pending.push(t, sample)
        except Exception as exc:  # a new model that fails on live data is refused; the old one runs on
            loaded = self._pending.loaded
            self._pending = None
            self._refuse(loaded.bundle.source, f"model failed on its first samples: {type(exc).__name__}: {exc}")
            return None

    def _commit_swap(self, t: float) -> None:
        assert self._pending is not None
        old, new = self._active, self._pending
        old_engine = self.engine
        same_policy = replace(old.loaded.policy, source="") == replace(new.loaded.policy, source="")
        if same_policy:
            engine = self._new_engine(new.loaded, actuators=old_engine.actuators, fresh=True)
            engine.state = old_engine.state.copy()
            engine.windows = old_engine.windows
            engine.save()
        else:
            self._revert_all(old_engine, t)
            engine = self._new_engine(new.loaded, fresh=True)
        if old_engine.state_path is not None and old_engine.state_path != engine.state_path:
            with contextlib.suppress(OSError):
                old_engine.state_path.unlink()
        self._active, self._pending, self.engine = new, None, engine
        self.swaps += 1
        self._audit("model_swap", {
            "from": old.loaded.describe(),
            "to": new.loaded.describe(),
            "overlap_samples": new.pushed,
            "engine": "carried over" if same_policy else "restarted (policy changed)",
            "tier": engine.tier,
        }, t)  # fmt: skip
        self.write_status()

    def _revert_all(self, engine: ResponseEngine, t: float) -> None:
        for act in reversed(engine.actuators):
            try:
                if not act.is_applied():
                    continue
                act.revert()
                status = "done"
            except ActuatorError as exc:
                status = f"failed: {exc}"
            self._audit("swap_revert", {"action": act.name, "status": status,
                                        "reason": "new bundle brings a different policy"}, t)  # fmt: skip

    def _new_engine(
        self, loaded: LoadedBundle, actuators: Sequence[Any] | None = None, fresh: bool = False
    ) -> ResponseEngine:
        cfg = self.config
        path = self.state_dir / f"engine-{loaded.bundle.digest[:16]}.json" if cfg.persist_engine else None
        if path is not None and fresh:
            with contextlib.suppress(OSError):
                path.unlink()
        acts = (
            list(actuators) if actuators is not None else build_actuators(loaded.policy, dry_run=not cfg.real_actuators)
        )

        def make() -> ResponseEngine:
            return ResponseEngine(loaded.policy, float(loaded.pipeline.threshold_), actuators=acts, clock=self.clock,
                                  audit=self.audit, model_id=loaded.label, state_path=path)  # fmt: skip

        try:
            return make()
        except StateFileError as exc:
            assert path is not None
            stale = path.with_name(path.name + ".stale")
            try:
                os.replace(path, stale)
            except OSError as err:
                raise AgentError(f"{path}: unusable engine state ({exc}) and cannot move it aside ({err})") from None
            self._audit("engine_state_stale", {"file": str(stale), "reason": str(exc)})
            return make()

    # ---- faults, incidents, audit

    def _guard_state(self) -> str:
        """What guards the device when the model faults: the bounds, or why there are none."""
        p = self._active.loaded.pipeline
        guard = getattr(p, "guard_", None)
        if guard is None:
            return f"none: {getattr(p, 'guard_note_', '') or 'the model has no fail-safe guard'}"
        return f"bounds on {len(p.channels_)} channel(s)"

    def _model_fault(self, t: float, detail: str, score_fault: bool = False) -> list[ActionEvent]:
        """Record a failure of the model path on this sample; the guard judges the window it lost, if any."""
        self.model_faults += 1
        self.last_fault = detail
        if self._fault_streak == 0:
            self._audit("model_fault", {"detail": detail, "model": self._active.loaded.label,
                                        "guard": self._guard_state()}, t)  # fmt: skip
        self._fault_streak += 1
        runner = self._active
        verdict = runner.judge()
        if verdict is None:
            if runner.placed and getattr(runner.loaded.pipeline, "guard_", None) is not None:
                return []  # the sample is in the raw window: the guard judges it when that window completes
            return self.engine.report_fault(detail, at=t)  # a sample nobody can judge is a fault, as ever
        if verdict.violation is not None:
            self.guarded_windows += 1
            self.guard_violations += int(verdict.violation)
        self.last_guard = verdict.reason
        return self.engine.observe_guarded(verdict.violation, detail, at=t, detail=verdict.reason,
                                           score_fault=score_fault)  # fmt: skip

    def _escalate(self, events: Sequence[ActionEvent], t: float, score: float | None) -> None:
        entered: list[tuple[int, str]] = []
        for e in events:
            if e.event == "apply" and e.action_tier > 0 and all(e.action_tier != x for x, _ in entered):
                entered.append((e.action_tier, e.reason_code))
        for tier, code in entered:
            incident = self._incident(tier, code, t, score)
            if incident is None:
                continue
            self.incidents += 1
            if self.on_incident is not None:
                self.on_incident(incident)
            if self.publisher is not None:
                try:
                    self.publisher.submit(incident)
                except EscalationError as exc:  # a full disk must not stop monitoring; the audit says so
                    self._audit("escalation_failed", {"incident_id": incident.incident_id, "reason": str(exc)}, t)

    def _incident(self, tier: int, code: str, t: float, score: float | None) -> Incident | None:
        loaded = self._active.loaded
        engine = self.engine
        recent = list(engine.recent)
        if code.startswith("fault_") or code == REASON_FAILSAFE_BOUNDS:
            confidence = 1.0
        else:
            n, k = engine.tables.n[tier], engine.tables.k[tier]
            above = sum(1 for s in recent[-n:] if s > engine.tables.bar[tier])
            confidence = max(above / n, k / n)
        value = score if score is not None and math.isfinite(score) else (recent[-1] if recent else engine.threshold)
        start, end = self._active.span(t)
        try:
            return Incident(
                device_id=self.config.device_id,
                model_id=loaded.bundle.model_id,
                model_version=loaded.bundle.version,
                tier=tier,
                tier_name=self._tier_name(tier),
                score=float(value),
                threshold=engine.threshold,
                confidence=min(1.0, confidence),
                window_start=start,
                window_end=end,
                features=self._active.summary(self.config.summary_features),
                created_at=t,
                audit_head=self.audit.head,
            )
        except EscalationError as exc:
            self._audit("escalation_failed", {"tier": tier, "reason": str(exc)}, t)
            return None

    def _tier_name(self, tier: int) -> str:
        return TIER_NONE if tier == 0 else self.engine.policy.tiers[tier - 1].name

    def _drain_notices(self, t: float | None) -> None:
        while not self._notices.empty():
            try:
                kind, data = self._notices.get_nowait()
            except queue.Empty:
                return
            if kind == "spool_drop":
                self.spool_dropped += 1
            self._audit(kind, data, t)

    def _audit(self, kind: str, data: Mapping[str, Any], t: float | None = None) -> None:
        if t is None:
            # Before the first sample a replay has no time yet; a live agent has the wall clock.
            t = self.last_time if self.last_time is not None else (None if self.replay else self.clock.now())
        self.audit.append(kind, data, time=t)


def _stat(path: Path) -> tuple[int, int, int] | None:
    """What tells us a file changed: (mtime ns, size, inode); ``None`` while it does not exist."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino

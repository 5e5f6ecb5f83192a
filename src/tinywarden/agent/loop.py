"""The on-device agent: one loop, live or replayed, from samples to scores, responses, audit and escalation.

For every sample the :class:`Agent` pushes the model's channels into the streaming scorer of the
running bundle; every ``stride`` samples the window's score goes to the
:class:`~tinywarden.respond.ResponseEngine`, whose events are written to the audit log. Each time the
engine enters a tier, an incident is built (:mod:`tinywarden.agent.incidents`) and handed to the MQTT
publisher, which spools it on disk first. A status file (:mod:`tinywarden.agent.status`) says what the
agent is doing; :class:`~tinywarden.agent.counters.AgentCounters` holds what it has counted.

The loop's parts live in their own modules: samples come from :mod:`tinywarden.agent.sources` (a replay
runs on the data's clock, a :class:`~tinywarden.respond.SimulatedClock`, so it gives the same timeline
as a live run); :mod:`tinywarden.agent.bundles` finds, verifies, builds and installs bundles (a bundle
the agent cannot run never becomes the accepted version; a refused one is audited and the current one
keeps running); :mod:`tinywarden.agent.config` is what the agent is told. :func:`session` runs an agent
over a source the way the ``agent`` command does.

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

Confidence and adaptation. Every scored window's score also goes through the model's calibrated
likelihood (:mod:`tinywarden.likelihood`), a stream whose state the agent keeps: it is carried over a
hot swap to a bundle with the same model file (a new policy or version only) and starts afresh from the
fitted state with a different model. That confidence, in [0, 1], is the one scale of the product: it is
in every incident (and ``--escalate-confidence`` compares with it), in the status file and in the
audit records of the engine's events, and tiers with ``min_confidence`` use it. A model file without
a likelihood (written before it existed) runs as before (the incident's confidence is then the k-of-n
fraction) and one warning and one ``confidence_fallback`` audit record say so. With the policy's
``[adaptation] enabled`` (the default) a :class:`~tinywarden.adapt.BaselineAdapter` lets the running
pipeline learn from clearly normal windows and audits ``baseline_drift`` when it strays from the
training reference; it is carried over a same-model swap like the likelihood. A bundle signed with
``rebaseline: true`` in its metadata (an operator's order) resets both to that bundle's reference, clears
the flag and is audited as ``rebaseline``.

Runtime. With ``runtime="native"`` (the ``agent`` command's default) a model file that holds an int8
program runs as the generated C, built on this host and loaded through ctypes (:mod:`tinywarden.native`):
scoring, confidence and baseline adaptation happen inside the C state, an incident's summary comes from
the C's integer features, and the agent's process imports no numpy (without a C compiler it runs the int8
runtime, with one warning line). With ``runtime="int8"`` a model file that holds an int8 program runs as that
program (:mod:`tinywarden.runtime`, numpy only: the agent then never imports torch, scikit-learn or
matplotlib); its scores and threshold are the program's integers and its confidences come from the
likelihood fitted on them. Its baseline adaptation is the integer step the generated C runs
(:class:`~tinywarden.runtime.Int8Adapter`), so agent and device agree bit for bit; a program without the
step (raw-window families) adapts only with ``runtime="float"``. With ``persist_engine`` the adapted state of
the int8 or native runtime (with the likelihood's running state, which gates it; on the native runtime the C
state's blob, ``twh_state_export``) is written after every window to ``state_dir/adaptation-<bundle
digest>.json``, atomically and sealed with an HMAC under the audit log's device key
(:mod:`tinywarden.agent.adaptstate`), and a restarted agent carries on from it (``adaptation_restored``),
whole or not at all. A file that fails verification (torn, edited, sealed with another key, of another bundle
or module, or older than the last state counter the audit chain records: a rollback) is moved aside as
``.stale`` and audited (``adaptation_state_stale``), and the baseline starts again from the bundle's frozen
reference (fail-safe). A re-baseline drops the file.

Audit key. A keyed log the agent's key cannot continue is set aside, not a reason to stop monitoring
(:func:`open_audit_log`, docs/audit.md).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinywarden import bundle as tb
from tinywarden.agent import adaptstate
from tinywarden.agent.bundles import BundleWatcher, LoadedBundle, ModelRunner, Refusal
from tinywarden.agent.config import AgentConfig, AgentError
from tinywarden.agent.counters import AgentCounters
from tinywarden.agent.escalate import (
    EscalationError,
    Incident,
    MqttPublisher,
    Spool,
)
from tinywarden.agent.incidents import IncidentBuilder, entered_tiers
from tinywarden.agent.sources import LiveSource, ReplaySource
from tinywarden.agent.status import StatusError, write_status
from tinywarden.audit import AuditKeyMismatch, AuditLog, load_key, set_aside
from tinywarden.errors import TinywardenError
from tinywarden.native import NativeAdapter, NativeLikelihood, NativeModel, NativeScorer
from tinywarden.respond import ActionEvent, ResponseEngine, SimulatedClock, SystemClock
from tinywarden.respond.actuators import Actuator, actuator_for, build_actuators
from tinywarden.respond.engine import Rebuild, StateFileError, dry_run_rebuild, revert_in_place
from tinywarden.respond.machine import next_deadline

if TYPE_CHECKING:  # numpy-based: loaded only by a model that runs on them (never by the native runtime)
    from tinywarden.adapt import BaselineAdapter
    from tinywarden.likelihood import AnomalyLikelihood
    from tinywarden.runtime import Int8Adapter

__all__ = ["Agent", "WindowScore", "open_audit_log", "session"]

TIER_NONE = "none"
#: A live sample whose wall time ran this many seconds ahead of the monotonic clock since the last one is a step
#: of the wall clock (NTP slews by at most 0.5 ms a second; the two are read together, so nothing else moves it).
CLOCK_STEP_S = 1.0
_NO_LIKELIHOOD = ("the model file has no calibrated likelihood (written before it existed): confidences "
                  "fall back to the k-of-n fraction, tier min_confidence is ignored, no adaptation")

_INT8_NO_ADAPTATION = ("not with this int8 program: it has no adaptation step (a family that reads the raw "
                       "window, or a model file written before the step existed); run the agent with "
                       "--runtime float to adapt")

_log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class WindowScore:
    """One scored window: when it ended, its score, the tier after it, and which model scored it."""

    time: float
    score: float
    tier: int
    model: str


def _counter(name: str) -> property:
    return property(lambda self: getattr(self.counters, name), doc=f"``counters.{name}`` (read-only).")


# ---------------------------------------------------------------------------------------------- agent


class Agent:
    """The monitoring loop of one device (see the module docstring).

    ``channels`` are the sample source's channel names; ``replay`` makes the agent's clock follow the
    samples' timestamps. ``on_window`` and ``on_incident`` are called for every scored window and every
    incident built (whether or not escalation admits it). ``clock_offset`` (live) gives, for the sample being
    processed, its time minus a monotonic clock read with it (:attr:`LiveSampler.clock_offset`): when it grows by
    more than :data:`CLOCK_STEP_S` the wall clock stepped forward, and the engine's timers move with the step
    (:meth:`~tinywarden.respond.ResponseEngine.clock_stepped`) instead of reading it as missing telemetry and
    going to the fail-safe tier. Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        config: AgentConfig,
        channels: Sequence[str],
        *,
        replay: bool = False,
        on_window: Callable[[WindowScore], None] | None = None,
        on_incident: Callable[[Incident], None] | None = None,
        clock_offset: Callable[[], float | None] | None = None,
    ) -> None:
        self.config = config
        self.channels = tuple(channels)
        self.replay = replay
        self.on_window = on_window
        self.on_incident = on_incident
        self.clock: SimulatedClock | SystemClock = SimulatedClock() if replay else SystemClock()
        sdir = Path(config.state_dir)
        try:
            sdir.mkdir(mode=0o700, parents=True, exist_ok=True)
            tb.check_state_dir(sdir)  # before its audit log, trust state or engine state is read
        except OSError as exc:
            raise AgentError(f"{sdir}: cannot create state directory ({exc.strerror or exc})") from None
        except tb.BundleError as exc:
            raise AgentError(str(exc)) from None
        self.state_dir = sdir
        self.status_path = Path(config.status_path) if config.status_path else sdir / "status.json"
        self.audit, self.audit_set_aside = open_audit_log(config)
        # Spool callbacks may run on the sender thread; the audit log is written from this thread only.
        self._notices: queue.SimpleQueue[tuple[str, dict[str, Any]]] = queue.SimpleQueue()
        self.counters = AgentCounters()
        self.last_scores: deque[WindowScore] = deque(maxlen=config.last_scores)
        self.incident_builder = IncidentBuilder(config.device_id, config.summary_features)
        self.bundles = BundleWatcher(config, self.channels, sdir)
        # how an engine rebuilds an action of a replaced policy still to revert that its state file names: as the
        # agent builds its actuators (real, or dry-run stand-ins)
        self.rebuild: Rebuild = dry_run_rebuild if not config.real_actuators else actuator_for
        self._fault_streak = 0
        self._state_counter = 0  # the adapted-state file's counter (adaptstate: rollback)
        self._pending: ModelRunner | None = None
        self._next_poll = -math.inf
        self._status_due = -math.inf
        self._stopping = False
        self._status_failing = False
        self._clock_offset = clock_offset
        self._last_offset: float | None = None

        self._active, refusal = self.bundles.initial()
        loaded = self._active.loaded
        self.engine = self._new_engine(loaded)
        if not self.engine.restored:  # no state accounts for what a run before this one may have left in place
            self.engine.sweep()
        self._likelihood: AnomalyLikelihood | NativeLikelihood | None = None
        self._adapter: BaselineAdapter | Int8Adapter | NativeAdapter | None = None
        self.last_confidence: float | None = None
        self._fresh_model_state(loaded)
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
        self._note_confidence(loaded)
        self._restore_adaptation(loaded)
        if refusal is not None:
            self._refuse(str(config.bundle_path), f"{refusal} (running the installed bundle v{loaded.bundle.version})")

    samples_seen = _counter("samples_seen")
    windows_scored = _counter("windows_scored")
    incidents = _counter("incidents")
    model_faults = _counter("model_faults")
    guarded_windows = _counter("guarded_windows")
    guard_violations = _counter("guard_violations")
    refused = _counter("refused")
    last_fault = _counter("last_fault")

    # ---- public API

    @property
    def model(self) -> LoadedBundle:
        """The bundle whose scores drive the engine now."""
        return self._active.loaded

    @property
    def pending(self) -> LoadedBundle | None:
        """A newly accepted bundle still filling its first window, or ``None``."""
        return self._pending.loaded if self._pending is not None else None

    def run(self, samples: Iterable[tuple[float, Any]], max_samples: int | None = None) -> int:
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

    def process(self, t: float, sample: Any) -> list[ActionEvent]:
        """One sample at time ``t`` (epoch seconds): score, respond, audit, escalate; return the engine's events."""
        t = float(t)
        if self.replay:
            assert isinstance(self.clock, SimulatedClock)
            self.clock.set(t)
        self.counters.sample(t)
        self._drain_notices(t)
        events: list[ActionEvent] = self._clock_step(t)
        if t >= self._next_poll or t < self._next_poll - 2 * self.config.poll_interval_s:
            self._next_poll = t + self.config.poll_interval_s
            self.poll_bundles()

        new_score = self._push_pending(t, sample)
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

        confidence: float | None = None
        if score is not None:
            if math.isfinite(score):
                if self._fault_streak:  # recovered only once a window scores again
                    self._audit("model_recovered", {"after_faults": self._fault_streak}, t)
                    self._fault_streak = 0
                confidence = self._confidence(score, t)
                events += self.engine.observe(score, at=t, confidence=confidence)
            else:
                events += self._model_fault(t, f"non-finite score {score!r}", score_fault=True)
            self.counters.windows_scored += 1
            ws = WindowScore(t, score, self.engine.tier, self._active.loaded.label)
            self.last_scores.append(ws)
            if self.on_window is not None:
                self.on_window(ws)
        elif next_deadline(self.engine.state, self.engine.tables) <= t + self.engine.state.skew:
            events += self.engine.tick(at=t)  # timers (dead-man, de-escalation) fire on time between windows

        self._escalate(events, t, score, confidence)
        # Status is rewritten when something changed, but at most every status_interval_s of real time:
        # a replay runs thousands of windows a second and readers only need the current picture.
        if events or (score is not None and time.monotonic() >= self._status_due):
            self.write_status()
        return events

    def _clock_step(self, t: float) -> list[ActionEvent]:
        """A forward step of the wall clock since the last sample, handed to the engine (live only)."""
        offset = self._clock_offset() if self._clock_offset is not None else None
        if offset is None:
            return []
        last, self._last_offset = self._last_offset, offset
        if last is None or offset - last <= CLOCK_STEP_S:
            return []  # no step, or a backward one: the engine holds its time monotonic by itself
        return self.engine.clock_stepped(offset - last, at=t)

    def poll_bundles(self) -> None:
        """Look for a new bundle at ``bundle_path`` or newly installed in ``state_dir``; offer it for a swap."""
        for found in self.bundles.poll(self._known_digests):
            if isinstance(found, Refusal):
                self._refuse(found.source, found.reason)
            else:
                self._offer(*found)

    def write_status(self) -> None:
        """Rewrite the status file now (the loop does this after scored windows and every event). One that cannot be
        written (a full disk, its folder gone) does not stop the monitoring it only pictures: the first failure of a
        streak is logged and audited (``status_unwritable``), and the next write that succeeds ends the streak."""
        try:
            write_status(self.status_path, self.status())
        except StatusError as exc:
            if not self._status_failing:
                self._status_failing = True
                _log.warning("%s; monitoring goes on without it", exc)
                self._audit("status_unwritable", {"error": str(exc)})
        else:
            self._status_failing = False
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
                "dropped": self.counters.spool_dropped,
                "topic": self.publisher.topic,
            }
        tier = self.engine.tier
        c = self.counters
        return {
            "device_id": self.config.device_id,
            "mode": "replay" if self.replay else "live",
            "model": self.model.describe(),
            "pending_model": self.pending.describe() if self.pending is not None else None,
            "tier": tier,
            "tier_name": self._tier_name(tier),
            "unreverted": list(self.engine.unreverted),
            "last_scores": [[w.time, w.score if math.isfinite(w.score) else None] for w in self.last_scores],
            "samples_seen": c.samples_seen,
            "windows_scored": c.windows_scored,
            "incidents": c.incidents,
            "started_at": c.started_at,
            "last_update": c.last_time,
            "faults": c.faults_doc(self._guard_state(), self.engine.state.fault != 0, self.engine.guarded > 0),
            "bundles": c.bundles_doc(),
            "audit": {
                "log": str(self.audit.path),
                "key_id": self.audit.key.key_id if self.audit.key is not None else None,
                "set_aside": self.audit_set_aside["file"] if self.audit_set_aside else None,
                "set_aside_reason": self.audit_set_aside["reason"] if self.audit_set_aside else None,
            },
            "escalation": esc,
            "confidence": {
                "scale": "likelihood" if self._likelihood is not None else f"none: {_NO_LIKELIHOOD}",
                "last": self.last_confidence,
            },
            "adaptation": self._adapter.status() if self._adapter is not None else {
                "enabled": False,
                "reason": self._no_adaptation(),
            },
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
        c = self.counters
        self._audit("agent_stop", {"samples": c.samples_seen, "windows": c.windows_scored,
                                   "incidents": c.incidents, "tier": self.engine.tier,
                                   **self._state_checkpoint()})  # fmt: skip
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

    def _offer(self, b: tb.Bundle, install_from: Path | None) -> None:
        """Build the runner for a verified bundle, install it when it came from a file, make it pending."""
        try:
            runner = self.bundles.prepare(b, install_from)
        except Exception as exc:  # nothing in a new bundle may stop monitoring with the current one
            detail = str(exc) if isinstance(exc, TinywardenError) else f"{type(exc).__name__}: {exc}"
            self._refuse(b.source, detail)
            return
        if self._pending is not None:
            self._audit("bundle_superseded", {"model": self._pending.loaded.describe()})
        self._pending = runner
        self._audit("bundle_accepted", {"model": runner.loaded.describe(), "from": self._active.loaded.describe()})
        self.write_status()

    def _refuse(self, source: str, reason: str) -> None:
        self.counters.refusal(reason)
        self._audit("bundle_refused", {"source": source, "reason": reason, "running": self.model.describe()})
        self.write_status()

    def _push_pending(self, t: float, sample: Any) -> float | None:
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
            engine.take_over(old_engine)
        else:
            failed = self._revert_all(old_engine, t)
            engine = self._new_engine(new.loaded, fresh=True)
            # retried by the new engine until they go through, after a restart too (its state file holds them)
            engine.adopt_unreverted(failed, at=t, policy=old_engine.policy)
        if old_engine.state_path is not None and old_engine.state_path != engine.state_path:
            with contextlib.suppress(OSError):
                old_engine.state_path.unlink()
        old_state = self._adaptation_path(old.loaded)
        if old_state is not None and old_state != self._adaptation_path(new.loaded):
            with contextlib.suppress(OSError):  # the new bundle's file is written at its next window
                old_state.unlink()
        self._active, self._pending, self.engine = new, None, engine
        same_model = old.loaded.bundle.model == new.loaded.bundle.model and self._likelihood is not None
        if new.loaded.bundle.rebaseline:
            self._rebaseline(new.loaded, t)
        elif same_model and self._adapter is not None and new.loaded.policy.adaptation.enabled:
            self._carry_native(old, new)
            self._adapter.rebind(new.loaded.pipeline)
            self._adapter.config = new.loaded.policy.adaptation
        elif same_model:
            self._carry_native(old, new)
            self._adapter = self._make_adapter(new.loaded)
        else:
            self._fresh_model_state(new.loaded)
            self._note_confidence(new.loaded)
        self.counters.swaps += 1
        self._audit("model_swap", {
            "from": old.loaded.describe(),
            "to": new.loaded.describe(),
            "overlap_samples": new.pushed,
            "engine": "carried over" if same_policy else "restarted (policy changed)",
            "likelihood": "reset (re-baseline)" if new.loaded.bundle.rebaseline else
                          "carried over (same model file)" if same_model else "reset (new model)",
            "tier": engine.tier,
        }, t)  # fmt: skip
        self.write_status()

    @staticmethod
    def _carry_native(old: ModelRunner, new: ModelRunner) -> None:
        """A same-model swap on the native runtime: the likelihood (and adaptation) state lives in the C state,
        so the new scorer takes the old one's (its own window completed just now, on the fresh state). A new
        policy that turns the adaptation on or off changes the state's layout: the likelihood then starts
        from its fitted state."""
        a, b = old.scorer, new.scorer
        if isinstance(a, NativeScorer) and isinstance(b, NativeScorer) and b.can_carry_from(a):
            b.carry_from(a)

    def _revert_all(self, engine: ResponseEngine, t: float) -> list[Actuator]:
        """Revert every action of ``engine``'s policy still in place; return the actuators whose revert failed."""
        failed: list[Actuator] = []
        for act in reversed(engine.actuators):
            status = revert_in_place(act)
            if status is None:
                continue
            if status != "done":
                status += "; retried by the new policy's engine"
                failed.append(act)
            self._audit("swap_revert", {"action": act.name, "status": status,
                                        "reason": "new bundle brings a different policy"}, t)  # fmt: skip
        return failed

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
                                  audit=self.audit, model_id=loaded.label, state_path=path,
                                  rebuild=self.rebuild)  # fmt: skip

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
        self.counters.fault(detail)
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
        self.counters.guarded(verdict.violation, verdict.reason)
        return self.engine.observe_guarded(verdict.violation, detail, at=t, detail=verdict.reason,
                                           score_fault=score_fault)  # fmt: skip

    # ---- confidence and adaptation

    def _make_adapter(self, loaded: LoadedBundle) -> BaselineAdapter | Int8Adapter | NativeAdapter | None:
        cfg = loaded.policy.adaptation
        if not cfg.enabled or self._likelihood is None:
            return None
        p = loaded.pipeline
        if isinstance(p, NativeModel):  # compiled into the C module (tinywarden.native)
            if not p.lib.has_adaptation or not isinstance(self._likelihood, NativeLikelihood):
                return None
            return NativeAdapter(lambda: self._active.scorer, cfg, self._likelihood)
        if getattr(p, "runtime", None) == "int8":  # the integer step runs inside the scorer, as on the device
            from tinywarden.runtime import Int8Adapter

            if getattr(self._active.scorer.stream, "adapter", None) is None:
                return None
            return Int8Adapter(lambda: self._active.scorer, cfg)
        from tinywarden.adapt import BaselineAdapter

        return BaselineAdapter(p, cfg)

    def _no_adaptation(self) -> str:
        """Why no baseline adaptation runs (for the status file)."""
        if not self.engine.policy.adaptation.enabled:
            return "off by the policy's [adaptation] enabled = false"
        if getattr(self._active.loaded.pipeline, "runtime", None) in ("int8", "native"):
            return _INT8_NO_ADAPTATION
        return f"needs a likelihood: {_NO_LIKELIHOOD}"

    def _rebaseline(self, loaded: LoadedBundle, t: float) -> None:
        """An operator's signed re-baseline bundle (metadata ``rebaseline: true``) is running: the adapted
        baseline and the likelihood go back to that bundle's trained reference and the drift flag is cleared,
        whatever the model; audited with what was dropped."""
        before = self._adapter.status() if self._adapter is not None else None
        scorer = self._active.scorer
        if isinstance(scorer, NativeScorer):
            scorer.rebaseline()  # the overlap pushes adapted it already
        elif getattr(loaded.pipeline, "runtime", None) == "int8":
            scorer.stream.rebaseline()  # the overlap pushes adapted it already
        path = self._adaptation_path(loaded)
        if path is not None:  # what the overlap adapted is dropped with the rest
            with contextlib.suppress(OSError):
                path.unlink()
        self._fresh_model_state(loaded)
        self._audit("rebaseline", {
            "model": loaded.label, "signer": loaded.bundle.signer_fingerprint, "digest": loaded.bundle.digest,
            "dropped": before,
            "detail": "operator re-baseline: adapted baseline and likelihood reset to the bundle's reference",
        }, t)  # fmt: skip

    def _adaptation_path(self, loaded: LoadedBundle) -> Path | None:
        """The adapted-state file of a bundle (kept with ``persist_engine``), or None."""
        return self.state_dir / f"adaptation-{loaded.bundle.digest[:16]}.json" if self.config.persist_engine else None

    def _persists(self) -> bool:
        """Whether the running adapter's state is kept in a file: the int8 and native runtimes' integer step (the
        float adapter keeps its state in memory: a restart starts it from the bundle's reference)."""
        return (self._adapter is not None and self._adaptation_path(self._active.loaded) is not None
                and getattr(self._active.loaded.pipeline, "runtime", None) in ("int8", "native"))

    def _state_checkpoint(self) -> dict[str, Any]:
        """The audit data recording the state file's counter (:func:`adaptstate.checkpoint`), or nothing."""
        if not self._persists() or self._state_counter == 0:
            return {}
        return adaptstate.checkpoint(self._active.loaded.bundle.digest, self._state_counter)

    def _restore_adaptation(self, loaded: LoadedBundle) -> None:
        """At start, carry on from the adapted state saved before the restart, whole or not at all; a state file
        that fails verification is moved aside, audited, and the baseline starts from the bundle's frozen
        reference (fail-safe)."""
        path = self._adaptation_path(loaded)
        if not self._persists() or path is None:
            return
        key = self.audit.key
        assert key is not None  # the agent's log is always keyed (open_audit_log)
        digest = loaded.bundle.digest
        audited = adaptstate.audited_counter(self.audit.path, key, digest)
        # the files written from now on count on from the chain's record, whatever happens to this one: a state
        # set aside (or deleted) does not make the next ones look like a rollback
        self._state_counter = audited[0] if audited is not None else 0
        if not path.exists():
            return
        try:
            body = adaptstate.read_state(path, key, digest)
            if audited is not None and body["counter"] < audited[0]:
                raise adaptstate.AdaptedStateError(
                    f"{path}: a rollback: the adapted state's counter {body['counter']} is older than "
                    f"{audited[0]}, recorded in the audit log at seq {audited[1]}")
            self._load_adapted(body["state"])
        except TinywardenError as exc:
            reason = str(exc) if str(exc).startswith(str(path)) else f"{path}: {exc}"
            stale = path.with_name(path.name + ".stale")
            with contextlib.suppress(OSError):
                os.replace(path, stale)
            self._audit("adaptation_state_stale", {"file": str(stale), "reason": reason, "model": loaded.label,
                                                   "detail": "adapted baseline restarted from the trained reference"})
            return
        self._state_counter = body["counter"]
        self._audit("adaptation_restored", {"file": str(path), "model": loaded.label, **self._adapter.status(),
                                            **self._state_checkpoint()})  # fmt: skip

    def _load_adapted(self, state: Any) -> None:
        """Load an adapter snapshot into the running adapter (and the int8 program likelihood's agent copy); an
        error leaves both as they were."""
        adapter = self._adapter
        if isinstance(adapter, NativeAdapter):
            adapter.load(state)
            return
        from tinywarden.runtime import Int8Adapter, ProgramLikelihood  # int8 runtime only: numpy is loaded

        assert isinstance(adapter, Int8Adapter)
        lik = self._likelihood.stream if isinstance(self._likelihood, ProgramLikelihood) else None
        adapter.load(state, *([lik] if lik is not None else []))

    def _save_adaptation(self) -> None:
        """The int8 or native adapter's state, sealed and written after each window (a failed write is one warning;
        monitoring goes on)."""
        if not self._persists():
            return
        assert self._adapter is not None and self.audit.key is not None
        loaded = self._active.loaded
        path = self._adaptation_path(loaded)
        assert path is not None
        self._state_counter += 1
        body = {"bundle": loaded.bundle.digest, "counter": self._state_counter,
                "state": self._adapter.snapshot()}  # type: ignore[union-attr]
        try:
            adaptstate.write_state(path, body, self.audit.key, fsync=self.config.audit_fsync)
        except TinywardenError as exc:
            _log.warning("%s", exc)

    def _fresh_model_state(self, loaded: LoadedBundle) -> None:
        """The likelihood stream and the adapter of a newly running model, from its fitted state."""
        lik = getattr(loaded.pipeline, "likelihood_", None)
        self._likelihood = lik.fresh() if lik is not None else None
        if isinstance(self._likelihood, NativeLikelihood):  # the C computes it: read the running scorer's
            self._likelihood.scorer = lambda: self._active.scorer
        self._adapter = self._make_adapter(loaded)
        self.last_confidence = None

    def _note_confidence(self, loaded: LoadedBundle) -> None:
        if self._likelihood is None:
            _log.warning("model %s: %s", loaded.label, _NO_LIKELIHOOD)
            self._audit("confidence_fallback", {"model": loaded.label, "detail": _NO_LIKELIHOOD})

    def _confidence(self, score: float, t: float) -> float | None:
        """The window's calibrated confidence (``None`` without a likelihood); adapts the baseline."""
        if self._likelihood is None:
            return None
        c = self._likelihood.update(score, self._active.new_rows())  # the rows for the value record
        self.last_confidence = c if math.isfinite(c) else None
        x = self._active.scorer.last_input
        if self._adapter is not None and (x is not None or isinstance(self._adapter, NativeAdapter)):
            step = self._adapter.observe(x, self.last_confidence, self._likelihood, score)
            self._save_adaptation()
            if step.flagged:
                self._audit("baseline_drift", {
                    "model": self._active.loaded.label, **self._adapter.status(), **self._state_checkpoint(),
                    "detail": "the adapted baseline is far from the training reference: a slow ramp (poisoning) "
                              "or a lasting legitimate change; re-baseline with a signed bundle if approved",
                }, t)  # fmt: skip
        return self.last_confidence

    def _escalate(self, events: Sequence[ActionEvent], t: float, score: float | None,
                  confidence: float | None = None) -> None:
        for tier, code in entered_tiers(events):
            try:
                incident = self.incident_builder.build(tier, code, t, score, self._active, self.engine,
                                                       self._tier_name(tier), self.audit.head,
                                                       confidence)  # fmt: skip
            except EscalationError as exc:
                self._audit("escalation_failed", {"tier": tier, "reason": str(exc)}, t)
                continue
            self.counters.incidents += 1
            if self.on_incident is not None:
                self.on_incident(incident)
            if self.publisher is not None:
                try:
                    self.publisher.submit(incident)
                except EscalationError as exc:  # a full disk must not stop monitoring; the audit says so
                    self._audit("escalation_failed", {"incident_id": incident.incident_id, "reason": str(exc)}, t)

    def _tier_name(self, tier: int) -> str:
        return TIER_NONE if tier == 0 else self.engine.policy.tiers[tier - 1].name

    def _drain_notices(self, t: float | None) -> None:
        while not self._notices.empty():
            try:
                kind, data = self._notices.get_nowait()
            except queue.Empty:
                return
            if kind == "spool_drop":
                self.counters.spool_dropped += 1
            self._audit(kind, data, t)

    def _audit(self, kind: str, data: Mapping[str, Any], t: float | None = None) -> None:
        if t is None:
            # Before the first sample a replay has no time yet; a live agent has the wall clock.
            last = self.counters.last_time
            t = last if last is not None else (None if self.replay else self.clock.now())
        self.audit.append(kind, data, time=t)


@contextlib.contextmanager
def session(
    config: AgentConfig,
    source: ReplaySource | LiveSource,
    *,
    drain_s: float = 5.0,
    on_window: Callable[[WindowScore], None] | None = None,
    on_incident: Callable[[Incident], None] | None = None,
) -> Iterator[Agent]:
    """An :class:`Agent` for ``source``, closed when the ``with`` block ends (also on an exception).

    A replay (``source.simulated``) runs on the data's clock, does not fsync the audit log and does not
    keep the engine's state (it starts afresh each time), and at the end waits up to ``drain_s`` seconds
    for spooled incidents to reach the broker before closing. Run the loop with ``agent.run(source)``.
    """
    replay = source.simulated
    if replay:
        config = replace(config, audit_fsync=False, persist_engine=False)
    offset = (lambda: source.sampler.clock_offset) if isinstance(source, LiveSource) else None
    agent = Agent(config, source.channels, replay=replay, on_window=on_window, on_incident=on_incident,
                  clock_offset=offset)
    try:
        yield agent
    finally:
        if replay and agent.publisher is not None:
            agent.drain(drain_s)
        agent.close()

"""The response policy: a TOML file saying what the device does, and when, once it sees anomalies.

A policy has three tiers, ``alert`` -> ``constrain`` -> ``harden``. Each tier names the actions it runs,
how much evidence escalates to it (``k`` anomalous windows out of the last ``n``, each scored above the
tier's bar ``threshold + margin * |threshold|``), how long the engine must stay before escalating
further (``min_dwell_s``), how long of normal behaviour steps it back down (``deescalate_after_s``) and
the dead-man timeout after which its actions revert unless detection renews them (``dead_man_s``).
The ``[critical]`` table names processes, interfaces and addresses that no action may ever touch.

A tier may also ask for ``min_confidence``: a window then counts toward that tier only when, besides
being above the bar, its calibrated confidence (:mod:`tinywarden.likelihood`, the scale the agent's
``--escalate-confidence`` and the ``score`` column use) is at least that value, in [0, 1]; with the
default ``decades = 10``, 0.5 means a tail probability of 1e-5 and 0.2 of 1e-2. A model file without a
likelihood ignores it (the engine notes so once). The generated C module compares the window's Q15
confidence with the bar (``ceil(min_confidence * 32768)``); the C export refuses a policy that sets it
only for a model whose int8 program has no likelihood step (:func:`check_c_exportable`).

The ``[adaptation]`` table switches the deployed pipeline's baseline adaptation
(:mod:`tinywarden.adapt`): ``enabled`` (default true), ``rate_shift`` (each clearly normal window moves
the baseline by ``2**-rate_shift``), ``below_confidence`` (clearly normal: confidence below this) and
``max_drift`` (flag when the adapted baseline is this many training standard deviations from the
reference kept from training), ``below_threshold`` (a window over the model's threshold never teaches;
default true), ``settle_s`` (a shift sustained this long, 12 h by default, is followed at
``2**-settle_rate_shift`` per window; 0 never), ``adapt_scale`` (the slow path learns the scale too;
default false: offsets only), ``watch_drift`` (the slow-drift watch, :mod:`tinywarden.level_watch`: also
flag when the day-long level of the windows under the threshold is this many training standard deviations
from the reference; default 1, the value stated for it; 0 turns it off and compiles it out), ``watch_distance``
(also flag when that level, scored by the detector itself, is this fraction of its threshold: PCA and Gaussian;
default 0.2; 0 turns it off). The C export
with this policy compiles the integer adaptation in when it
is enabled and the model's int8 program has the step (:mod:`tinywarden.kernels.adapt_q`), and leaves it
out when it is off; the integer step follows every key of the table (:func:`tinywarden.program.adaptation_params`).
The format is documented in ``docs/policy.md``; ``examples/policy.toml`` is a complete example.

Everything wrong with a policy is a :class:`PolicyError` naming the file and the dotted key at fault.

>>> p = parse_policy('''
... [policy]
... name = "demo"
... version = "1"
... [actions.notify]
... type = "log"
... message = "anomaly"
... [tiers.alert]
... actions = ["notify"]
... k = 2
... n = 3
... ''')
>>> p.tiers[0].name, p.tiers[0].k, p.tiers[0].n, p.tiers[1].actions
('alert', 2, 3, ())
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinywarden.adaptation import Adaptation
from tinywarden.errors import ConfigError
from tinywarden.respond.actuators.catalog import ACTUATOR_TYPES
from tinywarden.respond.actuators.tc import tbf_problem
from tinywarden.respond.addresses import normalize_networks
from tinywarden.respond.critical import Critical

TIER_NAMES: tuple[str, ...] = ("alert", "constrain", "harden")
"""Tier names in escalation order; tier numbers are 1, 2, 3 (0 is "no response")."""

# The numeric limits of a policy, defined once: the loader refuses anything outside them and the C export
# (tinywarden.codegen.respond) builds its integer types on them, so a policy `respond` accepts always exports.

MAX_WINDOW = 32
"""Longest k-of-n window: the history is a uint32 bitmask per tier, so the embedded mirror needs no buffer."""

MAX_DURATION_S = 2**31 - 1
"""Longest duration (seconds, ~68 years) of any ``*_s`` key. Whole seconds of it fit an int32, and the C module
adds it to int64 times that stay below 2**53, so neither side can overflow or lose precision."""

MAX_MARGIN = 1e6
"""Largest tier ``margin``: a bar a million times the threshold is never crossed, and keeping the margin
bounded keeps every bar finite, so it can be floored into the C module's integer score domain."""

MAX_FAULT_TOLERANCE = 1_000_000
"""Largest ``fault_tolerance``; the C module counts faults in a saturating uint32."""

# IFNAMSIZ is 16 including the NUL. No ":" (the kernel never names an interface so; the lookup ip and tc make
# cuts the name there, so "eth1:0" is eth1) and no "ifN" (iproute2 reads it as interface index N when no
# interface has that name): either would act on another interface than the one the [critical] check saw.
_IFNAME = re.compile(r"[A-Za-z0-9_.@-]{1,15}")
_IFINDEX = re.compile(r"if[0-9]+")
# Matched whole (fullmatch): "^...$" with re.match let a final newline through ("1mbit\n", an action "act\n").
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")


class PolicyError(ConfigError):
    """A response policy that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class ActionSpec:
    """One named action of the policy: its ``type`` and the parameters of that type."""

    name: str
    type: str
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def heavy(self) -> bool:
        """True for actions that change the device (everything but ``log``); they need a dead-man timer."""
        return self.type != "log"


@dataclass(frozen=True)
class TierSpec:
    """One tier: the actions it runs and the rules for entering, staying in and leaving it."""

    name: str
    actions: tuple[str, ...] = ()
    k: int = 1
    n: int = 1
    margin: float = 0.0
    min_dwell_s: float = 0.0
    deescalate_after_s: float = 300.0
    dead_man_s: float = 0.0
    min_confidence: float | None = None


@dataclass(frozen=True)
class Policy:
    """A validated response policy (see the module docstring and ``docs/policy.md``)."""

    name: str
    version: str
    tiers: tuple[TierSpec, TierSpec, TierSpec]
    actions: tuple[ActionSpec, ...]
    critical: Critical = Critical()
    fail_safe_tier: int = 0
    fault_tolerance: int = 3
    telemetry_timeout_s: float = 60.0
    watchdog_timeout_s: float = 0.0
    adaptation: Adaptation = Adaptation()
    source: str = "<string>"

    @property
    def uses_confidence(self) -> bool:
        """Whether any tier sets ``min_confidence``."""
        return any(t.min_confidence is not None for t in self.tiers)

    @property
    def advice(self) -> tuple[str, ...]:
        """One line for each choice that loads but works against the policy's aim (not an error: the agent runs
        it). Today: an action in the ``alert`` tier that reshapes the device's own traffic
        (:attr:`~tinywarden.respond.actuators.catalog.ActuatorType.shapes_traffic`). The model scores that
        traffic, so windows scored while the action is in place are not the device's normal: one false alert can
        keep itself up or escalate on windows it shaped (the attack range measured 38.4% of normal windows over
        the threshold under a 2 mbit cap, ``docs/policy.md``)."""
        out = []
        for name in self.tiers[0].actions:
            spec = self.actions[self.action_index(name)]
            if ACTUATOR_TYPES[spec.type].shapes_traffic:
                out.append(f"{self.source}: tiers.alert.actions: {name} ({spec.type}) reshapes the device's own "
                           "traffic, which the model scores, so one false alert can keep itself up or escalate on "
                           "windows it shaped; put it in tiers.constrain or above (docs/policy.md)")
        return tuple(out)

    def action_index(self, name: str) -> int:
        """Index of the action called ``name`` in :attr:`actions`."""
        for i, a in enumerate(self.actions):
            if a.name == name:
                return i
        raise KeyError(name)

    def tier_action_indices(self, tier: int) -> tuple[int, ...]:
        """Indices into :attr:`actions` of the actions tier ``tier`` (1..3) runs, in order."""
        return tuple(self.action_index(n) for n in self.tiers[tier - 1].actions)


ACTION_TYPES: tuple[str, ...] = tuple(ACTUATOR_TYPES)
"""Every action ``type`` a policy may use (the names of :data:`~tinywarden.respond.actuators.ACTUATOR_TYPES`)."""

_POLICY_KEYS = {
    "name",
    "version",
    "fail_safe_tier",
    "fault_tolerance",
    "telemetry_timeout_s",
    "watchdog_timeout_s",
}
_TIER_KEYS = {"actions", "k", "n", "consecutive", "margin", "min_dwell_s", "deescalate_after_s", "dead_man_s",
              "min_confidence"}
_ADAPTATION_KEYS = {"enabled", "rate_shift", "below_confidence", "max_drift", "below_threshold", "settle_s",
                    "settle_rate_shift", "adapt_scale", "watch_drift", "watch_distance"}
_TOP_KEYS = {"policy", "critical", "tiers", "actions", "adaptation"}
MAX_RATE_SHIFT = 20
"""Slowest adaptation rate, ``2**-20`` per window; 0 would replace the baseline by every window."""
MAX_DRIFT = 1e3
MAX_SETTLE_S = 90 * 86400.0
"""Longest sustained shift the baseline waits for before following it (0 turns the rule off)."""


def check_c_exportable(policy: Policy, has_likelihood: bool = False) -> None:
    """Refuse, with a one-line :class:`PolicyError`, a policy the generated C module cannot honour.

    A tier's ``min_confidence`` needs the program's integer likelihood step
    (:mod:`tinywarden.kernels.likelihood_q`, ``has_likelihood``); a program without one (a model file
    trained before it existed) cannot check it on the device, and exporting it anyway would respond where
    the agent would not. ``[adaptation]`` needs no check: a program without the step keeps its trained baseline,
    as the int8 agent does.
    """
    if has_likelihood:
        return
    for t in policy.tiers:
        if t.min_confidence is not None:
            raise PolicyError(f"{policy.source}: tiers.{t.name}.min_confidence: the generated C module has no "
                              "calibrated likelihood (the model's int8 program has none: train it again with "
                              "this tinywarden); remove min_confidence to export this policy to C")


def load_policy(path: str | Path) -> Policy:
    """Read and validate the policy TOML file at ``path``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{p}: cannot read policy ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_policy(text, source=str(p))


def parse_policy(text: str, source: str = "<string>") -> Policy:
    """Validate the policy TOML in ``text``; ``source`` names it in error messages."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not valid TOML ({exc})") from exc
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise PolicyError(f"{source}: not a policy (arrays or tables nested too deeply)") from None
    return _Validator(source).policy(doc)


def parse_action(name: str, doc: Any, critical: Any, source: str = "<string>") -> tuple[ActionSpec, Critical]:
    """One action (``doc``: its table, ``type`` and parameters) and the ``[critical]`` table of its policy, checked as
    :func:`parse_policy` checks them; a :class:`PolicyError` otherwise. For an action of a policy no longer loaded
    that an engine state names (:meth:`~tinywarden.respond.engine.ResponseEngine.adopt_unreverted`).

    >>> spec, crit = parse_action("cap", {"type": "tc_rate_limit", "interface": "eth0", "rate": "1mbit"},
    ...                           {"interfaces": ["eth1"]})
    >>> spec.params["burst"], crit.interfaces
    ('32kbit', ('eth1',))
    """
    v = _Validator(source)
    if not isinstance(critical, Mapping):
        raise v.fail("critical", "must be a table")
    crit = v.critical(critical)
    return v.action(name, doc, crit), crit


def action_doc(spec: ActionSpec, critical: Critical) -> dict[str, Any]:
    """``spec`` and ``critical`` as JSON-able tables that :func:`parse_action` reads back."""
    params = {k: list(v) if isinstance(v, tuple) else v for k, v in spec.params.items()}
    return {"name": spec.name, "action": {"type": spec.type, **params},
            "critical": {"processes": list(critical.processes), "interfaces": list(critical.interfaces),
                         "addresses": list(critical.addresses)}}


class _Validator:
    """Turns a parsed TOML document into a :class:`Policy`; every message names ``source`` and a key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, msg: str) -> PolicyError:
        return PolicyError(f"{self.source}: {key}: {msg}")

    def table(self, doc: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
        value = doc.get(key, {})
        if not isinstance(value, Mapping):
            raise self.fail(path, "must be a table")
        return value

    def unknown(self, doc: Mapping[str, Any], allowed: set[str], path: str) -> None:
        for k in doc:
            if k not in allowed:
                where = f"{path}.{k}" if path else k
                raise self.fail(where, f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def string(self, doc: Mapping[str, Any], key: str, path: str, default: str | None = None) -> str:
        value = doc.get(key, default)
        if value is None:
            raise self.fail(path, "is required")
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, f"must be a non-empty string (got {value!r})")
        return value

    def number(
        self,
        doc: Mapping[str, Any],
        key: str,
        path: str,
        default: float,
        low: float,
        high: float,
        strict: bool = False,
    ) -> float:
        value = doc.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise self.fail(path, f"must be a number (got {value!r})")
        if value < low or (strict and value == low):
            raise self.fail(path, f"must be {'>' if strict else '>='} {low:g} (got {value!r})")
        if value > high:
            limit = str(int(high)) if float(high).is_integer() else f"{high:g}"
            raise self.fail(path, f"must be <= {limit} (got {value!r})")
        return float(value)

    def duration(self, doc: Mapping[str, Any], key: str, path: str, default: float, strict: bool = False) -> float:
        return self.number(doc, key, path, default, 0.0, MAX_DURATION_S, strict=strict)

    def integer(self, doc: Mapping[str, Any], key: str, path: str, default: int, low: int, high: int) -> int:
        value = doc.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(path, f"must be an integer (got {value!r})")
        if not low <= value <= high:
            raise self.fail(path, f"must be an integer in {low}..{high} (got {value})")
        return value

    def strings(self, doc: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
        value = doc.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise self.fail(path, f"must be a list of non-empty strings (got {value!r})")
        if len(set(value)) != len(value):
            raise self.fail(path, "lists a name twice")
        return tuple(value)

    def addresses(self, doc: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
        """The list of addresses/networks at ``key``, each in its one normalised form."""
        try:
            return normalize_networks(self.strings(doc, key, path))
        except ValueError as exc:
            raise self.fail(path, str(exc)) from None

    def ifname(self, text: Any, path: str) -> str:
        if not isinstance(text, str) or not _IFNAME.fullmatch(text) or _IFINDEX.fullmatch(text):
            raise self.fail(path, f"{text!r} is not a valid interface name (1-15 of A-Z a-z 0-9 _ . @ -, "
                            "not ifN, which iproute2 reads as interface index N)")
        return text

    def policy(self, doc: Mapping[str, Any]) -> Policy:
        self.unknown(doc, _TOP_KEYS, "")
        head = self.table(doc, "policy", "policy")
        self.unknown(head, _POLICY_KEYS, "policy")
        name = self.string(head, "name", "policy.name")
        version = self.string(head, "version", "policy.version")
        fs_name = head.get("fail_safe_tier", "none")
        choices = ("none", *TIER_NAMES)
        if fs_name not in choices:
            raise self.fail("policy.fail_safe_tier", f"must be one of {', '.join(choices)} (got {fs_name!r})")
        fault_tolerance = self.integer(
            head, "fault_tolerance", "policy.fault_tolerance", 3, 1, MAX_FAULT_TOLERANCE
        )
        telemetry_timeout = self.duration(
            head, "telemetry_timeout_s", "policy.telemetry_timeout_s", 60.0, strict=True
        )
        watchdog_timeout = self.duration(head, "watchdog_timeout_s", "policy.watchdog_timeout_s", 0.0)

        critical = self.critical(self.table(doc, "critical", "critical"))

        actions_doc = self.table(doc, "actions", "actions")
        actions = tuple(self.action(n, a, critical) for n, a in actions_doc.items())
        self.owners(actions)
        by_name = {a.name: a for a in actions}

        tiers_doc = self.table(doc, "tiers", "tiers")
        self.unknown(tiers_doc, set(TIER_NAMES), "tiers")
        if not tiers_doc:
            raise self.fail("tiers", f"define at least one of tiers.{', tiers.'.join(TIER_NAMES)}")
        tiers = tuple(self.tier(n, tiers_doc.get(n), by_name) for n in TIER_NAMES)
        self.tier_relations(tiers, by_name)
        adaptation = self.adaptation(self.table(doc, "adaptation", "adaptation"))

        fail_safe = choices.index(fs_name)
        if fail_safe and not tiers[fail_safe - 1].actions:
            raise self.fail(
                "policy.fail_safe_tier", f"tier {fs_name!r} has no actions, so it cannot be the fail-safe"
            )
        used = {a for t in tiers for a in t.actions}
        for a in actions:
            if a.name not in used:
                raise self.fail(f"actions.{a.name}", "is defined but no tier runs it")
        return Policy(
            name=name,
            version=version,
            tiers=tiers,  # type: ignore[arg-type]
            actions=actions,
            critical=critical,
            fail_safe_tier=fail_safe,
            fault_tolerance=fault_tolerance,
            telemetry_timeout_s=telemetry_timeout,
            watchdog_timeout_s=watchdog_timeout,
            adaptation=adaptation,
            source=self.source,
        )

    def critical(self, crit_doc: Mapping[str, Any]) -> Critical:
        self.unknown(crit_doc, {"processes", "interfaces", "addresses"}, "critical")
        return Critical(
            processes=self.strings(crit_doc, "processes", "critical.processes"),
            interfaces=tuple(
                self.ifname(i, "critical.interfaces")
                for i in self.strings(crit_doc, "interfaces", "critical.interfaces")
            ),
            addresses=self.addresses(crit_doc, "addresses", "critical.addresses"),
        )

    def adaptation(self, doc: Mapping[str, Any]) -> Adaptation:
        self.unknown(doc, _ADAPTATION_KEYS, "adaptation")
        d = Adaptation()
        enabled = doc.get("enabled", d.enabled)
        below_threshold = doc.get("below_threshold", d.below_threshold)
        adapt_scale = doc.get("adapt_scale", d.adapt_scale)
        for key, flag in (("enabled", enabled), ("below_threshold", below_threshold), ("adapt_scale", adapt_scale)):
            if not isinstance(flag, bool):
                raise self.fail(f"adaptation.{key}", f"must be true or false (got {flag!r})")
        return Adaptation(
            enabled=enabled,
            below_threshold=below_threshold,
            adapt_scale=adapt_scale,
            settle_s=self.number(doc, "settle_s", "adaptation.settle_s", d.settle_s, 0.0, MAX_SETTLE_S),
            settle_rate_shift=self.integer(doc, "settle_rate_shift", "adaptation.settle_rate_shift",
                                           d.settle_rate_shift, 1, MAX_RATE_SHIFT),
            rate_shift=self.integer(doc, "rate_shift", "adaptation.rate_shift", d.rate_shift, 1, MAX_RATE_SHIFT),
            below_confidence=self.number(doc, "below_confidence", "adaptation.below_confidence",
                                         d.below_confidence, 0.0, 1.0, strict=True),
            max_drift=self.number(doc, "max_drift", "adaptation.max_drift", d.max_drift, 0.0, MAX_DRIFT,
                                  strict=True),
            watch_drift=self.number(doc, "watch_drift", "adaptation.watch_drift", d.watch_drift, 0.0, MAX_DRIFT),
            watch_distance=self.number(doc, "watch_distance", "adaptation.watch_distance", d.watch_distance, 0.0,
                                       MAX_DRIFT),
        )

    def action(self, name: str, doc: Any, critical: Critical) -> ActionSpec:
        path = f"actions.{name}"
        if not _NAME.fullmatch(name):
            raise self.fail(
                path, "action names are 1-32 characters of A-Z a-z 0-9 _ - starting with a letter"
            )
        if not isinstance(doc, Mapping):
            raise self.fail(path, "must be a table")
        kind = doc.get("type")
        if not isinstance(kind, str) or kind not in ACTUATOR_TYPES:
            raise self.fail(f"{path}.type", f"must be one of {', '.join(ACTION_TYPES)} (got {kind!r})")
        required, optional = ACTUATOR_TYPES[kind].required, ACTUATOR_TYPES[kind].optional
        self.unknown(doc, {"type", *required, *optional}, path)
        for key in required:
            if key not in doc:
                raise self.fail(f"{path}.{key}", f"is required for type {kind!r}")
        params: dict[str, Any] = {**optional, **{k: v for k, v in doc.items() if k != "type"}}
        if kind == "log":
            params["message"] = self.string(params, "message", f"{path}.message")
        elif kind in ("nft_block_address", "nft_egress_allowlist"):
            key = "addresses" if kind == "nft_block_address" else "allow"
            addrs = self.addresses(params, key, f"{path}.{key}")
            if kind == "nft_block_address":
                if not addrs:
                    raise self.fail(f"{path}.addresses", "must list at least one address")
                for a in addrs:
                    c = critical.network_conflict(a)
                    if c is not None:
                        raise self.fail(
                            f"{path}.addresses", f"{a} overlaps critical address {c}; it must never be blocked"
                        )
            params[key] = addrs
        elif kind in ("tc_rate_limit", "interface_down"):
            iface = self.ifname(params["interface"], f"{path}.interface")
            if iface in critical.interfaces:
                raise self.fail(
                    f"{path}.interface", f"{iface!r} is a critical interface; it must never be touched"
                )
            if kind == "tc_rate_limit":
                problem = tbf_problem(params["rate"], params["burst"])  # what tc itself takes, not just its syntax
                if problem is not None:
                    raise self.fail(f"{path}.{problem[0]}", problem[1])
        elif kind in ("process_suspend", "process_renice"):
            proc = self.string(params, "process", f"{path}.process")
            c = critical.process_conflict(proc)
            if c == proc:
                raise self.fail(
                    f"{path}.process", f"{proc!r} is a critical process; it must never be touched"
                )
            if c is not None:
                raise self.fail(f"{path}.process", f"{proc!r} can be the critical process {c!r}: the kernel keeps "
                                "15 characters of a process name, and a process known by them alone matches both")
            if kind == "process_renice":
                params["nice"] = self.integer(params, "nice", f"{path}.nice", 19, -20, 19)
        return ActionSpec(name=name, type=kind, params=params)

    def owners(self, actions: tuple[ActionSpec, ...]) -> None:
        """Refuse two actions that would hold one thing on the device (an nftables table or iptables chain, an
        interface's root qdisc, a process's stopped state): the second would find it in place and do nothing, and
        its revert would lift the first one's (:attr:`~tinywarden.respond.actuators.catalog.ActuatorType.owns`)."""
        held: dict[str, str] = {}
        for a in actions:
            for thing in ACTUATOR_TYPES[a.type].owns(a.name, a.params):
                if thing in held:
                    raise self.fail(f"actions.{a.name}", f"would hold {thing}, which action {held[thing]!r} holds: "
                                    "the second would do nothing and its revert would undo the first; list one "
                                    "action in several tiers instead (or rename one)")
                held[thing] = a.name

    def tier(self, name: str, doc: Any, actions: Mapping[str, ActionSpec]) -> TierSpec:
        path = f"tiers.{name}"
        if doc is None:
            return TierSpec(name=name)
        if not isinstance(doc, Mapping):
            raise self.fail(path, "must be a table")
        self.unknown(doc, _TIER_KEYS, path)
        names = self.strings(doc, "actions", f"{path}.actions")
        if not names:
            raise self.fail(f"{path}.actions", "must list at least one action (leave the tier out instead)")
        for a in names:
            if a not in actions:
                raise self.fail(f"{path}.actions", f"names undefined action {a!r} (define [actions.{a}])")
        if "consecutive" in doc:
            if "k" in doc or "n" in doc:
                raise self.fail(f"{path}.consecutive", "give either consecutive or k and n, not both")
            k = n = self.integer(doc, "consecutive", f"{path}.consecutive", 1, 1, MAX_WINDOW)
        else:
            k = self.integer(doc, "k", f"{path}.k", 1, 1, MAX_WINDOW)
            n = self.integer(doc, "n", f"{path}.n", k, 1, MAX_WINDOW)  # k alone means k consecutive
            if k > n:
                raise self.fail(f"{path}.k", f"must be <= n ({n}) (got {k})")
        heavy = any(actions[a].heavy for a in names)
        dead_man = self.duration(doc, "dead_man_s", f"{path}.dead_man_s", 0.0)
        if heavy and dead_man <= 0:
            raise self.fail(
                f"{path}.dead_man_s",
                "must be > 0: this tier runs actions that change the device, and each must revert by itself",
            )
        return TierSpec(
            name=name,
            actions=names,
            k=k,
            n=n,
            margin=self.number(doc, "margin", f"{path}.margin", 0.0, 0.0, MAX_MARGIN),
            min_dwell_s=self.duration(doc, "min_dwell_s", f"{path}.min_dwell_s", 0.0),
            deescalate_after_s=self.duration(
                doc, "deescalate_after_s", f"{path}.deescalate_after_s", 300.0, strict=True
            ),
            dead_man_s=dead_man,
            min_confidence=(self.number(doc, "min_confidence", f"{path}.min_confidence", 0.0, 0.0, 1.0)
                            if "min_confidence" in doc else None),
        )

    def tier_relations(self, tiers: tuple[TierSpec, ...], actions: Mapping[str, ActionSpec]) -> None:
        # A gap (e.g. alert and harden without constrain) would make escalation jump a level, which
        # the one-step-at-a-time engine cannot do.
        present = [bool(t.actions) for t in tiers]
        for i in range(1, len(tiers)):
            if present[i] and not present[i - 1]:
                raise self.fail(
                    f"tiers.{tiers[i].name}", f"needs tiers.{tiers[i - 1].name} to be defined too"
                )
        # An action may be listed by several tiers (the engine holds it while any of them is active), but a
        # tier must bring one of its own: otherwise entering it would change nothing on the device.
        below: set[str] = set()
        for t in tiers:
            if t.actions and set(t.actions) <= below:
                raise self.fail(
                    f"tiers.{t.name}.actions",
                    "every action is already run by a lower tier, so entering this tier would change nothing; "
                    "add an action of its own or leave the tier out",
                )
            below.update(t.actions)
        alert = tiers[0]
        for lower, upper in zip(tiers, tiers[1:], strict=False):
            if upper.actions and upper.margin < lower.margin:
                raise self.fail(
                    f"tiers.{upper.name}.margin",
                    f"must be >= tiers.{lower.name}.margin ({lower.margin:g}): higher tiers need more "
                    "confidence",
                )
        for t in tiers[1:]:
            if any(actions[a].heavy for a in t.actions) and t.margin <= alert.margin:
                raise self.fail(
                    f"tiers.{t.name}.margin",
                    f"must be > tiers.alert.margin ({alert.margin:g}): actions that change the device need a "
                    "higher score margin than alerts",
                )

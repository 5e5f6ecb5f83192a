"""The ``tinywarden agent`` command, light: argparse and plain output, no typer, rich or pydantic.

The agent is what runs on a gateway for months, so its command pays only for what it uses: the full CLI
(typer, rich and the pydantic that typer brings, about 20 MB resident) is never imported when the first
argument is ``agent`` (:mod:`tinywarden.entry` dispatches here first), and paho is imported only with
``--mqtt``. ``tinywarden agent`` under the full CLI (``tinywarden.cli``) forwards its arguments here, so
the options are defined once, in :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tinywarden.errors import ConfigError, TinywardenError, missing_extra

if TYPE_CHECKING:
    from tinywarden.agent.loop import Agent

__all__ = ["build_parser", "main", "parse_channel_map", "parse_host_port", "run"]

#: What ``tinywarden --help`` lists for the command (its first line) and ``agent --help`` shows.
DESCRIPTION = "Monitor this device: score telemetry, respond by policy, audit, escalate, hot-swap new bundles."


#: The signals that stop the agent cleanly (after the sample in hand, audited and with a final status).
_STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP")


def parse_host_port(text: str, option: str, default_port: int) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT`` or ``[V6]:PORT`` -> (host, port); a bad value names the option.

    >>> parse_host_port("broker.lan:8883", "--mqtt", 1883), parse_host_port("[::1]", "--mqtt", 1883)
    (('broker.lan', 8883), ('::1', 1883))
    """
    host, port = text.strip(), str(default_port)
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            raise ConfigError(f"{option} {text!r}: unclosed '[' in an IPv6 address")
        host, rest = host[1:end], host[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ConfigError(f"{option} {text!r}: expected [ADDRESS]:PORT")
            port = rest[1:]
    elif host.count(":") == 1:
        host, port = host.split(":")
    if not host:
        raise ConfigError(f"{option} {text!r}: no host")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{option} {text!r}: port must be 1-65535")
    return host, int(port)


def parse_channel_map(items: Sequence[str]) -> dict[str, str]:
    """``MODEL=SOURCE`` items of ``--map`` as a dict (model channel -> source channel); a model channel mapped
    to two source channels is refused. Whether the channels exist is checked against the model and the source
    (:func:`~tinywarden.agent.sources.channel_indices`).

    >>> parse_channel_map(["cpu=cpu_pct", " mem = mem_pct"])
    {'cpu': 'cpu_pct', 'mem': 'mem_pct'}
    """
    out: dict[str, str] = {}
    for item in items:
        model, sep, source = (part.strip() for part in item.partition("="))
        if not sep or not model or not source:
            raise ConfigError(f"--map {item!r}: expected MODEL_CHANNEL=SOURCE_CHANNEL")
        if out.get(model, source) != source:
            raise ConfigError(f"--map {item!r}: {model} is already mapped to {out[model]}")
        out[model] = source
    return out


def build_parser() -> argparse.ArgumentParser:
    """The agent's options: the one definition both entry points use."""
    ap = argparse.ArgumentParser(prog="tinywarden agent", description=DESCRIPTION)
    add = ap.add_argument
    add("--pubkey", type=Path, required=True, help="Provisioned public key of this device (PEM).")
    add("--state-dir", type=Path, required=True, help="Device state: trust, installed bundle, spool.")
    add("--bundle", type=Path, help="Bundle to install and run; watched for newer versions while running.")
    add("--policy", type=Path, help="Response policy overriding the bundle's.")
    add("--replay", type=Path, help="Recorded telemetry (CSV/Parquet file or recording folder) to run through "
        "the loop instead of live.")
    add("--drop-unordered", action="store_true", help="With --replay: drop rows whose timestamp is not later than "
        "every row before them (as train, score and evaluate do), instead of refusing the file.")
    add("--rate", type=float, default=1.0, help="Live sampling rate in Hz (default 1).")
    add("--interface", action="append", default=[], help="Network interface to sample (repeatable).")
    add("--map", dest="channel_map", action="append", default=[],
        help="MODEL_CHANNEL=SOURCE_CHANNEL when the names differ (repeatable; each model channel reads a source "
        "channel of its own).")
    add("--max-samples", type=int, help="Stop after this many samples.")
    add("--status", type=Path, help="Status file (default STATE_DIR/status.json).")
    add("--audit", type=Path, help="Audit log (default STATE_DIR/audit.log).")
    add("--audit-key", type=Path, default=os.environ.get("TINYWARDEN_AUDIT_KEY") or None,
        help="Key file of the audit log (default STATE_DIR/keys/audit.key, made 0600 if missing; "
        "env TINYWARDEN_AUDIT_KEY).")
    add("--device-id", help="Device id (default: host name).")
    add("--mqtt", help="Escalate incidents to this broker, HOST[:PORT].")
    add("--tls-ca", type=Path, help="CA bundle: talk TLS to the broker.")
    add("--tls-cert", type=Path, help="Client certificate for the broker.")
    add("--tls-key", type=Path, help="Client key for the broker.")
    add("--escalate-tier", type=int, default=1, help="Publish incidents at or above this tier (default 1).")
    add("--escalate-confidence", type=float, default=0.0,
        help="Publish incidents at or above this calibrated confidence (0-1, the likelihood scale of "
        "`score`'s confidence column: 0.5 = tail probability 1e-5, 0.2 = 1e-2).")
    add("--spool-max", type=int, default=1000, help="Incidents kept on disk while the broker is away.")
    add("--syslog", help="Also send CEF lines to this syslog HOST[:PORT] (UDP).")
    add("--poll", type=float, default=30.0, help="Seconds between checks for a new bundle (default 30).")
    add("--drain", type=float, default=5.0, help="Replay: seconds to wait at the end for spooled incidents.")
    add("--real-actuators", action="store_true", help="Carry out the policy's actions (default: dry run, audited).")
    add("--runtime", default="native", choices=("native", "int8", "float"),
        help="native (default): the model's int8 program as C built on this host (needs a C compiler; the "
        "agent then imports no numpy; without one it falls back to int8 with a notice); int8: the same program "
        "interpreted with numpy; float: the float pipeline (loads torch/scikit-learn).")
    return ap


def run(args: argparse.Namespace) -> Agent:
    """Run the agent as ``args`` say until the source ends, ``--max-samples`` or SIGTERM, SIGINT or SIGHUP (each
    ends the loop after the sample in hand); the agent after."""
    from tinywarden import bundle as tb
    from tinywarden.agent.config import AgentConfig, EscalationConfig
    from tinywarden.agent.escalate import BrokerConfig, EscalationPolicy, SyslogSink, TlsConfig
    from tinywarden.agent.loop import session
    from tinywarden.agent.sources import LiveSource, ReplaySource, open_source
    from tinywarden.respond import load_policy

    if args.max_samples is not None and args.max_samples < 1:
        raise ConfigError(f"--max-samples must be >= 1, got {args.max_samples}")
    escalation = None
    if args.mqtt is not None:
        if (args.tls_cert or args.tls_key) and not args.tls_ca:
            raise ConfigError("--tls-cert and --tls-key need --tls-ca (without it the broker gets plaintext)")
        if args.tls_key and not args.tls_cert:
            raise ConfigError("--tls-key needs --tls-cert (the client certificate it goes with)")
        host, port = parse_host_port(args.mqtt, "--mqtt", 8883 if args.tls_ca else 1883)
        tls = None
        if args.tls_ca:
            tls = TlsConfig(str(args.tls_ca), str(args.tls_cert) if args.tls_cert else None,
                            str(args.tls_key) if args.tls_key else None)  # fmt: skip
        sink = SyslogSink(*parse_host_port(args.syslog, "--syslog", 514)) if args.syslog else None
        escalation = EscalationConfig(
            BrokerConfig(host=host, port=port, tls=tls),
            EscalationPolicy(min_tier=args.escalate_tier, min_confidence=args.escalate_confidence),
            spool_max=args.spool_max,
            syslog=sink,
        )
    elif args.syslog or args.tls_ca or args.tls_cert or args.tls_key:
        raise ConfigError("--syslog and --tls-ca/--tls-cert/--tls-key need --mqtt (escalation is off without a broker)")

    if args.drop_unordered and args.replay is None:
        raise ConfigError("--drop-unordered needs --replay (live samples are taken in order)")
    source = open_source(args.replay, args.rate, args.interface, lists=args.runtime == "native",
                         drop_unordered=args.drop_unordered)
    extra = {"device_id": args.device_id} if args.device_id else {}
    config = AgentConfig(
        pubkey=tb.load_public_key(args.pubkey),
        state_dir=args.state_dir,
        bundle_path=args.bundle,
        policy_override=load_policy(args.policy) if args.policy is not None else None,
        status_path=args.status,
        audit_path=args.audit,
        audit_key_path=args.audit_key,
        channel_map=parse_channel_map(args.channel_map),
        poll_interval_s=args.poll,
        real_actuators=args.real_actuators,
        escalation=escalation,
        runtime=args.runtime,
        **extra,  # type: ignore[arg-type]
    )
    with session(config, source, drain_s=args.drain) as runner:
        m = runner.model
        print(f"agent {config.device_id}: model {m.bundle.model_id} v{m.bundle.version} "
              f"({len(m.pipeline.channels_)} channels, window {m.pipeline.window}, {m.describe()['runtime']} "
              f"runtime) on {source.name}; status {runner.status_path}", flush=True)  # fmt: skip
        for line in m.policy.advice:
            print(f"agent {config.device_id}: advice: {line}", flush=True)
        # Every stop signal only asks the loop to end after the current sample: SIGINT's KeyboardInterrupt could
        # land between the engine's step and its action (a tier entered, its action neither run nor audited), and
        # SIGHUP's default (a closed terminal) ended the process with no agent_stop record and no final status.
        stops = [getattr(signal, name) for name in _STOP_SIGNALS if hasattr(signal, name)]
        def stop(*_: object) -> None:
            runner.stop()
            if isinstance(source, LiveSource):
                source.wake()  # the stop takes effect after one more sample, not after a whole period

        previous = {sig: signal.signal(sig, stop) for sig in stops}
        try:
            runner.run(source, args.max_samples)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if isinstance(source, ReplaySource):
        for note in source.notes(runner.samples_seen):
            print(f"note: {source.name}: {note}", file=sys.stderr, flush=True)
    return runner


def summary(runner: Agent) -> str:
    """The closing summary: one ``name: value`` line per item of the agent's status."""
    s = runner.status()
    f = s["faults"]
    rows = [
        ("model", f"{s['model']['id']} v{s['model']['version']}"),
        ("samples / windows", f"{s['samples_seen']} / {s['windows_scored']}"),
        ("tier now", f"{s['tier']} ({s['tier_name']})"),
        ("incidents", str(s["incidents"])),
        ("bundle swaps / refused", f"{s['bundles']['swaps']} / {s['bundles']['refused']}"),
        ("model faults", str(f["model_faults"])),
        ("fail-safe guard", f"{f['guard']}; {f['guarded_windows']} window(s) judged, "
                            f"{f['guard_violations']} violation(s)"),  # fmt: skip
    ]
    if s["escalation"] is not None:
        e = s["escalation"]
        rows.append(("escalation", f"{e['delivered']} delivered, {e['spooled']} spooled, {e['dropped']} dropped"))
        if e["spooled"] and e["last_error"]:
            rows.append(("broker", e["last_error"]))
    rows.append(("audit log", str(runner.audit.path)))
    width = max(len(name) for name, _ in rows)
    return "\n".join([f"agent {s['device_id']} ({s['mode']})", *(f"  {n:<{width}}  {v}" for n, v in rows)])


def main(argv: Sequence[str] | None = None) -> int:
    """``tinywarden agent ARGS``: exit status 0, or 2 with one ``error:`` line for a usage or input error."""
    args = build_parser().parse_args(argv)
    try:
        runner = run(args)
    except TinywardenError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    except ModuleNotFoundError as exc:  # --runtime float on a runtime-only install
        message = missing_extra(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr, flush=True)
        return 2
    print(summary(runner), flush=True)
    return 0

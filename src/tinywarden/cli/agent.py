"""The ``agent`` command: run the on-device monitoring loop, live or over recorded telemetry."""

from __future__ import annotations

import signal
from pathlib import Path

import typer
from rich.table import Table

from tinywarden.cli.app import app, console
from tinywarden.errors import ConfigError


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


def parse_channel_map(items: list[str]) -> dict[str, str]:
    """``MODEL=SOURCE`` items of ``--map`` as a dict (model channel -> source channel)."""
    out: dict[str, str] = {}
    for item in items:
        model, sep, source = item.partition("=")
        if not sep or not model.strip() or not source.strip():
            raise ConfigError(f"--map {item!r}: expected MODEL_CHANNEL=SOURCE_CHANNEL")
        out[model.strip()] = source.strip()
    return out


@app.command()
def agent(
    pubkey: Path = typer.Option(..., "--pubkey", help="Provisioned public key of this device (PEM)."),
    state_dir: Path = typer.Option(..., "--state-dir", help="Device state: trust, installed bundle, spool."),
    bundle: Path | None = typer.Option(
        None, "--bundle", help="Bundle to install and run; watched for newer versions while running."
    ),
    policy: Path | None = typer.Option(None, "--policy", help="Response policy overriding the bundle's."),
    replay: Path | None = typer.Option(
        None, "--replay", help="Recorded telemetry (CSV/Parquet) to run through the loop instead of live."
    ),
    rate: float = typer.Option(1.0, "--rate", help="Live sampling rate in Hz."),
    interface: list[str] = typer.Option([], "--interface", help="Network interface to sample (repeatable)."),  # noqa: B008
    channel_map: list[str] = typer.Option(  # noqa: B008
        [], "--map", help="MODEL_CHANNEL=SOURCE_CHANNEL when the names differ (repeatable)."
    ),
    max_samples: int | None = typer.Option(None, "--max-samples", help="Stop after this many samples."),
    status: Path | None = typer.Option(None, "--status", help="Status file (default STATE_DIR/status.json)."),
    audit: Path | None = typer.Option(None, "--audit", help="Audit log (default STATE_DIR/audit.log)."),
    audit_key: Path | None = typer.Option(
        None, "--audit-key", envvar="TINYWARDEN_AUDIT_KEY",
        help="Key file of the audit log (default STATE_DIR/keys/audit.key, made 0600 if missing).",
    ),
    device_id: str | None = typer.Option(None, "--device-id", help="Device id (default: host name)."),
    mqtt: str | None = typer.Option(None, "--mqtt", help="Escalate incidents to this broker, HOST[:PORT]."),
    tls_ca: Path | None = typer.Option(None, "--tls-ca", help="CA bundle: talk TLS to the broker."),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="Client certificate for the broker."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="Client key for the broker."),
    escalate_tier: int = typer.Option(1, "--escalate-tier", help="Publish incidents at or above this tier."),
    escalate_confidence: float = typer.Option(
        0.0, "--escalate-confidence",
        help="Publish incidents at or above this calibrated confidence (0-1, the likelihood scale of "
        "`score`'s confidence column: 0.5 = tail probability 1e-5, 0.2 = 1e-2)."
    ),
    spool_max: int = typer.Option(1000, "--spool-max", help="Incidents kept on disk while the broker is away."),
    syslog: str | None = typer.Option(None, "--syslog", help="Also send CEF lines to this syslog HOST[:PORT] (UDP)."),
    poll: float = typer.Option(30.0, "--poll", help="Seconds between checks for a new bundle."),
    drain: float = typer.Option(5.0, "--drain", help="Replay: seconds to wait at the end for spooled incidents."),
    real_actuators: bool = typer.Option(
        False, "--real-actuators", help="Carry out the policy's actions (default: dry run, audited)."
    ),
    runtime: str = typer.Option(
        "int8", "--runtime", help="int8: score with the model's int8 program, numpy only (light; no baseline "
        "adaptation); float: the float pipeline (loads torch/scikit-learn)."
    ),
) -> None:
    """Monitor this device: score telemetry, respond by policy, audit, escalate, hot-swap new bundles."""
    from tinywarden import bundle as tb
    from tinywarden.agent.config import AgentConfig, EscalationConfig
    from tinywarden.agent.escalate import BrokerConfig, EscalationPolicy, SyslogSink, TlsConfig
    from tinywarden.agent.loop import session
    from tinywarden.agent.sources import open_source
    from tinywarden.respond import load_policy

    if max_samples is not None and max_samples < 1:
        raise ConfigError(f"--max-samples must be >= 1, got {max_samples}")
    escalation = None
    if mqtt is not None:
        host, port = parse_host_port(mqtt, "--mqtt", 8883 if tls_ca else 1883)
        tls = TlsConfig(str(tls_ca), str(tls_cert) if tls_cert else None, str(tls_key) if tls_key else None) \
            if tls_ca else None  # fmt: skip
        sink = SyslogSink(*parse_host_port(syslog, "--syslog", 514)) if syslog else None
        escalation = EscalationConfig(
            BrokerConfig(host=host, port=port, tls=tls),
            EscalationPolicy(min_tier=escalate_tier, min_confidence=escalate_confidence),
            spool_max=spool_max,
            syslog=sink,
        )
    elif syslog or tls_ca:
        raise ConfigError("--syslog and --tls-ca need --mqtt (escalation is off without a broker)")

    source = open_source(replay, rate, interface)
    extra = {"device_id": device_id} if device_id else {}
    config = AgentConfig(
        pubkey=tb.load_public_key(pubkey),
        state_dir=state_dir,
        bundle_path=bundle,
        policy_override=load_policy(policy) if policy is not None else None,
        status_path=status,
        audit_path=audit,
        audit_key_path=audit_key,
        channel_map=parse_channel_map(channel_map),
        poll_interval_s=poll,
        real_actuators=real_actuators,
        escalation=escalation,
        runtime=runtime,
        **extra,  # type: ignore[arg-type]
    )
    with session(config, source, drain_s=drain) as runner:
        m = runner.model
        console.print(
            f"agent [bold]{config.device_id}[/]: model {m.bundle.model_id} v{m.bundle.version} "
            f"({len(m.pipeline.channels_)} channels, window {m.pipeline.window}, {m.describe()['runtime']} runtime) "
            f"on {source.name}; "
            f"status {runner.status_path}",
            highlight=False,
        )
        previous = signal.signal(signal.SIGTERM, lambda *_: runner.stop())
        try:
            runner.run(source, max_samples)
        except KeyboardInterrupt:
            console.print("interrupted; stopping")
        finally:
            signal.signal(signal.SIGTERM, previous)
    _summary(runner)


def _summary(runner: object) -> None:
    from tinywarden.agent.loop import Agent

    assert isinstance(runner, Agent)
    s = runner.status()
    t = Table(title=f"agent {s['device_id']} ({s['mode']})", show_header=False)
    t.add_row("model", f"{s['model']['id']} v{s['model']['version']}")
    t.add_row("samples / windows", f"{s['samples_seen']} / {s['windows_scored']}")
    t.add_row("tier now", f"{s['tier']} ({s['tier_name']})")
    t.add_row("incidents", str(s["incidents"]))
    t.add_row("bundle swaps / refused", f"{s['bundles']['swaps']} / {s['bundles']['refused']}")
    t.add_row("model faults", str(s["faults"]["model_faults"]))
    f = s["faults"]
    t.add_row("fail-safe guard", f"{f['guard']}; {f['guarded_windows']} window(s) judged, "
                                 f"{f['guard_violations']} violation(s)")  # fmt: skip
    if s["escalation"] is not None:
        e = s["escalation"]
        t.add_row("escalation", f"{e['delivered']} delivered, {e['spooled']} spooled, {e['dropped']} dropped")
        if e["spooled"] and e["last_error"]:
            t.add_row("broker", e["last_error"])
    t.add_row("audit log", str(runner.audit.path))
    console.print(t)

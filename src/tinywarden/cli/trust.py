"""Fleet trust commands: keygen, bundle, sign, verify, install."""

from __future__ import annotations

import hashlib
from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from tinywarden import bundle as tb
from tinywarden.cli.app import app, console, print_advice, show


@app.command()
def keygen(
    out: Path = typer.Option(..., "--out", help="Path prefix: writes PREFIX.key (0600) and PREFIX.pub."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing key files."),
) -> None:
    """Create an Ed25519 signing key pair for bundles."""
    priv, pub = tb.write_keypair(out, force=force)
    fp = tb.fingerprint(tb.load_public_key(pub))
    show(f"wrote {priv} (keep secret) and {pub}; fingerprint {fp[:16]}…")


@app.command("bundle")
def bundle_create(
    model: Path = typer.Argument(..., help="Fitted model file (.twb from `tinywarden train`)."),
    policy: Path = typer.Option(..., "--policy", help="Response policy (TOML)."),
    out: Path = typer.Option(..., "--out", help="Unsigned bundle to write."),
    model_id: str = typer.Option(..., "--model-id", help="Model identifier recorded in the metadata."),
    profile: str = typer.Option(..., "--profile", help="Target device profile."),
    data: Path | None = typer.Option(
        None, "--data", help="Training data summary file; its SHA-256 goes into the metadata."
    ),
    rebaseline: bool = typer.Option(
        False, "--rebaseline", help="Order devices to reset their adapted baseline to this bundle's reference "
        "(and clear the drift flag) when they install it; signed with the bundle."
    ),
) -> None:
    """Pack a model and its policy into an unsigned bundle (sign it with `tinywarden sign`).

    The model and policy are checked first, as `install` checks them, so a bundle every device would refuse is
    never signed."""
    from tinywarden.payload import check_model, check_policy
    from tinywarden.respond.policy import PolicyError, parse_policy

    meta: dict[str, object] = {"model_id": model_id, "profile": profile}
    if rebaseline:
        meta["rebaseline"] = True
    if data is not None:
        meta["training_data_sha256"] = hashlib.sha256(tb.read_file(data, "training data")).hexdigest()
    policy_bytes = tb.read_file(policy, "policy")
    try:
        text = policy_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{policy}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    print_advice(parse_policy(text, source=str(policy)))
    model_bytes = tb.read_file(model, "model")
    check_policy(policy_bytes, float(check_model(model_bytes, str(model)).threshold_), source=str(policy))
    raw = tb.create_bundle(model_bytes, policy_bytes, meta)
    tb.write_file(out, raw)
    show(f"wrote unsigned bundle {out} ({len(raw)} bytes)")


@app.command()
def sign(
    bundle: Path = typer.Argument(..., help="Bundle to sign (rewritten in place unless --out)."),
    key: Path = typer.Option(..., "--key", help="Private key (PREFIX.key from keygen)."),
    version: int = typer.Option(..., "--version", help="Bundle version, >= 1; devices refuse lower ones."),
    rotate_to: Path | None = typer.Option(
        None, "--rotate-to", help="New public key: installing this bundle hands trust to it."
    ),
    out: Path | None = typer.Option(None, "--out", help="Write the signed bundle here instead."),
) -> None:
    """Sign a bundle with a version number (replacing any earlier signature)."""
    priv = tb.load_private_key(key)
    new_key = tb.load_public_key(rotate_to) if rotate_to is not None else None
    signed = tb.sign_bundle(
        tb.read_file(bundle, "bundle"), priv, version=version, rotate_to=new_key, source=str(bundle)
    )
    dest = out or bundle
    tb.write_file(dest, signed)
    extra = f", rotates trust to {tb.fingerprint(new_key)[:16]}…" if new_key else ""
    show(f"signed {dest} as version {version}{extra}")


COUNTER_HELP = (
    "Anti-rollback counter: 'file' (trust.json, the default), an entry point of group "
    f"'{tb.COUNTER_GROUP}', or module:factory. Default: ${tb.COUNTER_ENV}, else 'file'."
)


@app.command()
def verify(
    bundle: Path = typer.Argument(..., help="Bundle to check."),
    pubkey: Path = typer.Option(..., "--pubkey", help="Trusted public key (PEM)."),
    state_dir: Path | None = typer.Option(
        None, "--state-dir", help="Device state directory: also refuse versions older than the accepted one."
    ),
    counter: str | None = typer.Option(None, "--counter", help=COUNTER_HELP),
) -> None:
    """Exit 0 only if the bundle is authentic (and, with --state-dir, not a rollback)."""
    ctr = tb.load_counter(counter, state_dir) if state_dir is not None else None
    b = tb.load_verified_bundle(bundle, tb.load_public_key(pubkey), state_dir, counter=ctr)
    console.print(_describe(b, "[green]authentic[/]"))


@app.command()
def install(
    bundle: Path = typer.Argument(..., help="Bundle to install."),
    pubkey: Path = typer.Option(..., "--pubkey", help="Provisioned public key of this device (PEM)."),
    state_dir: Path = typer.Option(..., "--state-dir", help="Device state directory."),
    counter: str | None = typer.Option(None, "--counter", help=COUNTER_HELP),
) -> None:
    """Verify a bundle, load its model and policy, and record it as this device's accepted version.

    Nothing changes unless the model and policy load as the agent will run them. Installing the
    accepted bundle again changes nothing; another bundle with the accepted version is refused.
    """
    from tinywarden.respond.policy import parse_policy

    before = tb.read_state(state_dir)
    b, state = tb.install_bundle(bundle, tb.load_public_key(pubkey), state_dir,
                                 counter=tb.load_counter(counter, state_dir))  # fmt: skip
    fresh = before is None or before.bundle_sha256 != b.digest
    console.print(_describe(b, "[green]installed[/]" if fresh else "already installed (nothing changed)"))
    print_advice(parse_policy(b.policy.decode("utf-8"), source=f"{bundle} (policy section)"))  # loaded above
    console.print(
        f"accepted version is now {state.accepted_version}; trusted key {state.key_fingerprint[:16]}…",
        highlight=False,
    )


def _describe(b: tb.Bundle, status: str) -> Table:
    # the bundle's path and its metadata (inspect reads bundles not yet trusted) are shown as text, never markup
    t = Table(title=Text(f"{b.source}: {status}"), show_header=False)
    t.add_row("model id", Text(b.model_id))
    t.add_row("version", str(b.version))
    t.add_row("profile", Text(b.profile))
    t.add_row("created at", Text(b.created_at))
    t.add_row("training data sha256", str(b.metadata.get("training_data_sha256")))
    t.add_row("model bytes", str(len(b.model)))
    t.add_row("policy bytes", str(len(b.policy)))
    t.add_row("bundle sha256", b.digest)
    t.add_row("signed by", (b.signer_fingerprint or "-")[:16] + "…")
    if b.rotate_to is not None:
        t.add_row("rotates trust to", tb.fingerprint(b.rotate_to)[:16] + "…")
    if b.rebaseline:
        t.add_row("re-baseline", "yes: installing devices reset their adapted baseline to this bundle's reference")
    return t

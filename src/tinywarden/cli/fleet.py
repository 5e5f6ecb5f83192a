"""``tinywarden fleet``: train, sign and report a per-device baseline for every device of a fleet, on Dask."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from tinywarden.cli.app import app, err_console, say, show
from tinywarden.cli.core import EXAMPLE_POLICY

fleet_app = typer.Typer(help="Fleet scale: per-device baselines on a Dask cluster, signed and reported.",
                        no_args_is_help=True)
app.add_typer(fleet_app, name="fleet")

@fleet_app.command("train")
def fleet_train(
    root: Annotated[Path, typer.Argument(help="Fleet dataset folder (from `tinywarden simulate --fleet`)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the signed bundles and their summaries")],
    key: Annotated[Path, typer.Option("--key", help="Private signing key (PREFIX.key from `tinywarden keygen`)")],
    policy: Annotated[Path, typer.Option(help="Response policy (TOML) packed into every bundle")] = EXAMPLE_POLICY,
    model: Annotated[str, typer.Option(help="Detector family for plain training")] = "pca",
    window: Annotated[int, typer.Option(help="Samples per window (plain training)")] = 32,
    stride: Annotated[int, typer.Option(help="Samples between window starts (plain training)")] = 16,
    tune: Annotated[bool, typer.Option("--tune", help="Search each device's pipeline under --flash/--ram")] = False,
    flash: Annotated[str, typer.Option(help="Flash budget with --tune, e.g. 8KB")] = "8KB",
    ram: Annotated[str, typer.Option(help="RAM budget with --tune, e.g. 4KB")] = "4KB",
    trials: Annotated[int, typer.Option(help="Candidates built and measured per device with --tune")] = 8,
    scheduler: Annotated[str | None, typer.Option(help="A running Dask scheduler, e.g. tcp://host:8786")] = None,
    workers: Annotated[int | None, typer.Option(help="Local cluster workers (default: one per core)")] = None,
    cold_start: Annotated[Path | None, typer.Option(
        "--cold-start", help="Folder of profile-<name>.twb from `fleet coldstart`: devices with too little own "
        "normal get their profile's model")] = None,
    min_own_rows: Annotated[int, typer.Option(help="With --cold-start: attack-free rows a device needs for a model "
                                              "of its own")] = 8640,
) -> None:
    """Per device: train on its attack-free span (the rows before the manifest's train_until, without labels),
    quantize, size, bundle and sign with the device's next version."""
    from tinywarden.bundle import load_private_key, read_file
    from tinywarden.fleet.device import TrainOptions
    from tinywarden.fleet.run import fleet_client, run_fleet
    from tinywarden.tune import parse_bytes

    signing_key = load_private_key(key)
    from tinywarden.respond.policy import load_policy

    load_policy(policy)  # refuse a bad policy before any training
    policy_bytes = read_file(policy, "policy")
    profile_models = {}
    if cold_start is not None:
        profile_models = {p.stem.removeprefix("profile-"): read_file(p, "cold-start model")
                          for p in sorted(cold_start.glob("profile-*.twb"))}
        if not profile_models:
            from tinywarden.errors import ConfigError

            raise ConfigError(f"--cold-start {cold_start}: no profile-*.twb (write them with `fleet coldstart`)")
    options = TrainOptions(model=model, window=window, stride=stride, tune=tune,
                           flash=parse_bytes(flash, "--flash"), ram=parse_bytes(ram, "--ram"), trials=trials,
                           profile_models=profile_models, min_own_rows=min_own_rows)
    with fleet_client(scheduler, workers) as client, Progress(
            TextColumn("fleet"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console) as bar:
        task = bar.add_task("", total=None)

        def tick(done: int, failed: int, remaining: int, device_id: str) -> None:
            bar.update(task, completed=done + failed, total=done + failed + remaining,
                       description=f"done {done}  failed {failed}  remaining {remaining}  ({device_id})")

        run = run_fleet(root, out, signing_key, policy_bytes, client, options, progress=tick)
    for _device, error in sorted(run.failed.items()):
        say("failed", error)
    show(f"{len(run.done)} device(s) trained and signed, {len(run.skipped)} already done, "
         f"{len(run.failed)} failed, in {run.seconds:.1f} s on {run.workers} worker(s); bundles in {out}")
    if run.failed:
        raise typer.Exit(1)


@fleet_app.command("report")
def fleet_report(
    bundles: Annotated[Path, typer.Argument(help="Folder written by `tinywarden fleet train`")],
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML page to write")] = Path("fleet-report.html"),
    json_out: Annotated[Path | None, typer.Option("--json", help="JSON summary (default: next to --out)")] = None,
    confidence: Annotated[float, typer.Option(help="The one fleet-wide threshold on the calibrated confidence")] = (
        0.999),
) -> None:
    """One self-contained HTML page (plots embedded) and a JSON summary of a trained fleet."""
    from tinywarden.fleet.report import write_report

    summary = write_report(bundles, out, json_out or out.with_suffix(".json"), confidence)
    stale = len(summary["stale"])
    show(f"wrote {out} and {json_out or out.with_suffix('.json')}: {summary['devices']} device(s)"
         + (f" ({stale} from an earlier run's bundle: the last run failed them)" if stale else "")
         + f", {summary['failed']} failed")


def simulate_fleet(n: int, days: float, seed: int, period: float, out: Path, profile: str | None) -> None:
    """``tinywarden simulate --fleet N``: the fleet dataset and its manifest (see :mod:`tinywarden.fleet.dataset`)."""
    from tinywarden.errors import ConfigError
    from tinywarden.fleet.dataset import write_fleet

    if profile is not None:
        raise ConfigError("--profile: a fleet mixes every profile; leave --profile out with --fleet")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: with --fleet, --out is a folder")
    with Progress(TextColumn("simulating"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=err_console, transient=True) as bar:
        task = bar.add_task("", total=n)
        manifest = write_fleet(out, n, days, seed, period, progress=lambda i, _n: bar.update(task, completed=i))
    attacked = sum(d.attacked for d in manifest.devices)
    updated = sum(d.firmware_update_day is not None for d in manifest.devices)
    show(f"wrote {n} devices x {days:g} days to {out} (Parquet, partitioned by device_id) and "
         f"{out / 'manifest.json'}: {attacked} attacked, {updated} with a firmware update")


@fleet_app.command("coldstart")
def fleet_coldstart(
    root: Annotated[Path, typer.Argument(help="Fleet dataset folder (from `tinywarden simulate --fleet`)")],
    bundles: Annotated[Path, typer.Argument(help="Folder written by `tinywarden fleet train` (own models)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for profile-<name>.twb and coldstart.json")],
    model: Annotated[str, typer.Option(help="Detector family (as fleet train)")] = "pca",
    window: Annotated[int, typer.Option(help="Samples per window (as fleet train)")] = 32,
    stride: Annotated[int, typer.Option(help="Samples between window starts (as fleet train)")] = 16,
    max_devices: Annotated[int, typer.Option(help="Devices per profile model (at most half the profile's)")] = 8,
    scheduler: Annotated[str | None, typer.Option(help="A running Dask scheduler, e.g. tcp://host:8786")] = None,
    workers: Annotated[int | None, typer.Option(help="Local cluster workers (default: one per core)")] = None,
) -> None:
    """Per profile: a model across its devices (for a device without enough own normal), and its measured cost
    against the devices' own models (false alarms per day, detection) on devices that did not train it."""
    import json

    from tinywarden.fileio import atomic_write
    from tinywarden.fleet.coldstart import cold_start
    from tinywarden.fleet.device import TrainOptions
    from tinywarden.fleet.manifest import read_manifest
    from tinywarden.fleet.run import fleet_client

    manifest = read_manifest(root)
    options = TrainOptions(model=model, window=window, stride=stride)
    with fleet_client(scheduler, workers) as client:
        result, models = cold_start(root, bundles, manifest, client, options, max_devices)
    out.mkdir(parents=True, exist_ok=True)
    for profile, data in models.items():
        atomic_write(out / f"profile-{profile}.twb", data)
    atomic_write(out / "coldstart.json", json.dumps(result, indent=1, sort_keys=True) + "\n")
    for profile, r in result["profiles"].items():
        if "skipped" in r:
            show(f"{profile}: no profile model ({r['skipped']})")
            continue
        show(f"{profile}: trained on {len(r['trained_on'])} device(s), compared on {r['devices_compared']}: "
             f"false alarms/day own {_fmt(r['own_false_alarms_per_day'])} vs profile "
             f"{_fmt(r['profile_false_alarms_per_day'])}; attacks detected own {r['own_detected']} vs "
             f"profile {r['profile_detected']} of {r['incidents']}")


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"

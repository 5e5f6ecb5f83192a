"""The ``simulate`` command: write labelled synthetic device telemetry to CSV or Parquet."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer
from rich.table import Table

from tinywarden.cli.app import app, console
from tinywarden.errors import ConfigError
from tinywarden.simulate import ATTACKS, PROFILES, SCENARIOS, simulate_detailed
from tinywarden.telemetry import write_csv, write_parquet
from tinywarden.telemetry.io import CALENDAR_END, CALENDAR_START, parse_timestamp

_WRITERS = {".csv": write_csv, ".parquet": write_parquet, ".pq": write_parquet}
_START = "2026-01-01T00:00:00Z"


@app.command("simulate")
def simulate_command(
    profile: str | None = typer.Option(None, "--profile", help=f"Device profile: {', '.join(PROFILES)}."),
    days: float = typer.Option(7.0, "--days", help="Length of the run in days."),
    attacks: str = typer.Option(
        "all", "--attacks", help=f"'all', 'none', or a comma list of {', '.join(ATTACKS)}."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same arguments give the same file."),
    period: float = typer.Option(10.0, "--period", help="Seconds per sample."),
    out: Path = typer.Option(..., "--out", help="Output file; .csv, or .parquet/.pq (a folder with --fleet)."),
    start: str = typer.Option(_START, "--start", help="First timestamp (ISO 8601, UTC)."),
    attack_free_days: float = typer.Option(
        0.0, "--attack-free-days", help="Keep the first N days free of attacks (for training)."
    ),
    scenario: str | None = typer.Option(
        None, "--scenario", help=f"A lasting change: {', '.join(SCENARIOS)} (regime changes are labelled normal)."
    ),
    change_day: float | None = typer.Option(
        None, "--change-day", help="Day the scenario starts (default: --attack-free-days if set, else mid-run)."
    ),
    fleet: int | None = typer.Option(
        None, "--fleet", help="Simulate N devices of mixed profiles into the folder --out (Parquet, by device_id)."
    ),
) -> None:
    """Simulate a device's telemetry with labelled attacks and write it to a file (or a fleet to a folder)."""
    if fleet is not None:
        from tinywarden.cli.fleet import simulate_fleet

        # a fleet places its own attacks, firmware updates and start: an option it would drop is refused
        given = [name for name, is_set in (("--attacks", attacks != "all"), ("--start", start != _START),
                                           ("--attack-free-days", attack_free_days != 0.0),
                                           ("--scenario", scenario is not None),
                                           ("--change-day", change_day is not None)) if is_set]
        if given:
            raise ConfigError(f"{given[0]}: not with --fleet (a fleet places its own attacks, firmware updates and "
                              "start); leave it out or simulate one device with --profile")

        simulate_fleet(fleet, days, seed, period, out, profile)
        return
    if profile is None:
        raise ConfigError("--profile: required (or --fleet N for a fleet of mixed profiles)")
    if change_day is not None and scenario is None:
        raise ConfigError(f"--change-day {change_day:g}: the day a --scenario starts; pass --scenario too")
    writer = _WRITERS.get(out.suffix.lower())
    if writer is None:
        raise ConfigError(f"--out: {out}: unknown file type {out.suffix!r} (expected .csv, .parquet or .pq)")
    try:
        t0 = parse_timestamp(start)
    except ValueError:
        raise ConfigError(f"--start: {start!r} is not an ISO 8601 time or epoch seconds") from None
    if t0 < CALENDAR_START:
        raise ConfigError(f"--start: {start}: the run would start before the year 1")
    if t0 + days * 86400.0 >= CALENDAR_END:
        raise ConfigError(f"--start: {start}: the run would end after the year 9999")
    sim = simulate_detailed(profile, days, attacks, seed, period, t0, attack_free_days, scenario, change_day)
    writer(sim.series, out)

    series = sim.series
    table = Table(title=f"{profile}: {len(series)} rows x {series.n_channels} channels -> {out}")
    table.add_column("attack")
    table.add_column("incidents", justify="right")
    table.add_column("rows", justify="right")
    incidents = Counter(i.attack for i in sim.incidents)
    rows = Counter(a for a in series.attacks if a)
    for name in ATTACKS:
        if incidents[name]:
            table.add_row(name, str(incidents[name]), str(rows[name]))
    for change in sim.changes:
        what = "attack (labelled 1)" if change.is_attack else "normal (labelled 0)"
        table.add_row(f"{change.scenario} ({change.kind}: {what})", "1", str(len(series) - change.start_row))
    table.add_row("[dim]normal[/]", "", str(len(series) - int(series.labels.sum())))
    console.print(table)

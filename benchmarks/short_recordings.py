"""`tune` on short recordings (issue 17 item 5): minutes of a device's normal, not days.

Issue 17's goal: on each simulator profile cut to 150 rows of normal at 1 Hz, and on NAB's series cut to
their first 150 rows for training, ``tune`` returns a pipeline every time. This script runs the library's
``tinywarden.tune.search.tune`` (what ``tinywarden tune`` calls) on exactly those spans under the default
8 KB flash / 4 KB RAM Cortex-M4 budget and records, per series, whether a pipeline came back, which one and
with what window and stride, or the one-line error it gave. No labels are read: the training spans are
normal by construction (simulated without attacks) or NAB's own first rows, inside its probationary period.

    python benchmarks/short_recordings.py                  # markdown + json to benchmarks/results
    python benchmarks/short_recordings.py --quick          # one profile, two NAB series
    python benchmarks/short_recordings.py --trials 20      # stop each search after 20 measured candidates
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, SIM_PROFILES, data_dir, json_safe, machine_info, timed_with_children  # noqa: E402

ROWS = 150


def _sim_series(profile: str, seed: int) -> Any:
    from tinywarden.simulate import simulate

    # one row a second, no attack: the first ROWS seconds of the device's normal
    return simulate(profile, days=ROWS / 86400.0, attacks="none", seed=seed, period_s=1.0)


def _nab_series(path: Path) -> Any:
    from tinywarden.telemetry import read_series

    series = read_series(path, drop_unordered=True)
    return series.slice(0, min(ROWS, len(series)))


def spans(quick: bool) -> list[tuple[str, str, Any]]:
    """(dataset, name, training series) for every short recording the goal names."""
    out: list[tuple[str, str, Any]] = []
    for i, profile in enumerate(SIM_PROFILES[:1] if quick else SIM_PROFILES):
        out.append(("sim", profile, _sim_series(profile, seed=i)))
    paths = sorted((data_dir() / "nab" / "data").glob("*/*.csv"))
    if not paths:
        raise SystemExit(f"no NAB csv files under {data_dir() / 'nab' / 'data'} (set TINYWARDEN_DATA)")
    for p in paths[:2] if quick else paths:
        out.append(("nab", f"{p.parent.name}/{p.stem}", _nab_series(p)))
    return out


def run_one(dataset: str, name: str, series: Any, trials: int | None) -> dict[str, Any]:
    from tinywarden.errors import TinywardenError
    from tinywarden.tune.search import Budget, tune

    row: dict[str, Any] = {"dataset": dataset, "series": name, "rows": len(series),
                           "channels": len(series.channels)}
    try:
        res, cpu = timed_with_children(lambda: tune(series, Budget(8192, 4096), seed=0, max_trials=trials))
    except TinywardenError as e:
        row.update(returned=False, error=str(e).splitlines()[0], cpu_s=None)
    else:
        s = res.summary()
        row.update(returned=True, family=s["family"], window=s["window"], stride=s["stride"], flash=s["flash"],
                   ram=s["ram"], trials=s["trials"], warning=s["warning"], windows_note=s["windows_note"],
                   cpu_s=round(cpu, 1))
    return row


def render(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    cmd = "python benchmarks/short_recordings.py" + (" --quick" if args.quick else "") + (
        f" --trials {args.trials}" if args.trials else "")
    lines = [
        "# `tune` on short recordings (issue 17 item 5)", "",
        f"Produced by `{cmd}`. Each series: its first {ROWS} rows only (simulator profiles: {ROWS} s of normal "
        "at 1 Hz, no attack; NAB: the first rows of each file, inside its probationary period), tuned by "
        "`tinywarden.tune.search.tune` under 8 KB flash / 4 KB RAM on Cortex-M4 (seed 0"
        + (f", stopped after {args.trials} candidates each" if args.trials else ", the command's defaults")
        + "). No labels are read.", "",
    ]
    for dataset in ("sim", "nab"):
        sub = [r for r in rows if r["dataset"] == dataset]
        if not sub:
            continue
        ok = sum(r["returned"] for r in sub)
        warned = sum(bool(r.get("warning")) for r in sub if r["returned"])
        lines.append(f"- **{dataset}**: a pipeline returned for **{ok} of {len(sub)}** series"
                     f" ({warned} with a warning from tune, in the note column).")
    if args.note:
        lines += ["", args.note]
    total = sum(r["returned"] for r in rows)
    goal = "met" if total == len(rows) else "**not met**"
    lines += ["", f"Goal (`tune` returns a pipeline every time): {total} of {len(rows)}: {goal}.", "",
              "| dataset | series | rows | channels | returned | family | window / stride | flash B | RAM B "
              "| CPU s | note |", "|---|---|---:|---:|---|---|---|---:|---:|---:|---|"]
    for r in rows:
        if r["returned"]:
            note = r.get("warning") or ""
            lines.append(f"| {r['dataset']} | {r['series']} | {r['rows']} | {r['channels']} | yes | {r['family']} "
                         f"| {r['window']} / {r['stride']} | {r['flash']} | {r['ram']} | {r['cpu_s']} | {note} |")
        else:
            lines.append(f"| {r['dataset']} | {r['series']} | {r['rows']} | {r['channels']} | **no** | | | | "
                         f"| {r['cpu_s']} | {r['error']} |")
    info = machine_info()
    lines += ["", f"CPU s: the search's CPU time, its compiler processes included. Machine: {info['machine']}, "
              f"Python {info['python']}, commit {info['commit']}, {info['date']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one profile and two NAB series")
    ap.add_argument("--trials", type=int, default=None, help="stop each search after this many candidates")
    ap.add_argument("--out", type=Path, default=None, help="markdown path (default: benchmarks/results)")
    ap.add_argument("--note", default=None, help="a paragraph printed under the summary (e.g. which rows ran when)")
    ap.add_argument("--series", default=None,
                    help="comma list of series names to run again, replacing their rows in the existing json")
    args = ap.parse_args(argv)
    out = args.out or RESULTS / ("short_recordings-quick.md" if args.quick else "short_recordings.md")
    only = None if args.series is None else {s.strip() for s in args.series.split(",") if s.strip()}
    kept: dict[str, dict[str, Any]] = {}
    if only is not None:
        if not out.with_suffix(".json").exists():
            raise SystemExit(f"--series needs an earlier run's {out.with_suffix('.json')}")
        kept = {r["series"]: r for r in json.loads(out.with_suffix(".json").read_text())}
        unknown = only - set(kept)
        if unknown:
            raise SystemExit(f"not in the earlier run: {', '.join(sorted(unknown))}")
    rows = []
    for dataset, name, series in spans(args.quick):
        if only is not None and name not in only:
            rows.append(kept[name])
            continue
        row = run_one(dataset, name, series, args.trials)
        print(json.dumps(json_safe(row)), flush=True)
        rows.append(row)
    out.write_text(render(rows, args))
    out.with_suffix(".json").write_text(json.dumps(json_safe(rows), indent=1) + "\n")
    print(f"wrote {out}")
    return 0 if all(r["returned"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())

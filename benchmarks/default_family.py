"""Which family the default pipeline should use, chosen on development seeds of the simulator only::

    python benchmarks/default_family.py                       # writes results/default_family.md
    python benchmarks/default_family.py --families pca,kmeans --seeds 101,102 --out /tmp/x.md

Why (issue 14): the demo's goal is >= 95% of incidents at <= 1 false alarm per device-day, and the default
pipeline's family until 2026-12-03 (the dense autoencoder) found 26 of 28 at 0.69: it missed 2 of 3
sensor-drift incidents, a tampered power reading that stays inside its own range and breaks only its
relation to CPU and traffic
(results/drift.md). Choosing the family on the demo's own data (seed 7) would select on its labels; this
script chooses on other seeds and leaves the demo, and drift.py's scenarios (seed 11), as the test.

Protocol, fixed before the first run: every profile (camera, valve, thermostat) at each development seed
(default 101 to 104; never 7 or 11), 14 simulated days with all five attacks, the first 8 attack-free, exactly
as ``tinywarden demo`` builds its data; each family with its default parameters in the default pipeline
(window 128, stride 64, default features, 2-of-3 persistence, threshold calibrated on its held-out training
windows), fitted on the 8 days and scored in batch on the other 6 like the demo prints it. Per family the pooled
incidents detected and false alarms per device-day (the demo's metric: rising edges of the k-of-n alarm outside
incidents). The rule: among the families whose pooled false alarms per device-day are <= 1, the highest pooled
detection rate; a tie goes to fewer false alarms. Labels are read only to score.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine_info, single_core, timed  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PROFILES = ("camera", "valve", "thermostat")
DEV_SEEDS = (101, 102, 103, 104)
TEST_SEEDS = (7, 11)  # the demo's and drift.py's: never used here
DAYS, TRAIN_DAYS = 14.0, 8.0
FA_BUDGET = 1.0  # false alarms per device-day


def run_one(family: str, profile: str, seed: int) -> dict[str, Any]:
    """One family on one profile and seed: incidents, detected (per attack), false alarms and normal days."""
    from tinywarden.cli.core import evaluate_pipeline
    from tinywarden.detectors import make_detector
    from tinywarden.pipeline import Pipeline
    from tinywarden.simulate import simulate

    series = simulate(profile, DAYS, "all", seed=seed, attack_free_days=TRAIN_DAYS)
    cut = int(np.searchsorted(series.timestamps, series.timestamps[0] + TRAIN_DAYS * 86400.0))
    pipeline, fit_s = timed(lambda: Pipeline(make_detector(family)).fit(series.slice(0, cut)))
    _, ev = evaluate_pipeline(pipeline, series, skip_rows=cut)
    return {"family": family, "profile": profile, "seed": seed, "incidents": ev.n_incidents,
            "detected": ev.n_detected, "false_alarms": ev.false_alarm_events, "normal_days": ev.normal_days,
            "per_attack": {a.attack: [a.detected, a.incidents] for a in ev.per_attack}, "fit_s": fit_s}


def pooled(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The rows of one family pooled: detection rate, false alarms per device-day, per attack."""
    inc, det = sum(r["incidents"] for r in rows), sum(r["detected"] for r in rows)
    fa, days = sum(r["false_alarms"] for r in rows), sum(r["normal_days"] for r in rows)
    per: dict[str, list[int]] = {}
    for r in rows:
        for a, (d, n) in r["per_attack"].items():
            per.setdefault(a, [0, 0])
            per[a][0] += d
            per[a][1] += n
    return {"incidents": inc, "detected": det, "rate": det / inc if inc else float("nan"),
            "fa_per_day": fa / days if days else float("nan"), "per_attack": per,
            "worst_fa_per_day": max(r["false_alarms"] / r["normal_days"] for r in rows)}


def choose(summary: dict[str, dict[str, Any]]) -> str | None:
    """The rule in the module docstring: within the false-alarm budget, the highest detection rate."""
    ok = [f for f, s in summary.items() if s["fa_per_day"] <= FA_BUDGET]
    return min(ok, key=lambda f: (-summary[f]["rate"], summary[f]["fa_per_day"]), default=None)


#: What the page must also say about how the rule was applied (fixed text: it is about this script's history).
NOTES = (
    "- *Seen before this script was written*: the demo's own per-family figures (seed 7: gaussian 28 of 28, pca 27, "
    "dense_ae 26, at 0.69 false alarms a day) came from a first look at why the default missed sensor drift; that "
    "look is why a protocol on other seeds was set up at all. The rule and the seeds above were written before "
    "this script's first run, and its output is what chose.",
    "- *The device budget*, a hard constraint of issue 14 that the rule as written does not state: the chosen "
    "family's adapting module must fit 8 KB of flash and 4 KB of RAM on every core. gaussian's does on the demo's "
    "device (results/mcu_adaptation.md: Cortex-M4 7,298 B, M0+ 8,004 B; 3,424 B RAM); had it not, the next family "
    "in the table would have been the default.",
)


def render(result: dict[str, Any]) -> str:
    summary, chosen = result["summary"], result["chosen"]
    attacks = sorted({a for s in summary.values() for a in s["per_attack"]})
    lines = [
        "# The default pipeline's family, chosen on development seeds (issue 14)", "",
        f"Produced by `python benchmarks/default_family.py {' '.join(result['argv'])}`.".replace(" `.", "`."),
        "", (__doc__ or "").split("\n\n", 2)[2].strip().replace("\n", " "), "",
        f"Development seeds {', '.join(map(str, result['seeds']))} over {', '.join(result['profiles'])}: "
        f"{len(result['seeds']) * len(result['profiles'])} device runs per family, "
        f"{DAYS - TRAIN_DAYS:g} held-out days each. The test seeds "
        f"({', '.join(map(str, TEST_SEEDS))}) are not read.", "",
        "| family | incidents detected | rate | false alarms / device-day (worst run) | "
        + " | ".join(attacks) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(attacks),
    ]
    order = sorted(summary, key=lambda f: (-summary[f]["rate"], summary[f]["fa_per_day"]))
    for f in order:
        s = summary[f]
        name = f"**{f}** (chosen)" if f == chosen else f
        lines.append(f"| {name} | {s['detected']}/{s['incidents']} | {s['rate']:.1%} | {s['fa_per_day']:.2f} "
                     f"({s['worst_fa_per_day']:.2f}) | "
                     + " | ".join("{}/{}".format(*s["per_attack"].get(a, (0, 0))) for a in attacks) + " |")
    lines += ["", f"Chosen by the rule: **{chosen}**." if chosen else "No family is within the budget.", "",
              *NOTES, ""]
    failed = result.get("failed", {})
    if failed:
        lines += ["Families that could not be fitted with their defaults here: "
                  + "; ".join(f"{f} ({why})" for f, why in failed.items()), ""]
    m = result["machine"]
    lines.append(f"Measured {m.get('date', '')} on {m.get('machine', '')}, commit {m.get('commit', '')}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from tinywarden.detectors import REGISTRY

    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--families", default=",".join(REGISTRY), help="comma-separated (default: every family)")
    ap.add_argument("--seeds", default=",".join(map(str, DEV_SEEDS)), help="development seeds (never 7 or 11)")
    ap.add_argument("--profiles", default=",".join(PROFILES))
    ap.add_argument("--out", type=Path, default=RESULTS / "default_family.md")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    if set(seeds) & set(TEST_SEEDS):
        ap.error(f"seeds {sorted(set(seeds) & set(TEST_SEEDS))} are the test seeds: choose others")
    families = [f for f in args.families.split(",") if f]
    unknown = sorted(set(families) - set(REGISTRY))
    if unknown:
        ap.error(f"unknown families {unknown}; known: {', '.join(REGISTRY)}")
    single_core()
    rows: dict[str, list[dict[str, Any]]] = {}
    failed: dict[str, str] = {}
    for family in families:
        for profile in args.profiles.split(","):
            for seed in seeds:
                try:
                    r = run_one(family, profile, seed)
                except Exception as e:  # a family that cannot fit this data is reported, not fatal
                    failed[family] = f"{type(e).__name__}: {e}".splitlines()[0][:160]
                    break
                rows.setdefault(family, []).append(r)
                print(json.dumps(r), flush=True)
            if family in failed:
                rows.pop(family, None)
                break
    summary = {f: pooled(rs) for f, rs in rows.items()}
    result = {"argv": sys.argv[1:] if argv is None else argv, "seeds": seeds, "profiles": args.profiles.split(","),
              "rows": rows, "summary": summary, "chosen": choose(summary), "failed": failed,
              "machine": machine_info()}
    args.out.write_text(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

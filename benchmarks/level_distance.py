"""How far the adapted baseline and the slow-drift watch's level move, measured by the detector's own distance::

    python benchmarks/level_distance.py                    # writes results/level_distance.md
    python benchmarks/level_distance.py --seeds 101 --profiles valve --out /tmp/x.md

Why (issue 14): the poisoning ramp drift.md still misses is the valve's sensor drift. Its pressure moves by 40 kPa
over three days, about one reference standard deviation of the pressure features (their spread holds the valve's
whole travel), so neither a window's score nor the watch (1 sd on any input) sees it before full rate. Off the
line pressure keeps with the valve's position, the same 40 kPa is many standard deviations. This study measures,
without changing the product, what a watch in the detector's own metric would see: after every window of a
replay with the default ``[adaptation]`` (the agent's :class:`~tinywarden.adapt.BaselineAdapter`), the default
detector's score of the adapted baseline's displacement from the reference (*centre*) and of the watch's day-long
level's (*level*), both in reference standard deviations of the model inputs, as a fraction of the detector's
threshold. A window's threshold holds a window's noise; a day-long level has far less, so the bound such a watch
would need is a fraction of it, read here from the unchanged runs.

Protocol: development seeds only (default 101 to 104; never the demo's 7 or drift.py's 11, which stay the test), every
profile, drift.py's days (8 attack-free days to fit, scenarios from day 9 of 13), float pipeline. Per run: the
largest centre and level on the unchanged run (every move there is normal), and per scenario their largest value
and the fraction of the ramp done (poisoning) or the days after the change (regime) when the level first exceeds
each bound in :data:`BOUNDS`. Labels are not read.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import RESULTS, machine_info  # noqa: E402
from benchmarks.drift import DAY_S, DAYS, PROFILES, TRAIN_DAYS, _fit, scenario_runs  # noqa: E402

DEV_SEEDS = (101, 102, 103, 104)
TEST_SEEDS = (7, 11)
DRIFT_SEED = 11
#: The bound a watch in this distance would flag at, fixed from the development seeds' page (about twice the largest
#: level of their unchanged runs, 0.09) before the test seed was run.
TEST_BOUND = 0.2
#: Fractions of the detector's threshold the level is compared with.
BOUNDS = (0.05, 0.1, 0.2)


def traced_replay(pipeline: Any, series: Any, start: int) -> tuple[np.ndarray, np.ndarray]:
    """``(window end rows, [centre, level] / threshold per window)`` of a replay with the default adaptation."""
    from tinywarden.adapt import BaselineAdapter
    from tinywarden.replay import replay
    from tinywarden.respond.policy import Adaptation

    trace: list[tuple[float, float]] = []
    observe = BaselineAdapter.observe

    def traced(self: BaselineAdapter, *args: Any, **kwargs: Any) -> Any:
        out = observe(self, *args, **kwargs)
        p = self.pipeline
        moved = np.stack([p.offset_ - self.reference_offset, self._level - self.reference_offset])
        trace.append(tuple(p.detector.score_samples(moved / self.reference_scale) / p.threshold_))
        return out

    BaselineAdapter.observe = traced  # type: ignore[method-assign]
    try:
        r = replay(pipeline, series, start, Adaptation())
    finally:
        BaselineAdapter.observe = observe  # type: ignore[method-assign]
    a = np.asarray(trace, dtype=np.float64).reshape(-1, 2)
    return np.asarray(r.windows.end_rows)[-len(a):], a


def run(seeds: Sequence[int], profiles: Sequence[str]) -> dict[str, Any]:
    from tinywarden.replay import aligned_start
    from tinywarden.simulate import simulate

    rows: list[dict[str, Any]] = []
    for seed in seeds:
        for profile in profiles:
            base = simulate(profile, DAYS, "none", seed=seed)
            per_day = int(round(DAY_S / base.period))
            cut = int(TRAIN_DAYS * per_day)
            pipeline = _fit("gaussian", base.slice(0, cut), 0.05)
            start = aligned_start(pipeline, cut)
            _, a = traced_replay(pipeline, base, start)
            rows.append({"seed": seed, "profile": profile, "scenario": "unchanged", "kind": "normal",
                         "centre": float(a[:, 0].max()), "level": float(a[:, 1].max()), "first": {}})
            print(rows[-1], flush=True)
            for name, spec, sim, change in scenario_runs(profile, seed, base.channels):
                ends, a = traced_replay(pipeline, sim.series, start)
                first: dict[str, float | None] = {}
                for bound in BOUNDS:
                    over = np.flatnonzero((a[:, 1] > bound) & (ends >= change.start_row))
                    row = None if not len(over) else int(ends[over[0]])
                    span = (change.full_row - change.start_row) if change.is_attack else per_day
                    first[f"{bound:g}"] = None if row is None else round((row - change.start_row) / span, 2)
                rows.append({"seed": seed, "profile": profile, "scenario": name, "kind": spec.kind,
                             "centre": float(a[:, 0].max()), "level": float(a[:, 1].max()), "first": first})
                print(rows[-1], flush=True)
    return {"rows": rows, "seeds": list(seeds), "machine": machine_info()}


def _paragraph(start: str) -> str:
    """The module docstring's paragraph that begins with ``start``, on one line."""
    return next(p for p in (__doc__ or "").split("\n\n") if p.startswith(start)).replace("\n", " ")


def render(result: dict[str, Any], command: str, test: bool = False) -> str:
    bounds = [f"{b:g}" for b in BOUNDS]
    seeds = ", ".join(map(str, result["seeds"]))
    where = (f"on drift.py's seed {seeds}, the test: the bound, {TEST_BOUND:g} of the threshold, was fixed on the "
             "development seeds' page (level_distance.md) before this run" if test else
             f"on development seeds {seeds} (the demo's and drift.py's seeds are the test and are refused)")
    lines = ["# The adapted baseline and the watch's level in the detector's own distance (issue 14)"
             + (": the test" if test else ""), "", f"Produced by `{command}` {where}.", "", _paragraph("Why"), "",
             _paragraph("Protocol"), "",
             "*centre*, *level*: the largest score over the run of the adapted baseline's and of the watch's level's "
             "displacement, as a fraction of the threshold. *first over b*: when the level first exceeds b times the "
             "threshold, as the fraction of the ramp done (poisoning: caught before full rate below 1) or days after "
             "the change (regime; any flag there reaches the operator, the goal counts alarms only).", "",
             "| seed | profile | scenario | kind | centre | level | " + " | ".join(f"first over {b}" for b in bounds)
             + " |", "|---:|---|---|---|---:|---:|" + "---:|" * len(bounds)]
    for r in result["rows"]:
        firsts = ["" if r["kind"] == "normal" else ("never" if r["first"].get(b) is None else f"{r['first'][b]:g}")
                  for b in bounds]
        lines.append(f"| {r['seed']} | {r['profile']} | {r['scenario']} | {r['kind']} | {r['centre']:.2f} | "
                     f"{r['level']:.2f} | " + " | ".join(firsts) + " |")
    lines += ["", summary(result)]
    return "\n".join(lines) + "\n"


def summary(result: dict[str, Any]) -> str:
    """The largest level of the unchanged runs and, per bound, the ramps caught before full rate and the regime
    changes it would flag."""
    rows = result["rows"]
    normal = max(rows, key=lambda r: r["level"] if r["kind"] == "normal" else -1.0)
    parts = [f"Largest level on an unchanged run: {normal['level']:.2f} of the threshold ({normal['profile']}, seed "
             f"{normal['seed']})."]
    ramps = [r for r in rows if r["kind"] == "poisoning"]
    regimes = [r for r in rows if r["kind"] == "regime"]
    for b in (f"{x:g}" for x in BOUNDS):
        caught = [r for r in ramps if r["first"].get(b) is not None and r["first"][b] < 1.0]
        drift = [r["first"][b] for r in ramps if r["scenario"] == "sensor_drift_ramp" and r["profile"] == "valve"]
        flagged = [r for r in regimes if r["first"].get(b) is not None]
        parts.append(f"Over {b}: {len(caught)} of {len(ramps)} ramps before full rate (valve sensor drift at "
                     + ", ".join("never" if v is None else f"{v:g}" for v in drift)
                     + f"); {len(flagged)} of {len(regimes)} regime changes flagged.")
    return " ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default=",".join(map(str, DEV_SEEDS)), help="development seeds, comma-separated")
    ap.add_argument("--profiles", default=",".join(PROFILES))
    ap.add_argument("--out", type=Path, default=None, help="default: results/level_distance.md (with --test: "
                                                           "results/level_distance_test.md)")
    ap.add_argument("--test", action="store_true",
                    help=f"the test: drift.py's seed {DRIFT_SEED} with the bound fixed beforehand ({TEST_BOUND:g} of "
                         "the threshold, from the development seeds' page)")
    a = ap.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    if a.test:
        seeds = [DRIFT_SEED]
    elif set(seeds) & set(TEST_SEEDS):
        print(f"level_distance: seeds {sorted(set(seeds) & set(TEST_SEEDS))} are the test's; use development seeds",
              file=sys.stderr)
        return 2
    result = run(seeds, [p.strip() for p in a.profiles.split(",") if p.strip()])
    md = render(result, " ".join(["python benchmarks/level_distance.py", *(sys.argv[1:] if argv is None else argv)]),
                test=a.test)
    out = a.out or RESULTS / ("level_distance_test.md" if a.test else "level_distance.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())

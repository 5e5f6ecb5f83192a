"""What baseline adaptation costs on real server telemetry: ROC AUC with and without it, SMD and ASD.

Issue 14's goal: on SMD and ASD no family may lose more than 0.005 ROC AUC to adaptation. The protocol is
``benchmarks/quality.py``'s (``benchmarks.common.PROTOCOLS``: window 32, each test row scored by the window
ending at it, w-1 training rows as context): every family is fitted on the entity's ``train`` split with its
default parameters, then its test windows are scored twice, in time order:

- *off*: the fitted pipeline as it is (the batch scores ``quality.py`` reports);
- *on*: a deployed copy whose baseline adapts as the agent's does (:func:`tinywarden.adapt.adapted_scores`:
  score, the likelihood's confidence, :class:`~tinywarden.adapt.BaselineAdapter` with the default
  ``[adaptation]`` policy), one window after the other.

At the protocol's test stride of 1 every row is a window, so the baseline sees as many adaptation steps per
hour as there are rows (60 on SMD, 12 on ASD), more than the agent at its usual stride: a harsh test.
Labels are only read to score. Reported: window and row ROC AUC of both runs, their difference (on - off)
per family (mean over entities and the worst entity), and whether every family stays within the goal.

    python benchmarks/adapt_quality.py                          # SMD and ASD, every family; writes results
    python benchmarks/adapt_quality.py --datasets asd --families ewma,pca --no-write
    python benchmarks/adapt_quality.py --render rows.json       # re-render saved rows
    python benchmarks/adapt_quality.py --render all.json more.json --json all.json --no-write   # join runs
    python benchmarks/adapt_quality.py --datasets asd --families ar --settle-s 0 --no-write   # rule off
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    PROTOCOLS,
    RESULTS,
    entities,
    json_safe,
    machine_info,
    quality_metrics,
    single_core,
)

GOAL_MAX_LOSS = 0.005
DATASETS = ("smd", "asd")
Row = dict[str, Any]


def entity_rows(entity: Any, families: Sequence[str], done: Callable[[Row], None] = lambda row: None,
                adaptation: Mapping[str, Any] | None = None) -> list[Row]:
    """One row per family: ROC AUC off and on for this entity; ``done`` is called with each row as it comes.
    ``adaptation`` overrides fields of the default ``[adaptation]`` policy (a diagnostic, e.g. ``settle_s=0``)."""
    import copy

    from tinywarden.adapt import adapted_scores
    from tinywarden.detectors import make_detector
    from tinywarden.errors import TinywardenError
    from tinywarden.likelihood import window_new_rows
    from tinywarden.pipeline import Pipeline
    from tinywarden.respond.policy import Adaptation

    p = entity.protocol
    rows: list[Row] = []
    for name in families:
        pipeline = Pipeline(make_detector(name), window=p.window, stride=p.train_stride)
        try:
            pipeline.fit(entity.train)
        except TinywardenError as exc:
            rows.append({"dataset": entity.dataset, "entity": entity.name, "family": name,
                         "unavailable": f"fit failed: {exc}"})
            done(rows[-1])
            continue
        scorer = copy.copy(pipeline)
        scorer.stride = p.test_stride
        ends, raw = scorer.window_inputs(entity.stream)
        new_rows = window_new_rows(scorer.select_channels(entity.stream), ends)  # the value record's samples
        row: Row = {"dataset": entity.dataset, "entity": entity.name, "family": name, "windows": len(ends)}
        t0 = time.process_time()
        for variant, cfg in (("off", None), ("on", Adaptation(**(adaptation or {})))):
            scores = adapted_scores(scorer, raw, cfg, new_rows)
            m = quality_metrics(entity, ends, scores)
            row[f"roc_auc_{variant}"] = m["roc_auc"]
            row[f"row_roc_auc_{variant}"] = m["row_roc_auc"]
        row["seconds"] = time.process_time() - t0
        row["delta"] = row["roc_auc_on"] - row["roc_auc_off"]
        row["row_delta"] = row["row_roc_auc_on"] - row["row_roc_auc_off"]
        print(f"{entity.dataset} {entity.name} {name}: off {row['roc_auc_off']:.4f} on {row['roc_auc_on']:.4f} "
              f"({row['delta']:+.4f}), {row['seconds']:.0f} s", file=sys.stderr, flush=True)
        rows.append(row)
        done(row)
    return rows


def summarise(rows: Sequence[Row]) -> list[Row]:
    """Per (dataset, family): mean ROC AUC off/on, mean and worst difference, entities measured."""
    out: list[Row] = []
    keys = list(dict.fromkeys((r["dataset"], r["family"]) for r in rows))
    for dataset, family in keys:
        done = [r for r in rows if (r["dataset"], r["family"]) == (dataset, family) and "unavailable" not in r]
        if not done:
            continue
        s: Row = {"dataset": dataset, "family": family, "n_entities": len(done)}
        for k in ("roc_auc_off", "roc_auc_on", "delta", "row_roc_auc_off", "row_roc_auc_on", "row_delta"):
            vals = np.array([r[k] for r in done], dtype=np.float64)
            s[k] = float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan
        worst = min(done, key=lambda r: r["delta"])
        s["worst_delta"], s["worst_entity"] = worst["delta"], worst["entity"]
        s["met"] = s["delta"] >= -GOAL_MAX_LOSS
        out.append(s)
    return out


def join(saved: Sequence[Mapping[str, Any]]) -> tuple[list[Row], dict[str, str]]:
    """Several runs' ``--json`` output (``{"machine": ..., "rows": [...]}``) as one, in the order given: a later
    run's row replaces an earlier one for the same (dataset, entity, family), in its place; a new one is appended.
    Each machine field lists the runs' distinct values in order, joined by `` + `` (one value if they agree)."""
    by_key: dict[tuple[str, str, str], Row] = {}
    info: dict[str, list[str]] = {}
    for run in saved:
        for row in run["rows"]:
            by_key[(row["dataset"], row["entity"], row["family"])] = row
        for k, v in run["machine"].items():
            if v not in info.setdefault(k, []):
                info[k].append(v)
    return list(by_key.values()), {k: " + ".join(v) for k, v in info.items()}


def markdown(rows: Sequence[Row], info: dict[str, str], note: str,
             produced: str = "`python benchmarks/adapt_quality.py`") -> str:
    summary = summarise(rows)
    lines = [
        "# Baseline adaptation on SMD and ASD: ROC AUC lost or gained (issue 14)",
        "",
        f"Produced by {produced} (module docstring: protocol). Each family with its "
        "default parameters, fitted on the entity's `train` split; its test windows scored as fitted (*off*) "
        "and by a deployed copy whose baseline adapts with the default `[adaptation]` policy (*on*, "
        "`tinywarden.adapt.adapted_scores`, one window after the other, test stride 1: one adaptation step per "
        "row). Goal: no family loses more than "
        f"{GOAL_MAX_LOSS} ROC AUC (mean over the entities of a dataset; the worst single entity is shown too).",
        "",
        *(f"- {d}: window {PROTOCOLS[d].window}, train stride {PROTOCOLS[d].train_stride}, test stride "
          f"{PROTOCOLS[d].test_stride}" for d in DATASETS),
        "",
    ]
    if note:
        lines += [note, ""]
    lines += [
        "| dataset | family | entities | ROC AUC off | ROC AUC on | difference | worst entity | row ROC AUC "
        "off | row ROC AUC on | goal |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        lines.append(f"| {s['dataset']} | {s['family']} | {s['n_entities']} | {s['roc_auc_off']:.4f} | "
                     f"{s['roc_auc_on']:.4f} | {s['delta']:+.4f} | {s['worst_delta']:+.4f} ({s['worst_entity']}) "
                     f"| {s['row_roc_auc_off']:.4f} | {s['row_roc_auc_on']:.4f} | "
                     f"{'met' if s['met'] else '**missed**'} |")
    missing = [r for r in rows if "unavailable" in r]
    for r in missing:
        lines.append(f"\n{r['dataset']} {r['entity']} {r['family']}: {r['unavailable']}")
    met = sum(s["met"] for s in summary)
    lines += ["", f"Goal met by {met} of {len(summary)} (dataset, family) pairs.", "",
              f"Measured {info['date']} on {info['machine']}, Python {info['python']}, commit {info['commit']}."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    from tinywarden.detectors import REGISTRY

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated: smd, asd")
    ap.add_argument("--families", default=",".join(REGISTRY), help="comma-separated registered families")
    ap.add_argument("--entities", type=int, help="only the first N entities of each dataset")
    ap.add_argument("--names", help="only these entities (comma-separated, e.g. machine-2-1,machine-2-2: one run split "
                    "over several processes, their --json rows joined with --render)")
    ap.add_argument("--json", type=Path, help="write the per-entity rows here (appended as they come; with "
                    "--render, the joined rows)")
    ap.add_argument("--render", type=Path, nargs="+", help="render saved rows (--json output) instead of measuring; "
                    "several files are joined, a later file's row replacing an earlier one for the same (dataset, "
                    "entity, family)")
    ap.add_argument("--note", default="", help="a line printed above the table (e.g. what was left out)")
    ap.add_argument("--produced", default="`python benchmarks/adapt_quality.py`",
                    help="the commands that measured the rows (a --render of several runs' rows names them)")
    ap.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/adapt_quality.md")
    ap.add_argument("--settle-s", type=float, help="the adaptation's settle_s instead of the default (a diagnostic: "
                    "0 turns the sustained-shift rule off)")
    args = ap.parse_args(argv)
    if args.render is not None:
        rows, info = join([json.loads(path.read_text()) for path in args.render])
        if args.json:
            args.json.write_text(json.dumps({"machine": info, "rows": json_safe(rows)}, indent=1) + "\n")
    else:
        single_core()
        import warnings

        warnings.filterwarnings("ignore", category=UserWarning)  # PyOD/torch chatter, not results
        info = machine_info()
        families = [f.strip() for f in args.families.split(",") if f.strip()]
        unknown = [f for f in families if f not in REGISTRY]
        if unknown:
            ap.error(f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}")
        rows = []

        def save(row: Row) -> None:  # every row as it comes, so a run cut short keeps what it measured
            rows.append(row)
            if args.json:
                args.json.write_text(json.dumps({"machine": info, "rows": json_safe(rows)}, indent=1) + "\n")

        for dataset in [d.strip() for d in args.datasets.split(",") if d.strip()]:
            names = None if args.names is None else {n.strip() for n in args.names.split(",") if n.strip()}
            for i, entity in enumerate(entities(dataset)):
                if args.entities is not None and i >= args.entities:
                    break
                if names is not None and entity.name not in names:
                    continue
                entity_rows(entity, families, save, None if args.settle_s is None else {"settle_s": args.settle_s})
    text = markdown(rows, info, args.note, args.produced)
    print(text)
    if not args.no_write:
        (RESULTS / "adapt_quality.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Detection quality, size and speed of every tinywarden detector (float and int8) against peers.

One run, one machine, the same training windows and the same window features for everybody, on the
public data in ``../shared/data`` (SMD, ASD, NAB) and on the simulator's attack suite::

    python benchmarks/quality.py                 # full run (about 40 min on 2 cores); writes benchmarks/results/
    python benchmarks/quality.py --quick         # one small entity per dataset, a few minutes; writes nothing
    python benchmarks/quality.py --json rows.json --datasets smd,nab --no-tune

tinywarden detectors come from ``tinywarden.detectors.REGISTRY`` (a new family shows up by itself)
with their default parameters; int8 rows use ``tinywarden.quantize.ptq.quantize_pipeline`` and the
integer reference interpreter ``tinywarden.program.run_int8``. The ``tuned`` row is what
``tinywarden.tune.tune`` picks per entity from its training span under an 8 KB flash / 4 KB RAM budget
(``--tune-seconds`` per search, ``--no-tune`` to leave it out). Peers are in ``benchmarks/peers``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import shlex
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402 (after the path fix above)
    DATASETS,
    FPR_POINTS,
    PROTOCOLS,
    RESULTS,
    Entity,
    context_values,
    entities,
    fmt,
    json_safe,
    machine_info,
    quality_metrics,
    single_core,
    timed,
    timed_with_children,
)

Row = dict[str, Any]
#: Headline columns of the per-dataset tables: (key in a row, column title).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("detector", "detector"),
    ("int8", "int8"),
    ("roc_auc", "ROC AUC (window)"),
    ("row_roc_auc", "ROC AUC (row)"),
    ("pr_auc", "PR AUC"),
    ("best_f1", "best F1"),
    ("det_rate_fpr0_1", "det. @0.1% FPR"),
    ("det_rate_fpr1", "det. @1% FPR"),
    ("latency_s_fpr1", "latency s @1%"),
    ("n_params", "params"),
    ("model_bytes", "model bytes"),
    ("train_s", "train s"),
    ("windows_per_s", "windows/s"),
)
#: The device budget the ``tuned`` row is searched under (issue 8): flash and RAM bytes, Cortex-M4.
TUNE_BUDGET: tuple[int, int] = (8192, 4096)
#: Default seconds per entity for the search (wall clock, ``tune``'s ``time_budget``): full run, --quick.
TUNE_SECONDS: float = 60.0
TUNE_SECONDS_QUICK: float = 15.0


#: NAB's categories this table scores: its device/server telemetry (../shared/README.md: realAWSCloudwatch and
#: realKnownCause, 24 series), not the artificial, advertising and social-media ones of the whole corpus.
NAB_CATEGORIES: tuple[str, ...] = ("realAWSCloudwatch", "realKnownCause")


def scored_entities(dataset: str, quick: bool = False) -> Iterator[Entity]:
    """:func:`benchmarks.common.entities`, NAB restricted to :data:`NAB_CATEGORIES`."""
    for e in entities(dataset, quick=quick):
        if dataset != "nab" or quick or e.name.split("/")[0] in NAB_CATEGORIES:
            yield e


# -- one entity ---------------------------------------------------------------------------------
def _row(entity: Entity, detector: str, family: str, int8: bool, end_rows: Any, scores: Any, n_params: int,
         model_bytes: int, train_s: float, score_s: float, note: str = "") -> Row:
    row: Row = {"dataset": entity.dataset, "entity": entity.name, "detector": detector, "family": family,
                "int8": int8}
    row.update(quality_metrics(entity, end_rows, scores))
    row.update(n_params=int(n_params), model_bytes=int(model_bytes), train_s=train_s,
               windows_per_s=len(end_rows) / score_s if score_s > 0 else math.nan, timed_windows=len(end_rows),
               score_s=score_s, note=note)
    return row


def _unavailable(entity: Entity, detector: str, family: str, int8: bool, reason: str) -> Row:
    return {"dataset": entity.dataset, "entity": entity.name, "detector": detector, "family": family, "int8": int8,
            "unavailable": reason}


def program_params(program: Any) -> int:
    """Learned values an int8 program stores: per-channel sample scaling plus every op constant."""
    import numpy as np

    return int(program.sample_offset.size + program.sample_mul.size
               + sum(np.asarray(a).size for op in program.ops for a in op.consts.values()))


def tinywarden_rows(entity: Entity, only: Sequence[str] | None = None) -> list[Row]:
    """Float and int8 rows of every registered tinywarden detector (default parameters), or of ``only``."""

    from tinywarden.detectors import REGISTRY, make_detector
    from tinywarden.errors import TinywardenError
    from tinywarden.pipeline import Pipeline
    from tinywarden.program import run_int8
    from tinywarden.quantize.ptq import quantize_pipeline

    p = entity.protocol
    rows: list[Row] = []
    for name in REGISTRY:
        if only is not None and name not in only:
            continue
        pipeline = Pipeline(make_detector(name), window=p.window, stride=p.train_stride)
        try:
            _, fit_s = timed(lambda pl=pipeline: pl.fit(entity.train))
        except TinywardenError as exc:
            rows += [_unavailable(entity, name, "tinywarden", int8, f"fit failed: {exc}") for int8 in (False, True)]
            continue
        # Scoring at the test stride: the fitted state is stride-independent, only windowing changes.
        scorer = copy.copy(pipeline)
        scorer.stride = p.test_stride
        scored, score_s = timed(lambda sc=scorer: sc.score(entity.stream))
        rows.append(_row(entity, name, "tinywarden", False, scored.end_rows, scored.scores, pipeline.n_params_,
                         pipeline.model_bytes_, fit_s, score_s, "float64 pipeline (scaler + detector, float32 size)"))
        try:
            program, q_s = timed(lambda pl=pipeline: quantize_pipeline(pl, entity.train))
        except TinywardenError as exc:
            rows.append(_unavailable(entity, name, "tinywarden", True, str(exc)))
            continue
        prog = dataclasses.replace(program, stride=p.test_stride)
        (scores, _), int8_s = timed(lambda pr=prog: run_int8(pr, entity.stream.values))
        if len(scores) != len(scored.end_rows):
            raise RuntimeError(f"{entity.name}/{name}: int8 gave {len(scores)} windows, float {len(scored.end_rows)}")
        rows.append(_row(entity, name, "tinywarden", True, scored.end_rows, scores, program_params(program),
                         program.const_bytes,
                         fit_s + q_s, int8_s, "int8 program (quantize_pipeline), numpy reference interpreter "
                         "run_int8; bytes = device constants"))
    return rows


def scores_at(entity: Entity, program: Any, end_rows: Any) -> tuple[Any, float]:
    """``program``'s int8 scores of the windows of its own length ending at ``end_rows`` of the stream.

    This puts a program whose window or stride differ from the protocol's on the protocol's rows, so its
    scores meet the same labels as every other detector's. Extra context for a longer window comes from
    the training rows before the stream (:func:`benchmarks.common.context_values`); a scored row that
    still has no full window before it takes the first full window's score. Returns ``(scores, seconds)``
    with the seconds of the ``run_int8`` call alone (one core).
    """
    import numpy as np

    from tinywarden.program import run_int8

    values, lead = context_values(entity, program.window)
    idx = [entity.stream.channels.index(c) for c in program.channels]
    ext = np.asarray(end_rows, dtype=np.int64) + lead
    full = ext >= program.window - 1
    if not full.any():
        raise ValueError(f"{entity.name}: no scored row has a full window of {program.window} rows")
    w, stride = program.window, entity.protocol.test_stride
    if stride <= w:
        # The protocol's end rows are evenly spaced by its test stride: running the program at that
        # stride from the right offset yields exactly the windows ending at them (count checked below).
        offset = int(ext[full][0]) - (w - 1)
        rows = np.arange(offset, int(ext[-1]) + 1)
        prog = dataclasses.replace(program, stride=stride)
    else:
        # Windows further apart than their length (sim: 64-row stride): lay the wanted windows end to end
        # and run the program at stride = window, so no unwanted window is computed.
        rows = (ext[full][:, None] - (w - 1) + np.arange(w)).ravel()
        prog = dataclasses.replace(program, stride=w)
    x = np.ascontiguousarray(values[rows][:, idx])
    (got, _), secs = timed(lambda: run_int8(prog, x))
    if len(got) != int(full.sum()):
        raise RuntimeError(f"{entity.name}: int8 gave {len(got)} windows for {int(full.sum())} rows")
    scores = np.empty(len(ext), dtype=np.float64)
    scores[full] = got
    scores[~full] = got[0]
    return scores, secs


def saved_search(entity: Entity, tuned_from: Path | None) -> dict[str, Any] | None:
    """The search ``benchmarks/tune_smd.py --save`` ran on this entity's training span (same budget, seed 0, no
    time limit), or ``None`` when ``tuned_from`` is not given or holds no file for the entity."""
    import pickle

    if tuned_from is None:
        return None
    path = tuned_from / f"{entity.name.replace('/', '__')}.pkl"
    return pickle.loads(path.read_bytes()) if path.is_file() else None


def tuned_row(entity: Entity, time_budget: float | None, max_trials: int | None = None,
              tuned_from: Path | None = None) -> Row:
    """The ``tuned`` row: what ``tinywarden.tune`` picks from ``entity.train`` alone, its int8 program scored.

    The search sees the training span only (its own held-out part and synthetic anomalies, never the
    scored labels); the chosen program then scores the protocol's test rows (:func:`scores_at`). Its size
    is the measured flash of the generated C module (code and constants), its train time the search's
    CPU time, compiler runs included. With ``tuned_from`` holding the entity's saved search
    (:func:`saved_search`: SMD and ASD, whose training span is the one ``tune_smd.py`` searches), that search's
    choice is scored instead of searching again, and the row says it had no time limit.
    """
    from tinywarden.errors import TinywardenError
    from tinywarden.features import window_end_rows
    from tinywarden.tune import Budget, tune

    p = entity.protocol
    saved = saved_search(entity, tuned_from)
    if time_budget is not None and math.isinf(time_budget):
        time_budget = None  # `--tune-seconds none`: the full search
    if saved is not None:
        program, s, tune_s, label, flash = (saved["program"], saved["summary"], saved["cpu_s"], saved["label"],
                                            saved["flash"])
        time_budget = saved["time_budget"]
    else:
        try:
            result, tune_s = timed_with_children(lambda: tune(entity.train, Budget(*TUNE_BUDGET), seed=0,
                                                              time_budget=time_budget, max_trials=max_trials))
        except (TinywardenError, ValueError, ArithmeticError) as exc:
            # A search that breaks on one entity (e.g. a candidate's fit raising inside scikit-learn) is a
            # finding to report in that entity's row, not a reason to lose the other entities' measurements.
            reason = str(exc) if isinstance(exc, TinywardenError) else f"{type(exc).__name__}: {exc}"
            return {**_unavailable(entity, "tuned", "tinywarden", True, f"tune failed: {reason}"),
                    "tune_time_budget": time_budget}
        program, s, label, flash = result.program, result.summary(), result.chosen.candidate.label, result.size.flash
    end_rows = window_end_rows(len(entity.stream), p.window, p.test_stride)
    scores, score_s = scores_at(entity, program, end_rows)
    row = _row(entity, "tuned", "tinywarden", True, end_rows, scores, program_params(program),
               flash, tune_s, score_s,
               f"int8 program of the pipeline tinywarden.tune chose per entity from its training span "
               f"({TUNE_BUDGET[0]} B flash / {TUNE_BUDGET[1]} B RAM, Cortex-M4, seed 0), run_int8 with its own "
               "window; bytes = measured flash of the generated C module (code + constants); train s = the "
               "search, compiler included")
    row.update(tuned_family=s["family"], tuned_label=label, tuned_window=s["window"],
               tuned_stride=s["stride"], tuned_channels=len(s["channels"]), flash=s["flash"], ram=s["ram"],
               validation_quality=s["validation"]["quality"], trials=s["trials"], measured=s["measured"],
               stopped_early=s["stopped_early"], tune_time_budget=time_budget, tuned_from_saved=saved is not None)
    return row


def peer_rows(entity: Entity, train_x: Any, test: tuple[Any, Any], feature_s: float,
              only: Sequence[str] | None = None) -> list[Row]:
    """Rows of every peer on the shared features; scoring time includes the feature extraction."""
    from benchmarks.peers import PEERS

    end_rows, test_x = test
    rows: list[Row] = []
    for name, factory in PEERS.items():
        if only is not None and name not in only:
            continue
        peer, fit_s = timed(lambda f=factory: f().fit(train_x))
        scores, score_s = timed(lambda pe=peer: pe.score_samples(test_x))
        note = peer.note
        if hasattr(peer, "check_c"):
            peer.check_c(test_x)
            note += f" (C vs scikit-learn: max rel. diff {peer.c_max_rel_diff_:.1e})"
        rows.append(_row(entity, name, "peer", False, end_rows, scores, peer.n_params_, peer.model_bytes_, fit_s,
                         feature_s + score_s, note))
    return rows


def run_entity(entity: Entity, detectors: Sequence[str] | None = None, peers: Sequence[str] | None = None,
               tune_seconds: float | None = None, tuned_from: Path | None = None) -> list[Row]:
    """Train every detector on ``entity``'s normal span and score its test span.

    The ``tuned`` row is searched with ``tune_seconds`` per entity when that is given and ``detectors``
    is None or names ``tuned`` (or read from ``tuned_from``, see :func:`tuned_row`).
    """
    from tinywarden.features import batch_features
    from tinywarden.pipeline import normal_window_mask

    p = entity.protocol
    tr_ends, tr_x = batch_features(entity.train.values, p.window, p.train_stride)
    # the same normal windows Pipeline.fit uses (its fit and calibration parts together)
    train_x = tr_x[normal_window_mask(entity.train.labels, tr_ends, p.window)]
    test, feature_s = timed(lambda: batch_features(entity.stream.values, p.window, p.test_stride))
    rows = tinywarden_rows(entity, detectors)
    if tune_seconds is not None and (detectors is None or "tuned" in detectors):
        rows.append(tuned_row(entity, tune_seconds, tuned_from=tuned_from))
    return rows + peer_rows(entity, train_x, test, feature_s, peers)


#: (dataset, entity index, quick, detectors, peers, tune seconds or None for no tuned row, saved searches)
Job = tuple[str, int, bool, list[str] | None, list[str] | None, float | None, Path | None]


def _entity_job(job: Job) -> list[Row]:
    """Run the ``index``-th entity of a dataset (a picklable unit of work for the process pool)."""
    dataset, index, quick, detectors, peers, tune_seconds, tuned_from = job
    single_core()
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)  # PyOD/torch chatter, not results
    entity = next(e for i, e in enumerate(scored_entities(dataset, quick=quick)) if i == index)
    rows, secs = timed(lambda: run_entity(entity, detectors, peers, tune_seconds, tuned_from))
    print(f"[{dataset} {index + 1}] {entity.name}: {secs:.0f} s CPU", file=sys.stderr, flush=True)
    return rows


# -- summaries ------------------------------------------------------------------------------------
MEAN_KEYS = ("roc_auc", "row_roc_auc", "pr_auc", "best_f1", *(f"det_rate_fpr{f * 100:g}".replace(".", "_")
             for f in FPR_POINTS), *(f"latency_s_fpr{f * 100:g}".replace(".", "_") for f in FPR_POINTS),
             "n_params", "model_bytes", "train_s")


def summarise(rows: Sequence[Row]) -> list[Row]:
    """One row per (dataset, detector, int8): means over entities (nan-skipping), total throughput."""
    import numpy as np

    out: list[Row] = []
    keys: list[tuple[str, str, bool]] = []
    for r in rows:
        k = (r["dataset"], r["detector"], r["int8"])
        if k not in keys:
            keys.append(k)
    for dataset, detector, int8 in keys:
        group = [r for r in rows if (r["dataset"], r["detector"], r["int8"]) == (dataset, detector, int8)]
        done = [r for r in group if "unavailable" not in r]
        s: Row = {"dataset": dataset, "detector": detector, "family": group[0]["family"], "int8": int8,
                  "n_entities": len(done)}
        if not done:
            s["unavailable"] = group[0]["unavailable"]
            out.append(s)
            continue
        for key in MEAN_KEYS:
            vals = np.array([r[key] for r in done], dtype=np.float64)
            s[key] = float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan
        s["model_bytes"] = int(round(s["model_bytes"]))
        s["n_params"] = int(round(s["n_params"]))
        s["windows_per_s"] = sum(r["timed_windows"] for r in done) / sum(r["score_s"] for r in done)
        s["note"] = done[0]["note"]
        if detector == "tuned":
            s.update(_tuned_summary(group, done))
        out.append(s)
    return out


def _tuned_summary(group: Sequence[Row], done: Sequence[Row]) -> Row:
    """What the searches chose (family counts, most common first), mean flash/RAM, how many hit the limit."""
    from collections import Counter

    chosen = Counter(r["tuned_family"] for r in done)
    return {"chosen_families": dict(chosen.most_common()),
            "flash": int(round(sum(r["flash"] for r in done) / len(done))),
            "ram": int(round(sum(r["ram"] for r in done) / len(done))),
            "n_stopped_early": sum(1 for r in done if r["stopped_early"]),
            "n_unavailable": len(group) - len(done),
            "tune_time_budget": _limit_text([r["tune_time_budget"] for r in group])}


def _seconds(text: str) -> float:
    """``--tune-seconds``: a number, or ``none`` for no limit (infinity here; the search gets ``None``)."""
    return math.inf if text.strip().lower() == "none" else float(text)


def _limit_text(limits: Sequence[float | None]) -> str:
    """The tuned rows' search limits in words: ``"60 s"``, ``"none"``, or both when rows differ."""
    return ", ".join("none" if v is None else f"{v:g} s" for v in sorted(set(limits), key=lambda v: v or 0.0))


def detector_label(r: Row) -> str:
    """The detector cell of a table: the ``tuned`` row also names the families its searches chose."""
    chosen = r.get("chosen_families")
    if r["detector"] != "tuned" or not chosen:
        return r["detector"]
    return f"tuned ({', '.join(f'{fam} x{n}' for fam, n in chosen.items())})"


def goal_check(summary: Sequence[Row]) -> list[Row]:
    """Issue 6's goal per dataset: best int8 tinywarden vs best peer (ROC AUC, size, speed vs river HST).

    Every int8 tinywarden row competes, the ``tuned`` one included; its own AUC and bytes are kept too.
    """
    out: list[Row] = []
    for dataset in dict.fromkeys(r["dataset"] for r in summary):
        rows = [r for r in summary if r["dataset"] == dataset and "unavailable" not in r
                and math.isfinite(r["roc_auc"])]
        ours = [r for r in rows if r["family"] == "tinywarden" and r["int8"]]
        peers = [r for r in rows if r["family"] == "peer"]
        if not ours or not peers:
            continue
        best = max(ours, key=lambda r: r["roc_auc"])
        peer = max(peers, key=lambda r: r["roc_auc"])
        hst = next((r for r in peers if r["detector"] == "river_hst"), None)
        tuned = next((r for r in ours if r["detector"] == "tuned"), None)
        out.append({
            "dataset": dataset, "best_int8": best["detector"], "int8_roc_auc": best["roc_auc"],
            "best_peer": peer["detector"], "peer_roc_auc": peer["roc_auc"],
            "auc_met": best["roc_auc"] >= peer["roc_auc"],
            "bytes_ratio": peer["model_bytes"] / best["model_bytes"],
            "size_met": peer["model_bytes"] >= 10 * best["model_bytes"],
            "speed_ratio_vs_hst": best["windows_per_s"] / hst["windows_per_s"] if hst else math.nan,
            "tuned_roc_auc": tuned["roc_auc"] if tuned else math.nan,
            "tuned_bytes": tuned["model_bytes"] if tuned else None,
        })
    return out


#: Issue 17's goals on mean per-row ROC AUC (../shared/README.md protocol): best int8 pipeline per dataset.
ROW_AUC_GOALS: dict[str, float] = {"smd": 0.93, "asd": 0.90}
#: Issue 17: the tuned row within this much of the best fixed family (int8, row ROC AUC) on every dataset.
TUNED_GAP = 0.01
#: Families shown per entity in the issue-17 tables (the linear floor, the new family, the best int8 so far).
ENTITY_DETECTORS: tuple[str, ...] = ("pca", "gaussian", "knn", "dense_ae", "ensemble", "tuned")


def goal_check_17(summary: Sequence[Row]) -> list[Row]:
    """Issue 17 per dataset, on mean per-row ROC AUC (window ROC AUC where rows are not scored one by one: sim):
    the best int8 row (any size, and with at most ``TUNE_BUDGET[0]`` bytes: int8 constants, the tuned row's
    measured flash), its goal, and the tuned row's gap to the best fixed family (any size, and within budget)."""
    out: list[Row] = []
    for dataset in dict.fromkeys(r["dataset"] for r in summary):
        ours = [r for r in summary if r["dataset"] == dataset and r["family"] == "tinywarden" and r["int8"]
                and "unavailable" not in r]
        key = "row_roc_auc" if any(math.isfinite(r.get("row_roc_auc", math.nan)) for r in ours) else "roc_auc"
        ours = [r for r in ours if math.isfinite(r.get(key, math.nan))]
        fixed = [r for r in ours if r["detector"] != "tuned"]
        if not fixed:
            continue
        best = max(fixed, key=lambda r: r[key])
        small = [r for r in ours if r["model_bytes"] <= TUNE_BUDGET[0]]
        best_small = max(small, key=lambda r: r[key]) if small else None
        fixed_small = [r for r in small if r["detector"] != "tuned"]
        best_fixed_small = max(fixed_small, key=lambda r: r[key]) if fixed_small else None
        tuned = next((r for r in ours if r["detector"] == "tuned"), None)
        out.append({"dataset": dataset, "metric": "row" if key == "row_roc_auc" else "window",
                    "best": best["detector"], "best_auc": best[key], "best_bytes": best["model_bytes"],
                    "best_small": best_small["detector"] if best_small else None,
                    "best_small_auc": best_small[key] if best_small else math.nan,
                    "goal": ROW_AUC_GOALS.get(dataset),
                    "tuned_auc": tuned[key] if tuned else math.nan,
                    "tuned_gap": tuned[key] - best[key] if tuned else math.nan,
                    "best_fixed_small": best_fixed_small["detector"] if best_fixed_small else None,
                    "tuned_gap_small": (tuned[key] - best_fixed_small[key]
                                        if tuned and best_fixed_small else math.nan)})
    return out


def goal17_text(goals: Sequence[Row], rows: Sequence[Row]) -> list[str]:
    """The issue-17 section: the goal table, then per-entity row ROC AUC for ENTITY_DETECTORS on SMD and ASD."""
    lines = ["", "## Goal check (issue 17, per-row ROC AUC)", "",
             f"Mean per-row ROC AUC (../shared/README.md convention, no point-adjust) of the int8 rows (sim: window "
             f"ROC AUC, its rows are scored at stride 64). *best int8*: any size, fixed families; *within budget*: "
             f"int8 constants at most {TUNE_BUDGET[0]} B (the `tuned` row: measured flash, code included). Goals: "
             f"SMD >= {ROW_AUC_GOALS['smd']}, ASD >= {ROW_AUC_GOALS['asd']} within budget; `tuned` within "
             f"{TUNED_GAP} of the best fixed family on every dataset and at or above it on at least two. The last "
             "column compares `tuned` with the best fixed family whose int8 constants fit the budget.", "",
             "| dataset | AUC | best int8 | AUC | bytes | best within budget | AUC | goal | tuned AUC | "
             "tuned - best fixed | tuned - best fixed within budget |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for g in goals:
        goal = "–" if g["goal"] is None else (f"{g['goal']:.2f} " + (
            "met" if g["best_small_auc"] >= g["goal"] else "**short**"))
        gap = g["tuned_gap"]
        gap_cell = "–" if not math.isfinite(gap) else f"{gap:+.3f} " + ("met" if gap >= -TUNED_GAP else "**short**")
        small_cell = ("–" if not math.isfinite(g["tuned_gap_small"])
                      else f"{g['tuned_gap_small']:+.3f} ({g['best_fixed_small']})")
        lines.append(f"| {g['dataset']} | {g['metric']} | {g['best']} | {fmt(g['best_auc'])} | {g['best_bytes']:,} | "
                     f"{g['best_small'] or '–'} | {fmt(g['best_small_auc'])} | {goal} | {fmt(g['tuned_auc'])} | "
                     f"{gap_cell} | {small_cell} |")
    gaps = [g["tuned_gap"] for g in goals if math.isfinite(g["tuned_gap"])]
    if gaps:
        within = sum(x >= -TUNED_GAP for x in gaps)
        above = sum(x >= 0 for x in gaps)
        met = within == len(gaps) and above >= 2
        lines += ["", f"`tuned` within {TUNED_GAP} of the best fixed family on {within} of {len(gaps)} datasets, at "
                  f"or above it on {above}: goal {'met' if met else '**not met**'}."]
    for dataset in ROW_AUC_GOALS:
        ents = sorted({r["entity"] for r in rows if r["dataset"] == dataset},
                      key=lambda e: [int(p) if p.isdigit() else p for p in e.replace("-", " ").split()])
        dets = [d for d in ENTITY_DETECTORS if any(r["dataset"] == dataset and r["detector"] == d for r in rows)]
        if not ents or not dets:
            continue
        lines += ["", f"Per entity, {dataset}, int8 row ROC AUC:", "",
                  "| entity | " + " | ".join(dets) + " |", "|---|" + "---|" * len(dets)]
        for e in ents:
            cells = []
            for d in dets:
                r = next((r for r in rows if (r["dataset"], r["entity"], r["detector"]) == (dataset, e, d)
                          and r["int8"]), None)
                cells.append("–" if r is None or "unavailable" in r else fmt(r["row_roc_auc"]))
            lines.append(f"| {e} | " + " | ".join(cells) + " |")
    return lines


# -- output ---------------------------------------------------------------------------------------
def protocol_text(tune_limits: dict[str, str] | None = None) -> list[str]:
    """The protocol paragraph and table; ``tune_limits``: the ``tuned`` rows' search limit per dataset, if any ran."""
    lines = [
        "Protocol: per entity, every detector is trained on the same normal training windows (tinywarden's "
        "Pipeline holds out 25% of them, in 5 blocks spread over the span, to calibrate a threshold; peers "
        "train on all of them) and "
        "scores the same test windows; window label = any anomalous row in the window. Features: "
        "tinywarden's DEFAULT_FEATURES per channel (mean, std, min, max, rms, band1-3, crossings, "
        "diff_abs_mean, diff_abs_max), identical for every detector except conv_ae, which reads the raw "
        "window. Default parameters everywhere, except the `tuned` row.",
        "",
        "| dataset | window | train stride | test stride | train span | scored span |",
        "|---|---|---|---|---|---|",
    ]
    for p in PROTOCOLS.values():
        lines.append(f"| {p.dataset} | {p.window} | {p.train_stride} | {p.test_stride} | {p.train_span} | "
                     f"{p.test_span} |")
    lines += [
        "",
        "Columns: ROC/PR AUC of window scores vs window labels (sklearn roc_auc_score / average_precision); "
        "ROC AUC (row): each row scored by the window ending at it, vs the row's label (the ../shared/README.md "
        "convention; stride-1 datasets only); best F1 over all thresholds; det. @x% FPR: fraction of labelled "
        "incidents (runs of anomalous rows) with at least one window flagged, at the threshold that lets x% of "
        "the test's normal windows through (no persistence); latency: mean time from incident onset to the "
        "first flagged window at 1% FPR; params/bytes: learned values needed to score, incl. the feature "
        "scaler (float rows: float32; int8 rows: the int8 program's constants; emlearn: compiled object); "
        "train s: fit (+ quantization) time; windows/s: scoring throughput on one core from raw samples to "
        "scores, feature extraction included. All numbers are means over the dataset's entities (NaN skipped: "
        "a NAB series without anomaly has no AUC); windows/s is total windows / total time.",
    ]
    if tune_limits:
        per = "; ".join(f"{d}: {v}" for d, v in tune_limits.items())
        lines += [
            "",
            f"`tuned` (issue 8): per entity, `tinywarden.tune.tune(train, Budget({TUNE_BUDGET[0]}, "
            f"{TUNE_BUDGET[1]}), seed=0, time_budget=limit)` searches family, window/stride, "
            "features, channels and model size on the entity's training span only (its own held-out part "
            "and synthetic anomalies; the scored labels are never seen), each candidate measured as "
            "generated C for a Cortex-M4. **Search limit, wall clock per entity: "
            f"{per}** (`--tune-seconds`; *none*: no limit, the full search `tune` runs by default, on SMD and ASD "
            "the one `benchmarks/tune_smd.py --save` ran on the same training span, read with `--tuned-from`); a "
            "search that reaches its limit "
            "keeps the best candidate measured so far. The chosen int8 program then scores the same rows "
            "as every other detector, each by the trailing window of its own length ending there (extra "
            "context from the training rows before the test split), so every metric uses the same labels: "
            "the window metrics keep the protocol's window labels (an anomalous row among the protocol's "
            "`window` rows), part of which a shorter tuned window cannot see; ROC AUC (row) does not depend "
            "on the window. "
            "Its model bytes are the measured flash of the generated module (code + constants, not only "
            "constants as in the other int8 rows); its train s is the search's CPU time, compiler included.",
        ]
    return lines


def markdown(summary: Sequence[Row], goals: Sequence[Row], info: dict[str, str], datasets: Sequence[str],
             n_entities: dict[str, int], rows: Sequence[Row] = ()) -> str:
    """The results page: protocol, goal check, one table per dataset, the tuned choices (from ``rows``)."""
    tuned = [r for r in rows if r["detector"] == "tuned"]
    limits = {d: _limit_text([r["tune_time_budget"] for r in tuned if r["dataset"] == d])
              for d in dict.fromkeys(r["dataset"] for r in tuned)}
    lines = ["# tinywarden vs peers: detection quality, size and speed", "",
             "Generated by `python benchmarks/quality.py`; do not edit by hand.", "",
             f"Measured {info['date']} on {info['machine']}; Python {info['python']}; commit {info['commit']}; "
             f"{info['versions']}.", ""]
    if info.get("note"):
        lines += [info["note"], ""]
    lines += protocol_text(limits or None)
    lines += ["", "## Goal check (issue 6)", "",
              "Best int8 tinywarden detector (every family and `tuned`) vs best peer by mean window ROC AUC; "
              "goal: AUC at or above the peer's with a model at least 10x smaller, and throughput at least 10x "
              "river HalfSpaceTrees. The last column is the `tuned` row's own AUC and flash bytes.", "",
              "| dataset | best int8 | ROC AUC | best peer | ROC AUC | AUC goal | peer bytes / ours | size goal | "
              "windows/s vs river HST | tuned ROC AUC (bytes) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for g in goals:
        lines.append(f"| {g['dataset']} | {g['best_int8']} | {fmt(g['int8_roc_auc'])} | {g['best_peer']} | "
                     f"{fmt(g['peer_roc_auc'])} | {'met' if g['auc_met'] else '**short**'} | "
                     f"{g['bytes_ratio']:.1f}x | {'met' if g['size_met'] else '**short**'} | "
                     f"{g['speed_ratio_vs_hst']:.1f}x | {_tuned_cell(g)} |")
    lines += goal17_text(goal_check_17(summary), rows)
    notes: dict[str, str] = {}
    for dataset in datasets:
        rows = [r for r in summary if r["dataset"] == dataset]
        if not rows:
            continue
        lines += ["", f"## {dataset} ({n_entities.get(dataset, 0)} entities)", "",
                  "| " + " | ".join(t for _, t in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        for r in rows:
            if "unavailable" in r:
                lines.append(f"| {detector_label(r)} | {'yes' if r['int8'] else 'no'} | not available: "
                             f"{r['unavailable']} |"
                             + " |" * (len(COLUMNS) - 3))
                continue
            cells = [fmt(r[k], 0 if k in ("train_s",) and r[k] >= 10 else 3) if k != "int8" else
                     ("yes" if r[k] else "no") for k, _ in COLUMNS]
            cells[0] = detector_label(r)
            lines.append("| " + " | ".join(cells) + " |")
            notes.setdefault(f"{r['detector']}{' int8' if r['int8'] else ''}", r["note"])
    lines += ["", "## What each row is", ""]
    lines += [f"- **{k}**: {v}" for k, v in notes.items()]
    if tuned:
        lines += _tuned_table(tuned)
    return "\n".join(lines) + "\n"


def _tuned_cell(g: Row) -> str:
    if g["tuned_bytes"] is None:
        return "–"
    return f"{fmt(g['tuned_roc_auc'])} ({g['tuned_bytes']:,} B flash)"


def _tuned_table(tuned: Sequence[Row]) -> list[str]:
    """One line per entity: the pipeline its search chose, measured size, and how it scored."""
    lines = ["", "## The tuned pipeline per entity", "",
             "| dataset | entity | chosen pipeline | ch. | flash B | RAM B | val. quality | ROC AUC (window) | "
             "ROC AUC (row) | search s | limit reached |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in tuned:
        if "unavailable" in r:
            lines.append(f"| {r['dataset']} | {r['entity']} | not available: {r['unavailable']} |" + " |" * 8)
            continue
        lines.append(f"| {r['dataset']} | {r['entity']} | {r['tuned_label']} | {r['tuned_channels']} | "
                     f"{r['flash']:,} | {r['ram']:,} | {fmt(r['validation_quality'])} | {fmt(r['roc_auc'])} | "
                     f"{fmt(r['row_roc_auc'])} | {r['train_s']:.0f} | {'yes' if r['stopped_early'] else 'no'} |")
    return lines


def plot(summary: Sequence[Row], path: Path, datasets: Sequence[str]) -> None:
    """Mean window ROC AUC against model bytes, one panel per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [d for d in datasets if any(r["dataset"] == d for r in summary)]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 4.0), squeeze=False)
    styles = {("tinywarden", True): ("o", "tab:blue", "tinywarden int8"),
              ("tinywarden", False): ("s", "tab:cyan", "tinywarden float"),
              ("peer", False): ("^", "tab:red", "peer")}
    for ax, dataset in zip(axes[0], shown, strict=True):
        for r in summary:
            if r["dataset"] != dataset or "unavailable" in r or not math.isfinite(r["roc_auc"]):
                continue
            marker, color, label = (("*", "tab:green", "tinywarden tuned") if r["detector"] == "tuned"
                                    else styles[(r["family"], r["int8"])])
            ax.scatter(r["model_bytes"], r["roc_auc"], marker=marker, color=color, label=label)
            ax.annotate(r["detector"], (r["model_bytes"], r["roc_auc"]), fontsize=7, xytext=(3, 2),
                        textcoords="offset points")
        ax.set_xscale("log")
        ax.set_title(dataset)
        ax.set_xlabel("model bytes (log)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean window ROC AUC")
    handles, labels = axes[0][0].get_legend_handles_labels()
    uniq = dict(zip(labels, handles, strict=False))
    fig.legend(uniq.values(), uniq.keys(), loc="lower center", ncol=3, fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- command line ---------------------------------------------------------------------------------
def _names(text: str | None) -> list[str] | None:
    return None if text is None else [v.strip() for v in text.split(",") if v.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one small entity per dataset (smoke test, < 2 min)")
    ap.add_argument("--datasets", default=",".join(DATASETS), help=f"comma list from {', '.join(DATASETS)}")
    ap.add_argument("--json", type=Path, help="also write the per-dataset rows as a JSON list to this file")
    ap.add_argument("--results", type=Path, default=None,
                    help="folder for quality.md/.png/.json (default benchmarks/results; --quick: none)")
    ap.add_argument("--detectors", default=None,
                    help="comma list of tinywarden detectors (default: every one in tinywarden.detectors.REGISTRY)")
    ap.add_argument("--peers", default=None, help="comma list of peers (default: all in benchmarks/peers)")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                    help="entities run in parallel worker processes, one core each (default: 2)")
    ap.add_argument("--tune-seconds", type=_seconds, default=None,
                    help=f"wall-clock limit of the tuned row's search per entity, or none: the full search, as "
                         f"`tune` runs by default (default {TUNE_SECONDS:g}; --quick: {TUNE_SECONDS_QUICK:g})")
    ap.add_argument("--no-tune", action="store_true", help="leave the tuned row out (no search)")
    ap.add_argument("--tuned-from", type=Path, default=None,
                    help="directory of searches saved by benchmarks/tune_smd.py --save: an entity with a file "
                         "there gets that search's choice (no time limit) as its tuned row instead of a new search")
    ap.add_argument("--render", type=Path, default=None,
                    help="measure nothing: rebuild the table, plot and JSON from a saved quality-entities.json")
    ap.add_argument("--merge", type=Path, action="append", default=[],
                    help="with --render: rows of this saved quality-entities.json (a run of some detectors alone) "
                         "replace or join the rendered ones; the page says which, and when they were measured")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.tune_seconds is not None and not args.tune_seconds > 0:
        ap.error(f"--tune-seconds must be a positive number or none, got {args.tune_seconds:g}")
    if args.no_tune:
        args.tune_seconds = None
    elif args.tune_seconds is None:
        args.tune_seconds = TUNE_SECONDS_QUICK if args.quick else TUNE_SECONDS
    args.detectors = _names(args.detectors)
    args.peers = _names(args.peers)
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = [d for d in args.datasets if d not in DATASETS]
    if unknown or not args.datasets:
        ap.error(f"unknown dataset(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(DATASETS)}")
    if args.results is None and not args.quick:
        args.results = RESULTS
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python benchmarks/quality.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    if args.render is not None:
        saved = json.loads(args.render.read_text())
        rows, info = saved["rows"], saved["machine"]
        for path in args.merge:
            rows, info = merge_rows(rows, info, json.loads(path.read_text()))
        info = {**info, "note": " ".join(filter(None, [info.get("note", ""), f"Rendered by `{command}`."]))}
        n_entities = {d: len({r["entity"] for r in rows if r["dataset"] == d}) for d in args.datasets}
        return _write(args, rows, info, n_entities)
    single_core()
    info = {**machine_info(), "command": command}
    rows = []
    n_entities = {}
    jobs: list[Job] = []
    for dataset in args.datasets:
        try:
            n = sum(1 for _ in scored_entities(dataset, quick=args.quick))
        except FileNotFoundError as exc:
            print(f"skipping {dataset}: {exc}", file=sys.stderr)
            continue
        n_entities[dataset] = n
        jobs += [(dataset, i, args.quick, args.detectors, args.peers, args.tune_seconds, args.tuned_from)
                 for i in range(n)]
    if args.jobs > 1 and len(jobs) > 1:
        import multiprocessing

        # each worker process is single-threaded and times its own CPU, so parallel entities do not
        # distort each other's throughput figures
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            for part in pool.imap(_entity_job, jobs):
                rows += part
    else:
        for job in jobs:
            rows += _entity_job(job)
    if not rows:
        print("no dataset found: set TINYWARDEN_DATA to the shared data folder", file=sys.stderr)
        return 2
    return _write(args, rows, info, n_entities)


def merge_rows(rows: list[Row], info: dict[str, str], extra: dict[str, Any]) -> tuple[list[Row], dict[str, str]]:
    """``rows`` with ``extra["rows"]`` replacing those of the same (dataset, entity, detector, int8), and ``info``
    with a note naming the merged detectors and when and at which commit they were measured."""
    key = ("dataset", "entity", "detector", "int8")
    new = {tuple(r[k] for k in key) for r in extra["rows"]}
    merged = [r for r in rows if tuple(r[k] for k in key) not in new] + list(extra["rows"])
    dets = ", ".join(sorted({r["detector"] for r in extra["rows"]}))
    sets = ", ".join(sorted({r["dataset"] for r in extra["rows"]}))
    m = extra["machine"]
    how = f" by `{m['command']}`" if m.get("command") else ""
    note = (f"Rows of {dets} on {sets} measured separately (run alone, then merged): {m['date']}, commit "
            f"{m['commit']}{how}.")
    return merged, {**info, "note": " ".join(filter(None, [info.get("note", ""), note]))}


def _write(args: argparse.Namespace, rows: list[Row], info: dict[str, str], n_entities: dict[str, int]) -> int:
    """Print the table; write --json and the results folder."""
    summary = summarise(rows)
    goals = goal_check(summary)
    text = markdown(summary, goals, info, args.datasets, n_entities, rows)
    print(text)
    public = [json_safe(r) for r in summary]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(public, indent=1) + "\n")
    if args.results:
        args.results.mkdir(parents=True, exist_ok=True)
        (args.results / "quality.md").write_text(text)
        (args.results / "quality.json").write_text(json.dumps(public, indent=1) + "\n")
        detail = [json_safe(r) for r in rows]
        (args.results / "quality-entities.json").write_text(json.dumps({"machine": info, "rows": detail},
                                                                       indent=1) + "\n")
        plot(summary, args.results / "quality.png", args.datasets)
    return 0


if __name__ == "__main__":
    sys.exit(main())

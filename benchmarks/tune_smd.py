"""`tinywarden tune` on every SMD machine under a device budget, judged on the labelled test split.

For each machine: run the search on the *train* split only (no labels: synthetic anomalies in its held-out
last 20 %), then score the *test* split with the chosen pipeline's int8 program (the numbers the C
returns) at stride 1, so every row gets the score of the trailing window ending at it (the first
``window - 1`` rows take the first window's score), and compute the raw per-row ROC AUC (no point-adjust),
as in ``shared/README.md``. The test labels are never seen by the search. The README's window-feature PCA
figure (SMD 0.890) is the bar; the float pipeline's AUC is shown beside the int8 one.

    python benchmarks/tune_smd.py                   # 8 KB flash / 4 KB RAM, markdown to benchmarks/results
    python benchmarks/tune_smd.py --json --machines machine-1-6

A few labels (issue 17 item 4, ``--labels 1,3,10``): per machine and ``k``, the test split's first ``k``
incidents (runs of anomalous rows) and the rows before them, up to ``LABEL_MARGIN`` rows after the k-th, are
the labelled data a team would pass to ``tune --validate``; the rows after them are the evaluation part. Every
candidate the label-free search built and scored is ranked again by ``tune``'s own rule for ``--validate``
(:func:`tinywarden.tune.search.choose`: the labelled AUC picks among the ``SHORTLIST`` best by the label-free
rank), and also by the labelled AUC alone; the label-free choice, the k-label choices and *hindsight* (the
candidate with the best AUC on the evaluation part) are all scored on that same evaluation part with the
candidates' own int8 programs (fitted on the first 80 % of train). A real ``tune --validate`` would also steer
its model stage by the labels (other input choices may be measured); this re-ranks the candidates the
label-free search measured.

The selection study (issue 17 items 2-4): ``--dump DIR`` writes every scored candidate's per-row validation and
test scores; ``--render --rows ROWS --study DIR`` adds per-entity tables of other label-free rules (centrality,
a Borda rank), fused candidates (the ensemble stage's members, without a budget) and the k-label rules. ASD
entities (``omi-*``) run the same way with ``--machines``. Labels enter selection only in the k-label rules.

    python benchmarks/tune_smd.py --dump /tmp/d --rows /tmp/rows.jsonl --json --machines machine-1-6,omi-1
    python benchmarks/tune_smd.py --render --rows /tmp/rows.jsonl --study /tmp/d
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pickle
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata, spearmanr
from sklearn.metrics import precision_recall_curve, roc_auc_score

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import timed_with_children  # noqa: E402 (after the path fix above)

from tinywarden.detectors import REGISTRY
from tinywarden.program import run_int8
from tinywarden.telemetry import read_series
from tinywarden.tune import Budget, tune
from tinywarden.tune.search import SEGMENT_WINDOWS, SHORTLIST, choose, select_channels
from tinywarden.tune.synthetic import ANOMALY_TYPES, inject

DATA = Path(os.environ.get("TINYWARDEN_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
#: shared/README.md: PCA (95 % variance) reconstruction error on window features, w=16, mean per-row ROC AUC
REFERENCE = 0.890


def per_row(scores: np.ndarray, n_rows: int, window: int) -> np.ndarray:
    """Stride-1 window scores -> one score per row (rows before the first full window take its score)."""
    out = np.empty(n_rows)
    out[window - 1 :] = scores
    out[: window - 1] = scores[0]
    return out


#: Rows after the k-th labelled incident that still belong to the labelled part (the longest window's reach).
LABEL_MARGIN = 128


def incidents(labels: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` of each run of anomalous rows."""
    y = np.r_[0, labels.astype(np.int8), 0]
    d = np.diff(y)
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


def few_labels(result: Any, test: Any, ks: list[int]) -> list[dict[str, Any]]:
    """Per ``k``: test AUC (evaluation part) of the label-free choice, the k-label choices and hindsight."""
    ok = [t for t in result.trials if t.status == "ok" and t.program is not None]
    runs = incidents(test.labels)
    scores = {}
    for t in ok:
        ts = select_channels(test, t.program.channels)
        sc, _ = run_int8(dataclasses.replace(t.program, stride=1), ts.values)
        scores[id(t)] = per_row(sc, len(ts), t.program.window)
    out = []
    for k in ks:
        if len(runs) <= k:
            out.append({"k": k, "available": False, "incidents": len(runs)})
            continue
        cut = min(runs[k - 1][1] + LABEL_MARGIN, runs[k][0])
        y_lab, y_eval = test.labels[:cut], test.labels[cut:]

        def auc(t: Any, part: slice, y: np.ndarray) -> float:
            return float(roc_auc_score(y, scores[id(t)][part]))

        lab = {id(t): auc(t, slice(0, cut), y_lab) for t in ok}
        ev = {id(t): auc(t, slice(cut, None), y_eval) for t in ok}

        chosen_k = next(t for t in ok if t.candidate == choose([with_labels(t, lab[id(t)]) for t in ok]).candidate)
        only_k = max(ok, key=lambda t: (not t.fpr_far, lab[id(t)], -(t.flash or 0)))
        best = max(ok, key=lambda t: ev[id(t)])
        out.append({"k": k, "available": True, "incidents": len(runs), "labelled_rows": cut,
                    "eval_rows": len(y_eval), "eval_incidents": len(runs) - k,
                    "label_free": ev[id(result.chosen)], "label_free_pick": result.chosen.candidate.label,
                    "with_k": ev[id(chosen_k)], "with_k_pick": chosen_k.candidate.label,
                    "labelled_only": ev[id(only_k)], "labelled_only_pick": only_k.candidate.label,
                    "hindsight": ev[id(best)], "hindsight_pick": best.candidate.label, "candidates": len(ok)})
    return out


def with_labels(t: Any, labelled_auc: float) -> Any:
    """Trial ``t`` as ``tune --validate`` would score it given ``labelled_auc`` (averaged into its quality)."""
    q = (t.synthetic_auc + labelled_auc) / 2.0 if np.isfinite(t.synthetic_auc) else labelled_auc
    return dataclasses.replace(t, quality=q, labelled_auc=labelled_auc)


def save_result(result: Any, cpu_s: float, out: Path) -> None:
    """The search's outcome for ``benchmarks/quality.py --tuned-from`` (its ``tuned`` row then scores this very
    pipeline instead of searching again): the chosen int8 program, its summary and the search's CPU seconds
    (compiler runs included)."""
    out.write_bytes(pickle.dumps({"program": result.program, "summary": result.summary(),
                                  "label": result.chosen.candidate.label, "flash": result.size.flash,
                                  "cpu_s": cpu_s, "time_budget": None}))


def dump_candidates(result: Any, train: Any, test: Any, seed: int, out: Path) -> None:
    """Every scored candidate's validation and test scores (per row, on its calibrated scale: 1 = threshold)
    to ``out`` (a pickle), for studying selection criteria offline. Validation rows are the held-out tail
    the search scored (train's last 20 %), clean and with each synthetic anomaly type injected as ``tune``
    injects them; test scores are for scoring only."""
    fit_part, val_part = train.split(0.8)
    spread = fit_part.values.std(axis=0)
    cands = []
    injected: dict[tuple[int, str], Any] = {}
    for t in (t for t in result.trials if t.status == "ok" and t.program is not None):
        p = dataclasses.replace(t.program, stride=1)
        unit = float(max(t.program.threshold, 1))
        idx = [train.channels.index(c) for c in p.channels]
        row: dict[str, Any] = {"trial": t.to_dict(), "label": t.candidate.label, "threshold": unit}
        sc, _ = run_int8(p, val_part.values[:, idx])
        row["val_clean"] = (per_row(sc, len(val_part), p.window) / unit).astype(np.float32)
        row["val_inj"] = {}
        for kind in ANOMALY_TYPES:
            key = (p.window, kind)
            if key not in injected:
                seg = p.window * SEGMENT_WINDOWS.get(kind, 1)
                injected[key] = inject(val_part.values, kind, seg, spread, seed=seed)
            sc, _ = run_int8(p, injected[key].values[:, idx])
            row["val_inj"][kind] = (per_row(sc, len(val_part), p.window) / unit).astype(np.float32)
        sc, _ = run_int8(p, test.values[:, idx])
        row["test"] = (per_row(sc, len(test), p.window) / unit).astype(np.float32)
        cands.append(row)
    out.write_bytes(pickle.dumps({"candidates": cands, "chosen": result.chosen.candidate.label,
                                  "injected_rows": {k: v.rows for k, v in injected.items()},
                                  "test_labels": test.labels}))


# -- selection study (issue 17 items 2-4), from the --dump files --------------------------------------------
def centrality(cands: list[dict[str, Any]]) -> np.ndarray:
    """Per candidate: Spearman correlation of its validation scores (clean + every injected copy, per row) with
    the median rank over all candidates (agreement between members: Goswami et al., ICLR 2023)."""
    ranks = np.array([rankdata(np.concatenate([c["val_clean"], *c["val_inj"].values()])) for c in cands])
    consensus = np.median(ranks, axis=0)
    return np.array([spearmanr(r, consensus).statistic for r in ranks])


#: Column titles of the label-free study table, where they differ from the key.
TITLES = {"row_synthetic": "row synth.", "tie_q": "tie", "spread_test": "spread"}
#: The *occam* rule: the smallest candidate (flash) within this much synthetic AUC of the best.
OCCAM_MARGIN = 0.02


def row_synthetic_by_type(c: dict[str, Any], injected_rows: dict[tuple[int, str], np.ndarray]) -> dict[str, float]:
    """Per anomaly type, the per-row ROC AUC of a candidate's stride-1 validation scores: injected rows (each
    scored by the window ending at it) against the rows of the clean copy, as the test split is scored."""
    w = c["trial"]["window"]
    aucs = {}
    for kind, sc in c["val_inj"].items():
        rows = injected_rows[(w, kind)]
        if rows.any():
            y = np.r_[np.zeros(len(c["val_clean"])), np.ones(int(rows.sum()))]
            aucs[kind] = float(roc_auc_score(y, np.r_[c["val_clean"], sc[rows]]))
    return aucs


def min_regret(by_type: list[dict[str, float]], pool: list[int]) -> np.ndarray:
    """Per candidate, minus its largest shortfall over the anomaly types from the best AUC of that type among
    ``pool`` (minimax regret: the choice that is never far from the best, whichever type the field holds)."""
    kinds = set.intersection(*(set(by_type[i]) for i in pool)) if pool else set()
    if not kinds:
        return np.full(len(by_type), -np.inf)
    best = {k: max(by_type[i][k] for i in pool) for k in kinds}
    return np.array([-max(best[k] - t.get(k, 0.0) for k in kinds) for t in by_type])


def _order(values: np.ndarray) -> np.ndarray:
    """Ranks scaled to (0, 1], 1 = the largest value."""
    return rankdata(values) / len(values)


#: The response tiers' bars on the calibrated scale (1 = the threshold) of examples/policy.toml: alert, constrain
#: and harden at margins 0, 0.25 and 0.6.
TIER_BARS = (1.0, 1.25, 1.6)


def alarm_figures(s: np.ndarray, y: np.ndarray, bar: float) -> dict[str, float]:
    """Rows alarmed at ``s >= bar``: row precision, recall and F1, the share of incidents with an alarmed row and
    the share of normal rows alarmed."""
    a = s >= bar
    tp, fp = int((a & (y == 1)).sum()), int((a & (y == 0)).sum())
    p, r = tp / max(tp + fp, 1), tp / max(int(y.sum()), 1)
    runs = incidents(y)
    return {"f1": 2 * p * r / (p + r) if p + r else 0.0, "precision": p, "recall": r,
            "incidents": float(np.mean([a[i:j].any() for i, j in runs])) if runs else math.nan,
            "normal": float(a[y == 0].mean())}


def best_f1_bar(s: np.ndarray, y: np.ndarray) -> float:
    """The bar (alarm at ``s >= bar``) with the highest row F1 on ``(s, y)``."""
    p, r, t = precision_recall_curve(y, s)
    f = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)[:-1]
    return float(t[int(np.argmax(f))])


def labelled_bars(s: np.ndarray, y: np.ndarray, cut: int) -> dict[str, Any]:
    """What the labelled rows ``[:cut]`` set on the calibrated scale of scores ``s``, judged on the rows after
    ``cut``: the alarm threshold (label-free: the calibrated 1; with labels: the best row F1 on the labelled
    rows, or the 99th percentile of the labelled part's normal rows, i.e. the threshold calibrated again on the
    recent normal rows the labels vouch for; hindsight: the best on the evaluated rows) and the harden tier's
    bar (the policy's :data:`TIER_BARS`; with labels: the lowest peak among the labelled incidents, so that
    each of them would have reached it, never below the constrain bar)."""
    s_lab, y_lab, s_ev, y_ev = s[:cut], y[:cut], s[cut:], y[cut:]
    alarm = {"label_free": np.nextafter(TIER_BARS[0], np.inf), "labels": best_f1_bar(s_lab, y_lab),
             "normal_rows": np.nextafter(float(np.quantile(s_lab[y_lab == 0], 0.99)), np.inf),
             "hindsight": best_f1_bar(s_ev, y_ev)}
    harden = {"policy": TIER_BARS[2],
              "labels": max(TIER_BARS[1], min(float(s_lab[i:j].max()) for i, j in incidents(y_lab)))}
    return {"alarm": {k: {"bar": float(v), **alarm_figures(s_ev, y_ev, v)} for k, v in alarm.items()},
            "harden": {k: {"bar": float(v), **alarm_figures(s_ev, y_ev, v)} for k, v in harden.items()}}


def study(d: dict[str, Any], ks: list[int]) -> dict[str, Any]:
    """Test AUC of the candidate (or fused candidates) each selection rule picks, and hindsight's, for one entity.

    Label-free rules see only the validation part (train's last 20 %): *synthetic* is ``tune``'s rank
    (:func:`rank_key`); *centrality* ranks by agreement with the other candidates; *borda* averages the ranks of
    the synthetic AUC, the centrality and (lower is better) the 99th percentile of the clean validation
    windows' calibrated scores. All three keep ``tune``'s FPR gate first. *ens2* / *ens3*: the mean calibrated
    score (score / own threshold) of the synthetic rank's choice and the next-best candidates of other families
    on the same input. Test labels enter only the AUC, except in the k-label rules (the first k incidents)."""
    cands = d["candidates"]
    y = np.asarray(d["test_labels"]).astype(int)
    auc = np.array([roc_auc_score(y, c["test"]) for c in cands])
    trials = [c["trial"] for c in cands]
    keep = [i for i, t in enumerate(trials) if not t["fpr_far"]]
    gate = np.array([t["fpr_ok"] for t in trials])
    synth = np.array([t["quality"] if t["quality"] is not None else -1.0 for t in trials])
    base = np.array([(not t["fpr_far"], t["fpr_ok"], 0.0 if t["fpr_ok"] else -(t["fpr"] or 0.0), synth[i],
                      -(t["flash"] or 0)) for i, t in enumerate(trials)], dtype=object)
    order = sorted(range(len(cands)), key=lambda i: tuple(base[i]), reverse=True)
    cen = centrality(cands)
    q99 = np.array([np.quantile(c["val_clean"], 0.99) for c in cands])
    sub = np.array(keep)
    borda = np.full(len(cands), -np.inf)
    borda[sub] = _order(synth[sub]) + _order(cen[sub]) + _order(-q99[sub])

    def best(score: np.ndarray) -> int:
        return max(keep, key=lambda i: (gate[i], score[i]))

    by_type = [row_synthetic_by_type(c, d["injected_rows"]) for c in cands]
    rows_synth = np.array([np.mean(list(t.values())) if t else -1.0 for t in by_type])
    ok_synth = [i for i in keep if gate[i]] or keep
    top_q = max(synth[i] for i in ok_synth)
    occam = min((i for i in ok_synth if synth[i] >= top_q - OCCAM_MARGIN), key=lambda i: (trials[i]["flash"] or 0))
    picks = {"synthetic": order[0], "centrality": best(cen), "borda": best(borda), "row_synthetic": best(rows_synth),
             "occam": occam, "both": best((synth + rows_synth) / 2), "regret": best(min_regret(by_type, ok_synth))}
    out: dict[str, Any] = {"candidates": len(cands), "hindsight": float(auc.max()),
                           "hindsight_pick": cands[int(auc.argmax())]["label"]}
    # how close the label-free rank's first SHORTLIST are on validation, and how far apart on the test labels
    out["tie_q"] = float(synth[order[0]] - synth[order[SHORTLIST - 1]]) if len(order) >= SHORTLIST else math.nan
    out["spread_test"] = float(np.ptp(auc[order[:SHORTLIST]]))
    # how well each validation signal orders the candidates the way the test labels do (Spearman, FPR-gated ones)
    for name, signal in (("synthetic", synth), ("centrality", cen), ("steadiness", -q99)):
        out[f"rho_{name}"] = float(spearmanr(signal[sub], auc[sub]).statistic)
    for name, i in picks.items():
        out[name], out[f"{name}_pick"] = float(auc[i]), cands[i]["label"]
    first = cands[order[0]]
    # as tune's ensemble stage: members are feature families on the first choice's input (none when it reads the
    # raw window, and then the "ensemble" is the first choice alone)
    feat = [i for i in order
            if REGISTRY[trials[i]["family"]].input_kind == "features" and trials[i]["family"] != "ensemble"]
    same = [i for i in feat if _input(cands[i]) == _input(first)] if feat and feat[0] == order[0] else [order[0]]
    for m in (2, 3):
        members: list[int] = []
        for i in same:
            if len(members) < m and trials[i]["family"] not in {trials[j]["family"] for j in members}:
                members.append(i)
        fused = np.mean([cands[i]["test"] for i in members], axis=0)
        out[f"ens{m}"] = float(roc_auc_score(y, fused))
        out[f"ens{m}_members"] = [cands[i]["label"].split(" ")[0] for i in members]
    runs = incidents(y)
    out["few_labels"] = []
    for k in ks:
        if len(runs) <= k:
            out["few_labels"].append({"k": k, "available": False, "incidents": len(runs)})
            continue
        cut = min(runs[k - 1][1] + LABEL_MARGIN, runs[k][0])
        lab = np.array([roc_auc_score(y[:cut], c["test"][:cut]) for c in cands])
        ev = np.array([roc_auc_score(y[cut:], c["test"][cut:]) for c in cands])
        tune_rule = max(keep, key=lambda i: (gate[i], (synth[i] + lab[i]) / 2 if synth[i] >= 0 else lab[i]))
        only = max(keep, key=lambda i: lab[i])
        short = max(order[:SHORTLIST], key=lambda i: lab[i])
        out["few_labels"].append({
            "k": k, "available": True, "incidents": len(runs), "eval_rows": len(y) - cut,
            "eval_incidents": len(runs) - k, "label_free": float(ev[order[0]]), "tune_rule": float(ev[tune_rule]),
            "labels_only": float(ev[only]), "shortlist": float(ev[short]), "shortlist_pick": cands[short]["label"],
            "hindsight": float(ev.max()), "hindsight_pick": cands[int(ev.argmax())]["label"],
            "bars": labelled_bars(np.asarray(cands[order[0]]["test"], dtype=np.float64), y, cut)})
    return out


def study_markdown(studies: dict[str, dict[str, Any]]) -> list[str]:
    """Per-entity tables of the selection study: label-free rules, fused candidates, k labelled incidents."""
    lines = ["", "## Why the label-free choice misses hindsight, and what changes it (issue 17 items 2-4)", "",
             "From `--dump`: every candidate the search scored, fitted on train's first 80 %, its int8 program run "
             "at stride 1 over the validation part (train's last 20 %, clean and with each synthetic anomaly type) "
             "and over the test split. Every figure is the per-row test ROC AUC of the candidate a rule picks. "
             "Label-free rules see only the validation part: *synthetic* is `tune`'s rank; *centrality* the "
             "agreement of a candidate's validation scores with the median rank of all candidates; *borda* the mean "
             "rank of synthetic AUC, centrality and the clean validation windows' 99th-percentile calibrated score "
             "(lower = steadier on held-out normal); all keep the FPR gate first. *ens2* / *ens3*: the mean of "
             "calibrated scores (score / own threshold) of the synthetic choice and the next best other families on "
             "its input, feature families only, as `tune`'s ensemble stage builds them (no budget applied here: the "
             "members' sizes add up; a raw-window first choice is not fused). *hindsight*: the best candidate on "
             "the test labels. *ρ*: Spearman correlation, over the candidates not far over the FPR target, between a "
             "validation signal and the candidates' test AUC (*steady*: minus the clean 99th percentile): the "
             "diagnosis of why the label-free choice misses (a signal that orders the candidates as the test labels "
             "do has ρ near 1). *row synth.*: the synthetic AUC read per row at stride 1 (injected rows vs the clean "
             f"copy's rows, as the test split is scored); *occam*: the smallest flash within {OCCAM_MARGIN} of the "
             f"best synthetic AUC. *both*: the mean of the synthetic and the row synth. AUC; *regret*: the "
             "smallest largest shortfall, over the anomaly types, of a candidate's row AUC from the best of that "
             "type (minimax regret). "
             f"*tie*: synthetic AUC of the label-free rank's first minus its {SHORTLIST}th; "
             f"*spread*: max - min test AUC of those {SHORTLIST}. Test labels enter only the AUC, ρ and spread here.",
             ""]
    keys = ("synthetic", "centrality", "borda", "row_synthetic", "both", "regret", "occam", "ens2", "ens3", "hindsight",
            "tie_q",
            "spread_test")
    rhos = ("rho_synthetic", "rho_centrality", "rho_steadiness")
    for prefix, name in (("machine", "SMD"), ("omi", "ASD")):
        ents = sorted(e for e in studies if e.startswith(prefix))
        if not ents:
            continue
        lines += [f"### {name}: label-free selection", "",
                  "| entity | cand. | " + " | ".join(TITLES.get(k, k) for k in keys)
                  + " | ρ synth. | ρ centr. | ρ steady | synthetic pick | "
                  "hindsight pick | ens3 members |",
                  "|---|---:|" + "---:|" * (len(keys) + len(rhos)) + "---|---|---|"]
        for e in ents:
            r = studies[e]
            lines.append(f"| {e} | {r['candidates']} | " + " | ".join(f"{r[k]:.3f}" for k in keys + rhos) +
                         f" | {r['synthetic_pick']} | {r['hindsight_pick']} | {'+'.join(r['ens3_members'])} |")
        lines += ["| **mean** | | " + " | ".join(f"**{np.mean([studies[e][k] for e in ents]):.3f}**"
                                                 for k in keys + rhos) + " | | | |", ""]
        lines += [f"### {name}: k labelled incidents", "",
                  f"The test split's first k incidents (to {LABEL_MARGIN} rows after the k-th) are the labelled "
                  "data; AUC on the rest of the test split. *averaged*: the old `tune --validate` rule (labelled AUC "
                  f"averaged into the quality, best over all candidates); *shortlist*: `tune`'s rule now (the labelled "
                  f"AUC picks among the {SHORTLIST} best by the label-free rank); *labels only*: best labelled AUC "
                  "over all. n/a: no more than k incidents.", "",
                  "| entity | k | eval rows (incidents) | label-free | averaged | shortlist | labels only | hindsight "
                  "| gap (shortlist) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        summary = []
        for k in sorted({f["k"] for e in ents for f in studies[e]["few_labels"]}):
            got = []
            for e in ents:
                f = next(f for f in studies[e]["few_labels"] if f["k"] == k)
                if not f["available"]:
                    lines.append(f"| {e} | {k} | n/a ({f['incidents']} incidents) | | | | | | |")
                    continue
                got.append(f)
                lines.append(f"| {e} | {k} | {f['eval_rows']} ({f['eval_incidents']}) | {f['label_free']:.3f} | "
                             f"{f['tune_rule']:.3f} | {f['shortlist']:.3f} | {f['labels_only']:.3f} | "
                             f"{f['hindsight']:.3f} | {f['hindsight'] - f['shortlist']:.3f} |")
            if got:
                m = {c: float(np.mean([f[c] for f in got])) for c in
                     ("label_free", "tune_rule", "shortlist", "labels_only", "hindsight")}
                lines.append(f"| **mean ({len(got)})** | {k} | | {m['label_free']:.3f} | {m['tune_rule']:.3f} | "
                             f"{m['shortlist']:.3f} | {m['labels_only']:.3f} | {m['hindsight']:.3f} | "
                             f"{m['hindsight'] - m['shortlist']:.3f} |")
                summary.append((k, m))
        lines.append("")
        for k, m in summary:
            if k == 3:
                gap, old = m["hindsight"] - m["shortlist"], m["hindsight"] - m["tune_rule"]
                lines += [f"Goal ({name}, k = 3 within 0.005 of hindsight): shortlist gap {gap:.4f} "
                          f"({'met' if gap <= 0.005 else 'NOT met'}; averaged rule {old:.4f}).", ""]
        lines += bars_markdown(name, [f for e in ents for f in studies[e]["few_labels"] if f["available"]])
    return lines + adoption_markdown(studies)


#: The label-free rules weighed against ``tune``'s synthetic rank (issue 17 item 2), fixed with the adoption rule
#: before the test figures of the last two were computed.
CONTENDERS = ("row_synthetic", "both", "regret")


def adoption_markdown(studies: dict[str, dict[str, Any]]) -> list[str]:
    """The adoption rule for a new label-free rule and its outcome: the contender with the best mean test AUC over
    SMD and ASD together replaces ``tune``'s rank only if its mean is above the rank's on each dataset."""
    sets = {name: [e for e in studies if e.startswith(prefix)] for prefix, name in (("machine", "SMD"), ("omi", "ASD"))}
    sets = {k: v for k, v in sets.items() if v}
    if len(sets) < 2:
        return []
    every = [e for v in sets.values() for e in v]

    def mean(rule: str, ents: list[str]) -> float:
        return float(np.mean([studies[e][rule] for e in ents]))

    lines = ["### Adopting a label-free rule", "",
             "Rule fixed before *both* and *regret* were computed (row synth.'s figures were already on this page): "
             "the contender with the best mean over "
             "SMD and ASD together replaces `tune`'s synthetic rank only if its mean is above the rank's on each "
             "dataset. Meta-level selection on the test labels, counted: the select branch weighed about a hundred "
             "rule variants on these same 20 entities (its scripts, overlapping: centrality, Borda ranks, occam "
             "margins, per-type and minimum-type AUCs, FPR penalties, magnitude-scaled anomalies, fused top "
             f"candidates); this page adds {len(CONTENDERS) - 1} ({', '.join(CONTENDERS[1:])}).", "",
             "| rule | " + " | ".join(f"{k} ({len(v)})" for k, v in sets.items()) + f" | all ({len(every)}) |",
             "|---|" + "---:|" * (len(sets) + 1)]
    for rule in ("synthetic", *CONTENDERS, "hindsight"):
        lines.append(f"| {rule} | " + " | ".join(f"{mean(rule, v):.4f}" for v in sets.values())
                     + f" | {mean(rule, every):.4f} |")
    best = max(CONTENDERS, key=lambda r: mean(r, every))
    wins = {k: mean(best, v) > mean("synthetic", v) for k, v in sets.items()}
    verdict = ("adopted" if all(wins.values()) else
               "not adopted: not above the synthetic rank on " + ", ".join(k for k, w in wins.items() if not w))
    return [*lines, "", f"Best contender over all entities: {best} ({mean(best, every):.4f} against "
            f"{mean('synthetic', every):.4f}); {verdict}.", ""]


def bars_markdown(name: str, few: list[dict[str, Any]]) -> list[str]:
    """Per k, the means over entities of what the labelled incidents set: the alarm threshold and the harden bar."""
    lines = [f"### {name}: what k labelled incidents do for the threshold and the response tiers", "",
             "The synthetic rank's choice (what `tune` returns without labels), its scores on the calibrated scale "
             "(1 = its own threshold); every figure is on the evaluation part (the rows after the k labelled "
             "incidents), mean over entities. *alarm*: row F1, precision, recall, share of incidents with an "
             "alarmed row and share of normal rows alarmed, at the calibrated threshold (*label-free*), at the bar "
             "with the best F1 on the labelled rows (*labels*), at the 99th percentile of the labelled part's normal "
             "rows (*normal-rows*: the threshold calibrated again on the recent normal rows the labels vouch for; "
             "added after *labels* was seen to lose) and at the best bar on the evaluated rows (*hindsight*). "
             "*harden*: the share of incidents whose peak reaches the top tier's bar and the share "
             f"of normal rows at or above it, with examples/policy.toml's bar ({TIER_BARS[2]:g}) and with the "
             "lowest peak among the labelled incidents (never below the constrain bar "
             f"{TIER_BARS[1]:g}).", "",
             "| k | entities | rule | median bar | F1 | precision | recall | incidents | normal rows |",
             "|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for k in sorted({f["k"] for f in few}):
        got = [f["bars"] for f in few if f["k"] == k]
        for part, rules in (("alarm", ("label_free", "labels", "normal_rows", "hindsight")),
                            ("harden", ("policy", "labels"))):
            for rule in rules:
                rows = [g[part][rule] for g in got]
                m = {c: float(np.nanmean([r[c] for r in rows])) for c in
                     ("f1", "precision", "recall", "incidents", "normal")}
                lines.append(f"| {k} | {len(got)} | {part}: {rule.replace('_', '-')} | "
                             f"{np.median([r['bar'] for r in rows]):.2f} | {m['f1']:.3f} | {m['precision']:.3f} | "
                             f"{m['recall']:.3f} | {m['incidents']:.3f} | {m['normal']:.4f} |")
    return [*lines, ""]


def _input(c: dict[str, Any]) -> tuple[Any, ...]:
    t = c["trial"]
    return t["window"], t["feature_set"], t["channels"]


def run_one(entity: str, flash: int, ram: int, seed: int, ks: list[int] | None = None,
            dump: Path | None = None, save: Path | None = None) -> dict[str, Any]:
    path = DATA / "smd_asd" / "npz" / f"{entity}.npz"
    train, test = read_series(f"{path}:train"), read_series(f"{path}:test")
    start = time.perf_counter()
    result, cpu_s = timed_with_children(lambda: tune(train, Budget(flash, ram), seed=seed))
    seconds = time.perf_counter() - start
    if dump is not None:
        dump_candidates(result, train, test, seed, dump / f"{entity}.pkl")
    if save is not None:
        save_result(result, cpu_s, save / f"{entity}.pkl")
    prog = dataclasses.replace(result.program, stride=1)
    t = select_channels(test, result.pipeline.channels_)
    assert t.labels is not None
    int8_scores, _ = run_int8(prog, t.values)
    pipe = result.pipeline
    float_pipe = type(pipe)(pipe.detector, pipe.window, 1, pipe.features, pipe.target_fpr, pipe.k, pipe.n)
    for attr in ("channels_", "offset_", "scale_", "threshold_"):
        setattr(float_pipe, attr, getattr(pipe, attr))
    float_scores = float_pipe.score(t).scores
    s = result.summary()
    return {
        "entity": entity, "label": result.chosen.candidate.label, "family": s["family"], "window": s["window"],
        "stride": s["stride"], "channels": len(s["channels"]), "flash": s["flash"], "ram": s["ram"],
        "validation_quality": s["validation"]["quality"], "validation_fpr": s["validation"]["fpr"],
        "test_auc_int8": float(roc_auc_score(t.labels, per_row(int8_scores, len(t), pipe.window))),
        "test_auc_float": float(roc_auc_score(t.labels, per_row(float_scores, len(t), pipe.window))),
        "trials": s["trials"], "measured": s["measured"], "tune_seconds": round(seconds, 1),
        "few_labels": few_labels(result, test, ks) if ks else [],
    }


def markdown(rows: list[dict[str, Any]], flash: int, ram: int,
             studies: dict[str, dict[str, Any]] | None = None, note: str = "") -> str:
    smd = [r for r in rows if r["entity"].startswith("machine")] or rows  # the reference is an SMD figure
    mean8 = float(np.mean([r["test_auc_int8"] for r in smd]))
    meanf = float(np.mean([r["test_auc_float"] for r in smd]))
    lines = [
        "# tinywarden tune on SMD and ASD (benchmarks/tune_smd.py)",
        "",
        f"Budget {flash} B flash / {ram} B RAM, Cortex-M4 -Os, measured with arm-none-eabi-size on the generated C. "
        "The search sees only each machine's train split (synthetic anomalies in its held-out last 20 %); the "
        "test split and its labels are used only for the AUC below: raw per-row ROC AUC, each row scored by "
        "the int8 program's trailing window ending at it (stride 1), no point-adjust.",
        "",
        *([note, ""] if note else []),
        "| machine | chosen pipeline | ch. | flash B | RAM B | val. quality | val. FPR | test AUC int8 | "
        "test AUC float | tune s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['entity']} | {r['label']} | {r['channels']} | {r['flash']} | {r['ram']} | "
                     f"{r['validation_quality']:.3f} | {r['validation_fpr']:.4f} | {r['test_auc_int8']:.3f} | "
                     f"{r['test_auc_float']:.3f} | {r['tune_seconds']:.0f} |")
    lines += [
        f"| **mean ({len(smd)} SMD)** | | | | | | | **{mean8:.3f}** | {meanf:.3f} | |",
        "",
        f"Reference (shared/README.md, window-feature PCA w=16, float, no budget): {REFERENCE:.3f}. "
        f"Mean int8 test AUC {mean8:.4f}: {'at or above' if mean8 >= REFERENCE else 'BELOW'} the reference "
        f"({mean8 - REFERENCE:+.4f}).",
        "Flash/RAM: every chosen module measured within budget "
        f"({all(r['flash'] <= flash and r['ram'] <= ram for r in rows)}); RAM is static RAM plus the "
        "caller-owned state (ring buffer and scratch).",
    ]
    asd = [r["test_auc_int8"] for r in rows if r["entity"].startswith("omi")]
    if asd and len(asd) < len(rows):
        lines.append(f"ASD (omi-*) mean int8 test AUC over {len(asd)} entities: {np.mean(asd):.4f}.")
    if any(r["few_labels"] for r in rows):
        lines += few_labels_markdown(rows)
    if studies:
        lines += study_markdown(studies)
    return "\n".join(lines) + "\n"


def few_labels_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The few-labels tables: per k, per machine, label-free vs k labels vs hindsight on the evaluation part."""
    ks = sorted({f["k"] for r in rows for f in r["few_labels"]})
    lines = ["", "## A few labelled incidents (issue 17 item 4)", "",
             f"Per machine and k: the test split's first k incidents (and the rows before them, to {LABEL_MARGIN} "
             "rows after the k-th) are labelled data for selection; every figure below is the per-row ROC AUC "
             "on the rest of the test split (the evaluation part, a different one per k), with each candidate's "
             "own int8 program. *label-free*: the search's choice; *tune rule*: candidates re-ranked with the "
             "labelled AUC averaged into the quality, as `tune --validate` does; *labels only*: ranked by the "
             "labelled AUC alone; *hindsight*: the candidate with the best AUC on the evaluation part. A machine "
             "with no more than k incidents has no evaluation part for that k (n/a).", ""]
    for k in ks:
        lines += [f"### k = {k}", "",
                  "| machine | eval rows (incidents) | label-free | tune rule | labels only | hindsight | "
                  "gap (tune rule) | tune-rule pick | hindsight pick |",
                  "|---|---:|---:|---:|---:|---:|---:|---|---|"]
        got = []
        for r in rows:
            f = next((f for f in r["few_labels"] if f["k"] == k), None)
            if f is None or not f["available"]:
                lines.append(f"| {r['entity']} | n/a ({f['incidents'] if f else '?'} incidents) | | | | | | | |")
                continue
            got.append(f)
            lines.append(f"| {r['entity']} | {f['eval_rows']} ({f['eval_incidents']}) | {f['label_free']:.3f} | "
                         f"{f['with_k']:.3f} | {f['labelled_only']:.3f} | {f['hindsight']:.3f} | "
                         f"{f['hindsight'] - f['with_k']:.3f} | {f['with_k_pick']} | {f['hindsight_pick']} |")
        if got:
            m = {key: float(np.mean([f[key] for f in got])) for key in
                 ("label_free", "with_k", "labelled_only", "hindsight")}
            lines += [f"| **mean ({len(got)})** | | {m['label_free']:.3f} | {m['with_k']:.3f} | "
                      f"{m['labelled_only']:.3f} | {m['hindsight']:.3f} | {m['hindsight'] - m['with_k']:.3f} | | |", ""]
            if k == 3:
                met = m["hindsight"] - m["with_k"] <= 0.005
                lines += [f"Goal (k = 3 within 0.005 of hindsight): tune rule gap {m['hindsight'] - m['with_k']:.4f} "
                          f"({'met' if met else 'NOT met'}), labels only gap "
                          f"{m['hindsight'] - m['labelled_only']:.4f}.", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flash", type=int, default=8192)
    ap.add_argument("--ram", type=int, default=4096)
    ap.add_argument("--machines", default="", help="comma-separated entities (default: all SMD machines)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print JSON instead of writing markdown")
    ap.add_argument("--rows", type=Path, default=None, help="append each machine's row to this JSON-lines file "
                    "as it finishes; with --render, read the rows from it instead of measuring")
    ap.add_argument("--render", action="store_true", help="measure nothing: write the markdown from --rows "
                    "(with --study DIR, also the selection study, its figures to <out>_study.json)")
    ap.add_argument("--labels", default="", help="comma list of k: also measure selection with k labelled "
                    "incidents (e.g. 1,3,10)")
    ap.add_argument("--dump", type=Path, default=None, help="directory: write each machine's scored candidates "
                    "(validation and test scores per row) to <entity>.pkl for offline study")
    ap.add_argument("--save", type=Path, default=None, help="directory: write each entity's chosen program and "
                    "summary to <entity>.pkl (benchmarks/quality.py --tuned-from reads them)")
    ap.add_argument("--study", type=Path, default=None, help="with --render: the --dump directory whose "
                    "candidates the selection study (label-free rules, ensembles, k labels) reads")
    ap.add_argument("--note", default="", help="with --render: a paragraph placed under the introduction (when and "
                    "at which commit the rows were measured, and the command that measured them)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "tune_smd.md")
    args = ap.parse_args(argv)
    if not (DATA / "smd_asd" / "npz").is_dir():
        print(f"SMD data not found under {DATA} (set TINYWARDEN_DATA)", file=sys.stderr)
        return 2
    if args.render:
        if args.rows is None:
            ap.error("--render needs --rows")
        saved = [json.loads(line) for line in args.rows.read_text().splitlines() if line.strip()]
        order = sorted(r["entity"] for r in saved)
        saved.sort(key=lambda r: order.index(r["entity"]))
        studies = None
        if args.study is not None:
            studies = {p.stem: study(pickle.loads(p.read_bytes()), [1, 3, 10])
                       for p in sorted(args.study.glob("*.pkl"))}
            args.out.with_name(args.out.stem + "_study.json").write_text(json.dumps(studies, indent=1) + "\n")
        args.out.write_text(markdown(saved, args.flash, args.ram, studies, args.note))
        print(args.out.read_text())
        return 0
    names = [m for m in args.machines.split(",") if m] or sorted(
        p.stem for p in (DATA / "smd_asd" / "npz").glob("machine-*.npz"))
    for folder in (args.dump, args.save):  # made now: a missing one lost each search at its end
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
    rows = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        ks = [int(k) for k in args.labels.split(",") if k.strip()]
        futures = [pool.submit(run_one, m, args.flash, args.ram, args.seed, ks, args.dump, args.save) for m in names]
        for fut in as_completed(futures):
            r = fut.result()
            rows.append(r)
            if args.rows is not None:
                with args.rows.open("a") as fh:
                    fh.write(json.dumps(r) + "\n")
            print(f"{r['entity']}: {r['label']}, {r['flash']} B / {r['ram']} B, test AUC int8 "
                  f"{r['test_auc_int8']:.3f} ({r['tune_seconds']:.0f} s)", file=sys.stderr, flush=True)
    rows.sort(key=lambda r: names.index(r["entity"]))
    if args.json:
        print(json.dumps({"rows": rows, "mean_test_auc_int8": float(np.mean([r["test_auc_int8"] for r in rows])),
                          "reference": REFERENCE}, indent=2))
        return 0
    text = markdown(rows, args.flash, args.ram)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`tinywarden tune` on every SMD machine under a device budget, judged on the labelled test split.

For each machine: run the search on the *train* split only (no labels: synthetic anomalies in its held-out
last 20 %), then score the *test* split with the chosen pipeline's int8 program (the numbers the C
returns) at stride 1, so every row gets the score of the trailing window ending at it (the first
``window - 1`` rows take the first window's score), and compute the raw per-row ROC AUC (no point-adjust),
as in ``shared/README.md``. The test labels are never seen by the search. The README's window-feature PCA
figure (SMD 0.890) is the bar; the float pipeline's AUC is shown beside the int8 one.

    python benchmarks/tune_smd.py                   # 8 KB flash / 4 KB RAM, markdown to benchmarks/results
    python benchmarks/tune_smd.py --json --machines machine-1-6
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from tinywarden.program import run_int8
from tinywarden.telemetry import read_series
from tinywarden.tune import Budget, tune
from tinywarden.tune.search import select_channels

DATA = Path(os.environ.get("TINYWARDEN_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
#: shared/README.md: PCA (95 % variance) reconstruction error on window features, w=16, mean per-row ROC AUC
REFERENCE = 0.890


def per_row(scores: np.ndarray, n_rows: int, window: int) -> np.ndarray:
    """Stride-1 window scores -> one score per row (rows before the first full window take its score)."""
    out = np.empty(n_rows)
    out[window - 1 :] = scores
    out[: window - 1] = scores[0]
    return out


def run_one(entity: str, flash: int, ram: int, seed: int) -> dict[str, Any]:
    path = DATA / "smd_asd" / "npz" / f"{entity}.npz"
    train, test = read_series(f"{path}:train"), read_series(f"{path}:test")
    start = time.perf_counter()
    result = tune(train, Budget(flash, ram), seed=seed)
    seconds = time.perf_counter() - start
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
    }


def markdown(rows: list[dict[str, Any]], flash: int, ram: int) -> str:
    mean8 = float(np.mean([r["test_auc_int8"] for r in rows]))
    meanf = float(np.mean([r["test_auc_float"] for r in rows]))
    lines = [
        "# tinywarden tune on SMD (benchmarks/tune_smd.py)",
        "",
        f"Budget {flash} B flash / {ram} B RAM, Cortex-M4 -Os, measured with arm-none-eabi-size on the generated C. "
        "The search sees only each machine's train split (synthetic anomalies in its held-out last 20 %); the "
        "test split and its labels are used only for the AUC below: raw per-row ROC AUC, each row scored by "
        "the int8 program's trailing window ending at it (stride 1), no point-adjust.",
        "",
        "| machine | chosen pipeline | ch. | flash B | RAM B | val. quality | val. FPR | test AUC int8 | "
        "test AUC float | tune s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['entity']} | {r['label']} | {r['channels']} | {r['flash']} | {r['ram']} | "
                     f"{r['validation_quality']:.3f} | {r['validation_fpr']:.4f} | {r['test_auc_int8']:.3f} | "
                     f"{r['test_auc_float']:.3f} | {r['tune_seconds']:.0f} |")
    lines += [
        f"| **mean** | | | | | | | **{mean8:.3f}** | {meanf:.3f} | |",
        "",
        f"Reference (shared/README.md, window-feature PCA w=16, float, no budget): {REFERENCE:.3f}. "
        f"Mean int8 test AUC {mean8:.4f}: {'at or above' if mean8 >= REFERENCE else 'BELOW'} the reference "
        f"({mean8 - REFERENCE:+.4f}).",
        "Flash/RAM: every chosen module measured within budget "
        f"({all(r['flash'] <= flash and r['ram'] <= ram for r in rows)}); RAM is static RAM plus the "
        "caller-owned state (ring buffer and scratch).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flash", type=int, default=8192)
    ap.add_argument("--ram", type=int, default=4096)
    ap.add_argument("--machines", default="", help="comma-separated entities (default: all SMD machines)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print JSON instead of writing markdown")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "tune_smd.md")
    args = ap.parse_args(argv)
    if not (DATA / "smd_asd" / "npz").is_dir():
        print(f"SMD data not found under {DATA} (set TINYWARDEN_DATA)", file=sys.stderr)
        return 2
    names = [m for m in args.machines.split(",") if m] or sorted(
        p.stem for p in (DATA / "smd_asd" / "npz").glob("machine-*.npz"))
    rows = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(run_one, m, args.flash, args.ram, args.seed) for m in names]
        for fut in as_completed(futures):
            r = fut.result()
            rows.append(r)
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

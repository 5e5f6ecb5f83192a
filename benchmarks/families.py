"""Per-row ROC AUC of each detector family on the shared SMD (8) and ASD (12) entities.

Protocol of ``shared/README.md``: fit a :class:`~tinywarden.pipeline.Pipeline` on an entity's train split,
score its test split with stride 1 so every row gets the score of the trailing window ending at it (the
first ``window - 1`` rows, which have no complete window, take the first window's score), and average the
raw per-row ROC AUC over the entities (no point-adjust). The README's reference figures are printed beside.

    python benchmarks/families.py --cal 0.01           # all families, w=16, last/mean/std/max/min
    python benchmarks/families.py --cal 0.01 --family pca --features last,mean,std,max,min,diff_abs_max \
        --params '{"n_components": 0.98}'              # the tuned PCA that clears both reference figures

``--cal 0.01`` leaves 99% of the train split to fit the detector, as the README's reference does (the
pipeline still needs a held-out slice to calibrate its threshold, which per-row AUC does not use).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score

from tinywarden.detectors import make_detector
from tinywarden.pipeline import Pipeline
from tinywarden.telemetry import read_series

DATA = Path(os.environ.get("TINYWARDEN_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
README_FEATURES = ("last", "mean", "std", "max", "min")
#: README reference, PCA (95% variance) on window features w=16, mean per-row ROC AUC
REFERENCE = {"SMD": 0.890, "ASD": 0.842}

#: family -> detector parameters used in the benchmark (defaults unless a budget needs otherwise)
FAMILIES: dict[str, dict[str, Any]] = {
    "pca": {},
    "iforest": {},
    "sk_iforest": {},  # scikit-learn's full IsolationForest on the same windows, for comparison
    "knn": {},
    "ocsvm": {},
    "gru_ae": {},
    "ar": {},
    "bounds": {},
}


class _SklearnIForest:
    """scikit-learn's IsolationForest (defaults) in the detector interface, benchmark-only."""

    input_kind = "features"

    def fit(self, x: np.ndarray) -> _SklearnIForest:
        self.model = IsolationForest(random_state=0).fit(x)
        return self

    def score_samples(self, x: np.ndarray) -> np.ndarray:
        return -self.model.score_samples(x)


def entities() -> dict[str, list[str]]:
    names = sorted(p.stem for p in (DATA / "smd_asd" / "npz").glob("*.npz"))
    return {"SMD": [n for n in names if n.startswith("machine")], "ASD": [n for n in names if n.startswith("omi")]}


def run_one(family: str, params: dict[str, Any], entity: str, window: int, features: tuple[str, ...],
            cal: float) -> dict:
    if family == "gru_ae":
        import torch

        torch.set_num_threads(1)  # one worker per core; torch's own threads would oversubscribe them
    path = DATA / "smd_asd" / "npz" / f"{entity}.npz"
    train, test = read_series(f"{path}:train"), read_series(f"{path}:test")
    det = _SklearnIForest() if family == "sk_iforest" else make_detector(family, **params)
    start = time.perf_counter()
    pipe = Pipeline(det, window=window, stride=1, features=features, calibration_fraction=cal)  # type: ignore[arg-type]
    pipe.fit(train)
    fit_s = time.perf_counter() - start
    scored = pipe.score(test)
    per_row = np.empty(len(test))
    per_row[scored.end_rows] = scored.scores
    per_row[: scored.end_rows[0]] = scored.scores[0]
    labels = test.labels if test.labels is not None else np.zeros(len(test))
    out = {"family": family, "entity": entity, "auc": float(roc_auc_score(labels, per_row)), "fit_s": fit_s}
    if hasattr(det, "n_params_"):
        out["n_params"] = int(det.n_params_)
    if hasattr(det, "packed_bytes_"):
        out["packed_bytes"] = int(det.packed_bytes_)
    print(f"{family} {entity} auc={out['auc']:.3f} fit={fit_s:.1f}s", file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", action="append", choices=sorted(FAMILIES), help="repeatable; default all")
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--features", default=",".join(README_FEATURES))
    ap.add_argument("--params", default="{}", help='JSON detector parameters, e.g. \'{"n_components": 0.9}\'')
    ap.add_argument("--cal", type=float, default=0.1, help="calibration fraction of the train split")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    args = ap.parse_args(argv)
    if not (DATA / "smd_asd" / "npz").is_dir():
        print(f"shared data not found at {DATA} (set TINYWARDEN_DATA)", file=sys.stderr)
        return 2
    features = tuple(f for f in args.features.split(",") if f)
    extra = json.loads(args.params)
    groups = entities()
    jobs = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for fam in args.family or list(FAMILIES):
            params = {**FAMILIES[fam], **extra}
            for group, names in groups.items():
                for e in names:
                    jobs.append((group, pool.submit(run_one, fam, params, e, args.window, features, args.cal)))
        rows = [{**fut.result(), "group": group} for group, fut in jobs]
    if args.json:
        print(json.dumps({"window": args.window, "features": features, "rows": rows}, indent=1))
        return 0
    print(f"window={args.window} features={','.join(features)}  mean per-row ROC AUC (README PCA w=16 ref)")
    print(f"{'family':<12}{'SMD':>8}{'ASD':>8}{'params':>10}{'fit s':>8}")
    for fam in dict.fromkeys(r["family"] for r in rows):
        mine = [r for r in rows if r["family"] == fam]
        auc = {g: np.mean([r["auc"] for r in mine if r["group"] == g]) for g in groups}
        n_params = int(np.median([r.get("n_params", 0) for r in mine]))
        fit_s = float(np.mean([r["fit_s"] for r in mine]))
        print(f"{fam:<12}{auc['SMD']:>8.3f}{auc['ASD']:>8.3f}{n_params:>10}{fit_s:>8.1f}")
    print(f"{'reference':<12}{REFERENCE['SMD']:>8.3f}{REFERENCE['ASD']:>8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

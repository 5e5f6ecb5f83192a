"""Per-row ROC AUC of each detector family on the shared SMD (8) and ASD (12) entities.

Protocol of ``shared/README.md``: fit a :class:`~tinywarden.pipeline.Pipeline` on an entity's train split,
score its test split with stride 1 so every row gets the score of the trailing window ending at it (the
first ``window - 1`` rows, which have no complete window, take the first window's score), and average the
raw per-row ROC AUC over the entities (no point-adjust). The README's reference figures are printed beside.

    python benchmarks/families.py --cal 0.01           # all families, w=16, last/mean/std/max/min
    python benchmarks/families.py --cal 0.01 --family iforest --family sk_iforest --workers 2 \
        --out benchmarks/results/families.md           # the trimmed forest against scikit-learn's full one
    python benchmarks/families.py --cal 0.01 --family pca --features last,mean,std,max,min,diff_abs_max \
        --params '{"n_components": 0.98}'              # the tuned PCA that clears both reference figures

``--cal 0.01`` leaves 99% of the train split to fit the detector, as the README's reference does (the
pipeline still needs a held-out slice to calibrate its threshold, which per-row AUC does not use).

Size: for a family with an int8 path, the pipeline's int8 program is generated as C and cross-compiled for
``--target`` (flash = text + data of the whole module: feature extraction, requantization and the model);
for ``sk_iforest`` the size is its pickled model, the bytes a host would store.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score

from tinywarden.codegen.c import write_c
from tinywarden.detectors import REGISTRY, make_detector
from tinywarden.errors import TinywardenError
from tinywarden.pipeline import Pipeline
from tinywarden.quantize import quantize_pipeline
from tinywarden.target import missing_tools, module_size
from tinywarden.telemetry import read_series

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info  # noqa: E402

DATA = Path(os.environ.get("TINYWARDEN_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
README_FEATURES = ("last", "mean", "std", "max", "min")
#: README reference, PCA (95% variance) on window features w=16, mean per-row ROC AUC
REFERENCE = {"SMD": 0.890, "ASD": 0.842}

#: Peers run beside the registered families (``tinywarden.detectors.REGISTRY``, each at its defaults):
#: scikit-learn's full IsolationForest on the same windows, for comparison with the trimmed one.
PEERS = ("sk_iforest",)


def family_names() -> list[str]:
    """Every registered family, then the peers."""
    return [*REGISTRY, *PEERS]


class _SklearnIForest:
    """scikit-learn's IsolationForest (defaults) in the detector interface, benchmark-only."""

    input_kind = "features"

    def fit(self, x: np.ndarray) -> _SklearnIForest:
        self.model = IsolationForest(random_state=0).fit(x)
        return self

    def score_samples(self, x: np.ndarray) -> np.ndarray:
        return -self.model.score_samples(x)

    @property
    def pickle_bytes(self) -> int:
        """Size of the pickled fitted model: what a host stores to score with it."""
        return len(pickle.dumps(self.model, protocol=pickle.HIGHEST_PROTOCOL))


def flash_bytes(pipe: Pipeline, train: Any, target: str) -> int | None:
    """Flash of the pipeline's generated C module on ``target``; None without an int8 path or toolchain."""
    if missing_tools(("arm-none-eabi-gcc", "arm-none-eabi-size")):
        return None
    try:
        program = quantize_pipeline(pipe, train)
    except TinywardenError:
        return None  # the family has no int8 program
    with tempfile.TemporaryDirectory(prefix="tw-families-") as tmp:
        write_c(program, tmp)
        return module_size(Path(tmp), target).flash


def entities() -> dict[str, list[str]]:
    names = sorted(p.stem for p in (DATA / "smd_asd" / "npz").glob("*.npz"))
    return {"SMD": [n for n in names if n.startswith("machine")], "ASD": [n for n in names if n.startswith("omi")]}


def run_one(family: str, params: dict[str, Any], entity: str, window: int, features: tuple[str, ...],
            cal: float, target: str | None = None) -> dict:
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
    if isinstance(det, _SklearnIForest):
        out["pickle_bytes"] = det.pickle_bytes
    elif target is not None:
        out["flash"] = flash_bytes(pipe, train, target)
    print(f"{family} {entity} auc={out['auc']:.3f} fit={fit_s:.1f}s", file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", action="append", choices=family_names(), help="repeatable; default all")
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--features", default=",".join(README_FEATURES))
    ap.add_argument("--params", default="{}", help='JSON detector parameters, e.g. \'{"n_components": 0.9}\'')
    ap.add_argument("--cal", type=float, default=0.1, help="calibration fraction of the train split")
    ap.add_argument("--jobs", "--workers", dest="jobs", type=int, default=2, help="worker processes")
    ap.add_argument("--target", default="cortex-m4", help="core the generated C is sized for ('none': skip)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    ap.add_argument("--out", type=Path, help="also write the table as markdown to this file")
    args = ap.parse_args(argv)
    if not (DATA / "smd_asd" / "npz").is_dir():
        print(f"shared data not found at {DATA} (set TINYWARDEN_DATA)", file=sys.stderr)
        return 2
    features = tuple(f for f in args.features.split(",") if f)
    extra = json.loads(args.params)
    target = None if args.target == "none" else args.target
    groups = entities()
    jobs = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for fam in args.family or family_names():
            params = dict(extra)
            for group, names in groups.items():
                for e in names:
                    jobs.append((group, pool.submit(run_one, fam, params, e, args.window, features, args.cal,
                                                                  target)))
        rows = [{**fut.result(), "group": group} for group, fut in jobs]
    if args.json:
        print(json.dumps({"window": args.window, "features": features, "rows": rows}, indent=1))
        return 0
    table = summarize(rows, list(groups))
    print(f"window={args.window} features={','.join(features)}  mean per-row ROC AUC (README PCA w=16 ref)")
    print(f"{'family':<12}{'SMD':>8}{'ASD':>8}{'params':>10}{'size SMD':>10}{'size ASD':>10}{'fit s':>8}")
    for r in table:
        print(f"{r['family']:<12}{r['SMD']:>8.3f}{r['ASD']:>8.3f}{r['n_params']:>10}{_cell(r['size_SMD']):>10}"
              f"{_cell(r['size_ASD']):>10}{r['fit_s']:>8.1f}")
    print(f"{'reference':<12}{REFERENCE['SMD']:>8.3f}{REFERENCE['ASD']:>8.3f}")
    if args.out is not None:
        args.out.write_text(markdown(table, args, features, extra, target))
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def summarize(rows: list[dict], groups: list[str]) -> list[dict[str, Any]]:
    """One line per family: mean per-row AUC per group, median parameter count, largest size per group."""
    out = []
    for fam in dict.fromkeys(r["family"] for r in rows):
        mine = [r for r in rows if r["family"] == fam]
        line: dict[str, Any] = {"family": fam, "kind": "pickle" if any("pickle_bytes" in r for r in mine) else "flash"}
        for g in groups:
            line[g] = float(np.mean([r["auc"] for r in mine if r["group"] == g]))
            sizes = [r.get("pickle_bytes", r.get("flash")) for r in mine if r["group"] == g]
            line[f"size_{g}"] = None if any(v is None for v in sizes) else max(sizes)
        line["n_params"] = int(np.median([r.get("n_params", 0) for r in mine]))
        line["packed_bytes"] = max((r["packed_bytes"] for r in mine if "packed_bytes" in r), default=None)
        line["fit_s"] = float(np.mean([r["fit_s"] for r in mine]))
        out.append(line)
    return out


def _cell(v: int | None) -> str:
    return "–" if v is None else str(v)


def markdown(table: list[dict[str, Any]], args: argparse.Namespace, features: tuple[str, ...],
             extra: dict[str, Any], target: str | None) -> str:
    """The results table as the markdown file ``--out`` writes."""
    info = machine_info()
    cmd = " ".join(["python benchmarks/families.py", *sys.argv[1:]])
    lines = [
        "# Detector families: mean per-row ROC AUC on SMD and ASD", "",
        f"Generated by `{cmd}`; do not edit by hand.", "",
        f"Measured {info['date']} on {info['machine']}; Python {info['python']}; commit {info['commit']}; "
        f"{info['versions']}.", "",
        f"Protocol (shared/README.md): per entity, the pipeline (window {args.window}, stride 1, features "
        f"{', '.join(features)} on every channel, {args.cal:g} of the train split held out for calibration) is "
        "fitted on the `train` split and every `test` row gets the score of the window ending at it; ROC AUC of "
        "those row scores vs the row labels, no point-adjust, averaged over SMD's 8 and ASD's 12 entities. "
        f"Family parameters: defaults{' with ' + json.dumps(extra) if extra else ''}.", "",
        f"Size: tinywarden families: flash (text + data) of the whole generated C module (features, "
        f"requantization, model) cross-compiled with `arm-none-eabi-gcc -Os` for {target or '(not measured)'}, "
        "the largest over the group's entities; `sk_iforest` (scikit-learn's full IsolationForest, defaults: "
        "100 trees, 256 samples, float64 thresholds) stores no C: its size is the pickled fitted model, the "
        "largest over the entities. Tree bytes: the packed node arrays alone (uint8 feature, int16 threshold, "
        "uint8 child per node, uint16 start per tree).", "",
        "| family | ROC AUC SMD | ROC AUC ASD | size SMD (bytes) | size ASD (bytes) | size is | tree bytes | "
        "fit s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        lines.append(f"| {r['family']} | {r['SMD']:.3f} | {r['ASD']:.3f} | {_cell(r['size_SMD'])} | "
                     f"{_cell(r['size_ASD'])} | {r['kind']} | {_cell(r['packed_bytes'])} | {r['fit_s']:.1f} |")
    lines.append(f"| reference (README PCA) | {REFERENCE['SMD']:.3f} | {REFERENCE['ASD']:.3f} | | | | | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())

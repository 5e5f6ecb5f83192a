"""Structured pruning: size and quality of the autoencoders at a few sparsity levels.

    python benchmarks/prune.py            # writes benchmarks/results/prune.md
    python benchmarks/prune.py --json out.json

Data: the demo's simulated camera (14 days, attack-free first 8 days for training, the rest with all five
attacks for testing), the default pipeline (window 128, stride 64). Each autoencoder is trained once with a
wider hidden layer, then :func:`tinywarden.quantize.prune_pipeline` removes the given fraction of hidden
units / filters by magnitude (whole neurons, so the generated C shrinks) and fine-tunes; the pruned
pipeline is recalibrated, quantized to int8 and exported to C. Reported: hidden sizes, float parameters,
int8 program constants, flash of the generated module on Cortex-M4 (``arm-none-eabi-size``, when the
cross compiler is installed) and ROC AUC / detection rate of float and int8 on the attack days.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import RESULTS, machine_info, single_core  # noqa: E402

SPARSITIES = (0.0, 0.25, 0.5, 0.75)
START = {"dense_ae": {"hidden": (16, 4)}, "conv_ae": {"channels": (8, 4)}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="also write the rows as JSON to this file")
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder for prune.md")
    args = ap.parse_args(argv)
    single_core()

    import numpy as np

    from tinywarden.codegen.c import write_c
    from tinywarden.detectors import make_detector
    from tinywarden.pipeline import Pipeline
    from tinywarden.quantize import compare_int8, prune_pipeline, quantize_pipeline
    from tinywarden.simulate import simulate
    from tinywarden.target import missing_tools, module_size

    series = simulate("camera", 14, "all", seed=7, attack_free_days=8)
    cut = int(np.searchsorted(series.timestamps, series.timestamps[0] + 8 * 86400.0))
    train = series.slice(0, cut)
    can_size = not missing_tools()
    rows = []
    for name, params in START.items():
        base = Pipeline(make_detector(name, **params)).fit(train)
        for sparsity in SPARSITIES:
            p = base if sparsity == 0 else prune_pipeline(base, train, sparsity)
            program = quantize_pipeline(p, train)
            cmp = compare_int8(p, series, program, skip_rows=cut)
            flash = None
            if can_size:
                with tempfile.TemporaryDirectory() as d:
                    write_c(program, Path(d))
                    size = module_size(Path(d), "cortex-m4")
                    flash = size.text + size.data
            sizes = p.detector.hidden if name == "dense_ae" else p.detector.channels
            rows.append({"detector": name, "sparsity": sparsity, "hidden": list(sizes),
                         "params": p.detector.n_params_, "int8_bytes": cmp["int8_bytes"], "flash_m4": flash,
                         **{k: round(cmp[k], 4) for k in ("float_roc_auc", "int8_roc_auc",
                                                          "float_detection_rate", "int8_detection_rate")}})
            r = rows[-1]
            print(f"{name} sparsity {sparsity:.2f}: hidden {sizes}, {r['params']} params, int8 {r['int8_bytes']} B, "
                  f"flash {flash} B, AUC float {r['float_roc_auc']:.3f} int8 {r['int8_roc_auc']:.3f}")
    lines = ["# Structured pruning (benchmarks/prune.py)", "",
             "Simulated camera, default pipeline (window 128 / stride 64), trained on 8 attack-free days, tested "
             "on 6 days with all attacks. Flash: generated C module on Cortex-M4 (-Os), arm-none-eabi-size.", "",
             "| detector | sparsity | hidden | float params | int8 constants B | flash B (M4) | ROC AUC float | "
             "ROC AUC int8 | detection float | detection int8 |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['detector']} | {r['sparsity']:.2f} | {tuple(r['hidden'])} | {r['params']} | "
                     f"{r['int8_bytes']} | {r['flash_m4'] if r['flash_m4'] is not None else 'n/a'} | "
                     f"{r['float_roc_auc']:.3f} | {r['int8_roc_auc']:.3f} | {r['float_detection_rate']:.0%} | "
                     f"{r['int8_detection_rate']:.0%} |")
    lines += ["", "Measured on: " + ", ".join(f"{k} {v}" for k, v in machine_info().items())]
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "prune.md").write_text("\n".join(lines) + "\n")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Int8 window ROC AUC of one detector family under several parameter settings, on a small subset of the
quality benchmark's entities (SMD, ASD, the simulator), to choose a family's default by measured quality::

    python benchmarks/family_defaults.py gaussian '{}' '{"n_components": 24}' --entities 4
    python benchmarks/family_defaults.py gaussian '{}' '{"n_components": 24}' --out benchmarks/results/x.md

Each setting is fitted like ``benchmarks/quality.py`` fits it (the dataset's protocol: window, training stride,
the same training span), quantized with ``quantize_pipeline`` and scored with the integer reference
``run_int8``; the figure is the mean window ROC AUC over the first ``--entities`` entities of each dataset (sim:
up to its three profiles) and the int8 program's constant bytes. Labels are used only to score.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import entities, quality_metrics, single_core, timed  # noqa: E402


def auc_of(entity: Any, family: str, params: dict[str, Any]) -> tuple[float, int, float]:
    """``(int8 window ROC AUC, program constant bytes, fit seconds)`` of ``family(**params)`` on ``entity``."""
    from tinywarden.detectors import make_detector
    from tinywarden.pipeline import Pipeline
    from tinywarden.program import run_int8
    from tinywarden.quantize.ptq import quantize_pipeline

    p = entity.protocol
    pipe = Pipeline(make_detector(family, **params), window=p.window, stride=p.train_stride)
    program, fit_s = timed(lambda: quantize_pipeline(pipe.fit(entity.train), entity.train))
    prog = dataclasses.replace(program, stride=p.test_stride)
    scores, _ = run_int8(prog, entity.stream.values)
    end_rows = p.window - 1 + p.test_stride * np.arange(len(scores))
    return float(quality_metrics(entity, end_rows, scores)["roc_auc"]), int(program.const_bytes), fit_s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("family")
    ap.add_argument("settings", nargs="+", help="JSON objects of parameters, one per setting ('{}': defaults)")
    ap.add_argument("--datasets", default="smd,asd,sim")
    ap.add_argument("--entities", type=int, default=4, help="entities per dataset (the first ones)")
    ap.add_argument("--out", type=Path, default=None, help="also write the table (markdown) to this file")
    args = ap.parse_args()
    single_core()
    settings = [json.loads(s) for s in args.settings]
    lines = [f"command: python benchmarks/family_defaults.py {' '.join(sys.argv[1:])}", "",
             "| dataset | entities | " + " | ".join(f"`{json.dumps(s)}` AUC / const B" for s in settings) + " |",
             "|---|---:|" + "---:|" * len(settings)]
    for ds in args.datasets.split(","):
        got: list[list[tuple[float, int, float]]] = [[] for _ in settings]
        for n, ent in enumerate(entities(ds)):
            if n >= args.entities:
                break
            for i, s in enumerate(settings):
                got[i].append(auc_of(ent, args.family, s))
                print(ds, ent.name, s, got[i][-1], file=sys.stderr, flush=True)
        cells = []
        for g in got:
            aucs = [a for a, _, _ in g if a == a]
            cells.append(f"{sum(aucs) / max(len(aucs), 1):.4f} / {max(b for _, b, _ in g)}")
        lines.append(f"| {ds} | {len(got[0])} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How close the device's integer baseline adaptation (:mod:`tinywarden.kernels.adapt_q`) stays to the float
:class:`tinywarden.adapt.BaselineAdapter`. One command:

    python benchmarks/adapt_q.py            # table on the terminal + benchmarks/results/adapt_q.md
    python benchmarks/adapt_q.py --json

Data: the simulated camera (6 channels), three days; every family with an adaptable int8 program is fitted
on the first 1.5 attack-free days (small training budgets, as the test fixtures) and streamed over the whole
series with a slow ramp added to every channel from row 6000 (``--ramp`` training standard deviations per
row), a drift both adapters must follow and flag. Two comparisons per family and policy:

* *arithmetic*: the float adapter is fed exactly what the integer step sees (the int8 program's integer
  features, in raw units, and the integer step's own adapt/hold decision), so only the adaptation's
  arithmetic differs. Reported: the largest difference of the adapted means (in training standard
  deviations) over all inputs and windows, the same beyond half an input unit (the rounding of the
  program's own reference offset, which the integer step measures from), and of the adapted scale ratios.
* *end to end*: each side on its own: the float pipeline with its float features and float likelihood
  (:func:`tinywarden.replay.replay`), the int8 program with its integer features and integer likelihood
  (:class:`tinywarden.program.Int8Stream`). Reported: windows that taught each baseline, the row of the
  first drift flag, and the final drift.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tinywarden.adapt import Adaptation, BaselineAdapter
from tinywarden.detectors import make_detector
from tinywarden.kernels.adapt_q import VAR_ONE
from tinywarden.pipeline import Pipeline
from tinywarden.program import Int8Stream
from tinywarden.quantize import quantize_pipeline
from tinywarden.quantize.ptq import feature_affine
from tinywarden.replay import replay
from tinywarden.simulate import simulate
from tinywarden.telemetry.series import Series

RESULTS = Path(__file__).resolve().parent / "results" / "adapt_q.md"
FAMILIES = {"ewma": {}, "kmeans": {"n_init": 1}, "pca": {}, "dense_ae": {"epochs": 8, "max_steps": 300}}
POLICIES = {"default (rate_shift 8)": Adaptation(), "fast (rate_shift 4)": Adaptation(rate_shift=4)}
RAMP_START = 6000


def data(ramp: float) -> tuple[Series, Series]:
    s = simulate("camera", 3.0, "all", seed=11, attack_free_days=1.5)
    cut = int(np.searchsorted(s.timestamps, s.timestamps[0] + 1.5 * 86400.0))
    sd = s.values[:cut].std(axis=0) + 1e-9
    add = np.clip(np.arange(len(s)) - RAMP_START, 0, None)[:, None] * ramp * sd
    return Series(s.timestamps, s.values + add, s.channels), s.slice(0, cut)


def compare(pipe: Pipeline, series: Series, train: Series, cfg: Adaptation) -> dict[str, Any]:
    prog = quantize_pipeline(pipe, train)
    if prog.adaptation is None:
        return {"adaptable": False}
    st = Int8Stream(prog, cfg)
    a = st.adapter
    assert a is not None
    fp = Pipeline.__new__(Pipeline)
    fp.__dict__.update(pipe.__dict__)
    fp.offset_, fp.scale_ = pipe.offset_.copy(), pipe.scale_.copy()
    fa = BaselineAdapter(fp, cfg)
    aa, bb = feature_affine(pipe, 1.0 / prog.sample_mul.astype(np.float64), prog.sample_zero)
    op = prog.ops[int(prog.adaptation.attrs["op"])]
    half_unit = 0.5 * aa * 2.0 ** op.consts["pre_shift"] / pipe.scale_
    mu_diff = np.zeros(aa.size)
    scale_diff = 0.0
    first_flag = None
    for row, x in enumerate(series.values):
        if st.push(x) is None:
            continue
        if st.new_flag and first_flag is None:
            first_flag = row
        assert st.last_inputs is not None
        fa.observe(aa * st.last_inputs.astype(np.float64) + bb, 0.0 if st.adapted else 1.0)
        if st.adapted:
            z_float = (fp.offset_ - fa.reference_offset) / fa.reference_scale
            mu_diff = np.maximum(mu_diff, np.abs(a.z_of(a.mu) / 4096.0 - z_float))
            s_int = np.maximum(np.sqrt(a.var / VAR_ONE), 0.5)
            scale_diff = max(scale_diff, float(np.abs(s_int - fp.scale_ / fa.reference_scale).max()))
    rf = replay(pipe, series, 0, cfg)
    return {
        "adaptable": True, "inputs": int(aa.size),
        "arith_mean_diff_sd": float(mu_diff.max()),
        "arith_mean_diff_beyond_half_unit_sd": float(max(0.0, np.max(mu_diff - half_unit))),
        "arith_scale_ratio_diff": scale_diff,
        "int_adapted": a.adapted, "float_adapted": rf.adapted, "windows": a.adapted + a.held,
        "int_first_flag_row": first_flag,
        "float_first_flag_row": int(rf.drift_flag_rows[0]) if len(rf.drift_flag_rows) else None,
        "int_final_drift_sd": a.drift / 4096.0,
    }


def render(res: dict[str, Any], ramp: float) -> str:
    lines = ["# Integer vs float baseline adaptation (benchmarks/adapt_q.py)", "",
             f"Simulated camera, 3 days, fitted on the first 1.5 attack-free days; a ramp of {ramp} training "
             f"standard deviations per row on every channel from row {RAMP_START}. See the script's docstring "
             "for the two comparisons.", "",
             "| family | policy | inputs | arithmetic: max mean diff, sd | ... beyond half an input unit, sd | "
             "max scale ratio diff | windows | adapted int / float | first drift flag row int / float | "
             "final drift int, sd |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for fam, per in res.items():
        for pol, r in per.items():
            if not r.get("adaptable"):
                lines.append(f"| {fam} | {pol} | no adaptable op | | | | | | | |")
                continue
            lines.append(f"| {fam} | {pol} | {r['inputs']} | {r['arith_mean_diff_sd']:.4f} | "
                         f"{r['arith_mean_diff_beyond_half_unit_sd']:.4f} | {r['arith_scale_ratio_diff']:.4f} | "
                         f"{r['windows']} | {r['int_adapted']} / {r['float_adapted']} | "
                         f"{r['int_first_flag_row']} / {r['float_first_flag_row']} | {r['int_final_drift_sd']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--ramp", type=float, default=2e-4, help="ramp, training standard deviations per row")
    ap.add_argument("--families", default=",".join(FAMILIES))
    args = ap.parse_args()
    series, train = data(args.ramp)
    res: dict[str, Any] = {}
    for fam in args.families.split(","):
        pipe = Pipeline(make_detector(fam, **FAMILIES.get(fam, {}))).fit(train)
        res[fam] = {name: compare(pipe, series, train, cfg) for name, cfg in POLICIES.items()}
    md = render(res, args.ramp)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(md)
    print(json.dumps(res, indent=2) if args.json else md)
    return 0


if __name__ == "__main__":
    sys.exit(main())

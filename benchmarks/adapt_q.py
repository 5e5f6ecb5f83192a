"""How close the device's integer baseline adaptation (:mod:`tinywarden.kernels.adapt_q`) stays to the float
:class:`tinywarden.adapt.BaselineAdapter`, under the same rule. One command:

    python benchmarks/adapt_q.py            # table on the terminal + benchmarks/results/adapt_q.md
    python benchmarks/adapt_q.py --json

Data: (1) the simulated camera (6 channels), three days; every family with an adaptable int8 program is fitted
on the first 1.5 attack-free days (small training budgets, as the test fixtures) and streamed over the whole
series (attacks included) with a slow ramp added to every channel from row 6000 (``--ramp`` training standard
deviations per row), a drift both adapters must follow and flag; (2) SMD machine-1-6 (38 metrics, 1-minute
rows; ``../shared/README.md``), fitted on its train split (window 64 / stride 32) and streamed over its test
split as it is (labels unused). Two policies: the defaults (below-threshold gate, offsets only, a 12 h settling
period) and the first version (confidence gate only, offsets and scales, no settling). Two comparisons each:

* *arithmetic*: the float adapter is fed exactly what the integer step sees (the int8 program's integer
  features as its adapted op reads them, ``f >> pre`` at the middle of its unit, in raw units; the integer step's
  confidence verdict and its score's side of the threshold), so only the adaptation's arithmetic differs.
  Reported: windows whose teaching or settling differ (0 expected, but for the clamp below: the first window whose
  settling verdicts part is shown with the widest input's spread on each side); the largest difference of the adapted
  means (in training standard deviations) over the inputs the integer step represents (never 128 reference
  standard deviations or more from the reference, the shadow's variance never at its cap of 256 reference
  variances: beyond those it clamps, where the float follows the outlier; those inputs are counted and their
  difference shown apart), the same beyond half an input unit (the rounding of the program's own reference
  offset, which the integer step measures from), and of the adapted scale ratios.
* *end to end*: each side on its own: the float pipeline with its float features and float likelihood
  (:func:`tinywarden.replay.replay`), the int8 program with its integer features and integer likelihood
  (:class:`tinywarden.program.Int8Stream`). Reported: windows that taught each baseline, the row of the
  first drift flag, and the final drift.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tinywarden.adapt import Adaptation, BaselineAdapter
from tinywarden.adaptation import SETTLE_SPREAD
from tinywarden.detectors import make_detector
from tinywarden.kernels.adapt_q import SETTLE_SPREAD_Q8, SVAR_MAX, VAR_ONE, Z_MAX
from tinywarden.pipeline import Pipeline
from tinywarden.program import Int8Stream
from tinywarden.quantize import quantize_pipeline
from tinywarden.quantize.ptq import feature_affine
from tinywarden.replay import replay
from tinywarden.simulate import simulate
from tinywarden.telemetry.io import read_series
from tinywarden.telemetry.series import Series

RESULTS = Path(__file__).resolve().parent / "results" / "adapt_q.md"
FAMILIES = {"ewma": {}, "kmeans": {"n_init": 1}, "pca": {}, "dense_ae": {"epochs": 8, "max_steps": 300}}
POLICIES = {"defaults": Adaptation(),
            "first version": Adaptation(below_threshold=False, settle_s=0.0, adapt_scale=True)}
RAMP_START = 6000
SMD_ENTITY = "machine-1-6"


def data(ramp: float) -> tuple[Series, Series]:
    s = simulate("camera", 3.0, "all", seed=11, attack_free_days=1.5)
    cut = int(np.searchsorted(s.timestamps, s.timestamps[0] + 1.5 * 86400.0))
    sd = s.values[:cut].std(axis=0) + 1e-9
    add = np.clip(np.arange(len(s)) - RAMP_START, 0, None)[:, None] * ramp * sd
    return Series(s.timestamps, s.values + add, s.channels), s.slice(0, cut)


def smd_data() -> tuple[Series, Series] | None:
    """(test split, train split) of SMD machine-1-6; None when the shared data is not there."""
    root = Path(os.environ.get("TINYWARDEN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    path = root / "smd_asd" / "npz" / f"{SMD_ENTITY}.npz"
    if not path.exists():
        return None
    return read_series(f"{path}:test"), read_series(f"{path}:train")


def seen_as(f: np.ndarray, pre: np.ndarray) -> np.ndarray:
    """The integer features ``f`` as the op (and the integer step) sees them, in feature units: ``f >> pre`` (the
    op's input unit is ``2**pre`` features), at the middle of its unit (the lowering's reference assumes it)."""
    f = np.asarray(f, dtype=np.int64)
    return (((f >> pre) << pre) + np.where(pre > 0, 2.0 ** (pre - 1), 0.0)).astype(np.float64)


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
    scale_diff = np.zeros(aa.size)
    outside = np.zeros(aa.size, dtype=bool)  # inputs that have been 128 reference sd or more from the reference
    first_flag = None
    disagree = settling = 0
    first_split: dict[str, Any] | None = None  # the first window whose settling verdicts part, and why
    for row, x in enumerate(series.values):
        out = st.push(x)
        if out is None:
            continue
        if st.new_flag and first_flag is None:
            first_flag = row
        f = st.last_inputs
        assert f is not None
        xq = np.clip((f.astype(np.int64) >> a.pre) - (a.offset - a.fold), -a.xmax, a.xmax)
        outside |= (np.abs(a.z_of(xq << a.frac)) >= Z_MAX) | (a.svar >= SVAR_MAX)
        verdict = fp.threshold_ + (1.0 if out[0] > prog.threshold else -1.0)  # the integer score's side
        spreads = (fa._shadow_var / fa.reference_scale**2, a.svar / float(SETTLE_SPREAD_Q8) * SETTLE_SPREAD)
        step = fa.observe(aa * seen_as(f, a.pre) + bb, 0.0 if st.confidence < a.params.below_q15 else 1.0,
                          None, verdict)
        disagree += step.adapted != st.adapted or fa.settling != a.settling
        if first_split is None and fa.settling != a.settling:
            worst = int(np.argmax(spreads[0]))  # the float's widest input before this window, in reference variances
            first_split = {"row": row, "int_settling": bool(a.settling), "input": worst,
                           "input_outside": bool(outside[worst]), "float_spread": float(spreads[0][worst]),
                           "int_spread": float(spreads[1][worst]), "int_max_spread": float(spreads[1].max())}
        settling += a.settling
        if st.adapted:
            z_float = (fp.offset_ - fa.reference_offset) / fa.reference_scale
            mu_diff = np.maximum(mu_diff, np.abs(a.z_of(a.mu) / 4096.0 - z_float))
            s_int = 2.0**15 / a.g  # the adapted multiplier's factor is g / 2**15
            scale_diff = np.maximum(scale_diff, np.abs(s_int - fp.scale_ / fa.reference_scale))
    rf = replay(pipe, series, 0, cfg)
    inside = ~outside
    return {
        "adaptable": True, "inputs": int(aa.size), "inputs_outside": int(outside.sum()),
        "windows_disagreeing": int(disagree), "settling_windows": int(settling), "first_split": first_split,
        "arith_mean_diff_sd": float(mu_diff[inside].max()) if inside.any() else None,
        "arith_mean_diff_outside_sd": float(mu_diff[outside].max()) if outside.any() else None,
        "arith_mean_diff_beyond_half_unit_sd": float(max(0.0, np.max((mu_diff - half_unit)[inside])))
        if inside.any() else None,
        "arith_scale_ratio_diff": float(scale_diff[inside].max()) if inside.any() else None,
        "int_adapted": a.adapted, "float_adapted": rf.adapted, "windows": a.adapted + a.held,
        "int_first_flag_row": first_flag,
        "float_first_flag_row": int(rf.drift_flag_rows[0]) if len(rf.drift_flag_rows) else None,
        "int_final_drift_sd": a.drift / 4096.0, "var_max_ref": float(a.var.max() / VAR_ONE),
    }


def _f(v: Any, fmt: str = "{:.4f}") -> str:
    return "-" if v is None else fmt.format(v)


def render(res: dict[str, Any], ramp: float) -> str:
    lines = ["# Integer vs float baseline adaptation (benchmarks/adapt_q.py)", "",
             f"(1) Simulated camera, 3 days (attacks included), fitted on the first 1.5 attack-free days; a ramp of "
             f"{ramp} training standard deviations per row on every channel from row {RAMP_START}. (2) SMD "
             f"{SMD_ENTITY}, fitted on its train split (window 64 / stride 32), its test split streamed as it is. "
             "Policies: `defaults` (below-threshold gate, offsets only, settle_s 12 h) and `first version` "
             "(confidence gate, offsets and scales, no settling), rate_shift 8. See the script's docstring for the "
             "two comparisons. Mean and scale differences are over the inputs the integer step represents (never "
             "128 reference sd or more from the reference, the shadow's variance never at its cap of 256 reference "
             "variances; the others are counted, their largest mean difference shown apart: there the integer step "
             "clamps and the float follows the outlier).", "",
             "| data | family | policy | inputs (outside) | windows teach/settle differ | settling windows | "
             "arithmetic: max mean diff, sd | ... beyond half an input unit, sd | max scale ratio diff | mean diff "
             "outside, sd | windows | adapted int / float | first drift flag row int / float | final drift int, sd |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for ds, fams in res.items():
        for fam, per in fams.items():
            for pol, r in per.items():
                if not r.get("adaptable"):
                    lines.append(f"| {ds} | {fam} | {pol} | no adaptable op | | | | | | | | | | |")
                    continue
                lines.append(
                    f"| {ds} | {fam} | {pol} | {r['inputs']} ({r['inputs_outside']}) | {r['windows_disagreeing']} | "
                    f"{r['settling_windows']} | {_f(r['arith_mean_diff_sd'])} | "
                    f"{_f(r['arith_mean_diff_beyond_half_unit_sd'])} | {_f(r['arith_scale_ratio_diff'])} | "
                    f"{_f(r['arith_mean_diff_outside_sd'], '{:.2f}')} | {r['windows']} | "
                    f"{r['int_adapted']} / {r['float_adapted']} | {r['int_first_flag_row']} / "
                    f"{r['float_first_flag_row']} | {r['int_final_drift_sd']:.3f} |")
    splits = [(ds, fam, pol, r["first_split"]) for ds, fams in res.items() for fam, per in fams.items()
              for pol, r in per.items() if r.get("adaptable") and r.get("first_split")]
    if splits:
        lines += ["", "Where the settling verdicts part (the first such window): a shift is adopted only while the "
                  f"shadow's spread is at most {SETTLE_SPREAD:g} reference variances in every input (the steadiness "
                  "test), and the integer step clamps a window's deviation at 128 reference sd where the float takes "
                  "it whole, so an input that once went that far keeps the float's spread wide for longer. "
                  "*outside*: the input has been 128 sd or more from the reference.", "",
                  "| data | family | policy | row | settles first | widest input (float) | outside | float spread | "
                  "integer spread there | integer widest |", "|---|---|---|---:|---|---:|---|---:|---:|---:|"]
        for ds, fam, pol, f in splits:
            lines.append(f"| {ds} | {fam} | {pol} | {f['row']} | {'integer' if f['int_settling'] else 'float'} | "
                         f"{f['input']} | {'yes' if f['input_outside'] else 'no'} | {f['float_spread']:.1f} | "
                         f"{f['int_spread']:.2f} | {f['int_max_spread']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--ramp", type=float, default=2e-4, help="ramp, training standard deviations per row")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--datasets", default="sim,smd")
    args = ap.parse_args()
    sets: dict[str, tuple[Series, Series, dict[str, int]]] = {}
    if "sim" in args.datasets.split(","):
        series, train = data(args.ramp)
        sets["simulator"] = (series, train, {})
    if "smd" in args.datasets.split(","):
        smd = smd_data()
        if smd is None:
            print(f"SMD {SMD_ENTITY} not found (set TINYWARDEN_DATA): left out", file=sys.stderr)
        else:
            sets[f"SMD {SMD_ENTITY}"] = (smd[0], smd[1], {"window": 64, "stride": 32})
    res: dict[str, Any] = {}
    for name, (series, train, shape) in sets.items():
        res[name] = {}
        for fam in args.families.split(","):
            pipe = Pipeline(make_detector(fam, **FAMILIES.get(fam, {})), **shape).fit(train)
            res[name][fam] = {pol: compare(pipe, series, train, cfg) for pol, cfg in POLICIES.items()}
            print(name, fam, json.dumps(res[name][fam]), file=sys.stderr)
    md = render(res, args.ramp)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(md)
    print(json.dumps(res, indent=2) if args.json else md)
    return 0


if __name__ == "__main__":
    sys.exit(main())

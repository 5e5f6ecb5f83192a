"""Training cost of the autoencoders on 100k windows (the core issue asks for under a minute on a CPU).

    python benchmarks/train_time.py            # writes benchmarks/results/train_time.md
    python benchmarks/train_time.py --windows 20000 --json out.json

Windows are normal simulated ``camera`` telemetry (6 channels, window 128, stride 8 so that 100k windows
come from a realistic series rather than noise); each detector is trained with its default parameters,
the way ``tinywarden train`` does. Times are CPU seconds of this process on one core (see
``benchmarks.common.timed``), so a loaded machine does not inflate them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import RESULTS, machine_info, single_core, timed  # noqa: E402

BUDGET_S = 60.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=100_000, help="training windows (default 100000)")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON to this file")
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder for train_time.md")
    args = ap.parse_args(argv)
    single_core()

    import numpy as np

    from tinywarden.detectors import make_detector
    from tinywarden.features import batch_features, batch_windows
    from tinywarden.simulate import simulate

    window, stride = 128, 8
    rows_needed = window + stride * (args.windows - 1)
    series = simulate("camera", rows_needed * 10.0 / 86400.0 + 0.01, "none", seed=1)
    values = series.values[:rows_needed]
    _, feats = batch_features(values, window, stride)
    raw = np.concatenate(list(batch_windows(values, window, stride)), axis=0)
    feats = (feats - feats.mean(0)) / np.maximum(feats.std(0), 1e-6)
    raw = (raw - raw.mean((0, 1))) / np.maximum(raw.std((0, 1)), 1e-6)
    out = []
    for name, x in (("dense_ae", feats), ("conv_ae", raw)):
        det, seconds = timed(lambda name=name, x=x: make_detector(name).fit(x))
        out.append({"detector": name, "windows": len(x), "train_cpu_s": round(seconds, 2),
                    "params": det.n_params_, "within_budget": seconds < BUDGET_S})
        print(f"{name}: {len(x)} windows in {seconds:.1f} s CPU ({det.n_params_} params)")
    info = machine_info()
    lines = ["# Autoencoder training time (benchmarks/train_time.py)", "",
             f"Default parameters, {args.windows} windows of 128 x 6 (simulated camera), one core; "
             f"budget {BUDGET_S:.0f} s.", "", "| detector | windows | train CPU s | params | under budget |",
             "|---|---:|---:|---:|---|"]
    lines += [f"| {r['detector']} | {r['windows']} | {r['train_cpu_s']} | {r['params']} | "
              f"{'yes' if r['within_budget'] else 'NO'} |" for r in out]
    lines += ["", "Measured on: " + ", ".join(f"{k} {v}" for k, v in info.items())]
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "train_time.md").write_text("\n".join(lines) + "\n")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

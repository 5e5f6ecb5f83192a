"""Why one entity's window ROC AUC moves between the two crossings definitions of ``crossings_quality.py``: the
windows whose int8 crossings count differs (old: on the int16 samples; new: on the int8 residuals the program
ships), per channel, with their labels, and the samples of each such window.

    nice -n 5 python benchmarks/crossings_windows.py --dataset asd --entity omi-2 --family iforest

One fitted pipeline and one quantization at ``--stride`` (16: window 32, so blocks of 16 rows), exactly as
``crossings_quality.py`` scores them; labels only name the windows, nothing is chosen by them.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import entities, single_core  # noqa: E402
from benchmarks.crossings_quality import old_definition, window_auc  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    import numpy as np

    from tinywarden.detectors import make_detector
    from tinywarden.evaluate.metrics import window_labels
    from tinywarden.features import window_end_rows
    from tinywarden.kernels.features_s16 import ring_residuals
    from tinywarden.pipeline import Pipeline
    from tinywarden.program import KERNELS, quantize_samples
    from tinywarden.quantize.ptq import quantize_pipeline

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="asd")
    ap.add_argument("--entity", default="omi-2")
    ap.add_argument("--family", default="iforest")
    ap.add_argument("--stride", type=int, default=16)
    ap.add_argument("--show", type=int, default=4, help="print the samples of at most this many windows")
    args = ap.parse_args(argv)
    single_core()
    warnings.filterwarnings("ignore", category=UserWarning)
    ent = next(e for e in entities(args.dataset) if e.name == args.entity)
    p = ent.protocol
    pipe = Pipeline(make_detector(args.family), window=p.window, stride=p.train_stride).fit(ent.train)
    quantized = copy.copy(pipe)
    quantized.stride = args.stride
    new = dataclasses.replace(quantize_pipeline(quantized, ent.train), stride=args.stride)
    old = old_definition(new)
    if old is None:
        print("the shipped program counts crossings on the int16 samples: old and new are one program")
        return 0
    print(f"{args.dataset} {ent.name} {args.family} stride {args.stride}: window ROC AUC old "
          f"{window_auc(ent, old, args.stride):.4f}, new {window_auc(ent, new, args.stride):.4f}")
    q = quantize_samples(new, ent.stream.values)
    ends = window_end_rows(len(q), new.window, args.stride)
    view = np.lib.stride_tricks.sliding_window_view(q, new.window, axis=0)
    wins = np.ascontiguousarray(view[ends - (new.window - 1)].transpose(0, 2, 1))
    labels = window_labels(ent.stream.labels, ends, p.window).astype(bool)
    scored = ends >= ent.skip_rows
    feats = list(pipe.features)
    col = feats.index("crossings")
    op_old, op_new = old.ops[0], new.ops[0]
    f_old = KERNELS[op_old.kind].fn([wins], op_old)[:, col :: len(feats)]  # (windows, channels)
    f_new = KERNELS[op_new.kind].fn([wins], op_new)[:, col :: len(feats)]
    block = int(op_new.attrs["ring_block"])
    res, first, _ = ring_residuals(wins.astype(np.int64), block)
    sat = (np.abs(wins.reshape(res.shape) - first) > 127).reshape(len(wins), -1, new.n_channels).mean(axis=1)
    print(f"{int(scored.sum())} scored windows, {int(labels[scored].sum())} anomalous")
    print("channel | windows whose count differs (anomalous / normal) | mean old count | samples > 127 steps "
          "from their block's first")
    for c in range(new.n_channels):
        d = (f_old[:, c] != f_new[:, c]) & scored
        if d.any():
            print(f"{c} | {int((d & labels).sum())} / {int((d & ~labels).sum())} | {f_old[scored, c].mean():.2f} | "
                  f"{sat[scored, c].mean():.3f}")
    # the new count on one channel at a time, the old on the rest: which channel's crossings move the AUC
    from sklearn.metrics import roc_auc_score

    feat_old = KERNELS[op_old.kind].fn([wins], op_old)
    cols = col + len(feats) * np.arange(new.n_channels)

    def auc_with(features: np.ndarray) -> float:
        env = {op_new.dst: features}
        for op in new.ops[1:]:
            env[op.dst] = KERNELS[op.kind].fn([env[s] for s in op.src], op)
        return float(roc_auc_score(labels[scored], env["score"][scored, 0].astype(np.float64)))

    base = auc_with(feat_old)
    for c in np.flatnonzero(((f_old != f_new) & scored[:, None]).any(axis=0)):
        mixed = feat_old.copy()
        mixed[:, cols[c]] = f_new[:, c]
        print(f"new count on channel {c} alone: window ROC AUC {auc_with(mixed) - base:+.4f}")
    shown = 0
    for i in np.flatnonzero(scored & (f_old != f_new).any(axis=1)):
        for c in np.flatnonzero(f_old[i] != f_new[i]):
            if shown >= args.show:
                return 0
            x = wins[i, :, c].astype(np.int64)
            level = x.sum() // new.window
            print(f"window ending at row {ends[i]} ({'anomalous' if labels[i] else 'normal'}), channel {c}: "
                  f"old {f_old[i, c]} new {f_new[i, c]}; level {level}, level - block firsts "
                  f"{(level - x[::block]).tolist()}\n  samples {x.tolist()}")
            shown += 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The threshold at a false-positive rate the held-out windows cannot resolve: the highest held-out score (the rule
before) against the peaks-over-threshold fit (``tinywarden.calibrate.tail_threshold``), on data nobody here wrote.

A device that must not act once in a long period needs a per-window target far below one in the number of held-out
normal windows it was calibrated on (the range: 0 false actions in 4,500 windows, from about 1,460). The order
statistics cannot give that quantile; the tail fit extrapolates it. This measures, on later normal windows the
model never saw, how often each threshold is crossed (the realised false-positive rate, against the target), and
what the higher threshold costs: the share of labelled incidents that still have a window over it.

Protocol, per entity: the pipeline (``--family``, default pca; the dataset's window and training stride, the
range's 16 and 4) is fitted on the
training span as ``tinywarden train`` fits it (a quarter of the normal windows held out, in blocks, to calibrate);
the held-out scores give both thresholds at each target. The test span is scored with the same stride: windows
holding no labelled row count toward the realised FPR (pooled over the dataset's entities, so the rate can be read
below 1e-5), and a labelled incident (a run of labelled rows) counts as found when a window ending inside it, or
within one window length after it, is over the threshold. Labels are used for scoring only.

- ``smd``, ``asd``: ``../shared/data/smd_asd`` (the ``../shared/README.md`` split: train, then the labelled test).
- ``range``: a range run's recording (``--recording DIR``, normal only, without ``--drop-channels``): fitted on its
  first half, the second half scored; no incidents.

    python benchmarks/tail_threshold.py                                  # smd, asd -> results/tail_threshold.md
    python benchmarks/tail_threshold.py --recording /tmp/range/w/recording --drop-channels cpu_pct,mem_pct,load1
    python benchmarks/tail_threshold.py --quick --no-write
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, entities, json_safe, machine_info, single_core  # noqa: E402

TARGETS: tuple[float, ...] = (1e-3, 1e-4, 1e-5)
#: The range's window and stride (its tuned pipelines so far); SMD and ASD take their protocol's.
RANGE_WINDOW, RANGE_STRIDE = 16, 4


@dataclass
class Tally:
    """Pooled counts of one (dataset, target, rule)."""

    windows: int = 0
    over: int = 0
    incidents: int = 0
    found: int = 0
    ratios: list[float] = field(default_factory=list)  # threshold over the highest held-out score, per entity
    fitted: int = 0  # entities whose threshold the tail fit set

    def row(self) -> dict[str, Any]:
        return {"normal_windows": self.windows, "over": self.over,
                "realised_fpr": self.over / self.windows if self.windows else float("nan"),
                "incidents": self.incidents, "found": self.found, "entities": len(self.ratios),
                "tail_fitted": self.fitted,
                "median_threshold_over_highest": float(np.median(self.ratios)) if self.ratios else float("nan")}


def incident_spans(labels: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) row of each run of labelled rows."""
    y = np.concatenate(([0], (np.asarray(labels) > 0).astype(np.int8), [0]))
    d = np.diff(y)
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1, strict=True))


def thresholds(cal: np.ndarray, target: float) -> dict[str, tuple[float, bool]]:
    """Each rule's threshold at ``target`` on the held-out scores ``cal``, and whether the tail fit set it."""
    from tinywarden.calibrate import RULE_TAIL, calibrate_threshold

    new, rule = calibrate_threshold(cal, target)
    highest = new if rule != RULE_TAIL else float(np.max(cal))
    return {"highest held-out score": (highest, False), "tail fit": (new, rule == RULE_TAIL)}


def units(datasets: Sequence[str], recording: Path | None, quick: bool,
          drop: Sequence[str] = ()) -> Iterator[tuple[str, str, Any, Any]]:
    """(dataset, name, training series, scored series) of every entity (the recording without channels ``drop``)."""
    for ds in datasets:
        for e in entities(ds, quick=quick):
            yield ds, e.name, e.train, e.stream
    if recording is not None:
        from tinywarden.telemetry.io import read_folder
        from tinywarden.tune.search import select_channels

        series = read_folder(recording)
        series = select_channels(series, [c for c in series.channels if c not in drop])
        half = len(series) // 2
        yield "range", recording.name, series.slice(0, half), series.slice(half, len(series))


def run(datasets: Sequence[str], family: str, recording: Path | None, quick: bool,
        log: Any = print, drop: Sequence[str] = ()) -> dict[str, Any]:
    from common import PROTOCOLS

    from tinywarden.detectors import make_detector
    from tinywarden.pipeline import Pipeline, normal_window_mask

    shape = {ds: (p.window, p.train_stride) for ds, p in PROTOCOLS.items()} | {"range": (RANGE_WINDOW, RANGE_STRIDE)}
    tallies: dict[tuple[str, float, str], Tally] = {}
    per_entity = []
    for ds, name, train, test in units(datasets, recording, quick, drop):
        window, stride = shape[ds]
        pipe = Pipeline(make_detector(family), window=window, stride=stride, target_fpr=TARGETS[0]).fit(train)
        _, cal_x = pipe.split_inputs(train)
        cal = pipe.detector.score_samples(pipe.scale_inputs(cal_x))
        scored = pipe.score(test)
        normal = normal_window_mask(test.labels, scored.end_rows, pipe.window)
        spans = incident_spans(test.labels) if test.labels is not None else []
        row: dict[str, Any] = {"dataset": ds, "entity": name, "stride": stride, "calibration_windows": len(cal),
                               "normal_windows": int(normal.sum()), "incidents": len(spans)}
        for target in TARGETS:
            for rule, (thr, fitted) in thresholds(cal, target).items():
                t = tallies.setdefault((ds, target, rule), Tally())
                t.fitted += fitted
                over = scored.scores > thr
                t.windows += int(normal.sum())
                t.over += int((over & normal).sum())
                found = sum(bool(over[(scored.end_rows >= a) & (scored.end_rows <= b + pipe.window)].any())
                            for a, b in spans)
                t.incidents += len(spans)
                t.found += found
                t.ratios.append(thr / float(np.max(cal)) if np.max(cal) > 0 else float("nan"))
                row[f"{rule} @ {target:g}"] = {"threshold": thr, "over": int((over & normal).sum()), "found": found}
        per_entity.append(row)
        log(f"tail_threshold: {ds} {name}: {len(cal)} held-out windows, {int(normal.sum())} later normal windows")
    pooled = [{"dataset": ds, "target": target, "rule": rule, **t.row()}
              for (ds, target, rule), t in tallies.items()]
    return {"family": family, "targets": list(TARGETS), "pooled": pooled,
            "entities": per_entity, "machine": machine_info()}


def markdown(doc: dict[str, Any], command: str) -> str:
    lines = [
        "# Thresholds beyond the held-out data: the highest held-out score against the tail fit",
        "",
        f"Generated by `{command}` ({doc['family']}). Protocol in the script's docstring. "
        "Realised FPR: windows over the threshold among the later windows that hold no labelled row, pooled over the "
        "dataset's entities. Incidents found: labelled incidents with a window over the threshold. At 1e-3 the "
        "held-out windows resolve the target and both rules are the empirical quantile.",
        "",
        "| dataset | target | rule | set by the tail fit | realised FPR | over / normal windows | realised / target | "
        "incidents found | threshold / highest held-out (median) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["pooled"]:
        found = f"{r['found']}/{r['incidents']}" if r["incidents"] else "-"
        fitted = f"{r['tail_fitted']}/{r['entities']}" if r["rule"] == "tail fit" else "-"
        lines.append(f"| {r['dataset']} | {r['target']:g} | {r['rule']} | {fitted} | {r['realised_fpr']:.2e} | "
                     f"{r['over']}/{r['normal_windows']} | {r['realised_fpr'] / r['target']:.1f} | {found} | "
                     f"{r['median_threshold_over_highest']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="smd,asd", help="comma list of smd, asd (default both); '' for none")
    ap.add_argument("--family", default="pca")
    ap.add_argument("--recording", type=Path, default=None, help="a range run's recording folder (normal only)")
    ap.add_argument("--drop-channels", default="",
                    help="comma list of the recording's channels to leave out (the range: its host-wide cpu_pct, "
                         "mem_pct, load1, which the range's tune does not see either)")
    ap.add_argument("--quick", action="store_true", help="one small entity per dataset")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS / "tail_threshold.md")
    a = ap.parse_args(argv)
    single_core()
    datasets = [d for d in a.datasets.split(",") if d]
    drop = [c for c in a.drop_channels.split(",") if c]
    doc = run(datasets, a.family, a.recording, a.quick, log=lambda m: print(m, file=sys.stderr, flush=True),
              drop=drop)
    command = "python benchmarks/tail_threshold.py " + " ".join(argv if argv is not None else sys.argv[1:])
    md = markdown(doc, command.strip())
    print(md)
    if not a.no_write:
        a.out.write_text(md)
        a.out.with_suffix(".json").write_text(json.dumps(json_safe(doc), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

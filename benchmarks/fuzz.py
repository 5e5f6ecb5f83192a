"""Coverage-guided fuzz campaign over every parser of untrusted input (issue 12, item 9).

    python benchmarks/fuzz.py                        # the goals: 1M inputs per Python parser, 10M per C entry
    python benchmarks/fuzz.py --max-time 600         # at most 10 minutes per target: reports how far it got
    python benchmarks/fuzz.py --quick --json out.json

Python parsers (bundle, validly signed bundle, ``.twb`` model file, policy, escalation spool, audit log,
CSV and Parquet telemetry) run under atheris, guided by line coverage of tinywarden and tomllib; the
generated C module's ``tw_push`` / ``tw_respond`` entry points run under libFuzzer with ASan and UBSan
(``tests/c/fuzz_harness.c``). Every campaign starts from valid files generated at run time
(``tests/fuzz/seeds.py``) with a fixed libFuzzer seed. Reported per target: inputs executed, exec/s,
coverage (``cov``: atheris' instrumented lines / libFuzzer's edges; ``ft``: features), corpus size, and
findings: crashes (the process died: a sanitizer report, a signal), hangs (an input slower than
``--timeout``) and tracebacks (an exception other than a one-line ``TinywardenError``). ``c_state`` feeds
arbitrary bytes as the response state and checks that ``tw_respond`` refuses a corrupt one; ``c_state_memory``
does the same under the sanitizers alone (what an unrefused corrupt state does to memory).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from benchmarks.common import RESULTS, machine_info  # noqa: E402

from fuzz import native  # noqa: E402
from fuzz.campaign import Result, run_campaign  # noqa: E402
from fuzz.seeds import write_seeds  # noqa: E402
from fuzz.targets import TARGETS  # noqa: E402

GOAL_PYTHON = 1_000_000
GOAL_C = 10_000_000
MAX_LEN = {"c_push": 2048, "c_respond": 1024, "c_state": 1024, "c_state_memory": 1024}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    all_targets = [*TARGETS, *native.C_TARGETS]
    ap.add_argument("--targets", default=",".join(all_targets), help=f"comma-separated, of {', '.join(all_targets)}")
    ap.add_argument("--runs-python", type=int, default=GOAL_PYTHON, help="inputs per Python parser")
    ap.add_argument("--runs-c", type=int, default=GOAL_C, help="inputs per C entry point")
    ap.add_argument("--max-time", type=int, default=0, help="seconds per target at most (0: until the runs are done)")
    ap.add_argument("--timeout", type=int, default=10, help="seconds one input may take before it is a hang")
    ap.add_argument("--seed", type=int, default=1, help="libFuzzer's -seed")
    ap.add_argument("--quick", action="store_true", help="2,000 Python / 20,000 C inputs, at most 60 s per target")
    ap.add_argument("--work", type=Path, help="keep corpora, findings and logs here (default: a temp dir)")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON to this file")
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder for fuzz.md")
    ap.add_argument("--render", type=Path, nargs="+", help="only rewrite fuzz.md from these --json files")
    ap.add_argument("--note", action="append", default=[], help="a paragraph for fuzz.md (e.g. which finding "
                    "was fixed where); repeatable")
    args = ap.parse_args(argv)
    if args.render:
        _write(args, [row for f in args.render for row in json.loads(f.read_text())])
        return 0
    if args.quick:
        args.runs_python, args.runs_c, args.max_time = 2_000, 20_000, args.max_time or 60
    names = [t for t in args.targets.split(",") if t]
    unknown = set(names) - set(all_targets)
    if unknown:
        ap.error(f"unknown targets {sorted(unknown)}")
    c_names = [n for n in names if n in native.C_TARGETS]
    if c_names and (why := native.clang_fuzzer_available()):
        print(f"skipping the C targets: {why}", file=sys.stderr)
        c_names = []

    with tempfile.TemporaryDirectory(prefix="twfuzz-bench-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        py_names = [n for n in names if n in TARGETS]
        seed_dirs = write_seeds(work / "seeds", py_names)
        module = native.write_module(work / "c-module") if c_names else None
        rows: list[dict[str, object]] = []
        for name in names:
            if name in TARGETS:
                res = run_campaign(name, seed_dirs[name], work / name, runs=args.runs_python,
                                   max_time=args.max_time, seed=args.seed, timeout_s=args.timeout)
                goal = args.runs_python
            elif name in c_names:
                assert module is not None
                exe = native.build(module, name, work / "bin")
                res = run_campaign(name, native.seeds(module, name, work), work / name, runs=args.runs_c,
                                   max_time=args.max_time, seed=args.seed, timeout_s=args.timeout,
                                   max_len=MAX_LEN[name], command=[str(exe)])
                goal = args.runs_c
            else:
                continue
            rows.append({**res.to_dict(), "goal": goal, "max_time": args.max_time, "seed": args.seed,
                         "timeout": args.timeout, "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                         "parser": TARGETS[name].parser if name in TARGETS else f"generated C, {name}"})
            print(_line(res, goal), flush=True)
            _write(args, rows)
    return 0


def _line(r: Result, goal: int) -> str:
    return (f"{r.target}: {r.inputs:,} / {goal:,} inputs in {r.seconds:.0f} s ({r.exec_per_s:,.0f}/s), "
            f"cov {r.cov} ft {r.features}, crashes {r.crashes}, hangs {r.hangs}, tracebacks {r.tracebacks}")


def _write(args: argparse.Namespace, rows: list[dict[str, object]]) -> None:
    lines = ["# Fuzz campaign (benchmarks/fuzz.py)", "",
             "Python parsers under atheris (cov: instrumented tinywarden + tomllib lines), the generated C under "
             "libFuzzer with ASan + UBSan (cov: edges); seeded with valid files generated at run time. Goal: "
             f"{GOAL_PYTHON:,} inputs per Python parser, {GOAL_C:,} per C entry point, 0 findings. A target "
             "stops at its goal or its time limit; a campaign whose process dies resumes from its corpus (at most "
             "5 times). exec/s includes start-up and seed generation.", "",
             "| target | parser | finished | limit s | inputs | of goal | exec/s | cov | ft | corpus | crashes | hangs "
             "| tracebacks |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        r.setdefault("finished", r.get("started", "?"))  # rows written before the field was renamed
        lines.append(f"| {r['target']} | {r['parser']} | {r['finished']} | {r['max_time'] or '-'} | {r['inputs']:,} | "
                     f"{r['inputs'] / r['goal']:.0%} | {r['exec_per_s']:,.0f} | {r['cov']} | {r['features']} | "
                     f"{r['corpus']} | {r['crashes']} | {r['hangs']} | {r['tracebacks']} |")
    found = [(r["target"], f) for r in rows for f in r["findings"]]
    lines += ["", "## Findings", ""]
    lines += [f"- {t}: {f}" for t, f in found] or ["None."]
    for note in args.note:
        lines += ["", note]
    lines += ["", "Measured on: " + ", ".join(f"{k} {v}" for k, v in machine_info().items())]
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "fuzz.md").write_text("\n".join(lines) + "\n")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    raise SystemExit(main())

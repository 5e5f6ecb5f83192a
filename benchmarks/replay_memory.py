"""Peak resident memory against telemetry file size: the whole-file reader, the chunked one, score, evaluate, tune
and agent --replay.

    python benchmarks/replay_memory.py                       # writes benchmarks/results/replay_memory.md
    python benchmarks/replay_memory.py --rows 20000,60000 --results /tmp/rm.md --json /tmp/rm.json
    python benchmarks/replay_memory.py --rows 40000,360000 --mb 1024    # and a 1 GB file (in the temp dir)

For each size a labelled CSV of random telemetry (8 channels, 1 s apart, a 100-row labelled span every
50 000 rows) is written to the temporary directory (deleted at the end), and each of these runs in a fresh
interpreter whose peak resident memory (``VmHWM``) is reported: ``read_series`` (the whole file at once; not
run above ``--whole-max-mb``, where it would take gigabytes), iterating ``iter_series`` (chunks of
``CHUNK_ROWS`` rows), ``tinywarden score`` (an EWMA model; it reads in chunks and writes rows as it goes),
``tinywarden evaluate --json`` (chunks; keeps per-window results only), ``tinywarden tune`` (one EWMA
candidate, no instruction count: tune holds its data in memory, so it reads at most ``--max-rows`` rows,
200 000 by default) and ``tinywarden agent --replay`` (the same model with its int8 program, signed bundle,
dry-run actuators), which streams. A fresh interpreter's floor is measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from benchmarks.common import REPO, RESULTS, machine_info  # noqa: E402

CHANNELS = 8
# VmHWM, not ru_maxrss: the latter keeps the forked parent's pages from before exec.
_PEAK = ("import atexit, sys\n"
         "atexit.register(lambda: print('MAXRSS', next(ln.split()[1] for ln in open('/proc/self/status') "
         "if ln.startswith('VmHWM')), file=sys.stderr))\n")


def peak_mb(code: str) -> float:
    """Peak RSS in MB of a fresh interpreter running ``code``."""
    r = subprocess.run([sys.executable, "-c", _PEAK + code], capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise SystemExit(f"benchmark step failed: {r.stderr.strip()[-800:]}")
    line = next(ln for ln in r.stderr.splitlines() if ln.startswith("MAXRSS"))
    return round(int(line.split()[1]) / 1024, 1)


def cli_peak_mb(argv: list[str]) -> float:
    """Peak RSS in MB of ``tinywarden ARGV`` in a fresh interpreter (which must succeed)."""
    return peak_mb(f"import sys\nsys.argv = {['tinywarden', *argv]!r}\nfrom tinywarden.cli import main\n"
                   "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code")


def make_bundle(work: Path, train_csv: Path) -> tuple[Path, Path, Path]:
    """(signed bundle, its public key, the model file in it)."""
    from tinywarden import bundle as tb
    from tinywarden.detectors import make_detector
    from tinywarden.modelfile import pipeline_to_bytes
    from tinywarden.pipeline import Pipeline
    from tinywarden.quantize import int8_sections
    from tinywarden.telemetry import read_series

    train = read_series(train_csv)
    p = Pipeline(make_detector("ewma"), window=32, stride=16).fit(train)
    extra, arrays, _ = int8_sections(p, train)
    priv, pub = tb.write_keypair(work / "fleet")
    model = work / "m.twb"
    model.write_bytes(pipeline_to_bytes(p, extra, arrays))
    raw = tb.create_bundle(model.read_bytes(), (REPO / "examples" / "policy.toml").read_bytes(),
                           {"model_id": "replay-memory", "profile": "gateway"})
    bundle = work / "m.twbundle"
    bundle.write_bytes(tb.sign_bundle(raw, tb.load_private_key(priv), version=1))
    return bundle, pub, model


def write_random_csv(path: Path, rows: int | None = None, min_bytes: int = 0) -> int:
    """A labelled CSV of ``rows`` rows, or of at least ``min_bytes`` bytes; returns the row count.

    Written 100 000 rows at a time with Arrow's CSV writer (a 1 GB file in seconds, never whole in memory).
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(rows or min_bytes)
    names = ["timestamp", *(f"c{i}" for i in range(CHANNELS)), "label"]
    written = 0
    with pacsv.CSVWriter(str(path), pa.schema([(n, pa.int8() if n == "label" else pa.float64()) for n in names])) as w:
        while (rows is not None and written < rows) or (rows is None and path.stat().st_size < min_bytes):
            n = 100_000 if rows is None else min(100_000, rows - written)
            idx = written + np.arange(n)
            label = ((idx % 50_000) >= 25_000) & ((idx % 50_000) < 25_100)
            values = np.abs(rng.normal(10.0, 2.0, size=(n, CHANNELS))) + 20.0 * label[:, None]
            cols = [1.7e9 + idx.astype(float), *values.T, label.astype(np.int8)]
            w.write_table(pa.table(dict(zip(names, cols, strict=True))))
            written += n
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="40000,120000,360000", help="comma-separated row counts")
    ap.add_argument("--mb", default="", help="comma-separated file sizes in MB (e.g. 1024), after --rows")
    ap.add_argument("--whole-max-mb", type=float, default=64.0, help="largest file read whole by read_series")
    ap.add_argument("--replay-max-mb", type=float, default=float("inf"),
                    help="largest file replayed by agent --replay (it runs the loop sample by sample: slow)")
    ap.add_argument("--steps", default="", help="comma-separated columns to run, e.g. evaluate,score (default: all)")
    ap.add_argument("--results", type=Path, default=RESULTS / "replay_memory.md")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    sizes: list[tuple[int | None, int]] = [(int(r), 0) for r in args.rows.split(",") if r.strip()]
    sizes += [(None, int(float(m) * 2**20)) for m in args.mb.split(",") if m.strip()]
    rows_out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        small = work / "train.csv"
        write_random_csv(small, 5000)
        bundle, pub, model = make_bundle(work, small)
        floor = peak_mb("import numpy, tinywarden.telemetry")
        for rows, min_bytes in sizes:
            path = work / "telemetry.csv"
            started = time.monotonic()
            n = write_random_csv(path, rows, min_bytes)
            mb = path.stat().st_size / 2**20
            print(f"{n} rows, {mb:.1f} MB written in {time.monotonic() - started:.0f} s", file=sys.stderr)
            state = work / f"state{n}"
            agent_argv = ["agent", "--bundle", str(bundle), "--pubkey", str(pub), "--state-dir", str(state),
                          "--replay", str(path), "--drain", "0"]
            tune_argv = ["tune", str(path), "--out", str(work / "tuned.twb"), "--families", "ewma", "--windows", "32",
                         "--trials", "1", "--no-count", "--plot", str(work / "tuned.png")]
            row: dict[str, Any] = {"rows": n, "file_mb": round(mb, 1)}
            steps = {
                "read_series_mb": (None if mb > args.whole_max_mb else
                                   f"from tinywarden.telemetry import read_series\nread_series({str(path)!r})"),
                "iter_series_mb": ("from tinywarden.telemetry import iter_series\n"
                                   f"for _ in iter_series({str(path)!r}): pass"),
                "score_mb": ["score", str(model), str(path), "--out", str(work / "scores.csv")],
                "evaluate_mb": ["evaluate", str(model), str(path), "--json"],
                "tune_mb": tune_argv,
                "agent_replay_mb": None if mb > args.replay_max_mb else agent_argv,
            }
            chosen = {f"{k.strip().replace('-', '_')}_mb" for k in args.steps.split(",") if k.strip()}
            for key, step in steps.items():
                if chosen and key not in chosen:
                    step = None
                started = time.monotonic()
                row[key] = None if step is None else peak_mb(step) if isinstance(step, str) else cli_peak_mb(step)
                print(f"  {key}: {row[key]} MB, {time.monotonic() - started:.0f} s", file=sys.stderr)
            rows_out.append(row)
            path.unlink()
            shutil.rmtree(state, ignore_errors=True)
    m = machine_info()
    sizes_arg = f"--rows {args.rows}" + (f" --mb {args.mb}" if args.mb else "") + (
        f" --steps {args.steps}" if args.steps else "") + (
        f" --replay-max-mb {args.replay_max_mb:g}" if math.isfinite(args.replay_max_mb) else "")
    lines = [
        "# Peak memory against telemetry file size",
        "",
        f"`python benchmarks/replay_memory.py {sizes_arg}`; labelled CSV of {CHANNELS} channels; peak RSS of a "
        f"fresh interpreter per run (floor: `import numpy, tinywarden.telemetry` = {floor} MB). Machine: "
        f"{m['machine']}, Python {m['python']}, {m['date']}, commit {m['commit']}. tune reads at most its "
        "`--max-rows` (200 000) rows; read_series is not run on files over "
        f"{args.whole_max_mb:g} MB" + (f", agent --replay not on files over {args.replay_max_mb:g} MB (it replays "
                                        "sample by sample: hours at this size on this machine)"
                                        if math.isfinite(args.replay_max_mb) else "")
        + ". Goal (issue 15): 1 GB of telemetry under 300 MB resident.",
        "",
        "| rows | file (MB) | read_series, whole file (MB) | iter_series, chunks (MB) | score (MB) | evaluate (MB) "
        "| tune (MB) | agent --replay (MB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    keys = ("rows", "file_mb", "read_series_mb", "iter_series_mb", "score_mb", "evaluate_mb", "tune_mb",
            "agent_replay_mb")
    lines += ["| " + " | ".join("not run" if r[k] is None else str(r[k]) for k in keys) + " |" for r in rows_out]
    text = "\n".join(lines) + "\n"
    print(text)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(text)
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows_out, "floor_mb": floor}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

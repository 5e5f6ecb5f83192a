"""Peak resident memory against telemetry file size: the whole-file reader, the chunked one, score and agent --replay.

    python benchmarks/replay_memory.py                       # writes benchmarks/results/replay_memory.md
    python benchmarks/replay_memory.py --rows 20000,60000 --results /tmp/rm.md --json /tmp/rm.json

For each size a CSV of random telemetry (8 channels, 1 s apart) is written, and each of these runs in a fresh
interpreter whose peak resident memory (``VmHWM``) is reported: ``read_series`` (the whole file at
once, what ``evaluate``/``train`` still do), iterating ``iter_series`` (chunks of
``CHUNK_ROWS`` rows), ``tinywarden score`` (an EWMA model; it reads in chunks and writes rows as it goes) and
``tinywarden agent --replay`` (the same model with its int8 program, signed bundle, dry-run actuators), which
streams. A fresh interpreter's floor is measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
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


def write_random_csv(path: Path, rows: int) -> None:
    from tinywarden.telemetry import Series, write_csv

    rng = np.random.default_rng(rows)
    values = np.abs(rng.normal(10.0, 2.0, size=(rows, CHANNELS)))
    write_csv(Series(1.7e9 + np.arange(rows, dtype=float), values, tuple(f"c{i}" for i in range(CHANNELS))), path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="40000,120000,360000", help="comma-separated row counts")
    ap.add_argument("--results", type=Path, default=RESULTS / "replay_memory.md")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    sizes = [int(r) for r in args.rows.split(",") if r.strip()]
    rows_out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        small = work / "train.csv"
        write_random_csv(small, 5000)
        bundle, pub, model = make_bundle(work, small)
        floor = peak_mb("import numpy, tinywarden.telemetry")
        for n in sizes:
            path = work / f"t{n}.csv"
            write_random_csv(path, n)
            state = work / f"state{n}"
            agent_argv = ["agent", "--bundle", str(bundle), "--pubkey", str(pub), "--state-dir", str(state),
                          "--replay", str(path), "--drain", "0"]
            row = {
                "rows": n,
                "file_mb": round(path.stat().st_size / 2**20, 1),
                "read_series_mb": peak_mb(f"from tinywarden.telemetry import read_series\nread_series({str(path)!r})"),
                "iter_series_mb": peak_mb("from tinywarden.telemetry import iter_series\n"
                                          f"for _ in iter_series({str(path)!r}): pass"),
                "score_mb": cli_peak_mb(["score", str(model), str(path), "--out", str(work / "scores.csv")]),
                "agent_replay_mb": cli_peak_mb(agent_argv),
            }
            rows_out.append(row)
            path.unlink()
    m = machine_info()
    lines = [
        "# Peak memory against telemetry file size",
        "",
        f"`python benchmarks/replay_memory.py --rows {args.rows}`; CSV of {CHANNELS} channels; peak RSS of a fresh "
        f"interpreter per run (floor: `import numpy, tinywarden.telemetry` = {floor} MB). Machine: {m['machine']}, "
        f"Python {m['python']}, {m['date']}, commit {m['commit']}.",
        "",
        "| rows | file (MB) | read_series, whole file (MB) | iter_series, chunks (MB) | score (MB) "
        "| agent --replay (MB) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    keys = ("rows", "file_mb", "read_series_mb", "iter_series_mb", "score_mb", "agent_replay_mb")
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows_out]
    text = "\n".join(lines) + "\n"
    print(text)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(text)
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows_out, "floor_mb": floor}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Short coverage-guided fuzz campaigns over every parser of untrusted input, and the reproducers of what
the campaigns found (issue 12, item 9). The long campaigns are ``benchmarks/fuzz.py``.

Each campaign runs a few thousand inputs with a fixed libFuzzer seed from valid seed files, in a
subprocess, and must end with no finding: no crash, no hang, no exception other than a one-line
:class:`~tinywarden.errors.TinywardenError`.
"""

from __future__ import annotations

import functools
import importlib.util
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fuzz import native
from fuzz.campaign import _env, died_after_done, reproduces, run_campaign
from fuzz.regressions import REGRESSIONS
from fuzz.seeds import check_seeds_are_valid, write_seeds
from fuzz.targets import TARGETS, Finding, check

PY_RUNS = 2_000
C_RUNS = {"c_push": 20_000, "c_respond": 50_000, "c_state": 50_000, "c_state_memory": 50_000}
C_MAX_LEN = {"c_push": 2048, "c_respond": 1024, "c_state": 1024, "c_state_memory": 1024}

needs_atheris = pytest.mark.skipif(importlib.util.find_spec("atheris") is None,
                                   reason="atheris is not installed (pip install -e .[test] installs it)")


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_seeds(tmp_path_factory.mktemp("seeds"))


@pytest.fixture(scope="module")
def c_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    why = native.clang_fuzzer_available()
    if why:
        pytest.skip(why)
    return native.write_module(tmp_path_factory.mktemp("c-module"))


def test_seeds_pass_the_oracle(seeds: dict[str, Path]) -> None:
    assert set(seeds) == set(TARGETS)
    assert all(any(d.iterdir()) for d in seeds.values())
    check_seeds_are_valid(seeds)


def test_oracle_flags_foreign_exceptions_and_multiline_messages() -> None:
    from tinywarden.errors import DataError

    def raises(exc: Exception):  # noqa: ANN202
        def call() -> None:
            raise exc
        return call

    check("t", raises(DataError("f.csv: row 2: bad")), b"")  # a one-line TinywardenError is a rejection
    for exc in (KeyError("x"), ValueError("y"), OverflowError(), DataError("two\nlines"), DataError("")):
        with pytest.raises(Finding):
            check("t", raises(exc), b"")


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_regression(name: str) -> None:
    """Each input a campaign found is now a one-line rejection (or an accepted file)."""
    target, data = REGRESSIONS[name]
    TARGETS[target].harness(data)


@needs_atheris
@pytest.mark.parametrize("target", list(TARGETS))
def test_python_parser_short_campaign(target: str, seeds: dict[str, Path], tmp_path: Path) -> None:
    res = run_campaign(target, seeds[target], tmp_path, runs=PY_RUNS, seed=1234, max_restarts=0)
    assert res.findings == [], "\n".join(res.findings)
    assert res.inputs >= PY_RUNS, (tmp_path / "fuzz.log").read_text()[-3000:]
    assert res.cov > 0


@pytest.mark.parametrize("target", [
    "c_push",
    "c_respond",
    "c_state",  # random tw_response_t: refused with TW_EINVAL by the state invariant checks (issue 12 item 7)
    "c_state_memory",
])
def test_c_entry_point_short_campaign(target: str, c_module: Path, tmp_path: Path) -> None:
    exe = native.build(c_module, target, tmp_path / "bin")
    res = run_campaign(target, native.seeds(c_module, target, tmp_path), tmp_path / "run", runs=C_RUNS[target],
                       seed=1234, max_len=C_MAX_LEN[target], command=[str(exe)], max_restarts=0)
    assert res.findings == [], "\n".join(res.findings)
    assert res.inputs >= C_RUNS[target]
    assert res.cov > 0



C_REGRESSIONS = sorted((Path(__file__).parent / "fuzz" / "regressions_c").glob("*.bin"))


@pytest.mark.parametrize("artifact", C_REGRESSIONS, ids=[p.stem for p in C_REGRESSIONS])
def test_c_regression(artifact: Path, c_module: Path, tmp_path: Path) -> None:
    """Each input a C campaign found runs clean through its harness (no sanitizer report, no broken contract)."""
    target = artifact.stem.split("-", 1)[0]
    exe = native.build(c_module, target, tmp_path / "bin")
    proc = subprocess.run([str(exe), str(artifact)], capture_output=True, text=True,
                          env=_env(tmp_path / "findings"), timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Executed" in proc.stderr


@functools.cache
def _ewma_model() -> bytes:
    from fuzz.seeds import _series
    from tinywarden.detectors import make_detector
    from tinywarden.modelfile import pipeline_to_bytes
    from tinywarden.pipeline import Pipeline

    return pipeline_to_bytes(Pipeline(make_detector("ewma"), window=32, stride=16).fit(_series()))


def test_feature_name_with_newline_is_a_one_line_error() -> None:
    """Found by the long modelfile campaign: check_features echoed an unknown feature name as it is."""
    from tinywarden.modelfile import decode, encode

    header, arrays = decode(_ewma_model())
    header["pipeline"]["features"] = ["me\n", *header["pipeline"]["features"][1:]]
    TARGETS["modelfile"].harness(encode(header, arrays)[:-32])


def test_model_file_with_state_of_the_wrong_shape_is_refused() -> None:
    """A checksummed ``.twb`` whose EWMA ``mean_`` holds 1 value instead of one per feature must not load."""
    from tinywarden.errors import ModelFileError
    from tinywarden.modelfile import decode, encode, pipeline_from_bytes

    header, arrays = decode(_ewma_model())
    assert arrays["detector/mean_"].shape[0] > 1
    arrays["detector/mean_"] = arrays["detector/mean_"][:1]
    with pytest.raises(ModelFileError, match=r"^wrong-shape\.twb: detector 'ewma': array 'mean_' has shape \(1,\), "
                                             r"expected \(\d+,\)"):
        pipeline_from_bytes(encode(header, arrays), "wrong-shape.twb")
    # the state shrunk consistently with its input_shape_ still disagrees with what the pipeline feeds it
    arrays["detector/var_"] = arrays["detector/var_"][:1]
    arrays["detector/input_shape_"] = np.array([1], dtype=np.int64)
    with pytest.raises(ModelFileError, match=r"^wrong-shape\.twb: array 'detector/input_shape_' is \(1,\), the "
                                             r"pipeline makes model inputs of shape \(\d+,\)$"):
        pipeline_from_bytes(encode(header, arrays), "wrong-shape.twb")


@needs_atheris
def test_benchmark_reports_inputs_coverage_and_findings(tmp_path: Path) -> None:
    """benchmarks/fuzz.py's output contract: one row per target with the counts, and fuzz.md with the table."""
    import json
    import subprocess
    import sys

    if native.clang_fuzzer_available():
        pytest.skip(native.clang_fuzzer_available())
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz.py"
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, str(script), "--targets", "spool,c_respond", "--runs-python", "300",
                           "--runs-c", "3000", "--max-time", "120", "--json", str(out), "--results", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["target"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"spool", "c_respond"}
    assert rows["spool"]["kind"] == "python" and rows["c_respond"]["kind"] == "c"
    for r in rows.values():
        assert r["inputs"] >= r["goal"] and r["exec_per_s"] > 0 and r["cov"] > 0 and r["features"] > 0
        assert r["crashes"] == r["hangs"] == r["tracebacks"] == 0 and r["findings"] == []
    table = (tmp_path / "fuzz.md").read_text()
    assert "| spool |" in table and "| c_respond |" in table and "## Findings" in table


def test_a_death_after_every_run_is_an_input_finding_only_if_its_artifact_reproduces(tmp_path: Path) -> None:
    """A CI campaign of the parquet target died at exit ("Done 2001 in 1 second(s)", then "terminate called without
    an active exception" and libFuzzer's deadly signal): the artifact it wrote runs through the harness cleanly in a
    fresh process, so it is an exit of the interpreter, not a finding; one that fails there still is."""
    done = "#2001 pulse cov: 1 ft: 1 exec/s: 0\nDone 2001 in 1 second(s)\n"
    dead = "terminate called without an active exception\n==9== ERROR: libFuzzer: deadly signal\n"
    assert died_after_done(done + dead)
    assert not died_after_done(dead + done) and not died_after_done(dead)
    env = _env(tmp_path / "findings")
    clean = tmp_path / "crash-clean"
    clean.write_bytes(b"PAR1 not a parquet file")  # rejected in one line: the oracle's accepted outcome
    assert not reproduces("parquet", clean, env)
    assert reproduces("parquet", tmp_path / "crash-missing", env)  # the harness process fails: reproduced
    assert not (tmp_path / "findings").exists() or not any((tmp_path / "findings").iterdir())

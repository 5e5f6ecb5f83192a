"""tinywarden tune: synthetic anomalies, Pareto front, budget parsing, and the search end to end with the real
cross toolchain (arm-none-eabi-size) on a small multichannel series."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from conftest import spy_fits
from inprocess import run_tinywarden
from tinywarden.cli import app
from tinywarden.errors import ConfigError
from tinywarden.target import missing_tools
from tinywarden.telemetry.series import Series
from tinywarden.tune import ANOMALY_TYPES, Budget, BudgetError, inject, pareto_front, parse_bytes, tune
from tinywarden.tune.pareto import dominated, front_trials
from tinywarden.tune.search import Candidate, flash_lower_bound, input_candidates

needs_toolchain = pytest.mark.skipif(bool(missing_tools(("arm-none-eabi-gcc", "arm-none-eabi-size",
                                                          "arm-none-eabi-nm"))),
                                     reason="the ARM cross toolchain (gcc-arm-none-eabi) is not installed")
runner = CliRunner()


# -- synthetic anomalies -------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ANOMALY_TYPES)
def test_inject_changes_only_segment_rows_of_varying_channels(kind: str) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 4))
    x[:, 2] = 5.0  # constant: must never be touched
    spread = x.std(axis=0)
    inj = inject(x, kind, segment=40, spread=spread, seed=3)
    assert inj.segments, "no segment was injected"
    inside = np.zeros(len(x), dtype=bool)
    for a, b in inj.segments:
        inside[a:b] = True
    changed = np.any(inj.values != x, axis=1)
    assert changed.any()
    assert not (changed & ~inside).any()
    np.testing.assert_array_equal(inj.rows, changed)
    np.testing.assert_array_equal(inj.values[:, 2], x[:, 2])
    # the input is not modified in place
    assert not np.shares_memory(inj.values, x)


def test_inject_is_deterministic_per_seed_and_rejects_bad_input() -> None:
    x = np.random.default_rng(0).normal(size=(1000, 2))
    a = inject(x, "spike", 16, x.std(axis=0), seed=5)
    b = inject(x, "spike", 16, x.std(axis=0), seed=5)
    c = inject(x, "spike", 16, x.std(axis=0), seed=6)
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.array_equal(a.values, c.values)
    with pytest.raises(ConfigError, match="unknown synthetic anomaly 'meteor'"):
        inject(x, "meteor", 16, x.std(axis=0))
    with pytest.raises(ConfigError, match="no channel varies"):
        inject(np.ones((100, 2)), "spike", 16, np.zeros(2))


# -- budget and Pareto ---------------------------------------------------------------------------
def test_parse_bytes() -> None:
    assert parse_bytes("8KB") == 8192
    assert parse_bytes("4 kib") == 4096
    assert parse_bytes("0.5MB") == 512 * 1024
    assert parse_bytes("700") == 700
    for bad in ("", "8 parsecs", "-1KB", "0"):
        with pytest.raises(ConfigError):
            parse_bytes(bad, "--flash")


def test_a_size_too_large_for_a_float_is_a_config_error_not_an_overflow() -> None:
    for huge in ("9" * 400, "9" * 400 + "KB"):
        with pytest.raises(ConfigError, match="--flash"):
            parse_bytes(huge, "--flash")
    from inprocess import cli

    code, _, err = cli("tune", "nonexistent.csv", "--out", "unused.twb", "--flash", "9" * 400)
    assert code == 2 and "Traceback" not in err and "--flash" in err, err


@given(st.lists(st.tuples(st.floats(0, 1), st.integers(1, 10_000)), min_size=1, max_size=40))
def test_pareto_front_is_exactly_the_non_dominated_points(points: list[tuple[float, int]]) -> None:
    pts = [(q, float(c)) for q, c in points]
    front = set(pareto_front(pts))
    for i, p in enumerate(pts):
        beaten = any(dominated(p, o) for o in pts)
        if i in front:
            assert not beaten
        else:
            # a point left out is dominated, or an identical point represents it
            assert beaten or any(pts[j] == p for j in front)


def test_flash_bound_grows_with_model_size() -> None:
    cands = input_candidates(["kmeans"], 6, 6)
    base = next(c for c in cands if c.window == 16 and c.feature_set == "compact")
    small = dataclasses.replace(base, params=(("n_clusters", 2),))
    big = dataclasses.replace(base, params=(("n_clusters", 16),))
    assert flash_lower_bound(small, 6) < flash_lower_bound(big, 6)
    assert flash_lower_bound(small, 6) < flash_lower_bound(small, 12)


# -- the search ----------------------------------------------------------------------------------
def device_series(rows: int = 3000, seed: int = 0, anomaly: bool = False) -> Series:
    """Five channels with a daily-like cycle, correlated load and noise, plus one constant channel."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows, dtype=np.float64)
    phase = 2 * np.pi * t / 720.0
    load = 30 + 10 * np.sin(phase) + rng.normal(0, 1.5, rows)
    vals = np.stack([
        load,
        0.5 * load + rng.normal(0, 1.0, rows),
        np.full(rows, 7.0),
        20 + 5 * np.cos(phase) + rng.normal(0, 0.8, rows),
        rng.poisson(12, rows).astype(np.float64),
    ], axis=1)
    labels = None
    if anomaly:
        labels = np.zeros(rows, dtype=np.int8)
        for a in range(rows // 5, rows, rows // 5):
            vals[a : a + 60, 0] += 25.0
            vals[a : a + 60, 1] += 12.0
            labels[a : a + 60] = 1
    return Series(t * 60.0, vals, ("cpu", "mem", "const", "temp", "pkts"), labels)


def write_csv(series: Series, path: Path) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", *series.channels, *(["label"] if series.labels is not None else [])])
        for i in range(len(series)):
            row = [f"{series.timestamps[i]:.0f}", *(f"{v:.6g}" for v in series.values[i])]
            w.writerow(row + ([int(series.labels[i])] if series.labels is not None else []))
    return path


FAST = {"families": ["ewma", "kmeans"], "windows": [16, 32]}


@needs_toolchain
def test_every_built_candidate_is_measured_and_the_choice_fits() -> None:
    budget = Budget(flash=3200, ram=700)  # tight: the richer feature sets and window 32 are over it
    result = tune(device_series(), budget, max_trials=5, **FAST)  # type: ignore[arg-type]
    ok = [t for t in result.trials if t.status == "ok"]
    assert ok
    for t in result.trials:
        if t.status == "ok":
            assert t.flash is not None and t.ram is not None
            assert t.flash <= budget.flash and t.ram <= budget.ram
            assert math.isfinite(t.quality) and 0.5 <= t.quality <= 1.0
            assert set(t.auc_by_type) == set(ANOMALY_TYPES)
        elif t.status == "over budget":
            assert (t.flash or 0) > budget.flash or (t.ram or 0) > budget.ram
        elif t.status == "pre-filtered":
            assert t.flash_bound > budget.flash or t.ram_bound > budget.ram
    assert result.size.flash <= budget.flash and result.size.ram_with_state <= budget.ram
    assert result.chosen.quality == max(t.quality for t in ok if t.fpr_ok == result.chosen.fpr_ok)
    # the constant channel is dropped when that is what fits or scores best, and never changes quality
    assert "const" not in result.pipeline.channels_ or result.chosen.candidate.channels == "all"
    assert sum(t.measured for t in result.trials) <= 5
    # the front is drawn from the candidates that compete for the choice: the choice is on it
    front = front_trials(result)
    assert result.chosen in front and all(t.fpr_ok for t in front) == any(t.fpr_ok for t in ok)


@needs_toolchain
def test_too_small_budget_is_a_clear_error() -> None:
    with pytest.raises(BudgetError, match=r"no pipeline .* fits 50 B flash / 4096 B RAM.*needs at least"):
        tune(device_series(), Budget(flash=50, ram=4096), max_trials=4, **FAST)  # type: ignore[arg-type]
    res = runner.invoke(app, ["tune", "nonexistent.csv", "--out", "x.twb", "--flash", "8 parsecs"])
    assert isinstance(res.exception, ConfigError) and "--flash '8 parsecs'" in str(res.exception)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> dict:
    if missing_tools(("arm-none-eabi-gcc", "arm-none-eabi-size", "arm-none-eabi-nm")):
        pytest.skip("the ARM cross toolchain (gcc-arm-none-eabi) is not installed")
    d = tmp_path_factory.mktemp("tune")
    data = write_csv(device_series(), d / "normal.csv")
    labelled = write_csv(device_series(2000, seed=1, anomaly=True), d / "labelled.csv")
    model, plot = d / "model.twb", d / "front.png"
    res = runner.invoke(app, ["tune", str(data), "--flash", "3.25KB", "--ram", "700", "--out", str(model),
                              "--families", "ewma,kmeans", "--windows", "16,32", "--trials", "4",
                              "--plot", str(plot), "--json", "--no-count"])
    assert res.exit_code == 0, res.output
    return {"dir": d, "data": data, "labelled": labelled, "model": model, "plot": plot,
            "json": json.loads(res.stdout.strip().splitlines()[-1])}


def test_json_reports_family_window_measured_size_and_scores(tuned: dict) -> None:
    js = tuned["json"]
    for key in ("family", "window", "flash", "ram", "validation"):
        assert key in js
    assert js["family"] in ("ewma", "kmeans") and js["window"] in (16, 32)
    assert 0 < js["flash"] <= 3328 and 0 < js["ram"] <= 700  # 3.25KB: the smallest ewma module is ~3.2 KB
    v = js["validation"]
    assert set(v["auc_by_type"]) == set(ANOMALY_TYPES)
    assert 0.5 <= v["synthetic_auc"] <= 1.0 and v["labels_used"] == []
    assert tuned["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_saved_model_scores_int8_and_exports_to_the_measured_size(tuned: dict) -> None:
    from tinywarden.modelfile import load_pipeline
    from tinywarden.quantize import load_program
    from tinywarden.target import module_size

    pipe = load_pipeline(str(tuned["model"]))
    assert pipe.window == tuned["json"]["window"]
    assert list(pipe.channels_) == tuned["json"]["channels"]
    prog = load_program(pipe, str(tuned["model"]))
    out = tuned["dir"] / "scores.csv"
    res = runner.invoke(app, ["score", str(tuned["model"]), str(tuned["labelled"]), "--out", str(out), "--int8"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open()))
    assert rows and all(r["score"].lstrip("-").isdigit() for r in rows)
    c_dir = tuned["dir"] / "c"
    res = runner.invoke(app, ["export", str(tuned["model"]), "--target", "c", "--out", str(c_dir)])
    assert res.exit_code == 0, res.output
    assert module_size(c_dir).flash == tuned["json"]["flash"]
    assert prog.window == pipe.window


@pytest.mark.skipif(bool(missing_tools(("qemu-system-arm",))), reason="qemu-system-arm is not installed")
def test_labelled_validation_is_used_and_said(tuned: dict) -> None:
    model = tuned["dir"] / "labelled.twb"
    res = runner.invoke(app, ["tune", str(tuned["data"]), "--flash", "3.25KB", "--ram", "700", "--out", str(model),
                              "--families", "ewma", "--windows", "16", "--trials", "3",
                              "--validate", str(tuned["labelled"])])
    assert res.exit_code == 0, res.output
    assert "labels used:" in res.output and "Pareto front" in res.output
    from tinywarden.modelfile import load_pipeline

    summary = load_pipeline(str(model)).train_summary_["tune"]
    assert summary["validation"]["labels_used"] == [str(tuned["labelled"])]
    assert 0.5 <= summary["validation"]["labelled_auc"] <= 1.0
    # instructions were counted under QEMU for the chosen pipeline (the default)
    assert summary["instructions_per_window"] > 0


def test_too_small_budget_exits_2_with_one_line(tuned: dict) -> None:
    proc = subprocess.run([sys.executable, "-c", "from tinywarden.cli import main; main()", "tune",
                           str(tuned["data"]), "--flash", "50", "--out", str(tuned["dir"] / "no.twb"),
                           "--families", "ewma", "--windows", "16", "--trials", "2"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "no pipeline" in proc.stderr and "Traceback" not in proc.stderr


@needs_toolchain
def test_inputs_the_pca_probe_cannot_fit_are_ranked_by_the_fallback_probe() -> None:
    # 3800 B of flash (the module carries the ~1.2 KB likelihood step): PCA fits on the smaller feature sets but
    # not on every input choice
    result = tune(device_series(), Budget(flash=3800, ram=4096), families=["pca", "ewma"], windows=[16])
    inputs = [t for t in result.trials if t.stage == "inputs"]
    pca_too_big = {(t.candidate.feature_set, t.candidate.channels) for t in inputs
                   if t.candidate.family == "pca" and t.status in ("over budget", "pre-filtered")}
    assert pca_too_big, "the budget should leave PCA out of some input choice"
    probed_again = {(t.candidate.feature_set, t.candidate.channels) for t in inputs if t.candidate.family == "ewma"}
    assert probed_again == pca_too_big
    assert any(t.status == "ok" and t.candidate.family == "pca" for t in inputs)


@needs_toolchain
def test_a_candidate_a_numerical_library_gives_up_on_fails_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    import tinywarden.tune.search as search

    real = search.quantize_pipeline

    def flaky(pipeline, series):  # type: ignore[no-untyped-def]
        if pipeline.window == 32 and len(series) > 1000:  # not the tiny int8-support probe
            raise ValueError("The dual coefficients or intercepts are not finite.")
        return real(pipeline, series)

    monkeypatch.setattr(search, "quantize_pipeline", flaky)
    result = tune(device_series(), Budget(8192, 4096), families=["ewma"], windows=[32, 16])
    failed = [t for t in result.trials if t.status.startswith("failed")]
    assert failed and all(t.candidate.window == 32 and "ValueError: The dual" in t.status for t in failed)
    assert result.chosen.candidate.window == 16


@needs_toolchain
def test_a_time_budget_too_short_to_score_anything_says_so() -> None:
    with pytest.raises(ConfigError, match=r"time budget 1e-06 s reached before any candidate was built"):
        tune(device_series(), Budget(8192, 4096), time_budget=1e-6, **FAST)  # type: ignore[arg-type]


# -- short recordings (issue 17 item 5) ----------------------------------------------------------
def short_csv(tmp_path: Path, rows: int) -> Path:
    """``rows`` rows of a simulated camera's normal at 1 Hz (minutes, not days)."""
    out = tmp_path / f"camera{rows}.csv"
    res = runner.invoke(app, ["simulate", "--profile", "camera", "--days", repr(rows / 86400), "--period", "1",
                              "--attacks", "none", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert sum(1 for _ in out.open()) == rows + 1
    return out


def run_tune(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from tinywarden.cli import main; main()", "tune", *args,
                           "--families", "ewma", "--trials", "2", "--no-count", "--json"],
                          capture_output=True, text=True, timeout=600)


@needs_toolchain
@pytest.mark.parametrize("seconds", [float("nan"), 0.0, -1.0])
def test_a_time_budget_that_is_not_a_positive_number_is_refused(seconds: float) -> None:
    # NaN passed the "<= 0" check and then never stopped the search (every comparison with NaN is false)
    with pytest.raises(ConfigError, match="time budget must be a positive number"):
        tune(device_series(), Budget(8192, 4096), time_budget=seconds, **FAST)  # type: ignore[arg-type]


@pytest.mark.parametrize(("option", "value", "message"), [
    ("target_fpr", 0.0, "target FPR must be in"), ("target_fpr", 1.5, "target FPR must be in"),
    ("target_fpr", float("nan"), "target FPR must be in"), ("seed", -1, "seed: must be a non-negative integer"),
])
def test_a_target_fpr_or_seed_out_of_range_is_refused_before_any_candidate(option: str, value: float,
                                                                           message: str) -> None:
    # both reached tune unchecked: every candidate then failed (calibration, the anomaly injector's rng) and the
    # search ended with "no pipeline fits 8192 B flash / 4096 B RAM" or "trial limit reached", blaming the budget
    def no_candidate(*args: object, **kwargs: object) -> None:
        raise AssertionError("a candidate was run")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("tinywarden.tune.search._run_trial", no_candidate)
        with pytest.raises(ConfigError, match=message):
            tune(device_series(), Budget(8192, 4096), **{option: value}, **FAST)  # type: ignore[arg-type]


@pytest.mark.parametrize("option", ["--out", "--plot"])
def test_a_folder_as_out_or_plot_is_refused_before_the_search(tmp_path: Path, option: str) -> None:
    # found only when the chosen model was saved, after the whole search (up to --time-budget), and named the
    # temporary file: "error: /.tmp.foe36khm.tmp: Is a directory"
    data = tmp_path / "d.csv"
    write_csv(device_series(), data)
    (tmp_path / "folder").mkdir()
    paths = {"--out": tmp_path / "m.twb", "--plot": tmp_path / "p.png", option: tmp_path / "folder"}

    def no_candidate(*args: object, **kwargs: object) -> None:
        raise AssertionError("a candidate was run")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("tinywarden.tune.search._run_trial", no_candidate)
        r = run_tinywarden("tune", data, "--out", paths["--out"], "--plot", paths["--plot"], "--families", "ewma",
                           "--no-count")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"{tmp_path / 'folder'}: is a folder" in r.stderr.replace("\n", ""), r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv", "folder"]


def test_a_recording_in_which_nothing_varies_gets_the_bounds_rule_with_a_warning_not_a_refusal() -> None:
    # NAB's art_flatline and ec2_disk_write_bytes_1ef3de hold one value in their first 150 rows: tune refused them
    # ("no channel varies in the training part: nothing to learn") although a device can idle while recorded
    from tinywarden.program import run_int8

    series = Series(np.arange(150.0), np.full((150, 2), 45.0), ("temp", "disk"), None, None, "flat.csv", {})
    res = tune(series, Budget(8192, 4096))
    assert res.chosen.candidate.family == "bounds" and res.size.flash <= 8192 and res.size.ram_with_state <= 4096
    assert res.warning is not None and "no channel varies" in res.warning and "bounds" in res.warning
    x = np.full((60, 2), 45.0)
    x[40:, 1] = 46.0  # the disk starts writing
    _, anomalies = run_int8(res.program, x)
    n_quiet = (40 - res.chosen.candidate.window) // res.chosen.candidate.stride + 1  # windows before row 40
    assert not anomalies[:n_quiet].any() and anomalies[n_quiet:].any()


@needs_toolchain
@pytest.mark.parametrize("rows", [60, 120, 300])
def test_tune_on_minutes_of_data_returns_a_pipeline_and_says_which_windows(tmp_path: Path, rows: int) -> None:
    # on 60 rows the old search built only windows of 16+ rows, every candidate failed for too few windows,
    # and the error blamed the budget ("no pipeline fits 8192 B flash ... raise --flash/--ram")
    proc = run_tune(str(short_csv(tmp_path, rows)), "--out", str(tmp_path / "m.twb"))
    assert proc.returncode == 0, proc.stderr
    js = json.loads(proc.stdout.strip().splitlines()[-1])
    from tinywarden.tune.search import min_rows

    assert rows >= min_rows(js["window"], js["stride"], 0.2)
    note = js["windows_note"]
    assert note is not None and note.startswith(f"{rows} rows: tried window/stride ")
    assert f"{js['window']}/{js['stride']}" in note and "skipped " in note and "64 (needs " in note
    if rows == 60:
        assert js["window"] <= 8


@needs_toolchain
def test_too_short_for_every_window_is_a_data_refusal_naming_the_rows_needed(tmp_path: Path) -> None:
    from tinywarden.tune.search import min_rows

    proc = run_tune(str(short_csv(tmp_path, 60)), "--out", str(tmp_path / "m.twb"), "--windows", "16,32")
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"60 rows are too few to tune: the smallest window tried, 16 rows at stride 1, needs at least " \
           f"{min_rows(16, 1, 0.2)} rows" in err
    assert "--flash" not in err and "budget" not in err


@needs_toolchain
def test_candidates_failing_for_too_few_normal_windows_never_blame_the_budget(tmp_path: Path) -> None:
    # enough rows for window 16, but most are labelled anomalous: every candidate fails to fit for too few normal
    # windows. The old code said "no pipeline ... fits 8192 B flash / 4096 B RAM ...; raise --flash/--ram".
    s = device_series(200)
    labels = np.zeros(200, dtype=np.int8)
    labels[20:150] = 1
    data = write_csv(dataclasses.replace(s, labels=labels), tmp_path / "mostly_labelled.csv")
    proc = run_tune(str(data), "--out", str(tmp_path / "m.twb"), "--windows", "16")
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "hold too few windows to fit and validate any candidate" in err
    assert "16 rows at stride 4, needs at least 138 rows" in err
    assert "--flash" not in err and "fits 8192 B" not in err


def test_window_plan_adds_short_windows_only_to_the_defaults_and_only_on_short_data() -> None:
    from tinywarden.tune.search import WINDOWS, default_stride, min_rows, window_plan

    plan, short = window_plan(3000, None, 0.2)
    assert plan == {w: default_stride(w) for w in WINDOWS} and short == []
    # 150 rows: a 30-row held-out part cannot take a synthetic anomaly of 16 rows, so 8 and 4 are tried too
    plan, short = window_plan(150, None, 0.2)
    assert set(plan) == {16, 8, 4} and {w for w, _, _ in short} == {32, 64, 128}
    assert all(min_rows(w, s, 0.2) <= 150 for w, s in plan.items())
    assert all(need > 150 for _, _, need in short)
    # windows the user chose are kept as given: only their stride may shrink
    plan, short = window_plan(120, [16, 32], 0.2)
    assert plan == {16: 2} and [w for w, _, _ in short] == [32]


# -- validation on short data: folds, and no pipeline that alarms on normal (issue 17) ----------------
@needs_toolchain
def test_short_data_is_validated_on_folds_and_never_chooses_a_pipeline_that_alarms_on_normal(tmp_path: Path) -> None:
    # 150 rows of a camera's normal (its boot: cpu falls, memory climbs). The old search validated on the last 30
    # rows alone: too few for a synthetic anomaly at window 8, so it chose pca w=8/2 with no synthetic AUC at all
    # (ranked on flash), its FPR read from 6 windows. Folds score every candidate on all 150 rows.
    from tinywarden.telemetry import read_series
    from tinywarden.tune import search

    s = read_series(short_csv(tmp_path, 150))
    r = tune(s, Budget(8192, 4096), families=["pca"], windows=[4, 8], max_trials=7)
    assert math.isfinite(r.chosen.synthetic_auc), r.chosen.candidate.label
    assert r.chosen.fpr <= search.FAR_FPR_FACTOR * 0.01, (r.chosen.candidate.label, r.chosen.fpr)
    assert r.chosen.folds == search.FOLDS and r.summary()["validation"]["folds"] == search.FOLDS
    # every candidate here was scored on folds, since no window holds TAIL_MIN_WINDOWS windows in a 30-row tail
    assert all(t.folds == search.FOLDS for t in r.trials if t.status == "ok")


@needs_toolchain
def test_a_search_whose_candidates_all_alarm_on_normal_says_so(tmp_path: Path) -> None:
    # the old search shipped ewma w=4/1 here, alarming on 100% of the held-out tail's normal windows, and said
    # nothing; on folds both candidates alarm on 22-41%: the lowest is returned, with a warning naming the cause
    proc = run_tune(str(short_csv(tmp_path, 150)), "--out", str(tmp_path / "m.twb"))
    assert proc.returncode == 0, proc.stderr
    js = json.loads(proc.stdout.strip().splitlines()[-1])
    assert js["validation"]["fpr"] < 1.0 and js["validation"]["folds"] == 5
    warning = js["warning"]
    assert warning is not None and "alarms on held-out normal windows far more often than the target 0.01" in warning
    assert "trial limit 2 reached" in warning and f"on {js['validation']['fpr']:.0%} of them" in warning
    assert "warning: " in proc.stderr and "Traceback" not in proc.stderr


def test_over_the_fpr_limit_ranks_last_lowest_fpr_first() -> None:
    from tinywarden.tune.search import Trial, rank_key

    base = Candidate("pca", (), 16, 4, "small", ("mean",), "all")

    def trial(q: float, fpr: float, ok: bool, far: bool = False) -> Trial:
        return Trial(base, "models", status="ok", quality=q, fpr=fpr, fpr_ok=ok, fpr_far=far, flash=100)

    within, near, nearer, far = trial(0.6, 0.04, True), trial(0.9, 0.15, False), trial(0.8, 0.08, False), \
        trial(0.99, 1.0, False, True)
    assert sorted([far, near, within, nearer], key=rank_key, reverse=True) == [within, nearer, near, far]


def test_labels_choose_among_the_label_free_shortlist_not_over_every_candidate() -> None:
    """Issue 17 item 4: one to three labelled incidents rank poorly across every candidate (tune_smd.md); the
    labelled AUC now chooses among the SHORTLIST best by the synthetic anomalies. The old rule (labelled AUC averaged
    into the quality, best over all) took the candidate the synthetic check put last."""
    from tinywarden.tune.search import SHORTLIST, Trial, choose, rank_key

    def trial(family: str, synth: float, lab: float | None) -> Trial:
        c = Candidate(family, (), 16, 4, "small", ("mean",), "all")
        q = synth if lab is None else (synth + lab) / 2
        return Trial(c, "models", status="ok", quality=q, synthetic_auc=synth, labelled_auc=lab, fpr=0.0,
                     fpr_ok=True, flash=100)

    fams = ["pca", "gaussian", "kmeans", "knn", "iforest", "ocsvm", "ar"]
    ok = [trial(f, 0.95 - 0.01 * i, 0.6 + 0.01 * i) for i, f in enumerate(fams[:SHORTLIST])]
    ok.append(trial("ocsvm", 0.80, 0.99))  # labelled AUC best, synthetic last
    assert max(ok, key=rank_key).candidate.family == "ocsvm"  # what tune chose before
    assert choose(ok).candidate.family == fams[SHORTLIST - 1]  # best labelled AUC within the shortlist
    unlabelled = [dataclasses.replace(t, labelled_auc=None, quality=t.synthetic_auc) for t in ok]
    assert choose(unlabelled).candidate.family == "pca"  # without labels: the label-free rank alone


@pytest.mark.slow
@needs_toolchain
def test_tune_adds_ensembles_of_the_best_families_on_the_best_input() -> None:
    """Issue 17 item 2: after the model stage, the best candidate and the next best of other feature families on
    its input are fused into 2- and 3-member ensembles, measured and ranked like any candidate."""
    from tinywarden.detectors.ensemble import parse_members
    from tinywarden.tune.search import label_free_key

    result = tune(device_series(), Budget(flash=16384, ram=4096), families=["pca", "kmeans", "gaussian", "ensemble"],
                  windows=[16])
    ens = [t for t in result.trials if t.stage == "ensembles"]
    assert [len(parse_members(dict(t.candidate.params)["members"])) for t in ens] == [2, 3]
    models = [t for t in result.trials if t.status == "ok" and t.stage != "ensembles"
              and t.candidate.family != "ensemble"]
    best = max(models, key=label_free_key)
    first = parse_members(dict(ens[0].candidate.params)["members"])[0]
    assert first[0] == best.candidate.family and first[1] == dict(best.candidate.params)
    assert all((t.candidate.window, t.candidate.features) == (best.candidate.window, best.candidate.features)
               for t in ens)
    assert all(t.status == "ok" and t.flash is not None for t in ens)


@pytest.mark.timeout(60)
def test_a_window_longer_than_the_data_is_refused_at_once_not_after_hours_of_planning() -> None:
    # window_plan searched the rows a window needs one row at a time, for every stride from a quarter window
    # down to 1: --windows 100000 on a day of data (8640 rows) ran for hours before saying anything
    from tinywarden.errors import DataError
    from tinywarden.features import window_end_rows
    from tinywarden.tune.search import MIN_VALIDATION_WINDOWS, _fit_ok, min_rows, window_plan

    plan, short = window_plan(8640, [100_000, 10**23], 0.2)
    assert plan == {} and [w for w, _, _ in short] == [100_000, 10**23]
    assert all(need > 8640 for _, _, need in short)
    for w, st_, frac in ((16, 4, 0.2), (4, 1, 0.2), (32, 8, 0.05), (128, 32, 0.5), (64, 3, 0.33)):
        # the least rows: as the former row-by-row search found them
        rows, fit = w, next(m for m in range(1, 100) if _fit_ok(w, st_, m))
        while not (len(window_end_rows(int(round(rows * (1 - frac))), w, st_)) >= fit
                   and len(window_end_rows(rows - int(round(rows * (1 - frac))), w, st_)) >= MIN_VALIDATION_WINDOWS):
            rows += 1
        assert min_rows(w, st_, frac) == rows, (w, st_, frac)
    assert (min_rows(16, 4, 0.2), min_rows(4, 1, 0.2)) == (138, 33)
    plan, _ = window_plan(200_000, [4096], 0.2)
    assert plan == {4096: 1024}
    s = device_series(8640)
    with pytest.raises(DataError, match="8640 rows are too few to tune: the smallest window tried, 100000 rows"):
        tune(s, Budget(8192, 4096), families=["gaussian"], windows=[100_000])


def test_candidates_wider_than_their_family_int8_program_are_never_fitted(monkeypatch: pytest.MonkeyPatch) -> None:
    # such a candidate was fitted (the Gaussian's fit grows with the square of its inputs) and only then failed to
    # quantize; it is now ruled out before fitting, and the search says why
    from tinywarden.detectors import GaussianMahalanobis
    from tinywarden.kernels.pca_residual_s16 import PCA_MAX_INPUTS

    widths = spy_fits(monkeypatch, GaussianMahalanobis)
    n_ch = PCA_MAX_INPUTS // 3 + 1  # one channel too many even for the smallest feature set (3 features)
    rng = np.random.default_rng(0)
    wide = Series(np.arange(400) * 60.0, rng.normal(size=(400, n_ch)), tuple(f"c{i}" for i in range(n_ch)))
    with pytest.raises(ConfigError, match=f"{n_ch} channels x 5 features = {5 * n_ch} model inputs, more than "
                                          f"the {PCA_MAX_INPUTS} the int8 program of gaussian takes") as exc:
        tune(wide, Budget(1 << 20, 1 << 20), families=["gaussian"], windows=[16])
    assert "every candidate" in str(exc.value) and "fewer channels" in str(exc.value)
    assert max(widths) <= PCA_MAX_INPUTS  # only the 2-channel int8-support probe was fitted

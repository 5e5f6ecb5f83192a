"""The core commands as a user runs them: train, score, evaluate, demo (the console command's entry point, real
files)."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import make_series, spy_fits
from inprocess import run_tinywarden
from tinywarden.detectors import DEFAULT_FAMILY
from tinywarden.simulate import simulate
from tinywarden.telemetry import Series, read_series, write_csv


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``tinywarden ARGS`` through the console command's entry point, in this process (tests/inprocess.py): what
    these tests check is what the commands do; the README's sequences run them as subprocesses."""
    return run_tinywarden(*args, cwd=cwd)


@pytest.fixture(scope="module")
def sim_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sim") / "cam.csv"
    write_csv(simulate("camera", 10, "all", seed=3, attack_free_days=7), path)
    return path


@pytest.fixture(scope="module")
def trained(sim_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = tmp_path_factory.mktemp("model") / "m.twb"
    r = run("train", str(sim_csv), "--model", "kmeans", "--train-fraction", "0.7", "--out", str(model))
    assert r.returncode == 0, r.stderr
    return model


def test_train_reports_and_writes_model(trained: Path) -> None:
    from tinywarden.modelfile import load_pipeline

    p = load_pipeline(str(trained))
    assert p.detector.name == "kmeans" and p.window == 128 and p.stride == 64
    assert p.train_summary_["train_fraction"] == 0.7
    assert len(p.channels_) == 6


def test_train_without_model_fits_the_default_family(sim_csv: Path, tmp_path: Path) -> None:
    from tinywarden.modelfile import load_pipeline

    r = run("train", str(sim_csv), "--train-fraction", "0.7", "--out", str(tmp_path / "d.twb"))
    assert r.returncode == 0, r.stderr
    assert load_pipeline(str(tmp_path / "d.twb")).detector.name == DEFAULT_FAMILY == "gaussian"
    assert f"trained {DEFAULT_FAMILY}" in r.stdout


def test_score_writes_one_row_per_window(trained: Path, sim_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.csv"
    r = run("score", str(trained), str(sim_csv), "--out", str(out))
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(out.open()))
    series = read_series(sim_csv)
    assert len(rows) == (len(series) - 128) // 64 + 1
    assert set(rows[0]) == {"window_end", "score", "anomaly", "threshold", "confidence", "label"}
    assert {r["anomaly"] for r in rows} == {"0", "1"}
    # windows labelled anomalous score higher on average than normal ones, on both scales
    lab = np.array([int(r["label"]) for r in rows])
    sc = np.array([float(r["score"]) for r in rows])
    assert sc[lab == 1].mean() > sc[lab == 0].mean()
    conf = np.array([float(r["confidence"]) for r in rows])
    assert ((conf >= 0) & (conf <= 1)).all()
    assert conf[lab == 1].mean() > conf[lab == 0].mean()
    from tinywarden.modelfile import load_pipeline

    p = load_pipeline(str(trained))
    np.testing.assert_allclose(conf, p.confidence(sc, series, p.score(series).end_rows), atol=1e-5)


def test_evaluate_json_skips_the_training_part(trained: Path, sim_csv: Path, tmp_path: Path) -> None:
    png = tmp_path / "plot.png"
    r = run("evaluate", str(trained), str(sim_csv), "--json", "--plot", str(png))
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    for key in ("roc_auc", "pr_auc", "f1", "fpr", "detection_rate", "mean_detection_latency_s", "params",
                "model_bytes"):
        assert key in report
    assert report["skip_rows"] == round(len(read_series(sim_csv)) * 0.7)
    assert report["roc_auc"] > 0.8 and report["detection_rate"] > 0.5
    assert {a["attack"] for a in report["per_attack"]} <= {"cryptominer", "botnet_flood", "exfiltration",
                                                            "memory_exploit", "sensor_drift"}
    assert png.stat().st_size > 10_000
    table = run("evaluate", str(trained), str(sim_csv))
    assert table.returncode == 0 and "detection rate" in table.stdout


def test_user_mistakes_get_one_line_and_exit_2(trained: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,cpu_pct\n1,5\n2,oops\n")
    r = run("train", str(bad), "--out", str(tmp_path / "x.twb"))
    assert r.returncode == 2 and "row 3, column 'cpu_pct'" in r.stderr and "Traceback" not in r.stderr
    unlabelled = tmp_path / "u.csv"
    write_csv(Series(np.arange(300.0), np.ones((300, 6)), ("cpu_pct", "mem_pct", "power_mw", "tx_pkts",
                                                           "tx_bytes", "distinct_dst")), unlabelled)
    r = run("evaluate", str(trained), str(unlabelled))
    assert r.returncode == 2 and "needs a label column" in r.stderr
    corrupt = tmp_path / "c.twb"
    corrupt.write_bytes(trained.read_bytes()[:-5] + b"xxxxx")
    r = run("score", str(corrupt), str(unlabelled), "--out", str(tmp_path / "s.csv"))
    assert r.returncode == 2 and "corrupted" in r.stderr
    r = run("train", str(unlabelled), "--model", "nope", "--out", str(tmp_path / "x.twb"))
    assert r.returncode == 2 and "unknown detector" in r.stderr
    r = run("train", str(unlabelled), "--param", "n_clusters", "--model", "kmeans", "--out", "x.twb")
    assert r.returncode == 2 and "KEY=VALUE" in r.stderr


def test_detector_params_from_the_command_line(sim_csv: Path, tmp_path: Path) -> None:
    model = tmp_path / "ae.twb"
    r = run("train", str(sim_csv), "--model", "dense_ae", "--param", "hidden=8,3", "--param", "max_steps=50",
            "--window", "64", "--stride", "32", "--train-fraction", "0.6", "--out", str(model))
    assert r.returncode == 0, r.stderr
    from tinywarden.modelfile import load_pipeline

    p = load_pipeline(str(model))
    assert p.detector.hidden == (8, 3) and p.window == 64


def test_shared_data_slices_train_and_evaluate(shared_data: Path, tmp_path: Path) -> None:
    """Real public telemetry: an SMD machine (train split -> test split) and a NAB series (15% probation)."""
    smd = shared_data / "smd_asd" / "npz" / "machine-2-1.npz"
    model = tmp_path / "smd.twb"
    r = run("train", f"{smd}:train", "--model", "ewma", "--window", "32", "--stride", "8", "--out", str(model))
    assert r.returncode == 0, r.stderr
    r = run("evaluate", str(model), str(smd), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["roc_auc"] > 0.7
    nab = shared_data / "nab" / "data" / "realKnownCause" / "machine_temperature_system_failure.csv"
    model = tmp_path / "nab.twb"
    r = run("train", str(nab), "--model", "ewma", "--window", "32", "--stride", "4", "--train-fraction", "0.15",
            "--out", str(model))
    assert r.returncode == 0, r.stderr
    assert "dropped 12 row(s)" in r.stderr
    r = run("evaluate", str(model), str(nab), "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["skip_rows"] > 0 and rep["n_incidents"] >= 3


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    r = run("demo", "--days", "9", "--train-days", "7.5", "--out-dir", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert "Per attack type" in r.stdout and "all detectors" in r.stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    shown = (DEFAULT_FAMILY, "ewma", "kmeans", "dense_ae", "conv_ae")  # the default pipeline's family first
    assert set(report) == {*shown, "int8", "response", "adaptation"}
    assert all(report[d]["roc_auc"] > 0.75 for d in shown)
    assert abs(report["int8"]["int8_roc_auc"] - report["int8"]["float_roc_auc"]) < 0.02
    assert report["int8"]["int8_bytes"] < report["int8"]["float_bytes"]
    assert report["response"]["audit_ok"] and report["response"]["audit_records"] > 0
    assert sum(report["response"]["applied"].values()) > 0  # the attacks drew a response
    assert (tmp_path / "out" / "c" / "tinywarden_model.c").stat().st_size > 1000
    assert (tmp_path / "out" / f"{DEFAULT_FAMILY}.png").stat().st_size > 10_000
    assert (tmp_path / "out" / f"{DEFAULT_FAMILY}.twb").exists()
    # before/after of adaptation on a legitimate firmware update (benchmarks/drift.py measures whether it helps)
    assert "adaptation on a legitimate firmware update at day 8.5" in r.stdout
    off, on = report["adaptation"]["off"], report["adaptation"]["on"]
    assert all(0.0 <= x["in_alarm_24h"] <= 1.0 and x["false_alarms_24h"] >= 0 for x in (off, on))
    assert off["drift_flags"] == 0 and on != off  # the adapter ran in one replay only, and changed the scores


@pytest.mark.parametrize("bad", ["policy", "profile"])
def test_demo_refuses_a_bad_policy_or_profile_before_writing_anything(tmp_path: Path, bad: str) -> None:
    # the policy was read only at the last step: a non-TOML --policy was refused after the simulation, five trainings
    # and the C export, leaving a half-filled --out-dir; a bad --profile left an empty one
    (tmp_path / "p.toml").write_text("this is not = = toml\n")
    args = ["--policy", str(tmp_path / "p.toml")] if bad == "policy" else ["--profile", "toaster"]
    r = run("demo", "--days", "3", "--train-days", "2", "--out-dir", str(tmp_path / "out"), *args)
    line = one_line_error(r)
    assert ("p.toml" in line) if bad == "policy" else ("toaster" in line)
    assert not (tmp_path / "out").exists()


def test_demo_refuses_a_folder_that_is_not_its_own_and_reuses_its_own(tmp_path: Path) -> None:
    # demo deleted every audit.log* in --out-dir ("a fresh chain for each run") and replaced telemetry.csv, *.twb,
    # c/ ...: pointed at a folder of real work (an agent's log folder) it destroyed the audit log it found there
    out = tmp_path / "logs"
    out.mkdir()
    (out / "audit.log").write_text("the agent's evidence\n")
    line = one_line_error(run("demo", "--days", "3", "--train-days", "2", "--out-dir", str(out)))
    assert str(out) in line and "not empty" in line
    assert sorted(p.name for p in out.iterdir()) == ["audit.log"]
    assert (out / "audit.log").read_text() == "the agent's evidence\n"
    (out / "audit.log").unlink()
    r = run("demo", "--days", "3", "--train-days", "2", "--out-dir", str(out))
    assert r.returncode == 0, r.stderr
    r = run("demo", "--days", "3", "--train-days", "2", "--out-dir", str(out))  # its own folder: run again
    assert r.returncode == 0, r.stderr


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    """The single error line of a refused command (exit 2, no traceback)."""
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def _rewrite_cell(src: Path, dst: Path, row: int, column: str, value: str) -> Path:
    rows = list(csv.reader(src.open()))
    rows[row - 1][rows[0].index(column)] = value  # row counted as a spreadsheet does, header = 1
    with dst.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return dst


@pytest.mark.parametrize("model", ["dense_ae", "kmeans"])
def test_huge_cell_is_one_line_naming_file_row_column_in_train(sim_csv: Path, tmp_path: Path, model: str) -> None:
    # 1e308 once reached scikit-learn's scaler (overflow -> traceback) or a detector's NaN check (no row)
    bad = _rewrite_cell(sim_csv, tmp_path / "huge.csv", 5000, "power_mw", "1e308")
    line = one_line_error(run("train", str(bad), "--model", model, "--out", str(tmp_path / "x.twb")))
    assert f"{bad}: row 5000, column 'power_mw': '1e308' is out of range" in line


def test_huge_cell_is_one_line_naming_file_row_column_in_score(trained: Path, sim_csv: Path,
                                                               tmp_path: Path) -> None:
    bad = _rewrite_cell(sim_csv, tmp_path / "huge.csv", 7, "cpu_pct", "-1e308")
    line = one_line_error(run("score", str(trained), str(bad), "--out", str(tmp_path / "s.csv")))
    assert f"{bad}: row 7, column 'cpu_pct': '-1e308' is out of range" in line


def test_bom_and_epoch_milliseconds_train_and_score_like_the_plain_file(trained: Path, sim_csv: Path,
                                                                        tmp_path: Path) -> None:
    series = read_series(sim_csv)
    bom = tmp_path / "bom.csv"
    bom.write_bytes(sim_csv.read_bytes().decode().encode("utf-8-sig"))  # as Excel's "CSV UTF-8" saves it
    ms = tmp_path / "ms.csv"
    with ms.open("w", newline="") as fh:
        w = csv.writer(fh)
        for i, row in enumerate(csv.reader(sim_csv.open())):
            w.writerow(row if i == 0 else [str(round(float(row[0]) * 1000)), *row[1:]])
    assert series.timestamps[0] > 1e9  # epoch seconds, so the ms copy is > 1e12
    results = {}
    for name, path in (("plain", sim_csv), ("bom", bom), ("ms", ms)):
        out = tmp_path / f"{name}-scores.csv"
        r = run("score", str(trained), str(path), "--out", str(out))
        assert r.returncode == 0, r.stderr
        results[name] = [(row["window_end"], row["score"]) for row in csv.DictReader(out.open())]
        if name == "ms":
            assert "times read as epoch milliseconds" in r.stderr
    assert results["bom"] == results["plain"] and results["ms"] == results["plain"]
    r = run("train", str(bom), "--model", "ewma", "--out", str(tmp_path / "bom.twb"))
    assert r.returncode == 0, r.stderr


def test_extra_channels_are_named_and_ignored_missing_ones_refused(trained: Path, sim_csv: Path,
                                                                   tmp_path: Path) -> None:
    from tinywarden.modelfile import load_pipeline

    series = read_series(sim_csv)
    model_channels = load_pipeline(str(trained)).channels_
    extra = np.random.default_rng(0).normal(size=(len(series), 4)) * 1e3
    # the model's channels in reverse order, with four foreign ones in between
    order = list(reversed(range(series.n_channels)))
    wide = Series(series.timestamps, np.hstack([series.values[:, order[:3]], extra, series.values[:, order[3:]]]),
                  (*[series.channels[i] for i in order[:3]], "fan_rpm", "rssi", "temp_c", "volts",
                   *[series.channels[i] for i in order[3:]]), series.labels)
    write_csv(wide, tmp_path / "wide.csv")
    r = run("score", str(trained), str(tmp_path / "wide.csv"), "--out", str(tmp_path / "wide-scores.csv"))
    assert r.returncode == 0, r.stderr
    used = [line for line in r.stderr.splitlines() if "scoring the model's" in line]
    ignored = [line for line in r.stderr.splitlines() if "ignoring 4 channel(s)" in line]
    assert len(used) == 1 and ", ".join(model_channels) in used[0]
    assert len(ignored) == 1 and ignored[0].endswith("fan_rpm, rssi, temp_c, volts")
    r = run("score", str(trained), str(sim_csv), "--out", str(tmp_path / "plain-scores.csv"))
    assert "scoring the model's" not in r.stderr and "ignoring" not in r.stderr
    # picked by name, so the scores are those of the file with exactly the model's channels
    plain = [row["score"] for row in csv.DictReader((tmp_path / "plain-scores.csv").open())]
    assert [row["score"] for row in csv.DictReader((tmp_path / "wide-scores.csv").open())] == plain
    narrow = Series(series.timestamps, series.values[:, 1:], series.channels[1:])
    write_csv(narrow, tmp_path / "narrow.csv")
    line = one_line_error(run("score", str(trained), str(tmp_path / "narrow.csv"), "--out", str(tmp_path / "n.csv")))
    assert f"missing channel(s) {series.channels[0]} the model was trained on" in line


def test_model_with_nan_threshold_is_refused_by_every_reader(trained: Path, sim_csv: Path, tmp_path: Path) -> None:
    from tinywarden.modelfile import decode, encode

    header, arrays = decode(trained.read_bytes())
    header.pop("arrays")
    header["pipeline"]["threshold"] = float("nan")
    edited = tmp_path / "nan.twb"
    edited.write_bytes(encode(header, arrays))  # a valid checksum over the edited header
    for args in (("score", str(edited), str(sim_csv), "--out", str(tmp_path / "s.csv")),
                 ("evaluate", str(edited), str(sim_csv))):
        line = one_line_error(run(*args))
        assert f"{edited}: field pipeline.threshold is nan" in line


def test_an_out_path_under_a_file_or_on_a_file_is_one_line_naming_it(trained: Path, sim_csv: Path,
                                                                     tmp_path: Path) -> None:
    # mkdir under an existing file raised FileExistsError / NotADirectoryError: a traceback, exit 1
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder\n")
    for args in (("simulate", "--profile", "camera", "--days", "1", "--out", str(blocker / "x.csv")),
                 ("train", str(sim_csv), "--out", str(blocker / "m.twb")),
                 ("score", str(trained), str(sim_csv), "--out", str(blocker / "s.csv")),
                 ("export", str(trained), "--out", str(blocker / "sub"))):
        r = run(*args)
        err = r.stderr.strip()
        assert r.returncode == 2, (args, err)
        assert "Traceback" not in err and err.startswith("error:") and "afile" in err, (args, err)
    assert blocker.read_text() == "not a folder\n"


def _noise_csv(path: Path, channels: int, rows: int) -> Path:
    rng = np.random.default_rng(0)
    write_csv(Series(np.arange(rows) * 10.0, rng.normal(size=(rows, channels)),
                     tuple(f"c{i}" for i in range(channels))), path)
    return path


def test_train_refuses_an_input_wider_than_the_family_int8_program_before_fitting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 2,000 channels x 11 features grew past 8 GB over 14 minutes in the Gaussian's fit (its covariance grows with the
    # square of the features) for a model that could never have an int8 program: pca_residual_s16, its kernel, takes
    # at most PCA_MAX_INPUTS inputs (its int32 accumulator), and train said "no int8 program stored" at the end
    from tinywarden.detectors import GaussianMahalanobis
    from tinywarden.kernels.pca_residual_s16 import PCA_MAX_INPUTS
    from tinywarden.modelfile import load_pipeline
    from tinywarden.quantize import load_program

    fitted = spy_fits(monkeypatch, GaussianMahalanobis)
    # refused from the header's width alone: 40 rows are not even one window of the default 128
    wide = _noise_csv(tmp_path / "wide.csv", 2000, 40)
    line = one_line_error(run("train", str(wide), "--model", "gaussian", "--out", str(tmp_path / "w.twb")))
    assert f"{wide}: 2000 channels x 11 features = 22000 model inputs" in line
    assert f"the {PCA_MAX_INPUTS} the int8 program of gaussian takes" in line and "--features" in line
    # the widest input allowed trains, with its int8 program; one channel more is refused before any fit
    five = ("--model", "gaussian", "--features", "mean,std,max,min,last", "--window", "16", "--stride", "8")
    widest = PCA_MAX_INPUTS // 5
    over = _noise_csv(tmp_path / "over.csv", widest + 1, 300)
    line = one_line_error(run("train", str(over), *five, "--out", str(tmp_path / "o.twb")))
    assert f"{widest + 1} channels x 5 features = {5 * (widest + 1)} model inputs" in line
    assert fitted == [] and not (tmp_path / "w.twb").exists() and not (tmp_path / "o.twb").exists()
    ok = _noise_csv(tmp_path / "ok.csv", widest, 300)
    r = run("train", str(ok), *five, "--out", str(tmp_path / "ok.twb"))
    assert r.returncode == 0, r.stderr
    assert fitted == [5 * widest] == [PCA_MAX_INPUTS]
    program = load_program(load_pipeline(str(tmp_path / "ok.twb")))
    assert program.ops[-1].consts["weights"].shape[1] == PCA_MAX_INPUTS


def test_a_note_naming_a_long_path_is_never_broken_inside_it(tmp_path: Path) -> None:
    # stderr was wrapped at the console's width (80 columns in CI): a path longer than a line was cut in two, so the
    # gap note no longer named the file (and a test matching the agent's note against score's failed in CI)
    import os
    import sys

    from tinywarden.detectors import make_detector
    from tinywarden.modelfile import save_pipeline
    from tinywarden.pipeline import Pipeline

    deep = tmp_path / ("a-folder-with-a-rather-long-name-" * 3)
    deep.mkdir()
    s = make_series(n=600, channels=2, seed=5)
    ts = s.timestamps.copy()
    ts[300:] += 3600.0
    data = deep / "telemetry-with-a-gap.csv"
    write_csv(Series(ts, s.values, s.channels), data)
    save_pipeline(Pipeline(make_detector("ewma"), window=32, stride=16).fit(s), tmp_path / "m.twb")
    env = {**os.environ, "COLUMNS": "60", "TERM": "dumb"}
    r = subprocess.run([sys.executable, "-m", "tinywarden", "score", str(tmp_path / "m.twb"), str(data), "--out",
                        str(tmp_path / "s.csv")], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"note: {data}: 1 gap(s) in time" in r.stderr, r.stderr


@pytest.mark.parametrize("name", ["[/]cpu_pct", "[bold red]cpu_pct"], ids=["closing-tag", "style-tag"])
def test_a_column_name_that_looks_like_rich_markup_is_printed_as_it_is(sim_csv: Path, tmp_path: Path,
                                                                      name: str) -> None:
    """Messages were printed as rich markup, names and paths from the files included: a column named '[/]cpu_pct'
    turned the one-line error into a MarkupError traceback, and '[bold red]cpu_pct' lost its name from the
    message. They are text now: notes, warnings and errors name what the file holds."""
    rows = list(csv.reader(sim_csv.open()))
    rows[0] = [name if c == "cpu_pct" else c for c in rows[0]]
    odd = tmp_path / "odd.csv"
    with odd.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    model = tmp_path / "m.twb"
    assert run("train", str(odd), "--model", "kmeans", "--train-fraction", "0.7", "--out", str(model)).returncode == 0
    line = one_line_error(run("score", str(model), str(sim_csv), "--out", str(tmp_path / "s.csv")))
    assert name in line
    r = run("score", str(model), str(odd), "--out", str(tmp_path / "s.csv"))  # a note naming every channel
    assert r.returncode == 0 and "Traceback" not in r.stderr

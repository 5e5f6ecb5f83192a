"""``tinywarden respond`` and ``tinywarden audit verify`` end to end (in process, through ``main``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inprocess import cli

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "policy.toml"

STEP_S = 640  # the default pipeline's score interval: 64 samples x 10 s, which the example policy is tuned to


def write_scores(path: Path, threshold: float = 1.0) -> Path:
    rows = ["timestamp,score"]
    for i in range(300):
        score = 3.0 * threshold if 20 <= i < 60 else (float("nan") if 150 <= i < 155 else 0.2 * threshold)
        rows.append(f"{i * STEP_S},{'' if score != score else score}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_respond_json_timeline_and_audit(tmp_path: Path) -> None:
    scores = write_scores(tmp_path / "s.csv")
    log, key = tmp_path / "audit.log", tmp_path / "keys" / "audit.key"
    rc, out, _ = cli("respond", "--policy", EXAMPLE, "--scores", scores,
                     "--threshold", "1.0", "--audit", log, "--audit-key", key, "--json")  # fmt: skip
    assert rc == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert events and all({"time", "tier", "action", "event", "reason"} <= e.keys() for e in events)
    assert {e["event"] for e in events} == {"apply", "revert"}
    assert [e["tier"] for e in events if e["event"] == "apply"][:5] == [1, 2, 2, 3, 3]
    assert events[0]["time"] == 21 * STEP_S  # the second of two anomalous windows (k=2 of n=3)
    assert any(e["reason_code"] == "fault_score" for e in events)  # the empty score cells
    assert events[-1]["tier"] == 0  # everything reverted by the end
    records = [json.loads(x) for x in log.read_text().splitlines()]
    assert records[0]["kind"] == "genesis"
    first = records[1]["data"]
    assert first["policy_version"] == "2024.1" and first["threshold"] == 1.0 and first["model_id"] == "none"
    assert first["scores"][-2:] == [3.0, 3.0]

    rc, out, err = cli("audit", "verify", log, "--key", key)
    assert rc == 0 and "chain intact" in out

    text = log.read_text().splitlines(keepends=True)
    text[2] = text[2].replace('"tier":2', '"tier":0', 1)
    log.write_text("".join(text))
    rc, out, err = cli("audit", "verify", log, "--key", key)
    assert rc == 1 and "TAMPERED" in out and "audit.log:3" in err and "edited" in err

    rc, _, err = cli("respond", "--policy", EXAMPLE, "--scores", scores,
                     "--threshold", "1.0", "--audit", tmp_path / "b.log")  # fmt: skip
    assert rc == 2 and "--audit needs --audit-key" in err


def test_respond_table_output_and_resume_with_state(tmp_path: Path, monkeypatch) -> None:
    from tinywarden.cli.app import console

    monkeypatch.setattr(console, "width", 200)  # wide enough that rich does not fold action names
    scores = write_scores(tmp_path / "s.csv")
    state = tmp_path / "engine.json"
    args = ["respond", "--policy", EXAMPLE, "--scores", scores, "--threshold", "1.0", "--state", state]
    rc, out, _ = cli(*args)
    assert rc == 0 and "final tier: 0 (none)" in out and "egress_allowlist" in out
    # Replaying again with the same state file has nothing left to do.
    rc, out, _ = cli(*args, "--json")
    assert rc == 0 and out == ""


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("time,score\n1,2\n", "row 1: no 'timestamp' or 'window_end' column"),
        ("window_end,value\n1,2\n", "row 1: no 'score' column"),
        ("window_end,score,threshold\n1,2,0.5\n2,2,0.7\n", "row 3, column 'threshold': '0.7' differs"),
        ("window_end,score,threshold\n1,2,nan\n", "row 2, column 'threshold': 'nan' is not finite"),
        ("timestamp,score\n1,high\n", "row 2, column 'score': 'high' is not a number"),
        ("timestamp,score\nnoon,1\n", "row 2, column 'timestamp'"),
    ],
)
def test_bad_scores_file_is_one_line_exit_2(tmp_path: Path, body: str, message: str) -> None:
    scores = tmp_path / "s.csv"
    scores.write_text(body)
    rc, _, err = cli("respond", "--policy", EXAMPLE, "--scores", scores, "--threshold", "1")
    assert rc == 2 and message in err and str(scores) in err.replace("\n", "")


def test_a_window_scored_twice_is_refused_not_counted_twice(tmp_path: Path) -> None:
    """A scores file with a row repeated (a concatenation, a double export): each copy counted as a window of
    its own toward k-of-n, so one window over the threshold escalated as if two had been, without a note."""
    rows = [f"{i * STEP_S},{3.0 if i == 20 else 0.2}" for i in range(40)]
    scores = tmp_path / "s.csv"
    scores.write_text("\n".join(["timestamp,score", *rows[:21], rows[20], *rows[21:]]) + "\n")
    rc, _, err = cli("respond", "--policy", EXAMPLE, "--scores", scores, "--threshold", "1", "--json")
    assert rc == 2 and "row 23, column 'timestamp': duplicate time" in err.replace("\n", "")


def test_threshold_or_model_exactly_one(tmp_path: Path) -> None:
    scores = write_scores(tmp_path / "s.csv")
    rc, _, err = cli("respond", "--policy", EXAMPLE, "--scores", scores)
    assert rc == 2 and "exactly one of --threshold or --model" in err


def test_bad_policy_is_one_line_exit_2(tmp_path: Path) -> None:
    policy = tmp_path / "p.toml"
    policy.write_text(EXAMPLE.read_text().replace('interface = "wlan0"', 'interface = "eth1"'))
    scores = write_scores(tmp_path / "s.csv")
    rc, _, err = cli("respond", "--policy", policy, "--scores", scores, "--threshold", "1")
    assert rc == 2 and "actions.uplink_down.interface" in err and "critical interface" in err


def test_model_file_supplies_the_threshold(tmp_path: Path) -> None:
    # The CLI, not the engine, reads the model: respond stays downstream of detectors.
    pytest.importorskip("tinywarden.modelfile")
    from conftest import make_series
    from tinywarden.detectors import make_detector
    from tinywarden.modelfile import save_pipeline
    from tinywarden.pipeline import Pipeline

    fitted = Pipeline(make_detector("ewma"), window=32, stride=16).fit(make_series())
    model = tmp_path / "m.twb"
    save_pipeline(fitted, model)
    assert float(fitted.threshold_) > 0
    scores = write_scores(tmp_path / "s.csv", threshold=float(fitted.threshold_))
    log = tmp_path / "audit.log"
    rc, out, _ = cli("respond", "--policy", EXAMPLE, "--scores", scores, "--model", model,
                     "--audit", log, "--audit-key", tmp_path / "keys" / "k", "--json")  # fmt: skip
    assert rc == 0
    data = json.loads(log.read_text().splitlines()[1])["data"]
    assert data["threshold"] == pytest.approx(float(fitted.threshold_))
    assert len(data["model_id"]) == 16 and data["model_id"] != "none"


def write_scores_as(path: Path, time_col: str, t0: float, per_second: float, bom: bool = False) -> Path:
    """The rows of :func:`write_scores` under another time column name, origin and time unit."""
    lines = write_scores(path).read_text().splitlines()
    rows = [f"{time_col},score"]
    for line in lines[1:]:
        t, score = line.split(",")
        rows.append(f"{int((t0 + float(t)) * per_second)},{score}")
    path.write_bytes(("\n".join(rows) + "\n").encode("utf-8-sig" if bom else "utf-8"))
    return path


def _times(scores: Path) -> list[float]:
    rc, out, err = cli("respond", "--policy", EXAMPLE, "--scores", scores, "--threshold", "1",
                       "--json")  # fmt: skip
    assert rc == 0, err
    return [json.loads(line)["time"] for line in out.splitlines()]


def test_scores_by_window_end_with_bom_or_in_milliseconds_give_the_same_timeline(tmp_path: Path) -> None:
    t0 = 1_767_225_600.0
    plain = _times(write_scores_as(tmp_path / "a.csv", "timestamp", t0, 1.0))
    assert plain and plain[0] == t0 + 21 * STEP_S
    assert _times(write_scores_as(tmp_path / "b.csv", "window_end", t0, 1.0)) == plain
    assert _times(write_scores_as(tmp_path / "c.csv", "timestamp", t0, 1.0, bom=True)) == plain
    # epoch milliseconds taken as seconds would make every dead-man timer 1000 times too short
    ms = write_scores_as(tmp_path / "d.csv", "timestamp", t0, 1000.0)
    assert _times(ms) == plain
    rc, _, err = cli("respond", "--policy", EXAMPLE, "--scores", ms, "--threshold", "1")
    assert rc == 0 and "times read as epoch milliseconds" in err


@pytest.fixture(scope="module")
def scored_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A model trained by the CLI and the float and int8 score files `tinywarden score` writes with it."""
    from conftest import make_series
    from inprocess import run_tinywarden
    from tinywarden.telemetry import Series, write_csv

    d = tmp_path_factory.mktemp("scored")
    s = make_series(n=4000)
    vals = s.values.copy()
    vals[3000:3200] += 8.0  # one anomaly, so the replay has something to respond to
    write_csv(Series(s.timestamps + 1_767_225_600.0, vals, s.channels), d / "tel.csv")

    def run(*args: object) -> None:
        r = run_tinywarden(*map(str, args), cwd=d)
        assert r.returncode == 0, r.stderr

    run("train", "tel.csv", "--model", "kmeans", "--window", "32", "--stride", "16", "--train-fraction", "0.6",
        "--param", "n_init=1", "--out", "m.twb")
    run("score", "m.twb", "tel.csv", "--out", "float.csv")
    run("score", "m.twb", "tel.csv", "--int8", "--out", "int8.csv")
    run("train", "tel.csv", "--model", "ewma", "--window", "32", "--stride", "16", "--out", "other.twb")
    return {"model": d / "m.twb", "float": d / "float.csv", "int8": d / "int8.csv", "other": d / "other.twb"}


def test_respond_reads_what_score_writes(scored_files: dict[str, Path]) -> None:
    from tinywarden.modelfile import load_pipeline

    rc, out, err = cli("respond", "--policy", EXAMPLE, "--scores", scored_files["float"],
                       "--model", scored_files["model"], "--json")  # fmt: skip
    assert rc == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert any(e["event"] == "apply" for e in events)
    threshold = float(load_pipeline(str(scored_files["model"])).threshold_)
    assert all(e["threshold"] == pytest.approx(threshold) for e in events if "threshold" in e)


def test_int8_scores_are_replayed_against_the_integer_threshold(scored_files: dict[str, Path]) -> None:
    from tinywarden.modelfile import load_pipeline
    from tinywarden.quantize import load_program

    pipe = load_pipeline(str(scored_files["model"]))
    int8_threshold = load_program(pipe).threshold
    assert int8_threshold != pipe.threshold_
    rc, out, err = cli("respond", "--policy", EXAMPLE, "--scores", scored_files["int8"],
                       "--model", scored_files["model"], "--json")  # fmt: skip
    assert rc == 0, err
    assert f"integer threshold {int8_threshold}" in err
    float_rc, float_out, _ = cli("respond", "--policy", EXAMPLE, "--scores",
                                 scored_files["float"], "--model", scored_files["model"], "--json")  # fmt: skip
    applied = [json.loads(line)["time"] for line in out.splitlines() if json.loads(line)["event"] == "apply"]
    float_applied = [json.loads(line)["time"] for line in float_out.splitlines()
                     if json.loads(line)["event"] == "apply"]
    # the integer scores on their own scale find the same incident as the float ones
    assert applied and float_applied and abs(applied[0] - float_applied[0]) <= 3 * 16 * 10


def test_scores_of_another_model_are_refused(scored_files: dict[str, Path]) -> None:
    rc, _, err = cli("respond", "--policy", EXAMPLE, "--scores", scored_files["float"],
                     "--model", scored_files["other"])  # fmt: skip
    line = err.strip()
    assert rc == 2 and "\n" not in line and "Traceback" not in err
    assert f"{scored_files['float']} was scored against threshold" in line and "score the telemetry" in line


@pytest.mark.parametrize("planted", ["link", "dangling", "fifo"])
def test_a_state_path_holding_a_link_or_fifo_is_refused_in_one_line(tmp_path: Path, planted: str) -> None:
    """``respond --state PATH`` at a path others may have planted something at: a link was followed (its target read
    as the state), a FIFO hung the command and /dev/zero read on until memory ran out. The audit log's rule, through
    the one helper (fileio.read_regular): refused in one line, nothing followed or touched."""
    import os
    import threading

    scores = write_scores(tmp_path / "s.csv")
    victim = tmp_path / "victim.json"
    victim.write_text("{}")
    state = tmp_path / "engine.json"
    if planted == "link":
        state.symlink_to(victim)
    elif planted == "dangling":
        state.symlink_to(tmp_path / "missing.json")
    else:
        os.mkfifo(state)  # (a device such as /dev/zero: tests/test_fileio.py, never read here on a regression)
    result: list[tuple[int, str, str]] = []
    t = threading.Thread(target=lambda: result.append(cli("respond", "--policy", EXAMPLE, "--scores", scores,
                                                          "--threshold", "1.0", "--state", state)), daemon=True)
    t.start()
    t.join(30)
    if t.is_alive():  # let the stuck reader go before failing
        if planted == "fifo":
            os.close(os.open(state, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"respond --state blocked on a {planted}")
    rc, _, err = result[0]
    kind = "a FIFO" if planted == "fifo" else "a symbolic link"
    assert rc == 2 and f"not a regular file ({kind}); refusing to use it as engine state" in err, err
    assert len(err.strip().splitlines()) == 1
    assert victim.read_text() == "{}" and os.path.lexists(state)
    assert not (tmp_path / "missing.json").exists()


def test_a_policy_named_with_markup_is_shown_as_it_is(tmp_path: Path, monkeypatch) -> None:
    """The timeline's title is the policy's name and version: a policy named '[/]edge' turned `respond` into a
    MarkupError traceback after the replay had run, and '[bold]edge' lost those characters."""
    from tinywarden.cli.app import console

    monkeypatch.setattr(console, "width", 200)
    scores = write_scores(tmp_path / "s.csv")
    for name in ("[/]edge", "[bold]edge"):
        policy = tmp_path / "p.toml"
        policy.write_text(EXAMPLE.read_text().replace('name = "', f'name = "{name}', 1))
        rc, out, err = cli("respond", "--policy", policy, "--scores", scores, "--threshold", "1.0")
        assert rc == 0 and "Traceback" not in err, err
        assert f"{name}" in out and "final tier: 0 (none)" in out

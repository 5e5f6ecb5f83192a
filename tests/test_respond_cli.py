"""``tinywarden respond`` and ``tinywarden audit verify`` end to end (in process, through ``main``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tinywarden.cli import main

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "policy.toml"


def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["tinywarden", *map(str, args)])
    with pytest.raises(SystemExit) as exit_:
        main()
    out = capsys.readouterr()
    return int(exit_.value.code or 0), out.out, out.err


STEP_S = 640  # the default pipeline's score interval: 64 samples x 10 s, which the example policy is tuned to


def write_scores(path: Path, threshold: float = 1.0) -> Path:
    rows = ["timestamp,score"]
    for i in range(300):
        score = 3.0 * threshold if 20 <= i < 60 else (float("nan") if 150 <= i < 155 else 0.2 * threshold)
        rows.append(f"{i * STEP_S},{'' if score != score else score}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_respond_json_timeline_and_audit(tmp_path: Path, monkeypatch, capsys) -> None:
    scores = write_scores(tmp_path / "s.csv")
    log, key = tmp_path / "audit.log", tmp_path / "keys" / "audit.key"
    rc, out, _ = cli(monkeypatch, capsys, "respond", "--policy", EXAMPLE, "--scores", scores,
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

    rc, out, err = cli(monkeypatch, capsys, "audit", "verify", log, "--key", key)
    assert rc == 0 and "chain intact" in out

    text = log.read_text().splitlines(keepends=True)
    text[2] = text[2].replace('"tier":2', '"tier":0', 1)
    log.write_text("".join(text))
    rc, out, err = cli(monkeypatch, capsys, "audit", "verify", log, "--key", key)
    assert rc == 1 and "TAMPERED" in out and "audit.log:3" in err and "edited" in err

    rc, _, err = cli(monkeypatch, capsys, "respond", "--policy", EXAMPLE, "--scores", scores,
                     "--threshold", "1.0", "--audit", tmp_path / "b.log")  # fmt: skip
    assert rc == 2 and "--audit needs --audit-key" in err


def test_respond_table_output_and_resume_with_state(tmp_path: Path, monkeypatch, capsys) -> None:
    from tinywarden.cli.app import console

    monkeypatch.setattr(console, "width", 200)  # wide enough that rich does not fold action names
    scores = write_scores(tmp_path / "s.csv")
    state = tmp_path / "engine.json"
    args = ["respond", "--policy", EXAMPLE, "--scores", scores, "--threshold", "1.0", "--state", state]
    rc, out, _ = cli(monkeypatch, capsys, *args)
    assert rc == 0 and "final tier: 0 (none)" in out and "egress_allowlist" in out
    # Replaying again with the same state file has nothing left to do.
    rc, out, _ = cli(monkeypatch, capsys, *args, "--json")
    assert rc == 0 and out == ""


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("time,score\n1,2\n", "no 'timestamp' column"),
        ("timestamp,score\n1,high\n", "row 2, column 'score': 'high' is not a number"),
        ("timestamp,score\nnoon,1\n", "row 2, column 'timestamp'"),
    ],
)
def test_bad_scores_file_is_one_line_exit_2(tmp_path: Path, monkeypatch, capsys, body: str, message: str) -> None:
    scores = tmp_path / "s.csv"
    scores.write_text(body)
    rc, _, err = cli(monkeypatch, capsys, "respond", "--policy", EXAMPLE, "--scores", scores, "--threshold", "1")
    assert rc == 2 and message in err and str(scores) in err.replace("\n", "")


def test_threshold_or_model_exactly_one(tmp_path: Path, monkeypatch, capsys) -> None:
    scores = write_scores(tmp_path / "s.csv")
    rc, _, err = cli(monkeypatch, capsys, "respond", "--policy", EXAMPLE, "--scores", scores)
    assert rc == 2 and "exactly one of --threshold or --model" in err


def test_bad_policy_is_one_line_exit_2(tmp_path: Path, monkeypatch, capsys) -> None:
    policy = tmp_path / "p.toml"
    policy.write_text(EXAMPLE.read_text().replace('interface = "wlan0"', 'interface = "eth1"'))
    scores = write_scores(tmp_path / "s.csv")
    rc, _, err = cli(monkeypatch, capsys, "respond", "--policy", policy, "--scores", scores, "--threshold", "1")
    assert rc == 2 and "actions.uplink_down.interface" in err and "critical interface" in err


def test_model_file_supplies_the_threshold(tmp_path: Path, monkeypatch, capsys) -> None:
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
    rc, out, _ = cli(monkeypatch, capsys, "respond", "--policy", EXAMPLE, "--scores", scores, "--model", model,
                     "--audit", log, "--audit-key", tmp_path / "keys" / "k", "--json")  # fmt: skip
    assert rc == 0
    data = json.loads(log.read_text().splitlines()[1])["data"]
    assert data["threshold"] == pytest.approx(float(fitted.threshold_))
    assert len(data["model_id"]) == 16 and data["model_id"] != "none"

"""One confidence scale (issue 14 items 1 and 3): tier ``min_confidence`` in the engine, and in the C export,
which honours it with the program's integer likelihood and refuses it for a program without one."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from test_respond_engine import THRESHOLD, policy_text
from tinywarden.audit import AuditLog
from tinywarden.likelihood import confidence_of_z, z_for_confidence
from tinywarden.respond.engine import REASON_NO_CONFIDENCE, ResponseEngine, SimulatedClock
from tinywarden.respond.policy import PolicyError, check_c_exportable, parse_policy


def gated_policy(alert_conf: float | None = 0.5, extra: str = "") -> str:
    text = policy_text(alert_k=2, alert_n=3)
    if alert_conf is not None:
        text = text.replace("[tiers.alert]\n", f"[tiers.alert]\nmin_confidence = {alert_conf}\n", 1)
    return text + extra


def engine(text: str, tmp_path: Path | None = None) -> ResponseEngine:
    audit = AuditLog(tmp_path / "audit.log") if tmp_path is not None else None
    return ResponseEngine(parse_policy(text), THRESHOLD, clock=SimulatedClock(), audit=audit, model_id="m1")


def feed(e: ResponseEngine, windows: list[tuple[float, float | None]]) -> list:
    out = []
    for i, (score, conf) in enumerate(windows):
        out += e.observe(score, at=10.0 * i, confidence=conf)
    return out


def test_the_documented_meaning_of_one_half_is_a_tail_probability_of_1e_minus_5() -> None:
    z = z_for_confidence(0.5, 10.0)
    assert math.isclose(-math.log10(0.5 * math.erfc(z / math.sqrt(2))), 5.0, rel_tol=1e-6)
    assert float(confidence_of_z(z, 10.0)) == pytest.approx(0.5)


def test_min_confidence_keeps_scores_above_the_bar_from_escalating_when_confidence_is_below_it() -> None:
    high_score = 2 * THRESHOLD + 1
    low = feed(engine(gated_policy(0.5)), [(high_score, 0.3)] * 6)
    high = feed(engine(gated_policy(0.5)), [(high_score, 0.7)] * 6)
    assert not [e for e in low if e.event == "apply"]
    assert [e.action for e in high if e.event == "apply"][:1] == ["notify"]


def test_a_policy_without_min_confidence_ignores_the_confidence() -> None:
    windows = [(2 * THRESHOLD + 1, 0.0)] * 3 + [(0.0, 1.0)] * 3 + [(2 * THRESHOLD + 1, 0.9)] * 8
    with_conf = feed(engine(gated_policy(None)), windows)
    without = feed(engine(gated_policy(None)), [(s, None) for s, _ in windows])
    assert [e.to_dict() for e in with_conf] == [e.to_dict() for e in without]
    assert [e for e in with_conf if e.event == "apply"]


def test_a_model_without_confidence_falls_back_to_scores_with_one_note() -> None:
    gated = feed(engine(gated_policy(0.5)), [(2 * THRESHOLD + 1, None)] * 6)
    plain = feed(engine(gated_policy(None)), [(2 * THRESHOLD + 1, None)] * 6)
    notes = [e for e in gated if e.reason_code == REASON_NO_CONFIDENCE]
    assert len(notes) == 1 and "ignored" in notes[0].reason
    assert [e.to_dict() for e in gated if e.reason_code != REASON_NO_CONFIDENCE] == [e.to_dict() for e in plain]


def test_audit_records_of_a_detection_carry_the_confidence(tmp_path: Path) -> None:
    feed(engine(gated_policy(0.5), tmp_path), [(2 * THRESHOLD + 1, 0.75)] * 3)
    recs = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    actions = [r for r in recs if r["kind"] == "action"]
    assert actions and all(r["data"]["confidence"] == 0.75 for r in actions)


@pytest.mark.parametrize("value", ["-0.1", "1.5", '"high"', "nan"])
def test_min_confidence_outside_0_1_is_refused_with_its_key(value: str) -> None:
    with pytest.raises(PolicyError, match=r"tiers\.alert\.min_confidence"):
        parse_policy(gated_policy(None).replace("[tiers.alert]\n", f"[tiers.alert]\nmin_confidence = {value}\n"))


def test_the_c_export_refuses_min_confidence_only_without_a_likelihood() -> None:
    check_c_exportable(parse_policy(gated_policy(None)))
    check_c_exportable(parse_policy(gated_policy(0.5)), has_likelihood=True)
    with pytest.raises(PolicyError, match=r"tiers\.alert\.min_confidence: the generated C module has no"):
        check_c_exportable(parse_policy(gated_policy(0.5)))


def test_the_c_emitter_honours_min_confidence_with_a_likelihood_and_refuses_it_without() -> None:
    # the library path (emit_c / write_c / export_c with a policy) decides too, not only the CLI
    import dataclasses

    from int8_fixtures import camera, fitted
    from tinywarden.codegen.c import emit_c
    from tinywarden.quantize import quantize_pipeline

    pipe, _ = fitted("ewma")
    _, train = camera()
    program = quantize_pipeline(pipe, train)
    assert program.likelihood is not None
    assert "tw_respond" in emit_c(program, parse_policy(gated_policy(None)))["tinywarden_model.c"]
    src = emit_c(program, parse_policy(gated_policy(0.5)))["tinywarden_model.c"]
    assert "tw_resp_min_confidence" in src and "16384" in src  # the alert bar 0.5 in Q15
    with pytest.raises(PolicyError, match=r"min_confidence"):
        emit_c(dataclasses.replace(program, likelihood=None), parse_policy(gated_policy(0.5)))


def test_cli_export_refuses_min_confidence_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import copy
    import sys

    from int8_fixtures import camera, fitted
    from tinywarden.cli import main
    from tinywarden.modelfile import save_pipeline
    from tinywarden.quantize import int8_sections

    pipe = copy.copy(fitted("ewma")[0])
    pipe.likelihood_ = None  # a model trained before the likelihood existed: its int8 program has none
    _, train = camera()
    extra, arrays, _ = int8_sections(pipe, train)
    save_pipeline(pipe, tmp_path / "m.twb", extra=extra, extra_arrays=arrays)
    (tmp_path / "p.toml").write_text(gated_policy(0.5))
    argv, sys.argv = sys.argv, ["tinywarden", "export", str(tmp_path / "m.twb"), "--policy",
                                str(tmp_path / "p.toml"), "--out", str(tmp_path / "c")]
    try:
        with pytest.raises(SystemExit) as exc:
            main()
    finally:
        sys.argv = argv
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "min_confidence" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c" / "tinywarden_model.c").exists()


def test_adaptation_table_defaults_on_and_can_be_switched_off() -> None:
    assert parse_policy(gated_policy(None)).adaptation.enabled is True
    off = parse_policy(gated_policy(None, "\n[adaptation]\nenabled = false\n"))
    assert off.adaptation.enabled is False
    with pytest.raises(PolicyError, match=r"adaptation\.rate_shift"):
        parse_policy(gated_policy(None, "\n[adaptation]\nrate_shift = 0\n"))
    with pytest.raises(PolicyError, match=r"adaptation\.bogus"):
        parse_policy(gated_policy(None, "\n[adaptation]\nbogus = 1\n"))

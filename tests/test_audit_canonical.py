"""A record line must be exactly the bytes its writer wrote: the MAC covers the parsed record, so a line that
parses to the same record but reads differently (a duplicate key, which ``json.loads`` resolves to the last
while grep, first-wins parsers and people see the first; added whitespace) was reported intact although it
was edited by someone without the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinywarden.audit import AuditKey, AuditLog, load_key, verify


@pytest.fixture
def key(tmp_path: Path) -> AuditKey:
    return load_key(tmp_path / "keys" / "audit.key", create=True)


def _log(path: Path, key: AuditKey) -> None:
    log = AuditLog(path, key=key, device_id="gw-1")
    for i in range(4):
        log.append("action", {"tier": i, "status": "done", "name": "cap"}, time=float(i))


@pytest.mark.parametrize(
    "edit",
    [
        # a first "kind" and "data" that a reader who takes the first key sees, json.loads the last
        lambda line: line.replace('{"data":', '{"kind":"note","data":{"tier":0,"status":"refused"},"data":', 1),
        lambda line: line.replace('"status":"done"', '"status":"refused: forged","status":"done"', 1),
        lambda line: line.replace(",", ", ", 1),  # whitespace: parses the same, is not what was written
        lambda line: line.replace('"cap"', '"\\u0063ap"', 1),  # an escape the writer never writes
    ],
)
def test_a_line_edited_without_changing_its_parse_is_tampering(tmp_path: Path, key: AuditKey, edit) -> None:
    path = tmp_path / "a.log"
    _log(path, key)
    assert verify(path, key).verdict == "intact"
    lines = path.read_text().splitlines(keepends=True)
    edited = edit(lines[2])
    assert edited != lines[2]
    lines[2] = edited
    path.write_text("".join(lines))
    report = verify(path, key)
    assert report.verdict == "tampered"
    assert any(p.where == "a.log:3" and "canonical" in p.message for p in report.problems), report.problems

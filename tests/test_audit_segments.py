"""A stray file beside the log whose suffix Python calls a digit but ``int`` cannot read (``audit.log.²``) made
``segments`` raise ValueError: ``audit verify`` died with a traceback instead of naming a finding, and the agent
could not open its log (so could not start) until someone removed the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinywarden.audit import AuditKey, AuditLog, load_key, segments, verify


@pytest.fixture
def key(tmp_path: Path) -> AuditKey:
    return load_key(tmp_path / "keys" / "audit.key", create=True)


@pytest.mark.parametrize("suffix", ["²", "①", "١", "٣"])
def test_a_non_ascii_digit_suffix_is_not_a_rotated_file(tmp_path: Path, key: AuditKey, suffix: str) -> None:
    path = tmp_path / "logs" / "audit.log"
    AuditLog(path, key=key).append("action", {"tier": 1}, time=1.0)
    (path.parent / f"audit.log.{suffix}").write_text("planted\n")
    assert segments(path) == [path]
    assert verify(path, key).verdict == "intact"
    log = AuditLog(path, key=key)  # the agent opens its log as before
    log.append("action", {"tier": 2}, time=2.0)
    assert verify(path, key).verdict == "intact"

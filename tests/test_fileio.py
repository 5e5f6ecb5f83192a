"""The one crash-safe file writer (tinywarden.fileio)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tinywarden.fileio import atomic_open, atomic_write


@pytest.mark.parametrize("data", ["héllo\n", b"\x00\xffbytes"])
@pytest.mark.parametrize("fsync", [True, False])
def test_atomic_write_text_and_bytes(tmp_path: Path, data: str | bytes, fsync: bool) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"old")
    atomic_write(p, data, mode=0o600, fsync=fsync)
    assert (p.read_text(encoding="utf-8") if isinstance(data, str) else p.read_bytes()) == data
    assert p.stat().st_mode & 0o777 == 0o600
    assert [x.name for x in tmp_path.iterdir()] == ["f"]


def test_failure_keeps_old_content_and_leaves_no_temp_file(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"), atomic_open(p, "wb") as f:
        f.write(b"half")
        raise RuntimeError("boom")
    assert p.read_bytes() == b"old"
    assert [x.name for x in tmp_path.iterdir()] == ["f"]


def test_unwritable_directory_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        atomic_write(tmp_path / "missing" / "f", b"x")
    with pytest.raises(ValueError, match="open_mode"):
        atomic_open(tmp_path / "f", "a").__enter__()  # type: ignore[arg-type]


@pytest.mark.parametrize("hard_links", [True, False])
def test_exclusive_creates_but_never_replaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             hard_links: bool) -> None:
    if not hard_links:  # as on FAT: link() refused, the name is claimed with O_EXCL instead
        def no_link(src: str, dst: object) -> None:
            raise PermissionError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(os, "link", no_link)
    p = tmp_path / "key"
    atomic_write(p, b"new", mode=0o600, exclusive=True)
    assert p.read_bytes() == b"new" and p.stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        atomic_write(p, b"other", exclusive=True)
    assert p.read_bytes() == b"new"
    assert [x.name for x in tmp_path.iterdir()] == ["key"]


def test_read_regular_refuses_a_device_a_directory_and_an_oversized_file(tmp_path) -> None:
    """The one helper every reader of a planted-at path uses (audit log, spool, engine state): /dev/zero would be
    read until memory ran out, a FIFO would block; each is refused, named in a few words."""
    from tinywarden.fileio import NotRegularFile, open_regular, read_regular

    for path, kind in (("/dev/zero", "a device"), (str(tmp_path), "a directory")):
        with pytest.raises(NotRegularFile, match=kind):
            read_regular(path)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(NotRegularFile, match="a FIFO"):
        open_regular(tmp_path / "fifo")
    big = tmp_path / "big"
    big.write_bytes(b"x" * 11)
    with pytest.raises(NotRegularFile, match="larger than 10 bytes") as err:
        read_regular(big, 10)
    assert err.value.errno == errno.EFBIG
    assert read_regular(big, 11) == b"x" * 11
    fd = open_regular(big)
    try:
        assert os.get_blocking(fd)  # O_NONBLOCK only while the kind of file is unknown
    finally:
        os.close(fd)

"""Crash-safe file replacement: the one way tinywarden writes a file that must be whole or absent.

:func:`atomic_write` (and :func:`atomic_open` for writers that stream) writes a temporary file in the
target's own directory, flushes and fsyncs it, gives it its mode, renames it over the target with
``os.replace`` and fsyncs the directory, so after a crash or power cut ``path`` holds the old content or
the new, never a torn mix, and a reader never sees a half-written file. ``fsync=False`` keeps the atomic
rename but skips both fsyncs (for files that are cheap to rebuild, such as a status document, or a
replay that trades durability for speed). On any error the temporary file is removed and the
``OSError`` propagates: each caller turns it into its own one-line :class:`~tinywarden.errors.TinywardenError`
naming the file, since only the caller knows what the file is for. ``exclusive=True`` puts the new file in
place only if ``path`` does not exist yet (a hard link, which fails with :class:`FileExistsError` instead of
replacing what another process made meanwhile): for a file that must never be replaced unasked, such as a
private key.

:func:`open_regular` and :func:`read_regular` are the one way to open or read a file at a path a user or another
process may have planted something at (an audit log, a spooled incident, an engine state): a symbolic link is
not followed, a FIFO does not block, and anything but a regular file (a FIFO, a device such as ``/dev/zero``
that never ends) is :class:`NotRegularFile`, which names what is there in a few words.

This module sits at the bottom of the package (it imports nothing from tinywarden).

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "state.json"
>>> atomic_write(p, '{"v": 1}\\n', mode=0o600)
>>> p.read_text(), oct(p.stat().st_mode & 0o777)
('{"v": 1}\\n', '0o600')
>>> with atomic_open(p, "wb") as f:
...     _ = f.write(b"new")
>>> p.read_bytes(), sorted(x.name for x in p.parent.iterdir())
(b'new', ['state.json'])
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal

__all__ = ["NotRegularFile", "atomic_open", "atomic_write", "fsync_dir", "open_regular", "read_regular"]


class NotRegularFile(OSError):
    """What is at a path is not a regular file of its own; ``str()`` says what it is ("a symbolic link", "a FIFO",
    "a device", "a directory", "larger than N bytes"), for the caller's one-line error naming the file."""

    def __str__(self) -> str:
        return str(self.strerror)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


def open_regular(path: str | os.PathLike[str], flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """``os.open(path, flags, mode)`` of a regular file only: ``O_NOFOLLOW`` and ``O_NONBLOCK`` are added (the
    latter cleared again once the file is known to be regular), so a symbolic link or a FIFO at ``path`` raises
    :class:`NotRegularFile` instead of being followed or blocking. Other errors are the ``OSError`` of ``open``.
    The caller closes the descriptor.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> (d / "link").symlink_to(d / "elsewhere"); os.mkfifo(d / "fifo")
    >>> for name in ("link", "fifo"):
    ...     try:
    ...         open_regular(d / name)
    ...     except NotRegularFile as exc:
    ...         print(name, "->", exc)
    link -> a symbolic link
    fifo -> a FIFO
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotRegularFile(errno.ELOOP, "a symbolic link") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(errno.EINVAL, _kind(st.st_mode))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: str | os.PathLike[str], limit: int | None = None) -> bytes:
    """The bytes of the regular file ``path`` (:func:`open_regular`); :class:`NotRegularFile` when it holds more
    than ``limit`` bytes."""
    fd = open_regular(path)
    with os.fdopen(fd, "rb") as f:
        data = f.read() if limit is None else f.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise NotRegularFile(errno.EFBIG, f"larger than {limit} bytes")
    return data


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike[str],
    open_mode: Literal["w", "wb"] = "w",
    *,
    mode: int = 0o644,
    fsync: bool = True,
    newline: str | None = None,
    exclusive: bool = False,
) -> Iterator[IO[Any]]:
    """A file to write that replaces ``path`` only when the ``with`` block ends without an exception.

    ``open_mode`` is ``"w"`` (UTF-8 text, ``newline`` as for :func:`open`) or ``"wb"``; ``mode`` is the
    new file's permission bits. An exception in the block leaves ``path`` untouched and no temporary file.
    With ``exclusive``, an existing ``path`` is left as it is and :class:`FileExistsError` raised.
    """
    if open_mode not in ("w", "wb"):
        raise ValueError(f"open_mode must be 'w' or 'wb', got {open_mode!r}")
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        if open_mode == "w":
            f: IO[Any] = os.fdopen(fd, "w", encoding="utf-8", newline=newline)
        else:
            f = os.fdopen(fd, "wb")
        with f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if exclusive:
            _place_new(tmp, p)
        else:
            os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if fsync:
        fsync_dir(p.parent)


def atomic_write(
    path: str | os.PathLike[str],
    data: str | bytes,
    *,
    mode: int = 0o644,
    fsync: bool = True,
    exclusive: bool = False,
) -> None:
    """Replace ``path`` with ``data`` (``str`` is written as UTF-8) so that it is whole after any crash
    (with ``exclusive``, only create it: :class:`FileExistsError` if it exists)."""
    with atomic_open(path, "w" if isinstance(data, str) else "wb", mode=mode, fsync=fsync,
                     exclusive=exclusive) as f:
        f.write(data)


def _place_new(tmp: str, path: Path) -> None:
    """Move the finished ``tmp`` to ``path`` only if nothing is there (:class:`FileExistsError` otherwise)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP):
            raise
        # A file system without hard links (FAT on a USB stick): claim the name, then rename over that empty file.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a rename or a new file in ``directory`` durable (fsync of the directory itself)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""Command-line entry point: ``tinywarden <command>``.

Each command group lives in its own module and registers itself on :data:`app`; importing them here
is what makes the commands appear.
"""

from __future__ import annotations

import sys

from tinywarden.cli import agent as _agent  # noqa: F401
from tinywarden.cli import core as _core  # noqa: F401  (registers commands)
from tinywarden.cli import export as _export  # noqa: F401
from tinywarden.cli import fleet as _fleet  # noqa: F401
from tinywarden.cli import record as _record  # noqa: F401
from tinywarden.cli import respond as _respond  # noqa: F401
from tinywarden.cli import simulate as _simulate  # noqa: F401
from tinywarden.cli import trust as _trust  # noqa: F401
from tinywarden.cli import tune as _tune  # noqa: F401
from tinywarden.cli.app import app, say
from tinywarden.errors import TRAIN_EXTRA, TinywardenError, missing_extra

__all__ = ["TRAIN_EXTRA", "app", "main"]


def main() -> None:
    """Run the CLI; a :class:`TinywardenError` becomes one line on stderr and exit status 2.

    Usage errors (unknown option, a value of the wrong type) are click's: one message, exit 2. A path the
    system refuses (an --out folder under a file, no permission, a full disk) is one line naming it, exit 2. A command
    that needs the ``train`` extra on a runtime-only install says which package to install, in one line.
    """
    try:
        app()
    except TinywardenError as exc:
        say("error", exc, "bold red")
        sys.exit(2)
    except OSError as exc:
        if exc.filename is None:  # not about a path the user gave: a defect, raised as it is
            raise
        say("error", f"{exc.filename}: {exc.strerror or exc}", "bold red")
        sys.exit(2)
    except ModuleNotFoundError as exc:
        message = missing_extra(exc)
        if message is None:
            raise
        say("error", message, "bold red")
        sys.exit(2)

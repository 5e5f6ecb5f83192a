"""The typer application object that every command module registers on.

Command modules stay thin: they parse options, call the library and render with rich. A user's mistake
surfaces as a :class:`~tinywarden.errors.TinywardenError`, which :func:`tinywarden.cli.main` prints as
one line before exiting with status 2.
"""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(
    name="tinywarden",
    help="Learn a device's normal telemetry, detect deviations on-device, respond on its own.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

console = Console()
err_console = Console(stderr=True)

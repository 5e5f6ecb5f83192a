"""The typer application object that every command module registers on.

Command modules stay thin: they parse options, call the library and render with rich. A user's mistake
surfaces as a :class:`~tinywarden.errors.TinywardenError`, which :func:`tinywarden.cli.main` prints as
one line before exiting with status 2.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:
    from tinywarden.respond.policy import Policy

app = typer.Typer(
    name="tinywarden",
    help="Learn a device's normal telemetry, detect deviations on-device, respond on its own.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

console = Console()
# notes, warnings and errors name files: never broken inside a path by the console's wrapping (the terminal
# still wraps long lines where it shows them, and a log or pipe gets each message whole, on one line)
err_console = Console(stderr=True, soft_wrap=True)


def print_advice(policy: Policy) -> None:
    """Each of the policy's :attr:`~tinywarden.respond.policy.Policy.advice` lines on stderr (not errors)."""
    for line in policy.advice:
        err_console.print(f"[yellow]advice:[/] {line}", highlight=False, soft_wrap=True)

"""The typer application object that every command module registers on.

Command modules stay thin: they parse options, call the library and render with rich. A user's mistake
surfaces as a :class:`~tinywarden.errors.TinywardenError`, which :func:`tinywarden.cli.main` prints as
one line before exiting with status 2.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.text import Text

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


def _plain(label: str, text: object, style: str | None) -> Text:
    line = Text()
    if label:
        line.append(f"{label}:", style=style or "")
        line.append(f" {text}")
    else:
        line.append(str(text), style=style or "")
    return line


def say(label: str, text: object, style: str | None = "yellow") -> None:
    """One line on stderr: ``label:`` in ``style`` (just ``text`` in it when ``label`` is empty), then ``text`` as it
    is. Never rich markup: the text names files, columns and channels, so a name holding ``[/]`` raised a
    MarkupError where a one-line message was due, and one holding ``[bold]`` vanished from it."""
    err_console.print(_plain(label, text, style), highlight=False, soft_wrap=True)


def show(text: object, label: str = "", style: str | None = None, out: Console | None = None) -> None:
    """:func:`say`'s twin on stdout (or on ``out``, such as a progress bar's console): ``text`` as it is, never rich
    markup, after ``label:`` in ``style`` when given (all of it in ``style`` without a label). For every line that
    shows a path or a name: ``wrote {path}`` with a path holding ``[/]`` raised a MarkupError after the file was
    written, and one holding ``[bold]`` lost those characters from the path it reported."""
    (out or console).print(_plain(label, text, style), highlight=False, soft_wrap=True)


def print_advice(policy: Policy) -> None:
    """Each of the policy's :attr:`~tinywarden.respond.policy.Policy.advice` lines on stderr (not errors)."""
    for line in policy.advice:
        say("advice", line)

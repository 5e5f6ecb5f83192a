"""The ``agent`` command under the full CLI: it forwards its arguments to :mod:`tinywarden.agent.command`.

The agent's options are defined once, there, with argparse, so that the command a gateway runs for
months never loads typer, rich or pydantic (``tinywarden agent ...`` reaches it straight through
:mod:`tinywarden.entry`). This forwarder is what lists ``agent`` in ``tinywarden --help`` and serves
callers of :data:`~tinywarden.cli.app.app` itself.
"""

from __future__ import annotations

import typer

from tinywarden.agent.command import DESCRIPTION
from tinywarden.agent.command import main as agent_main
from tinywarden.cli.app import app


@app.command(
    help=f"{DESCRIPTION} Options: tinywarden agent --help.",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
def agent(ctx: typer.Context) -> None:
    """Run the light agent command with the arguments given after ``agent``."""
    raise typer.Exit(agent_main(list(ctx.args)))

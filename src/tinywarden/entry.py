"""The ``tinywarden`` console command: the light agent command, or the full CLI for everything else.

``tinywarden agent ...`` goes straight to :mod:`tinywarden.agent.command` (argparse, no typer, rich or
pydantic), so the process that runs on a gateway loads only what the agent uses; every other command
goes to :func:`tinywarden.cli.main`.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Dispatch on the first argument (see the module docstring)."""
    if sys.argv[1:2] == ["agent"]:
        from tinywarden.agent.command import main as agent_main

        sys.exit(agent_main(sys.argv[2:]))
    from tinywarden.cli import main as cli_main

    cli_main()

"""``python -m tinywarden`` runs the CLI."""

from tinywarden.cli import main

main()

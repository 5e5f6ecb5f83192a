"""``python -m tinywarden`` runs the CLI (``tinywarden agent`` without loading the full CLI's modules)."""

from tinywarden.entry import main

main()

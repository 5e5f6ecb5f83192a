#!/usr/bin/env bash
# The whole test suite from a fresh machine: system tools, the package with its test extras, lint, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-system.sh
python3 -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | { grep -v -e "^WARNING: Running pip as" -e "^WARNING: Location" -e "^$" || true; }
python3 -m ruff check src tests benchmarks examples
python3 -m pytest -q -n 2 --dist loadgroup --no-loadscope-reorder --durations=20 "$@"

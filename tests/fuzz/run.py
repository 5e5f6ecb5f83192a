"""Run one Python fuzz target under atheris: ``python -m fuzz.run TARGET [libFuzzer flags] CORPUS...``.

tinywarden (and the pure-Python parsers it relies on, tomllib and csv's Python side) is imported under
atheris' instrumentation, so the fuzzer is guided by their line coverage. Flags are libFuzzer's:
``-atheris_runs=N`` / ``-runs=N``, ``-max_total_time=S``, ``-seed=N``, ``-timeout=S``, ``-max_len=N``.
"""

from __future__ import annotations

import contextlib
import logging
import sys

import atheris

with atheris.instrument_imports(include=["tinywarden", "tomllib"]):
    import tomllib  # noqa: F401 - instrumented for the policy target

    import tinywarden.agent.escalate  # noqa: F401
    import tinywarden.audit  # noqa: F401
    import tinywarden.bundle  # noqa: F401
    import tinywarden.codegen.respond  # noqa: F401
    import tinywarden.modelfile  # noqa: F401
    import tinywarden.respond.engine  # noqa: F401
    import tinywarden.respond.policy  # noqa: F401
    import tinywarden.telemetry.io  # noqa: F401

from fuzz.targets import TARGETS  # noqa: E402

# The autoencoders import torch on first use: seconds that would read as a hang of the first such input.
with contextlib.suppress(ImportError):
    import torch  # noqa: F401


def main() -> None:
    logging.disable(logging.CRITICAL)  # the spool and agent log every quarantined input
    name = sys.argv[1]
    harness = TARGETS[name].harness
    atheris.Setup([sys.argv[0], *sys.argv[2:]], harness)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

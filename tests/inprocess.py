"""``tinywarden ARGS`` run in the test's own process, through the console command's entry point.

:func:`run_tinywarden` calls :func:`tinywarden.entry.main` (what the installed ``tinywarden`` script and
``python -m tinywarden`` call) with ``sys.argv`` set, stdout and stderr captured, and returns what
``subprocess.run`` would: the exit status (``sys.exit``'s code; 1 and a traceback on stderr for an exception that
escapes, as the interpreter does), stdout and stderr as text. It saves the 1-3 s of interpreter start and imports a
subprocess pays, for tests that check what a command does, not how it starts (those keep a real subprocess).
"""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
from pathlib import Path

from click.testing import CliRunner


def run_tinywarden(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    from tinywarden.entry import main

    args = tuple(map(str, args))
    argv, old_cwd = sys.argv, os.getcwd()
    with CliRunner().isolation() as (out, err, _):
        sys.argv = ["tinywarden", *args]
        try:
            if cwd is not None:
                os.chdir(cwd)
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
            if not isinstance(exc.code, int | None):
                print(exc.code, file=sys.stderr)
        except Exception:  # noqa: BLE001  (as the interpreter would: a traceback and status 1)
            traceback.print_exc(file=sys.stderr)
            code = 1
        finally:
            sys.argv = argv
            os.chdir(old_cwd)
        sys.stdout.flush()
        sys.stderr.flush()
        stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    return subprocess.CompletedProcess(["tinywarden", *args], code, stdout, stderr)


def cli(*args: str | Path, cwd: Path | None = None) -> tuple[int, str, str]:
    """:func:`run_tinywarden` as ``(exit status, stdout, stderr)``."""
    r = run_tinywarden(*args, cwd=cwd)
    return r.returncode, r.stdout, r.stderr

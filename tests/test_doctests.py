"""Every docstring example in the package runs (STYLE: examples that CI never ran drift and lie)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import tinywarden

MODULES = ["tinywarden"] + sorted(
    m.name for m in pkgutil.walk_packages(tinywarden.__path__, "tinywarden.") if not m.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} failing docstring example(s) in {name}"


def test_the_package_has_examples() -> None:
    finder = doctest.DocTestFinder()
    total = sum(len(t.examples) for n in MODULES for t in finder.find(importlib.import_module(n)))
    assert total >= 30


def test_docstring_examples_run_once() -> None:
    """The examples of every module run above; another test file running them again only doubles the suite."""
    here = Path(__file__).resolve()
    again = sorted(p.name for p in here.parent.glob("test_*.py") if p != here and "doctest.testmod" in p.read_text())
    assert again == []

"""The top-level API: light to import, every entry point typed and shown by a running example, the examples/
scripts run, and the API reference builds from the docstrings."""

from __future__ import annotations

import doctest
import importlib
import inspect
import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tinywarden
from tinywarden.target import missing_tools

REPO = Path(__file__).resolve().parent.parent
ENTRY_POINTS = [n for n in tinywarden.__all__ if n not in ("TinywardenError", "__version__")]
HEAVY = ("torch", "sklearn", "matplotlib", "scipy")


def _imported_after(code: str) -> dict[str, bool]:
    """Which heavy libraries a fresh interpreter has imported after running ``code``."""
    probe = f"{code}\nimport sys, json\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True,
                         timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_tinywarden_loads_no_heavy_library() -> None:
    assert _imported_after("import tinywarden") == dict.fromkeys(HEAVY, False)


def test_a_gateway_verifies_bundles_and_runs_the_engine_without_torch_sklearn_or_matplotlib() -> None:
    loaded = _imported_after("import tinywarden as tw\n"
                             "tw.verify_bundle, tw.create_bundle, tw.load_policy, tw.ResponseEngine, tw.read_series")
    assert not loaded["torch"] and not loaded["sklearn"] and not loaded["matplotlib"], loaded


def test_fitting_imports_what_it_needs_on_first_use() -> None:
    assert _imported_after("import tinywarden as tw\ntw.Pipeline")["sklearn"]


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_entry_point_is_the_module_object_typed_and_documented(name: str) -> None:
    obj = getattr(tinywarden, name)
    module, _, attr = tinywarden._LAZY[name].partition(":")
    assert obj is getattr(sys.modules[module], attr or name)
    assert name in dir(tinywarden) and inspect.getdoc(obj)
    target = obj.__init__ if inspect.isclass(obj) else obj
    sig = inspect.signature(target)
    untyped = [p for p in sig.parameters.values() if p.name != "self" and p.annotation is inspect.Parameter.empty]
    assert not untyped, f"{name}: parameters without a type: {untyped}"
    assert inspect.isclass(obj) or sig.return_annotation is not inspect.Signature.empty, f"{name}: no return type"


def test_every_entry_point_appears_in_a_running_example() -> None:
    """The package docstring is one session (run by test_doctests); each entry point is used in it."""
    code = "\n".join(e.source for t in doctest.DocTestFinder().find(tinywarden) for e in t.examples)
    used = set(re.findall(r"\btw\.(\w+)", code))
    assert set(ENTRY_POINTS) <= used, f"entry points with no example: {sorted(set(ENTRY_POINTS) - used)}"
    assert "pipe.score(" in code  # scoring is a method of the fitted pipeline


def test_no_public_name_is_also_a_submodule() -> None:
    """``tinywarden.tune`` the package and ``tw.tune`` a function cannot both be: importing the package
    would replace the function (and ``import tinywarden.tune as t`` could yield the function)."""
    submodules = {m.name for m in pkgutil.iter_modules(tinywarden.__path__)} - {"__main__"}
    assert not submodules & set(tinywarden.__all__)
    for sub in submodules:
        importlib.import_module(f"tinywarden.{sub}")
    assert callable(tinywarden.tune_pipeline) and callable(tinywarden.simulate_device)
    assert inspect.ismodule(tinywarden.tune) and inspect.ismodule(tinywarden.simulate)


def test_all_lists_exactly_the_lazy_names() -> None:
    assert sorted(tinywarden.__all__) == sorted(["TinywardenError", "__version__", *tinywarden._LAZY])


def test_unknown_names_are_attribute_errors() -> None:
    with pytest.raises(AttributeError, match="no attribute 'fit_everything'"):
        tinywarden.fit_everything  # noqa: B018
    assert not hasattr(tinywarden, "torch")


EXAMPLES = sorted(p.name for p in (REPO / "examples").glob("*.py"))


def test_there_is_an_example_script_per_workflow() -> None:
    assert {"quickstart.py", "respond.py", "bundle.py", "tune.py"} <= set(EXAMPLES)


@pytest.mark.parametrize("script", EXAMPLES)
def test_example_script_runs(script: str, tmp_path: Path) -> None:
    if script == "tune.py" and missing_tools(("arm-none-eabi-gcc", "arm-none-eabi-size", "arm-none-eabi-nm")):
        pytest.skip("the ARM cross toolchain (gcc-arm-none-eabi) is not installed")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    args = [] if script == "respond.py" else [str(tmp_path / "out")]
    proc = subprocess.run([sys.executable, str(REPO / "examples" / script), *args], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() and "Traceback" not in proc.stderr
    if script in ("quickstart.py", "tune.py"):
        assert (tmp_path / "out" / "c" / "tinywarden_model.c").is_file()
    if script == "bundle.py":
        assert "tampered copy refused" in proc.stdout
    if script == "respond.py":
        assert "during an attack" in proc.stdout and proc.stdout.rstrip().endswith("final tier: 0")


def test_api_reference_builds_strictly_from_the_docstrings(tmp_path: Path) -> None:
    mkdocs = shutil.which("mkdocs")
    if mkdocs is None:
        pytest.fail("mkdocs is not installed: pip install -e '.[test]'")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    site = tmp_path / "site"
    proc = subprocess.run([mkdocs, "build", "--strict", "--quiet", "--site-dir", str(site)], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    page = (site / "api" / "pipeline" / "index.html").read_text()
    # generated from the docstrings: signatures and the documented score convention are on the page
    assert "make_detector" in page and "higher = more anomalous" in page and "score_samples" in page
    assert "tw.quantize_pipeline" in (site / "api" / "index.html").read_text()

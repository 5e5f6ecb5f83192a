"""Shared fixtures: where the public datasets live, and small synthetic series."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from tinywarden.fleet.device import THREAD_VARIABLES
from tinywarden.telemetry import Series

REPO = Path(__file__).resolve().parent.parent

# One compute thread per test process, as a fleet worker has (tinywarden.fleet.device.one_thread_per_worker): the
# suite runs as two xdist workers on a two-core machine, and a BLAS or OpenMP pool of one thread per core in each
# worker put four busy threads on two cores, where OpenBLAS threads spin while they wait (a FactorAnalysis fit, what
# the gaussian family does, took 16x as long with the default pool on the loaded CI machine). The pools already
# loaded are limited here; the variables cover the libraries loaded later (torch) and the commands the tests start
# as subprocesses. A variable the caller set is kept. tests/test_fleet_train.py removes them for its probe.
for _var in THREAD_VARIABLES:
    os.environ.setdefault(_var, "1")
threadpool_limits(1)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """How the two xdist workers share the suite (scripts/test.sh runs ``--dist loadgroup --no-loadscope-reorder``):
    the tests of a file go to one worker together, so a module-scoped fixture is built once, as ``--dist loadfile``
    does; a test marked ``slow`` (a long end-to-end run that uses no module fixture) is a unit of its own, and the
    slow tests are handed out first, then the files, most tests first. Under loadfile's order (files by test count)
    the README file's two long tests came last and ran one after the other on one worker while the other sat idle.
    Every test still runs, in its file's order; only which worker runs it, and when, changes."""
    for item in items:
        if not any(item.iter_markers("xdist_group")):
            slow = item.get_closest_marker("slow") is not None
            item.add_marker(pytest.mark.xdist_group(item.nodeid if slow else str(item.path.relative_to(REPO))))
    size: dict[str, int] = {}
    for item in items:
        size[_group(item)] = size.get(_group(item), 0) + 1
    items.sort(key=lambda item: (item.get_closest_marker("slow") is None, -size[_group(item)]))


def _group(item: pytest.Item) -> str:
    mark = item.get_closest_marker("xdist_group")
    assert mark is not None
    return str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))


def shared_data_dir() -> Path:
    """``$TINYWARDEN_DATA`` or ``<repo>/../shared/data``."""
    return Path(os.environ.get("TINYWARDEN_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = shared_data_dir()
    if not (d / "smd_asd" / "npz").is_dir() or not (d / "nab" / "data").is_dir():
        pytest.skip(f"shared public data not found at {d} (set TINYWARDEN_DATA)")
    return d


def make_series(n: int = 6000, channels: int = 3, seed: int = 0, period: float = 10.0) -> Series:
    """A daily-rhythm-like normal series with noise (no labels)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) * period
    base = np.sin(2 * np.pi * t / 3600.0)[:, None] * np.arange(1, channels + 1)
    vals = 10.0 + base + rng.normal(scale=0.3, size=(n, channels))
    return Series(t, vals, tuple(f"c{i}" for i in range(channels)))


@pytest.fixture
def normal_series() -> Series:
    return make_series()


#: A two-tier response policy with log actions, shared by the agent and fail-safe guard tests. Baseline
#: adaptation is off so the agent's scores equal the batch scorer's bit for bit; ADAPTING_CAMERA_POLICY has it on.
CAMERA_POLICY = """
[adaptation]
enabled = false

[policy]
name = "camera-test"
version = "1"
fail_safe_tier = "alert"
telemetry_timeout_s = 3600

[tiers.alert]
actions = ["notify"]
k = 2
n = 3
deescalate_after_s = 600

[tiers.constrain]
actions = ["notify_more"]
k = 3
n = 4
margin = 0.5
deescalate_after_s = 600

[actions.notify]
type = "log"
message = "camera behaves unusually"

[actions.notify_more]
type = "log"
message = "camera keeps behaving unusually"
"""
ADAPTING_CAMERA_POLICY = CAMERA_POLICY.replace("enabled = false", "enabled = true")
#: CAMERA_POLICY with a 2 mbit uplink cap in its alert tier: an action that reshapes the traffic the model scores,
#: which ``Policy.advice`` names (benchmarks/results/range-cap.json).
CAPPED_CAMERA_POLICY = (
    CAMERA_POLICY.replace('actions = ["notify"]', 'actions = ["notify", "cap"]\ndead_man_s = 30', 1)
    + '\n[actions.cap]\ntype = "tc_rate_limit"\ninterface = "eth0"\nrate = "2mbit"\n'
)


def spy_fits(monkeypatch: pytest.MonkeyPatch, cls: type) -> list[int]:
    """The input widths of every ``cls.fit`` from now on (the real fit still runs): a test that a too-wide input is
    refused before anything is fitted reads it."""
    widths: list[int] = []
    real_fit = cls.fit

    def fit(self: object, X: np.ndarray, y: None = None) -> object:  # noqa: N803
        widths.append(X.shape[1])
        return real_fit(self, X, y)

    monkeypatch.setattr(cls, "fit", fit)
    return widths

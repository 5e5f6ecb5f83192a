"""The default trimmed isolation forest stays within its packed byte budget (issue 8: "a few KB at most")."""

from __future__ import annotations

import numpy as np
import pytest

from tinywarden.detectors import TrimmedIsolationForest
from tinywarden.detectors.iforest import DEFAULT_BUDGET_BYTES, MAX_FEATURES_UINT8


def _packed_size(det: TrimmedIsolationForest) -> int:
    """Bytes of the fitted arrays the device stores, counted from the arrays themselves."""
    return det.feature_.nbytes + det.threshold_.nbytes + det.left_.nbytes + det.tree_start_.nbytes


@pytest.mark.parametrize("n_features", [3, 66, MAX_FEATURES_UINT8])
def test_default_forest_packs_within_its_byte_budget(n_features: int) -> None:
    # many rows of wide uniform features: nearly every tree grows to its full depth, the worst case
    x = np.random.default_rng(1).uniform(-3, 3, size=(4000, n_features))
    det = TrimmedIsolationForest().fit(x)
    assert (det.feature_.dtype, det.threshold_.dtype, det.left_.dtype, det.tree_start_.dtype) == (
        np.uint8, np.int16, np.uint8, np.uint16)
    assert _packed_size(det) == det.packed_bytes_ <= DEFAULT_BUDGET_BYTES
    # the bound is nearly reached (a split may isolate one row early), so it is not met by growing nothing
    full = det.n_estimators * (2 ** (det.max_depth + 1) - 1)
    assert 0.9 * full <= len(det.feature_) <= full


def test_budget_bound_follows_the_depth_and_tree_count() -> None:
    det = TrimmedIsolationForest()
    worst = 4 * det.n_estimators * (2 ** (det.max_depth + 1) - 1) + 2 * det.n_estimators
    assert worst <= DEFAULT_BUDGET_BYTES
    # one level deeper would no longer fit: the budget is what limits the default depth
    deeper = 4 * det.n_estimators * (2 ** (det.max_depth + 2) - 1) + 2 * det.n_estimators
    assert deeper > DEFAULT_BUDGET_BYTES


def test_wide_forest_spends_one_more_byte_a_node_only() -> None:
    # beyond 256 inputs the feature indices are uint16: the same trees, one byte more a node
    x = np.random.default_rng(1).uniform(-3, 3, size=(4000, MAX_FEATURES_UINT8 + 1))
    det = TrimmedIsolationForest().fit(x)
    assert (det.feature_.dtype, det.threshold_.dtype, det.left_.dtype, det.tree_start_.dtype) == (
        np.uint16, np.int16, np.uint8, np.uint16)
    assert _packed_size(det) == det.packed_bytes_ <= DEFAULT_BUDGET_BYTES + len(det.feature_)

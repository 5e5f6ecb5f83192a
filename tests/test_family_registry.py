"""A family is its module: a toy family defined entirely in this file, with its own kernel, registers and then
passes the contract checks, lowers to int8, generates bit-exact C and is searched by ``tune``, with no edit
anywhere else. Also: every listing of families reads the registry, and ``tune``'s flash lower bound is never
above what the quantizer really stores."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np
import pytest
from scipy.stats import spearmanr
from typer.testing import CliRunner

from checks import ALL_CHECKS
from int8_fixtures import INT8_FAMILIES, camera, fitted
from test_codegen_c import assert_bit_exact, build
from tinywarden.detectors import REGISTRY, Detector, Lowered, LoweringContext, make_detector
from tinywarden.detectors.base import Shape
from tinywarden.detectors.lowering import distance_input
from tinywarden.kernels import KERNELS, Op, ProgramView, score_kernel
from tinywarden.kernels.base import int_attr, require
from tinywarden.pipeline import Pipeline
from tinywarden.program import run_int8
from tinywarden.quantize import quantize_pipeline
from tinywarden.tune.search import Budget, Candidate, flash_lower_bound, tune

TOY = "toy_l1"
TOY_KERNEL = "l1_dist_s16"
#: the toy kernel's limit: Python checks it, the C gets it as TW_TOY_MAX_INPUTS
TOY_MAX_INPUTS = 4096

TOY_C = r"""
//@call: tw_l1_dist_s16(s->t_${src0}, ${src0_size}, ${c_center}, ${shift}, s->t_${dst});
//@requires: score
/* Toy score: sat32(sum |x[i] - center[i]| >> shift). Range: n <= TW_TOY_MAX_INPUTS. */
static void tw_l1_dist_s16(const int16_t *x, int32_t n, const int16_t *center, int32_t shift, int32_t *score)
{
    int64_t total = 0;
    int32_t i;
    for (i = 0; i < n && i < TW_TOY_MAX_INPUTS; i++) {
        int32_t d = (int32_t)x[i] - center[i];
        total += (d < 0) ? -d : d;
    }
    score[0] = tw_score_from_total(total, shift);
}
"""


def _l1_total(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    return np.abs(srcs[0].astype(np.int64) - op.consts["center"].astype(np.int64)).sum(axis=1)


def _check_l1(op: Op, p: ProgramView) -> None:
    int_attr(op, "shift", 0, 62)
    n = p.tensor(op.src[0]).size
    require(n <= TOY_MAX_INPUTS and np.asarray(op.consts["center"]).shape == (n,), f"center must be ({n},)")


class ToyL1(Detector):
    """L1 distance to the training median, divided by ``spread``."""

    name: ClassVar[str] = TOY
    online: ClassVar[bool] = True  # it offers partial_fit, so the contract checks hold it to learning
    search_space: ClassVar[tuple[dict[str, Any], ...]] = ({"spread": 1.0}, {"spread": 2.0})
    state_arrays: ClassVar[tuple[str, ...]] = ("center_",)

    def __init__(self, spread: float = 1.0):
        self.spread = spread

    def state_shapes(self) -> dict[str, Shape]:
        return {"center_": (self.input_shape_[0],)}

    def fit(self, X: np.ndarray, y: None = None) -> ToyL1:  # noqa: N803
        x = self._check_input(X, fitting=True)
        self.center_ = np.median(x, axis=0)
        self.input_shape_ = x.shape[1:]
        return self

    def partial_fit(self, X: np.ndarray, y: None = None) -> ToyL1:  # noqa: N803
        if hasattr(self, "center_"):
            self._check_input(X)  # an update keeps the fitted input shape
        return self.fit(X)  # a toy: the checks require partial_fit to learn, not to be incremental

    def score_samples(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        self._check_fitted()
        x = self._check_input(X)
        return np.abs(x - self.center_).sum(axis=1) / self.spread

    def lower(self, ctx: LoweringContext) -> Lowered:
        low = Lowered()
        q_x, center = distance_input(ctx, self.center_[None, :], low)
        low.ops.append(Op(TOY_KERNEL, ("input",), "score", {"shift": 0}, {"center": center[0]}))
        low.info["input_scale"] = q_x.scale
        return low

    @classmethod
    def flash_lower_bound(cls, params: dict[str, Any], n_inputs: int, n_channels: int) -> int:
        return 2 * n_inputs


# Defining the class registered it; the fixture below registers it (and its kernel) only while this module's
# tests run, so the parametrisations of the rest of the suite never see the toy.
REGISTRY.pop(TOY)


@pytest.fixture(scope="module")
def toy() -> Iterator[type[Detector]]:
    REGISTRY[TOY] = ToyL1
    score_kernel(TOY_KERNEL, _l1_total, ("int16",), {"center": "int16"}, "score = sat32(sum |q - c| >> shift)",
                 TOY_C, limits={"TW_TOY_MAX_INPUTS": TOY_MAX_INPUTS}, check=_check_l1)
    yield ToyL1
    REGISTRY.pop(TOY, None)  # the rest of the suite parametrises over the registry: leave it as it was
    KERNELS.pop(TOY_KERNEL, None)


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
def test_toy_family_passes_the_contract_checks(toy: type[Detector], check: Callable[[Detector], None]) -> None:
    check(make_detector(TOY))


@pytest.fixture(scope="module")
def toy_program(toy: type[Detector]) -> Any:
    _, train = camera()
    pipe = Pipeline(make_detector(TOY)).fit(train)
    return pipe, quantize_pipeline(pipe, train)


def test_toy_family_lowers_to_int8(toy_program: Any) -> None:
    pipe, prog = toy_program
    assert [op.kind for op in prog.ops] == ["features_s16", "requantize_s64_s16", TOY_KERNEL]
    s, _ = camera()
    scores, alarms = run_int8(prog, s.values[:20000])
    floats = pipe.score(s.slice(0, 20000)).scores
    # the integer score ranks windows as the float one does (rank correlation: far outliers saturate int16)
    assert spearmanr(scores, floats).statistic > 0.99 and alarms.any()


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no host gcc to compile the generated C")
def test_toy_family_generates_bit_exact_c(toy_program: Any, tmp_path: Any) -> None:
    _, prog = toy_program
    from tinywarden.codegen.c import emit_c

    assert f"#define TW_TOY_MAX_INPUTS {TOY_MAX_INPUTS}" in emit_c(prog)["tinywarden_model.c"]
    s, _ = camera()
    assert_bit_exact(prog, build(prog, tmp_path), s.values[:20000], tmp_path)


@pytest.mark.skipif(shutil.which("arm-none-eabi-size") is None, reason="no arm-none-eabi toolchain to size the C")
def test_toy_family_is_searched_by_tune(toy: type[Detector]) -> None:
    from test_tune import device_series

    result = tune(device_series(), Budget(flash=16384, ram=8192), families=[TOY], windows=[16], max_trials=4)
    assert result.chosen.candidate.family == TOY
    searched = {t.candidate.params for t in result.trials if t.candidate.family == TOY}
    assert (("spread", 1.0),) in searched  # the family's own search space


def test_listings_read_the_registry(toy: type[Detector]) -> None:
    from tinywarden.cli.app import app
    from tinywarden.tune.search import _check_families

    assert TOY in _check_families(None)
    shown = CliRunner().invoke(app, ["train", "--help"], terminal_width=400).output
    assert all(name in shown for name in REGISTRY)  # once "ewma, kmeans, dense_ae, conv_ae" of eleven


@pytest.mark.parametrize("family", INT8_FAMILIES)
def test_flash_lower_bound_is_never_above_the_real_constants(family: str) -> None:
    """``tune`` skips a candidate whose bound is over budget: a bound above the real size would wrongly skip
    one that fits (bounds once got the feature count of a feature model: 312 B against 180 B stored)."""
    pipe, prog = fitted(family)
    det = pipe.detector
    c = Candidate(family, tuple(sorted(det.get_params().items())), pipe.window, pipe.stride, "default",
                  tuple(pipe.features), "all")
    assert flash_lower_bound(c, prog.n_channels) <= prog.const_bytes

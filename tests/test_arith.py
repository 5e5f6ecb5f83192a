"""The integer scheme against exact rational arithmetic and the gemmlowp / CMSIS-NN edge cases."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinywarden.arith import (
    INT32_MAX,
    INT32_MIN,
    choose_qparams,
    isqrt_u64,
    multiplier_to_real,
    quantize_multiplier,
    requantize,
    round_half_away,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)
from tinywarden.errors import ConfigError

i32 = st.integers(INT32_MIN, INT32_MAX)


def exact_round(fr: Fraction) -> int:
    """Round half away from zero, exactly."""
    n = abs(fr)
    r = int(n + Fraction(1, 2))
    return r if fr >= 0 else -r


@given(st.floats(min_value=1e-9, max_value=1e9, allow_nan=False))
def test_quantize_multiplier_round_trip(real):
    m, shift = quantize_multiplier(real)
    assert 2**30 <= m <= INT32_MAX
    assert abs(multiplier_to_real(m, shift) - real) <= real * 2.0**-30


def test_quantize_multiplier_edges():
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(1.0) == (2**30, 1)
    assert quantize_multiplier(2.0**-40) == (0, 0)  # below Q31 resolution
    assert quantize_multiplier(2.0**40) == (INT32_MAX, 30)  # capped
    # a mantissa that rounds up to 1.0 moves to the next exponent
    m, s = quantize_multiplier(1.0 - 2.0**-40)
    assert (m, s) == (2**30, 1)
    with pytest.raises(ConfigError):
        quantize_multiplier(-1.0)
    with pytest.raises(ConfigError):
        quantize_multiplier(float("nan"))


def test_doubling_high_mul_edges():
    assert int(saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN)) == INT32_MAX
    assert int(saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MAX)) == -INT32_MAX
    assert int(saturating_rounding_doubling_high_mul(INT32_MAX, INT32_MAX)) == INT32_MAX - 1
    assert int(saturating_rounding_doubling_high_mul(0, INT32_MIN)) == 0
    # ties round up, as gemmlowp: 0.5 -> 1, -0.5 -> 0, -1.5 -> -1
    assert int(saturating_rounding_doubling_high_mul(1, 2**30)) == 1
    assert int(saturating_rounding_doubling_high_mul(-1, 2**30)) == 0
    assert int(saturating_rounding_doubling_high_mul(-3, 2**30)) == -1


@given(i32, i32)
def test_doubling_high_mul_is_rounded_product(a, b):
    got = int(saturating_rounding_doubling_high_mul(a, b))
    if a == b == INT32_MIN:
        assert got == INT32_MAX
    else:
        fr = Fraction(a * b, 2**31)
        assert got == math.floor(fr + Fraction(1, 2))


@given(i32, st.integers(0, 31))
def test_rounding_divide_by_pot_is_rounded_quotient(x, e):
    assert int(rounding_divide_by_pot(x, e)) == exact_round(Fraction(x, 2**e))


@given(st.integers(-(2**40), 2**40), st.floats(min_value=1e-6, max_value=0.999))
def test_requantize_close_to_real_product(x, real):
    m, s = quantize_multiplier(real)
    got = int(requantize(x, m, s))
    xc = min(max(x, INT32_MIN), INT32_MAX)
    # two roundings (high mul, shift) give at most one unit of error against the quantized multiplier
    assert abs(got - xc * multiplier_to_real(m, s)) <= 1.0


def test_requantize_left_shift_saturates_instead_of_overflowing():
    m, s = quantize_multiplier(1000.0)
    assert s > 0
    big = int(requantize(10**8, m, s))
    assert big >= 2**30  # still saturates any int8/int16 output
    assert int(requantize(-(10**8), m, s)) <= -(2**30)
    assert int(requantize(3, m, s)) == 3000


@given(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3), st.sampled_from(["int8", "int16"]), st.booleans())
def test_qparams_quantize_dequantize_bounds(a, b, dtype, symmetric):
    lo, hi = min(a, b), max(a, b)
    q = choose_qparams(lo, hi, dtype, symmetric)
    xs = np.linspace(lo, hi, 17)
    back = q.dequantize(q.quantize(xs))
    # inside the range: half a step (plus float slack); real zero is exact
    assert np.all(np.abs(back - xs) <= q.scale * 0.5 + 1e-9 * max(1.0, abs(lo), abs(hi)))
    assert q.dequantize(q.quantize(0.0)) == 0.0
    # outside: saturates to the dtype's range
    assert int(q.quantize(hi + 1e6 + 100 * q.scale)) == q.qmax


def test_round_half_away_and_isqrt():
    assert round_half_away(np.array([0.5, -0.5, 1.5, -2.5, 0.49])).tolist() == [1, -1, 2, -3, 0]
    v = np.array([0, 1, 2, 3, 4, 2**59, 2**60 - 1])
    for val, root in zip(v.tolist(), isqrt_u64(v).tolist(), strict=True):
        assert root * root <= val < (root + 1) ** 2
    # the C's range (32-bit root and remainder): beyond it the reference refuses rather than define a root the C
    # does not compute
    for bad in (-1, 2**60, 2**63 - 1):
        with pytest.raises(ValueError, match="outside"):
            isqrt_u64(np.array([bad]))

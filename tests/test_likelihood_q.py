"""The integer likelihood step (tinywarden.kernels.likelihood_q): its arithmetic tracks the float likelihood,
its streaming and batch forms agree, it survives the model file and refuses a tampered one, and the
generated C returns the same Q15 confidence bit for bit for any parameters."""

import dataclasses
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from int8_fixtures import camera, fitted, shared_entity
from tinywarden.codegen.c import write_c
from tinywarden.errors import ConfigError, ModelFileError
from tinywarden.kernels.base import Op
from tinywarden.kernels.likelihood_q import (
    CONF_ONE,
    check_likelihood,
    confidence_q,
    log2_q16,
    lower_likelihood,
    value_hits_q,
    z_max,
)
from tinywarden.likelihood import AnomalyLikelihood, z_for_confidence
from tinywarden.program import (
    Int8Stream,
    from_model_file,
    quantize_samples,
    run_confidence,
    run_int8,
    to_model_file,
)
from tinywarden.target import missing_tools, run_on_qemu

HARNESS = Path(__file__).parent / "c" / "harness.c"


def test_log2_is_within_a_tenth_of_a_thousandth_of_a_bit():
    rng = np.random.default_rng(0)
    x = np.unique(np.r_[np.arange(1, 5000), rng.integers(1, 2**62, 20000), 2**62 + rng.integers(0, 2**62, 100),
                        [2**k for k in range(63)], [2**k - 1 for k in range(1, 63)]]).astype(np.int64)
    got = log2_q16(x) / 65536.0
    want = np.array([math.log2(int(v)) for v in x])
    assert np.abs(got - want).max() < 1e-4
    assert np.all(np.diff(log2_q16(np.arange(1, 70000))) >= 0)  # monotone


@pytest.mark.parametrize("params", [{"record": None}, {"short": 4, "record": None},
                                    {"gate": 3.0, "slow_shift": 3, "record": None}, {"rate_shift": 5, "record": None},
                                    {"decades": 20.0, "record": None},
                                    {"short": 10, "rate_shift": 13, "holdoff": 30, "record": None}, {}])
def test_integer_confidence_tracks_the_float_likelihood(params):
    rng = np.random.default_rng(1)
    train = np.round(rng.gamma(2.0, size=800) * 5000).astype(np.int32)
    stream = np.round(np.r_[rng.gamma(2.0, size=1500) * 5000, rng.gamma(2.0, size=500) * 20000,
                            np.full(50, 3e6), rng.gamma(2.0, size=500) * 5000]).astype(np.int32)
    lik = AnomalyLikelihood(**params).fit(train.astype(np.float64))
    op = lower_likelihood(lik)
    got = confidence_q(op, stream) / CONF_ONE
    want = lik.transform(stream.astype(np.float64))
    assert np.abs(got - want).max() < 0.005
    if params.get("holdoff"):  # the burst starts a hold-off that silences the rest of it
        assert got[1500:2000].max() > 0.5 and (got[1500:2000] == 0).sum() >= params["holdoff"]
    elif "record" not in params:  # the default record rule: the spike is a new record, so confidence 1
        assert got[2000] == 1.0 and (got == 1.0).sum() < 0.02 * len(got)
    else:
        assert got[2000:2050].max() > got[:1500].max() + 0.3  # the spike stands well above normal data
    assert z_max(op) == pytest.approx(z_for_confidence(1.0, lik.decades), abs=0.125)


def test_small_spreads_and_negative_scores_keep_their_resolution():
    rng = np.random.default_rng(2)
    train = rng.integers(-3, 4, 600).astype(np.int32)  # a median spread of 2 or so: k scales it up
    lik = AnomalyLikelihood().fit(train.astype(np.float64))
    op = lower_likelihood(lik)
    assert op.attrs["k"] >= 8
    stream = np.r_[rng.integers(-3, 4, 500), np.full(20, 400), [-(2**31), 2**31 - 1]].astype(np.int32)
    got = confidence_q(op, stream) / CONF_ONE
    assert np.abs(got - lik.transform(stream.astype(np.float64))).max() < 0.005


def test_streaming_matches_batch_and_the_model_file_keeps_it():
    _, prog = fitted("ewma")
    assert prog.likelihood is not None
    s, _ = camera()
    values = s.values[:8000]
    scores, _ = run_int8(prog, values)
    batch = run_confidence(prog, scores, values)
    st = Int8Stream(prog)
    streamed = [st.confidence for row in values if st.push(row) is not None]
    assert streamed == batch.tolist()
    header, arrays = to_model_file(prog)
    back = from_model_file(header, arrays)
    assert back.model_id == prog.model_id and back.likelihood is not None
    assert np.array_equal(run_confidence(back, scores, values), batch)
    # without the step the program has no confidence and its id does not depend on the new field
    bare = dataclasses.replace(prog, likelihood=None)
    assert run_confidence(bare, scores) is None and "likelihood" not in to_model_file(bare)[0]


@pytest.mark.parametrize(("name", "value"), [("var_floor", 0), ("short", 0), ("short", 1000), ("k", 31),
                                             ("mean", -1), ("gate", -2), ("spread", 0), ("holdoff", -1),
                                             ("holdoff", 70000)])
def test_a_tampered_likelihood_is_refused(name, value):
    _, prog = fitted("ewma")
    header, arrays = to_model_file(prog)
    header["likelihood"]["attrs"][name] = value
    with pytest.raises(ModelFileError, match="likelihood"):
        from_model_file(header, arrays)


@pytest.mark.parametrize(("name", "bad"), [("value_lo", np.zeros(1, np.int16)), ("value_hi", np.zeros(6, np.int32)),
                                           ("value_lo", np.full(6, 32767, np.int16))])
def test_a_tampered_value_record_is_refused(name, bad):
    """A range of the wrong length (the C would read past its table), type or order is one line, not a program."""
    _, prog = fitted("ewma")
    header, arrays = to_model_file(prog)
    assert "vrecord" in header["likelihood"]["attrs"] and arrays["int8/likelihood/value_lo"].shape == (6,)
    with pytest.raises(ModelFileError, match="value_lo"):
        from_model_file(header, {**arrays, f"int8/likelihood/{name}": bad})
    with pytest.raises(ModelFileError, match="likelihood"):
        from_model_file({**header, "likelihood": {**header["likelihood"], "attrs": {
            **header["likelihood"]["attrs"], "vrecord": -1}}}, arrays)


def test_a_decreasing_confidence_table_is_refused():
    op = lower_likelihood(AnomalyLikelihood().fit(np.arange(100.0)))
    bad = Op(op.kind, op.src, op.dst, op.attrs, {"conf_table": op.consts["conf_table"][::-1].copy()})
    with pytest.raises(ConfigError, match="non-decreasing"):
        check_likelihood(bad)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no host gcc to compile the generated C")
@pytest.mark.parametrize("params", [{}, {"short": 5, "gate": 2.0, "slow_shift": 6, "rate_shift": 3},
                                    {"rate_shift": 13, "holdoff": 40}, {"record": 0.05, "holdoff": 40},
                                    {"record": None}])
def test_c_confidence_is_bit_exact(params, tmp_path):
    pipe, prog = fitted("kmeans")
    s, train = camera()
    if params:  # refit the step with other parameters on the program's own calibration-like scores
        scores, _ = run_int8(prog, train.values)
        prog = dataclasses.replace(prog, likelihood=lower_likelihood(
            AnomalyLikelihood(**params).fit(scores.astype(np.float64)))).validate()
    values = s.values[:20000].astype(np.float32)
    rows = _c_rows(prog, values, tmp_path)
    scores, _ = run_int8(prog, values)
    want = run_confidence(prog, scores, values)
    assert rows[:, 1].tolist() == scores.tolist()
    assert rows[:, 4].tolist() == want.tolist()
    unheld = want
    if params.get("holdoff"):  # the hold-off silenced confident windows that the same step without it reports
        assert prog.likelihood is not None
        attrs = {k: v for k, v in prog.likelihood.attrs.items() if k != "holdoff"}
        plain = dataclasses.replace(prog, likelihood=dataclasses.replace(prog.likelihood, attrs=attrs))
        unheld = run_confidence(plain, scores)
        assert ((want == 0) & (unheld > CONF_ONE // 2)).any()
        assert np.array_equal(want[want > 0], unheld[want > 0])
    assert unheld.max() == CONF_ONE and unheld.min() < CONF_ONE // 10  # both ends of the table are exercised


LOG2_MAIN = r"""
#include "tinywarden_model.c"
#include <inttypes.h>
#include <stdio.h>
int main(void)
{
    uint64_t x;
    while (scanf("%" SCNu64, &x) == 1) {
        printf("%ld\n", (long)tw_log2_q16(x));
    }
    return 0;
}
"""


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no host gcc to compile the generated C")
@pytest.mark.parametrize("thumb1", [False, True])
def test_c_log2_is_bit_exact_over_its_whole_range(thumb1, tmp_path):
    """tw_log2_q16 works on 32-bit words (the top bit's word, then the bits below it from the other word): every x
    in [1, 2^63), both words' cases and each top-bit position, equals log2_q16, with CLZ and with the portable
    search a Thumb-1 core compiles (forced on the host by its ACLE macro), under ASan/UBSan."""
    rng = np.random.default_rng(3)
    bits = np.arange(63, dtype=np.int64)
    top = 1 << bits
    x = np.unique(np.r_[1, 2, 3, top, top + 1, top[1:] - 1, top[1:] | (top[1:] - 1),
                        rng.integers(1, 2**63 - 1, 2000, dtype=np.int64),
                        rng.integers(1, 2**40, 500, dtype=np.int64)]).astype(np.int64)
    write_c(fitted("kmeans")[1], tmp_path)
    (tmp_path / "log2_main.c").write_text(LOG2_MAIN)
    exe = tmp_path / "log2"
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-Wconversion", "-O2",
                    *(["-D__ARM_ARCH_ISA_THUMB=1"] if thumb1 else []), "-fsanitize=address,undefined",
                    "-fno-sanitize-recover=all", "-I", str(tmp_path), str(tmp_path / "log2_main.c"), "-o", str(exe)],
                   check=True, capture_output=True, text=True)
    out = subprocess.run([str(exe)], input="\n".join(map(str, x.tolist())), check=True, capture_output=True,
                         text=True).stdout
    assert [int(v) for v in out.split()] == log2_q16(x).tolist()


def _c_rows(prog, values: np.ndarray, tmp_path) -> np.ndarray:
    """The harness's output rows for ``values`` pushed through ``prog``'s generated C (gcc -Werror, ASan/UBSan):
    int16 rows through ``tw_push_q``, anything else as float32 through ``tw_push``."""
    write_c(prog, tmp_path)
    exe = tmp_path / "harness"
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-Wconversion", "-O2",
                    "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-I", str(tmp_path),
                    str(tmp_path / "tinywarden_model.c"), str(HARNESS), "-o", str(exe)],
                   check=True, capture_output=True, text=True)
    path = tmp_path / "in.bin"
    ints = values.dtype == np.int16
    (values if ints else values.astype(np.float32)).tofile(path)
    out = subprocess.run([str(exe), str(path), "q" if ints else "f"], check=True, capture_output=True, text=True).stdout
    return np.array([[int(v) for v in line.split()] for line in out.splitlines()], dtype=np.int64)


def _with_spikes(values: np.ndarray, train_rows: int) -> np.ndarray:
    """``values`` with, after ``train_rows``, one sample per channel a whole range beyond its first rows' (above on
    even channels, below on odd ones), a window apart, so the value record has something to report."""
    out = np.array(values, dtype=np.float64, copy=True)
    lo, hi = out[:train_rows].min(axis=0), out[:train_rows].max(axis=0)
    for c in range(out.shape[1]):
        row = train_rows + 300 * (c + 1)
        if row < len(out):
            out[row, c] = hi[c] + (hi[c] - lo[c]) if c % 2 == 0 else lo[c] - (hi[c] - lo[c])
    return out


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no host gcc to compile the generated C")
@pytest.mark.parametrize(("which", "family"), [("camera", "kmeans"), ("smd", "ewma"), ("nab", "kmeans"),
                                               ("camera", "ar"), ("smd", "ar")])
def test_c_value_record_is_bit_exact(which, family, tmp_path):
    """Step 8 in the generated C (ASan/UBSan, -Werror) equals the Python reference (batch and Int8Stream) on the
    simulator, an SMD entity and a NAB file, with samples beyond the training range that the record reports: checked
    through the features' block extremes (kmeans, ewma) and, for a raw-window family (ar: the module keeps the raw
    ring), on each completed group of ring rows (64 rows on the camera, 32 on SMD)."""
    if which == "camera":
        _, prog = fitted(family)
        s, train = camera()
        values = _with_spikes(s.values[:20000], len(train))
    else:
        prog, raw = shared_entity(which, family)
        values = _with_spikes(raw, len(raw) // 2)
    assert prog.likelihood is not None and "vrecord" in prog.likelihood.attrs
    rows = _c_rows(prog, values, tmp_path)
    scores, _ = run_int8(prog, values)
    want = run_confidence(prog, scores, values)
    assert rows[:, 4].tolist() == want.tolist()
    st = Int8Stream(prog)
    assert [st.confidence for row in values if st.push(row) is not None] == want.tolist()
    ends = prog.window - 1 + prog.stride * np.arange(len(scores))
    hits = value_hits_q(prog.likelihood, quantize_samples(prog, values), ends)
    assert hits.any() and (want[hits] == CONF_ONE).all()  # every window whose samples set a record reports 1
    plain = run_confidence(prog, scores)  # the same step fed no samples: no value record
    assert (want >= plain).all() and np.array_equal(want[~hits], plain[~hits])
    if which == "camera":  # here some of them report only because of their samples
        assert (want[hits] > plain[hits]).any()


def _near_margin_pairs(prog, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(int16 rows, pair rows)``: ``base`` (int16 rows inside the value record's trained range) with, in every other
    window from the second, two samples of one channel on consecutive rows of one group: the first beyond the range by
    half its margin (no record; the range grows to it), the second beyond the range as it was by 6/5 of the margin but
    inside the grown range's. Checked in order, as on every push, neither sets a record; checked against the range the
    group started with (or the group's extremes against it), the second would."""
    op = prog.likelihood
    tol = int(op.attrs["vrecord"])
    lo, hi = (op.consts[k].astype(np.int64).copy() for k in ("value_lo", "value_hi"))
    q = np.clip(base.astype(np.int64), lo, hi)
    pairs = []
    for k, r in enumerate(range(prog.window + 2, len(q) - 1, 2 * prog.stride)):
        c = k % q.shape[1]
        m = ((hi[c] - lo[c]) * tol) >> 16
        if m < 10:
            continue
        if k // q.shape[1] % 2 == 0:  # above, then below the next time this channel comes round
            first, second = hi[c] + m // 2, hi[c] + (6 * m) // 5
            grown = ((first - lo[c]) * tol) >> 16
            assert second > hi[c] + m and second <= first + grown
            hi[c] = second
        else:
            first, second = lo[c] - m // 2, lo[c] - (6 * m) // 5
            grown = ((hi[c] - first) * tol) >> 16
            assert second < lo[c] - m and second >= first - grown
            lo[c] = second
        if not -(2**15) <= second < 2**15:
            break
        q[r, c], q[r + 1, c] = first, second
        pairs.append(r)
    return q.astype(np.int16), np.array(pairs)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no host gcc to compile the generated C")
@pytest.mark.parametrize("family", ["kmeans", "ar"])
def test_c_value_record_checks_a_group_in_order(family, tmp_path):
    """A group whose samples leave the range is checked sample by sample in order in the generated C, as on every
    push: a sample inside the margin grows the range and the next one, beyond the old margin but within the grown
    one, sets no record. For kmeans (groups of 8 through the features' block extremes) and ar (groups of 64 rows of
    the raw ring)."""
    _, prog = fitted(family)
    _, train = camera()
    base = quantize_samples(prog, train.values[: prog.window + 24 * prog.stride])
    q, pairs = _near_margin_pairs(prog, base)
    assert len(pairs) >= 6
    ends = prog.window - 1 + prog.stride * np.arange((len(q) - prog.window) // prog.stride + 1)
    assert not value_hits_q(prog.likelihood, q, ends).any()  # in order: no record
    rows = _c_rows(prog, q, tmp_path)
    scores, _ = run_int8(prog, q)
    want = run_confidence(prog, scores, q)
    assert rows[:, 1].tolist() == scores.tolist()
    assert rows[:, 4].tolist() == want.tolist()
    pair_windows = (pairs - prog.window) // prog.stride + 1
    assert (want[pair_windows] < CONF_ONE).any()  # a check out of order would report 1 there


@pytest.mark.skipif(bool(missing_tools()), reason="; ".join(missing_tools()))
@pytest.mark.parametrize("core", ["cortex-m4", "cortex-m0plus"])
def test_target_value_record_on_ring_rows_equals_the_reference(core, tmp_path):
    """The raw-window family's value record on the emulated core (on Cortex-M4 two channels a word with SIMD32
    instructions, on Cortex-M0+ the portable loop) reports exactly the windows the Python reference does, with
    samples above and below the range on every channel."""
    _, prog = fitted("ar")
    s, train = camera()
    n = len(train)
    values = _with_spikes(s.values[: n + 2200], n)[n - 256:]
    write_c(prog, tmp_path)
    run = run_on_qemu(tmp_path, values, target=core, timeout=120)
    scores, _ = run_int8(prog, values)
    want = run_confidence(prog, scores, values)
    assert run.decisions.confidence is not None
    assert run.decisions.score.tolist() == scores.tolist()
    assert run.decisions.confidence.tolist() == want.tolist()
    ends = prog.window - 1 + prog.stride * np.arange(len(scores))
    hits = value_hits_q(prog.likelihood, quantize_samples(prog, values), ends)
    assert hits.sum() >= 3 and (want[hits] == CONF_ONE).all()

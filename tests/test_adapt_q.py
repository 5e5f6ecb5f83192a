"""The integer baseline adaptation (tinywarden.kernels.adapt_q): the generated C adapts exactly as the Python
integer reference (simulated and real data, gcc -Werror, ASan/UBSan) under every rule flag in both states (the
below-threshold gate, offsets only or scales too, the settling period), the policy switch compiles it in or out
(and a policy's rule compiles in only its own code), the reference state is the unadapted program bit for bit,
it follows the float BaselineAdapter with the same rule, and a tampered step is refused."""

import dataclasses
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import CAMERA_POLICY
from int8_fixtures import camera, fitted, shared_entity
from tinywarden.adapt import Adaptation, BaselineAdapter, settle_windows, windows_in
from tinywarden.codegen.c import emit_c, write_c
from tinywarden.errors import ModelFileError
from tinywarden.kernels.adapt_q import (
    G_MAX,
    G_ONE,
    SD_MAX,
    SD_ONE,
    SETTLE_SPREAD_Q8,
    SVAR_DROP,
    VAR_ONE,
    AdaptQState,
    adapt_params,
    gain_of,
    sd_of,
    var_of,
)
from tinywarden.kernels.base import Op
from tinywarden.pipeline import Pipeline
from tinywarden.program import Int8Stream, adaptation_params, from_model_file, run_int8, to_model_file
from tinywarden.quantize.ptq import feature_affine
from tinywarden.respond import parse_policy
from tinywarden.simulate import simulate

HARNESS = Path(__file__).parent / "c" / "adapt_harness.c"
FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-Wconversion", "-Wmissing-prototypes", "-O1",
         "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="no host gcc to compile the generated C")


def c_run(program, adaptation, values, tmp: Path, rebaseline: int | None = None) -> np.ndarray:
    write_c(program, tmp, adaptation=adaptation)
    exe = tmp / "adapt_harness"
    subprocess.run(["gcc", *FLAGS, "-I", str(tmp), str(tmp / "tinywarden_model.c"), str(HARNESS), "-o", str(exe)],
                   check=True, capture_output=True, text=True)
    path = tmp / "in.bin"
    values.astype(np.float32).tofile(path)
    args = [str(exe), str(path)] + ([str(rebaseline)] if rebaseline is not None else [])
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return np.array([[int(v) for v in line.split()] for line in out.splitlines()], dtype=np.int64).reshape(-1, 10)


def py_run(program, adaptation, values, rebaseline: int | None = None) -> np.ndarray:
    st = Int8Stream(program, adaptation)
    assert st.adapter is not None
    rows = []
    for i, x in enumerate(values.astype(np.float32)):
        if i == rebaseline:
            st.rebaseline()
        out = st.push(x)
        if out is not None:
            a = st.adapter
            rows.append([i, out[0], out[1], st.confidence, int(a.flagged), a.drift, a.adapted % 2**32,
                         a.flags % 2**32, int(a.settling), a.elevated])
    return np.array(rows, dtype=np.int64)


def assert_same(program, adaptation, values, tmp, rebaseline=None) -> np.ndarray:
    want = py_run(program, adaptation, values, rebaseline)
    got = c_run(program, adaptation, values, tmp, rebaseline)
    assert got.shape == want.shape
    bad = np.flatnonzero((got != want).any(axis=1))
    assert not bad.size, f"window {bad[0]}: C {got[bad[0]].tolist()} vs Python {want[bad[0]].tolist()}"
    return want


def drifting(values: np.ndarray, start: int, step: float) -> np.ndarray:
    """A ramp added to every channel from row ``start`` (a slow poisoning / sensor drift)."""
    out = values.astype(np.float64).copy()
    sd = out[:start].std(axis=0) + 1e-9
    ramp = np.clip(np.arange(len(out)) - start, 0, None)[:, None] * step * sd
    return out + ramp


def shifted(values: np.ndarray, start: int, sds: float) -> np.ndarray:
    """A lasting level shift of ``sds`` training standard deviations on every channel from row ``start`` (a
    firmware update)."""
    out = values.astype(np.float64).copy()
    out[start:] += sds * (out[:start].std(axis=0) + 1e-9)
    return out


#: Every flag of the rule in both states (river's AnomalyFilter lesson): the defaults (gate, offsets only,
#: settling, the slow-drift watch), the first version (no gate, scales, no settling, no watch), and the combinations
#: between.
FIRST = dict(below_threshold=False, settle_s=0.0, adapt_scale=True, watch_drift=0.0)


@needs_gcc
@pytest.mark.parametrize(("family", "adaptation", "rebaseline"), [
    ("dense_ae", Adaptation(), None),  # the default pipeline's family, the default policy (the slow-drift watch on)
    ("dense_ae", Adaptation(watch_drift=0.0), None),  # ... with the watch off (compiled out)
    ("ewma", Adaptation(rate_shift=3, max_drift=0.5, settle_s=3600.0), 20000),  # per-input z, flags, re-baseline
    ("pca", Adaptation(rate_shift=1, below_confidence=0.6, max_drift=1.0, **FIRST), 15000),
    ("kmeans", Adaptation(rate_shift=5, max_drift=2.0, adapt_scale=True, settle_s=3600.0), None),
    # offsets only, no settling, no watch: no scale state at all; then the watch without a shadow
    ("kmeans", Adaptation(rate_shift=4, settle_s=0.0, watch_drift=0.0), None),
    ("kmeans", Adaptation(rate_shift=4, settle_s=0.0), None),
    ("pca", Adaptation(rate_shift=1, below_confidence=0.6, max_drift=50.0, **{**FIRST, "watch_drift": 0.5}), None),
    ("ewma", Adaptation(rate_shift=4, below_threshold=False, settle_s=3600.0), None),  # settling without the gate
    ("kmeans+fold", Adaptation(rate_shift=3, max_drift=1.0, **FIRST), None),  # a detector offset folded in
    ("pca+fold", Adaptation(rate_shift=3, settle_s=3600.0), None),  # ... with the settling floor of the scale
    # the slow-drift watch alone can flag (max_drift far out of reach), one z multiplier for all and one each
    ("ewma", Adaptation(rate_shift=4, max_drift=50.0, watch_drift=0.5, settle_s=3600.0), 20000),
    ("pca", Adaptation(max_drift=50.0, watch_drift=0.5, settle_s=3600.0), None),
    # the default family with the watch and its distance compiled in (no settling: on this stream a covariance model
    # stays over its threshold after the shift, so the settling count would not empty again)
    ("gaussian", Adaptation(settle_s=0.0), None),
])
def test_c_adapts_exactly_as_python_on_the_simulator(family, adaptation, rebaseline, tmp_path):
    _, prog = fitted(family.split("+")[0])
    assert prog.adaptation is not None
    if family.endswith("+fold"):
        ad = prog.adaptation
        n = prog.ops[int(ad.attrs["op"])].consts["offset"].size
        fold = np.random.default_rng(0).integers(-50, 50, n).astype(np.int32)
        prog = dataclasses.replace(prog, adaptation=Op(ad.kind, ad.src, ad.dst, ad.attrs,
                                                       {**ad.consts, "fold": fold})).validate()
        assert "tw_adapt_fold[i]" in emit_c(prog, adaptation=adaptation)["tinywarden_model.c"]
    s, _ = camera()
    values = shifted(drifting(s.values, 12000, 3e-4), 6000, 3.0)  # 25920 rows: three days
    values[5000:5040, 1] = np.nan  # NaN and saturating samples go through the adapted path alike
    values[4000:4010, 0] = 1e30  # (before the shift: a saturating burst inside it holds its adoption back a while)
    rows = assert_same(prog, adaptation, values, tmp_path, rebaseline)
    adapted = np.diff(np.r_[0, rows[:, 6]])
    assert 0 < adapted.sum() < len(rows)  # both branches of the gate are exercised
    if adaptation.max_drift < 3.0 or 0 < adaptation.watch_drift < 1.0:
        assert rows[:, 7].max() >= 1 and rows[:, 4].max() == 1  # the flag is raised ...
    if adaptation.settle_s:  # the shift settled, and once the baseline followed it the count emptied again
        settling = rows[:, 8]
        assert settling.max() == 1 and rows[:, 9].max() > 0
        # (a random fold is no detector's: once a scale learned while settling moves its offsets, its scores need not
        # come back under the threshold)
        assert (np.diff(settling) == -1).any() or family.endswith("+fold")
    else:
        assert not rows[:, 8:].any()
    if rebaseline is not None:  # the re-baseline (tw_rebaseline) took the drift back to the reference
        before, after = rows[rows[:, 0] < rebaseline][-1], rows[rows[:, 0] >= rebaseline][0]
        assert after[5] < before[5]


def test_rebaseline_resets_the_adapted_state_and_clears_the_flag():
    _, prog = fitted("ewma")
    s, _ = camera()
    st = Int8Stream(prog, Adaptation(rate_shift=2, max_drift=0.3))
    for x in drifting(s.values[:12000], 3000, 1e-3):
        st.push(x)
    a = st.adapter
    assert a is not None and st.likelihood is not None and a.flagged and a.drift > 0 and a.adapted > 0
    flags, adapted = a.flags, a.adapted
    st.rebaseline()
    assert not a.flagged and a.drift == 0 and (a.mu == 0).all() and (a.var == VAR_ONE).all() and (a.g == G_ONE).all()
    assert (a.smu == 0).all() and (a.svar == VAR_ONE >> SVAR_DROP).all() and a.elevated == 0 and not a.settling
    assert (a.flags, a.adapted) == (flags, adapted)  # the history is kept
    assert st.likelihood.mean == prog.likelihood.attrs["mean"] and st.likelihood.var == prog.likelihood.attrs["var"]


@needs_gcc
@pytest.mark.parametrize("which", ["smd", "nab"])
def test_c_adapts_exactly_as_python_on_shared_data(which, tmp_path):
    prog, values = shared_entity(which, "ewma")
    # inputs of very different ranges: each its own fractional bits (a table in the C: its own, or the high nibbles of
    # one it shares with the z shifts when both spans fit 4 bits, tinywarden.codegen.c.adaptation_c)
    assert "fracs" in prog.adaptation.consts
    c = emit_c(prog, adaptation=Adaptation())["tinywarden_model.c"]
    assert "tw_adapt_fracs[i]" in c or "#define TW_AD_FRAC_OF(i) (TW_AD_FRAC + (int32_t)(tw_adapt_fz[(i)] >> 4))" in c
    rows = assert_same(prog, Adaptation(rate_shift=4, max_drift=1.0), values, tmp_path)
    assert rows[-1, 6] > 0


def test_the_reference_state_is_the_unadapted_program():
    """Until a window teaches it, the adapted forward is the op itself: same scores as run_int8."""
    _, prog = fitted("dense_ae")
    s, _ = camera()
    values = s.values[:6000]
    scores, alarms = run_int8(prog, values)
    never = py_run(prog, Adaptation(below_confidence=0.0, settle_s=0.0), values)  # confidence < 0 never holds
    assert never[:, 1].tolist() == scores.tolist() and never[:, 2].tolist() == alarms.tolist()
    assert never[:, 6].max() == 0
    taught = py_run(prog, Adaptation(rate_shift=2), values)
    first = int(np.argmax(taught[:, 6] > 0))
    assert taught[: first + 1, 1].tolist() == scores[: first + 1].tolist()
    assert taught[:, 1].tolist() != scores.tolist()  # and then it does adapt


def test_policy_switch_compiles_adaptation_in_or_out():
    _, prog = fitted("kmeans")
    plain = emit_c(prog)
    assert "tw_adapt" not in plain["tinywarden_model.c"]
    assert emit_c(prog, adaptation=Adaptation(enabled=False)) == plain
    on = emit_c(prog, adaptation=Adaptation())
    assert "tw_adapt_observe(s, score);" in on["tinywarden_model.c"]
    assert "TW_HAS_ADAPTATION 1" in on["tinywarden_model.h"]
    for enabled in (True, False):
        pol = parse_policy(CAMERA_POLICY.replace("enabled = false", f"enabled = {str(enabled).lower()}"))
        files = emit_c(prog, pol)
        assert ("tw_adapt_observe(s, score);" in files["tinywarden_model.c"]) == enabled
    # the Python stream follows the same switch
    assert Int8Stream(prog, Adaptation(enabled=False)).adapter is None
    assert Int8Stream(prog).adapter is None and Int8Stream(prog, Adaptation()).adapter is not None


def test_a_program_without_the_step_never_adapts():
    _, prog = fitted("gru_ae")  # reads the raw window: no adaptable op
    assert prog.adaptation is None
    assert Int8Stream(prog, Adaptation()).adapter is None
    assert "tw_adapt" not in emit_c(prog, adaptation=Adaptation())["tinywarden_model.c"]
    # nor does one without a likelihood: no confidence gates the step, so it is inert
    bare = dataclasses.replace(fitted("ewma")[1], likelihood=None).validate()
    assert bare.adaptation is not None and Int8Stream(bare, Adaptation()).adapter is None
    assert "tw_adapt" not in emit_c(bare, adaptation=Adaptation())["tinywarden_model.c"]


def test_model_file_keeps_the_step_and_refuses_a_tampered_one():
    _, prog = fitted("ewma")
    header, arrays = to_model_file(prog)
    back = from_model_file(header, arrays)
    assert back.adaptation is not None and back.model_id == prog.model_id
    bare = dataclasses.replace(prog, adaptation=None)
    assert "adaptation" not in to_model_file(bare)[0]
    for key, value in (("op", 0), ("op", 99), ("frac", 40), ("frac", -1), ("period_us", 0), ("period_us", 1.5)):
        h, _ = to_model_file(prog)
        h["adaptation"]["attrs"][key] = value
        with pytest.raises(ModelFileError, match="adaptation"):
            from_model_file(h, arrays)
    bad = dict(arrays)
    bad["int8/adaptation/zshift"] = np.full_like(arrays["int8/adaptation/zshift"], 40)
    with pytest.raises(ModelFileError, match="adaptation"):
        from_model_file(header, bad)
    # a step lowered before the means took 24 bits (its fractional bits chosen for 30) is refused, not run with a
    # clamp far inside its span
    old, _ = to_model_file(prog)
    del old["adaptation"]["attrs"]["mean_bits"]
    with pytest.raises(ModelFileError, match="30-bit means"):
        from_model_file(old, arrays)


def test_the_stored_scale_gives_the_gain_and_steps_down_to_the_reference_exactly():
    # the adapted scale is one uint16 per input (Q12 reference sd): its gain 2^27 / sd tracks 1 / sqrt(var) (no
    # Newton steps, no stored gain), a variance that relaxes from above lands on the reference exactly, and the
    # reference is fixed
    var = np.unique(np.r_[np.geomspace(VAR_ONE / 3.5, VAR_ONE * 250, 400).astype(np.int64), VAR_ONE])
    sd = sd_of(var)
    assert (sd <= SD_MAX).all() and (sd * sd <= var << 8).all() and ((sd + 1) ** 2 > var << 8).all()  # floored
    assert (var_of(sd) <= var).all()
    want = np.minimum(G_ONE / np.sqrt(var / VAR_ONE), 65535)
    assert np.abs(gain_of(sd) / want - 1).max() < 5e-4
    assert sd_of(np.array([VAR_ONE])).tolist() == [SD_ONE] and gain_of(np.array([SD_ONE])).tolist() == [G_ONE]
    assert gain_of(sd_of(np.array([VAR_ONE // 100]))).tolist() == [65535]  # the scale floor: g never passes 2
    assert sd_of(np.array([1 << 30])).tolist() == [SD_MAX] and gain_of(np.array([SD_MAX]), G_ONE).tolist() == [2048]
    for start in (VAR_ONE * 3 // 2, 4 * VAR_ONE + 12345, 200 * VAR_ONE):  # the offsets-only relaxation, at 2^-8
        s = sd_of(np.array([start]))
        for _ in range(6000):
            v = var_of(s)
            s = sd_of(np.maximum(v + ((VAR_ONE - v) >> 8), 1))
        assert s.tolist() == [SD_ONE]


@pytest.mark.parametrize("cfg", [Adaptation(rate_shift=4), Adaptation(rate_shift=4, **FIRST)],
                         ids=["defaults", "first-version"])
def test_integer_adaptation_follows_the_float_adapter(cfg):
    """The float BaselineAdapter fed the same windows (the int8 program's integer features, in raw units) and the
    same decisions (the integer step's confidence gate and over-threshold verdict): the same windows teach and
    settle, the adapted means agree to within half an input unit (the rounding of the program's own reference
    offset, which the integer step measures from) plus 0.02 sd, the adapted scales to 0.03."""
    pipe, prog = fitted("pca")
    # attack-free: while settling every window teaches, and an attack's outliers are clamped by the integer step
    # (+-2^(30-F) input units, 128 sd) where the float follows them (benchmarks/adapt_q.py measures both); a steady
    # shift (adopted once it has lasted settle_s), then a ramp
    values = shifted(drifting(simulate("camera", 3.0, "none", seed=12).values, 12000, 3e-4), 3000, 3.0)
    st = Int8Stream(prog, cfg)
    fp = Pipeline.__new__(Pipeline)
    fp.__dict__.update(pipe.__dict__)
    fp.offset_, fp.scale_ = pipe.offset_.copy(), pipe.scale_.copy()
    fa = BaselineAdapter(fp, cfg)
    a, b = feature_affine(pipe, 1.0 / prog.sample_mul.astype(np.float64), prog.sample_zero)
    op = prog.ops[int(prog.adaptation.attrs["op"])]
    half_unit = 0.5 * a * 2.0 ** op.consts["pre_shift"] / pipe.scale_
    st_a = st.adapter
    assert st_a is not None and fa.settle_windows == st_a.params.settle_n
    seen: list[np.ndarray] = []
    observe = st_a.observe
    st_a.observe = lambda f, *rest: (seen.append(np.asarray(f, dtype=np.float64)), observe(f, *rest))[1]
    worst_mu, worst_scale, settled = np.zeros(a.size), 0.0, 0
    for x in values:
        if (out := st.push(x)) is None:
            continue
        over = out[0] > prog.threshold
        score = fp.threshold_ + (1.0 if over else -1.0)  # the integer verdict, on the float's scale
        step = fa.observe(a * seen[-1] + b, 0.0 if st.confidence < st_a.params.below_q15 else 1.0, None, score)
        assert step.adapted == st.adapted and fa.settling == st_a.settling
        settled += st_a.settling
        if st.adapted:
            z_float = (fp.offset_ - fa.reference_offset) / fa.reference_scale
            worst_mu = np.maximum(worst_mu, np.abs(st_a.z_of(st_a.mu) / 4096.0 - z_float))
            floor = 0.5 if cfg.adapt_scale and not st_a.settling else 1.0
            s_int = np.maximum(np.sqrt(st_a.var / VAR_ONE), floor)
            worst_scale = max(worst_scale, float(np.abs(s_int - fp.scale_ / fa.reference_scale).max()))
    print(f"integer vs float adaptation ({cfg}), {st_a.adapted} adapted windows, {settled} settling: max |mean diff| "
          f"{worst_mu.max():.4f} sd (max beyond half an input unit {np.max(worst_mu - half_unit):.4f}), max |scale "
          f"ratio diff| {worst_scale:.4f}; drift {st_a.drift / 4096:.3f} vs float {fa.drift:.3f}")
    assert st_a.adapted > 100 and fa.drift > 5.0  # the ramp moved both baselines well away from the reference
    assert (settled > 0) == bool(cfg.settle_s)  # the ramp outlasted settle_s: it was followed at the settling rate
    if st_a.params.watch_q12:  # the watch reads the same day-long level (the shadow) in both
        assert abs(st_a.level / 4096.0 - fa.level_drift) <= float(np.max(half_unit)) + 0.02
    assert np.all(worst_mu <= half_unit + 0.02) and worst_scale < 0.03


def _ewma_inputs() -> tuple[Any, np.ndarray, np.ndarray, int, int]:
    """ewma's program, the model inputs of a camera window after 3,000 samples, the same moved 40 input units on
    every input, the threshold and the likelihood's trained mean."""
    _, prog = fitted("ewma")
    s, _ = camera()
    st = Int8Stream(prog, Adaptation(settle_s=0.0))
    for x in s.values[:3000]:
        st.push(x)
    feats = np.asarray(st.last_inputs, dtype=np.int64)
    pre = prog.ops[int(prog.adaptation.attrs["op"])].consts["pre_shift"].astype(np.int64)
    moved = feats + (np.int64(40) << pre)
    return prog, feats, moved, int(prog.threshold), int(prog.likelihood.attrs["mean"])


def _fresh(prog, **rule) -> AdaptQState:
    """An integer adapter of ``prog`` with the rule's keyword arguments (adapt_params's)."""
    op = prog.adaptation
    return AdaptQState(op, prog.ops[int(op.attrs["op"])],
                       adapt_params(prog.likelihood, 2, 0.2, 3.0, threshold=int(prog.threshold), **rule))


def test_each_rule_flag_in_both_states():
    """The gate, offsets only vs scales, and the settling count, each on and off, on the Python reference (the C
    tests above run the same rules bit for bit)."""
    prog, feats, moved, thr, m0 = _ewma_inputs()
    # the gate: a window over the threshold teaches nothing with it, and teaches without it
    for gate in (True, False):
        ad = _fresh(prog, gate=gate)
        assert ad.observe(moved, 0, m0, m0, thr + 1)[0] is (not gate)
        assert ad.observe(moved, 0, m0, m0, thr)[0]  # at the threshold: under it
    # offsets only: the mean moves, the scale stays the reference (and the op's multiplier is its own)
    ad = _fresh(prog, adapt_scale=False)
    for _ in range(5):
        ad.observe(moved, 0, m0, m0, thr)
    assert (ad.mu != 0).all() and (ad.var == VAR_ONE).all() and (ad.g == G_ONE).all() and not ad.params.scaled
    assert np.array_equal(ad.adapted_params()[1], ad.mult)
    ad = _fresh(prog, adapt_scale=True)
    for _ in range(5):
        ad.observe(moved, 0, m0, m0, thr)
    assert (ad.var != VAR_ONE).any() and (ad.g != G_ONE).any()
    # settling: 3 windows over the threshold fill the count; the shadow's level is adopted once its spread is steady
    # (SETTLE_SPREAD), not before; every window teaches then, at the settling rate, the scale never under the
    # reference; the count empties under the threshold and settling ends
    for settle_n in (0, 3):
        ad = _fresh(prog, gate=True, adapt_scale=False, settle_n=settle_n, settle_shift=1)
        taught = []
        for _ in range(30):
            steady = bool((ad.svar <= SETTLE_SPREAD_Q8).all())
            taught.append(ad.observe(moved, 0, m0, m0, thr + 1)[0])
            if taught[-1]:
                assert steady and ad.elevated == 3  # adopted only with the count full and the spread steady
                break
        if not settle_n:
            assert taught == [False] * 30 and (ad.mu == 0).all() and not ad.settling and (ad.smu == 0).all()
            continue
        assert 3 < len(taught) < 30 and not any(taught[:-1])  # the jump into the shift was unsteady at first
        assert ad.settling and ad.elevated == 3 and ad.settled == 1
        assert (ad.smu != 0).all() and (ad.mu != 0).all() and (ad.g <= G_ONE).all()
        steps = [(ad.observe(feats, 1 << 15, m0, m0, thr)[0], ad.settling) for _ in range(3)]
        assert steps == [(True, True), (True, True), (False, False)] and ad.elevated == 0
    # a scale learned while settling relaxes back to the reference once it has ended (offsets only)
    ad = _fresh(prog, adapt_scale=False, settle_n=1, settle_shift=1)
    ad.observe(moved * 3, 0, m0, m0, thr + 1)
    assert ad.settling and (ad.var != VAR_ONE).any()
    ad.observe(feats, 0, m0, m0, thr)
    assert not ad.settling
    for _ in range(200):
        ad.observe(feats, 0, m0, m0, thr)
    # from above the variance lands on the reference exactly; from below it stops within 2^rate stored steps of it
    # (tinywarden.kernels.adapt_q.SD_BITS: (2 * sd + 1) / 256 Q16 units each, plus var_of's floor), where the gain
    # is the reference's
    assert np.abs(ad.var - VAR_ONE).max() <= ((2 * SD_ONE + 1) // 256 + 1) << ad.params.rate_shift
    assert (ad.g == G_ONE).all() and G_MAX > G_ONE


def test_the_slow_drift_watch_flags_a_level_that_teaches_nothing_in_both_states():
    """Windows that teach nothing (confidence 1) and stay under the threshold move only the watch's level (and the
    shadow): the watch flags them once, re-arms once they are back, needs no settling rule, is not moved by windows
    over the threshold, and is off with watch_drift 0."""
    prog, feats, moved, thr, m0 = _ewma_inputs()
    ad = _fresh(prog, settle_n=0, watch_drift=0.5)
    assert not any(ad.observe(moved, 1 << 15, m0, m0, thr + 1)[1] for _ in range(20))  # over: an alarm, not drift
    assert (ad.wmu == 0).all() and ad.level == 0
    # (the camera window fed here sits 2 sd from the reference, the moved one 9.6 sd: a watch at 5 sd re-arms under 2.5)
    for watch, settle_n in ((0.0, 10**6), (5.0, 10**6), (5.0, 0)):
        ad = _fresh(prog, gate=True, adapt_scale=False, settle_n=settle_n, settle_shift=2, watch_drift=watch)
        raised = [ad.observe(moved, 1 << 15, m0, m0, thr)[1] for _ in range(20)]
        assert ad.adapted == 0 and (ad.mu == 0).all() and ad.drift == 0
        if not watch:
            assert not any(raised) and ad.level == 0 and not ad.flagged and (ad.wmu == 0).all()
            continue
        assert raised.count(True) == 1 and ad.level > ad.params.watch_q12 and ad.flagged
        for _ in range(40):
            ad.observe(feats, 1 << 15, m0, m0, thr)
        assert not ad.flagged and ad.level < ad.params.watch_rearm_q12
        assert [ad.observe(moved, 1 << 15, m0, m0, thr)[1] for _ in range(20)].count(True) == 1 and ad.flags == 2


def test_settle_windows_come_from_one_definition():
    pipe, prog = fitted("dense_ae")
    ad = Adaptation()
    n = adaptation_params(prog, ad).settle_n
    assert n == settle_windows(pipe, ad.settle_s) == windows_in(ad.settle_s, prog.stride, 10.0) == 68
    src = emit_c(prog, adaptation=ad)["tinywarden_model.c"]
    assert f"#define TW_AD_SETTLE_N {n}\n" in src
    # a program stored before the period was kept: the settling rule is off on it (and compiled out)
    old_op = prog.adaptation
    old = dataclasses.replace(prog, adaptation=Op(old_op.kind, old_op.src, old_op.dst,
                                                  {k: v for k, v in old_op.attrs.items() if k != "period_us"},
                                                  old_op.consts)).validate()
    assert adaptation_params(old, ad).settle_n == 0
    assert "#define TW_AD_SETTLE_N" not in emit_c(old, adaptation=ad)["tinywarden_model.c"]


def test_a_policy_compiles_in_only_its_rule():
    """Offsets only without settling: no scale state, no gain; the settling rule adds the shadow and the count; the
    first version has no gate; the state grows with the rule."""
    _, prog = fitted("kmeans")

    def module(**kw):
        files = emit_c(prog, adaptation=Adaptation(**kw))
        size = int(files["tinywarden_model.h"].split("#define TW_STATE_BYTES ")[1].split()[0].rstrip("u"))
        return files["tinywarden_model.c"], files["tinywarden_model.h"], size

    offsets, h_off, n_off = module(settle_s=0.0, watch_drift=0.0)
    default, h_def, n_def = module()
    first, h_first, n_first = module(**FIRST)
    unwatched, h_unwatched, n_unwatched = module(watch_drift=0.0)
    assert "tw_adapt_gain" not in offsets and "int32_t var;" not in h_off and "smu" not in h_off
    assert "tw_adapt_gain" in default and "int32_t smu;" in h_def and "TW_HAS_SETTLING 1" in h_def
    assert "smu" not in h_first and "TW_HAS_SETTLING" not in h_first and "tw_adapt_gain" in first
    assert "score <= TW_THRESHOLD" in default and "score <= TW_THRESHOLD" not in first
    assert n_off < n_first < n_unwatched < n_def
    # the slow-drift watch: on by default (one int32 per input), compiled out with watch_drift 0
    assert "level > TW_AD_WATCH" in default and "int32_t wmu;" in h_def
    assert "TW_AD_WATCH" not in unwatched + offsets + first and "wmu" not in h_unwatched + h_off + h_first
    watch_only, h_watch, _ = module(settle_s=0.0)
    assert "level > TW_AD_WATCH" in watch_only and "smu" not in h_watch


@needs_gcc
def test_c_refuses_an_irregular_sustained_shift_as_python_does(tmp_path):
    """A shift that keeps every window over the threshold for many times settle_s but jumps to a new random level
    every window (its spread around its own mean far beyond SETTLE_SPREAD) is never adopted, in C as in Python; the
    steady shift of the camera test above is."""
    _, prog = fitted("ewma")
    s, _ = camera()
    values = s.values.astype(np.float64).copy()
    start = 6000
    sd = values[:start].std(axis=0) + 1e-9
    levels = np.random.default_rng(3).uniform(4.0, 12.0, size=((len(values) - start) // prog.stride + 1, 1))
    values[start:] += np.repeat(levels, prog.stride, axis=0)[: len(values) - start] * sd
    adaptation = Adaptation(settle_s=3600.0)
    n = adaptation_params(prog, adaptation).settle_n
    rows = assert_same(prog, adaptation, values, tmp_path)
    assert not rows[:, 8].any()  # the irregular level was never adopted ...
    assert n > 1 and (rows[:, 9] == n).sum() > 10 * n  # ... though the count sat full for ten times settle_s


@needs_gcc
def test_the_watchs_distance_alone_flags_a_level_off_the_models_relations_in_c_as_in_python(tmp_path):
    """issue 14: the valve's sensor drift moved its pressure by about one reference sd, inside the per-input watch's
    limit, but off the line pressure keeps with the valve's position. The Gaussian's own score of the watch's level
    (``watch_distance``, a fraction of its threshold) measures that; with the per-input limits out of reach it alone
    raises the flag, the C exactly as the Python reference, and never with ``watch_distance`` 0 (compiled out)."""
    _, prog = fitted("gaussian")
    s, _ = camera()
    values = s.values[:25920].astype(np.float64).copy()
    k = s.channels.index("power_mw")  # power off the CPU and traffic it follows
    values[6000:, k] += np.clip(np.arange(len(values) - 6000) / 12000, 0, 1) * 2.0 * values[:6000, k].std()
    flags = {}
    for distance in (0.05, 0.0):
        policy = Adaptation(max_drift=50.0, watch_drift=50.0, watch_distance=distance)
        c = emit_c(prog, adaptation=policy)["tinywarden_model.c"]
        assert ("dist > TW_AD_DIST" in c) == (distance > 0)
        out = tmp_path / str(distance)
        out.mkdir()
        rows = assert_same(prog, policy, values, out)
        flags[distance] = int(rows[:, 7].max())
        assert rows[:, 5].max() < adaptation_params(prog, policy).drift_q12  # the mean's drift never flags here
    assert flags == {0.05: 1, 0.0: 0}

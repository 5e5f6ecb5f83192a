"""The generated C of a trained dense-autoencoder pipeline on a real target: cross-compiled for
Cortex-M4/M0+ and run on an emulated Cortex-M4, whose decisions must equal the host C's and the Python
int8 reference's for the same compiled-in sample stream."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import make_series
from tinywarden.adapt import Adaptation
from tinywarden.codegen.c import write_c
from tinywarden.detectors import DEFAULT_FAMILY, ARResidual, DenseAutoencoder, make_detector
from tinywarden.kernels.likelihood_q import without_value_record
from tinywarden.pipeline import Pipeline
from tinywarden.program import Int8Stream, Program, run_int8
from tinywarden.quantize.ptq import quantize_pipeline
from tinywarden.simulate import simulate
from tinywarden.target import missing_tools, module_size, run_on_host, run_on_qemu

MISSING = missing_tools()
pytestmark = pytest.mark.skipif(bool(MISSING), reason="; ".join(MISSING))


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Program, Path]:
    """The default pipeline shape (6 channels, window 128, stride 64) with a small dense AE, as C."""
    series = make_series(n=6000, channels=6, seed=11)
    pipe = Pipeline(DenseAutoencoder(hidden=(12, 4), epochs=5), window=128, stride=64).fit(series)
    program = quantize_pipeline(pipe, series)
    out = tmp_path_factory.mktemp("model")
    write_c(program, out)
    return program, out


def sample_stream(n: int = 1600) -> np.ndarray:
    x = make_series(n=n, channels=6, seed=12).values
    if n > 1200:
        # An attack-like burst: some windows must be anomalous.
        x[900:1150, 1] += np.random.default_rng(13).normal(scale=8.0, size=250)
        # The documented fail-safe for bad samples (NaN -> 0, saturation) must agree too.
        x[300, 2], x[301, 3], x[302, 4] = np.nan, np.inf, -1e30
    return x


def test_emulated_m4_decisions_equal_host_and_reference(generated: tuple[Program, Path]) -> None:
    program, out = generated
    x = sample_stream()
    target = run_on_qemu(out, x, timeout=60)
    host = run_on_host(out, x)
    scores, anomalies = run_int8(program, x)
    assert len(target.decisions) == len(scores) == 1 + (len(x) - 128) // 64
    assert target.decisions.differences(host.decisions) == []
    assert target.decisions.score.tolist() == scores.tolist()
    assert target.decisions.anomaly.tolist() == anomalies.tolist()
    assert 0 < anomalies.sum() < len(anomalies)  # both decisions occur, so the comparison means something


def test_module_footprint_on_m4_and_m0plus(generated: tuple[Program, Path]) -> None:
    program, out = generated
    m4, m0 = module_size(out, "cortex-m4"), module_size(out, "cortex-m0plus")
    for size in (m4, m0):
        assert size.flash >= program.const_bytes  # every constant is in flash
        # issue 16: no int16 ring (window x channels x 2 = 1,536 B): aggregates, a group of 8 samples and one byte
        # a sample for the crossings of the window's mean
        assert program.window * program.n_channels <= size.state_bytes <= 1536
        assert "tw_push" in size.symbols and "tw_init" in size.symbols
    assert m4.symbols != m0.symbols  # really two instruction sets
    stated = int(re.search(r"#define TW_STATE_BYTES (\d+)", (out / "tinywarden_model.h").read_text()).group(1))
    assert m4.state_bytes == m0.state_bytes == stated  # the header's number is the target's sizeof


#: libgcc's single-precision soft-float helpers (arithmetic, comparisons, conversions), by prefix.
SOFT_FLOAT = ("__aeabi_f", "__aeabi_i2f", "__aeabi_ui2f", "__aeabi_cf", "__addsf", "__subsf", "__mulsf", "__nesf",
              "__eqsf", "__gesf", "__lesf", "__fix", "__float")


def test_no_soft_float_helper_on_fpu_less_cores(generated: tuple[Program, Path]) -> None:
    # tw_push reads a float's bits and scales them in integers: an FPU-less core links no float helper
    for core in ("cortex-m4", "cortex-m0plus"):
        helpers = module_size(out := generated[1], core).undefined
        assert not [h for h in helpers if h.startswith(SOFT_FLOAT)], (core, helpers, out)


def test_instructions_per_window_are_counted_exactly(generated: tuple[Program, Path]) -> None:
    _, out = generated
    x = sample_stream(128 + 2 * 64)
    first = run_on_qemu(out, x, count=True, timeout=60)
    again = run_on_qemu(out, x, count=True, timeout=60)
    assert first.instructions is not None and again.instructions is not None
    counts = first.instructions
    assert counts.per_push.tolist() == again.instructions.per_push.tolist()
    assert len(counts.per_push) == len(x) and len(counts.per_window) == 3
    closing = counts.per_push[counts.window_pushes]
    # groups of 8 samples (the Haar pyramid's): their last push folds them (a window's last push also closes it)
    group_ends = np.setdiff1d(np.arange(7, len(x), 8), counts.window_pushes)
    others = np.delete(counts.per_push, np.union1d(counts.window_pushes, group_ends))
    # A push that only stores a sample is cheap; the pushes that close a window run the model.
    assert counts.per_push[group_ends].max() * 10 < closing.min()
    assert others.max() * 2 < counts.per_push[group_ends].min() < closing.min()
    assert counts.per_window[1] == counts.per_push[128:192].sum()
    assert counts.max_push == closing.max()


def test_m0plus_build_runs_on_the_m4_board_with_the_same_decisions(generated: tuple[Program, Path]) -> None:
    # ARMv6-M code is a subset of ARMv7-M: the M0+ build's decisions and its own instruction count come from
    # the M4 board; Thumb-1 needs more instructions than Thumb-2 for the same loop
    program, out = generated
    x = sample_stream(128 + 2 * 64)
    m0 = run_on_qemu(out, x, target="cortex-m0plus", count=True, timeout=60)
    m4 = run_on_qemu(out, x, target="cortex-m4", count=True, timeout=60)
    scores, anomalies = run_int8(program, x)
    assert m0.decisions.score.tolist() == scores.tolist() and m0.decisions.anomaly.tolist() == anomalies.tolist()
    assert m0.instructions is not None and m4.instructions is not None
    assert m0.instructions.steady_per_window > m4.instructions.steady_per_window


def test_window_costs_at_most_issue_16_budget_on_m4_with_the_value_record_checked_per_group(tmp_path: Path) -> None:
    # issue 16's goal for the default pipeline (default dense AE, window 128, stride 64, 6 channels, default
    # features, the likelihood) on a Cortex-M4 without FPU: <= 50,000 instructions per window, exact under QEMU
    # (64,556 before the per-block Haar pyramid, the fused feature requantization and the straight-line sample
    # conversion). Issue 14's value record checked on every push cost 4,302 more (52,350: over the goal); checked on
    # each completed group against the block extremes the features keep, it costs a few hundred
    series = make_series(n=6000, channels=6, seed=11)
    pipe = Pipeline(DenseAutoencoder(epochs=5), window=128, stride=64).fit(series)
    program = quantize_pipeline(pipe, series)
    per_window = _with_and_without_value_record(program, tmp_path)
    assert per_window["with"] <= 50_000, per_window
    assert 0 < per_window["with"] - per_window["without"] <= 2 * 64 * 6, per_window  # < 2 a sample and channel


def _with_and_without_value_record(program: Program, tmp_path: Path) -> dict[str, float]:
    """Steady instructions per window on the emulated Cortex-M4 of ``program`` ("with") and of the same program
    without its likelihood's value record ("without")."""
    assert program.likelihood is not None and "vrecord" in program.likelihood.attrs
    bare = dataclasses.replace(program, likelihood=without_value_record(program.likelihood))
    per_window = {}
    for name, prog in (("with", program), ("without", bare)):
        write_c(prog, tmp_path / name)
        counts = run_on_qemu(tmp_path / name, sample_stream(128 + 3 * 64), count=True, timeout=120).instructions
        assert counts is not None
        per_window[name] = counts.steady_per_window
    return per_window


def test_raw_window_family_checks_the_value_record_on_groups_of_ring_rows(tmp_path: Path) -> None:
    # a raw-window family (ar here; gru_ae, conv_ae and bounds alike) keeps the raw sample ring and no block
    # extremes: the value record was checked on every push (5,701 instructions a window more on 6 channels x 64
    # samples here, which put gru_ae at 504,307, over issue 16's 500,000); on each completed group of the stride's
    # ring rows, two channels a word with the SIMD32 instructions, about 940 (+1,757: the call also costs the
    # inlined AR kernel some 750 in register pressure)
    series = make_series(n=6000, channels=6, seed=11)
    program = quantize_pipeline(Pipeline(ARResidual(), window=128, stride=64).fit(series), series)
    assert not program.info.get("features")  # the model reads the raw window
    per_window = _with_and_without_value_record(program, tmp_path)
    assert 0 < per_window["with"] - per_window["without"] <= 5 * 64 * 6, per_window  # < 5 a sample and channel


def test_adapting_default_module_fits_8kb_on_m0plus_on_data_far_from_zero(tmp_path: Path) -> None:
    # on these rows one feature's mean lies 54,840 integer units from zero: its int32 offset made the whole offset
    # table int32 and the adapting default module 8,270 B on M0+; the feature is now shifted one bit further
    # (one unit 0.55 of an output step), every offset fits int16 and the module is 8,138 B
    series = make_series(n=6000, channels=6, seed=11)
    program = quantize_pipeline(Pipeline(make_detector(DEFAULT_FAMILY), window=128, stride=64).fit(series), series)
    offsets = np.concatenate([op.consts["offset"] for op in program.ops if op.kind.startswith("requantize_s64")])
    assert np.abs(offsets).max() < 2**15
    write_c(program, tmp_path, adaptation=Adaptation())
    size = module_size(tmp_path, "cortex-m0plus")
    assert size.flash <= 8192 and size.ram_with_state <= 4096, (size.flash, size.ram_with_state)


def test_adapting_default_module_fits_8kb_on_every_core_and_adapts_on_m0plus_with_the_reference_decisions(
        tmp_path: Path) -> None:
    # issue 14: the default pipeline (the default family, window 128, stride 64, 6 channels, default features) with the
    # baseline adaptation at its defaults compiled in, the slow-drift watch included, fits 8 KB of flash and 4 KB of
    # RAM on Cortex-M4, M4F and M0+ (the watch was off by default while the M4 module was at 8,186 B of its 8 KB;
    # benchmarks/results/mcu_adaptation.md has the figures). The M0+ build, whose rolled loops and sample
    # conversion no host build compiles, adapts exactly as the Python reference over a stream with an attack burst
    # and NaN, inf and huge samples. Fitted on the demo's device (8 attack-free camera days, seed 7), as the MCU
    # benchmark measures it: the constants' widths follow the data (input offsets take 16 or 32 bits), so the size
    # does too, by up to about 200 B on M0+ (issue 14's note has the figures on other data)
    series = simulate("camera", 8.0, "none", seed=7)
    pipe = Pipeline(make_detector(DEFAULT_FAMILY), window=128, stride=64).fit(series)
    program = quantize_pipeline(pipe, series)
    assert program.adaptation is not None
    write_c(program, tmp_path, adaptation=Adaptation())
    assert "level > TW_AD_WATCH" in (tmp_path / "tinywarden_model.c").read_text()  # the default's watch is in
    for core in ("cortex-m4", "cortex-m4f", "cortex-m0plus"):
        size = module_size(tmp_path, core)
        assert size.flash <= 8192 and size.ram_with_state <= 4096, (
            core, size.flash, size.ram_with_state, sorted(size.symbols.items(), key=lambda kv: -kv[1])[:8])
    x = series.values[-1600:].copy()  # the device's own rows, with the burst and bad samples of sample_stream
    x[900:1150, 1] += np.random.default_rng(13).normal(scale=8.0 * x[:, 1].std(), size=250)
    x[300, 2], x[301, 3], x[302, 4] = np.nan, np.inf, -1e30
    x = x.astype(np.float32)
    dev = Int8Stream(program, Adaptation())
    outs = [o for v in x if (o := dev.push(v)) is not None]
    assert dev.adapter is not None and 0 < dev.adapter.adapted < len(outs)  # both branches of the gate run
    m0 = run_on_qemu(tmp_path, x, target="cortex-m0plus", timeout=120)
    assert m0.decisions.score.tolist() == [int(o[0]) for o in outs]
    assert m0.decisions.anomaly.tolist() == [int(o[1]) for o in outs]
    assert 0 < sum(int(o[1]) for o in outs) < len(outs)


#: The Cortex-M budget of issue 14 item 3 (flash: the module alone; RAM: static + state + the worst-case stack).
BUDGET_FLASH, BUDGET_RAM = 8192, 4096


def _adapting_default(profile: str, out: Path) -> dict[str, tuple[int, int, int]]:
    """The default pipeline fitted on ``profile``'s first 8 attack-free simulated days (seed 7), written as C with
    the baseline adaptation at its defaults; per core (flash, static RAM + state, worst-case stack)."""
    from tinywarden.target import stack_usage

    series = simulate(profile, 8.0, "none", seed=7)
    program = quantize_pipeline(Pipeline(make_detector(DEFAULT_FAMILY), window=128, stride=64).fit(series), series)
    assert program.adaptation is not None
    write_c(program, out, adaptation=Adaptation())
    sizes = {}
    for core in ("cortex-m4", "cortex-m4f", "cortex-m0plus"):
        size = module_size(out, core)
        sizes[core] = (size.flash, size.ram_with_state, stack_usage(out, core).deepest)
    return sizes


@pytest.fixture(scope="module")
def adapting_default(tmp_path_factory: pytest.TempPathFactory):
    """:func:`_adapting_default` built once per profile for this module's tests: (its folder, its sizes)."""
    built: dict[str, tuple[Path, dict[str, tuple[int, int, int]]]] = {}

    def build(profile: str) -> tuple[Path, dict[str, tuple[int, int, int]]]:
        if profile not in built:
            out = tmp_path_factory.mktemp(f"adapting-{profile}")
            built[profile] = (out, _adapting_default(profile, out))
        return built[profile]

    return build


@pytest.mark.parametrize("profile", ["valve", "thermostat"])
def test_nine_channel_adapting_default_keeps_no_feature_scratch_and_its_z_multipliers_in_16_bits(
        profile: str, adapting_default) -> None:
    # issue 14 item 3: on the 9-channel profiles (99 adapted inputs) the adapting default was 8,434-8,442 B of flash on
    # M4 (9,070 B on M0+) and 5,104 B of static RAM + state (+ 308-420 B of stack): the window's int64 features
    # (792 B) were kept for the adaptation's update, and its z multipliers took int32. The adaptation now computes
    # each channel's features again where it reads them (tinywarden.codegen.c.channel_features) and stores the z
    # multipliers' 16 significant bits (tinywarden.kernels.adapt_q.zmul_pair), their fractional bits and z shifts
    # sharing a byte (tw_adapt_fz): 4,312 B of state, 8,169-8,189 B of flash on M4/M4F (within 8 KB) and 8,585 B on
    # M0+. RAM with the stack and M0+ flash are still over the budget: see the xfail test below.
    # Since then the state is 13 bytes per input, not 20 (the test below).
    out, sizes = adapting_default(profile)
    text = (out / "tinywarden_model.c").read_text()
    assert "t_features[" not in (out / "tinywarden_model.h").read_text()
    assert "static const int16_t tw_adapt_zmul[" in text and "static const uint8_t tw_adapt_fz[" in text
    for core, (flash, ram, stack) in sizes.items():
        assert ram <= 3616 and flash <= (8192 if core != "cortex-m0plus" else 8640), (core, flash, ram, stack)


@pytest.mark.parametrize("profile", ["valve", "thermostat"])
def test_nine_channel_adapting_default_fits_4kb_of_ram_with_its_stack_and_13_bytes_an_input(
        profile: str, adapting_default) -> None:
    # issue 14 item 3, RAM: the per-input adapted state was int32 mu, var, smu, wmu + uint16 g, svar (20 B x 99 = 1,980
    # B; static RAM + state + stack 4,716-4,748 B). Now the three means are 24-bit fields (tinywarden.kernels.adapt_q.
    # MEAN_BITS) whose low bytes hold the shadow's variance and the low byte of the adapted scale, the scale is one
    # uint16 sd whose variance and gain are computed (SD_BITS: no var, no g): 13 B an input, within 4 KB with the
    # worst-case stack on every core, and M4/M4F flash still within 8 KB
    out, sizes = adapting_default(profile)
    h = (out / "tinywarden_model.h").read_text()
    assert "uint8_t sdh[99];" in h and "uint16_t g;" not in h and "int32_t var;" not in h
    for core, (flash, ram, stack) in sizes.items():
        assert ram + stack <= BUDGET_RAM, (core, flash, ram, stack)
        assert core == "cortex-m0plus" or flash <= BUDGET_FLASH, (core, flash, ram, stack)


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="issue 14 item 3 not met yet on the 9-channel profiles: RAM with the stack is within 4 KB on "
                          "every core (4,020-4,052 B) and flash within 8 KB on M4/M4F, but M0+ flash is 8,623 B "
                          "(431 B over); benchmarks/results/mcu_adaptation.md")
@pytest.mark.parametrize("profile", ["valve", "thermostat"])
def test_adapting_default_fits_8kb_flash_and_4kb_ram_with_its_stack_on_the_nine_channel_profiles(
        profile: str, adapting_default) -> None:
    # the goal itself (issue 14 item 3), on every core: flash within 8 KB and static RAM + state + worst-case stack
    # within 4 KB; the 6-channel camera meets it (the test above this file's last two)
    _, sizes = adapting_default(profile)
    over = {core: (flash, ram + stack) for core, (flash, ram, stack) in sizes.items()
            if flash > BUDGET_FLASH or ram + stack > BUDGET_RAM}
    assert not over, over

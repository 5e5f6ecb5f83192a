"""The real-target harness itself, against small hand-written C modules with tinywarden's API.

The generated module is exercised in tests/test_target_model.py; here each module is built so that the
right answer is known in advance (sizes of its tables, instructions it executes, a fault it raises).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinywarden.target import (
    BuildError,
    TargetRunError,
    ToolMissingError,
    firmware_flash,
    missing_tools,
    module_size,
    run_on_host,
    run_on_qemu,
)
from tinywarden.target.qemu import parse_decisions, run_inference
from tinywarden.target.toolchain import find_tool

MISSING = missing_tools()
needs_tools = pytest.mark.skipif(bool(MISSING), reason="; ".join(MISSING))

HEADER = """#ifndef TINYWARDEN_MODEL_H
#define TINYWARDEN_MODEL_H
#include <stdint.h>
#define TW_N_CHANNELS 3
#define TW_WINDOW 8
#define TW_STRIDE 4
typedef struct { int8_t flag; int32_t sum; int32_t n; } tw_state_t;
#define TW_STATE_BYTES ((int)sizeof(tw_state_t))
typedef struct { int32_t score; uint8_t anomaly; } tw_result_t;
void tw_init(tw_state_t *s);
int tw_push(tw_state_t *s, const float sample[TW_N_CHANNELS], tw_result_t *out);
#endif
"""

# Score = running sum of the samples rounded to 1/16; a window closes every TW_STRIDE samples once
# TW_WINDOW have arrived. NOPS nops per push make the instruction count controllable.
MODULE = """#include "tinywarden_model.h"
static const int8_t tw_table[300] = {1, 2, 3};
static uint8_t tw_scratch[100];
void tw_init(tw_state_t *s) { s->flag = 0; s->sum = 0; s->n = 0; }
int tw_push(tw_state_t *s, const float sample[TW_N_CHANNELS], tw_result_t *out) {
    __asm__ volatile(".rept %c0\\n nop\\n .endr" :: "i"(NOPS));
    for (int c = 0; c < TW_N_CHANNELS; c++) {
        s->sum += (int32_t)(sample[c] * 16.0f) + tw_table[(s->n + c) % 3];
    }
    tw_scratch[s->n % 100] = (uint8_t)s->sum;
    s->n++;
    BODY
    if (s->n < TW_WINDOW || (s->n - TW_WINDOW) % TW_STRIDE != 0) return 0;
    out->score = s->sum + tw_scratch[0];
    out->anomaly = (uint8_t)(s->sum > 40);
    return 1;
}
"""


def write_module(d: Path, nops: int = 0, body: str = "") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "tinywarden_model.h").write_text(HEADER)
    (d / "tinywarden_model.c").write_text(MODULE.replace("NOPS", str(nops)).replace("BODY", body))
    return d


def stream(n: int = 60, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=2.0, size=(n, 3))


def test_missing_tool_names_its_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ToolMissingError, match="gcc-arm-none-eabi"):
        find_tool("arm-none-eabi-gcc")
    with pytest.raises(ToolMissingError, match="apt-get install -y qemu-system-arm"):
        find_tool("qemu-system-arm")
    assert any("binutils-arm-none-eabi" in m for m in missing_tools(("arm-none-eabi-size",)))


@needs_tools
@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m0plus"])
def test_module_size_counts_tables_buffers_and_state(tmp_path: Path, target: str) -> None:
    size = module_size(write_module(tmp_path), target)
    assert size.symbols["tw_table"] == 300
    assert size.symbols["tw_scratch"] == 100
    assert size.text >= 300 + size.symbols["tw_push"]
    assert size.bss == 100 and size.data == 0
    assert size.flash == size.text and size.static_ram == 100
    assert size.state_bytes == 12  # int8 padded to 4, then two int32: the target's layout
    assert size.ram_with_state == 112
    assert "__aeabi_fmul" in size.undefined  # soft-float helpers come from libgcc, not the module


@needs_tools
def test_firmware_link_keeps_only_what_the_entry_points_reach(tmp_path: Path) -> None:
    # an entry point the firmware does not call, and the table only it reads, cost nothing once --gc-sections links
    d = write_module(tmp_path)
    extra = ('\nstatic const int8_t tw_unused_table[500] = {5};\n'
             'int tw_unused_entry(int i) { return tw_unused_table[i % 500]; }\n')
    (d / "tinywarden_model.c").write_text((d / "tinywarden_model.c").read_text() + extra)
    whole = module_size(d).flash
    linked = firmware_flash(d)
    assert whole - linked >= 500  # the table and the function
    assert firmware_flash(d, entries=("tw_init", "tw_push", "tw_unused_entry")) == whole


@needs_tools
def test_cortex_m0plus_code_differs_from_m4(tmp_path: Path) -> None:
    d = write_module(tmp_path)
    # Thumb-1 only (M0+) has no hardware divide: the modulo needs a libgcc helper there, not on the M4.
    assert "__aeabi_idivmod" in module_size(d, "cortex-m0plus").undefined
    assert "__aeabi_idivmod" not in module_size(d, "cortex-m4").undefined


@needs_tools
def test_emulated_m4_decisions_equal_host(tmp_path: Path) -> None:
    d = write_module(tmp_path)
    x = stream(60)
    target = run_on_qemu(d, x, timeout=30)
    host = run_on_host(d, x)
    assert len(target.decisions) == 1 + (60 - 8) // 4
    assert target.decisions.end_index.tolist() == list(range(7, 60, 4))
    assert target.decisions.differences(host.decisions) == []
    # The Python model of the same module agrees too, so the comparison is not vacuous.
    sums = np.cumsum([(np.trunc(x[i].astype(np.float32) * np.float32(16)).astype(np.int64)).sum()
                      + sum((1, 2, 3)[(i + c) % 3] for c in range(3)) for i in range(60)])
    assert target.decisions.anomaly.tolist() == [int(sums[i] > 40) for i in range(7, 60, 4)]
    assert target.image_bytes > 60 * 3 * 4


@needs_tools
def test_host_and_target_differ_when_the_stream_differs(tmp_path: Path) -> None:
    d = write_module(tmp_path)
    a = run_on_qemu(d, stream(40, seed=1), timeout=30).decisions
    b = run_on_host(d, stream(40, seed=2)).decisions
    assert a.differences(b)


@needs_tools
def test_instruction_count_is_exact(tmp_path: Path) -> None:
    x = stream(24)
    base = run_on_qemu(write_module(tmp_path / "a", nops=5), x, count=True, timeout=30).instructions
    more = run_on_qemu(write_module(tmp_path / "b", nops=45), x, count=True, timeout=30).instructions
    assert base is not None and more is not None
    assert len(base.per_push) == 24
    # 40 extra nops per push, nothing else changed: exactly 40 more instructions in every push.
    assert (more.per_push - base.per_push).tolist() == [40] * 24
    assert more.per_window.tolist() == (base.per_window + 40 * np.array([8, 4, 4, 4, 4])).tolist()
    assert more.steady_per_window == base.steady_per_window + 160
    # Repeatable: a second run counts the same.
    again = run_on_qemu(tmp_path / "a", x, count=True, timeout=30).instructions
    assert again is not None and again.per_push.tolist() == base.per_push.tolist()


@needs_tools
def test_fault_on_target_is_reported(tmp_path: Path) -> None:
    body = "if (s->n == 5) { void (*bad)(void) = (void (*)(void))0xFFFFFFF0u; bad(); }"
    with pytest.raises(TargetRunError, match="HardFault"):
        run_on_qemu(write_module(tmp_path, body=body), stream(20), timeout=30)


@needs_tools
def test_hanging_target_times_out(tmp_path: Path) -> None:
    body = "if (s->n == 5) { for (;;) { __asm__ volatile(\"\"); } }"
    with pytest.raises(TargetRunError, match="did not finish within 2 s"):
        run_on_qemu(write_module(tmp_path, body=body), stream(20), timeout=2)


@needs_tools
def test_channel_mismatch_is_a_build_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="different number of channels"):
        run_on_host(write_module(tmp_path), np.zeros((20, 4)))


def test_missing_module_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="tinywarden_model.c: not found"):
        module_size(tmp_path)


def test_truncated_output_is_rejected() -> None:
    assert len(parse_decisions("w 7 12 0\nw 11 50 1\nend 2\n", "t")) == 2
    with pytest.raises(TargetRunError, match="ended early"):
        parse_decisions("w 7 12 0\nw 11 50 1\n", "t")
    with pytest.raises(TargetRunError, match="unexpected output"):
        parse_decisions("w 7 x 0\nend 1\n", "t")


INFER_H = """#define TW_INFER_IN 4
#define TW_INFER_OUT 2
void tw_infer(const float *in, float *out);
"""
INFER_C = """#include "tw_infer.h"
void tw_infer(const float *in, float *out) {
    out[0] = in[0] * in[1] + in[2];
    out[1] = in[3] / 3.0f;
}
"""


@needs_tools
def test_inference_harness_on_soft_and_hard_float_cores(tmp_path: Path) -> None:
    (tmp_path / "tw_infer.h").write_text(INFER_H)
    (tmp_path / "infer.c").write_text(INFER_C)
    x = np.random.default_rng(3).normal(size=(10, 4)).astype(np.float32)
    want = np.stack([x[:, 0] * x[:, 1] + x[:, 2], x[:, 3] / np.float32(3.0)], axis=1)
    src = [tmp_path / "infer.c"]
    soft = run_inference(src, [tmp_path], x, target="cortex-m4", count=True, timeout=30)
    hard = run_inference(src, [tmp_path], x, target="cortex-m4f", count=True, timeout=30)
    host = run_inference(src, [tmp_path], x, target=None, repeats=10)
    for run in (soft, hard, host):
        assert run.outputs.tobytes() == want.tobytes()  # bit-exact IEEE single precision everywhere
    assert soft.per_call is not None and hard.per_call is not None and len(soft.per_call) == 10
    # Hardware floating point (the FPU startup.c enables) needs far fewer instructions than libgcc's
    # soft-float routines.
    assert hard.per_call.max() * 3 < soft.per_call.min()
    assert host.ns_per_call is not None and host.ns_per_call > 0

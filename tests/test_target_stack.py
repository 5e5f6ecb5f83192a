"""The worst-case stack of the generated module's entry points, read from GCC's call graph
(tinywarden.target.stack): the parser on hand-written graphs, then the real cross-compiled module."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tinywarden.adapt import Adaptation
from tinywarden.codegen.c import write_c
from tinywarden.detectors import DEFAULT_FAMILY, make_detector
from tinywarden.errors import TinywardenError
from tinywarden.pipeline import Pipeline
from tinywarden.quantize.ptq import quantize_pipeline
from tinywarden.simulate import simulate
from tinywarden.target import missing_tools
from tinywarden.target.stack import parse_callgraph, parse_disassembly, stack_usage

MISSING = missing_tools()


def node(title: str, frame: int | None, kind: str = "static") -> str:
    label = f"{title.rsplit(':', 1)[-1]}\\nm.c:1:1" + ("" if frame is None else f"\\n{frame} bytes ({kind})")
    return f'node: {{ title: "{title}" label: "{label}" }}\n'


def edge(src: str, dst: str) -> str:
    return f'edge: {{ sourcename: "{src}" targetname: "{dst}" label: "m.c:2:2" }}\n'


def test_the_worst_case_is_the_deepest_chain_of_frames_and_calls_out_are_named_not_counted():
    graph = ("graph: { title: \"m.c\"\n" + node("tw_push", 16) + node("m.c:tw_step", 288) + node("m.c:tw_isqrt", 16)
             + node("m.c:tw_small", 8) + node("tw_init", 8) + node("memset", None) + node("__aeabi_uidiv", None)
             + edge("tw_push", "m.c:tw_step") + edge("tw_push", "m.c:tw_small") + edge("m.c:tw_step", "m.c:tw_isqrt")
             + edge("m.c:tw_step", "memset") + edge("m.c:tw_small", "__aeabi_uidiv") + edge("tw_init", "memset") + "}")
    worst, path, external = parse_callgraph(graph, "m.c")
    assert worst == {"tw_push": 16 + 288 + 16, "tw_init": 8}  # tw_push_q and tw_push_fixed are not defined here
    assert path["tw_push"] == ("tw_push", "tw_step", "tw_isqrt") and path["tw_init"] == ("tw_init",)
    assert external == ("__aeabi_uidiv", "memset")


DISASSEMBLY = """
00001000 <lib_entry>:
    1000:\tpush\t{r4, r5, r6, r7, lr}
    1002:\tsub\tsp, #16
    1004:\tbl\t1100 <lib_leaf>
    1008:\tbeq.n\t1010 <lib_entry+0x10>
    100a:\tb.w\t1200 <lib_tail>
    1010:\tpop\t{r4, r5, r6, r7, pc}

00001100 <lib_leaf>:
    1100:\tstr.w\tr4, [sp, #-8]!
    1104:\tvpush\t{d8-d9}
    1108:\tnop\t\t@ (mov r8, r8)

00001200 <lib_tail>:
    1200:\tstmdb\tsp!, {r4, lr}
    1204:\tldmia.w\tsp!, {r4, pc}

00001300 <lib_indirect>:
    1300:\tpush\t{lr}
    1302:\tblx\tr3
    1304:\tpop\t{pc}

00001400 <lib_moves_sp>:
    1400:\tmov\tsp, r7
    1402:\tbx\tlr

00001500 <lib_loop_a>:
    1500:\tb.n\t1600 <lib_loop_b>

00001600 <lib_loop_b>:
    1600:\tb.n\t1500 <lib_loop_a>
"""


def test_library_routines_are_bounded_from_their_disassembly_or_left_out():
    names = ["lib_entry", "lib_leaf", "lib_tail", "lib_indirect", "lib_moves_sp", "lib_loop_a", "absent"]
    symbols = {n: 0x1000 + 0x100 * i for i, n in enumerate(names)}
    symbols["alias"] = 0x1100  # a second name of lib_leaf (libgcc's __aeabi_uidiv is __udivsi3)
    found = parse_disassembly(DISASSEMBLY, symbols)
    # lib_leaf lowers by 8 + 16 and falls through its padding into lib_tail (8): a bound, not the least one
    assert found["lib_leaf"] == (8 + 16 + 8, ("lib_leaf", "lib_tail"))
    assert found["alias"] == (32, ("alias", "lib_tail"))
    assert found["lib_tail"] == (8, ("lib_tail",))
    assert found["lib_entry"] == (20 + 16 + 32, ("lib_entry", "lib_leaf", "lib_tail"))
    assert set(found) == {"lib_entry", "lib_leaf", "alias", "lib_tail"}  # indirect call, mov sp, loop, absent


def test_a_library_routines_worst_case_adds_to_its_callers_chain():
    graph = (node("tw_push", 16) + node("m.c:tw_step", 288) + node("memset", None) + node("__aeabi_lmul", None)
             + edge("tw_push", "m.c:tw_step") + edge("m.c:tw_step", "memset") + edge("tw_push", "__aeabi_lmul"))
    asked: list[tuple[str, ...]] = []

    def library(names: tuple[str, ...]) -> dict[str, tuple[int, tuple[str, ...]]]:
        asked.append(names)
        return {"memset": (20, ("memset",))}

    worst, path, external = parse_callgraph(graph, "m.c", library=library)
    assert asked == [("__aeabi_lmul", "memset")]  # once, with every external function
    assert worst["tw_push"] == 16 + 288 + 20 and path["tw_push"] == ("tw_push", "tw_step", "memset")
    assert external == ("__aeabi_lmul", "memset")


@pytest.mark.parametrize("graph, message", [
    (node("tw_push", 16) + node("m.c:a", 8) + node("m.c:b", 8) + edge("tw_push", "m.c:a") + edge("m.c:a", "m.c:b")
     + edge("m.c:b", "m.c:a"), "recursion through a"),
    (node("tw_push", 16) + node("m.c:vla", 40, "dynamic") + edge("tw_push", "m.c:vla"), "vla has a stack frame of "
     "dynamic size"),
])
def test_a_stack_without_a_static_bound_is_refused_with_the_reason(graph, message):
    with pytest.raises(TinywardenError, match=message):
        parse_callgraph(graph, "m.c")


@pytest.mark.skipif(bool(MISSING) or shutil.which("gcc") is None, reason="; ".join(MISSING) or "no gcc")
def test_the_projections_stack_is_the_modules_own_axes_not_the_kernels_limit(tmp_path: Path):
    # the whole-input PCA kernel (the adapting default's) kept room for 64 axes (256 B) on the stack whatever the
    # model; it now keeps the module's own (16 here): 192 B less on every core, the same integers
    series = simulate("camera", 8.0, "none", seed=7)
    program = quantize_pipeline(Pipeline(make_detector(DEFAULT_FAMILY), window=128, stride=64).fit(series), series)
    k = max(int(op.consts["weights"].shape[0]) for op in program.ops if op.kind == "pca_residual_s16")
    write_c(program, tmp_path / "own", adaptation=Adaptation())
    src = (tmp_path / "own" / "tinywarden_model.c").read_text()
    assert re.search(rf"#define TW_PCA_AXES {k}\b", src) and "int32_t acc[TW_PCA_AXES];" in src
    wide = tmp_path / "wide"
    shutil.copytree(tmp_path / "own", wide)
    (wide / "tinywarden_model.c").write_text(re.sub(r"#define TW_PCA_AXES \d+", "#define TW_PCA_AXES 64", src))
    state = int(re.search(r"#define TW_STATE_BYTES (\d+)", (tmp_path / "own" / "tinywarden_model.h").read_text())[1])
    for core in ("cortex-m4", "cortex-m0plus"):
        own, kernel_limit = stack_usage(tmp_path / "own", core), stack_usage(wide, core)
        assert own.path["tw_push"][0] == "tw_push" and "tw_step" in own.path["tw_push"]
        assert own.deepest_path == own.path[max(own.worst, key=own.worst.__getitem__)]
        assert any(f.startswith("tw_pca_residual_s16") for f in kernel_limit.deepest_path)
        assert kernel_limit.deepest > own.deepest, (core, own.worst, kernel_limit.worst)
        if any(f.startswith("tw_pca_residual_s16") for f in own.deepest_path):
            assert kernel_limit.deepest - own.deepest >= 4 * (64 - k), (core, own.worst, kernel_limit.worst)
        # else (Cortex-M0+ since the adaptation computes each channel's features where it reads them) the deepest
        # chain is the features', and the projection's 4 * k bytes sit under it
        assert own.deepest + state <= 4096  # the adapting default's state with its stack on top fits 4 KB


@pytest.mark.skipif(bool(MISSING), reason="; ".join(MISSING))
def test_the_library_routines_the_module_calls_are_counted_on_every_core(tmp_path: Path):
    # memset, and on Cortex-M0+ libgcc's 64-bit helpers, were named and not counted: the M0+ default's worst case
    # ran through __aeabi_lmul's 28 bytes without them
    series = simulate("camera", 8.0, "none", seed=7)
    program = quantize_pipeline(Pipeline(make_detector(DEFAULT_FAMILY), window=128, stride=64).fit(series), series)
    write_c(program, tmp_path, adaptation=Adaptation())
    for core in ("cortex-m4", "cortex-m0plus"):
        st = stack_usage(tmp_path, core)
        assert st.external and st.uncounted == (), (core, st)
        reached = {name for chain in st.path.values() for name in chain} & set(st.external)
        assert reached, (core, st.path)  # some entry point's deepest chain ends in a library routine


@pytest.mark.skipif(bool(MISSING), reason="; ".join(MISSING))
def test_the_nearest_distances_stack_is_the_modules_own_k_not_the_kernels_limit(tmp_path: Path):
    # knn kept 64 int64 nearest distances (512 B) on the stack whatever its k: 808 B on Cortex-M4, the deepest of
    # every family in mcu.md; it now keeps its own clamped k
    from tinywarden.kernels.knn_dist_s16 import KNN_MAX_K

    series = simulate("camera", 3.0, "none", seed=7)
    program = quantize_pipeline(Pipeline(make_detector("knn"), window=128, stride=64).fit(series), series)
    (op,) = [op for op in program.ops if op.kind == "knn_dist_s16"]
    k = max(1, min(int(op.attrs["k"]), len(op.consts["prototypes"]), KNN_MAX_K))
    assert k < KNN_MAX_K
    write_c(program, tmp_path / "own")
    src = (tmp_path / "own" / "tinywarden_model.c").read_text()
    assert re.search(rf"#define TW_KNN_K {k}\b", src) and "int64_t nearest[TW_KNN_K];" in src
    wide = tmp_path / "wide"
    shutil.copytree(tmp_path / "own", wide)
    (wide / "tinywarden_model.c").write_text(re.sub(r"#define TW_KNN_K \d+", f"#define TW_KNN_K {KNN_MAX_K}", src))
    own, kernel_limit = stack_usage(tmp_path / "own", "cortex-m4"), stack_usage(wide, "cortex-m4")
    assert kernel_limit.deepest - own.deepest >= 8 * (KNN_MAX_K - k), (own.worst, kernel_limit.worst)

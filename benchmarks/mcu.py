"""Microcontroller footprint and cost of the default demo pipeline, against the peers a firmware team
would otherwise pick, and of every detector family and the tuned pipeline beside it. One command:

    python benchmarks/mcu.py            # table on the terminal + benchmarks/results/mcu.md
    python benchmarks/mcu.py --json     # the same figures as JSON on stdout

The pipeline is the demo's: simulated ``camera`` device (6 channels), default dense autoencoder,
window 128, stride 64, trained on the first attack-free days and quantized to the int8 program.

Measured here, in this run:

* tinywarden: the generated C module alone cross-compiled with ``arm-none-eabi-gcc -Os`` for Cortex-M4
  (soft float, as ``-mcpu=cortex-m4 -mthumb`` builds), Cortex-M4F (hard float) and Cortex-M0+: flash =
  text + data, static RAM = data + bss, plus the caller-owned ``tw_state_t``; its decisions on an
  emulated Cortex-M4 (QEMU mps2-an386) compared with the Python int8 reference; exact instructions per
  window on M4, M4F and M0+ from QEMU's per-instruction trace (the M0+ build runs on the M4 board); an
  energy estimate per window from those counts and a cited run-mode figure of a named low-power part
  (:data:`ENERGY_PART`), beside MLPerf Tiny's anomaly-detection reference; host C nanoseconds per window.
* emlearn (pip): the same float autoencoder (its weights copied into a scikit-learn ``MLPRegressor``) as
  emlearn C, sized and counted the same way. emlearn has no window features, so it is the model only.
* TensorFlow Lite Micro: the exported ``.tflite`` run by the ``tflite-micro`` package's interpreter on
  the host (per ``invoke``, model only) and its arena as that interpreter records it (64-bit host
  pointers: larger than on a Cortex-M). TFLM cannot be cross-built here (no sources in the wheel), so its
  flash overhead comes from published figures, cited in the output.

Second table, same run: every detector family in :data:`tinywarden.detectors.REGISTRY` at its default
parameters in the demo's pipeline (window 128, stride 64, default features), and the pipeline
:func:`tinywarden.tune.tune` chooses for an 8 KB flash / 4 KB RAM budget, all fitted on the same camera
training days. Each goes through the same measurement as the default pipeline (generated C sized for
Cortex-M4, decisions on QEMU compared with the Python int8 reference, exact instructions per window), plus
the window ROC AUC of its int8 program on the held-out attack days, so quality sits beside cost.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from tinywarden.adapt import Adaptation
from tinywarden.codegen.c import write_c
from tinywarden.codegen.tflite import dense_int8, to_tflite_bytes
from tinywarden.detectors import DEFAULT_FAMILY, REGISTRY, make_detector
from tinywarden.errors import TinywardenError
from tinywarden.evaluate.metrics import window_labels
from tinywarden.features import batch_features
from tinywarden.pipeline import Pipeline
from tinywarden.program import Int8Stream, Program, adaptation_params, run_int8
from tinywarden.quantize.ptq import quantize_pipeline, score_int8
from tinywarden.simulate import simulate
from tinywarden.target import (
    FIRMWARE_ENTRIES,
    Decisions,
    firmware_flash,
    get_target,
    missing_tools,
    module_size,
    object_size,
    run_inference,
    run_on_host,
    run_on_qemu,
)
from tinywarden.target.build import compile_object, model_source
from tinywarden.target.stack import STACK_ENTRIES, stack_usage
from tinywarden.target.toolchain import find_tool, run_tool
from tinywarden.telemetry.series import Series
from tinywarden.tune import Budget, tune

RESULTS = Path(__file__).resolve().parent / "results" / "mcu.md"
ADAPTATION_RESULTS = RESULTS.with_name("mcu_adaptation.md")
TARGETS = {"flash_bytes": 8192, "static_ram_bytes": 4096, "int8_model_bytes": 2048}
#: Issue 16's goals for the default pipeline on Cortex-M4 (flash, RAM with the state, instructions per window).
GOALS = {"flash_bytes": 6144, "static_ram_bytes": 1536, "instructions_per_window": 50000}
FIRMWARE_NOTE = (
    "Flash two ways: *module alone* is text + data of the `-Os` object with every public entry point (tw_push, "
    "tw_push_q, tw_push_fixed, tw_quantize_*, the size queries, tw_confidence); *firmware link* is what a firmware "
    "build keeps of it: compiled with `-ffunction-sections -fdata-sections` and linked with `--gc-sections` from "
    f"the entry points of a firmware that pushes float samples ({', '.join(FIRMWARE_ENTRIES)}; "
    "`tinywarden.target.firmware_flash`), so the entry points it does not call cost nothing, as in its map file.")
CORES = ("cortex-m4", "cortex-m4f", "cortex-m0plus")
#: The family of the full benchmark's model: the dense autoencoder, the one TFLite Micro, LiteRT and emlearn also
#: run, so the peers' rows are the same model. It was the default pipeline's family until results/default_family.md
#: chose gaussian; the single-figure modes (--adaptation-only, --likelihood-only) measure the default's.
PEER_FAMILY = "dense_ae"
#: Published TFLite Micro footprints (it cannot be cross-compiled here), quoted, with their sources.
TFLM_PUBLISHED = [
    ("TFLM core runtime: 'just fits in 16 KB on an Arm Cortex M3'",
     "TensorFlow Lite for Microcontrollers overview, tensorflow.org/lite/microcontrollers (2019-2023)", 16384),
    ("designed to work with 'as little as 20 KB of flash and 4 KB of SRAM'",
     "P. Warden, D. Situnayake, TinyML (O'Reilly, 2019), ch. 17", 20480),
]


#: The cores whose instructions per window are counted (QEMU runs the M0+ build on the M4 board: ARMv6-M code
#: is a subset of ARMv7-M, so the count is the M0+ program's; see embedded/targets.toml).
COUNT_CORES = ("cortex-m4", "cortex-m4f", "cortex-m0plus")
#: The low-power part the energy estimate is for, and its vendor's run-mode figure. Energy per window =
#: instructions x CPI x (uA/MHz) x V, i.e. pJ = instructions * CPI * uA_per_MHz * V; CPI 1 is a floor (flash
#: wait states and multi-cycle loads add cycles), so the estimate is a lower bound of the core's energy.
ENERGY_PART = {
    "part": "STMicroelectronics STM32L476 (Cortex-M4F, 80 MHz, run mode from flash, range 1)",
    "ua_per_mhz": 120.0,
    "volts": 3.0,
    "mhz": 80.0,
    "cpi": 1.0,
    "source": "STMicroelectronics, STM32L4 power controller (PWR) presentation for STM32L47x/48x: "
              "'Run mode can support a system clock running at up to 80 MHz, with only 120 uA/MHz' "
              "(100 uA/MHz at 26 MHz); typical supply VDD = 3.0 V as in the STM32L4 datasheets",
}
#: MLPerf Tiny's anomaly-detection reference (ToyADMOS, dense autoencoder) on TFLite Micro, Cortex-M4.
MLPERF_TINY_AD = {
    "ms": 10.0,
    "uj": 416.0,
    "what": "MLPerf Tiny anomaly detection (ToyADMOS, FC autoencoder 640-128-...-640), TFLite Micro reference "
            "on a Cortex-M4",
    "source": "MLPerf Tiny v0.5 reference submission (Banbury et al., 'MLPerf Tiny Benchmark', NeurIPS 2021 "
              "Datasets and Benchmarks track): about 10 ms and 416 uJ per inference, as quoted in issue 16",
}


def provenance(argv: Sequence[str]) -> str:
    """The line under each results title: the exact command, the commit, when, and how loaded the machine was (host
    times vary with it; sizes and instruction counts do not)."""
    if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.common import machine_info

    m = machine_info()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"Produced by `python benchmarks/mcu.py{''.join(' ' + a for a in argv)}` at commit {m['commit']}, "
            f"{m['date']}, {m['machine']}; load average {load} when it ended.")


def energy_uj(instructions: float) -> float:
    """Energy estimate in microjoules of ``instructions`` on :data:`ENERGY_PART` (see there)."""
    e = ENERGY_PART
    return instructions * e["cpi"] * e["ua_per_mhz"] * e["volts"] * 1e-6


def time_ms(instructions: float) -> float:
    """Time in milliseconds of ``instructions`` at :data:`ENERGY_PART`'s clock and CPI."""
    return instructions * ENERGY_PART["cpi"] / (ENERGY_PART["mhz"] * 1e3)


#: The device budget the tuned row is searched for: the targets above.
TUNE_BUDGET = Budget(TARGETS["flash_bytes"], TARGETS["static_ram_bytes"])
#: Rows of the held-out stream compiled into the QEMU image to compare decisions with the Python reference.
STREAM_ROWS = 2048
#: Steady windows counted per pipeline (the first, which fills the window, is left out).
COUNTED_WINDOWS = 4


def camera_data(days: float, train_days: float, seed: int, profile: str = "camera") -> tuple[Series, int]:
    """The demo's simulated camera telemetry (or another simulator ``profile``'s, the same days and seed) and the
    row where its attack-free training days end."""
    series = simulate(profile, days, "all", seed=seed, attack_free_days=train_days)
    cut = int(np.searchsorted(series.timestamps, series.timestamps[0] + train_days * 86400.0))
    return series, cut


def default_pipeline(series: Series, cut: int, family: str = DEFAULT_FAMILY) -> tuple[Pipeline, Program]:
    """The demo's pipeline (``family``; default: the default pipeline's) fitted on the attack-free days, and its
    int8 program."""
    train = series.slice(0, cut)
    pipe = Pipeline(make_detector(family)).fit(train)
    return pipe, quantize_pipeline(pipe, train)


def int8_model_bytes(program: Any) -> dict[str, int]:
    """Bytes the device stores for the autoencoder's layers, as the program holds them (and the generated C
    declares them): int8 weights alone, and with the int32 bias, int32 multiplier and int8 shift."""
    layers = [op for op in program.ops if op.kind == "fully_connected_s8"]
    weights = sum(op.consts["weights"].nbytes for op in layers)
    per_channel = sum(op.consts[k].nbytes for op in layers for k in ("bias", "multiplier", "shift"))
    return {"weights": weights, "with_bias_and_requant": weights + per_channel}


def time_call(fn: Any, n: int) -> float:
    """Median nanoseconds of ``fn()`` over ``n`` calls (median: robust on a busy machine)."""
    samples = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t0)
    return float(np.median(samples))


@contextlib.contextmanager
def captured_stderr_fd() -> Any:
    """Capture what C++ code writes to file descriptor 2 (the TFLM allocation report)."""
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(2)
        sys.stderr.flush()
        os.dup2(tmp.fileno(), 2)
        box: dict[str, str] = {}
        try:
            yield box
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            box["text"] = tmp.read().decode(errors="replace")


def tflm_figures(tflite: bytes, x: np.ndarray) -> dict[str, Any]:
    from tflite_micro import runtime

    interp = runtime.Interpreter.from_bytes(tflite)
    interp.set_input(x[:1], 0)
    interp.invoke()
    with captured_stderr_fd() as box:
        interp.print_allocations()
    arena = None
    for line in box.get("text", "").splitlines():
        if "Arena allocation total" in line:
            arena = int(line.split("total")[1].split()[0])

    def one() -> None:
        interp.invoke()

    return {"ns_per_invoke": time_call(one, 3000), "arena_bytes_host": arena, "tflite_bytes": len(tflite)}


def litert_ns(tflite: bytes, x: np.ndarray) -> float:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=tflite,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x[:1])
    return time_call(interp.invoke, 3000)


def emlearn_figures(pipe: Pipeline, inputs: np.ndarray, work: Path) -> dict[str, Any]:
    """The float autoencoder as emlearn C: sizes on each core, instructions per inference, host time."""
    import warnings

    import emlearn
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor

    layers = pipe.detector.layers()
    d = layers[0][0].shape[1]
    mlp = MLPRegressor(hidden_layer_sizes=tuple(w.shape[0] for w, _ in layers[:-1]), activation="relu",
                       max_iter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(inputs[:8], inputs[:8])  # only to shape the estimator; the weights are replaced below
    mlp.coefs_ = [np.asarray(w, dtype=np.float64).T.copy() for w, _ in layers]
    mlp.intercepts_ = [np.asarray(b, dtype=np.float64).copy() for _, b in layers]
    emlearn.convert(mlp, method="loadable", return_type="regressor").save(file=str(work / "twae_model.h"),
                                                                         name="twae")
    (work / "tw_infer.h").write_text(f"#define TW_INFER_IN {d}\n#define TW_INFER_OUT {d}\n"
                                     "void tw_infer(const float *in, float *out);\n")
    (work / "emlearn_ae.c").write_text('#include "twae_model.h"\n#include "tw_infer.h"\n'
                                       "void tw_infer(const float *in, float *out) "
                                       "{ (void)twae_regress(in, TW_INFER_IN, out, TW_INFER_OUT); }\n")
    src, inc = [work / "emlearn_ae.c"], [work, Path(emlearn.includedir)]
    out: dict[str, Any] = {"sizes": {}, "instructions": {}}
    for core in CORES:
        s = object_size(src[0], inc, core)
        out["sizes"][core] = {"flash": s.flash, "static_ram": s.static_ram}
    few = inputs[:4]
    for core in ("cortex-m4", "cortex-m4f"):
        run = run_inference(src, inc, few, target=core, count=True)
        assert run.per_call is not None
        out["instructions"][core] = float(np.mean(run.per_call))
    host = run_inference(src, inc, inputs, target=None, repeats=2000)
    want = pipe.detector.torch_module()(__import__("torch").from_numpy(inputs.astype(np.float32))).detach().numpy()
    out["max_abs_diff_vs_float_model"] = float(np.abs(host.outputs - want).max())
    out["host_ns_per_inference"] = host.ns_per_call
    return out


def reference_check(program: Program, stream: np.ndarray, decisions: Decisions,
                    adaptation: Adaptation | None = None) -> dict[str, Any]:
    """Do the decisions the compiled module printed equal the Python int8 reference's on ``stream``
    (the adapting reference, :class:`~tinywarden.program.Int8Stream`, when the module adapts)?"""
    if adaptation is None:
        scores, anomalies = run_int8(program, stream)
    else:
        dev = Int8Stream(program, adaptation)
        outs = [o for x in stream if (o := dev.push(x)) is not None]
        scores = np.array([o[0] for o in outs], dtype=np.int32)
        anomalies = np.array([o[1] for o in outs], dtype=np.uint8)
    return {
        "windows": len(scores),
        "decisions_equal_reference": bool(np.array_equal(decisions.score, scores)
                                          and np.array_equal(decisions.anomaly, anomalies)),
        "anomalous_windows": int(anomalies.sum()),
    }


def module_figures(program: Program, work: Path, stream: np.ndarray, *, size_cores: Sequence[str] = CORES,
                   count_cores: Sequence[str] = COUNT_CORES,
                   adaptation: Adaptation | None = None) -> tuple[dict[str, Any], Decisions]:
    """Generate ``program``'s C module into ``work`` and measure it: sizes on ``size_cores``, decisions on an
    emulated Cortex-M4 over ``stream`` against the Python int8 reference, and exact instructions per
    window on ``count_cores`` over the first :data:`COUNTED_WINDOWS` steady windows of ``stream``.

    Returns the figures and the emulated core's decisions (to compare other builds of the same module with).
    """
    write_c(program, work, adaptation=adaptation)
    out: dict[str, Any] = {"sizes": {}, "instructions": {}}
    for core in size_cores:
        s = module_size(work, core)
        out["sizes"][core] = {"flash": s.flash, "text": s.text, "data": s.data, "bss": s.bss,
                              "static_ram": s.static_ram, "state": s.state_bytes,
                              "static_ram_with_state": s.ram_with_state, "libgcc": list(s.undefined),
                              "firmware_flash": firmware_flash(work, core)}
        st = stack_usage(work, core)
        out["sizes"][core].update({"stack": st.deepest, "stack_path": list(st.deepest_path),
                                   "stack_external": list(st.external)})
    target = run_on_qemu(work, stream, timeout=120)
    out["qemu_check"] = reference_check(program, stream, target.decisions, adaptation)
    counted = stream[: program.window + COUNTED_WINDOWS * program.stride]
    for core in count_cores:
        counts = run_on_qemu(work, counted, target=core, count=True, timeout=1200).instructions
        assert counts is not None
        total = int(counts.per_push.sum())
        top = {fn: round(n / total, 3) for fn, n in list(counts.by_function.items())[:6]}
        out["instructions"][core] = {"per_window": counts.steady_per_window, "max_push": counts.max_push,
                                     "windows_counted": len(counts.per_window) - 1, "by_function_share": top}
    return out, target.decisions


def flash_breakdown(model_dir: Path, core: str = "cortex-m4") -> dict[str, Any]:
    """Where the module's flash goes on ``core`` (``arm-none-eabi-nm --size-sort -S`` of the ``-Os`` object, each
    function with what the compiler inlined into it): code (.text) and constants (.rodata) in total and by symbol,
    largest first."""
    with tempfile.TemporaryDirectory(prefix="tw-nm-") as tmp:
        src = model_source(model_dir)
        obj = compile_object(src, get_target(core), Path(tmp) / "module.o", [src.parent])
        listing = run_tool([find_tool("arm-none-eabi-nm"), "--size-sort", "-S", str(obj)], "listing symbols")
    code: dict[str, int] = {}
    tables: dict[str, int] = {}
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) == 4:
            (code if parts[2] in "tT" else tables)[parts[3]] = int(parts[1], 16)
    return {"core": core, "code": sum(code.values()), "constants": sum(tables.values()),
            "functions": dict(sorted(code.items(), key=lambda kv: -kv[1])),
            "tables": dict(sorted(tables.items(), key=lambda kv: -kv[1]))}


def breakdown_md(title: str, b: dict[str, Any], top: int = 12) -> list[str]:
    """One paragraph of :func:`flash_breakdown`: totals, the largest functions and tables."""
    def items(d: dict[str, int]) -> str:
        return ", ".join(f"`{k}` {v}" for k, v in list(d.items())[:top])

    return [f"{title} ({b['core']}, `-Os`, `arm-none-eabi-nm --size-sort -S`): code {b['code']} B, constants "
            f"{b['constants']} B. Functions (each with what was inlined into it): {items(b['functions'])}. Tables: "
            f"{items(b['tables'])}."]


def likelihood_cost(program: Program, figures: dict[str, Any], work: Path, stream: np.ndarray) -> dict[str, Any]:
    """What the on-device likelihood (``tw_confidence``) adds to ``program``'s module: ``figures`` (measured
    with it) against the same program without the step, sizes and instructions per window on every core."""
    if program.likelihood is None:
        return {"present": False}
    bare, _ = module_figures(dataclasses.replace(program, likelihood=None), work, stream)
    out: dict[str, Any] = {"present": True, "sizes": {}, "instructions": {}}
    for core, v in figures["sizes"].items():
        b = bare["sizes"][core]
        out["sizes"][core] = {k: v[k] - b[k] for k in ("flash", "static_ram", "state", "static_ram_with_state")}
        out["sizes"][core]["libgcc_added"] = sorted(set(v["libgcc"]) - set(b["libgcc"]))
    for core, v in figures["instructions"].items():
        out["instructions"][core] = v["per_window"] - bare["instructions"][core]["per_window"]
    out["without"] = {"flash_m4": bare["sizes"]["cortex-m4"]["flash"],
                      "ram_m4": bare["sizes"]["cortex-m4"]["static_ram_with_state"]}
    return out


def likelihood_md(lk: dict[str, Any]) -> list[str]:
    """The likelihood's added cost, one line per core."""
    if not lk.get("present"):
        return ["", "The default program has no likelihood step (no `tw_confidence`)."]
    lines = ["", "## The calibrated likelihood on the device (`tw_confidence`)", "",
             "Added by the integer likelihood step after the score (log2 by top bit + table, running mean and "
             "variance in fixed point, integer square root, one 32-bit division, Q15 confidence table): the same "
             "program measured with and without it.", "",
             "| core | + flash B | + static RAM B | + state B | + instr./window | libgcc helpers added |",
             "|---|---:|---:|---:|---:|---|"]
    for core, v in lk["sizes"].items():
        ins = lk["instructions"].get(core)
        lines.append(f"| {core} | {v['flash']} | {v['static_ram']} | {v['state']} | {_cell(ins, '{:.0f}')} | "
                     f"{', '.join(v['libgcc_added']) or 'none'} |")
    return lines


def adaptation_cost(program: Program, figures: dict[str, Any], work: Path, stream: np.ndarray,
                    adaptation: Adaptation, count: bool = True) -> dict[str, Any]:
    """What compiling in baseline adaptation (an enabled ``[adaptation]``, :mod:`tinywarden.kernels.adapt_q`)
    adds to ``program``'s module: the module with it against ``figures`` (measured without), sizes and
    instructions per window on every core; which of the counted windows taught the baseline. ``count`` False:
    sizes, stack and the emulated decisions only (no instruction counts, no settling window)."""
    if program.adaptation is None or program.likelihood is None:
        return {"present": False}
    with_ad, _ = module_figures(program, work, stream, adaptation=adaptation,
                                count_cores=COUNT_CORES if count else ())
    out: dict[str, Any] = {"present": True, "sizes": {}, "instructions": {}, "qemu_check": with_ad["qemu_check"]}
    for core, v in with_ad["sizes"].items():
        b = figures["sizes"][core]
        out["sizes"][core] = {k: v[k] - b[k] for k in ("flash", "static_ram", "state", "static_ram_with_state")}
        out["sizes"][core]["libgcc_added"] = sorted(set(v["libgcc"]) - set(b["libgcc"]))
        out["sizes"][core]["total_flash"], out["sizes"][core]["total_ram"] = v["flash"], v["static_ram_with_state"]
        out["sizes"][core]["firmware_flash"] = (b["firmware_flash"], v["firmware_flash"])
        out["sizes"][core]["stack"] = (b["stack"], v["stack"])
    for core, v in with_ad["instructions"].items():
        out["instructions"][core] = {"added": v["per_window"] - figures["instructions"][core]["per_window"],
                                     "total": v["per_window"], "max_push": v["max_push"]}
    dev = Int8Stream(program, adaptation)
    taught, settling = [], []
    for x in stream[: program.window + COUNTED_WINDOWS * program.stride]:
        if dev.push(x) is not None and dev.adapter is not None:
            taught.append(bool(dev.adapted))
            settling.append(bool(dev.adapter.settling))
    if count:
        out["settling_window"] = settling_cost(program, work / "settling", stream, adaptation)
    out["counted_windows_adapted"] = f"{sum(taught[1:])} of {len(taught) - 1}"
    out["counted_windows_settling"] = f"{sum(settling[1:])} of {len(settling) - 1}"
    out["settle_windows"] = dev.adapter.params.settle_n if dev.adapter is not None else 0
    out["watch_drift"] = adaptation.watch_drift
    params = adaptation_params(program, adaptation)
    out["watch_distance"] = adaptation.watch_distance if params is not None and params.distance_bound else 0.0
    out["inputs"] = int(np.asarray(program.ops[int(program.adaptation.attrs["op"])].consts["offset"]).size)
    out["breakdown"] = flash_breakdown(work)
    return out


def settling_cost(program: Program, work: Path, stream: np.ndarray, adaptation: Adaptation) -> dict[str, Any]:
    """Instructions per window of the adapting module while a shift settles (its dearest window: every input's
    shadow step and the full step with the scale's square root): the same policy with a settling period of one
    window, over ``stream`` raised by 6 of its standard deviations (every window over the threshold)."""
    policy = dataclasses.replace(adaptation, settle_s=1.0)  # one window
    raised = stream + 6.0 * (stream.std(axis=0) + 1e-9)
    figures, _ = module_figures(program, work, raised, size_cores=(), adaptation=policy)
    dev = Int8Stream(program, policy)
    settling = []
    for x in raised[: program.window + COUNTED_WINDOWS * program.stride]:
        if dev.push(x) is not None and dev.adapter is not None:
            settling.append(bool(dev.adapter.settling))
    return {"instructions": {c: v["per_window"] for c, v in figures["instructions"].items()},
            "counted_windows_settling": f"{sum(settling[1:])} of {len(settling) - 1}",
            "decisions_equal_reference": figures["qemu_check"]["decisions_equal_reference"]}


def adaptation_md(ad: dict[str, Any]) -> list[str]:
    """Baseline adaptation's added cost, one line per core."""
    if not ad.get("present"):
        return ["", "The default program has no adaptation step."]
    on = ad.get("watch_drift", 0) > 0
    distance = ad.get("watch_distance", 0) > 0
    watch = (f"the slow-drift watch at {ad['watch_drift']:g} reference sd (`tinywarden.level_watch`)"
             + (f" and at {ad['watch_distance']:g} of the threshold in the model's own score" if distance else "")
             if on else "no slow-drift watch")
    watch_step = (", and on a window under the threshold the watch's level step" if on else "") + (
        "; every window the level scored by the model's own kernel (the watch's distance)" if distance else "")
    lines = ["", "## Baseline adaptation on the device (`[adaptation] enabled`)", "",
             f"Compiled in by an enabled `[adaptation]` policy at its defaults (`tinywarden.kernels.adapt_q`, "
             f"{ad['inputs']} adapted inputs; below-threshold gate, offsets only, settling after "
             f"{ad.get('settle_windows', 0)} windows over the threshold, {watch}): every window the features' "
             "requantization with the adapted offsets and multipliers (its own loop, in place of the op's kernel), "
             "and after the likelihood the shadow's mean and variance step and the settling count"
             f"{watch_step}; from a window that teaches, the "
             "mean and variance step (the variance relaxing to the reference; the adapted scale stored as one uint16 "
             "sd, its square root taken only when the variance moved), the drift and the flag; every window each "
             "input's gain is 2^27 / sd (no stored gain). The generated code carries only what the rule needs "
             "(`tinywarden.kernels.adapt_q.c_features`). The same program measured with and without it; of the "
             f"counted windows {ad['counted_windows_adapted']} taught the baseline and "
             f"{ad.get('counted_windows_settling', '?')} were settling (a settling window also learns the scale: "
             "the update's full cost). Emulated Cortex-M4 decisions equal the adapting Python reference: "
             f"{ad['qemu_check']['decisions_equal_reference']} ({ad['qemu_check']['windows']} windows).", "",
             "| core | flash B without / with (+), module alone | flash B without / with, firmware link | RAM B "
             "(static + state) without / with (+) | stack B without / with | instr./window without / with (+) | "
             "libgcc helpers added |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for core, v in ad["sizes"].items():
        ins = ad["instructions"].get(core, {})
        total, added = ins.get("total"), ins.get("added")
        instr = "-" if total is None else f"{total - added:.0f} / {total:.0f} (+{added:.0f})"
        fw = v.get("firmware_flash")
        lines.append(f"| {core} | {v['total_flash'] - v['flash']} / {v['total_flash']} (+{v['flash']}) | "
                     f"{'-' if fw is None else f'{fw[0]} / {fw[1]}'} | "
                     f"{v['total_ram'] - v['static_ram_with_state']} / {v['total_ram']} "
                     f"(+{v['static_ram_with_state']}) | {_pair(v.get('stack'))} | {instr} | "
                     f"{', '.join(v['libgcc_added']) or 'none'} |")
    limit, ram_limit = TARGETS["flash_bytes"], TARGETS["static_ram_bytes"]

    def met(n: int, bound: int = limit) -> str:
        return f"{n} B ({'met' if n <= bound else 'NOT met'})"

    goal = "; ".join(f"{core} module alone {met(v['total_flash'])}, firmware link {met(v['firmware_flash'][1])}"
                     for core, v in ad["sizes"].items() if "firmware_flash" in v)
    ram = "; ".join(f"{core} {met(v['total_ram'] + v['stack'][1], ram_limit)}" for core, v in ad["sizes"].items()
                    if v.get("stack"))
    lines += ["", FIRMWARE_NOTE, "", f"Goal (issue 14): the adapting default within {limit} B on every core: {goal}."]
    if ram:
        lines += ["", f"Its RAM with the worst-case stack on top (static + state + the deepest entry point's stack "
                      f"from GCC's call graph, `tinywarden.target.stack`, with the libc and libgcc routines it "
                      f"calls bounded from the linked code), "
                      f"against {ram_limit} B: {ram}."]
    if ad.get("breakdown"):
        lines += ["", *breakdown_md("Where the adapting module's flash goes", ad["breakdown"])]
    st = ad.get("settling_window")
    if st:
        per = ", ".join(f"{c} {n:.0f}" for c, n in st["instructions"].items())
        if str(st["counted_windows_settling"]).startswith("0 of"):
            lines += ["", "While a shift settles: **not measured** here. The same module with a settling period of "
                          "one window, over the stream raised by 6 sd, had no counted window settling (the steady-"
                          "settle rule adopts a shift only once the shadow's spread is steady, later than the "
                          f"counted windows); instructions per window over them, every window over the threshold "
                          f"and none adopted: {per} (decisions equal to the reference: "
                          f"{st['decisions_equal_reference']})."]
            return lines
        lines += ["", "While a shift settles (the dearest window: every input's shadow step and the full step with "
                      "the scale's square root; the same module with a settling period of one window, over the stream "
                      f"raised by 6 sd, {st['counted_windows_settling']} counted windows settling, decisions equal to "
                      f"the reference: {st['decisions_equal_reference']}): instructions per window {per}."]
    return lines


def window_auc(pipe: Pipeline, program: Program, series: Series, cut: int) -> float | None:
    """ROC AUC of the int8 program's window scores on the held-out days vs the window labels (a window is
    anomalous when it holds an attack row), as the demo evaluates: the whole series is streamed, windows
    ending before ``cut`` are left out. ``None`` when the held-out windows are all of one class."""
    assert series.labels is not None
    scored = score_int8(pipe, program, series)
    keep = scored.end_rows >= cut
    y = window_labels(series.labels, scored.end_rows[keep], pipe.window)
    if y.min() == y.max():
        return None
    return float(roc_auc_score(y, scored.scores[keep]))


def pipeline_row(label: str, pipe: Pipeline, program: Program, series: Series, cut: int, work: Path,
                 figures: dict[str, Any] | None = None) -> dict[str, Any]:
    """One row of the families table: ``pipe``'s int8 ``program`` measured on Cortex-M4 (or ``figures``
    already measured for it by :func:`module_figures`) with its window AUC on the held-out days."""
    if figures is None:
        stream = pipe.select_channels(series.slice(cut, len(series)))[:STREAM_ROWS]
        figures, _ = module_figures(program, work, stream)
    m4, ins = figures["sizes"]["cortex-m4"], figures["instructions"]["cortex-m4"]
    m0 = figures["sizes"].get("cortex-m0plus", {})
    return {
        "label": label, "family": pipe.detector.name, "window": pipe.window, "stride": pipe.stride,
        "model_id": program.model_id, "flash": m4["flash"], "static_ram_with_state": m4["static_ram_with_state"],
        "flash_m0plus": m0.get("flash"), "static_ram_with_state_m0plus": m0.get("static_ram_with_state"),
        "stack": m4.get("stack"), "stack_m0plus": m0.get("stack"),
        "firmware_flash": m4.get("firmware_flash"), "firmware_flash_m0plus": m0.get("firmware_flash"),
        "const_bytes": program.const_bytes, "instructions_per_window": ins["per_window"],
        "instructions_per_window_by_core": {core: v["per_window"] for core, v in figures["instructions"].items()},
        "energy_uj_per_window_m4": energy_uj(ins["per_window"]),
        "decisions_equal_reference": figures["qemu_check"]["decisions_equal_reference"],
        "windows_compared": figures["qemu_check"]["windows"],
        "window_auc": window_auc(pipe, program, series, cut),
    }


def family_names() -> list[str]:
    """The registered detector families in registration order (the brief's order, simplest first; families
    registered later come last)."""
    return list(REGISTRY)


def fit_family(family: str, train: Series) -> tuple[Pipeline, Program] | str:
    """``family`` at its default parameters in the demo's pipeline, fitted on ``train``, and its int8
    program; the quantizer's reason instead when the family has no int8 path."""
    pipe = Pipeline(make_detector(family)).fit(train)
    try:
        return pipe, quantize_pipeline(pipe, train)
    except TinywardenError as exc:
        return f"no int8 path: {exc}"


def _fitted_in(fam: str, train: Series, tmp: str) -> tuple[Pipeline, Program, Path] | dict[str, Any]:
    """``fam`` fitted on ``train`` with its own work folder under ``tmp``, or the families table's error row."""
    fitted = fit_family(fam, train)
    if isinstance(fitted, str):
        return {"label": fam, "family": fam, "error": fitted}
    work = Path(tmp) / fam
    work.mkdir()
    return (*fitted, work)


def selected_family_rows(series: Series, cut: int, families: Sequence[str]) -> list[dict[str, Any]]:
    """The families table's rows of ``families`` alone, each measured as in :func:`family_rows`, with the
    per-function share of its Cortex-M4 instructions."""
    train = series.slice(0, cut)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tw-bench-families-") as tmp:
        for fam in families:
            fitted = _fitted_in(fam, train, tmp)
            if isinstance(fitted, dict):
                rows.append(fitted)
                continue
            pipe, program, work = fitted
            stream = pipe.select_channels(series.slice(cut, len(series)))[:STREAM_ROWS]
            figures, _ = module_figures(program, work, stream)
            rows.append({**pipeline_row(fam, pipe, program, series, cut, work, figures),
                         "params": pipe.detector.get_params(),
                         "by_function_share_m4": figures["instructions"]["cortex-m4"]["by_function_share"]})
    return rows


def _pair(v: Sequence[Any] | None) -> str:
    """``a / b`` of a (without, with) pair, ``-`` when not measured."""
    return "-" if v is None else f"{v[0]} / {v[1]}"


def default_family_goals_md(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Issue 16's goals read from the default family's row of the families table (the page's own default pipeline
    is the peers' model, :data:`PEER_FAMILY`); nothing when that row is missing or failed."""
    row = next((r for r in rows if r.get("family", r.get("label")) == DEFAULT_FAMILY and not r.get("tuned")), None)
    if row is None or "error" in row:
        return []
    figures = {"flash_bytes": row["flash"], "static_ram_bytes": row["static_ram_with_state"],
               "instructions_per_window": row["instructions_per_window_by_core"]["cortex-m4"]}
    stack = (f" Its worst-case stack on top: {row['stack']} B on Cortex-M4, {row.get('stack_m0plus')} B on M0+ "
             "(the families table's stack column)." if row.get("stack") is not None else "")
    return [f"Issue 16's goals for the default family (`{DEFAULT_FAMILY}`, its row of the families table below; "
            "Cortex-M4): " + ", ".join(f"{k} {figures[k]:.0f} <= {limit}: {'met' if figures[k] <= limit else 'NOT met'}"
                                       for k, limit in GOALS.items()) + "." + stack]


def selected_rows_md(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One line per family row of :func:`selected_family_rows`."""
    out = []
    for r in rows:
        if "error" in r:
            out.append(f"{r['label']}: {r['error']}")
            continue
        ins = r["instructions_per_window_by_core"]
        share = ", ".join(f"`{fn}` {v:.0%}" for fn, v in r["by_function_share_m4"].items())
        out.append(f"{r['label']} {r['params']}: flash M4 / M0+ {r['flash']} / {r['flash_m0plus']} B (firmware link "
                   f"{r['firmware_flash']} / {r['firmware_flash_m0plus']} B), RAM "
                   f"{r['static_ram_with_state']} B, int8 constants {r['const_bytes']} B, instr./window "
                   + " / ".join(f"{c} {n:.0f}" for c, n in ins.items())
                   + f", decisions = int8 ref. {r['decisions_equal_reference']} ({r['windows_compared']} windows), "
                   f"window AUC {_cell(r['window_auc'], '{:.3f}')}; M4 share: {share}")
    return out


def family_rows(series: Series, cut: int, default: tuple[Pipeline, Program, dict[str, Any]],
                tune_seconds: float) -> dict[str, Any]:
    """The second table: every family and the tuned pipeline, measured like the default one.

    ``default`` is the default pipeline, its program and its :func:`module_figures`: its family's row
    reuses them rather than fitting and measuring the same model twice.
    """
    train = series.slice(0, cut)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tw-bench-families-") as tmp:
        for fam in family_names():
            if fam == default[0].detector.name:
                rows.append(pipeline_row(fam, default[0], default[1], series, cut, Path(tmp), default[2]))
                continue
            fitted = _fitted_in(fam, train, tmp)
            if isinstance(fitted, dict):
                rows.append(fitted)
                continue
            pipe, program, work = fitted
            rows.append(pipeline_row(fam, pipe, program, series, cut, work))
        began = time.monotonic()
        result = tune(train, TUNE_BUDGET, time_budget=tune_seconds)
        took = time.monotonic() - began
        work = Path(tmp) / "tuned"
        work.mkdir()
        row = pipeline_row(f"tuned: {result.chosen.candidate.label}", result.pipeline, result.program, series,
                           cut, work)
        rows.append({**row, "tuned": True})
    s = result.summary()
    return {"rows": rows, "tune": {
        "budget": {"flash": TUNE_BUDGET.flash, "ram": TUNE_BUDGET.ram, "target": TUNE_BUDGET.target},
        "limit": f"time_budget={tune_seconds:g} s", "stopped_early": result.stopped_early,
        "trials": s["trials"], "measured": s["measured"], "seconds": round(took, 1),
        "validation_quality": s["validation"]["quality"], "chosen": result.chosen.candidate.to_dict()}}


def measure(days: float, train_days: float, seed: int, tune_seconds: float = 170.0) -> dict[str, Any]:
    """Every figure of both tables, measured in this run."""
    series, cut = camera_data(days, train_days, seed)
    test = series.slice(cut, len(series))
    pipe, program = default_pipeline(series, cut, PEER_FAMILY)
    res: dict[str, Any] = {
        "pipeline": {"profile": "camera", "channels": len(pipe.channels_), "window": pipe.window,
                     "stride": pipe.stride, "detector": PEER_FAMILY, "hidden": list(pipe.detector.hidden),
                     "features": len(pipe.features) * len(pipe.channels_), "days": days, "train_days": train_days,
                     "seed": seed, "model_id": program.model_id},
        "int8_model_bytes": int8_model_bytes(program),
        "program_const_bytes": program.const_bytes,
    }
    stream = test.values[:STREAM_ROWS]
    with tempfile.TemporaryDirectory(prefix="tw-bench-") as tmp:
        work = Path(tmp)
        figures, decisions = module_figures(program, work, stream)
        res.update(figures)
        res["breakdown"] = flash_breakdown(work)
        res["likelihood"] = likelihood_cost(program, figures, work / "bare", stream)
        res["adaptation"] = adaptation_cost(program, figures, work / "adapt", stream, Adaptation())
        host = run_on_host(work, stream, repeats=400)
        res["host_c_ns_per_window"] = host.ns_per_window
        res["host_c_decisions_equal"] = not host.decisions.differences(decisions)

        _, feats = batch_features(pipe.select_channels(test), pipe.window, pipe.stride, pipe.features)
        scaled = pipe.scale_inputs(feats[:64]).astype(np.float32)
        res["emlearn"] = emlearn_figures(pipe, scaled, work)

    model = dense_int8(program)
    tflite = to_tflite_bytes(model)
    q_in = np.clip(np.round(scaled / model.scales[0]) + model.input_zero_point, -128, 127).astype(np.int8)
    res["tflm"] = tflm_figures(tflite, q_in)
    res["tflm"]["published_flash"] = [{"claim": c, "source": s, "bytes": b} for c, s, b in TFLM_PUBLISHED]
    res["litert_ns_per_invoke"] = litert_ns(tflite, q_in)
    m4 = res["sizes"]["cortex-m4"]
    res["targets"] = {
        "flash_bytes": {"limit": TARGETS["flash_bytes"], "value": m4["flash"]},
        "static_ram_bytes": {"limit": TARGETS["static_ram_bytes"], "value": m4["static_ram_with_state"]},
        "int8_model_bytes": {"limit": TARGETS["int8_model_bytes"],
                             "value": res["int8_model_bytes"]["with_bias_and_requant"]},
    }
    for t in res["targets"].values():
        t["met"] = t["value"] <= t["limit"]
    res["goals"] = {
        "flash_bytes (module alone)": {"limit": GOALS["flash_bytes"], "value": m4["flash"]},
        "flash_bytes (firmware link)": {"limit": GOALS["flash_bytes"], "value": m4["firmware_flash"]},
        "static_ram_bytes": {"limit": GOALS["static_ram_bytes"], "value": m4["static_ram_with_state"]},
        "instructions_per_window": {"limit": GOALS["instructions_per_window"],
                                    "value": res["instructions"]["cortex-m4"]["per_window"]},
    }
    for t in res["goals"].values():
        t["met"] = t["value"] <= t["limit"]
    res["energy"] = {
        "part": ENERGY_PART,
        "per_window": {core: {"instructions": v["per_window"], "uj": energy_uj(v["per_window"]),
                              "ms_at_part_clock": time_ms(v["per_window"])}
                       for core, v in res["instructions"].items()},
        "mlperf_tiny_ad": MLPERF_TINY_AD,
    }
    res["families"] = family_rows(series, cut, (pipe, program, figures), tune_seconds)
    return res


def render_md(r: dict[str, Any]) -> str:
    p, m4, m4f, m0 = r["pipeline"], r["sizes"]["cortex-m4"], r["sizes"]["cortex-m4f"], r["sizes"]["cortex-m0plus"]
    em, tf = r["emlearn"], r["tflm"]
    ins = r["instructions"]
    lines = [
        "# MCU benchmark (benchmarks/mcu.py)",
        "",
        f"Default demo pipeline: simulated `{p['profile']}` ({p['channels']} channels), dense autoencoder "
        f"{p['features']}-{'-'.join(map(str, p['hidden']))}-...-{p['features']}, window {p['window']}, "
        f"stride {p['stride']}; model {p['model_id']}. Cross-compiler `arm-none-eabi-gcc -Os`, module alone. "
        f"'Default pipeline' on this page is this model, the one the peers also run (`{PEER_FAMILY}`); the default "
        f"family is `{DEFAULT_FAMILY}` (results/default_family.md), whose module `--adaptation-only` measures "
        "(results/mcu_adaptation.md).",
        "",
        "## Default pipeline against the peers",
        "",
        "The peers' rows (emlearn, TFLite Micro, LiteRT) are the model-only rows for the dense autoencoder: the "
        "same model as the default pipeline's, without window features, feature scaling or persistence, which "
        "tinywarden's rows include.",
        "",
        "| | flash B | static RAM B (+ state) | instr./window M4 | instr./window M4F | instr./window M0+ | "
        "host ns/window |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| tinywarden int8, whole loop (features + model), Cortex-M4 | {m4['flash']} | "
        f"{m4['static_ram']} (+{m4['state']} = {m4['static_ram_with_state']}) | "
        f"{ins['cortex-m4']['per_window']:.0f} | {ins['cortex-m4f']['per_window']:.0f} | "
        f"{ins['cortex-m0plus']['per_window']:.0f} | {r['host_c_ns_per_window']:.0f} |",
        f"| tinywarden, Cortex-M4F (hard float) | {m4f['flash']} | {m4f['static_ram_with_state']} | | | | |",
        f"| tinywarden, Cortex-M0+ | {m0['flash']} | {m0['static_ram_with_state']} | | | | |",
        f"| tinywarden, firmware link (M4 / M4F / M0+) | {m4['firmware_flash']} / {m4f['firmware_flash']} / "
        f"{m0['firmware_flash']} | | | | | |",
        f"| emlearn float MLP, model only, Cortex-M4 | {em['sizes']['cortex-m4']['flash']} | "
        f"{em['sizes']['cortex-m4']['static_ram']} | {em['instructions']['cortex-m4']:.0f} | "
        f"{em['instructions']['cortex-m4f']:.0f} | - | {em['host_ns_per_inference']:.0f} |",
        f"| emlearn, Cortex-M0+ | {em['sizes']['cortex-m0plus']['flash']} | "
        f"{em['sizes']['cortex-m0plus']['static_ram']} | | | | |",
        f"| TFLite Micro, same int8 .tflite, model only | {tf['tflite_bytes']} model + >=16384 runtime "
        f"(published) | arena {tf['arena_bytes_host']} (host) | - | - | - | {tf['ns_per_invoke']:.0f} (invoke) |",
        f"| LiteRT, same .tflite, model only | | | - | - | - | {r['litert_ns_per_invoke']:.0f} (invoke) |",
        "",
        "Targets (Cortex-M4): " + ", ".join(
            f"{k} {v['value']} <= {v['limit']}: {'met' if v['met'] else 'NOT met'}" for k, v in r["targets"].items()),
        "Issue 16's goals (Cortex-M4): " + ", ".join(
            f"{k} {v['value']:.0f} <= {v['limit']}: {'met' if v['met'] else 'NOT met'}" for k, v in r["goals"].items())
        + ".",
        *default_family_goals_md(r["families"]["rows"]),
        FIRMWARE_NOTE,
        *breakdown_md("Where the flash goes", r["breakdown"]),
        f"int8 model: {r['int8_model_bytes']['weights']} B of int8 weights, "
        f"{r['int8_model_bytes']['with_bias_and_requant']} B with int32 bias/multiplier and int8 shift; all program "
        f"constants (incl. feature requantization) {r['program_const_bytes']} B.",
        f"Emulated Cortex-M4 decisions equal the Python int8 reference on {r['qemu_check']['windows']} windows "
        f"({r['qemu_check']['anomalous_windows']} anomalous): {r['qemu_check']['decisions_equal_reference']}; "
        f"host C equal: {r['host_c_decisions_equal']}.",
        f"Instructions are exact counts (QEMU one instruction per block, `-d exec,nochain`), mean over "
        f"{ins['cortex-m4']['windows_counted']} steady windows (one stride of pushes each); longest single push "
        f"{ins['cortex-m4']['max_push']} on M4. Share of the M4 instructions by function (libgcc helpers "
        f"linked on M4: {', '.join(m4['libgcc']) or 'none'}; the sample quantization is integer only): "
        + ", ".join(f"`{k}` {v:.0%}" for k, v in ins["cortex-m4"]["by_function_share"].items()) + ".",
        f"emlearn outputs vs the float model: max |diff| {em['max_abs_diff_vs_float_model']:.2e} (emlearn "
        "prints weights with 6 decimals). emlearn and TFLM have no window features: their rows are the "
        "model part only.",
        "TFLM flash is not measured here (the pip wheel has no sources to cross-build); published figures:",
    ]
    lines += [f"- {x['claim']} ({x['source']})" for x in tf["published_flash"]]
    lines += likelihood_md(r["likelihood"])
    lines += adaptation_md(r.get("adaptation", {}))
    lines += energy_md(r["energy"])
    lines.append("Host times are medians on this machine and vary between runs; instruction counts and sizes "
                 "are exact for a given model and change only with the model or the generated C.")
    lines += families_md(r["families"], p)
    return "\n".join(lines) + "\n"


def energy_md(e: dict[str, Any]) -> list[str]:
    """Energy per window from the instruction counts and the part's datasheet figure, beside MLPerf Tiny's."""
    part, ml = e["part"], e["mlperf_tiny_ad"]
    pj = part["cpi"] * part["ua_per_mhz"] * part["volts"]
    lines = [
        "",
        "## Energy per window (estimate)",
        "",
        f"Part: {part['part']}; {part['ua_per_mhz']:g} uA/MHz at {part['volts']:g} V = {pj:g} pJ per cycle, "
        f"CPI {part['cpi']:g} assumed (a floor: wait states add cycles). Source: {part['source']}.",
        "",
        "| | instructions/window | time at 80 MHz, ms | energy/window, uJ | windows per MLPerf Tiny AD inference's "
        "energy |",
        "|---|---:|---:|---:|---:|",
    ]
    for core, v in e["per_window"].items():
        label = {"cortex-m4": "tinywarden, Cortex-M4 build", "cortex-m4f": "tinywarden, Cortex-M4F build",
                 "cortex-m0plus": "tinywarden, Cortex-M0+ build (same part figure)"}.get(core, core)
        lines.append(f"| {label} | {v['instructions']:.0f} | {v['ms_at_part_clock']:.3f} | {v['uj']:.2f} | "
                     f"{ml['uj'] / v['uj']:.0f} |")
    lines += [f"| {ml['what']} | - | {ml['ms']:g} | {ml['uj']:g} | 1 |", "", f"MLPerf Tiny figures: {ml['source']}."]
    return lines


def _cell(v: Any, fmt: str = "{}") -> str:
    return "-" if v is None else fmt.format(v)


def families_md(f: dict[str, Any], p: dict[str, Any]) -> list[str]:
    """The second table: every detector family and the tuned pipeline, quality beside cost."""
    t = f["tune"]
    stop = (f"stopped early: {t['stopped_early']}" if t["stopped_early"]
            else f"not reached: the whole search ran, {t['seconds']:g} s")
    lines = [
        "",
        "## Every detector family and the tuned pipeline (whole loop, Cortex-M4)",
        "",
        f"Each family at its default parameters in the demo's pipeline (window {p['window']}, stride "
        f"{p['stride']}, default features on all {p['channels']} channels), fitted on the same "
        f"{p['train_days']:g} attack-free camera days; the dense_ae row is the default pipeline above. The tuned "
        f"row is the pipeline `tinywarden.tune.tune(train, Budget({t['budget']['flash']}, {t['budget']['ram']}))` "
        f"chooses on those days ({t['measured']} of {t['trials']} candidates measured; limit {t['limit']}, "
        f"{stop}). Every row is the whole generated C module (features, requantization, model, persistence) "
        "measured like the default pipeline: flash = text + data with `arm-none-eabi-gcc -Os` for Cortex-M4 "
        "and M0+; "
        "RAM = static RAM + the caller-owned `tw_state_t`; stack = the deepest worst case of the module's entry "
        f"points ({', '.join(STACK_ENTRIES)}) from GCC's call graph (`tinywarden.target.stack`; "
        "with the libc and libgcc routines it calls, bounded from the linked code); "
        "int8 constants = `Program.const_bytes`; "
        f"instructions = exact QEMU count per core (the M0+ build runs on the M4 board), mean over "
        f"{COUNTED_WINDOWS} steady windows (one stride of pushes "
        f"each); decisions = scores and anomaly flags of the emulated Cortex-M4 equal to the Python int8 "
        f"reference on the first {STREAM_ROWS} held-out rows; window AUC = ROC AUC of the int8 program's window "
        f"scores on the {p['days'] - p['train_days']:g} held-out attack days vs the window labels (a window is "
        "anomalous when it holds an attack row).",
        "",
        "| pipeline | window/stride | flash B M4 / M0+ (firmware link M4 / M0+) | RAM B (static + state) | "
        "stack B M4 / M0+ | int8 constants B | "
        "instr./window M4 / M4F / M0+ | uJ/window (M4, STM32L476) | decisions = int8 ref. | window AUC |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in f["rows"]:
        if "error" in r:
            lines.append(f"| {r['label']} | {r['error']} | | | | | | | | |")
            continue
        by_core = r["instructions_per_window_by_core"]
        counts = " / ".join(_cell(by_core.get(c), "{:.0f}") for c in COUNT_CORES)
        lines.append(
            f"| {r['label']} | {r['window']}/{r['stride']} | {r['flash']} / {_cell(r['flash_m0plus'])} "
            f"({_cell(r.get('firmware_flash'))} / {_cell(r.get('firmware_flash_m0plus'))}) | "
            f"{r['static_ram_with_state']} | {_cell(r.get('stack'))} / {_cell(r.get('stack_m0plus'))} | "
            f"{r['const_bytes']} | {counts} | {r['energy_uj_per_window_m4']:.2f} | "
            f"{r['decisions_equal_reference']} ({r['windows_compared']} windows) | "
            f"{_cell(r['window_auc'], '{:.3f}')} |")
    lines += ["", "Instructions per window cover one stride of samples: divide by the stride for the cost per "
              "sample when the windows differ."]
    return lines


def default_module(days: float, train_days: float, seed: int, profile: str = "camera") -> tuple[Any, np.ndarray]:
    """The default pipeline's int8 program and the held-out rows it is measured on (the single-figure modes), on the
    demo's camera or another simulator ``profile``."""
    series, cut = camera_data(days, train_days, seed, profile)
    _, program = default_pipeline(series, cut)
    return program, series.slice(cut, len(series)).values[:STREAM_ROWS]


#: The simulator's profiles --adaptation-only measures (tinywarden.simulate.profiles.PROFILES): the demo's camera (6
#: channels) and the two 9-channel devices, whose 99 adapted inputs are the budget's hardest case; instructions are
#: counted on the first alone (they grow with the inputs; sizes and RAM are the goal).
ADAPTATION_PROFILES = ("camera", "valve", "thermostat")


def adaptation_profiles(days: float, train_days: float, seed: int,
                        profiles: Sequence[str] = ADAPTATION_PROFILES) -> dict[str, dict[str, Any]]:
    """:func:`adaptation_cost` of the default pipeline on each simulator profile (instruction counts on the first)."""
    out: dict[str, dict[str, Any]] = {}
    for k, profile in enumerate(profiles):
        program, stream = default_module(days, train_days, seed, profile)
        count = k == 0
        with tempfile.TemporaryDirectory(prefix="tw-bench-") as tmp:
            figures, _ = module_figures(program, Path(tmp), stream, count_cores=COUNT_CORES if count else ())
            ad = adaptation_cost(program, figures, Path(tmp) / "adapt", stream, Adaptation(), count=count)
        ad["model_id"] = program.model_id
        ad["channels"] = program.n_channels
        ad["detector"] = program.info.get("detector")
        out[profile] = ad
    return out


def profiles_md(per: dict[str, dict[str, Any]]) -> list[str]:
    """The adapting default's footprint on every profile and core against the budget, one row each."""
    flash, ram = TARGETS["flash_bytes"], TARGETS["static_ram_bytes"]
    lines = ["## The adapting default on every simulator profile", "",
             f"Flash (module alone and firmware link) against {flash} B; RAM = static + state + the worst-case stack "
             f"(`tinywarden.target.stack`) against {ram} B; 'over' = bytes beyond the budget.", "",
             "| profile | channels | adapted inputs | core | flash B, module alone | flash B, firmware link | RAM B "
             "(static + state) | stack B | RAM + stack B | flash goal | RAM goal |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---|---|"]
    for profile, ad in per.items():
        if not ad.get("present"):
            lines.append(f"| {profile} | {ad.get('channels', '?')} | - | - | - | - | - | - | - | no adaptation | - |")
            continue
        for core, v in ad["sizes"].items():
            total = v["total_ram"] + v["stack"][1]
            fl = max(v["total_flash"], v["firmware_flash"][1])

            def verdict(n: int, bound: int) -> str:
                return "met" if n <= bound else f"**NOT met** (over {n - bound})"

            lines.append(f"| {profile} | {ad['channels']} | {ad['inputs']} | {core} | {v['total_flash']} | "
                         f"{v['firmware_flash'][1]} | {v['total_ram']} | {v['stack'][1]} | {total} | "
                         f"{verdict(fl, flash)} | {verdict(total, ram)} |")
    met = sum(max(v["total_flash"], v["firmware_flash"][1]) <= flash and v["total_ram"] + v["stack"][1] <= ram
              for ad in per.values() if ad.get("present") for v in ad["sizes"].values())
    rows = sum(len(ad["sizes"]) for ad in per.values() if ad.get("present"))
    lines += ["", f"Both goals met on {met} of {rows} profile x core rows."]
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    ap.add_argument("--days", type=float, default=14.0, help="simulated days (the demo's default)")
    ap.add_argument("--train-days", type=float, default=8.0, help="attack-free training days")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--tune-seconds", type=float, default=170.0,
                    help="time budget of the tuner's search for the tuned row (its time_budget)")
    ap.add_argument("--likelihood-only", action="store_true",
                    help="measure only the default pipeline with and without its likelihood step (no file written)")
    ap.add_argument("--families", default=None,
                    help="comma list of families: measure only their rows of the families table (no tuned row, no "
                         "file written), e.g. --families gru_ae,ocsvm")
    ap.add_argument("--adaptation-only", action="store_true",
                    help="measure only the default pipeline with and without baseline adaptation compiled in, on "
                         "each simulator profile (camera, valve, thermostat; instructions counted on camera) "
                         "(writes benchmarks/results/mcu_adaptation.md)")
    args = ap.parse_args()
    missing = missing_tools()
    if missing:
        print("cannot run the MCU benchmark:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 2
    if args.likelihood_only:
        program, stream = default_module(args.days, args.train_days, args.seed)
        with tempfile.TemporaryDirectory(prefix="tw-bench-") as tmp:
            figures, _ = module_figures(program, Path(tmp), stream)
            lk = likelihood_cost(program, figures, Path(tmp) / "bare", stream)
        lk["with"] = {"flash_m4": figures["sizes"]["cortex-m4"]["flash"],
                      "ram_m4": figures["sizes"]["cortex-m4"]["static_ram_with_state"],
                      "instructions": {c: v["per_window"] for c, v in figures["instructions"].items()},
                      "qemu_check": figures["qemu_check"]}
        print(json.dumps(lk, indent=2, sort_keys=True) if args.json else "\n".join(likelihood_md(lk)))
        return 0
    if args.families:
        fams = args.families.split(",")
        unknown = sorted(set(fams) - set(REGISTRY))
        if unknown:
            print(f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; known: "
                  f"{', '.join(REGISTRY)}", file=sys.stderr)
            return 2
        series, cut = camera_data(args.days, args.train_days, args.seed)
        res = {"rows": selected_family_rows(series, cut, fams)}
        print(json.dumps(res, indent=2, sort_keys=True) if args.json else "\n".join(selected_rows_md(res["rows"])))
        return 0
    if args.adaptation_only:
        per = adaptation_profiles(args.days, args.train_days, args.seed)
        body = ["# MCU benchmark: baseline adaptation (benchmarks/mcu.py --adaptation-only)", "",
                provenance(sys.argv[1:]), "",
                "Default pipeline (`" + str(next(iter(per.values())).get("detector")) + "`, window 128 / stride 64, "
                "default features) fitted on each simulator profile's attack-free days (the demo's days and seed); "
                "targets 8192 B flash / 4096 B RAM. Models: " + ", ".join(
                    f"{p} {ad.get('model_id')}" for p, ad in per.items()) + ".", "", *profiles_md(per)]
        for profile, ad in per.items():
            body += ["", f"# {profile} ({ad.get('channels')} channels)", *adaptation_md(ad)]
        md = "\n".join(body) + "\n"
        ADAPTATION_RESULTS.write_text(md)
        print(json.dumps(per, indent=2, sort_keys=True) if args.json else md)
        return 0
    res = measure(args.days, args.train_days, args.seed, args.tune_seconds)
    md = render_md(res)
    md = md.replace("\n", f"\n\n{provenance(sys.argv[1:])}\n", 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(md)
    if args.json:
        print(json.dumps(res, indent=2, sort_keys=True))
    else:
        print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())

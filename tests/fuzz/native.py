"""The C targets: a generated module (detector loop + response machine) and ``tests/c/fuzz_harness.c``,
compiled by clang with ``-fsanitize=fuzzer,address,undefined`` into one libFuzzer binary per entry point.

The module is what ``tinywarden export MODEL --target c --policy POLICY`` writes, for a small fitted
pipeline and a policy that uses every tier, a dead-man timer, a watchdog and the fail-safe tier.
"""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[1] / "c" / "fuzz_harness.c"
C_TARGETS = {"c_push": ["TW_FUZZ_PUSH"], "c_respond": ["TW_FUZZ_RESPOND"], "c_state": ["TW_FUZZ_STATE"],
             "c_state_memory": ["TW_FUZZ_STATE", "TW_FUZZ_MEMORY_ONLY"]}
SANITIZE = ["-fsanitize=fuzzer,address,undefined,float-cast-overflow,integer-divide-by-zero",
            "-fno-sanitize-recover=all"]
FLAGS = ["-std=c99", "-g", "-O1", "-Wall", "-Wextra", "-Werror", "-Wno-unused-function"]

POLICY = textwrap.dedent("""
    [policy]
    name = "fuzz"
    version = "1"
    fail_safe_tier = "constrain"
    fault_tolerance = 2
    telemetry_timeout_s = 50
    watchdog_timeout_s = 25.3
    [tiers.alert]
    actions = ["notify"]
    k = 2
    n = 3
    min_dwell_s = 2.5
    deescalate_after_s = 60
    [tiers.constrain]
    actions = ["cap", "block"]
    k = 20
    n = 32
    margin = 0.25
    min_dwell_s = 20
    deescalate_after_s = 60
    dead_man_s = 45.5
    [tiers.harden]
    actions = ["uplink_down"]
    consecutive = 3
    margin = 0.6
    deescalate_after_s = 60
    dead_man_s = 120
    [actions.notify]
    type = "log"
    [actions.cap]
    type = "tc_rate_limit"
    interface = "eth0"
    rate = "256kbit"
    [actions.block]
    type = "nft_block_address"
    addresses = ["203.0.113.7"]
    [actions.uplink_down]
    type = "interface_down"
    interface = "wlan0"
    """)


def clang_fuzzer_available() -> str | None:
    """``None`` when clang can build a libFuzzer binary here, else the reason it cannot."""
    clang = shutil.which("clang")
    if clang is None:
        return "clang is not installed (scripts/setup-system.sh installs clang and libclang-rt-dev)"
    probe = "#include <stdint.h>\n#include <stddef.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)" \
            "{(void)d;(void)n;return 0;}\n"
    r = subprocess.run([clang, "-fsanitize=fuzzer", "-x", "c", "-", "-o", "/dev/null"], input=probe,
                       capture_output=True, text=True)
    if r.returncode != 0:
        return f"clang cannot link libFuzzer (install libclang-rt-dev): {r.stderr.strip()[:200]}"
    return None


def write_module(out: Path, family: str = "ewma") -> Path:
    """Fit a small pipeline of ``family``, quantize it and write the C module with :data:`POLICY` into ``out``."""
    from tinywarden.codegen.c import write_c
    from tinywarden.detectors import make_detector
    from tinywarden.pipeline import Pipeline
    from tinywarden.quantize import quantize_pipeline
    from tinywarden.respond.policy import parse_policy
    from tinywarden.simulate import simulate

    train = simulate("camera", 0.5, [], seed=3)
    params = {"dense_ae": {"epochs": 1, "max_steps": 30}}.get(family, {})
    pipe = Pipeline(make_detector(family, **params), window=32, stride=8).fit(train)  # short windows: more per input
    write_c(quantize_pipeline(pipe, train), out, parse_policy(POLICY, "fuzz-policy"))
    return out


def build(module_dir: Path, target: str, out: Path) -> Path:
    """Compile the libFuzzer binary of ``target`` (a key of :data:`C_TARGETS`) against the module."""
    out.mkdir(parents=True, exist_ok=True)
    exe = out / target
    cmd = ["clang", *FLAGS, *SANITIZE, *(f"-D{m}" for m in C_TARGETS[target]), "-I", str(module_dir),
           str(module_dir / "tinywarden_model.c"), str(HARNESS), "-lm", "-o", str(exe)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"building {target} failed:\n{r.stderr}")
    return exe


def seeds(module_dir: Path, target: str, out: Path) -> Path:
    """A few valid inputs for ``target``: a steady stream, a spike, a clock jump (for c_state, from init)."""
    import re
    import struct

    import numpy as np

    header = (module_dir / "tinywarden_model.h").read_text()
    channels = int(re.search(r"#define TW_N_CHANNELS (\d+)", header).group(1))
    window = int(re.search(r"#define TW_WINDOW (\d+)", header).group(1))
    d = out / f"seeds-{target}"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    if target == "c_push":
        for name, n, scale in (("steady", 2 * window, 1.0), ("spike", 3 * window, 50.0)):
            recs = []
            for i in range(n):
                x = rng.normal(size=channels) * (scale if i > n // 2 else 1.0)
                recs.append(struct.pack("<BI", 0, 1000 + 10 * i) + np.asarray(x, "<f4").tobytes())
            (d / name).write_bytes(b"".join(recs))
    else:
        state = _initial_state(module_dir, out) if target.startswith("c_state") else b""
        recs = [struct.pack("<BIiB", k, t, s, 0) for k, t, s in
                [(0x81, 10, 5000), (0x81, 20, 5000), (0x81, 30, 9000), (3, 40, 0), (4, 50, 0), (0x80, 200, 0),
                 (5, 210, 0), (1, 220, 0), (0x81, 100, 10), (2, 4000, 0)]]
        (d / "scenario").write_bytes(state + b"".join(recs))
    return d


def _initial_state(module_dir: Path, out: Path) -> bytes:
    """The bytes of a ``tw_response_t`` after ``tw_respond_init``: the c_state target's valid start."""
    src = out / "dump_state.c"
    src.write_text('#include <stdio.h>\n#include "tinywarden_model.h"\nint main(void){static tw_response_t r;'
                   'tw_respond_init(&r);fwrite(&r,sizeof r,1,stdout);return 0;}\n')
    exe = out / "dump_state"
    subprocess.run(["clang", "-std=c99", "-I", str(module_dir), str(module_dir / "tinywarden_model.c"), str(src),
                    "-lm", "-o", str(exe)], check=True, capture_output=True)
    return subprocess.run([str(exe)], check=True, capture_output=True).stdout

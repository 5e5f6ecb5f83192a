"""Find the best pipeline whose generated C fits an 8 KB flash / 4 KB RAM microcontroller.

    python examples/tune.py [OUT_DIR]

Needs the ARM cross toolchain (``scripts/install-toolchain.sh``), which measures every candidate's C
module. Writes the chosen module to ``OUT_DIR/c/``; OUT_DIR defaults to ``tune-out``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import tinywarden as tw


def main(out: Path) -> None:
    normal = tw.simulate_device("thermostat", days=2, attacks="none", seed=0)
    # bounded by trials, so the same data gives the same choice on any machine
    result = tw.tune_pipeline(normal, tw.Budget(flash=8 * 1024, ram=4 * 1024), families=["ewma", "pca"],
                     windows=[32], max_trials=4)
    s = result.summary()
    print(f"chose {result.chosen.candidate.label}: {s['flash']} B flash, {s['ram']} B RAM, "
          f"validation quality {s['validation']['quality']:.3f} after {s['trials']} trials")
    files = tw.write_c(result.program, out / "c")
    print(f"wrote {', '.join(str(p) for p in files)}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "tune-out"))

"""Learn a simulated camera's normal telemetry, score an attack, and export the int8 model as C.

    python examples/quickstart.py [OUT_DIR]

Writes ``OUT_DIR/camera.twb`` (the model file) and ``OUT_DIR/c/`` (the C99 module a microcontroller
compiles); OUT_DIR defaults to ``quickstart-out``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import tinywarden as tw


def main(out: Path) -> None:
    normal = tw.simulate_device("camera", days=2, attacks="none", seed=0)
    attacked = tw.simulate_device("camera", days=2, attacks="botnet_flood", seed=1, attack_free_days=1)

    pipe = tw.Pipeline(tw.make_detector("pca"), window=32, stride=16, target_fpr=0.01).fit(normal)
    scored = pipe.score(attacked)  # higher score = more anomalous
    in_attack = attacked.labels[scored.end_rows] == 1
    print(f"float  alarms: {scored.alarms[in_attack].mean():.0%} of attack windows, "
          f"{scored.alarms[~in_attack].mean():.1%} of normal ones (threshold {scored.threshold:.3g})")

    program = tw.quantize_pipeline(pipe, normal)
    ints = tw.score_int8(pipe, program, attacked)
    print(f"int8   alarms agree with float on {np.mean(ints.alarms == scored.alarms):.1%} of windows")

    out.mkdir(parents=True, exist_ok=True)
    size = tw.save_pipeline(pipe, out / "camera.twb")
    files = tw.write_c(program, out / "c")
    print(f"wrote {out / 'camera.twb'} ({size} B) and {', '.join(p.name for p in files)}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "quickstart-out"))

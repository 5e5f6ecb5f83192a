"""Drive the response engine with a detector's scores under a response policy, in simulated time.

    python examples/respond.py [POLICY_TOML]

POLICY_TOML defaults to ``policy.toml`` beside this script. The actuators are dry-run stand-ins: the
engine says what it would do (alert, rate-limit, isolate) and when it would step back down.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import tinywarden as tw


def main(policy_path: Path) -> None:
    normal = tw.simulate_device("camera", days=2, attacks="none", seed=0)
    attacked = tw.simulate_device("camera", days=3, attacks="botnet_flood", seed=2, attack_free_days=1)
    pipe = tw.Pipeline(tw.make_detector("ewma"), window=32, stride=16).fit(normal)
    scored = pipe.score(attacked)

    policy = tw.load_policy(policy_path)
    engine = tw.ResponseEngine(policy, threshold=scored.threshold, model_id="camera-example")
    for at, score in zip(scored.end_times, scored.scores, strict=True):
        for e in engine.observe(float(score), at=float(at)):
            if e.event in ("apply", "revert"):
                row = min(int(np.searchsorted(attacked.timestamps, e.time)), len(attacked) - 1)
                during = "during an attack" if attacked.labels[row] else ""
                hours = (e.time - attacked.timestamps[0]) / 3600.0
                line = f"{hours:7.2f} h  tier {e.tier}  {e.event:6s} {e.action:18s} {e.reason_code:9s} {during}"
                print(line.rstrip())
    print(f"final tier: {engine.tier}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("policy.toml"))

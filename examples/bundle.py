"""Sign a model and its policy into one bundle, verify it as a device would, and see a tampered copy refused.

    python examples/bundle.py [OUT_DIR]

Writes ``OUT_DIR/camera.twbundle``; OUT_DIR defaults to ``bundle-out``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import tinywarden as tw


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    normal = tw.simulate_device("camera", days=1, attacks="none", seed=0)
    tw.save_pipeline(tw.Pipeline(tw.make_detector("kmeans"), window=32, stride=16).fit(normal), out / "camera.twb")
    policy = Path(__file__).with_name("policy.toml").read_bytes()

    key = tw.generate_key()
    raw = tw.create_bundle((out / "camera.twb").read_bytes(), policy, {"model_id": "camera-1", "profile": "camera"})
    signed = tw.sign_bundle(raw, key, version=1)
    (out / "camera.twbundle").write_bytes(signed)

    bundle = tw.verify_bundle(signed, tw.public_key_of(key))
    print(f"verified {bundle.model_id} version {bundle.version}: {len(bundle.model)} B model, "
          f"{len(bundle.policy)} B policy")
    tampered = bytearray(signed)
    tampered[len(tampered) // 2] ^= 1
    try:
        tw.verify_bundle(bytes(tampered), tw.public_key_of(key))
    except tw.TinywardenError as exc:
        print(f"tampered copy refused: {exc}")
    else:
        raise SystemExit("a tampered bundle was accepted")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "bundle-out"))

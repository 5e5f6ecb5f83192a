"""tinywarden: learn a device's normal behaviour from its own telemetry and flag deviations on-device.

Every step of the command line is one call on this package. Each name is imported on first use
(PEP 562), so ``import tinywarden`` itself loads no numerical library: a gateway that only runs the
response engine and verifies bundles never imports torch, scikit-learn or matplotlib.

Scores are "higher = more anomalous" for every detector (the opposite of scikit-learn's IsolationForest
``score_samples``). Every error a caller can cause is a ``TinywardenError`` with a one-line message.

The examples below are one session, run by the test suite; each entry point appears in one of them.

**Simulate** labelled telemetry of a device profile (``simulate_device``), here two normal days to learn
from and a day with a botnet flood to score:

>>> import tempfile
>>> from pathlib import Path
>>> import numpy as np
>>> import tinywarden as tw
>>> normal = tw.simulate_device("camera", days=2, attacks="none", seed=0)
>>> attacked = tw.simulate_device("camera", days=2, attacks="botnet_flood", seed=1, attack_free_days=1)
>>> normal.channels[:3], int(attacked.labels.sum()) > 0
(('cpu_pct', 'mem_pct', 'power_mw'), True)

**Read telemetry** from CSV or Parquet (``read_series``; a timestamp column, one column per channel,
an optional ``label``) into a ``Series``:

>>> tmp = Path(tempfile.mkdtemp())
>>> tw.write_csv(normal, tmp / "camera.csv")
>>> series = tw.read_series(tmp / "camera.csv")
>>> isinstance(series, tw.Series), series.channels == normal.channels, len(series) == len(normal)
(True, True, True)

**Build and fit a pipeline**: a detector family by name (``make_detector``) in a ``Pipeline``
that windows, extracts features, scales, fits and calibrates its threshold on held-out normal windows;
``save_pipeline`` and ``load_pipeline`` keep it in a model file:

>>> pipe = tw.Pipeline(tw.make_detector("pca"), window=32, stride=16, target_fpr=0.01).fit(series)
>>> size = tw.save_pipeline(pipe, tmp / "camera.twb")
>>> tw.load_pipeline(tmp / "camera.twb").threshold_ == pipe.threshold_
True

**Score** a series window by window (``Pipeline.score``): scores, the threshold and k-of-n alarms:

>>> scored = pipe.score(attacked)
>>> in_attack = attacked.labels[scored.end_rows] == 1
>>> bool(scored.alarms[in_attack].mean() > 0.5), bool(scored.alarms[~in_attack].mean() < 0.05)
(True, True)

**Calibrate**: the threshold is the smallest one at most ``target_fpr`` of held-out normal scores exceed
(``threshold_at_fpr``); an alarm needs ``k`` flagged windows among the last ``n`` (``persist``):

>>> tw.threshold_at_fpr(np.arange(100.0), 0.05)
94.0
>>> tw.persist(np.array([1, 0, 1, 0, 0, 1, 1]), k=2, n=3).tolist()
[0, 0, 1, 0, 0, 0, 1]

**Quantize** to the integer program the device runs (``quantize_pipeline``), and score with it
exactly as the generated C does (``score_int8``):

>>> program = tw.quantize_pipeline(pipe, series)
>>> ints = tw.score_int8(pipe, program, attacked)
>>> bool(np.mean(ints.alarms == scored.alarms) > 0.95)
True

**Export** the program as C99 (``write_c``); a dense autoencoder's program also exports as a
TFLite Micro flatbuffer (``export_tflite``) and as ONNX, float and QDQ int8 (``export_onnx``):

>>> [p.name for p in tw.write_c(program, tmp / "c")]
['tinywarden_model.h', 'tinywarden_model.c']
>>> ae = tw.make_detector("dense_ae", hidden=(8, 4), max_steps=200)
>>> ae_pipe = tw.Pipeline(ae, window=32, stride=16).fit(series)
>>> ae_program = tw.quantize_pipeline(ae_pipe, series)
>>> tw.export_tflite(ae_program, tmp / "model.tflite").stat().st_size > 0
True
>>> [p.name for p in tw.export_onnx(ae_program, tmp / "onnx", pipeline=ae_pipe)]
['tinywarden_float.onnx', 'tinywarden_int8_qdq.onnx']

**Tune**: search families, windows and features for the best pipeline whose generated C fits a device's
flash and RAM (``tune_pipeline``, ``Budget``; it compiles with the ARM cross toolchain):

>>> result = tw.tune_pipeline(series, tw.Budget(flash=8192, ram=4096), families=["ewma"], windows=[16], max_trials=2)
>>> result.size.flash <= 8192 and result.size.ram_with_state <= 4096
True

**Load a policy and run the engine**: a response policy (``load_policy`` from a TOML file,
``parse_policy`` from text) drives a ``ResponseEngine`` from scores (dry-run actuators unless
given real ones):

>>> _ = (tmp / "policy.toml").write_text('''
... [policy]
... name = "camera"
... version = "1"
... [actions.notify]
... type = "log"
... message = "camera behaves unusually"
... [tiers.alert]
... actions = ["notify"]
... k = 2
... n = 3
... deescalate_after_s = 600
... ''')
>>> policy = tw.load_policy(tmp / "policy.toml")
>>> engine = tw.ResponseEngine(policy, threshold=pipe.threshold_)
>>> events = [e for t, s in zip(scored.end_times, scored.scores) for e in engine.observe(s, at=t)]
>>> applied = [e for e in events if e.event == "apply"]
>>> applied[0].tier, applied[0].action
(1, 'notify')
>>> tw.parse_policy((tmp / "policy.toml").read_text()).name
'camera'

**Bundle and verify**: the model file and its policy in one Ed25519-signed bundle (``create_bundle``,
``sign_bundle``); a device accepts it only through ``verify_bundle`` with the key it trusts:

>>> key = tw.generate_key()
>>> raw = tw.create_bundle((tmp / "camera.twb").read_bytes(), (tmp / "policy.toml").read_bytes(),
...                        {"model_id": "camera-1", "profile": "camera"})
>>> signed = tw.sign_bundle(raw, key, version=1)
>>> tw.verify_bundle(signed, tw.public_key_of(key)).model_id
'camera-1'
>>> tw.verify_bundle(signed, tw.public_key_of(tw.generate_key()))
Traceback (most recent call last):
...
tinywarden.bundle.BundleError: <memory>: signed by key ..., not by the trusted key ...
>>> import shutil; shutil.rmtree(tmp)
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from tinywarden.errors import TinywardenError

__version__ = "0.1.0"

#: Public name -> the module that defines it (and the name there, when it differs), imported on first access.
#: No public name may be a submodule's name: ``tinywarden.simulate`` and ``tinywarden.tune`` are packages,
#: so their main functions are ``simulate_device`` and ``tune_pipeline`` here.
_LAZY: dict[str, str] = {
    "Series": "tinywarden.telemetry.series",
    "read_series": "tinywarden.telemetry.io",
    "write_csv": "tinywarden.telemetry.io",
    "simulate_device": "tinywarden.simulate.simulator:simulate",
    "make_detector": "tinywarden.detectors.base",
    "Pipeline": "tinywarden.pipeline",
    "save_pipeline": "tinywarden.modelfile",
    "load_pipeline": "tinywarden.modelfile",
    "threshold_at_fpr": "tinywarden.calibrate",
    "persist": "tinywarden.calibrate",
    "quantize_pipeline": "tinywarden.quantize.ptq",
    "score_int8": "tinywarden.quantize.ptq",
    "write_c": "tinywarden.codegen.c",
    "export_tflite": "tinywarden.codegen.tflite",
    "export_onnx": "tinywarden.codegen.onnx",
    "Budget": "tinywarden.tune.search",
    "tune_pipeline": "tinywarden.tune.search:tune",
    "load_policy": "tinywarden.respond.policy",
    "parse_policy": "tinywarden.respond.policy",
    "ResponseEngine": "tinywarden.respond.engine",
    "generate_key": "tinywarden.bundle",
    "public_key_of": "tinywarden.bundle",
    "create_bundle": "tinywarden.bundle",
    "sign_bundle": "tinywarden.bundle",
    "verify_bundle": "tinywarden.bundle",
}

__all__ = [
    "TinywardenError",
    "__version__",
    "Series",
    "read_series",
    "write_csv",
    "simulate_device",
    "make_detector",
    "Pipeline",
    "save_pipeline",
    "load_pipeline",
    "threshold_at_fpr",
    "persist",
    "quantize_pipeline",
    "score_int8",
    "write_c",
    "export_tflite",
    "export_onnx",
    "Budget",
    "tune_pipeline",
    "load_policy",
    "parse_policy",
    "ResponseEngine",
    "generate_key",
    "public_key_of",
    "create_bundle",
    "sign_bundle",
    "verify_bundle",
]

if TYPE_CHECKING:  # what a type checker and an IDE see; at run time __getattr__ imports these on first use
    from tinywarden.bundle import create_bundle, generate_key, public_key_of, sign_bundle, verify_bundle
    from tinywarden.calibrate import persist, threshold_at_fpr
    from tinywarden.codegen.c import write_c
    from tinywarden.codegen.onnx import export_onnx
    from tinywarden.codegen.tflite import export_tflite
    from tinywarden.detectors.base import make_detector
    from tinywarden.modelfile import load_pipeline, save_pipeline
    from tinywarden.pipeline import Pipeline
    from tinywarden.quantize.ptq import quantize_pipeline, score_int8
    from tinywarden.respond.engine import ResponseEngine
    from tinywarden.respond.policy import load_policy, parse_policy
    from tinywarden.simulate.simulator import simulate as simulate_device
    from tinywarden.telemetry.io import read_series, write_csv
    from tinywarden.telemetry.series import Series
    from tinywarden.tune.search import Budget
    from tinywarden.tune.search import tune as tune_pipeline


def __getattr__(name: str) -> Any:
    """Import a public name from its module the first time it is used (PEP 562)."""
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'tinywarden' has no attribute {name!r}")
    module, _, attr = where.partition(":")
    value = getattr(import_module(module), attr or name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})

"""Structured magnitude pruning of the autoencoders: whole hidden neurons / conv filters are removed,
so the generated C gets smaller (fewer weights, smaller scratch tensors), not merely sparser.

A hidden unit's importance is ``||incoming weights||_2 * ||outgoing weights||_2`` (its bias rides with
it); the same fraction is removed from every hidden layer, which keeps the autoencoder's mirror shape,
then the survivors are fine-tuned on the fit windows and the threshold is recalibrated on the held-out
ones, exactly as :meth:`Pipeline.fit` does.
"""

from __future__ import annotations

import copy

import numpy as np

from tinywarden.calibrate import threshold_at_fpr
from tinywarden.detectors import ConvAutoencoder, DenseAutoencoder
from tinywarden.detectors._torch import train_reconstruction
from tinywarden.errors import ConfigError
from tinywarden.pipeline import Pipeline
from tinywarden.telemetry.series import Series

Layers = list[tuple[np.ndarray, np.ndarray]]


def _prune_layers(layers: Layers, sparsity: float) -> Layers:
    """Remove the least important output units of every layer but the last (and the matching inputs)."""
    out = [(w.copy(), b.copy()) for w, b in layers]
    for i in range(len(out) - 1):
        w, b = out[i]
        nxt_w, nxt_b = out[i + 1]
        n = w.shape[0]
        keep_n = max(1, int(round(n * (1.0 - sparsity))))
        inc = np.sqrt((w.reshape(n, -1) ** 2).sum(axis=1) + b**2)
        outg = np.sqrt((np.moveaxis(nxt_w, 1, 0).reshape(n, -1) ** 2).sum(axis=1))
        keep = np.sort(np.argsort(-(inc * outg), kind="stable")[:keep_n])
        out[i] = (w[keep], b[keep])
        out[i + 1] = (nxt_w[:, keep], nxt_b)
    return out


def prune_pipeline(pipeline: Pipeline, train_series: Series, sparsity: float, fine_tune_steps: int = 300,
                   lr: float = 1e-3) -> Pipeline:
    """A copy of a fitted autoencoder pipeline with ``sparsity`` of every hidden layer's units removed.

    >>> from tinywarden.detectors import DenseAutoencoder
    >>> rng = np.random.default_rng(0)
    >>> s = Series(np.arange(3000.0), rng.normal(size=(3000, 2)), ("a", "b"))
    >>> p = Pipeline(DenseAutoencoder(hidden=(8, 4), epochs=2), window=32, stride=16).fit(s)
    >>> prune_pipeline(p, s, 0.5, fine_tune_steps=5).detector.hidden
    (4, 2)
    """
    pipeline._check_fitted()
    det = pipeline.detector
    if not isinstance(det, (DenseAutoencoder, ConvAutoencoder)):
        raise ConfigError(f"pruning needs an autoencoder (dense_ae, conv_ae), not {det.name!r}")
    if not 0.0 <= sparsity < 1.0:
        raise ConfigError(f"sparsity must be in [0, 1), got {sparsity}")
    pruned = _prune_layers(det.layers(), sparsity)
    new = copy.deepcopy(pipeline)
    nd = new.detector
    n_enc = len(pruned) // 2
    sizes = tuple(int(w.shape[0]) for w, _ in pruned[:n_enc])
    if isinstance(nd, DenseAutoencoder):
        nd.hidden = sizes
        names = [(f"w{i}_", f"b{i}_") for i in range(len(pruned))]
    else:
        nd.channels = sizes
        names = [(f"k{i}_", f"c{i}_") for i in range(len(pruned))]
    for (wn, bn), (w, b) in zip(names, pruned, strict=True):
        setattr(nd, wn, w)
        setattr(nd, bn, b)
    nd._restore()
    fit_x, cal_x = new.split_inputs(train_series)
    if fine_tune_steps > 0:
        module = nd.torch_module()
        train_reconstruction(module, new.scale_inputs(fit_x), steps=fine_tune_steps, batch_size=nd.batch_size, lr=lr,
                             seed=nd.random_state)
        params = [p.detach().double().numpy().copy() for p in module.parameters()]
        for i, (wn, bn) in enumerate(names):
            setattr(nd, wn, params[2 * i])
            setattr(nd, bn, params[2 * i + 1])
    cal_scores = nd.score_samples(new.scale_inputs(cal_x))
    new.threshold_ = threshold_at_fpr(cal_scores, new.target_fpr)
    new.train_summary_ = {**new.train_summary_, "calibration_fpr": float(np.mean(cal_scores > new.threshold_)),
                          "pruned_sparsity": sparsity}
    return new

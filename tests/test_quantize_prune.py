"""Structured pruning removes whole units, shrinks the int8 program and keeps a working detector."""

import numpy as np
import pytest

from int8_fixtures import camera, fitted
from tinywarden.errors import ConfigError
from tinywarden.quantize import prune_pipeline, quantize_pipeline


@pytest.mark.parametrize("detector", ["dense_ae", "conv_ae"])
def test_pruning_removes_units_and_shrinks_program(detector):
    pipe, prog = fitted(detector)
    _, train = camera()
    pruned = prune_pipeline(pipe, train, 0.5, fine_tune_steps=50)
    before = [w.shape[0] for w, _ in pipe.detector.layers()]
    after = [w.shape[0] for w, _ in pruned.detector.layers()]
    assert after[-1] == before[-1]  # the reconstruction keeps its size
    assert all(a == max(1, round(b / 2)) for a, b in zip(after[:-1], before[:-1], strict=True))
    assert pruned.detector.n_params_ < pipe.detector.n_params_
    assert pipe.detector.layers()[0][0].shape[0] == before[0]  # the original is untouched
    small = quantize_pipeline(pruned, train)
    assert small.const_bytes < prog.const_bytes
    s, _ = camera()
    sc = pruned.score(s)
    assert np.isfinite(sc.scores).all() and 0 < sc.raw_flags.sum() < len(sc.raw_flags)


def test_pruning_keeps_the_most_important_units():
    pipe, _ = fitted("dense_ae")
    _, train = camera()
    w0 = pipe.detector.layers()[0][0]
    w1 = pipe.detector.layers()[1][0]
    importance = np.sqrt((w0**2).sum(1) + pipe.detector.layers()[0][1] ** 2) * np.sqrt((w1**2).sum(0))
    pruned = prune_pipeline(pipe, train, 0.5, fine_tune_steps=0)
    kept = pruned.detector.layers()[0][0]
    want = np.sort(np.argsort(-importance)[: kept.shape[0]])
    assert np.array_equal(kept, w0[want])


def test_pruning_refuses_bad_requests():
    _, train = camera()
    with pytest.raises(ConfigError, match="autoencoder"):
        prune_pipeline(fitted("ewma")[0], train, 0.5)
    with pytest.raises(ConfigError, match="sparsity"):
        prune_pipeline(fitted("dense_ae")[0], train, 1.0)

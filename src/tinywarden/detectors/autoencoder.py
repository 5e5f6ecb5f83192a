"""Tiny dense autoencoder on window features: reconstruction error of normal behaviour."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from tinywarden.arith import QParams
from tinywarden.detectors._torch import Progress, TorchAutoencoder
from tinywarden.detectors.base import ScoreGraph, Shape, check_param, sizes
from tinywarden.detectors.lowering import MAX_FAN_IN, LoweringContext, quantize_layer
from tinywarden.kernels import Op


def _dense_module(sizes: list[int]) -> Any:
    import torch.nn as nn

    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class DenseAutoencoder(TorchAutoencoder):
    """Fully connected autoencoder ``d -> hidden... -> hidden[::-1]... -> d`` with ReLU, linear output.

    Score = mean squared reconstruction error of the scaled feature vector. Weights are stored as
    ``w{i}_`` (out x in) and ``b{i}_`` arrays, the layout the int8 path quantizes.

    >>> rng = np.random.default_rng(0)
    >>> det = DenseAutoencoder(hidden=(4, 2), epochs=5).fit(rng.normal(size=(256, 6)))
    >>> det.n_params_ == (6 * 4 + 4) + (4 * 2 + 2) + (2 * 4 + 4) + (4 * 6 + 6)
    True
    """

    name: ClassVar[str] = "dense_ae"
    search_space: ClassVar[tuple[dict[str, Any], ...]] = ({"hidden": (4,)}, {"hidden": (8,)}, {"hidden": (16, 4)})
    weight_prefix: ClassVar[str] = "w"
    bias_prefix: ClassVar[str] = "b"

    def __init__(
        self,
        hidden: tuple[int, ...] = (8, 4),
        epochs: int = 30,
        max_steps: int = 3000,
        batch_size: int = 128,
        lr: float = 3e-3,
        random_state: int = 0,
    ):
        self.hidden = hidden
        self.epochs = epochs
        self.max_steps = max_steps
        self.batch_size = batch_size
        self.lr = lr
        self.random_state = random_state

    def _n_layers(self) -> int:
        return 2 * len(tuple(self.hidden))

    def state_shapes(self) -> dict[str, Shape]:
        h, f = sizes(*self.hidden), self.input_shape_[0]
        return self._layer_shapes([f, *h, *h[-2::-1], f])

    def _build(self, layers: list[tuple[np.ndarray, np.ndarray]]) -> Any:
        return _dense_module([layers[0][0].shape[1], *[w.shape[0] for w, _ in layers]])

    def _layer_modules(self, module: Any) -> list[Any]:
        import torch.nn as nn

        return [m for m in module if isinstance(m, nn.Linear)]

    def fit(self, X: np.ndarray, y: None = None, progress: Progress | None = None) -> DenseAutoencoder:  # noqa: N803
        h = tuple(self.hidden)
        check_param("hidden", self.hidden, len(h) >= 1 and all(isinstance(v, int) and v >= 1 for v in h),
                    "a non-empty tuple of positive integers")
        self._check_training_params()
        x = self._check_input(X, fitting=True)
        d = x.shape[1]
        self._train(lambda: _dense_module([d, *h, *h[-2::-1], d]), x, progress)
        return self

    def score_graph(self, g: ScoreGraph, x: str) -> str:
        """The layers (``Gemm`` + ``Relu``, linear output ``reconstruction``, also a graph output) and the mean
        squared error of the reconstruction."""
        layers = self.layers()
        h = x
        for i, (w, b) in enumerate(layers):
            last = i == len(layers) - 1
            h = g.node("Gemm", [h, g.const(f"dense_{i}/weights", w), g.const(f"dense_{i}/bias", b)],
                       "reconstruction" if last else f"dense_{i}/linear", transB=1)
            if not last:
                h = g.node("Relu", [h], f"dense_{i}/out")
        g.output("reconstruction", int(layers[-1][0].shape[0]))
        error = g.node("Sub", [h, x], "error")
        return g.node("ReduceMean", [g.node("Mul", [error, error], "squared")], "score", axes=[1], keepdims=0)

    def activations(self, x: np.ndarray) -> list[np.ndarray]:
        outs, h = [], x
        layers = self.layers()
        for i, (w, b) in enumerate(layers):
            h = h @ w.T + b
            if i < len(layers) - 1:
                h = np.maximum(h, 0.0)
            outs.append(h)
        return outs

    def _input_op(self, ctx: LoweringContext, q_in: QParams) -> Op:
        return ctx.feature_input(q_in, "requantize_s64_s8")

    def _layer_op(self, i: int, src: str, dst: str, w: np.ndarray, b: np.ndarray, q_in: QParams, q_out: QParams,
                  last: bool) -> Op:
        return quantize_layer("fully_connected_s8", src, dst, w, b, q_in, q_out, not last)

    @classmethod
    def flash_lower_bound(cls, params: dict[str, Any], n_inputs: int, n_channels: int) -> int:
        h = tuple({**cls().get_params(), **params}["hidden"])
        dims = [n_inputs, *h, *h[-2::-1], n_inputs]
        return sum(a * b + 4 * b for a, b in zip(dims[:-1], dims[1:], strict=True))  # int8 weights, int32 bias

    @classmethod
    def max_inputs(cls, params: dict[str, Any]) -> int | None:
        return MAX_FAN_IN  # every feature is an input of the first layer

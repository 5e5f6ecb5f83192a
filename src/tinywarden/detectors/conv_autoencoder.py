"""Tiny 1-D convolutional autoencoder over the raw (per-channel scaled) window."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from tinywarden.arith import QParams
from tinywarden.detectors._torch import Progress, TorchAutoencoder
from tinywarden.detectors.base import Shape, check_param, sizes
from tinywarden.detectors.lowering import MAX_FAN_IN, LoweringContext, quantize_layer
from tinywarden.errors import DataError
from tinywarden.kernels import Op


def _conv_module(n_in: int, channels: list[int], kernel: int) -> Any:
    import torch
    import torch.nn as nn

    class ConvAE(nn.Module):
        """Encoder: stride-2 convs; decoder: nearest x2 upsample + conv; ReLU everywhere but the output."""

        def __init__(self) -> None:
            super().__init__()
            pad = kernel // 2
            enc, dec = [], []
            prev = n_in
            for ch in channels:
                enc.append(nn.Conv1d(prev, ch, kernel, stride=2, padding=pad))
                prev = ch
            for ch in [*channels[-2::-1], n_in]:
                dec.append(nn.Conv1d(prev, ch, kernel, stride=1, padding=pad))
                prev = ch
            self.enc = nn.ModuleList(enc)
            self.dec = nn.ModuleList(dec)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (n, window, channels)
            h = x.transpose(1, 2)
            for conv in self.enc:
                h = torch.relu(conv(h))
            for i, conv in enumerate(self.dec):
                h = conv(torch.repeat_interleave(h, 2, dim=2))
                if i < len(self.dec) - 1:
                    h = torch.relu(h)
            return h.transpose(1, 2)

    return ConvAE()


class ConvAutoencoder(TorchAutoencoder):
    """1-D conv autoencoder on raw windows ``(n, window, channels)``; score = mean squared error.

    Encoder layers halve the time axis (kernel ``kernel_size``, stride 2); the decoder mirrors them
    with nearest-neighbour x2 upsampling followed by a stride-1 conv. Weights are stored as ``k{i}_``
    (out x in x kernel) and ``c{i}_`` (bias), encoder layers first.

    >>> rng = np.random.default_rng(0)
    >>> det = ConvAutoencoder(channels=(4,), epochs=2).fit(rng.normal(size=(64, 16, 3)))
    >>> det.score_samples(rng.normal(size=(2, 16, 3))).shape
    (2,)
    """

    name: ClassVar[str] = "conv_ae"
    search_space: ClassVar[tuple[dict[str, Any], ...]] = ({"channels": (4,)}, {"channels": (8, 4)})
    input_kind: ClassVar[str] = "window"  # type: ignore[assignment]
    weight_prefix: ClassVar[str] = "k"
    bias_prefix: ClassVar[str] = "c"

    def __init__(
        self,
        channels: tuple[int, ...] = (8, 4),
        kernel_size: int = 5,
        epochs: int = 20,
        max_steps: int = 2000,
        batch_size: int = 128,
        lr: float = 3e-3,
        random_state: int = 0,
    ):
        self.channels = channels
        self.kernel_size = kernel_size
        self.epochs = epochs
        self.max_steps = max_steps
        self.batch_size = batch_size
        self.lr = lr
        self.random_state = random_state

    def _n_layers(self) -> int:
        return 2 * len(tuple(self.channels))

    def state_shapes(self) -> dict[str, Shape]:
        ch, (k,), c = sizes(*self.channels), sizes(self.kernel_size), self.input_shape_[1]
        return self._layer_shapes([c, *ch, *ch[-2::-1], c], (k,))

    def _build(self, layers: list[tuple[np.ndarray, np.ndarray]]) -> Any:
        enc_channels = [k.shape[0] for k, _ in layers[: len(layers) // 2]]
        return _conv_module(layers[0][0].shape[1], enc_channels, layers[0][0].shape[2])

    def _layer_modules(self, module: Any) -> list[Any]:
        return [*module.enc, *module.dec]

    def fit(self, X: np.ndarray, y: None = None, progress: Progress | None = None) -> ConvAutoencoder:  # noqa: N803
        ch = tuple(self.channels)
        check_param("channels", self.channels, len(ch) >= 1 and all(isinstance(v, int) and v >= 1 for v in ch),
                    "a non-empty tuple of positive integers")
        k = self.kernel_size
        check_param("kernel_size", k, isinstance(k, int) and k >= 1 and k % 2 == 1, "an odd integer >= 1")
        self._check_training_params()
        x = self._check_input(X, fitting=True)
        if x.shape[1] % (2 ** len(ch)):
            raise DataError(
                f"ConvAutoencoder with {len(ch)} layers needs a window divisible by {2 ** len(ch)}, got {x.shape[1]}"
            )
        self._train(lambda: _conv_module(x.shape[2], list(ch), k), x, progress)
        return self

    def activations(self, x: np.ndarray) -> list[np.ndarray]:
        import torch

        m = self.torch_module()
        outs = []
        with torch.no_grad():
            h = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).transpose(1, 2)
            for conv in m.enc:
                h = torch.relu(conv(h))
                outs.append(h.transpose(1, 2).double().numpy())
            for i, conv in enumerate(m.dec):
                h = conv(torch.repeat_interleave(h, 2, dim=2))
                if i < len(m.dec) - 1:
                    h = torch.relu(h)
                outs.append(h.transpose(1, 2).double().numpy())
        return outs

    def _input_op(self, ctx: LoweringContext, q_in: QParams) -> Op:
        return ctx.window_input(q_in)

    def _layer_op(self, i: int, src: str, dst: str, w: np.ndarray, b: np.ndarray, q_in: QParams, q_out: QParams,
                  last: bool) -> Op:
        enc = i < self._n_layers() // 2
        attrs = {"stride": 2 if enc else 1, "pad": w.shape[2] // 2, "upsample": 1 if enc else 2}
        return quantize_layer("convolve_1d_s8", src, dst, w, b, q_in, q_out, not last, attrs)

    @classmethod
    def flash_lower_bound(cls, params: dict[str, Any], n_inputs: int, n_channels: int) -> int:
        ch = tuple({**cls().get_params(), **params}["channels"])
        chans = [n_channels, *ch, *ch[-2::-1], n_channels]
        return sum(a * b + 4 * b for a, b in zip(chans[:-1], chans[1:], strict=True))

    @classmethod
    def max_inputs(cls, params: dict[str, Any]) -> int | None:
        k = {**cls().get_params(), **params}["kernel_size"]
        # every channel is kernel_size inputs of the first layer; a bad kernel_size is fit's one-line refusal
        return MAX_FAN_IN // k if isinstance(k, int) and k >= 1 else None

"""Tiny 1-D convolutional autoencoder over the raw (per-channel scaled) window."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from tinywarden.detectors._torch import Progress, reconstruction_error, steps_for, train_reconstruction
from tinywarden.detectors.base import Detector, check_param
from tinywarden.errors import DataError


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


class ConvAutoencoder(Detector):
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
    input_kind: ClassVar[str] = "window"  # type: ignore[assignment]

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

    def _state_names(self) -> tuple[str, ...]:
        return tuple(n for i in range(self._n_layers()) for n in (f"k{i}_", f"c{i}_"))

    def _validate(self) -> None:
        ch = tuple(self.channels)
        check_param("channels", self.channels, len(ch) >= 1 and all(isinstance(v, int) and v >= 1 for v in ch),
                    "a non-empty tuple of positive integers")
        k = self.kernel_size
        check_param("kernel_size", k, isinstance(k, int) and k >= 1 and k % 2 == 1, "an odd integer >= 1")
        check_param("epochs", self.epochs, isinstance(self.epochs, int) and self.epochs >= 1, "an integer >= 1")
        check_param("max_steps", self.max_steps, isinstance(self.max_steps, int) and self.max_steps >= 1,
                    "an integer >= 1")
        check_param("lr", self.lr, self.lr > 0, "a positive float")

    def fit(self, X: np.ndarray, y: None = None, progress: Progress | None = None) -> ConvAutoencoder:  # noqa: N803
        self._validate()
        x = self._check_input(X, fitting=True)
        w = x.shape[1]
        depth = len(tuple(self.channels))
        if w % (2**depth):
            raise DataError(f"ConvAutoencoder with {depth} layers needs a window divisible by {2**depth}, got {w}")
        module = _conv_module(x.shape[2], list(self.channels), self.kernel_size)
        steps = steps_for(len(x), self.batch_size, self.epochs, self.max_steps)
        self.train_loss_ = train_reconstruction(
            module, x, steps=steps, batch_size=self.batch_size, lr=self.lr, seed=self.random_state,
            progress=progress,
        )
        self.input_shape_ = x.shape[1:]
        convs = [*module.enc, *module.dec]
        for i, conv in enumerate(convs):
            setattr(self, f"k{i}_", conv.weight.detach().double().numpy().copy())
            setattr(self, f"c{i}_", conv.bias.detach().double().numpy().copy())
        self._module = module
        return self

    def layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(kernel (out x in x k), bias)]``: encoder (stride 2) then decoder (upsample x2, stride 1)."""
        self._check_fitted()
        return [(getattr(self, f"k{i}_"), getattr(self, f"c{i}_")) for i in range(self._n_layers())]

    def _restore(self) -> None:
        import torch

        layers = self.layers()
        n_in = layers[0][0].shape[1]
        enc_channels = [k.shape[0] for k, _ in layers[: len(layers) // 2]]
        module = _conv_module(n_in, enc_channels, layers[0][0].shape[2])
        with torch.no_grad():
            for conv, (k, b) in zip([*module.enc, *module.dec], layers, strict=True):
                conv.weight.copy_(torch.from_numpy(k.astype(np.float32)))
                conv.bias.copy_(torch.from_numpy(b.astype(np.float32)))
        module.eval()
        self._module = module

    def score_samples(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        self._check_fitted()
        x = self._check_input(X)
        if getattr(self, "_module", None) is None:
            self._restore()
        return reconstruction_error(self._module, x)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_module", None)
        return state

"""Tiny dense autoencoder on window features: reconstruction error of normal behaviour."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from tinywarden.detectors._torch import Progress, reconstruction_error, steps_for, train_reconstruction
from tinywarden.detectors.base import Detector, check_param


def _dense_module(sizes: list[int]) -> Any:
    import torch.nn as nn

    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class DenseAutoencoder(Detector):
    """Fully connected autoencoder ``d -> hidden... -> hidden[::-1]... -> d`` with ReLU, linear output.

    Score = mean squared reconstruction error of the scaled feature vector. Weights are stored as
    ``w{i}_`` (out x in) and ``b{i}_`` arrays, the layout the int8 path quantizes.

    >>> rng = np.random.default_rng(0)
    >>> det = DenseAutoencoder(hidden=(4, 2), epochs=5).fit(rng.normal(size=(256, 6)))
    >>> det.n_params_ == (6 * 4 + 4) + (4 * 2 + 2) + (2 * 4 + 4) + (4 * 6 + 6)
    True
    """

    name: ClassVar[str] = "dense_ae"

    def __init__(
        self,
        hidden: tuple[int, ...] = (12, 4),
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

    def _state_names(self) -> tuple[str, ...]:
        return tuple(n for i in range(self._n_layers()) for n in (f"w{i}_", f"b{i}_"))

    def _validate(self) -> None:
        h = tuple(self.hidden)
        check_param("hidden", self.hidden, len(h) >= 1 and all(isinstance(v, int) and v >= 1 for v in h),
                    "a non-empty tuple of positive integers")
        check_param("epochs", self.epochs, isinstance(self.epochs, int) and self.epochs >= 1, "an integer >= 1")
        check_param("max_steps", self.max_steps, isinstance(self.max_steps, int) and self.max_steps >= 1,
                    "an integer >= 1")
        check_param("batch_size", self.batch_size, isinstance(self.batch_size, int) and self.batch_size >= 1,
                    "an integer >= 1")
        check_param("lr", self.lr, self.lr > 0, "a positive float")

    def fit(self, X: np.ndarray, y: None = None, progress: Progress | None = None) -> DenseAutoencoder:  # noqa: N803
        self._validate()
        x = self._check_input(X, fitting=True)
        d = x.shape[1]
        h = list(self.hidden)
        module = _dense_module([d, *h, *h[-2::-1], d])
        steps = steps_for(len(x), self.batch_size, self.epochs, self.max_steps)
        self.train_loss_ = train_reconstruction(
            module, x, steps=steps, batch_size=self.batch_size, lr=self.lr, seed=self.random_state,
            progress=progress,
        )
        self.input_shape_ = x.shape[1:]
        self._set_from_module(module)
        return self

    def _set_from_module(self, module: Any) -> None:
        import torch.nn as nn

        linears = [m for m in module if isinstance(m, nn.Linear)]
        for i, lin in enumerate(linears):
            setattr(self, f"w{i}_", lin.weight.detach().double().numpy().copy())
            setattr(self, f"b{i}_", lin.bias.detach().double().numpy().copy())
        self._module = module

    def layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(weight (out x in), bias)]`` in order; ReLU follows every layer but the last."""
        self._check_fitted()
        return [(getattr(self, f"w{i}_"), getattr(self, f"b{i}_")) for i in range(self._n_layers())]

    def _restore(self) -> None:
        import torch

        layers = self.layers()
        module = _dense_module([layers[0][0].shape[1], *[w.shape[0] for w, _ in layers]])
        with torch.no_grad():
            for lin, (w, b) in zip([m for m in module if isinstance(m, torch.nn.Linear)], layers, strict=True):
                lin.weight.copy_(torch.from_numpy(w.astype(np.float32)))
                lin.bias.copy_(torch.from_numpy(b.astype(np.float32)))
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
        state.pop("_module", None)  # rebuilt from the weight arrays on demand
        return state

"""Shared PyTorch training loop for the autoencoders (CPU only, seeded, bounded number of steps)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np

from tinywarden.arith import QParams
from tinywarden.detectors.base import Detector, Shape, check_param
from tinywarden.detectors.lowering import Lowered, LoweringContext, act_qparams, autoencoder_input
from tinywarden.kernels import Op, TensorSpec

Progress = Callable[[int, int], None]


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one intra-op thread, then restore the setting.

    These models are a few thousand parameters: splitting a 128 x 66 matmul across threads costs more
    than it saves, and on a loaded machine (parallel test workers, a busy gateway) spinning threads make
    training 50x slower than one thread.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_reconstruction(*args: Any, **kwargs: Any) -> float:
    """Train ``module`` to reproduce ``x`` (MSE, Adam) on one thread; see :func:`_train_reconstruction`."""
    with single_thread():
        return _train_reconstruction(*args, **kwargs)


def _train_reconstruction(
    module: object,
    x: np.ndarray,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    progress: Progress | None = None,
) -> float:
    """Train ``module`` to reproduce ``x`` (MSE, Adam); return the last epoch-average training loss.

    ``steps`` bounds the number of optimiser steps whatever the data size, so 100k windows train in
    seconds on a CPU: autoencoders on normal telemetry converge long before many epochs have passed.
    """
    import torch

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    data = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    opt = torch.optim.Adam(module.parameters(), lr=lr)  # type: ignore[attr-defined]
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1), eta_min=lr * 0.05)
    n = len(data)
    bs = min(batch_size, n)
    perm = torch.randperm(n, generator=gen)
    pos = 0
    loss_sum, loss_n = 0.0, 0
    module.train()  # type: ignore[attr-defined]
    for step in range(steps):
        if pos + bs > n:
            perm = torch.randperm(n, generator=gen)
            pos = 0
        batch = data[perm[pos : pos + bs]]
        pos += bs
        opt.zero_grad()
        loss = torch.mean((module(batch) - batch) ** 2)  # type: ignore[operator]
        loss.backward()
        opt.step()
        sched.step()
        loss_sum += loss.detach().item()
        loss_n += 1
        if progress is not None and (step % 50 == 0 or step == steps - 1):
            progress(step + 1, steps)
    module.eval()  # type: ignore[attr-defined]
    return loss_sum / max(loss_n, 1)


def reconstruction_error(module: object, x: np.ndarray, batch: int = 8192) -> np.ndarray:
    """Mean squared reconstruction error per sample, float64 (computed on one thread)."""
    with single_thread():
        return _reconstruction_error(module, x, batch)


def _reconstruction_error(module: object, x: np.ndarray, batch: int) -> np.ndarray:
    import torch

    out = np.empty(len(x))
    with torch.no_grad():
        for lo in range(0, len(x), batch):
            xb = torch.from_numpy(np.ascontiguousarray(x[lo : lo + batch], dtype=np.float32))
            err = (module(xb) - xb) ** 2  # type: ignore[operator]
            out[lo : lo + batch] = err.reshape(len(xb), -1).mean(dim=1).double().numpy()
    return out


def steps_for(n: int, batch_size: int, epochs: int, max_steps: int) -> int:
    """Optimiser steps for ``epochs`` passes over ``n`` samples, capped at ``max_steps``."""
    return max(1, min(max_steps, epochs * -(-n // batch_size)))


class TorchAutoencoder(Detector):
    """What the torch autoencoders share: training parameters, weight storage, scoring, pickling.

    A subclass defines ``_n_layers()``, ``_build(layer_shapes)`` (a torch module from stored weights),
    ``_layer_modules(module)`` (its weighted layers in storage order) and the names of its weight and bias
    arrays (``weight_prefix``/``bias_prefix``: arrays are ``<prefix><i>_``).
    """

    weight_prefix: ClassVar[str] = "w"
    bias_prefix: ClassVar[str] = "b"

    def _n_layers(self) -> int:
        raise NotImplementedError

    def _build(self, layers: list[tuple[np.ndarray, np.ndarray]]) -> Any:
        raise NotImplementedError

    def _layer_modules(self, module: Any) -> list[Any]:
        raise NotImplementedError

    def _state_names(self) -> tuple[str, ...]:
        w, b = self.weight_prefix, self.bias_prefix
        return tuple(n for i in range(self._n_layers()) for n in (f"{w}{i}_", f"{b}{i}_"))

    def _layer_shapes(self, dims: list[int], kernel: tuple[int, ...] = ()) -> dict[str, Shape]:
        """Layer ``i`` maps ``dims[i]`` to ``dims[i + 1]``: weight ``(out, in, *kernel)``, bias ``(out,)``."""
        shapes: dict[str, Shape] = {}
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            shapes[f"{self.weight_prefix}{i}_"] = (d_out, d_in, *kernel)
            shapes[f"{self.bias_prefix}{i}_"] = (d_out,)
        return shapes

    def _check_training_params(self) -> None:
        for name in ("epochs", "max_steps", "batch_size"):
            value = getattr(self, name)
            check_param(name, value, isinstance(value, int) and value >= 1, "an integer >= 1")
        check_param("lr", self.lr, isinstance(self.lr, int | float) and self.lr > 0, "a positive float")

    def _train(self, build: Callable[[], Any], x: np.ndarray, progress: Progress | None) -> None:
        """Build a module (its initial weights seeded by ``random_state``), train it on ``x`` and store its
        weights as this detector's learned state."""
        import torch

        torch.manual_seed(self.random_state)
        module = build()
        steps = steps_for(len(x), self.batch_size, self.epochs, self.max_steps)
        self.train_loss_ = train_reconstruction(
            module, x, steps=steps, batch_size=self.batch_size, lr=self.lr, seed=self.random_state, progress=progress
        )
        self.input_shape_ = x.shape[1:]
        for i, layer in enumerate(self._layer_modules(module)):
            setattr(self, f"{self.weight_prefix}{i}_", layer.weight.detach().double().numpy().copy())
            setattr(self, f"{self.bias_prefix}{i}_", layer.bias.detach().double().numpy().copy())
        self._module = module

    def layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(weight, bias)]`` of every weighted layer, in order."""
        self._check_fitted()
        return [
            (getattr(self, f"{self.weight_prefix}{i}_"), getattr(self, f"{self.bias_prefix}{i}_"))
            for i in range(self._n_layers())
        ]

    def torch_module(self) -> Any:
        """The fitted model as a torch module (rebuilt from the weight arrays after loading or unpickling)."""
        self._check_fitted()
        if getattr(self, "_module", None) is None:
            self._restore()
        return self._module

    # -- int8 lowering of the layer-stack autoencoders (dense, conv); the GRU has its own -------------------
    def activations(self, x: np.ndarray) -> list[np.ndarray]:
        """The float output of every weighted layer (after its ReLU, if any) for inputs ``x``."""
        raise NotImplementedError

    def _input_op(self, ctx: LoweringContext, q_in: QParams) -> Op:
        raise NotImplementedError

    def _layer_op(self, i: int, src: str, dst: str, w: np.ndarray, b: np.ndarray, q_in: QParams, q_out: QParams,
                  last: bool) -> Op:
        raise NotImplementedError

    def lower(self, ctx: LoweringContext) -> Lowered:
        """int8 per-channel weights and int8 asymmetric activations from the fit activations' ranges; the output
        layer uses the input's quantization, so the score is simply ``sum (q_out - q_in)**2``."""
        acts = self.activations(ctx.fit_scaled)
        q_in = autoencoder_input(ctx, acts[-1])
        low = Lowered([TensorSpec("input", "int8", tuple(ctx.fit_scaled.shape[1:]))], [self._input_op(ctx, q_in)])
        layers = self.layers()
        prev, q_prev = "input", q_in
        for i, (w, b) in enumerate(layers):
            last = i == len(layers) - 1
            q_out = q_in if last else act_qparams(acts[i])
            name = "recon" if last else f"h{i}"
            low.tensors.append(TensorSpec(name, "int8", tuple(acts[i].shape[1:])))
            low.ops.append(self._layer_op(i, prev, name, w, b, q_prev, q_out, last))
            prev, q_prev = name, q_out
        low.ops.append(Op("sum_sq_diff_s8", ("recon", "input"), "score", {"shift": 0}))
        low.info["score_unit"] = q_in.scale**2 / ctx.n_inputs  # one integer unit of score in float-score units
        low.info["input_scale"], low.info["input_zero_point"] = q_in.scale, q_in.zero_point
        return low

    def _restore(self) -> None:
        import torch

        layers = self.layers()
        module = self._build(layers)
        with torch.no_grad():
            for layer, (w, b) in zip(self._layer_modules(module), layers, strict=True):
                layer.weight.copy_(torch.from_numpy(w.astype(np.float32)))
                layer.bias.copy_(torch.from_numpy(b.astype(np.float32)))
        module.eval()
        self._module = module

    def score_samples(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """Mean squared reconstruction error per sample."""
        self._check_fitted()
        x = self._check_input(X)
        if getattr(self, "_module", None) is None:
            self._restore()
        return reconstruction_error(self._module, x)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_module", None)  # rebuilt from the weight arrays on demand
        return state

"""Tiny GRU over the raw window: one-step forecaster (or per-step autoencoder); score = mean squared error.

Microcontroller budget (int8 weights, int16 hidden state, the target's 8 KB flash / 4 KB RAM), for
``C`` channels, hidden size ``H`` and window ``W``:

- flash: ``3 (C H + H H) + C H`` int8 weights plus ``6 H + C`` int32 biases
  (PyTorch's GRU has an input and a recurrent bias per gate), e.g. C=38, H=16: 2592 + 608 weights
  = 3200 B, 134 biases = 536 B, about 3.7 KB before code;
- RAM: the window ring buffer ``W C`` int16 (W=16, C=38: 1216 B), the state ``H`` int16 (32 B) and
  one step's gate scratch ``3 H`` int32 (192 B): about 1.5 KB.

So H=16 on 38 channels fits with room to spare; flash grows as ``4 C H + 3 H^2``, so H=32 on 38
channels (7.9 KB of weights) does not leave room for code, and H <= 24 is the practical limit there.

Time: a window costs about ``W (3 C H + 3 H^2 + C H)`` multiply-accumulates, so the default is H=8 (with
the learning rate doubled to 0.01): on the demo's window (128 x 6) it takes a third of H=16's instructions
per window on a Cortex-M4, with no loss of ROC AUC on SMD, ASD or the simulator (measured with
``benchmarks/family_defaults.py``: ``benchmarks/results/family_defaults.md``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np

from tinywarden.arith import round_half_away
from tinywarden.detectors._torch import Progress, TorchAutoencoder, single_thread, steps_for, train_reconstruction
from tinywarden.detectors.base import Shape, check_param, sizes
from tinywarden.detectors.lowering import Lowered, LoweringContext, autoencoder_input, int8_rows
from tinywarden.errors import ConfigError
from tinywarden.kernels import Op, TensorSpec
from tinywarden.kernels.gru_s8 import GRU_MAX_BIAS, GRU_MAX_CHANNELS, GRU_MAX_HIDDEN, GRU_MAX_MULTIPLIER

_GRU_ARRAYS = ("w_ih_", "w_hh_", "b_ih_", "b_hh_", "w_out_", "b_out_")


def _gru_module(n_in: int, hidden: int, mode: str) -> Any:
    import torch
    import torch.nn as nn

    class TinyGRU(nn.Module):
        """GRU over time, linear read-out of every hidden state.

        The output is aligned with the input so the shared reconstruction loop trains it: in forecast
        mode step ``t`` holds the prediction of ``x[t]`` made from ``h[t-1]`` and step 0 copies ``x[0]``
        (nothing to forecast it from; it adds no error and no gradient).
        """

        def __init__(self) -> None:
            super().__init__()
            self.gru = nn.GRU(n_in, hidden, batch_first=True)
            self.out = nn.Linear(hidden, n_in)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (n, window, channels)
            h, _ = self.gru(x)
            y = self.out(h)
            if mode == "reconstruct":
                return y
            return torch.cat([x[:, :1], y[:, :-1]], dim=1)

    return TinyGRU()


def multiplier_shift(reals: np.ndarray) -> int:
    """The one right shift that gives the largest of ``reals`` the largest multiplier below
    :data:`GRU_MAX_MULTIPLIER` (``multiplier = round(real * 2**shift)``), within the kernel's [1, 62]."""
    top = float(np.max(reals)) if reals.size else 0.0
    if top <= 0.0:
        return 62
    return int(np.clip(np.floor(np.log2(GRU_MAX_MULTIPLIER / top)), 1, 62))


class GRUAutoencoder(TorchAutoencoder):
    """A GRU with ``hidden`` units reads the scaled raw window; a linear layer reads out each step.

    ``mode="forecast"`` (default): predict the next sample from the state so far; the score is the
    mean squared one-step forecast error over the window. ``mode="reconstruct"``: reproduce the current
    sample through the ``hidden``-unit state (a bottleneck when ``hidden < channels``). Weights are
    stored in PyTorch's layout: ``w_ih_`` (3H x C, gates r|z|n), ``w_hh_`` (3H x H), ``b_ih_``, ``b_hh_``,
    ``w_out_`` (C x H), ``b_out_``. See the module docstring for the int8 flash/RAM arithmetic.

    >>> rng = np.random.default_rng(0)
    >>> det = GRUAutoencoder(hidden=4, max_steps=20).fit(rng.normal(size=(64, 8, 3)))
    >>> det.n_params_ == 3 * (3 * 4 + 4 * 4 + 2 * 4) + (4 * 3 + 3)
    True
    """

    name: ClassVar[str] = "gru_ae"
    search_space: ClassVar[tuple[dict[str, Any], ...]] = ({"hidden": 8},)
    input_kind: ClassVar[str] = "window"  # type: ignore[assignment]
    state_arrays: ClassVar[tuple[str, ...]] = _GRU_ARRAYS

    def __init__(
        self,
        hidden: int = 8,
        mode: Literal["forecast", "reconstruct"] = "forecast",
        epochs: int = 20,
        max_steps: int = 1500,
        batch_size: int = 128,
        lr: float = 1e-2,
        random_state: int = 0,
    ):
        self.hidden = hidden
        self.mode = mode
        self.epochs = epochs
        self.max_steps = max_steps
        self.batch_size = batch_size
        self.lr = lr
        self.random_state = random_state

    def _validate(self) -> None:
        check_param("hidden", self.hidden, isinstance(self.hidden, int) and self.hidden >= 1, "an integer >= 1")
        check_param("mode", self.mode, self.mode in ("forecast", "reconstruct"), "'forecast' or 'reconstruct'")
        self._check_training_params()

    def _state_names(self) -> tuple[str, ...]:
        return _GRU_ARRAYS

    def state_shapes(self) -> dict[str, Shape]:
        c, (h,) = self.input_shape_[1], sizes(self.hidden)
        return {"w_ih_": (3 * h, c), "w_hh_": (3 * h, h), "b_ih_": (3 * h,), "b_hh_": (3 * h,), "w_out_": (c, h),
                "b_out_": (c,)}

    def layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(w_ih_, b_ih_), (w_hh_, b_hh_), (w_out_, b_out_)]``: input and recurrent gates, read-out."""
        self._check_fitted()
        return [(self.w_ih_, self.b_ih_), (self.w_hh_, self.b_hh_), (self.w_out_, self.b_out_)]

    def fit(self, X: np.ndarray, y: None = None, progress: Progress | None = None) -> GRUAutoencoder:  # noqa: N803
        self._validate()
        x = self._check_input(X, fitting=True)
        import torch

        torch.manual_seed(self.random_state)  # initial weights come from random_state, not global state
        module = _gru_module(x.shape[2], self.hidden, self.mode)
        steps = steps_for(len(x), self.batch_size, self.epochs, self.max_steps)
        self.train_loss_ = train_reconstruction(
            module, x, steps=steps, batch_size=self.batch_size, lr=self.lr, seed=self.random_state,
            progress=progress,
        )
        self.input_shape_ = x.shape[1:]
        tensors = (module.gru.weight_ih_l0, module.gru.weight_hh_l0, module.gru.bias_ih_l0, module.gru.bias_hh_l0,
                   module.out.weight, module.out.bias)
        for name, t in zip(_GRU_ARRAYS, tensors, strict=True):
            setattr(self, name, t.detach().double().numpy().copy())
        self._module = module
        return self

    def flash_ram_bytes(self, window: int | None = None) -> tuple[int, int]:
        """``(flash, ram)`` bytes of the int8-weight / int32-bias / int16-state model (code excluded).

        RAM counts the int16 window buffer, the int16 hidden state and one step's int32 gate scratch.
        """
        self._check_fitted()
        w = int(self.input_shape_[0]) if window is None else int(window)
        c, h = int(self.w_ih_.shape[1]), int(self.w_hh_.shape[1])
        weights = self.w_ih_.size + self.w_hh_.size + self.w_out_.size
        biases = self.b_ih_.size + self.b_hh_.size + self.b_out_.size
        return weights + 4 * biases, 2 * w * c + 2 * h + 4 * 3 * h

    def _restore(self) -> None:
        import torch

        module = _gru_module(int(self.w_ih_.shape[1]), int(self.w_hh_.shape[1]), self.mode)
        tensors = (module.gru.weight_ih_l0, module.gru.weight_hh_l0, module.gru.bias_ih_l0, module.gru.bias_hh_l0,
                   module.out.weight, module.out.bias)
        with torch.no_grad():
            for name, t in zip(_GRU_ARRAYS, tensors, strict=True):
                t.copy_(torch.from_numpy(getattr(self, name).astype(np.float32)))
        module.eval()
        self._module = module

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """The float reconstruction (or forecast) of windows ``x`` ``(n, window, channels)``."""
        import torch

        with single_thread(), torch.no_grad():
            return self.torch_module()(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).double().numpy()

    def lower(self, ctx: LoweringContext) -> Lowered:
        """The GRU on the int8-rescaled window: gates in Q12, state in Q15, read-out in the input's
        quantization (as the autoencoders' output layer), so the score is ``sum (q_out - q_in)**2``."""
        self._check_fitted()
        hidden = self.w_hh_.shape[1]
        if hidden > GRU_MAX_HIDDEN:
            raise ConfigError(f"the int8 GRU supports hidden <= {GRU_MAX_HIDDEN} (its state is on the C stack), "
                              f"got {hidden}")
        fit = ctx.fit_scaled
        sample = fit[np.linspace(0, len(fit) - 1, min(len(fit), 512)).astype(np.int64)]
        q_in = autoencoder_input(ctx, self.reconstruct(sample))
        consts: dict[str, np.ndarray] = {}
        reals: dict[str, np.ndarray] = {}
        for name, (w, b), s_src, s_dst in (("ih", (self.w_ih_, self.b_ih_), q_in.scale, 2.0**-12),
                                           ("hh", (self.w_hh_, self.b_hh_), 2.0**-15, 2.0**-12),
                                           ("out", (self.w_out_, self.b_out_), 2.0**-15, q_in.scale)):
            wq, w_scale = int8_rows(w)
            consts[f"w_{name}"] = wq.astype(np.int8)
            consts[f"b_{name}"] = np.clip(round_half_away(b / (s_src * w_scale)), -GRU_MAX_BIAS,
                                          GRU_MAX_BIAS).astype(np.int32)
            reals[name] = s_src * w_scale / s_dst  # one unit of a row's int32 sum, in output units
        # one shift for the gates (r and z add their input and recurrent products before it), one for the read-out
        gate_shift, out_shift = (multiplier_shift(np.concatenate([reals[k] for k in keys]))
                                 for keys in (("ih", "hh"), ("out",)))
        for name, sh in (("ih", gate_shift), ("hh", gate_shift), ("out", out_shift)):
            consts[f"{name}_multiplier"] = np.clip(round_half_away(reals[name] * 2.0**sh), 0,
                                                   GRU_MAX_MULTIPLIER).astype(np.int32)
        grid = -8.0 + np.arange(257) / 16.0  # tanh at steps of 1/16 over [-8, 8], Q15
        consts["tanh"] = round_half_away(32767.0 * np.tanh(grid)).astype(np.int16)
        shape = tuple(fit.shape[1:])
        return Lowered(
            [TensorSpec("input", "int8", shape), TensorSpec("recon", "int8", shape)],
            [ctx.window_input(q_in),
             Op("gru_s8", ("input",), "recon",
                {"hidden": hidden, "forecast": int(self.mode == "forecast"), "input_offset": -q_in.zero_point,
                 "output_offset": q_in.zero_point, "gate_shift": gate_shift, "out_shift": out_shift}, consts),
             Op("sum_sq_diff_s8", ("recon", "input"), "score", {"shift": 0})],
            {"score_unit": q_in.scale**2 / int(np.prod(shape)), "input_scale": q_in.scale,
             "input_zero_point": q_in.zero_point})

    @classmethod
    def flash_lower_bound(cls, params: dict[str, Any], n_inputs: int, n_channels: int) -> int:
        h = int({**cls().get_params(), **params}["hidden"])
        return 3 * h * (n_channels + h) + h * n_channels  # int8 weights

    @classmethod
    def max_inputs(cls, params: dict[str, Any]) -> int | None:
        return GRU_MAX_CHANNELS  # gru_s8's int32 sums over the channels

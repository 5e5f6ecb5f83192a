"""Shared PyTorch training loop for the autoencoders (CPU only, seeded, bounded number of steps)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Progress = Callable[[int, int], None]


def train_reconstruction(
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
    """Mean squared reconstruction error per sample, float64."""
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

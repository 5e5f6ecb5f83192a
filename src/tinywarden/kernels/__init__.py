"""The integer kernels of the on-device program, one module each (see :mod:`tinywarden.kernels.base`).

Importing this package registers every built-in kernel in :data:`KERNELS`; a kernel defined elsewhere
(a plug-in family's) registers itself with :func:`register_kernel` the same way.
"""

from tinywarden.kernels import (  # noqa: F401 (each module registers its kernel)
    ar_residual_s16,
    bounds_violation_s16,
    convolve_1d_s8,
    features_s16,
    fully_connected_s8,
    gru_s8,
    iforest_path_s16,
    knn_dist_s16,
    max_abs_s16,
    min_sq_dist_s16,
    pca_residual_s16,
    rbf_kernel_sum_s16,
    requantize_s16_s8,
    requantize_s64,
    sum_sq_diff_s8,
    sum_sq_s16,
)
from tinywarden.kernels.base import (
    CTYPES,
    KERNELS,
    KernelSpec,
    Op,
    ProgramView,
    StateField,
    StreamC,
    TensorSpec,
    register_kernel,
    score_kernel,
    score_total,
)

__all__ = [
    "CTYPES",
    "KERNELS",
    "KernelSpec",
    "Op",
    "ProgramView",
    "StateField",
    "StreamC",
    "TensorSpec",
    "register_kernel",
    "score_kernel",
    "score_total",
]

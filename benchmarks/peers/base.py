"""The interface every peer adapter follows (higher score = more anomalous, sizes after fitting)."""

from __future__ import annotations

import numpy as np
from sklearn.preprocessing import StandardScaler


class Peer:
    """A fitted-on-normal detector from another project, seen through one small interface.

    ``fit(X)`` takes unscaled window features of normal windows and returns ``self``;
    ``score_samples(X)`` returns one float per row, higher = more anomalous. After fitting,
    ``n_params_`` counts the learned numbers the model needs to score (its preprocessing included) and
    ``model_bytes_`` their size in the form the peer ships (float32 unless the adapter says otherwise).
    ``note`` says in one line what exactly is measured.
    """

    name: str = ""
    note: str = ""

    def fit(self, X: np.ndarray) -> Peer:  # noqa: N803
        raise NotImplementedError

    def score_samples(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        raise NotImplementedError

    @property
    def n_params_(self) -> int:
        raise NotImplementedError

    @property
    def model_bytes_(self) -> int:
        return 4 * self.n_params_


def fit_standard_scaler(x: np.ndarray) -> StandardScaler:
    """The README baselines' preprocessing: z-scaling learned on the training windows.

    (Min-max then z-scaling, as the README phrases it, is the same affine map as z-scaling alone.)
    scikit-learn leaves a feature that is constant in training unscaled (scale 1).
    """
    return StandardScaler().fit(x)

"""KitNET (the detector inside Kitsune, Mirsky et al., NDSS 2018): a faithful numpy re-implementation.

No maintained package of KitNET exists on PyPI, so this follows the authors' reference code
(``ymirsky/Kitsune-py``: ``KitNET/corClust.py``, ``KitNET/dA.py``, ``KitNET/KitNET.py``) step by step:

1. **feature mapping** (first ``fm_grace`` training samples): an incremental correlation-distance matrix
   of the features, single-linkage clustering, and the dendrogram broken into groups of at most
   ``max_ae_size`` features;
2. **anomaly-detector training** (the remaining training samples, one pass, one sample at a time):
   one small tied-weight sigmoid autoencoder per group, each min-max normalising its inputs with the
   running min/max it has seen, trained by SGD; an output autoencoder learns the vector of the
   ensemble's RMSEs;
3. **execution**: score = RMSE of the output autoencoder on the ensemble's RMSEs.

Kept as in the reference, on purpose: hidden size ``ceil(0.75 * inputs)``, learning rate 0.1,
``U(-1/n, 1/n)`` initial weights from ``RandomState(1234)``, and the hidden/visible bias updates by the
*mean* of the gradient (a scalar step for every unit, as ``numpy.mean(L_hbias, axis=0)`` does on a
1-D array there). Only the execution is vectorised over rows (it is a pure function once trained).
Kitsune's own packet features are not used: like every peer here it gets the shared window features.
"""

from __future__ import annotations

import math

import numpy as np
from benchmarks.peers.base import Peer
from scipy.cluster.hierarchy import ClusterNode, linkage, to_tree

_EPS = 1e-16  # the reference code's 0.0000000000000001 in the min-max denominator


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp overflows to inf for very negative x, which gives the right limit 0: not worth a warning
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


class CorClust:
    """Incremental correlation distance between features, and the grouping cut from its dendrogram."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.c = np.zeros(n)
        self.c_r = np.zeros(n)
        self.c_rs = np.zeros(n)
        self.C = np.zeros((n, n))
        self.N = 0

    def update(self, x: np.ndarray) -> None:
        self.N += 1
        self.c += x
        c_rt = x - self.c / self.N
        self.c_r += c_rt
        self.c_rs += c_rt**2
        self.C += np.outer(c_rt, c_rt)

    def corr_dist(self) -> np.ndarray:
        c_rs_sqrt = np.sqrt(self.c_rs)
        denom = np.outer(c_rs_sqrt, c_rs_sqrt)
        denom[denom == 0] = 1e-100
        d = 1 - self.C / denom
        d[d < 0] = 0
        return d

    def cluster(self, max_clust: int) -> list[list[int]]:
        if self.n == 1:
            return [[0]]
        d = self.corr_dist()
        z = linkage(d[np.triu_indices(self.n, 1)])  # scipy's default: single linkage, as the reference
        max_clust = min(max(max_clust, 1), self.n)
        return self._break(to_tree(z), max_clust)

    def _break(self, node: ClusterNode, max_clust: int) -> list[list[int]]:
        if node.count <= max_clust:
            return [node.pre_order()]
        return self._break(node.get_left(), max_clust) + self._break(node.get_right(), max_clust)


class DenoisingAE:
    """The reference ``dA`` with corruption 0: tied weights, sigmoid units, running min-max input."""

    def __init__(self, n_visible: int, lr: float, hidden_ratio: float) -> None:
        self.n_visible = n_visible
        self.n_hidden = int(math.ceil(n_visible * hidden_ratio))
        self.lr = lr
        self.norm_max = np.full(n_visible, -np.inf)
        self.norm_min = np.full(n_visible, np.inf)
        rng = np.random.RandomState(1234)
        a = 1.0 / n_visible
        self.W = rng.uniform(low=-a, high=a, size=(n_visible, self.n_hidden))
        self.hbias = np.zeros(self.n_hidden)
        self.vbias = np.zeros(n_visible)

    def train(self, x: np.ndarray) -> float:
        self.norm_max = np.maximum(self.norm_max, x)
        self.norm_min = np.minimum(self.norm_min, x)
        x = (x - self.norm_min) / (self.norm_max - self.norm_min + _EPS)
        y = _sigmoid(x @ self.W + self.hbias)
        z = _sigmoid(y @ self.W.T + self.vbias)
        l_h2 = x - z
        l_h1 = (l_h2 @ self.W) * y * (1 - y)
        self.W += self.lr * (np.outer(x, l_h1) + np.outer(l_h2, y))
        self.hbias += self.lr * np.mean(l_h1)
        self.vbias += self.lr * np.mean(l_h2)
        return float(np.sqrt(np.mean(l_h2**2)))

    def execute(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """RMSE of the reconstruction of every row of ``X`` (no learning)."""
        x = (X - self.norm_min) / (self.norm_max - self.norm_min + _EPS)
        z = _sigmoid(_sigmoid(x @ self.W + self.hbias) @ self.W.T + self.vbias)
        return np.sqrt(((x - z) ** 2).mean(axis=1))

    @property
    def n_params(self) -> int:
        return self.W.size + self.hbias.size + self.vbias.size + 2 * self.n_visible


class KitNET(Peer):
    """KitNET ensemble of autoencoders (see the module docstring); trained online in one pass.

    ``fm_fraction`` of the training windows build the feature map (Kitsune's FM grace period); the
    rest train the autoencoders (its AD grace period).
    """

    name = "kitnet"
    note = ("KitNET re-implemented from the Kitsune reference code (no maintained package): "
            "ensemble of dA's, max 10 features each, lr 0.1, hidden ratio 0.75, one online pass")

    def __init__(self, max_ae_size: int = 10, fm_fraction: float = 0.2, lr: float = 0.1,
                 hidden_ratio: float = 0.75) -> None:
        self.max_ae_size = max_ae_size
        self.fm_fraction = fm_fraction
        self.lr = lr
        self.hidden_ratio = hidden_ratio

    def fit(self, X: np.ndarray) -> KitNET:  # noqa: N803
        x = np.asarray(X, dtype=np.float64)
        n_fm = max(1, int(len(x) * self.fm_fraction))
        fm = CorClust(x.shape[1])
        for row in x[:n_fm]:
            fm.update(row)
        self.groups_ = [np.asarray(g, dtype=np.int64) for g in fm.cluster(self.max_ae_size)]
        self.ensemble_ = [DenoisingAE(len(g), self.lr, self.hidden_ratio) for g in self.groups_]
        self.output_ = DenoisingAE(len(self.groups_), self.lr, self.hidden_ratio)
        rmse = np.zeros(len(self.groups_))
        for row in x[n_fm:] if n_fm < len(x) else x:
            for a, (ae, g) in enumerate(zip(self.ensemble_, self.groups_, strict=True)):
                rmse[a] = ae.train(row[g])
            self.output_.train(rmse)
        return self

    def score_samples(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        x = np.asarray(X, dtype=np.float64)
        s1 = np.column_stack([ae.execute(x[:, g]) for ae, g in zip(self.ensemble_, self.groups_, strict=True)])
        return self.output_.execute(s1)

    @property
    def n_params_(self) -> int:
        # the feature map is an index list: one number per feature
        return sum(ae.n_params for ae in self.ensemble_) + self.output_.n_params + sum(len(g) for g in self.groups_)

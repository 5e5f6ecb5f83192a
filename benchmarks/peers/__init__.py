"""Peer detectors, each behind one small adapter so the benchmarks treat them exactly like tinywarden's.

Every adapter takes the *unscaled* window features (the same matrix for every peer), applies its own
preprocessing (counted in its size), and returns scores where higher = more anomalous.
"""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.peers.base import Peer
from benchmarks.peers.emlearn_gmm import EmlearnGMM
from benchmarks.peers.hst import RiverHST
from benchmarks.peers.iforest import PyODIForest
from benchmarks.peers.kitnet import KitNET
from benchmarks.peers.pca import PCABaseline
from benchmarks.peers.pyod_ae import PyODAutoEncoder

#: name -> factory; the order is the order of the results table.
PEERS: dict[str, Callable[[], Peer]] = {
    "pca_baseline": PCABaseline,
    "pyod_iforest": PyODIForest,
    "pyod_autoencoder": PyODAutoEncoder,
    "river_hst": RiverHST,
    "kitnet": KitNET,
    "emlearn_gmm": EmlearnGMM,
}

__all__ = ["PEERS", "Peer"]

"""Unsupervised detectors that learn normal behaviour; every score is "higher = more anomalous"."""

from tinywarden.detectors.ar import ARResidual
from tinywarden.detectors.autoencoder import DenseAutoencoder
from tinywarden.detectors.base import REGISTRY, Detector, make_detector
from tinywarden.detectors.bounds import BoundsDetector, fail_safe_detector
from tinywarden.detectors.conv_autoencoder import ConvAutoencoder
from tinywarden.detectors.ewma import EWMAZScore
from tinywarden.detectors.gru import GRUAutoencoder
from tinywarden.detectors.iforest import TrimmedIsolationForest
from tinywarden.detectors.kmeans import KMeansDistance
from tinywarden.detectors.ocsvm import BudgetOneClassSVM
from tinywarden.detectors.pca import PCAReconstruction
from tinywarden.detectors.prototypes import PrototypeKNN

__all__ = [
    "REGISTRY",
    "ARResidual",
    "BoundsDetector",
    "BudgetOneClassSVM",
    "ConvAutoencoder",
    "DenseAutoencoder",
    "Detector",
    "EWMAZScore",
    "GRUAutoencoder",
    "KMeansDistance",
    "PCAReconstruction",
    "PrototypeKNN",
    "TrimmedIsolationForest",
    "fail_safe_detector",
    "make_detector",
]

"""Unsupervised detectors that learn normal behaviour; every score is "higher = more anomalous".

One module per family (its estimator, int8 lowering, flash lower bound and ``tune`` search space);
:data:`REGISTRY` lists them by name (see :mod:`tinywarden.detectors.base`).
"""

# isort: off
# The families register in this order, which is the order every listing (tune, benchmarks, the CLI) shows.
from tinywarden.detectors.ewma import EWMAZScore
from tinywarden.detectors.kmeans import KMeansDistance
from tinywarden.detectors.autoencoder import DenseAutoencoder
from tinywarden.detectors.conv_autoencoder import ConvAutoencoder
from tinywarden.detectors.pca import PCAReconstruction
from tinywarden.detectors.gaussian import GaussianMahalanobis
from tinywarden.detectors.iforest import TrimmedIsolationForest
from tinywarden.detectors.prototypes import PrototypeKNN
from tinywarden.detectors.ocsvm import BudgetOneClassSVM
from tinywarden.detectors.gru import GRUAutoencoder
from tinywarden.detectors.ar import ARResidual
from tinywarden.detectors.bounds import BoundsDetector, fail_safe_detector
from tinywarden.detectors.ensemble import Ensemble
# isort: on
from tinywarden.detectors.base import DEFAULT_FAMILY, REGISTRY, Detector, make_detector
from tinywarden.detectors.lowering import Lowered, LoweringContext

__all__ = [
    "DEFAULT_FAMILY",
    "REGISTRY",
    "ARResidual",
    "BoundsDetector",
    "BudgetOneClassSVM",
    "ConvAutoencoder",
    "DenseAutoencoder",
    "Detector",
    "EWMAZScore",
    "Ensemble",
    "GRUAutoencoder",
    "GaussianMahalanobis",
    "KMeansDistance",
    "Lowered",
    "LoweringContext",
    "PCAReconstruction",
    "PrototypeKNN",
    "TrimmedIsolationForest",
    "fail_safe_detector",
    "make_detector",
]

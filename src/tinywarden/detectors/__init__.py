"""Unsupervised detectors that learn normal behaviour; every score is "higher = more anomalous"."""

from tinywarden.detectors.autoencoder import DenseAutoencoder
from tinywarden.detectors.base import REGISTRY, Detector, make_detector
from tinywarden.detectors.conv_autoencoder import ConvAutoencoder
from tinywarden.detectors.ewma import EWMAZScore
from tinywarden.detectors.kmeans import KMeansDistance

__all__ = [
    "REGISTRY",
    "ConvAutoencoder",
    "DenseAutoencoder",
    "Detector",
    "EWMAZScore",
    "KMeansDistance",
    "make_detector",
]

"""Core pipeline commands: train, score, evaluate, demo."""

from __future__ import annotations

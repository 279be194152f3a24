"""The engine: training (DDP, exact resume), evaluation and their building blocks."""

from .evaluate import evaluate_checkpoint, evaluate_model
from .trainer import train

__all__ = ["train", "evaluate_model", "evaluate_checkpoint"]

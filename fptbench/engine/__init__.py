"""The engine: training (DDP, exact resume), evaluation, profiling and their building blocks.

The one way to turn a config and weights into a model is :func:`load_model`; the CLI, the
evaluator, the profiler and the launcher's cells call it (or the functions here that do).
"""

from .evaluate import evaluate_checkpoint, evaluate_model
from .model import load_model
from .pretrain import prepare_trunk
from .profile import profile_checkpoint, profile_model
from .trainer import train

__all__ = ["train", "evaluate_model", "evaluate_checkpoint", "load_model", "prepare_trunk", "profile_model",
           "profile_checkpoint"]

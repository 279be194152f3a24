"""fptbench: a reproducibility harness for the Feature Pyramid Transformer (FPT, ECCV 2020)
on torchvision's Faster / Mask R-CNN.

Importing the package is cheap (no torch); the model lives in ``fptbench.modeling``, the
configuration in ``fptbench.config``, the command line in ``fptbench.cli``.
"""

__version__ = "0.1.0"

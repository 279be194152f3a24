"""Models: the FPT transformers, the Feature Pyramid Transformer neck, and the detectors and
segmentation models built on it."""

from fptbench.modeling.self_transformer import SelfTransformer
from fptbench.modeling.grounding_transformer import GroundingTransformer
from fptbench.modeling.rendering_transformer import RenderingTransformer
from fptbench.modeling.fpt import FeaturePyramidTransformer
from fptbench.modeling.backbone import FPTBackbone, build_backbone
from fptbench.modeling.detector import build_detector, build_model
from fptbench.modeling.segmentation import SegmentationModel, build_segmentation_model, segmentation_model

__all__ = [
    "SelfTransformer",
    "GroundingTransformer",
    "RenderingTransformer",
    "FeaturePyramidTransformer",
    "FPTBackbone",
    "build_backbone",
    "build_detector",
    "build_model",
    "SegmentationModel",
    "build_segmentation_model",
    "segmentation_model",
]

"""Pretrained weights from local files: torchvision ImageNet trunks, torchvision (or our own)
detection checkpoints, and the seed's Detectron (caffe2) ``.pkl`` ResNets. Nothing is downloaded."""

from fptbench.weights.load import LoadReport, load_backbone_weights, load_detection_weights, load_heads
from fptbench.weights.detectron import load_detectron_weights

__all__ = ["LoadReport", "load_backbone_weights", "load_detection_weights", "load_detectron_weights", "load_heads"]

"""The segmentation model as the engine trains and evaluates it: torchvision's detector interface.

:class:`Segmenter` is :class:`~fptbench.modeling.segmentation.SegmentationModel` (same modules,
same state_dict keys: ``backbone.*``, ``pyramid.*``, ``fpt.*``, ``classifier.*``,
``aux_classifier.*``) with what torchvision's detectors do around their networks: it normalises
images in the config's pixel convention (``GeneralizedRCNNTransform`` does it for the detectors)
and, in training, returns its losses. So the trainer, the checkpoints, DDP and the evaluator take
it as they take a detector: ``model(images, targets)`` -> loss dict in training, predictions in
evaluation.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fptbench.data.image import PIXEL_STATS
from fptbench.data.segmentation import IGNORE_INDEX
from fptbench.modeling.segmentation import SegmentationModel, build_segmentation_model

__all__ = ["Segmenter"]


class Segmenter(SegmentationModel):
    """A :class:`SegmentationModel` that normalises its input and computes its own losses.

    Loss [ours: torchvision's segmentation references]: pixel-wise cross-entropy over the pixels
    not labelled ``ignore_index``, averaged over them, on the main logits (``loss_seg``) and, with
    an auxiliary head, ``aux_weight`` x the same on its logits (``loss_aux``, as PSPNet and
    mmsegmentation weight theirs). A batch whose every pixel is ignored has loss 0, not NaN.

    Args:
        backbone, pyramid, classifier, fpt, aux_classifier: as :class:`SegmentationModel`.
        pixel (str): the images' convention, a key of :data:`~fptbench.data.image.PIXEL_STATS`
            (``model.pixel``); its mean and std normalise them.
        aux_weight (float): weight of the auxiliary loss (``seg.aux_weight``).
        ignore_index (int): label of unscored pixels (:data:`~fptbench.data.segmentation.IGNORE_INDEX`).

    Shapes:
        images (Tensor | list[Tensor]): (B, 3, H, W), or B images (3, H, W) of one size, in the
            ``pixel`` convention (the datasets' output); targets (list[dict] | None): B dicts with
            ``"sem_seg"``, (H, W) int64 class ids or ``ignore_index``, required in training.
        -> training: ``{"loss_seg": Tensor (), "loss_aux": Tensor ()}`` (``loss_aux`` only with an
        auxiliary head); evaluation: ``{"out": (B, C, H, W) logits, "aux": ...}`` as
        :class:`SegmentationModel` (what :mod:`fptbench.evaluation.segmentation` reads).
    """

    def __init__(self, backbone: nn.Module, pyramid: nn.Module, classifier: nn.Module, *,
                 fpt: nn.Module | None = None, aux_classifier: nn.Module | None = None,
                 pixel: str = "torchvision", aux_weight: float = 0.4, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__(backbone, pyramid, classifier, fpt=fpt, aux_classifier=aux_classifier)
        mean, std = PIXEL_STATS[pixel]
        # not persistent: a convention of the config, like the detectors' image_mean, not a weight
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.aux_weight = aux_weight
        self.ignore_index = ignore_index

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "Segmenter":
        """The model of a config with ``model.task: segmentation``, random weights
        (:func:`~fptbench.modeling.segmentation.build_segmentation_model`, then ``model.pixel``
        and ``seg.aux_weight``)."""
        net = build_segmentation_model(cfg)
        return cls(net.backbone, net.pyramid, net.classifier, fpt=net.fpt, aux_classifier=net.aux_classifier,
                   pixel=cfg["model"]["pixel"], aux_weight=cfg["seg"]["aux_weight"])

    def forward(self, images: Tensor | Sequence[Tensor],
                targets: Sequence[Mapping[str, Tensor]] | None = None) -> dict[str, Tensor]:
        if self.training and targets is None:
            raise ValueError("Segmenter: in training mode, targets ({'sem_seg': labels} per image) are required")
        if not isinstance(images, Tensor):
            sizes = {tuple(image.shape) for image in images}
            if len(sizes) != 1:
                raise ValueError(f"Segmenter: the images of a batch must have one size, got {sorted(sizes)}")
            images = torch.stack(list(images))
        out = super().forward(self.normalize(images))
        if not self.training:
            return out
        labels = torch.stack([target["sem_seg"] for target in targets])
        losses = {"loss_seg": self._cross_entropy(out["out"], labels)}
        if "aux" in out:
            losses["loss_aux"] = self.aux_weight * self._cross_entropy(out["aux"], labels)
        return losses

    def normalize(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in the pixel convention -> minus its mean, over its std: the network's input."""
        return (images - self.pixel_mean) / self.pixel_std

    def _cross_entropy(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Mean over the scored pixels: logits (B, C, H, W), labels (B, H, W) -> ()."""
        total = F.cross_entropy(logits, labels, ignore_index=self.ignore_index, reduction="sum")
        return total / (labels != self.ignore_index).sum().clamp(min=1)

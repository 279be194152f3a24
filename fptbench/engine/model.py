"""One way to turn a config and weights into a model, for every caller.

``load_model(cfg, ckpt)`` is what the trainer, the evaluator (``fptbench eval``), ``fptbench
infer``, the profiler and the launcher's cells use: build the model of ``cfg`` (:func:`build_model`:
the detector of :func:`fptbench.modeling.build_model`, or a :class:`~fptbench.modeling.segmenter.Segmenter`
for ``model.task: segmentation``), then load weights from local files (:mod:`fptbench.weights`).
As detectron2's ``build_model`` + ``DetectionCheckpointer.load``.
"""

from __future__ import annotations

import hashlib
import os
from typing import Callable

import torch
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

__all__ = ["build_model", "load_model", "set_train_sizes", "weights_digest"]


def build_model(cfg: dict) -> torch.nn.Module:
    """The model of ``cfg``'s ``model.task``, random weights, in training mode: a torchvision
    detector (:func:`fptbench.modeling.build_model`) or a :class:`~fptbench.modeling.segmenter.Segmenter`.
    The one place where the task chooses the model."""
    if cfg["model"]["task"] == "segmentation":
        from fptbench.modeling.segmenter import Segmenter

        return Segmenter.from_config(cfg)
    from fptbench.modeling import build_model as build_detector

    return build_detector(cfg)


def _trunk_owner(model: torch.nn.Module) -> torch.nn.Module:
    """What the trunk loaders take (:func:`fptbench.weights.find_trunk`): a detector, or a
    Segmenter's ``backbone``, the ResNet's ``IntermediateLayerGetter`` itself."""
    from fptbench.modeling.segmenter import Segmenter

    return model.backbone if isinstance(model, Segmenter) else model


def load_model(
    cfg: dict,
    ckpt: str | os.PathLike | None = None,
    *,
    pretrained: bool = False,
    log: Callable[[str], None] | None = None,
) -> torch.nn.Module:
    """The model of ``cfg`` (:func:`build_model`) with weights from local files, on the CPU, in
    training mode. It builds and loads; it never trains (a ``model.backbone_pretrain`` trunk must
    be cached first: :func:`fptbench.engine.pretrain.ensure_trunk`).

    Weights are loaded in this order, each later file overriding what it covers:

    1. with ``pretrained``, what training starts from: ``model.weights`` (a checkpoint of the
       whole model) when set; otherwise the trunk that :func:`fptbench.trunks.require_trunk`
       resolves from ``model.backbone_weights`` / ``model.backbone_pretrain`` (resolved and checked
       before the model is built: a missing or corrupt file is refused with nothing built), in its
       format (a torchvision state_dict or Detectron's ``.pkl``), and with ``model.pretrain_heads``
       the pre-training run's RPN and RoI heads;
    2. ``ckpt``: an fptbench checkpoint or a torchvision detection ``.pth``, which covers the trunk
       (no trunk file is read or required then).

    The trunk files go into the ResNet trunk of either task, the others into the whole model.

    Args:
        cfg (dict): a resolved config (:func:`fptbench.config.load_config`).
        log: called with each load's one-line summary (:meth:`fptbench.weights.LoadReport.summary`)
            and its warnings.

    Raises:
        UsageError: a file is missing or does not fit the model (the model is then left as built).
    """
    from fptbench.trunks import heads_path, require_trunk
    from fptbench.weights import load_backbone_weights, load_detection_weights, load_detectron_weights, load_heads

    whole = ckpt or (cfg["model"]["weights"] if pretrained else None)  # a whole model's weights cover the trunk
    trunk = require_trunk(cfg) if pretrained and not whole else None  # before building: nothing built for a missing file
    model = build_model(cfg)
    owner = _trunk_owner(model)
    steps = []
    if trunk is not None and trunk.path is not None:
        loader = load_detectron_weights if trunk.format == "detectron" else load_backbone_weights
        steps.append((trunk.path, loader, owner))
        if trunk.kind == "pretrain" and cfg["model"]["pretrain_heads"]:
            steps.append((heads_path(trunk.path), load_heads, model))
    steps += [
        (cfg["model"]["weights"] if pretrained else None, load_detection_weights, model),
        (ckpt, load_detection_weights, model),
    ]
    for path, load, target in steps:
        if path:
            report = load(target, path)
            if log is not None:
                log(report.summary())
                for warning in report.warnings:
                    log(f"warning: {warning}")
    return model


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer, in state_dict order: equal iff bitwise equal weights."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def set_train_sizes(model: torch.nn.Module, cfg: dict, *, training: bool) -> None:
    """Multi-scale training (one short side drawn per image by torchvision's transform) or the
    fixed test scale, on a detector's GeneralizedRCNNTransform. A segmentation model has none:
    its training crops and test scales come from the data and the evaluator (``seg.*``)."""
    if not isinstance(model, GeneralizedRCNN):
        return
    transform = model.transform
    if training:
        transform.min_size = tuple(cfg["train"]["min_sizes"] or [cfg["model"]["min_size"]])
        transform.max_size = cfg["train"]["max_size"] or cfg["model"]["max_size"]
    else:
        transform.min_size = (cfg["model"]["min_size"],)
        transform.max_size = cfg["model"]["max_size"]

"""Semantic segmentation: a confusion matrix reduced across ranks, mIoU and pixel accuracy, and
whole-image, sliding-window, flip and multi-scale inference.

The model follows torchvision's segmentation convention: ``model(images)["out"]`` holds the
logits (B, C, H, W) at the size of ``images`` (B, 3, H, W). Images are in the dataset's pixel
convention; normalising them is the model's business, as for torchvision's detectors.

Metric conventions [code: mmsegmentation ``IoUMetric``, torchvision references' ``ConfusionMatrix``]:
pixels labelled ``ignore_index`` are not counted; a class's IoU is TP / (TP + FP + FN) over
every counted pixel of the evaluated images; mIoU is the mean over the classes whose union is
not empty (present in the ground truth or predicted: a class neither present nor predicted is
left out, not scored 0 or 100); mean accuracy is the mean over the classes present in the
ground truth of TP / (TP + FN); pixel accuracy is the share of counted pixels predicted right.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as nnf
from torch import Tensor, nn
from tqdm import tqdm

__all__ = [
    "TEST_MODES",
    "ConfusionMatrix",
    "evaluate_segmentation",
    "predict_segmentation",
    "segmentation_logits",
    "slide_inference",
    "whole_inference",
]

TEST_MODES = ("whole", "slide")
"""How each (scaled, flipped) image is run: in one pass, or in overlapping windows."""


def _is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class ConfusionMatrix:
    """Counts of (ground-truth class, predicted class) over the pixels seen so far.

    Args:
        num_classes (int): C.
        ignore_index (int): ground-truth label of pixels that are not counted.
        device: where the (C, C) counts live; with NCCL a CUDA device (``all_reduce`` needs it).

    Attributes:
        matrix (Tensor): (C, C) int64, ``matrix[t, p]`` = pixels of class t predicted as p.
    """

    def __init__(self, num_classes: int, *, ignore_index: int = 255, device: torch.device | str = "cpu") -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros((num_classes, num_classes), dtype=torch.int64, device=device)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Count one batch.

        Args:
            pred (Tensor): predicted class ids, any shape, integer, in 0..C-1.
            target (Tensor): ground truth of the same shape: class ids in 0..C-1 or ``ignore_index``.

        Raises:
            ValueError: the shapes differ, or a value is out of range (a label map that does not
                fit the model's classes).
        """
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        counted = target != self.ignore_index
        t, p = target[counted].long(), pred[counted].long()
        c = self.num_classes
        if t.numel():
            for name, values in (("target", t), ("pred", p)):
                low, high = int(values.min()), int(values.max())
                if low < 0 or high >= c:
                    bad = low if low < 0 else high
                    raise ValueError(f"{name} has class {bad}, outside 0..{c - 1}"
                                     + (f" (and not the ignore index {self.ignore_index})" if name == "target" else ""))
        # bincount on the inputs' device; only the (C, C) counts move
        counts = torch.bincount(t * c + p, minlength=c * c).reshape(c, c)
        self.matrix += counts.to(self.matrix.device)

    def reduce(self) -> "ConfusionMatrix":
        """The sum of every rank's counts (collective: every rank must call it when
        torch.distributed is initialised); a copy of this one otherwise. This matrix is left as
        it is, so reducing twice does not count twice."""
        total = ConfusionMatrix(self.num_classes, ignore_index=self.ignore_index, device=self.matrix.device)
        total.matrix.copy_(self.matrix)
        if _is_distributed():
            dist.all_reduce(total.matrix, op=dist.ReduceOp.SUM)
        return total

    def metrics(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """The scores of the counts, in percent, JSON-ready (see the module docstring).

        Args:
            class_names (sequence of str): keys of ``per_class_iou``; ``"0".."C-1"`` if not given.

        Returns:
            ``{"mIoU": float, "pixel_acc": float, "mean_acc": float, "per_class_iou": {name:
            float | None}}``; None where nothing was counted (a class neither present nor
            predicted; every value when no pixel was counted).
        """
        names = list(class_names) if class_names is not None else [str(k) for k in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise ValueError(f"{len(names)} class names for {self.num_classes} classes")
        m = self.matrix.detach().to("cpu", torch.float64)
        tp, gt, pred = m.diagonal(), m.sum(1), m.sum(0)
        union = gt + pred - tp
        iou = tp / union  # 0/0 = nan: the class is left out of the mean
        acc = tp / gt

        def percent(x: Tensor) -> float | None:
            value = float(x)
            return None if value != value else 100.0 * value  # nan -> None (JSON null)

        total = m.sum()
        return {
            "mIoU": percent(iou.nanmean()),
            "pixel_acc": percent(tp.sum() / total),
            "mean_acc": percent(acc.nanmean()),
            "per_class_iou": {name: percent(v) for name, v in zip(names, iou)},
        }


# -- inference ---------------------------------------------------------------------------------

def whole_inference(model: nn.Module, images: Tensor) -> Tensor:
    """One forward pass: images (B, 3, H, W) -> logits (B, C, H, W).

    Raises:
        ValueError: the model's ``"out"`` is not (B, C, H, W) at the input size.
    """
    logits = model(images)["out"]
    if logits.dim() != 4 or logits.shape[0] != images.shape[0] or logits.shape[-2:] != images.shape[-2:]:
        raise ValueError(f"the model's 'out' must be logits (B, C, H, W) at the input size {tuple(images.shape[-2:])}, "
                         f"got {tuple(logits.shape)}")
    return logits


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise ValueError(f"{name} must be a positive int or (height, width), got {value!r}")
    return pair  # type: ignore[return-value]


def _starts(size: int, crop: int, stride: int) -> list[int]:
    """Window starts along one side: every ``stride`` px, the last window moved back to end at
    the border instead of running past it (no padding); one window when the side <= crop."""
    count = max(size - crop + stride - 1, 0) // stride + 1
    return [max(min(k * stride, size - crop), 0) for k in range(count)]


def slide_inference(
    model: nn.Module,
    images: Tensor,
    *,
    crop_size: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
) -> Tensor:
    """Overlapping windows, their logits averaged where they overlap [code: mmsegmentation
    ``slide_inference``].

    Windows of ``crop_size`` start every ``stride`` px; at the bottom and right borders the last
    window is moved back inside the image rather than padded, so every window shows only image
    pixels; a side smaller than the crop is taken whole.

    Args:
        images (Tensor): (B, 3, H, W).
        crop_size (int | (int, int)): window (height, width), px.
        stride (int | (int, int) | None): px between window starts; None = two thirds of the
            crop [ours: the ratio of mmsegmentation's configs, e.g. 512 -> 341].

    Returns:
        Tensor: (B, C, H, W) logits, each pixel the mean over the windows that contain it.
    """
    crop_h, crop_w = _pair(crop_size, "crop_size")
    stride_h, stride_w = _pair(stride, "stride") if stride is not None else (crop_h * 2 // 3, crop_w * 2 // 3)
    height, width = images.shape[-2:]
    total: Tensor | None = None
    count = images.new_zeros((1, 1, height, width))
    for top in _starts(height, crop_h, stride_h):
        for left in _starts(width, crop_w, stride_w):
            window = (slice(None), slice(None), slice(top, top + crop_h), slice(left, left + crop_w))
            logits = whole_inference(model, images[window])
            if total is None:
                total = logits.new_zeros((images.shape[0], logits.shape[1], height, width))
            total[window] += logits
            count[window] += 1
    return total / count


def segmentation_logits(
    model: nn.Module,
    images: Tensor,
    *,
    mode: str = "whole",
    crop_size: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    flip_pairs: Sequence[tuple[int, int]] = (),
) -> Tensor:
    """Test-time logits: every scale, with and without a horizontal flip, averaged.

    Each scale resizes the images (bilinear), runs them whole or in windows (``mode``), and
    resizes the logits back (bilinear); a flipped pass flips its logits back and swaps the
    channels of ``flip_pairs`` (a left arm seen flipped is a right arm). The logits of all
    passes are averaged [code: HRNet-Semantic-Segmentation ``multi_scale_inference``;
    mmsegmentation averages softmax probabilities instead].

    Args:
        images (Tensor): (B, 3, H, W).
        mode (str): ``"whole"`` or ``"slide"`` (:func:`slide_inference`, needs ``crop_size``).
        crop_size, stride: of the windows, at every scale (see :func:`slide_inference`).
        flip (bool): add the flipped pass of each scale.
        scales (sequence of float): factors of the image size; (1.0,) = the size as it is.
        flip_pairs (sequence of (int, int)): classes swapped by a flip (the dataset's).

    Returns:
        Tensor: (B, C, H, W) logits at the input size.
    """
    if mode not in TEST_MODES:
        raise ValueError(f"mode must be one of {TEST_MODES}, got {mode!r}")
    if mode == "slide" and crop_size is None:
        raise ValueError("mode 'slide' needs crop_size")
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"scales must be positive factors, got {tuple(scales)}")

    def run(x: Tensor) -> Tensor:
        return slide_inference(model, x, crop_size=crop_size, stride=stride) if mode == "slide" \
            else whole_inference(model, x)

    height, width = images.shape[-2:]
    total: Tensor | None = None
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = images if size == (height, width) else nnf.interpolate(images, size=size, mode="bilinear",
                                                                         align_corners=False)
        passes = [run(scaled)]
        if flip:
            flipped = run(scaled.flip(-1)).flip(-1)
            order = list(range(flipped.shape[1]))
            for a, b in flip_pairs:
                order[a], order[b] = b, a
            passes.append(flipped[:, order])
        for logits in passes:
            if logits.shape[-2:] != (height, width):
                logits = nnf.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
            total = logits if total is None else total + logits
    return total / (len(scales) * (2 if flip else 1))


def predict_segmentation(
    model: nn.Module,
    dataset: Any,
    each: Callable[[int, Tensor, Tensor | None], None],
    *,
    device: torch.device | str,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    mode: str = "whole",
    crop_size: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
) -> int:
    """Segment every image of this rank's share of ``dataset``, handing each prediction to ``each``.

    Args:
        model (nn.Module): returns ``{"out": logits}`` (see the module docstring), already on
            ``device``; run in eval mode and put back in its previous mode after.
        dataset: ``dataset[i] -> (image (3, H, W), label (H, W) or None)`` with ``flip_pairs``
            (a :class:`fptbench.data.segmentation.SegmentationDataset` without transform).
        each (callable): ``each(index, pred, label)``: pred (H, W) int64 class ids on ``device``,
            label the item's (H, W) label on ``device`` or None (a split without labels).
        device: where the images go.
        rank (int), world_size (int): this process takes items ``rank, rank + world_size, ...``
            (nothing collective here).
        progress (bool): tqdm bar on rank 0.
        mode, crop_size, stride, flip, scales: test-time inference, see :func:`segmentation_logits`.

    Returns:
        int: the number of images this rank segmented.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank}")
    indices = range(rank, len(dataset), world_size)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), tqdm(total=len(indices), desc="segmentation", unit="img",
                                          disable=not progress or rank != 0, dynamic_ncols=True) as bar:
            for index in indices:
                image, label = dataset[index]
                logits = segmentation_logits(model, image.to(device)[None], mode=mode, crop_size=crop_size,
                                             stride=stride, flip=flip, scales=scales, flip_pairs=dataset.flip_pairs)
                each(index, logits.argmax(1)[0], None if label is None else label.to(device))
                bar.update(1)
    finally:
        model.train(was_training)
    return len(indices)


def evaluate_segmentation(
    model: nn.Module,
    dataset: Any,
    *,
    device: torch.device | str,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    mode: str = "whole",
    crop_size: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
) -> dict[str, dict[str, Any]]:
    """Segment every image of this rank's share of ``dataset`` and score the predictions.

    Args:
        model (nn.Module): returns ``{"out": logits}`` (see the module docstring), already on
            ``device``; run in eval mode and put back in its previous mode after.
        dataset: ``dataset[i] -> (image (3, H, W), label (H, W))`` with ``classes`` (names),
            ``ignore_index`` and ``flip_pairs`` (a
            :class:`fptbench.data.segmentation.SegmentationDataset` without transform, with labels).
        device: where the images go and the confusion matrix lives.
        rank (int), world_size (int): this process takes items ``rank, rank + world_size, ...``;
            with torch.distributed initialised every rank must call this (the counts are summed
            over ranks) and all get the same metrics.
        progress (bool): tqdm bar on rank 0.
        mode, crop_size, stride, flip, scales: test-time inference, see :func:`segmentation_logits`.

    Returns:
        ``{"segmentation": {"mIoU", "pixel_acc", "mean_acc", "per_class_iou": {class name: ...}}}``
        in percent (:meth:`ConfusionMatrix.metrics`), the record's ``metrics``.

    Raises:
        ValueError: an item has no label (a split for the evaluation server: nothing to score).
    """
    matrix = ConfusionMatrix(len(dataset.classes), ignore_index=dataset.ignore_index, device=device)

    def count(index: int, pred: Tensor, label: Tensor | None) -> None:
        if label is None:
            raise ValueError(f"item {index} has no label: a split without labels cannot be scored")
        matrix.update(pred, label)

    predict_segmentation(model, dataset, count, device=device, rank=rank, world_size=world_size, progress=progress,
                         mode=mode, crop_size=crop_size, stride=stride, flip=flip, scales=scales)
    return {"segmentation": matrix.reduce().metrics(dataset.classes)}

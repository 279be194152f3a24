"""Segmentation evaluation: the metrics against a confusion matrix counted by hand, the inference
modes against each other on tiny conv models, and the reduce over 2 gloo processes."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from fptbench.evaluation.segmentation import (
    ConfusionMatrix,
    evaluate_segmentation,
    segmentation_logits,
    slide_inference,
    whole_inference,
)

# 9 pixels, 4 classes: class 2 is predicted but absent from the ground truth, class 3 is neither
# present nor predicted (its one prediction falls on an ignored pixel)
TARGET = torch.tensor([[0, 0, 0], [0, 1, 1], [1, 255, 255]])
PRED = torch.tensor([[0, 0, 0], [1, 1, 0], [2, 2, 3]])


def test_metrics_against_hand_counts():
    # By hand: rows = truth, columns = prediction, ignored pixels dropped.
    #   truth 0: predicted 0, 0, 0, 1   truth 1: predicted 1, 0, 2
    # IoU0 = 3 / (4 + 4 - 3) = 60 %; IoU1 = 1 / (3 + 2 - 1) = 25 %; IoU2 = 0 / (0 + 1 - 0) = 0 %;
    # IoU3 = 0/0: left out. mIoU = (60 + 25 + 0) / 3; pixel accuracy 4 of 7; mean accuracy
    # (3/4 + 1/3) / 2 over the two classes with ground truth.
    matrix = ConfusionMatrix(4)
    matrix.update(PRED, TARGET)
    assert matrix.matrix.tolist() == [[3, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    metrics = matrix.metrics(["a", "b", "c", "d"])
    json.dumps(metrics, allow_nan=False)  # ready for the record: no NaN, no tensor
    per_class = metrics.pop("per_class_iou")
    assert metrics == pytest.approx({"mIoU": 85 / 3, "pixel_acc": 400 / 7, "mean_acc": (75 + 100 / 3) / 2})
    assert per_class == pytest.approx({"a": 60.0, "b": 25.0, "c": 0.0, "d": None})


def test_batches_add_up_and_empty_matrix_scores_none():
    one = ConfusionMatrix(4)
    one.update(PRED, TARGET)
    split = ConfusionMatrix(4)
    split.update(PRED[:1], TARGET[:1])
    split.update(PRED[1:].reshape(-1), TARGET[1:].reshape(-1))
    assert torch.equal(one.matrix, split.matrix)
    assert ConfusionMatrix(2).metrics() == {"mIoU": None, "pixel_acc": None, "mean_acc": None,
                                             "per_class_iou": {"0": None, "1": None}}


def test_labels_outside_the_classes_are_refused():
    with pytest.raises(ValueError, match="target has class 7, outside 0..3 .*ignore index 255"):
        ConfusionMatrix(4).update(torch.zeros(2, dtype=torch.long), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="pred has class 4"):
        ConfusionMatrix(4).update(torch.tensor([0, 4]), torch.tensor([0, 1]))
    ConfusionMatrix(4, ignore_index=9).update(torch.tensor([0, 4]), torch.tensor([0, 9]))  # ignored: not checked


# -- inference ---------------------------------------------------------------------------------

class Net(nn.Module):
    """torchvision's segmentation interface around one conv: ``{"out": logits}`` at the input
    size; records the size of each input."""

    def __init__(self, kernel: int, classes: int = 5) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, classes, kernel, padding=kernel // 2)
        self.sizes: list[tuple[int, int]] = []

    def forward(self, x):
        self.sizes.append(tuple(x.shape[-2:]))
        return {"out": self.conv(x)}


def test_slide_equals_whole_when_the_window_covers_the_image():
    # A 3x3 conv sees zero padding at the window's border: only a window holding the whole image
    # gives the whole-image logits, whatever the stride.
    images = torch.randn(2, 3, 20, 30)
    net = Net(3)
    whole = whole_inference(net, images)
    for crop in ((20, 30), (24, 40)):
        net.sizes.clear()
        assert torch.equal(slide_inference(net, images, crop_size=crop, stride=7), whole)
        assert net.sizes == [(20, 30)]


def test_slide_averages_overlapping_windows():
    # A 1x1 conv is pointwise: any tiling gives the whole-image logits if overlaps are averaged.
    # 20 x 30 px, 8 px windows every 5 px: starts 0, 5, 10, 12 down and 0, 5, ..., 20, 22 across
    # (the last window moved back inside the image), every window 8 x 8.
    images = torch.randn(1, 3, 20, 30)
    net = Net(1)
    whole = whole_inference(net, images)
    net.sizes.clear()
    assert torch.allclose(slide_inference(net, images, crop_size=8, stride=5), whole, atol=1e-6)
    assert net.sizes == [(8, 8)] * (4 * 6)


def test_flip_with_a_flip_equivariant_model_equals_plain():
    images = torch.randn(1, 3, 12, 17)
    net = Net(1)
    plain = segmentation_logits(net, images)
    assert torch.allclose(segmentation_logits(net, images, flip=True), plain, atol=1e-6)


class Halves(nn.Module):
    """Class 0 on the left half of any input, class 1 on the right: not flip-equivariant."""

    def forward(self, x):
        left = (torch.arange(x.shape[-1]) < x.shape[-1] // 2).float().expand(x.shape[0], 1, *x.shape[-2:])
        return {"out": torch.cat([left, 1 - left], dim=1)}


def test_flip_swaps_the_flip_pairs():
    # Flipped, the left half becomes the right one: with (0, 1) a flip pair (a left arm seen
    # flipped is a right arm) the flipped pass agrees with the plain one; without, they cancel.
    images = torch.randn(1, 3, 4, 6)
    plain = segmentation_logits(Halves(), images)
    assert torch.equal(segmentation_logits(Halves(), images, flip=True, flip_pairs=[(0, 1)]), plain)
    assert torch.equal(segmentation_logits(Halves(), images, flip=True), torch.full_like(plain, 0.5))


def test_multi_scale_runs_each_scale_and_returns_the_input_size():
    images = torch.randn(1, 3, 1, 1).expand(1, 3, 20, 30)  # constant: resizing changes nothing
    net = Net(1)
    plain = segmentation_logits(net, images)
    net.sizes.clear()
    logits = segmentation_logits(net, images, scales=(0.5, 1.0, 1.5), flip=True, mode="slide", crop_size=32)
    # at 1.5: 30 x 45 px, two 32-px windows across (starts 0 and 13), the height whole
    assert net.sizes == [(10, 15)] * 2 + [(20, 30)] * 2 + [(30, 32)] * 4
    assert logits.shape == plain.shape and torch.allclose(logits, plain, atol=1e-5)


def test_bad_inference_arguments():
    images = torch.randn(1, 3, 4, 4)
    with pytest.raises(ValueError, match="needs crop_size"):
        segmentation_logits(Net(1), images, mode="slide")
    with pytest.raises(ValueError, match="mode must be one of"):
        segmentation_logits(Net(1), images, mode="tiles")

    class Small(nn.Module):
        def forward(self, x):
            return {"out": x[..., ::2, ::2]}

    with pytest.raises(ValueError, match=r"logits \(B, C, H, W\) at the input size \(4, 4\), got \(1, 3, 2, 2\)"):
        whole_inference(Small(), images)


# -- the evaluation loop -----------------------------------------------------------------------

class Encoded:
    """3 images whose first channel encodes a prediction (class / 10) next to an independent
    ground truth with ignored pixels; ``Oracle`` reads the prediction back."""

    classes = ("sky", "road", "car")
    ignore_index = 255
    flip_pairs = ()

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.preds = [torch.randint(0, 3, (5, 7), generator=g) for _ in range(3)]
        self.labels = [torch.randint(0, 3, (5, 7), generator=g) for _ in range(3)]
        for label in self.labels:
            label[0, :3] = 255

    def __len__(self) -> int:
        return 3

    def __getitem__(self, i):
        return torch.stack([self.preds[i] / 10, torch.zeros(5, 7), torch.zeros(5, 7)]), self.labels[i]


class Oracle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.modes: list[bool] = []

    def forward(self, x):
        self.modes.append(self.training)
        return {"out": nn.functional.one_hot((x[:, 0] * 10).round().long(), 3).permute(0, 3, 1, 2).float()}


def expected(dataset: Encoded, indices) -> dict:
    matrix = ConfusionMatrix(3)
    for i in indices:
        matrix.update(dataset.preds[i], dataset.labels[i])
    return {"segmentation": matrix.metrics(dataset.classes)}


def test_evaluate_segmentation_scores_the_model_and_restores_its_mode():
    dataset, model = Encoded(), Oracle().train()
    metrics = evaluate_segmentation(model, dataset, device="cpu", progress=False)
    assert metrics == expected(dataset, range(3))
    assert 0 < metrics["segmentation"]["mIoU"] < 100
    assert list(metrics["segmentation"]["per_class_iou"]) == ["sky", "road", "car"]
    assert model.modes == [False] * 3 and model.training
    # one shard: rank 1 of 2 takes image 1 only
    assert evaluate_segmentation(model, dataset, device="cpu", rank=1, world_size=2, progress=False) \
        == expected(dataset, [1])


# -- distributed: 2 gloo processes on the CPU --------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        metrics = evaluate_segmentation(Oracle(), Encoded(), device="cpu", rank=rank, world_size=2, progress=False)
        matrix = ConfusionMatrix(3)
        matrix.update(torch.tensor([rank]), torch.tensor([rank]))
        twice = [matrix.reduce().matrix.tolist(), matrix.reduce().matrix.tolist()]
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps({"metrics": metrics, "twice": twice}))
    finally:
        dist.destroy_process_group()


def test_reduce_sums_the_ranks(tmp_path):
    # Rank 0 scores images 0 and 2, rank 1 image 1: after the reduce both return the metrics of
    # all three; reducing again does not count twice.
    ctx = mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("distributed evaluation did not finish in 120 s")
    want = json.loads(json.dumps(expected(Encoded(), range(3))))
    sum_of_ranks = [[1, 0, 0], [0, 1, 0], [0, 0, 0]]
    for rank in range(2):
        got = json.loads(Path(tmp_path, f"rank{rank}.json").read_text())
        assert got["metrics"] == want, f"rank {rank}"
        assert got["twice"] == [sum_of_ranks, sum_of_ranks], f"rank {rank}"

"""inference(): a detector over a dataset (or one rank's share of it) into COCOEvaluator."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fptbench.config import load_config
from fptbench.evaluation import METRIC_NAMES, COCOEvaluator, inference, iou_types_of
from fptbench.modeling import build_model
from tests.evaluation.tiny_coco import IMAGE_IDS, TinyCocoDataset, ground_truth_outputs, write_tiny_coco


@pytest.fixture
def dataset(tmp_path):
    return TinyCocoDataset(*write_tiny_coco(tmp_path))


class SizeOracle(nn.Module):
    """Answers each image with the ground truth of the image of that size (the tiny set's
    images all differ in size): a detector whose AP is 100 iff inference pairs each output
    with its own image id."""

    def __init__(self, coco):
        super().__init__()
        self.by_size = {(info["height"], info["width"]): ground_truth_outputs(coco, image_id)
                        for image_id, info in coco.imgs.items()}
        self.roi_heads = nn.Module()
        self.roi_heads.has_mask = lambda: True
        self.modes: list[bool] = []

    def forward(self, images):
        self.modes.append(self.training)
        return [self.by_size[tuple(image.shape[-2:])] for image in images]


def test_outputs_are_paired_with_their_image_ids(dataset):
    # Ids 7, 3, 12 are not the indices 0, 1, 2: pairing by index would score ~0, not 100.
    # Batches of 2 leave a last batch of 1.
    oracle = SizeOracle(dataset.coco).train()
    metrics = inference(oracle, dataset, device="cpu", batch_size=2, progress=False)
    assert list(metrics) == ["bbox", "segm"]
    for values in metrics.values():
        assert values == pytest.approx({name: 100.0 for name in METRIC_NAMES})
    assert oracle.modes == [False, False]  # run in eval mode ...
    assert oracle.training  # ... and handed back in training mode


def test_real_maskrcnn_on_one_shard(dataset):
    # A real (random-weight) ResNet-18 Mask R-CNN at 128 px on rank 1 of 2: only image index 1
    # (id 3) is detected, the outputs are in that image's own pixels (postprocess resized them
    # back), and the metrics have pycocotools' names, in percent.
    torch.manual_seed(0)
    model = build_model(load_config("maskrcnn_r50_bfp", [("model.backbone", "resnet18"), ("model.min_size", "128"),
                                                         ("model.max_size", "160"), ("model.num_classes", "3")]))
    assert iou_types_of(model) == ("bbox", "segm")
    evaluator = COCOEvaluator(dataset.coco)
    metrics = inference(model, dataset, device="cpu", rank=1, world_size=2, progress=False, evaluator=evaluator)
    assert evaluator.image_ids == [IMAGE_IDS[1]]
    assert set(metrics) == {"bbox", "segm"}
    for values in metrics.values():
        assert list(values) == list(METRIC_NAMES)
        assert all(v is None or 0.0 <= v <= 100.0 for v in values.values())
    h, w = dataset.coco.imgs[IMAGE_IDS[1]]["height"], dataset.coco.imgs[IMAGE_IDS[1]]["width"]
    for r in evaluator.results:
        x, y, bw, bh = r["bbox"]
        assert -1e-3 <= x and -1e-3 <= y and x + bw <= w + 1e-3 and y + bh <= h + 1e-3
        assert r["segmentation"]["size"] == [h, w]
        assert r["category_id"] in (1, 2)


def test_faster_rcnn_is_evaluated_for_boxes_only():
    model = build_model(load_config("fasterrcnn_r50_bfp", [("model.backbone", "resnet18"), ("model.min_size", "128"),
                                                           ("model.max_size", "160")]))
    assert iou_types_of(model) == ("bbox",)


def test_on_fptbench_coco_detection(tmp_path):
    # The same oracle through the real dataset class (fptbench.data.CocoDetection) on the tiny
    # set in the seed's layout: the contract between data and evaluation (image ids, sizes).
    from fptbench.data import CocoDetection

    write_tiny_coco(tmp_path)
    dataset = CocoDetection(tmp_path, "annotations/instances_tiny.json", "images/tiny")
    metrics = inference(SizeOracle(dataset.coco), dataset, device="cpu", progress=False)
    for values in metrics.values():
        assert values == pytest.approx({name: 100.0 for name in METRIC_NAMES})

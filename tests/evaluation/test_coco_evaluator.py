"""COCOEvaluator: detector outputs -> pycocotools' COCOeval, on a tiny set written by the test.

The numbers are COCOeval's own on constructed detections whose AP is known by hand, so a
wrong conversion (xyxy vs xywh, labels vs category ids, mask binarisation or encoding, image
ids, bbox area leaking into mask AP) changes them.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fptbench.evaluation import METRIC_NAMES, COCOEvaluator, masks_to_rle
from tests.evaluation.tiny_coco import (IMAGE_IDS, empty_outputs, ground_truth_outputs, load_coco,
                                        mixed_outputs, write_tiny_coco)


@pytest.fixture
def coco(tmp_path):
    ann_file, _ = write_tiny_coco(tmp_path)
    return load_coco(ann_file)


def run(coco, make_output, image_ids=IMAGE_IDS, iou_types=("bbox", "segm")):
    evaluator = COCOEvaluator(coco, iou_types=iou_types)
    for image_id in image_ids:
        evaluator.process([make_output(coco, image_id)], [image_id])
    return evaluator, evaluator.evaluate()


def test_perfect_detections_score_100(coco):
    # The ground truth fed back with score 1 and exact masks matches every object at every IoU
    # threshold: 100 everywhere, for every area range (the set has objects in all three).
    evaluator, metrics = run(coco, ground_truth_outputs)
    assert set(metrics) == {"bbox", "segm"}
    for iou_type in ("bbox", "segm"):
        assert list(metrics[iou_type]) == list(METRIC_NAMES)
        assert metrics[iou_type] == pytest.approx({name: 100.0 for name in METRIC_NAMES}), iou_type
    assert len(evaluator.results) == len(coco.getAnnIds())
    assert "AP" in evaluator.summaries["bbox"] and "maxDets" in evaluator.summaries["segm"]


def test_shifted_boxes_lose_the_strict_thresholds(coco):
    # Every box moved right by w/5 has IoU exactly 2/3 with its object: it matches at the IoU
    # thresholds .50 .55 .60 .65 and misses at .70 ... .95, so box AP = 4/10 = 40, AP50 = 100,
    # AP75 = 0, in every area range. The masks are unmoved, so mask AP stays 100: segm must be
    # scored on the masks alone.
    _, metrics = run(coco, lambda c, i: ground_truth_outputs(c, i, shift=True))
    assert metrics["bbox"] == pytest.approx({"AP": 40.0, "AP50": 100.0, "AP75": 0.0,
                                             "APs": 40.0, "APm": 40.0, "APl": 40.0})
    assert metrics["segm"] == pytest.approx({name: 100.0 for name in METRIC_NAMES})


def test_mask_ap_uses_mask_area(coco):
    # A false positive of category 1 ranked first (score 1 over the objects' 0.9) with a 10000 px
    # box (large) around a 9 px mask (small). Box AP charges it to the large range: the one
    # large object is found second, APl = 50. Mask AP must charge it to the small range by its
    # mask's area, as detectron2 does (pycocotools would take the box's area if the result kept
    # its bbox): category 1's two small objects reach precision 2/3, category 2's 1, so
    # APs = (2/3 + 1) / 2 = 83.33, and APl stays 100.
    def with_false_positive(c, image_id):
        out = ground_truth_outputs(c, image_id, scores=[0.9] * len(c.getAnnIds(imgIds=[image_id])))
        if image_id == 7:
            fp_mask = torch.zeros(1, 1, 120, 160)
            fp_mask[..., 105:108, 150:153] = 1.0
            out = {"boxes": torch.cat([torch.tensor([[60.0, 10.0, 160.0, 110.0]]), out["boxes"]]),
                   "labels": torch.cat([torch.tensor([1]), out["labels"]]),
                   "scores": torch.cat([torch.tensor([1.0]), out["scores"]]),
                   "masks": torch.cat([fp_mask, out["masks"]])}
        return out

    _, metrics = run(coco, with_false_positive)
    assert (metrics["bbox"]["APs"], metrics["bbox"]["APl"]) == pytest.approx((100.0, 50.0))
    assert (metrics["segm"]["APs"], metrics["segm"]["APl"]) == pytest.approx((250 / 3, 100.0))


def test_no_detections_score_zero(coco):
    # Images evaluated without a single detection: every object missed, AP 0 (not a crash in
    # loadRes, which cannot take an empty list).
    evaluator, metrics = run(coco, empty_outputs)
    assert evaluator.results == []
    assert metrics == {t: {name: 0.0 for name in METRIC_NAMES} for t in ("bbox", "segm")}
    # ... nor when nothing at all was processed
    assert COCOEvaluator(coco).evaluate() == metrics


def test_boxes_without_masks_score_segm_zero(coco):
    # A Faster R-CNN output (no "masks") evaluated for both types: perfect boxes, no masks.
    def boxes_only(c, i):
        out = ground_truth_outputs(c, i)
        del out["masks"]
        return out

    evaluator, metrics = run(coco, boxes_only)
    assert metrics["bbox"]["AP"] == pytest.approx(100.0)
    assert metrics["segm"] == {name: 0.0 for name in METRIC_NAMES}
    assert all("segmentation" not in r for r in evaluator.results)


def test_only_processed_images_are_scored(coco):
    # Image 3 alone, perfect: 100, not 100 * (its objects / all objects); it has no medium
    # object, so APm has nothing to average (COCOeval's -1) and is None.
    _, metrics = run(coco, ground_truth_outputs, image_ids=[3], iou_types=("bbox",))
    assert list(metrics) == ["bbox"]
    assert metrics["bbox"]["APm"] is None
    assert metrics["bbox"] == pytest.approx({"AP": 100.0, "AP50": 100.0, "AP75": 100.0, "APs": 100.0,
                                             "APm": None, "APl": 100.0})


def test_image_processed_twice_counts_once(coco):
    # A distributed sampler pads the last batch with repeated images: a repeat must replace,
    # not add to, that image's detections (added, the duplicates would be false positives).
    evaluator = COCOEvaluator(coco)
    for image_id in IMAGE_IDS + [IMAGE_IDS[0]]:
        evaluator.process([ground_truth_outputs(coco, image_id)], [image_id])
    assert len(evaluator.results) == len(coco.getAnnIds())
    assert evaluator.evaluate()["bbox"]["AP"] == pytest.approx(100.0)


def test_results_are_coco_json(coco):
    # The saved detections: xywh boxes, category ids, string RLE counts that decode back to
    # the mask binarised at 0.5.
    from pycocotools import mask as mask_util

    out = ground_truth_outputs(coco, 7)
    out["masks"] = out["masks"] * 0.8 + 0.1  # soft masks: 0.9 inside, 0.1 outside
    evaluator = COCOEvaluator(coco)
    evaluator.process([out], [7])
    results = json.loads(json.dumps(evaluator.results))
    ann = coco.loadAnns(coco.getAnnIds(imgIds=[7]))[1]
    assert results[1]["bbox"] == pytest.approx(ann["bbox"])
    assert results[1]["category_id"] == ann["category_id"] and results[1]["image_id"] == 7
    assert (mask_util.decode(results[1]["segmentation"]) == coco.annToMask(ann)).all()
    assert masks_to_rle(torch.zeros(0, 1, 4, 4)) == []


def test_unknown_image_id_is_refused(coco):
    with pytest.raises(ValueError, match="image id 99"):
        COCOEvaluator(coco).process([ground_truth_outputs(coco, 7)], [99])


# ---------------------------------------------------------------------------------------------
# distributed: 2 gloo processes on the CPU

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, ann_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        coco = load_coco(Path(ann_file))
        evaluator = COCOEvaluator(coco)
        # rank r takes images r, r + 2, ...; rank 1 also repeats image 0, as a padded sampler does
        mine = IMAGE_IDS[rank::world_size] + ([IMAGE_IDS[0]] if rank == 1 else [])
        for image_id in mine:
            evaluator.process([mixed_outputs(coco, image_id)], [image_id])
        metrics = evaluator.evaluate()
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps({"metrics": metrics,
                                                                 "results": len(evaluator.results)}))
    finally:
        dist.destroy_process_group()


def test_distributed_gather_matches_single_process(tmp_path):
    # Each rank sees a part of the images (one twice); after the gather both ranks must return
    # exactly the single-process metrics of the same outputs. The outputs mix exact and
    # shifted boxes with graded scores and a false positive, so the metrics are not 0 or 100
    # and depend on every image being counted exactly once.
    ann_file, _ = write_tiny_coco(tmp_path)
    evaluator, expected = run(load_coco(ann_file), mixed_outputs)
    assert 0 < expected["bbox"]["AP"] < 100

    ctx = mp.spawn(_worker, args=(2, _free_port(), str(ann_file), str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("distributed evaluation did not finish in 120 s")
    for rank in range(2):
        got = json.loads(Path(tmp_path, f"rank{rank}.json").read_text())
        assert got["metrics"] == json.loads(json.dumps(expected)), f"rank {rank}"
        assert got["results"] == len(evaluator.results), f"rank {rank}"

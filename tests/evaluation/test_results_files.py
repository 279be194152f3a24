"""COCO results files: names the COCO server takes, the content pycocotools reads back, and the
same AP from the file as from the evaluator, on the tiny set with constructed detections.

The detections are tiny_coco's ``mixed_outputs`` (exact, shifted and false-positive boxes and
masks, graded scores) with each image's false positive ranked first, so box and mask AP differ
and neither is 0 or 100: a file that dropped a detection, rounded a box, kept a mask detection's
box (its area would then be the box's) or paired a result with another image would score
differently.
"""

from __future__ import annotations

import contextlib
import io
import json

import pytest
from pycocotools.cocoeval import COCOeval

from fptbench.evaluation import METRIC_NAMES, COCOEvaluator, coco_results_name, write_coco_results
from tests.evaluation.tiny_coco import IMAGE_IDS, ground_truth_outputs, load_coco, mixed_outputs, write_tiny_coco


@pytest.fixture
def coco(tmp_path):
    ann_file, _ = write_tiny_coco(tmp_path)
    return load_coco(ann_file)


def ranked_outputs(coco, image_id):
    """``mixed_outputs`` with the false positive (last) scoring 0.95, above every object."""
    outputs = mixed_outputs(coco, image_id)
    outputs["scores"][-1] = 0.95
    return outputs


def score_file(coco_gt, path, iou_type, image_ids):
    """pycocotools alone: loadRes of the file, COCOeval, stats in percent (None for -1)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(str(path))
        coco_eval = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        coco_eval.params.imgIds = image_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return {name: (float(v) * 100.0 if v >= 0 else None) for name, v in zip(METRIC_NAMES, coco_eval.stats)}


def test_names_follow_the_coco_upload_format():
    # [type]_[testset]_[alg]_results.json, the iou type closing alg. Fails if the server's
    # fields change order, or if a name with "_" (which the server splits on) is let through.
    assert coco_results_name("test-dev2017", "bbox") == "detections_test-dev2017_fptbench-bbox_results.json"
    assert coco_results_name("val2017", "segm", alg="fpt") == "detections_val2017_fpt-segm_results.json"
    for bad in ({"alg": "my_alg"}, {"alg": ""}, {"image_set": "a_b"}, {"image_set": "x/y"}):
        with pytest.raises(ValueError, match="without '_'"):
            coco_results_name(**{"image_set": "val2017", "iou_type": "bbox", **bad})
    # a split of one's own with '_' in its name (data.test: val_small) gets a name, not a crash
    # after training (the record would be lost)
    from fptbench.data.catalog import coco_split

    assert coco_results_name(coco_split("val_small").image_set, "bbox") == "detections_val-small_fptbench-bbox_results.json"
    assert coco_results_name(coco_split("coco2017_test-dev").image_set, "segm").startswith("detections_test-dev2017_")


def test_files_score_as_the_evaluator(coco, tmp_path):
    evaluator = COCOEvaluator(coco)
    for image_id in IMAGE_IDS:
        evaluator.process([ranked_outputs(coco, image_id)], [image_id])
    metrics = evaluator.evaluate()
    out = tmp_path / "run"
    files = write_coco_results(evaluator, out, image_set="tiny")
    assert files == {"bbox": "detections_tiny_fptbench-bbox_results.json",
                     "segm": "detections_tiny_fptbench-segm_results.json"}
    assert sorted(p.name for p in out.iterdir()) == sorted(files.values())  # no temporary file left
    # the numbers are not trivial: the comparison below means something
    assert 0 < metrics["bbox"]["AP"] < 100 and 0 < metrics["segm"]["AP"] < 100
    assert metrics["bbox"]["AP"] != metrics["segm"]["AP"]
    for iou_type, name in files.items():
        assert score_file(coco, out / name, iou_type, IMAGE_IDS) == metrics[iou_type], iou_type
    boxes = json.loads((out / files["bbox"]).read_text())
    masks = json.loads((out / files["segm"]).read_text())
    n = sum(len(coco.getAnnIds(imgIds=[i])) + 1 for i in IMAGE_IDS)  # every object + one false positive per image
    assert len(boxes) == len(masks) == n
    assert all(set(r) == {"image_id", "category_id", "bbox", "score"} for r in boxes)
    assert all(set(r) == {"image_id", "category_id", "segmentation", "score"} for r in masks)
    assert all(isinstance(r["segmentation"]["counts"], str) for r in masks)
    assert [r["image_id"] for r in boxes] == sorted(r["image_id"] for r in boxes)


def test_a_detector_without_masks_writes_boxes_only(coco, tmp_path):
    # Fails if a segm file is written (or an empty one) for Faster R-CNN.
    evaluator = COCOEvaluator(coco, iou_types=("bbox",))
    outputs = {k: v for k, v in ground_truth_outputs(coco, 7).items() if k != "masks"}
    evaluator.process([outputs], [7])
    assert write_coco_results(evaluator, tmp_path, image_set="val2017") == \
        {"bbox": "detections_val2017_fptbench-bbox_results.json"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("detections")] == \
        ["detections_val2017_fptbench-bbox_results.json"]


def test_ground_truth_without_annotations_is_not_scored(tmp_path):
    # An image_info file (COCO test-dev): the evaluator collects and writes, but refuses to score
    # (COCOeval would print -1 everywhere, i.e. a record of nulls that looks like a result).
    ann_file, _ = write_tiny_coco(tmp_path)
    data = json.loads(ann_file.read_text())
    del data["annotations"]
    info = tmp_path / "image_info.json"
    info.write_text(json.dumps(data))
    coco_gt = load_coco(info)
    reference = load_coco(ann_file)
    evaluator = COCOEvaluator(coco_gt)
    for image_id in IMAGE_IDS:
        evaluator.process([mixed_outputs(reference, image_id)], [image_id])
    with pytest.raises(ValueError, match="no annotations"):
        evaluator.evaluate()
    files = write_coco_results(evaluator, tmp_path / "out", image_set="test-dev2017")
    with contextlib.redirect_stdout(io.StringIO()):
        loaded = coco_gt.loadRes(str(tmp_path / "out" / files["segm"]))
    assert sorted(loaded.getImgIds()) == sorted(IMAGE_IDS) and len(loaded.anns) == len(evaluator.results)

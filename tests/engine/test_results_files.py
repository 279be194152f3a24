"""Results files for the evaluation servers, written by ``evaluate_model`` with real small models.

Detection: a random-weight ResNet-18 Mask R-CNN (seed 0) on tiny_coco's three images, first as a
COCO test-dev ``image_info`` split (no annotations, COCO's ``test2017/`` folder): written, not
scored. A random model finds none of tiny_coco's objects (AP 0, whatever the files hold), so the
scored split annotates the same images with some of the model's own test-dev detections: its AP
is then neither 0 nor 100, and "the file scores as the record" compares real numbers.
Segmentation: a random-weight ResNet-18 segmenter on fake Cityscapes and VOC test trees (images
only), its predictions checked against the model's own argmax mapped by hand to the servers' ids.
Last, the same runs in 2 gloo processes write the same files as one process.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from fptbench.config import load_config
from fptbench.engine.evaluate import evaluate_model
from fptbench.engine.model import build_model
from fptbench.evaluation import METRIC_NAMES
from fptbench.evaluation.segmentation import segmentation_logits
from tests.evaluation.tiny_coco import IMAGE_IDS, write_tiny_coco

DETECTION = [("model.backbone_pretrain", ""), ("model.num_classes", 3), ("data.num_workers", 0)]
SEGMENTATION = [("model.backbone_pretrain", ""), ("model.fpn_channels", 16), ("gt.channels", 8), ("fpt.norm", "bn"),
                ("seg.ufp_kernels", "[1, 3]"), ("seg.crop_size", "[32, 32]"), ("data.num_workers", 0)]
# Cityscapes trainId -> labelId, from cityscapesScripts' helpers/labels.py (written out, not the module's table)
LABEL_IDS = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]


def quiet_coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def score_file(coco_gt: COCO, path: Path, iou_type: str) -> dict:
    """pycocotools alone on a results file: loadRes, COCOeval over the split's images, percent."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(str(path)), iouType=iou_type)
        coco_eval.params.imgIds = sorted(coco_gt.getImgIds())
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return {name: (float(v) * 100.0 if v >= 0 else None) for name, v in zip(METRIC_NAMES, coco_eval.stats)}


def detection_data(root: Path) -> Path:
    """tiny_coco's three images as ``coco2017_test-dev``: an image_info file (images and
    categories, no annotations) with the images in COCO's ``test2017/``."""
    ann_file, img_dir = write_tiny_coco(root)
    info = json.loads(ann_file.read_text())
    del info["annotations"]
    (root / "annotations" / "image_info_test-dev2017.json").write_text(json.dumps(info))
    img_dir.rename(root / "test2017")
    return root


def seeded_model(cfg: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(cfg)


def config_test_dev(root: Path) -> dict:
    return load_config("synth_r18_bfp", DETECTION + [("data.root", str(root)), ("data.test", "coco2017_test-dev")])


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    return detection_data(tmp_path_factory.mktemp("coco"))


@pytest.fixture(scope="module")
def model(coco_root) -> torch.nn.Module:
    return seeded_model(config_test_dev(coco_root))


@pytest.fixture(scope="module")
def test_dev_run(coco_root, model, tmp_path_factory) -> tuple[dict, Path, str]:
    """The test-dev run: (record, run folder, what it printed)."""
    out = tmp_path_factory.mktemp("test-dev")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        record = evaluate_model(config_test_dev(coco_root), model, out, progress=False)
    return record, out, printed.getvalue()


@pytest.fixture(scope="module")
def derived(coco_root, test_dev_run) -> str:
    """Split ``derived``: the test-dev images annotated with some of the model's own test-dev
    detections (ranks 2, 5 and 9 of each image by score, whose masks have >= 20 pixels), each
    box and mask exactly. The same model then finds every object with IoU 1 but ranks other
    detections above them: box and mask AP between 0 and 100, where a random-weight model on
    real objects scores 0 (and a 0 == 0 comparison would prove nothing)."""
    record, out, _ = test_dev_run
    boxes = json.loads((out / record["results"]["files"]["bbox"]).read_text())
    masks = json.loads((out / record["results"]["files"]["segm"]).read_text())
    info = json.loads((coco_root / "annotations" / "image_info_test-dev2017.json").read_text())
    annotations = []
    for image_id in IMAGE_IDS:
        mine = sorted((k for k, b in enumerate(boxes) if b["image_id"] == image_id), key=lambda k: -boxes[k]["score"])
        usable = [k for k in mine if mask_util.area(masks[k]["segmentation"]) >= 20]
        for k in (usable[2], usable[5], usable[9]):
            assert masks[k]["image_id"] == image_id and masks[k]["category_id"] == boxes[k]["category_id"]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": boxes[k]["category_id"], "bbox": boxes[k]["bbox"],
                                "segmentation": masks[k]["segmentation"], "iscrowd": 0,
                                "area": float(mask_util.area(masks[k]["segmentation"]))})
    (coco_root / "annotations" / "instances_derived.json").write_text(json.dumps({**info, "annotations": annotations}))
    (coco_root / "images").mkdir(exist_ok=True)
    if not (coco_root / "images" / "derived").exists():
        (coco_root / "images" / "derived").symlink_to(coco_root / "test2017")
    return "derived"


def derived_config(root: Path) -> dict:
    return load_config("synth_r18_bfp", DETECTION + [("data.root", str(root)), ("data.test", "derived")])


def test_test_dev_is_run_and_written_not_scored(coco_root, test_dev_run):
    # COCO test-dev: image_info file, images in test2017/. Fails if the split is refused, if
    # the record claims a score, if the summary line does not say so, or if the files are not
    # what the COCO server takes (names, and content loadRes reads against the image_info file).
    record, out, printed = test_dev_run
    bbox = out / "detections_test-dev2017_fptbench-bbox_results.json"
    segm = out / "detections_test-dev2017_fptbench-segm_results.json"
    count = record["results"]["detections"]
    assert printed == (f"[fptbench] evaluated 3 images of coco2017_test-dev: not scored (no annotations): wrote "
                       f"{count} detections to {bbox} and {segm} -> {out / 'result.json'}\n")
    assert record["scored"] is False and record["metrics"] == {}
    assert record["unscored_reason"].startswith(f"{coco_root}/annotations/image_info_test-dev2017.json has no "
                                                f"annotations")
    assert record["results"] == {"format": "coco", "image_set": "test-dev2017",
                                 "files": {"bbox": bbox.name, "segm": segm.name}, "detections": count}
    assert record["dataset"] == {"name": "coco2017_test-dev", "images": 3}
    assert count > 30
    assert sorted(p.name for p in out.iterdir()) == sorted([bbox.name, segm.name, "result.json"])
    assert json.loads((out / "result.json").read_text()) == record
    info = quiet_coco(coco_root / "annotations" / "image_info_test-dev2017.json")
    for path in (bbox, segm):
        with contextlib.redirect_stdout(io.StringIO()):
            loaded = info.loadRes(str(path))
        assert len(loaded.anns) == count and set(loaded.getImgIds()) == set(IMAGE_IDS)
    masks = json.loads(segm.read_text())
    assert all(isinstance(r["segmentation"]["counts"], str) and "bbox" not in r for r in masks)
    assert all(set(r) == {"image_id", "category_id", "bbox", "score"} for r in json.loads(bbox.read_text()))


def test_val_results_files_score_as_the_record(coco_root, model, derived, test_dev_run, tmp_path):
    # Fails if a results file holds other detections than those scored (a dropped or reordered
    # image, a rounded box, a mask result that keeps its box and so its box's area), if a file
    # is missing from the record or named otherwise, or if the record is written before them.
    record = evaluate_model(derived_config(coco_root), model, tmp_path, progress=False)
    assert record["scored"] is True and "unscored_reason" not in record
    files = {"bbox": "detections_derived_fptbench-bbox_results.json",
             "segm": "detections_derived_fptbench-segm_results.json"}
    assert record["results"] == {"format": "coco", "image_set": "derived", "files": files,
                                 "detections": test_dev_run[0]["results"]["detections"]}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*files.values(), "result.json"])
    assert json.loads((tmp_path / "result.json").read_text()) == record
    coco_gt = quiet_coco(coco_root / "annotations" / "instances_derived.json")
    for iou_type, name in files.items():
        assert 0 < record["metrics"][iou_type]["AP"] < 100, iou_type  # real numbers, not 0 == 0
        assert score_file(coco_gt, tmp_path / name, iou_type) == record["metrics"][iou_type], iou_type
        # the detections of the unannotated split, byte for byte: one code path
        test_dev = test_dev_run[1] / name.replace("derived", "test-dev2017")
        assert (tmp_path / name).read_bytes() == test_dev.read_bytes(), iou_type


# -- segmentation: test splits without labels ---------------------------------------------------

def cityscapes_test(root: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for city, stem, size in (("berlin", "berlin_000000_000019", (32, 48)), ("bonn", "bonn_000001_000019", (40, 40))):
        path = root / "leftImg8bit" / "test" / city / f"{stem}_leftImg8bit.png"
        path.parent.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def voc_test(root: Path) -> list[Path]:
    base = root / "VOCdevkit" / "VOC2012"
    (base / "JPEGImages").mkdir(parents=True)
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    rng = np.random.default_rng(1)
    ids = ["2008_000001", "2008_000017"]
    for i in ids:
        Image.fromarray(rng.integers(0, 256, (36, 44, 3), dtype=np.uint8)).save(base / "JPEGImages" / f"{i}.jpg")
    (base / "ImageSets" / "Segmentation" / "test.txt").write_text("\n".join(ids) + "\n")
    return [base / "JPEGImages" / f"{i}.jpg" for i in ids]


def argmax_of(model: torch.nn.Module, path: Path) -> np.ndarray:
    from fptbench.data.image import read_image

    model.eval()
    with torch.inference_mode():
        return segmentation_logits(model, read_image(path)[None]).argmax(1)[0].numpy()


@pytest.mark.parametrize("name", ["cityscapes_test", "voc2012_test"])
def test_segmentation_test_split_writes_the_servers_pngs(name, tmp_path, capsys):
    # Fails if an image is skipped or named otherwise than the server expects, if Cityscapes
    # predictions are written as trainIds, if VOC's are not palette indices, or if the record
    # claims a score.
    images = cityscapes_test(tmp_path / "data") if name == "cityscapes_test" else voc_test(tmp_path / "data")
    classes = 19 if name == "cityscapes_test" else 21
    cfg = load_config("synth_seg_r18_base", SEGMENTATION + [("data.root", str(tmp_path / "data")), ("data.test", name),
                                                            ("model.num_classes", classes)])
    model = seeded_model(cfg)
    out = tmp_path / "run"
    record = evaluate_model(cfg, model, out, progress=False)
    folder = out / f"{name}_results"
    assert capsys.readouterr().out.endswith(f"not scored (no labels): wrote 2 label images to {folder} "
                                            f"-> {out / 'result.json'}\n")
    assert record["scored"] is False and record["metrics"] == {} and "has no labels" in record["unscored_reason"]
    assert record["results"]["folder"] == f"{name}_results" and record["results"]["images"] == 2
    for image in images:
        if name == "cityscapes_test":
            written = Image.open(folder / image.name)
            assert written.mode == "L"
            expected = np.array(LABEL_IDS, dtype=np.uint8)[argmax_of(model, image)]
        else:
            written = Image.open(folder / "results/VOC2012/Segmentation/comp6_test_cls" / f"{image.stem}.png")
            assert written.mode == "P" and written.getpalette()[15 * 3:15 * 3 + 3] == [192, 128, 128]  # person
            expected = argmax_of(model, image).astype(np.uint8)
        assert np.array_equal(np.asarray(written), expected), image.name
    assert sum(1 for p in folder.rglob("*") if p.is_file()) == 2  # nothing else (no temporary file)


# -- two processes ------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, coco_root: str, seg_root: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        det = derived_config(Path(coco_root))
        evaluate_model(det, seeded_model(config_test_dev(Path(coco_root))), Path(out) / "det", progress=False)
        seg = load_config("synth_seg_r18_base", SEGMENTATION + [("data.root", seg_root),
                                                                ("data.test", "cityscapes_test"),
                                                                ("model.num_classes", 19)])
        record = evaluate_model(seg, seeded_model(seg), Path(out) / "seg", progress=False)
        Path(out, f"rank{rank}.json").write_text(json.dumps(record["results"]))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_write_what_one_writes(coco_root, model, derived, tmp_path):
    # Each rank detects half of the images; rank 0 must write every detection (the gather), in
    # the same files as one process, and score them the same. Each rank writes its own label
    # images; both ranks' records must count all of them.
    single = tmp_path / "single"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker: the same kernels, bitwise the same detections
    try:
        evaluate_model(derived_config(coco_root), model, single, progress=False)
    finally:
        torch.set_num_threads(threads)
    cityscapes_test(tmp_path / "seg")
    ctx = mp.spawn(_worker, args=(_free_port(), str(coco_root), str(tmp_path / "seg"), str(tmp_path / "ddp")),
                   nprocs=2, join=False)
    deadline = time.monotonic() + 180
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the distributed evaluation did not finish in 180 s")
    for name in ("detections_derived_fptbench-bbox_results.json", "detections_derived_fptbench-segm_results.json"):
        assert (tmp_path / "ddp" / "det" / name).read_bytes() == (single / name).read_bytes(), name
    ddp = json.loads((tmp_path / "ddp" / "det" / "result.json").read_text())
    assert ddp["metrics"] == json.loads((single / "result.json").read_text())["metrics"]
    for rank in range(2):
        assert json.loads((tmp_path / "ddp" / f"rank{rank}.json").read_text())["images"] == 2, rank
    assert sorted(p.name for p in (tmp_path / "ddp" / "seg" / "cityscapes_test_results").iterdir()) == \
        ["berlin_000000_000019_leftImg8bit.png", "bonn_000001_000019_leftImg8bit.png"]

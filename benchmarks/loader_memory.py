"""Data-loader memory per worker on a COCO-sized annotation file, before and after serialization.

The known failure: a dataset that keeps its records as Python lists and dicts (and the
pycocotools index) is copied into every forked worker page by page, as reading an object writes
its reference count and the garbage collector walks every container: each worker's private
memory grows towards the size of the whole annotation file. fptbench's CocoDetection holds its
records in one NumPy buffer (:class:`fptbench.data.coco.SerializedRecords`, as detectron2's
``DatasetFromList(serialize=True)``); ``serialize=False`` is the layout before.

The annotation file is generated, not shipped: COCO train2017's counts (118,287 images, 860,001
instances), each instance a polygon of 6..20 vertices in a 64 x 64 image; every image entry
points to one of 16 small PNGs, so that items load fast and only the annotations are large.

Run::

    python benchmarks/loader_memory.py                       # both layouts, 8 workers, 4000 samples
    python benchmarks/loader_memory.py --layout serialized --images 20000 --instances 145000

Prints, per worker, its private memory (USS: Private_Clean + Private_Dirty of
/proc/PID/smaps_rollup), PSS and RSS after warm-up and at the end, and whether every worker's USS
at the end is within 10% of the first worker's after warm-up (the target of issue #11).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COCO_IMAGES = 118_287  # train2017
COCO_INSTANCES = 860_001
SIDE = 64
FILES = 16


def generate(out: Path, images: int, instances: int, seed: int = 0) -> Path:
    """Write ``out/annotations/instances_sim.json`` and ``out/images/sim/*.png``; reuse them if present
    with the same counts. Returns the annotation file."""
    ann_file = out / "annotations" / "instances_sim.json"
    stamp = out / "counts.json"
    if ann_file.exists() and stamp.exists() and json.loads(stamp.read_text()) == [images, instances, seed]:
        return ann_file
    from PIL import Image

    rng = np.random.default_rng(seed)
    (out / "images" / "sim").mkdir(parents=True, exist_ok=True)
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    for k in range(FILES):
        Image.fromarray(rng.integers(0, 255, (SIDE, SIDE, 3), dtype=np.uint8)).save(out / "images" / "sim" / f"{k}.png")
    per_image = rng.multinomial(instances - images, np.full(images, 1 / images)) + 1  # >= 1 each
    annotations = []
    ann_id = 1
    for img_id, n in enumerate(per_image, start=1):
        for _ in range(int(n)):
            vertices = int(rng.integers(6, 21))
            cx, cy = rng.uniform(12, SIDE - 12, 2)
            angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
            radius = rng.uniform(4, 11, vertices)
            poly = np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], 1).round(2)
            x0, y0 = poly.min(0)
            x1, y1 = poly.max(0)
            annotations.append({"id": ann_id, "image_id": img_id, "category_id": int(rng.integers(1, 81)),
                                "segmentation": [poly.reshape(-1).tolist()], "iscrowd": 0,
                                "bbox": [round(float(x0), 2), round(float(y0), 2), round(float(x1 - x0), 2), round(float(y1 - y0), 2)],
                                "area": round(float((x1 - x0) * (y1 - y0) * 0.7), 2)})
            ann_id += 1
    data = {"images": [{"id": i, "file_name": f"{i % FILES}.png", "height": SIDE, "width": SIDE}
                       for i in range(1, images + 1)],
            "annotations": annotations,
            "categories": [{"id": c, "name": f"class{c}"} for c in range(1, 81)]}
    ann_file.write_text(json.dumps(data))
    stamp.write_text(json.dumps([images, instances, seed]))
    return ann_file


def _memory_mb(pid: int) -> dict[str, float]:
    """USS, PSS and RSS of ``pid`` in MB, from /proc/PID/smaps_rollup."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[1].isdigit():
                fields[parts[0].rstrip(":")] = int(parts[1]) / 1024
    return {"uss": fields["Private_Clean"] + fields["Private_Dirty"], "pss": fields["Pss"], "rss": fields["Rss"]}


def measure(data: Path, layout: str, workers: int, samples: int, warmup: int) -> dict:
    """Load ``samples`` items through a DataLoader of ``workers`` forked workers; memory per worker
    after ``warmup`` items and at the end."""
    import torch
    from torch.utils.data import DataLoader

    from fptbench.data.coco import CocoDetection
    from fptbench.engine.trainer import collate

    t0 = time.perf_counter()
    dataset = CocoDetection(data, "annotations/instances_sim.json", "images/sim", train=True,
                            serialize=layout == "serialized")
    gc.collect()
    build_s = time.perf_counter() - t0
    main_mb = _memory_mb(os.getpid())
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:samples].tolist()
    loader = DataLoader(dataset, batch_size=1, sampler=order, num_workers=workers, collate_fn=collate,
                        multiprocessing_context="fork", prefetch_factor=2)
    batches = iter(loader)
    pids = [worker.pid for worker in batches._workers]  # torch's worker processes (no public accessor)
    snapshots = {}
    for i, _ in enumerate(batches, start=1):
        if i in (warmup, samples):
            snapshots[i] = [_memory_mb(pid) for pid in pids]
    return {"layout": layout, "images": len(dataset), "build_s": round(build_s, 1), "main": main_mb,
            "warm": snapshots[warmup], "end": snapshots[samples]}


def report(result: dict) -> bool:
    warm, end = result["warm"], result["end"]
    first = warm[0]["uss"]
    print(f"\n{result['layout']}: {result['images']} images, dataset built in {result['build_s']} s; main process "
          f"USS {result['main']['uss']:.0f} MB, RSS {result['main']['rss']:.0f} MB")
    print("worker  USS warm-up -> end (MB)   PSS warm-up -> end   RSS end   end USS / worker 0 warm-up USS")
    ok = True
    for k, (w, e) in enumerate(zip(warm, end)):
        ratio = e["uss"] / first
        ok &= ratio <= 1.10
        print(f"{k:>6}  {w['uss']:8.0f} -> {e['uss']:8.0f}      {w['pss']:8.0f} -> {e['pss']:8.0f}  {e['rss']:8.0f}   {ratio:6.2f}")
    total = sum(e["uss"] for e in end)
    print(f"all workers: USS {total:.0f} MB at the end; every worker within 10% of worker 0 after warm-up: {ok}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("/tmp/fptbench-loader-memory"), help="where the generated dataset goes")
    parser.add_argument("--images", type=int, default=COCO_IMAGES)
    parser.add_argument("--instances", type=int, default=COCO_INSTANCES)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4000, help="items loaded in all (default 4000)")
    parser.add_argument("--warmup", type=int, default=400, help="items before the first measurement (default 400)")
    parser.add_argument("--layout", choices=["both", "serialized", "list"], default="both")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--_one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._one:  # one layout, in a fresh process: the other's memory must not count
        print(json.dumps(measure(args.data, args._one, args.workers, args.samples, args.warmup)))
        return 0
    t0 = time.perf_counter()
    generate(args.data, args.images, args.instances)
    size = (args.data / "annotations" / "instances_sim.json").stat().st_size / 2**20
    print(f"annotations: {args.images} images, {args.instances} instances, {size:.0f} MB "
          f"({time.perf_counter() - t0:.0f} s); {args.workers} workers, {args.samples} samples, warm-up {args.warmup}")
    layouts = ["list", "serialized"] if args.layout == "both" else [args.layout]
    results, ok = [], True
    for layout in layouts:
        out = subprocess.run([sys.executable, __file__, "--data", str(args.data), "--workers", str(args.workers),
                              "--samples", str(args.samples), "--warmup", str(args.warmup), "--_one", layout],
                             capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if out.returncode != 0:
            print(out.stderr[-3000:], file=sys.stderr)
            return 1
        result = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(result)
        passed = report(result)
        ok &= passed if layout == "serialized" else True
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

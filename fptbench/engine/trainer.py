"""``fptbench train``: SGD with warm-up and steps, DDP, exact resume, TensorBoard, then evaluation.

The loop is the seed's ``train_net_step.py`` done with the field's tools: torch DDP instead of
a home-made DataParallel, torch's LambdaLR for the schedule, torch.amp for mixed precision,
TensorBoard for scalars and tqdm for progress. Resuming is exact: a run killed at any instant
and resumed with ``resume=True`` ends with bitwise the same weights on the CPU (fp32), because
the checkpoint holds every state that the next iteration reads (weights, optimizer, scheduler,
RNGs) and the data stream is a function of the iteration (TrainBatchSampler).
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from fptbench.engine.checkpoint import find_last, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from fptbench.engine.distributed import DistInfo, init_distributed
from fptbench.errors import UsageError
from fptbench.engine.sampler import TrainBatchSampler
from fptbench.engine.schedule import build_lr_scheduler

__all__ = ["train", "effective_config", "seed_everything", "collate", "weights_digest"]

DEBUG_MAX_ITER = 20


def effective_config(cfg: dict) -> dict:
    """The config a run really uses: DEBUG caps train.max_iter (data.max_images: build_dataset)."""
    cfg = copy.deepcopy(cfg)
    if cfg.get("DEBUG"):
        cfg["train"]["max_iter"] = min(cfg["train"]["max_iter"], DEBUG_MAX_ITER)
        cfg["train"]["checkpoint_period"] = min(cfg["train"]["checkpoint_period"], cfg["train"]["max_iter"])
    return cfg


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def collate(batch: list) -> tuple[list, list]:
    """Detection batches stay lists: images of different sizes, targets of different lengths."""
    return tuple(zip(*batch))  # type: ignore[return-value]


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _stream_signature(cfg: dict, info: DistInfo) -> list:
    """What the data stream depends on: resuming with another value would not replay the run."""
    return [cfg["seed"], cfg["train"]["images_per_device"], info.world_size, cfg["data"]["train"], cfg["data"]["max_images"]]


def _gather(obj: Any, info: DistInfo) -> list:
    """Every rank's ``obj`` (a one-element list for a single process)."""
    if info.world_size == 1:
        return [obj]
    out: list = [None] * info.world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def _all_finite(value: float, info: DistInfo) -> bool:
    """True when the loss is finite on every rank, so that all ranks stop together (a rank that
    raised alone would leave the others waiting in DDP's all-reduce)."""
    return all(math.isfinite(v) for v in _gather(value, info))


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer, in state_dict order: equal iff bitwise equal weights."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def set_train_sizes(model: torch.nn.Module, cfg: dict, *, training: bool) -> None:
    """Multi-scale training (one short side drawn per image by torchvision's transform) or the
    fixed test scale, on the model's GeneralizedRCNNTransform."""
    transform = model.transform
    if training:
        transform.min_size = tuple(cfg["train"]["min_sizes"] or [cfg["model"]["min_size"]])
        transform.max_size = cfg["train"]["max_size"] or cfg["model"]["max_size"]
    else:
        transform.min_size = (cfg["model"]["min_size"],)
        transform.max_size = cfg["model"]["max_size"]


def load_initial_weights(model: torch.nn.Module, cfg: dict, *, load_ckpt: str | None, load_detectron: str | None, log) -> None:
    """Pretrained weights from local files, in order: ImageNet trunk, detection checkpoint,
    --load-detectron, --load-ckpt (each later one overrides what it covers)."""
    from fptbench.checkpoint import load_backbone_weights, load_detection_weights, load_detectron_weights

    steps = [
        (cfg["model"]["backbone_weights"], load_backbone_weights),
        (cfg["model"]["weights"], load_detection_weights),
        (load_detectron, load_detectron_weights),
        (load_ckpt, load_detection_weights),
    ]
    for path, loader in steps:
        if path:
            log(loader(model, path).summary())


def train(
    cfg: dict,
    output_dir: str | os.PathLike,
    *,
    resume: bool = False,
    load_ckpt: str | None = None,
    load_detectron: str | None = None,
    save: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the model of ``cfg``; write checkpoints, TensorBoard scalars and ``result.json`` in
    ``output_dir``.

    Returns:
        dict: the run record (``fptbench.records``) when ``train.eval_at_end``, else a summary
        with ``iterations`` and ``wall_time_s``.
    """
    from tqdm import tqdm

    from fptbench.data import build_dataset
    from fptbench.modeling import build_model

    cfg = effective_config(cfg)
    tcfg = cfg["train"]
    info = init_distributed()
    main = info.rank == 0
    device = info.device
    output_dir = Path(output_dir)
    log = (lambda msg: tqdm.write(f"[fptbench] {msg}")) if main else (lambda msg: None)

    seed_everything(cfg["seed"])
    model = build_model(cfg)
    load_initial_weights(model, cfg, load_ckpt=load_ckpt, load_detectron=load_detectron, log=log)
    model.to(device)
    if info.world_size > 1:
        # Same initial weights everywhere (DDP also broadcasts rank 0's), then one random stream
        # per rank (RoI sampling, multi-scale draws, attention dropout), as detectron2 seeds
        # seed + rank. A single process keeps its stream: its results stay those benchmarked.
        seed_everything(cfg["seed"] + info.rank)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=tcfg["base_lr"], momentum=tcfg["momentum"], weight_decay=tcfg["weight_decay"])
    scheduler = build_lr_scheduler(optimizer, tcfg)
    use_amp = device.type == "cuda" and tcfg["amp"]
    scaler = torch.amp.GradScaler("cuda") if use_amp else None

    start_iter = 0
    time_before = 0.0  # training seconds spent before a resume
    last = find_last(output_dir) if resume else None
    stream = _stream_signature(cfg, info)
    if last is not None:
        state = load_checkpoint(last)
        saved = state["extra"].get("stream")
        if saved is not None and saved != stream:
            raise UsageError(
                f"{last}: cannot resume exactly: the checkpoint's data stream {saved} differs from this run's {stream}"
            )
        if state["iteration"] > tcfg["max_iter"]:
            raise UsageError(f"{last}: the checkpoint is at iteration {state['iteration']}, past train.max_iter={tcfg['max_iter']}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        rng = state["rng"]
        set_rng_state(rng[info.rank] if isinstance(rng, list) else rng)
        start_iter = state["iteration"]
        time_before = state["extra"].get("train_time_s", 0.0)
        log(f"resumed from {last} at iteration {start_iter}")
    elif resume:
        log(f"no checkpoint in {output_dir / 'checkpoints'}: starting from iteration 0")

    ddp_model = model
    if info.world_size > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[info.local_rank] if device.type == "cuda" else None
        )

    dataset = build_dataset(cfg, "train")
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(dataset.skipped.items())) or "nothing"
    log(f"training on {cfg['data']['train']}: {len(dataset)} images; skipped {skipped}")
    sampler = TrainBatchSampler(
        len(dataset),
        images_per_device=tcfg["images_per_device"],
        seed=cfg["seed"],
        rank=info.rank,
        world_size=info.world_size,
        start_iter=start_iter,
        flip=cfg["data"]["flip"],
    )
    # Its own generator: creating the loader must not draw from the global RNG, which the
    # checkpoint restores (a resumed loader would otherwise shift every later random draw).
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=cfg["data"]["num_workers"],
        generator=torch.Generator().manual_seed(cfg["seed"]),
    )

    writer = None
    if main and save:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(output_dir / "tensorboard"), purge_step=start_iter)

    max_iter = tcfg["max_iter"]
    set_train_sizes(model, cfg, training=True)
    ddp_model.train()
    if cfg["train"]["cpu_bf16"] and device.type == "cpu":
        autocast = torch.autocast("cpu", dtype=torch.bfloat16)
    elif use_amp:
        autocast = torch.autocast("cuda", dtype=torch.float16)
    else:
        autocast = nullcontext()
    bar = tqdm(total=max_iter, initial=start_iter, desc="train", disable=not (main and progress), dynamic_ncols=True)
    t_start = time.perf_counter()
    data_iter = iter(loader)
    loss_value = float("nan")
    for iteration in range(start_iter, max_iter):
        t0 = time.perf_counter()
        images, targets = next(data_iter)
        images = [img.to(device, non_blocking=True) for img in images]
        targets = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
        data_time = time.perf_counter() - t0
        with autocast:
            loss_dict = ddp_model(images, targets)
        loss = sum(loss_dict.values())
        loss_value = float(loss.detach())
        if not _all_finite(loss_value, info):
            raise FloatingPointError(
                f"loss is {loss_value} at iteration {iteration}: "
                + ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in loss_dict.items())
            )
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if tcfg["clip_grad_norm"] > 0:
            torch.nn.utils.clip_grad_norm_(params, tcfg["clip_grad_norm"])
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        done = iteration + 1
        if writer is not None and (done % tcfg["log_period"] == 0 or done == max_iter):
            for k, v in loss_dict.items():
                writer.add_scalar(f"loss/{k}", float(v.detach()), done)
            writer.add_scalar("loss/total", loss_value, done)
            writer.add_scalar("lr", lr, done)
            writer.add_scalar("time/iteration_s", time.perf_counter() - t0, done)
            writer.add_scalar("time/data_s", data_time, done)
            writer.add_scalar("memory_mb", _memory_mb(device), done)
        bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}", refresh=False)
        bar.update(1)
        if save and (done % tcfg["checkpoint_period"] == 0 or done == max_iter):
            rng = _gather(rng_state(), info)
            failure = ""
            if main:
                try:
                    save_checkpoint(
                        output_dir, iteration=done, model=model, optimizer=optimizer, scheduler=scheduler,
                        scaler=scaler, rng=rng,
                        extra={"train_time_s": time_before + time.perf_counter() - t_start, "stream": stream},
                    )
                except OSError as err:
                    failure = f"{output_dir}: cannot write the checkpoint of iteration {done}: {err}"
            failure = _gather(failure, info)[0]  # every rank learns whether rank 0 could save
            if failure:
                raise UsageError(failure)
    bar.close()
    if info.world_size > 1:
        # DDP broadcasts buffers (BatchNorm statistics) from rank 0 at the start of each forward,
        # so after the last step every rank holds its own: give all ranks rank 0's, which it
        # saved, before they evaluate together.
        for buffer in model.buffers():
            torch.distributed.broadcast(buffer, src=0)
    wall = time.perf_counter() - t_start
    if writer is not None:
        writer.close()
    log(
        f"trained iterations {start_iter}..{max_iter} in {wall:.1f} s "
        f"({wall / max(1, max_iter - start_iter):.3f} s/it), final loss {loss_value:.4f}, on {info.world_size} x {device.type}"
    )
    summary = {
        "iterations": max_iter,
        "wall_time_s": time_before + wall,
        "final_loss": loss_value,
        "weights_sha256": weights_digest(model),
        "rank": info.rank,
        "world_size": info.world_size,
    }
    if not tcfg["eval_at_end"]:
        return summary
    from fptbench.engine.evaluate import evaluate_model

    return evaluate_model(cfg, model, output_dir, info=info, training=summary, progress=progress)

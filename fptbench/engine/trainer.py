"""``fptbench train``: SGD with warm-up and steps (or poly), DDP, exact resume, TensorBoard, then evaluation.

The loop is the seed's ``train_net_step.py`` done with the field's tools: torch DDP instead of
a home-made DataParallel, torch's LambdaLR for the schedule, torch.amp for mixed precision,
TensorBoard for scalars and tqdm for progress. Resuming is exact: a run killed at any instant
and resumed with ``resume=True`` ends with bitwise the same weights on the CPU (fp32), because
the checkpoint holds every state that the next iteration reads (weights, optimizer, scheduler,
RNGs) and the data stream is a function of the iteration (TrainBatchSampler), segmentation crops
included (SegmentationTrainSet). Both tasks train here alike: the model's forward returns its loss
dict (torchvision's detectors, or :class:`~fptbench.modeling.segmenter.Segmenter`).

The recipe runs at the batch the run really has (:mod:`fptbench.batch`): against
``train.reference_batch`` the learning rate and the iteration counts follow the linear scaling
rule, printed at the start and recorded; ``train.accumulate`` micro-batches make one optimizer
step. The trunk's weights are resolved and checked (:func:`fptbench.trunks.require_trunk`) before
anything is written, and the resolved config is written to ``OUTPUT/config.yaml`` at the start.
"""

from __future__ import annotations

import copy
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from fptbench.batch import batch_plan, format_plan, plan_summary, scale_train
from fptbench.engine.checkpoint import (CHECKPOINT_DIR, clean_temp_files, find_last, find_resumable, numbered_checkpoints,
                                        prune_checkpoints, rng_state, save_checkpoint, set_rng_state)
from fptbench.engine.distributed import DistInfo, init_distributed
from fptbench.engine.evaluate import evaluate_model
from fptbench.engine.model import load_model, set_train_sizes, weights_digest
from fptbench.engine.sampler import TrainBatchSampler
from fptbench.engine.schedule import build_lr_scheduler
from fptbench.errors import UsageError
from fptbench.fileio import writable_dir
from fptbench.records import RESULT_FILE
from fptbench.trunks import require_trunk, trunk_source

__all__ = ["CONFIG_FILE", "train", "autocast_dtype", "effective_config", "param_groups", "seed_everything", "collate"]

DEBUG_MAX_ITER = 20


def effective_config(cfg: dict, world_size: int = 1) -> dict:
    """The config a run on ``world_size`` processes really uses: the ``train`` section at its
    effective batch (:func:`fptbench.batch.scale_train`), then DEBUG's cap on train.max_iter
    (data.max_images: build_dataset)."""
    cfg = copy.deepcopy(scale_train(cfg, batch_plan(cfg, world_size)))
    if cfg.get("DEBUG"):
        cfg["train"]["max_iter"] = min(cfg["train"]["max_iter"], DEBUG_MAX_ITER)
        cfg["train"]["checkpoint_period"] = min(cfg["train"]["checkpoint_period"], cfg["train"]["max_iter"])
    return cfg


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def collate(batch: list) -> tuple[list, list]:
    """Batches stay lists, as the models take them: detection images of different sizes and targets
    of different lengths; segmentation crops (of one size, stacked by the Segmenter)."""
    return tuple(zip(*batch))  # type: ignore[return-value]


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _stream_signature(cfg: dict, info: DistInfo, accumulate: int, grouped: bool) -> list:
    """What the data stream depends on: resuming with another value would not replay the run.
    Accumulation and grouping are appended only where they act (more than one micro-batch; batches
    grouped by orientation), so that a run from before they existed, whose stream they leave as it
    was, resumes, and one whose stream they change is refused."""
    signature = [cfg["seed"], cfg["train"]["images_per_device"], info.world_size, cfg["data"]["train"],
                 cfg["data"]["max_images"]]
    if accumulate != 1:
        signature.append(f"accumulate={accumulate}")
    if grouped:
        signature.append("aspect_grouping")
    return signature


def autocast_dtype(cfg: dict, device_type: str, *, bf16_supported: bool) -> tuple[torch.dtype | None, str]:
    """The dtype training autocasts to (None: fp32 throughout), and a warning to log ('' if none).

    CUDA: ``train.amp`` in ``train.amp_dtype``; bf16 falls back to fp16 where the GPU lacks it
    (``bf16_supported``: ``torch.cuda.is_bf16_supported()``). CPU: bf16 with ``train.cpu_bf16``.
    fp16 needs a grad scaler (:class:`_TrainState`), bf16 none: it has fp32's exponent range.
    """
    tcfg = cfg["train"]
    if device_type != "cuda":
        return (torch.bfloat16 if tcfg["cpu_bf16"] else None), ""
    if not tcfg["amp"]:
        return None, ""
    if tcfg["amp_dtype"] == "fp16":
        return torch.float16, ""
    if bf16_supported:
        return torch.bfloat16, ""
    return torch.float16, "train.amp_dtype: bf16 is not supported by this GPU; training in fp16 with grad scaling"


def _gather(obj: Any, info: DistInfo) -> list:
    """Every rank's ``obj`` (a one-element list for a single process)."""
    if info.world_size == 1:
        return [obj]
    out: list = [None] * info.world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def _all_finite(loss: torch.Tensor, info: DistInfo) -> bool:
    """True when the loss is finite on every rank, so that all ranks stop together (a rank that
    raised alone would leave the others waiting in DDP's all-reduce). One int all-reduce on the
    loss's device: no pickling, no host round trip per rank."""
    flag = torch.isfinite(loss.detach()).all().to(torch.int32).reshape(1)
    if info.world_size > 1:
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
    return bool(flag.item())


def train(
    cfg: dict,
    output_dir: str | os.PathLike,
    *,
    resume: bool = False,
    load_ckpt: str | None = None,
    save: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the model of ``cfg``; write ``config.yaml``, checkpoints, TensorBoard scalars and
    ``result.json`` in ``output_dir``.

    A ``model.backbone_pretrain`` trunk must be cached first
    (:func:`fptbench.engine.pretrain.prepare_trunk`, which ``fptbench train`` and the sweep's cells
    call): the trainer trains this run only.

    Returns:
        dict: the run record (``fptbench.records``) when ``train.eval_at_end``, else a summary
        with ``iterations`` and ``wall_time_s``.
    """
    given = cfg
    output_dir = Path(output_dir)
    info = init_distributed(cfg)  # first: an unusable device is refused before anything is written
    plan = batch_plan(cfg, info.world_size)
    cfg = effective_config(cfg, info.world_size)
    # a missing or corrupt trunk file is refused before anything is written, unless whole-model
    # weights cover the trunk (--load-ckpt, model.weights, or this folder's checkpoint to resume)
    resuming = bool(resume and (find_last(output_dir) or numbered_checkpoints(output_dir)))
    trunk = _resolve_trunk(cfg, info, covered=bool(load_ckpt or cfg["model"]["weights"] or resuming))
    _check_output(output_dir, resume=resume)
    log = _logger(info)
    if info.rank == 0:
        for path in clean_temp_files(output_dir):
            log(f"removed {path}, left by a write that was interrupted")
    batch = plan_summary(given, cfg, plan)
    log(format_plan(batch))
    _write_config(output_dir, given, batch, info, save=save)

    # resuming restores every weight from the checkpoint: no trunk or weights file is read
    model = _seeded_model(cfg, info, load_ckpt=load_ckpt, pretrained=not resuming, log=log)
    sync_bn = _sync_batchnorm(model, cfg, info)
    dtype, warning = autocast_dtype(cfg, info.device.type,
                                    bf16_supported=info.device.type == "cuda" and torch.cuda.is_bf16_supported())
    if warning:
        log(f"warning: {warning}")
    dataset, sampler = _train_data(cfg, info, plan.batch, log)
    state = _TrainState.create(model, cfg, info, dtype, plan.accumulate, grouped=sampler.groups is not None)
    if resume:
        _resume(state, output_dir, cfg, info, log)
    ddp_model = _wrap_ddp(model, info)
    sampler.start_iter = state.start_iter * plan.accumulate  # the sampler counts micro-batches
    loader = _loader(cfg, info, dataset, sampler)
    writer = _tensorboard(output_dir, state.start_iter) if info.rank == 0 and save else None
    set_train_sizes(model, cfg, training=True)
    ddp_model.train()
    t_start, loss_value = _loop(state, ddp_model, loader, writer, cfg, info, output_dir,
                                autocast=_autocast(info.device, dtype), save=save,
                                progress=progress)
    _share_buffers(model, info)
    wall = time.perf_counter() - t_start
    if writer is not None:
        writer.close()
    max_iter = cfg["train"]["max_iter"]
    loss_text = "unknown (not in the checkpoint)" if loss_value is None else f"{loss_value:.4f}"
    log(
        f"trained iterations {state.start_iter}..{max_iter} in {wall:.1f} s "
        f"({wall / max(1, max_iter - state.start_iter):.3f} s/it), final loss {loss_text}, "
        f"on {info.world_size} x {info.device.type}, autocast {_dtype_name(dtype)}"
    )
    summary = {
        "iterations": max_iter,
        "wall_time_s": state.time_before + wall,
        "final_loss": loss_value,
        "weights_sha256": weights_digest(model),
        "rank": info.rank,
        "world_size": info.world_size,
        "autocast_dtype": _dtype_name(dtype),  # what the forward passes computed in (fp32: none)
        "sync_bn": sync_bn,  # BatchNorm statistics over every rank's batch (model.sync_bn)
        "batch": batch,  # the effective batch and the schedule as given and as run (fptbench.batch)
        "trunk": _trunk_record(cfg, trunk),
    }
    if not cfg["train"]["eval_at_end"]:
        return summary
    return evaluate_model(cfg, model, output_dir, info=info, training=summary, progress=progress, given=given)


# ---------------------------------------------------------------------------------------------
# the steps of train(), in order

def _check_output(output_dir: Path, *, resume: bool) -> None:
    """The run folder can be written, and holds no other run unless resuming it: one line otherwise.
    (A file in its place has no checkpoints or record: ``writable_dir`` names it.)"""
    if not resume:
        found = [f"{CHECKPOINT_DIR}/{p.name}" for p in list(numbered_checkpoints(output_dir).values())[-1:]]
        found += [RESULT_FILE] if (output_dir / RESULT_FILE).exists() else []
        if found:
            raise UsageError(f"{output_dir}: already holds a run ({', '.join(found)}); continue it with --resume, "
                             f"or choose another --output")
    writable_dir(output_dir, "run folder")


def _logger(info: DistInfo) -> Callable[[str], None]:
    """Rank 0 writes ``[fptbench] ...`` lines above the progress bar; other ranks are silent."""
    from tqdm import tqdm

    return (lambda msg: tqdm.write(f"[fptbench] {msg}")) if info.rank == 0 else (lambda msg: None)


CONFIG_FILE = "config.yaml"
"""The resolved config, written into the run folder when a run starts."""


def _resolve_trunk(cfg: dict, info: DistInfo, *, covered: bool):
    """Where the trunk starts (:func:`fptbench.trunks.require_trunk`: its file there and sound), or,
    when a checkpoint ``covered`` it, only where it would (nothing is opened). Every rank checks
    and learns whether any rank failed, so that all raise together (a rank that raised alone,
    e.g. on a node without the file, would leave the others waiting in DDP's first collective).

    Raises:
        UsageError: the first rank's problem (the key and the file, in one line).
    """
    problem, source = "", None
    try:
        source = trunk_source(cfg) if covered else require_trunk(cfg)
    except UsageError as err:
        problem = str(err)
    problems = [p for p in _gather(problem, info) if p]
    if problems:
        raise UsageError(problems[0])
    return source


def _write_config(output_dir: Path, cfg: dict, batch: dict, info: DistInfo, *, save: bool) -> None:
    """``OUTPUT/config.yaml`` (rank 0, with ``save``): the resolved config as given (a loadable
    config file, each key with its meaning), headed by its hash and the batch it runs at;
    atomically, at every (re)start. Every rank learns whether it could."""
    from fptbench.config import config_hash, dump_config
    from fptbench.fileio import atomic_write

    failure = ""
    if info.rank == 0 and save:
        text = (f"# fptbench config, hash {config_hash(cfg)}; this run: {format_plan(batch)}\n"
                + dump_config(cfg))
        try:
            atomic_write(output_dir / CONFIG_FILE, lambda f: f.write(text.encode()))
        except OSError as err:
            failure = f"{output_dir / CONFIG_FILE}: cannot write the run's config: {getattr(err, 'strerror', None) or err}"
    failure = _gather(failure, info)[0]
    if failure:
        raise UsageError(failure)


def _trunk_record(cfg: dict, trunk) -> dict[str, Any]:
    """What the record says of the trunk's start: the key and value that chose it, the file, its
    format, sha256 (where the file is here) and its published checksum (:mod:`fptbench.trunks`);
    the same for a run that resumed from its checkpoint as for one that did not."""
    from fptbench.trunks import sha256_file

    out: dict[str, Any] = {"kind": trunk.kind, "key": trunk.key,
                           "value": cfg["model"]["backbone_pretrain"] or cfg["model"]["backbone_weights"]}
    if trunk.path is not None:
        out.update(path=str(trunk.path), format=trunk.format,
                   sha256=sha256_file(trunk.path) if trunk.path.is_file() else None)
    if trunk.published is not None:
        out.update(url=trunk.published.url, published_sha256_prefix=trunk.published.sha256_prefix)
    return out


def _seeded_model(cfg: dict, info: DistInfo, *, load_ckpt: str | None, pretrained: bool,
                  log: Callable[[str], None]) -> torch.nn.Module:
    """Seeding and weights: the model of ``cfg`` with its initial weights (``pretrained``: the
    trunk and ``model.weights`` files; a resume restores every weight instead), on the device."""
    seed_everything(cfg["seed"])
    model = load_model(cfg, load_ckpt, pretrained=pretrained, log=log)
    model.to(info.device)
    if info.world_size > 1:
        # Same initial weights everywhere (DDP also broadcasts rank 0's), then one random stream
        # per rank (RoI sampling, multi-scale draws, attention dropout), as detectron2 seeds
        # seed + rank. A single process keeps its stream: its results stay those benchmarked.
        seed_everything(cfg["seed"] + info.rank)
    return model


def _sync_batchnorm(model: torch.nn.Module, cfg: dict, info: DistInfo) -> bool:
    """SyncBatchNorm: convert the model's BatchNorm layers in place, before the optimizer is made,
    when ``model.sync_bn`` asks (null: segmentation only) and several processes train; returns
    whether it did. SyncBatchNorm computes on CUDA only: under a CPU (gloo) DDP run an explicit
    ``true`` is an error and null leaves the layers as they are. The state_dict keys are the
    same, so checkpoints load either way."""
    want = cfg["model"]["sync_bn"]
    if want is None:
        want = cfg["model"]["task"] == "segmentation"
    if not want or info.world_size == 1:
        return False
    if info.device.type != "cuda":
        if cfg["model"]["sync_bn"]:
            raise UsageError(f"model.sync_bn=true: torch's SyncBatchNorm needs CUDA devices, this run's "
                             f"{info.world_size} processes use {info.device.type}; set model.sync_bn false")
        return False
    torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return True


def param_groups(model: torch.nn.Module, tcfg: dict) -> list[dict[str, Any]]:
    """SGD parameter groups of the trainable parameters, each with its ``lr`` (``train.base_lr``
    times its factor) and ``weight_decay``.

    A parameter named ``bias`` gets ``train.bias_lr_factor`` and ``train.weight_decay_bias``; the
    weight of a normalisation layer gets ``train.weight_decay_norm``: of every one (BatchNorm,
    GroupNorm, LayerNorm, ...) with ``train.norm_decay_layers: all``, as detectron2's
    ``get_default_optimizer_params`` [detectron2], of GroupNorm only with ``groupnorm``, as the
    authors' three groups (``tools/train_net_step.py`` 261-299: biases by name with
    ``BIAS_DOUBLE_LR`` and ``BIAS_WEIGHT_DECAY``, GroupNorm weights with ``WEIGHT_DECAY_GN``)
    [code]; every other one ``train.weight_decay``. A null decay means ``train.weight_decay``.
    Parameters that share (factor, decay) share a group, in the model's parameter order, so the
    schema's defaults give one group: torch's SGD over ``model.parameters()``.
    """
    decay = tcfg["weight_decay"]
    norm_decay = decay if tcfg["weight_decay_norm"] is None else tcfg["weight_decay_norm"]
    bias_decay = decay if tcfg["weight_decay_bias"] is None else tcfg["weight_decay_bias"]
    norms = ((torch.nn.GroupNorm,) if tcfg["norm_decay_layers"] == "groupnorm" else
             (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm, torch.nn.LayerNorm, torch.nn.LocalResponseNorm))
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    seen: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            if name == "bias":
                key = (tcfg["bias_lr_factor"], bias_decay)
            elif isinstance(module, norms):
                key = (1.0, norm_decay)
            else:
                key = (1.0, decay)
            groups.setdefault(key, []).append(param)
    if len(groups) == 1:  # torch's SGD over model.parameters(), in their order
        (factor, wd), = groups
        return [{"params": [p for p in model.parameters() if p.requires_grad],
                 "lr": tcfg["base_lr"] * factor, "weight_decay": wd}]
    return [{"params": params, "lr": tcfg["base_lr"] * factor, "weight_decay": wd}
            for (factor, wd), params in groups.items()]


@dataclass
class _TrainState:
    """Everything a checkpoint holds besides the RNGs, and where the run starts from."""

    model: torch.nn.Module
    params: list
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any  # torch.amp.GradScaler with fp16 autocast on CUDA, else None
    stream: list  # _stream_signature: resuming with another would not replay the run
    accumulate: int = 1  # micro-batches per optimizer step (fptbench.batch)
    start_iter: int = 0
    time_before: float = 0.0  # training seconds spent before a resume
    last_loss: float | None = None  # the loss of the last step done (None: not known)

    @classmethod
    def create(cls, model: torch.nn.Module, cfg: dict, info: DistInfo, dtype: torch.dtype | None,
               accumulate: int = 1, grouped: bool = False) -> "_TrainState":
        """SGD on the trainable parameters (:func:`param_groups`), the warm-up + steps schedule, a
        grad scaler for fp16 autocast (``dtype``, from :func:`autocast_dtype`) on CUDA."""
        tcfg = cfg["train"]
        groups = param_groups(model, tcfg)
        params = [p for group in groups for p in group["params"]]
        optimizer = torch.optim.SGD(groups, lr=tcfg["base_lr"], momentum=tcfg["momentum"],
                                    weight_decay=tcfg["weight_decay"])
        scheduler = build_lr_scheduler(optimizer, tcfg)
        scaler = torch.amp.GradScaler("cuda") if info.device.type == "cuda" and dtype == torch.float16 else None
        return cls(model, params, optimizer, scheduler, scaler, _stream_signature(cfg, info, accumulate, grouped),
                   accumulate)


def _resume(state: _TrainState, output_dir: Path, cfg: dict, info: DistInfo, log: Callable[[str], None]) -> None:
    """Resume: restore the newest readable checkpoint of ``output_dir`` (if any) into ``state``,
    exactly. One at ``train.max_iter`` resumes too: no step runs, evaluation follows."""
    found = find_resumable(output_dir, log)
    if found is None:
        log(f"no checkpoint in {output_dir / CHECKPOINT_DIR}: starting from iteration 0")
        return
    last, saved = found
    stream = saved["extra"].get("stream")
    if stream is not None and stream != state.stream:
        raise UsageError(
            f"{last}: cannot resume exactly: the checkpoint's data stream {stream} differs from this run's {state.stream}"
        )
    max_iter = cfg["train"]["max_iter"]
    if saved["iteration"] > max_iter:
        raise UsageError(f"{last}: the checkpoint is at iteration {saved['iteration']}, past train.max_iter={max_iter}")
    try:
        state.model.load_state_dict(saved["model"])
        state.optimizer.load_state_dict(saved["optimizer"])
        state.scheduler.load_state_dict(saved["scheduler"])
    except (RuntimeError, ValueError, KeyError) as err:  # torch's strict-load and param-group errors
        first = " ".join(str(err).split())[:300]
        raise UsageError(f"{last}: cannot resume: the checkpoint is of another model or optimizer than this "
                         f"config's ({first})") from None
    if state.scaler is not None and saved.get("scaler"):
        state.scaler.load_state_dict(saved["scaler"])
    rng = saved["rng"]
    set_rng_state(rng[info.rank] if isinstance(rng, list) else rng)
    state.start_iter = saved["iteration"]
    state.time_before = saved["extra"].get("train_time_s", 0.0)
    state.last_loss = saved["extra"].get("loss")
    log(f"resumed from {last} at iteration {state.start_iter}")


def _wrap_ddp(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """DDP wrap under several processes; the model itself otherwise."""
    if info.world_size == 1:
        return model
    # The device the model sits on (choose_device: local_rank % visible GPUs), not local_rank.
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[info.device.index] if info.device.type == "cuda" else None
    )


def _train_data(cfg: dict, info: DistInfo, batch: int,
                log: Callable[[str], None]) -> tuple[Any, TrainBatchSampler]:
    """The dataset of ``data.train`` and its stream (TrainBatchSampler, a function of the
    iteration; ``batch``: images per optimizer step, for the epochs logged), detection images
    grouped by orientation (``train.aspect_grouping``). The sampler counts micro-batches from
    0; set its ``start_iter`` to resume."""
    from fptbench.data import build_dataset

    dataset = build_dataset(cfg, "train")
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(dataset.skipped.items())) or "nothing"
    images = cfg["train"]["max_iter"] * batch
    log(f"training on {cfg['data']['train']}: {len(dataset)} images; skipped {skipped}; {images:,} images seen "
        f"= {images / len(dataset):.2f} epochs")
    seeded = getattr(dataset, "seeded", False)  # items keyed (index, seed): they draw their own augmentation
    groups = None
    if cfg["train"]["aspect_grouping"] and not seeded:
        groups = [int(height > width) for height, width in dataset.image_sizes]  # 1: portrait
    sampler = TrainBatchSampler(
        len(dataset),
        images_per_device=cfg["train"]["images_per_device"],
        seed=cfg["seed"],
        rank=info.rank,
        world_size=info.world_size,
        flip=cfg["data"]["flip"],
        seeds=seeded,
        groups=groups,
    )
    if groups is not None:
        portrait = sum(groups)
        state = "grouped" if sampler.groups is not None else "one orientation or too few images: the plain stream"
        log(f"aspect-ratio grouping: {len(groups) - portrait} landscape (width >= height), {portrait} portrait "
            f"images; {state}")
    return dataset, sampler


def _loader(cfg: dict, info: DistInfo, dataset: Any, sampler: TrainBatchSampler) -> DataLoader:
    """The DataLoader over ``sampler``'s batches."""
    # Its own generator: creating the loader must not draw from the global RNG, which the
    # checkpoint restores (a resumed loader would otherwise shift every later random draw).
    # Pinned batches on CUDA: the copies to the GPU (non_blocking) then overlap compute.
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=cfg["data"]["num_workers"],
        generator=torch.Generator().manual_seed(cfg["seed"]),
        pin_memory=info.device.type == "cuda",
    )


def _tensorboard(output_dir: Path, start_iter: int):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(output_dir / "tensorboard"), purge_step=start_iter)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast to ``dtype`` (:func:`autocast_dtype`) on ``device``; none for fp32."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def _dtype_name(dtype: torch.dtype | None) -> str:
    return str(dtype or torch.float32).removeprefix("torch.")


def _loop(state: _TrainState, ddp_model: torch.nn.Module, loader: DataLoader, writer, cfg: dict, info: DistInfo,
          output_dir: Path, *, autocast, save: bool, progress: bool) -> tuple[float, float | None]:
    """The loop: iterations ``start_iter..max_iter``, logging and checkpointing on their periods.
    Returns (``time.perf_counter()`` when the loop started, the last loss: the checkpoint's when
    no step runs, None if it holds none)."""
    from tqdm import tqdm

    tcfg = cfg["train"]
    max_iter = tcfg["max_iter"]
    bar = tqdm(total=max_iter, initial=state.start_iter, desc="train",
               disable=not (info.rank == 0 and progress), dynamic_ncols=True)
    t_start = time.perf_counter()
    data_iter = iter(loader)
    loss_value = state.last_loss
    try:  # the bar ends its line whatever happens: an error message then starts its own
        for iteration in range(state.start_iter, max_iter):
            t0 = time.perf_counter()
            micro = [next(data_iter) for _ in range(state.accumulate)]
            data_time = time.perf_counter() - t0
            loss_dict, loss_value, lr = _step(state, ddp_model, micro, iteration, tcfg, info, autocast)
            done = iteration + 1
            if writer is not None and (done % tcfg["log_period"] == 0 or done == max_iter):
                _log_scalars(writer, done, loss_dict, loss_value, lr, time.perf_counter() - t0, data_time, info.device)
            bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}", refresh=False)
            bar.update(1)
            if save and (done % tcfg["checkpoint_period"] == 0 or done == max_iter):
                _checkpoint(state, output_dir, done, t_start, info, loss=loss_value, keep=tcfg["keep_checkpoints"])
    finally:
        bar.close()
    return t_start, loss_value


def _to_device(images: list, targets: list, device: torch.device) -> tuple[list, list]:
    images = [img.to(device, non_blocking=True) for img in images]
    targets = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
    return images, targets


def _step(state: _TrainState, ddp_model: torch.nn.Module, micro: list, iteration: int,
          tcfg: dict, info: DistInfo, autocast) -> tuple[dict[str, float], float, float]:
    """One optimizer step over ``micro``, a list of ``state.accumulate`` (images, targets)
    micro-batches: each one's loss divided by their number is back-propagated (DDP's all-reduce
    only after the last), so the gradient is that of their mean loss. Returns (the loss terms and
    the total loss, means over the micro-batches, and the learning rate the step used)."""
    optimizer, scaler = state.optimizer, state.scaler
    optimizer.zero_grad(set_to_none=True)
    count = len(micro)
    terms: dict[str, float] = {}
    loss_value = 0.0
    for j, (images, targets) in enumerate(micro):
        images, targets = _to_device(images, targets, info.device)
        last = j == count - 1
        sync = ddp_model.no_sync() if not last and hasattr(ddp_model, "no_sync") else nullcontext()
        with sync:
            with autocast:
                loss_dict = ddp_model(images, targets)
            loss = sum(loss_dict.values())
            value = float(loss.detach())
            if not _all_finite(loss, info):
                raise FloatingPointError(
                    f"loss is {value} at iteration {iteration}: "
                    + ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in loss_dict.items())
                )
            if count > 1:
                loss = loss / count
            (scaler.scale(loss) if scaler is not None else loss).backward()
        loss_value += value / count
        for k, v in loss_dict.items():
            terms[k] = terms.get(k, 0.0) + float(v.detach()) / count
    if scaler is not None:
        scaler.unscale_(optimizer)
    if tcfg["clip_grad_norm"] > 0:
        torch.nn.utils.clip_grad_norm_(state.params, tcfg["clip_grad_norm"])
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    lr = optimizer.param_groups[0]["lr"]
    state.scheduler.step()
    return terms, loss_value, lr


def _log_scalars(writer, done: int, loss_dict: dict, loss_value: float, lr: float, iteration_s: float,
                 data_s: float, device: torch.device) -> None:
    """Logging: losses, learning rate, times and memory to TensorBoard at iteration ``done``."""
    for k, v in loss_dict.items():
        writer.add_scalar(f"loss/{k}", v, done)
    writer.add_scalar("loss/total", loss_value, done)
    writer.add_scalar("lr", lr, done)
    writer.add_scalar("time/iteration_s", iteration_s, done)
    writer.add_scalar("time/data_s", data_s, done)
    writer.add_scalar("memory_mb", _memory_mb(device), done)


def _checkpoint(state: _TrainState, output_dir: Path, done: int, t_start: float, info: DistInfo, *,
                loss: float, keep: list[int]) -> None:
    """Checkpointing: rank 0 writes every rank's RNG state with the rest (and the step's ``loss``,
    the final loss of a run resumed at its end), then prunes the periodic files but the last two
    and ``keep`` (``train.keep_checkpoints``); every rank learns whether it could (a rank that
    raised alone would leave the others waiting)."""
    rng = _gather(rng_state(), info)
    failure = ""
    if info.rank == 0:
        try:
            save_checkpoint(
                output_dir, iteration=done, model=state.model, optimizer=state.optimizer,
                scheduler=state.scheduler, scaler=state.scaler, rng=rng,
                extra={"train_time_s": state.time_before + time.perf_counter() - t_start, "stream": state.stream,
                       "loss": loss},
            )
            prune_checkpoints(output_dir, keep)
        except OSError as err:
            failure = f"{output_dir}: cannot write the checkpoint of iteration {done}: {getattr(err, 'strerror', None) or err}"
    failure = _gather(failure, info)[0]  # every rank learns whether rank 0 could save
    if failure:
        raise UsageError(failure)


def _share_buffers(model: torch.nn.Module, info: DistInfo) -> None:
    """Before evaluation: DDP broadcasts buffers (BatchNorm statistics) from rank 0 at the start of
    each forward, so after the last step every rank holds its own: give all ranks rank 0's, which
    it saved, before they evaluate together."""
    if info.world_size > 1:
        for buffer in model.buffers():
            torch.distributed.broadcast(buffer, src=0)

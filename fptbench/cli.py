"""The ``fptbench`` command: a flat table of subcommands, each one small function.

Usage errors (bad arguments, an invalid config) print one line, ``fptbench: error: ...``,
to stderr and exit with status 2; they never print a traceback.

Adding a subcommand: write ``_NAME_args(parser)`` and ``cmd_NAME(args) -> int`` and add one
``Command`` row to ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from fptbench import __version__
from fptbench.config import MIN_SIDE, ProfileRequest, config_hash, dump_config, load_config
from fptbench.errors import UsageError

PROFILE = ProfileRequest()  # fptbench profile's defaults


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors raise UsageError instead of printing usage and exiting."""

    def error(self, message: str):  # noqa: D102 - argparse API
        raise UsageError(message)


class _SetPairs(argparse.Action):
    """``--set KEY VALUE [KEY VALUE ...]``, repeatable: ours (one pair per flag) and the seed's
    (several pairs after one flag) alike; ``args.overrides`` is the list of (KEY, VALUE) pairs."""

    def __call__(self, parser, namespace, values, option_string=None):
        if len(values) % 2:
            raise UsageError(f"argument --set: expected KEY VALUE pairs (--set K1 V1 [K2 V2 ...]), got "
                             f"{len(values)} word(s): {' '.join(values)}; a VALUE is missing, or NAME "
                             f"came after --set (give NAME first)")
        pairs = list(getattr(namespace, self.dest) or [])
        pairs += [(values[i], values[i + 1]) for i in range(0, len(values), 2)]
        setattr(namespace, self.dest, pairs)


def _set_arg(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--set", dest="overrides", nargs="+", action=_SetPairs, default=[], metavar="KEY VALUE",
                        help=f"{help}; VALUE is read as YAML; repeatable, and one --set may take several "
                             f"pairs as the seed's does: --set K1 V1 K2 V2")


def _add_config_args(parser: argparse.ArgumentParser, *, name_optional: bool = False) -> None:
    parser.add_argument("name", metavar="NAME", nargs="?" if name_optional else None,
                        help="config name in fptbench/configs (e.g. maskrcnn_r50_fpt) or a YAML path"
                             + (" (or --cfg)" if name_optional else ""))
    _set_arg(parser, "override a key, e.g. --set fpt.gt false")


# ---------------------------------------------------------------------------------------------
# config

def _config_args(parser: argparse.ArgumentParser) -> None:
    _add_config_args(parser)
    parser.add_argument("--diff", metavar="OTHER",
                        help="instead of the YAML, list key by key where NAME (with --set) differs from the "
                             "config OTHER: both values and where each comes from ([paper], [code] = the "
                             "authors' repository, [ours])")
    parser.add_argument("--json", action="store_true", help="with --diff: print the differences as JSON")
    parser.add_argument("--world-size", type=int, default=None, metavar="N",
                        help="also print the batch, learning rate and schedule a run of N processes gets (the "
                             "linear scaling rule against train.reference_batch), as training prints them")


def cmd_config(args: argparse.Namespace) -> int:
    """Print the resolved config as YAML, headed by a comment with its name and hash; with
    ``--diff OTHER``, the keys where the two differ, with the source of each value."""
    if args.world_size is not None and (args.world_size < 1 or args.diff is not None):
        raise UsageError(f"--world-size {args.world_size}: expected a number of processes >= 1, and no --diff "
                         f"(the batch a run gets is printed with the config itself)")
    cfg = load_config(args.name, [tuple(pair) for pair in args.overrides])
    if args.diff is None:
        if args.json:
            raise UsageError("--json: only with --diff OTHER (the config itself is printed as YAML)")
        from fptbench.config import config_origins
        from fptbench.trunks import trunk_status

        origins: dict = dict(config_origins(args.name))
        origins.update({key: f"--set {key} {value}" for key, value in args.overrides})
        print(f"# config: {args.name}  hash: {config_hash(cfg)}")
        try:
            status = trunk_status(cfg, verify=False)
            published = status.source.published
            why = (f"; download {published.url}" if status.state == "missing" and published is not None
                   else f": {status.problem}" if status.problem else "")
            trunk = f"{status.source.describe()} ({status.state}{why})"
        except UsageError as err:
            trunk = f"invalid: {err}"
        print(f"# trunk weights: {trunk}; `fptbench weights {args.name}` checks the checksum")
        if args.world_size is not None:
            from fptbench.batch import batch_plan, format_plan, plan_summary, scale_train

            plan = batch_plan(cfg, args.world_size)
            print(f"# at world size {args.world_size}: {format_plan(plan_summary(cfg, scale_train(cfg, plan), plan))}")
        print("# each key: its meaning; '<-' the file and line that set its value, and the comment there")
        print(dump_config(cfg, origins), end="")
        return 0
    from fptbench.config import diff_configs, format_diff

    other = load_config(args.diff)
    rows = diff_configs(cfg, other)
    if args.json:
        import json

        print(json.dumps({"configs": [args.name, args.diff], "hashes": [config_hash(cfg), config_hash(other)],
                          "differences": rows}, indent=2))
        return 0
    print(f"# config diff: {args.name} (hash {config_hash(cfg)}) vs {args.diff} (hash {config_hash(other)}): "
          f"{len(rows)} key(s) differ")
    print(format_diff(rows, args.name, args.diff), end="")
    return 0


# ---------------------------------------------------------------------------------------------
# forward

def _forward_args(parser: argparse.ArgumentParser) -> None:
    _add_config_args(parser)
    parser.add_argument("--size", nargs=2, type=int, default=[256, 320], metavar=("H", "W"),
                        help="image height and width, pixels (default: 256 320); model.min_size/"
                             "max_size are set to match so the transform does not resize, "
                             "unless given with --set")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed for weights and the input image (default: the config's seed)")


def cmd_forward(args: argparse.Namespace) -> int:
    """Build the model, run one eval-mode forward pass on a random image, print shapes and time."""
    height, width = args.size
    if height < MIN_SIDE or width < MIN_SIDE:
        raise UsageError(f"--size H W: each side must be at least {MIN_SIDE} pixels, got {height} {width}")
    user = [tuple(pair) for pair in args.overrides]
    # Without these the transform would upsample the image to 800 px, making a CPU smoke run slow.
    size = [("model.min_size", min(height, width)), ("model.max_size", max(height, width))]
    if any(key in ("model.min_size", "model.max_size") for key, _ in user):
        size = []
    seed = [("seed", args.seed)] if args.seed is not None else []
    cfg = load_config(args.name, size + user + seed)

    import torch

    from fptbench.engine import load_model

    torch.manual_seed(cfg["seed"])
    start = time.perf_counter()
    model = load_model(cfg).eval()
    build_s = time.perf_counter() - start
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(cfg["seed"]))
    show = _forward_segmentation if cfg["model"]["task"] == "segmentation" else _forward_detection
    with torch.no_grad():
        show(args.name, cfg, model, image, build_s)
    return 0


def _forward_detection(name: str, cfg: dict, model, image, build_s: float) -> None:
    """``fptbench forward`` of a detector: transformed batch, pyramid levels, detections."""
    import torch

    height, width = image.shape[-2:]
    images, _ = model.transform([image])
    features = model.backbone(images.tensors)
    start = time.perf_counter()
    detections = model([image])[0]
    forward_s = time.perf_counter() - start

    params = sum(p.numel() for p in model.parameters())
    backbone_params = sum(p.numel() for p in model.backbone.parameters())
    print(f"config: {name}  hash: {config_hash(cfg)}  head: {cfg['model']['head']}  "
          f"backbone: {cfg['model']['backbone']}  "
          f"fpt: st={cfg['fpt']['st']} gt={cfg['fpt']['gt']} rt={cfg['fpt']['rt']}")
    print(f"input: random RGB image 3x{height}x{width} (seed {cfg['seed']}), "
          f"transformed batch {tuple(images.tensors.shape)}")
    print("backbone features (level: N, C, H, W):")
    for level, feature in features.items():
        print(f"  {level}: {tuple(feature.shape)}")
    print(f"parameters: {params:,} (backbone + pyramid: {backbone_params:,})")
    print("detections:")
    for key, value in detections.items():
        print(f"  {key}: {tuple(value.shape)}")
    count = len(detections["boxes"]) if "boxes" in detections else 0
    print(f"forward {name}: {height}x{width} image, {len(features)} levels, "
          f"{params / 1e6:.1f}M params, {count} detections, {forward_s:.2f} s forward "
          f"(build {build_s:.2f} s, {torch.get_num_threads()} threads)")


def _forward_segmentation(name: str, cfg: dict, model, image, build_s: float) -> None:
    """``fptbench forward`` of a segmentation model: trunk features, pyramid levels, logits."""
    import torch

    height, width = image.shape[-2:]
    batch = image[None]
    features = model.backbone(model.normalize(batch))
    levels = list(model.pyramid(features).values())
    if model.fpt is not None:
        levels = model.fpt(levels)
    start = time.perf_counter()
    outputs = model(batch)
    forward_s = time.perf_counter() - start
    seg, fpt = cfg["seg"], cfg["fpt"]
    params = sum(p.numel() for p in model.parameters())
    print(f"config: {name}  hash: {config_hash(cfg)}  task: segmentation  backbone: {cfg['model']['backbone']}  "
          f"pyramid: {seg['pyramid']} (output stride {seg['output_stride']})  head: {seg['head']}  "
          f"fpt: st={fpt['st']} gt={fpt['gt']} rt={fpt['rt']} gt.window={cfg['gt']['window']}")
    print(f"input: random RGB image 3x{height}x{width} (seed {cfg['seed']})")
    print("trunk features (level: N, C, H, W):")
    for level, feature in features.items():
        print(f"  {level}: {tuple(feature.shape)}")
    print(f"pyramid levels{' after FPT' if model.fpt is not None else ''} (N, C, H, W):")
    for i, level in enumerate(levels):
        print(f"  {i}: {tuple(level.shape)}")
    print(f"parameters: {params:,} (trunk: {sum(p.numel() for p in model.backbone.parameters()):,})")
    print("logits:")
    for key, value in outputs.items():
        print(f"  {key}: {tuple(value.shape)}")
    print(f"forward {name}: {height}x{width} image, {len(levels)} levels, {params / 1e6:.1f}M params, "
          f"{outputs['out'].shape[1]} classes, {forward_s:.2f} s forward "
          f"(build {build_s:.2f} s, {torch.get_num_threads()} threads)")


# ---------------------------------------------------------------------------------------------
# train / eval / infer

def _data_root_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", metavar="DIR",
                        help="dataset folder (annotations/ and images/); same as --set data.root DIR")


def _run_config(args: argparse.Namespace) -> dict:
    overrides = [tuple(pair) for pair in args.overrides] + _seed_overrides(args)
    if getattr(args, "data_root", None):
        overrides.append(("data.root", args.data_root))
    detectron = getattr(args, "load_detectron", None)
    if detectron is not None:
        if not detectron.endswith(".pkl"):
            raise UsageError(f"--load-detectron {detectron}: expected a Detectron .pkl of ResNet blobs (R-50.pkl, ...); "
                             f"a torchvision .pth trunk is --set model.backbone_weights PATH")
        overrides.append(("model.backbone_weights", detectron))
    return load_config(_config_name(args), overrides)


# The seed's command line (ZHANGDONG-NJUST/FPT tools/train_net_step.py and tools/test_net.py):
# its flags, as aliases of ours, so that a user of the authors' repository can paste a command.
SEED = "the seed's"
SEED_CONFIGS = {  # the seed's Detectron configs -> the fptbench preset with the same neck
    "e2e_fptnet_R-50_mask.yaml": "maskrcnn_r50_fpt_code",
    "e2e_fptnet_R-50_det.yaml": "fasterrcnn_r50_fpt_code",
    "e2e_fptnet_R-50_det_2fc.yaml": "fasterrcnn_r50_fpt_code",
}
SEED_DATASETS = {"coco2017": ("coco2017_train", "coco2017_val")}  # --dataset NAME -> data.train, data.test


def _cannot_honour(flag: str, why: str) -> UsageError:
    return UsageError(f"{flag}: {SEED} flag, which fptbench cannot honour: {why}")


class _Refused(argparse.Action):
    """A flag of the seed's that fptbench cannot honour: a one-line error that says so and why."""

    def __init__(self, option_strings, dest, why: str = "", **kwargs):
        self.why = why
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        raise _cannot_honour(option_string, self.why)


def _seed_args(parser: argparse.ArgumentParser, command: str) -> None:
    """The seed's flags that ours do not already spell (``--load_ckpt`` etc. are second names of
    our own arguments, declared with them)."""
    group = parser.add_argument_group(
        f"{SEED} flags (ZHANGDONG-NJUST/FPT tools/{'train_net_step' if command == 'train' else 'test_net'}.py), "
        "accepted as aliases; each says what it maps to")
    group.add_argument("--cfg", dest="seed_cfg", metavar="NAME",
                       help="= NAME (an fptbench config); the seed's own configs/e2e_fptnet_*.yaml are Detectron "
                            "configs and are refused with the preset to use instead")
    group.add_argument("--dataset", dest="seed_dataset", metavar="NAME",
                       help="coco2017 = --set data.train coco2017_train data.test coco2017_val "
                            "(keypoints_coco2017 is refused: no keypoint head)")
    if command == "eval":
        group.add_argument("--range", nargs=2, action=_Refused, metavar=("START", "END"),
                           why="evaluation runs over the whole data.test split (use --set data.max_images N for a prefix)")
        group.add_argument("--multi-gpu-testing", nargs=0, action=_Refused,
                           why="run fptbench eval under torchrun --nproc_per_node N to evaluate on N GPUs")
        group.add_argument("--vis", nargs=0, action=_Refused, why="draw detections with fptbench infer")
        return
    group.add_argument("--bs", dest="seed_bs", type=int, metavar="N",
                       help="the seed's total batch, images per iteration over all processes: "
                            "= --set train.images_per_device N/WORLD_SIZE (WORLD_SIZE from torchrun or srun; 1 "
                            "alone); as in the seed, the LR and the iteration counts then follow the linear "
                            "scaling rule against train.reference_batch (printed at the start)")
    group.add_argument("--nw", dest="seed_nw", type=int, metavar="N",
                       help="= --set data.num_workers N (data-loader workers per process)")
    group.add_argument("--use_tfboard", dest="seed_tfboard", action="store_true",
                       help="accepted, changes nothing: fptbench always logs to DIR/tensorboard (not with --no-save)")
    group.add_argument("--disp_interval", dest="seed_disp", type=int, metavar="N",
                       help="= --set train.log_period N")
    group.add_argument("--lr", dest="seed_lr", type=float, metavar="LR", help="= --set train.base_lr LR")
    group.add_argument("--lr_decay_gamma", dest="seed_gamma", type=float, metavar="G", help="= --set train.gamma G")
    group.add_argument("--no_cuda", dest="seed_no_cuda", action="store_true", help="= --set device cpu")
    group.add_argument("--o", dest="seed_optimizer", metavar="SGD",
                       help="SGD only (fptbench trains with SGD); any other optimizer is refused")
    group.add_argument("--iter_size", dest="seed_iter_size", type=int, metavar="N",
                       help="= --set train.accumulate N (micro-batches per optimizer step); unlike the seed, "
                            "the LR then follows the effective batch, --bs x N")
    group.add_argument("--start_step", dest="seed_start_step", type=int, metavar="0",
                       help="0 only; to continue a run, --load_ckpt PATH --resume")


def _config_name(args: argparse.Namespace) -> str:
    """NAME, or the seed's --cfg (one of the two)."""
    cfg = getattr(args, "seed_cfg", None)
    if cfg is not None and args.name is not None:
        raise UsageError(f"--cfg {cfg}: give the config once, as NAME or as --cfg (got NAME {args.name} too)")
    name = cfg if cfg is not None else args.name
    if name is None:
        raise UsageError("the following arguments are required: NAME (or --cfg NAME)")
    preset = SEED_CONFIGS.get(Path(name).name)
    if preset:
        raise UsageError(f"--cfg {name}: {SEED} Detectron config cannot be read; use the fptbench preset with its "
                         f"neck, {preset} (torchvision's heads; the authors' schedule: experiments/paper_vs_code.yaml)")
    return name


def _seed_overrides(args: argparse.Namespace) -> list[tuple[str, object]]:
    """The seed's flags as (key, value) overrides, applied after --set (the seed's flags, too,
    override its --set)."""
    out: list[tuple[str, object]] = []
    dataset = getattr(args, "seed_dataset", None)
    if dataset is not None:
        if dataset not in SEED_DATASETS:
            why = "fptbench has no keypoint head" if dataset.startswith("keypoints") else "unknown dataset"
            raise UsageError(f"--dataset {dataset}: {why}; {SEED} --dataset takes "
                             f"{', '.join(SEED_DATASETS)} here (other splits: --set data.train/data.test NAME)")
        train_split, test_split = SEED_DATASETS[dataset]
        out += [("data.test", test_split)] if args.command == "eval" else [("data.train", train_split),
                                                                            ("data.test", test_split)]
    if args.command != "train":
        return out
    if args.seed_bs is not None:
        from fptbench.engine.distributed import env_world_size

        world = env_world_size()
        if args.seed_bs < 1 or args.seed_bs % world:
            raise UsageError(f"--bs {args.seed_bs}: the total batch must be a positive multiple of the "
                             f"{world} process(es) (WORLD_SIZE)")
        out.append(("train.images_per_device", args.seed_bs // world))
    for value, key in ((args.seed_iter_size, "train.accumulate"), (args.seed_nw, "data.num_workers"),
                       (args.seed_disp, "train.log_period"),
                       (args.seed_lr, "train.base_lr"), (args.seed_gamma, "train.gamma")):
        if value is not None:
            out.append((key, value))
    if args.seed_no_cuda:
        out.append(("device", "cpu"))
    refused = [
        (args.seed_optimizer is not None and args.seed_optimizer.lower() != "sgd",
         f"--o {args.seed_optimizer}", "fptbench trains with SGD only"),
        (args.seed_iter_size is not None and args.seed_iter_size < 1, f"--iter_size {args.seed_iter_size}",
         "micro-batches per step must be >= 1"),
        (args.seed_start_step not in (None, 0), f"--start_step {args.seed_start_step}",
         "a run starts at iteration 0 or where its checkpoint ends; use --load_ckpt PATH --resume"),
    ]
    for bad, flag, why in refused:
        if bad:
            raise _cannot_honour(flag, why)
    return out


def _train_args(parser: argparse.ArgumentParser) -> None:
    _add_config_args(parser, name_optional=True)
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="run folder: checkpoints/, tensorboard/, result.json")
    parser.add_argument("--resume", action="store_true",
                        help="continue from DIR/checkpoints/last.pth, or with --load-ckpt from that checkpoint "
                             "(step count, optimizer, schedule, RNGs: the same final weights as a run never stopped)")
    parser.add_argument("--load-ckpt", "--load_ckpt", dest="load_ckpt", metavar="PATH",
                        help="start from these weights (an fptbench checkpoint or a torchvision detection .pth); "
                             "with --resume, continue that fptbench checkpoint's run in DIR (the seed's "
                             "--load_ckpt PATH --resume)")
    parser.add_argument("--load-detectron", "--load_detectron", dest="load_detectron", metavar="PATH",
                        help="ResNet trunk weights from a Detectron (caffe2) .pkl: = --set model.backbone_weights PATH "
                             "(a config key, so sweeps can use it too; model.backbone_weights detectron finds "
                             "R-50.pkl etc. by name); use with --set model.pixel caffe and --set model.stride_in_1x1 "
                             "true, as the *_code presets do")
    parser.add_argument("--no-save", "--no_save", dest="no_save", action="store_true",
                        help="write no checkpoints or TensorBoard logs")
    _data_root_arg(parser)
    _seed_args(parser, "train")


def _place_for_resume(path: str, output: str) -> None:
    """``--load_ckpt PATH --resume``: make PATH the checkpoint that ``train(resume=True)`` resumes
    in OUTPUT (copied in as OUTPUT/checkpoints/last.pth), so the resume is our exact one."""
    import filecmp
    import shutil

    from fptbench.engine.checkpoint import CHECKPOINT_DIR, LAST, find_last, load_checkpoint

    flag = f"--load_ckpt {path} --resume"
    try:
        state = load_checkpoint(path)
    except UsageError as err:
        raise UsageError(f"{flag}: {err}") from None
    if not state.get("optimizer"):
        raise UsageError(f"{flag}: {path} holds no optimizer state, so there is nothing to resume; "
                         f"without --resume it starts a new run from its weights")
    last = find_last(output)
    if last is not None:
        if filecmp.cmp(last, path, shallow=False):
            return  # already there (this or another rank placed it)
        raise UsageError(f"{flag}: {last} already exists (iteration {load_checkpoint(last)['iteration']}); "
                         f"continue it with --resume alone, or give another --output")
    folder = Path(output) / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{LAST}.{os.getpid()}.tmp"  # one per rank: each rank's copy is whole when renamed
    shutil.copyfile(path, tmp)
    os.replace(tmp, folder / LAST)


def cmd_train(args: argparse.Namespace) -> int:
    """Train, then (train.eval_at_end) evaluate and write DIR/result.json. The trunk's weights are
    checked first (a missing file stops here, writing nothing); a model.backbone_pretrain trunk is
    pre-trained once if it is not cached yet."""
    cfg = _run_config(args)
    from fptbench.engine.distributed import choose_device
    from fptbench.trunks import require_trunk

    choose_device(cfg["device"], int(os.environ.get("LOCAL_RANK", "0")))  # first: an unusable GPU, before data
    if not (args.load_ckpt or args.resume or cfg["model"]["weights"]):  # (a checkpoint covers the trunk)
        require_trunk(cfg, pending_ok=True)  # a pre-training still to make, prepare_trunk makes
    from fptbench.engine import prepare_trunk, train

    load_ckpt = args.load_ckpt
    if args.resume and load_ckpt:
        _place_for_resume(load_ckpt, args.output)
        load_ckpt = None  # the resume restores the weights with everything else
    prepare_trunk(cfg, log=lambda m: print(f"[fptbench] {m}"))
    train(cfg, args.output, resume=args.resume, load_ckpt=load_ckpt, save=not args.no_save)
    return 0


def _pretrain_args(parser: argparse.ArgumentParser) -> None:
    _add_config_args(parser)
    _data_root_arg(parser)


def cmd_pretrain(args: argparse.Namespace) -> int:
    """Pre-train (once) the trunk that CONFIG's model.backbone_pretrain names, or that CONFIG itself
    makes when it sets none; print where it is cached."""
    reaching = {"data.root", "device", "model.backbone_pretrain"}  # what pretrain_config takes from CONFIG
    ignored = [key for key, _ in args.overrides if key not in reaching]
    if ignored:
        raise UsageError(f"pretrain: --set {ignored[0]} would not reach the pre-training, whose recipe is its config "
                         f"file (only {', '.join(sorted(reaching))} do): edit that file or name another one")
    cfg = _run_config(args)
    if not cfg["model"]["backbone_pretrain"]:
        cfg["model"]["backbone_pretrain"] = _config_name(args)
    from fptbench.engine.pretrain import ensure_trunk

    trunk = ensure_trunk(cfg, log=lambda m: print(f"[fptbench] {m}"))
    print(f"pretrain: {trunk['path']} (sha256 {trunk['sha256'][:12]}, "
          f"{'pre-trained now' if trunk['pretrained_here'] else 'cached'}; run record {trunk['record']})")
    return 0


def _eval_args(parser: argparse.ArgumentParser) -> None:
    _add_config_args(parser, name_optional=True)
    parser.add_argument("--ckpt", "--load_ckpt", dest="ckpt", required=True, metavar="PATH",
                        help="weights to evaluate: an fptbench checkpoint or a torchvision detection .pth")
    parser.add_argument("--output", "--output_dir", dest="output", required=True, metavar="DIR",
                        help="where result.json and the results files for the evaluation server are written "
                             "(detections in COCO's results format; label images for an unlabelled split)")
    parser.add_argument("--load_detectron", nargs=1, action=_Refused, metavar="PATH",
                        why="a Detectron .pkl holds a trunk, not a detector; evaluate an fptbench or torchvision "
                            "checkpoint with --ckpt")
    _data_root_arg(parser)
    _seed_args(parser, "eval")


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluation of a checkpoint on data.test (COCOeval AP, or mIoU for segmentation); writes DIR/result.json."""
    cfg = _run_config(args)
    from fptbench.engine import evaluate_checkpoint

    evaluate_checkpoint(cfg, args.ckpt, args.output)
    return 0


def _infer_args(parser: argparse.ArgumentParser) -> None:
    _add_config_args(parser)
    parser.add_argument("--ckpt", required=True, metavar="PATH", help="weights (fptbench checkpoint or torchvision .pth)")
    parser.add_argument("--images", required=True, metavar="DIR", help="folder of .png/.jpg images")
    parser.add_argument("--output", required=True, metavar="DIR", help="where drawn images and detections.json go")
    parser.add_argument("--threshold", type=float, default=0.5, metavar="T",
                        help="draw detections scoring at least T (default 0.5)")
    _data_root_arg(parser)


def cmd_infer(args: argparse.Namespace) -> int:
    """Draw detections (boxes, masks, class names, scores) on every image of a folder."""
    if not 0.0 <= args.threshold <= 1.0:
        raise UsageError(f"--threshold: expected a score in [0, 1], got {args.threshold}")
    cfg = _run_config(args)
    if cfg["model"]["task"] != "detection":
        raise UsageError(f"infer draws detections, and {args.name} is a {cfg['model']['task']} config "
                         f"(model.task); score it with fptbench eval")
    from fptbench.data import build_dataset
    from fptbench.engine.model import load_model, set_train_sizes
    from fptbench.visualize import infer_images

    model = load_model(cfg, args.ckpt, log=lambda line: print(f"[fptbench] {line}"))
    set_train_sizes(model, cfg, training=False)
    # Class names come from the categories of the config's test split (COCO's, or the synthetic set's).
    names = build_dataset(cfg, "test").categories
    detections = infer_images(model, args.images, args.output, class_names=names,
                              threshold=args.threshold, pixel=cfg["model"]["pixel"])
    total = sum(len(d["detections"]) for d in detections)
    print(f"infer: {len(detections)} images, {total} detections >= {args.threshold} -> {args.output}")
    return 0


# ---------------------------------------------------------------------------------------------
# profile

def _profile_args(parser: argparse.ArgumentParser) -> None:
    _add_config_args(parser)
    parser.add_argument("--size", nargs=2, type=int, default=list(PROFILE.size), metavar=("H", "W"),
                        help=f"input image height and width, pixels (default: {PROFILE.size[0]} {PROFILE.size[1]}); "
                             f"the transform is set not to resize it")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to run (default: cpu)")
    parser.add_argument("--runs", type=int, default=PROFILE.runs, metavar="N",
                        help=f"timed runs after warm-up (default: {PROFILE.runs})")
    parser.add_argument("--warmup", type=int, default=PROFILE.warmup, metavar="N",
                        help=f"untimed warm-up runs (default: {PROFILE.warmup})")
    parser.add_argument("--json", metavar="PATH", help="also write the profile as JSON to PATH")


def cmd_profile(args: argparse.Namespace) -> int:
    """Parameters, MACs/FLOPs (fvcore + attention handles) by part, latency and peak memory."""
    for flag, name in (("--size H W", "size"), ("--runs", "runs"), ("--warmup", "warmup")):
        problem = ProfileRequest.problem(name, getattr(args, name))
        if problem:
            raise UsageError(f"{flag}: {problem}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available here")
    cfg = load_config(args.name, [tuple(pair) for pair in args.overrides])
    from fptbench.engine.profile import format_profile, profile_model

    result = profile_model(cfg, size=tuple(args.size), device=args.device, runs=args.runs,
                           warmup=args.warmup, progress=True)
    print(format_profile(result))
    if args.json:
        from fptbench.fileio import write_json_atomic

        write_json_atomic(args.json, result)
        print(f"profile: written to {args.json}")
    return 0


# ---------------------------------------------------------------------------------------------
# weights

def _weights_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="CONFIG|MATRIX",
                        help="a config (maskrcnn_r50_fpt, a YAML path) or an experiment matrix (paper_backbones, "
                             "experiments/x.yaml): the trunk files its runs start from")
    _set_arg(parser, "override a config key (in every cell of a matrix)")
    parser.add_argument("--no-verify", action="store_true",
                        help="check presence only, not each file's sha256 against its published checksum")


def _configs_of(name: str, overrides: list[tuple[str, object]]) -> tuple[str, list[dict]]:
    """``(title, configs)`` of a config name or path, or of a matrix's cells."""
    from fptbench.experiments import load_matrix
    from fptbench.experiments.matrix import find_matrix

    try:
        matrix_path = find_matrix(name)
    except UsageError:
        matrix_path = None
    if matrix_path is not None:
        from fptbench.yamlio import load_yaml

        data = load_yaml(matrix_path)
        if isinstance(data, dict) and "base" in data:  # a matrix, not a config passed by path
            matrix = load_matrix(name, overrides)
            return f"trunk weights of {matrix.name} ({len(matrix.cells)} cells)", [c.config for c in matrix.cells]
    return f"trunk weights of {name}", [load_config(name, overrides)]


def cmd_weights(args: argparse.Namespace) -> int:
    """Each trunk file a config's or a matrix's runs start from: where it is looked up, whether it is
    there, and whether it matches its published checksum. Exit status 1 when one is not usable."""
    from fptbench.trunks import format_survey, survey

    title, configs = _configs_of(args.name, [tuple(pair) for pair in args.overrides])
    rows = survey(configs, verify=not args.no_verify)
    print(format_survey(rows, title), end="")
    return 0 if all(row.usable for row in rows) else 1


# ---------------------------------------------------------------------------------------------
# sweep / status / cancel / report

def _experiment_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", metavar="EXP",
                        help="experiment matrix: a name in experiments/ (e.g. demo) or a YAML path")
    parser.add_argument("--results", default="results", metavar="DIR",
                        help="results folder; runs go to DIR/<experiment>/<run id>/ (default: results)")


def _load_matrix(args: argparse.Namespace):
    from fptbench.experiments import load_matrix

    return load_matrix(args.experiment, [tuple(pair) for pair in getattr(args, "overrides", [])])


def _sweep_args(parser: argparse.ArgumentParser) -> None:
    _experiment_args(parser)
    parser.add_argument("--executor", choices=["local", "slurm", "debug"], default="local",
                        help="local: this machine, --jobs cells at a time (default); slurm: one job array "
                             "with --cluster's resources; debug: in this process, for pdb")
    parser.add_argument("--cluster", metavar="PROFILE",
                        help="cluster profile for --executor slurm: slurm/NAME.yaml or NAME (see slurm/example.yaml)")
    parser.add_argument("--dry-run", action="store_true", help="print each cell, whether it would be submitted, and why")
    parser.add_argument("--rerun-failed", action="store_true", help="resubmit cells that failed (they are skipped otherwise)")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="local executor: cells running at once (default: 1; each uses every core)")
    parser.add_argument("--wait", action="store_true",
                        help="slurm executor: wait, showing progress, until every submitted cell has finished")
    parser.add_argument("--wait-lock", action="store_true",
                        help="another sweep holds the results folder: wait for it to end (default: say who and exit 2)")
    _set_arg(parser, "override a config key in every cell (changes their run ids)")


def cmd_sweep(args: argparse.Namespace) -> int:
    """Submit the matrix's cells that need it; finished, queued and (unless --rerun-failed) failed
    cells are not submitted again."""
    from fptbench.launch import load_cluster_profile, run_sweep

    matrix = _load_matrix(args)
    cluster = load_cluster_profile(args.cluster) if args.cluster else None
    if cluster is not None and args.executor != "slurm":
        raise UsageError(f"--cluster {args.cluster}: a cluster profile needs --executor slurm")
    _check_trunks(matrix, args.results)
    try:
        outcome = run_sweep(matrix, executor=args.executor, cluster=cluster, results=args.results,
                            dry_run=args.dry_run, rerun_failed=args.rerun_failed, jobs=args.jobs,
                            wait=True if args.wait else None, wait_lock=args.wait_lock)
    except KeyboardInterrupt:
        return 130
    return 1 if any(status.state == "failed" for status in outcome.statuses
                    if status.run_id in outcome.submitted) else 0


def _check_trunks(matrix, results: str) -> None:
    """Before any cell is submitted (or listed by --dry-run): the trunk file of every cell still to
    run (not done, not queued or running) is there and sound (:func:`fptbench.trunks.survey`);
    otherwise print the list and stop, instead of jobs that fail after they start. A trunk that
    the first cell pre-trains is no problem for single-process cells; multi-process cells need it
    made first (`fptbench pretrain NAME`)."""
    from fptbench.launch import sweep_status
    from fptbench.launch.status import ACTIVE
    from fptbench.trunks import format_survey, survey

    def unusable(rows: list) -> list:
        return [row for row in rows if not row.usable
                or (matrix.world_size > 1 and row.status is not None and row.status.state == "not pre-trained yet")]

    todo = [cell.config for cell in matrix.cells]
    rows = survey(todo)
    if not unusable(rows):
        return
    # only then read the cells' states (a 10,000-cell status takes seconds): done and queued cells need nothing
    done = {s.run_id for s in sweep_status(matrix, results=results, logs=0) if s.state == "done" or s.state in ACTIVE}
    todo = [cell.config for cell in matrix.cells if cell.run_id not in done]
    rows = survey(todo) if todo else []
    bad = unusable(rows)
    if bad:
        print(format_survey(rows, f"trunk weights of {matrix.name} ({len(todo)} cells to run)"), end="",
              file=sys.stderr)
        first = bad[0].problem
        if matrix.world_size > 1 and bad[0].status is not None and bad[0].status.state == "not pre-trained yet":
            first += f" (its {matrix.world_size}-process cells cannot pre-train it themselves)"
        raise UsageError(f"{matrix.name}: {sum(row.cells for row in bad)} cell(s) lack their trunk weights "
                         f"({len(bad)} source(s), listed above; first: {first}); nothing was submitted")


def _status_args(parser: argparse.ArgumentParser) -> None:
    _experiment_args(parser)
    parser.add_argument("--lines", type=int, default=8, metavar="N",
                        help="last N lines of a failed cell's traceback or log (default: 8)")


def cmd_status(args: argparse.Namespace) -> int:
    """One row per cell: state (record + scheduler), job, elapsed, attempts, box AP (mIoU for segmentation)."""
    from fptbench.launch import format_status, sweep_status

    matrix = _load_matrix(args)
    segmentation = any(cell.config["model"]["task"] == "segmentation" for cell in matrix.cells)
    print(format_status(sweep_status(matrix, results=args.results, logs=args.lines), experiment=matrix.name,
                        metric_name="mIoU" if segmentation else "box AP"))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel the experiment's queued and running jobs."""
    from fptbench.launch import cancel_sweep

    cancel_sweep(_load_matrix(args), results=args.results)
    return 0


def _report_args(parser: argparse.ArgumentParser) -> None:
    _experiment_args(parser)
    parser.add_argument("--out", metavar="DIR", help="where tables and figures go (default: reports/<experiment>)")
    parser.add_argument("--format", default="md,latex,csv", metavar="LIST",
                        help="table formats, comma-separated, of md, latex, csv (default: md,latex,csv)")


def _report_experiment(matrix, *, results: str, out: str, formats: Sequence[str]) -> dict:
    """Records + the matrix's cells (with their state) -> build_report; prints one summary line."""
    from fptbench.launch import sweep_status
    from fptbench.report import build_report

    statuses = sweep_status(matrix, results=results, logs=0)
    records = [status.record for status in statuses if status.record is not None]
    cells = [{"run_id": s.run_id, "axes": s.axes, "state": s.state, "config": cell.config,
              **({"error": s.reason} if s.reason else {})}
             for s, cell in zip(statuses, matrix.cells)]
    report = build_report(records, experiment=matrix.name, out_dir=out, cells=cells, formats=formats,
                          compare_to=matrix.reference)
    print(f"report {matrix.name}: {len(records)} of {len(cells)} cells have records; "
          f"{len(report['tables'])} tables, {len(report['figures'])} figures -> {report['index']}")
    return report


def cmd_report(args: argparse.Namespace) -> int:
    """Tables (pandas) and figures (seaborn) from the experiment's run records only."""
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    bad = [f for f in formats if f not in ("md", "latex", "csv")]
    if bad or not formats:
        raise UsageError(f"--format: expected a comma-separated list of md, latex, csv, got '{args.format}'")
    matrix = _load_matrix(args)
    report = _report_experiment(matrix, results=args.results, out=args.out or str(Path("reports") / matrix.name),
                                formats=formats)
    if "ablation" in report["tables"]:
        print(report["tables"]["ablation"])
    for name, table in report["tables"].items():  # a segmentation matrix: its mIoU table per dataset
        if name.startswith("miou_"):
            print(table)
    if matrix.reference and "design" in report["tables"]:  # its Δ against the matrix's reference row
        print(report["tables"]["design"])
    return 0


# ---------------------------------------------------------------------------------------------
# demo

def _demo_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="data/synth", metavar="DIR",
                        help="the embedded dataset's folder; written first if missing (default: data/synth)")
    parser.add_argument("--results", default="results", metavar="DIR", help="results folder (default: results)")
    parser.add_argument("--out", default="reports/demo", metavar="DIR", help="report folder (default: reports/demo)")
    parser.add_argument("--jobs", type=int, default=1, metavar="N", help="cells running at once (default: 1)")


def cmd_demo(args: argparse.Namespace) -> int:
    """The whole harness on this machine: embedded data -> experiments/demo.yaml through the local
    executor (train, evaluate, profile each cell) -> report. Finished cells are reused."""
    from fptbench.engine.machine import matmul_gflops
    from fptbench.launch import run_sweep

    start = time.perf_counter()
    rate = matmul_gflops()
    print(f"demo: this machine multiplies 2048x2048 fp32 matrices at {rate:.0f} GFLOP/s")
    data = Path(args.data)
    if not (data / "annotations" / "instances_train.json").exists():
        from fptbench.data.synth import summary_line, write_synth

        print(f"demo: {summary_line(write_synth(data))}")
    else:
        print(f"demo: using the embedded dataset in {data}")
    overrides = [] if data == Path("data/synth") else [("data.root", str(data))]
    from fptbench.experiments import load_matrix

    matrix = load_matrix("demo", overrides)
    _demo_trunk(matrix)
    outcome = run_sweep(matrix, executor="local", results=args.results, jobs=args.jobs)
    report = _report_experiment(matrix, results=args.results, out=args.out, formats=("md", "csv", "latex"))
    for name in ("ablation", "complexity"):
        if name in report["tables"]:
            print(f"\n{name}:\n{report['tables'][name]}")
    pngs = [str(p) for p in report["figures"] if str(p).endswith(".png")]
    print(f"\nfigures: {', '.join(pngs)}")
    counts = outcome.counts()
    print(f"demo: {counts.get('done', 0)} of {len(matrix.cells)} cells done "
          f"({len(outcome.submitted)} run now) in {(time.perf_counter() - start) / 60:.1f} min at "
          f"{rate:.0f} -> {matmul_gflops():.0f} GFLOP/s matmul (start -> end); report: {report['index']}")
    return 0 if counts.get("done", 0) == len(matrix.cells) else 1


def _demo_trunk(matrix) -> None:
    """The cells' pre-trained trunk, made here (once, with progress) before the cells run; the
    cells then find it cached. Each cell would make it itself otherwise, the first one timed."""
    from fptbench.engine.pretrain import ensure_trunk

    first: dict[str, dict] = {}  # one cell's config per pre-training
    for cell in matrix.cells:
        first.setdefault(cell.config["model"]["backbone_pretrain"], cell.config)
    first.pop("", None)
    for config in first.values():
        start = time.perf_counter()
        trunk = ensure_trunk(config, log=lambda m: print(f"demo: {m}"))
        if not trunk["pretrained_here"]:  # a pre-training says its own time and path
            print(f"demo: trunk reused: {trunk['path']} ({time.perf_counter() - start:.0f} s)")


# ---------------------------------------------------------------------------------------------
# data

def _data_args(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    synth = sub.add_parser("synth", help="write the embedded synthetic COCO-format dataset",
                           description="write the embedded synthetic COCO-format instance-segmentation dataset")
    synth.add_argument("--out", required=True, metavar="DIR", help="dataset folder (annotations/, images/)")
    synth.add_argument("--train", type=int, default=200, metavar="N", help="training images (default 200)")
    synth.add_argument("--val", type=int, default=50, metavar="N", help="validation images (default 50)")
    synth.add_argument("--size", type=int, default=128, metavar="S", help="image side, pixels (default 128)")
    synth.add_argument("--seed", type=int, default=0, metavar="K", help="random seed (default 0)")
    synth.add_argument("--seg", action="store_true",
                       help="the semantic segmentation set instead: images/ and labels/; the synth_seg_* configs "
                            "read it beside the detection set (same --out, data/synth, and arguments)")


def cmd_data(args: argparse.Namespace) -> int:
    if args.data_command != "synth":
        raise UsageError("data: an action is required: synth (see fptbench data --help)")
    from fptbench.data import synth

    write, line = (synth.write_synth_seg, synth.seg_summary_line) if args.seg else (synth.write_synth, synth.summary_line)
    start = time.perf_counter()
    summary = write(args.out, train=args.train, val=args.val, size=args.size, seed=args.seed)
    print(f"{line(summary)} ({time.perf_counter() - start:.1f} s)")
    return 0


# ---------------------------------------------------------------------------------------------
# the table

@dataclass(frozen=True)
class Command:
    """One subcommand: its name, help line, argument declaration and implementation."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: tuple[Command, ...] = (
    Command("config", "print a resolved config as YAML with its hash", _config_args, cmd_config),
    Command("forward", "build a model and run one forward pass on a random image (CPU is enough)",
            _forward_args, cmd_forward),
    Command("train", "train a model (DDP under torchrun/SLURM), checkpoint, then evaluate", _train_args, cmd_train),
    Command("pretrain", "pre-train a trunk once and cache it under the data folder (model.backbone_pretrain)",
            _pretrain_args, cmd_pretrain),
    Command("eval", "evaluate a checkpoint (COCOeval's AP; mIoU for segmentation) and write result.json",
            _eval_args, cmd_eval),
    Command("infer", "draw a checkpoint's detections on a folder of images", _infer_args, cmd_infer),
    Command("profile", "parameters, MACs/FLOPs by part (fvcore), latency and peak memory of a model",
            _profile_args, cmd_profile),
    Command("weights", "the trunk weights files a config or matrix needs: where, present, checksum",
            _weights_args, cmd_weights),
    Command("sweep", "run an experiment matrix's cells (local, or SLURM via submitit); idempotent",
            _sweep_args, cmd_sweep),
    Command("status", "the state of every cell of an experiment (records + scheduler)", _status_args, cmd_status),
    Command("cancel", "cancel an experiment's queued and running jobs", _experiment_args, cmd_cancel),
    Command("report", "paper-style tables and figures from an experiment's run records", _report_args, cmd_report),
    Command("demo", "the main job: embedded data -> the demo matrix (local) -> profile -> report",
            _demo_args, cmd_demo),
    Command("data", "datasets: `data synth [--seg]` writes the embedded synthetic dataset", _data_args, cmd_data),
)


def build_parser() -> argparse.ArgumentParser:
    """The ``fptbench`` parser with one subparser per row of COMMANDS."""
    parser = _Parser(prog="fptbench", description="Feature Pyramid Transformer reproducibility harness")
    parser.add_argument("--version", action="version", version=f"fptbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        child = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(child)
        child.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fptbench`` with ``argv`` (default: sys.argv[1:]); return the exit status."""
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            names = ", ".join(command.name for command in COMMANDS)
            raise UsageError(f"a command is required, one of: {names} (see fptbench --help)")
        return args.run(args)
    except BrokenPipeError:
        # `fptbench ... | head`: the reader left. Quiet, as a Unix tool killed by SIGPIPE (status
        # 128 + 13); stdout goes to /dev/null so that the flush at exit does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except FloatingPointError as err:  # training diverged: not a usage error, but still one line
        print(f"fptbench: error: {err}", file=sys.stderr)
        return 1
    except UsageError as err:  # ConfigError and MatrixError included
        lines = [line for line in str(err).splitlines() if line.strip()]
        # An error raised in a DataLoader worker comes back with the worker's traceback first.
        message = lines[-1] if len(lines) > 1 and "Traceback" in str(err) else " ".join(lines)
        print(f"fptbench: error: {message}", file=sys.stderr)
        return 2

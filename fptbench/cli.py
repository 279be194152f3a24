"""The ``fptbench`` command: a flat table of subcommands, each one small function.

Usage errors (bad arguments, an invalid config) print one line, ``fptbench: error: ...``,
to stderr and exit with status 2; they never print a traceback.

Adding a subcommand: write ``_NAME_args(parser)`` and ``cmd_NAME(args) -> int`` and add one
``Command`` row to ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from fptbench import __version__
from fptbench.config import ConfigError, config_hash, dump_config, load_config
from fptbench.errors import UsageError

MIN_SIDE = 32
"""Smallest image side ``forward`` accepts, pixels: the trunk's output stride."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors raise UsageError instead of printing usage and exiting."""

    def error(self, message: str):  # noqa: D102 - argparse API
        raise UsageError(message)


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME",
                        help="config name in fptbench/configs (e.g. maskrcnn_r50_fpt) or a YAML path")
    parser.add_argument("--set", dest="overrides", nargs=2, action="append", default=[],
                        metavar=("KEY", "VALUE"),
                        help="override a key, e.g. --set fpt.gt false (VALUE is read as YAML); repeatable")


# ---------------------------------------------------------------------------------------------
# config

def _config_args(parser: argparse.ArgumentParser) -> None:
    _add_config_args(parser)


def cmd_config(args: argparse.Namespace) -> int:
    """Print the resolved config as YAML, headed by a comment with its name and hash."""
    cfg = load_config(args.name, [tuple(pair) for pair in args.overrides])
    print(f"# config: {args.name}  hash: {config_hash(cfg)}")
    print(dump_config(cfg), end="")
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

    from fptbench.modeling import build_model

    torch.manual_seed(cfg["seed"])
    start = time.perf_counter()
    model = build_model(cfg).eval()
    build_s = time.perf_counter() - start
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(cfg["seed"]))

    with torch.no_grad():
        images, _ = model.transform([image])
        features = model.backbone(images.tensors)
        start = time.perf_counter()
        detections = model([image])[0]
        forward_s = time.perf_counter() - start

    params = sum(p.numel() for p in model.parameters())
    backbone_params = sum(p.numel() for p in model.backbone.parameters())
    print(f"config: {args.name}  hash: {config_hash(cfg)}  head: {cfg['model']['head']}  "
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
    print(f"forward {args.name}: {height}x{width} image, {len(features)} levels, "
          f"{params / 1e6:.1f}M params, {count} detections, {forward_s:.2f} s forward "
          f"(build {build_s:.2f} s, {torch.get_num_threads()} threads)")
    return 0


# ---------------------------------------------------------------------------------------------
# train / eval / infer

def _data_root_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", metavar="DIR",
                        help="dataset folder (annotations/ and images/); same as --set data.root DIR")


def _run_config(args: argparse.Namespace) -> dict:
    overrides = [tuple(pair) for pair in args.overrides]
    if getattr(args, "data_root", None):
        overrides.append(("data.root", args.data_root))
    return load_config(args.name, overrides)


def _train_args(parser: argparse.ArgumentParser) -> None:
    _add_config_args(parser)
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="run folder: checkpoints/, tensorboard/, result.json")
    parser.add_argument("--resume", action="store_true",
                        help="continue from DIR/checkpoints/last.pth (exactly: same final weights)")
    parser.add_argument("--load-ckpt", metavar="PATH",
                        help="start from these weights (an fptbench checkpoint or a torchvision detection .pth)")
    parser.add_argument("--load-detectron", metavar="PATH",
                        help="ResNet trunk weights from a Detectron (caffe2) .pkl; use with --set model.pixel caffe")
    parser.add_argument("--no-save", action="store_true", help="write no checkpoints or TensorBoard logs")
    _data_root_arg(parser)


def cmd_train(args: argparse.Namespace) -> int:
    """Train, then (train.eval_at_end) evaluate and write DIR/result.json."""
    cfg = _run_config(args)
    from fptbench.engine import train

    train(cfg, args.output, resume=args.resume, load_ckpt=args.load_ckpt,
          load_detectron=args.load_detectron, save=not args.no_save)
    return 0


def _eval_args(parser: argparse.ArgumentParser) -> None:
    _add_config_args(parser)
    parser.add_argument("--ckpt", required=True, metavar="PATH",
                        help="weights to evaluate: an fptbench checkpoint or a torchvision detection .pth")
    parser.add_argument("--output", required=True, metavar="DIR", help="where result.json is written")
    _data_root_arg(parser)


def cmd_eval(args: argparse.Namespace) -> int:
    """COCO evaluation (pycocotools) of a checkpoint on data.test; writes DIR/result.json."""
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
    from fptbench.checkpoint import load_detection_weights
    from fptbench.data import build_dataset
    from fptbench.engine.trainer import set_train_sizes
    from fptbench.modeling import build_model
    from fptbench.visualize import infer_images

    model = build_model(cfg)
    print(f"[fptbench] {load_detection_weights(model, args.ckpt).summary()}")
    set_train_sizes(model, cfg, training=False)
    # Class names come from the categories of the config's test split (COCO's, or the synthetic set's).
    names = build_dataset(cfg, "test").categories
    detections = infer_images(model, args.images, args.output, class_names=names,
                              threshold=args.threshold, pixel=cfg["model"]["pixel"])
    total = sum(len(d["detections"]) for d in detections)
    print(f"infer: {len(detections)} images, {total} detections >= {args.threshold} -> {args.output}")
    return 0


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


def cmd_data(args: argparse.Namespace) -> int:
    if args.data_command != "synth":
        raise UsageError("data: an action is required: synth (see fptbench data --help)")
    from fptbench.data.synth import summary_line, write_synth

    start = time.perf_counter()
    summary = write_synth(args.out, train=args.train, val=args.val, size=args.size, seed=args.seed)
    print(f"{summary_line(summary)} ({time.perf_counter() - start:.1f} s)")
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
    Command("eval", "evaluate a checkpoint with pycocotools' COCOeval and write result.json", _eval_args, cmd_eval),
    Command("infer", "draw a checkpoint's detections on a folder of images", _infer_args, cmd_infer),
    Command("data", "datasets: `data synth` writes the embedded synthetic dataset", _data_args, cmd_data),
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
    except FloatingPointError as err:  # training diverged: not a usage error, but still one line
        print(f"fptbench: error: {err}", file=sys.stderr)
        return 1
    except (UsageError, ConfigError) as err:
        lines = [line for line in str(err).splitlines() if line.strip()]
        # An error raised in a DataLoader worker comes back with the worker's traceback first.
        message = lines[-1] if len(lines) > 1 and "Traceback" in str(err) else " ".join(lines)
        print(f"fptbench: error: {message}", file=sys.stderr)
        return 2

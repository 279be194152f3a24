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

MIN_SIDE = 32
"""Smallest image side ``forward`` accepts, pixels: the trunk's output stride."""


class UsageError(Exception):
    """A command-line mistake; reported as one line, exit status 2."""


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
    except (UsageError, ConfigError) as err:
        message = " ".join(str(err).splitlines())
        print(f"fptbench: error: {message}", file=sys.stderr)
        return 2

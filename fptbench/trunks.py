"""Trunk weights: the one place that knows which file a config's trunk starts from.

Every detection codebase starts its trunk from ImageNet weights (torchvision's references,
detectron2, mmdetection, the authors' Detectron). ``model.backbone_weights`` says which:

========================  ==========================================================================
``imagenet``              torchvision's ImageNet file of ``model.backbone`` (:data:`IMAGENET_FILES`:
                          ``resnet50-0676ba61.pth`` ..., the ``IMAGENET1K_V1`` files that torchvision's
                          detection references start from), in :func:`weights_dir` [detectron2]
``detectron``             Detectron's caffe2 ``.pkl`` of ``model.backbone`` (:data:`DETECTRON_FILES`:
                          ``R-50.pkl`` ...), in :func:`weights_dir`: the [code] presets' trunk
``scratch``               random initialisation, asked for by name [ours]
a path                    that file: ``.pkl`` = Detectron blobs, anything else a torchvision state_dict
``''``                    none given: random initialisation, refused for a COCO detection run
========================  ==========================================================================

``model.backbone_pretrain: NAME`` instead starts from the cached trunk of another config's run
(:func:`pretrain_path`; made by :func:`fptbench.engine.pretrain.ensure_trunk`).

Nothing here imports torch or builds a model: :func:`trunk_source` says where a trunk comes from,
:func:`trunk_status` whether its file is there and matches its published checksum, and
:func:`require_trunk` stops a run before it starts (one line, naming the key and the file), as
``fptbench train``, the engine's model loader, ``fptbench weights`` and ``sweep --dry-run`` do.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fptbench.errors import UsageError

__all__ = [
    "DETECTRON_FILES",
    "IMAGENET_FILES",
    "PRETRAINED_DIR",
    "WEIGHTS_DIR_DEFAULT",
    "WEIGHTS_DIR_ENV",
    "TrunkFile",
    "TrunkRow",
    "TrunkSource",
    "TrunkStatus",
    "format_survey",
    "heads_path",
    "is_coco_detection",
    "pretrain_config",
    "pretrain_path",
    "require_trunk",
    "sha256_file",
    "survey",
    "trunk_source",
    "trunk_status",
    "weights_dir",
]

WEIGHTS_DIR_ENV = "FPTBENCH_WEIGHTS_DIR"
"""Environment variable naming the folder of named trunk files when ``model.weights_dir`` is ''."""

WEIGHTS_DIR_DEFAULT = "data/pretrained"
"""Where named trunk files are looked up when neither ``model.weights_dir`` nor the variable is set."""

PRETRAINED_DIR = "pretrained"
"""Sub-folder of ``data.root`` that holds the trunks of ``model.backbone_pretrain`` runs."""


@dataclass(frozen=True)
class TrunkFile:
    """A published trunk file.

    Attributes:
        backbone: ``model.backbone`` it fits.
        kind: ``"imagenet"`` (torchvision state_dict) or ``"detectron"`` (caffe2 ``.pkl``).
        name: the file name looked up in :func:`weights_dir`.
        url: where it is published.
        sha256_prefix: the leading hex digits of its sha256 that the publisher states (torchvision
            writes them into the file name; ``torch.hub`` checks them); None where none is published.
    """

    backbone: str
    kind: str
    name: str
    url: str
    sha256_prefix: str | None


def _torchvision(backbone: str, digest: str) -> TrunkFile:
    name = f"{backbone}-{digest}.pth"
    return TrunkFile(backbone, "imagenet", name, f"https://download.pytorch.org/models/{name}", digest)


# torchvision's IMAGENET1K_V1 files (the weights_backbone of torchvision's maskrcnn_resnet50_fpn and
# its detection references). A copy of torchvision.models.*_Weights.IMAGENET1K_V1.url, kept here so
# that `fptbench weights` and `sweep --dry-run` need no torch: tests/test_trunks.py pins the two.
IMAGENET_FILES: dict[str, TrunkFile] = {f.backbone: f for f in (
    _torchvision("resnet18", "f37072fd"),
    _torchvision("resnet34", "b627a593"),
    _torchvision("resnet50", "0676ba61"),
    _torchvision("resnet101", "63fe2227"),
    _torchvision("resnet152", "394f9c45"),
    _torchvision("resnext101_32x8d", "8ba56ff5"),
    _torchvision("resnext101_64x4d", "173b62eb"),
)}

_DETECTRON_URL = "https://dl.fbaipublicfiles.com/detectron/ImageNetPretrained/"

# Detectron's ImageNet trunks (its MODEL_ZOO / detectron2's ModelCatalog.C2_IMAGENET_MODELS): the
# MSRA caffe ResNets and FAIR's ResNeXts, BGR 0..255 minus the mean (model.pixel caffe), affine
# "BN". No checksum is published for them. The authors' configs name `resnet50_caffe.pth`
# (configs/e2e_fptnet_R-50_mask.yaml:20), Detectron.pytorch's conversion of the same MSRA
# ResNet-50 caffe model as R-50.pkl [code]; R-50.pkl is the file still published.
DETECTRON_FILES: dict[str, TrunkFile] = {f.backbone: f for f in (
    TrunkFile("resnet50", "detectron", "R-50.pkl", _DETECTRON_URL + "MSRA/R-50.pkl", None),
    TrunkFile("resnet101", "detectron", "R-101.pkl", _DETECTRON_URL + "MSRA/R-101.pkl", None),
    TrunkFile("resnext101_32x8d", "detectron", "X-101-32x8d.pkl", _DETECTRON_URL + "20171220/X-101-32x8d.pkl", None),
    TrunkFile("resnext101_64x4d", "detectron", "X-101-64x4d.pkl", _DETECTRON_URL + "FBResNeXt/X-101-64x4d.pkl", None),
)}

NAMED = {"imagenet": IMAGENET_FILES, "detectron": DETECTRON_FILES}
"""``model.backbone_weights`` values that name a published file, by kind."""


@dataclass(frozen=True)
class TrunkSource:
    """Where one config's trunk starts.

    Attributes:
        kind: ``"imagenet"`` / ``"detectron"`` (a named published file), ``"file"`` (a path given),
            ``"pretrain"`` (the cached trunk of ``model.backbone_pretrain``), ``"scratch"`` (random,
            asked for), ``"none"`` (nothing given: random).
        path: the file it loads, None for scratch and none.
        format: ``"torchvision"`` (a state_dict in torchvision's keys) or ``"detectron"`` (caffe2 blobs);
            None without a file.
        published: the catalogue entry of a named file (its URL and checksum), else None.
        looked_in: where a named file was looked up and why there, e.g.
            ``data/pretrained (default; set model.weights_dir or $FPTBENCH_WEIGHTS_DIR)``; '' otherwise.
        key: the config key that chose it (``model.backbone_weights`` or ``model.backbone_pretrain``).
    """

    kind: str
    path: Path | None = None
    format: str | None = None
    published: TrunkFile | None = None
    looked_in: str = ""
    key: str = "model.backbone_weights"

    def describe(self) -> str:
        """One phrase: ``imagenet: data/pretrained/resnet50-0676ba61.pth``, ``scratch (random init)``."""
        if self.path is None:
            return {"scratch": "scratch (random init, asked for)", "none": "none (random init)"}[self.kind]
        return f"{self.kind}: {self.path}"


@dataclass(frozen=True)
class TrunkStatus:
    """What is on disk for a :class:`TrunkSource`.

    ``present``: the file exists (True without a file). ``sha256``: of its bytes, when checked.
    ``matches``: the publisher's checksum prefix agrees (None: nothing published or not checked).
    ``problem``: one line when the trunk cannot be used as it is ('' when it can).
    """

    source: TrunkSource
    present: bool
    sha256: str | None = None
    matches: bool | None = None
    problem: str = ""

    @property
    def state(self) -> str:
        """``ok``, ``missing``, ``checksum mismatch``, ``not pre-trained yet``, ``refused`` or ``random init``."""
        if self.source.path is None:
            return "refused" if self.problem else "random init"
        if not self.present:
            return "not pre-trained yet" if self.source.kind == "pretrain" else "missing"
        return "checksum mismatch" if self.matches is False else "ok"


def weights_dir(cfg: dict) -> tuple[Path, str]:
    """The folder of named trunk files and why there: ``model.weights_dir``, else
    ``$FPTBENCH_WEIGHTS_DIR``, else ``data/pretrained`` (relative to the working directory)."""
    if cfg["model"]["weights_dir"]:
        return Path(cfg["model"]["weights_dir"]), "model.weights_dir"
    if os.environ.get(WEIGHTS_DIR_ENV):
        return Path(os.environ[WEIGHTS_DIR_ENV]), f"${WEIGHTS_DIR_ENV}"
    return Path(WEIGHTS_DIR_DEFAULT), f"default; set model.weights_dir or ${WEIGHTS_DIR_ENV}"


def is_coco_detection(cfg: dict) -> bool:
    """A detection run on a named COCO split (``data.train``: coco2017_train, coco2014_train, ...):
    the runs whose numbers are set beside the paper's, which must not start from a random trunk."""
    from fptbench.data.catalog import DATASETS

    return cfg["model"]["task"] == "detection" and cfg["data"]["train"] in DATASETS


def trunk_source(cfg: dict) -> TrunkSource:
    """Where ``cfg``'s trunk starts, from its keys alone (no file is opened).

    Raises:
        UsageError: a named kind with no published file for ``model.backbone`` (e.g. ``detectron``
            with resnet18), naming the backbones that have one.
    """
    model = cfg["model"]
    if model["backbone_pretrain"]:
        return TrunkSource("pretrain", pretrain_path(cfg), "torchvision", key="model.backbone_pretrain")
    value = model["backbone_weights"]
    if value in ("", "scratch"):
        return TrunkSource("scratch" if value else "none")
    if value in NAMED:
        files = NAMED[value]
        if model["backbone"] not in files:
            raise UsageError(f"model.backbone_weights={value}: no {value} file is published for model.backbone="
                             f"{model['backbone']} (there is one for {', '.join(files)}); give a file's path, or "
                             f"scratch")
        folder, why = weights_dir(cfg)
        published = files[model["backbone"]]
        return TrunkSource(value, folder / published.name, "torchvision" if value == "imagenet" else "detectron",
                           published, f"{folder} ({why})")
    path = Path(value)
    return TrunkSource("file", path, "detectron" if path.suffix == ".pkl" else "torchvision")


_VERIFIED: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256: one read per process


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB pieces; remembered for the process while the file's
    size and modification time stay the same."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _VERIFIED:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _VERIFIED[key] = digest.hexdigest()
    return _VERIFIED[key]


def trunk_status(cfg: dict, *, verify: bool = True) -> TrunkStatus:
    """:func:`trunk_source` of ``cfg`` and what is on disk for it.

    ``verify`` reads the whole file for its sha256 and compares a named file with its published
    prefix (0.25 s for 350 MB, a ResNeXt-101's size, on this project's 2-core machine); without it
    only presence is checked.
    """
    source = trunk_source(cfg)
    if source.kind == "none" and is_coco_detection(cfg):
        published = IMAGENET_FILES.get(cfg["model"]["backbone"])
        folder, _ = weights_dir(cfg)
        expected = f" (expects {folder / published.name})" if published else ""
        return TrunkStatus(source, True, problem=(
            f"model.backbone_weights is '': a COCO detection run (data.train={cfg['data']['train']}) starts from "
            f"ImageNet weights: set model.backbone_weights imagenet{expected}, detectron, a file's path, or scratch "
            f"to train from random weights"))
    if source.path is None:
        return TrunkStatus(source, True)
    if not source.path.is_file():
        if source.kind == "pretrain":
            name = cfg["model"]["backbone_pretrain"]
            return TrunkStatus(source, False, problem=(
                f"{source.path}: the trunk of model.backbone_pretrain={name} is not pre-trained yet; make it with "
                f"`fptbench pretrain {name}` (--data-root {cfg['data']['root']})"))
        if source.published is not None:
            return TrunkStatus(source, False, problem=(
                f"{source.path}: missing, the trunk of model.backbone_weights={source.kind} for model.backbone="
                f"{cfg['model']['backbone']}, looked up in {source.looked_in}; download {source.published.url}"))
        return TrunkStatus(source, False, problem=f"{source.path}: no such file (model.backbone_weights)")
    if not verify:
        return TrunkStatus(source, True)
    digest = sha256_file(source.path)
    prefix = source.published.sha256_prefix if source.published is not None else None
    if prefix is None:
        return TrunkStatus(source, True, digest)
    if digest.startswith(prefix):
        return TrunkStatus(source, True, digest, True)
    return TrunkStatus(source, True, digest, False, problem=(
        f"{source.path}: sha256 {digest[:12]}... does not match the published {prefix} of {source.published.url} "
        f"(model.backbone_weights={source.kind}): a truncated or other file; download it again"))


def require_trunk(cfg: dict, *, verify: bool = True, pending_ok: bool = False) -> TrunkSource:
    """:func:`trunk_status`, raising its problem: a run calls this before it writes anything.
    ``pending_ok``: a ``model.backbone_pretrain`` trunk not pre-trained yet is no problem (the
    caller makes it: ``fptbench train`` before training).

    Raises:
        UsageError: one line naming the key and the file expected (missing, checksum mismatch, not
            pre-trained yet, or no trunk weights on a COCO detection run).
    """
    status = trunk_status(cfg, verify=verify)
    if status.problem and not (pending_ok and status.state == "not pre-trained yet"):
        raise UsageError(status.problem)
    return status.source


# ---------------------------------------------------------------------------------------------
# the cache of model.backbone_pretrain (made by fptbench.engine.pretrain.ensure_trunk)

def pretrain_config(cfg: dict) -> dict:
    """The resolved config of ``cfg``'s ``model.backbone_pretrain``, on ``cfg``'s data and device.

    Raises:
        UsageError: the name is unknown, its config invalid, or its trunk is another network.
    """
    from fptbench.config import load_config

    name = cfg["model"]["backbone_pretrain"]
    pre = load_config(name, [("data.root", cfg["data"]["root"]), ("device", cfg["device"])])
    if pre["model"]["backbone_pretrain"]:
        raise UsageError(f"model.backbone_pretrain: {name} itself sets model.backbone_pretrain; "
                         f"a pre-training must start from scratch or from model.backbone_weights")
    keys = ("backbone", "backbone_norm", "stride_in_1x1", "pixel")
    if cfg["model"]["pretrain_heads"]:  # the heads' tensors must fit, and see what they were trained on
        keys += ("head", "num_classes", "anchor_sizes", "fpn_channels", "box_head_dim", "mask_head_channels",
                 "box_head", "mask_head", "box_head_conv_dim")
    for key in keys:
        if pre["model"][key] != cfg["model"][key]:
            raise UsageError(f"model.backbone_pretrain: {name} has model.{key}={pre['model'][key]}, "
                             f"this run model.{key}={cfg['model'][key]}: its weights would not fit")
    return pre


def _recipe(pre: dict) -> dict[str, Any]:
    """The values of a resolved config that differ from the schema defaults, by dotted key, but
    ``data.root``: the cache lives in that folder, and its spelling (relative, absolute) is no
    part of what the trunk learnt; the training annotations' bytes are digested instead."""
    from fptbench.config import flat_defaults

    defaults = flat_defaults()
    flat = {f"{section}.{key}" if isinstance(values, dict) else section: value
            for section, values in pre.items()
            for key, value in (values.items() if isinstance(values, dict) else [(None, values)])}
    return {key: value for key, value in flat.items() if value != defaults.get(key) and key != "data.root"}


def pretrain_path(cfg: dict) -> Path:
    """Where the trunk of ``cfg``'s ``model.backbone_pretrain`` is cached (it may not exist yet)::

        <data.root>/pretrained/<NAME>-<digest>.pth        its trunk, torchvision classification keys
        <data.root>/pretrained/<NAME>-<digest>.heads.pth  its rpn.* and roi_heads.* tensors
        <data.root>/pretrained/<NAME>-<digest>/           the pre-training run

    ``digest`` = sha256 of the pre-training config (resolved; only the values that differ from the
    schema's defaults and not ``data.root``, so that a key added to the schema with its default keeps
    the cache) and of the bytes of its training annotations: another recipe or other data is
    another file.

    Raises:
        UsageError: as :func:`pretrain_config`, or the training annotations are missing.
    """
    from fptbench.config import config_hash
    from fptbench.data.catalog import resolve_split

    pre = pretrain_config(cfg)
    annotations = Path(pre["data"]["root"]) / resolve_split(pre["data"]["train"])[0]
    try:
        data = hashlib.sha256(annotations.read_bytes()).hexdigest()
    except OSError as err:
        root = Path(cfg["data"]["root"])
        hint = ""
        if (root / "classes.json").exists():  # the synthetic segmentation set (write_synth_seg), not its COCO files
            hint = (f"; this folder holds the synthetic segmentation labels: write the detection set's annotations "
                    f"beside them with `fptbench data synth --out {root}` (the --seg set's --train/--val/--size/--seed)")
        raise UsageError(f"{annotations}: cannot read the pre-training annotations: {err.strerror}{hint}") from None
    digest = hashlib.sha256(f"{config_hash(_recipe(pre))}:{data}".encode()).hexdigest()[:12]
    name = Path(cfg["model"]["backbone_pretrain"]).stem
    return Path(cfg["data"]["root"]) / PRETRAINED_DIR / f"{name}-{digest}.pth"


def heads_path(trunk: Path) -> Path:
    """The heads file beside a cached trunk file."""
    return trunk.with_suffix(".heads.pth")


# ---------------------------------------------------------------------------------------------
# every trunk of a config or a matrix: `fptbench weights`, `sweep --dry-run`

@dataclass
class TrunkRow:
    """One trunk that some cells start from: ``status`` (None where the source itself is invalid,
    then ``problem`` says why), the backbone and key value, and how many cells use it."""

    backbone: str
    value: str
    status: TrunkStatus | None
    problem: str
    cells: int = 0

    @property
    def usable(self) -> bool:
        """A run can start: the file is there and sound, or random init, or a pre-training to make."""
        return not self.problem or (self.status is not None and self.status.state == "not pre-trained yet")


def _trunk_key(cfg: dict) -> str:
    import json

    relevant = {"model": cfg["model"], "data": {k: cfg["data"][k] for k in ("root", "train")}, "device": cfg["device"]}
    return json.dumps(relevant, sort_keys=True)


def survey(configs: list[dict], *, verify: bool = True) -> list[TrunkRow]:
    """The distinct trunks of ``configs`` (a config, or a matrix's cells), in first-seen order, each
    checked once (:func:`trunk_status`; a cell's invalid source is a row with its problem)."""
    rows: dict[str, TrunkRow] = {}
    by_file: dict[str, TrunkRow] = {}
    for cfg in configs:
        key = _trunk_key(cfg)
        if key not in rows:
            model = cfg["model"]
            value = (f"pretrain {model['backbone_pretrain']}" if model["backbone_pretrain"]
                     else model["backbone_weights"] or "''")
            try:
                status = trunk_status(cfg, verify=verify)
                row = TrunkRow(model["backbone"], value, status, status.problem)
            except UsageError as err:
                row = TrunkRow(model["backbone"], value, None, str(err))
            same = f"{row.value}:{row.status.source.path}" if row.status and row.status.source.path else None
            if same is not None and same in by_file:  # another config of the same file: one row
                row = by_file[same]
            elif same is not None:
                by_file[same] = row
            rows[key] = row
        rows[key].cells += 1
    unique: list[TrunkRow] = []
    for row in rows.values():
        if not any(row is seen for seen in unique):
            unique.append(row)
    return unique


def format_survey(rows: list[TrunkRow], title: str) -> str:
    """The rows as a table headed by ``title`` and a count; each row: backbone, key value, file,
    state (with the published checksum's verdict or what to do), cells."""
    def state(row: TrunkRow) -> str:
        status = row.status
        if status is None:
            return f"invalid: {row.problem}"
        text = status.state
        if text == "ok" and status.sha256:
            if status.matches:
                text += f" (sha256 {status.sha256[:8]}... matches the published {status.source.published.sha256_prefix})"
            else:
                text += f" (sha256 {status.sha256[:12]}...; no checksum published)"
        elif text == "missing" and status.source.published is not None:
            text += f": download {status.source.published.url}"
        elif text in ("not pre-trained yet",):
            text += f" (made once by the first run, or `fptbench {row.value}`)"
        elif status.problem:
            text += f": {status.problem}"
        return text

    table = [("backbone", "weights", "file", "state", "cells")]
    table += [(row.backbone, row.value, str(row.status.source.path) if row.status and row.status.source.path else "-",
               state(row), str(row.cells)) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(4)]
    lines = ["  ".join(text.ljust(width) for text, width in zip(line[:4], widths)) + "  " + line[4] for line in table]
    bad = sum(not row.usable for row in rows)
    folders = sorted({row.status.source.looked_in for row in rows if row.status and row.status.source.looked_in})
    head = f"{title}: {len(rows)} trunk source(s), {bad} not usable"
    tail = [f"named files looked up in {folder}" for folder in folders]
    return "\n".join([head, *lines, *tail]) + "\n"

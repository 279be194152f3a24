"""Profile a model: parameters and MACs by part, latency and peak memory (contract section 3).

Parts are module-name prefixes. Of the torchvision detector that
:func:`fptbench.modeling.build_model` returns (:data:`PARTS`): ``backbone`` is the trunk
(ResNet body), ``bfp`` torchvision's FPN (laterals, output convs, extra pool level; with
``fpt.input: lateral`` the 1x1 laterals), ``fpt`` the transformer neck and ``fpt.st`` / ``fpt.gt``
/ ``fpt.rt`` / ``fpt.fusion`` its parts, ``rpn`` and ``roi_heads`` the heads, and ``transform``
torchvision's input normalisation (its bilinear resize runs even at scale 1 and fvcore counts it).
Of a :class:`~fptbench.modeling.segmenter.Segmenter` (``model.task: segmentation``,
:data:`SEG_PARTS`): ``backbone`` the dilated trunk, ``pyramid`` the UFP or FPN, ``fpt`` and its
parts as above, ``head`` the DeepLab or FCN head and ``aux_head`` the auxiliary head, which
runs in evaluation too (torchvision's segmentation models compute it; mmsegmentation's test does
not) and is therefore in the latency and the total [ours: reported apart so that it can be
subtracted]; "other" is the bilinear upsampling of the logits and the levels' fusion.
The top-level parts are disjoint and sum to the whole model (with "other" where there is any).

MACs come from :class:`fptbench.engine.flops.FlopAnalysis` (fvcore + attention handles; see that
module for what "attention" counts). ``macs`` = multiply-adds, ``flops`` = 2 x macs.

Data-dependent work [ours], detectors only: the RoI heads' MACs grow with the number of proposals (box branch)
and of detections (mask branch). To make counts and timings the same for every model whatever
its weights, profiling switches off the RPN's NMS and the box score threshold and NMS, so the
box branch always runs on ``rpn_post_nms_top_n_test`` proposals (fewer only if the image has
fewer anchors) and the mask branch on ``box_detections_per_img`` boxes: the caps, which a trained
model at COCO sizes usually reaches too. The counts measured are in ``result["proposals"]``.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from torch import Tensor, nn

from fptbench.config import ProfileRequest
from fptbench.errors import UsageError

__all__ = ["PARTS", "SEG_PARTS", "SEG_TOP_PARTS", "TOP_PARTS", "profile_model", "profile_checkpoint",
           "format_profile", "count_parameters"]

_REQUEST = ProfileRequest()  # the defaults of profile_model and profile_checkpoint

# part -> module-name prefixes in a build_model detector (a part absent from a model counts 0)
PARTS: dict[str, tuple[str, ...]] = {
    "backbone": ("backbone.body",),
    "bfp": ("backbone.fpn", "backbone.laterals"),
    "fpt": ("backbone.fpt",),
    "fpt.st": ("backbone.fpt.st",),
    "fpt.gt": ("backbone.fpt.gt",),
    "fpt.rt": ("backbone.fpt.rt",),
    "fpt.fusion": ("backbone.fpt.fuse",),
    "rpn": ("rpn",),
    "roi_heads": ("roi_heads",),
    "transform": ("transform",),
}
# Disjoint parts whose sum is the model; anything left over is reported as "other".
TOP_PARTS = ("backbone", "bfp", "fpt", "rpn", "roi_heads", "transform")

# part -> module-name prefixes in a Segmenter (model.task: segmentation)
SEG_PARTS: dict[str, tuple[str, ...]] = {
    "backbone": ("backbone",),
    "pyramid": ("pyramid",),
    "fpt": ("fpt",),
    "fpt.st": ("fpt.st",),
    "fpt.gt": ("fpt.gt",),
    "fpt.rt": ("fpt.rt",),
    "fpt.fusion": ("fpt.fuse",),
    "head": ("classifier",),
    "aux_head": ("aux_classifier",),
}
SEG_TOP_PARTS = ("backbone", "pyramid", "fpt", "head", "aux_head")

MIB = 2**20  # "MB" in this module: 2^20 bytes


def count_parameters(model: nn.Module, parts: dict[str, tuple[str, ...]] = PARTS) -> dict[str, int]:
    """Parameters (not buffers) of the model ("total") and of each of ``parts`` (:data:`PARTS`,
    :data:`SEG_PARTS`)."""
    counts = {"total": sum(p.numel() for p in model.parameters())}
    named = list(model.named_parameters())
    for part, prefixes in parts.items():
        counts[part] = sum(p.numel() for name, p in named if name.startswith(tuple(f"{x}." for x in prefixes)))
    return counts


@contextlib.contextmanager
def _profiling_mode(model: nn.Module, size: tuple[int, int]) -> Iterator[None]:
    """Eval mode, no resize of an H x W input, fixed proposal/detection counts (module docstring);
    everything is restored on exit."""
    transform, rpn, roi = model.transform, model.rpn, model.roi_heads
    modes = {m: m.training for m in model.modules()}
    saved = (transform.min_size, transform.max_size, rpn.nms_thresh, roi.score_thresh, roi.nms_thresh)
    model.eval()
    transform.min_size, transform.max_size = (min(size),), max(size)
    # IoU > 1 never happens: NMS keeps every box; softmax scores are > 0: no box is dropped.
    rpn.nms_thresh, roi.score_thresh, roi.nms_thresh = 1.0, 0.0, 1.0
    try:
        yield
    finally:
        transform.min_size, transform.max_size, rpn.nms_thresh, roi.score_thresh, roi.nms_thresh = saved
        for m, training in modes.items():
            m.training = training


class _CachedBody(nn.Module):
    """Stands in for the trunk so that ``backbone(x)`` runs the neck alone on fixed C2..C5."""

    def __init__(self, features: "OrderedDict[str, Tensor]") -> None:
        super().__init__()
        self.features = features

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        return self.features


@contextlib.contextmanager
def _neck_only(backbone: nn.Module, features: "OrderedDict[str, Tensor]") -> Iterator[None]:
    body = backbone.body
    backbone.body = _CachedBody(features)
    try:
        yield
    finally:
        backbone.body = body


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_ms(fn: Callable[[], Any], *, runs: int, warmup: int, device: torch.device, label: str,
             progress: bool) -> list[float]:
    """Wall time of ``runs`` calls of ``fn`` after ``warmup`` untimed ones, ms, synchronising the
    device before and after each call."""
    for i in range(warmup):
        _log(progress, f"{label}: warm-up {i + 1}/{warmup}")
        fn()
        _sync(device)
    times = []
    for i in range(runs):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
        _log(progress, f"{label}: run {i + 1}/{runs}: {times[-1]:.1f} ms")
    return times


def _latency(times: list[float]) -> dict[str, Any]:
    """Median and 90th percentile (numpy's linear interpolation), ms."""
    return {"median": round(statistics.median(times), 3), "p90": round(float(np.percentile(times, 90)), 3),
            "runs": len(times)}


def _proc_status_kib(field: str) -> Optional[int]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class _PeakMemory:
    """Peak memory of the code run between ``start()`` and ``stop()``, MiB.

    CUDA: ``torch.cuda.max_memory_allocated`` (tensors: weights and inputs included). CPU: the
    increase of the resident set, /proc/self/status VmHWM at the end minus VmRSS at the start, the
    peak first reset through /proc/self/clear_refs (Linux >= 4.0); where that is impossible an
    older, higher peak would show, and without /proc, ``resource.getrusage`` ru_maxrss is used
    (never reset). ``source`` says which.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.source = ""
        self._base_kib = 0

    def start(self) -> None:
        if self.device.type == "cuda":
            _sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.source = "cuda: torch.cuda.max_memory_allocated (weights and input included)"
            return
        rss = _proc_status_kib("VmRSS")
        if rss is not None:
            try:
                Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to VmRSS
                reset = "peak reset through /proc/self/clear_refs"
            except OSError:
                reset = "peak not resettable: an earlier, higher peak would show"
            self._base_kib = _proc_status_kib("VmRSS") or rss
            self.source = f"cpu: resident-set increase, /proc/self/status VmHWM - VmRSS before the runs ({reset})"
        else:
            import resource

            self._base_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.source = "cpu: resident-set increase, resource.getrusage ru_maxrss (process peak, never reset)"

    def stop(self) -> float:
        if self.device.type == "cuda":
            _sync(self.device)
            return round(torch.cuda.max_memory_allocated(self.device) / MIB, 1)
        peak = _proc_status_kib("VmHWM")
        if peak is None:
            import resource

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(max(0, peak - self._base_kib) * 1024 / MIB, 1)


def _log(progress: bool, message: str) -> None:
    if progress:
        print(f"profile: {message}", file=sys.stderr, flush=True)


def _check_args(size: tuple[int, int], device: str, runs: int, warmup: int) -> torch.device:
    ProfileRequest(size=size, runs=runs, warmup=warmup)  # raises ConfigError (a UsageError)
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"device: expected cpu or cuda[:N], got {device!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise UsageError(f"device: expected cpu or cuda[:N], got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device: {device!r}, but no CUDA device is available here")
    return dev


def _part_counts(by_module: dict[str, float], named_prefixes: tuple[str, ...]) -> int:
    return int(round(sum(by_module.get(p, 0) for p in named_prefixes)))


def profile_model(cfg: dict, *, size: tuple[int, int] = _REQUEST.size, device: str = "cpu", runs: int = _REQUEST.runs,
                  warmup: int = _REQUEST.warmup, model: nn.Module | None = None, progress: bool = False) -> dict:
    """Parameters, MACs/FLOPs by part, latency and peak memory of a model at batch 1.

    Args:
        cfg (dict): resolved config (``fptbench.config.load_config``); the model is built from it
            (:func:`~fptbench.engine.model.load_model`, seeded with ``cfg["seed"]``) unless ``model``
            is given.
        size: (H, W) of the random input image, pixels, each side >= ``fptbench.config.MIN_SIDE``;
            a detector's transform is set not to resize it (torchvision still pads the batch to a
            multiple of 32: ``padded_size``). Defaults: :class:`fptbench.config.ProfileRequest`.
        device: "cpu" or "cuda[:N]".
        runs: timed runs (>= 1), after ``warmup`` untimed ones, for the model and for the neck.
        model: a torchvision GeneralizedRCNN from ``build_model(cfg)``, or a Segmenter; moved to
            ``device``, then back, and left in the mode and settings it came in.
        progress: print what is being done to stderr.
    Returns:
        dict (JSON-able): keys of contract section 3, plus ``padded_size``, ``threads``,
        ``device_name``, ``dtype`` (what the model computed in: its parameters' dtype, no
        autocast), ``tf32`` (``{"matmul", "cudnn"}``: torch's allow_tf32 flags while measuring:
        on CUDA they decide whether fp32 convolutions and products use TF32), ``peak_memory_source``
        and ``counter``; detectors also ``proposals`` (the counts the RoI heads ran on). Latencies
        in ms: whole model (detector: transform to postprocessed detections; segmentation: pixels
        to logits at the input size) and neck alone (``bfp`` + ``fpt``, or ``pyramid`` + ``fpt``,
        on fixed trunk features C2..C5). ``by_part`` keys: :data:`PARTS` or :data:`SEG_PARTS`.
    """
    from fptbench.engine.model import load_model
    from fptbench.modeling.segmenter import Segmenter
    from fptbench.records import device_info

    dev = _check_args(tuple(size), device, runs, warmup)
    height, width = size
    if model is None:
        _log(progress, "building the model")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg["seed"])
            model = load_model(cfg)
    first = next(model.parameters(), None)
    home = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None else torch.get_default_dtype()
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(cfg["seed"])).to(dev)
    segmentation = isinstance(model, Segmenter)
    measure, parts, top_parts = ((_measure_segmenter, SEG_PARTS, SEG_TOP_PARTS) if segmentation
                                 else (_measure_detector, PARTS, TOP_PARTS))
    model.to(dev)
    try:
        m = measure(model, image, device=dev, runs=runs, warmup=warmup, progress=progress)
    finally:
        model.to(home)

    analysis, by_module = m.analysis, m.analysis.by_module()
    params = count_parameters(model, parts)
    total = analysis.total_macs()
    by_part = {}
    for part, prefixes in parts.items():
        macs = _part_counts(by_module, prefixes)
        by_part[part] = {"params": params[part], "macs": macs, "flops": 2 * macs}
    rest = total - sum(by_part[p]["macs"] for p in top_parts)
    rest_params = params["total"] - sum(by_part[p]["params"] for p in top_parts)
    if rest or rest_params:
        by_part["other"] = {"params": rest_params, "macs": rest, "flops": 2 * rest}
    attention = {
        "macs": analysis.attention_macs(),
        "flops": 2 * analysis.attention_macs(),
        "by_part": {p: sum(analysis.attention_macs(x) for x in parts[p] if x in by_module) for p in ("fpt.st", "fpt.gt")},
    }
    return {
        "params": params["total"],
        "macs": total,
        "flops": 2 * total,
        "by_part": by_part,
        "attention": attention,
        "latency_ms": _latency(m.times),
        "neck_latency_ms": _latency(m.neck_times),
        "peak_memory_mb": m.peak_mb,
        "peak_memory_source": m.memory_source,
        "uncounted_ops": analysis.uncounted_ops(),
        "input_size": [height, width],
        "padded_size": m.padded_size,
        "device": str(dev),
        "device_name": device_info(dev)["name"],
        "dtype": str(dtype).removeprefix("torch."),
        "tf32": {"matmul": bool(torch.backends.cuda.matmul.allow_tf32), "cudnn": bool(torch.backends.cudnn.allow_tf32)},
        "threads": torch.get_num_threads(),
        **m.extra,
        "counter": "fvcore FlopCountAnalysis (jit trace) + fptbench.engine.flops attention handles; "
                   "macs = multiply-adds, flops = 2 x macs",
    }


@dataclass
class _Measured:
    """What a model family's measurement gives :func:`profile_model`."""

    times: list[float]  # whole model, ms per run
    neck_times: list[float]
    peak_mb: float
    memory_source: str
    analysis: Any  # FlopAnalysis of one forward pass
    padded_size: list[int]  # [H, W] the network saw
    extra: dict = field(default_factory=dict)  # more result keys (a detector's "proposals")


def _measure_detector(model: nn.Module, image: Tensor, *, device: torch.device, runs: int, warmup: int,
                      progress: bool) -> _Measured:
    """Latency, memory and MACs of a torchvision detector, with the proposal and detection counts
    fixed (module docstring)."""
    from fptbench.engine.flops import FlopAnalysis

    height, width = image.shape[-2:]
    with _profiling_mode(model, (height, width)), torch.no_grad():
        memory = _PeakMemory(device)
        memory.start()
        times = _time_ms(lambda: model([image]), runs=runs, warmup=warmup, device=device,
                         label=f"model {height}x{width}", progress=progress)
        peak_mb = memory.stop()

        images, _ = model.transform([image])
        features = model.backbone.body(images.tensors)
        with _neck_only(model.backbone, features):
            neck_times = _time_ms(lambda: model.backbone(images.tensors), runs=runs, warmup=warmup,
                                  device=device, label="neck", progress=progress)
        del features

        _log(progress, "counting MACs (fvcore trace)")
        counts: dict[str, int] = {}
        hooks = [
            model.rpn.register_forward_hook(lambda m, i, o: counts.__setitem__("proposals", int(o[0][0].shape[0]))),
            model.roi_heads.register_forward_hook(
                lambda m, i, o: counts.__setitem__("detections", int(o[0][0]["boxes"].shape[0]))),
        ]
        try:
            analysis = FlopAnalysis(model, ([image],))
            analysis.by_module()  # runs the trace while the hooks count
        finally:
            for hook in hooks:
                hook.remove()
    roi = model.roi_heads
    mask = roi.has_mask()
    proposals = counts.get("proposals", 0)
    detections = counts.get("detections", 0)
    note = (f"roi_heads' box branch ran on {proposals} proposals (rpn post_nms_top_n_test = "
            f"{model.rpn._post_nms_top_n['testing']}, or all the image's anchors if fewer)"
            + (f" and its mask branch on {detections} detections (box_detections_per_img = {roi.detections_per_img})"
               if mask else "")
            + "; its MACs scale linearly with them. RPN NMS and the box score threshold and NMS were off "
              "while profiling so that these are the caps, whatever the weights [ours]. The trunk, neck "
              "and RPN heads do not depend on them.")
    proposals_entry = {"parts": ["roi_heads"], "count": proposals, "detections": detections if mask else None,
                       "note": note}
    return _Measured(times, neck_times, peak_mb, memory.source, analysis, list(images.tensors.shape[-2:]),
                     {"proposals": proposals_entry})


def _measure_segmenter(model: nn.Module, image: Tensor, *, device: torch.device, runs: int, warmup: int,
                       progress: bool) -> _Measured:
    """Latency, memory and MACs of a Segmenter in evaluation mode: one image, no resize, no
    data-dependent work. The neck is the pyramid and FPT on fixed trunk features."""
    from fptbench.engine.flops import FlopAnalysis

    height, width = image.shape[-2:]
    batch = image[None]
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            memory = _PeakMemory(device)
            memory.start()
            times = _time_ms(lambda: model(batch), runs=runs, warmup=warmup, device=device,
                             label=f"model {height}x{width}", progress=progress)
            peak_mb = memory.stop()

            features = model.backbone(model.normalize(batch))

            def neck() -> Any:
                levels = list(model.pyramid(features).values())
                return model.fpt(levels) if model.fpt is not None else levels

            neck_times = _time_ms(neck, runs=runs, warmup=warmup, device=device, label="neck", progress=progress)
            _log(progress, "counting MACs (fvcore trace)")
            analysis = FlopAnalysis(model, (batch,))
            analysis.by_module()
    finally:
        for m, training in modes.items():
            m.training = training
    return _Measured(times, neck_times, peak_mb, memory.source, analysis, [height, width])


def profile_checkpoint(cfg: dict, ckpt: str | None, *, size: tuple[int, int] = _REQUEST.size,
                       runs: int = _REQUEST.runs, warmup: int = _REQUEST.warmup, device: str | None = None,
                       progress: bool = False) -> dict:
    """:func:`profile_model` of the model of ``cfg`` with the weights of ``ckpt`` (an fptbench
    checkpoint or a torchvision detection file; None: as built). Trained weights matter: the
    number of detections, hence the mask head's cost, depends on them. ``device`` None: the
    config's ``device`` (:func:`~fptbench.engine.distributed.choose_device`)."""
    from fptbench.engine.distributed import choose_device
    from fptbench.engine.model import load_model

    if device is None:
        device = str(choose_device(cfg["device"]))
    model = load_model(cfg, ckpt)
    return profile_model(cfg, size=tuple(size), device=device, runs=runs, warmup=warmup, model=model,
                         progress=progress)


def _g(macs: int) -> str:
    return f"{macs / 1e9:,.2f}"


def format_profile(result: dict) -> str:
    """Human-readable lines of a :func:`profile_model` result (params in M, MACs in G = 1e9)."""
    total = max(result["macs"], 1)
    h, w = result["input_size"]
    lines = [
        f"input: {h}x{w} (padded to {'x'.join(map(str, result.get('padded_size', [h, w])))}), batch 1, "
        f"device {result['device']} ({result.get('device_name', '?')}, {result.get('threads', '?')} threads), "
        f"{result.get('dtype', '?')}" + "".join(f", TF32 {k} {'on' if v else 'off'}" for k, v in result.get('tf32', {}).items()),
        f"params: {result['params'] / 1e6:.2f} M   MACs: {_g(result['macs'])} G   "
        f"FLOPs: {_g(result['flops'])} G (flops = 2 x macs)",
        f"{'part':<12} {'params (M)':>11} {'GMACs':>12} {'share':>7}",
    ]
    for part, row in result["by_part"].items():
        indent = "  " if part.startswith("fpt.") else ""
        lines.append(f"{indent + part:<12} {row['params'] / 1e6:>11.3f} {_g(row['macs']):>12} "
                     f"{100 * row['macs'] / total:>6.1f}%")
    att = result["attention"]
    lines.append(f"attention (QK + AV products, all impls alike): {_g(att['macs'])} GMACs, "
                 f"{100 * att['macs'] / total:.1f}% of the model"
                 + "".join(f"; {p} {_g(m)}" for p, m in att.get("by_part", {}).items()))
    prop = result.get("proposals")  # detectors only
    if prop is not None:
        lines.append(f"data-dependent: {', '.join(prop['parts'])} at {prop['count']} proposals"
                     + (f", {prop['detections']} detections" if prop.get("detections") is not None else ""))
    for key, name in (("latency_ms", "latency"), ("neck_latency_ms", "neck latency")):
        lat = result[key]
        lines.append(f"{name}: median {lat['median']:.1f} ms, p90 {lat['p90']:.1f} ms ({lat['runs']} runs)")
    lines.append(f"peak memory: {result['peak_memory_mb']:.1f} MB (MiB; {result.get('peak_memory_source', '')})")
    ops = result["uncounted_ops"]
    lines.append("uncounted ops: " + (", ".join(f"{op} x{n}" for op, n in ops.items()) if ops else "none"))
    return "\n".join(lines)

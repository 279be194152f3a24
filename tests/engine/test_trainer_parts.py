"""Pieces of the training loop that need no training: DEBUG, multi-scale sizes, weight digests,
the autocast dtype, the grad scaler and the loader's pinned memory."""

import pytest
import torch

from fptbench.config import load_config
from fptbench.engine.model import set_train_sizes, weights_digest
from fptbench.engine.distributed import DistInfo
from fptbench.engine.trainer import _loader, _train_data, _TrainState, autocast_dtype, effective_config
from fptbench.modeling import build_model

SMALL = [("model.backbone", "resnet18"), ("model.min_size", "96"), ("model.max_size", "160")]


def test_debug_caps_the_run():
    cfg = load_config("synth_r18_fpt", [("DEBUG", "true")])
    run = effective_config(cfg)
    assert run["train"]["max_iter"] == 20 and run["train"]["checkpoint_period"] <= 20
    assert cfg["train"]["max_iter"] == 100  # the caller's config is not modified
    assert effective_config(load_config("synth_r18_fpt"))["train"]["max_iter"] == 100


def test_multi_scale_in_training_and_the_test_scale_in_evaluation():
    # torchvision's transform draws one of min_size per training image: multi-scale training.
    cfg = load_config("synth_r18_bfp", SMALL + [("train.min_sizes", "[64, 80, 96]"), ("train.max_size", "200")])
    model = build_model(cfg)
    set_train_sizes(model, cfg, training=True)
    assert model.transform.min_size == (64, 80, 96) and model.transform.max_size == 200
    set_train_sizes(model, cfg, training=False)
    assert model.transform.min_size == (96,) and model.transform.max_size == 160
    # With train.min_sizes empty, training uses the test scale.
    cfg = load_config("synth_r18_bfp", SMALL)
    set_train_sizes(model, cfg, training=True)
    assert model.transform.min_size == (96,) and model.transform.max_size == 160


def test_weights_digest_sees_every_bit():
    torch.manual_seed(0)
    model = torch.nn.BatchNorm2d(3)
    before = weights_digest(model)
    assert before == weights_digest(model)
    model.running_var[1] = torch.nextafter(model.running_var[1], torch.tensor(2.0))  # one ulp
    assert weights_digest(model) != before


# --- mixed precision and the loader on CUDA (issue #10): decisions testable on the CPU ------------

def _amp(device_type, *, supported=True, **train):
    cfg = load_config("synth_r18_bfp", [(f"train.{k}", v) for k, v in train.items()])
    return autocast_dtype(cfg, device_type, bf16_supported=supported)


def test_autocast_is_bf16_on_cuda_by_default_and_fp16_where_bf16_is_missing():
    assert load_config("synth_r18_bfp")["train"]["amp_dtype"] == "bf16"
    assert _amp("cuda") == (torch.bfloat16, "")
    dtype, warning = _amp("cuda", supported=False)
    assert dtype == torch.float16 and "bf16 is not supported by this GPU" in warning and "\n" not in warning
    assert _amp("cuda", amp_dtype="fp16") == (torch.float16, "")
    assert _amp("cuda", supported=False, amp_dtype="fp16") == (torch.float16, "")
    assert _amp("cuda", amp=False) == (None, "")  # fp32 throughout


def test_autocast_on_the_cpu_is_train_cpu_bf16_only():
    assert _amp("cpu") == (None, "")  # train.amp (on by default) is ignored on the CPU
    assert _amp("cpu", cpu_bf16=True) == (torch.bfloat16, "")
    assert _amp("cpu", amp_dtype="fp16", cpu_bf16=True) == (torch.bfloat16, "")


def test_amp_dtype_is_bf16_or_fp16():
    from fptbench.config import ConfigError

    with pytest.raises(ConfigError, match="key 'train.amp_dtype' must be one of bf16, fp16; got 'fp8'"):
        load_config("synth_r18_bfp", [("train.amp_dtype", "fp8")])


@pytest.mark.filterwarnings("ignore:torch.cuda.amp.GradScaler is enabled, but CUDA is not available")
def test_only_fp16_gets_a_grad_scaler():
    model = torch.nn.Linear(2, 2)
    cfg = load_config("synth_r18_bfp")
    cuda = DistInfo(device=torch.device("cuda", 0))
    assert _TrainState.create(model, cfg, cuda, torch.bfloat16).scaler is None
    assert _TrainState.create(model, cfg, cuda, None).scaler is None
    assert _TrainState.create(model, cfg, DistInfo(), torch.bfloat16).scaler is None
    scaler = _TrainState.create(model, cfg, cuda, torch.float16).scaler
    assert isinstance(scaler, torch.amp.GradScaler)


def test_the_training_loader_pins_memory_on_cuda_only(tmp_path):
    from fptbench.data.synth import write_synth

    write_synth(tmp_path, train=2, val=1, size=64, seed=0)
    cfg = load_config("synth_r18_bfp", [("data.root", str(tmp_path)), ("data.num_workers", 0)])

    def loader(info):
        return _loader(cfg, info, *_train_data(cfg, info, 1, lambda _: None))

    assert loader(DistInfo(device=torch.device("cuda", 0))).pin_memory is True
    assert loader(DistInfo()).pin_memory is False

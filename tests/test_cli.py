"""The ``fptbench`` command, run as a user runs it: ``python -m fptbench ...`` in a subprocess."""

from __future__ import annotations

import os
import re

import pytest
import yaml

from fptbench import __version__
from fptbench.config import config_hash, load_config


def assert_usage_error(result, *fragments: str) -> str:
    """Exit status 2, nothing on stdout, one stderr line 'fptbench: error: ...' with the fragments."""
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fptbench: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def test_config_prints_yaml_and_hash(run_cli):
    result = run_cli("config", "maskrcnn_r50_fpt", "--set", "fpt.gt", "false", "--set", "st.parts", "4")
    assert result.returncode == 0, result.stderr
    expected = load_config("maskrcnn_r50_fpt", [("fpt.gt", "false"), ("st.parts", "4")])
    assert yaml.safe_load(result.stdout) == expected
    first = result.stdout.splitlines()[0]
    assert first == f"# config: maskrcnn_r50_fpt  hash: {config_hash(expected)}"


def test_typo_in_set_key_is_one_line_with_a_suggestion(run_cli):
    result = run_cli("config", "maskrcnn_r50_fpt", "--set", "fpt.s_t", "false")
    line = assert_usage_error(result)
    assert line == ("fptbench: error: maskrcnn_r50_fpt.yaml: --set fpt.s_t false: "
                    "unknown key 'fpt.s_t'; did you mean 'fpt.st'?")


def test_missing_config_exits_2(run_cli):
    assert_usage_error(run_cli("config", "maskrcnn_r50_fptt"), "unknown config 'maskrcnn_r50_fptt'",
                       "did you mean 'maskrcnn_r50_fpt'?", "available: fasterrcnn_r101_bfp")


def test_bad_value_exits_2(run_cli):
    assert_usage_error(run_cli("config", "maskrcnn_r50_fpt", "--set", "gt.window", "4"),
                       "gt.window=4 must be 0 (global GT) or an odd window side >= 1")


@pytest.mark.parametrize("args, fragment", [
    ((), "a command is required, one of: config, forward"),
    (("bogus",), "invalid choice: 'bogus'"),
    (("config",), "required: NAME"),
    (("forward", "maskrcnn_r50_fpt", "--size", "0", "10"), "--size H W: each side must be at least 32 pixels"),
    (("forward", "maskrcnn_r50_fpt", "--size", "a", "b"), "argument --size: invalid int value: 'a'"),
    (("forward", "maskrcnn_r50_fpt", "--seed", "x"), "argument --seed: invalid int value: 'x'"),
])
def test_bad_arguments_exit_2_with_one_line(run_cli, args, fragment):
    assert_usage_error(run_cli(*args), fragment)


def test_version(run_cli):
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"fptbench {__version__}"


def test_ci_runs_exactly_the_readme_test_command(repo_root):
    readme = (repo_root / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    main_job, tests = blocks[0].strip(), blocks[1].strip()
    # the README starts with these two commands, before any other section
    assert readme.index(blocks[1]) < readme.index("\n## ")
    assert main_job.startswith("pip install torch==2.14.1 torchvision==0.29.1 && pip install -e . && fptbench ")
    assert tests == ("pip install torch==2.14.1 torchvision==0.29.1 && pip install -e '.[test]' "
                     "&& python -m pytest -q")
    ci = repo_root / ".ci" / "run"
    assert os.access(ci, os.X_OK)
    commands = [line for line in ci.read_text().splitlines()
                if line.strip() and not line.startswith("#") and not line.startswith(("set ", "cd "))]
    # besides the test command and then the slow tests it leaves out (pyproject's addopts), CI
    # only starts (and, on exit, stops) the SLURM dev cluster
    assert commands[-1] == tests + " && python -m pytest -q -m slow"
    assert all("slurm/dev-cluster.sh" in line for line in commands[:-1]), commands


FORWARD_SHAPES = {  # 128 x 160 input, no resize; torchvision pads to a multiple of 32
    "0": (1, 256, 32, 40), "1": (1, 256, 16, 20), "2": (1, 256, 8, 10), "3": (1, 256, 4, 5),
    "pool": (1, 256, 2, 3),
}


def _forward_report(stdout: str) -> tuple[dict, dict]:
    """(level -> shape, detection key -> shape) parsed from `fptbench forward` output."""
    lines = stdout.splitlines()
    levels = lines[lines.index("backbone features (level: N, C, H, W):") + 1:lines.index("detections:")]
    levels = levels[:-1]  # the parameters line
    detections = lines[lines.index("detections:") + 1:-1]

    def parse(rows):
        return {row.split(":")[0].strip(): tuple(int(x) for x in re.findall(r"\d+", row.split(":", 1)[1]))
                for row in rows}

    return parse(levels), parse(detections)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["maskrcnn_r50_fpt", "fasterrcnn_r50_bfp"])
def test_forward_smoke(run_cli, name):
    result = run_cli("forward", name, "--set", "model.backbone", "resnet18", "--size", "128", "160")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    levels, detections = _forward_report(result.stdout)
    assert levels == FORWARD_SHAPES
    expected = {"boxes", "labels", "scores"} | ({"masks"} if name.startswith("mask") else set())
    assert set(detections) == expected
    count = detections["boxes"][0]
    assert detections["boxes"] == (count, 4) and detections["scores"] == (count,)
    if "masks" in detections:
        assert detections["masks"] == (count, 1, 128, 160)
    summary = result.stdout.splitlines()[-1]
    assert re.fullmatch(rf"forward {name}: 128x160 image, 5 levels, [\d.]+M params, {count} detections, "
                        r"[\d.]+ s forward \(build [\d.]+ s, \d+ threads\)", summary), summary


# ---------------------------------------------------------------------------------------------
# --set: ours (one pair per flag) and the seed's (several pairs after one flag)

def test_set_takes_one_pair_per_flag_or_several_after_one(run_cli):
    ours = run_cli("config", "maskrcnn_r50_fpt", "--set", "fpt.gt", "false", "--set", "st.parts", "4")
    seeds = run_cli("config", "maskrcnn_r50_fpt", "--set", "fpt.gt", "false", "st.parts", "4")
    mixed = run_cli("config", "maskrcnn_r50_fpt", "--set", "fpt.gt", "false", "st.parts", "8", "--set", "st.parts", "4")
    assert ours.returncode == seeds.returncode == mixed.returncode == 0, seeds.stderr
    assert ours.stdout == seeds.stdout == mixed.stdout  # later pairs win, in order
    assert yaml.safe_load(seeds.stdout)["st"]["parts"] == 4


@pytest.mark.parametrize("args, fragment", [
    (("config", "maskrcnn_r50_fpt", "--set", "st.parts"), "got 1 word(s): st.parts; a VALUE is missing"),
    (("config", "maskrcnn_r50_fpt", "--set", "st.parts", "4", "fpt.gt"), "got 3 word(s): st.parts 4 fpt.gt"),
    (("config", "--set", "st.parts", "4", "maskrcnn_r50_fpt"), "NAME came after --set"),
    (("sweep", "demo", "--dry-run", "--set", "train.max_iter"), "expected KEY VALUE pairs (--set K1 V1 [K2 V2 ...])"),
])
def test_odd_set_count_is_one_line_saying_what_was_expected(run_cli, args, fragment):
    assert_usage_error(run_cli(*args), "argument --set: expected KEY VALUE pairs", fragment)


# ---------------------------------------------------------------------------------------------
# config --diff

CODE_VS_PAPER = [  # fptbench config maskrcnn_r50_fpt_code --diff maskrcnn_r50_fpt: the neck, as issue #12 lists it
    ["fpt.input", "lateral [code]", "fpn [ours]"],
    ["st.pool_kv", "true [code]", "false [paper]"],
    ["st.shared_qk", "true [code]", "false [paper]"],
    ["st.mixture_input", "queries [code]", "keys [paper]"],
    ["gt.normalizer", "linear [code]", "mos [paper]"],
    ["gt.similarity", "dot [code]", "euclidean [paper]"],
    ["gt.out_bias", "true [code]", "false [ours]"],
    ["rt.variant", "code [code]", "paper [paper]"],
]


def test_config_diff_lists_the_eight_neck_differences_with_their_sources(run_cli):
    from fptbench.config import diff_configs

    result = run_cli("config", "maskrcnn_r50_fpt_code", "--diff", "maskrcnn_r50_fpt")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    code, paper = load_config("maskrcnn_r50_fpt_code"), load_config("maskrcnn_r50_fpt")
    count = len(diff_configs(code, paper))  # the neck, and the authors' recipe around it (tests/test_recipes.py)
    head = (f"# config diff: maskrcnn_r50_fpt_code (hash {config_hash(code)}) "
            f"vs maskrcnn_r50_fpt (hash {config_hash(paper)}): {count} key(s) differ")
    assert lines[0] == head and len(lines) == count + 2
    assert re.split(r"\s{2,}", lines[1]) == ["key", "maskrcnn_r50_fpt_code", "maskrcnn_r50_fpt"]
    neck = [line for line in lines[2:] if line.startswith(("fpt.", "st.", "gt.", "rt."))]
    assert [re.split(r"\s{2,}", line) for line in neck] == CODE_VS_PAPER
    # aligned: every value column starts where its header does
    starts = [lines[1].index("maskrcnn_r50_fpt_code"), lines[1].rindex("maskrcnn_r50_fpt")]
    for line, (_, code_value, paper_value) in zip(neck, CODE_VS_PAPER):
        assert line.index(code_value) == starts[0] and line.index(paper_value) == starts[1], line


def test_config_diff_json_applies_set_to_name_only(run_cli):
    import json

    result = run_cli("config", "maskrcnn_r50_fpt", "--set", "st.pool_kv", "true", "fpt.gt", "false",
                     "--diff", "maskrcnn_r50_fpt", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["configs"] == ["maskrcnn_r50_fpt", "maskrcnn_r50_fpt"]
    assert out["differences"] == [
        {"key": "fpt.gt", "values": [False, True], "sources": [None, None]},
        {"key": "st.pool_kv", "values": [True, False], "sources": ["code", "paper"]},
    ]
    same = run_cli("config", "maskrcnn_r50_fpt", "--diff", "maskrcnn_r50_fpt")
    assert same.returncode == 0 and same.stdout.splitlines()[0].endswith(": 0 key(s) differ")


@pytest.mark.parametrize("args, fragment", [
    (("config", "maskrcnn_r50_fpt", "--json"), "--json: only with --diff OTHER"),
    (("config", "maskrcnn_r50_fpt", "--diff", "maskrcnn_r50_fptt"), "unknown config 'maskrcnn_r50_fptt'"),
])
def test_config_diff_mistakes_are_one_line(run_cli, args, fragment):
    assert_usage_error(run_cli(*args), fragment)


# ---------------------------------------------------------------------------------------------
# the seed's flags: --help says what each maps to; what cannot be honoured is one line

def test_help_names_what_each_seed_flag_maps_to(run_cli):
    train = " ".join(run_cli("train", "--help").stdout.split())
    for fragment in ("--load-ckpt PATH, --load_ckpt PATH", "--no-save, --no_save", "--load-detectron PATH, --load_detectron PATH",
                     "--bs N the seed's total batch", "= --set train.images_per_device N/WORLD_SIZE",
                     "--nw N = --set data.num_workers N", "--use_tfboard accepted, changes nothing",
                     "--dataset NAME coco2017 = --set data.train coco2017_train data.test coco2017_val",
                     "--disp_interval N = --set train.log_period N", "--lr LR = --set train.base_lr LR",
                     "--lr_decay_gamma G = --set train.gamma G", "--no_cuda = --set device cpu",
                     "--cfg NAME = NAME", "--load_ckpt PATH --resume"):
        assert fragment in train, fragment
    evaluate = " ".join(run_cli("eval", "--help").stdout.split())
    for fragment in ("--ckpt PATH, --load_ckpt PATH", "--output DIR, --output_dir DIR", "--dataset NAME coco2017"):
        assert fragment in evaluate, fragment


@pytest.mark.parametrize("args, fragment", [
    (("train", "--cfg", "configs/e2e_fptnet_R-50_mask.yaml", "--output", "x"),
     "--cfg configs/e2e_fptnet_R-50_mask.yaml: the seed's Detectron config cannot be read; use the fptbench "
     "preset with its neck, maskrcnn_r50_fpt_code"),
    (("train", "synth_r18_fpt", "--cfg", "synth_r18_bfp", "--output", "x"), "give the config once"),
    (("train", "--output", "x"), "required: NAME (or --cfg NAME)"),
    (("train", "synth_r18_fpt", "--dataset", "keypoints_coco2017", "--output", "x"),
     "--dataset keypoints_coco2017: fptbench has no keypoint head"),
    (("train", "synth_r18_fpt", "--iter_size", "0", "--output", "x"),
     "--iter_size 0: the seed's flag, which fptbench cannot honour: micro-batches per step must be >= 1"),
    (("train", "synth_r18_fpt", "--o", "adam", "--output", "x"), "--o adam: the seed's flag, which fptbench cannot honour"),
    (("train", "synth_r18_fpt", "--start_step", "100", "--output", "x"), "use --load_ckpt PATH --resume"),
    (("train", "synth_r18_fpt", "--bs", "0", "--output", "x"), "--bs 0: the total batch must be a positive multiple"),
    (("eval", "synth_r18_fpt", "--load_ckpt", "a.pth", "--output_dir", "x", "--range", "0", "10"),
     "--range: the seed's flag, which fptbench cannot honour: evaluation runs over the whole data.test split"),
    (("eval", "synth_r18_fpt", "--load_detectron", "R-50.pkl", "--output", "x"),
     "--load_detectron: the seed's flag, which fptbench cannot honour"),
    (("eval", "synth_r18_fpt", "--load_ckpt", "a.pth", "--output_dir", "x", "--vis"), "fptbench infer"),
])
def test_seed_flags_that_cannot_be_honoured_are_one_line(run_cli, args, fragment):
    assert_usage_error(run_cli(*args), fragment)


def test_bs_is_the_total_batch_over_the_processes(run_cli, tmp_path):
    # --bs 6 under 4 processes (torchrun sets WORLD_SIZE) divides unevenly, as the seed asserts: the config is resolved (and --bs checked)
    # before anything is built, so a missing dataset is what stops the run, not the batch.
    env = dict(os.environ, WORLD_SIZE="4")
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    done = subprocess.run([sys.executable, "-m", "fptbench", "train", "synth_r18_fpt", "--bs", "6", "--output",
                           str(tmp_path / "x")], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert_usage_error(done, "--bs 6: the total batch must be a positive multiple of the 4 process(es)")


def test_a_reader_that_leaves_early_is_no_traceback(repo_root):
    # `fptbench config NAME | head -0`: the pipe's read end is closed before fptbench writes
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)
    proc = subprocess.run([sys.executable, "-m", "fptbench", "config", "synth_r18_fpt"], stdout=write,
                          stderr=subprocess.PIPE, text=True, cwd=repo_root,
                          env=dict(os.environ, PYTHONPATH=str(repo_root)))
    os.close(write)
    assert proc.returncode == 141 and proc.stderr == ""

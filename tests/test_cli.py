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
    (("config", "maskrcnn_r50_fpt", "--set", "st.parts"), "argument --set: expected 2 arguments"),
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
    # besides the test command, CI only starts (and, on exit, stops) the SLURM dev cluster
    assert commands[-1] == tests
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

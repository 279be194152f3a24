"""The report of a segmentation matrix: mIoU and per-class IoU tables per dataset, Δ mIoU with
Welch's p against the baseline, the paper's gain beside the row of its setting only, figures; and
the detection report as pinned.

The records are real: one tiny run per neck (synth_seg_r18_{base,fpt,lgt}: 1 iteration of
32-px crops, evaluated on 2 synthetic images, profiled at 64 px), copied per seed and dataset
with known scores written into ``metrics.segmentation``, as conftest does for detection. The
expected numbers are computed here by hand (mean, sample variance, Welch's t with its
Welch-Satterthwaite degrees of freedom, Student's t survival function), not by the report's helpers.
"""

from __future__ import annotations

import copy
import hashlib
import math
import re

import pandas as pd
import pytest
from scipy.stats import t as student_t

from fptbench.config import load_config
from fptbench.data.synth import write_synth_seg
from fptbench.engine import train
from fptbench.engine.profile import profile_model
from fptbench.errors import UsageError
from fptbench.report import build_report
from fptbench.report.figures import draw_scatter
from fptbench.report.reference import load_reference
from fptbench.report.rows import collect_rows
from fptbench.report.segmentation import build_segmentation_tables

from . import fixed_records
from .test_seeds import _error_segments as error_segments

TINY = [
    ("model.fpn_channels", 16), ("gt.channels", 8), ("fpt.norm", "bn"), ("seg.ufp_kernels", "[1, 3]"),
    ("seg.crop_size", "[32, 32]"), ("seg.scale_range", "[0.5, 1.0]"), ("train.images_per_device", 2),
    ("train.max_iter", 1), ("train.warmup_iters", 1), ("train.checkpoint_period", 1000), ("train.log_period", 1000),
    ("data.num_workers", 0), ("model.backbone_pretrain", ""),  # a fresh trunk: no pre-training
]
NECKS = {"base": "baseline", "fpt": "+FPT (GT)", "lgt": "+FPT (LGT)"}

# mIoU per seed, per dataset label and neck: on cityscapes LGT is clearly above the baseline
# (p < 0.05) and GT within the noise; on synth nothing is far from it.
MIOU = {
    "cityscapes": {"base": [40.0, 41.0, 40.5], "fpt": [41.0, 42.2], "lgt": [43.0, 43.4, 42.9]},
    "synth": {"base": [30.0, 30.6, 29.9], "fpt": [30.3, 31.9, 29.5], "lgt": [30.9, 30.1]},
}
TEST_SPLIT = {"cityscapes": "cityscapes_val", "synth": "synth_seg_val"}
DATASET_KEY = {"cityscapes": "cityscapes", "synth": "synth_seg"}


def _mean(xs):
    return sum(xs) / len(xs)


def _std(xs):
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _welch(a, b):
    """Two-sided p of Welch's t-test, written out."""
    va, vb = _std(a) ** 2 / len(a), _std(b) ** 2 / len(b)
    t = (_mean(a) - _mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return 2 * student_t.sf(abs(t), df)


def _class_iou(k: int, seed: int, neck: str) -> float | None:
    """Known IoU of class k: class 3 is null (not present, not predicted) in seed 0, class 5 in every seed."""
    if k == 5 or (k == 3 and seed == 0):
        return None
    return 10.0 * k + 1.5 * seed + {"base": 0.0, "fpt": 0.25, "lgt": 1.0}[neck]


@pytest.fixture(scope="module")
def seg_runs(tmp_path_factory) -> dict[str, dict]:
    """A real record per neck label (base, fpt, lgt), each with its profile, as a sweep cell gets it."""
    tmp = tmp_path_factory.mktemp("seg_runs")
    write_synth_seg(tmp / "synth", train=4, val=2, size=64, seed=0)
    runs = {}
    for label in NECKS:
        cfg = load_config(f"synth_seg_r18_{label}", TINY + [("data.root", str(tmp / "synth"))])
        record = train(cfg, tmp / label, progress=False, save=False)
        record["profile"] = profile_model(cfg, size=(64, 64), runs=1, warmup=0)
        runs[label] = record
    return runs


def _cell_record(run: dict, dataset: str, label: str, seed: int) -> dict:
    record = copy.deepcopy(run)
    record["config"]["data"]["test"] = record["dataset"]["name"] = TEST_SPLIT[dataset]
    record["config"]["seed"] = seed
    seg = record["metrics"]["segmentation"]
    names = list(seg["per_class_iou"])
    seg.update(mIoU=MIOU[dataset][label][seed], pixel_acc=90.0 + seed, mean_acc=50.0 + 2 * seed,
               per_class_iou={name: _class_iou(k, seed, label) for k, name in enumerate(names)})
    record["cell"] = {"experiment": "seg", "run_id": f"{dataset}-{label}-s{seed}",
                      "axes": {"dataset": dataset, "neck": label, "seed": seed}, "matrix": "experiments/seg.yaml"}
    return record


@pytest.fixture(scope="module")
def seg_matrix(seg_runs) -> dict:
    """Two datasets x base / fpt / lgt with 2-3 seeds of known scores; the cells add synth lgt
    seed 2 (failed) with its config, as the CLI passes it."""
    records = [_cell_record(seg_runs[label], dataset, label, seed)
               for dataset, by_neck in MIOU.items() for label, seeds in by_neck.items() for seed in range(len(seeds))]
    cells = [{"run_id": r["cell"]["run_id"], "axes": dict(r["cell"]["axes"]), "state": "done", "config": r["config"]}
             for r in records]
    failed = copy.deepcopy(records[-1])
    cells.append({"run_id": "synth-lgt-s2", "axes": {"dataset": "synth", "neck": "lgt", "seed": 2},
                  "state": "failed", "error": "RuntimeError: NaN loss", "config": failed["config"]})
    return {"records": records, "cells": cells}


def _tables(records, cells=None, reference=None):
    ref = load_reference() if reference is None else reference
    return {t.name: t for t in build_segmentation_tables(collect_rows(records, cells), ref)}


def _at(table, neck):
    (i,) = table.display.index[table.display["neck"] == neck]
    return i


def test_tables_per_dataset_and_rows_named_from_the_config(seg_matrix):
    tables = _tables(seg_matrix["records"], seg_matrix["cells"])
    assert list(tables) == ["miou_cityscapes", "per_class_iou_cityscapes", "miou_synth_seg", "per_class_iou_synth_seg",
                            "complexity"]
    t = tables["miou_cityscapes"]
    assert list(t.display["neck"]) == ["baseline", "+FPT (GT)", "+FPT (LGT)"]
    # no paper column: the shipped gains are of test splits and of a head and schedule not confirmed
    assert list(t.display.columns) == ["neck", "n", "mIoU", "pixel acc", "mean acc", "Params (M)", "GFLOPs",
                                       "latency (ms)", "Δ mIoU", "p Δ mIoU"]
    assert "paper Δ mIoU" not in tables["miou_synth_seg"].display.columns
    assert list(tables["miou_synth_seg"].display["n"]) == ["3", "3", "2"]
    # the neck comes from the config (gt.window), not from the axis label
    records = copy.deepcopy(seg_matrix["records"])
    for r in records:
        r["cell"]["axes"]["neck"] = {"base": "a", "fpt": "b", "lgt": "c"}[r["cell"]["axes"]["neck"]]
    assert list(_tables(records)["miou_synth_seg"].display["neck"]) == ["baseline", "+FPT (GT)", "+FPT (LGT)"]


@pytest.mark.parametrize("dataset", list(MIOU))
def test_mean_std_n_delta_and_welch_p_against_the_baseline(seg_matrix, dataset):
    t = _tables(seg_matrix["records"], seg_matrix["cells"])[f"miou_{DATASET_KEY[dataset]}"]
    base = MIOU[dataset]["base"]
    marks = {}
    for label, neck in NECKS.items():
        xs, i = MIOU[dataset][label], _at(t, neck)
        assert t.data.loc[i, "seg.mIoU"] == pytest.approx(_mean(xs))
        assert t.data.loc[i, "seg.mIoU_std"] == pytest.approx(_std(xs))
        assert t.data.loc[i, "seg.mIoU_n"] == len(xs) and t.display.loc[i, "n"] == str(len(xs))
        assert t.display.loc[i, "mIoU"] == f"{_mean(xs):.1f} ± {_std(xs):.1f}"
        pixel = [90.0 + s for s in range(len(xs))]
        assert t.display.loc[i, "pixel acc"] == f"{_mean(pixel):.1f} ± {_std(pixel):.1f}"
        if label == "base":
            assert t.display.loc[i, "Δ mIoU"] == "ref" and t.display.loc[i, "p Δ mIoU"] == "ref"
            continue
        p = _welch(xs, base)
        assert t.data.loc[i, "delta_seg.mIoU"] == pytest.approx(_mean(xs) - _mean(base))
        assert t.data.loc[i, "p_delta_seg.mIoU"] == pytest.approx(p, rel=1e-9)
        assert t.display.loc[i, "p Δ mIoU"] == ("<0.001" if p < 0.001 else f"{p:.3g}")
        delta = t.display.loc[i, "Δ mIoU"]
        assert delta.rstrip("*") == f"{_mean(xs) - _mean(base):+.1f}"
        marks[label] = delta.endswith("*")
        assert marks[label] == (p < 0.05)
    if dataset == "cityscapes":
        assert marks == {"fpt": False, "lgt": True}     # the data were chosen so: one of each
        assert t.display.loc[_at(t, "+FPT (LGT)"), "mIoU"] == "43.1 ± 0.3"   # pinned: 43.0, 43.4, 42.9
    (note,) = [n for n in t.notes if n.startswith("p: ")]
    sizes = sorted({(len(MIOU[dataset][k]), len(base)) for k in ("fpt", "lgt")}, reverse=True)
    assert "the baseline row" in note and "n per group (row vs compared row): " + "; ".join(f"{a} vs {b}" for a, b in sizes) in note


def _gain_file(tmp_path, entries: str):
    path = tmp_path / "ref.yaml"
    path.write_text(f"reference_version: 2\nsource: {{citation: 'Test.'}}\nsegmentation_gains: {{entries: [{entries}]}}\n")
    return path


# The setting of the cityscapes +FPT (LGT) rows of :func:`_as_run`: resnet18 trunk, DeepLab head,
# 80k iterations given at batch 8.
LGT_GAIN = ("{table: segmentation, backbone: resnet18, head: deeplab, neck: '+FPT (LGT)', split: cityscapes_val, "
            "schedule: 80k@8, values: {seg.mIoU: 1.6}, where: 'Table 7'}")


def _as_run(records, max_iter=80000, reference_batch=8):
    """The records as runs of ``max_iter`` iterations given at ``reference_batch``, on one process
    of 2 crops (the tiny runs' own schedule is a few iterations): the trainer's batch plan says so
    (and the config's train section, which the plan outranks)."""
    out = copy.deepcopy(records)
    for r in out:
        r["config"]["train"].update(max_iter=max_iter, reference_batch=reference_batch, images_per_device=2,
                                    accumulate=1)
        r["training"].update(world_size=1, batch={"reference": reference_batch, "batch": 2,
                                                  "given": {"max_iter": max_iter}})
    return out


def test_the_paper_gain_only_beside_the_row_of_its_setting(seg_matrix, tmp_path):
    # The shipped gains (+1.6 mIoU on Cityscapes test ...) are of test splits and of a head and
    # schedule not confirmed: they once stood beside every dataset's LGT row, val splits and
    # synthetic runs alike; now beside none, and the dataset's own table says the gain exists.
    tables = _tables(seg_matrix["records"], seg_matrix["cells"])
    for name in ("miou_cityscapes", "miou_synth_seg"):
        assert not [c for c in tables[name].display.columns if c.startswith("paper")], name
    (note,) = [n for n in tables["miou_cityscapes"].notes if n.startswith("paper Δ mIoU: the paper states")]
    assert note == ("paper Δ mIoU: the paper states +1.6 mIoU points for table segmentation, backbone resnet101, "
                    "neck +FPT (LGT), split cityscapes_test; its head and schedule are not confirmed here, so the gain "
                    "is set beside no run.")
    assert not any("the paper states" in n for n in tables["miou_synth_seg"].notes)   # not of that dataset
    # a file whose gain is of the cityscapes LGT rows' own setting: beside that row only, footnoted
    records = _as_run(seg_matrix["records"])
    tables = _tables(records, seg_matrix["cells"], load_reference(_gain_file(tmp_path, LGT_GAIN)))
    t = tables["miou_cityscapes"]
    assert list(t.display["paper Δ mIoU"]) == ["", "", "1.6"]
    assert list(t.data["paper_gain_seg.mIoU"])[2] == 1.6 and pd.isna(list(t.data["paper_gain_seg.mIoU"])[:2]).all()
    (mark,) = t.marks[(2, "paper Δ mIoU")]
    assert t.footnotes[mark - 1] == ("the gain the paper states for table segmentation, backbone resnet18, head "
                                     "deeplab, neck +FPT (LGT), split cityscapes_val, schedule 80k@8 (Table 7), in "
                                     "mIoU points (its FPT over its own baseline).")
    assert "paper Δ mIoU: the gain the paper states. Shown only beside the row whose records are the paper's " \
           "setting (footnote); compare it with Δ mIoU, not with mIoU." in t.notes
    assert not any(c.startswith("paper ") and "Δ" not in c for c in t.display.columns)  # absolutes: all unknown
    assert "paper Δ mIoU" not in tables["miou_synth_seg"].display.columns
    # each field of the row's setting counts: another split, schedule, head, trunk or neck is another row's
    for old, new in (("cityscapes_val", "cityscapes_test"), ("80k@8", "80k@16"), ("deeplab", "fcn"),
                     ("resnet18", "resnet101"), ("'+FPT (LGT)'", "'+FPT (GT)'"), ("table: segmentation", "table: null")):
        ref = load_reference(_gain_file(tmp_path, LGT_GAIN.replace(old, new)))
        t = _tables(records, seg_matrix["cells"], ref)["miou_cityscapes"]
        shown = list(t.display["paper Δ mIoU"]) if "paper Δ mIoU" in t.display.columns else []
        assert shown == (["", "1.6", ""] if new == "'+FPT (GT)'" else []), new
    # the same runs read as a reference-batch-0 recipe (max_iter as given) at their own batch: another schedule
    as_given = _as_run(seg_matrix["records"], reference_batch=0)
    t = _tables(as_given, seg_matrix["cells"], load_reference(_gain_file(tmp_path, LGT_GAIN)))["miou_cityscapes"]
    assert "paper Δ mIoU" not in t.display.columns


def test_per_class_iou_table(seg_matrix, seg_runs):
    tables = _tables(seg_matrix["records"], seg_matrix["cells"])
    t = tables["per_class_iou_cityscapes"]
    names = list(seg_runs["base"]["metrics"]["segmentation"]["per_class_iou"])
    assert list(t.display["class"]) == names and len(names) == 8
    assert list(t.display.columns) == ["class", "baseline", "+FPT (GT)", "+FPT (LGT)"]
    for label, neck in NECKS.items():
        seeds = range(len(MIOU["cityscapes"][label]))
        for k, name in enumerate(names):
            xs = [v for v in (_class_iou(k, s, label) for s in seeds) if v is not None]
            cell = t.display.loc[k, neck]
            if not xs:
                assert cell == "n/a" and t.data.loc[k, f"{neck}_n"] == 0
                continue
            assert t.data.loc[k, neck] == pytest.approx(_mean(xs))
            assert t.data.loc[k, f"{neck}_n"] == len(xs)
            text = f"{_mean(xs):.1f}" if len(xs) == 1 else f"{_mean(xs):.1f} ± {_std(xs):.1f}"
            assert cell == text
            footnoted = (k, neck) in t.marks
            assert footnoted == (len(xs) < len(seeds))    # class 3: null in seed 0
    assert t.display.loc[3, "+FPT (GT)"] == "31.8"          # seeds 0, 1: only seed 1 scores class 3
    (mark,) = t.marks[(3, "+FPT (GT)")]
    assert t.footnotes[mark - 1].startswith("+FPT (GT): scored in 1 of its 2 seeds")
    synth = tables["per_class_iou_synth_seg"]
    assert any(n == "+FPT (LGT): 2 of 3 seeds (run synth-lgt-s2: failed (RuntimeError: NaN loss))." for n in synth.notes)


def test_failed_and_missing_cells_are_dashes_with_footnotes(seg_matrix):
    cells = [c for c in seg_matrix["cells"] if not c["run_id"].startswith("synth-base")]
    cells.append({"run_id": "synth-base-s0", "axes": {"dataset": "synth", "neck": "base", "seed": 0}, "state": "pending"})
    records = [r for r in seg_matrix["records"] if not r["cell"]["run_id"].startswith("synth-base")]
    tables = _tables(records, cells)
    t = tables["miou_synth_seg"]
    i = _at(t, "baseline")                                   # no record, no config: named from its neck axis
    assert t.display.loc[i, "mIoU"] == "–" and t.display.loc[i, "n"] == "0"
    assert "synth-base-s0: pending" in t.footnotes[t.marks[(i, "neck")][0] - 1]
    assert list(t.display["Δ mIoU"]) == ["–", "n/a", "n/a"]
    j = _at(t, "+FPT (LGT)")
    assert t.footnotes[t.marks[(j, "neck")][0] - 1] == "2 of 3 seeds: run synth-lgt-s2: failed (RuntimeError: NaN loss)"
    assert list(tables["per_class_iou_synth_seg"].display["baseline"]) == ["–"] * 8


def test_report_files_figures_and_formats(seg_matrix, tmp_path):
    # a reference whose gain is of the cityscapes LGT rows' setting, so that the files carry one
    result = build_report(_as_run(seg_matrix["records"]), experiment="seg", out_dir=tmp_path / "r",
                          cells=seg_matrix["cells"], reference=_gain_file(tmp_path, LGT_GAIN))
    out = tmp_path / "r"
    names = sorted(p.relative_to(out).as_posix() for p in result["files"])
    tables = ("miou_cityscapes", "per_class_iou_cityscapes", "miou_synth_seg", "per_class_iou_synth_seg", "complexity")
    assert names == sorted(["index.md", *(f"tables/{t}.{s}" for t in tables for s in ("md", "csv", "tex")),
                            *(f"figures/miou_vs_{x}.{s}" for x in ("gflops", "latency") for s in ("png", "pdf"))])
    csv = pd.read_csv(out / "tables" / "miou_cityscapes.csv").set_index("neck")
    lgt, base = MIOU["cityscapes"]["lgt"], MIOU["cityscapes"]["base"]
    assert csv.loc["+FPT (LGT)", "seg.mIoU"] == pytest.approx(_mean(lgt))
    assert csv.loc["+FPT (LGT)", "p_delta_seg.mIoU"] == pytest.approx(_welch(lgt, base), rel=1e-6)
    assert csv.loc["+FPT (LGT)", "paper_gain_seg.mIoU"] == 1.6 and pd.isna(csv.loc["+FPT (GT)", "paper_gain_seg.mIoU"])
    per_class = pd.read_csv(out / "tables" / "per_class_iou_cityscapes.csv")
    assert list(per_class.columns[:4]) == ["class", "baseline", "baseline_std", "baseline_n"]
    markdown = (out / "tables" / "miou_cityscapes.md").read_text()
    (line,) = [l for l in markdown.splitlines() if l.startswith("| +FPT (LGT) |")]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:3] == ["+FPT (LGT)", "3", "43.1 ± 0.3"] and "+2.6*" in cells and "1.6¹" in cells
    assert "¹ the gain the paper states for table segmentation, backbone resnet18, head deeplab" in markdown
    for note in ("- mIoU: mean over classes of the IoU", "- Δ mIoU: difference of the mean mIoU from the baseline row",
                 "- p: two-sided Welch's t-test", "- Params (M): the whole model"):
        assert note in markdown, note
    latex = (out / "tables" / "miou_cityscapes.tex").read_text()
    assert r"43.1 $\pm$ 0.3" in latex and r"$\Delta$ mIoU" in latex and "±" not in latex and "Δ" not in latex
    cx = pd.read_csv(out / "tables" / "complexity.csv")
    rec = seg_matrix["records"][0]["profile"]
    neck = (rec["by_part"]["pyramid"]["flops"] + rec["by_part"]["fpt"]["flops"]) / 1e9
    assert cx.loc[0, "neck_gflops"] == pytest.approx(neck) and cx.loc[0, "neck"] == "baseline"
    index = result["index"].read_text()
    assert "![mIoU vs GFLOPs](figures/miou_vs_gflops.png)" in index and "| +FPT (LGT) | 3 |" in index


def test_miou_scatter_has_a_panel_per_dataset_with_std_error_bars(seg_matrix):
    rows = collect_rows(seg_matrix["records"], seg_matrix["cells"]).rows
    fig = draw_scatter(rows, "gflops", "GFLOPs", title="t")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["cityscapes: mIoU vs GFLOPs", "synth_seg: mIoU vs GFLOPs"]
    for ax, dataset in zip(axes, MIOU):
        want = sorted((_mean(xs) - _std(xs), _mean(xs) + _std(xs)) for xs in MIOU[dataset].values())
        assert sorted((low, high) for _, low, high in error_segments(ax)) == [pytest.approx(w) for w in want]
        assert ax.get_ylabel() == "mIoU (%)"
        assert sorted(t.get_text() for t in ax.texts) == sorted(NECKS.values())


def test_a_matrix_of_detection_and_segmentation_cells_is_refused(seg_matrix, tiny_runs):
    from .conftest import with_cell

    detection = with_cell(tiny_runs["bfp-s0"], "det-s0", {"dataset": "coco", "neck": "base", "seed": 0})
    with pytest.raises(UsageError, match="mix detection and segmentation"):
        collect_rows(seg_matrix["records"] + [detection])


# sha256 of the detection report of tests/report/fixed_records.py with the shipped paper_reference.yaml:
# a change here means that a detection report changed. Check that it was meant (the assertion prints
# the table), then re-pin. First pinned from the report code before segmentation (commit 8005bcc);
# re-pinned when the paper's values were keyed by their setting (table, backbone, head, neck,
# split, schedule): the ablation loses its "paper Δ box/mask AP (%)" columns (the +8.5 / +6.0 that
# stood in the FPT row of these val-split runs with no schedule), and the notes say that the gain
# exists but its setting is not confirmed; every other byte as before (diffed against the report
# of the code at 6a02240; complexity.csv is unchanged).
DETECTION_REPORT = {
    "index.md": "aa64e8376f23777b73efaf01bfd47d091fffb0d5fc331a357e38cba25edbda23",
    "tables/ablation.csv": "c67ff76763734f1f9d5d129be9a9816044c7e68a87cda7c7b2004371a2272ded",
    "tables/ablation.md": "d8b4e6539c4c0725f8322fd3e9447c7243a3572d15b6fa154bcb50f0ac65377c",
    "tables/ablation.tex": "fea36380af45a051fcd9dc9adcc9a389f2fd94f49475c3f97e977b7e3b0a7890",
    "tables/complexity.csv": "35044e53f9b8e4bf18cb5fd09b7e40d906f097a7e466beb960e89697a79769e6",
    "tables/complexity.md": "19c9fada1e0a31b839790a02d0b29398ac04df9627ac32c3fd675345a5121256",
    "tables/complexity.tex": "cf48ecf8b41703cb7c2f3799dd2adb7f8b3e2e5c43dd178bf21f7c8c6ea19374",
}


def test_a_detection_report_is_unchanged(tmp_path):
    data = fixed_records.ablation()
    result = build_report(data["records"], experiment="fixed", out_dir=tmp_path / "fixed", cells=data["cells"])
    out = tmp_path / "fixed"
    written = {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in result["files"] if p.suffix in (".md", ".csv", ".tex")}
    assert written == DETECTION_REPORT, result["tables"]["ablation"]
    assert sorted(p.name for p in result["figures"]) == sorted(
        f"{f}.{s}" for f in ("ap_vs_gflops", "ap_vs_latency", "ablation_bars") for s in ("png", "pdf"))
    assert not re.search(r"mIoU|per_class", result["index"].read_text())

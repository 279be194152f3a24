"""Paper-style reports from run records: tables (Markdown, CSV, LaTeX), figures, ``index.md``.

    build_report(records, experiment="demo", out_dir="reports/demo", cells=cells)

- :mod:`.rows`: records and expected cells -> one row per non-seed axes combination (seeds pooled),
  named by the config (neck BFP/+ST/.../FPT, backbone, head).
- :mod:`.tables`: the ablation, backbone x head, design and complexity tables (pandas).
- :mod:`.segmentation`: a segmentation matrix's mIoU and per-class IoU tables, per dataset.
- :mod:`.significance`: Welch's t-test of a delta over the two rows' seeds (p, the table note).
- :mod:`.render`: a table as Markdown, LaTeX or CSV.
- :mod:`.figures`: AP (mIoU) vs GFLOPs / latency, grouped ablation bars (seaborn, Agg canvas).
- :mod:`.reference`: the paper's values (``results/paper_reference.yaml``), null = unknown.
- :mod:`.build`: :func:`build_report`, which writes all of it.

The report reads only records, cells and the reference file: nothing here imports the engine,
the launcher or the model.
"""

from fptbench.report.build import FORMATS, build_report
from fptbench.report.reference import Reference, load_reference

__all__ = ["FORMATS", "build_report", "Reference", "load_reference"]

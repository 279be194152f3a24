"""``build_report``: run records -> tables (Markdown, CSV, LaTeX), figures (PNG, PDF), ``index.md``.

Layout of ``out_dir`` (``reports/<experiment>/`` from the CLI)::

    index.md                  the tables embedded, the figures shown, links to every file
    tables/<name>.md|csv|tex  ablation, backbone_head, design, complexity (those that apply);
                              segmentation: miou_<dataset>, per_class_iou_<dataset>, complexity
    figures/<name>.png|pdf    ap_vs_gflops, ap_vs_latency, ablation_bars, design_bars;
                              segmentation: miou_vs_gflops, miou_vs_latency

Every file is written atomically, and the whole report too: it is built in a temporary folder
beside ``out_dir`` (``.<name>.building-<pid>``) that then takes ``out_dir``'s place in one rename
(an exchange where the kernel offers it), so a killed report never leaves new tables beside old
figures or a stale index.md; the next report removes a killed one's temporary folder. The report
reads only the records, the expected cells and the reference file; it never looks into run folders.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

from fptbench.errors import UsageError
from fptbench.fileio import atomic_write
from fptbench.report.figures import ERROR_BARS, bars_figure, scatter_figure
from fptbench.report.reference import load_reference
from fptbench.report.render import to_csv, to_latex, to_markdown
from fptbench.report.rows import Layout, collect_rows, values
from fptbench.report.segmentation import build_segmentation_tables
from fptbench.report.tables import Table, build_tables

__all__ = ["build_report", "FORMATS"]

FORMATS = ("md", "csv", "latex")
_SUFFIX = {"md": ".md", "csv": ".csv", "latex": ".tex"}


def _write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _check_formats(formats: Sequence[str]) -> list[str]:
    if isinstance(formats, str):
        formats = [f for f in formats.split(",") if f.strip()]
    out = []
    for f in formats:
        f = str(f).strip().lower()
        if f not in FORMATS:
            raise UsageError(f"--format: expected a comma-separated subset of {','.join(FORMATS)}, got {f!r}")
        if f not in out:
            out.append(f)
    if not out:
        raise UsageError(f"--format: expected at least one of {','.join(FORMATS)}")
    return out


def _figures(layout: Layout, tables: list[Table], out: Path) -> tuple[list[tuple[str, list[Path], str]], list[Path]]:
    """Draw the figures; returns (title, files, caption) per figure, and all files."""
    drawn: list[tuple[str, list[Path], str]] = []
    rows = [r for t in tables if t.name == "complexity" for r in t.rows] or layout.rows
    metric, name = ("seg.mIoU", "mIoU") if layout.task == "segmentation" else ("bbox.AP", "AP")
    for column, word, stem in (("gflops", "GFLOPs", f"{name.lower()}_vs_gflops"),
                               ("latency_ms", "latency (ms)", f"{name.lower()}_vs_latency")):
        title = f"{name} vs {word}"
        files = scatter_figure(rows, column, word, out / stem, title=title)
        left = [r.label for r in rows if not (values(r, column) and values(r, metric))]
        caption = (f"One point per row (mean over seeds); error bars: {ERROR_BARS}. GFLOPs = 2 × GMACs."
                   + (f" Not drawn (no complete record or no value): {', '.join(left)}." if left else ""))
        drawn.append((title, files, caption))
    for table in tables:
        if table.name in ("ablation", "design"):
            files = bars_figure(table.rows, out / f"{table.name}_bars", title=table.title)
            left = [r.label for r in table.rows if r.n == 0]
            caption = (f"Bars: mean over seeds; whiskers: {ERROR_BARS}."
                       + (f" Not drawn (no complete record): {', '.join(left)}." if left else ""))
            drawn.append((f"{table.title} (bars)", files, caption))
    return drawn, [p for _, files, _ in drawn for p in files]


def _index(experiment: str, layout: Layout, tables: list[Table], table_files: dict[str, list[Path]],
           figures: list[tuple[str, list[Path], str]], out: Path, reference) -> str:
    def rel(p: Path) -> str:
        return p.relative_to(out).as_posix()

    n_records = sum(r.n for r in layout.rows)
    n_cells = n_records + sum(len(r.incomplete) for r in layout.rows)
    lines = [f"# Report: {experiment}", "",
             f"Built by `fptbench report` from {n_records} complete run record(s) of {n_cells} expected cell(s), "
             f"{len(layout.rows)} row(s) (seeds pooled). Only the records are read.", ""]
    if reference.path is not None:
        lines += [f"Paper values: {reference.source_line()}, from `{reference.path.name}`; "
                  "shown only where we could confirm them, every other cell left empty.", ""]
    lines += ["## Tables", ""]
    for table in tables:
        lines.append(to_markdown(table, heading="###"))
        links = [f"[{p.suffix.lstrip('.')}]({rel(p)})" for p in table_files.get(table.name, [])]
        if links:
            lines += ["Files: " + " · ".join(links), ""]
    lines += ["## Figures", ""]
    for title, files, caption in figures:
        lines += [f"### {title}", ""]
        png = [p for p in files if p.suffix == ".png"]
        if png:
            lines += [f"![{title}]({rel(png[0])})", "", caption, "",
                      "Files: " + " · ".join(f"[{p.suffix.lstrip('.')}]({rel(p)})" for p in files), ""]
        else:
            lines += ["Not drawn: no row has a value to plot. " + caption, ""]
    if layout.left_out:
        lines += ["## Left out", "", "Records that are not cells of the current matrix (an earlier "
                  "version of it): " + ", ".join(layout.left_out) + ".", ""]
    return "\n".join(lines).rstrip() + "\n"


_BUILDING = ".building-"
_RENAME_EXCHANGE = 2  # renameat2(2) flag: swap two paths atomically (Linux 3.15+)


def _exchange(a: Path, b: Path) -> bool:
    """Swap folders ``a`` and ``b`` in one step (renameat2 RENAME_EXCHANGE); False where the
    kernel or libc cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    if ctypes.get_errno() in (errno.EINVAL, errno.ENOSYS, errno.EPERM):
        return False
    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(a))


def _pid_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(out: Path) -> None:
    """Remove the temporary folders of reports into ``out`` that were killed (their pid is gone)."""
    if not out.parent.is_dir():
        return
    for tmp in out.parent.glob(f".{out.name}{_BUILDING}*"):
        if not _pid_alive(tmp.name.rsplit("-", 1)[-1]):
            shutil.rmtree(tmp, ignore_errors=True)


def _check_target(out: Path) -> None:
    """``out_dir`` is replaced as a whole: refuse a file, and a folder that is not a report."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder; the report is a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "index.md").is_file():
        raise UsageError(f"{out}: a folder that is not a report (no index.md); the report replaces its folder "
                         f"as a whole: choose an empty or new one")


def _put_in_place(tmp: Path, out: Path) -> None:
    """Make the built folder ``tmp`` the report ``out``: one exchange (or, without one, two
    renames: a kill between them leaves no ``out``, and the next report builds it again)."""
    if out.is_dir():
        if not _exchange(tmp, out):
            old = out.parent / f".{out.name}{_BUILDING}old-{os.getpid()}"
            os.rename(out, old)
            os.rename(tmp, out)
            tmp = old
        shutil.rmtree(tmp, ignore_errors=True)  # the old report, now at the temporary path
    else:
        os.rename(tmp, out)


def build_report(records: list[dict], *, experiment: str, out_dir: str | Path,
                 cells: list[dict] | None = None, formats: Sequence[str] = FORMATS,
                 reference: str | Path | None = None,
                 compare_to: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write the report of one experiment into ``out_dir``.

    Args:
        records: complete run records (with ``cell``, ``profile``).
        experiment: its name (titles only).
        out_dir: folder to write (created).
        cells: every cell the matrix expects, ``{"run_id", "axes", "state"}`` (optional
            ``config`` and ``error``); cells without a record become dash rows with a footnote;
            records whose run id is not among them are left out and listed in index.md.
            ``None``: the records are the whole matrix.
        formats: which table files to write, a subset of ``md``, ``csv``, ``latex``
            (index.md embeds the tables in any case).
        reference: the paper-values file (default ``<repo>/results/paper_reference.yaml``).
        compare_to: the matrix's ``reference`` setting, axis -> label or value (e.g.
            ``{"variant": "paper"}``): the design table adds each row's Δ against that row.

    Returns:
        ``{"index": Path, "tables": {name: markdown str}, "figures": [Path], "files": [Path]}``;
        ``files`` = every file written (tables, figures, index.md).

    Raises:
        UsageError: a bad format, record, cell or reference file (one line).
    """
    formats = _check_formats(formats)
    if not isinstance(records, Sequence) or isinstance(records, (str, bytes, Mapping)):
        raise UsageError("records: expected a list of run records")
    ref = load_reference(reference)
    layout = collect_rows(list(records), None if cells is None else list(cells), compare_to)
    if not layout.rows:
        raise UsageError(f"{experiment}: no records and no cells to report")
    tables = (build_segmentation_tables if layout.task == "segmentation" else build_tables)(layout, ref)
    final = Path(out_dir)
    _check_target(final)
    _remove_stale(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    out = final.parent / f".{final.name}{_BUILDING}{os.getpid()}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    try:
        result = _build(experiment, layout, tables, ref, formats, out)
        _put_in_place(out, final)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise

    def moved(p: Path) -> Path:
        return final / p.relative_to(out)

    return {"index": moved(result["index"]), "tables": result["tables"],
            "figures": [moved(p) for p in result["figures"]], "files": [moved(p) for p in result["files"]]}


def _build(experiment: str, layout: Layout, tables: list[Table], ref, formats: list[str], out: Path) -> dict[str, Any]:
    files: list[Path] = []
    table_files: dict[str, list[Path]] = {}
    markdown: dict[str, str] = {}
    for table in tables:
        markdown[table.name] = to_markdown(table, heading="#")
        written = []
        for fmt in formats:
            path = out / "tables" / f"{table.name}{_SUFFIX[fmt]}"
            text = {"md": lambda: markdown[table.name], "csv": lambda: to_csv(table),
                    "latex": lambda: to_latex(table, label=f"tab:{experiment}-{table.name}")}[fmt]()
            written.append(_write_text(path, text))
        table_files[table.name] = written
        files += written
    figures, figure_files = _figures(layout, tables, out / "figures")
    index = _write_text(out / "index.md", _index(experiment, layout, tables, table_files, figures, out, ref))
    return {"index": index, "tables": markdown, "figures": figure_files, "files": files + figure_files + [index]}

"""A :class:`~fptbench.report.tables.Table` as Markdown, LaTeX (pandas Styler, booktabs) or CSV.

Markdown and LaTeX show the display strings with footnote marks (superscript numbers) and the
notes under the table; CSV holds the numbers (means, stds, deltas, paper values) with the
footnotes as text in a ``footnotes`` column, so ``pandas.read_csv`` gets every value back.
"""

from __future__ import annotations

import re

from fptbench.report.significance import MARK
from fptbench.report.tables import Table

__all__ = ["to_markdown", "to_latex", "to_csv"]

_SUPERSCRIPT = str.maketrans("0123456789,", "⁰¹²³⁴⁵⁶⁷⁸⁹˒")


def _marks(table: Table, i: int, column: str) -> list[int]:
    return table.marks.get((i, column), [])


def to_markdown(table: Table, *, heading: str | None = "###") -> str:
    """A pipe table with the title as a heading, marks as ``¹`` and the notes below."""
    columns = list(table.display.columns)

    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    numeric = [not _is_text_column(table, c) for c in columns]
    lines = [f"{heading} {table.title}", ""] if heading else []
    lines.append("| " + " | ".join(cell(c) for c in columns) + " |")
    lines.append("|" + "|".join("---:" if num else "---" for num in numeric) + "|")
    for i in range(len(table.display)):
        out = []
        for c in columns:
            text = cell(table.display.iloc[i][c])
            marks = _marks(table, i, c)
            if marks:
                text += ",".join(map(str, marks)).translate(_SUPERSCRIPT)
            out.append(text)
        lines.append("| " + " | ".join(out) + " |")
    lines.append("")
    for n, text in enumerate(table.footnotes, 1):
        lines.append(f"{str(n).translate(_SUPERSCRIPT)} {text}  ")
    if table.footnotes:
        lines.append("")
    for text in table.notes:
        lines.append(f"- {text}")
    return "\n".join(lines).rstrip() + "\n"


def _is_text_column(table: Table, column: str) -> bool:
    """Descriptor columns (neck, axes, input, device) are left-aligned; numbers right-aligned."""
    values = [str(v) for v in table.display[column]]
    number = r"[-+–<]?[\d.]+" + f"({re.escape(MARK)})?" + r"( ± [\d.]+)?|–|n/a|ref|"  # a Δ may carry the mark
    return not all(re.fullmatch(number, v) for v in values)


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "Δ": r"$\Delta$", "×": r"$\times$", "·": r"$\cdot$", "–": "--", "…": r"\dots{}",
                  "≤": r"$\leq$", "≥": r"$\geq$", "<": r"$<$", ">": r"$>$", "α": r"$\alpha$"}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters and map the few non-ASCII ones the tables use."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def to_latex(table: Table, *, label: str | None = None) -> str:
    """A ``table`` float: booktabs ``tabular`` (pandas Styler), caption, footnotes and notes.

    Needs ``\\usepackage{booktabs,graphicx}`` (the tabular is scaled to the line width).
    """
    df = table.display.copy()
    for i in range(len(df)):
        for c in df.columns:
            text = latex_escape(df.iloc[i][c])
            marks = _marks(table, i, c)
            if marks:
                text += r"\textsuperscript{" + ",".join(map(str, marks)) + "}"
            df.iloc[i, df.columns.get_loc(c)] = text
    df.columns = [latex_escape(c) for c in df.columns]
    align = "".join("l" if _is_text_column(table, c) else "r" for c in table.display.columns)
    tabular = df.style.hide(axis="index").to_latex(column_format=align, hrules=True)
    lines = [f"% fptbench report: {table.name} (needs \\usepackage{{booktabs,graphicx}})",
             r"\begin{table}[t]", r"\centering", r"\scriptsize",
             rf"\caption{{{latex_escape(table.title)}}}"]
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [r"\resizebox{\linewidth}{!}{%", tabular.rstrip(), "}"]
    notes = [rf"\textsuperscript{{{n}}}~{latex_escape(t)}" for n, t in enumerate(table.footnotes, 1)]
    notes += [latex_escape(t) for t in table.notes]
    if notes:
        lines += [r"\par\smallskip", r"\begin{minipage}{\linewidth}\raggedright"]
        lines += [n + r"\\" for n in notes]
        lines.append(r"\end{minipage}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """The numbers (``Table.data``) as CSV text, one line per row."""
    return table.data.to_csv(index=False, float_format="%.10g")

"""Is a delta between two report rows more than seed noise? Welch's t-test over their seeds.

    welch_p([31.0, 32.0, 31.5], [30.0, 30.4])  # two-sided p, or None where no test applies

The report marks a delta with :data:`MARK` where ``p < ALPHA`` and says so in a note under the
table (:func:`note`). No correction for testing many deltas at once [ours: the report states it].
"""

from __future__ import annotations

import math
import warnings
from typing import Iterable, Sequence

from scipy import stats as scipy_stats

from fptbench.report.rows import stats

__all__ = ["ALPHA", "MARK", "welch_p", "fmt_p", "note"]

ALPHA = 0.05
"""Level at which a delta is marked as distinguishable from seed noise."""
MARK = "*"
"""Appended to a delta whose p is below :data:`ALPHA`."""


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's t-test (unequal variances) of ``a`` against ``b``.

    Args:
        a, b: one value per seed (e.g. box AP of each seed of two rows).

    Returns:
        p in [0, 1]; ``None`` (no test) where either group has fewer than 2 values, or neither
        spreads at all (the t statistic is 0/0 or x/0: no seed noise to compare with).
    """
    if len(a) < 2 or len(b) < 2:
        return None
    if stats(a)[1] == 0 and stats(b)[1] == 0:
        return None
    with warnings.catch_warnings():
        # identical seeds in one group trip scipy's precision-loss warning; their variance 0 is exact
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(scipy_stats.ttest_ind(list(a), list(b), equal_var=False).pvalue)
    return p if math.isfinite(p) else None


def fmt_p(p: float) -> str:
    """A p-value as the tables print it: 3 significant digits, ``<0.001`` below that."""
    return "<0.001" if p < 0.001 else f"{p:.3g}"


def note(sizes: Iterable[tuple[int, int]], against: str) -> str:
    """The note under a table with p columns: the test, the level, n per group, its power.

    Args:
        sizes: ``(n of the row, n of the row compared with)`` for every delta shown.
        against: what the rows are compared with, in words (``the BFP row``).
    """
    pairs = sorted(set(sizes), reverse=True)
    groups = "; ".join(f"{n} vs {m}" for n, m in pairs) or "none"
    return (f"p: two-sided Welch's t-test (unequal variances, scipy.stats.ttest_ind with equal_var=False) of "
            f"the row's per-seed values against those of {against}; {MARK} after a Δ: p < {ALPHA} "
            f"(α = {ALPHA}, each Δ tested on its own, no correction for multiple comparisons). "
            f"n per group (row vs compared row): {groups}. n/a: no test, fewer than 2 seeds in either "
            f"group or no spread in both. With n = 2 per group the test has 1 to 2 degrees of freedom "
            f"and little power: an unmarked Δ is not evidence that there is no effect.")

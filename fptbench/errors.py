"""Errors the user can act on. Each carries a one-line message naming the file, key or value."""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(Exception):
    """Bad input (a file, argument or value): the CLI prints ``fptbench: error: MESSAGE`` and exits 2.

    The one root of the harness's usage errors: :class:`fptbench.config.ConfigError`,
    :class:`fptbench.experiments.MatrixError` and :class:`fptbench.yamlio.YAMLFileError` derive
    from it.
    """

"""Experiment matrices: a YAML file of axes over a base config -> the cells of a sweep.

``load_matrix("demo")`` reads ``experiments/demo.yaml`` and returns a :class:`Matrix` whose
``cells`` each carry a run id, their axis labels, the overrides applied and the resolved,
checked config. The launcher (``fptbench.launch``) runs the cells; nothing here imports it.
"""

from fptbench.experiments.matrix import Cell, Matrix, MatrixError, find_matrix, load_matrix, value_label

__all__ = ["Cell", "Matrix", "MatrixError", "find_matrix", "load_matrix", "value_label"]

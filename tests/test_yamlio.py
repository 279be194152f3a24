"""fptbench.yamlio: the one YAML reader refuses duplicate keys and names FILE:LINE."""

from __future__ import annotations

import pytest

from fptbench.errors import UsageError
from fptbench.yamlio import YAMLFileError, compose_yaml, construct, load_yaml


def test_duplicate_key_is_refused_at_its_line(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("a: 1\nb:\n  c: 1\n  c: 2\n")
    with pytest.raises(YAMLFileError) as err:
        load_yaml(path)
    assert str(err.value) == f"{path}:4: YAML error: duplicate key 'c'"
    assert (err.value.line, err.value.column, err.value.problem) == (4, 3, "duplicate key 'c'")
    assert isinstance(err.value, UsageError)


def test_syntax_error_names_the_line_and_empty_file_is_none(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("a: [1,\nb: 2\n")
    with pytest.raises(YAMLFileError, match=rf"^{path}:\d+: YAML error: "):
        load_yaml(path, str(path))
    path.write_text("")
    assert load_yaml(path) is None
    with pytest.raises(FileNotFoundError):
        load_yaml(tmp_path / "none.yaml")


def test_composed_nodes_construct_with_the_same_check():
    loader, root = compose_yaml("m: {k: 1, k: 2}\n", "inline")
    with pytest.raises(YAMLFileError, match="^inline:1: YAML error: duplicate key 'k'$"):
        construct(loader, root, "inline")

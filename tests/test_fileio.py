"""fptbench.fileio: files created with the user's umask, and a failed write is one line that leaves
the old file and no temporary file."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from fptbench.errors import UsageError
from fptbench.fileio import WriteError, write_bytes_atomic, write_json_atomic


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_get_the_users_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = write_json_atomic(tmp_path / "result.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_a_path_through_a_file_is_a_write_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteError, match=r"file/result.json: cannot write: .*file is a file, not a folder") as info:
        write_json_atomic(tmp_path / "file" / "result.json", {})
    assert isinstance(info.value, UsageError) and isinstance(info.value, OSError)


def test_a_full_disk_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    where = tmp_path / "mnt"
    where.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip() or out.returncode}")
    try:
        write_bytes_atomic(where / "result.json", b"old")
        with pytest.raises(WriteError, match="result.json: cannot write: No space left on device"):
            write_bytes_atomic(where / "result.json", b"x" * 2**20)
        assert sorted(p.name for p in where.iterdir()) == ["result.json"]
        assert (where / "result.json").read_bytes() == b"old"
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)

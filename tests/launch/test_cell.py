"""The cell's end when its local sweep ends: an error raised after the watcher's interrupt is the
interruption surfacing through a library (as its own exception type), so the cell ends cancelled,
with no error.json for `fptbench status` to call a failure; an error before it is the cell's own."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from fptbench.launch import cell as cell_module
from fptbench.launch.cell import CellRunner, CellSpec
from fptbench.launch.lock import process_start
from fptbench.launch.state import ERROR_FILE


class _Wrapping(CellRunner):
    """A cell whose work is a library call that turns a KeyboardInterrupt into its own error (as
    C++ boundaries and worker pools do); ``owner`` is ended once the work has started."""

    owner: subprocess.Popen | None = None

    @staticmethod
    def _train_evaluate(spec, run_dir):
        try:
            if _Wrapping.owner is not None:
                _Wrapping.owner.kill()
                _Wrapping.owner.wait()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                time.sleep(0.01)
        except KeyboardInterrupt:
            raise RuntimeError("the library was interrupted") from None
        raise RuntimeError("the library failed")


def _spec(tmp_path, owner):
    run_dir = tmp_path / "results" / "m" / "cell"
    run_dir.mkdir(parents=True)
    return CellSpec(experiment="m", matrix="m.yaml", run_id="cell", axes={}, config={}, run_dir=str(run_dir),
                    workdir=str(tmp_path), profile={}, executor="local", max_requeues=0, owner=owner), run_dir


@pytest.fixture
def fresh_watch(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the runner changes to the spec's workdir
    monkeypatch.setattr(cell_module, "_OWNER_GONE", threading.Event())
    monkeypatch.setattr(cell_module, "_OWNER_POLL_S", 0.05)
    monkeypatch.setattr(cell_module, "_OWNER_GRACE_S", 3600.0)  # the watcher must not end pytest
    yield
    _Wrapping.owner = None


def test_an_error_after_the_sweep_ended_is_a_cancellation(tmp_path, fresh_watch):
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    _Wrapping.owner = owner
    spec, run_dir = _spec(tmp_path, (owner.pid, process_start(owner.pid)))
    with pytest.raises(KeyboardInterrupt, match=f"the sweep \\(pid {owner.pid}\\) has ended") as info:
        _Wrapping()(spec)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert not (run_dir / ERROR_FILE).exists()


def test_an_error_while_the_sweep_runs_is_the_cells(tmp_path, fresh_watch, monkeypatch):
    spec, run_dir = _spec(tmp_path, None)
    monkeypatch.setattr(_Wrapping, "_train_evaluate", staticmethod(lambda spec, run_dir: 1 / 0))
    with pytest.raises(ZeroDivisionError):
        _Wrapping()(spec)
    assert "ZeroDivisionError" in (run_dir / ERROR_FILE).read_text()

"""Run a snippet under PyTorch's interpreter (tests only): the published code's modules run there.

PyTorch is a test-time tool in its own environment, never a dependency of cmir_tf: the interpreter
is named by the environment variable ``CMIR_TEST_TORCH_PYTHON`` (CI creates it with
``ci/torch-venv.sh``); tests that need it skip with a clear reason when it is unset.

``run_torch(snippet, workdir, inputs={name: array}, outputs=[name, ...])`` writes each input to
``workdir/in_<name>.npy``, runs the snippet in a fresh ``$CMIR_TEST_TORCH_PYTHON -c``, with ``WORKDIR``
(a pathlib.Path), ``load(name)`` and ``save(name, array)`` predefined, and returns ``{name: array}``
read from ``workdir/out_<name>.npy`` (``allow_pickle=False`` on both sides).
"""
from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest

ENV = "CMIR_TEST_TORCH_PYTHON"
_PRELUDE = """
import sys
from pathlib import Path
import numpy as np
WORKDIR = Path(sys.argv[1])
def load(name):
    return np.load(WORKDIR / f"in_{name}.npy", allow_pickle=False)
def save(name, array):
    np.save(WORKDIR / f"out_{name}.npy", np.asarray(array), allow_pickle=False)
"""


def torch_python() -> str:
    """The PyTorch interpreter, or skip the calling test saying how to get one."""
    path = os.environ.get(ENV)
    if not path:
        pytest.skip(f"{ENV} is unset: name a Python with torch and numpy (ci/torch-venv.sh DIR creates one)")
    if not os.access(path, os.X_OK):
        pytest.fail(f"{ENV}={path} is not an executable")
    return path


def run_torch(snippet: str, workdir, inputs: dict | None = None, outputs=(), timeout: float = 600) -> dict:
    """Run SNIPPET under the PyTorch interpreter with npy in/out (see the module doc)."""
    python = torch_python()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for name, array in (inputs or {}).items():
        np.save(workdir / f"in_{name}.npy", np.asarray(array), allow_pickle=False)
    proc = subprocess.run([python, "-c", _PRELUDE + textwrap.dedent(snippet), str(workdir)],
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"torch snippet exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return {name: np.load(workdir / f"out_{name}.npy", allow_pickle=False) for name in outputs}

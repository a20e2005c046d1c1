"""Run PyTorch code in its own interpreter, NumPy arrays in and out: the reference side of equality tests.

PyTorch is a test-time tool only, never a dependency of cmir_tf: it lives in a separate virtualenv
(``ci/torch-venv.sh DIR`` creates one) whose interpreter the environment variable
``CMIR_TEST_TORCH_PYTHON`` names. Without the variable the tests that need it are skipped, saying so.

``run_torch(code, inputs, tmp_path)`` writes each input array to ``<name>.npy``, runs ``code`` under that
interpreter with ``torch``, ``np`` (NumPy), ``nn`` (``torch.nn``), ``IN`` (the inputs as float32/int64…
tensors, by name) and an empty dict ``OUT`` in scope, and returns ``OUT``'s values as NumPy arrays.
For snippets that work with files and NumPy: ``WORKDIR`` (``tmp_path/torch_side``, where the inputs
lie), ``load(name)`` (an input as a NumPy array) and ``save(name, value)`` (``OUT[name] = value``).
"""
from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest

ENV = "CMIR_TEST_TORCH_PYTHON"

requires_torch = pytest.mark.skipif(
    not os.environ.get(ENV),
    reason=f"PyTorch reference side not available: set {ENV} to a Python with torch (ci/torch-venv.sh makes one)",
)

_PRELUDE = """\
import sys
from pathlib import Path
import numpy as np
import torch
from torch import nn
torch.set_grad_enabled(True)
_dir = Path(sys.argv[1])
IN = {p.stem[3:]: torch.from_numpy(np.load(p, allow_pickle=False)) for p in _dir.glob("in_*.npy")}
OUT = {}
WORKDIR = _dir
def load(name):
    return IN[name].numpy()
def save(name, value):
    OUT[name] = value
"""

_EPILOGUE = """
for _name, _value in OUT.items():
    if isinstance(_value, torch.Tensor):
        _value = _value.detach().cpu().numpy()
    np.save(_dir / f"out_{_name}.npy", np.asarray(_value), allow_pickle=False)
"""


def torch_python() -> str:
    """The interpreter named by ``CMIR_TEST_TORCH_PYTHON`` (skips the calling test when unset)."""
    python = os.environ.get(ENV)
    if not python:
        pytest.skip(f"{ENV} is not set")
    return python


def run_torch(code: str, inputs: dict, tmp_path, timeout: float = 300) -> dict:
    """Run ``code`` under the PyTorch interpreter with ``IN``/``OUT`` (module docstring); returns OUT as arrays."""
    folder = Path(tmp_path) / "torch_side"
    folder.mkdir(parents=True, exist_ok=True)
    for name, value in inputs.items():
        np.save(folder / f"in_{name}.npy", np.asarray(value), allow_pickle=False)
    script = folder / "run.py"
    script.write_text(_PRELUDE + textwrap.dedent(code) + _EPILOGUE)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # torch's venv must not see cmir_tf's path
    result = subprocess.run([torch_python(), str(script), str(folder)], capture_output=True, text=True,
                            timeout=timeout, env=env)
    if result.returncode:
        raise AssertionError(f"PyTorch side failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return {p.stem[4:]: np.load(p, allow_pickle=False) for p in folder.glob("out_*.npy")}

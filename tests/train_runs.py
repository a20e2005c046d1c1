"""Real training runs in child processes, shared by the tests that train, kill and resume.

Each run is ``python -m cmir_tf.train`` in a fresh process (a fresh TensorFlow, as a user starts it),
with this checkout first on ``PYTHONPATH``.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def train_env(extra=None) -> dict:
    """The environment of a child run: quiet TensorFlow, this checkout importable, plus ``extra``."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO), **(extra or {})}


def run_train(args, cwd, env=None, timeout=600) -> subprocess.CompletedProcess:
    """Run the train command to its end; its exit code and captured text output."""
    return subprocess.run([sys.executable, "-m", "cmir_tf.train", *args], cwd=cwd, env=train_env(env),
                          capture_output=True, text=True, timeout=timeout)


def signal_after_backup(args, cwd, state_path: Path, *, epoch: int = 0, sig=signal.SIGKILL,
                        timeout: float = 600) -> tuple[int, str]:
    """Start a training and send it ``sig`` once ``state_path`` (the run's backup/state.json) holds a
    mid-epoch backup of ``epoch`` (epochs completed) at step 2 or later; its exit code and stderr.

    Fails the test when the run ends first or no such backup appears within ``timeout`` seconds."""
    err = Path(cwd) / f"signalled-{time.monotonic_ns()}.err"
    with open(err, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "cmir_tf.train", *args], cwd=cwd, env=train_env(),
                                stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.time() + timeout
        try:
            while time.time() < deadline:
                if state_path.exists():
                    state = json.loads(state_path.read_text())
                    if state["epoch"] == epoch and state["step"] >= 2:
                        break
                assert proc.poll() is None, "training ended before it could be signalled"
                time.sleep(0.2)
            else:
                pytest.fail(f"no mid-epoch backup within {timeout:.0f} s")
        finally:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return proc.returncode, err.read_text()

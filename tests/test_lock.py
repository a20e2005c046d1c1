"""lock.folder_lock: one writer per folder across processes, nestable within one, released on exit."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cmir_tf.errors import BusyError
from cmir_tf.lock import LOCK_NAME, folder_lock

REPO = Path(__file__).resolve().parents[1]
TRY = """
import sys
from cmir_tf.errors import BusyError
from cmir_tf.lock import folder_lock
try:
    with folder_lock(sys.argv[1]):
        print("got it")
except BusyError as e:
    print(e)
"""


def _other_process(folder) -> str:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", TRY, str(folder)], env=env, capture_output=True, text=True,
                          timeout=60).stdout.strip()


def test_another_process_is_refused_with_the_holder_named_until_release(tmp_path):
    with folder_lock(tmp_path):
        with folder_lock(tmp_path):  # nested in the same process: no self-conflict
            pass
        said = _other_process(tmp_path)
        assert said.startswith(f"{tmp_path}: in use by process {os.getpid()} on ")
    assert _other_process(tmp_path) == "got it"  # released
    assert (tmp_path / LOCK_NAME).exists()  # the lock file stays: deleting it would race


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom cmir_tf.lock import folder_lock\n"
                               "with folder_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(600)",
                               str(tmp_path)], env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(BusyError, match=rf"in use by process {holder.pid} "):
            with folder_lock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with folder_lock(tmp_path):  # the kernel dropped the killed process's lock
        pass


@pytest.mark.parametrize("argv0, shown", [
    (os.path.join("site-packages", "cmir_tf", "prepare", "__main__.py"), "python -m cmir_tf.prepare"),  # a room
    (os.path.join("bin", "cmir-train"), os.path.join("bin", "cmir-train")),  # a console script as it is
])
def test_the_holder_is_named_by_the_command_a_user_typed(tmp_path, monkeypatch, argv0, shown):
    monkeypatch.setattr(sys, "argv", [argv0, "--out", "d"])
    with folder_lock(tmp_path):
        said = _other_process(tmp_path)
    assert f"({shown} --out d, since " in said, said

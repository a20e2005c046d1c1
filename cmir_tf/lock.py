"""One writer per output folder: an advisory lock that the kernel releases when its process ends.

``prepare`` (its ``--out``) and ``train`` (its run folder) hold :func:`folder_lock` while they write. The
lock is ``fcntl.flock`` on the folder's lock file (:data:`LOCK_NAME`): the kernel drops it when the
holding process exits in any way (including SIGKILL), so a killed run never leaves a stale lock and
the lock file itself is never deleted. Whoever holds the lock records its pid, host, command and start
time in the file, so a second run can say who holds it: it raises :class:`~cmir_tf.errors.BusyError`
(exit code 4) before touching anything.

Within one process the lock of a folder is taken once (a nested :func:`folder_lock` of the same folder
is a no-op): ``flock`` locks belong to an open file, so a second ``open`` in the same process would
conflict with the first. The file is opened close-on-exec, so child processes (``spawn`` workers,
subprocesses) never inherit it. On file systems without ``flock`` (some network mounts) the lock is
skipped with a warning rather than refusing to run.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
import warnings

from cmir_tf.errors import BusyError

LOCK_NAME = ".cmir-lock"
_held: dict[str, int] = {}  # realpath of a folder → how many nested folder_lock() hold it in this process


def _holder(fd: int) -> str:
    """Who holds the lock, from what the holder wrote into the lock file."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["since"])))
        return f"process {int(info['pid'])} on {info['host']} ({info['command']}, since {since})"
    except (ValueError, KeyError, TypeError, OSError):
        return "another process (it has not recorded itself yet)"


def _command() -> str:
    """This process's command line, ``python -m cmir_tf.<stage> …`` for a package command."""
    argv = list(sys.argv) or ["python"]
    parts = os.path.normpath(argv[0]).split(os.sep)
    if len(parts) >= 3 and parts[-3] == "cmir_tf" and parts[-1] == "__main__.py":  # python -m cmir_tf.<room>
        argv[0] = f"python -m cmir_tf.{parts[-2]}"
    elif len(parts) >= 2 and parts[-2] == "cmir_tf" and parts[-1].endswith(".py"):
        argv[0] = f"python -m cmir_tf.{parts[-1][:-3]}"
    return " ".join(argv)[:300]


def _record(fd: int) -> None:
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": _command(), "since": time.time()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode("utf-8"), 0)


@contextlib.contextmanager
def folder_lock(folder):
    """Hold ``folder``'s lock for the ``with`` block (the folder must exist); ``BusyError`` naming the
    holder if another process has it."""
    key = os.path.realpath(folder)
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    fd = os.open(os.path.join(folder, LOCK_NAME), os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BusyError(f"{os.fspath(folder)}: in use by {_holder(fd)}; wait for it to end, "
                            "or stop it, or write elsewhere") from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            warnings.warn(f"{os.fspath(folder)}: the file system cannot lock ({exc.strerror}); "
                          "make sure no other run writes here", stacklevel=3)
        else:
            _record(fd)
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the flock

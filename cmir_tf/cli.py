"""One policy for every ``python -m cmir_tf.<stage>`` command: errors as one line, documented exit codes.

Each command room's ``__main__.py`` holds its ``main(argv=None)``, which parses its flags and calls one library function; it is wrapped by
:func:`command`, which turns the errors a user can cause into a single ``error: …`` line on stderr and
the exit code of their class (``cmir_tf.errors``), so no user-caused failure ends in a traceback::

    @cli.command
    def main(argv=None):
        args = parser().parse_args(argv)
        ...
        return 0          # or errors.EXIT_PARTIAL when some inputs were skipped

``main()`` still returns the code (tests call it directly); ``sys.exit(main())`` ends the process.
The room itself exposes that ``main`` through :func:`door` (``cmir_tf.train:main``, the console script's
target), without importing the command line until it runs.
"""
from __future__ import annotations

import errno
import functools
import importlib
import os
import sys

from cmir_tf.errors import EXIT_INTERRUPTED, CmirError, StorageError

# errno values that mean "the output could not be written" rather than a programming error.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def storage_error(exc: OSError, what: str = "") -> StorageError:
    """An ``OSError`` from writing an output → :class:`StorageError` naming the file and the reason."""
    where = exc.filename or what or "output"
    reason = exc.strerror or str(exc)
    hint = "; free some space and rerun the same command: it resumes" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
    return StorageError(f"{where}: cannot write ({reason}){hint}")


def report(exc: BaseException, stream=None) -> int:
    """Print ``error: <message>`` (one line) for a user-caused error and return its exit code."""
    stream = stream or sys.stderr
    if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
        exc = storage_error(exc)
    message = " ".join(str(exc).split()) or type(exc).__name__
    print(f"error: {message}", file=stream, flush=True)
    return getattr(exc, "exit_code", 2)


def command(main=None, *, hard_exit: bool = False):
    """Decorate a CLI ``main(argv=None) -> int`` with the shared error policy (see the module doc).

    ``hard_exit=True`` (``@cli.command(hard_exit=True)``, for commands that run tf.data pipelines with
    Python functions: train): when the command runs as a program (``argv`` None: ``python -m`` or the
    console script) and ends on an error or Ctrl-C, the process leaves with ``os._exit`` right after the
    error line, without Python's teardown. TensorFlow deadlocks there otherwise (seen one run in three
    under load): freeing the failed ``fit``'s frames destroys a tf.data iterator while holding the GIL,
    and the iterator's destructor waits for a map worker that is itself waiting for the GIL to return
    from its Python function. Nothing is lost by skipping the teardown: outputs are written atomically,
    the folder lock is released by the kernel, stdout and stderr are flushed first. Called from Python
    (``main([...])``), the code is returned as usual.
    """
    if main is None:
        return functools.partial(command, hard_exit=hard_exit)

    @functools.wraps(main)
    def wrapped(argv=None):
        def leave(code: int) -> int:
            if hard_exit and argv is None:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
            return code

        try:
            return main(argv) or 0
        except CmirError as exc:
            return leave(report(exc))
        except OSError as exc:
            if exc.errno in _STORAGE_ERRNOS:
                return leave(report(exc))
            raise
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr, flush=True)
            return leave(EXIT_INTERRUPTED)

    return wrapped


def door(room: str):
    """The ``main(argv=None)`` a command room exports (``main = cli.door(__name__)`` in its ``__init__``).

    It imports ``<room>.__main__`` on its first call, not before, so importing the room stays cheap and
    ``python -m <room>`` (which runs ``__main__.py`` itself) never loads the command line twice."""
    def main(argv=None):
        return importlib.import_module(f"{room}.__main__").main(argv)

    main.__module__, main.__qualname__ = room, "main"
    main.__doc__ = f"``python -m {room}``: run the command line of :mod:`{room}.__main__` with ``argv``."
    return main

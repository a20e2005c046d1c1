"""One policy for every ``python -m cmir_tf.<stage>`` command: errors as one line, documented exit codes.

Each module's ``main(argv=None)`` parses its flags and calls one library function; it is wrapped by
:func:`command`, which turns the errors a user can cause into a single ``error: …`` line on stderr and
the exit code of their class (``cmir_tf.errors``), so no user-caused failure ends in a traceback::

    @cli.command
    def main(argv=None):
        args = parser().parse_args(argv)
        ...
        return 0          # or errors.EXIT_PARTIAL when some inputs were skipped

``main()`` still returns the code (tests call it directly); ``sys.exit(main())`` ends the process.
"""
from __future__ import annotations

import errno
import functools
import sys

from .errors import EXIT_INTERRUPTED, CmirError, StorageError

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


def command(main):
    """Decorate a CLI ``main(argv=None) -> int`` with the shared error policy (see the module doc)."""

    @functools.wraps(main)
    def wrapped(argv=None):
        try:
            return main(argv) or 0
        except CmirError as exc:
            return report(exc)
        except OSError as exc:
            if exc.errno in _STORAGE_ERRNOS:
                return report(exc)
            raise
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr, flush=True)
            return EXIT_INTERRUPTED

    return wrapped

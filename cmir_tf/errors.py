"""Exceptions a user can cause, and the exit code each gives on the command line.

Every message names the file (and entry) or the setting, and the reason, on one line. Library code
names files and values; only the command-line layer speaks of flags (``--mode``). ``cmir_tf.cli.command``
maps these classes to the documented exit codes (README, "Exit codes"):

====  =====================================================================================
code  meaning
====  =====================================================================================
0     success
1     the job finished, but some inputs were skipped (each reported on its own line)
2     bad input, configuration or set-up (:class:`ConfigError`, :class:`DataError`,
      :class:`ExportError`, :class:`StorageError`): nothing was half-written
3     training stopped on a non-finite loss (:class:`NonFiniteLossError`)
4     the output folder is in use by another running job (:class:`BusyError`)
130   interrupted (Ctrl-C); a rerun of the same command resumes where there is state to resume
====  =====================================================================================
"""


class CmirError(Exception):
    """Base class for every error cmir_tf raises on bad input or bad set-up."""

    exit_code = 2


class DataError(CmirError):
    """A dataset file or folder is missing, malformed or inconsistent."""


class ConfigError(CmirError):
    """A configuration value or command-line flag is invalid."""


class ExportError(CmirError):
    """An export cannot be written or read (e.g. a version that already exists)."""


class StorageError(CmirError):
    """An output could not be written (disk full, permissions); names the file. A rerun resumes."""


class NonFiniteLossError(CmirError):
    """Training produced a non-finite loss; the message names the epoch and step."""

    exit_code = 3


class BusyError(CmirError):
    """Another process holds the output folder's lock; the message names it."""

    exit_code = 4


EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_INTERRUPTED = 130

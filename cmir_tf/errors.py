"""Exceptions a user can cause. Each message names the file (or flag) and the reason."""


class CmirError(Exception):
    """Base class for every error cmir_tf raises on bad input or bad set-up."""


class DataError(CmirError):
    """A dataset file or folder is missing, malformed or inconsistent."""


class ConfigError(CmirError):
    """A configuration value or command-line flag is invalid."""


class ExportError(CmirError):
    """An export cannot be written or read (e.g. a version that already exists)."""

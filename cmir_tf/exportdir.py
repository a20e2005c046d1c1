"""The export folder of ``python -m cmir_tf.export``: its layout, its versions, the SavedModel to serve.

::

    DIR/saved_model/<N>/   TF Serving's layout: one integer folder per version (saved_model.pb,
                           variables/, assets/); TF Serving ignores any other name
    DIR/<NAME>.pb          frozen audio encoder of the newest export (Essentia)
    DIR/<NAME>.json        its Essentia metadata
    DIR/.export-tmp-*/     staging folder of an export in progress (renamed into place, then removed)

A version folder is published by renaming a complete staged folder (a rename never replaces a
non-empty folder), so an existing version is never overwritten. :func:`find_saved_model` is how every
consumer (embedding, evaluation) finds the SavedModel to load. Errors are
:class:`~cmir_tf.errors.ExportError` (or ``ConfigError`` for a malformed version number) naming the
folder and what is wrong.
"""
from __future__ import annotations

import contextlib
import numbers
import os
import re
import shutil
import tempfile
from pathlib import Path

from .errors import ConfigError, ExportError

SAVED_MODEL = "saved_model"
SAVED_MODEL_PB = "saved_model.pb"
_VERSION_RE = re.compile(r"^[0-9]+$")


def _versions(root, complete: bool) -> list[int]:
    """Integer version folders under ``root``, ascending (``complete``: only those holding saved_model.pb)."""
    if not os.path.isdir(root):
        return []
    want = SAVED_MODEL_PB if complete else ""
    return sorted(int(d) for d in os.listdir(root)
                  if _VERSION_RE.match(d) and os.path.isdir(os.path.join(root, d))
                  and (not want or os.path.isfile(os.path.join(root, d, want))))


class ExportDir:
    """An export folder (see the module docstring)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.saved_model_root = os.path.join(self.path, SAVED_MODEL)

    def versions(self) -> list[int]:
        """Every version folder under ``saved_model/`` (complete or not: none may be overwritten)."""
        return _versions(self.saved_model_root, complete=False)

    def latest_version(self) -> int | None:
        found = self.versions()
        return found[-1] if found else None

    def version_dir(self, version: int) -> Path:
        return Path(self.saved_model_root) / str(int(version))

    def graph_path(self, name: str) -> str:
        return os.path.join(self.path, f"{name}.pb")

    def metadata_path(self, name: str) -> str:
        return os.path.join(self.path, f"{name}.json")

    def resolve_version(self, version=None) -> int:
        """The version to write: ``version`` if free, else 1 + the highest existing one (1 for a new folder)."""
        if version is None:
            latest = self.latest_version()
            return 1 if latest is None else latest + 1
        if isinstance(version, bool) or not isinstance(version, numbers.Integral) or version < 1:
            raise ConfigError(f"version: must be a positive integer (TF Serving's version folder), got {version!r}")
        target = self.version_dir(version)
        if target.exists():
            raise ExportError(f"{target}: version {int(version)} already exists; refusing to overwrite it "
                              f"(choose another version or omit it to use {self.resolve_version()})")
        return int(version)

    @contextlib.contextmanager
    def staging(self):
        """A fresh staging folder inside the export folder (same file system: renames are atomic); removed after."""
        os.makedirs(self.saved_model_root, exist_ok=True)
        staging = tempfile.mkdtemp(dir=self.path, prefix=".export-tmp-")
        try:
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def publish(self, staged_saved_model: str, version: int, staged_files: dict) -> Path:
        """Rename a complete staged SavedModel into ``saved_model/<version>``, then each staged file over
        its destination (``staged_files``: staged path → final path, both in this folder).

        The version folder goes first: a rename never replaces a non-empty folder, so a concurrent
        export of the same version fails here (ExportError) instead of mixing files.
        """
        target = self.version_dir(version)
        try:
            os.rename(staged_saved_model, target)
        except OSError as e:
            raise ExportError(f"{target}: cannot publish version {version} ({e.strerror}); refusing to overwrite") from None
        for staged, final in staged_files.items():
            os.replace(staged, final)
        return target


def find_saved_model(model_dir) -> str:
    """The SavedModel folder to load for ``model_dir``.

    ``model_dir`` may be an export folder (``saved_model/<N>/`` inside: the highest complete N), a TF
    Serving base folder (``<N>/saved_model.pb`` inside: the highest N), or a SavedModel folder itself.
    """
    model_dir = os.fspath(model_dir)
    if os.path.isfile(os.path.join(model_dir, SAVED_MODEL_PB)):
        return model_dir
    for base in (os.path.join(model_dir, SAVED_MODEL), model_dir):
        found = _versions(base, complete=True)
        if found:
            return os.path.join(base, str(found[-1]))
    if not os.path.isdir(model_dir):
        raise ExportError(f"{model_dir}: no such folder")
    raise ExportError(f"{model_dir}: no SavedModel (expected {SAVED_MODEL_PB}, {SAVED_MODEL}/<N>/ or <N>/)")

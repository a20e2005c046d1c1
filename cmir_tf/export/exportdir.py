"""The export folder of ``python -m cmir_tf.export``: its layout, its versions, the SavedModel to serve.

::

    DIR/saved_model/<N>/   TF Serving's layout: one integer folder per version (saved_model.pb,
                           variables/, assets/); TF Serving ignores any other name
    DIR/<NAME>.pb          frozen audio encoder of the newest export (Essentia)
    DIR/<NAME>.onnx        the same encoder for ONNX runtimes (when the onnx extra is installed)
    DIR/<NAME>.keras       the same encoder as a Keras 3 model of built-in layers
    DIR/<NAME>-genres.pb   the zero-shot genre tagger as a classification head on the embeddings
    DIR/<NAME>-genres.onnx   (models with a genre encoder), and its metadata
    DIR/<NAME>-genres.json
    DIR/<NAME>.json        the encoder's metadata (Essentia model-zoo schema)
    DIR/.export-tmp-<pid>-*/  staging folder of an export in progress (renamed into place, then removed)
    DIR/.cmir-export-files the top-level files exports wrote here, JSON (the only ones an export replaces
                           or removes)
    DIR/.cmir-lock         held by the export writing here (``cmir_tf.lock``: a second one gets BusyError)

A version folder is published by renaming a complete staged folder (a rename never replaces a
non-empty folder), so an existing version is never overwritten. The top-level files describe the
highest version (the one TF Serving and ``find_saved_model`` use): an export of a lower version than one
already there writes only its version folder. A new highest version's files are published after its
folder, model files first and the JSONs (which list them) last, and every other top-level file an
earlier export wrote (a kind the new version lacks, another ``--name``) is removed, so files of two
different models never sit side by side. An export owns only what it wrote: a file in the way that the
manifest does not list (a user's ``<NAME>.json``) is refused before any work, never replaced or
deleted. :func:`find_saved_model` is how every
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

from cmir_tf.errors import ConfigError, DataError, ExportError
from cmir_tf.fileio import pid_alive, read_json, require_output_dir, write_json

SAVED_MODEL = "saved_model"
SAVED_MODEL_PB = "saved_model.pb"
_VERSION_RE = re.compile(r"^[0-9]+$")
STAGING_PREFIX = ".export-tmp-"
MANIFEST = ".cmir-export-files"  # {"files": [top-level file names exports wrote here]}
_STAGING_RE = re.compile(r"^\.export-tmp-(\d+)-")
GENRES_SUFFIX = "-genres"
# Every top-level file of an export by kind, in publication order (the JSONs, which list the rest, last).
FILE_KINDS = {"graph": ".pb", "onnx": ".onnx", "keras": ".keras", "genres_graph": f"{GENRES_SUFFIX}.pb",
              "genres_onnx": f"{GENRES_SUFFIX}.onnx", "genres_metadata": f"{GENRES_SUFFIX}.json",
              "metadata": ".json"}


def file_names(name: str) -> dict:
    """Every top-level file kind of an export named ``name`` → its file name."""
    return {kind: f"{name}{suffix}" for kind, suffix in FILE_KINDS.items()}


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

    def file_path(self, name: str, kind: str) -> str:
        """The top-level file of ``kind`` (a key of :data:`FILE_KINDS`) of the export named ``name``."""
        return os.path.join(self.path, file_names(name)[kind])

    def graph_path(self, name: str) -> str:
        return self.file_path(name, "graph")

    def metadata_path(self, name: str) -> str:
        return self.file_path(name, "metadata")

    def resolve_version(self, version=None) -> int:
        """The version to write: ``version`` if free, else 1 + the highest existing one (1 for a new folder)."""
        if version is None:
            latest = self.latest_version()
            return 1 if latest is None else latest + 1
        if isinstance(version, bool) or not isinstance(version, numbers.Integral) or version < 1:
            raise ConfigError(f"--version: must be a positive integer (TF Serving's version folder), got {version!r}")
        target = self.version_dir(version)
        if target.exists():
            raise ExportError(f"{target}: version {int(version)} already exists; refusing to overwrite it "
                              f"(choose another version or omit it to use {self.resolve_version()})")
        return int(version)

    def is_highest(self, version: int) -> bool:
        """Whether ``version`` would be above every version folder already here (its files go on top)."""
        latest = self.latest_version()
        return latest is None or int(version) > latest

    def written_files(self) -> set:
        """Top-level file names earlier exports wrote here (its manifest, :data:`MANIFEST`)."""
        path = os.path.join(self.path, MANIFEST)
        if not os.path.lexists(path):
            return set()
        try:
            files = read_json(path, "export manifest").get("files")
        except (DataError, AttributeError):
            files = None
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise ExportError(f"{path}: not a list of the files exports wrote here; restore it or export "
                              "into another folder")
        return set(files)

    def _record(self, files) -> None:
        write_json(os.path.join(self.path, MANIFEST), {"files": sorted(files)}, indent=1)

    def check_writable(self, name: str, top_level: bool = True) -> None:
        """Before any work: the folder can take an export named ``name`` (created if missing). Refused
        (``ConfigError``/``ExportError`` naming the path): the folder or a parent is a file,
        ``saved_model`` is not a folder, and with ``top_level`` a top-level file to be written that is a
        folder, or a file in the way that no export here wrote (never replaced or deleted)."""
        require_output_dir(self.path, "export folder")
        if os.path.lexists(self.saved_model_root) and not os.path.isdir(self.saved_model_root):
            raise ExportError(f"{self.saved_model_root}: is a file, not a folder (TF Serving's version folders go there)")
        if not top_level:
            return
        written = self.written_files()
        for kind, fname in file_names(name).items():
            path = os.path.join(self.path, fname)
            if os.path.isdir(path):
                raise ExportError(f"{path}: is a folder, where the export's {kind} file goes")
            if os.path.lexists(path) and fname not in written:
                raise ExportError(f"{path}: exists and was not written by an export into this folder (not in "
                                  f"{MANIFEST}); refusing to replace or delete it: move it away or export elsewhere")

    @contextlib.contextmanager
    def staging(self):
        """A fresh staging folder inside the export folder (same file system: renames are atomic); removed
        after. Staging folders a killed export left (their process gone) are removed first."""
        self.remove_stale_staging()
        staging = tempfile.mkdtemp(dir=self.path, prefix=f"{STAGING_PREFIX}{os.getpid()}-")
        try:
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def remove_stale_staging(self) -> list[str]:
        """Delete the staging folders of exports whose process no longer runs; returns their paths."""
        removed = []
        for entry in os.listdir(self.path) if os.path.isdir(self.path) else ():
            m = _STAGING_RE.match(entry)
            path = os.path.join(self.path, entry)
            if m and not pid_alive(int(m.group(1))) and os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed

    def publish(self, staged_saved_model: str, version: int, name: str, staged_files: dict) -> dict:
        """Rename a complete staged SavedModel into ``saved_model/<version>``; if it is the highest version,
        then each staged top-level file (``staged_files``: kind → staged path in this folder) over its
        destination, in :data:`FILE_KINDS` order, and remove every other top-level file earlier exports
        wrote (:meth:`written_files`). A lower version publishes its folder only.

        The version folder goes first: a rename never replaces a non-empty folder, so a concurrent
        export of the same version fails here (ExportError) instead of mixing files. Returns
        ``{"saved_model": version folder, kind: published path}`` (no kinds for a lower version).
        """
        top_level = self.is_highest(version)
        if top_level:
            self.check_writable(name)
        target = self.version_dir(version)
        os.makedirs(self.saved_model_root, exist_ok=True)
        try:
            os.rename(staged_saved_model, target)
        except OSError as e:
            raise ExportError(f"{target}: cannot publish version {version} ({e.strerror}); refusing to overwrite") from None
        published = {"saved_model": str(target)}
        if not top_level:
            return published
        old = self.written_files()
        new = {os.path.basename(self.file_path(name, kind)) for kind in staged_files}
        self._record(old | new)  # recorded first: a kill part-way leaves no unrecorded file of ours
        for kind in FILE_KINDS:
            if kind in staged_files:
                published[kind] = self.file_path(name, kind)
                os.replace(staged_files[kind], published[kind])
        kept = set()
        for fname in sorted(old - new):
            try:
                os.unlink(os.path.join(self.path, fname))
            except FileNotFoundError:
                pass
            except OSError:  # e.g. replaced by a folder meanwhile: left alone, still ours
                kept.add(fname)
        self._record(new | kept)
        return published


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
    if os.path.isfile(model_dir):
        kind = {".onnx": "an ONNX model", ".keras": "a Keras model", ".pb": "a frozen graph",
                ".json": "a JSON file"}.get(os.path.splitext(model_dir)[1].lower(), "a file")
        raise ExportError(f"{model_dir}: is {kind}, not a folder; give the export folder that holds "
                          f"{SAVED_MODEL}/<N>/ (or a SavedModel folder with {SAVED_MODEL_PB})")
    if not os.path.isdir(model_dir):
        why = "a symbolic link that leads nowhere" if os.path.islink(model_dir) else "no such folder"
        raise ExportError(f"{model_dir}: {why}")
    raise ExportError(f"{model_dir}: no SavedModel (expected {SAVED_MODEL_PB}, {SAVED_MODEL}/<N>/ or <N>/)")

"""Small file primitives every stage shares: atomic writes, safe JSON / ``.npy`` reading.

Atomic writes: the bytes go to a temporary file in the destination folder, named
``.cmir-tmp-<pid>-<token>-<final name>`` (the final suffix is kept, so libraries that infer a format
from it — Keras's ``.weights.h5``, matplotlib's ``.png``, numpy's ``.npz`` — work on the temporary
path), which is then renamed over the destination (``os.replace``: a reader sees the old file or the
new one, never half of one). The file gets the usual permissions (``0666 & ~umask``; ``mkstemp``'s 0600
would hide outputs from other users). :func:`remove_stale_temps` deletes only such names, and only
those whose process is gone — what a killed run left behind — never any other file.

A write that fails for lack of space or permission raises :class:`~cmir_tf.errors.StorageError`
naming the destination (not the temporary name) and leaves no temporary file.

Reading: :func:`read_json` and :func:`load_npy` turn every way a data file can be broken (missing,
not JSON, nested too deeply, pickled, wrong shape or dtype, a FIFO or device instead of a file) into a
one-line :class:`~cmir_tf.errors.DataError` naming the file; ``.npy`` files are never unpickled, and a
FIFO is never opened in a way that could block (:func:`open_regular`).

Paths from data: :func:`inside` is the one check that a name read from a data file (a shard listed in
a manifest, a file named in a split list) stays inside the folder it belongs to.
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import secrets
import stat

import numpy as np

from cmir_tf.errors import ConfigError, DataError, StorageError

TMP_PREFIX = ".cmir-tmp-"
_TMP_RE = re.compile(r"^\.cmir-tmp-(\d+)-[0-9a-f]+-")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_path(path) -> str:
    """A fresh temporary name beside ``path`` that keeps its file name (and so its suffix)."""
    path = os.fspath(path)
    folder, name = os.path.split(path)
    return os.path.join(folder, f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{name}")


def _storage(exc: OSError, path) -> StorageError:
    from cmir_tf.cli import storage_error

    exc.filename = os.fspath(path)
    return storage_error(exc)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success rename it over ``path``, else delete it.

    For writers that want a file name rather than bytes (``model.save_weights(tmp)``,
    ``fig.savefig(tmp)``, ``annoy.save(tmp)``)::

        with atomic_path(run / "best.weights.h5") as tmp:
            model.save_weights(tmp)
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        _remove_quietly(tmp)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG):
            raise _storage(exc, path) from None
        if exc.errno == errno.EISDIR and os.path.isdir(path):  # a folder where the output file goes: left alone
            raise ConfigError(f"{path}: is a folder, not a file; move it away and rerun") from None
        raise
    except BaseException:
        _remove_quietly(tmp)
        raise


def _remove_quietly(path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see the module doc)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def atomic_write_text(path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path, obj, indent=None) -> None:
    """Atomically write ``obj`` as UTF-8 JSON (non-ASCII kept, as in Melon's files; strings holding the
    escaped bytes of a non-UTF-8 file name are written as ``\\udcXX`` escapes, which read back the same)."""
    try:
        data = json.dumps(obj, ensure_ascii=False, indent=indent).encode("utf-8")
    except UnicodeEncodeError:
        data = json.dumps(obj, ensure_ascii=True, indent=indent).encode("ascii")
    atomic_write_bytes(path, data)


def save_npy(path, arr) -> None:
    """Atomically write one array as ``.npy`` (never pickled)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (this process counts as running)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(folder) -> list[str]:
    """Delete this package's temporary files in ``folder`` whose writing process no longer runs.

    Only names made by :func:`temp_path` are touched. Returns the paths removed.
    """
    folder = os.fspath(folder)
    removed = []
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for name in names:
        m = _TMP_RE.match(name)
        if m and not pid_alive(int(m.group(1))):
            path = os.path.join(folder, name)
            if os.path.isfile(path) and not os.path.islink(path):
                _remove_quietly(path)
                removed.append(path)
    return removed


# ------------------------------------------------------------------------------------------ reading
def inside(folder, name, source, entry: str = "entry") -> str:
    """``folder/name`` for a ``name`` read from the data file ``source``, checked to stay inside ``folder``.

    Refused (``DataError`` naming ``source``, the entry and the reason): a name that is not a non-empty
    string, an absolute path, one with a ``..`` component, or one that resolves (symbolic links
    followed) outside ``folder``.
    """
    where = f"{os.fspath(source)}: {entry} {name!r}"
    if not isinstance(name, str) or not name or "\0" in name:
        raise DataError(f"{where} is not a file name")
    if os.path.isabs(name) or ".." in name.replace("\\", "/").split("/"):
        raise DataError(f"{where} points outside {os.fspath(folder)} (absolute or with '..'); refused")
    path = os.path.join(os.fspath(folder), name)
    root = os.path.realpath(folder)
    if os.path.commonpath([root, os.path.realpath(path)]) != root:
        raise DataError(f"{where} resolves outside {os.fspath(folder)} (a symbolic link); refused")
    return path


def create_output_folder(path, own_names, marker: str, what: str) -> None:
    """Create the output folder ``path`` of a command that owns it, refusing (``ConfigError``) a path
    that is a file, or a folder holding names other than ``own_names`` (and temporary files) when
    ``marker`` (a name inside it) is absent: a folder of someone else's files is never written into."""
    from cmir_tf.errors import ConfigError

    path = os.fspath(path)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise ConfigError(f"{path}: exists and is not a folder")
    names = os.listdir(path) if os.path.isdir(path) else []
    foreign = sorted(n for n in set(names) - set(own_names) if not n.startswith(TMP_PREFIX))
    if foreign and not os.path.exists(os.path.join(path, marker)):
        shown = ", ".join(foreign[:3]) + (", …" if len(foreign) > 3 else "")
        raise ConfigError(f"{path}: not {what} (it holds {shown}); choose a new or empty folder, or {what}")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{path}: cannot create the folder ({e.strerror or e})") from None


def why_not_a_file(path) -> str | None:
    """None if ``path`` is (a link to) a regular file; else what it is, for a message: "missing",
    "a folder, not a file", "a symbolic link that leads nowhere (dangling, or a loop)", …"""
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a symbolic link that leads nowhere (dangling, or a loop)" if os.path.islink(path) else "missing"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symbolic link that leads nowhere (dangling, or a loop)"
        if e.errno == errno.ENOTDIR:
            return "missing (a parent is a file, not a folder)"
        return f"unreadable ({e.strerror or e})"
    if stat.S_ISREG(mode):
        return None
    return f"{_kind(mode)}, not a file" if stat.S_ISDIR(mode) else _kind(mode)


class NotAFile(OSError):
    """The path exists but is not a regular file (a folder, FIFO, socket or device); ``kind`` says which."""

    def __init__(self, path, kind: str):
        super().__init__(errno.EINVAL, f"{kind}, not a regular file", os.fspath(path))
        self.kind = kind


def _kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "not a regular file"


def open_regular(path):
    """Open ``path`` for binary reading if it is a regular file (symbolic links followed); else raise
    :class:`NotAFile`. A FIFO is opened non-blocking and closed at once, so it never hangs the reader."""
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except OSError:
        st = os.stat(path)  # e.g. a socket (ENXIO): say what it is, if not a file
        if not stat.S_ISREG(st.st_mode):
            raise NotAFile(path, _kind(st.st_mode)) from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotAFile(path, _kind(mode))
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_json(path, what: str = "JSON file"):
    """Parse a JSON file → its value; any fault → ``DataError("<path>: <reason>")``."""
    path = os.fspath(path)
    try:
        with open_regular(path) as f:
            return json.load(f)
    except NotAFile as e:
        raise DataError(f"{path}: {what} is {e.kind}, not a file") from None
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: {what} is a folder, not a file") from None
    except RecursionError:
        raise DataError(f"{path}: not a usable {what} (JSON nested too deeply)") from None
    except (ValueError, UnicodeDecodeError) as e:
        reason = " ".join(str(e).split())
        raise DataError(f"{path}: {what} is not valid JSON ({reason})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read {what} ({e.strerror or e})") from None


def load_npy(path, what: str = "array", *, ndim: int | None = None, kind: str | None = "f") -> np.ndarray:
    """Load one ``.npy`` array without ever unpickling; check its rank and dtype kind.

    ``kind``: numpy dtype kind the array must have (``"f"`` float, ``"i"`` signed int, None: any
    non-object dtype). Every fault → ``DataError`` naming the file and the reason.
    """
    path = os.fspath(path)
    try:
        with open_regular(path) as f:
            magic = f.read(6)
            if magic != np.lib.format.MAGIC_PREFIX:
                if magic[:1] == b"\x80":  # a bare pickle: refused without unpickling
                    raise DataError(f"{path}: {what} holds Python objects (pickled); refused")
                raise DataError(f"{path}: {what} is not a .npy file")
            f.seek(0)
            arr = np.load(f, allow_pickle=False)
    except NotAFile as e:
        raise DataError(f"{path}: {what} is {e.kind}, not a file") from None
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise DataError(f"{path}: {what} holds Python objects (pickled); refused") from None
        raise DataError(f"{path}: {what} is not a readable .npy file ({e})") from None
    except IsADirectoryError:
        raise DataError(f"{path}: {what} is a folder, not a file") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: {what} is not a readable .npy file ({e})") from None
    if not isinstance(arr, np.ndarray):
        raise DataError(f"{path}: {what} is not a single .npy array")
    if kind == "i" and arr.dtype.kind == "u":
        arr = arr.astype(np.int64)
    if kind is not None and arr.dtype.kind != kind:
        raise DataError(f"{path}: {what} has dtype {arr.dtype}, expected a {'float' if kind == 'f' else 'integer'} array")
    if ndim is not None and arr.ndim != ndim:
        raise DataError(f"{path}: {what} has shape {arr.shape}, expected {ndim} dimension(s)")
    return arr


# --------------------------------------------------------------------------------- output locations
# Checked before any work: a file in the way or a folder that cannot be written is reported before hours
# of embedding or training, not after.
def _where(path: str, what: str) -> str:
    return f"{what} {path}" if what else path


def _no_file_in_the_way(path: str, where: str, named: str) -> None:
    """The nearest existing one of ``path`` and its parents must be a folder (``named``: the path the
    message starts with, not repeated)."""
    target = os.path.abspath(path)
    for anc in (target, *_parents(target)):
        if os.path.lexists(anc):
            if not os.path.isdir(anc):
                same = anc == os.path.abspath(named)
                detail = "is a file, not a folder" if same else f"{anc} is a file, not a folder"
                raise ConfigError(f"{where}: {detail}")
            return


def _parents(path: str):
    parent = os.path.dirname(path)
    while parent and parent != path:
        yield parent
        path, parent = parent, os.path.dirname(parent)


def require_output_dir(path, what: str = "", files=()) -> str:
    """Check, before any work, that the folder ``path`` can receive outputs; create it (and its parents).

    The check writes and deletes one temporary file (a :func:`temp_path` name) in the folder, so a
    read-only file system, missing permissions or a full disk show here, not after hours of work. A
    file where a folder is needed (``path`` or one of its parents), or a folder where one of ``files``
    (names inside ``path``) is to be written → :class:`~cmir_tf.errors.ConfigError`; a folder that
    cannot be created or written → :class:`~cmir_tf.errors.StorageError`. ``what`` (e.g. "output
    folder") starts the message, before the path. Returns the path.
    """
    path = os.fspath(path)
    where = _where(path, what)
    _writable_dir(path, where, path)
    for name in files:
        if os.path.isdir(os.path.join(path, name)):
            raise ConfigError(f"{where}: {os.path.join(path, name)} is a folder, not a file")
    return path


def require_output_file(path, what: str = "") -> str:
    """:func:`require_output_dir` for the file ``path``: its folder must take outputs (it is created),
    ``path`` must not be a folder. Returns the path."""
    path = os.fspath(path)
    where = _where(path, what)
    if os.path.isdir(path):
        raise ConfigError(f"{where}: is a folder, not a file")
    _writable_dir(os.path.dirname(os.path.abspath(path)), where, path)
    return path


def _writable_dir(path: str, where: str, named: str) -> None:
    _no_file_in_the_way(path, where, named)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"{where}: cannot create the folder {path} ({exc.strerror or exc})") from None
    probe = temp_path(os.path.join(path, "write-check"))
    try:
        with open(probe, "xb"):
            pass
        os.unlink(probe)
    except OSError as exc:
        raise StorageError(f"{where}: cannot write into the folder {path} ({exc.strerror or exc})") from None

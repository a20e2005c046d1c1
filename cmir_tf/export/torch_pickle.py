"""Read a PyTorch ``state_dict`` file (``torch.save``) into NumPy arrays, without PyTorch and without
running any code the file names.

A ``.pt`` file is a pickle, and unpickling can call any importable function (``os.system`` through a
``__reduce__``). :func:`read_state_dict` unpickles with a restricted ``pickle.Unpickler`` whose
``find_class`` admits only what a ``state_dict`` of plain tensors is made of, mapped to our own NumPy
constructors:

    collections.OrderedDict                   the state_dict (and an empty hooks dict per tensor)
    torch._utils._rebuild_tensor_v2           a tensor: (storage, offset, size, stride, ...)
    torch.<Float|Double|Half|BFloat16|Long|Int|Short|Char|Byte|Bool>Storage   element types

Any other global — a module, a Parameter, a function like ``os.system`` — stops the reading at that
opcode, before it could be called (:class:`RefusedPickle`, one line naming it). Storages come through
``persistent_load`` (tensor data is stored outside the pickle) and are read as raw little-endian bytes.

Both serialisations of ``torch.save`` are read:

- the **zip** format (torch ≥ 1.6 default): a zip archive ``<stem>/data.pkl`` + ``<stem>/data/<key>``
  (one raw record per storage);
- the **legacy** format (torch ≤ 1.5, and ``_use_new_zipfile_serialization=False``): consecutive
  pickles — magic number, protocol version 1001, system info, the object, the sorted storage keys —
  then each storage as an int64 element count followed by its bytes.

Views are checked against their storage (offset + extent within bounds) before any array is made.
The tensors' device (``cuda:0`` in files saved from a GPU) is ignored: every array is a host copy.
"""
from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile

import numpy as np

from cmir_tf.errors import DataError
from cmir_tf.fileio import open_regular

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
MAX_PICKLE_BYTES = 64 << 20  # a state_dict's pickle holds names and shapes only; its data is outside


class RefusedPickle(DataError):
    """The file's pickle names something a state_dict of tensors never holds; nothing was run."""


class _StorageType:
    """Stand-in for ``torch.<X>Storage``: only its element type (not callable, not a class)."""

    __slots__ = ("name", "dtype")

    def __init__(self, name):
        self.name, self.dtype = name, STORAGE_DTYPES[name]

    def itemsize(self):
        return 2 if self.dtype == "bfloat16" else np.dtype(self.dtype).itemsize


class _Storage:
    """A storage named in the pickle; its bytes are attached once read (``data``)."""

    __slots__ = ("kind", "key", "numel", "data", "view")

    def __init__(self, kind, key, numel, view=None):
        self.kind, self.key, self.numel, self.data, self.view = kind, str(key), int(numel), None, view


class _TensorRef:
    """A tensor as the pickle describes it: storage, element offset, shape, strides."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    """Our stand-in for ``torch._utils._rebuild_tensor_v2`` (requires_grad, hooks, metadata ignored)."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("a tensor without a storage")
    return _TensorRef(storage, offset, size, stride)


def _allowed(module, name):
    if (module, name) == ("collections", "OrderedDict"):
        return collections.OrderedDict
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
        return _rebuild_tensor
    if module == "torch" and name in STORAGE_DTYPES:
        return _StorageType(name)
    return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storages):
        super().__init__(file)
        self.storages = storages  # key → _Storage, shared by every tensor of the file

    def find_class(self, module, name):
        found = _allowed(module, name)
        if found is None:
            raise RefusedPickle(f"{module}.{name}")
        return found

    def persistent_load(self, pid):
        # zip: ('storage', type, key, location, numel); legacy: the same + view_metadata
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[4], int) and pid[4] >= 0):
            raise pickle.UnpicklingError(f"unexpected persistent id {str(pid)[:80]}")
        view = pid[5] if len(pid) == 6 else None
        key = str(pid[2])
        st = self.storages.get(key)
        if st is None:
            st = self.storages[key] = _Storage(pid[1], key, pid[4])
        if view is not None:  # a view of the root storage (legacy): (view key, element offset, size)
            return _Storage(pid[1], key, pid[4], view=(st, int(view[1]), int(view[2])))
        return st


def _unpickle(data_or_file, storages, where):
    """Run the restricted unpickler; every failure is one DataError naming WHERE."""
    f = io.BytesIO(data_or_file) if isinstance(data_or_file, bytes) else data_or_file
    try:
        return _Unpickler(f, storages).load()
    except RefusedPickle as e:
        raise RefusedPickle(f"{where}: refused: the pickle names {e}, which a PyTorch state_dict of tensors "
                            "never contains (it could run code); nothing in it was run") from None
    except Exception as e:  # noqa: BLE001 — a damaged pickle raises anything
        raise DataError(f"{where}: not a readable PyTorch state_dict ({type(e).__name__}: {e})") from None


def _array(raw: bytes, kind: _StorageType) -> np.ndarray:
    if kind.dtype == "bfloat16":
        return (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
    return np.frombuffer(raw, np.dtype(kind.dtype).newbyteorder("<"))


def _materialise(ref: _TensorRef, where: str, name: str) -> np.ndarray:
    st = ref.storage
    data = st.data
    if st.view is not None:  # legacy view: a slice of its root storage
        root, start, count = st.view
        data = None if root.data is None else root.data[max(start, 0):max(start, 0) + max(count, 0)]
    try:
        offset, size, stride = int(ref.offset), tuple(int(s) for s in ref.size), tuple(int(s) for s in ref.stride)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {name}: malformed tensor description") from None
    if data is None:
        raise DataError(f"{where}: {name}: its storage {st.key!r} is missing from the file")
    if len(size) != len(stride) or min(size + stride + (offset,), default=0) < 0:
        raise DataError(f"{where}: {name}: malformed shape {size} / strides {stride}")
    if int(np.prod(size, dtype=object)) > len(data):  # e.g. stride 0 over 10¹² elements: a memory bomb
        raise DataError(f"{where}: {name}: shape {size} holds more elements than its storage ({len(data)})")
    extent = 0 if 0 in size else 1 + sum((n - 1) * s for n, s in zip(size, stride))
    if extent and offset + extent > len(data):
        raise DataError(f"{where}: {name}: shape {size} at offset {offset} exceeds its storage "
                        f"({len(data)} elements)")
    flat = data[offset:] if extent else data[:0]
    item = flat.itemsize
    out = np.lib.stride_tricks.as_strided(flat, shape=size, strides=tuple(s * item for s in stride))
    return np.array(out, copy=True)


def _tensors(obj, where):
    """The unpickled object → {name: array}; it must be a mapping of names to tensors."""
    if not isinstance(obj, dict):
        raise DataError(f"{where}: holds a {type(obj).__name__}, not a state_dict (a mapping of names to tensors); "
                        "save the model's state_dict()")
    out = collections.OrderedDict()
    for name, ref in obj.items():
        if not isinstance(name, str) or not isinstance(ref, _TensorRef):
            raise DataError(f"{where}: entry {str(name)[:60]!r} is not a tensor; not a state_dict of tensors")
        out[name] = _materialise(ref, where, name)
    return out


# ------------------------------------------------------------------------------------------ formats
def _read_zip(f, where, file_size):
    try:
        zf = zipfile.ZipFile(f)
        names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise DataError(f"{where}: not a readable zip archive ({e})") from None
    pkls = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pkls) != 1:
        raise DataError(f"{where}: a zip archive without exactly one <name>/data.pkl; not a torch.save file")
    prefix = pkls[0][: -len("data.pkl")]
    info = zf.getinfo(pkls[0])
    if info.file_size > min(MAX_PICKLE_BYTES, file_size):  # torch stores records uncompressed
        raise DataError(f"{where}: data.pkl is {info.file_size} bytes; too large for a state_dict")
    order = prefix + "byteorder"
    if order in names and zf.read(order).strip() not in (b"little", b""):
        raise DataError(f"{where}: big-endian tensors are not supported")
    storages = {}
    obj = _unpickle(zf.read(pkls[0]), storages, where)
    for key, st in storages.items():
        record = f"{prefix}data/{key}"
        try:
            size = zf.getinfo(record).file_size
        except KeyError:
            raise DataError(f"{where}: storage record {record} is missing") from None
        if size != st.numel * st.kind.itemsize() or size > file_size:
            raise DataError(f"{where}: storage record {record} holds {size} bytes, expected "
                            f"{st.numel} × {st.kind.itemsize()}")
        st.data = _array(zf.read(record), st.kind)
    return obj


def _read_legacy(f, where, file_size):
    storages = {}
    try:
        magic = _unpickle(f, {}, where)
        protocol = _unpickle(f, {}, where)
    except RefusedPickle:
        raise
    except DataError:
        raise DataError(f"{where}: neither a zip archive nor a legacy torch.save file") from None
    if magic != LEGACY_MAGIC or protocol != LEGACY_PROTOCOL:
        raise DataError(f"{where}: neither a zip archive nor a legacy torch.save file (magic number)")
    sys_info = _unpickle(f, {}, where)
    if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
        raise DataError(f"{where}: big-endian tensors are not supported")
    obj = _unpickle(f, storages, where)
    keys = _unpickle(f, {}, where)
    if not isinstance(keys, list) or set(map(str, keys)) != set(storages):
        raise DataError(f"{where}: the storage list does not match the tensors; damaged file")
    for key in map(str, keys):
        st = storages[key]
        head = f.read(8)
        if len(head) != 8:
            raise DataError(f"{where}: truncated (storage {key} is missing)")
        (numel,) = struct.unpack("<q", head)
        nbytes = numel * st.kind.itemsize()
        if numel != st.numel or nbytes > file_size - f.tell():
            raise DataError(f"{where}: storage {key} announces {numel} elements "
                            f"(expected {st.numel}, file too short or damaged)")
        st.data = _array(f.read(nbytes), st.kind)
    return obj


def read_state_dict(path) -> "collections.OrderedDict[str, np.ndarray]":
    """A ``torch.save``d state_dict (zip or legacy format) → {name: NumPy array}, in the file's order.

    Raises :class:`RefusedPickle` (a DataError) for a pickle that names anything but tensors and
    ordered dicts — before anything it names is called — and DataError for any other unreadable file.
    """
    where = str(path)
    try:
        with open_regular(path) as f:
            size = f.seek(0, io.SEEK_END)
            f.seek(0)
            if zipfile.is_zipfile(f):
                f.seek(0)
                return _tensors(_read_zip(f, where, size), where)
            f.seek(0)
            return _tensors(_read_legacy(f, where, size), where)
    except OSError as e:
        raise DataError(f"{where}: cannot read ({e.strerror or e})") from None

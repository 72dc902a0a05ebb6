"""PyTorch's checkpoint format, written without importing torch.

``import torch`` costs 1.5-2 s; the file itself takes a fifth of that to write.  So
``.weights -> .pt`` writes the archive ``torch.save`` would, from numpy arrays, and
``torch.load(path, weights_only=True)`` (with or without ``mmap=True``) reads it back as
tensors.

The format (torch/serialization.py, ``_save``; unchanged since torch 1.6, and torch keeps loading
the files of every version since) is an uncompressed zip whose entries all sit under one folder:

    archive/data.pkl            the object, pickled (protocol 2); each tensor is a call of
                                torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
                                requires_grad, backward_hooks), each storage a persistent id
                                ("storage", torch.<Type>Storage, key, "cpu", numel)
    archive/.format_version     "1"
    archive/.storage_alignment  "64"
    archive/byteorder           "little"
    archive/data/<key>          each storage's raw bytes, starting on a 64-byte boundary
    archive/version             "3"

Only what darkcfg stores is supported: dicts, lists, tuples, str, int, float, bool, None and
numpy arrays of the dtypes below.  The tests check the files with torch.load itself.
"""
from __future__ import annotations

import pickle
import struct
import zipfile
from collections import OrderedDict

import numpy as np

ALIGN = 64
STORAGES = {np.dtype(k): v for k, v in [
    ("<f4", "FloatStorage"), ("<f8", "DoubleStorage"), ("<f2", "HalfStorage"),
    ("<i8", "LongStorage"), ("<i4", "IntStorage"), ("<i2", "ShortStorage"),
    ("i1", "CharStorage"), ("u1", "ByteStorage"), ("?", "BoolStorage")]}


class _Global:
    """A reference to ``module.name``, pickled as GLOBAL without importing the module."""
    __slots__ = ("line",)

    def __init__(self, module: str, name: str):
        self.line = f"{module}\n{name}\n".encode()

    def __call__(self, *args):   # pickle's save_reduce wants a callable; this is never called
        raise TypeError("a stand-in for a torch function")


_REBUILD = _Global("torch._utils", "_rebuild_tensor_v2")
_STORAGE_TYPES = {d: _Global("torch", name) for d, name in STORAGES.items()}


class _Storage:
    """One array's bytes, pickled as torch's persistent storage id."""
    __slots__ = ("key", "array")

    def __init__(self, key: str, array: np.ndarray):
        self.key, self.array = key, array


class _Pickler(pickle._Pickler):   # the Python pickler: its dispatch table can be extended
    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, file):
        super().__init__(file, protocol=2)
        self.storages: list[_Storage] = []

    def persistent_id(self, obj):
        if type(obj) is _Storage:
            return ("storage", _STORAGE_TYPES[obj.array.dtype], obj.key, "cpu", obj.array.size)
        return None

    def _save_global_ref(self, obj):
        self.write(pickle.GLOBAL + obj.line)
        self.memoize(obj)

    def _save_array(self, a):
        dtype = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
        if dtype not in STORAGES:
            raise TypeError(f"cannot store a {a.dtype} array in a .pt file")
        a = np.asarray(a, dtype=dtype, order="C")     # (ascontiguousarray would make 0-d 1-d)
        storage = _Storage(str(len(self.storages)), a)
        self.storages.append(storage)
        stride = tuple(s // a.itemsize for s in a.strides)
        self.save_reduce(_REBUILD, (storage, 0, a.shape, stride, False, OrderedDict()))

    dispatch[_Global] = _save_global_ref
    dispatch[np.ndarray] = _save_array


def _write_aligned(zf: zipfile.ZipFile, name: str, data) -> None:
    """Add an uncompressed entry whose data starts on an ALIGN-byte boundary (torch mmaps it),
    padding the local header's extra field as torch's own writer does."""
    view = memoryview(data.reshape(-1).view(np.uint8) if isinstance(data, np.ndarray) else data)
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.file_size = view.nbytes
    zip64 = info.file_size * 1.05 > zipfile.ZIP64_LIMIT     # zipfile's own rule, see _open_to_write
    start = zf.fp.tell()
    header = 30 + len(name.encode()) + 4 + (20 if zip64 else 0)
    pad = -(start + header) % ALIGN
    info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad    # 'FB': torch's padding field
    with zf.open(info, "w") as w:
        for pos in range(0, view.nbytes, 64 << 20):
            w.write(view[pos:pos + (64 << 20)])


def save(obj, path: str, progress=None) -> None:
    """Write ``obj`` (numpy arrays inside dicts/lists and plain values) as a torch checkpoint.
    ``progress(nbytes)`` is called as tensor data is written."""
    import io
    buf = io.BytesIO()
    pickler = _Pickler(buf)
    pickler.dump(obj)
    root = "archive/"
    with open(path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
        for name, text in [("data.pkl", buf.getvalue()), (".format_version", b"1"),
                           (".storage_alignment", str(ALIGN).encode()), ("byteorder", b"little")]:
            _write_aligned(zf, root + name, text)
        for s in pickler.storages:
            _write_aligned(zf, root + "data/" + s.key, s.array)
            if progress:
                progress(s.array.nbytes)
        _write_aligned(zf, root + "version", b"3\n")

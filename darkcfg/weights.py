"""darknet .weights files: the header, and one walk over the layers that defines the byte order.

Layout (darknet src/parser.c, ``load_weights_upto`` / ``save_weights_upto``)::

    int32 major, int32 minor, int32 revision
    seen: uint64 if major*10 + minor >= 2, else uint32
    then, layer by layer, each layer's tensors as float32 in the order its shapes.Layer lists them
    (conv: biases, [scales, rolling_mean, rolling_variance], weights; connected: biases, weights,
    [scales, rolling_mean, rolling_variance]; ...).

:func:`walk` is the only place that turns that order into offsets; the reader, the writer, the
size check and the offset table all use it.  Unlike darknet, a file whose size does not match the
cfg is refused (darknet silently stops at EOF and leaves the rest random).

Nothing here imports torch at module level: ``summary --weights`` stays fast.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np

from .errors import WeightsError
from .shapes import Network


@dataclass
class Header:
    major: int = 0
    minor: int = 2
    revision: int = 5
    seen: int = 0

    @property
    def seen_bytes(self) -> int:
        return 8 if self.major * 10 + self.minor >= 2 else 4

    @property
    def size(self) -> int:
        return 12 + self.seen_bytes

    @property
    def transposed(self) -> bool:
        """darknet: connected weights are stored transposed when major or minor > 1000."""
        return self.major > 1000 or self.minor > 1000

    def to_bytes(self) -> bytes:
        fmt = "<iiiQ" if self.seen_bytes == 8 else "<iiiI"
        return struct.pack(fmt, self.major, self.minor, self.revision, self.seen)

    def as_dict(self) -> dict:
        return dict(major=self.major, minor=self.minor, revision=self.revision, seen=self.seen)


def parse_header(data: bytes, path: str) -> Header:
    if len(data) < 12:
        raise WeightsError(f"{len(data)} bytes is too short for a darknet header (at least 16)",
                           path, offset=0)
    major, minor, revision = struct.unpack_from("<iii", data, 0)
    h = Header(major, minor, revision)
    if not all(0 <= v < 100_000 for v in (major, minor, revision)):
        raise WeightsError(f"bad header: version {major}.{minor}.{revision} - not a darknet "
                           f".weights file?", path, offset=0)
    if len(data) < h.size:
        raise WeightsError(f"header truncated: version {major}.{minor} needs {h.size} bytes, "
                           f"file has {len(data)}", path, offset=0)
    h.seen = struct.unpack_from("<Q" if h.seen_bytes == 8 else "<I", data, 12)[0]
    return h


def read_header(path: str) -> tuple[Header, int]:
    """(header, file size in bytes)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError as e:
        raise WeightsError(f"cannot read: {e.strerror}", path) from None
    return parse_header(head, path), size


@dataclass
class Entry:
    """One tensor of the file: which layer, which tensor, where (in float32 units after the
    header)."""
    layer: object
    tensor: object
    offset: int       # in floats, counted from the end of the header


def walk(net: Network, cutoff: int | None = None) -> list[Entry]:
    """Every tensor of layers < cutoff, in file order, with its offset.  The one definition of
    the order, used by reading, writing, checking and the offset table alike."""
    out, off = [], 0
    for layer in net.layers[:cutoff]:
        for t in layer.tensors:
            out.append(Entry(layer, t, off))
            off += t.count
    return out


def expected_floats(net: Network, cutoff: int | None = None) -> int:
    entries = walk(net, cutoff)
    return entries[-1].offset + entries[-1].tensor.count if entries else 0


def check(net: Network, path: str, cutoff: int | None = None,
          allow_trailing: bool = False) -> dict:
    """Compare a .weights file with what the cfg needs.  Returns a report; raises WeightsError
    naming the first layer that does not fit when the sizes disagree."""
    header, size = read_header(path)
    need = expected_floats(net, cutoff)
    have_bytes = size - header.size
    report = dict(header=header.as_dict(), header_bytes=header.size, expected_floats=need,
                  expected_bytes=header.size + 4 * need, file_bytes=size,
                  file_floats=have_bytes // 4)
    if have_bytes % 4:
        raise WeightsError(f"{have_bytes} bytes after the {header.size}-byte header is not a "
                           f"whole number of floats", path, offset=header.size)
    have = have_bytes // 4
    if have < need:
        for e in walk(net, cutoff):
            if e.offset + e.tensor.count > have:
                left = max(0, have - e.offset)
                raise WeightsError(
                    f"{e.tensor.name} needs {e.tensor.count:,} floats at offset "
                    f"{header.size + 4 * e.offset:,}, {left:,} left (file has {have:,} floats, "
                    f"cfg needs {need:,}) - truncated, or weights of another network",
                    path, e.layer.index, e.layer.section.header, header.size + 4 * e.offset)
    if have > need and not allow_trailing:
        raise WeightsError(f"{have - need:,} floats left over after the last layer (file has "
                           f"{have:,} floats, cfg needs {need:,}) - weights of another network? "
                           f"(use --cutoff to read only the first layers)", path,
                           offset=header.size + 4 * need)
    return report


def read_floats(path: str, net: Network, cutoff: int | None = None,
                allow_trailing: bool = False) -> tuple[Header, np.ndarray, list[Entry]]:
    """Check the file, then read it once.  Returns the header, the float32 array after the
    header, and the walk; each tensor is ``floats[e.offset : e.offset + e.tensor.count]``."""
    check(net, path, cutoff, allow_trailing)
    header, _ = read_header(path)
    floats = np.fromfile(path, dtype="<f4", offset=header.size)
    return header, floats, walk(net, cutoff)


def tensor_view(floats: np.ndarray, e: Entry, header: Header) -> np.ndarray:
    """A view of one tensor in the module's layout (connected weights un-transposed if the
    header says so - that one case copies)."""
    a = floats[e.offset:e.offset + e.tensor.count]
    if header.transposed and e.layer.type == "connected" and e.tensor.name == "weights":
        out, inp = e.tensor.shape
        return a.reshape(inp, out).T.copy()
    return a.reshape(e.tensor.shape)


def pack(header: Header, arrays, net: Network, cutoff: int | None = None):
    """Yield the byte chunks of a .weights file: header, then each tensor in walk order.
    ``arrays(entry) -> np.ndarray`` gives a tensor in the module's layout."""
    yield header.to_bytes()
    for e in walk(net, cutoff):
        a = np.ascontiguousarray(arrays(e), dtype="<f4")
        if a.size != e.tensor.count:
            raise WeightsError(f"{e.tensor.name}: has {a.size} values, the cfg needs "
                               f"{e.tensor.count}", layer=e.layer.index,
                               layer_type=e.layer.section.header)
        if header.transposed and e.layer.type == "connected" and e.tensor.name == "weights":
            a = np.ascontiguousarray(a.reshape(e.tensor.shape).T)
        yield a.tobytes()


def offset_table(net: Network, cutoff: int | None = None, header_size: int = 20) -> list[dict]:
    return [dict(layer=e.layer.index, type=e.layer.type, tensor=e.tensor.name,
                 count=e.tensor.count, offset=header_size + 4 * e.offset)
            for e in walk(net, cutoff)]

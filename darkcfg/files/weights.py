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
from dataclasses import dataclass, field

import numpy as np

from ..errors import DarkcfgError, WeightsError
from ..config.shapes import Network


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
    have = have_bytes // 4
    if have_bytes % 4:
        raise _ends_inside(net, path, header, size, have, need, cutoff)
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


def _ends_inside(net: Network, path: str, header: Header, size: int, have: int, need: int,
                 cutoff: int | None) -> WeightsError:
    """The error for a file whose length is not a whole number of floats: where it ends."""
    what = (f"{size - header.size:,} bytes after the {header.size}-byte header is not a whole "
            f"number of floats (file has {size:,} bytes, the cfg needs "
            f"{header.size + 4 * need:,})")
    for e in walk(net, cutoff):
        if e.offset + e.tensor.count > have:
            return WeightsError(f"{what}: the file ends inside {e.tensor.name} at offset "
                                f"{size:,} - truncated, or weights of another network", path,
                                e.layer.index, e.layer.section.header, size)
    return WeightsError(f"{what}: {size - header.size - 4 * need:,} bytes past the last layer "
                        f"- weights of another network?", path, offset=header.size + 4 * need)


def check_values(net: Network, path: str, cutoff: int | None = None) -> dict:
    """Read the file's floats and check what darknet's own files always satisfy: every value
    is finite and every batch norm's rolling variance is >= 0.  A file in another layer order
    of the same size (yolov3.cfg's order read as yolo_ref.cfg's) fails the variance test.
    Returns counts; raises WeightsError naming the first layer that fails."""
    header, size = read_header(path)
    floats = np.memmap(path, dtype="<f4", mode="r", offset=header.size,
                       shape=((size - header.size) // 4,))
    for e in walk(net, cutoff):
        a = floats[e.offset:e.offset + e.tensor.count]
        where = dict(path=path, layer=e.layer.index, layer_type=e.layer.section.header,
                     offset=header.size + 4 * e.offset)
        if not np.isfinite(a).all():
            raise WeightsError(f"{e.tensor.name}: {int((~np.isfinite(a)).sum()):,} of "
                               f"{a.size:,} values are NaN or infinite", **where)
        if e.tensor.name == "rolling_variance" and (a < 0).any():
            raise WeightsError(f"rolling_variance: {int((a < 0).sum()):,} of {a.size:,} values "
                               f"are negative (a variance never is): these weights follow "
                               f"another layer order or another cfg (see --weights-cfg)", **where)
    return dict(values_checked=expected_floats(net, cutoff))


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


# ----- matching two cfgs that describe one network in different layer orders ------------------

def signatures(net: Network) -> list:
    """A structural identity per layer: its type, options, tensor shapes and the identities of
    its inputs.  A single-input [route] is only a re-indexing, so it takes its input's identity."""
    sig: list = []
    for l in net.layers:
        srcs = tuple("input" if s < 0 else sig[s] for s in l.sources)
        if l.type == "route" and len(l.sources) == 1 and l.opts["groups"] == 1:
            sig.append(srcs[0])
            continue
        opts = tuple(sorted((k, repr(v)) for k, v in l.opts.items() if k != "share"))
        sig.append(hash((l.type, l.output[2], opts, tuple(t.shape for t in l.tensors), srcs)))
    return sig


_signatures = signatures


def match(model_net: Network, file_net: Network, cutoff: int | None = None) -> dict:
    """{file layer index: model layer index} for every layer with tensors, matched by structure
    (same layers, connections and shapes).  Raises WeightsError when the two cfgs are not one
    network.  ``cutoff`` counts layers of the file's order."""
    a, b = signatures(model_net), signatures(file_net)
    by_sig: dict = {}
    for l in model_net.layers:
        if l.tensors:
            by_sig.setdefault(a[l.index], []).append(l.index)
    mapping = {}
    for l in file_net.layers[:cutoff]:
        if not l.tensors:
            continue
        cands = by_sig.get(b[l.index])
        if not cands:
            raise WeightsError(
                f"{file_net.cfg.name} and {model_net.cfg.name} are not the same network: layer "
                f"{l.index} [{l.section.header}] ({' x '.join(map(str, l.output))}) of the "
                f"first has no counterpart in the second", file_net.cfg.path, l.index,
                l.section.header)
        mapping[l.index] = cands.pop(0)
    if cutoff is None:
        left = [i for v in by_sig.values() for i in v]
        if left:
            raise WeightsError(f"{model_net.cfg.name} has layers with weights that "
                               f"{file_net.cfg.name} lacks, the first is layer {min(left)}",
                               model_net.cfg.path, min(left))
    return mapping


# ----- torch side: .weights <-> model, and darkcfg's .pt ------------------------------------

PT_FORMAT = "darkcfg"


@dataclass
class LoadReport:
    header: Header
    loaded: int = 0
    skipped: list = None       # (model layer index, reason)


def _bar(total: int, desc: str, progress: bool):
    """A tqdm bar on a terminal when ``progress``; otherwise a no-op (and tqdm not imported)."""
    if not progress:
        from contextlib import nullcontext
        return nullcontext(type("NoBar", (), {"update": staticmethod(lambda n: None)}))
    from tqdm import tqdm
    return tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=None, leave=False)


def read_file(path: str, size: int, progress: bool) -> np.ndarray:
    """Read a whole file into one float32 buffer (one copy, in 16 MiB chunks, with progress)."""
    buf = np.empty(size // 4, dtype="<f4")
    view = memoryview(buf).cast("B")
    with open(path, "rb") as f, _bar(size, "read", progress) as bar:
        pos = 0
        while pos < size:
            n = f.readinto(view[pos:pos + (16 << 20)])
            if not n:
                raise WeightsError(f"file shrank while reading at byte {pos:,}", path, offset=pos)
            pos += n
            bar.update(n)
    return buf


def identity(net: Network) -> dict:
    return {l.index: l.index for l in net.layers}


def read_arrays(path: str, file_net: Network, mapping: dict | None = None,
                cutoff: int | None = None, progress: bool = False) -> tuple[Header, dict]:
    """Check and read a .weights file once; return its header and {state_dict key: array},
    each array a view of one buffer in the module's layout.  Keys are ``layers.<i>.<key>`` with
    i the model's layer index (``mapping``: file layer index -> model layer index).  No torch."""
    check(file_net, path, cutoff, allow_trailing=cutoff is not None)
    header, size = read_header(path)
    floats = read_file(path, size, progress)[header.size // 4:]   # headers are 16 or 20 bytes
    mapping = mapping or identity(file_net)
    return header, {f"layers.{mapping[e.layer.index]}.{e.tensor.key}": tensor_view(floats, e, header)
                    for e in walk(file_net, cutoff)}


def read_for(path: str, net: Network, weights_cfg=None, cutoff: int | None = None,
             progress: bool = False) -> tuple[Header, dict]:
    """Read a .weights file for ``net``: in ``net``'s own layer order, or in the order of
    ``weights_cfg`` (a cfg path, text or Network of the same network), matched by structure at
    ``net``'s input size.  Returns (header, {``net``'s state_dict key: array})."""
    if weights_cfg is None:
        return read_arrays(path, net, None, cutoff, progress)
    from ..config.shapes import network
    file_net = network(weights_cfg, width=net.width, height=net.height, channels=net.channels)
    return read_arrays(path, file_net, match(net, file_net, cutoff), cutoff, progress)


def assign_arrays(model, arrays: dict) -> tuple[int, list]:
    """Put numpy arrays into the model without copying; a layer any of whose arrays does not
    fit the model's shape is left initialised and reported.  Returns (layers loaded,
    [(layer, reason)])."""
    import torch
    own = {f"layers.{l.index}.{t.key}": t.shape for l in model.net.layers for t in l.tensors}
    bad = sorted({int(k.split(".")[1]) for k, a in arrays.items() if own.get(k) != a.shape})
    state = {k: torch.from_numpy(a) for k, a in arrays.items()
             if int(k.split(".")[1]) not in bad}
    _assign(model, state)
    return (len({k.split(".")[1] for k in state}),
            [(i, "shapes differ from the file's (another class count?)") for i in bad])


def _assign(model, state: dict) -> None:
    """Put ``state`` into the model without copying; initialise whatever is left on meta."""
    import torch
    for name, buf in model.named_buffers():
        if name.endswith("num_batches_tracked") and name.rsplit(".", 2)[0] + ".running_mean" \
                in state:
            state[name] = torch.zeros((), dtype=torch.long)
    model.load_state_dict(state, strict=False, assign=True)
    for m in model.modules():
        tensors = list(m.parameters(recurse=False)) + list(m.buffers(recurse=False))
        if any(t.is_meta for t in tensors):
            m.to_empty(device="cpu", recurse=False)
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
            elif hasattr(m, "reset_running_stats"):
                m.reset_running_stats()


def save_darknet(model, path: str, header: Header | None = None, file_net: Network | None = None,
                 mapping: dict | None = None, cutoff: int | None = None, progress: bool = False,
                 force: bool = True) -> int:
    """Write ``model`` as a darknet .weights file in ``file_net``'s layer order (default: the
    order of the file it was loaded from, ``model.weights_cfg`` when set, else the model's
    own).  Atomic: a failure leaves no file.  Returns the bytes written."""
    if getattr(model, "fused", False):
        raise WeightsError("a fused model (batch norms folded) cannot be written as darknet "
                           ".weights: save it before fuse()", path)
    if file_net is None and getattr(model, "weights_cfg", None):   # the source's order
        from ..config.shapes import network
        n = model.net
        file_net = network(model.weights_cfg, width=n.width, height=n.height,
                           channels=n.channels)
    file_net = file_net or model.net
    if mapping is None and file_net is not model.net:
        mapping = match(model.net, file_net, cutoff)
    arrays = arrays_of(model)
    return write_weights(arrays, path, header or Header(), file_net, mapping, cutoff, progress,
                         force)


def arrays_of(model, counters: bool = True) -> dict:
    """{state_dict key: numpy array} of a model on any device: floating tensors as float32
    (darknet's type), batch norms' num_batches_tracked kept unless ``counters=False``."""
    return {k: (v.detach().cpu().float() if v.is_floating_point() else v.detach().cpu()).numpy()
            for k, v in model.state_dict().items()
            if counters or not k.endswith("num_batches_tracked")}


def save_pt(model, path: str, header: Header | None = None, force: bool = True,
            weights_cfg: str | None = None) -> None:
    """darkcfg's .pt: a dict loadable with torch.load(weights_only=True) holding the cfg text,
    the darknet header and the state_dict (float tensors stored as float32, darknet's type).
    ``weights_cfg``: the text of the cfg whose layer order the source .weights followed, kept
    so that writing the .pt back as .weights restores that order (default:
    ``model.weights_cfg`` when set)."""
    if weights_cfg is None:
        weights_cfg = getattr(model, "weights_cfg", None)
    write_pt(arrays_of(model), path, model.cfg_text, header, force, weights_cfg=weights_cfg,
             files=model.cfg_files)


def state_dict_of(arrays: dict) -> dict:
    """The state_dict a Darknet module would have, as arrays straight from the walk (views, no
    copies): every darknet tensor, plus each batch norm's num_batches_tracked.  No torch."""
    sd = dict(arrays)
    for k in [k for k in sd if k.endswith(".running_mean")]:
        sd[k[:-len("running_mean")] + "num_batches_tracked"] = np.zeros((), dtype=np.int64)
    return sd


def write_pt(arrays: dict, path: str, cfg_text: str, header: Header | None = None,
             force: bool = True, progress: bool = False, weights_cfg: str | None = None,
             files: dict | None = None) -> None:
    """Write {state_dict key: array} as darkcfg's .pt, without importing torch (see ptfile).
    ``files``: {name: text} of the files the cfg names (a softmax tree), kept beside it."""
    from . import ptfile
    from ..outputs import atomic_output
    obj = {"format": PT_FORMAT, "version": 1, "cfg": cfg_text,
           "header": (header or Header()).as_dict(), "state_dict": arrays}
    if weights_cfg is not None and weights_cfg != cfg_text:
        obj["weights_cfg"] = weights_cfg
    if files:
        obj["files"] = dict(files)
    total = sum(a.nbytes for a in arrays.values())
    with atomic_output(path, force) as tmp, _bar(total, "write", progress) as bar:
        ptfile.save(obj, tmp, bar.update)


def _header_of(value, path: str) -> Header:
    """The darknet header stored in a checkpoint: four non-negative integers."""
    keys = ("major", "minor", "revision", "seen")
    if not isinstance(value, dict) or set(value) != set(keys) or \
            not all(type(value[k]) is int and value[k] >= 0 for k in keys):
        raise WeightsError(f"not a darkcfg checkpoint: its 'header' entry must hold the darknet "
                           f"header as integers {', '.join(keys)}, got {_short(value)}", path)
    return Header(**value)


def _short(value, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[:n] + "..."


def read_pt(path: str) -> dict:
    import torch
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        raise WeightsError("no such file", path) from None
    except Exception:   # torch raises many kinds for a file that is not a checkpoint
        raise WeightsError("not a darkcfg .pt file: not a PyTorch checkpoint, or one that "
                           "holds more than tensors", path) from None
    if not isinstance(obj, dict) or obj.get("format") != PT_FORMAT or "cfg" not in obj \
            or "state_dict" not in obj:
        raise WeightsError("not a darkcfg .pt file (no darkcfg header: was it written by "
                           "`darkcfg convert`?)", path)
    if "header" not in obj:
        raise WeightsError("not a darkcfg .pt file: no 'header' entry (the darknet header)",
                           path)
    _header_of(obj["header"], path)
    if not isinstance(obj["cfg"], str) or not isinstance(obj["state_dict"], dict) or \
            not isinstance(obj.get("weights_cfg", ""), str):
        raise WeightsError("not a darkcfg .pt file: 'cfg' must be text and 'state_dict' a dict",
                           path)
    _files_of(obj.get("files", {}), path)
    return obj


def _files_of(value, path: str) -> dict:
    """The {name: text} of the files a checkpoint carries beside its cfg (softmax trees)."""
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                              for k, v in value.items()):
        raise WeightsError(f"not a darkcfg checkpoint: its 'files' entry must map names to "
                           f"text, got {_short(value)}", path)
    return value


@dataclass
class Checkpoint:
    """A darkcfg .pt or .safetensors: the cfg inside, the darknet header, {key: numpy array},
    when the source .weights followed another cfg's layer order, that cfg's text, and the files
    the cfg names (``files``: {name: text}, a softmax tree)."""
    cfg_text: str
    header: Header
    arrays: dict
    weights_cfg: str | None = None
    files: dict = field(default_factory=dict)

    def cfg(self, path: str):
        """The cfg inside, parsed (errors name ``path:cfg``), carrying its files."""
        return checkpoint_cfg(self.cfg_text, self.files, path)


def checkpoint_cfg(text: str, files: dict, path: str):
    """A checkpoint's cfg text parsed, with the files it carries attached: it builds from any
    folder."""
    from ..config.cfg import parse
    cfg = parse(text, path + ":cfg")
    cfg.files = dict(files)
    return cfg


def is_checkpoint(path) -> bool:
    return str(path).endswith((".pt", ".safetensors"))


def read_checkpoint_order(path: str) -> str | None:
    """The ``weights_cfg`` text a checkpoint remembers (None: its own cfg's order)."""
    if str(path).endswith(".safetensors"):
        return _safetensors_meta(path).get("weights_cfg")
    return read_pt(path).get("weights_cfg")


def check_arrays(net: Network, arrays: dict, path: str, cutoff: int | None = None) -> int:
    """Check that {state_dict key: array} holds every tensor of ``net``'s layers < cutoff in
    its shape (and, without a cutoff, nothing else).  Returns the number of tensors; raises
    WeightsError naming the first layer that does not fit."""
    want = {}
    for e in walk(net, cutoff):
        key = f"layers.{e.layer.index}.{e.tensor.key}"
        want[key] = e.tensor.shape
        a = arrays.get(key)
        if a is None or tuple(a.shape) != tuple(e.tensor.shape):
            got = "is missing" if a is None else f"has shape {tuple(a.shape)}"
            raise WeightsError(f"{e.tensor.name} ({key}, shape {tuple(e.tensor.shape)} in the "
                               f"cfg) {got} - a checkpoint of another network?", path,
                               e.layer.index, e.layer.section.header)
    extra = sorted(k for k in arrays if k not in want and not k.endswith("num_batches_tracked"))
    if extra and cutoff is None:
        raise WeightsError(f"{len(extra)} tensors the cfg does not have, the first {extra[0]} - "
                           f"a checkpoint of another network?", path)
    return len(want)


def read_checkpoint(path: str) -> Checkpoint:
    """Read a .pt (imports torch) or .safetensors (no torch) written by darkcfg."""
    if str(path).endswith(".safetensors"):
        return read_safetensors(path)
    obj = read_pt(path)
    arrays = {k: v.numpy() for k, v in obj["state_dict"].items()
              if not k.endswith("num_batches_tracked")}
    return Checkpoint(obj["cfg"], Header(**obj["header"]), arrays, obj.get("weights_cfg"),
                      obj.get("files", {}))


# ----- safetensors: the same tensors, named by state_dict key, cfg and header in metadata -------

ST_FORMAT = "darkcfg"


def save_safetensors(arrays: dict, path: str, cfg_text: str, header: Header,
                     force: bool = True, weights_cfg: str | None = None,
                     files: dict | None = None) -> None:
    """Write {state_dict key: array} as .safetensors with the cfg and darknet header in its
    metadata (and ``weights_cfg``, the source's layer order, and ``files``, the files the cfg
    names, as JSON, as for .pt).  No torch."""
    import json
    from safetensors.numpy import save_file
    from ..outputs import atomic_output
    meta = {"format": ST_FORMAT, "cfg": cfg_text, "header": json.dumps(header.as_dict())}
    if weights_cfg is not None and weights_cfg != cfg_text:
        meta["weights_cfg"] = weights_cfg
    if files:
        meta["files"] = json.dumps(files)
    with atomic_output(path, force) as tmp:
        try:
            save_file({k: np.ascontiguousarray(a) for k, a in arrays.items()}, tmp,
                      metadata=meta)
        except Exception as e:       # safetensors' own error type for a failed write
            raise DarkcfgError(f"{path}: cannot write: {e}") from None


def _safetensors_meta(path: str) -> dict:
    from safetensors import safe_open
    try:
        with safe_open(path, framework="numpy") as f:
            return f.metadata() or {}
    except FileNotFoundError:
        raise WeightsError("no such file", path) from None
    except Exception as e:   # safetensors raises its own error kinds for bad files
        raise WeightsError(f"not a readable .safetensors file ({e})", path) from None


def read_safetensors(path: str) -> Checkpoint:
    """A darkcfg .safetensors file as a :class:`Checkpoint`.  No torch."""
    import json
    from safetensors import safe_open
    meta = _safetensors_meta(path)
    if meta.get("format") != ST_FORMAT or "cfg" not in meta:
        raise WeightsError("not a darkcfg .safetensors file (no darkcfg metadata)", path)
    try:
        header = _header_of(json.loads(meta["header"]), path)
    except (KeyError, ValueError):
        raise WeightsError("not a darkcfg .safetensors file: no readable 'header' entry in its "
                           "metadata (the darknet header)", path) from None
    try:
        files = _files_of(json.loads(meta.get("files", "{}")), path)
    except ValueError:
        raise WeightsError("not a darkcfg .safetensors file: its 'files' entry is not JSON",
                           path) from None
    try:
        with safe_open(path, framework="numpy") as f:
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:   # safetensors raises its own error kinds for bad files
        raise WeightsError(f"not a readable .safetensors file ({e})", path) from None
    return Checkpoint(meta["cfg"], header, arrays, meta.get("weights_cfg"), files)


def write_weights(arrays: dict, path: str, header: Header, file_net: Network,
                  mapping: dict | None = None, cutoff: int | None = None,
                  progress: bool = False, force: bool = True) -> int:
    """Write {state_dict key: array} as a darknet .weights file in ``file_net``'s order
    (``mapping``: file layer index -> the arrays' layer index).  No torch."""
    from ..outputs import atomic_output
    mapping = mapping or identity(file_net)

    def array(e):
        key = f"layers.{mapping[e.layer.index]}.{e.tensor.key}"
        if key not in arrays:
            raise WeightsError(f"missing tensor {key} for layer {e.layer.index}", path)
        return arrays[key]

    total = header.size + 4 * expected_floats(file_net, cutoff)
    with atomic_output(path, force) as tmp, open(tmp, "wb") as f, \
            _bar(total, "write", progress) as bar:
        for chunk in pack(header, array, file_net, cutoff):
            f.write(chunk)
            bar.update(len(chunk))
    return total

"""int8 inference on a CPU: post-training static quantisation of the network's trunk.

PyTorch's current path, the one torch 2.13 and torchao document for x86: ``torch.export`` of
the fused model (strict, the batch dimension dynamic) -> torchao's PT2E ``prepare_pt2e`` with
``X86InductorQuantizer`` (its default config: activations uint8 per tensor from a histogram,
weights int8 per output channel, symmetric) -> calibration on images prepared as ``darkcfg
map`` prepares them -> ``convert_pt2e`` -> ``torch.compile`` with freezing, where inductor
turns each dequantise-conv-quantise into one oneDNN int8 convolution (VNNI's or AMX's dot
products).  The older eager ``torch.ao.quantization`` (FX graph mode, fbgemm) is deprecated in
torch 2.13 and slower; torchao's ``quantize_(model, Int8...Config)`` quantises linear layers
only (weights, or dynamic activations), not convolutions.

Only what ``Darknet.forward`` returns is quantised: the conv trunk up to the tensors entering
the heads.  The heads' decode ([yolo], [region], [keypoint]), the scores and NMS stay float32,
run by the same code as for the float model (so a box centre is never rounded to int8: what
onnxruntime issue 14233 shows happens to a fully quantised YOLO).  The conv feeding each head
quantises its input and writes float32.

A quantised model is an :class:`Int8Model`: it runs like a Darknet (``model(x)`` -> the head
inputs, ``model.net``, ``placement()``), so detect and map take it; :meth:`Int8Model.save`
writes a ``.pt2`` (torch.export's format, the cfg inside) that :func:`load_pt2` reads back
without calibrating again.  Needs torchao: ``pip install "darkcfg[int8]"``.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings

import numpy as np
import torch

from ..errors import DarkcfgError

CALIB_COUNT = 64        # images calibrated on by default (a spread over the list)
CALIB_BATCH = 8
META = "darkcfg.json"   # the extra file inside a .pt2: cfg text, files it names, settings


@contextlib.contextmanager
def _quiet():
    """torchao's import logs a warning per CUDA kernel library it cannot load (a CPU build of
    torch has none of them), torch's pytree warns about torchao's enums, the quantizer warns
    about every max-pool whose input it leaves float: none of it concerns the user."""
    loggers = [logging.getLogger(n) for n in ("torchao", "torch.utils._pytree")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def require_torchao():
    """The torchao modules used here, or a DarkcfgError that says how to install them."""
    try:
        with _quiet():
            from torchao.quantization.pt2e import allow_exported_model_train_eval
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
            from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq
    except ImportError as e:
        raise DarkcfgError(f"int8 needs torchao ({e.msg}): pip install \"darkcfg[int8]\"") \
            from None
    return prepare_pt2e, convert_pt2e, xiq, allow_exported_model_train_eval


# ----- calibration images ---------------------------------------------------------------------

def calibration_paths(source, count: int = CALIB_COUNT) -> list:
    """The images to calibrate on: ``source`` is a list of image paths, a .data file (its
    train= list, else valid=), a list file (one path a line) or a folder.  At most ``count``,
    spread evenly over the list (deterministic), so one class or one video is not all it sees."""
    from ..dataset import data as D
    if isinstance(source, (str, os.PathLike)):
        source = os.fspath(source)
        if source.endswith(".data"):
            d = D.read_data(source)
            key = "train" if d.train else "valid" if d.valid else None
            if key is None:
                raise DarkcfgError(f"{source}: no train= or valid= list to calibrate on")
            paths = D.image_list(d.resolve(key))
        elif os.path.isdir(source) or os.path.isfile(source):
            paths = D.image_list(source)
        else:
            raise DarkcfgError(f"--calib {source}: no such file or folder")
    else:
        paths = [os.fspath(p) for p in source]
    if not paths:
        raise DarkcfgError(f"--calib {source}: no images to calibrate on")
    if count < 1:
        raise DarkcfgError(f"calibration count must be at least 1, got {count}")
    if len(paths) > count:
        paths = [paths[i * len(paths) // count] for i in range(count)]
    return paths


def calibration_batches(net, paths: list, batch: int = CALIB_BATCH):
    """Batches (B, C, H, W float32) of ``paths`` as map prepares them: OpenCV's decode,
    darknet's resize, or its letterbox where the cfg's [net] letter_box=1."""
    from ..dataset import data as D
    from ..dataset.prepare import cfg_letter_box, prepare
    letter_box = cfg_letter_box(net)[0]
    for s in range(0, len(paths), batch):
        images = [D.load_image(p, net.channels) for p in paths[s:s + batch]]
        yield torch.from_numpy(np.stack([prepare(im, net.width, net.height, letter_box)
                                         for im in images]))


# ----- quantising -----------------------------------------------------------------------------

def _export(module, net, strict: bool = True):
    """torch.export of ``module`` with a dynamic batch (an example of 2: torch.export
    specialises a dimension of size 1)."""
    x = torch.zeros(2, net.channels, net.height, net.width)
    batch = torch.export.Dim("batch", min=1, max=1024)
    try:
        return torch.export.export(module, (x,), dynamic_shapes=({0: batch},), strict=strict)
    except Exception as e:          # a layer torch.export cannot trace: one line, not a dump
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DarkcfgError(f"{net.cfg.name}: torch.export cannot capture the network for "
                           f"int8 ({first[:300]})") from None


def float_layers(model, keep_first: bool = False, keep_heads: bool = False) -> list:
    """Indices of the layers left in float: ``keep_first`` the first conv, ``keep_heads`` the
    convs whose output enters a head."""
    net = model.net
    convs = [l.index for l in net.layers if l.type == "convolutional"]
    out = []
    if keep_first and convs:
        out.append(convs[0])
    if keep_heads:
        out += [i for i in model.head_inputs if net.layers[i].type == "convolutional"]
    return sorted(set(out))


def quantize(model, calib, count: int = CALIB_COUNT, *, keep_first: bool | None = None,
             keep_heads: bool = False, batch: int = CALIB_BATCH) -> "Int8Model":
    """An :class:`Int8Model` of ``model`` (a Darknet; left as it is), calibrated on ``calib``
    (see :func:`calibration_paths`; or a list of (B, C, H, W) tensors, already prepared).
    ``keep_first`` / ``keep_heads``: leave the first conv / the convs before the heads in
    float32 (docs/precision.md measures both).  ``keep_first=None`` (the default) keeps the
    first conv in float32 where the CPU has no int8 dot product (VNNI, AMX): there oneDNN adds
    pairs of u8 x s8 products in saturating 16-bit sums, and the first conv, whose input spans
    the image's whole 0..255, overflows them - on the learning fixture's model int8 fell to
    79.29 % mAP against fp32's 82.87 %, 83.34 % with the first conv in float (AVX2-only EPYC);
    with VNNI every conv is int8 (83.85 % against 83.82 %)."""
    import copy
    prepare_pt2e, convert_pt2e, xiq, allow_train_eval = require_torchao()
    net = model.net
    if net.channels is None or not net.height or not net.width:
        raise DarkcfgError(f"{net.cfg.name}: int8 needs an image input (width, height, "
                           f"channels in [net])")
    fm = copy.deepcopy(model).float().cpu().eval()
    if not getattr(fm, "fused", False):
        fm.fuse()
    info = {}
    if keep_first is None:
        from ..nn.dtypes import int8_dot
        keep_first = int8_dot() is None
        if keep_first:
            info["note"] = ("the first conv stays float32: this CPU has no int8 dot product "
                            "(VNNI/AMX), and its 16-bit sums overflow on the image's full "
                            "range (docs: precision)")
    floats = float_layers(fm, keep_first, keep_heads)
    if isinstance(calib, (list, tuple)) and calib and isinstance(calib[0], torch.Tensor):
        batches = list(calib)
    else:
        batches = calibration_batches(net, calibration_paths(calib, count), batch)
    with _quiet():
        ep = _export(fm, net)
        quantizer = xiq.X86InductorQuantizer()
        quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
        for i in floats + [l.index for l in net.layers if l.head]:    # heads: float always
            quantizer.set_module_name_qconfig(f"layers.{i}", None)
        prepared = prepare_pt2e(ep.module(), quantizer)
        with torch.no_grad():
            for x in batches:
                prepared(x.float())
        converted = convert_pt2e(prepared)
        allow_train_eval(converted)
        program = _export(converted, net, strict=False)
    return Int8Model(net, program, {"float_layers": floats, **info})


# ----- the quantised model --------------------------------------------------------------------

class Int8Model:
    """A quantised network that runs like a Darknet for detect and map: ``model(x)`` (x float32
    (B, C, H, W)) -> the float32 tensors entering the heads, ``net``, ``head_inputs``,
    ``placement()``, ``eval()``.  It computes in int8 and cannot be trained or cast.

    Compiled (inductor, weights frozen) on the first call, again for each larger batch; a
    smaller batch runs padded to the largest compiled so far (a conv sees each image alone,
    so padding changes no output) instead of compiling once more (10-90 s)."""

    training = False
    fused = True

    def __init__(self, net, program, info: dict):
        self.net, self.program, self.info = net, program, dict(info)
        n = len(net.layers)
        heads = [l.index for l in net.layers if l.head]
        self.head_inputs = [i if net.layers[i].emits else list(net.layers[i].sources)[0]
                            for i in heads] or [n - 1]
        self._run, self._batch = None, 0

    def placement(self) -> dict:
        return {"device": torch.device("cpu"), "dtype": torch.float32}

    def eval(self):
        return self

    def train(self, mode: bool = True):
        if mode:
            raise DarkcfgError("an int8 model cannot be trained: train the float model, then "
                               "quantise it")
        return self

    def to(self, *args, **kwargs):
        return self

    def __call__(self, x: torch.Tensor) -> list:
        if x.device.type != "cpu":
            raise DarkcfgError(f"an int8 model runs on the CPU, got an input on {x.device}")
        with torch.no_grad():       # one grad mode whatever the caller's: no recompiling
            return self._forward(x)

    def _forward(self, x):
        n = x.shape[0]
        if self._run is None or n > self._batch:
            from .speed import compile_frozen
            module = self.program.module()
            require_torchao()[3](module)        # its eval() is refused unless allowed
            with _quiet():
                self._run = compile_frozen(module)
            self._batch = n
        if n < self._batch:
            pad = x.new_zeros((self._batch - n, *x.shape[1:]))
            return [o[:n] for o in self._run(torch.cat([x.float(), pad]))]
        return list(self._run(x.float()))

    def save(self, path: str, force: bool = True) -> None:
        """Write a .pt2 (torch.export.save; the cfg and the settings in ``darkcfg.json``)."""
        from ..outputs import atomic_output
        from ..config import shapes
        meta = {"format": "darkcfg-int8", "version": 1, "cfg": self.net.cfg.to_text(),
                "files": shapes.attached_files(self.net), "torch": torch.__version__,
                **self.info}
        import io
        buf = io.BytesIO()       # torch.export.save wants a name ending in .pt2, or a buffer
        with _quiet():
            torch.export.save(self.program, buf, extra_files={META: json.dumps(meta)})
        with atomic_output(path, force) as tmp, open(tmp, "wb") as f:
            f.write(buf.getvalue())


def load_pt2(path: str) -> Int8Model:
    """An :class:`Int8Model` from a .pt2 that :meth:`Int8Model.save` wrote: no calibration."""
    from ..config import shapes
    from ..files import weights as W
    require_torchao()      # registers the quantised ops' lowering and weight packing
    extra = {META: ""}
    try:
        with _quiet():
            program = torch.export.load(path, extra_files=extra)
    except Exception as e:
        raise DarkcfgError(f"{path}: not a torch.export .pt2 this torch {torch.__version__} "
                           f"can read ({str(e).strip().splitlines()[0][:200] if str(e) else e!r})"
                           ) from None
    try:
        meta = json.loads(extra[META])
    except ValueError:
        meta = {}
    if meta.get("format") != "darkcfg-int8":
        raise DarkcfgError(f"{path}: a .pt2 without darkcfg's {META} (write one with "
                           f"darkcfg build --dtype int8 -o x.pt2)")
    net = shapes.network(W.checkpoint_cfg(meta["cfg"], meta.get("files", {}), path))
    return Int8Model(net, program, {k: meta[k] for k in ("float_layers",) if k in meta})


def load(path, cfg=None, *, calib=None, calib_count=None, device=None, **kwargs) -> Int8Model:
    """darkcfg.load(..., dtype="int8", calib=...) and darkcfg.load("x.pt2"): a quantised model
    from a .pt2 as it is, or from float weights calibrated on ``calib``."""
    from ..nn import model as M
    if device is not None and M.device_of(device).type != "cpu":
        raise DarkcfgError(f"int8 runs on the CPU (oneDNN's int8 kernels), not {device}")
    if str(path).endswith(".pt2"):
        if cfg is not None or calib is not None or any(v for v in kwargs.values()
                                                       if v not in (None, False)):
            raise DarkcfgError(f"{path} is quantised and carries its cfg: give no cfg, calib "
                               f"or rewrites")
        return load_pt2(os.fspath(path))
    if calib is None:
        raise DarkcfgError("int8 needs calibration images: calib=[image paths], a list file, "
                           "a folder or a .data (--calib on the command line)")
    require_torchao()          # before reading any weights
    model = M.load(path, cfg, fuse=True, **kwargs)
    return quantize(model, calib, calib_count or CALIB_COUNT)

"""ONNX export: the raw head tensors, or decoded boxes and scores ready for NMS.

Uses PyTorch's TorchScript-based exporter (``dynamo=False``): darkcfg's forward is one static
loop, which traces exactly.  Input ``images`` (B, C, H, W); outputs ``head_<layer>`` (raw) or,
with ``decode=True``, ``boxes`` (B, N, 4: x1, y1, x2, y2 in input pixels) and ``scores`` (B, N,
classes: objectness * class probability), N running over heads, cells and anchors.
"""
from __future__ import annotations

import os
import sys
import warnings
from contextlib import contextmanager

import torch
from torch import nn

from ..objective import yolo as Y
from ..errors import DarkcfgError
from ..outputs import atomic_output
from ..nn.layers import CRNN, Unsupported


class Decoded(nn.Module):
    """A Darknet model followed by the [yolo] decode, flattened for NMS."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        net = model.net
        layers = [l for l in net.layers if l.head]
        if not layers or any(l.type != "yolo" for l in layers):
            raise DarkcfgError(f"{net.cfg.name}: --decode needs [yolo] heads only, found "
                               f"{sorted({l.type for l in layers}) or 'none'}")
        self.heads = [Y.Head.from_layer(l) for l in layers]
        self.size = (net.width, net.height)
        self.train(model.training)     # a new Module starts in training mode; follow the model

    def forward(self, x):
        boxes, scores = [], []
        for raw, head in zip(self.model(x), self.heads):
            d = Y.decode(raw, head, self.size)
            b = d["boxes"].reshape(x.shape[0], -1, 4)
            wh = torch.tensor(self.size, dtype=b.dtype, device=b.device)
            c, s = b[..., :2] * wh, b[..., 2:] * wh / 2
            boxes.append(torch.cat([c - s, c + s], -1))
            scores.append((d["obj"][..., None] * d["cls"]).reshape(x.shape[0], -1, head.classes))
        return torch.cat(boxes, 1), torch.cat(scores, 1)


def check_exportable(model) -> None:
    for i, m in enumerate(model.layers):
        if isinstance(m, (Unsupported, CRNN)) and i in model._run:
            l = model.net.layers[i]
            raise DarkcfgError(f"{model.net.cfg.name}: layer {i} [{l.section.header}] cannot be "
                               f"exported to ONNX (darkcfg cannot run it)")
    for i, l in enumerate(model.net.layers):
        if getattr(model.layers[i], "xnor", False):
            raise DarkcfgError(f"{model.net.cfg.name}: layer {i} [{l.section.header}] has "
                               f"xnor=1: binary convolutions are not exported")


def supported_opsets() -> range:
    """The opsets torch's exporter writes (7..23 with torch 2.13); darkcfg's layers need >= 8
    (Expand), and 12 where a [shortcut] has per-channel weights (Einsum)."""
    from torch.onnx import _constants as c
    return range(getattr(c, "ONNX_MIN_OPSET", 7), getattr(c, "ONNX_MAX_OPSET", 20) + 1)


def check_opset(opset: int) -> None:
    ok = supported_opsets()
    if opset not in ok:
        raise DarkcfgError(f"opset {opset} is not supported: torch {torch.__version__} exports "
                           f"opsets {ok.start}..{ok.stop - 1} (default 17)")


@contextmanager
def _graph_dump_muted():
    """torch's TorchScript exporter writes its whole IR graph to the C++ stdout when it fails
    (its setup_onnx_logging tests a function for truth, so logging is always on): point file
    descriptor 1 at /dev/null meanwhile, so a failed export is one Error line."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def export_onnx(model, path: str, batch: int = 1, dynamic_batch: bool = False,
                decode: bool = False, opset: int = 17, force: bool = True) -> list:
    """Write ``model`` as ONNX at its cfg's input size.  Returns the output names.  An opset
    outside :func:`supported_opsets`, or one too old for a layer, is a DarkcfgError."""
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise DarkcfgError("ONNX export needs the onnx package: pip install onnx") from None
    check_opset(opset)
    check_exportable(model)
    net = model.net
    module = Decoded(model) if decode else model
    names = ["boxes", "scores"] if decode else [
        f"head_{i}" for i in model.head_inputs]
    x = torch.zeros(batch, net.channels or 1, net.height or 1, net.width or 1,
                    **model.placement())
    axes = {n: {0: "batch"} for n in ["images"] + names} if dynamic_batch else None
    was_training = model.training
    module.eval()                  # export the inference graph; the exporter restores this mode
    try:
        with atomic_output(path, force) as tmp, warnings.catch_warnings(), _graph_dump_muted():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (x,), tmp, input_names=["images"], output_names=names,
                              dynamic_axes=axes, opset_version=opset, dynamo=False,
                              do_constant_folding=True)
    except torch.onnx.OnnxExporterError as e:   # its message ends in a graph dump: keep line 1
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DarkcfgError(f"{net.cfg.name}: cannot export at opset {opset}: {first[:300]}") \
            from None
    finally:
        model.train(was_training)
    return names


def export_openvino(model, path: str, batch: int = 1, dynamic_batch: bool = False,
                    decode: bool = False, opset: int = 17, force: bool = True,
                    calib: list | None = None) -> list:
    """Write ``model`` as OpenVINO IR: ``path`` (.xml) and the .bin beside it, converted from
    darkcfg's own ONNX (:func:`export_onnx`, the same graph and output names) by
    ``openvino.convert_model``; weights kept in float32 (``save_model`` would halve them to
    fp16 by default; OpenVINO still picks its own inference precision, bf16 on a CPU with
    AVX512_BF16 or AMX, unless told ``INFERENCE_PRECISION_HINT=f32``).  Needs openvino:
    pip install "darkcfg[openvino]".

    ``calib`` (image paths): an int8 IR instead, by NNCF's post-training quantisation
    (``nncf.quantize``, its defaults) on those images prepared as ``map`` prepares them -
    OpenVINO's own int8 path, not darkcfg's (which quantises only the trunk); needs nncf."""
    import tempfile
    try:
        import openvino as ov
    except ImportError:
        raise DarkcfgError("OpenVINO export needs the openvino package: pip install "
                           "\"darkcfg[openvino]\"") from None
    if not str(path).endswith(".xml"):
        raise DarkcfgError(f"{path}: an OpenVINO IR is written as NAME.xml (and NAME.bin)")
    bin_path = str(path)[:-4] + ".bin"
    if not force:
        for p in (path, bin_path):
            if os.path.exists(p):
                raise DarkcfgError(f"{p} exists (--force replaces it)")
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(path))) as tmp:
        onnx_path = os.path.join(tmp, "model.onnx")
        names = export_onnx(model, onnx_path, batch, dynamic_batch, decode, opset)
        try:
            ir = ov.convert_model(onnx_path)
            if calib:
                ir = _nncf_int8(ir, model.net, calib, batch)
            ov.save_model(ir, os.path.join(tmp, "model.xml"), compress_to_fp16=False)
        except DarkcfgError:
            raise
        except Exception as e:      # openvino's own errors: one line
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DarkcfgError(f"{model.net.cfg.name}: OpenVINO cannot convert the ONNX "
                               f"export ({first[:300]})") from None
        os.replace(os.path.join(tmp, "model.bin"), bin_path)     # the .bin first: an .xml
        os.replace(os.path.join(tmp, "model.xml"), path)         # never names a missing one
    return names


def _nncf_int8(ir, net, calib: list, batch: int):
    """``ir`` quantised by NNCF on the ``calib`` images (batches of the export's batch size)."""
    from .int8 import calibration_batches
    items = [x.numpy() for x in calibration_batches(net, calib, batch)
             if x.shape[0] == batch] or [next(calibration_batches(net, calib, 1)).numpy()
                                         .repeat(batch, 0)]
    return nncf_quantize(ir, items)


def nncf_quantize(ir, batches: list):
    """``ir`` (an OpenVINO model) quantised to int8 by NNCF's post-training quantisation on
    ``batches`` (numpy inputs), NNCF's defaults except one: the overflow fix on every layer.

    An IR is carried to other CPUs, and on one without VNNI (AVX2 only) OpenVINO's int8
    convolutions sum u8 x s8 products in pairs into 16 bits, which saturate; NNCF's default fixes
    only the first layer.  Measured on yolov3-tiny at 128 with OpenVINO's oneDNN held to AVX2
    (``ONEDNN_MAX_CPU_ISA=AVX2``): the second head was 6.0 % of its largest value off the
    float32 model with the default and 1.0 % with the fix on every layer - as on an AVX-512 VNNI
    CPU, where the fix changed nothing measurable (1.0 % either way)."""
    try:
        import nncf
        from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters,
                                                           OverflowFix)
    except ImportError:
        raise DarkcfgError("an int8 OpenVINO IR needs nncf: pip install nncf") from None
    import logging
    logging.getLogger("nncf").setLevel(logging.WARNING)
    fix = AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE)
    return nncf.quantize(ir, nncf.Dataset(batches), advanced_parameters=fix,
                         subset_size=sum(len(b) for b in batches))

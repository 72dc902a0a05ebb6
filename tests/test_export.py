"""ONNX export: onnx.checker passes and ONNX Runtime agrees with darkcfg within 1e-4."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import darkcfg
from darkcfg.config import cfg as C
from darkcfg.objective import yolo as Y
from darkcfg.errors import DarkcfgError
from darkcfg.files.export import export_onnx

from conftest import CFGS, REFERENCE, needs_shared

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def run_onnx(path, x):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(None, {"images": x})


def _case(name, darknet_at, make_weights):
    if name == "synthetic_mixed":          # every layer type ONNX can express
        path = os.path.join(REFERENCE, "numeric", name, "model.cfg")
        return darkcfg.load(make_weights(path), path)
    path, weights = darknet_at(name)
    return darkcfg.load(weights, path)


# yolov3-tiny-prn, yolov3-tiny_3l, yolov2-tiny and tiny-yolo-voc: darknet's stride-1 size-2
# maxpool (padding on the right/bottom only), which failed to export with a dynamic batch
ONNX_CASES = ["yolov3-tiny", "yolov4-tiny", "yolov3", "synthetic_mixed", "yolov3-tiny-prn",
              "yolov3-tiny_3l", "yolov2-tiny", "tiny-yolo-voc"]


@needs_shared
@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic-batch"])
@pytest.mark.parametrize("name", ONNX_CASES)
def test_onnx_runtime_matches(name, dynamic, tmp_path, darknet_at, make_weights):
    """ONNX Runtime vs darkcfg within 1e-4 (relative above 1); a dynamic-batch export runs a
    batch of 2, its input and outputs declare a symbolic batch axis."""
    model = _case(name, darknet_at, make_weights)
    out = str(tmp_path / "m.onnx")
    export_onnx(model, out, dynamic_batch=dynamic)
    onnx.checker.check_model(out)
    size, batch = model.net.width, 2 if dynamic else 1
    if dynamic:
        graph = onnx.load(out).graph
        for v in list(graph.input) + list(graph.output):
            assert v.type.tensor_type.shape.dim[0].dim_param == "batch", v.name
    x = np.random.default_rng(0).uniform(0, 1, (batch, 3, size, size)).astype(np.float32)
    theirs = run_onnx(out, x)
    with torch.no_grad():
        ours = model(torch.from_numpy(x))
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        assert np.abs(a.numpy() - b).max() <= 1e-4 * max(1.0, float(np.abs(b).max()))


@needs_shared
def test_decoded_export_and_dynamic_batch(tmp_path, darknet_at, make_weights):
    model = _case("yolov4-tiny", darknet_at, make_weights)       # scale_x_y 1.05
    probe = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        before = model(probe)
    out = str(tmp_path / "d.onnx")
    export_onnx(model, out, dynamic_batch=True, decode=True)
    with torch.no_grad():                                       # exporting leaves the model be
        assert all(torch.equal(a, b) for a, b in zip(before, model(probe)))
    onnx.checker.check_model(out)
    x = np.random.default_rng(0).uniform(0, 1, (3, 3, 128, 128)).astype(np.float32)
    boxes, scores = run_onnx(out, x)
    assert boxes.shape[0] == 3 and scores.shape[2] == 80
    with torch.no_grad():
        raw = model(torch.from_numpy(x))
    layers = [l for l in model.net.layers if l.type == "yolo"]
    ref_boxes, ref_scores = [], []
    for r, l in zip(raw, layers):
        d = Y.decode(r, Y.Head.from_layer(l), (128, 128))
        cx, cy, w, h = d["boxes"].reshape(3, -1, 4).unbind(-1)
        ref_boxes.append(torch.stack([(cx - w / 2) * 128, (cy - h / 2) * 128,
                                      (cx + w / 2) * 128, (cy + h / 2) * 128], -1))
        ref_scores.append((d["obj"][..., None] * d["cls"]).reshape(3, -1, 80))
    ref_boxes, ref_scores = torch.cat(ref_boxes, 1).numpy(), torch.cat(ref_scores, 1).numpy()
    assert np.abs(boxes - ref_boxes).max() <= 1e-4 * max(1.0, float(np.abs(ref_boxes).max()))
    assert np.abs(scores - ref_scores).max() <= 1e-4


def test_export_traces_with_the_models_dtype(tmp_path):
    """A float64 model exports (the example input follows the parameters): onnx reads a
    double input, and the checker passes."""
    model = darkcfg.build_model(os.path.join(CFGS, "yolov3-tiny.cfg"), width=64,
                                height=64).double()
    out = str(tmp_path / "d.onnx")
    export_onnx(model, out)
    onnx.checker.check_model(out)
    kind = onnx.load(out).graph.input[0].type.tensor_type.elem_type
    assert kind == onnx.TensorProto.DOUBLE


def test_unexportable_layer_is_named(tmp_path):
    cfg = C.parse("[net]\nwidth=8\nheight=8\nchannels=3\n[crnn]\nhidden=4\noutput=4\nsize=3\n"
                  "pad=1\n", "r.cfg")
    with pytest.raises(DarkcfgError, match=r"layer 0 \[crnn\] cannot be exported"):
        export_onnx(darkcfg.build_model(cfg), str(tmp_path / "x.onnx"))
    assert not os.listdir(tmp_path)


def test_cli_export(tmp_path):
    from click.testing import CliRunner
    from darkcfg.cli import main
    out = tmp_path / "t.onnx"
    r = CliRunner().invoke(main, ["export", os.path.join(CFGS, "yolov3-tiny.cfg"), str(out),
                                  "--width", "96", "--height", "96"])
    assert r.exit_code == 0, r.output
    assert "head_15, head_22" in r.output
    onnx.checker.check_model(str(out))


def test_unsupported_opsets_are_one_clear_error(tmp_path, capfd):
    """--opset 99: a DarkcfgError naming the opsets torch can write; an opset too old for a
    layer (7: no Expand): a DarkcfgError of one line, and none of the exporter's graph dump on
    stdout; no output file either way."""
    model = darkcfg.build_model(os.path.join(CFGS, "yolov3-tiny.cfg"), width=64, height=64)
    with pytest.raises(DarkcfgError, match=r"opset 99 is not supported: .* exports opsets "
                                           r"\d+\.\.\d+"):
        export_onnx(model, str(tmp_path / "a.onnx"), opset=99)
    with pytest.raises(DarkcfgError, match=r"yolov3-tiny.cfg: cannot export at opset 7: ") as e:
        export_onnx(model, str(tmp_path / "b.onnx"), opset=7)
    assert "\n" not in str(e.value)
    captured = capfd.readouterr()
    assert "graph" not in captured.out and "graph" not in captured.err
    assert not os.listdir(tmp_path)

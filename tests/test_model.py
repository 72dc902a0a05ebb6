"""The builder against darknet's own forward pass and OpenCV's Darknet importer."""
from __future__ import annotations

import ctypes
import glob
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import darkcfg
from darkcfg.config import cfg as C
from darkcfg.config import shapes
from darkcfg.errors import DarkcfgError

from conftest import (CFGS, DARKNET_CFGS, REFERENCE, cfg_id, needs_shared, parsed_by_darknet)

NUMERIC = ["yolov3-tiny", "yolov4-tiny", "yolov2-tiny", "synthetic_mixed"]


def _numeric_cfg(name):
    folder = os.path.join(REFERENCE, "numeric", name)
    if name == "synthetic_mixed":
        return folder, os.path.join(folder, "model.cfg"), 64
    return folder, os.path.join(DARKNET_CFGS, f"{name}.cfg"), 128


@needs_shared
@pytest.mark.parametrize("fuse", [False, True], ids=["unfused", "fused"])
@pytest.mark.parametrize("name", NUMERIC)
def test_every_layer_matches_darknet(name, fuse, make_weights):
    """trace()[i] vs darknet's l.output of layer i: 1e-4 absolute, relative above 1 - with
    batch norms as they are, and folded into the convs."""
    folder, cfg_path, size = _numeric_cfg(name)
    model = darkcfg.load(make_weights(cfg_path), cfg_path, width=size, height=size, fuse=fuse)
    x = torch.from_numpy(np.load(os.path.join(folder, "input.npy")))
    outs = model.trace(x)
    files = sorted(glob.glob(os.path.join(folder, "all_layers", "layer_*.npy")))
    assert len(files) == len(outs)
    for i, (out, path) in enumerate(zip(outs, files)):
        ref = np.load(path)
        assert out.shape == ref.shape, f"layer {i}"
        err = np.abs(out.numpy() - ref) / np.maximum(1.0, np.abs(ref))
        assert err.max() < 1e-4, f"layer {i} ({os.path.basename(path)}): {err.max():.2e}"


@needs_shared
@pytest.mark.parametrize("name", NUMERIC)
def test_bf16_autocast_stays_near_darknet(name, make_weights):
    """Under torch.autocast (CPU, bfloat16: 8 significant bits) the convs run in bfloat16 and
    every layer stays within 2e-2 of darknet's float32 output (scaled by max(1, |layer|)).
    Measured: at most 1.23e-2 (yolov3-tiny's last [yolo] output, layer 23; 8.4e-3 the next
    largest) - bfloat16 rounds each conv's inputs to 2^-8 = 3.9e-3 relative, and it adds up
    over the layers; a layer computed wrongly in bf16 is off by far more."""
    folder, cfg_path, size = _numeric_cfg(name)
    model = darkcfg.load(make_weights(cfg_path), cfg_path, width=size, height=size)
    x = torch.from_numpy(np.load(os.path.join(folder, "input.npy")))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outs = model.trace(x)
    assert outs[0].dtype == torch.bfloat16         # layer 0 is a conv in all four
    for i, (out, path) in enumerate(zip(outs, sorted(glob.glob(
            os.path.join(folder, "all_layers", "layer_*.npy"))))):
        ref = np.load(path)
        err = np.abs(out.float().numpy() - ref).max() / max(1.0, np.abs(ref).max())
        assert err < 2e-2, f"layer {i}: {err:.2e}"


@needs_shared
def test_forward_returns_the_tensors_entering_the_heads(make_weights):
    folder, cfg_path, size = _numeric_cfg("yolov3-tiny")
    model = darkcfg.load(make_weights(cfg_path), cfg_path, width=size, height=size)
    x = torch.from_numpy(np.load(os.path.join(folder, "input.npy")))
    heads = model(x)
    assert [tuple(h.shape) for h in heads] == [(1, 255, 4, 4), (1, 255, 8, 8)]
    for h, i in zip(heads, (15, 22)):    # the convs right before the [yolo] layers 16 and 23
        ref = np.load(glob.glob(os.path.join(folder, "all_layers", f"layer_{i:03d}_*.npy"))[0])
        assert np.abs(h.detach().numpy() - ref).max() < 1e-4


@needs_shared
@pytest.mark.skipif(not any(shutil.which(c) for c in ("c++", "g++", "clang++")),
                    reason="torch.compile needs a C++ compiler for CPU kernels")
def test_compiled_model_matches_darknet(make_weights):
    """speed.compile_frozen of the fused, channels_last model: the tensors entering both
    [yolo] heads equal darknet's (layers 15 and 22) within 1e-4, for two calls."""
    from darkcfg.infer import speed
    folder, cfg_path, size = _numeric_cfg("yolov3-tiny")
    model = darkcfg.load(make_weights(cfg_path), cfg_path, width=size, height=size, fuse=True,
                         channels_last=True)
    run = speed.compile_frozen(model)
    x = torch.from_numpy(np.load(os.path.join(folder, "input.npy")))
    for _ in range(2):
        heads = run(x.contiguous(memory_format=torch.channels_last))
        for h, i in zip(heads, (15, 22)):
            ref = np.load(glob.glob(os.path.join(folder, "all_layers", f"layer_{i:03d}_*.npy"))[0])
            err = np.abs(h.numpy() - ref) / np.maximum(1.0, np.abs(ref))
            assert err.max() < 1e-4, f"layer {i}: {err.max():.2e}"


@pytest.mark.skipif(not sys.platform.startswith("linux") or not hasattr(
    ctypes.CDLL(None), "mallinfo2"), reason="glibc's malloc statistics (mallinfo2) needed")
def test_reuse_freed_memory_keeps_large_blocks_in_the_heap():
    """glibc's own statistics: before, a 100 MB block is mmapped (hblkhd) and handed back on
    free; after speed.reuse_freed_memory(), it comes from the heap (arena) and stays there;
    after reuse_freed_memory(False), it is mmapped again."""
    code = r"""
import ctypes, sys
import numpy as np
from darkcfg.infer import speed
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
big = 100 << 20
a = np.ones(big, np.uint8); mapped = libc.mallinfo2().hblkhd; del a
assert mapped >= big and libc.mallinfo2().hblkhd < big, "default malloc did not mmap"
assert speed.reuse_freed_memory() is True
arena = libc.mallinfo2().arena
a = np.ones(big, np.uint8)
grown = libc.mallinfo2().arena - arena     # the heap's free top may serve a few KB of it
assert libc.mallinfo2().hblkhd < big and grown > 0.9 * big, grown
del a
assert libc.mallinfo2().arena - arena == grown, "the freed block went back to the kernel"
assert speed.reuse_freed_memory(False) is True
b = np.ones(2 * big, np.uint8)     # more than the heap holds free: mmapped, not heap
assert libc.mallinfo2().hblkhd >= 2 * big, "not mmapped after reuse_freed_memory(False)"
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


@needs_shared
@pytest.mark.parametrize("name", NUMERIC)
def test_fused_equals_unfused(name, make_weights):
    folder, cfg_path, size = _numeric_cfg(name)
    weights = make_weights(cfg_path)
    plain = darkcfg.load(weights, cfg_path, width=size, height=size)
    fused = darkcfg.load(weights, cfg_path, width=size, height=size, fuse=True,
                         channels_last=True)
    from darkcfg.nn.layers import ConvBNAct
    assert not any(isinstance(m, ConvBNAct) and m.bn is not None for m in fused.modules())
    x = torch.from_numpy(np.load(os.path.join(folder, "input.npy")))
    for i, (a, b) in enumerate(zip(plain.trace(x), fused.trace(x))):
        assert ((a - b).abs().max() / max(1.0, b.abs().max())) < 1e-4, f"layer {i}"
    with pytest.raises(DarkcfgError, match="fused model"):
        darkcfg.weights.save_darknet(fused, "/nonexistent/never-written.weights")


def test_any_input_size_and_batch():
    model = darkcfg.build_model(os.path.join(CFGS, "yolov3-tiny.cfg"))
    outs = model(torch.zeros(3, 3, 160, 96))
    assert [tuple(o.shape) for o in outs] == [(3, 255, 5, 3), (3, 255, 10, 6)]


def test_sections_that_cannot_run_say_so():
    cfg = C.parse("[net]\nwidth=8\nheight=8\nchannels=3\n[crnn]\nhidden=4\noutput=4\nsize=3\n"
                  "pad=1\n", "r.cfg")
    model = darkcfg.build_model(cfg)             # sizes and weights work
    with pytest.raises(DarkcfgError, match=r"layer 0 \[crnn\]: cannot run"):
        model(torch.zeros(1, 3, 8, 8))


# --- OpenCV's Darknet importer as a second, independent oracle ---------------------------------

# Where OpenCV and darknet part, darknet wins (README, "Known differences").
OPENCV_DIFFERS = {
    "resnet152_trident": "dilated convs (dilation=3): darknet pads pad*dilation, OpenCV does "
                         "not; darkcfg matches darknet on synthetic_mixed's dilated layer",
    "yolov3-tiny_xnor": "OpenCV's importer ignores xnor=1 and runs a float conv; darkcfg "
                        "binarizes weights and inputs as darknet's forward does",
}


def _yolo_cfgs():
    return [p for p in parsed_by_darknet() if "[yolo]" in open(p, errors="replace").read()]


@needs_shared
@pytest.mark.parametrize("path", _yolo_cfgs(), ids=cfg_id)
def test_yolo_inputs_match_opencv(path, darknet_at):
    cv2 = pytest.importorskip("cv2")
    if cfg_id(path) in OPENCV_DIFFERS:
        pytest.skip(OPENCV_DIFFERS[cfg_id(path)])
    small, weights = darknet_at(cfg_id(path))
    net = shapes.infer(small)
    try:
        cvnet = cv2.dnn.readNetFromDarknet(small, weights)
    except cv2.error as e:
        pytest.skip(f"OpenCV refuses this cfg: {str(e).strip().splitlines()[-1][:80]}")
    names = list(cvnet.getLayerNames())
    heads = [l for l in net.heads if l.type == "yolo"]
    feeds = [names[names.index(f"permute_{l.index}") - 1] for l in heads]
    x = np.random.default_rng(0).uniform(0, 1, (1, net.channels, 128, 128)).astype(np.float32)
    cvnet.setInput(x)
    theirs = cvnet.forward(feeds)
    model = darkcfg.load(weights, small)
    ours = model(torch.from_numpy(x))
    assert len(ours) == len(theirs) == len(heads)
    for l, a, b in zip(heads, ours, theirs):
        a = a.detach().numpy()
        # 1e-4 of the tensor's scale (at least 1e-4 absolute).  Measured: <= 8.7e-5 on every
        # net but the Darknet-53 family (yolov3*, 3.2e-4..6e-4 at scale 3.9..7.3), where
        # ../shared/reference/README.md documents OpenCV's batch norm arithmetic parting from
        # darknet's by 2.2e-4 (yolov3) and 3.3e-4 (yolov3-spp).
        tol = 1e-4 * max(1.0, float(np.abs(b).max()))
        assert a.shape == b.shape
        assert np.abs(a - b).max() <= tol, f"layer {l.index}: {np.abs(a - b).max():.2e}"


@pytest.mark.parametrize("size, stride, padding, h, w", [
    (2, (1, 1), 1, 7, 7), (2, (2, 2), 1, 7, 7), (2, (2, 2), 1, 6, 6), (3, (2, 2), 2, 7, 7),
    (3, (1, 1), 2, 5, 5), (2, (1, 2), 1, 5, 6), (4, (1, 1), 3, 6, 6), (3, (1, 1), 1, 6, 6),
    (5, (1, 1), 4, 6, 6), (3, (3, 3), 0, 9, 8),
])
def test_maxpool_equals_darknets_loop(size, stride, padding, h, w):
    """Every fast path against darknet's forward_maxpool_layer written as plain loops: the
    window starts at -padding/2, out-of-range cells are skipped."""
    from darkcfg.nn.layers import MaxPool
    x = torch.randn(1, 2, h, w)
    oh, ow = (h + padding - size) // stride[0] + 1, (w + padding - size) // stride[1] + 1
    want = torch.full((1, 2, oh, ow), -math.inf)
    off = -(padding // 2)
    for c in range(2):
        for i in range(oh):
            for j in range(ow):
                for n in range(size):
                    for m in range(size):
                        y, xx = off + i * stride[0] + n, off + j * stride[1] + m
                        if 0 <= y < h and 0 <= xx < w:
                            want[0, c, i, j] = max(want[0, c, i, j], x[0, c, y, xx])
    got = MaxPool(dict(size=size, stride=stride, padding=padding, depth=False), 2)(x)
    assert torch.equal(got, want)


# --- softmax trees (yolo9000) ------------------------------------------------------------------

# a-b are roots; c, d, e children of a; f, g of b; h of a again, after f, g: darknet's read_tree
# makes every run of one parent a group, so h is a group of its own
SMALL_TREE = "a -1\nb -1\nc 0\nd 0\ne 0\nf 1\ng 1\nh 0\n"
GROUPS = [[0, 1], [2, 3, 4], [5, 6], [7]]


def _softmax(v):
    e = [math.exp(x - max(v)) for x in v]
    return [x / sum(e) for x in e]


def _tree_region_cfg(tmp_path, classes=8):
    (tmp_path / "small.tree").write_text(SMALL_TREE)
    per = 4 + 1 + classes
    return C.parse(f"[net]\nwidth=2\nheight=1\nchannels={per}\n[region]\nclasses={classes}\n"
                   f"coords=4\nnum=1\nsoftmax=1\nanchors=1,1\ntree=data/small.tree\n",
                   str(tmp_path / "r.cfg"))


def test_region_tree_softmax_by_hand(tmp_path):
    """darknet's forward_region_layer with tree=: a softmax within each group of the tree
    (softmax_tree on index + 5), objectness logistic, x, y, w, h raw; computed by hand."""
    model = darkcfg.build_model(_tree_region_cfg(tmp_path, classes=9))    # 9th: past the tree
    x = torch.tensor([0.1 * k - 0.7 for k in range(14)], dtype=torch.float64)
    inp = torch.stack([x, -x], 1).reshape(1, 14, 1, 2)                   # two cells
    out = model.double().trace(inp)[0].reshape(1, 1, 2, 14)
    for cell, v in ((0, x.tolist()), (1, (-x).tolist())):
        got = out[0, 0, cell].tolist()
        assert got[:4] == pytest.approx(v[:4])
        assert got[4] == pytest.approx(1 / (1 + math.exp(-v[4])))
        want = [p for g in GROUPS for p in _softmax([v[5 + i] for i in g])]
        assert got[5:13] == pytest.approx(want, abs=1e-12)
        assert got[13] == v[13]                                          # raw, as darknet
        for g in GROUPS:
            assert sum(got[5 + i] for i in g) == pytest.approx(1)


def test_tree_region_loaded_from_weights(tmp_path):
    """load() builds on the meta device and then fills the state_dict: the tree's groups (not
    in the state_dict) must survive that - every group sums to 1 after loading."""
    from conftest import write_counting_weights
    (tmp_path / "small.tree").write_text(SMALL_TREE)
    cfg = tmp_path / "c.cfg"
    cfg.write_text("[net]\nwidth=2\nheight=2\nchannels=3\n[convolutional]\nfilters=13\nsize=1\n"
                   "activation=linear\n[region]\nclasses=8\ncoords=4\nnum=1\nsoftmax=1\n"
                   "anchors=1,1\ntree=small.tree\n")
    w = write_counting_weights(tmp_path / "c.weights", 13 + 13 * 3)
    model = darkcfg.load(w, str(cfg))
    out = model.trace(torch.rand(1, 3, 2, 2) * 1e-3)[-1].reshape(2, 2, 13)[..., 5:]
    for g in GROUPS:
        assert torch.allclose(out[..., g].sum(-1), torch.ones(2, 2))


def test_softmax_layer_tree_by_hand(tmp_path):
    (tmp_path / "small.tree").write_text(SMALL_TREE)
    cfg = C.parse("[net]\nwidth=1\nheight=1\nchannels=9\n[softmax]\ntemperature=2\n"
                  "tree=small.tree\n", str(tmp_path / "s.cfg"))
    x = [0.3 * k for k in range(9)]
    out = darkcfg.build_model(cfg).double()(torch.tensor(x, dtype=torch.float64)
                                            .reshape(1, 9, 1, 1))[0].flatten().tolist()
    want = [p for g in GROUPS for p in _softmax([x[i] / 2 for i in g])]
    assert out[:8] == pytest.approx(want, abs=1e-12) and out[8] == 0


def test_decode_region_tree_gives_each_nodes_probability(tmp_path):
    """get_region_detections' hierarchy_predictions: p(c) = p(c | a) * p(a), by hand."""
    from darkcfg.objective import yolo as Y
    cfg = _tree_region_cfg(tmp_path)
    net = shapes.infer(cfg)
    v = [0.0] * 5 + [0.5, -0.5, 1.0, 2.0, 0.0, 0.3, 0.1, 4.0]
    raw = torch.tensor([v, v], dtype=torch.float64).T.reshape(1, 13, 1, 2)
    cls = Y.decode_region(raw, net.layers[0])["cls"][0, 0, 0, 0].tolist()
    pa, pb = _softmax([0.5, -0.5])
    pc, pd, pe = _softmax([1.0, 2.0, 0.0])
    pf, pg = _softmax([0.3, 0.1])
    assert cls == pytest.approx([pa, pb, pc * pa, pd * pa, pe * pa, pf * pb, pg * pb, 1 * pa])


def test_region_tree_probs_keep_the_deepest_class_over_half():
    """get_region_boxes (tree, no map): from the last class down, the first with p > 0.5 is
    kept, every other class is 0; all 0 when objectness <= thresh."""
    from darkcfg.objective import yolo as Y
    cls = torch.tensor([[0.9, 0.1, 0.6, 0.3, 0.0, 0.05, 0.05, 0.7],
                        [0.9, 0.1, 0.6, 0.3, 0.0, 0.05, 0.05, 0.2],
                        [0.4, 0.6, 0.1, 0.1, 0.2, 0.45, 0.15, 0.3],
                        [0.9, 0.1, 0.6, 0.3, 0.0, 0.05, 0.05, 0.2]])
    obj = torch.tensor([0.3, 0.3, 0.3, 0.2])
    got = Y.region_tree_probs(cls, obj, 0.24)
    want = torch.zeros(4, 8)
    want[0, 7], want[1, 2], want[2, 1] = 0.7, 0.6, 0.6
    assert torch.equal(got, want)


def test_bad_tree_files_say_where(tmp_path):
    for text, words in (("a -1\nb 5\n", "small.tree:2: parent 5 must be -1"),
                        ("a -1\nb\x00\x00 0\n", "small.tree:2: NUL bytes"),
                        ("a -1\nb x\n", "small.tree:2: expected 'name parent'")):
        cfg = _tree_region_cfg(tmp_path)
        (tmp_path / "small.tree").write_text(text)
        with pytest.raises(DarkcfgError, match=words):
            darkcfg.build_model(cfg)
    cfg = C.parse("[net]\nwidth=1\nheight=1\nchannels=3\n[softmax]\ntree=none.tree\n",
                  str(tmp_path / "s.cfg"))
    with pytest.raises(DarkcfgError, match=r"s.cfg:6: \[softmax\] \(layer 0\): option 'tree': "
                                           r"softmax tree 'none.tree' not found"):
        darkcfg.build_model(cfg)


@needs_shared
def test_yolo9000_runs(tmp_path):
    """yolo9000.cfg (9418 classes, tree=data/9k.tree, found beside the cfg) runs (its [region]
    output was checked against darknet built from source: within 2.1e-6); with darknet's
    9418-node tree every group of every anchor's classes sums to 1 (the groups counted here
    from the file's lines, not by darkcfg); a damaged tree (NUL bytes) is refused by line."""
    src = os.path.join(DARKNET_CFGS, "yolo9000.cfg")
    model = darkcfg.build_model(src, width=64, height=64)
    with torch.no_grad():
        out = model.trace(torch.rand(1, 3, 64, 64))[-1]                 # (1, 2, 2, 3 * 9423)
    cls = out.reshape(1, 2, 2, 3, 9423)[..., 5:]
    group, last = [], None                # a group: a run of consecutive lines with one parent
    with open(os.path.join(DARKNET_CFGS, "9k.tree")) as f:
        for line in f:
            parent = line.split()[1]
            group.append(len(set(group)) if parent != last else group[-1])
            last = parent
    assert len(group) == 9418
    sums = torch.zeros(1, 2, 2, 3, group[-1] + 1).index_add_(-1, torch.tensor(group), cls)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
    lines = open(os.path.join(DARKNET_CFGS, "9k.tree"), "rb").read().split(b"\n")
    lines[5803] = lines[5803][:4] + b"\0" * 8
    (tmp_path / "9k.tree").write_bytes(b"\n".join(lines))
    cfg = C.load(src)
    cfg.path = str(tmp_path / "yolo9000.cfg")
    for sec in cfg.sections:
        sec.path = cfg.path
    with pytest.raises(DarkcfgError, match=r"9k.tree:5804: NUL bytes"):
        darkcfg.build_model(cfg, width=64, height=64)


# --- inputs a user may hand the library ----------------------------------------------------------

def test_huge_input_is_refused_before_allocating():
    """yolov3-tiny at 100000 x 100000: layer 1 (maxpool 2/2) holds its 16 x 100000^2 input
    and 16 x 50000^2 output at once: 2e11 floats, with the 8,858,734 floats of weights
    (8,858,734 * 4 bytes; darknet's yolov3-tiny.weights is 35,434,956 bytes with its 20-byte
    header) 745.1 GiB - more than any machine this runs on; refused with that figure."""
    need = 4 * (16 * 100000 ** 2 + 16 * 50000 ** 2 + (35_434_956 - 20) // 4) / 2 ** 30
    assert f"{need:,.1f}" == "745.1"
    with pytest.raises(DarkcfgError, match=r"yolov3-tiny.cfg:\d+: \[net\] \(net\): a 100000 x "
                                           r"100000 input needs at least 745.1 GiB .*layer 1 "
                                           r"\[maxpool\]"):
        darkcfg.build_model(os.path.join(CFGS, "yolov3-tiny.cfg"), width=100000, height=100000)
    # the same cfg at its own size builds (its estimate: a few MiB)
    assert shapes.infer(os.path.join(CFGS, "yolov3-tiny.cfg")).forward_bytes() < 2 ** 27


def test_huge_input_is_refused_when_loading_weights(tmp_path):
    from conftest import write_counting_weights
    cfg = os.path.join(CFGS, "yolov3-tiny.cfg")
    w = write_counting_weights(tmp_path / "t.weights", shapes.infer(cfg).totals()["weights"])
    with pytest.raises(DarkcfgError, match="needs at least"):
        darkcfg.load(w, cfg, width=100000, height=100000)


def test_paths_may_be_pathlib(tmp_path):
    """load, build_model and shapes.infer take pathlib.Path as well as str."""
    import pathlib
    from conftest import write_counting_weights
    cfg = pathlib.Path(CFGS) / "yolov3-tiny.cfg"
    net = shapes.infer(cfg)
    assert net.totals() == shapes.infer(str(cfg)).totals()
    assert darkcfg.build_model(cfg, width=64, height=64).net.width == 64
    w = pathlib.Path(write_counting_weights(tmp_path / "t.weights", net.totals()["weights"]))
    model = darkcfg.load(w, cfg, weights_cfg=cfg)
    assert model.layers[0].conv.weight.flatten()[0].item() == 16 + 3 * 16  # biases, BN, weights
    darkcfg.weights.save_pt(model, str(tmp_path / "t.pt"))
    assert darkcfg.load(tmp_path / "t.pt").layers[0].conv.weight.flatten()[0].item() == 64


# --- bf16 and other dtypes for inference ------------------------------------------------------

@needs_shared
@pytest.mark.parametrize("fuse", [False, True], ids=["unfused", "fused"])
@pytest.mark.parametrize("name", NUMERIC)
def test_bf16_model_stays_near_darknet(name, fuse, make_weights):
    """load(..., dtype="bf16"): weights, buffers and input in bfloat16 (8 significant bits),
    every layer within 3e-2 of darknet's float32 output, scaled by max(1, |layer|).
    Measured: 6.2e-3 (yolov4-tiny fused) to 1.4e-2 (yolov3-tiny, layer 23)."""
    folder, cfg_path, size = _numeric_cfg(name)
    model = darkcfg.load(make_weights(cfg_path), cfg_path, width=size, height=size, fuse=fuse,
                         dtype="bf16")
    assert {p.dtype for p in model.state_dict().values() if p.is_floating_point()} == \
        {torch.bfloat16}
    x = torch.from_numpy(np.load(os.path.join(folder, "input.npy")))
    outs = model.trace(x.to(**model.placement()))
    files = sorted(glob.glob(os.path.join(folder, "all_layers", "layer_*.npy")))
    assert len(outs) == len(files) and outs[-1].dtype == torch.bfloat16
    for i, (out, path) in enumerate(zip(outs, files)):
        ref = np.load(path)
        err = np.abs(out.float().numpy() - ref).max() / max(1.0, np.abs(ref).max())
        assert err < 3e-2, f"layer {i}: {err:.2e}"


@pytest.mark.parametrize("given, want", [
    (None, torch.float32), ("fp32", torch.float32), ("float32", torch.float32),
    ("bf16", torch.bfloat16), ("BF16", torch.bfloat16), ("bfloat16", torch.bfloat16),
    ("torch.bfloat16", torch.bfloat16), (torch.bfloat16, torch.bfloat16),
    ("fp16", torch.float16), (torch.float16, torch.float16), ("fp64", torch.float64),
])
def test_resolve_dtype(given, want):
    from darkcfg.nn.model import resolve_dtype
    assert resolve_dtype(given) is want


@pytest.mark.parametrize("given, fragment", [
    ("int4", "choose one of fp32, bf16, fp16, fp64, auto"), ("", "choose one of"),
    ("int8", "not a cast: quantise with darkcfg.load"),          # infer.int8 quantises
    (torch.int32, "float32, bfloat16, float16 or float64"),
])
def test_bad_dtypes_say_what_is_allowed(given, fragment):
    from darkcfg.nn.model import resolve_dtype
    with pytest.raises(DarkcfgError, match=fragment):
        resolve_dtype(given)


@pytest.mark.parametrize("flags, want", [
    ({"avx2", "avx512f", "avx512_bf16"}, torch.bfloat16),    # AMD Zen 4/5, Intel Cooper Lake
    ({"avx2", "avx512f", "amx_tile", "amx_bf16"}, torch.bfloat16),  # Intel Sapphire Rapids
    ({"avx2", "avx512f", "avx512_vnni"}, torch.float32),     # Skylake/Cascade Lake: emulated
    ({"avx2", "fma"}, torch.float32), (set(), torch.float32),
    ({"asimd", "bf16"}, torch.float32),                      # ARM bf16: never measured
])
def test_auto_dtype_is_bf16_only_with_native_bf16_instructions(flags, want):
    from darkcfg.infer import speed
    dtype, why = speed.auto_dtype("cpu", flags)
    assert dtype is want
    assert ("amx_bf16" in why or "avx512_bf16" in why) == (want is torch.bfloat16)


@pytest.mark.parametrize("flags, want", [
    ({"avx2", "avx512f", "avx512_vnni"}, "avx512_vnni"),       # Cascade Lake, AMD Zen 4/5
    ({"avx2", "avx_vnni"}, "avx_vnni"),                        # Alder Lake: VEX-encoded VNNI
    ({"avx2", "avx512f", "amx_tile", "amx_int8", "avx512_vnni"}, "amx_int8"),
    ({"avx2", "fma"}, None), ({"avx2", "avx512f", "avx512bw"}, None),   # Skylake-SP: no VNNI
    (set(), None),
])
def test_int8_dot_names_the_cpus_int8_dot_product(flags, want):
    """int8.quantize keeps the first conv in float32 where this says None (16-bit sums)."""
    from darkcfg.nn.dtypes import int8_dot
    assert int8_dot(flags) == want


@pytest.mark.parametrize("capability, want", [((9, 0), torch.bfloat16), ((8, 0), torch.bfloat16),
                                              ((7, 5), torch.float32), ((6, 1), torch.float32)])
def test_auto_dtype_on_cuda_follows_the_compute_capability(capability, want, monkeypatch):
    from darkcfg.infer import speed
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda dev=None: capability)
    assert speed.auto_dtype("cuda")[0] is want
    assert speed.auto_dtype("mps")[0] is torch.float32


@pytest.mark.parametrize("text, want", [
    ("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile amx_bf16\n\n"
     "processor\t: 1\nflags\t\t: fpu\n", ["avx2", "avx512f", "avx512_bf16", "amx_tile",
                                         "amx_bf16"]),
    ("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n", []),
    ("model name\t: something\n", None),             # no flags line: torch's probes answer
])
def test_cpu_features_from_cpuinfo(text, want, tmp_path):
    from darkcfg.infer import speed
    (tmp_path / "cpuinfo").write_text(text)
    flags = speed.cpu_flags(str(tmp_path / "cpuinfo"))
    if want is None:
        assert flags == speed._torch_cpu_flags()
    else:
        assert speed.cpu_features(flags) == want
    assert speed.cpu_flags(str(tmp_path / "missing")) == speed._torch_cpu_flags()


def test_auto_follows_this_processor():
    from darkcfg.infer import speed
    native = bool({"amx_bf16", "avx512_bf16"} & speed.cpu_flags())
    model = darkcfg.build_model(os.path.join(CFGS, "yolov3-tiny.cfg"), width=64, height=64,
                                dtype="auto")
    assert model.placement()["dtype"] is (torch.bfloat16 if native else torch.float32)


def test_for_inference_copy_leaves_the_model_as_it_was():
    """A bf16 copy is fused (batch norms folded in float32) and cast; the original stays
    float32, unfused, in training mode - still writable as .weights."""
    from darkcfg.nn.model import for_inference
    model = darkcfg.build_model(os.path.join(CFGS, "yolov3-tiny.cfg"), width=64, height=64)
    model.train()
    fast = for_inference(model, "bf16", "cpu", copy=True)
    assert fast.placement()["dtype"] is torch.bfloat16 and fast.fused and not fast.training
    assert model.placement()["dtype"] is torch.float32 and model.training
    assert not getattr(model, "fused", False) and model.layers[0].bn is not None
    same = for_inference(model, "fp32")                       # fp32: not fused, not copied
    assert same is model and not getattr(model, "fused", False)


@pytest.mark.parametrize("name, fragment", [
    ("cuda:7", "CUDA"), ("tpu", "not a device name"), ("meta", "runs on cpu, cuda or mps"),
])
def test_devices_this_machine_lacks_are_named(name, fragment):
    from darkcfg.nn.model import device_of
    if name.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    with pytest.raises(DarkcfgError, match=fragment):
        device_of(name)
    assert device_of("cpu") == torch.device("cpu")


# --- the source's layer order survives the library's round trip ------------------------------

@needs_shared
def test_library_round_trip_keeps_the_files_layer_order(make_weights, tmp_path):
    """A .weights file in yolov3.cfg's order (darknet's reference writer), loaded as yolo_ref
    with weights_cfg=yolov3, saved as .pt, loaded again: save_darknet writes the original file
    back byte for byte (both cfgs at width_scale 0.25 to keep the file small)."""
    from darkcfg.files import weights as W
    v3, ref = (str(tmp_path / n) for n in ("v3.cfg", "ref.cfg"))
    for src, dst in (("yolov3.cfg", v3), ("yolo_ref.cfg", ref)):
        C.save(C.rewrite(C.load(os.path.join(CFGS, src)), width_scale=0.25), dst)
    original = make_weights(v3)
    model = darkcfg.load(original, ref, weights_cfg=v3)
    assert model.weights_cfg == C.load(v3).to_text()
    W.save_pt(model, str(tmp_path / "m.pt"), model.header)
    back = darkcfg.load(str(tmp_path / "m.pt"))
    assert back.header == W.read_header(original)[0]
    W.save_darknet(back, str(tmp_path / "back.weights"), back.header)
    with open(original, "rb") as f, open(tmp_path / "back.weights", "rb") as g:
        assert f.read() == g.read()
    # the .pt's own order (yolo_ref's) is another file: the order really was carried
    W.save_darknet(back, str(tmp_path / "ref.weights"), back.header, shapes.infer(ref))
    with open(original, "rb") as f, open(tmp_path / "ref.weights", "rb") as g:
        assert f.read() != g.read()

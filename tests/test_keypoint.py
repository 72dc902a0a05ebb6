"""The keypoint model: targets by hand, round trip, gradcheck, weights, overfit."""
from __future__ import annotations

import math
import os
import re

import numpy as np
import pytest
import torch

import darkcfg
from darkcfg.objective import keypoint as K
from darkcfg.config import shapes
from darkcfg.files import weights as W
from darkcfg.config.shapes import network

from _helpers import bce, run_cli
from conftest import CFGS, write_counting_weights

SMALL = """[net]
width=64
height=64
channels=3
[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=leaky
[convolutional]
batch_normalize=1
filters=32
size=3
stride=2
pad=1
activation=leaky
[convolutional]
batch_normalize=1
filters=32
size=3
stride=1
pad=1
activation=leaky
[keypoint]
classes=3
head={head}
tower=2
tower_filters=16
sigma=1
loss={loss}
"""


def small(head="separate", loss="bce"):
    return SMALL.format(head=head, loss=loss)


# --- targets by hand -------------------------------------------------------------------------------

def test_gaussian_values_at_known_offsets():
    t = K.encode([torch.tensor([[0.375, 0.375]])], [torch.tensor([1])], (4, 4), 3, sigma=1.0)
    # keypoint at (1.5, 1.5) cells: the centre of cell (1, 1)
    ctr = t[0, ..., -2]
    assert ctr[1, 1] == 1
    assert abs(ctr[1, 2] - math.exp(-1 / 2)) < 1e-12           # one cell right: d = 1
    assert abs(ctr[2, 2] - math.exp(-2 / 2)) < 1e-12           # diagonal: d^2 = 2
    assert abs(ctr[3, 1] - math.exp(-4 / 2)) < 1e-12
    assert t[0, 1, 1, :2].tolist() == [0.5, 0.5] and t[0, 1, 1, -1] == 1
    assert t[0, 1, 1, 2:5].tolist() == [0, 1, 0] and t[0, 3, 3, 2:5].tolist() == [0, 0, 0]


def test_two_keypoints_in_one_cell():
    """Both fall in cell (0, 0) of a 2x2 grid; (0.2, 0.2) is nearer its centre (0.25, 0.25)
    than (0.05, 0.45), so it labels the cell: its class and its offset."""
    pts = torch.tensor([[0.05, 0.45], [0.2, 0.2]])
    t = K.encode([pts], [torch.tensor([0, 2])], (2, 2), 3, sigma=1.0)
    assert t[0, 0, 0, 2:5].tolist() == [0, 0, 1]
    assert torch.allclose(t[0, 0, 0, :2], torch.tensor([0.4, 0.4], dtype=torch.float64))
    assert t[0, 0, 0, -2] == 1


def test_keypoint_on_a_cell_border():
    """x = 0.5 on a 4-wide grid is the border between cells 1 and 2: it belongs to cell 2
    (floor), offset 0; cell 1's centre is as near, and gets the Gaussian exp(-0.25/2)."""
    t = K.encode([torch.tensor([[0.5, 0.125]])], [torch.tensor([0])], (4, 4), 3, sigma=1.0)
    assert t[0, 0, 2, -1] == 1 and t[0, 0, 2, 0] == 0 and t[0, 0, 2, 1] == 0.5
    assert t[0, 0, 2, -2] == 1 and abs(t[0, 0, 1, -2] - math.exp(-0.25 / 2)) < 1e-12
    assert t[0, 0, 1, -1] == 0


def test_round_trip_exact():
    g = torch.Generator().manual_seed(0)
    pts = [torch.rand(4, 2, generator=g, dtype=torch.float64) * 0.9 + 0.05 for _ in range(2)]
    cls = [torch.randint(0, 3, (4,), generator=g) for _ in range(2)]
    net = network(small())
    t = K.encode(pts, cls, (16, 16), 3, sigma=1.0)
    found = K.decode([K.raw_from_targets(t)], net, thresh=0.5, merge_radius=0)
    for kps, p, c in zip(found, pts, cls):
        got = sorted((k.cls, k.x / 64, k.y / 64) for k in kps)
        want = sorted((int(ci), float(x), float(y)) for ci, (x, y) in zip(c, p))
        assert len(got) == len(want)
        for a, b in zip(got, want):
            assert a[0] == b[0] and abs(a[1] - b[1]) < 1e-6 and abs(a[2] - b[2]) < 1e-6


@pytest.mark.parametrize("kind", ["bce", "l2", "wbce", "focal"])
def test_gradcheck(kind):
    net = network(small(loss=kind))
    layer = K.heads_of(net)[0]
    t = K.encode([torch.tensor([[0.3, 0.6]])], [torch.tensor([2])], (3, 3), 3, sigma=1.0)
    raw = torch.randn(1, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda r: K.loss([r], [t], [layer])[0], (raw,))


def test_loss_by_hand():
    layer = K.heads_of(network(small()))[0]
    t = K.encode([torch.tensor([[0.25, 0.25]])], [torch.tensor([1])], (1, 1), 3, sigma=1.0)
    raw = torch.tensor([0.1, -0.2, 0.3, 0.4, -0.5, 0.6], dtype=torch.float64).reshape(1, 6, 1, 1)
    _, parts = K.loss([raw], [t], [layer])

    assert abs(parts["reg"].item() - (bce(0.1, 0.25) + bce(-0.2, 0.25))) < 1e-12
    assert abs(parts["cls"].item() - (bce(0.3, 0) + bce(0.4, 1) + bce(-0.5, 0))) < 1e-12
    assert abs(parts["ctr"].item() - bce(0.6, 1)) < 1e-12


# --- cfg, weights, backbone --------------------------------------------------------------------

@pytest.mark.parametrize("head", ["shared", "separate"])
def test_weights_round_trip_and_summary(head, tmp_path):
    cfg = tmp_path / "kp.cfg"
    cfg.write_text(small(head))
    w, pt, back = tmp_path / "k.weights", tmp_path / "k.pt", tmp_path / "b.weights"
    assert run_cli("init", cfg, w).exit_code == 0
    assert run_cli("convert", w, pt, "--cfg", cfg, "-q").exit_code == 0
    assert run_cli("convert", pt, back, "-q").exit_code == 0
    assert w.read_bytes() == back.read_bytes()
    net = shapes.infer(str(cfg))
    model = darkcfg.build_model(net, device="meta")
    assert net.totals()["params"] == sum(p.numel() for p in model.parameters())
    r = run_cli("summary", cfg)
    assert r.exit_code == 0 and "keypoint" in r.output


def test_darknet53_backbone_loads_and_freezes(tmp_path):
    kp = os.path.join(CFGS, "yolo_kp.cfg")
    net = shapes.infer(kp)
    n = W.expected_floats(net, 75)
    assert n == 40_620_640
    src = write_counting_weights(tmp_path / "darknet53.conv.74", n)
    model, report = darkcfg.load_weights(src, kp, cutoff=75, width=64, height=64)
    assert report.loaded == 52 and model.layers[0].bn.bias[5].item() == 5
    model.freeze(75).train()
    assert not any(p.requires_grad for l in model.layers[:75] for p in l.parameters())
    assert all(p.requires_grad for p in model.layers[85].parameters())
    assert not model.layers[0].training and model.layers[85].training


# --- overfit --------------------------------------------------------------------------------------

def test_overfit_dots():
    """Dots of 3 classes (one colour channel each) at known positions on 2 images: after 200
    steps every decoded keypoint is within one stride of its truth with the right class, and
    nothing else is above the threshold."""
    torch.manual_seed(0)
    model = darkcfg.build_model(small())
    layer = K.heads_of(model)[0]
    pts = [torch.tensor([[0.2, 0.3], [0.7, 0.7]]), torch.tensor([[0.5, 0.25], [0.3, 0.8],
                                                                 [0.8, 0.4]])]
    cls = [torch.tensor([0, 1]), torch.tensor([2, 0, 1])]
    imgs = torch.zeros(2, 3, 64, 64)
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    for i, (p, c) in enumerate(zip(pts, cls)):
        for (x, y), k in zip(p.tolist(), c.tolist()):
            imgs[i, k] += torch.exp(-((xx - x * 64) ** 2 + (yy - y * 64) ** 2) / 8)
    t = K.encode(pts, cls, (16, 16), 3, sigma=1.0)
    model.eval()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(200):
        loss, _ = K.loss(model(imgs), [t], [layer])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        found = K.decode(model(imgs), model, thresh=0.3)
    for kps, p, c in zip(found, pts, cls):
        assert len(kps) == len(p)
        for (x, y), k in zip(p.tolist(), c.tolist()):
            near = min(kps, key=lambda q: math.hypot(q.x - x * 64, q.y - y * 64))
            assert near.cls == k and math.hypot(near.x - x * 64, near.y - y * 64) < 4   # stride 4


@pytest.mark.parametrize("pts, cls, words", [
    ([[0.5, 1.5]], [0], "image 0, point 0: (x, y) = (0.5, 1.5) is outside the image"),
    ([[0.5, 0.5]], [3], "class id 3 is outside the 3 classes"),
    ([[0.5, 0.5]], [0, 1], "1 points but 2 class ids"),
])
def test_encode_rejects_what_it_cannot_place(pts, cls, words):
    import re
    from darkcfg.errors import DarkcfgError
    with pytest.raises(DarkcfgError, match=re.escape(words)):
        K.encode([torch.tensor(pts)], [torch.tensor(cls)], (4, 4), 3, sigma=1.0)


# --- detect: points back in the image, drawn -------------------------------------------------------

def _points_at(tmp_path, points, classes):
    """The small shared-head model whose output is the encoding of ``points`` (input pixels of
    its 64x64 input) of ``classes``, and a black 128x64 image to run it on."""
    from PIL import Image
    model = darkcfg.build_model(small("shared"))
    t = K.encode([torch.tensor(points, dtype=torch.float32) / 64], [torch.tensor(classes)],
                 (16, 16), 3, sigma=1.0)
    model.forward = lambda x: [K.raw_from_targets(t).float()]
    src = tmp_path / "a.png"
    Image.new("RGB", (128, 64), (0, 0, 0)).save(src)
    return model, src


def test_detect_keypoints_maps_back_and_draws(tmp_path):
    """A 128x64 image letterboxed (letter_box=True) into 64x64 (64x32 at y 16): a head output
    with keypoints at input (16, 32) class 0 and (50, 20) class 2 gives image points (32, 32)
    and (100, 8); the drawing has each point's class colour at its place."""
    from PIL import Image
    model, src = _points_at(tmp_path, [[16, 32], [50, 20]], [0, 2])
    kps, img = K.detect_keypoints(model, str(src), thresh=0.5, letter_box=True)
    got = sorted((k.cls, round(k.x, 3), round(k.y, 3)) for k in kps)
    assert got == [(0, 32.0, 32.0), (2, 100.0, 8.0)]
    K.draw_points(img, kps, ["dot", "ring", "star"], str(tmp_path / "out.png"))
    out = np.asarray(Image.open(tmp_path / "out.png").convert("RGB"))
    for k in kps:
        hue = (k.cls * 67) % 255
        assert tuple(out[int(k.y), int(k.x)]) == (hue, 255 - hue, (hue * 3) % 255)
    assert out.shape == (64, 128, 3) and (out[50:, :20] == 0).all()    # the rest untouched


def test_detect_keypoints_drops_points_on_the_border(tmp_path):
    """The same 128x64 image letterboxed (64x32 at input rows 16..48): a point found at input
    (40, 8), on the grey border above the image, is dropped, not clamped to (80, 0) on the
    image's edge.  Stretched - the default for a cfg without letter_box, as darknet's detector
    test without -letter_box - the image fills the input: x scales by 128 / 64, y by 64 / 64,
    and both points are in it."""
    model, src = _points_at(tmp_path, [[16, 32], [40, 8]], [0, 1])
    kps, _ = K.detect_keypoints(model, str(src), thresh=0.5, letter_box=True)
    assert [(k.cls, round(k.x, 3), round(k.y, 3)) for k in kps] == [(0, 32.0, 32.0)]
    for letter_box in (None, False):
        kps, _ = K.detect_keypoints(model, str(src), thresh=0.5, letter_box=letter_box)
        assert sorted((k.cls, round(k.x, 3), round(k.y, 3)) for k in kps) == \
            [(0, 32.0, 32.0), (1, 80.0, 8.0)]
    # a cfg with [net] letter_box=1 letterboxes when letter_box is not given
    boxed = darkcfg.build_model(small("shared").replace("[net]\n", "[net]\nletter_box=1\n"))
    boxed.forward = model.forward
    kps, _ = K.detect_keypoints(boxed, str(src), thresh=0.5)
    assert [(k.cls, round(k.x, 3), round(k.y, 3)) for k in kps] == [(0, 32.0, 32.0)]


def test_detect_keypoints_refuses_a_box_model():
    from darkcfg.errors import DarkcfgError
    model = darkcfg.build_model(os.path.join(CFGS, "yolov3-tiny.cfg"), width=64, height=64)
    with pytest.raises(DarkcfgError, match=r"needs \[keypoint\] heads"):
        K.detect_keypoints(model, "nothing.png")


# --- `darkcfg detect` on a [keypoint] cfg ----------------------------------------------------------

POINT_CFG = "[net]\nwidth=64\nheight=64\nchannels=3\n[keypoint]\nclasses=2\nhead=shared\n"


def _point_model(tmp_path):
    """A stride-1 [keypoint] head on the input, its darknet .weights written here by hand
    (header 0.2.0, seen 0; the 1x1 conv's 5 biases, then its 5x3 weights): reg offsets
    sigmoid(logit .2) = .2 and .7 in every cell; class 0 logit 20 (R - G - B) - 10 (red),
    class 1 20 (G - R - B) - 10 (green), centerness 20 (R + G + B) - 10.  On black the score is
    sigmoid(-10)^2; on a red (255, 0, 0) pixel class 0 scores sigmoid(10)^2 = 99.99%, on a
    (0, 200, 0) pixel class 1 scores sigmoid(20 * 200/255 - 10)^2 = 99.3%."""
    cfg = tmp_path / "kp.cfg"
    cfg.write_text(POINT_CFG)
    bias = [math.log(.2 / .8), math.log(.7 / .3), -10, -10, -10]
    weight = [[0, 0, 0], [0, 0, 0], [20, -20, -20], [-20, 20, -20], [20, 20, 20]]
    w = tmp_path / "kp.weights"
    w.write_bytes(np.array([0, 2, 0], np.int32).tobytes() + np.array([0], np.int64).tobytes()
                  + np.array(bias + sum(weight, []), np.float32).tobytes())
    (tmp_path / "kp.names").write_text("red\ngreen\n")
    return str(cfg), str(w), str(tmp_path / "kp.names")


def _dots(path):
    """64x31 black with a red pixel at (10, 5) and a (0, 200, 0) one at (40, 20).  Letterboxed
    into 64x64 it is not resized, only embedded at row (64 - 31) // 2 = 16: the pixels are
    input cells (10, 21) and (40, 36), decoded at cell + offset (.2, .7), back in the image at
    (10.2, 5.7) and (40.2, 20.7).  (darknet's continuous box offset, 16.5, would put them
    half a pixel higher.)"""
    from PIL import Image
    a = np.zeros((31, 64, 3), np.uint8)
    a[5, 10] = (255, 0, 0)
    a[20, 40] = (0, 200, 0)
    Image.fromarray(a).save(path)
    return str(path)


def _printed_points(output):
    return [(name, float(s), float(x), float(y)) for name, s, x, y in
            re.findall(r"^  (.+?): ([\d.]+)%  ([\d.]+) ([\d.]+)$", output, re.M)]


def test_detect_cli_prints_and_draws_keypoints(tmp_path):
    from PIL import Image
    cfg, w, names = _point_model(tmp_path)
    img = _dots(tmp_path / "dots.png")
    r = run_cli("detect", img, "--cfg", cfg, "--weights", w, "--names", names, "-o", tmp_path / "o",
             "--letter-box")
    assert r.exit_code == 0, r.output
    assert f"{img}: 2 points (64 x 31)" in r.output
    assert _printed_points(r.output) == [("red", 100.0, 10.2, 5.7), ("green", 99.3, 40.2, 20.7)]
    out = np.asarray(Image.open(tmp_path / "o" / "dots.png").convert("RGB"))
    assert out.shape == (31, 64, 3)
    assert tuple(out[5, 10]) == (0, 255, 0)               # class 0: hue 0 -> (0, 255, 0)
    assert tuple(out[20, 40]) == (67, 188, 201)           # class 1: hue 67
    assert (out[26:, :30] == 0).all()                     # away from points and labels: black
    # --thresh between the two scores, --max-det 1: the red point alone; --nms is for boxes
    for extra in (["--thresh", .995], ["--max-det", 1, "--nms", .3]):
        r = run_cli("detect", img, "--cfg", cfg, "--weights", w, "--letter-box", *extra)
        assert r.exit_code == 0, r.output
        assert f"{img}: 1 points (64 x 31)" in r.output
        assert _printed_points(r.output) == [("class 0", 100.0, 10.2, 5.7)]
    assert "warning: --nms is for boxes" in r.output


def test_detect_cli_stretches_unless_letterboxing(tmp_path):
    """A 22x64 image with a red pixel at (15, 10) and a (0, 200, 0) one at (3, 40).  Stretched
    into 64x64 (the default: no letter_box in the cfg) darknet's resize scales x by
    (22 - 1) / (64 - 1) = 1/3 exactly and leaves y alone: the pixels land whole on input
    columns 45 and 9 (the columns beside them get 2/3 of them), are decoded at (45.2, 10.7) and
    (9.2, 40.7), and come back at x * 22 / 64: (15.5375, 10.7) and (3.1625, 40.7).
    Letterboxed (--letter-box, or the cfg's [net] letter_box=1) the image is not resized, only
    embedded at column (64 - 22) // 2 = 21: back at (15.2, 10.7) and (3.2, 40.7)."""
    from PIL import Image
    cfg, w, _ = _point_model(tmp_path)
    a = np.zeros((64, 22, 3), np.uint8)
    a[10, 15] = (255, 0, 0)
    a[40, 3] = (0, 200, 0)
    img = str(tmp_path / "tall.png")
    Image.fromarray(a).save(img)
    r = run_cli("detect", img, "--cfg", cfg, "--weights", w)
    assert r.exit_code == 0, r.output
    assert _printed_points(r.output) == [("class 0", 100.0, 15.5, 10.7),
                                         ("class 1", 99.3, 3.2, 40.7)]
    (tmp_path / "boxed.cfg").write_text(POINT_CFG.replace("[net]\n", "[net]\nletter_box=1\n"))
    for args in (["--cfg", cfg, "--letter-box"], ["--cfg", tmp_path / "boxed.cfg"]):
        r = run_cli("detect", img, "--weights", w, *args)
        assert r.exit_code == 0, r.output
        assert _printed_points(r.output) == [("class 0", 100.0, 15.2, 10.7),
                                             ("class 1", 99.3, 3.2, 40.7)]
    model = darkcfg.load(w, cfg)
    kps, _ = K.detect_keypoints(model, img, thresh=0.5)
    assert [(k.cls, round(k.x, 4), round(k.y, 4)) for k in kps] == [(0, 15.5375, 10.7),
                                                                     (1, 3.1625, 40.7)]


def test_detect_cli_keypoint_bad_inputs(tmp_path):
    cfg, w, names = _point_model(tmp_path)
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    r = run_cli("detect", bad, "--cfg", cfg, "--weights", w, "-o", tmp_path / "never")
    assert r.exit_code == 1 and "Error: " in r.output and "not an image" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "never").exists()
    r = run_cli("detect", tmp_path / "missing.png", "--cfg", cfg, "--weights", w, "-o",
             tmp_path / "never")
    assert r.exit_code == 2 and "does not exist" in r.output            # a bad argument
    assert not (tmp_path / "never").exists()
    # a good image, then a bad one: the first is drawn, the bad one stops with exit 1
    good = _dots(tmp_path / "good.png")
    r = run_cli("detect", good, bad, "--cfg", cfg, "--weights", w, "-o", tmp_path / "o")
    assert r.exit_code == 1 and "not an image" in r.output
    assert os.listdir(tmp_path / "o") == ["good.png"]


def test_detect_refuses_mixed_or_missing_heads():
    from darkcfg.infer import detect as D
    from darkcfg.errors import DarkcfgError
    conv = "[convolutional]\nfilters={}\nsize=1\nactivation=linear\n"
    mixed = ("[net]\nwidth=8\nheight=8\nchannels=3\n" + conv.format(4)
             + "[keypoint]\nclasses=2\nhead=shared\n[route]\nlayers=-2\n" + conv.format(7)
             + "[yolo]\nclasses=2\nnum=1\nmask=0\nanchors=4,4\n")
    for text, found in ((mixed, "found [keypoint], [yolo]"),
                        ("[net]\nwidth=8\nheight=8\nchannels=3\n[maxpool]\n", "found none")):
        with pytest.raises(DarkcfgError, match=re.escape(found)):
            D.head_kind(darkcfg.build_model(text))

"""Running a model the way darknet's detector map does.  The model here is built so that its
output is known by hand: a [maxpool] to a 1x1 grid and a 1x1 conv with zero weights, so the
[yolo] head sees only the conv's biases - two centred boxes of known objectness and class
probabilities, whatever the image.  Every expected figure is worked out from darknet's rules."""
import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import darkcfg
from darkcfg.evaluation import validate as V
from darkcfg.errors import DarkcfgError

cv2 = pytest.importorskip("cv2")

CFG = """[net]
width=32
height=32
channels=3
{net_extra}

[maxpool]
size=32
stride=32

[convolutional]
size=1
stride=1
pad=0
filters=14
activation=linear

[yolo]
mask=0,1
anchors={anchors}
classes=2
num=2
{yolo_extra}
"""


def logit(p):
    return math.log(p / (1 - p))


def make_model(tmp_path, net_extra="", yolo_extra="", probs=((.9, .2, 1 / 3), (.9, .9, 0)),
               b=20, swap=False):
    """Anchor A (12.8 px = 0.4 of the input) and B (``b`` px: 20 = 0.625), both centred; per
    anchor (objectness, p(class 0), p(class 1)).  ``swap``: B is the first anchor."""
    path = tmp_path / "t.cfg"
    anchors = [(12.8, probs[0]), (b, probs[1])][::-1 if swap else 1]
    probs = [p for _, p in anchors]
    text = ", ".join(f"{a},{a}" for a, _ in anchors)
    path.write_text(CFG.format(net_extra=net_extra, yolo_extra=yolo_extra, anchors=text))
    model = darkcfg.build_model(str(path))
    bias = torch.zeros(14)
    for a, (obj, c0, c1) in enumerate(probs):
        bias[7 * a + 4] = logit(obj)
        bias[7 * a + 5] = logit(c0) if c0 > 0 else -30.0
        bias[7 * a + 6] = logit(c1) if c1 > 0 else -30.0
    with torch.no_grad():
        model.layers[1].conv.weight.zero_()
        model.layers[1].conv.bias.copy_(bias)
    return model, str(path)


def image(tmp_path, name, w, h, labels):
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    p = folder / name
    cv2.imwrite(str(p), np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8))
    (folder / (os.path.splitext(name)[0] + ".txt")).write_text(labels)
    return str(p)


@pytest.mark.parametrize("swap", [False, True])
def test_detection_order_is_darknets_for_the_counts_at_thresh(tmp_path, swap):
    # one gt of class 0, centred, 0.5 of the image.  A (0.4) and B (0.625) both overlap it by
    # IoU 0.64 and each other by 0.41 (< .45: NMS keeps both).  darknet's last NMS pass sorts
    # the boxes by p(class 1): A (.3) before B (0), so A's class-0 detection (.18, under .25)
    # comes first and owns the gt - B's .81 is a FP at thresh.  The ranking still puts B first.
    # Neither score order (B first) nor anchor order (B first when swapped) gives this.
    model, _ = make_model(tmp_path, swap=swap)
    p = image(tmp_path, "a.png", 32, 32, "0 0.5 0.5 0.5 0.5\n")
    got = V.collect(model, [p])
    d = got.dets[0]
    assert d[:, 5].tolist() == [0, 1, 0]                   # A class 0, A class 1, B class 0
    assert d[:, 4] == pytest.approx([.9 * .2, .9 / 3, .9 * .9], rel=1e-5)
    assert d[0, :4] == pytest.approx([9.6, 9.6, 22.4, 22.4], abs=1e-4)
    r = V.evaluate_model(model, [p])
    assert (r.total_tp, r.total_fp, r.total_fn) == (0, 2, 1)
    assert r.ap.tolist() == [1.0, 0.0] and r.map == 0.5    # class 1 has no gt: AP 0 counts


def test_detections_under_the_detection_threshold_are_dropped(tmp_path):
    # objectness .9 * p .005 = .0045 <= .005: no detection; .9 * .006 = .0054 > .005: one
    model, _ = make_model(tmp_path, probs=((.9, .005, .006), (.001, .9, .9)))
    p = image(tmp_path, "a.png", 32, 32, "")
    d = V.collect(model, [p]).dets[0]
    assert d[:, 5].tolist() == [1]


def test_nms_suppresses_above_045_and_its_kind_comes_from_the_cfg(tmp_path):
    # A 0.4 and B 0.5 of the input, both centred: IoU .64 > .45 -> B (higher) suppresses A
    probs = ((.9, .5, 0), (.9, .8, 0))
    p = image(tmp_path, "a.png", 32, 32, "")
    model, _ = make_model(tmp_path, probs=probs, b=16)
    assert V.collect(model, [p]).dets[0][:, 4] == pytest.approx([.72], rel=1e-5)
    model, _ = make_model(tmp_path, probs=probs)             # 0.4 vs 0.625: IoU .41, both kept
    assert len(V.collect(model, [p]).dets[0]) == 2
    # greedynms: DIoU = IoU - (d/c)^0.6 = IoU for concentric boxes: same suppression
    model, _ = make_model(tmp_path, yolo_extra="nms_kind=greedynms", probs=probs, b=16)
    assert V.nms_kind(model.net) == ("diou", 0.6)
    assert len(V.collect(model, [p]).dets[0]) == 1
    model, _ = make_model(tmp_path, yolo_extra="nms_kind=diounms\nbeta_nms=0.8", probs=probs)
    assert V.nms_kind(model.net) == ("diou", 0.8)


def test_diou_nms_keeps_distant_centres():
    # two equal boxes offset so IoU = 0.4545 > .45, but their DIoU (beta .6) is 0.29
    boxes = np.array([[0.3, 0.5, 0.4, 0.4], [0.45, 0.5, 0.4, 0.4]], np.float32)
    prob = np.array([[0.9], [0.8]], np.float32)
    iou = 0.25 * 0.4 / (2 * 0.16 - 0.25 * 0.4)
    d_c = 0.15 ** 2 / (0.55 ** 2 + 0.4 ** 2)
    assert iou > 0.45 and iou - d_c ** 0.6 < 0.45
    assert (V.darknet_nms(boxes, prob, kind="iou")[0][:, 0] > 0).tolist() == [True, False]
    assert (V.darknet_nms(boxes, prob, kind="diou", beta=0.6)[0][:, 0] > 0).tolist() == \
        [True, True]


def test_letter_box_from_the_cfg_changes_the_boxes(tmp_path):
    # a 64x32 image.  Letterboxed into 32x32 it fills 32x16 (rows 8..24); the 0.5-of-input box
    # B' maps back to 0.5 of the image's width and 1.0 of its height.  The gt is that box, so
    # letterboxed it is found (IoU 1); stretched, the box is 0.5 x 0.5 of the image: IoU 0.5,
    # not > 0.5: not found.
    probs = ((.001, .9, 0), (.9, .9, 0))
    p = image(tmp_path, "wide.png", 64, 32, "0 0.5 0.5 0.5 1.0\n")
    lb, _ = make_model(tmp_path, net_extra="letter_box=1", probs=probs, b=16)
    got = V.collect(lb, [p])
    assert got.letter_box is True
    assert got.dets[0][0, :4] == pytest.approx([16, 0, 48, 32], abs=1e-3)
    assert V.evaluate_model(lb, [p]).map == pytest.approx(0.5)     # class 0: 1, class 1: 0
    assert V.evaluate_model(lb, [p], letter_box=False).map == 0.0
    plain, _ = make_model(tmp_path, probs=probs, b=16)
    assert V.collect(plain, [p]).dets[0][0, :4] == pytest.approx([16, 8, 48, 24], abs=1e-3)
    assert V.evaluate_model(plain, [p]).map == 0.0


def _darknet_resize_loops(im, w, h):
    """darknet's resize_image written out loop by loop in float32 (src/image.c), with the
    last-row share added where the next source row exists (see V.resize_image)."""
    f = np.float32
    c, ih, iw = im.shape
    part = np.zeros((c, ih, w), f)
    ws, hs = f(iw - 1) / f(w - 1), f(ih - 1) / f(h - 1)
    for k in range(c):
        for r in range(ih):
            for col in range(w):
                if col == w - 1 or iw == 1:
                    part[k, r, col] = im[k, r, iw - 1]
                else:
                    sx = f(col) * ws
                    ix = int(sx)
                    dx = sx - f(ix)
                    part[k, r, col] = (f(1) - dx) * im[k, r, ix] + dx * im[k, r, ix + 1]
    out = np.zeros((c, h, w), f)
    for k in range(c):
        for r in range(h):
            sy = f(r) * hs
            iy = int(sy)
            dy = sy - f(iy)
            out[k, r] = (f(1) - dy) * part[k, iy]
            if iy + 1 < ih:
                out[k, r] += dy * part[k, iy + 1]
    return out


@pytest.mark.parametrize("src, dst", [((13, 17), (8, 8)), ((5, 7), (16, 12)), ((9, 9), (9, 4))])
def test_resize_is_darknets_arithmetic(src, dst):
    rng = np.random.default_rng(1)
    im = rng.uniform(0, 1, (3,) + src).astype(np.float32)
    got = V.resize_image(im, *dst)
    assert np.array_equal(got, _darknet_resize_loops(im, *dst))
    # and it is align-corners bilinear (PyTorch's, in double): same to float32 rounding
    ref = F.interpolate(torch.from_numpy(im)[None].double(), size=dst[::-1], mode="bilinear",
                        align_corners=True)[0].numpy()
    assert np.abs(got - ref).max() < 1e-5


def test_letterbox_geometry_is_darknets():
    im = np.ones((3, 30, 100), np.float32)
    out = V.letterbox_image(im, 32, 32)
    # new size (100*32/100, 30*32/100) = (32, 9); embedded at row (32-9)//2 = 11
    rows = np.flatnonzero(out[0, :, 0] == 1.0)
    assert (rows[0], len(rows)) == (11, 9) and out[0, 0, 0] == np.float32(0.5)
    b = np.array([[0.5, 0.5, 0.25, 9 / 32]], np.float32)
    back = V.correct_boxes(b, (100, 30), (32, 32), True)
    # darknet's continuous offset (32 - 9) / 2 / 32 and scale 9/32
    assert back[0] == pytest.approx([0.5, (0.5 - 11.5 / 32) / (9 / 32), 0.25, 1.0], abs=1e-6)


def _write_data(tmp_path, paths, classes=2, names=("cat", "dog")):
    (tmp_path / "valid.txt").write_text("\n".join(paths) + "\n")
    (tmp_path / "t.names").write_text("\n".join(names) + "\n")
    data = tmp_path / "t.data"
    data.write_text(f"classes={classes}\nvalid={tmp_path / 'valid.txt'}\n"
                    f"names={tmp_path / 't.names'}\n")
    return str(data)


def _one_image_set(tmp_path, labels="0 0.5 0.5 0.5 0.5\n", net_extra=""):
    """make_model's network saved as t.weights, and a .data of one 32x32 image with
    ``labels``: (data, cfg, weights, image)."""
    from darkcfg.files import weights as W
    model, cfg = make_model(tmp_path, net_extra=net_extra)
    wpath = str(tmp_path / "t.weights")
    W.save_darknet(model, wpath)
    p = image(tmp_path, "a.png", 32, 32, labels)
    return _write_data(tmp_path, [p]), cfg, wpath, p


def test_main_map_from_files_prints_darknets_lines_and_json(tmp_path):
    data, cfg, wpath, p = _one_image_set(tmp_path)
    text = V.main_map(data, cfg, wpath, progress=False)
    assert text.startswith("\n calculation mAP (mean average precision)...\n"
                           " Detection layer: 2 - type = 28 \n")
    assert "class_id = 0, name = cat, ap = 100.00%   \t (TP = 0, FP = 1) \n" in text
    assert " mean average precision (mAP@0.50) = 0.500000, or 50.00 % \n" in text
    doc = json.loads(V.main_map(data, cfg, wpath, as_json=True, coco=True, progress=False,
                                save_detections=str(tmp_path / "d.json"),
                                plot=str(tmp_path / "plots")))
    assert doc["darknet"]["map"] == 0.5 and doc["coco"]["AP50"] == pytest.approx(1.0)
    assert len(json.loads((tmp_path / "d.json").read_text())) == 3
    assert (tmp_path / "plots" / "confusion.png").exists()
    r = V.run_map(data, cfg, wpath, points=11)
    assert r.points == 11 and r.map == 0.5


def test_map_outputs_never_replace_its_inputs_or_old_plots(tmp_path):
    from darkcfg.dataset import data as D
    data, cfg, wpath, p = _one_image_set(tmp_path)
    for target in (tmp_path / "valid.txt", tmp_path / "t.names", D.label_path(p), p):
        before = open(target, "rb").read()
        with pytest.raises(DarkcfgError, match="is also an input"):
            V.main_map(data, cfg, wpath, progress=False, save_detections=str(target), force=True)
        assert open(target, "rb").read() == before
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "pr_curve.png").write_bytes(b"an old plot")
    with pytest.raises(DarkcfgError, match="pr_curve.png: already exists"):
        V.main_map(data, cfg, wpath, progress=False, plot=str(plots), force=False)
    assert (plots / "pr_curve.png").read_bytes() == b"an old plot"
    V.main_map(data, cfg, wpath, progress=False, plot=str(plots), force=True)
    assert (plots / "pr_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_inputs_name_the_file(tmp_path):
    data, cfg, wpath, p = _one_image_set(
        tmp_path, "0 0.5 0.5 0.5 0.5\n1 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DarkcfgError, match=r"a\.txt:3: class 7 is out of range"):
        V.run_map(data, cfg, wpath)
    broken = tmp_path / "images" / "b.png"
    broken.write_bytes(b"not a png")
    data = _write_data(tmp_path, [str(broken)])
    with pytest.raises(DarkcfgError, match="b.png"):
        V.run_map(data, cfg, wpath)
    data = _write_data(tmp_path, [p], classes=3)
    with pytest.raises(DarkcfgError, match=r"t\.data:1: classes=3.*2 classes"):
        V.run_map(data, cfg, wpath)
    data = _write_data(tmp_path, [p], names=("cat",))
    with pytest.raises(DarkcfgError, match=r"t\.names: 1 names"):
        V.run_map(data, cfg, wpath)
    with pytest.raises(DarkcfgError, match="points"):
        V.main_map(data, cfg, wpath, points=1)


def test_batching_keeps_each_images_detections(trained):
    """The learning test's model (its detections follow the image) over its 32 held-out images
    of 64..128 px, one at a time and 5 to a batch (the last batch short): each image gets its
    own detections back and the same mAP.  Batched convolutions may add in another order:
    measured max difference 3.2e-5 px (tolerance 1e-3 px)."""
    from darkcfg.nn import model as M
    from darkcfg.training import train as T
    data, cfg, r = trained
    model = M.load(r.files["final"], cfg)
    paths = T._valid_paths(data)
    one = V.collect(model, paths, batch=1)
    five = V.collect(model, paths, batch=5)
    assert len({d.tobytes() for d in one.dets}) == len(paths)        # no two images alike
    for path, a, b in zip(paths, one.dets, five.dets):
        assert a.shape == b.shape and np.abs(a - b).max(initial=0) <= 1e-3, path
    m1 = V.evaluate_model(model, paths, batch=1)
    m5 = V.evaluate_model(model, paths, batch=5)
    assert m1.format() == m5.format() and m1.map > 0.5


@pytest.mark.parametrize("net_extra, flag, want", [
    ("", None, False), ("", True, True),                  # the flag counts where the cfg is silent
    ("letter_box=0", True, False),                        # the cfg's [net] overrides it (darknet)
    ("letter_box=1", None, True)])
def test_letter_box_the_cfg_overrides_the_flag(tmp_path, net_extra, flag, want):
    data, cfg, wpath, _ = _one_image_set(tmp_path, "", net_extra)
    s = V.setup(data, cfg, wpath, letter_box=flag)
    assert s.letter_box is want
    assert bool(s.notes) is (flag is True and not want)


def test_coco_image_ids_from_file_names():
    assert V.coco_image_ids(["a/COCO_val2014_000000000042.jpg", "b/000000000139.jpg"]) == \
        [42, 139]
    assert V.coco_image_ids(["x/cat.jpg", "y/000000000139.jpg"]) == [0, 1]   # not all numbered
    assert V.coco_image_ids(["x/1.jpg", "y/1.jpg"]) == [0, 1]                # not distinct


def test_a_training_model_stays_in_training_mode(tmp_path):
    model, _ = make_model(tmp_path)
    model.train()
    V.evaluate_model(model, [image(tmp_path, "a.png", 32, 32, "")])
    assert model.training


def test_region_heads_yolov2(tmp_path):
    # the same two centred boxes from a [region] (anchors in grid units, softmax classes):
    # A 0.4 with p = (.2, .8), B 0.625 with (.9, .1), objectness .9 each.  The class-1 pass
    # puts A (.72) before B (.09), so A's class-0 .18 owns the gt and B's class-0 .81 is a FP
    # at thresh; the ranking finds the gt with B first: AP 1 for class 0, 0 for class 1.
    text = CFG.format(net_extra="", yolo_extra="", anchors="").split("[yolo]")[0] + \
        "[region]\nanchors=0.4,0.4, 0.625,0.625\nclasses=2\ncoords=4\nnum=2\nsoftmax=1\n"
    path = tmp_path / "r.cfg"
    path.write_text(text)
    model = darkcfg.build_model(str(path))
    bias = torch.zeros(14)
    bias[4], bias[5], bias[6] = logit(.9), 0.0, math.log(4)
    bias[11], bias[12], bias[13] = logit(.9), math.log(9), 0.0
    with torch.no_grad():
        model.layers[1].conv.weight.zero_()
        model.layers[1].conv.bias.copy_(bias)
    p = image(tmp_path, "a.png", 32, 32, "0 0.5 0.5 0.5 0.5\n")
    d = V.collect(model, [p]).dets[0]
    assert d[:, 5].tolist() == [0, 1, 0, 1]
    assert d[:, 4] == pytest.approx([.18, .72, .81, .09], rel=1e-5)
    assert d[2, :4] == pytest.approx([6, 6, 26, 26], abs=1e-4)
    r = V.evaluate_model(model, [p])
    assert (r.total_tp, r.total_fp, r.ap.tolist()) == (0, 2, [1.0, 0.0])


# ----- keypoint models: the head's output set by hand ---------------------------------------------

KP_CFG = """[net]
width=64
height=64
channels=3
{net_extra}
[convolutional]
batch_normalize=1
filters=8
size=3
stride=4
pad=1
activation=leaky
[keypoint]
classes=2
head=shared
"""


def kp_model(tmp_path, net_extra=""):
    path = tmp_path / "kp.cfg"
    path.write_text(KP_CFG.format(net_extra=net_extra))
    return darkcfg.build_model(str(path)), str(path)


def kp_images(tmp_path):
    """Three images with labels; the points in each image's pixels: a keypoint line, a box line
    (its centre is the point), none."""
    specs = [((128, 64), ["0 0.25 0.5", "1 0.75 0.25"]),
             ((64, 64), ["1 0.5 0.5 0.2 0.4"]),                    # a box: its centre
             ((50, 100), [])]
    paths = []
    for i, ((w, h), lines) in enumerate(specs):
        p = tmp_path / f"k{i}.png"
        cv2.imwrite(str(p), np.full((h, w, 3), 90, np.uint8))
        (tmp_path / f"k{i}.txt").write_text("".join(l + "\n" for l in lines))
        paths.append(str(p))
    return paths


def fake_head(model, points_per_call, shift=(0.0, 0.0)):
    """Make ``model`` output, at its n-th call, keypoints at points_per_call[n] (input pixels
    (x, y, class), moved by ``shift``) - keypoint.raw_from_targets of their targets."""
    from darkcfg.objective import keypoint as K
    calls = iter(points_per_call)

    def forward(x):
        pts, cls = [], []
        for p in next(calls):
            p = np.asarray(p, np.float64).reshape(-1, 3)
            pts.append(torch.tensor((p[:, :2] + shift) / 64))
            cls.append(torch.tensor(p[:, 2], dtype=torch.long))
        t = K.encode(pts, cls, (16, 16), 2, sigma=1.0)
        return [K.raw_from_targets(t).float()]
    model.forward = forward
    return model


# the gts in input pixels, by hand: image 0 (128x64) resized to 64x64: x * 64, y * 64;
# letterboxed: 64x32 embedded at y0 = 16
STRETCHED = [[(16, 32, 0), (48, 16, 1)], [(32, 32, 1)], []]
LETTERBOXED = [[(16, 16 + 16, 0), (48, 16 + 8, 1)], [(32, 32, 1)], []]


@pytest.mark.parametrize("net_extra, truth", [("", STRETCHED), ("letter_box=1", LETTERBOXED)])
def test_keypoint_ground_truth_in_input_pixels(tmp_path, net_extra, truth):
    model, _ = kp_model(tmp_path, net_extra)
    paths = kp_images(tmp_path)
    got = V.collect_keypoints(fake_head(model, [[t] for t in truth]), paths, batch=1)
    for g, t in zip(got.gts, truth):
        np.testing.assert_allclose(g, np.asarray(t, float).reshape(-1, 3), atol=1e-9)
    # the predictions are decode's positions, here the same points
    for d, t in zip(got.dets, truth):
        np.testing.assert_allclose(d[:, [0, 1, 3]][np.lexsort((d[:, 1], d[:, 0]))],
                                   np.asarray(sorted(t), float).reshape(-1, 3), atol=1e-4)
    if truth is LETTERBOXED:                      # 50x100 letterboxed: 32x64 at x0 = 16
        np.testing.assert_allclose(V.points_to_input(np.array([[0, .5, .25, 0, 0]]), (50, 100),
                                                     (64, 64), True), [[16 + 16, 16, 0]])


def test_keypoint_metric_of_a_model_by_hand(tmp_path):
    """Every prediction 1 px right of its gt: all match within the default radius (one stride,
    4 px) with error 1; within 0.5 px none does."""
    paths = kp_images(tmp_path)
    model, _ = kp_model(tmp_path)
    assert V.default_radius(model.net) == 4
    r = V.evaluate_keypoints(fake_head(model, [STRETCHED], shift=(1, 0)), paths)
    assert r.map == 1.0 and (r.total_tp, r.total_fp, r.total_fn) == (3, 0, 0)
    assert r.loc_error == pytest.approx(1.0, abs=1e-4) and r.radius == 4
    model, _ = kp_model(tmp_path)
    r = V.evaluate_keypoints(fake_head(model, [STRETCHED], shift=(1, 0)), paths, radius=0.5)
    assert r.map == 0.0 and r.total_fp == 3
    # evaluate_model (what training's -map calls) gives the same for a keypoint model
    model, _ = kp_model(tmp_path)
    r2 = V.evaluate_model(fake_head(model, [STRETCHED], shift=(1, 0)), paths)
    assert r2.map == 1.0


def test_keypoint_main_map_text_json_plots(tmp_path, monkeypatch):
    paths = kp_images(tmp_path)
    model, cfg = kp_model(tmp_path)
    (tmp_path / "v.txt").write_text("\n".join(paths) + "\n")
    (tmp_path / "n.names").write_text("dot\ncross\n")
    data = tmp_path / "kp.data"
    data.write_text(f"classes=2\nvalid={tmp_path}/v.txt\nnames={tmp_path}/n.names\n")

    def loaded(*a, **k):
        m, _ = kp_model(tmp_path)
        return fake_head(m, [STRETCHED], shift=(0, 2))
    monkeypatch.setattr(V, "load_model", loaded)
    text = V.main_map(str(data), cfg, "x.pt", progress=False)
    assert "class_id = 0, name = dot, ap = 100.00%" in text
    assert "mean localisation error = 2.00 px" in text and "mAP@4px) = 1.000000" in text
    text = V.main_map(str(data), cfg, "x.pt", progress=False, radius=1.5)
    assert "mAP@1.5px) = 0.000000" in text
    doc = json.loads(V.main_map(str(data), cfg, "x.pt", progress=False, as_json=True,
                                plot=str(tmp_path / "plots"),
                                save_detections=str(tmp_path / "kp.json")))
    assert doc["keypoints"]["map"] == 1.0 and doc["keypoints"]["radius"] == 4
    assert doc["detections_file"]["detections"] == 3
    saved = json.loads((tmp_path / "kp.json").read_text())
    got = np.array(sorted((d["x"], d["y"]) for d in saved))
    assert np.allclose(got, [(16, 34), (32, 34), (48, 18)], atol=1e-3), got
    assert os.path.exists(tmp_path / "plots" / "pr_curve.png")
    with pytest.raises(DarkcfgError, match="--coco scores boxes"):
        V.main_map(str(data), cfg, "x.pt", progress=False, coco=True)
    with pytest.raises(DarkcfgError, match="--radius must be a positive"):
        V.main_map(str(data), cfg, "x.pt", progress=False, radius=-1)


def test_radius_on_a_box_cfg_is_refused(tmp_path):
    model, _ = make_model(tmp_path)
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((32, 32, 3), np.uint8))
    (tmp_path / "l.txt").write_text(f"{img}\n")
    (tmp_path / "b.data").write_text(f"classes=2\nvalid={tmp_path}/l.txt\n")
    pt = tmp_path / "m.pt"
    from darkcfg.files import weights as W
    W.save_pt(model, str(pt))
    with pytest.raises(DarkcfgError, match="--radius is the match radius of a \\[keypoint\\]"):
        V.main_map(str(tmp_path / "b.data"), None, str(pt), progress=False, radius=4)

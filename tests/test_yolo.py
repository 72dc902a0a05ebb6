"""The objective: decode/encode round trip, hand-computed losses, gradcheck, OpenCV decode,
NMS, and an overfit run."""
from __future__ import annotations

import math
import os
import re

import numpy as np
import pytest
import torch

import darkcfg
from darkcfg.objective import yolo as Y

from _helpers import bce, corners, iou, noise_image, plain_nms
from conftest import CFGS, needs_shared

TINY = os.path.join(CFGS, "yolov3-tiny.cfg")


def one_head(anchors=((10.0, 20.0),), classes=2, **kw):
    return Y.Head(torch.tensor(anchors, dtype=torch.float64), list(range(len(anchors))), classes,
                  **kw)


# --- decode / encode -------------------------------------------------------------------------------

@pytest.mark.parametrize("scale, new_coords", [(1.0, 0), (1.2, 0), (2.0, 1)])
@pytest.mark.parametrize("rule", ["per_scale", "best_of_all"])
def test_encode_decode_round_trip(scale, new_coords, rule):
    model_net = darkcfg.shapes.infer(TINY)
    heads = Y.heads_of(model_net)
    for h in heads:
        h.scale_x_y, h.new_coords = scale, new_coords
    g = torch.Generator().manual_seed(0)
    boxes = [torch.rand(5, 4, generator=g, dtype=torch.float64) * 0.8 + 0.1 for _ in range(2)]
    classes = [torch.randint(0, 80, (5,), generator=g) for _ in range(2)]
    t = Y.encode_targets(boxes, classes, heads, [(13, 13), (26, 26)], (416, 416), rule)
    seen = 0
    for y, head in zip(t.per_head, heads):
        raw = Y.raw_offsets(y, head, (416, 416))
        d = Y.decode(raw, head, (416, 416))
        pos = y[..., 4] > 0
        seen += int(pos.sum())
        if pos.any():
            assert (d["boxes"][pos] - y[..., :4][pos]).abs().max() < 1e-6
    assert seen == (20 if rule == "per_scale" else 10)


def test_decode_by_hand():
    head = one_head(((10.0, 20.0),), classes=1, scale_x_y=1.2)
    raw = torch.zeros(1, 6, 2, 3, dtype=torch.float64)        # grid h=2, w=3
    raw[0, :, 1, 2] = torch.tensor([0.0, math.log(3), math.log(2), 0.0, 0.0, 0.0])
    d = Y.decode(raw, head, (100, 50))
    # x: (sigmoid(0)*1.2 - 0.1 + 2) / 3 ; y: (0.75*1.2 - 0.1 + 1) / 2 ; w: 10*2/100 ; h: 20/50
    want = [(0.5 * 1.2 - 0.1 + 2) / 3, (0.75 * 1.2 - 0.1 + 1) / 2, 0.2, 0.4]
    assert torch.allclose(d["boxes"][0, 1, 2, 0], torch.tensor(want, dtype=torch.float64))


def test_targets_by_hand():
    heads = [one_head(((10.0, 10.0), (40.0, 40.0)), classes=3)]
    box = torch.tensor([[0.55, 0.30, 0.10, 0.10]])          # 40 x 40 px in a 400 x 400 input
    t = Y.encode_targets([box], [torch.tensor([2])], heads, [(4, 4)], (400, 400))
    y = t.per_head[0]
    assert y[..., 4].sum() == 1 and y[0, 1, 2, 1, 4] == 1    # row 0.3*4=1, col 0.55*4=2, anchor 1
    assert torch.equal(y[0, 1, 2, 1, :4], box[0]) and y[0, 1, 2, 1, 5:].tolist() == [0, 0, 1]


YOLOV3 = os.path.join(CFGS, "yolov3.cfg")


def _positives(t):
    """[(head, row, col, anchor, class)] of every positive, in order."""
    out = []
    for k, y in enumerate(t.per_head):
        for b, r, c, a in (y[..., 4] > 0).nonzero().tolist():
            out.append((k, r, c, a, int(y[b, r, c, a, 5:].argmax())))
    return out


def test_best_of_all_on_yolov3_by_hand():
    """yolov3.cfg (anchors 10,13 16,30 33,23 30,61 62,45 59,119 116,90 156,198 373,326; heads
    13x13 mask 6,7,8 / 26x26 mask 3,4,5 / 52x52 mask 0,1,2), 416 x 416 input.
    * 300 x 300 px at the centre: IoU with 373x326 = 90000 / 121598 = 0.74, with 156x198 =
      30888 / 90000 = 0.34 -> anchor 8: the stride-32 head, its 3rd anchor, cell (6, 6);
    * 12 x 14 px at (0.1, 0.2): with 10x13 = 130 / 168 = 0.77, with 16x30 = 168 / 480 = 0.35
      -> anchor 0: the stride-8 head, its 1st anchor, cell (int(0.2*52), int(0.1*52)) = (10, 5);
    * 60 x 50 px at (0.9, 0.5): with 62x45 = 2700 / 3090 = 0.87, with 59x119 = 0.42 -> anchor 4:
      the stride-16 head, its 2nd anchor, cell (13, 23)."""
    heads = Y.heads_of(darkcfg.shapes.infer(YOLOV3))
    px = torch.tensor([[0.5, 0.5, 300, 300], [0.1, 0.2, 12, 14], [0.9, 0.5, 60, 50]],
                      dtype=torch.float64)
    boxes = px / torch.tensor([1, 1, 416, 416], dtype=torch.float64)
    t = Y.encode_targets([boxes], [torch.tensor([3, 4, 5])], heads, [(13, 13), (26, 26), (52, 52)],
                         (416, 416), "best_of_all")
    assert sorted(_positives(t)) == [(0, 6, 6, 2, 3), (1, 13, 23, 1, 5), (2, 10, 5, 0, 4)]


def test_best_of_all_on_yolov3_tiny_by_hand():
    """Bundled yolov3-tiny (anchors 10,14 23,27 37,58 81,82 135,169 344,319; 13x13 mask 3,4,5,
    26x26 mask 0,1,2): 300 x 300 px -> 344x319 (IoU 0.82) = head 0 anchor 2; 12 x 14 px ->
    10x14 (IoU 0.83) = head 1 anchor 0."""
    heads = Y.heads_of(darkcfg.shapes.infer(TINY))
    boxes = torch.tensor([[0.5, 0.5, 300 / 416, 300 / 416], [0.5, 0.5, 12 / 416, 14 / 416]])
    t = Y.encode_targets([boxes], [torch.tensor([0, 1])], heads, [(13, 13), (26, 26)],
                         (416, 416), "best_of_all")
    assert sorted(_positives(t)) == [(0, 6, 6, 2, 0), (1, 13, 13, 0, 1)]


@needs_shared
def test_best_of_all_anchor_in_two_masks_or_none():
    """darknet's yolov4-tiny.cfg has masks 3,4,5 and 1,2,3: anchor 3 (81x82) is on both
    heads, anchor 0 (10x14) on none.  darknet (forward_yolo_layer: best_n over l.total, then
    int_index(l.mask, best_n)) gives an 80 x 80 px box a positive on both heads and a 10 x 14
    px box none."""
    from conftest import DARKNET_CFGS
    heads = Y.heads_of(darkcfg.shapes.infer(os.path.join(DARKNET_CFGS, "yolov4-tiny.cfg")))
    assert [h.mask for h in heads] == [[3, 4, 5], [1, 2, 3]]
    boxes = torch.tensor([[0.5, 0.5, 80 / 416, 80 / 416], [0.2, 0.2, 10 / 416, 14 / 416]])
    t = Y.encode_targets([boxes], [torch.tensor([0, 1])], heads, [(13, 13), (26, 26)],
                         (416, 416), "best_of_all")
    assert sorted(_positives(t)) == [(0, 6, 6, 0, 0), (1, 13, 13, 2, 0)]


@pytest.mark.parametrize("rule", ["per_scale", "best_of_all"])
def test_later_box_on_one_cell_and_anchor_wins(rule):
    """300 boxes on one cell and anchor (sizes 30..40 px, all nearest the 40x40 anchor): the
    target is the last box's, class and all - darknet's loop over truths overwrites."""
    heads = [one_head(((10.0, 10.0), (40.0, 40.0)), classes=300)]
    n = 300
    sizes = torch.linspace(30, 40, n, dtype=torch.float64) / 400
    boxes = torch.stack([torch.full((n,), 0.55, dtype=torch.float64),
                         torch.linspace(0.26, 0.49, n, dtype=torch.float64), sizes, sizes], 1)
    t = Y.encode_targets([boxes], [torch.arange(n)], heads, [(4, 4)], (400, 400), rule)
    y = t.per_head[0]
    assert _positives(t) == [(0, 1, 2, 1, n - 1)]
    assert torch.equal(y[0, 1, 2, 1, :4], boxes[-1])


@pytest.mark.parametrize("box, cls, grids, words", [
    ([0.5, 1.2, 0.1, 0.1], 0, [(4, 4)], "image 0, box 0: (cx, cy, w, h) = (0.5, 1.2"),
    ([0.5, 0.5, -0.1, 0.1], 0, [(4, 4)], "outside the image"),
    ([0.5, 0.5, float("nan"), 0.1], 0, [(4, 4)], "outside the image"),
    ([0.5, 0.5, 0.1, 0.1], 3, [(4, 4)], "class id 3 is outside the heads' 3 classes"),
    ([0.5, 0.5, 0.1, 0.1], -1, [(4, 4)], "class id -1"),
    ([0.5, 0.5, 0.1, 0.1], 0, [(4, 4), (8, 8)], "2 grids for 1 heads"),
    ([0.5, 0.5, 0.1, 0.1], 0, [], "0 grids for 1 heads"),
])
def test_encode_targets_rejects_what_it_cannot_place(box, cls, grids, words):
    from darkcfg.errors import DarkcfgError
    heads = [one_head(((10.0, 10.0), (40.0, 40.0)), classes=3)]
    with pytest.raises(DarkcfgError, match=re.escape(words)):
        Y.encode_targets([torch.tensor([box])], [torch.tensor([cls])], heads, grids, (400, 400))


def test_encode_targets_tolerates_rounding_at_the_border():
    heads = [one_head(((10.0, 10.0),), classes=1)]
    box = torch.tensor([[1.0005, -0.0005, 0.2, 1.0]])
    y = Y.encode_targets([box], [torch.tensor([0])], heads, [(4, 4)], (400, 400)).per_head[0]
    assert y[0, 0, 3, 0, 4] == 1                                   # clamped to the last column


def test_yolo_loss_rejects_heads_that_do_not_fit():
    from darkcfg.errors import DarkcfgError
    head, t, raw = _single_case()
    wider = one_head(((20.0, 40.0),), classes=5)                  # 5 classes: 10 channels
    with pytest.raises(DarkcfgError, match=r"head 0 output is \(1, 7, 2, 2\)"):
        Y.yolo_loss([raw], t, [wider], (80, 80))
    with pytest.raises(DarkcfgError, match="1 raw outputs, 1 target tensors and 2 heads"):
        Y.yolo_loss([raw], t, [head, head], (80, 80))
    with pytest.raises(DarkcfgError, match="targets are"):
        Y.yolo_loss([raw[..., :1]], t, [head], (80, 80))


# --- IoU family, by hand ---------------------------------------------------------------------------

def test_iou_variants_by_hand():
    a = torch.tensor([0.5, 0.5, 0.2, 0.2], dtype=torch.float64)     # (0.4, 0.4) - (0.6, 0.6)
    b = torch.tensor([0.6, 0.5, 0.2, 0.4], dtype=torch.float64)     # (0.5, 0.3) - (0.7, 0.7)
    inter, union = 0.1 * 0.2, 0.04 + 0.08 - 0.1 * 0.2
    iou = inter / union
    enclose = 0.3 * 0.4
    c2, p2 = 0.3 ** 2 + 0.4 ** 2, 0.1 ** 2
    v = 4 / math.pi ** 2 * (math.atan(0.2 / 0.4) - math.atan(0.2 / 0.2)) ** 2
    want = {"iou": iou, "giou": iou - (enclose - union) / enclose, "diou": iou - p2 / c2,
            "ciou": iou - p2 / c2 - v / (1 - iou + v) * v}
    for kind, w in want.items():
        assert abs(Y.box_iou(a, b, kind).item() - w) < 1e-7, kind


@pytest.mark.parametrize("kind", ["iou", "giou", "diou", "ciou"])
def test_iou_degenerate_boxes_stay_finite(kind):
    boxes = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2],
                          [0.9, 0.9, 0.1, 0.0]], dtype=torch.float64, requires_grad=True)
    out = Y.box_iou(boxes[:, None], boxes[None], kind)
    out.sum().backward()
    assert out.isfinite().all() and boxes.grad.isfinite().all()
    assert abs(out[1, 2].item() - 1) < 1e-6                  # identical boxes


# --- loss: one box, one anchor, one cell, computed by hand ---------------------------------------

def _single_case(**kw):
    head = one_head(((20.0, 40.0),), classes=2, **kw)
    box = torch.tensor([[0.6, 0.3, 0.25, 0.5]], dtype=torch.float64)   # cell (0, 1) of a 2x2 grid
    t = Y.encode_targets([box], [torch.tensor([1])], [head], [(2, 2)], (80, 80))
    raw = torch.zeros(1, 7, 2, 2, dtype=torch.float64)
    raw[0, :, 0, 1] = torch.tensor([0.3, -0.2, 0.1, 0.4, 0.5, -1.0, 2.0], dtype=torch.float64)
    return head, t, raw


def test_loss_parts_by_hand():
    head, t, raw = _single_case(ignore_thresh=2.0)               # no cell is ignored
    total, parts = Y.yolo_loss([raw], t, [head], (80, 80))
    scale = 2 - 0.25 * 0.5
    fx, fy = 0.6 * 2 - 1, 0.3 * 2 - 0                             # in-cell offsets 0.2, 0.6
    xy = scale * (bce(0.3, fx) + bce(-0.2, fy))
    tw, th = math.log(0.25 * 80 / 20), math.log(0.5 * 80 / 40)
    wh = scale * 0.5 * ((tw - 0.1) ** 2 + (th - 0.4) ** 2)
    obj = bce(0.5, 1) + 3 * bce(0.0, 0)                         # 1 positive, 3 negatives
    cls = bce(-1.0, 0) + bce(2.0, 1)
    for k, want in (("xy", xy), ("wh", wh), ("obj", obj), ("cls", cls)):
        assert abs(parts[k].item() - want) < 1e-9, k
    assert abs(total.item() - (xy + wh + obj + cls)) < 1e-9


def test_ignore_mask_by_hand():
    """Negative cell (0, 0) predicts (0.5, 0.3, 0.25, 0.5) against the gt (0.6, 0.3, 0.25, 0.5):
    IoU = (0.15 * 0.5) / (2 * 0.125 - 0.075) = 0.4286.  With ignore_thresh 0.3 that cell is
    ignored; with 0.95 it is a negative, adding BCE(0.7, 0) to the objectness loss."""
    head, t, raw = _single_case(ignore_thresh=0.3)
    raw[0, :, 0, 0] = torch.tensor([10.0, math.log(0.6 / 0.4), 0.0, 0.0, 0.7, 0.0, 0.0],
                                   dtype=torch.float64)
    d = Y.decode(raw, head, (80, 80))["boxes"][0, 0, 0, 0]
    assert abs(Y.box_iou(d, t.boxes[0, 0]).item() - 0.075 / 0.175) < 1e-4
    _, ignored = Y.yolo_loss([raw], t, [head], (80, 80))
    head.ignore_thresh = 0.95
    _, counted = Y.yolo_loss([raw], t, [head], (80, 80))
    assert abs((counted["obj"] - ignored["obj"]).item() - bce(0.7, 0)) < 1e-9


def test_ignore_needs_a_confident_class_as_in_darknet():
    """darknet (forward_yolo_layer, compare_yolo_class): a negative over ignore_thresh is
    ignored only if some class probability of it exceeds 0.25.  The cell of
    test_ignore_mask_by_hand (IoU 0.43 > 0.3) with class logits -5, -5 (p = 0.0067): darknet
    counts it, adding BCE(0.7, 0); ignore="iou" (the design notes') still ignores it."""
    head, t, raw = _single_case(ignore_thresh=0.3)
    raw[0, :, 0, 0] = torch.tensor([10.0, math.log(0.6 / 0.4), 0.0, 0.0, 0.7, -5.0, -5.0],
                                   dtype=torch.float64)
    _, darknet = Y.yolo_loss([raw], t, [head], (80, 80))
    _, notes = Y.yolo_loss([raw], t, [head], (80, 80), ignore="iou")
    assert abs((darknet["obj"] - notes["obj"]).item() - bce(0.7, 0)) < 1e-9
    raw[0, 6, 0, 0] = -1.0                                       # p = 0.27 > 0.25: ignored
    _, confident = Y.yolo_loss([raw], t, [head], (80, 80))
    assert abs((confident["obj"] - notes["obj"]).item()) < 1e-12


@pytest.mark.parametrize("iou_loss", ["mse", "iou", "giou", "diou", "ciou"])
def test_gradcheck(iou_loss):
    head, t, raw = _single_case(iou_loss=iou_loss)
    raw = (raw + 0.1 * torch.randn_like(raw)).requires_grad_()
    assert torch.autograd.gradcheck(lambda r: Y.yolo_loss([r], t, [head], (80, 80))[0], (raw,))


def test_iou_loss_by_hand():
    head, t, raw = _single_case(iou_loss="ciou", iou_normalizer=0.07)
    _, parts = Y.yolo_loss([raw], t, [head], (80, 80))
    d = Y.decode(raw, head, (80, 80))["boxes"][0, 0, 1, 0]
    want = 0.07 * (1 - Y.box_iou(d, t.boxes[0, 0], "ciou").item())
    assert abs(parts["iou"].item() - want) < 1e-9 and parts["xy"].item() == 0


# --- NMS ---------------------------------------------------------------------------------------------

def test_nms_by_hand():
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.51, 0.5, 0.2, 0.2], [0.8, 0.8, 0.1, 0.1],
                          [0.5, 0.5, 0.2, 0.2]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    assert Y.nms(boxes, scores, 0.45).tolist() == [0, 2]
    assert Y.nms(boxes, scores, 0.45, classes=torch.tensor([0, 0, 0, 1])).tolist() == [0, 2, 3]
    # DIoU-NMS keeps a box whose centre is far even when the IoU is high enough to drop it
    far = torch.tensor([[0.5, 0.5, 0.4, 0.4], [0.6, 0.5, 0.4, 0.4]])
    iou = Y.box_iou(far[0], far[1]).item()                        # 0.6
    assert Y.nms(far, scores[:2], iou - 0.01).tolist() == [0]
    assert Y.nms(far, scores[:2], iou - 0.01, kind="diou").tolist() == [0, 1]


# --- against OpenCV's [yolo] decode -------------------------------------------------------------

@needs_shared
@pytest.mark.parametrize("name", ["yolov3-tiny", "yolov4-tiny"])
def test_decode_matches_opencv(name, darknet_at):
    cv2 = pytest.importorskip("cv2")
    path, weights = darknet_at(name)
    model = darkcfg.load(weights, path)
    x = np.random.default_rng(0).uniform(0, 1, (1, 3, 128, 128)).astype(np.float32)
    cvnet = cv2.dnn.readNetFromDarknet(path, weights)
    yolo_layers = [l for l in model.net.layers if l.type == "yolo"]
    cvnet.setInput(x)
    theirs = cvnet.forward([f"yolo_{l.index}" for l in yolo_layers])
    with torch.no_grad():
        outs = model(torch.from_numpy(x))
    for raw, layer, cv in zip(outs, yolo_layers, theirs):
        d = Y.decode(raw.double(), Y.Head.from_layer(layer), (128, 128))
        ours = torch.cat([d["boxes"], d["obj"][..., None]], -1).reshape(-1, 5).numpy()
        # 1e-4, relative above 1 (w and h exceed 1 at this input size; exp amplifies the
        # ~5e-5 by which OpenCV's raw tensors part from darknet's)
        assert (np.abs(ours - cv[:, :5]) <= 1e-4 * np.maximum(1, np.abs(cv[:, :5]))).all()
        scores = (d["obj"][..., None] * d["cls"]).reshape(cv.shape[0], -1).numpy()
        shown = cv[:, 5:] > 0                                    # OpenCV zeroes low scores
        assert shown.sum() > 10 and np.abs(scores[shown] - cv[:, 5:][shown]).max() < 1e-4
        assert (scores[~shown] < scores[shown].min() + 1e-4).all()


# --- overfit: the whole pipeline learns ------------------------------------------------------------

def test_overfit_two_images():
    """yolov3-tiny (3 classes, 128x128) on 2 synthetic images: the loss falls >= 10x and the
    decoded, NMS'd detections recover every gt box (IoU > 0.5, right class), nothing else."""
    torch.manual_seed(0)
    model = darkcfg.build_model(TINY, classes=3, width=128, height=128)
    heads = Y.heads_of(model)
    gt = [torch.tensor([[0.3, 0.3, 0.3, 0.25], [0.7, 0.65, 0.4, 0.5]]),
          torch.tensor([[0.5, 0.5, 0.5, 0.6]])]
    gc = [torch.tensor([0, 2]), torch.tensor([1])]
    imgs = torch.rand(2, 3, 128, 128) * 0.1
    for i, (boxes, classes) in enumerate(zip(gt, gc)):      # a rectangle in the class's channel
        for (cx, cy, w, h), c in zip(boxes.tolist(), classes.tolist()):
            imgs[i, c, int((cy - h / 2) * 128):int((cy + h / 2) * 128),
                 int((cx - w / 2) * 128):int((cx + w / 2) * 128)] = 1.0
    targets = Y.encode_targets(gt, gc, heads, [(4, 4), (8, 8)], (128, 128))
    model.eval()             # BN on running statistics: training and inference see one network
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    losses = []
    for _ in range(150):
        loss, _ = Y.yolo_loss(model(imgs), targets, heads, (128, 128))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] / losses[-1] >= 10
    with torch.no_grad():
        found = Y.detections(model(imgs), model, thresh=0.25, nms_thresh=0.45)
    for dets, boxes, classes in zip(found, gt, gc):
        assert len(dets) == len(boxes)
        for box, c in zip(boxes, classes):
            x1, y1, x2, y2 = box[0] - box[2] / 2, box[1] - box[3] / 2, box[0] + box[2] / 2, \
                box[1] + box[3] / 2
            best = max(dets, key=lambda d: iou(d.box, (x1, y1, x2, y2)))
            assert best.cls == c and iou(best.box, (x1, y1, x2, y2)) > 0.5


def _opencv_detections(cfg_path, weights, x):
    """OpenCV's [yolo] rows for input x, through cv2.dnn.NMSBoxes per class:
    [(class, score, (x1, y1, x2, y2) normalized)]."""
    import cv2
    cvnet = cv2.dnn.readNetFromDarknet(cfg_path, weights)
    cvnet.setInput(x)
    rows = np.concatenate(cvnet.forward(list(cvnet.getUnconnectedOutLayersNames())))
    theirs = []
    for c in range(rows.shape[1] - 5):
        s = rows[:, 5 + c]
        keep = np.nonzero(s > 0.25)[0]
        if not len(keep):
            continue
        xywh = [[r[0] - r[2] / 2, r[1] - r[3] / 2, r[2], r[3]] for r in rows[keep]]
        for k in np.asarray(cv2.dnn.NMSBoxes(xywh, s[keep].tolist(), 0.25, 0.45)).reshape(-1):
            r = rows[keep[k]]
            theirs.append((c, float(s[keep[k]]), (r[0] - r[2] / 2, r[1] - r[3] / 2,
                                                  r[0] + r[2] / 2, r[1] + r[3] / 2)))
    return theirs


def _pair_up(ours, theirs, scale=1.0, clip=None):
    """Each of ours against the nearest of theirs of the same class: scores within 1e-4, boxes
    within 1e-4 (relative; ``scale`` converts theirs to our units; ``clip`` = (W, H) clips
    theirs to the image, as darknet does before printing and drawing)."""
    assert len(ours) == len(theirs) > 3
    lo, hi = ((0, 0, 0, 0), clip * 2) if clip else ((-np.inf,) * 4, (np.inf,) * 4)
    theirs = [(c, s, tuple(np.clip(np.multiply(box, scale), lo, hi))) for c, s, box in theirs]
    left = list(theirs)
    for d in ours:
        same = [t for t in left if t[0] == d.cls]
        assert same, f"class {d.cls} at {d.box} has no OpenCV counterpart"
        c, s, box = min(same, key=lambda t: np.abs(np.subtract(t[2], d.box)).max())
        left.remove((c, s, box))
        assert abs(d.score - s) < 1e-4
        assert np.allclose(d.box, box, atol=1e-4 * scale, rtol=1e-4)


@needs_shared
@pytest.mark.parametrize("name", ["yolov3-tiny", "yolov4-tiny"])
def test_detections_match_opencv(name, darknet_at):
    """After thresholding and per-class NMS: our detections vs OpenCV's [yolo] rows put through
    cv2.dnn.NMSBoxes per class - same classes, boxes and scores within 1e-4.  NMSBoxes is plain
    IoU NMS, so the heads' nms_kind (yolov4-tiny: greedynms, darknet's DIoU NMS, tested by hand
    above) is set to darknet's default for this comparison."""
    pytest.importorskip("cv2")
    path, weights = darknet_at(name)
    model = plain_nms(darkcfg.load(weights, path))
    x = np.random.default_rng(1).uniform(0, 1, (1, 3, 128, 128)).astype(np.float32)
    with torch.no_grad():
        ours = Y.detections(model(torch.from_numpy(x)), model, 0.25, 0.45)[0]
    _pair_up(ours, _opencv_detections(path, weights, x))


@needs_shared
def test_detect_image_feeds_the_model_where_it_is(darknet_at, tmp_path):
    """detect_image on a float64 model: the image (a 128x128 PNG, so letterboxing only scales
    to [0, 1]) reaches the model in its dtype, and the detections, in image pixels, are
    OpenCV's on the same input, clipped to the image."""
    pytest.importorskip("cv2")
    from darkcfg.infer.detect import detect_image
    path, weights = darknet_at("yolov3-tiny")
    png, pixels = noise_image(tmp_path / "x.png", seed=1)
    x = (pixels.transpose(2, 0, 1)[None] / 255.0).astype(np.float32)
    model = darkcfg.load(weights, path).double()
    ours, _ = detect_image(model, png)
    _pair_up(ours, _opencv_detections(path, weights, x), scale=128, clip=(128, 128))


def test_unletterbox_by_hand():
    from darkcfg.infer.detect import unletterbox
    # a 640 x 320 image letterboxed into 416 x 416 is 416 x 208 at y offset 104
    box = unletterbox((0.25, 104 / 416, 0.75, 312 / 416), (416, 416), (416, 208), (640, 320))
    assert np.allclose(box, (160, 0, 480, 320))


@pytest.mark.parametrize("per_class", [False, True])
def test_nms_equals_plain_python_greedy(per_class):
    g = torch.Generator().manual_seed(1)
    boxes = torch.cat([torch.rand(300, 2, generator=g), torch.rand(300, 2, generator=g) * 0.3 +
                       0.02], 1).double()
    scores = torch.rand(300, generator=g).double()
    classes = torch.randint(0, 3, (300,), generator=g)

    kept = []
    for i in sorted(range(300), key=lambda i: -scores[i].item()):
        if all(iou(corners(*boxes[i].tolist()), corners(*boxes[j].tolist())) <= 0.45
               or (per_class and classes[i] != classes[j]) for j in kept):
            kept.append(i)
    ours = Y.nms(boxes, scores, 0.45, classes if per_class else None)
    assert ours.tolist() == kept


@needs_shared
def test_region_decode_matches_opencv(darknet_at):
    """YOLOv2's [region] (yolov2-tiny): boxes and objectness within 1e-4, relative above 1."""
    cv2 = pytest.importorskip("cv2")
    path, weights = darknet_at("yolov2-tiny")
    model = darkcfg.load(weights, path)
    x = np.random.default_rng(0).uniform(0, 1, (1, 3, 128, 128)).astype(np.float32)
    cvnet = cv2.dnn.readNetFromDarknet(path, weights)
    cvnet.setInput(x)
    theirs = cvnet.forward("detection_out")[:, :5]
    with torch.no_grad():
        raw = model(torch.from_numpy(x))[0]
    d = Y.decode_region(raw.double(), model.net.heads[0])
    ours = torch.cat([d["boxes"], d["obj"][..., None]], -1).reshape(-1, 5).numpy()
    assert (np.abs(ours - theirs) <= 1e-4 * np.maximum(1, np.abs(theirs))).all()
    assert torch.allclose(d["cls"].sum(-1), torch.ones(1, dtype=torch.float64))   # softmax


def test_nms_kind_greedynms_is_darknets_diou_with_fixed_exponent():
    """yolov4.cfg's nms_kind=greedynms: darknet's diounms_sort calls box_diou, IoU minus
    (d^2/c^2)^0.6 whatever beta_nms says.  Two boxes by hand: 10x10 at x=0 and x=3.5 (same y):
    IoU = 65/135 = 0.4815 > 0.45, so greedy NMS drops one; d^2 = 12.25, c^2 = 13.5^2 + 10^2 =
    282.25, DIoU = 0.4815 - (0.0434)^0.6 = 0.3659 < 0.45, so greedynms keeps both."""
    assert Y.nms_of({"nms_kind": "greedynms", "beta_nms": 0.9}) == ("diou", 0.6)
    assert Y.nms_of({"nms_kind": "diounms", "beta_nms": 0.9}) == ("diou", 0.9)
    assert Y.nms_of({})[0] == "greedy"
    boxes = torch.tensor([[5.0, 5, 10, 10], [8.5, 5, 10, 10]])       # cx, cy, w, h
    scores = torch.tensor([0.9, 0.8])
    iou = 65 / 135
    diou = iou - (12.25 / 282.25) ** 0.6
    assert iou > 0.45 > diou
    assert len(Y.nms(boxes, scores, 0.45, None, "greedy", 0.6)) == 1
    assert len(Y.nms(boxes, scores, 0.45, None, *Y.nms_of({"nms_kind": "greedynms"}))) == 2

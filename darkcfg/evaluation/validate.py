"""Run a model over an image list the way ``darknet detector map`` does, then score it.

The pipeline, image by image (batched here; darknet runs batch 1, which gives the same numbers
in eval mode):

1. ``data.load_image`` (OpenCV, RGB) -> float32 ``/255.`` as darknet's ``mat_to_image``;
2. darknet's own ``resize_image`` (:func:`resize_image`: align-corners bilinear in float32, two
   passes) to the network size, or ``letterbox_image`` (:func:`letterbox_image`) when
   ``letter_box`` - the cfg's ``[net] letter_box`` decides (darknet's map ignores its own
   ``-letter_box`` flag);
3. the model; each [yolo] head decoded (``yolo.decode``; [region] heads by
   ``yolo.decode_region``), a box kept when its objectness > .005 and per class ``obj * cls``
   > .005 (else 0) - ``get_yolo_detections`` / ``get_region_detections``;
4. boxes back to the image (``correct_yolo_boxes``: letterbox removed, normalized to the
   image; darknet's ``correct_region_boxes`` does the same, except that it letterbox-corrects
   a non-square network even when not letterboxing - a bug, not copied), NMS .45 as darknet's ``do_nms_sort`` (``nms_kind=default``: IoU) or
   ``diounms_sort`` (``greedynms``: DIoU with beta .6; ``diounms``: DIoU with ``beta_nms``),
   one pass per class, each pass re-sorting the boxes by that class's probability;
5. every (box, class) with a probability left is a detection, in darknet's order (boxes as the
   last NMS pass sorted them, classes ascending) - the order the P/R at ``thresh`` counts in;
6. ground truth: every line of ``data.label_path(image)`` (``data.read_labels``) in pixels.

Then :func:`darkcfg.evaluate.darknet_map` on the lot.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import numpy as np

from ..dataset import data as D
from ..dataset.prepare import (RESIZERS, cfg_letter_box, letterbox_image,  # noqa: F401
                               letterbox_size, prepare, read_names, resize_image, to_float)
from . import evaluate as E
from . import per_class as PC
from .. import outputs as io
from ..errors import DarkcfgError

DETECTION_THRESH = 0.005     # validate_detector_map's hard-coded thresh
NMS_THRESH = 0.45            # and nms
LAYER_TYPE = {"region": 27, "yolo": 28, "gaussian_yolo": 29}    # darknet.h's LAYER_TYPE


# ----- boxes back to the image ------------------------------------------------------------------


def correct_boxes(b: np.ndarray, img_size: tuple, net_size: tuple, letter_box: bool):
    """darknet's correct_yolo_boxes (relative=1): (n, 4) cx, cy, w, h normalized to the network
    input -> normalized to the image.  The offset is the continuous (netw - new_w) / 2 while the
    letterbox embeds at the integer one: darknet's half-pixel shift, kept."""
    if not letter_box:
        return b
    (iw, ih), (nw_, nh_) = img_size, net_size
    nw, nh = letterbox_size(iw, ih, nw_, nh_)
    f = np.float32
    rw, rh = f(nw) / f(nw_), f(nh) / f(nh_)
    out = np.empty_like(b)
    out[:, 0] = (b[:, 0] - (nw_ - nw) / 2.0 / nw_) / rw
    out[:, 1] = (b[:, 1] - (nh_ - nh) / 2.0 / nh_) / rh
    out[:, 2] = b[:, 2] * (f(nw_) / f(nw))
    out[:, 3] = b[:, 3] * (f(nh_) / f(nh))
    return out.astype(np.float32)


# ----- darknet's NMS and detection order -------------------------------------------------------


def _iou_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """darknet's box_iou (float32, centre boxes) of boxes ``a`` (..., 4) against ``b`` (m, 4),
    broadcasting: a (4,) gives (m,), a (r, 1, 4) gives (r, m)."""
    f = np.float32
    half = f(0.5)
    iw = np.minimum(a[..., 0] + a[..., 2] * half, b[:, 0] + b[:, 2] * half) - \
        np.maximum(a[..., 0] - a[..., 2] * half, b[:, 0] - b[:, 2] * half)
    ih = np.minimum(a[..., 1] + a[..., 3] * half, b[:, 1] + b[:, 3] * half) - \
        np.maximum(a[..., 1] - a[..., 3] * half, b[:, 1] - b[:, 3] * half)
    inter = np.where((iw < 0) | (ih < 0), f(0), iw * ih)
    union = a[..., 2] * a[..., 3] + b[:, 2] * b[:, 3] - inter
    ok = (inter != 0) & (union != 0)
    return np.where(ok, inter / np.where(ok, union, f(1)), f(0))


def _diou_rows(a: np.ndarray, b: np.ndarray, beta: float) -> np.ndarray:
    """darknet's box_diounms: IoU - (d / c) ** beta; c the enclosing box's squared diagonal
    (box_diou, greedynms, is the same with beta 0.6)."""
    half = np.float32(0.5)
    w = np.maximum(a[..., 0] + a[..., 2] * half, b[:, 0] + b[:, 2] * half) - \
        np.minimum(a[..., 0] - a[..., 2] * half, b[:, 0] - b[:, 2] * half)
    h = np.maximum(a[..., 1] + a[..., 3] * half, b[:, 1] + b[:, 3] * half) - \
        np.minimum(a[..., 1] - a[..., 3] * half, b[:, 1] - b[:, 3] * half)
    c = w * w + h * h
    iou = _iou_rows(a, b)
    d = (a[..., 0] - b[:, 0]) ** 2 + (a[..., 1] - b[:, 1]) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.power(d.astype(np.float64) / np.where(c == 0, 1, c), beta).astype(np.float32)
    return np.where(c == 0, iou, iou - u)


def nms_kind(net) -> tuple:
    """(kind, beta) from the last detection layer, as darknet's map reads it:
    ("iou", None) for default, ("diou", 0.6) for greedynms, ("diou", beta_nms) for diounms."""
    heads = [l for l in net.layers if l.type in LAYER_TYPE]
    opts = heads[-1].opts if heads else {}
    kind = opts.get("nms_kind", "default")
    if kind == "greedynms":
        return "diou", 0.6
    if kind == "diounms":
        return "diou", float(opts.get("beta_nms", 0.6))
    return "iou", None


def darknet_nms(boxes: np.ndarray, prob: np.ndarray, thresh: float = NMS_THRESH,
                kind: str = "iou", beta: float | None = None) -> tuple:
    """do_nms_sort / diounms_sort on one image's boxes: (prob with suppressed entries zeroed,
    the box order darknet's array ends in).  ``boxes`` (n, 4) cx, cy, w, h; ``prob`` (n, C).

    Each class pass sorts the boxes by that class's probability, descending (glibc's qsort is
    a stable merge sort: ties keep the previous pass's order), then a box with a nonzero
    probability zeroes that class in every later box it overlaps by more than ``thresh``."""
    prob = prob.copy()
    order = np.arange(len(boxes))
    for k in range(prob.shape[1]):
        order = order[np.argsort(-prob[order, k], kind="stable")]
        live = order[prob[order, k] > 0]
        if len(live) < 2:
            continue
        alive = _greedy(boxes[live], thresh, kind, beta)
        prob[live[~alive], k] = 0
    return prob, order


def _greedy(b: np.ndarray, thresh: float, kind: str, beta) -> np.ndarray:
    """Exact greedy suppression of boxes already in order: the overlap test of a block of rows
    against the later boxes at once, then the greedy walk over that block."""
    n = len(b)
    alive = np.ones(n, bool)
    step = max(16, min(512, 4_000_000 // n))
    t = np.float32(thresh)
    for start in range(0, n - 1, step):
        rows = [i for i in range(start, min(start + step, n - 1)) if alive[i]]
        if not rows:
            continue
        rest, blk = b[start + 1:], b[rows][:, None, :]
        over = (_diou_rows(blk, rest, beta) if kind == "diou" else _iou_rows(blk, rest)) > t
        for r, i in enumerate(rows):           # rows suppressed inside this block drop out
            if alive[i]:
                alive[i + 1:] &= ~over[r, i - start:]
    return alive


def image_detections(boxes: np.ndarray, obj: np.ndarray, cls: np.ndarray, img_size: tuple,
                     net_size: tuple, letter_box: bool, kind: str = "iou", beta=None,
                     thresh: float = DETECTION_THRESH) -> np.ndarray:
    """One image's decoded heads (all heads' boxes concatenated in darknet's order: layer, row,
    column, anchor) -> (k, 6) detections [x1, y1, x2, y2, score, class] in image pixels and in
    darknet's detection order."""
    f = np.float32
    keep = obj > f(thresh)
    prob = obj[keep, None] * cls[keep]                     # float32, as darknet multiplies
    prob = np.where(prob > f(thresh), prob, f(0))
    has = prob.max(1, initial=0) > 0                       # boxes without a class never matter
    b, prob = correct_boxes(boxes[keep][has], img_size, net_size, letter_box), prob[has]
    prob, order = darknet_nms(b, prob, NMS_THRESH, kind, beta)
    rows, cols = np.nonzero(prob[order] > 0)               # box order, then classes ascending
    box = b[order][rows]
    iw, ih = img_size
    x1, x2 = (box[:, 0] - box[:, 2] / 2) * iw, (box[:, 0] + box[:, 2] / 2) * iw
    y1, y2 = (box[:, 1] - box[:, 3] / 2) * ih, (box[:, 1] + box[:, 3] / 2) * ih
    return np.c_[x1, y1, x2, y2, prob[order][rows, cols], cols].astype(np.float64)


# ----- ground truth ----------------------------------------------------------------------------


def read_truth(image_path: str, num_classes: int) -> np.ndarray:
    """The image's label rows (n, 5) [class, cx, cy, w, h] normalized; a bad line or a class
    outside 0..num_classes-1 is a DarkcfgError naming the file and line."""
    path = D.label_path(image_path)
    rows, problems = D.read_labels(path)
    if problems:
        more = f" (and {len(problems) - 1} more; run darkcfg data check)" if len(problems) > 1 \
            else ""
        raise DarkcfgError(problems[0] + more)
    cls = rows[:, 0].astype(np.int64)
    bad = (cls < 0) | (cls >= num_classes)
    if bad.any():
        c = int(cls[bad][0])
        raise DarkcfgError(f"{path}:{_line_of_class(path, c)}: class {c} is out of range: the "
                           f"model has {num_classes} classes (0..{num_classes - 1})")
    return rows


def to_pixels(rows: np.ndarray, img_size: tuple) -> np.ndarray:
    """Label rows [class, cx, cy, w, h] -> (n, 5) [x1, y1, x2, y2, class] image pixels."""
    iw, ih = img_size
    cx, cy, w, h = (rows[:, k].astype(np.float64) for k in range(1, 5))
    return np.c_[(cx - w / 2) * iw, (cy - h / 2) * ih, (cx + w / 2) * iw, (cy + h / 2) * ih,
                 rows[:, 0].astype(np.float64)]


def ground_truth(image_path: str, img_size: tuple, num_classes: int) -> np.ndarray:
    """:func:`read_truth` in image pixels: (n, 5) [x1, y1, x2, y2, class]."""
    return to_pixels(read_truth(image_path, num_classes), img_size)


def _line_of_class(path: str, c: int):
    with open(path, errors="replace") as f:
        for nu, line in enumerate(f, 1):
            parts = line.split()
            if parts and parts[0].lstrip("+-").isdigit() and int(parts[0]) == c:
                return nu
    return "?"


# ----- running a model ---------------------------------------------------------------------------


@dataclass
class Collected:
    """Per image: detections (k, 6) and ground truth (n, 5) in pixels, and (width, height)."""
    paths: list
    dets: list
    gts: list
    sizes: list
    letter_box: bool


def _heads(model):
    """(layer, decode) per detection head: [yolo] (yolo.decode) and [region] without a tree
    (yolo.decode_region), each decode giving boxes, obj, cls flattened in darknet's detection
    order - [yolo]: row, column, anchor (get_yolo_detections); [region]: anchor, row, column
    (get_region_detections indexes n*w*h + i)."""
    from ..objective import yolo as Y
    net = model.net
    layers = [l for l in net.layers if l.type in LAYER_TYPE]
    where = net.cfg.path or "<cfg>"
    if not layers:
        raise DarkcfgError(f"{where}: no [yolo] or [region] layer: map needs detection heads")
    size = (net.width, net.height)
    out = []
    for l in layers:
        if l.type == "yolo":
            head = Y.Head.from_layer(l)

            def dec(raw, head=head):
                d = Y.decode(raw, head, size)                       # (B, H, W, A, ...)
                b = raw.shape[0]
                return (d["boxes"].reshape(b, -1, 4), d["obj"].reshape(b, -1),
                        d["cls"].reshape(b, -1, head.classes))
        elif l.type == "region" and not l.opts.get("tree"):
            def dec(raw, l=l):
                d = Y.decode_region(raw, l)                         # (B, H, W, num, ...)
                b = raw.shape[0]
                return (d["boxes"].permute(0, 3, 1, 2, 4).reshape(b, -1, 4),
                        d["obj"].permute(0, 3, 1, 2).reshape(b, -1),
                        d["cls"].permute(0, 3, 1, 2, 4).reshape(b, -1, l.opts["classes"]))
        else:
            raise DarkcfgError(f"{where}: layer {l.index} [{l.type}]: map decodes [yolo] and "
                               f"[region] heads (without a tree) only")
        out.append((l, dec))
    return out


def model_classes(model) -> int:
    return _classes_of(model.net) or 0


def collect(model, image_paths, *, num_classes=None, letter_box=None, batch: int = 8,
            progress: bool = False, resize: str = "darknet") -> Collected:
    """Run ``model`` over ``image_paths`` (darknet's preprocessing, batched, on the model's
    device) -> detections and ground truth per image (:class:`Collected`).  ``resize``:
    "darknet" (its resize_image), or "pillow" / "opencv" (their bilinear, for comparison)."""
    import torch
    net = model.net
    heads = _heads(model)
    classes = heads[-1][0].opts["classes"]
    if num_classes is not None and num_classes != classes:
        raise DarkcfgError(f"{net.cfg.path or '<cfg>'}: the model has {classes} classes, "
                           f"{num_classes} asked for")
    kind, beta = nms_kind(net)
    size = (net.width, net.height)
    place = model.placement()

    def one_batch(x, sizes, truths, letter_box):
        with torch.no_grad():
            raw = model(torch.from_numpy(x).to(**place))
            parts = [dec(r.float()) for r, (_, dec) in zip(raw, heads)]   # bf16: decode in fp32
            boxes, obj, cls = (torch.cat([p[j] for p in parts], 1) for j in range(3))
            keep = obj > DETECTION_THRESH
        dets = []
        for i, k in enumerate(keep):         # only the boxes darknet keeps leave the device
            b, o, c = (t.float().cpu().numpy() for t in (boxes[i][k], obj[i][k], cls[i][k]))
            dets.append(image_detections(b, o, c, sizes[i], size, letter_box, kind, beta))
        return dets, [to_pixels(t, sz) for t, sz in zip(truths, sizes)]

    return _collect(model, image_paths, classes, letter_box, batch, progress, resize, one_batch)


def _collect(model, image_paths, classes, letter_box, batch, progress, resize,
             one_batch) -> Collected:
    """What :func:`collect` and :func:`collect_keypoints` share: the checks, the labels read
    first (their errors before any work), eval mode (restored after: a trainer's model goes back
    to training), the progress bar, and each batch of images loaded and prepared as darknet
    does, then ``one_batch(x, sizes, truths, letter_box)`` -> (dets, gts) of its images."""
    net = model.net
    where = net.cfg.path or "<cfg>"
    if letter_box is None:
        letter_box = cfg_letter_box(net)[0]
    letter_box = bool(letter_box)
    if batch < 1:
        raise DarkcfgError(f"batch must be at least 1, got {batch}")
    if net.channels != 3:
        raise DarkcfgError(f"{where}: channels={net.channels}: map reads RGB images (channels=3)")
    if resize not in RESIZERS:
        raise ValueError(f"resize must be one of {', '.join(RESIZERS)}, got {resize!r}")
    out = Collected(list(image_paths), [], [], [], letter_box)
    truth = [read_truth(p, classes) for p in out.paths]
    w, h = net.width, net.height
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(out.paths), unit="img", desc="map", leave=False)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(out.paths), batch):
            paths = out.paths[start:start + batch]
            images = [D.load_image(p) for p in paths]
            sizes = [(im.shape[1], im.shape[0]) for im in images]
            x = np.stack([prepare(im, w, h, letter_box, resize) for im in images])
            dets, gts = one_batch(x, sizes, truth[start:start + len(paths)], letter_box)
            out.dets.extend(dets)
            out.gts.extend(gts)
            out.sizes.extend(sizes)
            if bar is not None:
                bar.update(len(paths))
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    return out


def evaluate_model(model, image_paths, *, num_classes=None, iou_thresh: float = 0.5,
                   thresh: float = 0.25, points: int = 0, letter_box=None, batch: int = 8,
                   progress: bool = False, names=None, resize: str = "darknet"):
    """darknet's ``detector map`` of ``model`` over ``image_paths`` -> evaluate.MapResult; for a
    [keypoint] model :func:`evaluate_keypoints` (``iou_thresh`` unused, the default radius) ->
    evaluate.KeypointResult (its ``.map`` is what training's -map follows)."""
    if is_keypoint(model.net):
        return evaluate_keypoints(model, image_paths, num_classes=num_classes, thresh=thresh,
                                  points=points, letter_box=letter_box, batch=batch,
                                  progress=progress, names=names, resize=resize)
    got = collect(model, image_paths, num_classes=num_classes, letter_box=letter_box,
                  batch=batch, progress=progress, resize=resize)
    return E.darknet_map(got.dets, got.gts, num_classes or model_classes(model),
                         iou_thresh=iou_thresh, thresh=thresh, points=points, names=names)


# ----- keypoint models ---------------------------------------------------------------------------
#
# A [keypoint] model is scored by evaluate.keypoint_map in network-input pixels (the image as
# the network sees it, after the resize or letterbox): predictions are keypoint.decode's
# positions as they are, and each label line's centre (a keypoint line's point, a box line's
# centre, as training uses them) is moved into the input the way prepare() moved the image.

def is_keypoint(net) -> bool:
    return any(l.type == "keypoint" for l in net.layers)


def default_radius(net) -> float:
    """The default match radius: one stride of the finest [keypoint] head, in input pixels
    (8 for yolo_kp.cfg at 416: the size of one cell of the level that places points best)."""
    from ..objective import keypoint as K
    heads = K.heads_of(net)
    if not heads:
        raise DarkcfgError(f"{net.cfg.path or '<cfg>'}: no [keypoint] layer")
    return float(min(net.width / l.input[0] for l in heads))


def points_to_input(rows: np.ndarray, img_size: tuple, net_size: tuple,
                    letter_box: bool) -> np.ndarray:
    """Label rows [class, cx, cy, w, h] (normalized to the image) -> (n, 3) [x, y, class] in
    network-input pixels: scaled to the input, or into the letterbox's embedded image."""
    (iw, ih), (w, h) = img_size, net_size
    if letter_box:
        nw, nh = letterbox_size(iw, ih, w, h)
        x0, y0 = (w - nw) // 2, (h - nh) // 2
    else:
        nw, nh, x0, y0 = w, h, 0, 0
    return np.c_[x0 + rows[:, 1].astype(np.float64) * nw, y0 + rows[:, 2].astype(np.float64) * nh,
                 rows[:, 0].astype(np.float64)]


def keypoint_rows(kps: list) -> np.ndarray:
    """keypoint.decode's Keypoints of one image -> (k, 4) [x, y, score, class]."""
    return np.array([(k.x, k.y, k.score, k.cls) for k in kps], np.float64).reshape(-1, 4)


def collect_keypoints(model, image_paths, *, num_classes=None, letter_box=None, batch: int = 8,
                      progress: bool = False, resize: str = "darknet",
                      thresh: float = DETECTION_THRESH, top_k: int = 100) -> Collected:
    """Run a [keypoint] ``model`` over ``image_paths`` -> :class:`Collected` whose ``dets`` are
    (k, 4) [x, y, score, class] (keypoint.decode above ``thresh``, ``top_k`` per level) and
    ``gts`` (n, 3) [x, y, class], both in network-input pixels."""
    import torch
    from ..objective import keypoint as K
    net = model.net
    where = net.cfg.path or "<cfg>"
    if not is_keypoint(net):
        raise DarkcfgError(f"{where}: no [keypoint] layer")
    classes = _classes_of(net)
    if num_classes is not None and num_classes != classes:
        raise DarkcfgError(f"{where}: the model has {classes} classes, {num_classes} asked for")
    size = (net.width, net.height)
    place = model.placement()

    def one_batch(x, sizes, truths, letter_box):
        with torch.no_grad():
            raw = [r.float() for r in model(torch.from_numpy(x).to(**place))]
            found = K.decode(raw, net, thresh=thresh, top_k=top_k)
        return ([keypoint_rows(kps) for kps in found],
                [points_to_input(t, sz, size, letter_box) for t, sz in zip(truths, sizes)])

    return _collect(model, image_paths, classes, letter_box, batch, progress, resize, one_batch)


def evaluate_keypoints(model, image_paths, *, num_classes=None, radius=None,
                       thresh: float = 0.25, points: int = 0, letter_box=None, batch: int = 8,
                       progress: bool = False, names=None, resize: str = "darknet"):
    """The keypoint metric of ``model`` over ``image_paths`` -> evaluate.KeypointResult;
    ``radius`` in input pixels (default :func:`default_radius`)."""
    radius = default_radius(model.net) if radius is None else radius
    got = collect_keypoints(model, image_paths, num_classes=num_classes, letter_box=letter_box,
                            batch=batch, progress=progress, resize=resize)
    return E.keypoint_map(got.dets, got.gts, num_classes or model_classes(model), radius=radius,
                          thresh=thresh, points=points, names=names)


def save_keypoints(path: str, dets: list, image_ids: list, force: bool = True) -> int:
    """Keypoint predictions as a json list of {image_id, category_id, x, y, score} (input
    pixels), written atomically; returns the number written."""
    from ..outputs import atomic_output
    rows = [{"image_id": int(i), "category_id": int(c), "x": round(float(x), 3),
             "y": round(float(y), 3), "score": round(float(s), 5)}
            for i, d in zip(image_ids, dets) for x, y, s, c in d]
    with atomic_output(path, force) as tmp:
        with open(tmp, "w") as f:
            json.dump(rows, f)
    return len(rows)


# ----- from files ---------------------------------------------------------------------------------


@dataclass
class MapSetup:
    model: object
    paths: list
    names: list | None
    classes: int
    letter_box: bool
    notes: list


def load_model(cfg, weights, device=None, dtype=None, calib=None, calib_count=None):
    """A fused, eval-mode model from .weights (+ cfg) or a .pt / .safetensors / int8 .pt2 (its
    own cfg; a cfg given beside it must describe the same network), in ``dtype`` ("fp32"
    default, "bf16", "fp16", "auto", "int8" with ``calib``: see darkcfg.model.load)."""
    from ..nn import model as M
    from ..config import shapes
    if str(dtype).lower() == "int8" or str(weights).endswith(".pt2"):
        from ..infer import int8
        load, kw = int8.load, {"calib": calib, "calib_count": calib_count}
    else:
        load, kw = M.load, {"fuse": True, "dtype": dtype}
    if str(weights).endswith((".pt", ".safetensors", ".pt2")):
        model = load(weights, device=device, **kw)
        if cfg is not None:
            given = shapes.network(cfg)
            if len(given.layers) != len(model.net.layers) or \
                    _classes_of(given) != _classes_of(model.net):
                raise DarkcfgError(f"{weights}: its stored cfg ({len(model.net.layers)} layers, "
                                   f"{_classes_of(model.net)} classes) is not {cfg} "
                                   f"({len(given.layers)} layers, {_classes_of(given)} classes)")
        return model
    if cfg is None:
        raise DarkcfgError(f"{weights}: a .weights file needs its cfg")
    return load(weights, cfg, device=device, **kw)


def _classes_of(net) -> int | None:
    heads = [l for l in net.layers if l.type in LAYER_TYPE or l.type == "keypoint"]
    return heads[-1].opts["classes"] if heads else None


def setup(data_path: str, cfg, weights, *, letter_box=None, device=None,
          dtype=None, outputs=(), plot=None, force=True, calib=None,
          calib_count=None) -> MapSetup:
    """Read the .data, its valid list and names, check ``outputs`` (files) and the files
    ``plot`` (a folder) would get against all of them (:func:`_check_map_outputs`) before the
    model is loaded, load it, check classes agree."""
    d = D.read_data(data_path)
    notes = []
    key = "valid" if d.valid else "train" if d.train else None
    if key is None:
        raise DarkcfgError(f"{data_path}: no valid= (nor train=) list of images to evaluate")
    if key == "train":
        notes.append(f"{data_path}: no valid=, evaluating the train= list")
    paths = D.image_list(d.resolve(key))
    D.check_listed(d.resolve(key))          # a missing image named by the list's file:line
    if any(outputs) or plot:
        inputs = [data_path, cfg, weights,
                  *[d.resolve(k) for k in ("train", "valid", "names") if getattr(d, k)]]
        _check_map_outputs(inputs, paths, outputs, plot, force)
    model = load_model(cfg, weights, device, dtype, calib, calib_count)
    classes = model_classes(model)
    where = cfg if cfg is not None else weights
    if d.classes is not None and d.classes != classes:
        raise DarkcfgError(f"{d.where('classes')}: classes={d.classes}, but {where} has "
                           f"{classes} classes in its last detection layer")
    names = None
    if d.names:
        names_path = d.resolve("names")
        if not os.path.exists(names_path):
            raise DarkcfgError(f"{d.where('names')}: names file {d.names} not found")
        names = read_names(names_path)
        if len(names) != classes:
            raise DarkcfgError(f"{names_path}: {len(names)} names, but {where} has {classes} "
                               f"classes (darknet stops with the same error)")
    lb, written = cfg_letter_box(model.net)
    if letter_box is None or written:
        if letter_box and written and not lb:
            notes.append("the cfg's [net] letter_box=0 overrides --letter-box, as in darknet")
        letter_box = lb
    return MapSetup(model, paths, names, classes, bool(letter_box), notes)


def run_map(data_path: str, cfg, weights, *, iou_thresh: float = 0.5, thresh: float = 0.25,
            points: int = 0, letter_box=None, batch: int = 8, progress: bool = False,
            device=None, dtype=None, calib=None, calib_count=None):
    """What ``darkcfg map DATA CFG WEIGHTS`` computes -> evaluate.MapResult."""
    s = setup(data_path, cfg, weights, letter_box=letter_box, device=device, dtype=dtype,
              calib=calib, calib_count=calib_count)
    return evaluate_model(s.model, s.paths, num_classes=s.classes, iou_thresh=iou_thresh,
                          thresh=thresh, points=points, letter_box=s.letter_box, batch=batch,
                          progress=progress, names=s.names)


def coco_image_ids(paths: list) -> list:
    """COCO image ids from file names (the digits after the last '_' or the whole stem, as
    darknet's get_coco_image_id reads COCO_val2014_000000000042.jpg) when every name has one
    and they are distinct; else 0..n-1."""
    ids = []
    for p in paths:
        stem = os.path.splitext(os.path.basename(p))[0].rsplit("_", 1)[-1]
        if not stem.isdigit():
            return list(range(len(paths)))
        ids.append(int(stem))
    return ids if len(set(ids)) == len(ids) else list(range(len(paths)))


PLOT_FILES = ("pr_*.png", "confusion.png", "per_class.png")   # what --plot writes


def _check_map_outputs(files, paths, outputs, plot, force) -> None:
    """No output is one of map's inputs (``files``: the .data, cfg, weights, lists and names;
    every image of ``paths`` and its label file), and without ``force`` none exists already -
    nor any file ``plot`` would write."""
    import fnmatch
    inputs = [*[f for f in files if isinstance(f, (str, os.PathLike))],
              *paths, *[D.label_path(p) for p in paths]]
    io.check_outputs(outputs, inputs, force)
    if plot and os.path.isdir(plot):
        ours = [os.path.join(plot, f) for f in sorted(os.listdir(plot))
                if any(fnmatch.fnmatch(f, pat) for pat in PLOT_FILES)]
        io.check_outputs(ours, inputs, force)


def main_map(data_path: str, cfg, weights, *, thresh: float = 0.25, iou_thresh: float = 0.5,
             points: int = 0, letter_box: bool = False, as_json: bool = False,
             coco: bool = False, save_detections: str | None = None, plot: str | None = None,
             batch: int = 8, device=None, progress: bool = True, force: bool = True,
             radius: float | None = None, dtype=None, calib=None, calib_count=None) -> str:
    """Everything ``darkcfg map`` does but parsing arguments: returns the text to print
    (darknet's lines, then COCO's summary with ``coco``; or one JSON document).  A [keypoint]
    cfg is scored by :func:`main_map_keypoints` (``radius``: the match radius in input
    pixels, default one stride of the finest head)."""
    if points < 0 or points == 1:
        raise DarkcfgError(f"--points must be 0 (area under the curve) or at least 2, got "
                           f"{points}")
    if radius is not None and not (radius > 0 and math.isfinite(radius)):
        raise DarkcfgError(f"--radius must be a positive number of pixels, got {radius}")
    s = setup(data_path, cfg, weights, letter_box=True if letter_box else None, device=device,
              dtype=dtype, outputs=[save_detections], plot=plot, force=force, calib=calib,
              calib_count=calib_count)
    if is_keypoint(s.model.net):
        if coco:
            raise DarkcfgError("--coco scores boxes; a [keypoint] model has points (drop --coco)")
        return main_map_keypoints(s, thresh=thresh, points=points, radius=radius,
                                  as_json=as_json, save_detections=save_detections, plot=plot,
                                  batch=batch, progress=progress, force=force)
    if radius is not None:
        raise DarkcfgError("--radius is the match radius of a [keypoint] model; this cfg has "
                           "box heads (use --iou-thresh)")
    got = collect(s.model, s.paths, num_classes=s.classes, letter_box=s.letter_box, batch=batch,
                  progress=progress)
    r = E.darknet_map(got.dets, got.gts, s.classes, iou_thresh=iou_thresh, thresh=thresh,
                      points=points, names=s.names)
    extra = _map_extras(s, got, r, coco=coco, save_detections=save_detections, plot=plot,
                        thresh=thresh, iou_thresh=iou_thresh, force=force)
    if as_json:
        return _map_json(s, got, r, extra)
    return _map_text(s, r, extra, save_detections, plot)


def _map_extras(s: MapSetup, got, r, *, coco, save_detections, plot, thresh, iou_thresh,
                force) -> dict:
    """What ``map`` adds to darknet's lines on request: "coco" (pycocotools' metrics),
    "detections_file" (the detections written), "plots" (the files written)."""
    extra = {}
    if coco:
        extra["coco"] = E.coco_metrics(got.dets, got.gts, s.classes, image_sizes=got.sizes,
                                       names=s.names)
    if save_detections:
        n = E.save_detections(save_detections, got.dets, image_ids=coco_image_ids(got.paths),
                              force=force)
        extra["detections_file"] = {"path": save_detections, "detections": n}
    if plot:
        extra["plots"] = write_plots(got, r, s.classes, s.names, plot, thresh=thresh,
                                     iou_thresh=iou_thresh)
    return extra


def write_plots(got, r, classes: int, names, folder: str, *, thresh: float = 0.25,
                iou_thresh: float = 0.5) -> list:
    """``map --plot``'s pictures of one evaluation (``got`` from :func:`collect`, ``r`` its
    darknet_map) into ``folder``: pr_<class>.png, per_class.png, confusion.png; their paths."""
    os.makedirs(folder, exist_ok=True)
    written = E.plot_pr(r, folder, names)
    written.append(PC.plot_per_class(r, os.path.join(folder, "per_class.png"), names))
    m = E.confusion_matrix(got.dets, got.gts, classes, thresh=thresh, iou_thresh=iou_thresh)
    written.append(E.plot_confusion(m, os.path.join(folder, "confusion.png"), names))
    return written


def _map_json(s: MapSetup, got, r, extra: dict) -> str:
    doc = {"images": len(got.paths), "letter_box": s.letter_box, "notes": s.notes,
           "darknet": r.as_dict(s.names)}
    if "coco" in extra:
        doc["coco"] = {k: v for k, v in extra["coco"].items() if k != "text"}
    for k in ("detections_file", "plots"):
        if k in extra:
            doc[k] = extra[k]
    return json.dumps(doc, indent=1)


def _map_text(s: MapSetup, r, extra: dict, save_detections, plot) -> str:
    """darknet's lines (its detection layers, the table, mAP), then the notes and extras."""
    heads = [l for l in s.model.net.layers if l.type in LAYER_TYPE]
    text = ["\n calculation mAP (mean average precision)...\n"]
    text += [f" Detection layer: {l.index} - type = {LAYER_TYPE[l.type]} \n" for l in heads]
    text.append(r.format(s.names))
    text.append(PC.class_table(r, s.names))       # the maintained darknet's per-class table
    text += [f"note: {n}\n" for n in s.notes]
    if "coco" in extra:
        text.append("\nCOCO (pycocotools, same detections):\n" + extra["coco"]["text"])
    if "detections_file" in extra:
        text.append(f"wrote {extra['detections_file']['detections']} detections to "
                    f"{save_detections}\n")
    if "plots" in extra:
        text.append(f"wrote {len(extra['plots'])} plots to {plot}\n")
    return "".join(text)


def main_map_keypoints(s: MapSetup, *, thresh: float, points: int, radius, as_json: bool,
                       save_detections, plot, batch: int, progress: bool, force: bool) -> str:
    """main_map for a [keypoint] model (``s`` from :func:`setup`)."""
    radius = default_radius(s.model.net) if radius is None else float(radius)
    got = collect_keypoints(s.model, s.paths, num_classes=s.classes, letter_box=s.letter_box,
                            batch=batch, progress=progress)
    r = E.keypoint_map(got.dets, got.gts, s.classes, radius=radius, thresh=thresh,
                       points=points, names=s.names)
    extra = {}
    if save_detections:
        n = save_keypoints(save_detections, got.dets, coco_image_ids(got.paths), force=force)
        extra["detections_file"] = {"path": save_detections, "detections": n}
    if plot:
        os.makedirs(plot, exist_ok=True)
        extra["plots"] = E.plot_pr(r, plot, s.names)
    if as_json:
        doc = {"images": len(got.paths), "letter_box": s.letter_box, "notes": s.notes,
               "keypoints": r.as_dict(s.names)}
        doc.update(extra)
        return json.dumps(doc, indent=1)
    from ..objective import keypoint as K
    text = ["\n calculation mAP (mean average precision) of keypoints...\n"]
    text += [f" Keypoint layer: {l.index} - stride {s.model.net.width / l.input[0]:g} \n"
             for l in K.heads_of(s.model.net)]
    text.append(r.format(s.names))
    text += [f"note: {n}\n" for n in s.notes]
    if "detections_file" in extra:
        text.append(f"wrote {extra['detections_file']['detections']} keypoints to "
                    f"{save_detections}\n")
    if "plots" in extra:
        text.append(f"wrote {len(extra['plots'])} plots to {plot}\n")
    return "".join(text)

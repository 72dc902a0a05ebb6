"""The YOLOv3 objective of the design notes: decode, targets, loss, IoU variants and NMS.

Written as matching pairs: :func:`decode` turns raw head outputs into boxes, :func:`raw_offsets`
turns targets back into the raw outputs that decode to them, and the tests run the round trip.

Conventions (design notes, "offsets"; darknet's get_yolo_box):

* a head's raw tensor is (B, A*(5+C), H, W); :func:`split` views it as (B, H, W, A, 5+C);
* ``bx = (sigmoid(tx)*s - (s-1)/2 + cx) / grid_w`` (likewise y), s = scale_x_y;
* ``bw = anchor_w * exp(tw) / input_w``; with new_coords=1 the conv is already logistic and
  ``bw = (2*tw)^2 * anchor_w / input_w``;
* boxes are (cx, cy, w, h), normalized: centres to the grid, sizes to the input.

Heads are configured by their [yolo] sections (``shapes.Layer.opts``: anchors, mask,
scale_x_y, new_coords, ignore_thresh, truth_thresh, iou_thresh, iou_loss, normalizers) - never
by a cfg's file name.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DarkcfgError

EPS = 1e-9

# ----- heads ------------------------------------------------------------------------------------


@dataclass
class Head:
    """What decoding, encoding and the loss need of one [yolo] head."""
    anchors: torch.Tensor          # (A, 2) this head's anchors, input pixels
    mask: list                     # indices into the cfg's full anchor list
    classes: int
    scale_x_y: float = 1.0
    new_coords: int = 0
    ignore_thresh: float = 0.5
    truth_thresh: float = 1.0
    iou_thresh: float = 1.0
    iou_loss: str = "mse"
    iou_normalizer: float = 0.75
    obj_normalizer: float = 1.0
    cls_normalizer: float = 1.0
    all_anchors: torch.Tensor | None = None   # (N, 2) the [yolo] section's full anchor list

    @classmethod
    def from_layer(cls, layer) -> "Head":
        o = layer.opts
        bad = [m for m in o["mask"] if not 0 <= m < len(o["anchors"])]
        if bad:
            raise layer.error(f"mask entries {bad} have no anchors: cannot decode", "mask")
        keys = ("scale_x_y", "new_coords", "ignore_thresh", "truth_thresh", "iou_thresh",
                "iou_loss", "iou_normalizer", "obj_normalizer", "cls_normalizer")
        return cls(torch.tensor([o["anchors"][m] for m in o["mask"]], dtype=torch.float64),
                   list(o["mask"]), o["classes"], **{k: o[k] for k in keys},
                   all_anchors=torch.tensor(o["anchors"], dtype=torch.float64).reshape(-1, 2))

    def full_anchors(self, heads: list) -> torch.Tensor:
        """The anchor list this head's mask indexes: its [yolo] section's, or - for a Head made
        by hand - the one the heads' masks and anchors spell out together."""
        if self.all_anchors is not None:
            return self.all_anchors
        n = max(m for h in heads for m in h.mask) + 1
        full = torch.full((n, 2), float("nan"), dtype=torch.float64)
        for h in heads:
            full[h.mask] = h.anchors.to(full)
        if full.isnan().any():
            missing = full.isnan().any(1).nonzero().flatten().tolist()
            raise DarkcfgError(f"no head's mask names anchors {missing}: pass anchors= (the "
                               f"full list the masks index)")
        return full


def heads_of(model_or_net) -> list:
    """The [yolo] heads of a Darknet model or shapes.Network, in cfg order."""
    net = getattr(model_or_net, "net", model_or_net)
    return [Head.from_layer(l) for l in net.layers if l.type == "yolo"]


def split(raw: torch.Tensor, head: Head) -> torch.Tensor:
    """(B, A*(5+C), H, W) -> (B, H, W, A, 5+C)."""
    b, _, h, w = raw.shape
    return raw.reshape(b, len(head.mask), 5 + head.classes, h, w).permute(0, 3, 4, 1, 2)


def _grid(h, w, like):
    gy, gx = torch.meshgrid(torch.arange(h, dtype=like.dtype, device=like.device),
                            torch.arange(w, dtype=like.dtype, device=like.device), indexing="ij")
    return gx[None, :, :, None], gy[None, :, :, None]          # (1, H, W, 1)


def decodable(outputs: list) -> list:
    """Head outputs of a bf16/fp16 model as float32, so that decoding and NMS keep float32's
    precision (a bf16 box centre near the right edge of a 416 input is off by up to 1.6 px);
    float32 and float64 outputs as they are."""
    return [o.float() if o.dtype in (torch.bfloat16, torch.float16) else o for o in outputs]


def decode(raw: torch.Tensor, head: Head, input_size: tuple) -> dict:
    """Raw head output -> {"boxes": (B,H,W,A,4) normalized cx,cy,w,h, "obj": (B,H,W,A),
    "cls": (B,H,W,A,C) class probabilities}.  ``input_size`` is (width, height) in pixels."""
    p = split(raw, head)
    h, w = p.shape[1:3]
    gx, gy = _grid(h, w, p)
    s = head.scale_x_y
    anchors = head.anchors.to(p)
    if head.new_coords:
        xy, obj, cls = p[..., :2], p[..., 4], p[..., 5:]
        wh = (2 * p[..., 2:4]) ** 2 * anchors
    else:
        xy, obj, cls = torch.sigmoid(p[..., :2]), torch.sigmoid(p[..., 4]), torch.sigmoid(p[..., 5:])
        wh = torch.exp(p[..., 2:4]) * anchors
    xy = xy * s - (s - 1) / 2
    boxes = torch.stack([(xy[..., 0] + gx) / w, (xy[..., 1] + gy) / h,
                         wh[..., 0] / input_size[0], wh[..., 1] / input_size[1]], -1)
    return {"boxes": boxes, "obj": obj, "cls": cls}


def decode_region(raw: torch.Tensor, layer, tree=None) -> dict:
    """[region] (YOLOv2) raw output (B, num*(coords+1+C), H, W): anchors in grid units,
    logistic x, y, objectness, softmax classes (darknet's get_region_box).

    With tree= (yolo9000) the classes get a softmax within each group of the tree, then - as
    darknet's get_region_detections (hierarchy_predictions, only_leaves=0) - each node's
    probability times its parent's, so "cls" holds p(node) = p(node | parent) * p(parent)
    (0 for class entries past the tree).  ``tree``: a shapes.Tree, read from the layer's
    tree= file when not given."""
    o = layer.opts
    b, _, h, w = raw.shape
    p = raw.reshape(b, o["num"], o["coords"] + 1 + o["classes"], h, w).permute(0, 3, 4, 1, 2)
    gx, gy = _grid(h, w, p)
    anchors = torch.tensor(o["anchors"], dtype=p.dtype, device=p.device)
    boxes = torch.stack([(torch.sigmoid(p[..., 0]) + gx) / w, (torch.sigmoid(p[..., 1]) + gy) / h,
                         torch.exp(p[..., 2]) * anchors[:, 0] / w,
                         torch.exp(p[..., 3]) * anchors[:, 1] / h], -1)
    k = o["coords"]
    cls = p[..., k + 1:]
    if o.get("tree"):
        from ..config import shapes
        tree = tree or shapes.load_tree(layer)
        cls = tree_probabilities(cls, tree)
    else:
        cls = torch.softmax(cls, -1) if o["softmax"] else torch.sigmoid(cls)
    return {"boxes": boxes, "obj": torch.sigmoid(p[..., k]), "cls": cls}


def tree_probabilities(logits: torch.Tensor, tree) -> torch.Tensor:
    """(..., C) class logits -> each node's absolute probability under ``tree``: a softmax in
    each group (darknet's softmax_tree), then times the parent's (hierarchy_predictions; the
    parents are earlier lines, so one pass per depth).  Entries past the tree's n are 0."""
    from ..nn.layers import group_softmax
    n = tree.n
    group = torch.tensor(tree.groups(), device=logits.device)
    cond = group_softmax(logits[..., :n], group, len(tree.group_size))
    depth = []
    for par in tree.parent:
        depth.append(0 if par < 0 else depth[par] + 1)
    parent = torch.tensor(tree.parent, device=logits.device)
    depth = torch.tensor(depth, device=logits.device)
    out = cond.clone()
    for d in range(1, int(depth.max()) + 1):
        idx = (depth == d).nonzero().flatten()
        out[..., idx] = cond[..., idx] * out[..., parent[idx]]
    return torch.cat([out, torch.zeros_like(logits[..., n:])], -1)


def region_tree_probs(cls: torch.Tensor, obj: torch.Tensor, thresh: float) -> torch.Tensor:
    """Per-class scores of a tree [region]'s boxes as AlexeyAB darknet's detector gives them
    (get_region_boxes with a tree and no map): of a box's absolute class probabilities
    (:func:`decode_region`'s "cls"), only the highest-index class above 0.5 is kept, the others
    are 0, and all are 0 unless the objectness exceeds ``thresh``; not times the objectness.
    ``cls`` (..., C), ``obj`` (...) -> (..., C)."""
    above = cls > 0.5
    last = cls.shape[-1] - 1 - above.flip(-1).int().argmax(-1)             # highest index > .5
    keep = F.one_hot(last, cls.shape[-1]).bool() & above.any(-1, keepdim=True)
    return torch.where(keep & (obj > thresh)[..., None], cls, torch.zeros_like(cls))


# ----- IoU family ---------------------------------------------------------------------------------


def _corners(b):
    return b[..., 0] - b[..., 2] / 2, b[..., 1] - b[..., 3] / 2, \
        b[..., 0] + b[..., 2] / 2, b[..., 1] + b[..., 3] / 2


def box_iou(a: torch.Tensor, b: torch.Tensor, kind: str = "iou") -> torch.Tensor:
    """IoU, GIoU, DIoU or CIoU of (cx, cy, w, h) boxes, broadcasting over leading dims.
    Safe for zero-size, identical and disjoint boxes (no NaN, no inf).

    CIoU (design notes): iou - p2/c2 - alpha*v, v = 4/pi^2 (atan(wg/hg) - atan(w/h))^2,
    alpha = v / (1 - iou + v); p2 the squared centre distance, c2 the enclosing box's squared
    diagonal."""
    ax1, ay1, ax2, ay2 = _corners(a)
    bx1, by1, bx2, by2 = _corners(b)
    iw = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp(min=0)
    ih = (torch.minimum(ay2, by2) - torch.maximum(ay1, by1)).clamp(min=0)
    inter = iw * ih
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    iou = inter / (union + EPS)
    if kind == "iou":
        return iou
    cw = torch.maximum(ax2, bx2) - torch.minimum(ax1, bx1)
    ch = torch.maximum(ay2, by2) - torch.minimum(ay1, by1)
    if kind == "giou":
        c_area = cw * ch
        return iou - (c_area - union) / (c_area + EPS)
    c2 = cw ** 2 + ch ** 2 + EPS
    p2 = (a[..., 0] - b[..., 0]) ** 2 + (a[..., 1] - b[..., 1]) ** 2
    if kind == "diou":
        return iou - p2 / c2
    if kind == "ciou":
        v = (4 / math.pi ** 2) * (torch.atan(b[..., 2] / (b[..., 3] + EPS))
                                  - torch.atan(a[..., 2] / (a[..., 3] + EPS))) ** 2
        alpha = v / (1 - iou + v + EPS)
        return iou - p2 / c2 - alpha * v
    raise ValueError(f"unknown IoU kind {kind!r}: iou, giou, diou or ciou")


def wh_iou(wh1: torch.Tensor, wh2: torch.Tensor) -> torch.Tensor:
    """IoU of boxes sharing a centre: (N, 2) x (M, 2) -> (N, M)."""
    inter = torch.minimum(wh1[:, None], wh2[None]).prod(-1)
    return inter / (wh1.prod(-1)[:, None] + wh2.prod(-1)[None] - inter + EPS)


# ----- targets ------------------------------------------------------------------------------------


@dataclass
class Targets:
    """y_true: one (B, H, W, A, 4+1+C) tensor per head (normalized x, y, w, h; objectness;
    one-hot class), plus the gt boxes padded to (B, N, 4) with a (B, N) validity mask."""
    per_head: list
    boxes: torch.Tensor
    valid: torch.Tensor


BOX_TOLERANCE = 1e-3    # how far outside [0, 1] a normalized box value may stray (rounding)


def _check_targets(boxes, classes, heads, grids) -> None:
    """DarkcfgError for inputs encode_targets cannot place: a box outside the image, a class
    the heads do not have, per-image lists or grids that do not pair up."""
    if len(grids) != len(heads):
        raise DarkcfgError(f"encode_targets: {len(grids)} grids for {len(heads)} heads; give "
                           f"one (H, W) per head, in head order")
    if len(classes) != len(boxes):
        raise DarkcfgError(f"encode_targets: boxes for {len(boxes)} images but classes for "
                           f"{len(classes)}")
    ncls = min(h.classes for h in heads) if heads else 0
    for i, (bx, c) in enumerate(zip(boxes, classes)):
        bx = torch.as_tensor(bx, dtype=torch.float64)
        c = torch.as_tensor(c).reshape(-1)
        if bx.numel() % 4 or bx.numel() // 4 != len(c):
            raise DarkcfgError(f"encode_targets: image {i}: {bx.numel() / 4:g} boxes of 4 "
                               f"values but {len(c)} class ids")
        bx = bx.reshape(-1, 4)
        bad = ~(bx.isfinite() & (bx >= -BOX_TOLERANCE) & (bx <= 1 + BOX_TOLERANCE)).all(1)
        if bad.any():
            k = int(bad.nonzero()[0])
            raise DarkcfgError(f"encode_targets: image {i}, box {k}: (cx, cy, w, h) = "
                               f"{tuple(round(v, 6) for v in bx[k].tolist())} is outside the "
                               f"image; boxes are normalized to [0, 1]")
        bad = (c < 0) | (c >= ncls)
        if bad.any():
            k = int(bad.nonzero()[0])
            raise DarkcfgError(f"encode_targets: image {i}, box {k}: class id {int(c[k])} is "
                               f"outside the heads' {ncls} classes (0..{ncls - 1})")


def _later_wins(key: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Of rows sharing a ``key`` (one cell and anchor), keep the one with the largest ``order``
    (the later gt box) - darknet's loop over truths overwrites - decided here, not by
    index_put_ with repeated indices (undefined order, and CUDA differs)."""
    if not len(key):
        return torch.zeros(0, dtype=torch.bool)
    uniq, inv = torch.unique(key, return_inverse=True)
    last = torch.full((len(uniq),), -1, dtype=order.dtype).scatter_reduce(0, inv, order, "amax")
    return order == last[inv]


def encode_targets(boxes: list, classes: list, heads: list, grids: list, input_size: tuple,
                   rule: str = "per_scale", anchors: torch.Tensor | None = None) -> Targets:
    """gt boxes -> y_true.

    ``boxes[i]``: (N_i, 4) normalized (cx, cy, w, h) of image i; ``classes[i]``: (N_i,) ints;
    ``grids``: (H, W) of each head; ``input_size``: (width, height) in pixels.

    * ``per_scale`` (the design notes'): every gt box takes the best of each head's anchors (by
      width/height IoU), so it is a positive at every scale.
    * ``best_of_all`` (darknet's forward_yolo_layer, keras-yolo3): the best of the full anchor
      list the masks index (each head's [yolo] ``anchors``; ``anchors`` overrides it), a
      positive only on the head whose mask holds it; plus - as darknet - any other anchor of a
      head whose IoU exceeds that head's ``iou_thresh`` (1.0, i.e. off, unless the cfg sets
      it).  A best anchor in no mask (yolov3-tiny's anchor 0 in darknet's cfg) gives no
      positive, as in darknet.
    A box's cell is the one containing its centre.  Two boxes on one cell and anchor: the later
    one wins, as in darknet.  Boxes outside [0, 1], class ids outside the heads' classes and a
    grids/heads count mismatch raise DarkcfgError."""
    if rule not in ("per_scale", "best_of_all"):
        raise ValueError(f"rule must be per_scale or best_of_all, got {rule!r}")
    _check_targets(boxes, classes, heads, grids)
    b = len(boxes)
    n = max([len(torch.as_tensor(c).reshape(-1)) for c in classes] + [1])
    dtype = boxes[0].dtype if b and torch.is_tensor(boxes[0]) else torch.float32
    pad = torch.zeros(b, n, 4, dtype=dtype)
    valid = torch.zeros(b, n, dtype=torch.bool)
    cls = torch.zeros(b, n, dtype=torch.long)
    for i, (bx, c) in enumerate(zip(boxes, classes)):
        c = torch.as_tensor(c, dtype=torch.long).reshape(-1)
        pad[i, :len(c)] = torch.as_tensor(bx, dtype=dtype).reshape(-1, 4)
        valid[i, :len(c)] = True
        cls[i, :len(c)] = c
    bi, gi = valid.nonzero(as_tuple=True)                     # row-major: image, then box order
    gt, gc = pad[bi, gi], cls[bi, gi]                                         # (G, 4), (G,)
    gwh = gt[:, 2:] * torch.tensor(input_size, dtype=dtype)                   # pixels
    out = []
    for head, (h, w) in zip(heads, grids):
        na = len(head.mask)
        y = torch.zeros(b, h, w, na, 5 + head.classes, dtype=dtype)
        ious = wh_iou(gwh, head.anchors.to(dtype))                            # (G, A)
        if rule == "per_scale":
            take = F.one_hot(ious.argmax(1), na).bool()
        else:
            full = anchors if anchors is not None else head.full_anchors(heads)
            best = wh_iou(gwh, full.to(dtype)).argmax(1)   # (G,) into the full list; ties: first
            take = best[:, None] == torch.tensor(head.mask)[None]
            take = take | (ious > head.iou_thresh)
        g, a = take.nonzero(as_tuple=True)
        cx = (gt[g, 0] * w).long().clamp(0, w - 1)
        cy = (gt[g, 1] * h).long().clamp(0, h - 1)
        keep = _later_wins(((bi[g] * h + cy) * w + cx) * na + a, g)
        g, a, cx, cy = g[keep], a[keep], cx[keep], cy[keep]
        row = torch.cat([gt[g], torch.ones_like(gt[g, :1]),
                         F.one_hot(gc[g], head.classes).to(dtype)], 1)
        y[bi[g], cy, cx, a] = row                                 # indices now unique
        out.append(y)
    return Targets(out, pad, valid)


def raw_offsets(y_true: torch.Tensor, head: Head, input_size: tuple) -> torch.Tensor:
    """The raw head output that decodes to ``y_true``'s boxes at its positives (the inverse of
    :func:`decode`; zeros elsewhere).  Returned as (B, A*(5+C), H, W)."""
    b, h, w, a, _ = y_true.shape
    gx, gy = _grid(h, w, y_true)
    s = head.scale_x_y
    pos = y_true[..., 4] > 0
    frac = torch.stack([y_true[..., 0] * w - gx, y_true[..., 1] * h - gy], -1)
    sig = (frac + (s - 1) / 2) / s
    anchors = head.anchors.to(y_true)
    ratio = y_true[..., 2:4] * torch.tensor(input_size, dtype=y_true.dtype,
                                            device=y_true.device) / anchors
    if head.new_coords:
        txy, twh = sig, torch.sqrt(ratio) / 2
    else:
        txy, twh = torch.logit(sig.clamp(1e-12, 1 - 1e-12)), torch.log(ratio.clamp(min=1e-12))
    t = torch.cat([txy, twh, torch.zeros_like(y_true[..., 4:])], -1) * pos[..., None]
    return t.permute(0, 3, 4, 1, 2).reshape(b, -1, h, w)


# ----- loss -----------------------------------------------------------------------------------------


def _bce(logits, target, logistic: bool):
    """BCE on logits, or on probabilities already squashed (new_coords=1 heads)."""
    if logistic:
        return F.binary_cross_entropy(logits.clamp(1e-7, 1 - 1e-7), target, reduction="none")
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none")


def _check_loss_inputs(raw, targets, heads) -> None:
    if not (len(raw) == len(targets.per_head) == len(heads)):
        raise DarkcfgError(f"yolo_loss: {len(raw)} raw outputs, {len(targets.per_head)} target "
                           f"tensors and {len(heads)} heads; give one of each per head")
    for k, (r, y, head) in enumerate(zip(raw, targets.per_head, heads)):
        want = len(head.mask) * (5 + head.classes)
        if r.dim() != 4 or r.shape[1] != want:
            raise DarkcfgError(f"yolo_loss: head {k} output is {tuple(r.shape)}, but its "
                               f"{len(head.mask)} anchors and {head.classes} classes need "
                               f"(B, {want}, H, W)")
        if tuple(y.shape) != (r.shape[0], r.shape[2], r.shape[3], len(head.mask),
                              5 + head.classes):
            raise DarkcfgError(f"yolo_loss: head {k} targets are {tuple(y.shape)}, its output "
                               f"{tuple(r.shape)}: encode the targets for these heads and grids")


def yolo_loss(raw: list, targets: Targets, heads: list, input_size: tuple,
              ignore: str = "darknet") -> tuple:
    """The design notes' loss, summed over heads and averaged over the batch.

    Returns ``(total, parts)`` with parts ``xy, wh, iou, obj, cls`` (scalars, for logging).

    * xy: BCE between the sigmoid offsets and the in-cell offset, positives only;
    * wh: 0.5 * (log(gt/anchor) - tw)^2, positives only; both weighted by 2 - w*h;
    * with a head's ``iou_loss`` iou/giou/diou/ciou, xy and wh give way to
      ``iou_normalizer * (1 - IoU)`` of the decoded box and the gt box, positives only;
    * obj: BCE on positives and on negatives; a negative is ignored when its best IoU with any
      gt box exceeds ``ignore_thresh`` and - ``ignore="darknet"``, darknet's forward_yolo_layer
      (compare_yolo_class) - some class probability of that prediction exceeds 0.25 (any
      class, not the gt's: darknet's code ignores its class_id argument);
      ``ignore="iou"`` drops the class condition (the design notes', keras-yolo3).  A negative
      whose best IoU exceeds ``truth_thresh`` counts as a positive (darknet); times
      ``obj_normalizer``;
    * cls: BCE on positives, times ``cls_normalizer``.
    """
    if ignore not in ("darknet", "iou"):
        raise ValueError(f"ignore must be darknet or iou, got {ignore!r}")
    _check_loss_inputs(raw, targets, heads)
    parts = {k: raw[0].new_zeros(()) for k in ("xy", "wh", "iou", "obj", "cls")}
    bsz = raw[0].shape[0]
    gt, valid = targets.boxes.to(raw[0]), targets.valid.to(raw[0].device)
    for r, y, head in zip(raw, targets.per_head, heads):
        y = y.to(r)                                     # (B, H, W, A, 5+C)
        p = split(r, head)                              # (B, H, W, A, 5+C)
        pos = y[..., 4]
        logistic = bool(head.new_coords)
        dec = decode(r, head, input_size)
        for k, v in _box_loss(p, y, dec, head, input_size).items():
            parts[k] = parts[k] + v
        best, ignored = _best_iou(dec, gt, valid, pos, head, ignore)
        neg = (1 - pos) * ~ignored
        extra = (1 - pos) * (best > head.truth_thresh)
        obj_t = torch.maximum(pos, extra)
        obj = _bce(p[..., 4], obj_t, logistic) * (pos + neg + extra).clamp(max=1)
        parts["obj"] = parts["obj"] + head.obj_normalizer * obj.sum()
        cls = _bce(p[..., 5:], y[..., 5:], logistic).sum(-1) * pos
        parts["cls"] = parts["cls"] + head.cls_normalizer * cls.sum()
    parts = {k: v / bsz for k, v in parts.items()}
    return sum(parts.values()), parts


def _box_loss(p, y, dec, head: Head, input_size: tuple) -> dict:
    """One head's box terms over the positives, each weighted by 2 - w*h: {"iou": ...} with
    an ``iou_loss``, else {"xy": BCE of the offsets, "wh": 0.5 * squared log-ratio error}."""
    pos = y[..., 4]
    if head.iou_loss in ("iou", "giou", "diou", "ciou"):
        iou = box_iou(dec["boxes"], y[..., :4], head.iou_loss)
        return {"iou": head.iou_normalizer * ((1 - iou) * pos).sum()}
    logistic = bool(head.new_coords)
    h, w = p.shape[1:3]
    gx, gy = _grid(h, w, p)
    scale = (2 - y[..., 2] * y[..., 3]) * pos
    s = head.scale_x_y
    frac = torch.stack([y[..., 0] * w - gx, y[..., 1] * h - gy], -1)
    txy = ((frac + (s - 1) / 2) / s).clamp(0, 1)
    xy = (_bce(p[..., :2], txy, logistic).sum(-1) * scale).sum()
    ratio = y[..., 2:4] * torch.tensor(input_size, dtype=y.dtype, device=y.device) \
        / head.anchors.to(y)
    if logistic:
        twh_true, twh = torch.sqrt(ratio) / 2, p[..., 2:4]
    else:
        twh_true, twh = torch.log(ratio.clamp(min=1e-9)), p[..., 2:4]
    twh_true = torch.where(pos[..., None] > 0, twh_true, torch.zeros_like(twh_true))
    return {"xy": xy, "wh": (0.5 * ((twh_true - twh) ** 2).sum(-1) * scale).sum()}


@torch.no_grad()
def _best_iou(dec, gt, valid, pos, head: Head, ignore: str) -> tuple:
    """(each prediction's best IoU with any gt box of its image, the negatives the objectness
    loss ignores: best IoU over ignore_thresh and - darknet's rule - a class probability over
    0.25)."""
    bsz = pos.shape[0]
    pb = dec["boxes"].reshape(bsz, -1, 1, 4)
    ious = box_iou(pb, gt[:, None, :, :]) * valid[:, None, :]
    best = ious.max(-1).values.reshape(pos.shape) if gt.shape[1] else torch.zeros_like(pos)
    ignored = best > head.ignore_thresh
    if ignore == "darknet":
        ignored &= dec["cls"].amax(-1) > 0.25 if head.classes else False
    return best, ignored


# ----- NMS and detections -------------------------------------------------------------------------


def _diou_over(a, rest, thresh, beta):
    iou = box_iou(a, rest)
    ax1, ay1, ax2, ay2 = _corners(a)
    bx1, by1, bx2, by2 = _corners(rest)
    c2 = (torch.maximum(ax2, bx2) - torch.minimum(ax1, bx1)) ** 2 + \
        (torch.maximum(ay2, by2) - torch.minimum(ay1, by1)) ** 2 + EPS
    p2 = (a[..., 0] - rest[..., 0]) ** 2 + (a[..., 1] - rest[..., 1]) ** 2
    return iou - (p2 / c2) ** beta > thresh


def nms(boxes: torch.Tensor, scores: torch.Tensor, thresh: float,
        classes: torch.Tensor | None = None, kind: str = "greedy", beta: float = 0.6):
    """Indices kept, highest score first.  ``boxes`` (N, 4) cx,cy,w,h.

    * greedy: drop a box whose IoU with a kept one exceeds ``thresh``;
    * diou (darknet's nms_kind=diounms): drop when IoU - (p2/c2)^beta exceeds ``thresh``.
    With ``classes``, boxes of different classes never suppress each other (per class);
    without, NMS is class-agnostic.  Memory is O(N): one kept box against the rest per step."""
    if kind not in ("greedy", "diou"):
        raise ValueError(f"unknown NMS kind {kind!r}: greedy or diou")
    if classes is not None and len(classes):   # per class: O(sum n_c^2) instead of O(N^2)
        kept = [idx[_greedy(boxes[idx], scores[idx], thresh, kind, beta)]
                for idx in (torch.nonzero(classes == k).flatten() for k in classes.unique())]
        kept = torch.cat(kept)
        return kept[scores[kept].argsort(descending=True)]
    return _greedy(boxes, scores, thresh, kind, beta)


def _greedy(boxes, scores, thresh, kind, beta):
    order = scores.argsort(descending=True)
    b = boxes[order]
    n = len(b)
    dropped = np.zeros(n, dtype=bool)          # the greedy bookkeeping is cheapest in numpy
    step = max(64, min(1024, 20_000_000 // max(n, 1)))     # bounds the block to ~20M entries
    for start in range(0, n, step):
        end = min(n, start + step)
        blk, later = b[start:end, None], b[None, start:]
        over = (_diou_over(blk, later, thresh, beta) if kind == "diou"
                else box_iou(blk, later) > thresh)               # (block, n - start)
        over = over.cpu().numpy()
        tail = dropped[start:]
        for j in range(end - start):         # exact greedy: a kept box drops those it covers
            if not tail[j]:
                tail[j + 1:] |= over[j, j + 1:]
    return order[torch.from_numpy(~dropped).to(order.device)]


@dataclass
class Detection:
    cls: int
    score: float
    box: tuple          # (x1, y1, x2, y2) in the units asked for


def nms_of(opts: dict) -> tuple:
    """(kind, beta) of darknet's NMS for a head's nms_kind, read from the last head as darknet
    does: default -> greedy IoU (do_nms_sort); greedynms -> DIoU with darknet's fixed 0.6
    exponent (diounms_sort calls box_diou); diounms -> DIoU with the head's beta_nms."""
    k = opts.get("nms_kind", "default")
    if k == "greedynms":
        return "diou", 0.6
    if k == "diounms":
        return "diou", opts.get("beta_nms", 0.6)
    return "greedy", 0.6


def detections(outputs: list, model_or_net, thresh: float = 0.25, nms_thresh: float = 0.45,
               agnostic: bool = False) -> list:
    """Model outputs (one raw tensor per [yolo] head) -> per image, a list of Detection with
    normalized corner boxes, after per-class (or class-agnostic) NMS.  A box is kept for class
    j when objectness * p(j) > ``thresh`` (darknet's get_yolo_detections); the heads' nms_kind
    and beta_nms choose greedy or DIoU NMS."""
    net = getattr(model_or_net, "net", model_or_net)
    layers = [l for l in net.layers if l.type == "yolo"]
    size = (net.width, net.height)
    kind, beta = nms_of(layers[-1].opts)
    per_image = []
    for i in range(outputs[0].shape[0]):
        boxes, scores, classes = [], [], []
        for raw, layer in zip(outputs, layers):
            d = decode(raw[i:i + 1], Head.from_layer(layer), size)
            prob = (d["obj"][..., None] * d["cls"]).reshape(-1, layer.opts["classes"])
            bx = d["boxes"].reshape(-1, 4)
            k, c = (prob > thresh).nonzero(as_tuple=True)
            boxes.append(bx[k])
            scores.append(prob[k, c])
            classes.append(c)
        boxes, scores, classes = torch.cat(boxes), torch.cat(scores), torch.cat(classes)
        keep = nms(boxes, scores, nms_thresh, None if agnostic else classes, kind, beta)
        x1, y1, x2, y2 = _corners(boxes[keep])
        per_image.append([Detection(int(c), float(s), (float(a), float(b), float(cc), float(dd)))
                          for c, s, a, b, cc, dd in zip(classes[keep], scores[keep], x1, y1, x2,
                                                        y2)])
    return per_image

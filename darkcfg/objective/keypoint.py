"""The anchor-free keypoint model of the design notes ("keypoint (kp) model").

A ``[keypoint]`` section takes an FPN feature and outputs, per cell, raw logits
``[reg_x, reg_y, class_1..class_n, centerness]``: the in-cell offset of the keypoint, its class,
and a centerness that replaces YOLO's objectness.  No anchors.

Targets (:func:`encode`), per level, for each gt keypoint (class, x, y normalized):

* its cell is the one containing it; reg target = the in-cell offset, in [0, 1];
* centerness target = 1 in its own cell and ``exp(-d^2 / (2 sigma^2))`` elsewhere, d the
  distance in cells from the cell's centre to the keypoint; where keypoints overlap the larger
  value wins;
* each cell is labelled (class, and reg where it is a keypoint's own cell) by the keypoint with
  the largest Gaussian value there - so of two keypoints in one cell, the one nearer its centre;
* class target: that keypoint's one-hot class wherever its centerness target exceeds
  ``CLASS_FLOOR``, zeros elsewhere.

Decode (:func:`decode`): score = sigmoid(centerness) * sigmoid(class); a 3x3 local maximum above
a threshold, top-k; position = (cell + sigmoid(reg)) * stride; same-class keypoints from
several levels closer than ``merge_radius`` pixels merge into the best-scoring one.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..nn.layers import KeypointHead  # noqa: F401  (the head's module; built by nn.model)

CLASS_FLOOR = 0.05


# ----- targets ------------------------------------------------------------------------------------


def heads_of(model_or_net) -> list:
    net = getattr(model_or_net, "net", model_or_net)
    return [l for l in net.layers if l.type == "keypoint"]


def _check_points(i, pts, cls, num_classes):
    """DarkcfgError for what encode cannot place (as yolo.encode_targets)."""
    from ..errors import DarkcfgError
    from .yolo import BOX_TOLERANCE
    if len(cls) != len(pts):
        raise DarkcfgError(f"keypoint encode: image {i}: {len(pts)} points but {len(cls)} class ids")
    bad = ~(pts.isfinite() & (pts >= -BOX_TOLERANCE) & (pts <= 1 + BOX_TOLERANCE)).all(1)
    if bad.any():
        k = int(bad.nonzero()[0])
        raise DarkcfgError(f"keypoint encode: image {i}, point {k}: (x, y) = "
                           f"{tuple(pts[k].tolist())} is outside the image; points are normalized")
    bad = (cls < 0) | (cls >= num_classes)
    if bad.any():
        k = int(bad.nonzero()[0])
        raise DarkcfgError(f"keypoint encode: image {i}, point {k}: class id {int(cls[k])} is "
                           f"outside the {num_classes} classes (0..{num_classes - 1})")


def encode(points: list, classes: list, grid: tuple, num_classes: int, sigma: float) -> torch.Tensor:
    """Targets of one level: (B, H, W, 2 + C + 1) = [reg_x, reg_y, one-hot class, centerness]
    plus, in a last channel, 1 where the cell is a keypoint's own (reg is trained there).
    ``points[i]``: (N_i, 2) normalized (x, y) of image i; ``classes[i]``: (N_i,)."""
    h, w = grid
    b = len(points)
    out = torch.zeros(b, h, w, num_classes + 4, dtype=torch.float64)
    gy, gx = torch.meshgrid(torch.arange(h, dtype=torch.float64),
                            torch.arange(w, dtype=torch.float64), indexing="ij")
    for i, (pts, cls) in enumerate(zip(points, classes)):
        pts = torch.as_tensor(pts, dtype=torch.float64).reshape(-1, 2)
        cls = torch.as_tensor(cls, dtype=torch.long).reshape(-1)
        if not len(pts):
            continue
        _check_points(i, pts, cls, num_classes)
        px, py = pts[:, 0] * w, pts[:, 1] * h                                  # in cells
        cx, cy = px.long().clamp(0, w - 1), py.long().clamp(0, h - 1)
        d2 = (gx[None] + 0.5 - px[:, None, None]) ** 2 + (gy[None] + 0.5 - py[:, None, None]) ** 2
        g = torch.exp(-d2 / (2 * sigma * sigma))                               # (N, H, W)
        own = torch.zeros_like(g, dtype=torch.bool)
        own[torch.arange(len(pts)), cy, cx] = True
        value = torch.where(own, torch.ones_like(g), g)
        best = g.argmax(0)                                                     # labelling point
        ctr = value.max(0).values
        lab_own = own.gather(0, best[None])[0]
        out[i, ..., -2] = ctr
        out[i, ..., 2:2 + num_classes] = F.one_hot(cls[best], num_classes).double() * \
            (ctr > CLASS_FLOOR)[..., None]
        out[i, ..., 0] = torch.where(lab_own, px[best] - gx, torch.zeros_like(gx))
        out[i, ..., 1] = torch.where(lab_own, py[best] - gy, torch.zeros_like(gy))
        out[i, ..., -1] = lab_own.double()
    return out


def raw_from_targets(t: torch.Tensor, big: float = 30.0) -> torch.Tensor:
    """The raw head output (B, C+3, H, W) whose decode gives back ``t``'s keypoints: logits of
    the offsets, and +-``big`` for class and centerness (1 at a keypoint's own cell)."""
    reg = torch.logit(t[..., :2].clamp(1e-12, 1 - 1e-12))
    own = t[..., -1:] > 0
    cls = torch.where((t[..., 2:-2] > 0) & own, big, -big)
    ctr = torch.where(own, big, -big)
    return torch.cat([reg, cls, ctr], -1).permute(0, 3, 1, 2)


# ----- loss ---------------------------------------------------------------------------------------


def _base(logits, target, opts):
    kind = opts["loss"]
    if kind == "l2":
        return (torch.sigmoid(logits) - target) ** 2
    if kind == "wbce":
        w = 1 + (opts["pos_weight"] - 1) * target
        return w * F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    if kind == "focal":
        p = torch.sigmoid(logits)
        pt = p * target + (1 - p) * (1 - target)
        at = opts["alpha"] * target + (1 - opts["alpha"]) * (1 - target)
        return at * (1 - pt) ** opts["gamma"] * bce
    return bce


def loss(raw: list, targets: list, layers: list) -> tuple:
    """Sum over levels, mean over the batch.  Parts: reg (the in-cell offset, on the keypoints'
    own cells), cls and ctr (every cell); each with the head's loss= (bce, l2, wbce, focal)."""
    parts = {k: raw[0].new_zeros(()) for k in ("reg", "cls", "ctr")}
    for r, t, layer in zip(raw, targets, layers):
        t = t.to(r)
        p = r.permute(0, 2, 3, 1)                                   # (B, H, W, C+3)
        own = t[..., -1]
        parts["reg"] = parts["reg"] + (_base(p[..., :2], t[..., :2], layer.opts).sum(-1)
                                       * own).sum()
        parts["cls"] = parts["cls"] + _base(p[..., 2:-1], t[..., 2:-2], layer.opts).sum()
        parts["ctr"] = parts["ctr"] + _base(p[..., -1], t[..., -2], layer.opts).sum()
    b = raw[0].shape[0]
    parts = {k: v / b for k, v in parts.items()}
    return sum(parts.values()), parts


# ----- decode -------------------------------------------------------------------------------------


@dataclass
class Keypoint:
    cls: int
    score: float
    x: float            # input pixels
    y: float


def decode(raw: list, model_or_net, thresh: float = 0.3, top_k: int = 100,
           merge_radius: float | None = None) -> list:
    """Per image, the keypoints: 3x3 local maxima of sigmoid(centerness) * sigmoid(class)
    above ``thresh``, top-k per level, positions in input pixels; same-class keypoints from
    different levels within ``merge_radius`` pixels (default: half the coarsest stride) merge."""
    net = getattr(model_or_net, "net", model_or_net)
    strides = [net.width / l.input[0] for l in heads_of(net)]
    radius = merge_radius if merge_radius is not None else max(strides) / 2
    found = [[] for _ in range(raw[0].shape[0])]
    for r, stride in zip(raw, strides):
        b, _, h, w = r.shape
        score = torch.sigmoid(r[:, 2:-1]) * torch.sigmoid(r[:, -1:])            # (B, C, H, W)
        peak = score == F.max_pool2d(score, 3, 1, 1)
        score = torch.where(peak & (score > thresh), score, torch.zeros_like(score))
        flat = score.reshape(b, -1)
        k = min(top_k, flat.shape[1])
        vals, idx = flat.topk(k, 1)
        for i in range(b):
            for v, j in zip(vals[i].tolist(), idx[i].tolist()):
                if v <= 0:
                    break
                c, rem = divmod(j, h * w)
                cy, cx = divmod(rem, w)
                ox, oy = torch.sigmoid(r[i, 0:2, cy, cx]).tolist()
                found[i].append(Keypoint(c, v, (cx + ox) * stride, (cy + oy) * stride))
    out = []
    for kps in found:
        kept = []
        for kp in sorted(kps, key=lambda p: -p.score):
            if all(q.cls != kp.cls or math.hypot(q.x - kp.x, q.y - kp.y) > radius for q in kept):
                kept.append(kp)
        out.append(kept)
    return out


# ----- images in, points out (what `darkcfg detect` runs for a [keypoint] cfg) -----------------


def detect_keypoints(model, path, thresh: float = 0.3, top_k: int = 100,
                     max_det: int | None = None, letter_box=None):
    """(keypoints of one image - ``path``, or a Pillow RGB image already read, a video's
    frame - with x, y in image pixels, the RGB image): detect's
    network input (darkcfg.detect.network_input, darknet's resize as for box models and map:
    stretched, or letterboxed when ``letter_box`` - None: the cfg's [net] letter_box decides,
    detect.letter_boxed), the model, :func:`decode` above ``thresh``, each point moved back to
    the image (stretched: scaled by image / network size; letterboxed: from the integer offset
    where the letterbox put the image, as validate.points_to_input moves labels in), those that
    fall outside the image (on the letterbox's grey border) dropped - never clamped to the edge
    - and of the rest the best ``max_det`` by score."""
    from ..dataset.prepare import letter_boxed, network_input, open_image
    from ..errors import DarkcfgError
    net = model.net
    if not heads_of(net):
        raise DarkcfgError(f"{net.cfg.name}: detect_keypoints needs [keypoint] heads")
    img = open_image(path) if isinstance(path, (str, os.PathLike)) else path
    x, new = network_input(img, net.width, net.height, letter_boxed(net, letter_box))
    with torch.no_grad():
        raw = model(torch.from_numpy(x)[None].to(**model.placement()))
    return points_of(model, raw, img.size, new, thresh, top_k, max_det), img


def points_of(model, raw: list, img_size, new_size, thresh: float = 0.3, top_k: int = 100,
              max_det: int | None = None) -> list:
    """One image's head outputs (batch dimension 1) -> its keypoints in image pixels (see
    :func:`detect_keypoints`; ``new_size``: the image's size inside the input)."""
    from .yolo import decodable
    net = model.net
    (w, h), (nw, nh) = img_size, new_size
    x0, y0 = (net.width - nw) // 2, (net.height - nh) // 2
    kps = []
    for k in decode(decodable(raw), net, thresh=thresh, top_k=top_k)[0]:
        k.x, k.y = (k.x - x0) / nw * w, (k.y - y0) / nh * h
        if 0 <= k.x <= w and 0 <= k.y <= h:
            kps.append(k)
    kps.sort(key=lambda k: -k.score)
    return kps[:max_det] if max_det is not None else kps


def draw_points(img, points: list, names: list | None, dst: str) -> None:
    """Draw each keypoint (a filled disc, a ring and its class name and score beside it) on a
    copy of the Pillow image ``img``; write it to ``dst`` atomically (format from the name)."""
    from ..outputs import save_image
    save_image(points_drawn(img, points, names), dst)


def points_drawn(img, points: list, names: list | None):
    """A copy of the Pillow image ``img`` with the keypoints drawn (see :func:`draw_points`)."""
    from PIL import ImageDraw
    img = img.copy()
    pen = ImageDraw.Draw(img)
    r = max(2, min(img.size) // 100)
    for k in points:
        hue = (k.cls * 67) % 255
        color = (hue, 255 - hue, (hue * 3) % 255)
        pen.ellipse((k.x - r, k.y - r, k.x + r, k.y + r), fill=color)
        pen.ellipse((k.x - 2 * r, k.y - 2 * r, k.x + 2 * r, k.y + 2 * r), outline=color)
        label = f"{names[k.cls] if names and k.cls < len(names) else k.cls} {k.score:.2f}"
        pen.text((k.x + 2 * r + 1, k.y - 2 * r), label, fill=color)
    return img

"""Images in, detections out: darknet's resize or letterbox, the model, decode, NMS, boxes back
in image pixels (darknet's correct_yolo_boxes), and drawing.  Pillow reads and draws the images;
the network input is made by the path ``darkcfg map`` takes (dataset.prepare: darknet's
resize_image, stretched unless letterboxing).  As darknet's ``detector test``, images are
stretched by default and letterboxed on request (its ``-letter_box``) - here also when the cfg's
[net] letter_box=1, the value ``map`` and training follow."""
from __future__ import annotations

import torch

from ..dataset.prepare import (letter_boxed, letterbox, network_input,  # noqa: F401
                               open_image, read_names)
from ..objective import yolo as Y
from ..objective.yolo import decodable  # noqa: F401  (detect.decodable, as before)
from ..errors import DarkcfgError
from ..outputs import save_image as save_drawing


def unletterbox(box, net_size, new_size, img_size):
    """darknet's correct_yolo_boxes: normalized network box -> image pixels.  ``new_size`` is
    the image's size inside the input: letter=1 takes the letterbox's, letter=0 (stretched)
    the network's own, and then x only scales by image w, y by image h."""
    (nw_, nh_), (nw, nh), (w, h) = net_size, new_size, img_size
    x1, y1, x2, y2 = box
    ox, oy = (nw_ - nw) / 2 / nw_, (nh_ - nh) / 2 / nh_
    sx, sy = nw / nw_, nh / nh_
    return ((x1 - ox) / sx * w, (y1 - oy) / sy * h, (x2 - ox) / sx * w, (y2 - oy) / sy * h)


DETECTORS = ("yolo", "region")


def head_kind(model) -> str:
    """What detect finds with ``model``: "boxes" ([yolo] or [region] heads) or "points" (only
    [keypoint] heads); a DarkcfgError for anything else (no head, other heads, a mix)."""
    heads = sorted({l.type for l in model.net.layers if l.head})
    if heads == ["keypoint"]:
        return "points"
    if heads and all(t in DETECTORS for t in heads):
        return "boxes"
    raise DarkcfgError(f"{model.net.cfg.name}: detect needs [yolo] or [region] heads, or only "
                       f"[keypoint] heads; found {', '.join(f'[{t}]' for t in heads) or 'none'}")


def check_detector(model) -> None:
    if head_kind(model) != "boxes":
        raise DarkcfgError(f"{model.net.cfg.name}: detect_image needs [yolo] or [region] heads "
                           f"(keypoint.detect_keypoints finds [keypoint] points)")


def region_detections(outputs: list, model, thresh: float = 0.25,
                      nms_thresh: float = 0.45) -> list:
    """[region] (YOLOv2) outputs -> per image, Detections with normalized corner boxes: class j
    kept when objectness * p(j) > thresh (darknet's get_region_detections), per-class NMS."""
    layers = [l for l in model.net.layers if l.head]
    per_image = []
    for i in range(outputs[0].shape[0]):
        boxes, scores, classes = [], [], []
        for raw, layer in zip(outputs, layers):
            d = Y.decode_region(raw[i:i + 1], layer)
            prob = (d["obj"][..., None] * d["cls"]).reshape(-1, layer.opts["classes"])
            k, c = (prob > thresh).nonzero(as_tuple=True)
            boxes.append(d["boxes"].reshape(-1, 4)[k])
            scores.append(prob[k, c])
            classes.append(c)
        boxes, scores, classes = torch.cat(boxes), torch.cat(scores), torch.cat(classes)
        keep = Y.nms(boxes, scores, nms_thresh, classes)
        out = []
        for (cx, cy, w, h), s, c in zip(boxes[keep].tolist(), scores[keep].tolist(),
                                        classes[keep].tolist()):
            out.append(Y.Detection(int(c), float(s), (cx - w / 2, cy - h / 2, cx + w / 2,
                                                      cy + h / 2)))
        per_image.append(out)
    return per_image


def detect_image(model, path: str, thresh: float = 0.25, nms_thresh: float = 0.45,
                 max_det: int | None = None, letter_box=None):
    """(detections with boxes in image pixels, clipped to the image, best ``max_det`` by score;
    the RGB image as read).  The image is stretched to the network's size, or letterboxed when
    ``letter_box`` (None: the cfg's [net] letter_box decides, see :func:`letter_boxed`)."""
    img = open_image(path)
    return detect_frame(model, img, thresh, nms_thresh, max_det, letter_box), img


def detect_frame(model, img, thresh: float = 0.25, nms_thresh: float = 0.45,
                 max_det: int | None = None, letter_box=None) -> list:
    """:func:`detect_image` on a Pillow RGB image already read (a video frame, a camera's):
    the detections, boxes in image pixels clipped to the image; each keeps its unclipped box
    as ``d.raw`` (what darknet's JSON and labels are made from)."""
    check_detector(model)
    net = model.net
    x, new = network_input(img, net.width, net.height, letter_boxed(net, letter_box))
    with torch.no_grad():
        outs = model(torch.from_numpy(x)[None].to(**model.placement()))
    return boxes_of(model, outs, img.size, new, thresh, nms_thresh, max_det)


def boxes_of(model, outs: list, img_size, new_size, thresh: float = 0.25,
             nms_thresh: float = 0.45, max_det: int | None = None) -> list:
    """One image's head outputs (batch dimension 1) -> its detections in image pixels:
    decode, NMS, the best ``max_det``, boxes mapped back (``new_size``: the image's size inside
    the input, from network_input) and clipped, the unclipped box kept as ``d.raw``."""
    net = model.net
    outs = decodable(outs)
    if any(l.type == "region" for l in net.layers if l.head):
        dets = region_detections(outs, model, thresh, nms_thresh)[0]
    else:
        dets = Y.detections(outs, model, thresh, nms_thresh)[0]
    if max_det is not None:
        dets = sorted(dets, key=lambda d: -d.score)[:max_det]
    w, h = img_size
    for d in dets:
        x1, y1, x2, y2 = d.raw = unletterbox(d.box, (net.width, net.height), new_size, img_size)
        d.box = (min(max(x1, 0.0), w), min(max(y1, 0.0), h), min(max(x2, 0.0), w),
                 min(max(y2, 0.0), h))
    return dets


def draw(img, dets: list, names: list | None, dst: str) -> None:
    """Draw the boxes on a copy of ``img`` and write it to ``dst`` (format from the name)."""
    save_drawing(drawn(img, dets, names), dst)


def drawn(img, dets: list, names: list | None):
    """A copy of the Pillow image ``img`` with the boxes and labels drawn."""
    from PIL import ImageDraw
    img = img.copy()
    pen = ImageDraw.Draw(img)
    for d in dets:
        hue = (d.cls * 67) % 255
        color = (hue, 255 - hue, (hue * 3) % 255)
        pen.rectangle(d.box, outline=color, width=max(1, img.size[0] // 200))
        label = f"{names[d.cls] if names and d.cls < len(names) else d.cls} {d.score:.2f}"
        pen.text((d.box[0] + 2, d.box[1] + 1), label, fill=color)
    return img

"""Tiling for small objects (DarkHelp's idea, darkcfg's code): cut a large image into tiles
with overlap, detect on each at the network's size, move the boxes back into the image and
merge them across tiles with one NMS over the whole image (per class), so an object seen by
two overlapping tiles is reported once.
"""
from __future__ import annotations

import torch


def spans(length: int, tile: int, overlap: float) -> list:
    """Start offsets covering ``length`` with tiles of ``tile`` overlapping by ``overlap`` of
    a tile (0 <= overlap < 1): evenly from 0, the last flush with the end."""
    if tile >= length:
        return [0]
    step = max(1, int(round(tile * (1 - overlap))))
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def tiles(size, tile, overlap: float) -> list:
    """(x0, y0, x1, y1) of every tile of an image of ``size`` (w, h), row by row."""
    (w, h), (tw, th) = size, tile
    return [(x, y, min(x + tw, w), min(y + th, h))
            for y in spans(h, th, overlap) for x in spans(w, tw, overlap)]


def detect_tiled(detect, img, tile, overlap: float, nms_thresh: float) -> list:
    """``detect(pil_images) -> detections of each`` (boxes in that image's pixels, with
    ``.raw``) run on every tile of ``img`` (all of them in one call: detect may batch them);
    the boxes moved back into ``img`` and merged by per-class NMS at ``nms_thresh``.  Highest
    score first."""
    found = []
    cuts = tiles(img.size, tile, overlap)
    for (x0, y0, _, _), dets in zip(cuts, detect([img.crop(c) for c in cuts])):
        for d in dets:
            raw = getattr(d, "raw", None)
            d.box = _moved(d.box, x0, y0)
            d.raw = _moved(raw, x0, y0) if raw is not None else d.box
            found.append(d)
    if not found:
        return []
    corners = torch.tensor([d.box for d in found], dtype=torch.float64)
    centred = torch.cat([(corners[:, :2] + corners[:, 2:]) / 2, corners[:, 2:] - corners[:, :2]],
                        1)
    scores = torch.tensor([d.score for d in found], dtype=torch.float64)
    classes = torch.tensor([d.cls for d in found])
    from ..objective.yolo import nms
    return [found[i] for i in nms(centred, scores, nms_thresh, classes).tolist()]


def _moved(box, dx, dy) -> tuple:
    x1, y1, x2, y2 = box
    return x1 + dx, y1 + dy, x2 + dx, y2 + dy


def parse_tile(text: str) -> tuple:
    """``"416x416"`` -> (416, 416); ValueError otherwise."""
    w, sep, h = str(text).lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit() or int(w) < 1 or int(h) < 1:
        raise ValueError(f"--tile takes WxH in pixels (e.g. 416x416), got {text!r}")
    return int(w), int(h)

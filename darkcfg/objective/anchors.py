"""k-means anchors on ground-truth box sizes, with distance 1 - IoU (darknet's calc_anchors).

Labels are YOLO-format text files, one box per line: ``class cx cy w h``, normalized to [0, 1].
A labels source is a folder (every ``*.txt`` in it, recursively) or a file listing label files
or image files one per line, relative paths from the current folder as darknet reads them
(an image path maps to its label as darknet does: ``images/`` ->
``labels/`` and the extension -> ``.txt``).  A bad line is an error naming file:line.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..config.cfg import excerpt
from ..errors import DarkcfgError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class LabelsError(DarkcfgError):
    pass


def label_files(source: str) -> list:
    """The label files under ``source`` (a folder of .txt files, or a list file of label files
    or images) as (path, optional): an image's label is found as training finds it
    (data.label_path), and a missing one is a negative image (optional)."""
    from ..dataset.data import label_path
    if os.path.isdir(source):
        found = []
        for root, _, files in os.walk(source):
            found += [os.path.join(root, f) for f in files if f.endswith(".txt")]
        if not found:
            raise LabelsError(f"{source}: no .txt label files in this folder")
        return [(f, False) for f in sorted(found)]
    if not os.path.isfile(source):
        raise LabelsError(f"{source}: no such file or folder")
    out = []
    with open(source, encoding="utf-8-sig", errors="replace") as f:
        for nu, line in enumerate(f, 1):
            p = line.strip()
            if not p or p.startswith("#"):
                continue
            if p.lower().endswith(IMAGE_EXTS):
                out.append((label_path(p), True))
                continue
            if not p.endswith(".txt"):
                raise LabelsError(f"{source}:{nu}: {excerpt(p)} is neither a .txt label file "
                                  f"nor an image")
            out.append((p, False))     # relative to the current folder, as darknet reads lists
    if not out:
        raise LabelsError(f"{source}: lists no label files")
    return out


def read_labels(source: str) -> np.ndarray:
    """(N, 2) normalized widths and heights of every box under ``source``."""
    sizes = []
    for path, optional in label_files(source):
        if optional and not os.path.exists(path):
            continue                     # an image without a label file: a negative image
        try:
            f = open(path, encoding="utf-8-sig", errors="replace")
        except OSError as e:
            raise LabelsError(f"{path}: cannot read: {e.strerror}") from None
        with f:
            for nu, line in enumerate(f, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 5:
                    raise LabelsError(f"{path}:{nu}: expected 'class cx cy w h', got "
                                      f"{len(parts)} fields")
                try:
                    cls = int(parts[0])
                    cx, cy, w, h = map(float, parts[1:])
                except ValueError:
                    raise LabelsError(f"{path}:{nu}: not numbers: {excerpt(line)}") from None
                if cls < 0 or not all(0 <= v <= 1 for v in (cx, cy, w, h)) or w == 0 or h == 0:
                    raise LabelsError(f"{path}:{nu}: values must be normalized to [0, 1] with "
                                      f"w, h > 0 and class >= 0: {excerpt(line)}")
                sizes.append((w, h))
    if not sizes:
        raise LabelsError(f"{source}: no boxes found")
    return np.asarray(sizes, dtype=np.float64)


def iou_wh(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """IoU of boxes sharing a centre, (N, 2) x (K, 2) -> (N, K)."""
    inter = np.minimum(wh[:, None, 0], anchors[None, :, 0]) * \
        np.minimum(wh[:, None, 1], anchors[None, :, 1])
    return inter / (wh[:, None].prod(-1) + anchors[None].prod(-1) - inter)


@dataclass
class Result:
    anchors: np.ndarray      # (K, 2) pixels, small to large by area
    avg_iou: float           # mean over boxes of the best anchor's IoU
    recall50: float          # fraction of boxes whose best anchor has IoU >= 0.5
    iterations: int


def kmeans(wh: np.ndarray, k: int, seed: int = 0, max_iter: int = 1000) -> Result:
    """k-means with distance 1 - IoU: k-means++ seeding from ``seed``, then Lloyd steps (the
    mean of each cluster) until the assignment stops changing.  ``wh`` in pixels."""
    if k < 1:
        raise DarkcfgError(f"--num must be >= 1, got {k}")
    if len(wh) < k:
        raise DarkcfgError(f"{len(wh)} boxes cannot make {k} anchors")
    rng = np.random.default_rng(seed)
    centers = [wh[rng.integers(len(wh))]]
    for _ in range(1, k):
        d = 1 - iou_wh(wh, np.asarray(centers)).max(1)
        p = d ** 2
        centers.append(wh[rng.choice(len(wh), p=p / p.sum())] if p.sum() > 0
                       else wh[rng.integers(len(wh))])
    centers = np.asarray(centers, dtype=np.float64)
    assign = None
    for it in range(1, max_iter + 1):
        new = iou_wh(wh, centers).argmax(1)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            if (assign == j).any():
                centers[j] = wh[assign == j].mean(0)
    centers = centers[np.argsort(centers.prod(1), kind="stable")]
    best = iou_wh(wh, centers).max(1)
    return Result(centers, float(best.mean()), float((best >= 0.5).mean()), it)


def write_cfg(cfg, anchors: np.ndarray):
    """A copy of ``cfg`` whose [yolo] sections use ``anchors`` (K, 2 pixels, small to large):
    ``anchors=``, ``num=K`` and ``mask=``, the smallest anchors to the finest head (largest
    grid), with ``filters=`` of the conv feeding each head resized to match."""
    from ..config import shapes
    net = shapes.infer(cfg)
    heads = [l for l in net.layers if l.type == "yolo"]
    if not heads:
        raise DarkcfgError(f"{cfg.name}: has no [yolo] sections to write anchors into")
    k, n = len(anchors), len(heads)
    if k % n:
        raise DarkcfgError(f"{k} anchors cannot be split evenly over {n} [yolo] heads")
    per = k // n
    finest_first = sorted(heads, key=lambda l: -l.input[0] * l.input[1])
    text = ", ".join(f"{int(round(w))},{int(round(h))}" for w, h in anchors)
    out = cfg.copy()
    for rank, l in enumerate(finest_first):
        sec = out.sections[l.index + 1]
        sec.set("anchors", text)
        sec.set("num", k)
        sec.set("mask", ",".join(str(rank * per + i) for i in range(per)))
        feed = out.sections[l.index]
        if feed.type == "convolutional":
            feed.set("filters", (l.opts["classes"] + 5) * per)
    for sec in out.sections:
        sec.queried.clear()
    return out

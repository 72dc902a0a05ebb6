"""A generated data set in darknet's layout, to try (and test) the training pipeline without a
download: ``darkcfg data demo DIR`` writes

    DIR/obj.data            classes, train, valid, names, backup (paths relative to DIR's parent
                            are not needed: they are written as DIR/...)
    DIR/train.txt, valid.txt    one image path a line
    DIR/images/train/*.png + .txt,  DIR/images/valid/*.png + .txt   YOLO labels beside them
    DIR/obj.names           box, disc
    DIR/shapes.cfg          yolov3-tiny at 96x96, half width, 2 classes, a 300-iteration schedule

Each image (64..128 px a side) is dark noise with 1-3 bright filled rectangles (class 0) or
discs (class 1); the label of each shape is the box it was drawn in, so the ground truth is
exact by construction.  The schedule is the one the learning test uses (tests/test_train.py):
300 iterations of 16 images reach mAP@0.5 about 0.83-0.87 on the valid images (0.868 measured
with 2 threads, 0.829 with 1); an untrained model
scores about 0.0002.

:func:`dots` writes the keypoint counterpart (coloured dots, labels ``class x y``), the images
tests/test_keypoint_train.py trains the [keypoint] model on.
"""
from __future__ import annotations

import os

import numpy as np

from ..config import cfg as cfgmod
from ..errors import DarkcfgError

NAMES = ("box", "disc")
TINY_ANCHORS = (10, 14, 23, 27, 37, 58, 81, 82, 135, 169, 344, 319)   # yolov3-tiny's, at 416
SCHEDULE = dict(batch=16, subdivisions=2, learning_rate=0.005, burn_in=30, max_batches=300,
                policy="steps", steps="200,260", scales=".1,.1", momentum=0.9, decay=0.0005)


def _write_set(folder: str, n: int, seed: int, prefix: str, draw) -> list:
    """``n`` images ``draw(rng) -> (BGR image, label lines)`` from one seeded generator, each
    written as ``folder/<prefix>NNN.png`` with its label file beside it; returns the paths."""
    import cv2
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(n):
        img, lines = draw(rng)
        path = os.path.join(folder, f"{prefix}{i:03d}.png")
        if not cv2.imwrite(path, img):      # OpenCV says a failed write only by returning False
            raise DarkcfgError(f"{path}: cannot write the image (disk full or not writable?)")
        with open(path[:-4] + ".txt", "w") as f:
            f.write("\n".join(lines) + "\n")
        paths.append(path)
    return paths


def shapes(folder: str, n: int, seed: int, classes: int = 2, prefix: str = "img") -> list:
    """Write ``n`` generated images with YOLO labels beside them into ``folder``; returns
    their paths.  Class 0 is drawn as rectangles, every other class as discs."""
    import cv2
    if classes < 1:
        raise DarkcfgError(f"the demo needs at least 1 class, not {classes}")

    def draw(rng):
        w, h = int(rng.integers(64, 129)), int(rng.integers(64, 129))
        img = rng.integers(0, 90, (h, w, 3)).astype(np.uint8)
        lines = []
        for _ in range(int(rng.integers(1, 4))):
            c = int(rng.integers(0, classes))
            s = int(rng.uniform(0.2, 0.5) * min(w, h))
            cx, cy = rng.uniform(s / 2, w - s / 2), rng.uniform(s / 2, h - s / 2)
            colour = tuple(int(v) for v in rng.integers(170, 256, 3))
            bw, bh = (s, int(s * rng.uniform(0.6, 1.0))) if c == 0 else (s, s)
            if c == 0:
                cv2.rectangle(img, (int(cx - bw / 2), int(cy - bh / 2)),
                              (int(cx + bw / 2), int(cy + bh / 2)), colour, -1)
            else:
                cv2.circle(img, (int(cx), int(cy)), s // 2, colour, -1)
            lines.append(f"{c} {cx / w:.6f} {cy / h:.6f} {bw / w:.6f} {bh / h:.6f}")
        return img, lines
    return _write_set(folder, n, seed, prefix, draw)


DOT_COLOURS = ((255, 60, 60), (60, 255, 60), (80, 80, 255))      # RGB of point classes 0, 1, 2


def dots(folder: str, n: int, seed: int, classes: int = 3, prefix: str = "img") -> list:
    """Write ``n`` generated images for a [keypoint] model into ``folder``: 56..96 px a side,
    dark noise, 1-3 anti-aliased discs of radius 3 px at sub-pixel centres, each of a class
    colour (DOT_COLOURS), with keypoint labels ``class x y`` (the disc centres, normalized)
    beside them; returns their paths.  The keypoint learning test trains on these."""
    import cv2
    if not 1 <= classes <= len(DOT_COLOURS):
        raise DarkcfgError(f"the dot demo draws 1 to {len(DOT_COLOURS)} classes, not {classes}")

    def draw(rng):
        w, h = int(rng.integers(56, 97)), int(rng.integers(56, 97))
        img = rng.integers(0, 80, (h, w, 3)).astype(np.uint8)
        lines = []
        for _ in range(int(rng.integers(1, 4))):
            c = int(rng.integers(classes))
            x, y = rng.uniform(4, w - 4), rng.uniform(4, h - 4)
            # 4 fractional bits; OpenCV puts pixel (i, j)'s centre at (i, j), labels at +.5
            cv2.circle(img, (int(round((x - .5) * 16)), int(round((y - .5) * 16))), 3 * 16,
                       DOT_COLOURS[c][::-1], -1, cv2.LINE_AA, 4)
            lines.append(f"{c} {x / w:.6f} {y / h:.6f}")
        return img, lines
    return _write_set(folder, n, seed, prefix, draw)


def small_cfg(base: str, dst: str, size: int = 96, classes: int = 2, width_scale: float = 0.5,
              **net) -> str:
    """``base`` (a yolov3-tiny-like cfg) rewritten for small generated images: ``size`` x
    ``size`` input, ``classes``, filters x ``width_scale``, the anchors scaled from 416 to
    ``size``, no multi-scale, light jitter, and the [net] schedule SCHEDULE updated by
    ``net``."""
    cfg = cfgmod.rewrite(cfgmod.load(base), classes=classes, width=size, height=size,
                         width_scale=width_scale)
    for k, v in {**SCHEDULE, **net}.items():
        cfg.net.set(k, v)
    anchors = ", ".join(str(max(1, round(a * size / 416))) for a in TINY_ANCHORS)
    for sec in cfg.layers:
        if sec.type == "yolo":
            sec.set("anchors", anchors)
            sec.set("random", 0)
            sec.set("jitter", 0.1)
    cfgmod.save(cfg, dst)
    return dst


def write(folder: str, base_cfg: str, train: int = 256, valid: int = 32, seed: int = 0,
          classes: int = 2) -> dict:
    """The whole demo set in ``folder`` (which must not hold one already); returns the paths
    of ``data`` (obj.data) and ``cfg`` (shapes.cfg)."""
    data = os.path.join(folder, "obj.data")
    if os.path.exists(data):
        raise DarkcfgError(f"{data}: already exists (give another folder)")
    lists = {}
    for split, n, s in (("train", train, seed), ("valid", valid, seed + 1)):
        paths = shapes(os.path.join(folder, "images", split), n, s, classes, split)
        lists[split] = os.path.join(folder, f"{split}.txt")
        with open(lists[split], "w") as f:
            f.write("\n".join(paths) + "\n")
    names = os.path.join(folder, "obj.names")
    with open(names, "w") as f:
        f.write("".join(n + "\n" for n in NAMES[:classes]))
    cfg = small_cfg(base_cfg, os.path.join(folder, "shapes.cfg"), classes=classes)
    with open(data, "w") as f:
        f.write(f"classes={classes}\ntrain={lists['train']}\nvalid={lists['valid']}\n"
                f"names={names}\nbackup={os.path.join(folder, 'backup')}\n")
    return {"data": data, "cfg": cfg}

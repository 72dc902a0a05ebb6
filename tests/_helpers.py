"""Helpers several test files share: files compared byte for byte, the CLI run in-process, a
noise image, box IoU, binary cross-entropy, plain-NMS models and small generated data sets.
(Known images for the augmentation tests are in _images.py.)"""
from __future__ import annotations

import os

TINY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cfgs",
                    "yolov3-tiny.cfg")


def same_bytes(a, b) -> bool:
    """Whether files a and b hold the same bytes (read in 16 MiB pieces: weights are large)."""
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 24), fb.read(1 << 24)
            if x != y:
                return False
            if not x:
                return True


def run_cli(*args):
    """``darkcfg ARGS`` in-process (click's CliRunner); arguments may be paths or numbers."""
    from click.testing import CliRunner
    from darkcfg.cli import main
    return CliRunner().invoke(main, [str(a) for a in args])


def noise_image(path, w=128, h=128, seed=1):
    """An image of seeded uniform noise (Pillow; the format by the extension) -> (its path,
    its RGB pixels (h, w, 3) uint8)."""
    import numpy as np
    from PIL import Image
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return str(path), pixels


def iou(a, b) -> float:
    """IoU of two boxes given by corners (x1, y1, x2, y2), written out."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def corners(cx, cy, w, h) -> tuple:
    """A centre-size box as corners (x1, y1, x2, y2)."""
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def bce(z, y) -> float:
    """Binary cross-entropy of logit z against target y, written out."""
    import math
    s = 1 / (1 + math.exp(-z))
    return -(y * math.log(s) + (1 - y) * math.log(1 - s))


def plain_nms(model):
    """Drop every head's nms_kind: darknet's default, plain IoU NMS, as OpenCV's NMSBoxes does."""
    for l in model.net.layers:
        l.opts.pop("nms_kind", None)
    return model


# ----- a generated data set and a small yolov3-tiny ---------------------------------------------


def make_images(folder, n, seed, classes=2, prefix="img"):
    """n images of 64..128 px: noise with 1-3 bright filled rectangles (class 0) and circles
    (class 1), YOLO labels beside them (darkcfg.demo's generator; its labels are checked
    against the pixels in tests/test_demo.py)."""
    from darkcfg.dataset import demo
    return demo.shapes(str(folder), n, seed, classes, prefix)


def make_data(tmp, ntrain=8, nvalid=8, classes=2, extra=""):
    tmp = str(tmp)
    tr = make_images(os.path.join(tmp, "train"), ntrain, 1, classes)
    va = make_images(os.path.join(tmp, "valid"), nvalid, 2, classes, "val")
    for name, paths in (("train.txt", tr), ("valid.txt", va)):
        with open(os.path.join(tmp, name), "w") as f:
            f.write("\n".join(paths) + "\n")
    with open(os.path.join(tmp, "obj.names"), "w") as f:
        f.write("".join(f"c{i}\n" for i in range(classes)))
    d = os.path.join(tmp, "obj.data")
    with open(d, "w") as f:
        f.write(f"classes={classes}\ntrain={tmp}/train.txt\nvalid={tmp}/valid.txt\n"
                f"names={tmp}/obj.names\nbackup={tmp}/backup\n{extra}")
    return d


def make_cfg(path, size=64, classes=2, width_scale=0.25, **net):
    """yolov3-tiny rewritten small (darkcfg.demo.small_cfg: anchors scaled to the input, no
    multi-scale, light jitter) with a short default schedule updated by ``net``."""
    from darkcfg.dataset import demo
    opts = dict(batch=4, subdivisions=2, learning_rate=0.005, burn_in=3, max_batches=6,
                policy="steps", steps="200,260", scales=".1,.1", momentum=0.9, decay=0.0005)
    opts.update(net)
    return demo.small_cfg(TINY, str(path), size, classes, width_scale, **opts)

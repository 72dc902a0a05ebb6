"""Matching + AP speed: darkcfg's darknet-style mAP beside pycocotools on the same detections.

    python bench/map.py [--images 5000] [--per-image 100] [--classes 80] [--repeat 3]

A COCO-sized synthetic result (seeded): per image about 7.2 gt boxes (Poisson), of mixed sizes
and classes; 100 detections per image, a third of them jittered copies of the gt (right class
mostly), the rest random boxes of random classes, scores uniform.  Timed:

* darkcfg     ``evaluate.darknet_map`` at IoU .5 (matching + ranking + AP + P/R at .25)
* pycocotools ``COCOeval.evaluate() + accumulate()`` with ``iouThrs = [.5]`` (its COCO objects
              are built before the clock starts; building them is shown apart)

Prints the median of ``--repeat`` runs of each, their ratio, and both AP@.5 figures (they differ
by definition: pycocotools uses 101 points, best *unmatched* gt, >= IoU, classes with gt only).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from darkcfg import evaluate as E  # noqa: E402


def synthetic(images: int, per_image: int, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    dets, gts = [], []
    for _ in range(images):
        n = rng.poisson(7.2)
        wh = np.exp(rng.uniform(np.log(8), np.log(400), (n, 2)))
        xy = rng.uniform(0, 640 - wh)
        cls = rng.integers(0, classes, n)
        gts.append(np.c_[xy, xy + wh, cls])
        near = min(per_image // 3, 4 * n)
        src = rng.integers(0, max(n, 1), near)
        d_near = np.c_[xy[src] + rng.normal(0, 0.08, (near, 2)) * wh[src],
                       xy[src] + wh[src] * rng.uniform(0.8, 1.25, (near, 2))] if n else \
            np.zeros((0, 4))
        c_near = np.where(rng.uniform(size=near) < 0.8, cls[src] if n else 0,
                          rng.integers(0, classes, near))
        rest = per_image - len(d_near)
        rwh = np.exp(rng.uniform(np.log(8), np.log(400), (rest, 2)))
        rxy = rng.uniform(0, 640 - rwh)
        boxes = np.r_[d_near, np.c_[rxy, rxy + rwh]]
        scores = rng.uniform(0.005, 1, per_image).astype(np.float32)
        dets.append(np.c_[boxes, scores, np.r_[c_near, rng.integers(0, classes, rest)]])
    return dets, gts


def coco_objects(dets, gts, classes):
    from pycocotools.coco import COCO
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = E.coco_ground_truth(gts, classes)
        truth.createIndex()
        found = truth.loadRes(E.coco_results(dets))
    return truth, found


def run_pycocotools(truth, found):
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(truth, found, "bbox")
        ev.params.iouThrs = np.array([0.5])
        ev.evaluate()
        ev.accumulate()
    p = ev.eval["precision"][0, :, :, 0, -1]          # (recall, class) at area all, 100 dets
    return float(np.mean(p[p > -1]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--per-image", type=int, default=100)
    ap.add_argument("--classes", type=int, default=80)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    dets, gts = synthetic(a.images, a.per_image, a.classes)
    n_gt = sum(len(g) for g in gts)
    print(f"{a.images} images, {n_gt} gt, {sum(len(d) for d in dets)} detections, "
          f"{a.classes} classes")
    t0 = time.perf_counter()
    truth, found = coco_objects(dets, gts, a.classes)
    build = time.perf_counter() - t0
    ours, theirs = [], []
    for _ in range(a.repeat):                      # alternate, so machine noise hits both
        t0 = time.perf_counter()
        r = E.darknet_map(dets, gts, a.classes, iou_thresh=0.5)
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        coco_ap50 = run_pycocotools(truth, found)
        theirs.append(time.perf_counter() - t0)
    mo, mt = statistics.median(ours), statistics.median(theirs)
    print(f"{'':28s}{'seconds':>10s}{'AP@.5':>10s}")
    print(f"{'darkcfg darknet_map':28s}{mo:10.3f}{r.map:10.4f}")
    print(f"{'pycocotools eval+accum':28s}{mt:10.3f}{coco_ap50:10.4f}")
    print(f"{'(pycocotools COCO objects)':28s}{build:10.3f}")
    print(f"speed-up: {mt / mo:.1f}x (median of {a.repeat})")


if __name__ == "__main__":
    main()

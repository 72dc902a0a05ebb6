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

    python bench/map.py --resize-study DIR [--steps 600] [--study-images 200]

How much the image resize moves mAP: trains yolov3-tiny (3 classes: rectangles, ellipses,
triangles, 128x128) on 200 synthetic images of 200-480 x 150-360 pixels through OpenCV's
INTER_LINEAR resize (what darknet's own training augmentation uses), then runs darknet's map on
100 more with darknet's resize_image, Pillow's bilinear and OpenCV's, stretched and letterboxed.
About 25 minutes on 2 busy cores.
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
from darkcfg.evaluation import evaluate as E  # noqa: E402


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


SHAPES = ("rect", "ellipse", "triangle")


def _shape_image(rng):
    import cv2
    w, h = int(rng.integers(200, 480)), int(rng.integers(150, 360))
    img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8) + np.uint8(rng.integers(0, 120))
    labels = []
    for _ in range(int(rng.integers(1, 5))):
        c = int(rng.integers(0, 3))
        bw, bh = rng.uniform(0.1, 0.45) * w, rng.uniform(0.1, 0.45) * h
        x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        col = tuple(int(v) for v in rng.integers(120, 256, 3))
        (a, b), (c2, d) = (int(x0), int(y0)), (int(x0 + bw), int(y0 + bh))
        if c == 0:
            cv2.rectangle(img, (a, b), (c2, d), col, -1)
        elif c == 1:
            cv2.ellipse(img, ((a + c2) // 2, (b + d) // 2), ((c2 - a) // 2, (d - b) // 2), 0, 0,
                        360, col, -1)
        else:
            cv2.fillPoly(img, [np.array([[(a + c2) // 2, b], [a, d], [c2, d]])], col)
        labels.append((c, (a + c2) / 2 / w, (b + d) / 2 / h, (c2 - a) / w, (d - b) / h))
    return img, labels


def _shape_set(root, n, tag, rng):
    import cv2
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    paths = []
    for i in range(n):
        img, labels = _shape_image(rng)
        p = os.path.join(root, "images", f"{tag}_{i:04d}.png")
        cv2.imwrite(p, np.ascontiguousarray(img[:, :, ::-1]))
        with open(p[:-4] + ".txt", "w") as f:
            f.writelines(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in labels)
        paths.append(p)
    return paths


def resize_study(root: str, steps: int, images: int = 200) -> None:
    import cv2
    import torch
    import darkcfg
    from darkcfg.evaluation import validate as V
    from darkcfg.objective import yolo as Y
    rng = np.random.default_rng(0)
    train = _shape_set(root, images, "train", rng)
    valid = _shape_set(root, images // 2, "valid", rng)
    model = darkcfg.build_model(os.path.join(os.path.dirname(__file__), "..", "cfgs",
                                             "yolov3-tiny.cfg"), classes=3, width=128, height=128)
    heads = Y.heads_of(model)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    t0 = time.perf_counter()
    for it in range(steps):
        xs, boxes, classes = [], [], []
        for i in rng.integers(0, len(train), 16):
            img = cv2.cvtColor(cv2.imread(train[i]), cv2.COLOR_BGR2RGB)
            rows = np.loadtxt(train[i][:-4] + ".txt", ndmin=2)
            x = cv2.resize(img, (128, 128), interpolation=cv2.INTER_LINEAR) / np.float32(255)
            b = rows[:, 1:5].copy()
            if rng.uniform() < 0.5:
                x, b[:, 0] = x[:, ::-1], 1 - b[:, 0]
            xs.append(np.ascontiguousarray(x.transpose(2, 0, 1), np.float32))
            boxes.append(torch.tensor(b, dtype=torch.float32))
            classes.append(torch.tensor(rows[:, 0], dtype=torch.int64))
        outs = model(torch.from_numpy(np.stack(xs)))
        t = Y.encode_targets(boxes, classes, heads, grids=[tuple(o.shape[2:]) for o in outs],
                             input_size=(128, 128), rule="best_of_all")
        loss, _ = Y.yolo_loss(outs, t, heads, (128, 128))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it == int(steps * 0.8):
            for g in opt.param_groups:
                g["lr"] = 2e-4
        if it % 100 == 0 or it == steps - 1:
            print(f"step {it} loss {loss.item():.3f} ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
    model.eval()
    for lb in (False, True):
        for rz in V.RESIZERS:
            got = V.collect(model, valid, letter_box=lb, resize=rz, batch=16)
            r = E.darknet_map(got.dets, got.gts, 3, names=SHAPES)
            print(f"letter_box={int(lb)} resize={rz:8s} mAP@.5 {r.map * 100:6.2f} %  AP "
                  f"{' / '.join(f'{a * 100:.2f}' for a in r.ap)}  P/R/F1 {r.precision:.2f}/"
                  f"{r.recall:.2f}/{r.f1:.2f}  avg IoU {r.avg_iou * 100:.2f} %", flush=True)
            if rz == "darknet":
                print(r.format(), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--per-image", type=int, default=100)
    ap.add_argument("--classes", type=int, default=80)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--resize-study", metavar="DIR", help="the resize study (see above)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--study-images", type=int, default=200,
                    help="the resize study's training images (half as many to map)")
    a = ap.parse_args()
    if a.resize_study:
        return resize_study(a.resize_study, a.steps, a.study_images)
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

"""Loader speed: darkcfg's TrainLoader with the yolov3 cfg's full augmentation beside the floor
of decoding and resizing the same images and nothing else.

    python bench/data.py [--images 64] [--batches 12] [--rounds 3] [--workers 1,2]
                         [--dir DIR] [--size 416]

A set of --images generated 640x480 JPEGs (smooth shapes and texture, quality 90, 1-6 boxes
each) is written to a temporary folder (or --dir).  Rows, each at 416x416 (the cfg's random=
multi-scale is turned off so every row resizes to the same size), mini-batch 8, per worker
count:

  floor          cv2.imread, cv2.resize to 416 (no colour conversion), to a float tensor
  plain          TrainLoader(augment=False): the floor plus labels and darknet's truth filter
  full           TrainLoader, yolov3.cfg: jitter .3, flip, hue .1, saturation 1.5, exposure
                 1.5 (darknet's per-image pipeline)
  full+mosaic    the same with mosaic=1 (half the samples decode four images)

All rows go through the same torch DataLoader (workers, one mini-batch per item, the same
collate to float32).  The rows take turns (--rounds rounds; in each, a row starts its workers,
takes one untimed batch, times --batches batches and stops its workers, so no other row's
workers run meanwhile); images/s is the median over rounds; the ratio is to the floor of the
same worker count.  First, the same rows in this process (0 workers, one OpenCV thread) timed by CPU
time (time.process_time), which a machine shared with other jobs disturbs far less than wall
time: ms of CPU per image (the least over rounds: other jobs only add) and the ratio of images
per CPU-second to the floor's.

"x floor" is the median over rounds of each round's own ratio (the row against the floor timed
next to it): a shared virtual machine's speed drifts by tens of per cent over seconds, which
moves both rows of a round together, so the paired ratio is steadier than the ratio of medians
(in-process: the ratio of the least times is printed beside it).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from darkcfg.dataset import data as D  # noqa: E402


def make_images(folder: str, n: int, seed: int = 0) -> list:
    """n 640x480 JPEGs with a few filled shapes on a gradient with mild texture, and labels."""
    import cv2
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    paths = []
    yy, xx = np.mgrid[0:480, 0:640].astype(np.float32)
    for i in range(n):
        p = os.path.join(folder, f"{i:04d}.jpg")
        paths.append(p)
        if os.path.exists(p):
            continue
        base = np.stack([xx / 640 * rng.uniform(80, 200), yy / 480 * rng.uniform(80, 200),
                         (xx + yy) / 1120 * rng.uniform(80, 200)], -1)
        img = (base + rng.normal(0, 6, base.shape)).clip(0, 255).astype(np.uint8)
        lines = []
        for _ in range(int(rng.integers(1, 7))):
            w, h = rng.uniform(30, 300), rng.uniform(30, 240)
            cx, cy = rng.uniform(w / 2, 640 - w / 2), rng.uniform(h / 2, 480 - h / 2)
            color = tuple(int(c) for c in rng.integers(0, 256, 3))
            cv2.rectangle(img, (int(cx - w / 2), int(cy - h / 2)), (int(cx + w / 2),
                                                                      int(cy + h / 2)), color, -1)
            lines.append(f"{int(rng.integers(80))} {cx / 640:.6f} {cy / 480:.6f} {w / 640:.6f} "
                         f"{h / 480:.6f}\n")
        cv2.imwrite(p, img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        with open(p[:-4] + ".txt", "w") as f:
            f.writelines(lines)
    return paths


def network(size: int, mosaic: bool):
    """yolov3.cfg at ``size`` with random=0 on its [yolo] layers (and mosaic=1)."""
    from darkcfg.config import cfg as C, shapes
    cfg = C.load(os.path.join(ROOT, "cfgs", "yolov3.cfg"))
    for sec in cfg.sections:
        if sec.type == "yolo":
            sec.set("random", 0)
    if mosaic:
        cfg.net.set("mosaic", 1)
    return shapes.network(C.rewrite(cfg, width=size, height=size))


class Floor(D.Samples):
    """The loader's Samples with each sample cut down to decode + resize (module level: the
    loader's worker processes unpickle it)."""

    def sample(self, iteration, slot, size):
        import cv2
        rng = np.random.default_rng([self.seed, iteration, slot])
        path = self.paths[int(rng.integers(len(self.paths)))]
        img = cv2.resize(D._imread(path), size, interpolation=cv2.INTER_LINEAR)
        return img, np.zeros((0, 5)), [path]


def floor_samples(samples):
    f = Floor.__new__(Floor)
    f.__dict__.update(samples.__dict__)
    return f


def make_row(kind: str, paths: list, size: int, workers: int, mini: int):
    net = network(size, kind == "full+mosaic")
    loader = D.TrainLoader(paths, net, mini_batch=mini, subdivisions=1, seed=1,
                           workers=workers, augment=kind not in ("floor", "plain"), warn=False)
    if kind == "floor":
        loader.samples = floor_samples(loader.samples)
    return loader


def paired(num: list, den: list) -> float:
    """The median of the rounds' own ratios num[i] / den[i]."""
    return statistics.median(a / b for a, b in zip(num, den))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batches", type=int, default=12, help="timed batches per row per round")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--mini", type=int, default=8)
    ap.add_argument("--size", type=int, default=416)
    ap.add_argument("--dir", default=None, help="folder for the generated images (kept)")
    args = ap.parse_args(argv)
    import cv2
    import torch
    print(f"torch {torch.__version__}, OpenCV {cv2.__version__}, {os.cpu_count()} CPUs")
    tmp = None
    if args.dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="darkcfg-bench-data-")
    folder = args.dir or tmp.name
    paths = make_images(folder, args.images)
    kinds = ("floor", "plain", "full", "full+mosaic")
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    rows = {k: make_row(k, paths, args.size, 0, args.mini) for k in kinds}
    cpu = {k: [] for k in kinds}
    for _ in range(args.rounds):
        for k, loader in rows.items():
            next(loader)
            t = time.process_time()
            for _ in range(args.batches):
                next(loader)
            cpu[k].append((time.process_time() - t) / (args.batches * args.mini))
    floor = min(cpu["floor"])
    print(f"\nin-process CPU time, {args.size}x{args.size}, mini-batch {args.mini}:")
    print(f"  {'row':<14}{'ms/image':>10}{'x floor':>9}{'(least)':>9}")
    for k in kinds:
        c = min(cpu[k])
        print(f"  {k:<14}{c * 1000:>10.2f}{paired(cpu['floor'], cpu[k]):>9.2f}{floor / c:>9.2f}")
    for workers in [int(w) for w in args.workers.split(",")]:
        rates = {k: [] for k in kinds}
        for _ in range(args.rounds):
            for k in kinds:     # one row's workers at a time: no other row refilling its queue
                loader = make_row(k, paths, args.size, workers, args.mini)
                next(loader)                                  # untimed: workers started
                t = time.perf_counter()
                for _ in range(args.batches):
                    next(loader)
                rates[k].append(args.batches * args.mini / (time.perf_counter() - t))
                loader.close()
        print(f"\n{workers} worker{'s' if workers > 1 else ''}, {args.size}x{args.size}, "
              f"mini-batch {args.mini}, {args.images} JPEGs 640x480:")
        print(f"  {'row':<14}{'images/s':>10}{'x floor':>9}   rounds")
        for k in kinds:
            r = statistics.median(rates[k])
            print(f"  {k:<14}{r:>10.1f}{paired(rates[k], rates['floor']):>9.2f}   "
                  + " ".join(f"{x:.0f}" for x in rates[k]))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()

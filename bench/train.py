"""Training speed and what the learning recipe reaches.

    python bench/train.py [--threads 2] [--size 416] [--batch 8] [--iterations 5]
    python bench/train.py --learn [--assign best_of_all|per_scale|both]

Default: images/s of one darkcfg.train.step (forward + backward of the summed loss of
yolov3-tiny, 80 classes, random boxes, SGD update) at --size, batch --batch in one subdivision,
median of --iterations after one untimed step.  With a CUDA GPU the same on it, in fp32.

--learn: the recipe of tests/test_train.py's learning test (yolov3-tiny at 96x96, half width,
2 classes, 300 iterations of 16 images, 256 generated training images) with each assignment
rule, then mAP@0.5 (darkcfg.validate, darknet's detector map) on 32 held-out images, and the
same for the untrained model.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))


class _Batch:
    def __init__(self, images, boxes, classes, size):
        self.images, self.boxes, self.classes, self.size = images, boxes, classes, size


def step_speed(size, batch, iterations, device):
    import torch
    from darkcfg import model as M
    from darkcfg import shapes
    from darkcfg import train as T
    net = shapes.network(os.path.join(ROOT, "cfgs", "yolov3-tiny.cfg"), width=size,
                         height=size)
    model = M.Darknet(net)
    T.darknet_init_(model)
    model.to(device).train()
    T.set_bn_training(model)
    opt = T.make_optimizer(model, T.schedule(net))
    g = torch.Generator().manual_seed(0)
    b = _Batch(torch.rand(batch, 3, size, size, generator=g).to(device),
               [torch.rand(3, 4, generator=g) * 0.5 + 0.25 for _ in range(batch)],
               [torch.randint(0, 80, (3,), generator=g) for _ in range(batch)], (size, size))

    def one():
        T.step(model, opt, [b], 1, lambda o, x: T.compute_loss(o, x, model, "best_of_all"),
               device)
        if device != "cpu":
            torch.cuda.synchronize()

    one()
    times = []
    for _ in range(iterations):
        t = time.perf_counter()
        one()
        times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


def learn(assign):
    import test_train as TT
    from darkcfg import model as M
    from darkcfg import shapes
    from darkcfg import train as T
    from darkcfg import validate as V
    with tempfile.TemporaryDirectory() as tmp:
        data = TT.make_data(tmp, ntrain=256, nvalid=32)
        cfg = TT.make_cfg(os.path.join(tmp, "tiny.cfg"), size=96, width_scale=0.5, batch=16,
                          subdivisions=2, learning_rate=0.005, burn_in=30, max_batches=300,
                          steps="200,260")
        t = time.perf_counter()
        r = T.train(data, cfg, quiet=True, seed=0, assign=assign)
        seconds = time.perf_counter() - t
        paths = T._valid_paths(data)
        trained = V.evaluate_model(M.load(r.files["final"], cfg), paths, num_classes=2).map
        fresh = M.Darknet(shapes.network(cfg))
        T.darknet_init_(fresh, seed=0)
        untrained = V.evaluate_model(fresh.eval(), paths, num_classes=2).map
    print(f"{assign:12s} mAP@0.5 trained {trained:.4f}  untrained {untrained:.4f}  "
          f"{seconds:.0f} s ({300 * 16 / seconds:.0f} images/s)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=416)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--learn", action="store_true")
    ap.add_argument("--assign", default="both", choices=("best_of_all", "per_scale", "both"))
    a = ap.parse_args()
    import torch
    torch.set_num_threads(a.threads)
    if a.learn:
        for rule in (("best_of_all", "per_scale") if a.assign == "both" else (a.assign,)):
            learn(rule)
        return
    print(f"yolov3-tiny {a.size}x{a.size}, batch {a.batch}, {a.threads} threads: "
          f"{step_speed(a.size, a.batch, a.iterations, 'cpu'):.1f} images/s (CPU)")
    if torch.cuda.is_available():
        print(f"  cuda: {step_speed(a.size, a.batch, a.iterations, 'cuda'):.1f} images/s")


if __name__ == "__main__":
    main()

"""Training speed, its floor, the loader, and what the learning recipe reaches.

    python bench/train.py [--threads 2] [--iterations 3] [--models tiny,ref]
                          [--bf16 auto|yes|no] [--loader] [--compile]
    python bench/train.py --learn [--assign best_of_all|per_scale|both]
    python bench/train.py --ddp N [--threads 2] [--models tiny,ref] [--size 416]
                          [--iterations 3] [--rounds 1]
    python bench/train.py --vs-loop [--data DATA --cfg CFG] [--loop-iterations 60]
                          [--workers 2] [--threads 2]

Default: images/s of one training iteration on preloaded batches (data excluded), 80 classes,
3 random boxes an image, in one subdivision, median of --iterations after one untimed step,
for yolov3-tiny at 416 batch 16 and cfgs/yolo_ref.cfg at 416 batch 4, each side by side in the
same run with:

* floor   - the same model's forward + backward of a trivial loss (the sum of the outputs) and
            an SGD step, a plain PyTorch loop;
* darkcfg - darkcfg.train.step with darkcfg's targets + loss (encode_targets, yolo_loss), the
            non-finite check and the batch-norm bookkeeping that step does;
* targets + loss alone - encode_targets + yolo_loss forward and backward on the heads' outputs
            (what darkcfg adds on top of the floor, measured by itself).

Rows in fp32 and under bf16 autocast (--amp bf16) where the processor has bf16 dot products
(AVX512_BF16 or AMX; --bf16 yes measures it anyway); the processor's instruction sets are
printed first.  --loader adds the loader: yolov3-tiny's full augmentation
at 416 from 2 workers on generated 640x480 JPEGs, alone and feeding the step, and says which
of the two is the bottleneck.  --compile adds a torch.compile row (the compile time apart).
With a CUDA GPU the same rows on it.

--vs-loop: ``darkcfg train`` against a plain PyTorch loop on the same cfg, threads and machine
(issue #22's comparison; its goal: the trainer within 1.10x the loop's time per iteration with
the loader's augmentation in workers).  DATA and CFG default to the demo set and its cfg
(``darkcfg data demo``); the cfg's multi-scale (random=) is turned off for both, so that the
two train on the same input size.  The plain loop: the images read and resized once, random
horizontal flips, the cfg's subdivisions, darkcfg's targets and loss, SGD with the cfg's rate, momentum and decay - no
other augmentation, no files.  ``darkcfg train``: the cfg's full augmentation in --workers
loader workers, the schedule, non-finite checks, BN bookkeeping and its saves (_last every
100 iterations).  Each side runs --loop-iterations iterations; the time per iteration is the
median of the iteration-to-iteration times after the first 5; the loop runs before and after
the trainer (the machine's drift shows as the two loop rows differing).

--ddp N: images/s of darkcfg's training step (darkcfg.train.step, preloaded batches as above)
in 1 process with all --threads against N processes (torch.multiprocessing, gloo,
DistributedDataParallel as ``darkcfg train`` under torchrun) with --threads/N threads each, the
global batch the same (each rank takes batch/N images); and the all-reduce's share of the
N-process step: the gradients are (trainable parameters x 4) bytes, and an all-reduce of a
float32 buffer of that size among the N processes is timed by itself (median of --iterations
after one untimed) and given as a % of the N-process step's median time.  DDP overlaps its
all-reduce with the backward pass in buckets, so the share is what the all-reduce would add
if nothing hid it.  --rounds R runs the pair R times, a row each.

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

MODELS = {"tiny": ("yolov3-tiny.cfg", 16), "ref": ("yolo_ref.cfg", 4)}


class _Batch:
    def __init__(self, images, boxes, classes, size):
        self.images, self.boxes, self.classes, self.size = images, boxes, classes, size


def _setup(cfg, size, batch, device):
    import torch
    from darkcfg.nn import model as M
    from darkcfg.config import shapes
    from darkcfg.training import train as T
    net = shapes.network(os.path.join(ROOT, "cfgs", cfg), width=size, height=size)
    model = M.Darknet(net)
    T.darknet_init_(model)
    model.to(device).train()
    T.set_bn_training(model)
    opt = T.make_optimizer(model, T.schedule(net))
    g = torch.Generator().manual_seed(0)
    b = _Batch(torch.rand(batch, 3, size, size, generator=g).to(device),
               [torch.rand(3, 4, generator=g) * 0.5 + 0.25 for _ in range(batch)],
               [torch.randint(0, 80, (3,), generator=g) for _ in range(batch)], (size, size))
    return model, opt, b


def _median_rates(fns: dict, batch, iterations, device) -> dict:
    """{name: (images/s, median s)}; the functions take turns each iteration, so a machine
    whose load drifts slows them alike."""
    import torch
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    times = {k: [] for k in fns}
    for k, fn in fns.items():          # one untimed call each
        fn()
    sync()
    for _ in range(iterations):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t)
    return {k: (batch / statistics.median(v), statistics.median(v)) for k, v in times.items()}


def speed_rows(cfg, size, batch, iterations, device, amp=None, compiled=False):
    """{"floor": (img/s, s), "darkcfg": ..., "loss": ...} for one model and precision."""
    import torch
    from darkcfg.training import train as T
    model, opt, b = _setup(cfg, size, batch, device)
    forward = model
    if compiled:
        t = time.perf_counter()
        forward = torch.compile(model)
        with T._autocast(device, amp):
            forward(b.images)              # the compile itself, outside the timing
        print(f"    (torch.compile: first call {time.perf_counter() - t:.1f} s)", flush=True)

    def floor():
        opt.zero_grad(set_to_none=True)
        with T._autocast(device, amp):
            outs = forward(b.images)
        sum(o.float().sum() for o in outs).backward()
        opt.step()

    def darkcfg():
        T.step(forward, opt, [b], 1, lambda o, x: T.compute_loss(o, x, model, "best_of_all"),
               device, amp=amp)

    with torch.no_grad(), T._autocast(device, amp):
        outs = [o.float().detach() for o in forward(b.images)]

    def loss_alone():
        leaves = [o.clone().requires_grad_(True) for o in outs]
        loss, _ = T.compute_loss(leaves, b, model, "best_of_all")
        loss.backward()

    return _median_rates({"floor": floor, "darkcfg": darkcfg, "loss": loss_alone}, batch,
                         iterations, device)


def print_rows(label, rows):
    f, d, l = rows["floor"], rows["darkcfg"], rows["loss"]
    over = (d[1] / f[1] - 1) * 100
    print(f"  {label:24s} floor {f[0]:7.2f} img/s ({f[1]:.3f} s)   darkcfg {d[0]:7.2f} img/s "
          f"({d[1]:.3f} s)   {over:+5.1f} % over the floor   targets+loss alone "
          f"{l[1] * 1000:.1f} ms ({l[1] / f[1] * 100:.1f} % of the floor)", flush=True)


def loader_rows(size, iterations, workers, device):
    """The loader alone, the step alone and the two together (yolov3-tiny, batch 16)."""
    import cv2
    import numpy as np
    from darkcfg.dataset import data as D
    from darkcfg.config import shapes
    from darkcfg.training import train as T
    batch = 16
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        paths = []
        for i in range(64):
            img = cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (0, 0), 3)
            p = os.path.join(tmp, f"{i}.jpg")
            cv2.imwrite(p, img)
            with open(os.path.join(tmp, f"{i}.txt"), "w") as fh:
                fh.write("0 0.5 0.5 0.3 0.4\n1 0.3 0.6 0.2 0.2\n")
            paths.append(p)
        net = shapes.network(os.path.join(ROOT, "cfgs", "yolov3-tiny.cfg"), width=size,
                             height=size)
        model, opt, b = _setup("yolov3-tiny.cfg", size, batch, device)

        def step(b):
            T.step(model, opt, [b], 1, lambda o, x: T.compute_loss(o, x, model, "best_of_all"),
                   device)
        step(b)                  # the model alone first: no loader worker is alive yet
        t = time.perf_counter()
        for _ in range(iterations):
            step(b)
        model_only = batch * iterations / (time.perf_counter() - t)
        loader = D.TrainLoader(paths, net, mini_batch=batch, subdivisions=1, seed=0,
                               workers=workers, warn=False)
        it = iter(loader)
        next(it)
        t = time.perf_counter()
        for _ in range(4 * iterations):
            next(it)
        alone = batch * 4 * iterations / (time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(iterations):
            step(next(it))
        both = batch * iterations / (time.perf_counter() - t)
        loader.close()
    slow = "the loader" if alone < model_only else "the model"
    print(f"  loader ({workers} workers, full augmentation) {alone:6.1f} img/s alone; model step "
          f"{model_only:5.2f} img/s alone; together {both:5.2f} img/s -> the bottleneck is "
          f"{slow}", flush=True)


def step_speed(size, batch, iterations, device):
    """images/s of darkcfg.train.step for yolov3-tiny (kept for older callers)."""
    return speed_rows("yolov3-tiny.cfg", size, batch, iterations, device)["darkcfg"][0]


def learn(assign):
    import test_train as TT
    from darkcfg.nn import model as M
    from darkcfg.config import shapes
    from darkcfg.training import train as T
    from darkcfg.evaluation import validate as V
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


def _vs_loop_inputs(tmp, data, cfg):
    """(data, cfg) with the cfg's random= multi-scale off; the demo set when none given."""
    from darkcfg.config import cfg as cfgmod
    from darkcfg.dataset import demo
    if data is None:
        made = demo.write(os.path.join(tmp, "demo"), os.path.join(ROOT, "cfgs",
                                                                   "yolov3-tiny.cfg"))
        data, cfg = made["data"], cfg or made["cfg"]
    c = cfgmod.load(cfg)
    for sec in c.layers:
        if sec.type == "yolo" and sec.has("random"):
            sec.set("random", 0)
    fixed = os.path.join(tmp, os.path.basename(cfg))
    cfgmod.save(c, fixed)
    return data, fixed


def plain_loop(data, cfg, iterations, seed=0, assign="per_scale") -> tuple:
    """(seconds of each iteration, the trained model) of a plain PyTorch loop over darkcfg's
    model, targets and loss (images read and resized once, random flips, the cfg's SGD)."""
    import cv2
    import numpy as np
    import torch
    from darkcfg.dataset import data as D
    from darkcfg.nn import model as M
    from darkcfg.objective import yolo as Y
    from darkcfg.config import shapes
    from darkcfg.training import train as T
    net = shapes.network(cfg)
    sched = T.schedule(net)
    model = M.Darknet(net)
    T.torch_init_(model, seed=seed)
    model.train()
    T.set_bn_training(model)
    opt = T.make_optimizer(model, sched)
    heads, size = Y.heads_of(model), (net.width, net.height)
    images = []
    for p in D.image_list(D.read_data(data).resolve("train")):
        im = cv2.resize(cv2.imread(p)[:, :, ::-1], size, interpolation=cv2.INTER_LINEAR)
        rows = D.read_labels(D.label_path(p))[0].astype(np.float32)
        images.append((torch.from_numpy(im.copy()).permute(2, 0, 1).float() / 255, rows))
    rng = np.random.default_rng(seed)
    times, t = [], time.perf_counter()
    for k in range(1, iterations + 1):
        for g in opt.param_groups:
            g["lr"] = T.learning_rate(sched, k) * g["lr_scale"]
        xs, boxes, classes = [], [], []
        for _ in range(sched.batch):
            x, rows = images[int(rng.integers(len(images)))]
            b = rows[:, 1:5].copy()
            if rng.integers(2):
                x, b[:, 0] = x.flip(2), 1 - b[:, 0]
            xs.append(x)
            boxes.append(torch.from_numpy(b))
            classes.append(torch.from_numpy(rows[:, 0].astype(np.int64)))
        opt.zero_grad(set_to_none=True)
        m = sched.mini_batch                 # the cfg's subdivisions, as darkcfg train
        for s in range(0, len(xs), m):
            outs = model(torch.stack(xs[s:s + m]))
            targets = Y.encode_targets(boxes[s:s + m], classes[s:s + m], heads,
                                       [tuple(o.shape[-2:]) for o in outs], size,
                                       rule=assign)
            loss, _ = Y.yolo_loss(outs, targets, heads, size)
            (loss / sched.subdivisions).backward()
        opt.step()
        now = time.perf_counter()
        times.append(now - t)
        t = now
    return times, model.eval()


def trainer_times(data, cfg, iterations, workers, out) -> list:
    """Seconds of each iteration of darkcfg.train.train (from its callback)."""
    from darkcfg.training import train as T
    stamps = [time.perf_counter()]
    T.train(data, cfg, out=out, max_batches=iterations, workers=workers, quiet=True,
            force=True, callback=lambda k, m: stamps.append(time.perf_counter()))
    return [b - a for a, b in zip(stamps[1:], stamps[2:])]


def vs_loop(data, cfg, iterations, workers, threads):
    import torch
    from darkcfg.config import shapes
    with tempfile.TemporaryDirectory() as tmp:
        data, cfg = _vs_loop_inputs(tmp, data, cfg)
        net = shapes.network(cfg)
        print(f"{os.path.basename(cfg)} {net.width}x{net.height}, batch "
              f"{net.cfg.net.get_int('batch', 1)}, {threads} threads, {iterations} iterations "
              f"each, {workers} loader workers for darkcfg train:", flush=True)
        rows = {}
        rows["plain loop (before)"] = plain_loop(data, cfg, iterations)[0]
        rows["darkcfg train"] = trainer_times(data, cfg, iterations, workers,
                                              os.path.join(tmp, "run"))
        rows["plain loop (after)"] = plain_loop(data, cfg, iterations)[0]
    med = {k: statistics.median(v[5:]) for k, v in rows.items()}
    loop = (med["plain loop (before)"] + med["plain loop (after)"]) / 2
    for k, m in med.items():
        print(f"  {k:20s} {m * 1000:7.1f} ms/iteration  {1 / m:6.2f} it/s  "
              f"{m / loop:5.2f}x the loop", flush=True)


def _ddp_rank(rank, world, threads, port, cfg, size, batch, iterations, out):
    """One rank of --ddp (world 1: the single process, no process group): the median step time
    on rank 0 (the ranks start each step together), then the gradient-sized all-reduce."""
    import json
    import torch
    import torch.distributed as dist
    from darkcfg.training import train as T
    torch.set_num_threads(threads)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world)
    model, opt, b = _setup(cfg, size, batch // world, "cpu")
    forward = model if world == 1 else torch.nn.parallel.DistributedDataParallel(model)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def timed(fn):
        times = []
        for k in range(iterations + 1):          # the first untimed
            if world > 1:
                dist.barrier()
            t = time.perf_counter()
            fn()
            if k:
                times.append(time.perf_counter() - t)
        return statistics.median(times)

    step = timed(lambda: T.step(forward, opt, [b], 1, lambda o, x: T.compute_loss(
        o, x, model, "best_of_all"), "cpu"))
    reduce = None
    if world > 1:
        buf = torch.ones(params, dtype=torch.float32)
        reduce = timed(lambda: dist.all_reduce(buf))
        dist.barrier()                    # both ranks done before gloo is torn down
        dist.destroy_process_group()
    if rank == 0:
        with open(out, "w") as f:
            json.dump(dict(step=step, params=params, reduce=reduce), f)


def ddp_run(world, threads, cfg, size, batch, iterations) -> dict:
    """{step: median s, params, reduce: median s of the gradients' all-reduce or None}."""
    import json
    import socket
    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rank0.json")
        mp.spawn(_ddp_rank, args=(world, threads, port, cfg, size, batch, iterations, out),
                 nprocs=world, join=True)
        with open(out) as f:
            return json.load(f)


def ddp_rows(ranks, cores, models, size, iterations, rounds=1):
    """The --ddp table: 1 process x cores threads against ranks x cores/ranks threads, the two
    run one after the other, ``rounds`` times (a row each: a shared machine's drift shows)."""
    each = max(1, cores // ranks)
    print(f"DDP on CPU (gloo), global batch as listed: 1 process x {cores} threads against "
          f"{ranks} processes x {each} thread{'s' * (each > 1)}, median of {iterations} "
          f"steps after one untimed", flush=True)
    print(f"  {'model':24s} {'batch':>5s} {'1 process':>12s} {f'{ranks} processes':>13s} "
          f"{'speed-up':>8s} {'gradients':>10s} {'all-reduce':>10s} {'share of step':>13s}")
    for key in models:
        cfg, batch = MODELS[key]
        if batch % ranks:
            print(f"  {cfg}: batch {batch} does not split over {ranks} ranks; skipped")
            continue
        for _ in range(rounds):
            one = ddp_run(1, cores, cfg, size, batch, iterations)
            many = ddp_run(ranks, each, cfg, size, batch, iterations)
            mb = many["params"] * 4 / 1e6
            print(f"  {f'{cfg} {size}x{size}':24s} {batch:5d} {batch / one['step']:7.2f} img/s "
                  f"{batch / many['step']:8.2f} img/s {one['step'] / many['step']:7.2f}x "
                  f"{mb:7.1f} MB {many['reduce'] * 1000:7.1f} ms "
                  f"{many['reduce'] / many['step'] * 100:11.1f} %", flush=True)

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=416)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--models", default="tiny,ref", help="tiny (yolov3-tiny, batch 16), "
                    "ref (yolo_ref, batch 4), comma-separated; '' for none (e.g. --loader only)")
    ap.add_argument("--bf16", choices=("auto", "yes", "no"), default="auto",
                    help="bf16 autocast rows (auto: on a CPU with AVX512_BF16/AMX or on CUDA; "
                         "without them oneDNN emulates bf16, about 10x slower than fp32)")
    ap.add_argument("--loader", action="store_true")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--learn", action="store_true")
    ap.add_argument("--vs-loop", action="store_true")
    ap.add_argument("--ddp", type=int, metavar="N", help="1 process against N (gloo)")
    ap.add_argument("--rounds", type=int, default=1, help="--ddp: the pair this many times")
    ap.add_argument("--data", help="--vs-loop: a .data (default: the demo set)")
    ap.add_argument("--cfg", help="--vs-loop: a cfg (default: the demo set's)")
    ap.add_argument("--loop-iterations", type=int, default=60)
    ap.add_argument("--assign", default="both", choices=("best_of_all", "per_scale", "both"))
    a = ap.parse_args()
    import torch
    from darkcfg.infer import speed
    torch.set_num_threads(a.threads)
    if a.ddp:
        print(f"torch {torch.__version__}")
        ddp_rows(a.ddp, a.threads, list(filter(None, a.models.split(","))), a.size,
                 a.iterations, a.rounds)
        return
    if a.vs_loop:
        vs_loop(a.data, a.cfg, a.loop_iterations, a.workers, a.threads)
        return
    if a.learn:
        for rule in (("best_of_all", "per_scale") if a.assign == "both" else (a.assign,)):
            learn(rule)
        return
    print(f"torch {torch.__version__}, {a.threads} threads; CPU instruction sets: "
          f"{', '.join(speed.cpu_features()) or 'none of ' + ', '.join(speed.CPU_FEATURES)}")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        for key in filter(None, a.models.split(",")):
            cfg, batch = MODELS[key]
            print(f"{cfg} {a.size}x{a.size} batch {batch} on {device}:", flush=True)
            print_rows("fp32", speed_rows(cfg, a.size, batch, a.iterations, device))
            native = device != "cpu" or bool(set(speed.BF16_FLAGS) & speed.cpu_flags())
            if a.bf16 == "yes" or (a.bf16 == "auto" and native):
                print_rows("bf16 autocast", speed_rows(cfg, a.size, batch, a.iterations,
                                                       device, amp="bf16"))
            elif a.bf16 == "auto":
                print("  bf16 autocast            skipped: this CPU has no AVX512_BF16/AMX "
                      "(--bf16 yes measures it anyway)")
            if a.compile:
                print_rows("fp32 torch.compile", speed_rows(cfg, a.size, batch, a.iterations,
                                                            device, compiled=True))
        if a.loader:
            loader_rows(a.size, a.iterations, a.workers, device)


if __name__ == "__main__":
    main()

"""Forward-pass speed: darkcfg beside OpenCV's dnn and ONNX Runtime, in one process.

    python bench/forward.py [--runs 10] [--threads 2] [--size 416] [--only yolov3-tiny]
                            [--compile]

For yolov3 and yolov3-tiny (bundled cfgs, synthetic weights written by `darkcfg init`), batch 1
and 8, rows:

  darkcfg eager        darkcfg.load(weights, cfg)
  darkcfg fused+cl     load(..., fuse=True, channels_last=True)
  fused+cl, reuse      the same under darkcfg.speed.reuse_freed_memory()
  compiled, reuse      that under darkcfg.speed.compile_frozen (with --compile; compiling is
                       not timed)
  OpenCV dnn           readNetFromDarknet, same cfg and weights
  ONNX Runtime         darkcfg's own ONNX export, CPUExecutionProvider

The rows of a case take turns (--rounds rounds, each row one untimed call then its share of
--runs timed calls), so that drift in this machine's speed falls on all of them alike, and each
row runs with malloc set its way (reuse_freed_memory(True/False) before its turn).  Medians,
each row's ratio to OpenCV.  With a CUDA GPU, yolov3 is also timed there in fp32 and under
fp16/bf16 autocast.
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


def median_time(fn, runs):
    fn()
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def take_turns(rows, runs, rounds):
    """{name: (reuse malloc?, fn)} -> {name: median seconds}, the rows timed in turns."""
    from darkcfg import speed
    times = {name: [] for name in rows}
    per = max(1, runs // rounds)
    for _ in range(rounds):
        for name, (reuse, fn) in rows.items():
            speed.reuse_freed_memory(reuse)
            fn()                                   # untimed: caches, thread pools, malloc
            for _ in range(per):
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def bench_cpu(name, batch, size, runs, rounds, tmp, compiled=False):
    import cv2
    import numpy as np
    import onnxruntime as ort
    import torch
    import darkcfg
    from darkcfg import cfg as C
    from darkcfg import speed
    from darkcfg import weights as W
    from darkcfg.export import export_onnx

    cfg = C.rewrite(C.load(os.path.join(ROOT, "cfgs", f"{name}.cfg")), width=size, height=size)
    cfg_path = os.path.join(tmp, f"{name}.cfg")
    C.save(cfg, cfg_path)
    weights = os.path.join(tmp, f"{name}.weights")
    if not os.path.exists(weights):
        torch.manual_seed(0)
        W.save_darknet(darkcfg.build_model(cfg_path), weights)
    x = np.random.default_rng(0).uniform(0, 1, (batch, 3, size, size)).astype(np.float32)
    xt = torch.from_numpy(x)
    xc = xt.contiguous(memory_format=torch.channels_last)

    eager = darkcfg.load(weights, cfg_path)
    fast = darkcfg.load(weights, cfg_path, fuse=True, channels_last=True)

    def inference(model, inp):
        def run():
            with torch.inference_mode():
                model(inp)
        return run
    rows = {"darkcfg eager": (False, inference(eager, xt)),
            "darkcfg fused+cl": (False, inference(fast, xc)),
            "fused+cl, reuse": (True, inference(fast, xc))}
    if compiled:
        speed.reuse_freed_memory(True)
        comp = speed.compile_frozen(darkcfg.load(weights, cfg_path, fuse=True,
                                                 channels_last=True))
        comp(xc)                                   # compiles: not timed
        rows["compiled, reuse"] = (True, lambda: comp(xc))

    net = cv2.dnn.readNetFromDarknet(cfg_path, weights)
    outs = net.getUnconnectedOutLayersNames()

    def run_cv():
        net.setInput(x)
        net.forward(outs)
    rows["OpenCV dnn"] = (False, run_cv)

    onnx_path = os.path.join(tmp, f"{name}-{batch}.onnx")
    export_onnx(eager, onnx_path, batch=batch)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
    rows["ONNX Runtime"] = (False, lambda: sess.run(None, {"images": x}))
    return take_turns(rows, runs, rounds)


def bench_cuda(size, runs, tmp):
    import torch
    import darkcfg
    cfg = os.path.join(ROOT, "cfgs", "yolov3.cfg")
    model = darkcfg.build_model(cfg, width=size, height=size).cuda().eval()
    rows = {}
    for batch in (1, 8):
        x = torch.rand(batch, 3, size, size, device="cuda")

        def run(dtype=None):
            with torch.inference_mode(), torch.autocast("cuda", dtype=dtype,
                                                        enabled=dtype is not None):
                model(x)
            torch.cuda.synchronize()
        rows[f"yolov3 b={batch} fp32"] = median_time(run, runs)
        rows[f"yolov3 b={batch} fp16 autocast"] = median_time(lambda: run(torch.float16), runs)
        rows[f"yolov3 b={batch} bf16 autocast"] = median_time(lambda: run(torch.bfloat16), runs)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10, help="Timed calls per row (default 10).")
    ap.add_argument("--rounds", type=int, default=5, help="Turns the rows take (default 5).")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=416)
    ap.add_argument("--only", choices=["yolov3", "yolov3-tiny"])
    ap.add_argument("--batch", type=int, choices=[1, 8], help="Only this batch size.")
    ap.add_argument("--compile", action="store_true",
                    help="Add the compiled row (inductor, frozen weights; 10-90 s to compile)")
    a = ap.parse_args()
    import cv2
    import torch
    torch.set_num_threads(a.threads)
    cv2.setNumThreads(a.threads)
    print(f"{a.threads} threads, {a.size}x{a.size}, median of {a.runs} runs in {a.rounds} turns "
          f"(torch {torch.__version__}, OpenCV {cv2.__version__})\n")
    print(f"{'case':<18}{'row':<20}{'seconds':>10}{'x OpenCV':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("yolov3-tiny", "yolov3"):
            if a.only and name != a.only:
                continue
            for batch in (1, 8):
                if a.batch and batch != a.batch:
                    continue
                rows = bench_cpu(name, batch, a.size, a.runs, a.rounds, tmp, a.compile)
                base = rows["OpenCV dnn"]
                for k, v in rows.items():
                    print(f"{name + f' b={batch}':<18}{k:<20}{v:10.4f}{v / base:10.2f}",
                          flush=True)
                print()
        if torch.cuda.is_available():
            print(f"CUDA: {torch.cuda.get_device_name()}")
            for k, v in bench_cuda(a.size, a.runs, tmp).items():
                print(f"{k:<46}{v * 1000:10.2f} ms")
        else:
            print("no CUDA GPU here: GPU rows skipped")


if __name__ == "__main__":
    main()

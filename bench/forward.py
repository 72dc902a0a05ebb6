"""Forward-pass speed: darkcfg beside OpenCV's dnn and ONNX Runtime, in one process.

    python bench/forward.py [--runs 10] [--threads 2] [--size 416] [--only yolov3-tiny]
                            [--compile]

For yolov3 and yolov3-tiny (bundled cfgs, synthetic weights written by `darkcfg init`), batch 1
and 8, rows:

  darkcfg eager        darkcfg.load(weights, cfg)
  darkcfg fused+cl     load(..., fuse=True, channels_last=True)
  OpenCV dnn           readNetFromDarknet, same cfg and weights
  ONNX Runtime         darkcfg's own ONNX export, CPUExecutionProvider
  fused+cl, reuse      fused+cl after darkcfg.speed.reuse_freed_memory()
  compiled, reuse      that under darkcfg.speed.compile_frozen (with --compile; compiling is
                       not timed)

reuse_freed_memory() changes malloc for the rest of the process, so every case's first four rows
run before it is called, and the last two after.  Median of --runs timed runs after two warm-up
runs; each row's ratio to OpenCV.  With a CUDA GPU, yolov3 is also timed there in fp32 and under
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


class Case:
    """One network at one batch size: its files and input."""

    def __init__(self, name, batch, size, tmp):
        import numpy as np
        import torch
        import darkcfg
        from darkcfg import cfg as C
        from darkcfg import weights as W
        self.name, self.batch = name, batch
        cfg = C.rewrite(C.load(os.path.join(ROOT, "cfgs", f"{name}.cfg")), width=size,
                        height=size)
        self.cfg = os.path.join(tmp, f"{name}.cfg")
        C.save(cfg, self.cfg)
        self.weights = os.path.join(tmp, f"{name}.weights")
        if not os.path.exists(self.weights):
            torch.manual_seed(0)
            W.save_darknet(darkcfg.build_model(self.cfg), self.weights)
        self.onnx = os.path.join(tmp, f"{name}-{batch}.onnx")
        self.x = np.random.default_rng(0).uniform(0, 1, (batch, 3, size, size)).astype(np.float32)
        self.rows = {}

    def __str__(self):
        return f"{self.name} b={self.batch}"


def bench_before(case, runs):
    """The rows measured with the process's default malloc."""
    import cv2
    import onnxruntime as ort
    import torch
    import darkcfg
    from darkcfg.export import export_onnx
    xt = torch.from_numpy(case.x)
    eager = darkcfg.load(case.weights, case.cfg)
    with torch.inference_mode():
        case.rows["darkcfg eager"] = median_time(lambda: eager(xt), runs)
    fast = darkcfg.load(case.weights, case.cfg, fuse=True, channels_last=True)
    xc = xt.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        case.rows["darkcfg fused+cl"] = median_time(lambda: fast(xc), runs)

    net = cv2.dnn.readNetFromDarknet(case.cfg, case.weights)
    outs = net.getUnconnectedOutLayersNames()

    def run_cv():
        net.setInput(case.x)
        net.forward(outs)
    case.rows["OpenCV dnn"] = median_time(run_cv, runs)

    export_onnx(eager, case.onnx, batch=case.batch)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(case.onnx, opts, providers=["CPUExecutionProvider"])
    case.rows["ONNX Runtime"] = median_time(lambda: sess.run(None, {"images": case.x}), runs)


def bench_after(case, runs, compiled):
    """The rows measured after darkcfg.speed.reuse_freed_memory()."""
    import torch
    import darkcfg
    from darkcfg import speed
    fast = darkcfg.load(case.weights, case.cfg, fuse=True, channels_last=True)
    xc = torch.from_numpy(case.x).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        case.rows["fused+cl, reuse"] = median_time(lambda: fast(xc), runs)
    if compiled:
        comp = speed.compile_frozen(fast)
        comp(xc)                                  # compiles: not timed
        case.rows["compiled, reuse"] = median_time(lambda: comp(xc), runs)


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
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=416)
    ap.add_argument("--only", choices=["yolov3", "yolov3-tiny"])
    ap.add_argument("--compile", action="store_true",
                    help="Add the compiled row (inductor, frozen weights; 10-90 s to compile)")
    a = ap.parse_args()
    import cv2
    import torch
    from darkcfg import speed
    torch.set_num_threads(a.threads)
    cv2.setNumThreads(a.threads)
    print(f"{a.threads} threads, {a.size}x{a.size}, median of {a.runs} runs "
          f"(torch {torch.__version__}, OpenCV {cv2.__version__})\n")
    with tempfile.TemporaryDirectory() as tmp:
        cases = [Case(name, batch, a.size, tmp) for name in ("yolov3-tiny", "yolov3")
                 if not a.only or name == a.only for batch in (1, 8)]
        for case in cases:
            bench_before(case, a.runs)
        if not speed.reuse_freed_memory():
            print("(reuse_freed_memory does not apply here: the reuse rows use default malloc)")
        for case in cases:
            bench_after(case, a.runs, a.compile)
        print(f"{'case':<18}{'row':<20}{'seconds':>10}{'x OpenCV':>10}")
        for case in cases:
            base = case.rows["OpenCV dnn"]
            for k, v in case.rows.items():
                print(f"{str(case):<18}{k:<20}{v:10.4f}{v / base:10.2f}")
            print()
        if torch.cuda.is_available():
            print(f"CUDA: {torch.cuda.get_device_name()}")
            for k, v in bench_cuda(a.size, a.runs, tmp).items():
                print(f"{k:<46}{v * 1000:10.2f} ms")
        else:
            print("no CUDA GPU here: GPU rows skipped")


if __name__ == "__main__":
    main()

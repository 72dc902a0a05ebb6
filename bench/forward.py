"""Forward-pass speed: darkcfg beside OpenCV's dnn and ONNX Runtime, in one process.

    python bench/forward.py [--runs 10] [--threads 2] [--size 416] [--only yolov3-tiny]

For yolov3 and yolov3-tiny (bundled cfgs, synthetic weights written by `darkcfg init`), batch 1
and 8: darkcfg eager; darkcfg fused + channels_last; with --compile, that under torch.compile
(inductor, frozen weights); OpenCV (readNetFromDarknet, same cfg and
weights); ONNX Runtime on darkcfg's own ONNX export.  Median of --runs timed runs after two
warm-up runs, each row's ratio to OpenCV.  With a CUDA GPU, yolov3 is also timed there in fp32
and under fp16/bf16 autocast.
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


def bench_cpu(name, batch, size, runs, tmp, compiled=False):
    import cv2
    import numpy as np
    import onnxruntime as ort
    import torch
    import darkcfg
    from darkcfg import cfg as C
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
    rows = {}

    eager = darkcfg.load(weights, cfg_path)
    with torch.inference_mode():
        rows["darkcfg eager"] = median_time(lambda: eager(xt), runs)
    fast = darkcfg.load(weights, cfg_path, fuse=True, channels_last=True)
    xc = xt.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        rows["darkcfg fused+cl"] = median_time(lambda: fast(xc), runs)
    if compiled:   # inductor with frozen (prepacked) weights; compiling is not timed
        import torch._inductor.config as inductor
        inductor.freezing = True
        comp = torch.compile(fast)
        with torch.inference_mode():
            comp(xc)
            rows["darkcfg compiled"] = median_time(lambda: comp(xc), runs)

    net = cv2.dnn.readNetFromDarknet(cfg_path, weights)
    outs = net.getUnconnectedOutLayersNames()

    def run_cv():
        net.setInput(x)
        net.forward(outs)
    rows["OpenCV dnn"] = median_time(run_cv, runs)

    onnx_path = os.path.join(tmp, f"{name}-{batch}.onnx")
    export_onnx(eager, onnx_path, batch=batch)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
    rows["ONNX Runtime"] = median_time(lambda: sess.run(None, {"images": x}), runs)
    return rows


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
                    help="Add a torch.compile row (inductor, frozen weights; ~30-90 s to compile)")
    a = ap.parse_args()
    import cv2
    import torch
    torch.set_num_threads(a.threads)
    cv2.setNumThreads(a.threads)
    print(f"{a.threads} threads, {a.size}x{a.size}, median of {a.runs} runs "
          f"(torch {torch.__version__}, OpenCV {cv2.__version__})\n")
    print(f"{'case':<26}{'row':<20}{'seconds':>10}{'x OpenCV':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("yolov3-tiny", "yolov3"):
            if a.only and name != a.only:
                continue
            for batch in (1, 8):
                rows = bench_cpu(name, batch, a.size, a.runs, tmp, a.compile)
                base = rows["OpenCV dnn"]
                for k, v in rows.items():
                    print(f"{name + f' b={batch}':<26}{k:<20}{v:10.4f}{v / base:10.2f}")
                print()
        if torch.cuda.is_available():
            print(f"CUDA: {torch.cuda.get_device_name()}")
            for k, v in bench_cuda(a.size, a.runs, tmp).items():
                print(f"{k:<46}{v * 1000:10.2f} ms")
        else:
            print("no CUDA GPU here: GPU rows skipped")


if __name__ == "__main__":
    main()

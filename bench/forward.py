"""Forward-pass speed: darkcfg beside OpenCV's dnn and ONNX Runtime, in one process.

    python bench/forward.py [--runs 10] [--threads 2] [--size 416] [--only yolov3-tiny]
                            [--batch 1] [--compile] [--int8] [--accuracy]

For yolov3 and yolov3-tiny (bundled cfgs, synthetic weights written by `darkcfg init`), batch 1
and 8, rows:

  darkcfg eager        darkcfg.load(weights, cfg)
  darkcfg fused+cl     load(..., fuse=True, channels_last=True)
  fused+cl, reuse      the same under darkcfg.speed.reuse_freed_memory()
  compiled, reuse      that under darkcfg.speed.compile_frozen (with --compile; compiling is
                       not timed)
  bf16 autocast        fused+cl under torch.autocast("cpu", torch.bfloat16)
  bf16 model           load(..., fuse=True, channels_last=True, dtype="bf16"): weights and input
                       in bfloat16 (what `darkcfg detect --dtype bf16` runs)
  bf16 compiled        that under compile_frozen (with --compile)
  OpenCV dnn           readNetFromDarknet, same cfg and weights
  ONNX Runtime         darkcfg's own ONNX export, CPUExecutionProvider, float32
  OpenVINO (bf16|f32)  that ONNX in OpenVINO at its default precision (bf16 on a CPU with
                       AVX512_BF16 or AMX); skipped without the openvino package
  OpenVINO f32         the same with INFERENCE_PRECISION_HINT=f32
  darkcfg int8         (with --int8) darkcfg.infer.int8.quantize, compiled; calibrated on 8
                       noise images (the weights are synthetic; compiling is not timed)
  ORT int8 (QDQ)       (with --int8) onnxruntime.quantization.quantize_static of the ONNX, the
                       same calibration: uint8 activations, int8 weights per channel
  OpenVINO int8 NNCF   (with --int8) nncf.quantize of the ONNX, the same calibration; skipped
                       without nncf

The rows of a case take turns (--rounds rounds, each row one untimed call then its share of
--runs timed calls), so that drift in this machine's speed falls on all of them alike, and each
row runs with malloc set its way (reuse_freed_memory(True/False) before its turn).  Medians of
wall and CPU seconds, each with its ratio to OpenCV, and wall seconds' ratio to OpenVINO's
default row ("x OV", when openvino is installed).  With a CUDA GPU, yolov3 is also timed
there in fp32, under fp16/bf16 autocast and as a bf16 model.  The processor's instruction
sets that decide bf16's speed (avx512_bf16, amx_bf16...) and what ``dtype="auto"`` picks are
printed first.

--accuracy (needs ../shared/reference/make_weights.py: darknet-style synthetic weights whose
heads give many detections) compares, instead of timing, the bf16 model and bf16 autocast with
float32 on random inputs: the heads' largest difference, and the detections (thresh .25, NMS
.45) that pair with float32's (same class, IoU >= 0.9, score within 1e-2).
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time

import numpy as np

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
    """{name: (reuse malloc?, fn)} -> {name: (median seconds, median CPU seconds)}, the rows
    timed in turns.  CPU seconds (this process's, all threads) drift less than wall time on a
    machine shared with other work, which stretches wall time but not CPU time; they include
    the threads' spinning while they wait for each other."""
    from darkcfg.infer import speed
    times = {name: [] for name in rows}
    cpu = {name: [] for name in rows}
    per = max(1, runs // rounds)
    for _ in range(rounds):
        for name, (reuse, fn) in rows.items():
            speed.reuse_freed_memory(reuse)
            time.sleep(0.3)       # the previous row's thread pool stops spinning (ORT's and
            fn()                  # OpenCV's workers spin-wait after a run, taking the cores)
            for _ in range(per):
                t, c = time.perf_counter(), time.process_time()
                fn()
                times[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
    return {name: (statistics.median(times[name]), statistics.median(cpu[name]))
            for name in rows}


def bench_cpu(name, batch, size, runs, rounds, tmp, compiled=False, int8=False,
              only_rows=()):
    import cv2
    import numpy as np
    import onnxruntime as ort
    import torch
    import darkcfg
    from darkcfg.config import cfg as C
    from darkcfg.infer import speed
    from darkcfg.files import weights as W
    from darkcfg.infer.export import export_onnx

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
    def autocast(model, inp):
        def run():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                model(inp)
        return run
    half = darkcfg.load(weights, cfg_path, fuse=True, channels_last=True, dtype="bf16")
    xb = xc.to(torch.bfloat16)
    rows = {"darkcfg eager": (False, inference(eager, xt)),
            "darkcfg fused+cl": (False, inference(fast, xc)),
            "fused+cl, reuse": (True, inference(fast, xc))}
    if compiled:
        speed.reuse_freed_memory(True)
        comp = speed.compile_frozen(darkcfg.load(weights, cfg_path, fuse=True,
                                                 channels_last=True))
        comp(xc)                                   # compiles: not timed
        rows["compiled, reuse"] = (True, lambda: comp(xc))
    rows["bf16 autocast"] = (False, autocast(fast, xc))
    rows["bf16 model"] = (False, inference(half, xb))
    if compiled:
        comp16 = speed.compile_frozen(darkcfg.load(weights, cfg_path, fuse=True,
                                                   channels_last=True, dtype="bf16"))
        comp16(xb)
        rows["bf16 compiled"] = (True, lambda: comp16(xb))

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
    calib = [np.random.default_rng(1 + i).uniform(0, 1, (1, 3, size, size)).astype(np.float32)
             for i in range(8)] if int8 else []
    if int8:
        rows.update(int8_rows(weights, cfg_path, onnx_path, x, calib, tmp))
    rows.update(openvino_rows(onnx_path, x, calib))
    if only_rows:
        rows = {k: v for k, v in rows.items()
                if k == "OpenCV dnn" or any(r in k for r in only_rows)}
    return take_turns(rows, runs, rounds)


def int8_rows(weights, cfg_path, onnx_path, x, calib, tmp) -> dict:
    """darkcfg int8 (compiled; compiling not timed) and ONNX Runtime's static int8 (QDQ, uint8
    activations, int8 weights per channel), both calibrated on ``calib`` (uniform noise: the
    weights are synthetic too)."""
    import torch
    import onnxruntime as ort
    import darkcfg
    from darkcfg.infer import int8 as Q
    rows = {}
    try:
        Q.require_torchao()
    except Exception as e:
        print(f"darkcfg int8 row skipped: {e}")
    else:
        q = Q.quantize(darkcfg.load(weights, cfg_path, fuse=True),
                       [torch.from_numpy(np.concatenate(calib))])
        xt = torch.from_numpy(x)
        q(xt)                                             # compiles: not timed
        rows["darkcfg int8"] = (True, lambda: q(xt))
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"images": np.repeat(c, x.shape[0], 0)} for c in calib])

        def get_next(self):
            return next(self.items, None)
    q_path = onnx_path[:-5] + "-int8.onnx"
    logging.getLogger().setLevel(logging.ERROR)    # its advice on every bias and pre-processing
    quantize_static(onnx_path, q_path, Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=True)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(q_path, opts, providers=["CPUExecutionProvider"])
    rows["ORT int8 (QDQ)"] = (False, lambda: sess.run(None, {"images": x}))
    return rows


def openvino_rows(onnx_path, x, calib) -> dict:
    """OpenVINO on darkcfg's ONNX: its default precision (bf16 on a CPU with AVX512_BF16 or
    AMX), f32, and with ``calib`` int8 by NNCF's post-training quantisation; each row skipped
    when its package is absent."""
    import torch
    try:
        import openvino as ov
    except ImportError:
        print("OpenVINO rows skipped: pip install openvino")
        return {}
    core = ov.Core()
    threads = {"INFERENCE_NUM_THREADS": torch.get_num_threads()}
    model = core.read_model(onnx_path)
    default = core.compile_model(model, "CPU", threads)
    f32 = core.compile_model(model, "CPU", {**threads, "INFERENCE_PRECISION_HINT": "f32"})
    hint = default.get_property("INFERENCE_PRECISION_HINT")
    hint = hint.to_string() if hasattr(hint, "to_string") else str(hint)
    rows = {f"OpenVINO ({hint})": (False, lambda: default(x)),
            "OpenVINO f32": (False, lambda: f32(x))}
    if calib:
        from darkcfg.errors import DarkcfgError
        from darkcfg.infer.export import nncf_quantize
        try:
            quantised = nncf_quantize(core.read_model(onnx_path),
                                      [np.repeat(c, x.shape[0], 0) for c in calib])
        except DarkcfgError as e:       # nncf absent
            print(f"OpenVINO int8 row skipped: {e}")
            return rows
        q = core.compile_model(quantised, "CPU", threads)
        rows["OpenVINO int8 NNCF"] = (False, lambda: q(x))
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
    half = darkcfg.build_model(cfg, width=size, height=size).cuda().fuse().to(torch.bfloat16)
    for batch in (1, 8):
        x = torch.rand(batch, 3, size, size, device="cuda", dtype=torch.bfloat16)

        def run_half():
            with torch.inference_mode():
                half(x)
            torch.cuda.synchronize()
        rows[f"yolov3 b={batch} bf16 model"] = median_time(run_half, runs)
    return rows


def processor() -> str:
    """The CPU's name, the instruction sets that decide conv speed, and what auto picks."""
    import torch
    from darkcfg.infer import speed
    name = "unknown processor"
    try:
        with open("/proc/cpuinfo") as f:
            name = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")),
                        name)
    except OSError:
        pass
    feats = " ".join(speed.cpu_features()) or "none of " + ", ".join(speed.CPU_FEATURES)
    dtype, why = speed.auto_dtype("cpu")
    return (f"{name}, {os.cpu_count()} CPUs: {feats} (torch: "
            f"{torch.backends.cpu.get_cpu_capability()}); dtype auto = "
            f"{str(dtype).removeprefix('torch.')} ({why})")


def accuracy(name, size, tmp, images=2):
    """bf16 model and bf16 autocast vs float32: heads and detections (see the docstring)."""
    import subprocess
    import numpy as np
    import torch
    import darkcfg
    from darkcfg.config import cfg as C
    from darkcfg.objective import yolo as Y
    make = os.path.join(os.path.dirname(ROOT), "shared", "reference", "make_weights.py")
    if not os.path.exists(make):
        print("--accuracy needs ../shared/reference/make_weights.py")
        return
    cfg_path = os.path.join(tmp, f"{name}-acc.cfg")
    C.save(C.rewrite(C.load(os.path.join(ROOT, "cfgs", f"{name}.cfg")), width=size,
                     height=size), cfg_path)
    weights = os.path.join(tmp, f"{name}-acc.weights")
    subprocess.run([sys.executable, make, cfg_path, "1", weights], check=True,
                   capture_output=True)
    ref = darkcfg.load(weights, cfg_path)
    fast = darkcfg.load(weights, cfg_path, fuse=True)
    half = darkcfg.load(weights, cfg_path, fuse=True, dtype="bf16")
    for seed in range(images):
        x = torch.from_numpy(np.random.default_rng(seed).uniform(0, 1, (1, 3, size, size))
                             .astype(np.float32))
        with torch.inference_mode():
            want = ref(x)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                auto = [o.float() for o in fast(x)]
            got = [o.float() for o in half(x.to(torch.bfloat16))]
        base = Y.detections(want, ref)[0]
        for label, outs in (("bf16 model", got), ("bf16 autocast", auto)):
            err = max(float((a - b).abs().max()) / max(1.0, float(b.abs().max()))
                      for a, b in zip(outs, want))
            dets = Y.detections(outs, ref)[0]
            n, ds, db = pair(dets, base)
            print(f"{name} {size} image {seed} {label:<14} heads {err:.2e} of scale; "
                  f"{len(dets)} vs {len(base)} detections, {n} paired "
                  f"({100 * n / max(1, len(base)):.2f}%): scores within {ds:.1e}, boxes within "
                  f"{db * size:.2f} px", flush=True)


def pair(ours, theirs):
    """(pairs, largest score difference, largest box difference) of detections with the same
    class, IoU >= 0.9 and scores within 1e-2; each of ``theirs`` used once (vectorised per
    class: a detection pairs with its best-IoU counterpart)."""
    import numpy as np
    n, ds, db = 0, 0.0, 0.0
    for c in {d.cls for d in theirs}:
        a = [d for d in ours if d.cls == c]
        b = [d for d in theirs if d.cls == c]
        if not a:
            continue
        ba, bb = np.array([d.box for d in a]), np.array([d.box for d in b])
        lt = np.maximum(ba[:, None, :2], bb[None, :, :2])
        rb = np.minimum(ba[:, None, 2:], bb[None, :, 2:])
        inter = np.clip(rb - lt, 0, None).prod(-1)
        area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])
        iou = inter / (area(ba)[:, None] + area(bb)[None, :] - inter)
        best = iou.argmax(1)
        sa, sb = np.array([d.score for d in a]), np.array([d.score for d in b])
        ok = (iou[np.arange(len(a)), best] >= 0.9) & (np.abs(sa - sb[best]) <= 1e-2)
        used = np.unique(best[ok])
        n += len(used)
        if ok.any():
            ds = max(ds, float(np.abs(sa - sb[best])[ok].max()))
            db = max(db, float(np.abs(ba - bb[best])[ok].max()))
    return n, ds, db


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10, help="Timed calls per row (default 10).")
    ap.add_argument("--rounds", type=int, default=5, help="Turns the rows take (default 5).")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=416)
    ap.add_argument("--only", choices=["yolov3", "yolov3-tiny"])
    ap.add_argument("--batch", type=int, choices=[1, 8], help="Only this batch size.")
    ap.add_argument("--compile", action="store_true",
                    help="Add the compiled rows (inductor, frozen weights; 10-90 s to compile)")
    ap.add_argument("--int8", action="store_true",
                    help="Add the int8 rows: darkcfg int8 (needs torchao), ONNX Runtime static "
                         "int8 (QDQ), OpenVINO int8 by NNCF (needs nncf)")
    ap.add_argument("--rows", default="",
                    help="Time only the rows whose name holds one of these comma-separated "
                         "words (and OpenCV's, the base), e.g. 'compiled,int8,OpenVINO'")
    ap.add_argument("--accuracy", action="store_true",
                    help="Compare bf16 with float32 (heads, detections) instead of timing.")
    a = ap.parse_args()
    import cv2
    import torch
    torch.set_num_threads(a.threads)
    cv2.setNumThreads(a.threads)
    print(processor())
    if a.accuracy:
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("yolov3-tiny", "yolov3"):
                if not a.only or name == a.only:
                    accuracy(name, a.size, tmp)
        return
    print(f"{a.threads} threads, {a.size}x{a.size}, median of {a.runs} runs in {a.rounds} turns "
          f"(torch {torch.__version__}, OpenCV {cv2.__version__})\n")
    print(f"{'case':<18}{'row':<20}{'seconds':>10}{'x OpenCV':>10}{'CPU s':>10}{'x OpenCV':>10}"
          f"{'x OV':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("yolov3-tiny", "yolov3"):
            if a.only and name != a.only:
                continue
            for batch in (1, 8):
                if a.batch and batch != a.batch:
                    continue
                rows = bench_cpu(name, batch, a.size, a.runs, a.rounds, tmp, a.compile,
                                 a.int8, [r for r in a.rows.split(",") if r])
                base, base_cpu = rows["OpenCV dnn"]
                ov = next((v for k, (v, _) in rows.items() if k.startswith("OpenVINO (")),
                          None)
                for k, (v, c) in rows.items():
                    print(f"{name + f' b={batch}':<18}{k:<20}{v:10.4f}{v / base:10.2f}"
                          f"{c:10.4f}{c / base_cpu:10.2f}"
                          + (f"{v / ov:10.2f}" if ov else ""), flush=True)
                print()
        if torch.cuda.is_available():
            print(f"CUDA: {torch.cuda.get_device_name()}")
            for k, v in bench_cuda(a.size, a.runs, tmp).items():
                print(f"{k:<46}{v * 1000:10.2f} ms")
        else:
            print("no CUDA GPU here: GPU rows skipped")


if __name__ == "__main__":
    main()

"""detect on a video: frames/s of darkcfg's loop beside its floor and a plain OpenCV loop.

    python bench/video.py [--frames 60] [--threads 2] [--cfg cfgs/yolov3-tiny.cfg] [--compile]

A 640x480 MJPG video of moving shapes is generated, and yolov3-tiny at 416 (random weights
from ``darkcfg init``: speed does not depend on the values) runs over it.  Cases, round-robin:

* floor          the network alone on the video's frames decoded beforehand (infer.run.detect:
                 preparation, forward, decode, NMS) - nothing left to overlap; the model as
                 detect runs it (infer.run.ready: batch norms folded as darknet's
                 test_detector does, NHWC weights on a CPU)
* detect         ``detect``'s own loop (infer.run.detect_all): frames read and prepared ahead
                 by a thread
* detect --batch 4   the same loop with 4 frames per forward (infer.batching: layers whose
                 batched kernel rounds differently run image by image)
* no read-ahead  the same loop with frames read and prepared in turn (then the network)
* unfused NCHW   the loop with the model as detect ran it before it folded batch norms
* OpenCV         VideoCapture + cv2.dnn (readNetFromDarknet, blobFromImage, forward) on the
                 same cfg and weights, the usual plain loop (it decodes no detections)
* floor, bf16 / detect --dtype bf16   the same in bfloat16
* with --compile: floor, compiled / detect --compile, in float32 and bf16 (torch.compile with
                 frozen weights; compiled before the clock starts)

Prints frames/s (best of --repeat), each case's ratio to its floor and to OpenCV's.  ``--decode`` measures
instead how fast the video decodes to RGB arrays alone: OpenCV's VideoCapture (what detect
uses) beside PyAV (``pip install av``; the row says so when it is not installed).  The threshold is 0.9:
with random weights a lower one keeps thousands of boxes, and their NMS, not the loop, would
be measured (the OpenCV loop decodes nothing).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# random weights score thousands of boxes above darknet's 0.25 and NMS would dominate: a high
# threshold keeps the handful a trained model finds on a frame
THRESH = 0.9
sys.path.insert(0, ROOT)


def make_video(path, frames):
    import cv2
    out = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (640, 480))
    rng = np.random.default_rng(0)
    for k in range(frames):
        img = rng.integers(0, 80, (480, 640, 3), dtype=np.uint8)
        cv2.rectangle(img, (40 + 5 * k, 100), (200 + 5 * k, 260), (230, 230, 230), -1)
        cv2.circle(img, (500 - 4 * k, 330), 60, (200, 240, 250), -1)
        out.write(img)
    out.release()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cfg", default=os.path.join(ROOT, "cfgs", "yolov3-tiny.cfg"))
    ap.add_argument("--compile", action="store_true",
                    help="add detect --compile's rows (torch.compile; ~20 s each to compile)")
    ap.add_argument("--decode", action="store_true",
                    help="measure decoding alone: OpenCV beside PyAV")
    a = ap.parse_args()
    if a.decode:
        return decoders(a)
    import cv2
    import torch
    torch.set_num_threads(a.threads)
    cv2.setNumThreads(a.threads)
    from PIL import Image
    import darkcfg
    from darkcfg.infer import detect as D, run as R, sources as S
    from darkcfg.nn import model as M
    tmp = tempfile.mkdtemp()
    video, weights = os.path.join(tmp, "v.avi"), os.path.join(tmp, "w.weights")
    make_video(video, a.frames)
    subprocess.run([sys.executable, "-m", "darkcfg", "init", a.cfg, weights], check=True,
                   capture_output=True, env={**os.environ, "PYTHONPATH": ROOT})
    from darkcfg.infer import batching as B
    plain = M.for_inference(darkcfg.load(weights, a.cfg), "fp32", "cpu")
    model = R.ready(darkcfg.load(weights, a.cfg))                  # what detect runs
    bf16 = R.ready(darkcfg.load(weights, a.cfg), "bf16")
    item = S.Item("video", video, video)
    frames = [Image.fromarray(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
              for f in _decoded(video)]
    opt = R.Options(thresh=THRESH)
    quiet = {"echo": lambda *_: None}
    engines = {m: B.Engine(m, compiled=True) for m in (model, bf16)} if a.compile else {}

    def floor(m=model, engine=None):
        def run():
            for f in frames:
                R.detect(m, f, opt, engine)
        return run

    def detect(m=model, **kw):
        return lambda: R.detect_all(m, [item], R.Options(thresh=THRESH, **kw), **quiet)

    def in_turn():
        real = S.prefetched
        S.prefetched = lambda it, depth=4: it
        try:
            R.detect_all(model, [item], opt, **quiet)
        finally:
            S.prefetched = real

    net = cv2.dnn.readNetFromDarknet(a.cfg, weights)
    outs = net.getUnconnectedOutLayersNames()

    def opencv():
        cap = cv2.VideoCapture(video)
        while True:
            ok, f = cap.read()
            if not ok:
                break
            net.setInput(cv2.dnn.blobFromImage(f, 1 / 255, (416, 416), swapRB=True))
            net.forward(outs)

    cases = {"floor": (floor(), "floor"), "detect": (detect(), "floor"),
             "detect --batch 4": (detect(batch=4), "floor"),
             "no read-ahead": (in_turn, "floor"),
             "unfused NCHW (detect before)": (detect(plain), "floor"),
             "OpenCV": (opencv, "floor"),
             "floor, bf16": (floor(bf16), "floor, bf16"),
             "detect --dtype bf16": (detect(bf16), "floor, bf16")}
    if a.compile:
        for name, m in (("", model), (" --dtype bf16", bf16)):
            cases[f"floor, compiled{name}"] = (floor(m, engines[m]), f"floor, compiled{name}")
            cases[f"detect --compile{name}"] = (detect(m, compile=True),
                                                 f"floor, compiled{name}")
        for fn, _ in list(cases.values())[-4:]:
            fn()                                   # compiled before the clock starts
    best = {k: float("inf") for k in cases}
    for _ in range(a.repeat):
        for k, (fn, _) in cases.items():
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    print(f"{a.frames} frames 640x480, {os.path.basename(a.cfg)} at 416, {a.threads} threads; "
          f"each row's ratio to its floor and to the OpenCV loop")
    for k, (_, base) in cases.items():
        s = best[k]
        print(f"  {k:29s} {a.frames / s:6.2f} frames/s   {best[base] / s:5.2f}x {base:29s}"
              f"{best['OpenCV'] / s:5.2f}x OpenCV")


def decoders(a):
    """Frames/s of decoding the generated video to RGB arrays: OpenCV, PyAV."""
    import cv2
    cv2.setNumThreads(a.threads)
    video = os.path.join(tempfile.mkdtemp(), "v.avi")
    make_video(video, a.frames)

    def opencv():
        for f in _decoded(video):
            cv2.cvtColor(f, cv2.COLOR_BGR2RGB)

    def pyav():
        import av
        with av.open(video) as c:
            stream = c.streams.video[0]
            stream.thread_type, stream.codec_context.thread_count = "AUTO", a.threads
            for frame in c.decode(stream):
                frame.to_ndarray(format="rgb24")
    print(f"{a.frames} frames 640x480 MJPG, decoded to RGB, {a.threads} threads")
    for name, fn in (("OpenCV VideoCapture", opencv), ("PyAV", pyav)):
        try:
            best = min(_timed(fn) for _ in range(a.repeat))
        except ImportError:
            print(f"  {name:20s} not installed")
            continue
        print(f"  {name:20s} {a.frames / best:8.1f} frames/s")


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _decoded(video):
    import cv2
    cap = cv2.VideoCapture(video)
    while True:
        ok, f = cap.read()
        if not ok:
            return
        yield f


if __name__ == "__main__":
    main()

"""bench/ scripts at their smallest settings: each runs to its end and prints its table, so a
script broken by a change is found here, not when someone next measures.  No timing is
asserted (tests never assert a wall time); seconds each, marked ``bench`` (run in CI;
``-m 'not bench'`` leaves them out)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.bench

# script, arguments (the smallest settings each takes), a line its output must hold
CASES = {
    "map": (["--images", "20", "--per-image", "10", "--classes", "3", "--repeat", "1"],
            "pycocotools eval+accum"),
    "map-resize-study": (["--resize-study", "{tmp}/study", "--steps", "1",
                          "--study-images", "8"], "letter_box=1 resize=opencv"),
    "train": (["--threads", "1", "--iterations", "1", "--models", "tiny", "--size", "64",
               "--bf16", "no"], "targets+loss alone"),
    "train-loader": (["--threads", "1", "--iterations", "1", "--models", "", "--size", "64",
                      "--bf16", "no", "--loader", "--workers", "1"], "the bottleneck is"),
    "forward": (["--runs", "1", "--rounds", "1", "--threads", "1", "--size", "64", "--only",
                 "yolov3-tiny", "--batch", "1"], "ONNX Runtime"),
    "forward-int8": (["--runs", "1", "--rounds", "1", "--threads", "1", "--size", "64",
                      "--only", "yolov3-tiny", "--batch", "1", "--int8"], "ORT int8 (QDQ)"),
    "int8": (["--dir", "{tmp}/set", "--size", "64", "--iterations", "2", "--train-images", "8",
              "--valid-images", "4", "--calib-count", "4", "--no-variants"], "bf16"),
    "forward-accuracy": (["--threads", "1", "--size", "64", "--only", "yolov3-tiny",
                          "--accuracy"], "bf16 autocast  heads"),
    "data": (["--images", "4", "--batches", "1", "--rounds", "1", "--workers", "1", "--mini",
              "2", "--size", "64", "--dir", "{tmp}/images"], "full+mosaic"),
    # 1 process, then 2 gloo ranks (each imports torch: ~20 s on 2 busy cores)
    "train-ddp": (["--ddp", "2", "--threads", "2", "--iterations", "1", "--models", "tiny",
                   "--size", "64"], "share of step"),
    "train-vs-loop": (["--threads", "1", "--models", "", "--vs-loop", "--loop-iterations", "8",
                       "--workers", "1"], "x the loop"),
    "video": (["--frames", "5", "--threads", "1", "--repeat", "1"], "detect --dtype bf16"),
    "video-decode": (["--decode", "--frames", "3", "--threads", "1", "--repeat", "1"],
                     "OpenCV VideoCapture"),
    # three of its cases import torch in a fresh process (~3 s each on 2 busy cores)
    "convert": (["--cfg", os.path.join(ROOT, "cfgs", "yolov3-tiny.cfg"), "--repeat", "1",
                 "--dir", "{tmp}"], "load in-process"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bench_script_runs(case, tmp_path):
    args, expect = CASES[case]
    script = os.path.join(ROOT, "bench", case.split("-")[0] + ".py")
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, script, *[a.format(tmp=tmp_path) for a in args]],
                       cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert expect in r.stdout, r.stdout[-3000:]


def test_issue22_recipe_runs(tmp_path):
    """bench/issue22.py: the set, then a 2-iteration trainer run and plain-loop run (the loop
    with the IoU-only ignore rule), each scored (a results line each)."""
    script = os.path.join(ROOT, "bench", "issue22.py")
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    folder = str(tmp_path / "set")
    for args in (["set", folder, "--train", "8", "--valid", "4", "--clutter", "0.5"],
                 ["train", folder, "T", "--iterations", "2"],
                 ["loop", folder, "L", "--iterations", "2", "--ignore", "iou"]):
        r = subprocess.run([sys.executable, script, *args], cwd=str(tmp_path), env=env,
                           capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    with open(os.path.join(folder, "results.txt")) as f:
        lines = f.read().splitlines()
    assert [line.split()[0] for line in lines] == ["T", "L"]
    assert all(" mAP@0.5 " in line for line in lines)

"""Convert speed and memory: darkcfg's .weights -> .pt beside a floor measured in the same run.

    python bench/convert.py [--cfg cfgs/yolov3.cfg] [--repeat 3] [--dir /dev/shm]

Each case runs in a fresh process (so peak RSS is its own), on a synthetic yolov3-sized file
(248,007,048 bytes) written first.  Cases:

* copy the file        python copies the .weights file (shutil.copyfile): the disk's own floor
* torch import         python + import torch, nothing else
* floor                numpy reads the file once, torch.save of the same tensors (no model)
* darkcfg .pt          `darkcfg convert x.weights x.pt` (the walk's views written as torch's
                       archive by darkcfg.ptfile: torch is never imported)
* darkcfg .safetensors `darkcfg convert x.weights x.safetensors` (never imports torch)
* summary              `darkcfg summary cfgs/yolov3.cfg` (no torch)
* load in-process      darkcfg.load(weights, cfg) timed inside the process (build + load)

Cases run round-robin, so that disk and page-cache noise (writing 248 MB files makes the kernel
throttle writers now and then) falls on all of them alike.  Prints wall time (median; the last
case its in-process time) and peak RSS, each with its ratio to the floor.
"""
from __future__ import annotations

import argparse
import glob
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CASES = {
    "copy the file": """
import sys, shutil
shutil.copyfile(sys.argv[2], sys.argv[3] + '.copy')
""",
    "torch import": "import torch",
    "floor": """
import numpy as np, torch, sys
from darkcfg.config import shapes
from darkcfg.files import weights as W
net = shapes.infer(sys.argv[1]); h, size = W.read_header(sys.argv[2])
floats = np.fromfile(sys.argv[2], dtype='<f4', offset=h.size)
sd = {f"layers.{e.layer.index}.{e.tensor.key}":
      torch.from_numpy(floats[e.offset:e.offset + e.tensor.count].reshape(e.tensor.shape))
      for e in W.walk(net)}
torch.save(sd, sys.argv[3])
""",
    "darkcfg .pt": """
import sys
from darkcfg.cli import main
try: main(['convert', '-q', '--force', sys.argv[2], sys.argv[3], '--cfg', sys.argv[1]])
except SystemExit as e: assert not e.code
assert 'torch' not in sys.modules
""",
    "darkcfg .safetensors": """
import sys
from darkcfg.cli import main
try: main(['convert', '-q', '--force', sys.argv[2], sys.argv[3] + '.safetensors',
           '--cfg', sys.argv[1]])
except SystemExit as e: assert not e.code
assert 'torch' not in sys.modules
""",
    "summary": """
import sys
from darkcfg.cli import main
try: main(['summary', sys.argv[1]])
except SystemExit as e: assert not e.code
""",
    "load in-process": """
import sys, time, darkcfg, darkcfg.model
t = time.perf_counter()
darkcfg.load(sys.argv[2], sys.argv[1])
print(f"IN-PROCESS {time.perf_counter() - t:.3f}", file=sys.stderr)
""",
}


def run_case(code, cfg, src, dst):
    for old in glob.glob(dst + "*"):    # every case writes a new file: deleting the previous
        os.unlink(old)                  # run's output (0.03-0.06 s for 237 MiB) is not timed
    t = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-c", code, cfg, src, dst], cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    if status:
        raise SystemExit(f"case failed with status {status}: {err[-500:]}")
    inner = [float(line.split()[1]) for line in err.splitlines() if line.startswith("IN-PROCESS")]
    return (inner[0] if inner else wall), usage.ru_maxrss / 1024   # MiB (Linux reports KiB)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cfg", default=os.path.join(ROOT, "cfgs", "yolov3.cfg"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", help="Where to write the files (default: the system's temporary "
                                  "folder; /dev/shm takes the disk out of the figures)")
    a = ap.parse_args()
    sys.path.insert(0, ROOT)
    import numpy as np
    from darkcfg.config import shapes
    net = shapes.infer(a.cfg)
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        src, dst = os.path.join(tmp, "in.weights"), os.path.join(tmp, "out.pt")
        with open(src, "wb") as f:
            f.write(np.array([0, 2, 5], "<i4").tobytes() + np.zeros(1, "<u8").tobytes())
            rng = np.random.default_rng(0)
            n = net.totals()["weights"]
            for s in range(0, n, 1 << 24):
                f.write(rng.random(min(1 << 24, n - s), dtype=np.float32).tobytes())
        size = os.path.getsize(src)
        print(f"{os.path.basename(a.cfg)}: {size:,} bytes; median of {a.repeat} runs each\n")
        runs = {name: [] for name in CASES}
        for _ in range(a.repeat):        # round-robin, so disk and cache noise hits every case
            for name, code in CASES.items():
                runs[name].append(run_case(code, a.cfg, src, dst))
        rows = {name: (statistics.median(r[0] for r in rs), max(r[1] for r in rs))
                for name, rs in runs.items()}
        floor_t, floor_m = rows["floor"]
        python_t = run_case("pass", a.cfg, src, dst)[0]
        print(f"(python itself starts in {python_t:.2f} s)")
        print(f"{'case':<22}{'wall s':>8}{'x floor':>9}{'peak MiB':>10}{'x floor':>9}")
        for name, (t, m) in rows.items():
            print(f"{name:<22}{t:8.2f}{t / floor_t:9.2f}{m:10.0f}{m / floor_m:9.2f}")

if __name__ == "__main__":
    main()

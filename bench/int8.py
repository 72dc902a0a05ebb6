"""mAP@0.5 of one trained model in fp32, bf16 and int8, through ``darkcfg map`` (issue #25).

    python bench/int8.py [--dir DIR] [--size 96] [--iterations 300] [--calib-count 64]

Trains the learning test's model (tests/conftest.py ``trained``: yolov3-tiny at half width, 2
classes, 96x96, 300 iterations of 16 images on 256 generated images, seed 0) into DIR (kept:
a second run reuses DIR/tiny_final.weights), then scores it on the 32 validation images:

* ``darkcfg map DATA CFG WEIGHTS --dtype fp32``, ``--dtype bf16``, ``--dtype int8 --calib DATA``
  (calibrated on the train= list, never on the images scored);
* int8 with every conv int8, the first conv, then the convs before the heads, left in
  float32 (``darkcfg.infer.int8.quantize(keep_first=, keep_heads=)``): whether either must
  stay float (the ``int8`` row is quantize's default: on a CPU without VNNI/AMX the first conv
  stays float32, and the row says so).

Each row also gives the largest difference of its head outputs from fp32's on one validation
image.  About 15 minutes on 2 shared cores (training took 737 s; each int8 row compiles ~10 s).
Needs torchao (``pip install "darkcfg[int8]"``); without it the int8 rows say so.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))


def trained(folder: str, size: int, iterations: int, ntrain: int, nvalid: int):
    """(data, cfg, weights) of the learning fixture's recipe, trained once into ``folder``."""
    from _helpers import make_cfg, make_data
    from darkcfg.training import train as T
    os.makedirs(folder, exist_ok=True)
    data = make_data(folder, ntrain=ntrain, nvalid=nvalid)
    cfg = make_cfg(os.path.join(folder, "tiny.cfg"), size=size, width_scale=0.5, batch=16,
                   subdivisions=2, learning_rate=0.005, burn_in=min(30, iterations),
                   max_batches=iterations,
                   steps=f"{int(iterations * 2 / 3)},{max(int(iterations * 26 / 30), 2)}")
    weights = os.path.join(folder, "backup", "tiny_final.weights")
    if not os.path.exists(weights):
        t = time.perf_counter()
        T.train(data, cfg, quiet=True, seed=0, out=os.path.join(folder, "backup"))
        print(f"trained {iterations} iterations in {time.perf_counter() - t:.0f} s")
    return data, cfg, weights


def cli_map(data, cfg, weights, *extra) -> float:
    r = subprocess.run([sys.executable, "-m", "darkcfg", "map", data, cfg, weights, "--json",
                        *extra], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": ROOT})
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed")
    return json.loads(r.stdout)["darknet"]["map"] * 100


def head_difference(model, ref_outs, x) -> float:
    import torch
    with torch.no_grad():
        outs = model(x.to(**model.placement()))
    return max((o.float() - r).abs().max().item() for o, r in zip(outs, ref_outs))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default="int8-fixture", help="Where the set and weights go.")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--train-images", type=int, default=256)
    ap.add_argument("--valid-images", type=int, default=32)
    ap.add_argument("--calib-count", type=int, default=64)
    ap.add_argument("--no-variants", dest="variants", action="store_false",
                    help="Leave out the rows with the first or the head convs in float.")
    a = ap.parse_args(argv)
    data, cfg, weights = trained(os.path.abspath(a.dir), a.size, a.iterations,
                                 a.train_images, a.valid_images)
    import torch
    from darkcfg.evaluation import validate as V
    from darkcfg.dataset import data as D
    from darkcfg.infer import int8 as Q
    from darkcfg.nn import model as M
    fp32 = M.load(weights, cfg, fuse=True)
    valid = D.image_list(D.read_data(data).resolve("valid"))
    x = next(Q.calibration_batches(fp32.net, valid[:1]))
    with torch.no_grad():
        ref = [o.float() for o in fp32(x)]
    rows = [("fp32", cli_map(data, cfg, weights), 0.0)]
    rows.append(("bf16", cli_map(data, cfg, weights, "--dtype", "bf16"),
                 head_difference(M.for_inference(M.load(weights, cfg), "bf16"), ref, x)))
    try:
        Q.require_torchao()
    except Exception as e:
        rows.append(("int8", None, str(e)))
    else:
        rows.append(("int8", cli_map(data, cfg, weights, "--dtype", "int8", "--calib", data,
                                     "--calib-count", str(a.calib_count)), None))
        paths = Q.calibration_paths(data, a.calib_count)
        s = V.setup(data, cfg, weights)
        variants = [("int8 (heads diff)", {})]
        if a.variants:
            variants += [("int8, every conv int8", {"keep_first": False}),
                         ("int8, first conv float", {"keep_first": True}),
                         ("int8, head convs float", {"keep_heads": True}),
                         ("int8, both float", {"keep_first": True, "keep_heads": True})]
        for name, kw in variants:
            q = Q.quantize(fp32, paths, a.calib_count, **kw)
            if kw:
                r = V.evaluate_model(q, s.paths, num_classes=s.classes,
                                     letter_box=s.letter_box)
                rows.append((name, r.map * 100, head_difference(q, ref, x)))
            else:      # the map row's model again, for its heads (same calibration: same model)
                label = "int8 (first conv float)" if q.info["float_layers"] else "int8"
                rows[-1] = (label, rows[-1][1], head_difference(q, ref, x))
    print(f"\n{os.path.basename(cfg)} {a.size}x{a.size}, {a.valid_images} validation images, "
          f"int8 calibrated on {a.calib_count} train= images")
    print(f"{'precision':<26} {'mAP@0.5 %':>10} {'heads max |diff| vs fp32':>26}")
    for name, m, d in rows:
        ms = f"{m:10.2f}" if m is not None else f"{'-':>10}"
        ds = f"{d:26.4f}" if isinstance(d, float) else f"{'(via map)' if d is None else d:>26}"
        print(f"{name:<26} {ms} {ds}")


if __name__ == "__main__":
    main()

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
image.  With openvino installed, two more rows score darkcfg's OpenVINO IR export
(``export --format openvino``, batch dynamic) run by OpenVINO itself: f32
(``INFERENCE_PRECISION_HINT=f32``) and int8 (``--dtype int8``: NNCF on the same calibration
images; needs nncf).

``--data DATA --cfg CFG --weights W`` scores a model trained elsewhere instead (e.g. a run of
bench/issue22.py: ``--data /tmp/t22u/obj.data --cfg /tmp/t22u/runs/RUN/recipe.cfg --weights
/tmp/t22u/runs/RUN/recipe_final.weights``), on its .data's ``valid=`` images.

About 15 minutes on 2 shared cores (training took 737 s; each int8 row compiles ~10 s).
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


class OpenVinoModel:
    """An OpenVINO compiled IR that evaluate_model runs like darkcfg's models: ``model(x)`` ->
    the tensors entering the heads (the IR's outputs), ``net`` for the decode."""

    training = False
    fused = True

    def __init__(self, net, xml, hint=None):
        import openvino as ov
        import torch
        config = {"INFERENCE_NUM_THREADS": torch.get_num_threads()}
        if hint:
            config["INFERENCE_PRECISION_HINT"] = hint
        self.net, self.compiled = net, ov.Core().compile_model(xml, "CPU", config)

    def placement(self) -> dict:
        import torch
        return {"device": torch.device("cpu"), "dtype": torch.float32}

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def __call__(self, x):
        import torch
        out = self.compiled(x.float().numpy())
        return [torch.from_numpy(out[p]) for p in self.compiled.outputs]


def openvino_rows(fp32, paths, tmp, s, ref, x) -> list:
    """mAP of darkcfg's OpenVINO IR export: f32, and int8 by NNCF on ``paths``."""
    import importlib.util
    if importlib.util.find_spec("openvino") is None:
        return [("OpenVINO IR", None, "pip install openvino")]
    from darkcfg.evaluation import validate as V
    from darkcfg.errors import DarkcfgError
    from darkcfg.infer.export import export_openvino
    rows = []
    for name, calib, hint in (("OpenVINO IR f32", None, "f32"),
                              ("OpenVINO IR int8 (NNCF)", paths, None)):
        xml = os.path.join(tmp, name.split()[2] + ".xml")
        try:
            export_openvino(fp32, xml, dynamic_batch=True, calib=calib)
        except DarkcfgError as e:
            rows.append((name, None, str(e)))
            continue
        ov_model = OpenVinoModel(fp32.net, xml, hint)
        r = V.evaluate_model(ov_model, s.paths, num_classes=s.classes, letter_box=s.letter_box)
        rows.append((name, r.map * 100, head_difference(ov_model, ref, x)))
    return rows


def head_difference(model, ref_outs, x) -> float:
    import torch
    with torch.no_grad():
        outs = model(x.to(**model.placement()))
    return max((o.float() - r).abs().max().item() for o, r in zip(outs, ref_outs))


def int8_rows(fp32, data, cfg, weights, paths, s, ref, x, a) -> list:
    """darkcfg's int8: ``map --dtype int8`` and quantize's placements of the float convs."""
    from darkcfg.evaluation import validate as V
    from darkcfg.infer import int8 as Q
    rows = []
    try:
        Q.require_torchao()
    except Exception as e:
        rows.append(("int8", None, str(e)))
    else:
        rows.append(("int8", cli_map(data, cfg, weights, "--dtype", "int8", "--calib", data,
                                     "--calib-count", str(a.calib_count)), None))
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
    return rows


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
    ap.add_argument("--data", help="Score this model (with --cfg, --weights), not the fixture's.")
    ap.add_argument("--cfg")
    ap.add_argument("--weights")
    a = ap.parse_args(argv)
    if a.data:
        if not (a.cfg and a.weights):
            ap.error("--data needs --cfg and --weights")
        data, cfg, weights = a.data, a.cfg, a.weights
    else:
        data, cfg, weights = trained(os.path.abspath(a.dir), a.size, a.iterations,
                                     a.train_images, a.valid_images)
    import tempfile
    import torch
    from darkcfg.dataset import data as D
    from darkcfg.evaluation import validate as V
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
    paths = Q.calibration_paths(data, a.calib_count)
    s = V.setup(data, cfg, weights)
    rows += int8_rows(fp32, data, cfg, weights, paths, s, ref, x, a)
    with tempfile.TemporaryDirectory() as tmp:
        rows += openvino_rows(fp32, paths, tmp, s, ref, x)
    print(f"\n{os.path.basename(cfg)} {fp32.net.width}x{fp32.net.height}, {len(s.paths)} "
          f"validation images, int8 calibrated on {a.calib_count} train= images")
    print(f"{'precision':<26} {'mAP@0.5 %':>10} {'heads max |diff| vs fp32':>26}")
    for name, m, d in rows:
        ms = f"{m:10.2f}" if m is not None else f"{'-':>10}"
        ds = f"{d:26.4f}" if isinstance(d, float) else f"{'(via map)' if d is None else d:>26}"
        print(f"{name:<26} {ms} {ds}")


if __name__ == "__main__":
    main()

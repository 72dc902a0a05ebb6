"""What the command modules share: the bundled cfgs, click types and options, cfg and model
opening, error wording.
"""
from __future__ import annotations

import os

import click

from ..config import cfg as cfgmod
from ..config import shapes
from ..errors import DarkcfgError, WeightsError


HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the darkcfg package


def _bundled() -> str:
    """cfgs/: inside the package when installed from a wheel, beside it in the repo."""
    inside = os.path.join(HERE, "cfgs")
    return inside if os.path.isdir(inside) else os.path.join(os.path.dirname(HERE), "cfgs")


BUNDLED = _bundled()
DEFAULT_CFG = os.path.join(BUNDLED, "yolo_ref.cfg")
YOLOV3_CFG = os.path.join(BUNDLED, "yolov3.cfg")
ASSUMED = ("no --cfg given, so the bundled yolo_ref.cfg with the file in the bundled "
           "yolov3.cfg's layer order was assumed: give --cfg CFG (the cfg these weights belong to)")

IN_FILE = click.Path(exists=True, dir_okay=False)
OUT_FILE = click.Path(dir_okay=False)


def rewrite_options(fn):
    """--classes/--width/--height/--channels/--width-scale/--batch/--strict/--save-cfg."""
    opts = [
        click.option("--classes", type=click.IntRange(min=1),
                     help="Classes of every [yolo]/[region]/[keypoint] head (and filters= of the "
                          "conv feeding it)."),
        click.option("--width", type=click.IntRange(min=1), help="Input width ([net] width=)."),
        click.option("--height", type=click.IntRange(min=1), help="Input height ([net] height=)."),
        click.option("--channels", type=click.IntRange(min=1), help="Input channels."),
        click.option("--width-scale", type=click.FloatRange(min=0, min_open=True),
                     help="Multiply every conv's filters (not the output convs): the design "
                          "notes' initial_filters/32, e.g. 0.25 for initial_filters=8."),
        click.option("--batch", type=click.IntRange(min=1), help="[net] batch= (and "
                                                                 "subdivisions=1)."),
        click.option("--strict", is_flag=True,
                     help="Unused or repeated options are errors, not warnings."),
        click.option("--save-cfg", type=OUT_FILE,
                     help="Write the (rewritten) cfg here (an existing file needs --force)."),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


REWRITES = ("classes", "width", "height", "channels", "width_scale", "batch")
FORCE = click.option("--force", is_flag=True, help="Overwrite outputs that exist.")


def _rewrites(rw: dict) -> dict:
    return {k: rw.get(k) for k in REWRITES}


def _warn_unused(net, strict: bool) -> None:
    unused = cfgmod.unused_options(net.cfg)
    if strict and unused:
        raise unused[0].as_error()
    for p in [str(u) for u in unused] + net.warnings:
        click.echo(f"warning: {p}", err=True)


def load_network(path, strict=False, save_cfg=None, **options):
    """Parse, rewrite, infer shapes, report unused options; optionally save the cfg (the
    caller has checked the output with io.check_outputs)."""
    net = shapes.network(path, **_rewrites(options))
    _warn_unused(net, strict)
    if save_cfg:
        cfgmod.save(net.cfg, save_cfg)
        click.echo(f"wrote {save_cfg}", err=True)
    return net


def _bflops(totals: dict) -> str:
    """darknet's Total BFLOPS, and the complete count where darknet leaves layers out."""
    text = f"{totals['bflops']:.3f}"
    every = totals.get("bflops_all")
    if every is not None and f"{every:.3f}" != text:
        text += f" (darknet's; all layers incl. connected/local: {every:.3f})"
    return text


def _check_cutoff(net, cutoff):
    if cutoff is not None and not 1 <= cutoff <= len(net.layers):
        raise click.BadParameter(f"{cutoff} is outside 1..{len(net.layers)} (the layers of "
                                 f"{net.cfg.name})", param_hint="--cutoff")


def _layer_json(l):
    return {"index": l.index, "type": l.type, "filters": l.filters, "size": l.size,
            "stride": l.stride, "input": list(l.input), "output": list(l.output),
            "bflops": round(l.bflops, 6), "params": l.params, "weights": l.weights}


FORMATS = (".weights", ".pt", ".safetensors")


def _ext(path):
    for e in FORMATS:
        if path.endswith(e):
            return e
    if path.endswith(".74") or ".conv." in os.path.basename(path):   # darknet53.conv.74 & co
        return ".weights"
    return os.path.splitext(path)[1] or "(none)"


def _is_checkpoint(path) -> bool:
    return _ext(path) in (".pt", ".safetensors")


def _assumed(fn, assumed: bool):
    """Run ``fn``; when the bundled cfgs were assumed for lack of --cfg, say so in an error
    about the weights file."""
    try:
        return fn()
    except WeightsError as e:
        if assumed:
            raise DarkcfgError(f"{e} ({ASSUMED})") from None
        raise


def _checkpoint_net(ck, path, cfg=None, **rewrites):
    """The network stored in a checkpoint; a --cfg given beside it must be that network (its
    input size then applies)."""
    from ..files import weights as W
    stored = shapes.network(ck.cfg(path))
    if cfg is not None:
        given = shapes.network(cfg)
        if W.signatures(given) != W.signatures(stored):
            raise DarkcfgError(f"{cfg}: is not the network stored in {path} (layer "
                               f"{_first_difference(given, stored)} differs): give no --cfg, the "
                               f"checkpoint carries its own")
        stored = given
    return shapes.network(stored, **rewrites)


def _first_difference(a, b) -> int:
    from ..files import weights as W
    sa, sb = W.signatures(a), W.signatures(b)
    return next((i for i, (x, y) in enumerate(zip(sa, sb)) if x != y), min(len(sa), len(sb)))


# ----- loading a model for build / detect / export ----------------------------------------------

def open_model(weights, cfg=None, weights_cfg=None, cutoff=None, progress=False, **rewrites):
    """(model, report, order) from a weights file and an optional cfg.

    A .pt/.safetensors carries its cfg: a --cfg beside it must be the same network, rewrites
    apply to it.  A .weights file needs its cfg; without one the bundled yolo_ref.cfg is used
    with the file in yolov3.cfg's order (and an error about the file says so).  ``order``: the
    text of the cfg whose layer order the source followed, when it is not the model's own."""
    from ..nn import model as M
    from ..files import weights as W
    rewrites = {k: v for k, v in rewrites.items() if v is not None}
    if _is_checkpoint(weights):
        if weights_cfg is not None:
            raise click.UsageError(f"--weights-cfg is for .weights files: {weights} carries "
                                   f"its own cfg")
        if cutoff is not None:
            raise click.UsageError("--cutoff is for .weights files")
        if cfg is None and not rewrites:
            model, report = M.load_weights(weights)
            model.weights_cfg = W.read_checkpoint_order(weights)
            return model, report, model.weights_cfg
        ck = W.read_checkpoint(weights)
        net = _checkpoint_net(ck, weights, cfg, **rewrites)
        W.check_arrays(_checkpoint_net(ck, weights, cfg), ck.arrays, weights)
        M.check_memory(net)                 # e.g. --width 100000: refused before allocating
        import torch
        with torch.device("meta"):
            model = M.Darknet(net)
        loaded, skipped = W.assign_arrays(model, ck.arrays)
        order = shapes.network(ck.weights_cfg, **rewrites).cfg.to_text() \
            if ck.weights_cfg else None
        model.weights_cfg = order
        return model.eval(), W.LoadReport(ck.header, loaded, skipped), order
    assumed = cfg is None
    if assumed:
        cfg, weights_cfg = DEFAULT_CFG, weights_cfg or YOLOV3_CFG
    model, report = _assumed(lambda: M.load_weights(weights, cfg, weights_cfg=weights_cfg,
                                                    cutoff=cutoff, progress=progress,
                                                    **rewrites), assumed)
    order = None
    if weights_cfg is not None:
        n = model.net
        order = shapes.network(weights_cfg, width=n.width, height=n.height, channels=n.channels,
                               **{k: v for k, v in rewrites.items()
                                  if k not in ("width", "height", "channels")}).cfg.to_text()
    model.weights_cfg = order
    return model, report, order


def _report_skipped(report):
    for i, why in report.skipped:
        click.echo(f"warning: layer {i} not loaded: {why}", err=True)


# ----- build ----------------------------------------------------------------------------------

def _device(ctx, param, value):
    """--device of build, detect and map: one this machine has (a bad one exits 2)."""
    from ..nn import model as M
    if value is None:
        return value
    try:
        M.device_of(value)
    except DarkcfgError as e:
        raise click.BadParameter(str(e)) from None
    return value


# ----- int8 (--dtype int8 --calib) ------------------------------------------------------------

DTYPE_CHOICES = ["fp32", "bf16", "fp16", "auto", "int8"]


def int8_options(fn):
    """--calib and --calib-count, for the commands whose --dtype offers int8."""
    fn = click.option("--calib-count", type=click.IntRange(min=1), default=64,
                      show_default=True,
                      help="--dtype int8: calibrate on at most this many images, spread over "
                           "the list.")(fn)
    return click.option("--calib", metavar="LIST|DATA",
                        help="--dtype int8: the images to calibrate on - a list file, a "
                             "folder, or a .data (its train= list).")(fn)


def check_int8(dtype, calib, weights, device=None) -> None:
    """--calib only with --dtype int8, which needs it unless WEIGHTS is a quantised .pt2, and
    runs on the CPU."""
    pt2 = str(weights or "").endswith(".pt2")
    if (dtype == "int8" or pt2) and device is not None and str(device) != "cpu":
        raise click.UsageError(f"int8 runs on the CPU (oneDNN's int8 kernels): --device "
                               f"{device} cannot apply")
    if calib and dtype != "int8":
        raise click.UsageError("--calib is for --dtype int8")
    if pt2 and dtype not in ("int8", "fp32"):
        raise click.UsageError(f"{weights} is an int8 model: --dtype {dtype} cannot apply")
    if dtype == "int8" and not calib and not pt2:
        raise click.UsageError("--dtype int8 needs --calib LIST|DATA (images to calibrate on), "
                               "or a quantised .pt2 as the weights")
    if dtype == "int8" or pt2:
        from ..infer.int8 import require_torchao
        require_torchao()


def int8_model(model, calib, calib_count):
    """``model`` quantised (--dtype int8), saying what it calibrated on."""
    from ..infer import int8 as Q
    paths = Q.calibration_paths(calib, calib_count)
    click.echo(f"int8: calibrating on {len(paths)} images of {calib}", err=True)
    q = Q.quantize(model, paths, calib_count)
    if "note" in q.info:
        click.echo(f"int8: {q.info['note']}", err=True)
    return q

"""The `darkcfg` command line.  The only module that imports click.

Exit codes: 0 success; 1 a problem with an input file (one line ``Error: ...``, no traceback);
2 bad arguments (click's usage errors).
"""
from __future__ import annotations

import json
import os

import click

from . import cfg as cfgmod
from . import shapes
from .errors import DarkcfgError

HERE = os.path.dirname(os.path.abspath(__file__))
BUNDLED = os.path.join(os.path.dirname(HERE), "cfgs")
DEFAULT_CFG = os.path.join(BUNDLED, "yolo_ref.cfg")
YOLOV3_CFG = os.path.join(BUNDLED, "yolov3.cfg")


class _Group(click.Group):
    """Turns every DarkcfgError (and OS errors on outputs) into ``Error: ...`` and exit 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DarkcfgError as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:
            raise click.ClickException(f"{e.filename or ''}: {e.strerror or e}") from None


@click.group(cls=_Group, context_settings=dict(help_option_names=["-h", "--help"]))
@click.version_option(package_name="darkcfg")
def main():
    """darknet .cfg files as exact PyTorch models.

    \b
    darkcfg summary [CFG]                 layers, shapes, params, BFLOPs (no torch)
    darkcfg build CFG [--weights W]       build the PyTorch model, run it once
    darkcfg convert IN OUT                .weights <-> .pt, or between two cfg orders
    darkcfg init CFG OUT.weights          synthetic weights to try things without downloads

    With no CFG, commands use the bundled cfgs/yolo_ref.cfg.
    """


def rewrite_options(fn):
    """--classes/--width/--height/--channels/--width-scale/--batch/--strict/--save-cfg."""
    opts = [
        click.option("--classes", type=click.IntRange(min=1),
                     help="Classes of every [yolo]/[region] head (and filters= of the conv "
                          "feeding it)."),
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
        click.option("--save-cfg", type=click.Path(dir_okay=False),
                     help="Write the (rewritten) cfg here."),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


REWRITES = ("classes", "width", "height", "channels", "width_scale", "batch")


def load_network(path, strict=False, save_cfg=None, **options):
    """Parse, rewrite, infer shapes, report unused options; optionally save the cfg."""
    net = shapes.network(path, **{k: options.get(k) for k in REWRITES})
    cfg = net.cfg
    unused = cfgmod.unused_options(cfg)
    if strict and unused:
        raise unused[0].as_error()
    for p in [str(u) for u in unused] + net.warnings:
        click.echo(f"warning: {p}", err=True)
    if save_cfg:
        cfgmod.save(cfg, save_cfg)
        click.echo(f"wrote {save_cfg}", err=True)
    return net


def _check_cutoff(net, cutoff):
    if cutoff is not None and not 1 <= cutoff <= len(net.layers):
        raise click.BadParameter(f"{cutoff} is outside 1..{len(net.layers)}",
                                 param_hint="--cutoff")


def _layer_json(l):
    return {"index": l.index, "type": l.type, "filters": l.filters, "size": l.size,
            "stride": l.stride, "input": list(l.input), "output": list(l.output),
            "bflops": round(l.bflops, 6), "params": l.params, "weights": l.weights}


@main.command()
@click.argument("cfg", required=False, type=click.Path(dir_okay=False), default=DEFAULT_CFG)
@click.option("--cutoff", type=int, help="Count only layers < N (darknet's partial/-cutoff).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--weights", type=click.Path(dir_okay=False),
              help="Check a .weights file against the cfg: header, sizes, first misfit layer.")
@rewrite_options
def summary(cfg, cutoff, as_json, weights, **rw):
    """Print the layer table and totals of CFG, computed from the cfg alone (no torch).

    \b
    Examples:
      darkcfg summary                               # the bundled yolo_ref.cfg
      darkcfg summary cfgs/yolov3.cfg --width 608 --height 608
      darkcfg summary cfgs/darknet53.cfg --cutoff 75 --width-scale 0.25
      darkcfg summary cfgs/yolov3.cfg --weights weights/yolov3.weights
    """
    net = load_network(cfg, **rw)
    _check_cutoff(net, cutoff)
    totals = net.totals(cutoff)
    report = None
    if weights:
        from . import weights as wmod
        report = wmod.check(net, weights, cutoff, allow_trailing=cutoff is not None)
    if as_json:
        out = {"layers": [_layer_json(l) for l in net.layers[:cutoff]], "total": totals}
        if report:
            out["weights_file"] = report
        click.echo(json.dumps(out, indent=1))
        return
    click.echo(shapes.format_table(net, cutoff))
    click.echo(f"layers: {totals['layers']}   params: {totals['params']:,}   "
               f"weights: {totals['weights']:,} floats ({totals['weights_bytes']:,} bytes "
               f"with the 20-byte header)   BFLOPs: {totals['bflops']:.3f}")
    if report:
        h = report["header"]
        click.echo(f"{weights}: version {h['major']}.{h['minor']}.{h['revision']}, seen "
                   f"{h['seen']:,}; {report['file_bytes']:,} bytes, {report['file_floats']:,} "
                   f"floats; the cfg needs {report['expected_floats']:,} - OK")


FORMATS = (".weights", ".pt", ".safetensors")


def _ext(path):
    for e in FORMATS:
        if path.endswith(e):
            return e
    if path.endswith(".74") or ".conv." in os.path.basename(path):   # darknet53.conv.74 & co
        return ".weights"
    return os.path.splitext(path)[1] or "(none)"


def _same_file(a, b):
    return os.path.exists(b) and os.path.exists(a) and os.path.samefile(a, b)


def _read_arrays(src, cfg, weights_cfg, cutoff, progress):
    """(network, header, {key: array}) of a .weights or .safetensors file, without torch."""
    from . import weights as W
    if _ext(src) == ".safetensors":
        cfg_text, header, arrays = W.read_safetensors(src)
        return shapes.infer(cfgmod.parse(cfg_text, src + ":cfg")), header, arrays
    base = shapes.network(cfg)
    return (base,) + W.read_for(src, base, weights_cfg, cutoff, progress)


@main.command()
@click.argument("src", type=click.Path(exists=True, dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@click.option("--cfg", type=click.Path(dir_okay=False),
              help="The model's cfg (default: the bundled yolo_ref.cfg).  For .weights -> .weights "
                   "the order of DST.")
@click.option("--weights-cfg", type=click.Path(dir_okay=False),
              help="The cfg whose layer order a .weights file follows (default: --cfg, or the "
                   "bundled yolov3.cfg when --cfg is not given).")
@click.option("--cutoff", type=click.IntRange(min=1),
              help="Only layers < N (darknet's partial; darknet53.conv.74 is --cutoff 75).")
@click.option("--force", is_flag=True, help="Overwrite DST if it exists.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def convert(src, dst, cfg, weights_cfg, cutoff, force, quiet):
    """Convert SRC to DST, chosen by extension among .weights, .pt and .safetensors (and
    .weights -> .weights between two layer orders).

    \b
    The .pt holds the cfg text, the darknet header and a state_dict; load it with
    darkcfg.load("out.pt"), or torch.load(path, weights_only=True)["state_dict"].
    The .safetensors holds the same tensors, the cfg and header in its metadata.
    Reading a .pt, or --cutoff with a .pt/.safetensors output (the layers past
    it are initialised), builds the model; everything else reads and writes the
    files directly, without importing torch.
    DST is written to a temporary file and renamed: never half-written.

    \b
    Examples:
      darkcfg convert yolov3.weights yolov3.pt          # yolo_ref.cfg, yolov3.cfg's order
      darkcfg convert yolov3.pt yolov3.weights
      darkcfg convert yolov3.weights yolov3.safetensors
      darkcfg convert tiny.weights tiny.pt --cfg cfgs/yolov3-tiny.cfg
      darkcfg convert yolov3.weights ref.weights --weights-cfg cfgs/yolov3.cfg --cfg cfgs/yolo_ref.cfg
    """
    from . import weights as W
    kinds = (_ext(src), _ext(dst))
    if kinds[0] not in FORMATS or kinds[1] not in FORMATS or kinds == (".pt", ".pt") or \
            kinds == (".safetensors", ".safetensors"):
        raise click.UsageError(f"cannot convert {kinds[0]} to {kinds[1]}: use .weights, .pt or "
                               f".safetensors")
    if _same_file(src, dst):
        raise click.UsageError("SRC and DST are the same file: inputs are never modified")
    if not force and os.path.exists(dst):
        raise DarkcfgError(f"{dst}: already exists (use --force to overwrite)")
    progress = not quiet
    if kinds[0] == ".weights" and cfg is None:
        cfg, weights_cfg = DEFAULT_CFG, weights_cfg or YOLOV3_CFG
    # A model is needed to read a .pt, and to fill the layers past --cutoff of a checkpoint.
    if kinds[0] != ".pt" and (cutoff is None or kinds[1] == ".weights"):   # torch-free
        net, header, arrays = _read_arrays(src, cfg, weights_cfg, cutoff, progress)
        if kinds[1] == ".safetensors":
            W.save_safetensors(arrays, dst, net.cfg.to_text(), header, force=force)
        elif kinds[1] == ".pt":          # every tensor is in the file: no model needed
            W.write_pt(W.state_dict_of(arrays), dst, net.cfg.to_text(), header, force, progress)
        else:
            out_net = (shapes.infer(cfgmod.load(weights_cfg))
                       if weights_cfg and kinds[0] == ".safetensors" else net)
            mapping = W.match(net, out_net, cutoff) if out_net is not net else None
            W.write_weights(arrays, dst, header, out_net, mapping,
                            cutoff if kinds[0] == ".safetensors" else None, progress, force)
        click.echo(f"wrote {dst}: {len(arrays)} tensors (version {header.major}."
                   f"{header.minor}.{header.revision}, seen {header.seen:,})")
        return
    from . import model as M
    if kinds[0] == ".weights":
        model, report = M.load_weights(src, cfg, weights_cfg=weights_cfg, cutoff=cutoff,
                                       progress=progress)
    else:
        model, report = M.load_weights(src)
    for i, why in report.skipped:
        click.echo(f"warning: layer {i} not loaded: {why}", err=True)
    if kinds[1] == ".pt":
        W.save_pt(model, dst, report.header, force=force)
    elif kinds[1] == ".safetensors":
        arrays = W.arrays_of(model, counters=False)
        W.save_safetensors(arrays, dst, model.cfg_text, report.header, force=force)
    else:
        file_net = shapes.network(weights_cfg, width=model.net.width, height=model.net.height,
                                  channels=model.net.channels) if weights_cfg else None
        W.save_darknet(model, dst, report.header, file_net, cutoff=cutoff, progress=progress,
                       force=force)
    h = report.header
    click.echo(f"wrote {dst}: {report.loaded} layers with weights from {src} (version "
               f"{h.major}.{h.minor}.{h.revision}, seen {h.seen:,})")


@main.command()
@click.argument("cfg", type=click.Path(dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--force", is_flag=True, help="Overwrite DST if it exists.")
@rewrite_options
def init(cfg, dst, seed, force, **rw):
    """Write the weights of a freshly initialised CFG network to DST (.weights or .pt):
    synthetic weights to try the whole pipeline without downloading anything.

    \b
    Example:
      darkcfg init cfgs/yolov3.cfg weights/random.weights --seed 1
    """
    import torch
    from . import model as M
    from . import weights as W
    if _ext(dst) not in (".weights", ".pt"):
        raise click.UsageError(f"DST must end in .weights or .pt, got {dst}")
    net = load_network(cfg, **rw)
    torch.manual_seed(seed)
    model = M.build_model(net)
    if _ext(dst) == ".pt":
        W.save_pt(model, dst, force=force)
    else:
        W.save_darknet(model, dst, force=force)
    click.echo(f"wrote {dst}: {net.totals()['weights']:,} floats, seed {seed}")


@main.command()
@click.argument("cfg", required=False, type=click.Path(dir_okay=False), default=DEFAULT_CFG)
@click.option("--weights", type=click.Path(exists=True, dir_okay=False),
              help="darknet .weights to load (rewritten heads that no longer fit stay "
                   "initialised, and are reported).")
@click.option("--weights-cfg", type=click.Path(dir_okay=False),
              help="The cfg whose layer order --weights follows (default: CFG).")
@click.option("--cutoff", type=click.IntRange(min=1), help="Load layers < N only.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Save the model as .pt.")
@click.option("--force", is_flag=True, help="Overwrite --output if it exists.")
@rewrite_options
def build(cfg, weights, weights_cfg, cutoff, output, force, **rw):
    """Build CFG as a PyTorch model, run one forward pass on a zero input and print the heads'
    shapes and the totals.

    \b
    Examples:
      darkcfg build                                     # the bundled yolo_ref.cfg
      darkcfg build cfgs/yolov3.cfg --classes 3 --width 320 --height 320 --save-cfg my.cfg
      darkcfg build cfgs/yolo_ref.cfg --weights yolov3.weights --weights-cfg cfgs/yolov3.cfg -o m.pt
    """
    import time
    import torch
    from . import model as M
    from . import weights as W
    if output and _ext(output) != ".pt":
        raise click.UsageError(f"--output must end in .pt, got {output}")
    if output and not force and os.path.exists(output):
        raise DarkcfgError(f"{output}: already exists (use --force to overwrite)")
    net = load_network(cfg, **rw)
    header = None
    if weights:
        rewrites = {k: rw.get(k) for k in REWRITES}
        model, report = M.load_weights(weights, cfg, weights_cfg=weights_cfg, cutoff=cutoff,
                                       **rewrites)
        header = report.header
        for i, why in report.skipped:
            click.echo(f"warning: layer {i} not loaded: {why}", err=True)
    else:
        model = M.build_model(net)
    c = net.channels or 1
    x = torch.zeros(1, c, net.height or 1, net.width or 1)
    t = time.perf_counter()
    with torch.no_grad():
        outs = model(x)
    dt = time.perf_counter() - t
    name = os.path.basename(cfg)
    click.echo(f"{name}: {net.width} x {net.height} x {net.channels} input, one forward "
               f"pass in {dt * 1000:.0f} ms")
    head_ids = [l.index for l in net.heads] or [len(net.layers) - 1]
    for i, o in zip(head_ids, outs):
        l = net.layers[i]
        click.echo(f"  layer {i:3d} [{l.section.header}] input {tuple(o.shape)}")
    t = net.totals()
    click.echo(f"layers: {t['layers']}   params: {t['params']:,}   weights: {t['weights']:,} "
               f"floats   BFLOPs: {t['bflops']:.3f}")
    if output:
        W.save_pt(model, output, header, force=force)
        click.echo(f"wrote {output}")


@main.command()
@click.argument("labels", type=click.Path(exists=True))
@click.option("--num", type=click.IntRange(min=1), default=9, show_default=True,
              help="Number of anchors.")
@click.option("--width", type=click.IntRange(min=1), help="Network input width in pixels "
              "(default: the --write-cfg cfg's, else 416).")
@click.option("--height", type=click.IntRange(min=1), help="Network input height in pixels.")
@click.option("--seed", type=int, default=0, show_default=True, help="k-means++ seed.")
@click.option("--write-cfg", type=click.Path(exists=True, dir_okay=False),
              help="Put anchors=, num= and mask= into this cfg's [yolo] sections (in place, "
                   "atomically, comments kept; filters= of the feeding convs follow).")
def anchors(labels, num, width, height, seed, write_cfg):
    """k-means anchors (distance 1 - IoU, as darknet's calc_anchors) from LABELS: a folder of
    YOLO .txt labels (class cx cy w h, normalized) or a file listing label or image files.

    \b
    Prints the anchors small to large, the average IoU of each box with its best anchor, and
    the best possible recall at IoU 0.5.  Deterministic for a seed.

    \b
    Example:
      darkcfg anchors data/labels --num 9 --width 416 --height 416 --write-cfg my.cfg
    """
    import numpy as np
    from . import anchors as A
    cfg = cfgmod.load(write_cfg) if write_cfg else None
    if cfg is not None:
        net = shapes.infer(cfg)
        width, height = width or net.width, height or net.height
    width, height = width or 416, height or 416
    wh = A.read_labels(labels) * np.array([width, height])
    res = A.kmeans(wh, num, seed)
    click.echo(f"{len(wh):,} boxes, {num} anchors at {width} x {height}, seed {seed} "
               f"({res.iterations} iterations)")
    click.echo("anchors = " + ", ".join(f"{w:.0f},{h:.0f}" for w, h in res.anchors))
    click.echo(f"average IoU: {res.avg_iou * 100:.2f}%   best possible recall at IoU 0.5: "
               f"{res.recall50 * 100:.2f}%")
    if cfg is not None:
        cfgmod.save(A.write_cfg(cfg, res.anchors), write_cfg)
        click.echo(f"wrote anchors into {write_cfg}")


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--weights", required=True, type=click.Path(exists=True, dir_okay=False),
              help="darknet .weights (with --cfg) or a darkcfg .pt.")
@click.option("--cfg", type=click.Path(dir_okay=False),
              help="The network's cfg (default: bundled yolo_ref.cfg with weights in the bundled "
                   "yolov3.cfg's order; not needed for a .pt).")
@click.option("--weights-cfg", type=click.Path(dir_okay=False),
              help="The cfg whose layer order --weights follows (default: --cfg).")
@click.option("--names", type=click.Path(exists=True, dir_okay=False),
              help="Class names, one per line (darknet's coco.names).")
@click.option("--thresh", type=click.FloatRange(0, 1), default=0.25, show_default=True,
              help="Keep class j when objectness * p(j) exceeds this.")
@click.option("--nms", "nms_thresh", type=click.FloatRange(0, 1), default=0.45, show_default=True,
              help="NMS IoU threshold (per class).")
@click.option("-o", "--output", type=click.Path(file_okay=False),
              help="Write each image with its boxes drawn into this folder.")
def detect(images, weights, cfg, weights_cfg, names, thresh, nms_thresh, output):
    """Detect objects in IMAGES: letterbox to the network's size (as darknet), run, decode,
    NMS; print one line per detection (class, score, box x1 y1 x2 y2 in image pixels).

    \b
    Example:
      darkcfg detect dog.jpg --cfg cfgs/yolov3.cfg --weights yolov3.weights --names coco.names -o out/
    """
    from . import detect as D
    from . import model as M
    if _ext(weights) == ".pt":
        model = M.load(weights)
    else:
        if cfg is None:
            cfg, weights_cfg = DEFAULT_CFG, weights_cfg or YOLOV3_CFG
        model = M.load(weights, cfg, weights_cfg=weights_cfg)
    labels = D.read_names(names) if names else None
    if output:
        os.makedirs(output, exist_ok=True)
    for path in images:
        dets, img = D.detect_image(model, path, thresh, nms_thresh)
        click.echo(f"{path}: {len(dets)} detections ({img.size[0]} x {img.size[1]})")
        for d in dets:
            name = labels[d.cls] if labels and d.cls < len(labels) else f"class {d.cls}"
            x1, y1, x2, y2 = d.box
            click.echo(f"  {name}: {d.score * 100:.1f}%  {x1:.0f} {y1:.0f} {x2:.0f} {y2:.0f}")
        if output:
            dst = os.path.join(output, os.path.basename(path))
            if _same_file(path, dst):
                raise DarkcfgError(f"{dst}: would overwrite the input image")
            D.draw(img, dets, labels, dst)


@main.command()
@click.argument("cfg", type=click.Path(dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@click.option("--weights", type=click.Path(exists=True, dir_okay=False),
              help="darknet .weights or darkcfg .pt (default: a fresh initialisation).")
@click.option("--weights-cfg", type=click.Path(dir_okay=False),
              help="The cfg whose layer order --weights follows (default: CFG).")
@click.option("--width", type=click.IntRange(min=1), help="Input width (default: the cfg's).")
@click.option("--height", type=click.IntRange(min=1), help="Input height.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Fixed batch size.")
@click.option("--dynamic-batch", is_flag=True, help="Make the batch dimension dynamic.")
@click.option("--decode/--no-decode", default=False, show_default=True,
              help="Output boxes (x1 y1 x2 y2, input pixels) and scores (obj * class) ready for "
                   "NMS instead of the raw head tensors.")
@click.option("--opset", type=click.IntRange(min=11), default=17, show_default=True)
@click.option("--force", is_flag=True, help="Overwrite DST if it exists.")
def export(cfg, dst, weights, weights_cfg, width, height, batch, dynamic_batch, decode, opset,
           force):
    """Export CFG (with --weights) to ONNX at DST.

    \b
    Examples:
      darkcfg export cfgs/yolov3-tiny.cfg tiny.onnx --weights yolov3-tiny.weights
      darkcfg export cfgs/yolov3.cfg v3.onnx --weights yolov3.weights --decode --dynamic-batch
    """
    from . import export as E
    from . import model as M
    if not force and os.path.exists(dst):
        raise DarkcfgError(f"{dst}: already exists (use --force to overwrite)")
    if weights and _ext(weights) == ".pt":
        if width or height:
            raise click.UsageError("a .pt carries its cfg: --width/--height do not apply")
        model = M.load(weights)
    elif weights:
        model = M.load(weights, cfg, weights_cfg=weights_cfg, width=width, height=height)
    else:
        model = M.build_model(load_network(cfg, width=width, height=height))
    names = E.export_onnx(model, dst, batch, dynamic_batch, decode, opset, force=force)
    click.echo(f"wrote {dst}: outputs {', '.join(names)}")

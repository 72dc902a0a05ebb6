"""cfg and weights files: summary, convert, init, build.
"""
from __future__ import annotations

import json

import click

from ..config import cfg as cfgmod
from .. import outputs as io
from ..config import shapes
from .common import (DEFAULT_CFG, DTYPE_CHOICES, FORCE, FORMATS, IN_FILE, OUT_FILE, YOLOV3_CFG,
                     _assumed, _bflops, _check_cutoff, _checkpoint_net, _device, _ext,
                     _is_checkpoint, _layer_json, _report_skipped, _rewrites, _warn_unused,
                     check_int8, int8_model, int8_options, load_network, open_model,
                     rewrite_options)


# ----- summary --------------------------------------------------------------------------------

@click.command(short_help="Layer table, params, weights-file size, BFLOPs (no torch).")
@click.argument("cfg", required=False, type=IN_FILE, default=DEFAULT_CFG)
@click.option("--cutoff", type=int, help="Count only layers < N (darknet's partial/-cutoff).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--weights", type=IN_FILE,
              help="Check a weights file against the cfg: a .weights file's header, size and "
                   "values (finite, variances >= 0), or a .pt/.safetensors checkpoint's tensors.")
@FORCE
@rewrite_options
def summary(cfg, cutoff, as_json, weights, force, **rw):
    """Print the layer table and totals of CFG, computed from the cfg alone (no torch).

    \b
    Examples:
      darkcfg summary                               # the bundled yolo_ref.cfg
      darkcfg summary cfgs/yolov3.cfg --width 608 --height 608
      darkcfg summary cfgs/darknet53.cfg --cutoff 75 --width-scale 0.25
      darkcfg summary cfgs/yolov3.cfg --weights weights/yolov3.weights
    """
    io.check_outputs([rw.get("save_cfg")], [cfg, weights], force)
    net = load_network(cfg, **rw)
    _check_cutoff(net, cutoff)
    totals = net.totals(cutoff)
    report = _check_weights(net, weights, cutoff) if weights else None
    if as_json:
        out = {"layers": [_layer_json(l) for l in net.layers[:cutoff]], "total": totals}
        if report:
            out["weights_file"] = report
        click.echo(json.dumps(out, indent=1))
        return
    click.echo(shapes.format_table(net, cutoff))
    click.echo(f"layers: {totals['layers']}   params: {totals['params']:,}   "
               f"weights: {totals['weights']:,} floats ({totals['weights_bytes']:,} bytes "
               f"with the 20-byte header)   BFLOPs: {_bflops(totals)}")
    if report:
        h = report["header"]
        what = (f"{report['file_bytes']:,} bytes, {report['file_floats']:,} floats; the cfg "
                f"needs {report['expected_floats']:,}" if "file_floats" in report else
                f"a darkcfg checkpoint, {report['tensors']:,} tensors fit the cfg")
        click.echo(f"{weights}: version {h['major']}.{h['minor']}.{h['revision']}, seen "
                   f"{h['seen']:,}; {what} - OK")


def _check_weights(net, path, cutoff) -> dict:
    from ..files import weights as W
    if _is_checkpoint(path):
        ck = W.read_checkpoint(path)
        n = W.check_arrays(net, ck.arrays, path, cutoff)
        return dict(header=ck.header.as_dict(), format=_ext(path)[1:], tensors=n)
    report = W.check(net, path, cutoff, allow_trailing=cutoff is not None)
    report.update(W.check_values(net, path, cutoff))
    return report


# ----- convert --------------------------------------------------------------------------------

@click.command(short_help="Convert weights: .weights <-> .pt <-> .safetensors.")
@click.argument("src", type=IN_FILE)
@click.argument("dst", type=OUT_FILE)
@click.option("--cfg", type=IN_FILE,
              help="The model's cfg (default: the bundled yolo_ref.cfg; a .pt/.safetensors "
                   "carries its own).  For .weights -> .weights the order of DST.")
@click.option("--weights-cfg", type=IN_FILE,
              help="The cfg whose layer order a .weights file follows: SRC's, or DST's when "
                   "writing .weights (default: --cfg, or the bundled yolov3.cfg when --cfg is "
                   "not given; a checkpoint remembers its source's order).")
@click.option("--cutoff", type=click.IntRange(min=1),
              help="Only layers < N (darknet's partial; darknet53.conv.74 is --cutoff 75).")
@FORCE
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def convert(src, dst, cfg, weights_cfg, cutoff, force, quiet):
    """Convert weights between .weights, .pt and .safetensors (by extension).

    Also .weights -> .weights between two layer orders.  The .pt holds the cfg text, the
    darknet header and a state_dict; load it with darkcfg.load("out.pt"), or
    torch.load(path, weights_only=True)["state_dict"].  The .safetensors holds the same
    tensors, the cfg and header in its metadata.  Both remember the layer order of the
    .weights they came from, so converting back gives the same bytes.  Only --cutoff with
    a .pt/.safetensors output builds the model (the layers past it are initialised);
    everything else reads and writes the files directly.  DST is written to a temporary
    file and renamed: never half-written.

    \b
    Examples:
      darkcfg convert yolov3.weights yolov3.pt          # yolo_ref.cfg, yolov3.cfg's order
      darkcfg convert yolov3.pt yolov3.weights          # back in yolov3.cfg's order
      darkcfg convert yolov3.weights yolov3.safetensors
      darkcfg convert tiny.weights tiny.pt --cfg cfgs/yolov3-tiny.cfg
      darkcfg convert d53.weights darknet53.conv.74 --cfg cfgs/darknet53.cfg --cutoff 75
    """
    kinds = (_ext(src), _ext(dst))
    if kinds[0] not in FORMATS or kinds[1] not in FORMATS or kinds == (".pt", ".pt") or \
            kinds == (".safetensors", ".safetensors"):
        raise click.UsageError(f"cannot convert {kinds[0]} to {kinds[1]}: use .weights, .pt or "
                               f".safetensors")
    io.check_outputs([dst], [src, cfg, weights_cfg], force)
    if kinds[0] == ".weights":
        _convert_weights(src, dst, cfg, weights_cfg, cutoff, not quiet)
    else:
        _convert_checkpoint(src, dst, cfg, weights_cfg, cutoff, not quiet)


def _wrote(dst, arrays, src, header, extra="", cutoff=None):
    """``wrote DST: 52 layers, 260 tensors ...``; with a cutoff the layers it kept and how many
    of them carry weights: ``layers 0-14 (9 with weights)``."""
    layers = len({k.split(".")[1] for k in arrays})
    tensors = sum(1 for k in arrays if not k.endswith("num_batches_tracked"))
    kept = f"{layers} layers" if cutoff is None else \
        f"layers 0-{cutoff - 1} ({layers} with weights)"
    click.echo(f"wrote {dst}: {kept}, {tensors} tensors from {src}{extra} (version "
               f"{header.major}.{header.minor}.{header.revision}, seen {header.seen:,})")


def _convert_weights(src, dst, cfg, weights_cfg, cutoff, progress):
    """.weights -> .weights / .pt / .safetensors."""
    from ..files import weights as W
    assumed = cfg is None
    if assumed:
        cfg, weights_cfg = DEFAULT_CFG, weights_cfg or YOLOV3_CFG
    net = shapes.network(cfg)
    file_net = shapes.network(weights_cfg, width=net.width, height=net.height,
                              channels=net.channels) if weights_cfg else net
    _check_cutoff(file_net, cutoff)
    order = file_net.cfg.to_text() if file_net is not net else None
    ext = _ext(dst)
    if cutoff is not None and ext != ".weights":     # a model fills the layers past the cutoff
        from ..nn import model as M
        model, report = _assumed(lambda: M.load_weights(src, cfg, weights_cfg=weights_cfg,
                                                        cutoff=cutoff, progress=progress),
                                 assumed)
        arrays = W.arrays_of(model, counters=False)
        if ext == ".pt":
            W.save_pt(model, dst, report.header, weights_cfg=order)
        else:
            W.save_safetensors(arrays, dst, model.cfg_text, report.header, weights_cfg=order,
                               files=model.cfg_files)
        _wrote(dst, arrays, src, report.header, f" (layers < {cutoff}; the rest initialised, "
                                                f"{len(model.net.layers)} layers in all)")
        return
    header, arrays = _assumed(lambda: W.read_for(src, net, weights_cfg, cutoff, progress),
                              assumed)
    files = shapes.attached_files(net)      # a softmax tree found beside the cfg travels too
    if ext == ".safetensors":
        W.save_safetensors(arrays, dst, net.cfg.to_text(), header, weights_cfg=order,
                           files=files)
    elif ext == ".pt":          # every tensor is in the file: no model needed
        W.write_pt(W.state_dict_of(arrays), dst, net.cfg.to_text(), header,
                   progress=progress, weights_cfg=order, files=files)
    else:                       # DST in cfg's order (the arrays are keyed by it)
        out_cutoff = None if cutoff is None else 1 + max(int(k.split(".")[1]) for k in arrays)
        W.write_weights(arrays, dst, header, net, None, out_cutoff, progress)
    _wrote(dst, arrays, src, header, cutoff=cutoff)


def _convert_checkpoint(src, dst, cfg, weights_cfg, cutoff, progress):
    """.pt / .safetensors -> .weights / .safetensors / .pt, without building a model."""
    from ..files import weights as W
    ck = W.read_checkpoint(src)
    net = _checkpoint_net(ck, src, cfg)
    W.check_arrays(net, ck.arrays, src)
    ext = _ext(dst)
    if ext != ".weights":
        if cutoff is not None:
            raise click.UsageError("--cutoff with a .pt/.safetensors SRC applies to a .weights "
                                   "DST only")
        if ext == ".pt":
            W.write_pt(W.state_dict_of(ck.arrays), dst, ck.cfg_text, ck.header,
                       progress=progress, weights_cfg=ck.weights_cfg, files=ck.files)
        else:
            W.save_safetensors(ck.arrays, dst, ck.cfg_text, ck.header,
                               weights_cfg=ck.weights_cfg, files=ck.files)
        _wrote(dst, ck.arrays, src, ck.header)
        return
    order = weights_cfg or ck.weights_cfg
    file_net = shapes.network(order, width=net.width, height=net.height,
                              channels=net.channels) if order else net
    _check_cutoff(file_net, cutoff)
    mapping = W.match(net, file_net, cutoff) if file_net is not net else None
    W.write_weights(ck.arrays, dst, ck.header, file_net, mapping, cutoff, progress)
    written = {k for e in W.walk(file_net, cutoff)
               for k in [f"layers.{(mapping or {}).get(e.layer.index, e.layer.index)}."
                         f"{e.tensor.key}"]}
    _wrote(dst, {k: None for k in written}, src, ck.header,
           f" in {file_net.cfg.name}'s layer order" if file_net is not net else "", cutoff)


# ----- init -----------------------------------------------------------------------------------

@click.command(short_help="Synthetic weights of a cfg's layout (no download).")
@click.argument("cfg", type=IN_FILE)
@click.argument("dst", type=OUT_FILE)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@FORCE
@rewrite_options
def init(cfg, dst, seed, force, **rw):
    """Write synthetic weights of CFG (freshly initialised) to DST (.weights or .pt).

    Synthetic weights of the right layout, to try the whole pipeline without downloading
    anything.

    \b
    Example:
      darkcfg init cfgs/yolov3.cfg weights/random.weights --seed 1
    """
    if _ext(dst) not in (".weights", ".pt"):
        raise click.UsageError(f"DST must end in .weights or .pt, got {dst}")
    io.check_outputs([dst, rw.get("save_cfg")], [cfg], force)
    import torch
    from ..nn import model as M
    from ..files import weights as W
    net = load_network(cfg, **rw)
    torch.manual_seed(seed)
    model = M.build_model(net)
    if _ext(dst) == ".pt":
        W.save_pt(model, dst)
    else:
        W.save_darknet(model, dst)
    click.echo(f"wrote {dst}: {net.totals()['weights']:,} floats, seed {seed}")


@click.command(short_help="Build the PyTorch model, run it once, print heads.")
@click.argument("cfg", required=False, type=IN_FILE)
@click.option("--weights", type=IN_FILE,
              help="Weights to load: darknet .weights, or a .pt/.safetensors (which carries its "
                   "cfg; rewritten heads that no longer fit stay initialised, and are reported).")
@click.option("--weights-cfg", type=IN_FILE,
              help="The cfg whose layer order a .weights file follows (default: CFG; with no "
                   "CFG the bundled yolov3.cfg).")
@click.option("--cutoff", type=click.IntRange(min=1), help="Load layers < N only.")
@click.option("-o", "--output", type=OUT_FILE,
              help="Save the model as .pt (float32), or with --dtype int8 as .pt2 (quantised: "
                   "detect and map load it without calibrating).")
@click.option("--dtype", type=click.Choice(DTYPE_CHOICES), default="fp32",
              show_default=True, help="Run the forward pass in this type (batch norms folded "
              "first); auto: bf16 on a CPU with AMX or AVX512_BF16 or a CUDA GPU of "
              "capability 8.0+; int8: the trunk quantised on --calib images (CPU; needs "
              "darkcfg[int8]).")
@int8_options
@click.option("--device", default="cpu", show_default=True, callback=_device,
              help="cpu, cuda, cuda:N or mps.")
@FORCE
@rewrite_options
def build(cfg, weights, weights_cfg, cutoff, output, dtype, calib, calib_count, device, force,
          **rw):
    """Build CFG as a PyTorch model and run it once on a zero input.

    Prints the heads' shapes and the totals.  With no CFG: the bundled yolo_ref.cfg (or the
    cfg inside a .pt/.safetensors --weights).

    \b
    Examples:
      darkcfg build                                     # the bundled yolo_ref.cfg
      darkcfg build cfgs/yolov3.cfg --classes 3 --width 320 --height 320 --save-cfg my.cfg
      darkcfg build --weights yolov3.weights -o m.pt    # yolo_ref.cfg, yolov3.cfg's order
    """
    want = ".pt2" if dtype == "int8" else ".pt"
    if output and _ext(output) != want:
        raise click.UsageError(f"--output must end in {want}"
                               f"{' with --dtype int8' if dtype == 'int8' else ''}, got {output}")
    if weights and _ext(weights) == ".pt2":
        raise click.UsageError(f"{weights}: an int8 .pt2 is built already (detect and map "
                               f"load it)")
    check_int8(dtype, calib, weights, device)
    io.check_outputs([output, rw.get("save_cfg")], [cfg, weights, weights_cfg], force)
    import time
    import torch
    from ..files import weights as W
    model, header = _build_model(cfg, weights, weights_cfg, cutoff, rw)
    if output and dtype != "int8":        # the .pt keeps float32 weights: save before any cast
        W.save_pt(model, output, header)
    from ..nn import model as M
    if dtype == "int8":
        model = int8_model(model, calib, calib_count)
        if output:
            model.save(output)
    else:
        model = M.for_inference(model, dtype, device)
    net = model.net
    c = net.channels or 1
    x = torch.zeros(1, c, net.height or 1, net.width or 1).to(**model.placement())
    if dtype == "int8":
        model(x)                          # compiles (10-90 s): time the next call
    t = time.perf_counter()
    with torch.no_grad():
        outs = model(x)
    dt = time.perf_counter() - t
    where = "" if (dtype, device) == ("fp32", "cpu") else \
        " (int8 on cpu, compiled)" if dtype == "int8" else f" ({M.describe_dtype(dtype, device)})"
    click.echo(f"{net.cfg.name}: {net.width} x {net.height} x {net.channels} input, one forward "
               f"pass in {dt * 1000:.0f} ms{where}")
    head_ids = [l.index for l in net.heads] or [len(net.layers) - 1]
    for i, o in zip(head_ids, outs):
        l = net.layers[i]
        click.echo(f"  layer {i:3d} [{l.section.header}] input {tuple(o.shape)}")
    t = net.totals()
    click.echo(f"layers: {t['layers']}   params: {t['params']:,}   weights: {t['weights']:,} "
               f"floats   BFLOPs: {_bflops(t)}")
    if output:
        click.echo(f"wrote {output}")


def _build_model(cfg, weights, weights_cfg, cutoff, rw):
    """(model, darknet header or None) for build: CFG's network, or the one inside a
    checkpoint, with --weights loaded; warnings printed, --save-cfg written."""
    from ..nn import model as M
    if not weights:
        return M.build_model(load_network(cfg or DEFAULT_CFG, **rw)), None
    if not _is_checkpoint(weights):
        load_network(cfg or DEFAULT_CFG, **rw)          # warnings and --save-cfg
    model, report, _ = open_model(weights, cfg, weights_cfg, cutoff, **_rewrites(rw))
    if _is_checkpoint(weights):
        _warn_unused(model.net, rw.get("strict"))
        if rw.get("save_cfg"):
            cfgmod.save(model.net.cfg, rw["save_cfg"])
    _report_skipped(report)
    return model, report.header

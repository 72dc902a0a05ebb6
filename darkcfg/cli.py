"""The `darkcfg` command line.  The only module that imports click.

Exit codes, one rule for every command: 0 success; 1 a problem with an input file's contents
(one line ``Error: ...``, no traceback) or with writing an output; 2 bad arguments, a path on
the command line that does not exist among them (click's usage errors); 141 the reader of the
output went away (``| head``), silently, as for any tool stopped by SIGPIPE.

Every command that writes follows one rule (darkcfg.io.check_outputs, checked before any work):
an output is never an input, and an existing output is replaced only with --force.
"""
from __future__ import annotations

import json
import os
import sys

import click

from . import cfg as cfgmod
from . import io
from . import shapes
from .errors import DarkcfgError, WeightsError

HERE = os.path.dirname(os.path.abspath(__file__))


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


class _Group(click.Group):
    """Turns every DarkcfgError (and OS errors on outputs) into ``Error: ...`` and exit 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DarkcfgError as e:
            raise click.ClickException(str(e)) from None
        except BrokenPipeError:
            _quiet_stdout()
            sys.exit(141)
        except OSError as e:
            raise click.ClickException(f"{e.filename or ''}: {e.strerror or e}") from None


def _quiet_stdout():
    """After EPIPE: point stdout at /dev/null so Python's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


@click.group(cls=_Group, context_settings=dict(help_option_names=["-h", "--help"]))
@click.version_option(package_name="darkcfg")
def main():
    """darknet .cfg files as exact PyTorch models.

    With no CFG, commands use the bundled cfgs/yolo_ref.cfg (and read a .weights file in
    the bundled cfgs/yolov3.cfg's layer order, darknet's yolov3.weights).  Every command
    has --help.  Exit codes: 0 success, 1 a bad input file (one line Error: ...),
    2 bad arguments (a missing input path among them), 141 the reader of the output
    went away (| head).  Outputs never replace an input, and replace an existing file
    only with --force.
    """


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


# ----- summary --------------------------------------------------------------------------------

@main.command(short_help="Layer table, params, weights-file size, BFLOPs (no torch).")
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
    from . import weights as W
    if _is_checkpoint(path):
        ck = W.read_checkpoint(path)
        n = W.check_arrays(net, ck.arrays, path, cutoff)
        return dict(header=ck.header.as_dict(), format=_ext(path)[1:], tensors=n)
    report = W.check(net, path, cutoff, allow_trailing=cutoff is not None)
    report.update(W.check_values(net, path, cutoff))
    return report


# ----- convert --------------------------------------------------------------------------------

@main.command(short_help="Convert weights: .weights <-> .pt <-> .safetensors.")
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


def _wrote(dst, arrays, src, header, extra=""):
    layers = len({k.split(".")[1] for k in arrays})
    tensors = sum(1 for k in arrays if not k.endswith("num_batches_tracked"))
    click.echo(f"wrote {dst}: {layers} layers, {tensors} tensors from {src}{extra} (version "
               f"{header.major}.{header.minor}.{header.revision}, seen {header.seen:,})")


def _convert_weights(src, dst, cfg, weights_cfg, cutoff, progress):
    """.weights -> .weights / .pt / .safetensors."""
    from . import weights as W
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
        from . import model as M
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
    _wrote(dst, arrays, src, header)


def _convert_checkpoint(src, dst, cfg, weights_cfg, cutoff, progress):
    """.pt / .safetensors -> .weights / .safetensors / .pt, without building a model."""
    from . import weights as W
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
           f" in {file_net.cfg.name}'s layer order" if file_net is not net else "")


def _checkpoint_net(ck, path, cfg=None, **rewrites):
    """The network stored in a checkpoint; a --cfg given beside it must be that network (its
    input size then applies)."""
    from . import weights as W
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
    from . import weights as W
    sa, sb = W.signatures(a), W.signatures(b)
    return next((i for i, (x, y) in enumerate(zip(sa, sb)) if x != y), min(len(sa), len(sb)))


# ----- init -----------------------------------------------------------------------------------

@main.command(short_help="Synthetic weights of a cfg's layout (no download).")
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
    from . import model as M
    from . import weights as W
    net = load_network(cfg, **rw)
    torch.manual_seed(seed)
    model = M.build_model(net)
    if _ext(dst) == ".pt":
        W.save_pt(model, dst)
    else:
        W.save_darknet(model, dst)
    click.echo(f"wrote {dst}: {net.totals()['weights']:,} floats, seed {seed}")


# ----- loading a model for build / detect / export ----------------------------------------------

def open_model(weights, cfg=None, weights_cfg=None, cutoff=None, progress=False, **rewrites):
    """(model, report, order) from a weights file and an optional cfg.

    A .pt/.safetensors carries its cfg: a --cfg beside it must be the same network, rewrites
    apply to it.  A .weights file needs its cfg; without one the bundled yolo_ref.cfg is used
    with the file in yolov3.cfg's order (and an error about the file says so).  ``order``: the
    text of the cfg whose layer order the source followed, when it is not the model's own."""
    from . import model as M
    from . import weights as W
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
    from . import model as M
    if value is None:
        return value
    try:
        M.device_of(value)
    except DarkcfgError as e:
        raise click.BadParameter(str(e)) from None
    return value


@main.command(short_help="Build the PyTorch model, run it once, print heads.")
@click.argument("cfg", required=False, type=IN_FILE)
@click.option("--weights", type=IN_FILE,
              help="Weights to load: darknet .weights, or a .pt/.safetensors (which carries its "
                   "cfg; rewritten heads that no longer fit stay initialised, and are reported).")
@click.option("--weights-cfg", type=IN_FILE,
              help="The cfg whose layer order a .weights file follows (default: CFG; with no "
                   "CFG the bundled yolov3.cfg).")
@click.option("--cutoff", type=click.IntRange(min=1), help="Load layers < N only.")
@click.option("-o", "--output", type=OUT_FILE, help="Save the model as .pt (float32).")
@click.option("--dtype", type=click.Choice(["fp32", "bf16", "fp16", "auto"]), default="fp32",
              show_default=True, help="Run the forward pass in this type (batch norms folded "
              "first); auto: bf16 on a CPU with AMX or AVX512_BF16 or a CUDA GPU of "
              "capability 8.0+.")
@click.option("--device", default="cpu", show_default=True, callback=_device,
              help="cpu, cuda, cuda:N or mps.")
@FORCE
@rewrite_options
def build(cfg, weights, weights_cfg, cutoff, output, dtype, device, force, **rw):
    """Build CFG as a PyTorch model and run it once on a zero input.

    Prints the heads' shapes and the totals.  With no CFG: the bundled yolo_ref.cfg (or the
    cfg inside a .pt/.safetensors --weights).

    \b
    Examples:
      darkcfg build                                     # the bundled yolo_ref.cfg
      darkcfg build cfgs/yolov3.cfg --classes 3 --width 320 --height 320 --save-cfg my.cfg
      darkcfg build --weights yolov3.weights -o m.pt    # yolo_ref.cfg, yolov3.cfg's order
    """
    if output and _ext(output) != ".pt":
        raise click.UsageError(f"--output must end in .pt, got {output}")
    io.check_outputs([output, rw.get("save_cfg")], [cfg, weights, weights_cfg], force)
    import time
    import torch
    from . import weights as W
    model, header = _build_model(cfg, weights, weights_cfg, cutoff, rw)
    if output:                            # the .pt keeps float32 weights: save before any cast
        W.save_pt(model, output, header)
    from . import model as M
    model = M.for_inference(model, dtype, device)
    net = model.net
    c = net.channels or 1
    x = torch.zeros(1, c, net.height or 1, net.width or 1).to(**model.placement())
    t = time.perf_counter()
    with torch.no_grad():
        outs = model(x)
    dt = time.perf_counter() - t
    where = "" if (dtype, device) == ("fp32", "cpu") else f" ({M.describe_dtype(dtype, device)})"
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
    from . import model as M
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


# ----- anchors --------------------------------------------------------------------------------

@main.command(short_help="k-means anchors (1 - IoU) from YOLO labels.")
@click.argument("labels", type=click.Path(exists=True))
@click.option("--num", type=click.IntRange(min=1), default=9, show_default=True,
              help="Number of anchors.")
@click.option("--width", type=click.IntRange(min=1), help="Network input width in pixels "
              "(default: the --write-cfg cfg's, else 416).")
@click.option("--height", type=click.IntRange(min=1), help="Network input height in pixels.")
@click.option("--seed", type=int, default=0, show_default=True, help="k-means++ seed.")
@click.option("--write-cfg", type=IN_FILE,
              help="Put anchors=, num= and mask= into this cfg's [yolo] sections (in place, "
                   "atomically, comments, mode and symlinks kept; filters= of the feeding "
                   "convs follow).")
def anchors(labels, num, width, height, seed, write_cfg):
    """k-means anchors (1 - IoU, as darknet's calc_anchors) from YOLO labels.

    LABELS: a folder of YOLO .txt labels (class cx cy w h, normalized) or a file listing
    label or image files (relative paths from the current folder, as darknet reads them).
    Prints the anchors small to large, the average IoU of each box with its best anchor,
    and the best possible recall at IoU 0.5.  Deterministic for a seed.

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


# ----- detect ---------------------------------------------------------------------------------

@main.command(short_help="Detect objects (or keypoints) in images; print and draw them.")
@click.argument("images", nargs=-1, required=True, type=IN_FILE)
@click.option("--weights", required=True, type=IN_FILE,
              help="darknet .weights (with --cfg), or a .pt/.safetensors (which carries its cfg).")
@click.option("--cfg", type=IN_FILE,
              help="The network's cfg (default: the bundled yolo_ref.cfg with weights in the "
                   "bundled yolov3.cfg's order; not needed for a .pt/.safetensors).")
@click.option("--weights-cfg", type=IN_FILE,
              help="The cfg whose layer order --weights follows (default: --cfg).")
@click.option("--names", type=IN_FILE, help="Class names, one per line (darknet's coco.names).")
@click.option("--thresh", type=click.FloatRange(0, 1), default=0.25, show_default=True,
              help="Keep class j when objectness * p(j) exceeds this ([keypoint]: when "
                   "centerness * p(j) at a 3x3 peak does).")
@click.option("--nms", "nms_thresh", type=click.FloatRange(0, 1), default=0.45, show_default=True,
              help="NMS IoU threshold (per class; boxes only).")
@click.option("--max-det", type=click.IntRange(min=1),
              help="Print and draw at most N detections per image (the highest scores).")
@click.option("--letter-box", is_flag=True,
              help="Letterbox the images (aspect kept, grey border), as darknet's detector test "
                   "-letter_box; default: stretch them to the network's size, unless the cfg's "
                   "[net] letter_box=1.")
@click.option("-o", "--output", type=click.Path(file_okay=False),
              help="Write each image with its boxes (or points) drawn into this folder (an "
                   "existing drawing needs --force).")
@click.option("--dtype", type=click.Choice(["fp32", "bf16", "fp16", "auto"]), default="fp32",
              show_default=True, help="Compute in this type (batch norms folded first); auto: "
              "bf16 on a CPU with AMX or AVX512_BF16 or a CUDA GPU of capability 8.0+.")
@click.option("--device", default="cpu", show_default=True, callback=_device,
              help="cpu, cuda, cuda:N or mps.")
@FORCE
def detect(images, weights, cfg, weights_cfg, names, thresh, nms_thresh, max_det, letter_box,
           output, dtype, device, force):
    """Detect objects in IMAGES with a [yolo] or [region] network, or keypoints with a
    [keypoint] one.

    Resize to the network's size (darknet's resize, as `map`: stretched, or letterboxed with
    --letter-box or the cfg's [net] letter_box=1), run, decode, NMS; print one line per
    detection: class, score, box x1 y1 x2 y2 in image pixels (clipped to the image).
    A [keypoint] network prints (and draws) points: class, score, x y in image pixels.

    \b
    Example:
      darkcfg detect dog.jpg --cfg cfgs/yolov3.cfg --weights yolov3.weights --names coco.names -o out/
      darkcfg detect a.jpg --cfg cfgs/yolo_kp.cfg --weights kp.weights --names obj.names -o out/
    """
    from . import detect as D
    from . import model as M
    drawn = _drawings(images, output)
    io.check_outputs(drawn, list(images) + [weights, cfg, weights_cfg, names], force)
    model, _, _ = open_model(weights, cfg, weights_cfg)
    points = D.head_kind(model) == "points"
    if points and click.get_current_context().get_parameter_source("nms_thresh").name != "DEFAULT":
        click.echo("warning: --nms is for boxes; keypoints of one class closer than half the "
                   "coarsest stride merge instead", err=True)
    model = M.for_inference(model, dtype, device)
    if dtype == "auto":
        click.echo(f"dtype: {M.describe_dtype(dtype, device)}", err=True)
    labels = D.read_names(names) if names else None
    letter_box = True if letter_box else None                 # None: the cfg's letter_box
    for path, dst in zip(images, drawn or [None] * len(images)):
        if points:
            _detect_points(model, path, dst, output, thresh, max_det, labels, letter_box)
            continue
        dets, img = D.detect_image(model, path, thresh, nms_thresh, max_det, letter_box)
        click.echo(f"{path}: {len(dets)} detections ({img.size[0]} x {img.size[1]})")
        for d in dets:
            name = labels[d.cls] if labels and d.cls < len(labels) else f"class {d.cls}"
            x1, y1, x2, y2 = d.box
            click.echo(f"  {name}: {d.score * 100:.1f}%  {x1:.0f} {y1:.0f} {x2:.0f} {y2:.0f}")
        if dst:
            os.makedirs(output, exist_ok=True)
            D.draw(img, dets, labels, dst)


def _detect_points(model, path, dst, output, thresh, max_det, labels, letter_box) -> None:
    """detect on a [keypoint] network: print the image's points, draw them into ``dst``."""
    from . import keypoint as K
    kps, img = K.detect_keypoints(model, path, thresh, max_det=max_det, letter_box=letter_box)
    click.echo(f"{path}: {len(kps)} points ({img.size[0]} x {img.size[1]})")
    for k in kps:
        name = labels[k.cls] if labels and k.cls < len(labels) else f"class {k.cls}"
        click.echo(f"  {name}: {k.score * 100:.1f}%  {k.x:.1f} {k.y:.1f}")
    if dst:
        os.makedirs(output, exist_ok=True)
        K.draw_points(img, kps, labels, dst)


def _drawings(images, output) -> list:
    """The drawn image of each input in ``output``; two inputs may not share one."""
    if not output:
        return []
    if os.path.exists(output) and not os.path.isdir(output):
        raise DarkcfgError(f"{output}: -o must be a folder, this is a file")
    seen = {}
    for path in images:
        dst = os.path.join(output, os.path.basename(path))
        if dst in seen:
            raise DarkcfgError(f"{seen[dst]} and {path} would both be drawn to {dst}: give "
                               f"images with different names")
        seen[dst] = path
    return list(seen)


# ----- export ---------------------------------------------------------------------------------

@main.command(short_help="Export to ONNX: raw heads or decoded boxes.")
@click.argument("paths", nargs=-1, required=True, metavar="[CFG] DST")
@click.option("--weights", type=IN_FILE,
              help="darknet .weights, or a .pt/.safetensors which carries its cfg (then give no "
                   "CFG); default: a fresh initialisation.")
@click.option("--weights-cfg", type=IN_FILE,
              help="The cfg whose layer order --weights follows (default: CFG).")
@click.option("--width", type=click.IntRange(min=1), help="Input width (default: the cfg's).")
@click.option("--height", type=click.IntRange(min=1), help="Input height.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Fixed batch size.")
@click.option("--dynamic-batch", is_flag=True, help="Make the batch dimension dynamic.")
@click.option("--decode/--no-decode", default=False, show_default=True,
              help="Output boxes (x1 y1 x2 y2, input pixels) and scores (obj * class) ready for "
                   "NMS instead of the raw head tensors.")
@click.option("--opset", type=click.IntRange(min=11), default=17, show_default=True,
              help="ONNX opset version of the exported graph.")
@FORCE
def export(paths, weights, weights_cfg, width, height, batch, dynamic_batch, decode, opset,
           force):
    """Export a network (CFG, or the cfg inside a .pt/.safetensors) to ONNX at DST.

    Needs the onnx package: pip install "darkcfg[onnx]".

    \b
    Examples:
      darkcfg export cfgs/yolov3-tiny.cfg tiny.onnx --weights yolov3-tiny.weights
      darkcfg export cfgs/yolov3.cfg v3.onnx --weights yolov3.weights --decode --dynamic-batch
      darkcfg export tiny.onnx --weights tiny.pt
    """
    if len(paths) > 2:
        raise click.UsageError(f"expected [CFG] DST, got {len(paths)} paths")
    cfg, dst = (None, paths[0]) if len(paths) == 1 else paths
    if cfg is not None and not os.path.isfile(cfg):
        raise click.BadParameter(f"'{cfg}' is not a file", param_hint="CFG")
    io.check_outputs([dst], [cfg, weights, weights_cfg], force)
    from . import export as E
    from . import model as M
    if weights:
        model, report, _ = open_model(weights, cfg, weights_cfg, width=width, height=height)
        _report_skipped(report)
    else:
        model = M.build_model(load_network(cfg or DEFAULT_CFG, width=width, height=height))
    names = E.export_onnx(model, dst, batch, dynamic_batch, decode, opset, force=True)
    click.echo(f"wrote {dst}: outputs {', '.join(names)}")


# ----- data / map / train: training on your own data set ------------------------------------

@main.group(short_help="Check a data set (.data file, lists, images, labels).")
def data():
    """Data-set commands: darknet's .data file, its image lists and YOLO label files."""


@data.command("check", short_help="Counts, box sizes and every bad label (file:line).")
@click.argument("data_file", metavar="DATA", type=IN_FILE)
@click.option("--cfg", type=IN_FILE,
              help="The training cfg: classes from its heads, box sizes in its network pixels.")
@click.option("--no-decode", is_flag=True, help="Do not decode every image (faster).")
@click.option("--limit", type=click.IntRange(min=1),
              help="Print at most N error lines (the count is always printed).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def data_check(data_file, cfg, no_decode, limit, as_json):
    """Check the data set of DATA (darknet's .data: classes, train, valid, names) as training
    does before its first step: counts per split (images, boxes, negatives), boxes per class,
    box sizes in network pixels (with --cfg), images that cannot be decoded, and every bad
    label line as file:line: what is wrong.  Exit 1 when there is an error.

    \b
    Example:
      darkcfg data check obj.data --cfg cfgs/yolov3-tiny.cfg
    """
    from . import data as D
    rep = D.check(data_file, cfg, decode=not no_decode)
    if as_json:
        click.echo(json.dumps(rep.as_dict(), indent=1))
    else:
        text = rep.format(limit=limit)
        click.echo(text, nl=not text.endswith("\n"))
    if not rep.ok:
        sys.exit(1)


@data.command("demo", short_help="Write a generated 2-class data set and a small cfg.")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--train", "n_train", type=click.IntRange(min=1), default=256, show_default=True,
              help="Training images.")
@click.option("--valid", "n_valid", type=click.IntRange(min=1), default=32, show_default=True,
              help="Validation images.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
def data_demo(folder, n_train, n_valid, seed):
    """Write a generated data set in darknet's layout into FOLDER - obj.data, train.txt,
    valid.txt, obj.names, PNG images with YOLO labels beside them (bright rectangles and
    discs on dark noise, the labels exact by construction) - and shapes.cfg, yolov3-tiny at
    96x96 with a 300-iteration schedule, so the whole pipeline runs without a download.

    \b
    Example:
      darkcfg data demo shapes
      darkcfg train shapes/obj.data shapes/shapes.cfg
      darkcfg map shapes/obj.data shapes/shapes.cfg shapes/backup/shapes_final.weights
    """
    from . import demo
    out = demo.write(folder, os.path.join(BUNDLED, "yolov3-tiny.cfg"), n_train, n_valid, seed)
    click.echo(f"wrote {out['data']} ({n_train} train, {n_valid} valid images) and {out['cfg']}")
    click.echo(f"next: darkcfg train {out['data']} {out['cfg']}")


@main.command("map", short_help="darknet's detector map (mAP@IoU), COCO metrics, plots.")
@click.argument("data_file", metavar="DATA", type=IN_FILE)
@click.argument("cfg", type=IN_FILE)
@click.argument("weights", type=IN_FILE)
@click.option("--thresh", type=click.FloatRange(0, 1), default=0.25, show_default=True,
              help="Confidence threshold of the precision/recall/F1/TP/FP lines (never the mAP).")
@click.option("--iou-thresh", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="A detection matches a ground-truth box when IoU > this (strictly).")
@click.option("--points", type=click.IntRange(min=0), default=0, show_default=True,
              help="0: area under the curve (VOC 2010+, darknet's default); 11: VOC 2007; "
                   "101: COCO-style points.")
@click.option("--letter-box", is_flag=True,
              help="Letterbox the images (the cfg's [net] letter_box=1 always does).")
@click.option("--coco", is_flag=True,
              help="Also COCO's mAP@[.5:.95], AP50, AP75, AP small/medium/large, AR (pycocotools).")
@click.option("--save-detections", type=OUT_FILE, help="Write the detections as COCO json.")
@click.option("--plot", type=click.Path(file_okay=False),
              help="Write precision-recall curves and a confusion matrix (PNGs) to this folder.")
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images per forward pass.")
@click.option("--radius", type=click.FloatRange(min=0, min_open=True),
              help="[keypoint] cfgs: a point matches a gt of its class within this many input "
                   "pixels (default: one stride of the finest head).")
@click.option("--device", callback=_device,
              help="torch device: cpu, cuda, cuda:N, mps (default: cpu).")
@click.option("--dtype", type=click.Choice(["fp32", "bf16", "fp16", "auto"]), default="fp32",
              show_default=True,
              help="Inference precision (auto: bf16 where measured faster on the device; the "
                   "README gives bf16's mAP difference).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@FORCE
def map_(data_file, cfg, weights, thresh, iou_thresh, points, letter_box, coco,
         save_detections, plot, batch, radius, device, dtype, as_json, quiet, force):
    """mAP of WEIGHTS (.weights, .pt or .safetensors) for CFG on the valid list of DATA, as
    `darknet detector map DATA CFG WEIGHTS` computes and prints it: detection threshold .005,
    NMS .45 of the cfg's nms_kind, a line per class (ap, TP, FP), precision / recall / F1 and
    TP / FP / FN / average IoU at --thresh, and mAP@--iou-thresh.

    \b
    Examples:
      darkcfg map obj.data cfgs/yolov3-tiny.cfg backup/yolov3-tiny_final.weights
      darkcfg map obj.data my.cfg best.pt --coco --plot plots/ --points 101
    """
    from . import validate as V
    if dtype == "auto":
        from . import model as M
        click.echo(f"dtype: {M.describe_dtype(dtype, device)}", err=True)
    text = V.main_map(data_file, cfg, weights, thresh=thresh, iou_thresh=iou_thresh,
                      points=points, letter_box=letter_box, as_json=as_json, coco=coco,
                      save_detections=save_detections, plot=plot, batch=batch, device=device,
                      dtype=dtype, **({"radius": radius} if radius is not None else {}),
                      progress=not quiet and not as_json, force=force)
    click.echo(text, nl=not text.endswith("\n"))


@main.command(short_help="Train on a data set as darknet detector train does.")
@click.argument("data_file", metavar="DATA", type=IN_FILE)
@click.argument("cfg", type=IN_FILE)
@click.argument("weights", required=False, type=IN_FILE)
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder for the weights, state and results (default: the .data's backup=).")
@click.option("--clear", is_flag=True,
              help="Start the schedule at iteration 0 whatever the weights' seen (darknet -clear).")
@click.option("--resume", is_flag=True,
              help="Continue exactly from <cfg>_last.state in the output folder.")
@click.option("--force", is_flag=True,
              help="Start over in a folder that holds an earlier run of this cfg (its "
                   "<cfg>_*.weights and state are replaced); refused without it.")
@click.option("--freeze", type=click.IntRange(min=1), help="Keep layers < N fixed.")
@click.option("--classes", type=click.IntRange(min=1),
              help="Rewrite every head to N classes first (when the cfg's differ from the .data's).")
@click.option("--init", type=click.Choice(["torch", "darknet"]), default="torch",
              show_default=True,
              help="How layers that WEIGHTS does not fill start: PyTorch's default init, or "
                   "darknet's sqrt(2/fan)*U(-1,1), which learned 18 mAP points less in 1000 "
                   "iterations on a small set (docs: training).")
@click.option("--assign", type=click.Choice(["best_of_all", "per_scale"]), default="best_of_all",
              show_default=True,
              help="Target assignment: darknet's best of all anchors (+ iou_thresh), or one "
                   "positive per scale (the design notes').")
@click.option("--map", "with_map", is_flag=True,
              help="Validation mAP@0.5 on the .data's valid list during training; keeps "
                   "<cfg>_best.weights.")
@click.option("--map-every", type=click.IntRange(min=1),
              help="Iterations between mAP evaluations (default darknet's: 4 epochs, >= 100).")
@click.option("--max-batches", type=click.IntRange(min=1),
              help="Stop after N iterations instead of the cfg's max_batches.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the init, the sampling and the augmentation.")
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True,
              help="Data-loader worker processes (the batches do not depend on it).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or mps.")
@click.option("--sync-bn", is_flag=True,
              help="Under torchrun: batch norms see the global forward pass, not the rank's share.")
@click.option("--dist-timeout", type=click.FloatRange(min=1), default=900, show_default=True,
              help="Under torchrun: seconds a rank waits for the others before it stops with "
                   "an error (a dead or stalled rank; rank 0's --map must fit in it).")
@click.option("--amp", type=click.Choice(["bf16", "fp16"]),
              help="Mixed precision (torch.autocast; fp16 with a grad scaler).")
@click.option("--channels-last", is_flag=True, help="channels_last memory format.")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the training forward.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def train(data_file, cfg, weights, out, clear, resume, force, freeze, classes, init, assign,
          with_map, map_every, max_batches, seed, workers, device, sync_bn, dist_timeout, amp,
          channels_last, compile_, quiet):
    """Train CFG on DATA, starting from WEIGHTS (a full .weights/.pt, a partial file such as
    darknet53.conv.74, or none: PyTorch's initialisation, --init), the way
    `darknet detector train DATA CFG WEIGHTS` does: the cfg's [net] batch, subdivisions,
    learning-rate policy, burn_in, momentum, decay and max_batches; darknet's augmentation from
    the cfg; <cfg>_last/_<N>/_final(/_best).weights in darknet's cadence, results.csv and
    results.png.  Ctrl-C saves <cfg>_last and the state (resume with --resume) and exits 130.

    \b
    Examples:
      darkcfg train obj.data cfgs/yolov3-tiny.cfg --classes 2
      darkcfg train obj.data cfgs/yolo_ref.cfg darknet53.conv.74 --map
      darkcfg train obj.data cfgs/yolo_ref.cfg --resume
      torchrun --nproc_per_node 2 -m darkcfg train obj.data cfgs/yolov3-tiny.cfg
    """
    from . import train as T
    try:
        r = T.train(data_file, cfg, weights, out=out, clear=clear, resume=resume, freeze=freeze,
                    classes=classes, assign=assign, map=with_map, map_every=map_every, seed=seed,
                    workers=workers, device=device, quiet=quiet, max_batches=max_batches,
                    sync_bn=sync_bn, amp=amp, channels_last=channels_last, compile=compile_,
                    dist_timeout=dist_timeout, force=force, init=init)
    except KeyboardInterrupt:
        if quiet:      # otherwise train() has said where it saved, once
            click.echo("interrupted: <cfg>_last.weights and the state are saved; continue "
                       "with --resume", err=True)
        sys.exit(130)
    done = r.files.get("final") or r.files.get("last")
    click.echo(f"trained {r.iteration} iterations in {r.seconds:.0f} s"
               + (f", {r.skipped} non-finite steps skipped" if r.skipped else "")
               + (f", best mAP@0.5 {r.best_map * 100:.2f} %" if r.best_map is not None else "")
               + (f": {done}" if done else ""))

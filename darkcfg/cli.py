"""The `darkcfg` command line.  The only module that imports click.

Exit codes: 0 success; 1 a problem with an input file (one line ``Error: ...``, no traceback);
2 bad arguments (click's usage errors).
"""
from __future__ import annotations

import functools
import json
import os
import sys

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


def load_network(path, classes=None, width=None, height=None, channels=None, width_scale=None,
                 batch=None, strict=False, save_cfg=None, **_):
    """Parse, rewrite, infer shapes, report unused options; optionally save the cfg."""
    cfg = cfgmod.load(path)
    if any(v is not None for v in (classes, width, height, channels, width_scale, batch)):
        cfg = cfgmod.rewrite(cfg, classes=classes, width=width, height=height,
                             channels=channels, width_scale=width_scale, batch=batch)
    net = shapes.infer(cfg)
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


def run():   # pragma: no cover - console entry used by python -m darkcfg
    main(prog_name="darkcfg")


if __name__ == "__main__":   # pragma: no cover
    sys.exit(run())

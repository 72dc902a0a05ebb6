"""Data: anchors, data check, data demo.
"""
from __future__ import annotations

import json
import os
import sys

import click

from ..config import cfg as cfgmod
from ..config import shapes
from .common import BUNDLED, IN_FILE


# ----- anchors --------------------------------------------------------------------------------

@click.command(short_help="k-means anchors (1 - IoU) from YOLO labels.")
@click.argument("labels", type=click.Path(exists=True))
@click.option("--num", type=click.IntRange(min=1), default=9, show_default=True,
              help="Number of anchors.")
@click.option("--width", type=click.IntRange(min=1), help="Network input width in pixels "
              "(default: the --cfg or --write-cfg cfg's, else 416).")
@click.option("--height", type=click.IntRange(min=1), help="Network input height in pixels.")
@click.option("--seed", type=int, default=0, show_default=True, help="k-means++ seed.")
@click.option("--cfg", type=IN_FILE,
              help="The training cfg: its [net] width and height size the boxes (nothing is "
                   "written to it; --write-cfg writes).")
@click.option("--write-cfg", type=IN_FILE,
              help="Put anchors=, num= and mask= into this cfg's [yolo] sections (in place, "
                   "atomically, comments, mode and symlinks kept; filters= of the feeding "
                   "convs follow).")
def anchors(labels, num, width, height, seed, cfg, write_cfg):
    """k-means anchors (1 - IoU, as darknet's calc_anchors) from YOLO labels.

    LABELS: a .data file (its train= list, as darknet's detector calc_anchors reads it), a
    folder of YOLO .txt labels (class cx cy w h, normalized) or a file listing label or
    image files (relative paths from the current folder, as darknet reads them).
    Prints the anchors small to large, the average IoU of each box with its best anchor,
    and the best possible recall at IoU 0.5.  Deterministic for a seed.

    \b
    Example:
      darkcfg anchors data/obj.data --num 6 --cfg my-yolov3-tiny.cfg
      darkcfg anchors data/labels --num 9 --width 416 --height 416 --write-cfg my.cfg
    """
    import numpy as np
    from ..objective import anchors as A
    sized = cfgmod.load(write_cfg or cfg) if (write_cfg or cfg) else None
    if sized is not None:
        net = shapes.infer(sized)
        width, height = width or net.width, height or net.height
    width, height = width or 416, height or 416
    wh = A.read_labels(_train_list(labels)) * np.array([width, height])
    res = A.kmeans(wh, num, seed)
    click.echo(f"{len(wh):,} boxes, {num} anchors at {width} x {height}, seed {seed} "
               f"({res.iterations} iterations)")
    click.echo("anchors = " + ", ".join(f"{w:.0f},{h:.0f}" for w, h in res.anchors))
    click.echo(f"average IoU: {res.avg_iou * 100:.2f}%   best possible recall at IoU 0.5: "
               f"{res.recall50 * 100:.2f}%")
    if write_cfg:
        cfgmod.save(A.write_cfg(sized, res.anchors), write_cfg)
        click.echo(f"wrote anchors into {write_cfg}")


def _train_list(labels: str) -> str:
    """LABELS as anchors reads it: a .data gives its train= list (darknet's calc_anchors)."""
    if not labels.lower().endswith(".data"):
        return labels
    from ..dataset import data as D
    from ..errors import DarkcfgError
    d = D.read_data(labels)
    if d.train is None:
        raise DarkcfgError(f"{labels}: no train= list to take the boxes from")
    return d.resolve("train")


# ----- data / map / train: training on your own data set ------------------------------------

@click.group(short_help="Check a data set (.data file, lists, images, labels).")
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
    box sizes in network pixels (with --cfg), images that cannot be decoded, every bad
    label line as file:line: what is wrong, and (with --cfg) the cfg's training options that
    train warns of (burn_in >= max_batches, steps beyond it, ...).  Exit 1 when there is an
    error.

    \b
    Example:
      darkcfg data check obj.data --cfg cfgs/yolov3-tiny.cfg
    """
    from ..dataset import data as D
    rep = D.check(data_file, cfg, decode=not no_decode)
    if cfg:                        # what train warns of before its first step
        from ..training.lint import lint
        rep.warnings += lint(cfg)
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
    from ..dataset import demo
    out = demo.write(folder, os.path.join(BUNDLED, "yolov3-tiny.cfg"), n_train, n_valid, seed)
    click.echo(f"wrote {out['data']} ({n_train} train, {n_valid} valid images) and {out['cfg']}")
    click.echo(f"next: darkcfg train {out['data']} {out['cfg']}")

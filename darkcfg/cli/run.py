"""Training and evaluation: map, train.
"""
from __future__ import annotations

import sys

import click

from ..dataset import CROP_ASPECT, CROP_ASPECTS, MIN_VISIBLE
from .common import DTYPE_CHOICES, FORCE, IN_FILE, OUT_FILE, _device, check_int8, int8_options


class ResumeMode(click.ParamType):
    """--resume alone (True), or --resume auto."""
    name = "auto"

    def convert(self, value, param, ctx):
        if value is True or value == "auto":
            return value
        self.fail(f"{value!r}: --resume takes no value, or 'auto' (give DATA and CFG before "
                  f"it)", param, ctx)


@click.command("map", short_help="darknet's detector map (mAP@IoU), COCO metrics, plots.")
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
@click.option("--dtype", type=click.Choice(DTYPE_CHOICES), default="fp32",
              show_default=True,
              help="Inference precision (auto: bf16 where measured faster on the device; int8: "
                   "the trunk quantised on --calib images, CPU, needs darkcfg[int8]; "
                   "docs/precision.md gives their mAP differences).")
@int8_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@FORCE
def map_(data_file, cfg, weights, thresh, iou_thresh, points, letter_box, coco,
         save_detections, plot, batch, radius, device, dtype, calib, calib_count, as_json,
         quiet, force):
    """mAP of WEIGHTS (.weights, .pt or .safetensors) for CFG on the valid list of DATA, as
    `darknet detector map DATA CFG WEIGHTS` computes and prints it: detection threshold .005,
    NMS .45 of the cfg's nms_kind, a line per class (ap, TP, FP), precision / recall / F1 and
    TP / FP / FN / average IoU at --thresh, and mAP@--iou-thresh.

    \b
    Examples:
      darkcfg map obj.data cfgs/yolov3-tiny.cfg backup/yolov3-tiny_final.weights
      darkcfg map obj.data my.cfg best.pt --coco --plot plots/ --points 101
    """
    from ..evaluation import validate as V
    check_int8(dtype, calib, weights, device)
    if dtype == "int8" and calib:                 # what detect and build say too
        from ..infer.int8 import calibration_paths
        count = len(calibration_paths(calib, calib_count))
        click.echo(f"int8: calibrating on {count} images of {calib}", err=True)
    if dtype == "auto":
        from ..nn import model as M
        click.echo(f"dtype: {M.describe_dtype(dtype, device)}", err=True)
    text = V.main_map(data_file, cfg, weights, thresh=thresh, iou_thresh=iou_thresh,
                      points=points, letter_box=letter_box, as_json=as_json, coco=coco,
                      save_detections=save_detections, plot=plot, batch=batch, device=device,
                      dtype=dtype, calib=calib, calib_count=calib_count,
                      **({"radius": radius} if radius is not None else {}),
                      progress=not quiet and not as_json, force=force)
    click.echo(text, nl=not text.endswith("\n"))


@click.command(short_help="Train on a data set as darknet detector train does.")
@click.argument("data_file", metavar="DATA", type=IN_FILE)
@click.argument("cfg", type=IN_FILE)
@click.argument("weights", required=False, type=IN_FILE)
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder for the weights, state and results (default: the .data's backup=).")
@click.option("--clear", is_flag=True,
              help="Start the schedule at iteration 0 whatever the weights' seen (darknet -clear).")
@click.option("--resume", type=ResumeMode(), is_flag=False, flag_value=True, default=None,
              help="Continue exactly from <cfg>_last.state in the output folder; --resume auto: "
                   "continue where that state exists, else start as without it (scripts, "
                   "torchrun restarts - which resume by themselves).")
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
@click.option("--assign", type=click.Choice(["best_of_all", "per_scale"]), default="per_scale",
              show_default=True,
              help="Target assignment: one positive per scale (the design notes'; learned 72.9 % "
                   "mAP@0.5 against 56.6 % on issue #22's set), or darknet's best of all "
                   "anchors (+ iou_thresh).")
@click.option("--multiscale", type=click.Choice(["centred", "darknet"]), default="centred",
              show_default=True,
              help="[yolo] random=1's sizes: 1/1.4 to 1.4 of the cfg's size, the last 100 "
                   "iterations at the cfg's size; or darknet's formula, one resize_step larger "
                   "(at 128x128: 128..224, never smaller), the last 100 at the largest (6 mAP "
                   "points less on issue #22's recipe - docs: training).")
@click.option("--min-visible", type=click.FloatRange(0, 1), default=MIN_VISIBLE,
              show_default=True,
              help="The jitter crop drops a box with less than this share of its area inside "
                   "(0: darknet's rule, every box of a pixel or more; the corners of objects it "
                   "keeps cost 7.7 mAP points on issue #22's recipe - docs: decisions).")
@click.option("--crop-aspect", type=click.Choice(CROP_ASPECTS), default=CROP_ASPECT,
              show_default=True,
              help="The jitter crop keeps the image's aspect ratio, or moves each edge on its own "
                   "as darknet does (objects stretched up to 4x at jitter=.3: 3.5-3.9 mAP points "
                   "less on issue #22's recipe without clutter - docs: decisions).")
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
@click.option("--lr-scale", type=click.FloatRange(min=0, min_open=True), default=1.0,
              show_default=True,
              help="Multiply the cfg's learning_rate (darknet's -gpus N multiplies it by N; "
                   "darkcfg's DDP does not - docs: training).")
@click.option("--amp", type=click.Choice(["bf16", "fp16"]),
              help="Mixed precision (torch.autocast; fp16 with a grad scaler).")
@click.option("--channels-last", is_flag=True, help="channels_last memory format.")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the training forward.")
@click.option("--log-every", type=click.FloatRange(min=0), default=20, show_default=True,
              metavar="SECONDS",
              help="Without a terminal (a log file, nohup): a progress line at least this "
                   "often, and at every save and mAP evaluation.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar, no progress lines.")
def train(data_file, cfg, weights, out, clear, resume, force, freeze, classes, init, assign,
          multiscale, min_visible, crop_aspect, with_map, map_every, max_batches, seed, workers,
          device, sync_bn, dist_timeout, lr_scale, amp, channels_last, compile_, log_every,
          quiet):
    """Train CFG on DATA, starting from WEIGHTS (a full .weights/.pt, a partial file such as
    darknet53.conv.74, or none: PyTorch's initialisation, --init), the way
    `darknet detector train DATA CFG WEIGHTS` does: the cfg's [net] batch, subdivisions,
    learning-rate policy, burn_in, momentum, decay and max_batches; darknet's augmentation from
    the cfg; <cfg>_last/_<N>/_final(/_best).weights in darknet's cadence, results.csv and
    results.png.  Ctrl-C, SIGTERM or SIGHUP saves <cfg>_last and the state (resume with
    --resume) and exits 128 + the signal's number (130, 143, 129).

    \b
    Examples:
      darkcfg train obj.data cfgs/yolov3-tiny.cfg --classes 2
      darkcfg train obj.data cfgs/yolo_ref.cfg darknet53.conv.74 --map
      darkcfg train obj.data cfgs/yolo_ref.cfg --resume
      torchrun --nproc_per_node 2 -m darkcfg train obj.data cfgs/yolov3-tiny.cfg
    """
    from ..training import train as T
    try:
        r = T.train(data_file, cfg, weights, out=out, clear=clear, resume=resume or False,
                    freeze=freeze,
                    classes=classes, assign=assign, map=with_map, map_every=map_every, seed=seed,
                    workers=workers, device=device, quiet=quiet, max_batches=max_batches,
                    sync_bn=sync_bn, amp=amp, channels_last=channels_last, compile=compile_,
                    dist_timeout=dist_timeout, force=force, init=init, log_every=log_every,
                    lr_scale=lr_scale, multiscale=multiscale, min_visible=min_visible,
                    crop_aspect=crop_aspect)
    except KeyboardInterrupt as e:     # Ctrl-C, or a signals.Stopped for SIGTERM/SIGHUP
        signum = getattr(e, "signum", 2)
        if quiet:      # otherwise train() has said where it saved, once
            how = "interrupted" if signum == 2 else f"stopped by {e.name}"
            click.echo(f"{how}: <cfg>_last.weights and the state are saved; continue "
                       "with --resume", err=True)
        sys.exit(128 + signum)
    done = r.files.get("final") or r.files.get("last")
    click.echo(f"trained {r.iteration} iterations in {r.seconds:.0f} s"
               + (f", {r.skipped} non-finite steps skipped" if r.skipped else "")
               + (f", best mAP@0.5 {r.best_map * 100:.2f} %" if r.best_map is not None else "")
               + (f": {done}" if done else ""))

"""Inference: detect, export.
"""
from __future__ import annotations

import os
import sys

import click

from .. import outputs as io
from ..errors import DarkcfgError
from .common import (DEFAULT_CFG, DTYPE_CHOICES, FORCE, IN_FILE, _device, _report_skipped,
                     check_int8, int8_model, int8_options, load_network, open_model)


# ----- detect ---------------------------------------------------------------------------------

class _Input(click.ParamType):
    """An existing file or folder, or a stream URL (rtsp://, http://, ...)."""
    name = "input"

    def convert(self, value, param, ctx):
        from ..infer.sources import is_stream
        if value == "-" or is_stream(value) or os.path.exists(value):
            return value
        self.fail(f"'{value}' does not exist (and is not a stream URL)", param, ctx)


@click.command(short_help="Detect objects in images, folders, lists, videos, cameras, streams.")
@click.argument("inputs", nargs=-1, type=_Input(), metavar="INPUT...")
@click.option("--weights", required=True, type=IN_FILE,
              help="darknet .weights (with --cfg), a .pt/.safetensors (which carries its cfg), "
                   "or an int8 .pt2 (build --dtype int8 -o).")
@click.option("--cfg", type=IN_FILE,
              help="The network's cfg (default: the bundled yolo_ref.cfg with weights in the "
                   "bundled yolov3.cfg's order; not needed for a .pt/.safetensors).")
@click.option("--weights-cfg", type=IN_FILE,
              help="The cfg whose layer order --weights follows (default: --cfg).")
@click.option("--names", type=IN_FILE, help="Class names, one per line (darknet's coco.names).")
@click.option("--data", "data_file", type=IN_FILE,
              help="A darknet .data file: the class names from its names= (darknet's detector "
                   "test DATA); --names wins when both are given.")
@click.option("--camera", type=click.IntRange(min=0), multiple=True,
              help="Read camera N (OpenCV's index; darknet's -c N); may be repeated.")
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
              help="Draw the detections into this folder: each image under its name, each "
                   "video as <name>.avi (same size, fps and frame count); existing files need "
                   "--force.")
@click.option("--json", "json_file", type=click.Path(dir_okay=False),
              help="Write every image's or frame's detections to this file in darknet's "
                   "-out result.json layout.")
@click.option("--ext-output", is_flag=True,
              help="Also print each box as darknet's -ext_output does (left_x top_y width "
                   "height in pixels).")
@click.option("--save-labels", is_flag=True,
              help="Write a YOLO label file beside each image from its detections (darknet's "
                   "-save_labels; an existing label needs --force).")
@click.option("--tile", metavar="WxH",
              help="Detect on tiles of this many pixels (e.g. 416x416) cut from each image "
                   "with --tile-overlap, boxes merged by one NMS: small objects in large images.")
@click.option("--tile-overlap", type=click.FloatRange(0, 1, max_open=True), default=0.2,
              show_default=True, help="How much of a tile its neighbour covers again.")
@click.option("--reconnect", type=click.IntRange(min=0), default=3, show_default=True,
              help="Reopen a stream that drops this many times before giving it up.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Run this many images or frames (with --tile: tiles) through the network "
                   "at once; the detections are those of --batch 1 to the bit.  1 measured "
                   "fastest on a 2-core CPU (docs/detect.md); larger batches can pay on a GPU.")
@click.option("--dtype", type=click.Choice(DTYPE_CHOICES), default="fp32",
              show_default=True, help="Compute in this type (batch norms folded first); auto: "
              "bf16 on a CPU with AMX or AVX512_BF16 or a CUDA GPU of capability 8.0+; int8: "
              "the trunk quantised on --calib images (CPU; needs darkcfg[int8]).")
@int8_options
@click.option("--device", default="cpu", show_default=True, callback=_device,
              help="cpu, cuda, cuda:N or mps.")
@click.option("--compile", "compiled", is_flag=True,
              help="Compile the network first (torch.compile, weights frozen; 10-90 s once, "
                   "needs a C++ compiler): for a video or many images.  With --dtype auto on a "
                   "bf16 CPU the fastest path (docs/detect.md#speed).")
@FORCE
def detect(inputs, weights, cfg, weights_cfg, names, data_file, camera, thresh, nms_thresh,
           max_det, letter_box, output, json_file, ext_output, save_labels, tile, tile_overlap,
           reconnect, batch, dtype, calib, calib_count, device, compiled, force):
    """Detect objects in each INPUT with a [yolo] or [region] network, or keypoints with a
    [keypoint] one.

    INPUT: an image, a folder (its images and videos, recursively), a list file (.txt, one
    path a line, as darknet's valid=), a video file, or a stream URL (rtsp://, http://);
    - (or no INPUT) reads a list from stdin, as darknet's < list.txt; --camera N reads a
    camera.  An input that cannot be read is named and skipped; the
    others are done and the exit status is 1.

    Resize to the network's size (darknet's resize, as `map`: stretched, or letterboxed with
    --letter-box or the cfg's [net] letter_box=1), run, decode, NMS; print one line per
    detection: class, score, box x1 y1 x2 y2 in image pixels (clipped to the image).
    A [keypoint] network prints (and draws) points: class, score, x y in image pixels.

    \b
    Example:
      darkcfg detect dog.jpg --cfg cfgs/yolov3.cfg --weights yolov3.weights --names coco.names -o out/
      darkcfg detect a.jpg --cfg my.cfg --weights backup/my_best.weights --data obj.data
      darkcfg detect clips/ list.txt --weights my.pt --json result.json -o drawn/
      darkcfg detect a.jpg --cfg cfgs/yolo_kp.cfg --weights kp.weights --names obj.names -o out/
    """
    from ..infer import detect as D
    from ..infer import run as R
    from ..infer.tiles import parse_tile
    inputs, stdin = _stdin_list(inputs, camera)
    names = names or _data_names(data_file)
    try:
        tile = parse_tile(tile) if tile else None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--tile") from None
    items, problems, images, drawn = _detect_plan(inputs, camera, stdin, output, json_file,
                                                  save_labels, force,
                                                  [weights, cfg, weights_cfg, names])
    for p in problems:
        click.echo(f"skipped: {p}", err=True)
    model, compiled = _detect_model(weights, cfg, weights_cfg, (dtype, calib, calib_count),
                                    device, compiled, lambda m: _check_points(
                                        D.head_kind(m) == "points", json_file, save_labels,
                                        tile, ext_output))
    labels = D.read_names(names) if names else None
    letter_box = True if letter_box else None                 # None: the cfg's letter_box
    opt = R.Options(thresh, nms_thresh, max_det, letter_box, labels, output, json_file,
                    ext_output, save_labels, force, reconnect, dict(zip(images, drawn)),
                    tile, tile_overlap, batch, compiled)
    _detect_all(model, items, problems, opt)


def _detect_model(weights, cfg, weights_cfg, precision, device, compiled, check) -> tuple:
    """(the model detect runs, whether to compile it): read, ``check(model)``ed, then
    quantised (``--dtype int8 --calib``) or made ready (:func:`..infer.run.ready`: fused,
    channels-last on a CPU, in ``dtype``).  An int8 model is compiled already."""
    from ..infer import run as R
    from ..nn import model as M
    dtype, calib, calib_count = precision
    check_int8(dtype, calib, weights, device)
    quantised = dtype == "int8" or str(weights).endswith(".pt2")
    if str(weights).endswith(".pt2"):
        from ..infer import int8
        model = int8.load(weights, cfg, device=device)      # quantised already
    else:
        model, _, _ = open_model(weights, cfg, weights_cfg)
    check(model)
    if dtype == "int8" and calib:
        model = int8_model(model, calib, calib_count)
    elif not quantised:
        model = R.ready(model, dtype, device)
    if dtype == "auto":
        click.echo(f"dtype: {M.describe_dtype(dtype, device)}", err=True)
    if compiled and quantised:
        click.echo("note: --compile: an int8 model is compiled already", err=True)
        compiled = False
    if compiled:
        click.echo("compiling the network (once per batch size; 10-90 s on 2 cores)", err=True)
    return model, compiled


def _stdin_list(inputs, camera) -> tuple:
    """(inputs, the text of stdin): ``-`` reads a list of images from stdin; so does no INPUT
    at all when stdin is not a terminal (darknet's ``< list.txt``)."""
    stdin = sys.stdin             # click.get_text_stream is deprecated (removed in Click 9)
    if not inputs and not camera:
        text = "" if stdin.isatty() else stdin.read()
        if not text.strip():
            raise click.UsageError("give at least one INPUT (an IMAGE, folder, list, video or "
                                   "stream URL), --camera N, or a list on stdin (< list.txt)")
        return ("-",), text
    return inputs, stdin.read() if "-" in inputs else ""


def _detect_plan(inputs, camera, stdin, output, json_file, save_labels, force, given) -> tuple:
    """(items, problems, images, their drawings) of detect's INPUTs, every output checked
    against the inputs (and ``given``) before anything runs."""
    from ..infer import run as R
    from ..infer import sources as S
    items, problems = S.expand(inputs, camera, stdin)
    images = [i.source for i in items if i.kind == "image"]
    drawn = _drawings(images, output)
    written = drawn + ([json_file] if json_file else []) + \
        [R.video_output(i, output) for i in items if output and i.kind != "image"]
    labels_out = _labels_out(images, save_labels)
    io.check_outputs(written + labels_out, [*images, *given], force)
    return items, problems, images, drawn


def _check_points(points, json_file, save_labels, tile, ext_output) -> None:
    """A [keypoint] network has no boxes: the options made of boxes are refused, --nms
    warned about."""
    if not points:
        return
    given = [name for name, v in (("--json", json_file), ("--save-labels", save_labels),
                                  ("--tile", tile), ("--ext-output", ext_output)) if v]
    if given:
        raise click.UsageError(f"{', '.join(given)}: for boxes; this network's heads are "
                               f"[keypoint] (points)")
    if click.get_current_context().get_parameter_source("nms_thresh").name != "DEFAULT":
        click.echo("warning: --nms is for boxes; keypoints of one class closer than half the "
                   "coarsest stride merge instead", err=True)


def _detect_all(model, items, problems, opt) -> None:
    """Run every item; a bad one is named and skipped (exit 1 at the end), except that the
    problem of a single input is the error itself."""
    from ..infer import run as R
    said = []
    report = said.append if len(items) == 1 and not problems else \
        (lambda m: click.echo(f"skipped: {m}", err=True))
    bad = R.detect_all(model, items, opt, click.echo, report)
    if said:
        raise click.ClickException(said[0])
    bad += len(problems)
    if bad:
        raise click.ClickException(f"{bad} of {len(items) + len(problems)} inputs could not be "
                                   f"read (named above as 'skipped'); the rest were done")


def _labels_out(images, save_labels) -> list:
    """The label files --save-labels writes (one per image; two images may not share one)."""
    if not save_labels:
        return []
    from ..dataset.data import label_path
    return [label_path(p) for p in images]


def _data_names(data_file):
    """The names file a .data names (None without a .data); a missing one is an error."""
    if data_file is None:
        return None
    from ..dataset import data as DS
    d = DS.read_data(data_file)
    if d.names is None:
        raise DarkcfgError(f"{data_file}: no names= file to take the class names from")
    path = d.resolve("names")
    if not os.path.isfile(path):
        raise DarkcfgError(f"{d.where('names')}: names={d.names}: no such file")
    return path


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

@click.command(short_help="Export to ONNX: raw heads or decoded boxes.")
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
@click.option("--format", "fmt", type=click.Choice(["onnx", "openvino"]),
              help="ONNX, or OpenVINO IR (DST.xml and DST.bin, converted from the ONNX; "
                   "float32 weights).  Default: openvino for a DST ending in .xml, else onnx.")
@click.option("--dtype", type=click.Choice(["fp32", "int8"]), default="fp32", show_default=True,
              help="int8: an OpenVINO IR quantised by NNCF on --calib images (needs nncf).")
@int8_options
@FORCE
def export(paths, weights, weights_cfg, width, height, batch, dynamic_batch, decode, opset,
           fmt, dtype, calib, calib_count, force):
    """Export a network (CFG, or the cfg inside a .pt/.safetensors) to ONNX or OpenVINO IR at
    DST.

    Needs the onnx package: pip install "darkcfg[onnx]"; for OpenVINO IR also openvino:
    pip install "darkcfg[openvino]".

    \b
    Examples:
      darkcfg export cfgs/yolov3-tiny.cfg tiny.onnx --weights yolov3-tiny.weights
      darkcfg export cfgs/yolov3.cfg v3.onnx --weights yolov3.weights --decode --dynamic-batch
      darkcfg export tiny.onnx --weights tiny.pt
      darkcfg export cfgs/yolov3-tiny.cfg tiny.xml --format openvino --weights tiny.pt
    """
    if len(paths) > 2:
        raise click.UsageError(f"expected [CFG] DST, got {len(paths)} paths")
    cfg, dst = (None, paths[0]) if len(paths) == 1 else paths
    if cfg is not None and not os.path.isfile(cfg):
        raise click.BadParameter(f"'{cfg}' is not a file", param_hint="CFG")
    fmt = fmt or ("openvino" if dst.endswith(".xml") else "onnx")
    if fmt == "openvino" and not dst.endswith(".xml"):
        raise click.UsageError(f"--format openvino writes NAME.xml and NAME.bin: give a DST "
                               f"ending in .xml, got {dst}")
    if dtype == "int8" and (fmt != "openvino" or not calib):
        raise click.UsageError("--dtype int8 exports an OpenVINO IR (DST.xml) and needs --calib")
    if calib and dtype != "int8":
        raise click.UsageError("--calib is for --dtype int8")
    io.check_outputs([dst] + ([dst[:-4] + ".bin"] if fmt == "openvino" else []),
                     [cfg, weights, weights_cfg], force)
    from ..infer import export as E
    from ..nn import model as M
    if weights:
        model, report, _ = open_model(weights, cfg, weights_cfg, width=width, height=height)
        _report_skipped(report)
    else:
        model = M.build_model(load_network(cfg or DEFAULT_CFG, width=width, height=height))
    if fmt == "openvino":
        paths = None
        if dtype == "int8":
            from ..infer.int8 import calibration_paths
            paths = calibration_paths(calib, calib_count)
        names = E.export_openvino(model, dst, batch, dynamic_batch, decode, opset, force=True,
                                  calib=paths)
        click.echo(f"wrote {dst} and {os.path.basename(dst[:-4])}.bin: outputs "
                   f"{', '.join(names)}")
        return
    names = E.export_onnx(model, dst, batch, dynamic_batch, decode, opset, force=True)
    click.echo(f"wrote {dst}: outputs {', '.join(names)}")

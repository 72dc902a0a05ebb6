"""``darkcfg detect`` over everything it reads (:mod:`.sources`).  A reader thread decodes
each image or frame and prepares its network input while the network runs on the previous
ones; the network takes them ``--batch`` at a time (:mod:`.batching`); then, per frame, the
detections (or a [keypoint] network's points) are printed and the outputs asked for written
(:mod:`.outputs`).  A bad item is named on stderr and skipped; the run goes on and
:func:`detect_all` returns how many there were, for the exit status.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from . import batching as B
from . import detect as D
from . import outputs as O
from . import sources as S


@dataclass
class Options:
    thresh: float = 0.25
    nms: float = 0.45
    max_det: int | None = None
    letter_box: bool | None = None
    names: list | None = None
    output: str | None = None          # a folder: drawn images, drawn videos
    json: str | None = None            # darknet's -out file
    ext_output: bool = False
    save_labels: bool = False
    force: bool = False
    reconnect: int = 3
    drawn: dict = field(default_factory=dict)    # image path -> its drawing in ``output``
    tile: tuple | None = None          # (w, h): detect on tiles of this size (:mod:`.tiles`)
    tile_overlap: float = 0.2
    batch: int = 1                     # images or frames (tiles with ``tile``) per forward
    compile: bool = False              # the network through torch.compile (:class:`.Engine`)


def ready(model, dtype="fp32", device=None):
    """``model`` as detect runs it: in eval mode on ``device`` in ``dtype``
    (:func:`..nn.model.for_inference`), its batch norms folded into the convs - as darknet's
    test_detector does (fuse_conv_batchnorm); outputs move by ~1e-6 - and, on a CPU, its
    weights in channels-last (NHWC) order, which oneDNN's convolutions run fastest
    (bench/video.py: yolov3-tiny 1.3x the frames/s of the unfused NCHW model)."""
    import torch
    from ..nn import model as M
    model = M.for_inference(model, dtype, device)
    if not getattr(model, "fused", False):
        model.fuse()
    if model.placement().get("device", torch.device("cpu")).type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    return model


def detect(model, image, opt: Options, engine=None) -> list:
    """One image's or frame's detections: whole, or over tiles merged by one NMS."""
    engine = engine or B.Engine(model, opt.batch)
    if not opt.tile:
        return _boxes(engine, [_prepared(model.net, image, opt)], opt)[0]
    from .tiles import detect_tiled

    def each(crops):
        return _boxes(engine, [_prepared(model.net, c, opt) for c in crops], opt, tiled=True)
    dets = detect_tiled(each, image, opt.tile, opt.tile_overlap, opt.nms)
    return dets[:opt.max_det] if opt.max_det else dets


def _prepared(net, image, opt: Options) -> tuple:
    """(network input, the image's size inside it, the image's size)."""
    x, new = D.network_input(image, net.width, net.height, D.letter_boxed(net, opt.letter_box))
    return x, new, image.size


def _boxes(engine, prepared: list, opt: Options, tiled: bool = False) -> list:
    outs = engine.outputs([x for x, _, _ in prepared])
    return [D.boxes_of(engine.model, o, size, new, opt.thresh, opt.nms,
                       None if tiled else opt.max_det) for o, (_, new, size) in zip(outs, prepared)]


def _points(engine, prepared: list, opt: Options) -> list:
    from ..objective import keypoint as K
    outs = engine.outputs([x for x, _, _ in prepared])
    return [K.points_of(engine.model, o, size, new, opt.thresh, max_det=opt.max_det)
            for o, (_, new, size) in zip(outs, prepared)]


def skip(message: str) -> None:
    """How a bad item is named as the run goes on: ``skipped: ...`` on stderr."""
    print(f"skipped: {message}", file=sys.stderr, flush=True)


def _print(echo, where, dets, size, opt) -> None:
    echo(f"{where}: {len(dets)} detections ({size[0]} x {size[1]})")
    for d in dets:
        x1, y1, x2, y2 = d.box
        line = f"  {O._name(opt.names, d.cls) if opt.names else f'class {d.cls}'}: " \
               f"{d.score * 100:.1f}%  {x1:.0f} {y1:.0f} {x2:.0f} {y2:.0f}"
        echo(line + ("\t" + O.ext_output(d) if opt.ext_output else ""))


def video_output(item, folder: str) -> str:
    """Where ``-o`` draws a video, camera or stream: ``<stem>.avi`` (``.mp4`` for one)."""
    if item.kind == "video":
        stem, ext = os.path.splitext(os.path.basename(item.source))
        return os.path.join(folder, stem + (".mp4" if ext.lower() == ".mp4" else ".avi"))
    return os.path.join(folder, f"camera{item.source}.avi" if item.kind == "camera"
                        else "stream.avi")


class _DrawnVideo:
    """``-o``'s video of one item, opened at its first frame.  Leaving the ``with``: finished
    at the end and on a stop (Ctrl-C, a bad stream: what was drawn so far stays a playable
    video), abandoned (no file) on any other error."""

    def __init__(self, item, opt: Options):
        self.item, self.opt, self.writer = item, opt, None

    def write(self, image, fps, size) -> None:
        if self.writer is None:
            os.makedirs(self.opt.output, exist_ok=True)
            self.writer = O.VideoOut(video_output(self.item, self.opt.output), fps, size,
                                     self.opt.force)
        self.writer.write(image)

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb) -> bool:
        if self.writer is not None:
            if kind is None or issubclass(kind, (KeyboardInterrupt, SystemExit, S.Bad)):
                self.writer.finish()
            else:
                self.writer.abandon(e)
        return False


# ----- the run: read ahead, batch, show ------------------------------------------------------


@dataclass
class Ready:                # a frame read, and its network input (None when tiling)
    frame: S.Frame
    prepared: tuple | None


@dataclass
class Failed:               # an item that could not be read (or a stream that dropped)
    item: S.Item
    message: str


@dataclass
class Done:                 # the end of an item's frames
    item: S.Item


def _read(items: list, net, opt: Options):
    """What the reader thread does: every item's frames in order, each with its network input
    prepared (decoding and preparing overlap the network), then Done - or Failed."""
    for item in items:
        try:
            for frame in S.frames(item, opt.reconnect):
                yield Ready(frame, None if opt.tile else _prepared(net, frame.image, opt))
        except S.Bad as e:
            yield Failed(item, str(e))
            continue
        yield Done(item)


def _detected(engine, events, opt: Options, points: bool):
    """``events`` with each Ready frame replaced by (frame, its detections or points), in
    order: frames gathered up to ``opt.batch`` (tiles: each frame's tiles) for one forward, a
    partial batch run before any other event passes."""
    pending = []

    def flush():
        if opt.tile:
            found = [detect(engine.model, r.frame.image, opt, engine) for r in pending]
        else:
            found = (_points if points else _boxes)(engine, [r.prepared for r in pending], opt)
        done = [(r.frame, f) for r, f in zip(pending, found)]
        pending.clear()
        return done
    for ev in events:
        if isinstance(ev, Ready):
            pending.append(ev)
            if len(pending) >= (1 if opt.tile else opt.batch):
                yield from flush()
            continue
        yield from flush()
        yield ev
    yield from flush()


def detect_all(model, items: list, opt: Options, echo=print, report=skip) -> int:
    """Run ``model`` over ``items``; ``report(message)`` names each item that could not be
    read; returns how many there were.  A [keypoint] network's points are printed and drawn
    instead of boxes (no JSON, labels or tiles for them)."""
    points = D.head_kind(model) == "points"
    show = _Shown(opt, echo, points)
    engine = B.Engine(model, opt.batch, note=lambda m: print(f"note: {m}", file=sys.stderr),
                      compiled=opt.compile)
    frames = S.prefetched(_read(items, model.net, opt), depth=max(4, 2 * opt.batch))
    bad = 0
    try:
        for ev in _detected(engine, frames, opt, points):
            if isinstance(ev, Failed):
                bad += 1
                report(ev.message)
                show.end(ev.item, failed=True)
            elif isinstance(ev, Done):
                show.end(ev.item)
            else:
                show(*ev)
    except BaseException as e:
        show.stop(e)
        raise
    finally:
        frames.close()              # the reader stops, its video or stream is released
        show.write_json()           # what was detected before a stop, well formed
    return bad


class _Shown:
    """Each frame's detections printed and written where asked: darknet's JSON, labels beside
    an image, its drawing, a video's drawn frames (one video open at a time, items come in
    order)."""

    def __init__(self, opt: Options, echo, points: bool):
        self.opt, self.echo, self.points = opt, echo, points
        self.json = O.DarknetJson(opt.json) if opt.json and not points else None
        self.images, self.video = 0, None

    def __call__(self, frame, found) -> None:
        item, opt, size = frame.item, self.opt, frame.image.size
        image = item.kind == "image"
        self.images += image
        where = item.source if image else f"{item.where} frame {frame.index}"
        (_print_points if self.points else _print)(self.echo, where, found, size, opt)
        if self.json is not None:
            self.json.add(self.images if image else frame.index, str(item.source), found, size,
                          opt.names)
        if opt.save_labels and image and not self.points:
            from ..dataset.data import label_path
            from ..outputs import atomic_write
            atomic_write(label_path(item.source), O.label_text(found, size).encode(), opt.force)
        if image:
            self._draw(item, frame.image, found)
        elif opt.output:
            if self.video is None:
                self.video = _DrawnVideo(item, opt)
            self.video.write(self._drawn(frame.image, found), frame.fps, size)

    def _drawn(self, image, found):
        if self.points:
            from ..objective import keypoint as K
            return K.points_drawn(image, found, self.opt.names)
        return D.drawn(image, found, self.opt.names)

    def _draw(self, item, image, found) -> None:
        dst = self.opt.drawn.get(item.source)
        if dst:
            os.makedirs(self.opt.output, exist_ok=True)
            from ..outputs import save_image
            save_image(self._drawn(image, found), dst)

    def end(self, item, failed: bool = False) -> None:
        """The item is done, or was given up: its drawn video is finished (playable); a bad
        image still takes its number (JSON frame_id counts the images given)."""
        self.images += failed and item.kind == "image"
        if self.video is not None:
            self.video, video = None, self.video
            video.__exit__(None, None, None)

    def stop(self, e: BaseException) -> None:
        """A stop (Ctrl-C, SIGTERM) finishes the open video; an error removes it."""
        if self.video is not None:
            self.video, video = None, self.video
            video.__exit__(type(e), e, None)

    def write_json(self) -> None:
        if self.json is not None:
            self.json.write()


def _print_points(echo, where, kps, size, opt) -> None:
    echo(f"{where}: {len(kps)} points ({size[0]} x {size[1]})")
    for k in kps:
        echo(f"  {O._name(opt.names, k.cls) if opt.names else f'class {k.cls}'}: "
             f"{k.score * 100:.1f}%  {k.x:.1f} {k.y:.1f}")

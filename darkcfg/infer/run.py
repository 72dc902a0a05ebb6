"""``darkcfg detect`` over everything it reads (:mod:`.sources`): per frame, detect, print,
and the outputs asked for (:mod:`.outputs`).  A bad item is named on stderr and skipped; the
run goes on and :func:`detect_all` returns how many there were, for the exit status.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

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


def detect(model, image, opt: Options) -> list:
    """One image's or frame's detections: whole, or over tiles merged by one NMS."""
    def one(im):
        return D.detect_frame(model, im, opt.thresh, opt.nms, None if opt.tile else opt.max_det,
                              opt.letter_box)
    if not opt.tile:
        return one(image)
    from .tiles import detect_tiled
    dets = detect_tiled(one, image, opt.tile, opt.tile_overlap, opt.nms)
    return dets[:opt.max_det] if opt.max_det else dets


def skip(message: str) -> None:
    """How a bad item is named as the run goes on: ``skipped: ...`` on stderr."""
    print(f"skipped: {message}", file=sys.stderr, flush=True)


def detect_all(model, items: list, opt: Options, echo=print, report=skip) -> int:
    """Run ``model`` over ``items``; ``report(message)`` names each item that could not be
    read; returns how many there were."""
    out = O.DarknetJson(opt.json) if opt.json else None
    bad, count = 0, 0
    try:
        for item in items:
            try:
                if item.kind == "image":
                    count += 1
                    _image(model, item, opt, out, count, echo)
                else:
                    _video(model, item, opt, out, echo)
            except S.Bad as e:
                bad += 1
                report(str(e))
    finally:
        if out is not None:
            out.write()          # what was detected before a stop, well formed
    return bad


def _print(echo, where, dets, size, opt) -> None:
    echo(f"{where}: {len(dets)} detections ({size[0]} x {size[1]})")
    for d in dets:
        x1, y1, x2, y2 = d.box
        line = f"  {O._name(opt.names, d.cls) if opt.names else f'class {d.cls}'}: " \
               f"{d.score * 100:.1f}%  {x1:.0f} {y1:.0f} {x2:.0f} {y2:.0f}"
        echo(line + ("\t" + O.ext_output(d) if opt.ext_output else ""))


def _image(model, item, opt, out, frame_id, echo) -> None:
    frame = next(S.frames(item))
    dets = detect(model, frame.image, opt)
    size = frame.image.size
    _print(echo, item.source, dets, size, opt)
    if out is not None:
        out.add(frame_id, item.source, dets, size, opt.names)
    if opt.save_labels:
        from ..dataset.data import label_path
        from ..outputs import atomic_write
        atomic_write(label_path(item.source), O.label_text(dets, size).encode(), opt.force)
    dst = opt.drawn.get(item.source)
    if dst:
        os.makedirs(opt.output, exist_ok=True)
        D.draw(frame.image, dets, opt.names, dst)


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


def _video(model, item, opt, out, echo) -> None:
    with _DrawnVideo(item, opt) as video:
        for frame in S.prefetched(S.frames(item, opt.reconnect)):
            dets = detect(model, frame.image, opt)
            size = frame.image.size
            _print(echo, f"{item.where} frame {frame.index}", dets, size, opt)
            if out is not None:
                out.add(frame.index, str(item.source), dets, size, opt.names)
            if opt.output:
                video.write(D.drawn(frame.image, dets, opt.names), frame.fps, size)


def points_video(model, item, opt: Options, echo=print) -> None:
    """A [keypoint] network over a video, camera or stream: each frame's points printed
    (class, score, x y in pixels) and, with ``opt.output``, drawn into a video."""
    from ..objective import keypoint as K
    with _DrawnVideo(item, opt) as video:
        for frame in S.prefetched(S.frames(item, opt.reconnect)):
            kps, img = K.detect_keypoints(model, frame.image, opt.thresh, max_det=opt.max_det,
                                          letter_box=opt.letter_box)
            echo(f"{item.where} frame {frame.index}: {len(kps)} points "
                 f"({img.size[0]} x {img.size[1]})")
            for k in kps:
                echo(f"  {O._name(opt.names, k.cls) if opt.names else f'class {k.cls}'}: "
                     f"{k.score * 100:.1f}%  {k.x:.1f} {k.y:.1f}")
            if opt.output:
                video.write(K.points_drawn(img, kps, opt.names), frame.fps, img.size)

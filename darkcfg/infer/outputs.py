"""What ``detect`` writes besides its printed lines, darknet's way where darknet has a way:

* :class:`DarknetJson` - ``-out result.json``: darknet's detection_to_json entries (frame_id,
  filename, objects: class_id, name, relative_coordinates centre/size, confidence) in its
  ``[`` ... ``, `` ... ``]`` wrapping, byte for byte its printf layout;
* :func:`ext_output` - ``-ext_output``: the box as pixel left/top/width/height;
* :func:`label_text` - ``-save_labels``: a YOLO label file of the detections;
* :class:`VideoOut` - a drawn video with the source's size and fps, renamed into place only
  when finished (a stopped run leaves no half file).
"""
from __future__ import annotations

import contextlib
import os

from ..outputs import atomic_output, atomic_write


def _relative(raw, size) -> tuple:
    """(centre x, centre y, width, height) of a pixel box, relative to the image (darknet's
    bbox after correct_yolo_boxes: not clipped)."""
    (x1, y1, x2, y2), (w, h) = raw, size
    return (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h


def _name(names, k: int) -> str:
    return str(names[k]) if names and k < len(names) else str(k)


def json_entry(frame_id: int, filename: str | None, dets: list, size, names=None) -> str:
    """darknet's detection_to_json for one image or frame."""
    head = (f'{{\n "frame_id":{frame_id}, \n "filename":"{filename}", \n "objects": [ \n'
            if filename is not None else f'{{\n "frame_id":{frame_id}, \n "objects": [ \n')
    objects = []
    for d in dets:
        cx, cy, w, h = _relative(getattr(d, "raw", d.box), size)
        objects.append(f'  {{"class_id":{d.cls}, "name":"{_name(names, d.cls)}", '
                       f'"relative_coordinates":{{"center_x":{cx:f}, "center_y":{cy:f}, '
                       f'"width":{w:f}, "height":{h:f}}}, "confidence":{d.score:f}}}')
    return head + ", \n".join(objects) + "\n ] \n}"


class DarknetJson:
    """Entries gathered as detect goes; :meth:`write` puts them in ``path`` atomically as
    darknet's ``-out`` file: ``[\\n`` entries joined by ``, \\n`` then ``\\n]``."""

    def __init__(self, path: str):
        self.path, self.entries = path, []

    def add(self, frame_id, filename, dets, size, names=None) -> None:
        self.entries.append(json_entry(frame_id, filename, dets, size, names))

    def write(self) -> None:
        atomic_write(self.path, ("[\n" + ", \n".join(self.entries) + "\n]").encode())


def ext_output(d) -> str:
    """darknet's -ext_output: ``(left_x:   12   top_y:   30   width:   40   height:   52)``,
    from the box before clipping, rounded as darknet rounds."""
    x1, y1, x2, y2 = getattr(d, "raw", d.box)
    return (f"(left_x: {_round(x1):4.0f}   top_y: {_round(y1):4.0f}   "
            f"width: {_round(x2 - x1):4.0f}   height: {_round(y2 - y1):4.0f})")


def _round(x: float) -> float:
    """C's round(): halves away from zero (Python's round() goes to even)."""
    import math
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def label_text(dets: list, size) -> str:
    """A YOLO label file of ``dets`` (boxes clipped to the image, so it passes ``data check``),
    darknet's ``-save_labels`` line format ``%d %2.4f %2.4f %2.4f %2.4f``."""
    lines = []
    for d in dets:
        cx, cy, w, h = _relative(d.box, size)
        if w > 0 and h > 0:
            lines.append(f"{d.cls} {cx:2.4f} {cy:2.4f} {w:2.4f} {h:2.4f}\n")
    return "".join(lines)


class VideoOut:
    """A drawn video of a source's frames: same size and fps, MJPG in .avi (mp4v in .mp4),
    written beside the target and renamed over it by :meth:`finish`; :meth:`abandon` (or an
    exception inside ``with``) removes it."""

    def __init__(self, path: str, fps: float | None, size, force: bool):
        self.path, self.size = path, size
        self.fps = fps if fps and fps > 0 else 25.0
        self._stack = contextlib.ExitStack()
        self._tmp = self._stack.enter_context(atomic_output(path, force))
        self._inner = self._tmp + os.path.splitext(path)[1]    # OpenCV picks by extension
        self._writer = None

    def write(self, image) -> None:
        import numpy as np
        from ..dataset.data import opencv
        cv2 = opencv()
        if self._writer is None:
            four = "mp4v" if self.path.lower().endswith(".mp4") else "MJPG"
            self._writer = cv2.VideoWriter(self._inner, cv2.VideoWriter_fourcc(*four),
                                           self.fps, self.size)
        self._writer.write(cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR))

    def finish(self) -> None:
        """Close the video and rename it into place (no frame written: no file)."""
        if self._writer is None:
            self.abandon()
            return
        self._writer.release()
        os.replace(self._inner, self._tmp)
        self._stack.close()

    def abandon(self, exc=None) -> None:
        if self._writer is not None:
            self._writer.release()
        if os.path.exists(self._inner):
            os.unlink(self._inner)
        exc = exc or KeyboardInterrupt()
        self._stack.__exit__(type(exc), exc, None)     # the temporary file goes too

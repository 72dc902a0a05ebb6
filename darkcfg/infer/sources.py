"""What ``detect`` reads: image files, folders (recursively), list files (darknet's ``valid=``
lists, one path a line), video files, camera indices and stream URLs - as :class:`Item` s, each
then read as frames (:func:`frames`).  A bad item (a missing list entry, an image that does not
decode, a video or stream OpenCV cannot open) is a :class:`Bad` carrying the words that name
it: the caller prints them, goes on with the rest, and fails at the end.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

from ..dataset import data as D
from ..errors import DarkcfgError

VIDEO_EXTS = (".avi", ".mp4", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm", ".flv",
              ".mjpeg", ".mjpg", ".ts")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
OPEN_TIMEOUT_S = 10.0       # how long a stream may take to answer before it is a bad item


@dataclass
class Item:
    kind: str               # "image", "video", "camera" or "stream"
    source: object          # a path, a camera index or a URL
    where: str              # how errors name it: the path, "list.txt:3", "camera 0"


class Bad(DarkcfgError):
    """An item that cannot be read: named, skipped, and the command fails at the end."""


def is_stream(text: str) -> bool:
    return str(text).lower().startswith(STREAM_SCHEMES)


def is_video(path: str) -> bool:
    return str(path).lower().endswith(VIDEO_EXTS)


def _of_path(path: str, where: str) -> Item:
    if is_stream(path):
        return Item("stream", path, where)
    return Item("video" if is_video(path) else "image", path, where)


def expand(inputs, cameras=(), stdin: str = "") -> tuple:
    """(items in order, problems): folders give their images and videos (recursively, sorted),
    a ``.txt`` file its entries (resolved as training resolves a list; a missing entry is a
    problem naming its file:line), ``-`` the entries of ``stdin`` (the text read from it:
    darknet's ``< list.txt``, paths as given), anything else itself; then each camera index."""
    items, problems = [], []
    for x in inputs:
        x = str(x)
        if x == "-":
            items += _entries(_lines(stdin), "stdin", problems)
        elif is_stream(x):
            items.append(Item("stream", x, x))
        elif os.path.isdir(x):
            found = sorted(os.path.join(root, f) for root, _, files in os.walk(x)
                           for f in files if D.is_image(f) or is_video(f))
            if not found:
                problems.append(f"{x}: no images or videos in this folder")
            items += [_of_path(p, p) for p in found]
        elif x.lower().endswith(".txt"):
            items += _entries(D.list_lines(x), x, problems)
        else:
            items.append(_of_path(x, x))
    items += [Item("camera", int(c), f"camera {c}") for c in cameras]
    return items, problems


def _lines(text: str) -> list:
    """(line number, entry) of a list's text: blank lines and # comments left out."""
    raw = [(nu, p.strip()) for nu, p in enumerate(text.splitlines(), 1)]
    return [(nu, p) for nu, p in raw if p and not p.startswith("#")]


def _entries(entries: list, name: str, problems: list) -> list:
    """A list's entries as items; one that does not exist is a problem naming name:line."""
    out = []
    if not entries:
        problems.append(f"{name}: lists no images")
    for nu, p in entries:
        where = f"{name}:{nu}"
        if not is_stream(p) and not os.path.exists(p):
            problems.append(f"{where}: '{p}' does not exist")
            continue
        out.append(_of_path(p, where))
    return out


@dataclass
class Frame:
    item: Item
    index: int              # 1-based within its video or stream; 1 for an image
    image: object           # a Pillow RGB image
    fps: float | None = None


def frames(item: Item, reconnect: int = 3, open_timeout: float = OPEN_TIMEOUT_S):
    """The item's frames, as Pillow RGB images.  A stream that drops is reopened up to
    ``reconnect`` times (a second apart), then ends with :class:`Bad`."""
    if item.kind == "image":
        from ..dataset.prepare import open_image
        try:
            yield Frame(item, 1, open_image(item.source))
        except DarkcfgError as e:
            raise Bad(_named(str(e), item)) from None
        return
    yield from _video_frames(item, reconnect if item.kind == "stream" else 0, open_timeout)


def _named(message: str, item: Item) -> str:
    """A message about an item's file, with the list's file:line in front when it came from
    a list."""
    return message if item.where == str(item.source) else f"{item.where}: {message}"


def open_capture(item: Item, open_timeout: float = OPEN_TIMEOUT_S):
    """An opened cv2.VideoCapture of a video file, camera or stream, or :class:`Bad`."""
    cv2 = D.opencv()
    ms = int(open_timeout * 1000)
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
    if item.kind == "stream":
        cap = cv2.VideoCapture(item.source, cv2.CAP_FFMPEG, params)
    else:
        cap = cv2.VideoCapture(item.source)
    if not cap.isOpened():
        cap.release()
        what = {"video": "OpenCV cannot open this video",
                "camera": "OpenCV cannot open this camera",
                "stream": f"the stream could not be opened (refused, or no answer within "
                          f"{open_timeout:g} s)"}[item.kind]
        raise Bad(_named(f"{item.source}: {what}", item) if item.kind != "camera"
                  else f"{item.where}: {what}")
    return cap


def _video_frames(item: Item, reconnect: int, open_timeout: float):
    from PIL import Image
    cv2 = D.opencv()
    cap = open_capture(item, open_timeout)
    fps = cap.get(cv2.CAP_PROP_FPS) or None
    # a file served at a URL (http://.../clip.mp4) knows its length: it ends, and reopening it
    # would play it again from the start; a live stream (no length) is reconnected
    finite = 0 < cap.get(cv2.CAP_PROP_FRAME_COUNT) < 1e12
    index, tries = 0, 0
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                if item.kind != "stream" or finite:
                    if index == 0:
                        raise Bad(_named(f"{item.source}: no frame could be decoded", item))
                    return
                if tries >= reconnect:
                    raise Bad(f"{item.where}: the stream dropped after frame {index} and did "
                              f"not come back after {reconnect} reconnects")
                tries += 1
                cap.release()
                time.sleep(1.0)
                try:
                    cap = open_capture(item, open_timeout)
                except Bad:
                    continue
                continue
            tries = 0
            index += 1
            yield Frame(item, index, Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)), fps)
    finally:
        cap.release()


def prefetched(frames_iter, depth: int = 4):
    """``frames_iter`` read ahead by a thread (up to ``depth`` frames), so decoding overlaps
    the network (OpenCV and torch release the GIL); an error in the reader is raised here, in
    order.  Stopping early (a break, Ctrl-C) stops the reader."""
    import queue
    import threading
    q, stop, end = queue.Queue(depth), threading.Event(), object()

    def reader():
        try:
            for f in frames_iter:
                while not stop.is_set():
                    try:
                        q.put(f, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(end)
        except BaseException as e:            # noqa: BLE001 - handed to the consumer
            q.put(e)
        finally:
            if stop.is_set():
                frames_iter.close()
    t = threading.Thread(target=reader, daemon=True, name="darkcfg-frames")
    t.start()
    try:
        while True:
            f = q.get()
            if f is end:
                return
            if isinstance(f, BaseException):
                raise f
            yield f
    finally:
        stop.set()

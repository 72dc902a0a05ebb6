"""Images in, detections out: darknet's letterbox, the model, decode, NMS, boxes back in image
pixels (darknet's correct_yolo_boxes), and drawing.  Pillow reads and draws the images."""
from __future__ import annotations

import numpy as np
import torch

from . import yolo as Y
from .errors import DarkcfgError
from .io import atomic_output


def read_names(path: str) -> list:
    with open(path, errors="replace") as f:
        return [line.strip() for line in f if line.strip()]


def open_image(path: str):
    from PIL import Image, UnidentifiedImageError
    try:
        return Image.open(path).convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise DarkcfgError(f"{path}: not an image Pillow can read ({e})") from None


def letterbox(img, width: int, height: int):
    """darknet's letterbox_image: fit inside (width, height) keeping the aspect ratio (integer
    sizes as darknet computes them), centred on grey 0.5.  Returns (CHW float array in [0, 1],
    (new_w, new_h)).  Pillow's bilinear resize stands in for darknet's resize_image."""
    w, h = img.size
    if width / w < height / h:
        nw, nh = width, (h * width) // w
    else:
        nw, nh = (w * height) // h, height
    resized = np.asarray(img.resize((nw, nh), 2), dtype=np.float32) / 255.0   # 2 = BILINEAR
    out = np.full((height, width, 3), 0.5, dtype=np.float32)
    x0, y0 = (width - nw) // 2, (height - nh) // 2
    out[y0:y0 + nh, x0:x0 + nw] = resized
    return out.transpose(2, 0, 1), (nw, nh)


def unletterbox(box, net_size, new_size, img_size):
    """darknet's correct_yolo_boxes (letter=1): normalized network box -> image pixels."""
    (nw_, nh_), (nw, nh), (w, h) = net_size, new_size, img_size
    x1, y1, x2, y2 = box
    ox, oy = (nw_ - nw) / 2 / nw_, (nh_ - nh) / 2 / nh_
    sx, sy = nw / nw_, nh / nh_
    return ((x1 - ox) / sx * w, (y1 - oy) / sy * h, (x2 - ox) / sx * w, (y2 - oy) / sy * h)


def detect_image(model, path: str, thresh: float = 0.25, nms_thresh: float = 0.45):
    """(detections with boxes in image pixels, the RGB image as read)."""
    net = model.net
    if not any(l.type == "yolo" for l in net.layers):
        raise DarkcfgError(f"{net.cfg.name}: detect needs [yolo] heads")
    img = open_image(path)
    x, new = letterbox(img, net.width, net.height)
    with torch.no_grad():
        outs = model(torch.from_numpy(x)[None].to(**model.placement()))
    dets = Y.detections(outs, model, thresh, nms_thresh)[0]
    for d in dets:
        d.box = unletterbox(d.box, (net.width, net.height), new, img.size)
    return dets, img


def draw(img, dets: list, names: list | None, dst: str) -> None:
    """Draw the boxes on a copy of ``img`` and write it to ``dst`` (format from the name)."""
    from PIL import ImageDraw
    img = img.copy()
    pen = ImageDraw.Draw(img)
    for d in dets:
        hue = (d.cls * 67) % 255
        color = (hue, 255 - hue, (hue * 3) % 255)
        pen.rectangle(d.box, outline=color, width=max(1, img.size[0] // 200))
        label = f"{names[d.cls] if names and d.cls < len(names) else d.cls} {d.score:.2f}"
        pen.text((d.box[0] + 2, d.box[1] + 1), label, fill=color)
    with atomic_output(dst) as tmp:
        img.save(tmp, format=_format_of(dst))


def _format_of(path: str) -> str:
    ext = path.rsplit(".", 1)[-1].lower()
    return {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "bmp": "BMP"}.get(ext, "PNG")

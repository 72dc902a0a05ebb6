"""Image preparation, one place for detect, map (evaluation) and keypoint inference: reading
images and names, darknet's resize_image and letterbox_image, and the network input made from
them (stretched unless letterboxing, as the cfg's [net] letter_box or the caller says).

    read_names, open_image, to_float, resize_image, letterbox_size, letterbox_image, prepare,
    RESIZERS, cfg_letter_box, letter_boxed, network_input, letterbox
"""
from __future__ import annotations

import numpy as np

from ..errors import DarkcfgError


def read_names(path: str) -> list:
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        return [line.strip() for line in f if line.strip()]


def open_image(path: str):
    """The image as 8-bit RGB.  16-bit images (Pillow's I;16 and I modes, 16-bit PNGs) keep
    their top 8 bits, as darknet's stb_image loader does (Pillow's own convert("RGB") clips
    them to white)."""
    from PIL import Image, UnidentifiedImageError
    from .data import image_damage
    damage = image_damage(path)        # the rule train, map and data check apply
    if damage:
        raise DarkcfgError(damage)
    try:
        img = Image.open(path)
        if img.mode.startswith("I;16") or img.mode == "I":
            a = np.asarray(img, dtype=np.int64)
            if img.mode.startswith("I;16") or img.format == "PNG" or a.max(initial=0) > 255:
                a = a >> 8
            img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L")
        elif img.mode == "F":
            img = Image.fromarray(np.clip(np.asarray(img), 0, 255).astype(np.uint8), "L")
        return img.convert("RGB")
    except Image.DecompressionBombError as e:
        raise DarkcfgError(f"{path}: refused, too many pixels for an image ({e})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DarkcfgError(f"{path}: not an image Pillow can read ({e})") from None


def letter_boxed(net, letter_box=None) -> bool:
    """Whether detect letterboxes ``net``'s input: ``letter_box`` when given (True or False),
    else - None - the cfg's [net] letter_box (:func:`cfg_letter_box`, which map's and
    training's images follow; 0 when unset: stretched, as darknet's detector test without
    ``-letter_box``)."""
    return cfg_letter_box(net)[0] if letter_box is None else bool(letter_box)


def network_input(img, width: int, height: int, letter_box: bool):
    """A Pillow RGB image as the network sees it, by the path ``darkcfg map`` takes
    (:func:`prepare`): darknet's resize_image (align-corners bilinear in float32) stretching
    it to width x height, or with ``letter_box`` darknet's letterbox_image (resized to
    :func:`letterbox_size`, embedded at the integer centre on grey 0.5).  Returns (CHW float32
    array in [0, 1], (new_w, new_h)): the size of the image inside the input, which
    detect.unletterbox maps back from - (width, height) when stretched.  The array is
    C-contiguous whatever the path: its memory layout picks the network's kernels (a
    channels-last input, what resizing the HWC image leaves, runs other kernels, with other
    last bits and, for yolov3-tiny on a CPU, 1.3x slower), so every image runs the same way."""
    w, h = img.size
    x = prepare(np.asarray(img, dtype=np.uint8), width, height, letter_box=bool(letter_box))
    return (np.ascontiguousarray(x),
            letterbox_size(w, h, width, height) if letter_box else (width, height))


def letterbox(img, width: int, height: int):
    """darknet's letterbox_image on a Pillow RGB image: ``network_input(img, width, height,
    True)``."""
    return network_input(img, width, height, True)


# ----- darknet's image arithmetic --------------------------------------------------------------


def to_float(img: np.ndarray) -> np.ndarray:
    """HxWxC uint8 -> CxHxW float32, each value ``v / 255.`` computed in double then stored as
    a float (darknet's mat_to_image)."""
    return (img.transpose(2, 0, 1).astype(np.float64) / 255.0).astype(np.float32)


def resize_image(im: np.ndarray, w: int, h: int) -> np.ndarray:
    """darknet's resize_image on a CxHxW float32 image: bilinear with the corners aligned
    (``scale = (in - 1) / (out - 1)``), a horizontal pass then a vertical one, in float32.

    darknet's vertical pass skips the second row's share on the last output row; where float
    rounding puts that row's source at ``in - 2 + 0.99999..`` (about 5% of (height, size)
    pairs) darknet's last row comes out nearly black.  That is a bug: this adds the share
    whenever the next source row exists (darknet's intent)."""
    c, ih, iw = im.shape
    if (iw, ih) == (w, h):
        return im.copy()
    f = np.float32
    with np.errstate(divide="ignore", invalid="ignore"):
        w_scale = f(iw - 1) / f(w - 1)
        h_scale = f(ih - 1) / f(h - 1)
    cols = np.arange(w)
    sx = cols.astype(f) * w_scale if w > 1 else np.zeros(1, f)
    ix = np.minimum(sx.astype(np.int64), iw - 1)
    dx = sx - ix.astype(f)
    part = (f(1) - dx) * im[:, :, ix] + dx * im[:, :, np.minimum(ix + 1, iw - 1)]
    last = (cols == w - 1) | (iw == 1)
    part[:, :, last] = im[:, :, iw - 1:iw]
    rows = np.arange(h)
    sy = rows.astype(f) * h_scale if h > 1 else np.zeros(1, f)
    iy = np.minimum(sy.astype(np.int64), ih - 1)
    dy = (sy - iy.astype(f))[:, None]
    out = (f(1) - dy) * part[:, iy, :]
    more = iy + 1 < ih
    out[:, more, :] += dy[more] * part[:, iy[more] + 1, :]
    return out


def letterbox_size(iw: int, ih: int, w: int, h: int) -> tuple:
    """(new_w, new_h) of darknet's letterbox_image / correct_yolo_boxes (float test, integer
    sizes)."""
    if np.float32(w) / np.float32(iw) < np.float32(h) / np.float32(ih):
        return w, (ih * w) // iw
    return (iw * h) // ih, h


def letterbox_image(im: np.ndarray, w: int, h: int, resize=None) -> np.ndarray:
    """darknet's letterbox_image: ``resize`` (default darknet's resize_image) to fit, embed at
    the integer centre on 0.5."""
    c, ih, iw = im.shape
    nw, nh = letterbox_size(iw, ih, w, h)
    out = np.full((c, h, w), 0.5, np.float32)
    x0, y0 = (w - nw) // 2, (h - nh) // 2
    out[:, y0:y0 + nh, x0:x0 + nw] = (resize or resize_image)(im, nw, nh)
    return out


def _pillow_resize(im: np.ndarray, w: int, h: int) -> np.ndarray:
    from PIL import Image
    out = []
    for ch in im:
        out.append(np.asarray(Image.fromarray(ch, mode="F").resize((w, h), Image.BILINEAR)))
    return np.stack(out).astype(np.float32)


def _opencv_resize(im: np.ndarray, w: int, h: int) -> np.ndarray:
    import cv2
    return cv2.resize(im.transpose(1, 2, 0), (w, h), interpolation=cv2.INTER_LINEAR) \
        .reshape(h, w, -1).transpose(2, 0, 1).astype(np.float32)


RESIZERS = {"darknet": resize_image, "pillow": _pillow_resize, "opencv": _opencv_resize}


def prepare(img: np.ndarray, w: int, h: int, letter_box: bool, resize: str = "darknet"):
    """uint8 HxWx3 image -> the network input CxHxW float32 (darknet's, by default)."""
    im = to_float(img)
    fn = RESIZERS[resize]
    return letterbox_image(im, w, h, fn) if letter_box else fn(im, w, h)


def cfg_letter_box(net) -> tuple:
    """(letter_box, written): the cfg's [net] letter_box and whether the cfg sets it."""
    sec = net.cfg.net
    return bool(sec.get_int("letter_box", 0)), sec.has("letter_box")

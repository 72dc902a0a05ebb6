"""darknet's detection augmentation: ``load_data_detection`` (src/data.c, OpenCV build) and
``image_data_augmentation`` (src/image_opencv.cpp), one small function per step.

Every step is ``(image, boxes, ...) -> (image, boxes)`` with its box math beside its pixel math:

* ``image``: H x W x C uint8 RGB, as darknet holds it before its float conversion;
* ``boxes``: (N, 5) float64 ``[class, cx, cy, w, h]`` normalized to ``image``; a row with
  ``w == h == 0`` is a keypoint (a [keypoint] cfg's labels) and moves as a point.

darknet's order for one image: random draws -> jitter crop (+ [yolo] ``resize``, + letter_box
padding) -> resize to the network -> flip -> truth filter (``fill_truth_detection``) -> HSV ->
blur -> gaussian noise.  ``mosaic`` runs that four times and pastes quadrants.  The random draws
come from a numpy Generator the caller seeds (darkcfg.data seeds one per sample from (seed,
iteration, slot)); the distributions are darknet's, the stream is not (darknet's random_gen).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import cv2
import numpy as np

from . import CROP_ASPECT, CROP_ASPECTS, MIN_VISIBLE


# ----- options read from the cfg ----------------------------------------------------------------


@dataclass
class Options:
    """The [net] and last-head options darknet's detector loader reads (train_detector), and
    darkcfg's three departures from darknet's augmentation (:func:`check_choices`):

    * ``multiscale``: random=1's sizes, ``"centred"`` on the cfg's or ``"darknet"``'s
      (:func:`network_size`).
    * ``min_visible``: a box the jitter crop leaves with less than this share of its area
      inside is dropped.  darknet (0) keeps every clipped box of at least one network pixel:
      with jitter=.3 about 4 % of the boxes it trains on show less than a quarter of their
      object - the corner of a disc, the edge of a square - each a positive the network is
      asked to find in a few pixels that look like the background's clutter.  On issue #22's
      recipe dropping those under a tenth (darkcfg.dataset.MIN_VISIBLE) raised mAP@0.5 from
      71.1 % to 78.8 % (docs/decisions.md); PyTorch YOLO trainers filter the same way (a
      minimum share of the area kept after their crops).
    * ``crop_aspect``: ``"image"`` (darkcfg.dataset.CROP_ASPECT) - the jitter crop keeps the
      image's aspect ratio: its width moves by darknet's two draws, its height follows by the
      same factor, placed by darknet's top draw (:func:`plan_crop`); ``"darknet"`` - each edge
      moves on its own, so the crop's aspect (and every object's) changes up to 4x at
      jitter=.3.  On issue #22's recipe on a background without clutter (where the model can
      learn 86 % and more) the stretched crops cost 3.9 and 3.5 mAP points (two seeds; -0.1,
      2.0 and 0.7 on the cluttered sets, docs/decisions.md); PyTorch YOLO trainers scale
      both axes alike."""
    width: int
    height: int
    classes: int
    channels: int = 3
    jitter: float = 0.2            # last [yolo]/[region]
    resize: float = 1.0
    random: float = 0.0
    max_boxes: int = 200
    flip: bool = True              # [net]
    hue: float = 0.0
    saturation: float = 1.0
    exposure: float = 1.0
    blur: int = 0
    gaussian_noise: int = 0
    mosaic: bool = False
    mosaic_bound: bool = False
    letter_box: bool = False
    resize_step: int = 32
    max_batches: int = 0
    keypoints: bool = False        # the last head is darkcfg's [keypoint]: labels are points
    multiscale: str = "centred"    # random=1's sizes: "centred" on the cfg's, or "darknet"'s
    min_visible: float = MIN_VISIBLE   # a crop keeps a box with this share inside (darknet 0)
    crop_aspect: str = CROP_ASPECT     # the jitter crop keeps the image's aspect, or "darknet"
    warnings: list = field(default_factory=list)

    @classmethod
    def from_network(cls, net) -> "Options":
        from ..config.shapes import last_head
        head = last_head(net)
        n, h = net.cfg.net, head.section
        o = cls(net.width, net.height, head.opts["classes"], channels=net.channels or 3,
                jitter=h.get_float("jitter", 0.2), resize=h.get_float("resize", 1.0),
                random=h.get_float("random", 0.0), max_boxes=h.get_int("max", 200),
                flip=bool(n.get_int("flip", 1)), hue=n.get_float("hue", 0.0),
                saturation=n.get_float("saturation", 1.0), exposure=n.get_float("exposure", 1.0),
                blur=n.get_int("blur", 0), gaussian_noise=n.get_int("gaussian_noise", 0),
                letter_box=bool(n.get_int("letter_box", 0)),
                mosaic_bound=bool(n.get_int("mosaic_bound", 0)),
                resize_step=max(1, int(n.get_float("resize_step", 32))),
                max_batches=n.get_int("max_batches", 0), keypoints=head.type == "keypoint")
        o._unsupported(n)
        o._untrained(net)
        if o.max_boxes < 1:
            raise h.error(f"must be >= 1, got {o.max_boxes}", h.find("max"))
        if o.resize <= 0:
            raise h.error(f"must be > 0, got {o.resize}", h.find("resize"))
        return o

    def _unsupported(self, n) -> None:
        """mosaic/cutmix/mixup as darknet's parse_net_options encodes them, and a warning for
        each option darknet's detector reads that darkcfg does not implement."""
        mixup, cutmix, mosaic = (n.get_int(k, 0) for k in ("mixup", "cutmix", "mosaic"))
        self.mosaic = bool(mosaic)
        if self.mosaic and self.letter_box:
            raise n.error("letter_box=1 and mosaic=1 together: darknet refuses this "
                          "('isn't supported, use only 1 of these parameters')", n.find("mosaic"))
        if cutmix:
            self.warnings.append(n.error("cutmix=1 is for the classifier: darknet's detector "
                                         "ignores it (and so does darkcfg)",
                                         n.find("cutmix")).format())
        if mixup and not mosaic:
            self.warnings.append(n.error("mixup=1 is not implemented by darkcfg: training "
                                         "runs without it", n.find("mixup")).format())
        if n.get_float("angle", 0.0):
            self.warnings.append(n.error("angle is used by darknet's classifier only; the "
                                         "detector (and darkcfg) ignores it",
                                         n.find("angle")).format())
        for key in ("track", "contrastive", "dynamic_minibatch"):
            if n.get_int(key, 0):
                self.warnings.append(n.error(f"{key}=1 is not implemented by darkcfg: training "
                                             f"runs without it", n.find(key)).format())

    def _untrained(self, net) -> None:
        """A warning for each layer option darknet's training honours and darkcfg's does not
        (every layer trains; --freeze N keeps the layers below N fixed)."""
        for sec in net.cfg.sections[1:]:
            for key in ("stopbackward", "dont_update", "train_only_bn"):
                if sec.has(key) and sec.get_float(key, 0.0):
                    self.warnings.append(sec.error(
                        f"{key} is not implemented by darkcfg: this layer trains as any other "
                        f"(--freeze N keeps the layers below N fixed)", sec.find(key)).format())


# ----- random draws -------------------------------------------------------------------------------


def rand_scale(s: float, rng) -> float:
    """darknet's rand_scale: U[1, s], then its reciprocal with probability 1/2."""
    scale = 1 + rng.random() * (s - 1)
    return scale if rng.integers(2) else 1.0 / scale


@dataclass
class Draws:
    """One image's random numbers, drawn in load_data_detection's order."""
    resize_r: tuple = (0.5, 0.5)
    r: tuple = (0.5, 0.5, 0.5, 0.5)     # pleft, pright, ptop, pbot
    flip: bool = False
    dhue: float = 0.0
    dsat: float = 1.0
    dexp: float = 1.0
    blur: int = 0
    noise: int = 0
    noise_seed: int = 0


def draw(rng, opt: Options) -> Draws:
    d = Draws()
    d.resize_r = (rng.random(), rng.random())
    d.r = tuple(rng.random() for _ in range(4))
    d.flip = bool(opt.flip and rng.integers(2))
    d.dhue = -opt.hue + rng.random() * 2 * opt.hue
    d.dsat = rand_scale(opt.saturation, rng)
    d.dexp = rand_scale(opt.exposure, rng)
    if opt.blur:
        mode = int(rng.integers(3))       # 0 none, 1 background, 2 the [net] value
        d.blur = (0, 1, opt.blur)[mode]
    if opt.gaussian_noise and rng.integers(2):
        d.noise = opt.gaussian_noise
    d.noise_seed = int(rng.integers(1 << 31))
    return d


def _trunc(x: float) -> int:
    """C's float -> int conversion (toward zero)."""
    return int(x)


def _precalc(lo: float, hi: float, r: float) -> float:
    """darknet's rand_precalc_random."""
    lo, hi = min(lo, hi), max(lo, hi)
    return r * (hi - lo) + lo


@dataclass
class Crop:
    """The source rectangle of the jitter crop in original pixels; negative offsets pad."""
    ow: int
    oh: int
    pleft: int
    ptop: int
    pright: int
    pbot: int
    swidth: int
    sheight: int
    reset: bool = False      # darknet's "WARNING: invalid resize": the whole image is used


def plan_crop(ow: int, oh: int, d: Draws, opt: Options, size: tuple,
              mosaic_piece: int | None = None, corner: bool = False) -> Crop:
    """The jitter crop of load_data_detection: ``jitter`` moves each edge by up to
    jitter * side, [yolo] ``resize`` scales the crop, ``letter_box`` pads to the network's
    aspect, and in a mosaic ``corner`` pushes the padding toward the mosaic centre."""
    w, h = size
    dw, dh = _trunc(ow * opt.jitter), _trunc(oh * opt.jitter)
    down = 1 / opt.resize if opt.resize > 1 else opt.resize
    up = 1 / opt.resize if opt.resize < 1 else opt.resize
    min_rdw, min_rdh = _trunc(ow * (1 - 1 / down) / 2), _trunc(oh * (1 - 1 / down) / 2)
    max_rdw, max_rdh = _trunc(ow * (1 - 1 / up) / 2), _trunc(oh * (1 - 1 / up) / 2)
    pl, pr = _trunc(_precalc(-dw, dw, d.r[0])), _trunc(_precalc(-dw, dw, d.r[1]))
    hi_w, hi_h = (0, 0) if opt.resize < 1 else (max_rdw, max_rdh)
    pl = _trunc(pl + _precalc(min_rdw, hi_w, d.resize_r[0]))
    pr = _trunc(pr + _precalc(min_rdw, hi_w, d.resize_r[1]))
    if opt.crop_aspect == "image":                    # the height follows the width
        pt, pb = _same_aspect(ow, oh, pl, pr, d.r[2])
    else:                                             # darknet: its own two draws
        pt, pb = _trunc(_precalc(-dh, dh, d.r[2])), _trunc(_precalc(-dh, dh, d.r[3]))
        pt = _trunc(pt + _precalc(min_rdh, hi_h, d.resize_r[0]))
        pb = _trunc(pb + _precalc(min_rdh, hi_h, d.resize_r[1]))
    if opt.letter_box:
        net_ar = w / h
        if (ow / oh) / net_ar > 1:
            delta = (ow / net_ar - oh) / 2
            pt, pb = _trunc(pt - delta), _trunc(pb - delta)
        else:
            delta = (oh * net_ar - ow) / 2
            pl, pr = _trunc(pl - delta), _trunc(pr - delta)
    if mosaic_piece is not None and corner:
        pl, pr, pt, pb = _to_corner(mosaic_piece, d.flip, pl, pr, pt, pb)
    sw, sh = ow - pl - pr, oh - pt - pb
    if sw <= 0 or sh <= 0 or ow - pl <= 0 or oh - pt <= 0:
        return Crop(ow, oh, 0, 0, pr, pb, ow, oh, reset=True)   # pright/pbot kept, as darknet
    return Crop(ow, oh, pl, pt, pr, pb, sw, sh)


def _same_aspect(ow: int, oh: int, pl: int, pr: int, r: float) -> tuple:
    """(ptop, pbot) of a crop as tall as its width makes it at the image's aspect: the
    height's change, oh - round(oh * swidth / ow), split at the share ``r`` (darknet's ptop
    draw) - a taller crop than the image puts the image at that share of the way down."""
    change = oh - _roundl(oh * (ow - pl - pr) / ow)
    pt = _trunc(change * r)
    return pt, change - pt


def _to_corner(i, flip, pl, pr, pt, pb):
    """'move each 2nd image to the corner': all horizontal padding on the side away from the
    mosaic centre (the other side when flipped), likewise vertical."""
    left_piece = (i in (0, 2)) != flip          # its padding goes to the right edge
    if left_piece:
        pr, pl = pr + pl, 0
    else:
        pl, pr = pl + pr, 0
    if i in (0, 1):
        pb, pt = pb + pt, 0
    else:
        pt, pb = pt + pb, 0
    return pl, pr, pt, pb


# ----- geometric steps ----------------------------------------------------------------------------


def is_point(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 3] == 0) & (boxes[:, 4] == 0)


def crop_resize(image: np.ndarray, boxes: np.ndarray, crop: Crop, size: tuple,
                min_visible: float = 0.0) -> tuple:
    """Cut ``crop`` out of the image (outside it: the image's mean colour, cv::mean), resize it
    to ``size`` with INTER_LINEAR.  Boxes: darknet's correct_boxes - a box at (0, 0) or wholly
    outside the image is dropped, the rest mapped into the crop and clipped to it; a point is
    mapped and kept only inside.  ``min_visible`` > 0 (darkcfg's, not darknet's): a box
    with less than that share of its area inside the crop is dropped too (see Options)."""
    w, h = size
    x0, y0 = crop.pleft, crop.ptop
    if (x0, y0, crop.swidth, crop.sheight) == (0, 0, crop.ow, crop.oh):
        out = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    else:
        out = cv2.resize(_cut(image, x0, y0, crop.swidth, crop.sheight), (w, h),
                         interpolation=cv2.INTER_LINEAR)
    if out.ndim == 2:
        out = out[:, :, None]
    return out, _correct(boxes, crop, min_visible)


def _cut(image, x0, y0, sw, sh):
    ih, iw = image.shape[:2]
    ix0, iy0 = max(0, x0), max(0, y0)
    ix1, iy1 = min(iw, x0 + sw), min(ih, y0 + sh)
    top, left = iy0 - y0, ix0 - x0
    bottom, right = sh - top - (iy1 - iy0), sw - left - (ix1 - ix0)
    if ix1 > ix0 and iy1 > iy0 and top == bottom == left == right == 0:
        return image[iy0:iy1, ix0:ix1]
    # cv::mean (darknet's fill) as sum / count: cv2.sumElems is 30x faster than cv2.mean here
    mean = tuple(v / (ih * iw) for v in cv2.sumElems(image))
    if ix1 <= ix0 or iy1 <= iy0:                       # the crop misses the image
        out = np.empty((sh, sw, image.shape[2]), np.uint8)
        out[:] = np.round(mean[:image.shape[2]]).astype(np.uint8)
        return out
    return cv2.copyMakeBorder(image[iy0:iy1, ix0:ix1], top, bottom, left, right,
                              cv2.BORDER_CONSTANT, value=mean)


# Up to this many labels an image's box math runs on Python floats (the same IEEE doubles, the
# same operations, so the same results): numpy's per-call overhead outweighs a few boxes.
_FEW = 32


def _correct(boxes: np.ndarray, crop: Crop, min_visible: float = 0.0) -> np.ndarray:
    if not len(boxes):
        return boxes
    if len(boxes) <= _FEW:
        return _correct_rows(boxes, crop, min_visible)
    b = np.array(boxes, np.float64)
    x, y, bw, bh = b[:, 1], b[:, 2], b[:, 3], b[:, 4]
    pts = (bw == 0) & (bh == 0)
    edges = np.stack((x - bw / 2, x + bw / 2, y - bh / 2, y + bh / 2))     # l, r, t, b
    invalid = ((x == 0) & (y == 0)) | (edges[1] < 0) | (edges[3] < 0) | (edges[0] > 1) | \
        (edges[2] > 1)
    sx, sy = crop.ow / crop.swidth, crop.oh / crop.sheight
    dx, dy = crop.pleft / crop.swidth, crop.ptop / crop.sheight
    scale = np.array([[sx], [sx], [sy], [sy]])
    shift = np.array([[dx], [dx], [dy], [dy]])
    moved = edges * scale - shift
    l, r, t, btm = np.minimum(np.maximum(moved, 0), 1)
    if min_visible > 0:                                 # pts: zero area, never dropped here
        whole = (moved[1] - moved[0]) * (moved[3] - moved[2])
        invalid = invalid | (~pts & ((r - l) * (btm - t) < min_visible * whole))
    if pts.any():                                       # points: moved, not clipped
        px, py = x * sx - dx, y * sy - dy
        b[:, 1] = np.where(pts, px, (l + r) / 2)
        b[:, 2] = np.where(pts, py, (t + btm) / 2)
        b[:, 3] = np.where(pts, 0, r - l)
        b[:, 4] = np.where(pts, 0, btm - t)
        inside = (b[:, 1] >= 0) & (b[:, 1] <= 1) & (b[:, 2] >= 0) & (b[:, 2] <= 1)
        return b[~invalid & (~pts | inside)]
    b[:, 1], b[:, 2], b[:, 3], b[:, 4] = (l + r) / 2, (t + btm) / 2, r - l, btm - t
    return b[~invalid]


def _correct_rows(boxes: np.ndarray, crop: Crop, min_visible: float = 0.0) -> np.ndarray:
    """_correct, a row at a time."""
    sx, sy = crop.ow / crop.swidth, crop.oh / crop.sheight
    dx, dy = crop.pleft / crop.swidth, crop.ptop / crop.sheight
    out = []
    for c, x, y, bw, bh in boxes.tolist():
        l0, r0, t0, b0 = x - bw / 2, x + bw / 2, y - bh / 2, y + bh / 2
        if (x == 0 and y == 0) or r0 < 0 or b0 < 0 or l0 > 1 or t0 > 1:
            continue
        if bw == 0 and bh == 0:                         # a point: moved, kept only inside
            px, py = x * sx - dx, y * sy - dy
            if 0 <= px <= 1 and 0 <= py <= 1:
                out.append((c, px, py, 0.0, 0.0))
            continue
        l, r = min(max(l0 * sx - dx, 0.0), 1.0), min(max(r0 * sx - dx, 0.0), 1.0)
        t, b = min(max(t0 * sy - dy, 0.0), 1.0), min(max(b0 * sy - dy, 0.0), 1.0)
        if (r - l) * (b - t) < min_visible * (bw * sx) * (bh * sy):
            continue
        out.append((c, (l + r) / 2, (t + b) / 2, r - l, b - t))
    return np.array(out, np.float64).reshape(-1, 5)


def flip(image: np.ndarray, boxes: np.ndarray) -> tuple:
    """Horizontal flip (cv::flip(.., 1)); x -> 1 - x."""
    out = cv2.flip(image, 1)
    if out.ndim == 2:
        out = out[:, :, None]
    b = boxes.copy()
    b[:, 1] = 1 - b[:, 1]
    return out, b


def jitter(image: np.ndarray, boxes: np.ndarray, rng, opt: Options, size: tuple) -> tuple:
    """The jitter crop (+ [yolo] resize, + letter_box padding) resized to ``size``."""
    d = draw(rng, opt)
    crop = plan_crop(image.shape[1], image.shape[0], d, opt, size)
    return crop_resize(image, boxes, crop, size, opt.min_visible)


def letter_box(image: np.ndarray, boxes: np.ndarray, size: tuple) -> tuple:
    """darknet's training letter_box without jitter: the image centred in the network's aspect
    ratio, padded with its mean colour, resized to ``size``."""
    opt = Options(size[0], size[1], 1, jitter=0.0, letter_box=True)
    crop = plan_crop(image.shape[1], image.shape[0], Draws(), opt, size)
    return crop_resize(image, boxes, crop, size)


def fill_truth(boxes: np.ndarray, classes: int, size: tuple) -> tuple:
    """darknet's fill_truth_detection filters, in its order: class id >= classes, smaller than
    one network pixel (not points), centre outside (0, 1]; w, h above 1 clamped.  Returns the
    boxes and darknet's min_w_h (the smallest side of a kept box in network pixels, int)."""
    if not len(boxes):
        return boxes, 0
    w, h = size
    if len(boxes) <= _FEW:
        return _fill_truth_rows(boxes, classes, w, h)
    c, x, y, bw, bh = boxes.T
    pts = (bw == 0) & (bh == 0)
    keep = (c < classes) & (c >= 0) & (pts | ((bw >= 1.0 / w) & (bh >= 1.0 / h))) & \
        (x > 0) & (x <= 1) & (y > 0) & (y <= 1)
    b = boxes[keep]
    np.minimum(b[:, 3:5], 1, out=b[:, 3:5])
    real = b[~pts[keep]]
    min_w_h = int(min((real[:, 3] * w).min(), (real[:, 4] * h).min())) if len(real) else 0
    return b, min_w_h


def _fill_truth_rows(boxes: np.ndarray, classes: int, w: int, h: int) -> tuple:
    """fill_truth, a row at a time."""
    kept, side = [], math.inf
    for c, x, y, bw, bh in boxes.tolist():
        point = bw == 0 and bh == 0
        if (0 <= c < classes and (point or (bw >= 1.0 / w and bh >= 1.0 / h))
                and 0 < x <= 1 and 0 < y <= 1):
            bw, bh = min(bw, 1.0), min(bh, 1.0)
            kept.append((c, x, y, bw, bh))
            if not point:
                side = min(side, bw * w, bh * h)
    return np.array(kept, np.float64).reshape(-1, 5), int(side) if side < math.inf else 0


def shuffle_truncate(boxes: np.ndarray, rng, max_boxes: int) -> np.ndarray:
    """randomize_boxes, then the first ``max`` (darknet truncates before its filters)."""
    if len(boxes) > 1:
        boxes = boxes[rng.permutation(len(boxes))]
    return boxes[:max_boxes]


_SCRATCH = threading.local()


def _buffer(name: str, shape: tuple) -> np.ndarray:
    """A uint8 array of ``shape`` for an intermediate image, reused from call to call (one pool
    per thread): OpenCV writing into a warm buffer instead of a fresh allocation saved ~0.3 ms
    of the HSV step's ~1.3 ms per 416x416 image (measured, bench/data.py's images).  Never
    returned to a caller."""
    pool = _SCRATCH.__dict__
    flat = pool.get(name)
    n = math.prod(shape)
    if flat is None or flat.size < n:
        flat = pool[name] = np.empty(n, np.uint8)
    return flat[:n].reshape(shape)


# ----- pixel steps --------------------------------------------------------------------------------


def hsv(image: np.ndarray, boxes: np.ndarray, dhue: float, dsat: float, dexp: float,
        bgr: bool = False) -> tuple:
    """darknet's HSV step on the 8-bit image, with the OpenCV calls darknet's
    image_data_augmentation makes: RGB -> HSV (hue 0..179), split, ``hsv[1] *= dsat`` and
    ``hsv[2] *= dexp`` (Mat::convertTo with a scale: float32 product, rounded half to even,
    saturated - cv2.convertScaleAbs is the same arithmetic on these non-negative values),
    ``hsv[0] += 179 * dhue`` (cv::add of a scalar: the float32 shift rounded to an integer, then a
    saturating add, so a hue pushed below 0 sticks at 0; above 179 OpenCV's HSV -> RGB wraps
    it), merge, HSV -> RGB.  One channel: ``*= dexp`` only.  ``bgr``: the image is BGR (as
    decoded); the result is RGB all the same.  (A 3-channel cv2.LUT gives the same pixels but is
    ~0.3 ms slower per 416x416 image: OpenCV's multi-channel table lookup is a scalar loop.)"""
    if dsat == 1 and dexp == 1 and dhue == 0:
        return to_rgb(image, bgr), boxes
    if image.shape[2] < 3:
        return cv2.convertScaleAbs(image, alpha=float(np.float32(dexp))).reshape(image.shape), \
            boxes
    hsv_ = cv2.cvtColor(image, cv2.COLOR_BGR2HSV if bgr else cv2.COLOR_RGB2HSV,
                        dst=_buffer("hsv", image.shape))
    planes = [_buffer(f"plane{c}", image.shape[:2]) for c in range(3)]
    h, s, v = cv2.split(hsv_, planes)
    k = round(float(np.float32(179) * np.float32(dhue)))
    if k:
        cv2.add(h, k, dst=h)
    if dsat != 1:
        cv2.convertScaleAbs(s, dst=s, alpha=float(np.float32(dsat)))
    if dexp != 1:
        cv2.convertScaleAbs(v, dst=v, alpha=float(np.float32(dexp)))
    return cv2.cvtColor(cv2.merge(planes, hsv_), cv2.COLOR_HSV2RGB), boxes


def to_rgb(image: np.ndarray, bgr: bool) -> np.ndarray:
    if not bgr or image.shape[2] < 3:
        return image
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def blur(image: np.ndarray, boxes: np.ndarray, mode: int) -> tuple:
    """darknet's blur: 1 blurs the background (GaussianBlur 17x17, then every box's pixels
    copied back sharp); k > 1 blurs the whole image with ksize (k/2)*2+1."""
    if not mode:
        return image, boxes
    k = 17 if mode == 1 else (mode // 2) * 2 + 1
    out = cv2.GaussianBlur(image, (k, k), 0).reshape(image.shape)
    if mode == 1:
        ih, iw = image.shape[:2]
        for _, x, y, bw, bh in boxes:
            left, top = _trunc((x - bw / 2) * iw), _trunc((y - bh / 2) * ih)
            x0, y0 = max(0, left), max(0, top)
            x1, y1 = min(iw, left + _trunc(bw * iw)), min(ih, top + _trunc(bh * ih))
            if x1 > x0 and y1 > y0:
                out[y0:y1, x0:x1] = image[y0:y1, x0:x1]
    return out, boxes


def gaussian_noise(image: np.ndarray, boxes: np.ndarray, sigma: int, seed: int) -> tuple:
    """Zero-mean gaussian noise of stddev ``sigma`` (clamped to 0..127, 0-255 units) on every
    channel, added with saturation.  darknet's intent; its code differs twice (a bug, not
    matched): ``cv::randn(noise, 0, sigma)`` with scalar arguments fills only the first channel
    (Scalar(sigma) is (sigma, 0, 0, 0)), and ``noise`` is uint8, so negative draws saturate to
    0 and the noise only brightens the red channel."""
    sigma = min(max(int(sigma), 0), 127)
    if not sigma:
        return image, boxes
    c = image.shape[2]
    noise = np.empty(image.shape, np.int16)
    cv2.setRNGSeed(seed)
    cv2.randn(noise, (0,) * c, (sigma,) * c)
    return cv2.add(image, noise, dtype=cv2.CV_8U).reshape(image.shape), boxes


# ----- one image, mosaic --------------------------------------------------------------------------


def augment_image(image: np.ndarray, boxes: np.ndarray, rng, opt: Options, size: tuple,
                  mosaic_piece: int | None = None, corner: bool = False,
                  bgr: bool = False) -> tuple:
    """One image through darknet's whole per-image pipeline.  Returns (image at ``size``,
    boxes, the crop and the draws - a mosaic needs them).  ``bgr``: the image is BGR as
    OpenCV decodes it; the geometric steps do not care, and the HSV step's conversions take
    it to RGB at the network size (cheaper than darknet's BGR -> RGB of the whole image)."""
    d = draw(rng, opt)
    if mosaic_piece is not None:
        corner = bool(rng.integers(2))
    crop = plan_crop(image.shape[1], image.shape[0], d, opt, size, mosaic_piece, corner)
    boxes = shuffle_truncate(boxes, rng, opt.max_boxes)
    out, boxes = crop_resize(image, boxes, crop, size, opt.min_visible)
    if d.flip:
        out, boxes = flip(out, boxes)
    boxes, min_w_h = fill_truth(boxes, opt.classes, size)
    k = d.blur
    if k > 1 and min_w_h // 8 < k:          # no whole-image blur that would erase small boxes
        k = min_w_h // 8
    out, boxes = hsv(out, boxes, d.dhue, d.dsat, d.dexp, bgr)
    out, boxes = blur(out, boxes, k)
    if d.noise:
        out, boxes = gaussian_noise(out, boxes, d.noise, d.noise_seed)
    return out, boxes, crop, d


def plain(image: np.ndarray, boxes: np.ndarray, opt: Options, size: tuple,
          bgr: bool = False) -> tuple:
    """No augmentation: the resize (or letter_box) training would do with every draw
    neutral, and darknet's truth filter."""
    if opt.letter_box:
        o = Options(opt.width, opt.height, opt.classes, jitter=0.0, letter_box=True)
        crop = plan_crop(image.shape[1], image.shape[0], Draws(), o, size)
    else:
        crop = Crop(image.shape[1], image.shape[0], 0, 0, 0, 0, image.shape[1], image.shape[0])
    out, boxes = crop_resize(image, boxes[:opt.max_boxes], crop, size)
    return to_rgb(out, bgr), fill_truth(boxes, opt.classes, size)[0]


def mosaic_cut(rng, size: tuple) -> tuple:
    """The mosaic centre: rand_int(0.2 w, 0.8 w), rand_int(0.2 h, 0.8 h)."""
    w, h = size
    lo_x, hi_x = _trunc(w * 0.2), _trunc(w * 0.8)
    lo_y, hi_y = _trunc(h * 0.2), _trunc(h * 0.8)
    return int(rng.integers(lo_x, hi_x + 1)), int(rng.integers(lo_y, hi_y + 1))


def mosaic_shifts(crop: Crop, flipped: bool, size: tuple, cut: tuple) -> tuple:
    """(left, top, right, bottom) shifts of a piece: the width of its padding in network
    pixels (C ints), each at most the quadrant's side (darknet's left_shift...; left and right
    swapped for a flipped piece).

    darknet computes them as ``-pleft * w / ow``: the padding scaled by the network-to-image
    ratio, which equals the padding's width in the resized piece only when the crop is as wide
    as the image (``swidth == ow``).  The jitter crop (and [yolo] ``resize=``) makes it up to
    twice as wide, and then darknet's shift overshoots the padding: the strip between the true
    edge of the picture and the shifted one is cut from the pixels, while its boxes are moved
    across the cut onto the neighbouring piece's pixels (kept there unless mosaic_bound).
    darkcfg takes the padding's true width, ``-pleft * w / swidth`` (and nothing for darknet's
    "invalid resize" crop, which has no padding), so every box and point stays on its own
    picture; with ``swidth == ow`` the two formulas agree."""
    w, h = size
    cx, cy = cut
    lpad, rpad = max(0, -crop.pleft), max(0, crop.pleft + crop.swidth - crop.ow)
    tpad, bpad = max(0, -crop.ptop), max(0, crop.ptop + crop.sheight - crop.oh)
    if flipped:
        lpad, rpad = rpad, lpad
    return (min(cx, lpad * w // crop.swidth), min(cy, tpad * h // crop.sheight),
            min(w - cx, rpad * w // crop.swidth), min(h - cy, bpad * h // crop.sheight))


def mosaic_paste(canvas: np.ndarray, piece: np.ndarray, boxes: np.ndarray, quadrant: int,
                 cut: tuple, shifts: tuple, bound: bool) -> tuple:
    """Paste a piece's part into its quadrant of ``canvas`` (in place) and move its boxes with
    it (blend_truth_mosaic): clipped to the canvas, or to the quadrant with ``bound``; kept only
    if they then lie inside with 0 < w, h < 1 and over one pixel.  A point is kept only inside
    the quadrant, the one part of its picture that is pasted.  Returns (canvas, boxes)."""
    h, w = canvas.shape[:2]
    cx, cy = cut
    ls, ts, rs, bs = shifts
    sx = (w - cx - rs) if quadrant in (0, 2) else ls       # source column of the quadrant
    sy = (h - cy - bs) if quadrant in (0, 1) else ts
    qx0, qx1 = (0, cx) if quadrant in (0, 2) else (cx, w)
    qy0, qy1 = (0, cy) if quadrant in (0, 1) else (cy, h)
    canvas[qy0:qy1, qx0:qx1] = piece[sy:sy + qy1 - qy0, sx:sx + qx1 - qx0]
    if not len(boxes):
        return canvas, boxes
    b = boxes.copy()
    b[:, 1] += (qx0 - sx) / w
    b[:, 2] += (qy0 - sy) / h
    return canvas, _mosaic_keep(b, (w, h), (qx0, qy0, qx1, qy1), bound)


def _mosaic_keep(b: np.ndarray, size: tuple, qd: tuple, bound: bool) -> np.ndarray:
    w, h = size
    quad = qd if bound else None
    keep = []
    for row in b:
        xb, yb, wb, hb = row[1:5]
        if wb == 0 and hb == 0:                 # a point: inside its own quadrant, the
            x0, y0, x1, y1 = qd                 # only part of its picture that is pasted
            if x0 / w <= xb < x1 / w and y0 / h <= yb < y1 / h and xb > 0 and yb > 0:
                keep.append(row)
            continue
        left, right = _trunc((xb - wb / 2) * w), _trunc((xb + wb / 2) * w)
        top, bot = _trunc((yb - hb / 2) * h), _trunc((yb + hb / 2) * h)
        if quad is not None:
            left, top = max(left, quad[0]), max(top, quad[1])
            right, bot = min(right, quad[2]), min(bot, quad[3])
            xb, wb = (right + left) / 2 / w, (right - left) / w
            yb, hb = (bot + top) / 2 / h, (bot - top) / h
        else:                                   # darknet clips with the truncated edges
            if left < 0:
                xb, wb = xb - left / w / 2, wb + left / w
            if right > w:
                xb, wb = xb - (right - w) / w / 2, wb - (right - w) / w
            if top < 0:
                yb, hb = yb - top / h / 2, hb + top / h
            if bot > h:
                yb, hb = yb - (bot - h) / h / 2, hb - (bot - h) / h
            left, right = _trunc((xb - wb / 2) * w), _trunc((xb + wb / 2) * w)
            top, bot = _trunc((yb - hb / 2) * h), _trunc((yb + hb / 2) * h)
        if (left >= 0 and right <= w and top >= 0 and bot <= h and 0 < wb < 1 and 0 < hb < 1
                and 0 < xb < 1 and 0 < yb < 1 and wb > 1 / w and hb > 1 / h):
            keep.append([row[0], xb, yb, wb, hb])
    return np.asarray(keep, np.float64).reshape(-1, 5)


def mosaic(load, rng, opt: Options, size: tuple, bgr: bool = False) -> tuple:
    """darknet's mosaic: four images, each through the whole pipeline at ``size`` with its own
    draws, the part of each that falls in its quadrant (0 top-left, 1 top-right, 2 bottom-left,
    3 bottom-right) around a random centre.  ``load(rng) -> (image, boxes, path)`` picks and
    reads an image.  Returns (image, boxes, paths); at most ``max`` boxes in all."""
    w, h = size
    cut = mosaic_cut(rng, size)
    canvas, kept, paths = None, [], []
    for q in range(4):
        image, boxes, path = load(rng)
        paths.append(path)
        piece, boxes, crop, d = augment_image(image, boxes, rng, opt, size, mosaic_piece=q,
                                              bgr=bgr)
        if canvas is None:
            canvas = np.zeros((h, w, piece.shape[2]), np.uint8)
        shifts = mosaic_shifts(crop, d.flip, size, cut)
        canvas, boxes = mosaic_paste(canvas, piece, boxes, q, cut, shifts, opt.mosaic_bound)
        kept.append(boxes)
    boxes = np.concatenate(kept)[:opt.max_boxes]
    return canvas, boxes, paths


# ----- multi-scale --------------------------------------------------------------------------------


def _roundl(x: float) -> int:
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


def check_choices(multiscale: str, min_visible: float | None,
                  crop_aspect: str | None = None) -> str | None:
    """What is wrong with darkcfg's augmentation choices (Options), or None.  ``min_visible``
    and ``crop_aspect`` None: the defaults (MIN_VISIBLE, CROP_ASPECT)."""
    if multiscale not in ("centred", "darknet"):
        return f"multiscale must be centred or darknet, got {multiscale!r}"
    if min_visible is not None and not 0 <= min_visible <= 1:
        return f"min_visible must be between 0 and 1, got {min_visible!r}"
    if crop_aspect is not None and crop_aspect not in CROP_ASPECTS:
        return f"crop_aspect must be {' or '.join(CROP_ASPECTS)}, got {crop_aspect!r}"
    return None


def network_size(opt: Options, iteration: int, rng_for_block) -> tuple:
    """The [yolo] random=... multi-scale size of ``iteration`` (train_detector): a new size
    every 10 iterations from r = rand_scale(coef) (coef 1.4 for random=1); the largest size
    for the first 10 iterations and once ``iteration > max_batches - 100`` (max_batches > 0).
    ``rng_for_block(block)`` gives the Generator of one block of 10 iterations.

    ``opt.multiscale``:

    * ``"darknet"``: darknet's ``dim = roundl(r * init / step + 1) * step`` (kept at init when
      r < 1 would round above it), largest ``roundl(coef * init / step + 1) * step``.  The
      "+1" adds one step (32 px) to every size: at 416 that is YOLOv2's 320..608, but at 128 it
      is 128..224 - the network never sees its own size going up nor anything smaller, and on
      issue #22's 128x128 recipe with jitter it cost 6 mAP points (docs/decisions.md).
    * ``"centred"`` (default): ``dim = roundl(r * init / step) * step`` - r = 1 is the cfg's
      own size, the range is the documented "1/1.4 to 1.4 of the network size" (at 128:
      96..192; at 416: 288..576) - and the last 100 iterations run at the cfg's own size, the
      one the model is judged at (darknet: the largest; on issue #22's recipe +0.9 and +1.0
      mAP points on two seeds, docs/decisions.md).

    darknet restarts its count of 10 in each run (a resumed run starts with 10 iterations at
    the largest size); darkcfg counts from iteration 0, so a resumed run continues the same
    sizes."""
    if not opt.random:
        return opt.width, opt.height
    if opt.multiscale not in ("centred", "darknet"):
        raise ValueError(f"multiscale must be centred or darknet, got {opt.multiscale!r}")
    coef = 1.4 if opt.random == 1 else opt.random
    step = opt.resize_step
    centred = opt.multiscale == "centred"
    plus = 0 if centred else 1
    block = iteration // 10
    iw, ih = opt.width, opt.height
    ending = opt.max_batches > 0 and block * 10 > opt.max_batches - 100
    if centred and ending and block:         # the last 100: the size the model is judged at
        return iw, ih
    largest = block == 0 or ending
    r = coef if largest else rand_scale(coef, rng_for_block(block))
    dw, dh = _roundl(r * iw / step + plus) * step, _roundl(r * ih / step + plus) * step
    if not largest and r < 1 and (dw > iw or dh > ih):
        dw, dh = iw, ih
    return max(dw, step), max(dh, step)


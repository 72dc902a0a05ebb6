"""darkcfg.augment: each step draws a known image, then finds where the drawn rectangle went and
compares that with where the step says the box went.  Expected numbers are darknet's formulas
(src/data.c load_data_detection, correct_boxes, fill_truth_detection, blend_truth_mosaic;
src/image_opencv.cpp image_data_augmentation; src/detector.c multi-scale) worked by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from darkcfg.dataset import augment as A  # noqa: E402
from _images import BG, DOT_SIGMA, FG, canvas, dots  # noqa: E402


def found(img, thresh=(BG + FG) / 2):
    """(x0, y0, x1, y1) of the pixels brighter than thresh, or None."""
    ys, xs = np.nonzero(img[:, :, 0] > thresh)
    if not len(xs):
        return None
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def pixels(box, size):
    """A normalized [.., cx, cy, w, h] row -> (x0, y0, x1, y1) pixels."""
    w, h = size
    _, cx, cy, bw, bh = box
    return (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h


def assert_at(img, box, size, tol=1.01):
    got = found(img)
    assert got is not None
    np.testing.assert_allclose(got, pixels(box, size), atol=tol)


def crop(ow, oh, pl, pt, pr, pb):
    return A.Crop(ow, oh, pl, pt, pr, pb, ow - pl - pr, oh - pt - pb)


# ----- jitter crop ------------------------------------------------------------------------------


def test_crop_inside_then_resize():
    img, boxes = canvas(200, 100, [(60, 30, 100, 60)])
    out, b = A.crop_resize(img, boxes, crop(200, 100, 20, 10, 40, 20), (280, 140))   # 140x70, x2
    assert out.shape == (140, 280, 3)
    np.testing.assert_allclose(pixels(b[0], (280, 140)), (80, 40, 160, 100), atol=1e-9)
    assert_at(out, b[0], (280, 140))


def test_crop_with_padding_fills_the_mean_colour():
    img, boxes = canvas(200, 100, [(60, 30, 100, 60)])
    out, b = A.crop_resize(img, boxes, crop(200, 100, -30, -20, -10, 0), (240, 120))   # 1:1
    np.testing.assert_allclose(pixels(b[0], (240, 120)), (90, 50, 130, 80), atol=1e-9)
    assert_at(out, b[0], (240, 120))
    mean = round(BG + (FG - BG) * 40 * 30 / (200 * 100))      # cv::mean of the original
    assert (out[5, 5] == mean).all() and (out[115, 235] == mean).all()


@pytest.mark.parametrize("copies", [1, A._FEW + 1])     # Python floats / numpy (A._FEW)
def test_crop_clips_and_drops_boxes_as_correct_boxes(copies):
    img, boxes = canvas(200, 100, [(0, 0, 40, 40), (150, 60, 190, 90)])
    boxes = np.vstack([boxes, [0, 0, 0, .1, .1],                  # x = y = 0: invalid
                       [0, 1.2, .5, .1, .1],                      # wholly outside
                       [2, .05, .5, 0, 0], [2, .5, .25, 0, 0]])   # points: out, in
    out, b = A.crop_resize(img, np.tile(boxes, (copies, 1)), crop(200, 100, 20, 0, 0, 0),
                           (180, 100))
    assert len(b) == 3 * copies
    b = b[:3]
    np.testing.assert_allclose(pixels(b[0], (180, 100)), (0, 0, 20, 40), atol=1e-9)  # clipped
    np.testing.assert_allclose(pixels(b[1], (180, 100)), (130, 60, 170, 90), atol=1e-9)
    np.testing.assert_allclose(b[2], [2, (100 - 20) / 180, .25, 0, 0], rtol=0, atol=1e-12)
    mask = out[:, :, 0] > (BG + FG) / 2
    assert mask[:40, :20].all() and mask[60:90, 130:170].all()
    assert mask.sum() == 20 * 40 + 40 * 30


@pytest.mark.parametrize("copies", [1, A._FEW + 1])
@pytest.mark.parametrize("min_visible, kept", [(0, "ABC"), (.2, "ABC"), (.25, "AC"), (.5, "C"),
                                               (1, "C")])
def test_min_visible_drops_boxes_mostly_outside_the_crop(copies, min_visible, kept):
    """darkcfg's departure: a crop keeps a box only with at least ``min_visible`` of its area
    inside.  The crop starts at x = 35 of 200: A (x 10..50) shows 15/40 = 0.375 of itself, B
    (x 0..44) 9/44 = 0.2045, C (x 100..140) all of it; darknet's rule (0) keeps all three."""
    img, boxes = canvas(200, 100, [(10, 20, 50, 60), (0, 50, 44, 90), (100, 20, 140, 60)])
    boxes[:, 0] = [0, 1, 2]
    out, b = A.crop_resize(img, np.tile(boxes, (copies, 1)), crop(200, 100, 35, 0, 0, 0),
                           (165, 100), min_visible)
    assert "".join("ABC"[int(c)] for c in b[:len(kept), 0]) == kept
    assert len(b) == len(kept) * copies
    if "A" in kept:         # a kept box is clipped to the crop as darknet's
        np.testing.assert_allclose(pixels(b[0], (165, 100)), (0, 20, 15, 60), atol=1e-9)


def test_the_trainers_options_drop_boxes_mostly_outside_the_crop():
    """The Options the trainer uses carry darkcfg's default min_visible to the jitter crop. The
    crop is drawn by hand (jitter .3 of 200: pleft = int(r * 120 - 60) = 37 for r = 97.5/120):
    A (x 10..50) shows 13/40 = 0.325 of itself and stays, B (x 0..40) 3/40 = 0.075 and goes -
    for any default between the two (darknet's rule, 0, would keep B)."""
    from darkcfg.dataset import MIN_VISIBLE
    img, boxes = canvas(200, 100, [(10, 20, 50, 60), (0, 50, 40, 90), (100, 20, 140, 60)])
    boxes[:, 0] = [0, 1, 2]
    opt = A.Options(163, 100, 3, jitter=.3, flip=False, crop_aspect="darknet")
    assert opt.min_visible == MIN_VISIBLE and 0.075 < MIN_VISIBLE < 0.325
    c = A.plan_crop(200, 100, A.Draws(r=(97.5 / 120, .5, .5, .5)), opt, (163, 100))
    assert (c.pleft, c.ptop, c.pright, c.pbot) == (37, 0, 0, 0)
    _, b = A.crop_resize(img, boxes, c, (163, 100), opt.min_visible)
    assert b[:, 0].tolist() == [0, 2]
    assert A.check_choices("centred", 1.5) and A.check_choices("centred", -.1)
    assert A.check_choices("centred", 0) is None and A.check_choices("x", 0)


@pytest.mark.parametrize("r, resize, expect", [
    # ow=200, oh=100, jitter .3: dw=60, dh=30; pleft=int(r1*120-60), ...
    ((0, 1, .5, .25), 1.0, (-60, 0, 60, -15)),
    # resize 1.5: min_rdw=int(200*(1-1.5)/2)=-50, max_rdw=int(200*(1-1/1.5)/2)=33,
    # min_rdh=-25, max_rdh=16; resize_r=(.5, 1): pleft=int(-60+(-8.5))=-68, pright=int(60+33)=93,
    # ptop=int(0+(-4.5))=-4, pbot=int(-15+16)=1
    ((0, 1, .5, .25), 1.5, (-68, -4, 93, 1)),
    # resize .5 (downsize only): min_rdw=int(200*(1-2)/2)=-100, min_rdh=-50; U[min, 0]:
    # pleft=int(-60-50)=-110, pright=int(60+0)=60, ptop=int(0-25)=-25, pbot=int(-15+0)=-15
    ((0, 1, .5, .25), 0.5, (-110, -25, 60, -15)),
])
def test_plan_crop_darknet_arithmetic(r, resize, expect):
    opt = A.Options(416, 416, 1, jitter=.3, resize=resize, crop_aspect="darknet")
    d = A.Draws(resize_r=(.5, 1.0), r=r)
    c = A.plan_crop(200, 100, d, opt, (416, 416))
    assert (c.pleft, c.ptop, c.pright, c.pbot) == expect
    assert (c.swidth, c.sheight) == (200 - expect[0] - expect[2], 100 - expect[1] - expect[3])


@pytest.mark.parametrize("r, expect", [
    # ow=200, oh=100, jitter .3: pleft=int(r1*120-60), pright=int(r2*120-60) as darknet's; the
    # height follows: change = 100 - roundl(100*swidth/200), ptop=int(change*r3), pbot=rest
    ((0, 1, .5, .25), (-60, 0, 60, 0)),             # swidth 200: the image's own height
    ((1, 1, .25, .9), (60, 15, 60, 45)),            # swidth 80 -> 40 tall: change 60, 15 on top
    ((0, 0, .3, 0), (-60, -18, -60, -42)),          # swidth 320 -> 160 tall: change -60
    ((.6, .55, .5, 0), (12, 4, 6, 5)),              # swidth 182 -> roundl(91) = 91: change 9
])
def test_plan_crop_keeps_the_image_aspect(r, expect):
    """darkcfg's default crop_aspect "image": the crop's width as darknet draws it, its height
    at the image's aspect, placed by darknet's ptop draw - worked out by hand above."""
    opt = A.Options(416, 416, 1, jitter=.3)
    assert opt.crop_aspect == "image"
    c = A.plan_crop(200, 100, A.Draws(r=r), opt, (416, 416))
    assert (c.pleft, c.ptop, c.pright, c.pbot) == expect
    assert c.swidth == 2 * c.sheight
    assert A.check_choices("centred", None, "darknet") is None
    assert A.check_choices("centred", None, "stretch")


def test_plan_crop_invalid_resize_uses_the_whole_image():
    opt = A.Options(416, 416, 1, jitter=.6)          # dw=120: r=(1, 1) crops 240 of 200
    c = A.plan_crop(200, 100, A.Draws(r=(1, 1, .5, .5)), opt, (416, 416))
    assert c.reset and (c.pleft, c.ptop, c.swidth, c.sheight) == (0, 0, 200, 100)


def test_letter_box_pads_to_the_network_aspect():
    # 200x100 into 64x64: darknet pads top and bottom by (200/1 - 100)/2 = 50 each
    img, boxes = canvas(200, 100, [(60, 30, 100, 60)])
    out, b = A.letter_box(img, boxes, (64, 64))
    s = 64 / 200
    np.testing.assert_allclose(pixels(b[0], (64, 64)),
                               (60 * s, 80 * s, 100 * s, 110 * s), atol=1e-9)
    assert_at(out, b[0], (64, 64), tol=1.5)
    mean = round(BG + (FG - BG) * 40 * 30 / (200 * 100))
    assert (out[2, 32] == mean).all() and (out[61, 32] == mean).all()


def test_flip_mirrors_pixels_and_boxes():
    img, boxes = canvas(100, 50, [(10, 5, 30, 45)])
    out, b = A.flip(img, boxes)
    np.testing.assert_allclose(pixels(b[0], (100, 50)), (70, 5, 90, 45), atol=1e-9)
    assert_at(out, b[0], (100, 50), tol=0)


# ----- the truth filter -------------------------------------------------------------------------


@pytest.mark.parametrize("copies", [1, A._FEW + 1])     # Python floats / numpy (A._FEW)
def test_fill_truth_drops_as_darknet(copies):
    boxes = np.array([[0, .5, .5, .2, .2],
                      [3, .5, .5, .2, .2],              # class 3 >= classes 2
                      [1, .5, .5, .009, .2],            # under one pixel of a 100-wide net
                      [1, .5, .5, 0, 0],                # a keypoint: no size rule
                      [1, 0, .5, .2, .2],               # x = 0 is outside (0, 1]
                      [1, .5, 1, 1.5, .2]])             # y = 1 is inside (0, 1]; w 1.5 -> 1
    b, min_w_h = A.fill_truth(np.tile(boxes, (copies, 1)), 2, (100, 50))
    np.testing.assert_array_equal(b, np.tile([[0, .5, .5, .2, .2], [1, .5, .5, 0, 0],
                                              [1, .5, 1, 1, .2]], (copies, 1)))
    assert min_w_h == 10                                 # .2 * 50 px
    assert A.fill_truth(np.tile(boxes[3:4], (copies, 1)), 2, (100, 50))[1] == 0   # points only


def test_shuffle_then_truncate_to_max():
    boxes = np.array([[k, .5, .5, .1, .1] for k in range(10)], float)
    b = A.shuffle_truncate(boxes, np.random.default_rng(0), 4)
    assert len(b) == 4 and len(set(b[:, 0])) == 4


# ----- pixels -----------------------------------------------------------------------------------


def one(rgb):
    return np.array([[rgb]], np.uint8)


@pytest.mark.parametrize("rgb, dhue, dsat, dexp, expect", [
    ((255, 0, 0), 0, 1, .5, (128, 0, 0)),            # V 255 * .5 = 127.5 -> 128 (even)
    ((255, 0, 0), 0, .5, 1, (255, 127, 127)),        # S 128: min = 255 * (1 - 128/255)
    ((255, 0, 0), 60 / 179, 1, 1, (0, 255, 0)),      # H 0 + 60 = 60 (120 degrees): green
    ((0, 255, 0), -.5, 1, 1, (255, 0, 0)),           # H 60 - 89.5 saturates at 0: red, not
])                                                   # the wrapped 150 (magenta) a float HSV gives
def test_hsv_is_opencv_8bit_arithmetic(rgb, dhue, dsat, dexp, expect):
    out, _ = A.hsv(one(rgb), np.zeros((0, 5)), dhue, dsat, dexp)
    assert tuple(out[0, 0]) == expect


def test_hsv_shift_is_rounded_before_the_add():
    # cv::add(hsv[0], 179 * dhue) rounds the scalar first (half to even), then adds: with a
    # shift of exactly 2.5 (float32), hue 1 (RGB 255, 9, 0: 60 * 9/255 / 2 = 1.06 -> 1) becomes
    # 1 + 2 = 3 (6 degrees: G = 255 * 6/60 = 25.5), not rint(1 + 2.5) = 4 (8 degrees: G = 34)
    dhue = float(np.float32(2.5 / 179))
    assert np.float32(179) * np.float32(dhue) == 2.5
    out, _ = A.hsv(one((255, 9, 0)), np.zeros((0, 5)), dhue, 1, 1)
    assert out[0, 0, 0] == 255 and out[0, 0, 2] == 0 and abs(int(out[0, 0, 1]) - 25.5) <= .5


def test_hsv_matches_darknets_per_channel_mat_ops():
    # darknet: split the HSV image, hsv[1] *= dsat, hsv[2] *= dexp (Mat::convertTo with a
    # scale: cv2.convertScaleAbs on these non-negative values), hsv[0] += 179 * dhue (cv::add
    # of a scalar, saturating), merge, back to RGB - here with OpenCV's own primitives
    rng = np.random.default_rng(2)
    img = cv2.GaussianBlur(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8), (5, 5), 0)
    for dhue, dsat, dexp in [(.07, 1.3, .8), (-.1, 1 / 1.5, 1.5), (.0865, 1.0, 1 / 1.2)]:
        h, s, v = cv2.split(cv2.cvtColor(img, cv2.COLOR_RGB2HSV))
        h = cv2.add(h, 179 * dhue)
        s, v = cv2.convertScaleAbs(s, alpha=dsat), cv2.convertScaleAbs(v, alpha=dexp)
        ref = cv2.cvtColor(cv2.merge((h, s, v)), cv2.COLOR_HSV2RGB)
        out, _ = A.hsv(img, np.zeros((0, 5)), dhue, dsat, dexp)
        np.testing.assert_array_equal(out, ref)


def test_blur_background_keeps_boxes_sharp():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    boxes = np.array([[0, .5, .5, .25, .5]])            # pixels x 30..50, y 15..45
    out, _ = A.blur(img, boxes, 1)
    np.testing.assert_array_equal(out[15:45, 30:50], img[15:45, 30:50])
    ref = cv2.GaussianBlur(img, (17, 17), 0)
    np.testing.assert_array_equal(out[:15], ref[:15])
    assert out[:15].std() < img[:15].std() / 3
    out, _ = A.blur(img, boxes, 6)                      # ksize (6/2)*2+1 = 7, whole image
    np.testing.assert_array_equal(out, cv2.GaussianBlur(img, (7, 7), 0))


def test_gaussian_noise_zero_mean_on_every_channel():
    img = np.full((200, 200, 3), 100, np.uint8)
    img[:10] = 250
    out, _ = A.gaussian_noise(img, np.zeros((0, 5)), 20, seed=1)
    diff = out[10:].astype(float) - 100
    for ch in range(3):                                  # darknet's intent, not its R-only bug
        assert abs(diff[..., ch].mean()) < 0.5 and abs(diff[..., ch].std() - 20) < 0.5
    assert out[:10].max() == 255                         # saturated, not wrapped
    again, _ = A.gaussian_noise(img, np.zeros((0, 5)), 20, seed=1)
    np.testing.assert_array_equal(out, again)
    same, _ = A.gaussian_noise(img, np.zeros((0, 5)), 0, seed=1)
    assert same is img


def test_blur_cap_skips_whole_blur_for_small_boxes():
    # darknet: if min_w_h / 8 < blur and blur > 1, blur = min_w_h / 8; a 12 px box gives 1,
    # the background mode; the box stays sharp
    img, boxes = canvas(100, 100, [(40, 40, 52, 52)])
    opt = A.Options(100, 100, 1, jitter=0, flip=False, blur=9)
    rng = _FixedRng(random=.0, integer=2)               # blur mode 2 = the [net] value 9
    out, b, _, _ = A.augment_image(img, boxes, rng, opt, (100, 100))
    np.testing.assert_array_equal(out[40:52, 40:52], img[40:52, 40:52])


class _FixedRng:
    """A stand-in Generator returning fixed draws."""

    def __init__(self, random=.5, integer=1):
        self.r, self.i = random, integer

    def random(self):
        return self.r

    def integers(self, lo, hi=None):
        return min(self.i, (hi if hi is not None else lo) - 1)

    def permutation(self, n):
        return np.arange(n)


# ----- the whole per-image pipeline -------------------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
def test_augment_image_boxes_follow_pixels(seed):
    img, boxes = canvas(160, 120, [(50, 40, 90, 70)])
    opt = A.Options(96, 64, 1, jitter=.3, resize=1.5, flip=True)
    out, b, c, d = A.augment_image(img, boxes, np.random.default_rng(seed), opt, (96, 64))
    assert out.shape == (64, 96, 3)
    if len(b):
        tol = 1.0 + max(96 / c.swidth, 64 / c.sheight)   # bilinear edges at this scale
        np.testing.assert_allclose(found(out), pixels(b[0], (96, 64)), atol=tol)
    else:                                                # cropped away, or under one pixel
        got = found(out)
        assert got is None or (got[2] - got[0]) * (got[3] - got[1]) <= 2


def test_keypoints_move_as_points():
    img = np.full((100, 200, 3), BG, np.uint8)
    img[29:32, 149:152] = FG                             # a dot at (150.5, 30.5) px
    pts = np.array([[0, 150.5 / 200, 30.5 / 100, 0, 0], [1, .99, .5, 0, 0]])
    out, b = A.crop_resize(img, pts, crop(200, 100, 20, 0, 20, 0), (160, 100))
    out, b = A.flip(out, b)
    assert len(b) == 1 and (b[:, 3:] == 0).all()      # x = 198 px is outside the crop 20..180
    np.testing.assert_allclose(b[0, 1:3], ((160 - 130.5) / 160, .305), atol=1e-9)
    x0, y0, x1, y1 = found(out)
    assert abs((x0 + x1) / 2 - (160 - 130.5)) <= 1 and abs((y0 + y1) / 2 - 30.5) <= 1
    # a point outside is dropped, never clamped to the edge as a box edge would be
    out, b = A.crop_resize(img, pts[1:], crop(200, 100, 0, 0, 40, 0), (160, 100))
    assert len(b) == 0
    out, b = A.crop_resize(img, pts[1:], crop(200, 100, 0, 0, 0, 0), (160, 100))
    np.testing.assert_allclose(b[0, 1:3], (.99, .5))


# ----- mosaic -----------------------------------------------------------------------------------


def test_mosaic_paste_quadrants_and_shifts():
    size, cut = (100, 80), (40, 30)
    piece, boxes = canvas(100, 80, [(70, 50, 90, 70)])
    c = np.zeros((80, 100, 3), np.uint8)
    c, b = A.mosaic_paste(c, piece, boxes, 0, cut, (0, 0, 0, 0), bound=False)
    # quadrant 0 shows the piece's x 60..100, y 50..80: the box lands at x 10..30, y 0..20
    np.testing.assert_allclose(pixels(b[0], size), (10, 0, 30, 20), atol=1e-6)
    assert found(c[:30, :40]) == (10, 0, 30, 20)
    assert (c[30:] == 0).all() and (c[:, 40:] == 0).all()
    # a right shift of 10 (padding on the piece's right) shows x 50..90: box 80..100 -> 30..50,
    # across the cut into quadrant 1; darknet keeps it there unless mosaic_bound
    piece, boxes = canvas(100, 80, [(80, 50, 100, 70)])
    c = np.zeros((80, 100, 3), np.uint8)
    _, b = A.mosaic_paste(c, piece, boxes, 0, cut, (0, 0, 10, 0), bound=False)
    np.testing.assert_allclose(pixels(b[0], size), (30, 0, 50, 20), atol=1e-6)
    _, b = A.mosaic_paste(c, piece, boxes, 0, cut, (0, 0, 10, 0), bound=True)
    np.testing.assert_allclose(pixels(b[0], size), (30, 0, 40, 20), atol=1e-6)
    # quadrant 3 with a left shift of 5 and a top shift of 4 shows x 5..65, y 4..54
    piece, boxes = canvas(100, 80, [(10, 10, 30, 20)])
    c = np.zeros((80, 100, 3), np.uint8)
    c, b = A.mosaic_paste(c, piece, boxes, 3, cut, (5, 4, 0, 0), bound=True)
    np.testing.assert_allclose(pixels(b[0], size), (45, 36, 65, 46), atol=1e-6)
    assert found(c) == (45, 36, 65, 46)


def test_mosaic_shifts_are_the_padding_width():
    # the padding in network pixels, C ints: left 33 of 186 source columns -> 33*100/186 = 17
    # (17.7 truncated), top 10*80/180 = 4, bottom 50*80/180 = 22; pright = 7 pads nothing.
    # (darknet's -pleft*w/ow would say 20, 6, 33: more than the padding of this wide crop)
    c = A.Crop(160, 120, -33, -10, 7, -50, 186, 180)
    assert A.mosaic_shifts(c, False, (100, 80), (40, 30)) == (17, 4, 0, 22)
    # flipped: left and right swap
    assert A.mosaic_shifts(c, True, (100, 80), (40, 30)) == (0, 4, 17, 22)
    # a crop as wide as the image, the case darknet's formula is right: 20*100/160 = 12
    c = A.Crop(160, 120, -20, 0, 20, 0, 160, 120)
    assert A.mosaic_shifts(c, False, (100, 80), (40, 30)) == (12, 0, 0, 0)
    # each at most the quadrant's side: 90 of 200 -> 45 left, capped at the cut (40)
    c = A.Crop(160, 120, -90, 0, 50, 0, 200, 120)
    assert A.mosaic_shifts(c, False, (100, 80), (40, 30))[0] == 40
    # darknet's "invalid resize" crop is the whole image: no padding, whatever pright was
    c = A.Crop(160, 120, 0, 0, -400, -300, 160, 120, reset=True)
    assert A.mosaic_shifts(c, False, (100, 80), (40, 30)) == (0, 0, 0, 0)


def test_mosaic_corner_moves_padding_toward_the_centre():
    d = A.Draws(r=(0, 0, 0, 0))                         # every edge padded by dw / dh
    opt = A.Options(64, 64, 1, jitter=.25)
    c0 = A.plan_crop(100, 100, d, opt, (64, 64), mosaic_piece=0, corner=True)
    assert (c0.pleft, c0.pright, c0.ptop, c0.pbot) == (0, -50, 0, -50)
    c3 = A.plan_crop(100, 100, d, opt, (64, 64), mosaic_piece=3, corner=True)
    assert (c3.pleft, c3.pright, c3.ptop, c3.pbot) == (-50, 0, -50, 0)
    # a flipped piece pads the other side: the flip then brings the padding outward again
    d.flip = True
    c0 = A.plan_crop(100, 100, d, opt, (64, 64), mosaic_piece=0, corner=True)
    assert (c0.pleft, c0.pright, c0.ptop, c0.pbot) == (-50, 0, 0, -50)


@pytest.mark.parametrize("seed", range(6))
def test_mosaic_boxes_cover_the_pasted_rectangles(seed):
    opt = A.Options(96, 96, 1, jitter=.2, flip=True, mosaic=True, mosaic_bound=True)
    rects = [(20, 20, 60, 50), (100, 30, 140, 90), (40, 70, 90, 110), (10, 10, 150, 110)]

    def load(rng, k=[0]):
        img, boxes = canvas(160, 120, [rects[k[0] % 4]])
        k[0] += 1
        return img, boxes, f"{k[0]}.jpg"
    out, b, paths = A.mosaic(load, np.random.default_rng(seed), opt, (96, 96))
    assert out.shape == (96, 96, 3) and len(paths) == 4
    mask = np.zeros((96, 96), bool)
    for row in b:
        x0, y0, x1, y1 = pixels(row, (96, 96))
        mask[int(round(y0)):int(round(y1)), int(round(x0)):int(round(x1))] = True
    white = out[:, :, 0] > (BG + FG) / 2
    # every bright pixel is inside a box, bar bilinear edges and boxes under one pixel
    assert (white & ~mask).sum() <= 3 * 96
    # and boxes are bright inside (clipped to the quadrant with mosaic_bound)
    assert (mask & ~white).sum() <= 3 * 96


# ----- every box and point on its own picture's pixels (the pixels are the witness) ----------

SOURCE = (60, 110, 160, 210)          # channel 0 of source image k, everywhere (padding too)
RECTS = [(x, y, x + 24, y + 18) for x in (10, 63, 116) for y in (8, 48, 88)]


def source(k, points=False):
    """Source image k (160x120): channel 0 says which image a pixel came from, channel 1 is
    250 inside nine 24x18 rectangles; labels of class k: the rectangles, or their centres."""
    img, rows = canvas(160, 120, RECTS, bg=0, fg=250)
    img[:, :, 0], img[:, :, 2] = SOURCE[k], 0
    rows[:, 0] = k
    if points:
        rows[:, 3:] = 0
    return img, rows


def mine(out, k):
    """Pixels of source k's rectangles in an augmented image."""
    return (np.abs(out[:, :, 0].astype(int) - SOURCE[k]) <= 2) & (out[:, :, 1] > 200)


def assert_labels_on_their_pixels(out, b, edges=()):
    """Each box's inside (1.5 px in from its edges) is its source's rectangle, each point is on
    one; and every rectangle of 4x4 px or more has its box (every whole one, its point).
    ``edges``: the canvas columns / rows where a piece's picture may end (the mosaic cut)."""
    h, w = out.shape[:2]
    pts = A.is_point(b)
    for k, x, y, bw, bh in b[~pts]:
        x0, x1 = math.ceil((x - bw / 2) * w + 1.5), math.floor((x + bw / 2) * w - 1.5)
        y0, y1 = math.ceil((y - bh / 2) * h + 1.5), math.floor((y + bh / 2) * h - 1.5)
        if x1 > x0 and y1 > y0:
            assert mine(out[y0:y1, x0:x1], int(k)).all(), ("box", k, x * w, y * h)
    for k, x, y, _, _ in b[pts]:
        assert mine(out[int(y * h):int(y * h) + 1, int(x * w):int(x * w) + 1], int(k)).all(), \
            ("point", k, x * w, y * h)
    xs, ys = (0, w) + tuple(edges[:1]), (0, h) + tuple(edges[1:])
    for k in range(len(SOURCE)):
        n, _, stats, _ = cv2.connectedComponentsWithStats(mine(out, k).astype(np.uint8))
        for x0, y0, cw, ch, _ in stats[1:n]:
            if cw < 4 or ch < 4:
                continue
            near = [(r[1] - r[3] / 2) * w - 1.5 <= x0 and x0 + cw <= (r[1] + r[3] / 2) * w + 1.5
                    and (r[2] - r[4] / 2) * h - 1.5 <= y0 and y0 + ch <= (r[2] + r[4] / 2) * h
                    + 1.5 if r[3] else x0 <= r[1] * w <= x0 + cw and y0 <= r[2] * h <= y0 + ch
                    for r in b if r[0] == k and (r[3] > 0) != pts.all()]
            whole = all(abs(x0 - e) > 1 and abs(x0 + cw - e) > 1 for e in xs) and \
                all(abs(y0 - e) > 1 and abs(y0 + ch - e) > 1 for e in ys)
            if not pts.all() or whole:
                assert any(near), ("no label", k, x0, y0, cw, ch)


def cut_of(out):
    """The mosaic centre, read from the pixels: where source 0's picture ends."""
    top = np.abs(out[0, :, 0].astype(int) - SOURCE[0]) <= 2
    left = np.abs(out[:, 0, 0].astype(int) - SOURCE[0]) <= 2
    return int(np.argmin(top)), int(np.argmin(left))


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("resize", [.7, 1.0, 1.5])
@pytest.mark.parametrize("bound", [False, True])
@pytest.mark.parametrize("points", [False, True])
def test_mosaic_labels_stay_on_their_own_picture(seed, resize, bound, points):
    """[yolo]/[keypoint] resize= with mosaic: darknet's shift (-pleft * w / ow) overshoots the
    padding of a crop wider than the image, and moved boxes (points) onto the neighbouring
    picture; the shift is the padding's true width, so every label stays on its pixels."""
    opt = A.Options(96, 96, 4, jitter=.3, resize=resize, flip=True, mosaic=True,
                    mosaic_bound=bound, keypoints=points, min_visible=0)     # darknet's rule

    def load(rng, k=[0]):
        k[0] += 1
        return (*source((k[0] - 1) % 4, points), f"{k[0]}.png")
    out, b, _ = A.mosaic(load, np.random.default_rng(seed), opt, (96, 96))
    assert len(b)
    assert_labels_on_their_pixels(out, b, cut_of(out))


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("resize", [.7, 1.5])
@pytest.mark.parametrize("letter_box", [False, True])
@pytest.mark.parametrize("points", [False, True])
def test_jitter_resize_letter_box_labels_stay_on_their_pixels(seed, resize, letter_box, points):
    opt = A.Options(96, 64, 4, jitter=.3, resize=resize, flip=True, letter_box=letter_box,
                    keypoints=points, min_visible=0)                          # darknet's rule
    img, rows = source(2, points)
    out, b, _, _ = A.augment_image(img, rows, np.random.default_rng(seed), opt, (96, 64))
    assert_labels_on_their_pixels(out, b)


# ----- multi-scale ------------------------------------------------------------------------------


@pytest.mark.parametrize("r, coin, expect", [
    (.5, 1, 544),        # r = 1.2: roundl(1.2 * 13 + 1) = roundl(16.6) = 17 -> 544
    (.5, 0, 384),        # r = 1/1.2: roundl(10.83 + 1) = 12 -> 384
    (.025, 0, 416),      # r = 1/1.01: roundl(12.87 + 1) = 14 -> 448 > 416: kept at 416
    (0, 1, 448),         # r = 1: roundl(13 + 1) = 14 -> 448 (the "+1": never 416 going up)
    (1, 0, 320),         # r = 1/1.4: roundl(9.29 + 1) = 10 -> 320
])
def test_multiscale_darknet_formula(r, coin, expect):
    opt = A.Options(416, 416, 1, random=1, max_batches=10000, multiscale="darknet")
    rng = _FixedRng(random=r, integer=coin)
    assert A.network_size(opt, 25, lambda block: rng) == (expect, expect)


@pytest.mark.parametrize("init, r, coin, expect", [
    (416, .5, 1, 512),     # r = 1.2: roundl(1.2 * 13) = roundl(15.6) = 16 -> 512
    (416, 0, 1, 416),      # r = 1: the cfg's own size
    (416, 1, 0, 288),      # r = 1/1.4: roundl(9.29) = 9 -> 288
    (128, 0, 0, 128),      # r = 1
    (128, 1, 1, 192),      # r = 1.4: roundl(5.6) = 6 -> 192 (darknet's: 224)
    (128, 1, 0, 96),       # r = 1/1.4: roundl(2.86) = 3 -> 96 (darknet's: never below 128)
    (128, .25, 0, 128),    # r = 1/1.1: roundl(3.64) = 4 -> 128
])
def test_multiscale_centred_formula(init, r, coin, expect):
    opt = A.Options(init, init, 1, random=1, max_batches=10000)     # centred: the default
    rng = _FixedRng(random=r, integer=coin)
    assert A.network_size(opt, 25, lambda block: rng) == (expect, expect)


def test_multiscale_centred_sizes_straddle_the_cfgs():
    """Over many blocks, centred sizes at 128 are 96..192 with the cfg's own among them, and
    their mean is within a step of 128 (darknet's never go below 128)."""
    sizes = [A.network_size(A.Options(128, 128, 1, random=1, max_batches=10 ** 6), i,
                            lambda b: np.random.default_rng(b))[0] for i in range(10, 20000, 10)]
    assert set(sizes) == {96, 128, 160, 192}
    assert abs(np.mean(sizes) - 128) < 32
    dk = {A.network_size(A.Options(128, 128, 1, random=1, max_batches=10 ** 6,
                                   multiscale="darknet"), i,
                         lambda b: np.random.default_rng(b))[0] for i in range(10, 20000, 10)}
    assert dk == {128, 160, 192, 224}


def test_multiscale_first_and_last_blocks_are_the_largest():
    opt = A.Options(416, 416, 1, random=1, max_batches=1000, multiscale="darknet")
    rng = _FixedRng(random=1, integer=0)                 # 320 elsewhere
    size = lambda i: A.network_size(opt, i, lambda block: rng)[0]   # noqa: E731
    assert [size(i) for i in (0, 9, 10, 900, 909, 910, 999)] == [608, 608, 320, 320, 320, 608,
                                                                   608]
    opt.random = 0
    assert size(5) == 416
    sizes = {A.network_size(A.Options(416, 416, 1, random=1, max_batches=10 ** 6,
                                      multiscale="darknet"), i,
                            lambda b: np.random.default_rng(b))[0] for i in range(10, 3000, 10)}
    assert sizes <= set(range(320, 609, 32)) and 608 in sizes and 320 in sizes
    opt.multiscale = "centred"                           # largest: roundl(1.4 * 13) = 18 -> 576
    opt.random = 1                                       # the last 100: the cfg's own 416
    assert [size(i) for i in (0, 9, 10, 900, 909, 910, 999)] == [576, 576, 288, 288, 288, 416,
                                                                   416]
    short = A.Options(416, 416, 1, random=1, max_batches=50)     # all of it is "the end":
    assert A.network_size(short, 0, lambda b: rng)[0] == 576     # the first block stays largest
    assert A.network_size(short, 10, lambda b: rng)[0] == 416


# ----- options ----------------------------------------------------------------------------------


CFG = """[net]
width=64
height=64
channels=3
{net}

[convolutional]
filters=18
size=1
stride=32
pad=0
activation=linear

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=1
num=3
{yolo}
"""


def net_of(net="", yolo=""):
    from darkcfg.config import shapes
    return shapes.network(CFG.format(net=net, yolo=yolo))


def test_options_from_the_cfg():
    o = A.Options.from_network(net_of("hue=.2\nflip=0\nblur=3\nmosaic=1\nmosaic_bound=1",
                                      "jitter=.1\nresize=1.5\nrandom=1.3\nmax=7"))
    assert (o.hue, o.flip, o.blur, o.mosaic, o.mosaic_bound) == (.2, False, 3, True, True)
    assert (o.jitter, o.resize, o.random, o.max_boxes) == (.1, 1.5, 1.3, 7)
    o = A.Options.from_network(net_of())
    assert (o.jitter, o.max_boxes, o.flip, o.saturation, o.mosaic) == (.2, 200, True, 1, False)
    assert o.warnings == []


def test_unsupported_options_warn_and_mosaic_letterbox_is_refused():
    from darkcfg.errors import CfgError
    o = A.Options.from_network(net_of("angle=7\nmixup=1\ncutmix=1"))
    text = "\n".join(o.warnings)
    assert "angle is used by darknet's classifier only" in text
    assert "mixup=1 is not implemented" in text and "cutmix=1 is for the classifier" in text
    with pytest.raises(CfgError, match="letter_box=1 and mosaic=1"):
        A.Options.from_network(net_of("letter_box=1\nmosaic=1"))
    from darkcfg.config import shapes
    text = CFG.format(net="ema_alpha=0.9998", yolo="").replace("activation=linear",
                                                               "activation=linear\nstopbackward=1")
    o = A.Options.from_network(shapes.network(text))
    assert len(o.warnings) == 1                  # ema_alpha is honoured (tests/test_ema.py)
    assert "[convolutional]" in o.warnings[0] and "stopbackward is not implemented" in \
        o.warnings[0] and "--freeze" in o.warnings[0]


def test_one_channel_images_go_through_the_pipeline():
    img, boxes = canvas(80, 60, [(20, 20, 40, 40)])
    gray = np.ascontiguousarray(img[:, :, :1])
    out, _ = A.hsv(gray, boxes, .1, 1.5, .5)              # one channel: V only, 250 * .5 = 125
    assert out.shape == (60, 80, 1) and out[30, 30, 0] == 125 and out[0, 0, 0] == BG // 2
    opt = A.Options(48, 32, 1, channels=1, jitter=.2, hue=.1, saturation=1.5, exposure=1.5,
                    blur=1, gaussian_noise=5)
    for seed in range(4):
        out, b, _, _ = A.augment_image(gray, boxes, np.random.default_rng(seed), opt, (48, 32))
        assert out.shape == (32, 48, 1) and out.dtype == np.uint8


def test_bgr_input_gives_the_rgb_result():
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    boxes = np.array([[0, .5, .5, .3, .3]])
    opt = A.Options(48, 32, 1, jitter=.3, hue=.1, saturation=1.5, exposure=1.5, blur=1,
                    gaussian_noise=5)
    for seed in range(4):
        a = A.augment_image(rgb, boxes, np.random.default_rng(seed), opt, (48, 32))
        b = A.augment_image(rgb[:, :, ::-1].copy(), boxes, np.random.default_rng(seed), opt,
                            (48, 32), bgr=True)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


# ----- keypoints: draw dots, find where they went -------------------------------------------------


def dot_at(img, c, near, r=4, bg=None):
    """(x, y, mass) of the dot in channel ``c`` within ``r`` px of ``near``: the weighted
    centroid of the channel above its background (the image's median), or None."""
    ch = img[:, :, c].astype(np.float64)
    ch = ch - (np.median(ch) if bg is None else bg)
    h, w = ch.shape
    x0, x1 = max(0, int(near[0] - r)), min(w, int(near[0] + r) + 1)
    y0, y1 = max(0, int(near[1] - r)), min(h, int(near[1] + r) + 1)
    win = np.clip(ch[y0:y1, x0:x1], 0, None)
    win = np.where(win > 0.2 * win.max(initial=0), win, 0)
    m = win.sum()
    if m <= 0:
        return None
    yy, xx = np.mgrid[y0:y1, x0:x1] + 0.5
    return (xx * win).sum() / m, (yy * win).sum() / m, m


def assert_points_follow_dots(out, b, tol):
    h, w = out.shape[:2]
    assert (b[:, 3:5] == 0).all()                         # still points
    assert ((b[:, 1] > 0) & (b[:, 1] <= 1) & (b[:, 2] > 0) & (b[:, 2] <= 1)).all()
    for c, x, y, _, _ in b:
        got = dot_at(out, int(c), (x * w, y * h))
        assert got is not None, (c, x * w, y * h)
        if min(x * w, y * h, w - x * w, h - y * h) < 2:
            continue        # a dot the edge cuts: its centroid is not its centre
        assert abs(got[0] - x * w) <= tol and abs(got[1] - y * h) <= tol, (got, x * w, y * h)


def test_keypoint_dots_follow_flip():
    img, rows = dots(80, 60, [(0, 20.25, 30.5), (1, 60.75, 10.5), (2, 40.5, 45.0)])
    out, b = A.flip(img, rows)
    np.testing.assert_allclose(b[:, 1], 1 - rows[:, 1])
    assert_points_follow_dots(out, b, tol=0.05)


@pytest.mark.parametrize("crop_args, size", [
    ((20, 10, 30, 5), (64, 48)),          # a crop inside the image, scaled up
    ((-20, -15, -10, -5), (64, 48)),      # padding on every side (the mean colour outside)
    ((0, 0, 0, 0), (40, 30)),             # the whole image, scaled down
])
def test_keypoint_dots_follow_the_jitter_crop(crop_args, size):
    pts = [(0, 30.5, 20.5), (1, 50.25, 40.75), (2, 70.5, 50.5), (0, 3.0, 3.0)]
    img, rows = dots(100, 70, pts)
    pl, pt, pr, pb = crop_args
    c = A.Crop(100, 70, pl, pt, pr, pb, 100 - pl - pr, 70 - pt - pb)
    out, b = A.crop_resize(img, rows, c, size)
    # each point mapped by hand: x' = (x - pleft) / swidth * W
    want = [((x - pl) / c.swidth, (y - pt) / c.sheight) for _, x, y in pts]
    kept = [k for k, (x, y) in enumerate(want) if 0 <= x <= 1 and 0 <= y <= 1]
    assert b[:, 0].tolist() == [pts[k][0] for k in kept]
    np.testing.assert_allclose(b[:, 1:3], [want[k] for k in kept], atol=1e-12)
    scale = max(size[0] / c.swidth, size[1] / c.sheight)
    assert_points_follow_dots(out, b[b[:, 1] * size[0] > 3], tol=0.25 + 0.2 * scale)


def test_keypoint_points_outside_the_crop_are_dropped_and_their_dots_gone():
    img, rows = dots(100, 70, [(0, 10.5, 35.5), (1, 90.5, 35.5), (2, 50.5, 5.5)])
    c = A.Crop(100, 70, 25, 15, 25, 0, 50, 55)          # cuts x 25..75, y 15..70
    out, b = A.crop_resize(img, rows, c, (50, 55))
    assert b.shape == (0, 5)
    assert out[:, :, 0].max() < 40 and out[:, :, 1].max() < 40 and out[:, :, 2].max() < 40


def test_keypoint_dots_follow_letter_box():
    img, rows = dots(120, 60, [(0, 30.5, 20.5), (1, 100.25, 50.5), (2, 60.0, 30.0)])
    out, b = A.letter_box(img, rows, (64, 64))
    # darknet's letterbox crop: the 120x60 image padded to 120x120 (30 above and below)
    np.testing.assert_allclose(b[:, 1], rows[:, 1], atol=1e-12)
    np.testing.assert_allclose(b[:, 2], (rows[:, 2] * 60 + 30) / 120, atol=1e-12)
    assert_points_follow_dots(out, b, tol=0.3)


@pytest.mark.parametrize("seed", range(8))
def test_keypoint_dots_follow_the_whole_pipeline(seed):
    """jitter + [yolo] resize + flip + truth filter on random draws: every kept point sits on
    its dot; every dot still wholly in the picture has its point."""
    rng = np.random.default_rng(100 + seed)
    pts = [(k % 3, rng.uniform(8, 152), rng.uniform(8, 112)) for k in range(6)]
    img, rows = dots(160, 120, pts)
    opt = A.Options(96, 64, 3, jitter=.3, resize=1.5, flip=True, keypoints=True)
    out, b, crop, d = A.augment_image(img, rows, np.random.default_rng(seed), opt, (96, 64))
    assert_points_follow_dots(out, b, tol=0.5)
    # the other direction: map each drawn dot by hand; those well inside must be kept
    sx, sy = 96 / crop.swidth, 64 / crop.sheight
    for c, x, y in pts:
        X, Y = (x - crop.pleft) * sx, (y - crop.ptop) * sy
        if d.flip:
            X = 96 - X
        if 4 < X < 92 and 4 < Y < 60:
            near = np.hypot(b[:, 1] * 96 - X, b[:, 2] * 64 - Y) < 1e-6
            assert (near & (b[:, 0] == c)).any(), (c, X, Y)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("bound", [False, True])
def test_keypoint_dots_follow_mosaic(seed, bound):
    """Four images, each with one dot of each class: in the mosaic every point sits on its
    dot, and every dot wholly inside its quadrant has a point."""
    opt = A.Options(96, 96, 3, jitter=.2, flip=True, mosaic=True, mosaic_bound=bound,
                    keypoints=True)
    rng0 = np.random.default_rng(seed)
    images = [dots(160, 120, [(c, rng0.uniform(8, 152), rng0.uniform(8, 112)) for c in range(3)])
              for _ in range(4)]

    def load(rng, k=[0]):
        img, rows = images[k[0] % 4]
        k[0] += 1
        return img, rows, f"{k[0]}.png"
    out, b, paths = A.mosaic(load, np.random.default_rng(seed), opt, (96, 96))
    cut = A.mosaic_cut(np.random.default_rng(seed), (96, 96))     # mosaic's first draw
    assert out.shape == (96, 96, 3)
    assert_points_follow_dots(out, b, tol=0.6)
    # every complete dot (mass as a whole dot's, away from the edges) has a point of its class
    full = 235 * 2 * np.pi * DOT_SIGMA ** 2 * (96 / 160) ** 2
    for c in range(3):
        ch = out[:, :, c].astype(float)
        for y, x in zip(*np.nonzero((ch > 150) & (ch == cv2.dilate(ch, np.ones((3, 3)))))):
            got = dot_at(out, c, (x + .5, y + .5))
            near_seam = min(abs(got[0] - cut[0]), abs(got[1] - cut[1])) < 3 if got else True
            if got and got[2] > 0.6 * full and 4 < got[0] < 92 and 4 < got[1] < 92 \
                    and not near_seam:     # a dot across the seam may belong to the other piece
                dist = np.hypot(b[:, 1] * 96 - got[0], b[:, 2] * 96 - got[1])
                assert ((dist < 1.5) & (b[:, 0] == c)).any(), (c, got)

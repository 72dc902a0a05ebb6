"""detect --tile (issue #24): tiles by hand, and a small object only a tile can find - found
once, at its place in the image.  The detector here is a stand-in that, like a network, sees
its input at 64 x 64 and finds a bright blob only when it covers at least 3 of those pixels.
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from darkcfg.infer import tiles as T
from darkcfg.objective.yolo import Detection

from _helpers import make_cfg, run_cli


def test_spans_and_tiles_by_hand():
    # step 40 * (1 - 0.25) = 30: 0, 30, then flush with the end at 100 - 40 = 60
    assert T.spans(100, 40, 0.25) == [0, 30, 60]
    assert T.spans(40, 64, 0.2) == [0]                      # a tile bigger than the image
    assert T.tiles((100, 40), (40, 40), 0.25) == [(0, 0, 40, 40), (30, 0, 70, 40),
                                                 (60, 0, 100, 40)]
    assert T.parse_tile("416x320") == (416, 320)
    with pytest.raises(ValueError):
        T.parse_tile("416")


def blob_detector(im):
    """Detections of the bright pixels of ``im`` as a 64 x 64 network would see them."""
    w, h = im.size
    small = np.asarray(im.convert("L").resize((64, 64), Image.BILINEAR)) > 128
    ys, xs = np.nonzero(small)
    if len(xs) == 0 or xs.max() - xs.min() + 1 < 3:
        return []
    box = (xs.min() * w / 64, ys.min() * h / 64, (xs.max() + 1) * w / 64, (ys.max() + 1) * h / 64)
    return [Detection(0, 0.9, box)]


def test_a_small_object_only_tiles_find_is_found_once_in_place():
    a = np.zeros((300, 400, 3), np.uint8)
    a[200:212, 300:312] = 255                      # 12 px: under 2 px at 64 x 64 whole
    img = Image.fromarray(a)
    assert blob_detector(img) == []
    dets = T.detect_tiled(lambda crops: [blob_detector(c) for c in crops], img,
                           (64, 64), 0.5, 0.45)
    assert len(dets) == 1                          # seen by 4 overlapping tiles, merged
    assert dets[0].box == pytest.approx((300, 200, 312, 212), abs=1.5)


def test_detect_cli_tiles(tmp_path):
    cfg = make_cfg(tmp_path / "tiny.cfg")
    w = str(tmp_path / "w.weights")
    assert run_cli("init", cfg, w).exit_code == 0
    Image.fromarray(np.full((150, 200, 3), 90, np.uint8)).save(tmp_path / "a.png")
    res = run_cli("detect", tmp_path / "a.png", "--cfg", cfg, "--weights", w, "--tile",
                  "64x64", "--thresh", "0.1")
    assert res.exit_code == 0 and "(200 x 150)" in res.output, res.output
    res = run_cli("detect", tmp_path / "a.png", "--cfg", cfg, "--weights", w, "--tile", "64")
    assert res.exit_code == 2 and "--tile takes WxH" in res.output

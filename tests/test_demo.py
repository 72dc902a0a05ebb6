"""The generated demo data set and the CLI's data / map / train commands.

The demo's ground truth is checked against the pixels (a label box must hold the bright shape
and its surroundings must be dark), not against the generator's own numbers."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from darkcfg.dataset import demo

from _helpers import run_cli as _run
from conftest import CFGS


@pytest.fixture(scope="module")
def shapes_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo") / "shapes"
    r = _run("data", "demo", folder, "--train", 12, "--valid", 4)
    assert r.exit_code == 0, r.output
    return folder


def _outside(w, h, cx, cy, bw, bh):
    """Per pixel, how far its centre lies outside the box (pixels, Chebyshev; <= 0 inside)."""
    xs, ys = np.arange(w) + 0.5, np.arange(h) + 0.5
    dx = np.abs(xs - cx * w) - bw * w / 2
    dy = np.abs(ys - cy * h) - bh * h / 2
    return np.maximum(dx[None, :], dy[:, None])


def test_demo_labels_are_where_the_shapes_are(shapes_set):
    """Every label box: the pixels inside are bright in their majority (a disc fills pi/4 of
    its box); a 2-px ring outside it (pixel centres 1 to 3 px out: OpenCV draws a rectangle's
    end pixel, and a disc of odd size, up to 0.5 px past the label's edge) is dark where no
    other box is within 1 px; and no bright pixel lies outside every box - so a label shrunk
    or moved by 2 px fails."""
    import cv2
    boxes, ring_pixels = 0, 0
    for png in sorted((shapes_set / "images" / "train").glob("*.png")):
        img = cv2.imread(str(png)).max(axis=2)                   # brightest channel
        h, w = img.shape
        rows = np.loadtxt(png.with_suffix(".txt"), ndmin=2)
        bright = img >= 170                  # shapes are drawn in 170..255, the noise 0..89
        out = [_outside(w, h, *r[1:]) for r in rows]
        for i, (c, *_) in enumerate(rows):
            inside = bright[out[i] <= 0].mean()
            assert inside > (0.9 if c == 0 else 0.7), (png, c, inside)
            near_other = np.zeros_like(bright)
            for j, o in enumerate(out):
                if j != i:
                    near_other |= o <= 1
            ring = (out[i] > 1) & (out[i] <= 3) & ~near_other
            assert not bright[ring].any(), (png, i, np.argwhere(ring & bright)[:5])
            ring_pixels += ring.sum()
            boxes += 1
        assert not (bright & (np.min(out, axis=0) > 1)).any(), png   # nothing unlabelled
        assert (img < 90).mean() > 0.3                             # the background is dark
    assert boxes >= 12 and ring_pixels > 1000


def test_data_check_passes_the_demo_and_counts_its_label_lines(shapes_set):
    r = _run("data", "check", shapes_set / "obj.data", "--cfg", shapes_set / "shapes.cfg",
             "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    lines = sum(len(open(p).read().split("\n")) - 1
                for p in (shapes_set / "images" / "train").glob("*.txt"))
    assert rep["ok"] and rep["splits"]["train"]["boxes"] == lines
    assert rep["splits"]["train"]["images"] == 12 and rep["splits"]["valid"]["images"] == 4


def test_data_check_exits_1_and_names_the_bad_line(shapes_set, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    img = next((shapes_set / "images" / "train").glob("*.png"))
    (bad / "a.png").write_bytes(img.read_bytes())
    (bad / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n")
    (bad / "list.txt").write_text(f"{bad / 'a.png'}\n")
    (bad / "obj.data").write_text(f"classes=2\ntrain={bad / 'list.txt'}\n")
    r = _run("data", "check", bad / "obj.data")
    assert r.exit_code == 1
    assert f"{bad / 'a.txt'}:2:" in r.output and "Traceback" not in r.output


def test_demo_refuses_to_overwrite(shapes_set):
    r = _run("data", "demo", shapes_set)
    assert r.exit_code == 1 and "already exists" in r.output


def test_map_and_train_commands(shapes_set, tmp_path):
    out = tmp_path / "run"
    r = _run("train", shapes_set / "obj.data", shapes_set / "shapes.cfg", "--max-batches", 2,
             "--out", out, "--quiet", "--workers", 0)
    assert r.exit_code == 0, r.output
    final = out / "shapes_final.weights"
    assert final.exists() and "trained 2 iterations" in r.output
    r = _run("map", shapes_set / "obj.data", shapes_set / "shapes.cfg", final, "--json", "-q")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["images"] == 4
    r = _run("map", shapes_set / "obj.data", shapes_set / "shapes.cfg", final, "-q")
    # the text and --json are one evaluation: the printed mAP is the JSON's
    printed = re.search(r"mean average precision \(mAP@0\.50\) = ([0-9.]+)", r.output)
    assert printed and float(printed.group(1)) == pytest.approx(doc["darknet"]["map"], abs=5e-7)


def test_train_ctrl_c_exits_130(shapes_set, monkeypatch):
    from darkcfg.training import train as T

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(T, "train", interrupted)
    # -q: train() prints nothing, so the CLI says how to continue (without -q train() says it)
    r = _run("train", shapes_set / "obj.data", shapes_set / "shapes.cfg", "-q")
    assert r.exit_code == 130 and "--resume" in r.output
    r = _run("train", shapes_set / "obj.data", shapes_set / "shapes.cfg")
    assert r.exit_code == 130 and "interrupted" not in r.output   # the mock printed nothing


def test_small_cfg_scales_the_anchors_by_hand(tmp_path):
    """yolov3-tiny's anchors 10,14, 23,27 ... at 416 become round(a * 96 / 416) at 96."""
    from darkcfg.config import cfg as C
    path = demo.small_cfg(os.path.join(CFGS, "yolov3-tiny.cfg"), str(tmp_path / "s.cfg"))
    cfg = C.load(path)
    yolo = [s for s in cfg.layers if s.type == "yolo"]
    assert [s.get_str("anchors").replace(" ", "") for s in yolo] == \
        ["2,3,5,6,9,13,19,19,31,39,79,74"] * 2
    assert cfg.net.get_int("width") == 96 and cfg.net.get_int("max_batches") == 300

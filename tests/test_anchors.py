"""k-means anchors: known clusters come back; average IoU and recall checked independently."""
from __future__ import annotations

import os

import numpy as np
from click.testing import CliRunner

from darkcfg.objective import anchors as A
from darkcfg.config import cfg as C
from darkcfg.cli import main

from conftest import CFGS

TRUE = np.array([[20.0, 30.0], [80.0, 60.0], [200.0, 240.0]])     # pixels at 416 x 416


def make_labels(folder, n=300, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(exist_ok=True)
    wh = TRUE[rng.integers(0, 3, n)] * rng.uniform(0.9, 1.1, (n, 2)) / 416
    for i in range(0, n, 10):
        with open(folder / f"img{i:04d}.txt", "w") as f:
            for w, h in wh[i:i + 10]:
                f.write(f"{rng.integers(0, 5)} {rng.uniform(.2, .8):.6f} {rng.uniform(.2, .8):.6f} "
                        f"{w:.6f} {h:.6f}\n")
    return wh


def test_kmeans_recovers_known_sizes(tmp_path):
    wh = make_labels(tmp_path / "labels") * 416
    res = A.kmeans(A.read_labels(str(tmp_path / "labels")) * 416, 3, seed=0)
    assert np.allclose(res.anchors, TRUE, rtol=0.03)
    # average IoU and recall, computed independently box by box
    ious = []
    for w, h in wh:
        best = 0.0
        for aw, ah in res.anchors:
            inter = min(w, aw) * min(h, ah)
            best = max(best, inter / (w * h + aw * ah - inter))
        ious.append(best)
    assert abs(res.avg_iou - np.mean(ious)) < 1e-4          # labels are rounded to 6 digits
    assert res.recall50 == np.mean(np.array(ious) >= 0.5) == 1.0
    again = A.kmeans(wh, 3, seed=0)
    assert np.array_equal(A.kmeans(wh, 3, seed=0).anchors, again.anchors)     # deterministic


def test_cli_prints_and_writes_cfg(tmp_path):
    make_labels(tmp_path / "labels")
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(open(os.path.join(CFGS, "yolov3-tiny.cfg")).read())
    r = CliRunner().invoke(main, ["anchors", str(tmp_path / "labels"), "--num", "6",
                                  "--write-cfg", str(cfg)])
    assert r.exit_code == 0, r.output
    assert "average IoU" in r.output and "best possible recall at IoU 0.5: 100.00%" in r.output
    heads = [s for s in C.load(str(cfg)).sections if s.type == "yolo"]
    assert [h.get_str("mask") for h in heads] == ["3,4,5", "0,1,2"]      # coarse head: large
    assert all(h.get_int("num") == 6 for h in heads)
    printed = r.output.split("anchors = ")[1].splitlines()[0]
    assert heads[0].get_str("anchors") == printed.replace(" ", "")


def test_bad_label_line_names_file_and_line(tmp_path):
    (tmp_path / "l").mkdir()
    (tmp_path / "l" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n0 0.5 0.5 1.5\n")
    r = CliRunner().invoke(main, ["anchors", str(tmp_path / "l"), "--num", "1"])
    assert r.exit_code == 1
    assert f"{tmp_path / 'l' / 'a.txt'}:2: expected 'class cx cy w h', got 4 fields" in r.output


def test_list_file_maps_images_to_labels(tmp_path):
    """darknet's train.txt lists images: .../images/x.jpg has its labels in .../labels/x.txt."""
    wh = make_labels(tmp_path / "labels", n=30)
    listing = tmp_path / "train.txt"
    listing.write_text("".join(f"{tmp_path}/images/img{i:04d}.jpg\n" for i in range(0, 30, 10)))
    assert len(A.read_labels(str(listing))) == len(wh)


def test_utf8_bom_in_labels_and_lists(tmp_path):
    """Label and list files saved by Windows editors start with a BOM: read as nothing."""
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_bytes(b"\xef\xbb\xbf0 0.5 0.5 0.25 0.5\n")
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"\xef\xbb\xbf" + str(tmp_path / "labels" / "a.txt").encode() + b"\n")
    for source in (tmp_path / "labels", listing):
        assert A.read_labels(str(source)).tolist() == [[0.25, 0.5]]


def test_a_list_of_images_finds_labels_as_training_does(tmp_path):
    """Labels beside the images (darkcfg's demo layout, no images/ -> labels/ folder): found
    as data.label_path finds them; an image without a label file is a negative image."""
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "a.txt").write_text("0 0.5 0.5 0.25 0.5\n")
    for name in ("a.png", "b.png"):
        (tmp_path / "set" / name).write_bytes(b"")      # anchors reads labels only
    listing = tmp_path / "train.txt"
    listing.write_text(f"{tmp_path}/set/a.png\n{tmp_path}/set/b.png\n")
    assert A.read_labels(str(listing)).tolist() == [[0.25, 0.5]]

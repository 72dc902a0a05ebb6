"""What a darknet user's own files meet (issue #23's inputs): a truncated JPEG has one rule in
every command, OpenCV's own log lines never reach the terminal (darkcfg names the file
itself), anchors and detect take a .data, spaces in a .data path are explained, a finished run
says the one way to train on, and convert --cutoff says which layers it kept.
"""
from __future__ import annotations

import os
import shutil

import cv2
import numpy as np
import pytest

from darkcfg.dataset import data as D
from darkcfg.errors import DarkcfgError
from darkcfg.training import train as T

from _helpers import TINY, make_cfg, make_data, run_cli

OPENCV_LOG = ("[ WARN", "[ERROR", "Premature end", "libpng", "global loadsave")


def _truncated_jpeg(src_png, dst) -> str:
    """``src_png`` as a JPEG cut at two thirds of its bytes: libjpeg still decodes it (grey
    rows and a 'Premature end of JPEG file' on stderr); its label goes beside it."""
    img = cv2.imread(str(src_png))
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    with open(dst, "wb") as f:
        f.write(buf.tobytes()[:len(buf) * 2 // 3])
    shutil.copy(str(src_png)[:-4] + ".txt", str(dst)[:-4] + ".txt")
    assert cv2.imread(str(dst)) is not None          # what darknet trains on without a word
    return str(dst)


@pytest.fixture
def damaged(tmp_path):
    """A set whose train and valid lists each hold one truncated JPEG (listed last)."""
    data = make_data(tmp_path, ntrain=4, nvalid=4)
    cfg = make_cfg(tmp_path / "tiny.cfg", max_batches=2)
    bad = {}
    for split in ("train", "valid"):
        lst = tmp_path / f"{split}.txt"
        first = lst.read_text().split()[0]
        bad[split] = _truncated_jpeg(first, tmp_path / f"cut_{split}.jpg")
        lst.write_text(lst.read_text() + bad[split] + "\n")
    return data, cfg, tmp_path, bad


def test_image_damage_finds_a_cut_jpeg_and_passes_whole_ones(tmp_path):
    img = (np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)
    whole = str(tmp_path / "whole.jpg")
    cv2.imwrite(whole, img)
    assert D.image_damage(whole) is None
    with open(whole, "ab") as f:               # bytes after the end marker: still whole
        f.write(b"\0" * 100)
    assert D.image_damage(whole) is None
    cut = str(tmp_path / "cut.jpg")
    with open(whole, "rb") as f, open(cut, "wb") as g:
        g.write(f.read()[:-200])
    assert "truncated JPEG" in D.image_damage(cut)
    png = str(tmp_path / "a.png")
    cv2.imwrite(png, img)
    assert D.image_damage(png) is None


def test_data_check_names_a_truncated_jpeg(damaged, capfd):
    data, cfg, tmp, bad = damaged
    res = run_cli("data", "check", data)
    err = capfd.readouterr().err
    assert res.exit_code == 1
    assert f"{bad['train']}: a truncated JPEG" in res.output
    assert f"{bad['valid']}: a truncated JPEG" in res.output
    assert not any(s in err for s in OPENCV_LOG), err


def test_train_map_and_detect_make_the_same_decision(damaged, capfd):
    data, cfg, tmp, bad = damaged
    with pytest.raises(DarkcfgError, match="nothing was trained") as e:
        T.train(data, cfg, quiet=True)
    assert f"{bad['train']}: a truncated JPEG" in str(e.value)
    weights = str(tmp / "w.weights")
    assert run_cli("init", cfg, weights).exit_code == 0
    res = run_cli("map", data, cfg, weights, "--quiet")
    assert res.exit_code == 1 and f"{bad['valid']}: a truncated JPEG" in res.output, res.output
    res = run_cli("detect", bad["valid"], "--cfg", cfg, "--weights", weights)
    assert res.exit_code == 1 and f"{bad['valid']}: a truncated JPEG" in res.output, res.output
    assert "Traceback" not in res.output
    err = capfd.readouterr().err
    assert not any(s in err for s in OPENCV_LOG), err


def test_map_names_a_missing_listed_image_by_its_line(tmp_path, capfd):
    data = make_data(tmp_path, ntrain=2, nvalid=3)
    cfg = make_cfg(tmp_path / "tiny.cfg")
    weights = str(tmp_path / "w.weights")
    assert run_cli("init", cfg, weights).exit_code == 0
    lst = tmp_path / "valid.txt"
    lines = lst.read_text().split()
    os.remove(lines[1])
    res = run_cli("map", data, cfg, weights, "--quiet")
    assert res.exit_code == 1 and f"{lst}:2: image '{lines[1]}' does not exist" in res.output, \
        res.output
    err = capfd.readouterr().err
    assert not any(s in err for s in OPENCV_LOG), err


def test_an_undecodable_image_is_named_without_opencvs_log(tmp_path, capfd):
    data = make_data(tmp_path, ntrain=2, nvalid=2)
    first = (tmp_path / "train.txt").read_text().split()[0]
    with open(first, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)       # a PNG signature, then nothing
    res = run_cli("data", "check", data)
    assert res.exit_code == 1 and f"{first}: OpenCV cannot decode this image" in res.output
    with pytest.raises(DarkcfgError, match="OpenCV cannot decode"):
        D.load_image(first)
    with pytest.raises(DarkcfgError, match="no such image"):
        D.load_image(str(tmp_path / "gone.png"))
    err = capfd.readouterr().err
    assert not any(s in err for s in OPENCV_LOG), err


def test_anchors_takes_a_data_file_and_the_cfgs_size(tmp_path):
    data = make_data(tmp_path, ntrain=6, nvalid=2)
    cfg = make_cfg(tmp_path / "tiny.cfg", size=96)
    labels = [p[:-4] + ".txt" for p in (tmp_path / "train.txt").read_text().split()]
    boxes = sum(len(open(p).read().split("\n")) - 1 for p in labels)
    res = run_cli("anchors", data, "--num", "3", "--cfg", cfg)
    assert res.exit_code == 0, res.output
    assert f"{boxes} boxes, 3 anchors at 96 x 96" in res.output
    before = open(cfg).read()
    assert open(cfg).read() == before                       # --cfg reads, never writes
    res = run_cli("anchors", data, "--num", "3")
    assert "3 anchors at 416 x 416" in res.output
    (tmp_path / "none.data").write_text("classes=2\n")
    res = run_cli("anchors", tmp_path / "none.data")
    assert res.exit_code == 1 and "no train= list" in res.output


def test_detect_takes_the_names_from_a_data_file(tmp_path):
    data = make_data(tmp_path, ntrain=2, nvalid=2, classes=1)
    (tmp_path / "obj.names").write_text("widget\n")
    cfg = make_cfg(tmp_path / "tiny.cfg", classes=1)
    weights = str(tmp_path / "w.weights")
    assert run_cli("init", cfg, weights).exit_code == 0
    img = (tmp_path / "valid.txt").read_text().split()[0]
    res = run_cli("detect", img, "--cfg", cfg, "--weights", weights, "--thresh", "0",
                  "--max-det", "3", "--data", data)
    boxes = [l for l in res.output.splitlines() if l.startswith("  ")]
    assert res.exit_code == 0 and boxes, res.output
    assert all(l.strip().startswith("widget:") for l in boxes), res.output


def test_spaces_in_a_data_path_are_explained(tmp_path):
    (tmp_path / "my data").mkdir()
    (tmp_path / "my data" / "train.txt").write_text("a.png\n")
    data = tmp_path / "obj.data"
    data.write_text(f"classes = 1\ntrain = {tmp_path}/my data/train.txt\n")
    res = run_cli("data", "check", data)
    assert res.exit_code == 1
    assert f"{data}:2: train = {tmp_path}/my data/train.txt: darknet's .data reader drops " \
           f"every space, so this reads as '{tmp_path}/mydata/train.txt', which does not " \
           f"exist" in res.output, res.output
    res = run_cli("anchors", data)
    assert res.exit_code == 1 and "drops every space" in res.output


def test_a_finished_run_says_the_one_way_to_train_on_and_that_way_works(tmp_path):
    data = make_data(tmp_path, ntrain=4, nvalid=2)
    cfg = make_cfg(tmp_path / "tiny.cfg", max_batches=2)
    assert run_cli("train", data, cfg, "--quiet").exit_code == 0
    res = run_cli("train", data, cfg, "--resume")
    assert res.exit_code == 0, res.output
    assert "iteration 2 >= max_batches 2: the run is finished" in res.output
    assert "raise max_batches (in the cfg, or --max-batches) and --resume" in res.output
    assert "WEIGHTS --clear" in res.output
    res = run_cli("train", data, cfg, "--resume", "--clear")
    assert res.exit_code == 1 and "raise max_batches" in res.output
    # both ways the message gives run as it says
    res = run_cli("train", data, cfg, "--resume", "--max-batches", "3", "--quiet")
    assert res.exit_code == 0, res.output
    final = tmp_path / "backup" / "tiny_final.weights"
    res = run_cli("train", data, cfg, final, "--clear", "--out", tmp_path / "again", "--quiet")
    assert res.exit_code == 0, res.output
    assert os.path.exists(tmp_path / "again" / "tiny_final.weights")


def test_convert_cutoff_says_the_layers_it_kept(tmp_path):
    full = str(tmp_path / "tiny.weights")
    assert run_cli("init", TINY, full).exit_code == 0
    res = run_cli("convert", full, tmp_path / "tiny.conv.15", "--cfg", TINY, "--cutoff", "15",
                  "-q")
    assert res.exit_code == 0, res.output
    assert "layers 0-14 (9 with weights)" in res.output


def test_the_readme_says_the_way_on_in_the_messages_words():
    from darkcfg.training.state import train_on
    words = train_on("backup", "x").split(", e.g.")[0]
    readme = " ".join(open(os.path.join(os.path.dirname(TINY), "..", "README.md")).read().split())
    assert words[0].upper() + words[1:] in readme or words in readme

"""darknet's command lines run with darkcfg in place of ./darknet (darkcfg.cli.darknet).

The expected darkcfg arguments are written from darknet's own semantics (src/detector.c
run_detector: find_arg/find_int_arg/find_float_arg remove a flag and its value from argv, then
DATA, CFG, WEIGHTS and the image are argv[3..6]; -num_of_clusters defaults to 5), and the
commands' outputs are compared with the same job spelled darkcfg's way.
"""
from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from darkcfg import cli

from test_train import make_cfg, make_data


# darknet's command line (after ./darknet) -> what darkcfg runs
TRANSLATIONS = [
    ("detector train data/obj.data yolo-obj.cfg yolov4.conv.137 -map",
     "train data/obj.data yolo-obj.cfg yolov4.conv.137 --map"),
    ("detector train data/obj.data yolo-obj.cfg yolov4.conv.137 -dont_show -mjpeg_port 8090 -map",
     "train data/obj.data yolo-obj.cfg yolov4.conv.137 --map"),
    ("detector train data/obj.data yolo-obj.cfg -gpus 0,1,2,3 -clear",
     "train data/obj.data yolo-obj.cfg --clear"),
    ("train obj.data my.cfg w -map -dont_show", "train obj.data my.cfg w --map"),
    ("detector map data/obj.data yolo-obj.cfg backup/yolo-obj_best.weights",
     "map data/obj.data yolo-obj.cfg backup/yolo-obj_best.weights"),
    ("detector map a.data b.cfg c.weights -iou_thresh 0.75 -points 11 -thresh 0.5",
     "map a.data b.cfg c.weights --iou-thresh 0.75 --points 11 --thresh 0.5"),
    # darknet drops flags wherever they are: the positions count without them
    ("detector map -points 101 a.data b.cfg c.weights --quiet",
     "map a.data b.cfg c.weights --points 101 --quiet"),
    ("map a.data b.cfg c.weights -letter_box", "map a.data b.cfg c.weights --letter-box"),
    ("detect a.jpg --weights w -thresh 0.1 -ext_output",
     "detect a.jpg --weights w --thresh 0.1 --ext-output"),
    ("detect d.jpg --weights w -ext_output -out result.json -save_labels",
     "detect d.jpg --weights w --ext-output --json result.json --save-labels"),
    # after --, nothing is rewritten
    ("detect --weights w -- -map", "detect --weights w -- -map"),
    ("summary -q", "summary -q"),
]


@pytest.mark.parametrize("darknet,darkcfg", TRANSLATIONS)
def test_darknet_command_lines_translate(darknet, darkcfg):
    from darkcfg.cli import darknet as DN
    assert DN.translate(darknet.split()) == darkcfg.split()


@pytest.mark.parametrize("line,flag", [
    ("train a.data b.cfg -benchmark", "-benchmark"),
    ("detector map a.data b.cfg c.weights -prefix res", "-prefix"),
])
def test_a_darknet_flag_without_equivalent_is_a_usage_error_naming_it(line, flag):
    res = CliRunner().invoke(cli.main, line.split())
    assert res.exit_code == 2 and flag in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("sub", ["valid", "recall"])
def test_detector_subcommands_without_equivalent_say_what_to_use(sub):
    res = CliRunner().invoke(cli.main, ["detector", sub, "a.data", "b.cfg", "c.weights"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    if sub == "recall":                  # not one darkcfg runs: the ones it does are named
        assert "detector recall" in res.output and "calc_anchors" in res.output
    else:
        assert f"detector {sub}" in res.output and "no darkcfg equivalent" in res.output


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A data set and a 2-iteration run, trained with darknet's spelling."""
    tmp = tmp_path_factory.mktemp("darknet")
    data = make_data(tmp, ntrain=8, nvalid=4)
    cfg = make_cfg(tmp / "tiny.cfg", max_batches=2)
    res = CliRunner().invoke(cli.main, ["detector", "train", data, cfg, "-dont_show",
                                        "-mjpeg_port", "8090", "-map", "--workers", "0",
                                        "--quiet"])
    return data, cfg, tmp, res


def test_detector_train_with_map_trains_and_keeps_best(trained):
    data, cfg, tmp, res = trained
    assert res.exit_code == 0, res.output
    assert os.path.exists(tmp / "backup" / "tiny_final.weights")
    assert os.path.exists(tmp / "backup" / "tiny_best.weights")        # -map honoured
    notes = [l for l in res.output.splitlines() if l.startswith("note:")]
    assert len(notes) == 1 and "-dont_show" in notes[0] and "-mjpeg_port" in notes[0]


def test_detector_map_prints_what_map_prints(trained):
    data, cfg, tmp, _ = trained
    w = str(tmp / "backup" / "tiny_final.weights")
    ours = CliRunner().invoke(cli.main, ["map", data, cfg, w, "--points", "11", "--quiet"])
    theirs = CliRunner().invoke(cli.main, ["detector", "map", data, cfg, w, "-points", "11",
                                           "--quiet"])
    assert ours.exit_code == theirs.exit_code == 0, theirs.output
    assert "11 Recall-points" in theirs.output
    assert theirs.output == ours.output


def test_detector_test_detects_with_the_datas_names(trained):
    data, cfg, tmp, _ = trained
    w = str(tmp / "backup" / "tiny_final.weights")
    img = open(os.path.join(tmp, "valid.txt")).read().split()[0]
    res = CliRunner().invoke(cli.main, ["detector", "test", data, cfg, w, img, "-thresh",
                                        "0.001", "-ext_output", "-dont_show"])
    assert res.exit_code == 0, res.output
    names = open(os.path.join(tmp, "obj.names")).read().split()
    boxes = [l for l in res.output.splitlines() if l.startswith("  ")]
    assert boxes and all(l.split(":")[0].strip() in names for l in boxes)


def test_detector_calc_anchors_uses_the_train_list_and_darknets_five(trained):
    data, cfg, tmp, _ = trained
    res = CliRunner().invoke(cli.main, ["detector", "calc_anchors", data, "-width", "64",
                                        "-height", "64"])
    assert res.exit_code == 0, res.output
    labels = [p.rsplit(".", 1)[0] + ".txt" for p in open(tmp / "train.txt").read().split()]
    boxes = sum(len(open(p).read().split("\n")) - 1 for p in labels)
    assert f"{boxes} boxes, 5 anchors at 64 x 64" in res.output
    res = CliRunner().invoke(cli.main, ["detector", "calc_anchors", data, "-num_of_clusters",
                                        "3"])
    assert "3 anchors at 416 x 416" in res.output


def test_detector_test_without_an_image_or_data_is_an_error(trained, tmp_path):
    data, cfg, tmp, _ = trained
    w = str(tmp / "backup" / "tiny_final.weights")
    res = CliRunner().invoke(cli.main, ["detector", "test", data, cfg, w])
    assert res.exit_code == 2 and "IMAGE" in res.output
    missing = str(tmp_path / "none.data")
    res = CliRunner().invoke(cli.main, ["detector", "test", missing, cfg, w, "a.jpg"])
    assert res.exit_code == 2 and "none.data" in res.output and "Traceback" not in res.output


def test_partial_translates_to_convert_cutoff():
    from darkcfg.cli import darknet as DN
    line = "partial cfg/yolov3-tiny.cfg yolov3-tiny.weights yolov3-tiny.conv.15 15"
    assert DN.translate(line.split()) == ("convert yolov3-tiny.weights yolov3-tiny.conv.15 "
                                          "--cfg cfg/yolov3-tiny.cfg --cutoff 15").split()


def test_alexeyabs_custom_training_lines_run_with_a_partial_weights_file(tmp_path, monkeypatch):
    """Issue #23's done-when: AlexeyAB's README "How to train (to detect your custom objects)",
    its tiny variant, with darkcfg in place of ./darknet once the user's files are in place -
    a generated 2-class set as data/obj.data, an edited yolov3-tiny as yolov3-tiny-obj.cfg and
    darknet's yolov3-tiny.weights (random here: darkcfg init)."""
    monkeypatch.chdir(tmp_path)
    make_data(tmp_path / "data", ntrain=8, nvalid=4)
    make_cfg(tmp_path / "yolov3-tiny-obj.cfg", max_batches=2)
    assert CliRunner().invoke(cli.main, ["init", "yolov3-tiny-obj.cfg",
                                         "yolov3-tiny.weights"]).exit_code == 0
    for line in ("partial yolov3-tiny-obj.cfg yolov3-tiny.weights yolov3-tiny.conv.15 15",
                 "detector train data/obj.data yolov3-tiny-obj.cfg yolov3-tiny.conv.15 -map "
                 "-dont_show",
                 "detector map data/obj.data yolov3-tiny-obj.cfg "
                 "data/backup/yolov3-tiny-obj_best.weights"):
        res = CliRunner().invoke(cli.main, line.split())
        assert res.exit_code == 0, (line, res.output)
        assert "Traceback" not in res.output
        if line.startswith("partial"):
            assert "layers 0-14" in res.output
        if line.startswith("detector train"):
            assert "yolov3-tiny.conv.15: loaded" in res.output        # the partial start
    assert "mean average precision (mAP@0.50)" in res.output
    assert os.path.exists("data/backup/yolov3-tiny-obj_final.weights")

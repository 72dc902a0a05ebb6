"""The command line, through click's CliRunner: exit codes and one-line errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from darkcfg.cli import main

from conftest import CFGS, ROOT, reference_summary, needs_shared


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("name", ["yolo_ref.cfg", "yolov3.cfg", "yolov3-tiny.cfg",
                                  "darknet53.cfg"])
def test_summary_exits_0_on_bundled_cfgs(name):
    r = run("summary", os.path.join(CFGS, name))
    assert r.exit_code == 0, r.output
    assert "BFLOPs" in r.output


@needs_shared
def test_summary_json_totals_match_darknet():
    r = run("summary", os.path.join(CFGS, "yolov3.cfg"), "--json")
    data = json.loads(r.output)
    ref = reference_summary()["yolov3"]
    assert data["total"]["layers"] == ref["layers"] == len(data["layers"])
    assert data["total"]["weights_bytes"] == ref["weights_bytes"]
    assert data["total"]["bflops"] == ref["bflops"]
    assert data["layers"][0]["output"] == [416, 416, 32]
    assert set(data["layers"][0]) == {"index", "type", "filters", "size", "stride", "input",
                                      "output", "bflops", "params", "weights"}


def test_summary_cutoff_and_width_scale():
    r = run("summary", os.path.join(CFGS, "darknet53.cfg"), "--cutoff", 75, "--width-scale",
            0.25, "--json")
    assert json.loads(r.output)["total"]["weights"] == 2_552_344


def test_bad_cfg_is_one_line_error_exit_1(tmp_path):
    bad = tmp_path / "bad.cfg"
    bad.write_text("[net]\nwidth=32\nheight=32\nchannels=3\n[convolutional]\nfilters=x\n")
    r = run("summary", bad)
    assert r.exit_code == 1
    assert r.output.strip().splitlines() == [
        f"Error: {bad}:6: [convolutional] (layer 0): option 'filters': expected an integer, "
        f"got 'x'"]
    assert "Traceback" not in r.output


@pytest.mark.parametrize("args", [
    ["summary", "--cutoff", "0"], ["summary", "--classes", "-3"], ["summary", "--nope"],
    ["convert", "a.txt"], ["build", "--width", "abc"],
])
def test_bad_arguments_exit_2(args):
    assert run(*args).exit_code == 2


def test_strict_makes_unused_options_errors(tmp_path):
    p = tmp_path / "u.cfg"
    p.write_text("[net]\nwidth=32\nheight=32\nchannels=3\n[convolutional]\nfilter=4\n")
    r = run("summary", p)
    assert r.exit_code == 0 and "did you mean 'filters'" in r.output
    r = run("summary", p, "--strict")
    assert r.exit_code == 1 and "did you mean 'filters'" in r.output


def test_init_convert_round_trip_and_force(tmp_path):
    cfg = os.path.join(CFGS, "yolov3-tiny.cfg")
    w, pt, back = tmp_path / "t.weights", tmp_path / "t.pt", tmp_path / "b.weights"
    assert run("init", cfg, w, "--seed", 3).exit_code == 0
    assert run("convert", w, pt, "--cfg", cfg, "-q").exit_code == 0
    assert run("convert", pt, back, "-q").exit_code == 0
    assert w.read_bytes() == back.read_bytes()
    r = run("convert", pt, back, "-q")
    assert r.exit_code == 1 and "already exists" in r.output
    assert run("convert", pt, back, "-q", "--force").exit_code == 0


def test_failed_convert_leaves_no_output(tmp_path):
    cfg = os.path.join(CFGS, "yolov3-tiny.cfg")
    w = tmp_path / "t.weights"
    run("init", cfg, w)
    trunc = tmp_path / "trunc.weights"
    trunc.write_bytes(w.read_bytes()[:-4000])
    before = trunc.read_bytes()
    r = run("convert", trunc, tmp_path / "out.pt", "--cfg", cfg)
    assert r.exit_code == 1 and "layer 22 [convolutional]" in r.output
    assert sorted(os.listdir(tmp_path)) == ["t.weights", "trunc.weights"]
    assert trunc.read_bytes() == before


def test_build_prints_heads_and_saves(tmp_path):
    out, saved = tmp_path / "m.pt", tmp_path / "my.cfg"
    r = run("build", os.path.join(CFGS, "yolov3-tiny.cfg"), "--classes", 3, "--width", 320,
            "--height", 320, "-o", out, "--save-cfg", saved)
    assert r.exit_code == 0, r.output
    assert "(1, 24, 10, 10)" in r.output and "(1, 24, 20, 20)" in r.output
    assert out.exists() and "classes=3" in saved.read_text()


def test_summary_does_not_import_torch():
    code = ("import sys; from darkcfg.cli import main\n"
            "try: main(['summary', '--json'], standalone_mode=False)\n"
            "finally: print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.stderr.strip().endswith("NO-TORCH"), r.stderr


def test_detect_prints_and_draws(tmp_path):
    from PIL import Image
    import numpy as np
    cfg = os.path.join(CFGS, "yolov3-tiny.cfg")
    w = tmp_path / "t.weights"
    assert run("init", cfg, w).exit_code == 0
    img = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(0).random((120, 200, 3)) * 255).astype("uint8")).save(img)
    r = run("detect", img, "--cfg", cfg, "--weights", w, "--thresh", "0.3", "-o", tmp_path / "o")
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"{img}: ") and "(200 x 120)" in r.output
    assert Image.open(tmp_path / "o" / "in.png").size == (200, 120)
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    r = run("detect", bad, "--cfg", cfg, "--weights", w)
    assert r.exit_code == 1 and "not an image" in r.output

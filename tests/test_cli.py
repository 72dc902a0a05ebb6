"""The command line, through click's CliRunner: exit codes and one-line errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from darkcfg.cli import main

from _helpers import iou, noise_image, run_cli as run
from conftest import CFGS, ROOT, reference_summary, needs_shared


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


# ----- issue 11: what a new user hit ----------------------------------------------------------

TINY = os.path.join(CFGS, "yolov3-tiny.cfg")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """yolov3-tiny synthetic weights as .weights, .pt and .safetensors (made once)."""
    d = tmp_path_factory.mktemp("tiny")
    w, pt, st = d / "t.weights", d / "t.pt", d / "t.safetensors"
    assert run("init", TINY, w, "--seed", 1).exit_code == 0
    assert run("convert", w, pt, "--cfg", TINY, "-q").exit_code == 0
    assert run("convert", w, st, "--cfg", TINY, "-q").exit_code == 0
    return {"weights": w, "pt": pt, "safetensors": st}


SMALL = ("[net]\nwidth=64\nheight=64\nchannels=3\n"
         "[convolutional]\nbatch_normalize=1\nfilters=8\nsize=3\nstride=2\npad=1\n"
         "activation=leaky\n[maxpool]\nsize=2\nstride=2\n"
         "[convolutional]\nbatch_normalize=1\nfilters=16\nsize=3\nstride=2\npad=1\n"
         "activation=leaky\n[convolutional]\nfilters=21\nsize=1\nactivation=linear\n"
         "[yolo]\nmask=0,1,2\nanchors=10,14, 23,27, 37,58\nclasses=2\nnum=3\n")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small [yolo] network (64 x 64, 2 classes): cfg, .weights, .pt and .safetensors."""
    d = tmp_path_factory.mktemp("small")
    cfg, w, pt, st = d / "s.cfg", d / "s.weights", d / "s.pt", d / "s.safetensors"
    cfg.write_text(SMALL)
    assert run("init", cfg, w, "--seed", 1).exit_code == 0
    assert run("convert", w, pt, "--cfg", cfg, "-q").exit_code == 0
    assert run("convert", w, st, "--cfg", cfg, "-q").exit_code == 0
    return {"cfg": cfg, "weights": w, "pt": pt, "safetensors": st}


def image(path, w=200, h=120, seed=0):
    return noise_image(path, w, h, seed)[0]


def _scaled(tmp_path, name, scale=0.125):
    out = tmp_path / f"{name[:-4]}-{scale}.cfg"
    assert run("summary", os.path.join(CFGS, name), "--width-scale", scale, "--width", 128,
               "--height", 128, "--save-cfg", out).exit_code == 0
    return out


def test_package_installs_from_a_wheel_with_its_cfgs(tmp_path):
    """Item 0: a wheel (a non-editable install) carries cfgs/: build it from a copy of the
    sources, install it in a fresh venv, run the main job from an empty folder.

    The fresh venv gets torch and the other dependencies without a download (torch's CPU build
    is ~700 MB, an unpinned one several GB): a .pth file in its site-packages names the folders
    this interpreter imports them from.  That holds wherever the suite runs - a venv (whose
    packages a ``--system-site-packages`` venv would not see), a conda env, the system Python.
    A folder named by a .pth is only put on sys.path (its own .pth files, such as an editable
    install's finder, are not run), and the venv's own site-packages comes first: the darkcfg
    imported is the wheel's."""
    import importlib
    import shutil
    src = tmp_path / "src"
    src.mkdir()
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, f), src / f)
    for d in ("darkcfg", "cfgs"):
        shutil.copytree(os.path.join(ROOT, d), src / d,
                        ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    # no PYTHONPATH anywhere: a checkout on it (with the egg-info an editable install leaves)
    # makes pip take darkcfg as installed and skip the wheel
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist",
                          src], check=True, capture_output=True, env=env)
    (wheel,) = (tmp_path / "dist").glob("darkcfg-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv],
                   check=True)                          # this pip installs into it (--python)
    py = venv / "bin" / "python"
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    deps = ("torch", "numpy", "click", "tqdm", "PIL", "safetensors", "cv2", "matplotlib",
            "pycocotools")
    where = {os.path.dirname(os.path.dirname(importlib.import_module(m).__file__))
             for m in deps}
    with open(os.path.join(site, "darkcfg-test-deps.pth"), "w") as f:
        f.write("".join(d + "\n" for d in sorted(where)))
    subprocess.run(pip + ["--python", py, "install", "--no-deps", "--no-index", wheel],
                   check=True, capture_output=True, env=env)
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    where = subprocess.run([py, "-c", "import darkcfg; print(darkcfg.__file__)"], cwd=empty,
                           env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(venv)), where          # the wheel's copy, not the repo's
    r = subprocess.run([venv / "bin" / "darkcfg", "build", "--width", "64", "--height", "64"],
                       cwd=empty, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "yolo_ref.cfg: 64 x 64 x 3 input" in r.stdout and "layers: 109" in r.stdout


def test_checkpoint_remembers_the_source_layer_order(tmp_path):
    """Item 1: .weights in yolov3's order -> .pt/.safetensors with the yolo_ref model -> .weights
    is byte-identical (it came back in yolo_ref's order before), and summary --weights refuses
    a file in the other order, which loads with NaN heads."""
    import numpy as np
    import torch
    import darkcfg
    ref, v3 = _scaled(tmp_path, "yolo_ref.cfg"), _scaled(tmp_path, "yolov3.cfg")
    src = tmp_path / "v3.weights"
    assert run("init", v3, src, "--seed", 2).exit_code == 0
    for ext in ("pt", "safetensors"):
        ck, back = tmp_path / f"m.{ext}", tmp_path / f"back-{ext}.weights"
        r = run("convert", src, ck, "--cfg", ref, "--weights-cfg", v3, "-q")
        assert r.exit_code == 0, r.output
        r = run("convert", ck, back, "-q")
        assert r.exit_code == 0, r.output
        assert back.read_bytes() == src.read_bytes()
    again = tmp_path / "again.pt"                   # .safetensors -> .pt keeps the order too
    assert run("convert", tmp_path / "m.safetensors", again, "-q").exit_code == 0
    assert run("convert", again, tmp_path / "again.weights", "-q").exit_code == 0
    assert (tmp_path / "again.weights").read_bytes() == src.read_bytes()
    wrong = tmp_path / "ref-order.weights"
    assert run("convert", tmp_path / "m.pt", wrong, "--weights-cfg", ref, "-q").exit_code == 0
    assert wrong.read_bytes() != src.read_bytes()
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        assert not all(torch.isfinite(o).all() for o in darkcfg.load(str(wrong), str(v3))(x))
        assert all(torch.isfinite(o).all() for o in darkcfg.load(str(src), str(v3))(x))
    r = run("summary", v3, "--weights", wrong)
    assert r.exit_code == 1 and "rolling_variance" in r.output and "negative" in r.output
    assert run("summary", v3, "--weights", src).exit_code == 0
    assert np.array_equal(np.fromfile(src, "<f4")[5:], np.fromfile(tmp_path / "back-pt.weights",
                                                                   "<f4")[5:])


def _unchanged(paths):
    return {str(p): (p.read_bytes(), os.stat(p).st_mtime_ns) for p in paths}


@pytest.mark.parametrize("case", ["save-cfg-is-input", "save-cfg-exists", "export-onto-cfg",
                                  "export-onto-weights", "init-twice", "link-to-input",
                                  "hard-link-to-input", "build-output-exists",
                                  "detect-drawing-exists", "detect-same-names"])
def test_never_an_input_never_an_existing_file_without_force(case, tmp_path, small):
    """Item 4: one rule for every command that writes."""
    cfg = tmp_path / "t.cfg"
    cfg.write_text(SMALL)
    other = tmp_path / "other.cfg"
    other.write_text("keep me\n")
    pt = tmp_path / "t.pt"
    pt.write_bytes(small["pt"].read_bytes())
    img = image(tmp_path / "a.png")
    (tmp_path / "b").mkdir()
    img2 = image(tmp_path / "b" / "a.png", seed=1)
    out = tmp_path / "out"
    out.mkdir()
    drawn = out / "a.png"
    drawn.write_bytes(b"an old drawing")
    link = tmp_path / "link.cfg"
    link.symlink_to(cfg)
    hard = tmp_path / "hard.cfg"             # another name of the cfg's inode
    os.link(cfg, hard)
    old = tmp_path / "old.pt"
    old.write_bytes(b"an old model")
    args, force_helps = {
        "save-cfg-is-input": (["summary", cfg, "--save-cfg", cfg, "--force"], False),
        "save-cfg-exists": (["summary", cfg, "--save-cfg", other], True),
        "export-onto-cfg": (["export", cfg, cfg, "--force"], False),
        "export-onto-weights": (["export", cfg, pt, "--weights", pt, "--force"], False),
        "init-twice": (["init", cfg, tmp_path / "n.weights", "--save-cfg",
                        tmp_path / "n.weights"], False),
        "link-to-input": (["build", cfg, "--save-cfg", link, "--force"], False),
        "hard-link-to-input": (["summary", cfg, "--save-cfg", hard, "--force"], False),
        "build-output-exists": (["build", "--weights", pt, "-o", old], True),
        "detect-drawing-exists": (["detect", img, "--weights", pt, "-o", out], True),
        "detect-same-names": (["detect", img, img2, "--weights", pt, "-o", tmp_path / "o2"],
                              False),
    }[case]
    before = _unchanged([cfg, other, pt, drawn, old])
    r = run(*args)
    assert r.exit_code == 1, r.output
    assert ("already exists" in r.output) == bool(force_helps), r.output
    assert _unchanged([cfg, other, pt, drawn, old]) == before
    assert link.is_symlink() and not (tmp_path / "o2").exists()
    assert os.path.samefile(cfg, hard)                   # not replaced by a new file either
    if force_helps:
        assert run(*args, "--force").exit_code == 0


def test_an_output_that_is_not_a_regular_file_is_refused(tmp_path):
    """--force onto a FIFO (or a device) would rename the temporary file over it: refused, the
    FIFO stays a FIFO."""
    import stat
    fifo = tmp_path / "pipe.weights"
    os.mkfifo(fifo)
    r = run("init", TINY, fifo, "--force")
    assert r.exit_code == 1 and "not a regular file" in r.output and "Traceback" not in r.output
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["pipe.weights"]      # no .part left


@pytest.mark.skipif(not hasattr(os, "fork"), reason="resource limits need POSIX")
def test_an_output_that_cannot_be_written_whole_is_an_error_and_leaves_nothing(tmp_path, small):
    """A file-size limit below the output's size (as a full disk): Pillow writing a drawing
    itself ignored the short write (a truncated image, exit 0), safetensors raised a traceback."""
    import resource
    img = image(tmp_path / "a.jpg", 400, 300)    # noise: a JPEG of ~100 KB (Pillow's JPEG
    #                                              encoder writes to the file descriptor itself)
    out = tmp_path / "out"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
    r = subprocess.run([sys.executable, "-m", "darkcfg", "detect", img, "--weights", small["pt"],
                        "-o", out], capture_output=True, text=True, preexec_fn=limit)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "a.jpg" in r.stderr
    assert not out.exists() or list(out.iterdir()) == []
    for dst in ("o.safetensors", "o.pt", "o.weights"):     # safetensors raised its own type
        r = subprocess.run([sys.executable, "-m", "darkcfg", "convert", small["weights"],
                            tmp_path / dst, "--cfg", small["cfg"], "-q"], capture_output=True,
                           text=True, preexec_fn=lambda: resource.setrlimit(
                               resource.RLIMIT_FSIZE, (2048, 2048)))
        assert r.returncode == 1 and "Traceback" not in r.stderr and dst in r.stderr, r.stderr
        assert not [p for p in os.listdir(tmp_path) if p.startswith(("o.", ".o."))]


def test_outputs_get_umask_modes_and_rewrites_keep_mode_and_links(tmp_path):
    """Item 5: a new output has the mode open() gives (0666 & ~umask), --force and
    anchors --write-cfg keep an existing file's mode, and a symlinked cfg stays a link whose
    target is rewritten."""
    import stat
    from test_anchors import make_labels
    old = os.umask(0o022)
    try:
        w = tmp_path / "t.weights"
        assert run("init", TINY, w, "--save-cfg", tmp_path / "s.cfg").exit_code == 0
        assert stat.S_IMODE(os.stat(w).st_mode) == 0o644
        assert stat.S_IMODE(os.stat(tmp_path / "s.cfg").st_mode) == 0o644
        os.chmod(w, 0o640)
        assert run("init", TINY, w, "--seed", 5, "--force").exit_code == 0
        assert stat.S_IMODE(os.stat(w).st_mode) == 0o640
        real = tmp_path / "real.cfg"
        real.write_text(open(TINY).read())
        os.chmod(real, 0o664)
        link = tmp_path / "link.cfg"
        link.symlink_to(real)
        make_labels(tmp_path / "labels")
        r = run("anchors", tmp_path / "labels", "--num", 6, "--write-cfg", link)
        assert r.exit_code == 0, r.output
        assert link.is_symlink() and "anchors=" in real.read_text().replace(" ", "")
        printed = r.output.split("anchors = ")[1].splitlines()[0].replace(" ", "")
        assert f"anchors={printed}" in real.read_text().replace(" ", "")
        assert stat.S_IMODE(os.stat(real).st_mode) == 0o664
    finally:
        os.umask(old)


def test_sigterm_during_convert_leaves_no_part_file(tmp_path, tiny):
    """Item 6: SIGTERM arrives while the .pt is being written: exit 143, no output, no .part."""
    code = ("import os, signal, sys, time\n"
            "import darkcfg.ptfile as P\n"
            "def save(obj, path, progress=None):\n"
            "    open(path, 'wb').write(b'x' * 100000)\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    time.sleep(20)\n"
            "P.save = save\n"
            "from darkcfg.cli import main\n"
            "main(sys.argv[1:])\n")
    out = tmp_path / "out"
    out.mkdir()
    r = subprocess.run([sys.executable, "-c", code, "convert", str(tiny["weights"]),
                        str(out / "t.pt"), "--cfg", TINY, "-q"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 143, r.stderr
    assert os.listdir(out) == []


def test_16_bit_png_is_read_as_darknet_and_opencv_read_it(tmp_path):
    """Item 2: a 16-bit grey PNG (Pillow's I;16) keeps its top 8 bits (stb_image, OpenCV);
    Pillow's convert("RGB") made it all white."""
    cv2 = pytest.importorskip("cv2")
    import numpy as np
    from darkcfg.infer import detect as D
    a = (np.arange(48 * 64).reshape(48, 64) * 21 % 65536).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), a)
    ours = np.asarray(D.open_image(str(tmp_path / "g16.png")))
    theirs = cv2.imread(str(tmp_path / "g16.png"), cv2.IMREAD_COLOR)[..., ::-1]
    assert np.array_equal(ours, theirs) and ours.max() < 255


def test_classes_rewrites_keypoint_heads_and_refuses_a_cfg_without_heads():
    """Item 3: yolo_kp's three separate heads end in a 3x3 conv of 256 -> classes + 1 with a
    bias, so 80 -> 3 classes removes 77 * (256 * 9 + 1) params per head."""
    kp = os.path.join(CFGS, "yolo_kp.cfg")
    full = json.loads(run("summary", kp, "--json").output)["total"]["params"]
    r = run("summary", kp, "--json", "--classes", 3)
    assert r.exit_code == 0, r.output
    assert full - json.loads(r.output)["total"]["params"] == 3 * 77 * (256 * 9 + 1)
    r = run("summary", os.path.join(CFGS, "darknet53.cfg"), "--classes", 3)
    assert r.exit_code == 1 and "no [yolo]" in r.output


def test_huge_png_header_and_pt_without_header_are_clean_errors(tmp_path, small):
    """Item 8 (detect's and the .pt's parts)."""
    import struct
    import zlib
    import torch

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 40000,
                                                                        8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b""))
    r = run("detect", bomb, "--weights", small["pt"])
    assert r.exit_code == 1 and r.output.startswith(f"Error: {bomb}: ") and "pixels" in r.output
    obj = torch.load(small["pt"], weights_only=True)
    for change in ("drop", "bad"):
        if change == "drop":
            obj.pop("header")
        else:
            obj["header"] = {"major": "x"}
        torch.save(obj, tmp_path / "noheader.pt")
        for args in (["detect", image(tmp_path / "a.png"), "--weights"], ["build", "--weights"],
                     ["convert"]):
            extra = [tmp_path / "o.weights"] if args == ["convert"] else []
            r = run(*args, tmp_path / "noheader.pt", *extra)
            assert r.exit_code == 1 and "header" in r.output, r.output
            assert "Traceback" not in r.output


@pytest.mark.parametrize("kind", ["pt", "safetensors"])
def test_checkpoints_work_in_detect_build_and_export(kind, tmp_path, small):
    """Item 9: a .pt/.safetensors carries its cfg; a --cfg that disagrees is an error."""
    pytest.importorskip("onnx")
    ck = small[kind]
    r = run("detect", image(tmp_path / "a.png"), "--weights", ck, "--thresh", 0.05)
    assert r.exit_code == 0, r.output
    r = run("build", "--weights", ck, "--width", 96, "--height", 96)
    assert r.exit_code == 0, r.output
    assert "(1, 21, 12, 12)" in r.output
    r = run("export", tmp_path / "t.onnx", "--weights", ck)
    assert r.exit_code == 0, r.output
    for args in (["convert", ck, tmp_path / "b.weights"], ["detect", tmp_path / "a.png",
                                                           "--weights", ck],
                 ["build", os.path.join(CFGS, "yolov3.cfg"), "--weights", ck]):
        r = run(*args, "--cfg", os.path.join(CFGS, "yolov3.cfg")) if args[0] != "build" \
            else run(*args)
        assert r.exit_code == 1 and "is not the network stored in" in r.output, r.output
    assert run("convert", ck, tmp_path / "c.weights", "--cfg", small["cfg"], "-q").exit_code == 0
    assert (tmp_path / "c.weights").read_bytes() == small["weights"].read_bytes()


def test_cutoff_convert_writes_darknet53_conv_74(tmp_path):
    """Item 10: darknet's `partial`.  The real darknet53.conv.74 is 162,482,580 bytes: a
    20-byte header and the floats of the first 52 convs.  On a width-scaled darknet53 the
    output is the source's first bytes, cut after layer 74, and the message says which layers
    it kept and how many of them carry weights: layers 0-74 (52 with weights)."""
    r = run("summary", os.path.join(CFGS, "darknet53.cfg"), "--cutoff", 75, "--json")
    assert 20 + 4 * json.loads(r.output)["total"]["weights"] == 162_482_580
    cfg = tmp_path / "d53.cfg"
    assert run("summary", os.path.join(CFGS, "darknet53.cfg"), "--width-scale", 0.125,
               "--save-cfg", cfg).exit_code == 0
    src, conv74 = tmp_path / "d53.weights", tmp_path / "darknet53.conv.74"
    assert run("init", cfg, src).exit_code == 0
    r = run("convert", src, conv74, "--cfg", cfg, "--cutoff", 75, "-q")
    assert r.exit_code == 0, r.output
    assert "layers 0-74 (52 with weights), 260 tensors" in r.output
    cut = 20 + 4 * json.loads(run("summary", cfg, "--cutoff", 75, "--json").output)[
        "total"]["weights"]
    assert conv74.read_bytes() == src.read_bytes()[:cut]
    via = tmp_path / "d53.pt"
    assert run("convert", src, via, "--cfg", cfg, "-q").exit_code == 0
    r = run("convert", via, tmp_path / "via.conv.74", "--cutoff", 75, "-q")
    assert r.exit_code == 0 and "layers 0-74 (52 with weights), 260 tensors" in r.output, r.output
    assert (tmp_path / "via.conv.74").read_bytes() == conv74.read_bytes()
    r = run("convert", src, tmp_path / "x.weights", "--cfg", cfg, "--cutoff", 999)
    assert r.exit_code == 2 and "outside 1..78" in r.output


def test_anchors_reads_list_paths_from_the_current_folder(tmp_path, monkeypatch):
    """Item 11: darknet's data/train.txt lists data/images/x.jpg relative to where darknet
    runs, not to the list file."""
    from test_anchors import make_labels
    (tmp_path / "data").mkdir()
    make_labels(tmp_path / "data" / "labels", n=30)
    names = sorted(os.listdir(tmp_path / "data" / "labels"))
    (tmp_path / "data" / "train.txt").write_text(
        "".join(f"data/images/{n[:-4]}.jpg\n" for n in names))
    monkeypatch.chdir(tmp_path)
    r = run("anchors", "data/train.txt", "--num", 3)
    assert r.exit_code == 0, r.output
    assert r.output.startswith("30 boxes")


@pytest.mark.parametrize("command", ["convert", "build", "detect"])
def test_forgotten_cfg_says_what_was_assumed(command, tmp_path, small):
    """Item 12."""
    args = {"convert": ["convert", small["weights"], tmp_path / "o.pt"],
            "build": ["build", "--weights", small["weights"]],
            "detect": ["detect", image(tmp_path / "a.png"), "--weights", small["weights"]]}
    r = run(*args[command])
    assert r.exit_code == 1
    assert "no --cfg given" in r.output and "yolov3.cfg" in r.output and "--cfg CFG" in r.output


def test_export_is_an_attribute_and_import_stays_torch_free():
    """Item 13 (darkcfg.export)."""
    code = ("import sys, darkcfg\nassert 'torch' not in sys.modules\n"
            "print(darkcfg.export.export_onnx.__name__, darkcfg.detect.letterbox.__name__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.split() == ["export_onnx", "letterbox"], r.stderr


def test_truncated_mid_float_names_the_layer(tmp_path, tiny):
    """Issue 10 item 4.  yolov3-tiny's layer 0 is a BN conv 3 -> 16, 3x3: 16 * 4 + 16 * 27 =
    496 floats; layer 1 is a maxpool; a file cut 2 bytes into what follows ends in layer 2."""
    cut = tmp_path / "half.weights"
    cut.write_bytes(tiny["weights"].read_bytes()[:20 + 4 * 496 + 2])
    r = run("convert", cut, tmp_path / "o.pt", "--cfg", TINY)
    assert r.exit_code == 1 and "layer 2 [convolutional]" in r.output, r.output
    assert "not a whole number of floats" in r.output


# ----- the smaller things -----------------------------------------------------------------------

def test_detect_clips_caps_and_leaves_no_folder_on_failure(tmp_path, small):
    import re
    img = image(tmp_path / "a.png")
    r = run("detect", img, "--weights", small["pt"], "--thresh", 0.02, "--nms", 0.9)
    rows = [list(map(float, re.findall(r"(-?\d+) (-?\d+) (-?\d+) (-?\d+)$", l)[0]))
            for l in r.output.splitlines()[1:]]
    assert len(rows) > 5
    assert all(0 <= x1 <= x2 <= 200 and 0 <= y1 <= y2 <= 120 for x1, y1, x2, y2 in rows)
    scores = [float(l.split("%")[0].split()[-1]) for l in r.output.splitlines()[1:]]
    r = run("detect", img, "--weights", small["pt"], "--thresh", 0.02, "--nms", 0.9,
            "--max-det", 3)
    top = [float(l.split("%")[0].split()[-1]) for l in r.output.splitlines()[1:]]
    assert top == sorted(scores, reverse=True)[:3]
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    r = run("detect", bad, "--weights", small["pt"], "-o", tmp_path / "never")
    assert r.exit_code == 1 and not (tmp_path / "never").exists()


def test_detect_decodes_region_models_as_darknet(tmp_path):
    """[region] (YOLOv2): the detections equal a decode written here from darknet's
    get_region_box (x = (col + sigmoid(tx)) / w, w = anchor_w * exp(tw) / w), objectness *
    softmax > thresh, then greedy per-class NMS."""
    import numpy as np
    import torch
    import darkcfg
    from darkcfg.infer import detect as D
    cfg = tmp_path / "v2.cfg"
    cfg.write_text("[net]\nwidth=64\nheight=64\nchannels=3\n"
                   "[convolutional]\nfilters=8\nsize=3\nstride=2\npad=1\nbatch_normalize=1\n"
                   "activation=leaky\n[maxpool]\nsize=2\nstride=2\n"
                   "[convolutional]\nfilters=14\nsize=1\nactivation=linear\n"
                   "[region]\nanchors=1,1.5, 2.5,1\nclasses=2\ncoords=4\nnum=2\nsoftmax=1\n")
    w = tmp_path / "v2.weights"
    assert run("init", cfg, w, "--seed", 3).exit_code == 0
    img = image(tmp_path / "sq.png", 64, 64)
    model = darkcfg.load(str(w), str(cfg))
    dets, _ = D.detect_image(model, str(img), 0.2, 0.45)
    x = torch.from_numpy(np.asarray(D.open_image(str(img)), np.float32).transpose(2, 0, 1)
                         / 255)[None]
    with torch.no_grad():
        raw = model(x)[0][0].double().numpy().reshape(2, 7, 16, 16)
    sig = lambda v: 1 / (1 + np.exp(-v))
    cand = []
    for a, (aw, ah) in enumerate([(1, 1.5), (2.5, 1)]):
        for row in range(16):
            for col in range(16):
                t = raw[a, :, row, col]
                bx, by = (col + sig(t[0])) / 16, (row + sig(t[1])) / 16
                bw, bh = aw * np.exp(t[2]) / 16, ah * np.exp(t[3]) / 16
                p = sig(t[4]) * np.exp(t[5:]) / np.exp(t[5:]).sum()
                cand += [(p[c], c, (bx - bw / 2, by - bh / 2, bx + bw / 2, by + bh / 2))
                         for c in range(2) if p[c] > 0.2]
    cand.sort(key=lambda d: -d[0])
    kept = []
    for s, c, b in cand:
        if all(k[1] != c or iou(k[2], b) <= 0.45 for k in kept):
            kept.append((s, c, b))
    assert len(kept) >= 3
    got = sorted(((d.score, d.cls, d.box) for d in dets), key=lambda d: -d[0])
    assert len(got) == len(kept)
    for (s1, c1, b1), (s2, c2, b2) in zip(got, kept):
        assert c1 == c2 and abs(s1 - s2) < 1e-5
        clipped = [min(max(v * 64, 0), 64) for v in b2]
        assert np.allclose(b1, clipped, atol=1e-3)
    r = run("detect", img, "--weights", w, "--cfg", cfg, "--thresh", 0.2)
    assert r.exit_code == 0 and f"{len(kept)} detections" in r.output, r.output


def test_broken_pipe_is_silent():
    """`darkcfg summary | head`: the reader goes away; no 'Error: : Broken pipe', exit 141."""
    p = subprocess.Popen([sys.executable, "-m", "darkcfg", "summary",
                          os.path.join(CFGS, "yolov3.cfg")], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd=ROOT)
    p.stdout.close()                      # before the child has written anything
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 141 and err == "", err


@pytest.mark.parametrize("args", [
    ["summary", "nope.cfg"], ["convert", "nope.weights", "x.pt"], ["build", "nope.cfg"],
    ["build", "--weights", "nope.weights"], ["init", "nope.cfg", "x.weights"],
    ["detect", "nope.jpg", "--weights", "nope.weights"], ["anchors", "nope.txt"],
    ["export", "nope.cfg", "x.onnx"], ["convert", "a.weights", "b.pt", "--cfg", "nope.cfg"],
])
def test_a_missing_input_path_exits_2_everywhere(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.weights").write_bytes(b"\0" * 20)
    r = run(*args)
    assert r.exit_code == 2, r.output
    assert not list(tmp_path.glob("x.*"))


def test_summary_checks_a_checkpoint(tmp_path, tiny):
    r = run("summary", TINY, "--weights", tiny["pt"])
    assert r.exit_code == 0 and "59 tensors fit the cfg - OK" in r.output, r.output
    r = run("summary", os.path.join(CFGS, "yolov3.cfg"), "--weights", tiny["safetensors"])
    assert r.exit_code == 1 and "layer 0 [convolutional]" in r.output, r.output


def test_read_only_output_names_the_output_not_the_temp_file(tmp_path, tiny, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    try:
        if os.access(ro, os.W_OK):          # root writes anywhere: the OS's refusal, simulated
            import tempfile

            def refuse(prefix="", suffix="", dir=None):
                name = os.path.join(dir, prefix + "abc" + suffix)
                raise PermissionError(13, "Permission denied", name)
            monkeypatch.setattr(tempfile, "mkstemp", refuse)
        r = run("convert", tiny["weights"], ro / "t.pt", "--cfg", TINY, "-q")
        assert r.exit_code == 1 and r.output.startswith(f"Error: {ro / 't.pt'}: cannot write")
        assert ".part" not in r.output
    finally:
        os.chmod(ro, 0o755)


def test_help_lists_every_command_and_every_option_has_help():
    r = run("--help")
    listed = r.output.split("Commands:")[1].split()
    assert set(main.commands) <= set(listed)
    for name, cmd in main.commands.items():
        for p in cmd.params:
            if isinstance(p, __import__("click").Option) and p.name not in ("help",):
                assert p.help, f"{name} {p.opts[0]} has no help"


@pytest.mark.parametrize("ext", ["pt", "safetensors"])
def test_convert_from_weights_does_not_import_torch(ext, tmp_path, tiny):
    code = ("import sys; from darkcfg.cli import main\n"
            "try: main(sys.argv[1:], standalone_mode=False)\n"
            "finally: print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code, "convert", str(tiny["weights"]),
                        str(tmp_path / f"o.{ext}"), "--cfg", TINY, "-q"], capture_output=True,
                       text=True, cwd=ROOT)
    assert r.stderr.strip().endswith("NO-TORCH"), r.stderr
    assert (tmp_path / f"o.{ext}").exists()

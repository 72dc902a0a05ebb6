"""detect at work (issue #24): folders, lists, videos and streams in; darknet's JSON, its
-ext_output and YOLO labels out; a bad item named and skipped.  The videos are generated
(cv2.VideoWriter, MJPG in .avi: moving shapes) and the network is a small yolov3-tiny with
seeded random weights, run at a low threshold so that every frame has detections to compare.
"""
from __future__ import annotations

import json
import os
import time

import cv2
import numpy as np
import pytest

from _helpers import make_cfg, make_data, run_cli
from conftest import ROOT

DETECT = ("--thresh", "0.15", "--max-det", "4")


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("net")
    cfg = make_cfg(tmp / "tiny.cfg")
    weights = str(tmp / "w.weights")
    assert run_cli("init", cfg, weights).exit_code == 0
    return cfg, weights


def make_video(path, frames=6, size=(96, 72), fps=10.0) -> str:
    """A rectangle and a disc moving across dark noise."""
    w, h = size
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    rng = np.random.default_rng(0)
    for k in range(frames):
        img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        cv2.rectangle(img, (5 + 6 * k, 10), (30 + 6 * k, 40), (230, 230, 230), -1)
        cv2.circle(img, (70 - 4 * k, 50), 12, (200, 240, 250), -1)
        out.write(img)
    out.release()
    return str(path)


def _frames_of(video) -> list:
    cap = cv2.VideoCapture(video)
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            return out
        out.append(f)


def _blocks(output: str) -> list:
    """The printed detections, one (header without its name, [box lines]) per image/frame."""
    blocks = []
    for line in output.splitlines():
        if line.startswith("  "):
            blocks[-1][1].append(line)
        elif ": " in line and "detections" in line:
            blocks.append((line.rsplit(": ", 1)[1], []))
    return blocks


def test_video_frames_give_the_detections_of_the_same_frames_as_images(tmp_path, net):
    cfg, weights = net
    video = make_video(tmp_path / "clip.avi")
    pngs = []
    for k, f in enumerate(_frames_of(video), 1):
        pngs.append(str(tmp_path / f"f{k}.png"))
        cv2.imwrite(pngs[-1], f)                 # lossless: the pixels the video gave
    res_v = run_cli("detect", video, "--cfg", cfg, "--weights", weights, *DETECT)
    res_i = run_cli("detect", *pngs, "--cfg", cfg, "--weights", weights, *DETECT)
    assert res_v.exit_code == res_i.exit_code == 0, res_v.output
    assert f"{video} frame 6:" in res_v.output
    assert _blocks(res_v.output) == _blocks(res_i.output)
    assert sum(len(b) for _, b in _blocks(res_v.output)) > 0


def test_a_drawn_video_keeps_the_frame_count_size_and_fps(tmp_path, net):
    cfg, weights = net
    video = make_video(tmp_path / "clip.avi", frames=5, fps=12.0)
    res = run_cli("detect", video, "--cfg", cfg, "--weights", weights, *DETECT,
                  "-o", tmp_path / "out")
    assert res.exit_code == 0, res.output
    drawn = str(tmp_path / "out" / "clip.avi")
    cap = cv2.VideoCapture(drawn)
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0)
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (96, 72)
    assert len(_frames_of(drawn)) == 5
    assert [n for n in os.listdir(tmp_path / "out")] == ["clip.avi"]        # no .part left
    res = run_cli("detect", video, "--cfg", cfg, "--weights", weights, "-o", tmp_path / "out")
    assert res.exit_code == 1 and "already exists" in res.output


def test_folders_recursively_lists_and_a_bad_item_named_and_skipped(tmp_path, net):
    cfg, weights = net
    data = make_data(tmp_path / "set", ntrain=3, nvalid=2)
    assert data
    (tmp_path / "set" / "valid" / "deeper").mkdir()
    make_video(tmp_path / "set" / "valid" / "deeper" / "clip.avi", frames=2)
    res = run_cli("detect", tmp_path / "set" / "valid", "--cfg", cfg, "--weights", weights,
                  *DETECT)
    assert res.exit_code == 0, res.output
    assert "deeper/clip.avi frame 2:" in res.output and "val001.png:" in res.output
    lst = tmp_path / "set" / "train.txt"
    entries = lst.read_text().split()
    os.remove(entries[1])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    res = run_cli("detect", lst, broken, "--cfg", cfg, "--weights", weights, *DETECT)
    assert res.exit_code == 1
    assert f"skipped: {lst}:2: '{entries[1]}' does not exist" in res.output
    assert f"skipped: {broken}" in res.output
    assert f"{entries[0]}:" in res.output and f"{entries[2]}:" in res.output   # the rest done
    assert "2 of 4 inputs could not be read" in res.output and "Traceback" not in res.output


def test_a_stream_that_does_not_answer_is_a_clear_error_in_bounded_time(net):
    """In a fresh process: FFmpeg reads its log level once per process, at its first use."""
    import subprocess
    import sys
    cfg, weights = net
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "darkcfg", "detect", "rtsp://127.0.0.1:9/none",
                        "--cfg", cfg, "--weights", weights, "--reconnect", "0"],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": ROOT})
    assert time.monotonic() - t < 60
    assert r.returncode == 1 and "Error: rtsp://127.0.0.1:9/none: the stream could not be " \
        "opened" in r.stderr, r.stderr                    # one input: its problem is the error
    assert "Traceback" not in r.stderr
    assert "@ 0x" not in r.stderr and "[ WARN" not in r.stderr, r.stderr   # FFmpeg's, OpenCV's


def test_json_is_darknets_layout_and_matches_the_printed_boxes(tmp_path, net):
    cfg, weights = net
    data = make_data(tmp_path, ntrain=1, nvalid=2)
    assert data
    imgs = (tmp_path / "valid.txt").read_text().split()
    out = tmp_path / "result.json"
    res = run_cli("detect", *imgs, "--cfg", cfg, "--weights", weights, *DETECT, "--json", out,
                  "--ext-output", "--names", tmp_path / "obj.names")
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert text.startswith('[\n{\n "frame_id":1, \n "filename":"') and text.endswith("\n ] \n}\n]")
    doc = json.loads(text)
    assert [e["frame_id"] for e in doc] == [1, 2] and [e["filename"] for e in doc] == imgs
    for entry, (_, lines) in zip(doc, _blocks(res.output)):
        w, h = cv2.imread(entry["filename"]).shape[1::-1]
        assert len(entry["objects"]) == len(lines)
        for o, line in zip(entry["objects"], lines):
            name, rest = line.strip().split(": ", 1)
            assert o["name"] == name and f"{o['confidence'] * 100:.1f}%" in rest
            r = o["relative_coordinates"]
            left, top = (r["center_x"] - r["width"] / 2) * w, (r["center_y"] - r["height"] / 2) * h
            ext = rest.split("(left_x:")[1].split()
            assert (float(ext[0]), float(ext[2])) == (pytest.approx(left, abs=0.51),
                                                      pytest.approx(top, abs=0.51))


def test_save_labels_then_data_check_passes_and_never_overwrites(tmp_path, net):
    cfg, weights = net
    data = make_data(tmp_path, ntrain=3, nvalid=1)
    imgs = (tmp_path / "train.txt").read_text().split()
    labels = [p[:-4] + ".txt" for p in imgs]
    before = [open(p).read() for p in labels]
    res = run_cli("detect", tmp_path / "train.txt", "--cfg", cfg, "--weights", weights,
                  *DETECT, "--save-labels")
    assert res.exit_code == 1 and "already exists" in res.output
    assert [open(p).read() for p in labels] == before                      # untouched
    res = run_cli("detect", tmp_path / "train.txt", "--cfg", cfg, "--weights", weights,
                  *DETECT, "--save-labels", "--force")
    assert res.exit_code == 0, res.output
    written = [open(p).read() for p in labels]
    assert written != before and all(written)
    boxes = sum(len(b) for _, b in _blocks(res.output))
    assert sum(len(t.splitlines()) for t in written) == boxes
    check = run_cli("data", "check", data, "--cfg", cfg)
    assert check.exit_code == 0, check.output


def test_a_keypoint_network_finds_and_draws_its_points_in_a_video(tmp_path):
    from test_keypoint import _point_model
    cfg, w, names = _point_model(tmp_path)
    video = str(tmp_path / "dots.avi")
    out = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 8.0, (64, 32))
    for k in range(4):
        img = np.zeros((32, 64, 3), np.uint8)
        img[4:7, 8 + 4 * k:11 + 4 * k] = (0, 0, 255)              # red (BGR)
        img[20:23, 40:43] = (0, 200, 0)
        out.write(img)
    out.release()
    pngs = []
    for k, f in enumerate(_frames_of(video), 1):
        pngs.append(str(tmp_path / f"p{k}.png"))
        cv2.imwrite(pngs[-1], f)
    args = ("--cfg", cfg, "--weights", w, "--names", names, "--thresh", "0.5")
    res_v = run_cli("detect", video, *args, "-o", tmp_path / "drawn")
    res_i = run_cli("detect", *pngs, *args)
    assert res_v.exit_code == res_i.exit_code == 0, res_v.output
    strip = [[l for l in r.output.splitlines() if not l.startswith("note")] for r in (res_v, res_i)]
    assert [l.split(": ", 1)[-1] if "points" in l else l for l in strip[0]] == \
        [l.split(": ", 1)[-1] if "points" in l else l for l in strip[1]]
    assert "red:" in res_v.output and "green:" in res_v.output
    assert len(_frames_of(str(tmp_path / "drawn" / "dots.avi"))) == 4
    res_b = run_cli("detect", *pngs, *args, "--batch", "3")
    assert res_b.exit_code == 0 and res_b.output == res_i.output, res_b.output
    for flag in (("--json", tmp_path / "p.json"), ("--save-labels",), ("--tile", "32x32")):
        res = run_cli("detect", *pngs, *args, *flag)
        assert res.exit_code == 2 and f"{flag[0]}: for boxes" in res.output, res.output
    assert not (tmp_path / "p.json").exists() and not os.path.exists(pngs[0][:-4] + ".txt")


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError])
def test_a_drawn_video_is_kept_on_a_stop_and_removed_on_an_error(tmp_path, net, stop):
    """Ctrl-C after 2 frames leaves a playable 2-frame video; an error leaves no file."""
    from darkcfg.infer import run as R
    from darkcfg.infer import sources as S
    from darkcfg.nn import model as M
    cfg, weights = net
    video = make_video(tmp_path / "clip.avi", frames=5)
    seen = []

    def echo(line):
        if "frame" in line:
            if len(seen) == 2:
                raise stop("stopped")
            seen.append(line)
    items, problems = S.expand([video], ())
    opt = R.Options(output=str(tmp_path / "out"))
    with pytest.raises(stop):
        R.detect_all(M.load(weights, cfg), items, opt, echo)
    kept = os.listdir(tmp_path / "out")
    if stop is KeyboardInterrupt:
        assert kept == ["clip.avi"] and len(_frames_of(str(tmp_path / "out" / "clip.avi"))) == 2
    else:
        assert kept == []

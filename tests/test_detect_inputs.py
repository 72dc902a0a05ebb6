"""detect at work (issue #24): folders, lists, videos and streams in; darknet's JSON, its
-ext_output and YOLO labels out; a bad item named and skipped; --batch.  The videos are
generated (cv2.VideoWriter, MJPG in .avi: moving shapes).  What compares detections runs the
learning test's trained model (conftest.py's ``trained``: rectangles are class 0, discs class
1), which finds the shapes where they were drawn - so that "the same detections" is never
"both found nothing"; what only needs a network (writers, streams) runs a small yolov3-tiny
with random weights.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest

from _helpers import corners, iou, make_cfg, make_data, run_cli
from conftest import ROOT

DETECT = ("--thresh", "0.15", "--max-det", "4")


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("net")
    cfg = make_cfg(tmp / "tiny.cfg")
    weights = str(tmp / "w.weights")
    assert run_cli("init", cfg, weights).exit_code == 0
    return cfg, weights


@pytest.fixture(scope="module")
def learned(trained):
    """The trained model's detect arguments: cfg, weights, names (c0 = rectangle, c1 = disc)."""
    data, cfg, r = trained
    return ("--cfg", cfg, "--weights", r.files["final"],
            "--names", os.path.join(os.path.dirname(data), "obj.names"))


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


def shapes_video(path, frames=8, size=(128, 96), fps=10.0) -> tuple:
    """(path, per frame [(class, x1, y1, x2, y2)]): a bright rectangle (class 0) moving right
    above a bright disc (class 1) moving left, on dark noise - drawn as the learning set draws
    its shapes, so the trained model knows them."""
    w, h = size
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    rng = np.random.default_rng(3)
    truth = []
    for k in range(frames):
        img = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
        x0, cx, cy, r = 8 + 6 * k, 100 - 5 * k, 66, 18
        cv2.rectangle(img, (x0, 10), (x0 + 36, 38), (200, 220, 240), -1)
        cv2.circle(img, (cx, cy), r, (230, 190, 210), -1)
        out.write(img)
        truth.append([(0, x0, 10, x0 + 36, 38), (1, cx - r, cy - r, cx + r, cy + r)])
    out.release()
    return str(path), truth


def _found(lines) -> list:
    """(class index, x1, y1, x2, y2) of printed box lines (``  c1: 87.5%  x1 y1 x2 y2``)."""
    out = []
    for line in lines:
        name, rest = line.strip().split(": ", 1)
        x1, y1, x2, y2 = map(float, rest.split("\t")[0].split()[1:5])
        out.append((int(name.lstrip("c")), x1, y1, x2, y2))
    return out


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


def _pngs(video, folder) -> list:
    """The video's frames as OpenCV decodes them, written as PNGs (lossless: the same pixels)."""
    pngs = []
    for k, f in enumerate(_frames_of(video), 1):
        pngs.append(str(folder / f"f{k}.png"))
        cv2.imwrite(pngs[-1], f)
    return pngs


def _json_objects(path) -> list:
    return [e["objects"] for e in json.loads(open(path).read())]


def test_video_frames_give_the_detections_of_the_same_frames_as_images(tmp_path, learned):
    """Each frame of the video gets exactly the detections (printed lines, JSON objects) of
    the same frame given as an image, and those are the shapes drawn: in at least 7 of 8 frames
    each shape is found, of its class, at IoU 0.5 or more."""
    video, truth = shapes_video(tmp_path / "clip.avi")
    pngs = _pngs(video, tmp_path)
    res_v = run_cli("detect", video, *learned, "--json", tmp_path / "v.json")
    res_i = run_cli("detect", *pngs, *learned, "--json", tmp_path / "i.json")
    assert res_v.exit_code == res_i.exit_code == 0, res_v.output
    assert f"{video} frame 8:" in res_v.output
    blocks = _blocks(res_v.output)
    assert blocks == _blocks(res_i.output)
    assert _json_objects(tmp_path / "v.json") == _json_objects(tmp_path / "i.json")
    hits = [sum(any(f[0] == t[0] and iou(f[1:], t[1:]) >= 0.5 for f in found) for t in shapes)
            for (_, lines), shapes in zip(blocks, truth) for found in [_found(lines)]]
    assert len(hits) == 8 and sum(h == 2 for h in hits) >= 7, (hits, res_v.output)


def test_batch_gives_the_output_of_batch_1_to_the_bit(tmp_path, learned):
    """--batch 3 over a video of 8 frames (batches of 3, 3, then 2 frames one by one), a list
    of images with a missing entry between them, and tiles: the printed lines, darknet's JSON
    (six decimals) and -ext_output are those of --batch 1, character for character.  The
    trained model at 96 x 96 is one where this machine's kernels for a batch round some
    layers differently (infer.batching runs those image by image); a batch taken whole, or
    frames put back in the wrong order, changes the JSON."""
    video, _ = shapes_video(tmp_path / "clip.avi")
    data = make_data(tmp_path / "set", ntrain=1, nvalid=7)
    listed = (tmp_path / "set" / "valid.txt").read_text().split()
    lst = tmp_path / "some.txt"
    lst.write_text("\n".join(listed[:3] + [str(tmp_path / "gone.png")] + listed[3:]) + "\n")
    assert data
    runs = {}
    for batch in ("1", "3"):
        args = ("--json", tmp_path / f"b{batch}.json", "--ext-output", "--batch", batch)
        whole = run_cli("detect", video, lst, *learned, *args)
        tiled = run_cli("detect", *listed[:4], *learned, "--tile", "48x48", "--batch", batch)
        assert whole.exit_code == 1 and tiled.exit_code == 0, whole.output + tiled.output
        runs[batch] = (_unnoted(whole.output), (tmp_path / f"b{batch}.json").read_text(),
                       _unnoted(tiled.output))
    assert runs["3"] == runs["1"]
    lines, _, tiled = runs["1"]
    boxes = [line for line in lines if line.startswith("  ")]
    assert len(boxes) > 20 and all("(left_x:" in line for line in boxes)
    assert f"skipped: {lst}:4: " in "\n".join(lines) and f"{listed[6]}: " in "\n".join(lines)
    assert sum(l.startswith("  ") for l in tiled) > 4


@pytest.mark.skipif(not any(shutil.which(c) for c in ("c++", "g++", "clang++")),
                    reason="torch.compile needs a C++ compiler for CPU kernels")
def test_compile_finds_the_boxes_of_the_eager_network(tmp_path, learned):
    """detect --compile (torch.compile, frozen weights) over the video, in batches of 3 (one
    compiled graph for 3 frames, one for the 2 left): per frame the same classes, in the same
    order, boxes within 0.05 pixel of the uncompiled run's (only float rounding differs), and
    the drawn shapes found as the uncompiled run finds them."""
    video, truth = shapes_video(tmp_path / "clip.avi")
    runs = [run_cli("detect", video, *learned, *extra)
            for extra in ((), ("--compile", "--batch", "3"))]
    assert [r.exit_code for r in runs] == [0, 0], runs[1].output
    eager, compiled = (_blocks(r.output) for r in runs)
    assert len(eager) == len(compiled) == 8
    for (_, a), (_, b) in zip(eager, compiled):
        fa, fb = _found(a), _found(b)
        assert [f[0] for f in fa] == [f[0] for f in fb], (a, b)
        assert all(abs(u - v) <= 0.05 for p, q in zip(fa, fb) for u, v in zip(p[1:], q[1:])), \
            (a, b)
    hits = [sum(any(f[0] == t[0] and iou(f[1:], t[1:]) >= 0.5 for f in _found(lines))
                for t in shapes) for (_, lines), shapes in zip(compiled, truth)]
    assert sum(h == 2 for h in hits) >= 7, hits


def _unnoted(output: str) -> list:
    """The output's lines but the note --batch may print (its layers run image by image)."""
    return [line for line in output.splitlines() if not line.startswith("note:")]


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


def test_folders_recursively_lists_and_a_bad_item_named_and_skipped(tmp_path, learned):
    data = make_data(tmp_path / "set", ntrain=3, nvalid=2)
    assert data
    (tmp_path / "set" / "valid" / "deeper").mkdir()
    shapes_video(tmp_path / "set" / "valid" / "deeper" / "clip.avi", frames=2)
    res = run_cli("detect", tmp_path / "set" / "valid", *learned)
    assert res.exit_code == 0, res.output
    assert "deeper/clip.avi frame 2:" in res.output and "val001.png:" in res.output
    assert all(lines for _, lines in _blocks(res.output))     # every image and frame: shapes
    lst = tmp_path / "set" / "train.txt"
    entries = lst.read_text().split()
    os.remove(entries[1])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    res = run_cli("detect", lst, broken, *learned)
    assert res.exit_code == 1
    assert f"skipped: {lst}:2: '{entries[1]}' does not exist" in res.output
    assert f"skipped: {broken}" in res.output
    assert f"{entries[0]}:" in res.output and f"{entries[2]}:" in res.output   # the rest done
    assert [bool(lines) for _, lines in _blocks(res.output)] == [True, True]
    assert "2 of 4 inputs could not be read" in res.output and "Traceback" not in res.output


def test_a_list_on_stdin_as_darknets_redirect(tmp_path, net):
    """``detect -`` (and no INPUT, and darknet's ``detector test DATA CFG WEIGHTS``) read the
    image paths from stdin, darknet's ``< list.txt``: a missing entry named by its stdin line,
    the rest done; an empty stdin and no INPUT is a usage error."""
    from click.testing import CliRunner
    from darkcfg.cli import main
    cfg, weights = net
    data = make_data(tmp_path, ntrain=1, nvalid=2)
    imgs = (tmp_path / "valid.txt").read_text().split()
    listed = f"{imgs[0]}\n{tmp_path / 'gone.png'}\n\n{imgs[1]}\n"
    args = ["--cfg", cfg, "--weights", weights, *DETECT, "--names", str(tmp_path / "obj.names")]
    direct = run_cli("detect", *imgs, *args)
    for words in (["detect", "-", *args], ["detect", *args],
                  ["detector", "test", data, cfg, weights, "-thresh", "0.15", "--max-det", "4"]):
        res = CliRunner().invoke(main, words, input=listed)
        assert res.exit_code == 1, res.output
        assert f"skipped: stdin:2: '{tmp_path / 'gone.png'}' does not exist" in res.output
        assert _blocks(res.output) == _blocks(direct.output) and len(_blocks(res.output)) == 2
    res = CliRunner().invoke(main, ["detect", *args], input="")
    assert res.exit_code == 2 and "list on stdin" in res.output


def _garble_frame(video, k, dst) -> str:
    """``video`` (MJPG) with the middle of frame k's JPEG data overwritten."""
    data = bytearray(open(video, "rb").read())
    starts = [i for i in range(len(data) - 2) if data[i:i + 3] == b"\xff\xd8\xff"]
    a, b = starts[k - 1], starts[k]
    data[a + (b - a) // 3:b - 16] = bytes((i * 7) & 0xFF for i in range(b - 16 - a - (b - a) // 3))
    open(dst, "wb").write(data)
    return str(dst)


def test_a_corrupt_frame_is_read_past_and_the_rest_done(tmp_path, learned):
    """Frame 4 of 8 garbled (FFmpeg conceals it and says so on its log): the video is read to
    its end, every other frame gets the detections of the clean video's, and FFmpeg's log lines
    stay silenced (a fresh process: FFmpeg reads its log level once)."""
    video, _ = shapes_video(tmp_path / "clip.avi")
    bad = _garble_frame(video, 4, tmp_path / "garbled.avi")
    clean = run_cli("detect", video, *learned)
    r = subprocess.run([sys.executable, "-m", "darkcfg", "detect", bad, *learned],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": ROOT})
    assert r.returncode == 0 and clean.exit_code == 0, r.stderr
    got, want = _blocks(r.stdout), _blocks(clean.output)
    assert len(got) == 8 and got[:3] + got[4:] == want[:3] + want[4:]
    assert got[3] != want[3]                                  # frame 4 did change
    assert "@ 0x" not in r.stderr and "[ WARN" not in r.stderr, r.stderr


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]                             # closed again: refused


def _silent_server():
    """A TCP port that accepts connections and never answers: (port, stop)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held, done = [], threading.Event()

    def serve():
        srv.settimeout(0.2)
        while not done.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue
    threading.Thread(target=serve, daemon=True).start()

    def stop():
        done.set()
        for c in held:
            c.close()
        srv.close()
    return srv.getsockname()[1], stop


@pytest.mark.parametrize("server", ["refused", "silent"])
def test_a_stream_that_does_not_answer_is_a_clear_error_in_bounded_time(net, server):
    """rtsp:// to a closed port, and http:// to a server that accepts and never answers (only
    the open timeout ends that one: 10 s; the process timeout is a guard against a hang, not a
    measurement).  In a fresh process: FFmpeg reads its log level once per process."""
    cfg, weights = net
    port, stop = (_refused_port(), lambda: None) if server == "refused" else _silent_server()
    url = f"{'rtsp' if server == 'refused' else 'http'}://127.0.0.1:{port}/none"
    try:
        r = subprocess.run([sys.executable, "-m", "darkcfg", "detect", url, "--cfg", cfg,
                            "--weights", weights, "--reconnect", "0"],
                           capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": ROOT})
    finally:
        stop()
    assert r.returncode == 1 and f"Error: {url}: the stream could not be opened" in r.stderr, \
        r.stderr                                          # one input: its problem is the error
    assert "Traceback" not in r.stderr
    assert "@ 0x" not in r.stderr and "[ WARN" not in r.stderr, r.stderr   # FFmpeg's, OpenCV's


def test_a_camera_that_cannot_be_opened_is_named(tmp_path, net):
    """--camera N (darknet's -c N) with no such camera: its own error, exit 1; with other
    inputs it is skipped and they are done."""
    cfg, weights = net
    video = make_video(tmp_path / "clip.avi", frames=2)
    res = run_cli("detect", "--camera", "63", "--cfg", cfg, "--weights", weights)
    assert res.exit_code == 1 and "Error: camera 63: OpenCV cannot open this camera" in \
        res.output and "Traceback" not in res.output, res.output
    res = run_cli("detect", video, "--camera", "63", "--cfg", cfg, "--weights", weights)
    assert res.exit_code == 1 and "skipped: camera 63: " in res.output
    assert "clip.avi frame 2:" in res.output and "1 of 2 inputs could not be read" in res.output


def _http_server(handler):
    """A local HTTP server with ``handler`` (a BaseHTTPRequestHandler class): (url base,
    stop)."""
    import http.server
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()

    def stop():
        srv.shutdown()
        srv.server_close()
    return f"http://127.0.0.1:{srv.server_address[1]}", stop


def test_a_video_file_at_a_url_ends_and_is_not_replayed(tmp_path, net):
    """A finite video served over HTTP gives its frames once (a live stream's end is a drop to
    reconnect; reopening a file would play it again from the start, for ever) and the
    detections of the same file read from disk."""
    import functools
    import http.server
    cfg, weights = net
    make_video(tmp_path / "clip.avi")

    class Files(http.server.SimpleHTTPRequestHandler):
        served = []

        def log_message(self, *args):
            pass

        def do_GET(self):                         # twice at most: a replay shows, never hangs
            self.served.append(self.path)
            if len(self.served) > 2:
                self.send_error(404)
                return
            super().do_GET()
    base, stop = _http_server(functools.partial(Files, directory=str(tmp_path)))
    try:
        res = run_cli("detect", f"{base}/clip.avi", "--cfg", cfg, "--weights", weights, *DETECT)
    finally:
        stop()
    disk = run_cli("detect", tmp_path / "clip.avi", "--cfg", cfg, "--weights", weights, *DETECT)
    assert res.exit_code == 0 and disk.exit_code == 0, res.output
    assert _blocks(res.output) == _blocks(disk.output) and len(_blocks(res.output)) == 6
    assert sum(len(lines) for _, lines in _blocks(res.output)) > 0


def test_a_live_stream_is_reconnected_then_given_up_with_its_drawing_kept(tmp_path, net):
    """An MJPEG stream (no length, as a camera's) that serves 3 frames and drops, serves 2
    more on the first reconnect and then answers 404: frames 1-5 are detected and drawn, then
    --reconnect 2 tries fail and the stream is given up with its own message, exit 1, and the
    drawn video keeps the 5 frames."""
    import http.server
    cfg, weights = net
    jpegs = [cv2.imencode(".jpg", f)[1].tobytes() for f in _frames_of(make_video(
        tmp_path / "clip.avi", frames=5))]
    served = []

    class Camera(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            parts = {0: jpegs[:3], 1: jpegs[3:]}.get(len(served))
            served.append(self.path)
            if parts is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            for j in parts:
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                 + str(len(j)).encode() + b"\r\n\r\n" + j + b"\r\n")
    base, stop = _http_server(Camera)
    try:
        res = run_cli("detect", f"{base}/cam.mjpg", "--cfg", cfg, "--weights", weights, *DETECT,
                      "--reconnect", "2", "-o", tmp_path / "out")
    finally:
        stop()
    assert res.exit_code == 1, res.output
    assert len(_blocks(res.output)) == 5 and "cam.mjpg frame 5: " in res.output, res.output
    assert f"Error: {base}/cam.mjpg: the stream dropped after frame 5 and did not come back " \
        f"after 2 reconnects" in res.output
    assert len(served) == 4                                   # the first open, 3 reopenings
    assert len(_frames_of(str(tmp_path / "out" / "stream.avi"))) == 5


def test_json_is_darknets_layout_and_matches_the_printed_boxes(tmp_path, learned):
    data = make_data(tmp_path, ntrain=1, nvalid=3)
    assert data
    imgs = (tmp_path / "valid.txt").read_text().split()
    out = tmp_path / "result.json"
    res = run_cli("detect", *imgs, *learned, "--json", out, "--ext-output")
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert text.startswith('[\n{\n "frame_id":1, \n "filename":"') and text.endswith("\n ] \n}\n]")
    doc = json.loads(text)
    assert [e["frame_id"] for e in doc] == [1, 2, 3] and [e["filename"] for e in doc] == imgs
    assert all(e["objects"] for e in doc)
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
            box = [float(v) for v in rest.split("\t")[0].split()[1:5]]
            assert box == pytest.approx([max(left, 0), max(top, 0), min(left + r["width"] * w, w),
                                         min(top + r["height"] * h, h)], abs=0.51)


def test_save_labels_then_data_check_passes_and_never_overwrites(tmp_path, learned):
    """The labels written are the shapes drawn: of the images' own labels (exact by
    construction) at least 60 % are written again, same class, at IoU 0.5 or more (measured:
    10 of 12; an untrained model writes none)."""
    data = make_data(tmp_path, ntrain=6, nvalid=1)
    imgs = (tmp_path / "train.txt").read_text().split()
    labels = [p[:-4] + ".txt" for p in imgs]
    before = [open(p).read() for p in labels]
    res = run_cli("detect", tmp_path / "train.txt", *learned, "--save-labels")
    assert res.exit_code == 1 and "already exists" in res.output
    assert [open(p).read() for p in labels] == before                      # untouched
    res = run_cli("detect", tmp_path / "train.txt", *learned, "--save-labels", "--force")
    assert res.exit_code == 0, res.output
    written = [open(p).read() for p in labels]
    boxes = sum(len(b) for _, b in _blocks(res.output))
    assert boxes > 0 and sum(len(t.splitlines()) for t in written) == boxes
    rows = lambda text: [[float(v) for v in l.split()] for l in text.splitlines()]  # noqa: E731
    truth = [t for text in before for t in rows(text)]
    again = sum(any(w[0] == t[0] and iou(corners(*w[1:]), corners(*t[1:])) >= 0.5
                    for w in rows(new)) for text, new in zip(before, written) for t in rows(text))
    assert again >= 0.6 * len(truth), (again, len(truth))
    check = run_cli("data", "check", data, "--cfg", learned[1])
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


def test_sigterm_finishes_the_drawn_video_playable(tmp_path, net):
    """A real SIGTERM to ``detect -o`` mid-video (sent once the drawn video's temporary file
    exists): exit 143, the frames drawn so far renamed into a playable video, no .part left."""
    import signal
    import time
    cfg, weights = net
    video = make_video(tmp_path / "long.avi", frames=400)
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "darkcfg", "detect", video, "--cfg", cfg,
                          "--weights", weights, "--tile", "24x24", "-o", out],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": ROOT})
    try:
        for _ in range(600):                          # a guard, not a measurement
            if out.is_dir() and any(n.endswith(".part") for n in os.listdir(out)):
                break
            time.sleep(0.1)
        p.send_signal(signal.SIGTERM)
        err = p.communicate(timeout=120)[1]
    finally:
        p.kill()
    assert p.returncode == 143, err
    assert os.listdir(out) == ["long.avi"], os.listdir(out)
    assert 1 <= len(_frames_of(str(out / "long.avi"))) < 400

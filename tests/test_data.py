"""darkcfg.data: .data files, image lists, label paths and labels, the data check, the loader.

Expected values are darknet's rules written out by hand from src/option_list.c, src/utils.c and
src/data.c (see ../shared/design/TRAINING-FACTS.md sections 2 and 3), never darkcfg's output."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from darkcfg.dataset import data as D
from darkcfg.errors import DarkcfgError

from _images import canvas, dots, write_sample

cv2 = pytest.importorskip("cv2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFGS = os.path.join(ROOT, "cfgs")


def write(path, text):
    os.makedirs(os.path.dirname(str(path)) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def jpeg(path, w=64, h=48, color=(0, 128, 255)):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = color
    cv2.imwrite(str(path), img)
    return str(path)


# ----- .data -----------------------------------------------------------------------------------


def test_read_data_darknet_syntax(tmp_path):
    p = write(tmp_path / "obj.data", "# comment\n; also a comment\nclasses = 2\n"
              "train  = data/train.txt\r\nvalid=data/va lid.txt\n\nnames=obj.names\n"
              "backup = backup/\neval=coco\ntrain=second.txt\n")
    d = D.read_data(p)
    assert d.classes == 2
    assert d.train == "data/train.txt"          # first occurrence wins
    assert d.valid == "data/valid.txt"          # darknet's strip() removes inner blanks too
    assert d.names == "obj.names" and d.backup == "backup/"
    assert d.options["eval"] == "coco"          # kept, ignored
    assert d.lines["train"] == 4


@pytest.mark.parametrize("text, message", [
    ("classes=2\ntrain\n", ":2: expected key=value"),
    ("classes=2\nvalid=\n", ":2: 'valid=' has no value"),
    ("classes=two\n", ":1: classes='two' is not an integer"),
    ("classes=0\n", ":1: classes must be >= 1"),
])
def test_read_data_errors_name_the_line(tmp_path, text, message):
    p = write(tmp_path / "bad.data", text)
    with pytest.raises(DarkcfgError, match=message):
        D.read_data(p)


def test_data_with_relative_paths_works_from_another_folder(tmp_path, monkeypatch):
    # darknet's layout: root/data/obj.data names data/train.txt, which lists data/obj/a.jpg,
    # all relative to darknet's root (the current folder when darknet runs)
    root = tmp_path / "root"
    a = jpeg(root / "data" / "obj" / "a.jpg")
    b = jpeg(root / "data" / "obj" / "b.jpg")
    write(root / "data" / "train.txt", "data/obj/a.jpg\n\ndata/obj/b.jpg\n")
    data = write(root / "data" / "obj.data", "classes=1\ntrain=data/train.txt\n")
    monkeypatch.chdir(root)                     # as darknet: from its root
    d = D.read_data("data/obj.data")
    assert D.image_list(d.resolve("train")) == ["data/obj/a.jpg", "data/obj/b.jpg"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)                # darkcfg: from anywhere
    d = D.read_data(data)
    listed = D.image_list(d.resolve("train"))
    assert [os.path.realpath(p) for p in listed] == [os.path.realpath(a), os.path.realpath(b)]


def test_image_list_of_a_folder(tmp_path):
    jpeg(tmp_path / "x" / "b.png")
    jpeg(tmp_path / "x" / "a.jpg")
    write(tmp_path / "x" / "a.txt", "")
    assert [os.path.basename(p) for p in D.image_list(str(tmp_path / "x"))] == ["a.jpg", "b.png"]
    with pytest.raises(DarkcfgError, match="no such file"):
        D.image_list(str(tmp_path / "nothing.txt"))


# ----- label paths ------------------------------------------------------------------------------


@pytest.mark.parametrize("image, label", [
    ("data/obj/img1.jpg", "data/obj/img1.txt"),                     # next to the image
    ("/c/images/train2017/0001.jpg", "/c/labels/train2017/0001.txt"),
    ("/c/images/val2017/0001.JPG", "/c/labels/val2017/0001.txt"),
    ("/c/images/train2014/x.png", "/c/labels/train2014/x.txt"),
    ("/voc/VOC2007/JPEGImages/000005.jpg", "/voc/VOC2007/labels/000005.txt"),
    ("C:\\voc\\JPEGImages\\1.bmp", "C:\\voc\\labels\\1.txt"),
    ("/d/images/a.jpg", "/d/images/a.txt"),         # darknet's generic images/ rule is off
    ("/d/x.jpeg.jpg", "/d/x.jpeg.txt"),             # only the extension at the end
    ("/d/x.TIFF", "/d/x.txt"),
])
def test_label_path_darknet_rules(image, label):
    assert D.darknet_label_path(image) == label
    assert D.label_path(image) == label             # nothing exists: darknet's name


def test_label_path_beyond_darknet(tmp_path):
    assert D.darknet_label_path("/d/x.Jpg") is None            # darknet: "Failed to infer"
    assert D.label_path("/d/x.Jpg") == "/d/x.txt"
    assert D.label_path("/d/x.webp") == "/d/x.txt"
    with pytest.raises(DarkcfgError, match="cannot infer the label file name"):
        D.label_path("/d/x.gif.txt")
    # the ultralytics layout: images/ -> labels/ when darknet's file is not there
    img = jpeg(tmp_path / "set" / "images" / "a.jpg")
    assert D.label_path(img) == str(tmp_path / "set" / "images" / "a.txt")
    lab = write(tmp_path / "set" / "labels" / "a.txt", "0 .5 .5 .1 .1\n")
    assert D.label_path(img) == lab
    near = write(tmp_path / "set" / "images" / "a.txt", "0 .5 .5 .1 .1\n")
    assert D.label_path(img) == near                            # darknet's own place wins


# ----- labels -----------------------------------------------------------------------------------


def test_read_labels_rows_and_keypoints(tmp_path):
    p = write(tmp_path / "a.txt", "0 0.5 0.5 0.2 0.1\n\n3 0.25 0.75\n1 1.0005 0.5 0.1 0.1\n")
    rows, problems = D.read_labels(p)
    assert problems == []
    np.testing.assert_allclose(rows, [[0, .5, .5, .2, .1], [3, .25, .75, 0, 0],
                                      [1, 1.0005, .5, .1, .1]], rtol=1e-6)
    assert rows.dtype == np.float32
    rows, problems = D.read_labels(str(tmp_path / "missing.txt"))
    assert rows.shape == (0, 5) and problems == []


@pytest.mark.parametrize("line, what", [
    ("0 0.5 0.5 0.2", "4 numbers; expected 5"),
    ("0 0.5 0.5 0.2 0.1 7", "6 numbers"),
    ("a 0.5 0.5 0.2 0.1", "class 'a' is not a number"),
    ("1.0 0.5 0.5 0.2 0.1", "class '1.0' is not an integer"),
    ("0 0.5 x 0.2 0.1", "'x' is not a number"),
    ("-1 0.5 0.5 0.2 0.1", "class -1 is negative"),
    ("0 1.2 0.5 0.2 0.1", "cx=1.2 is outside [0, 1]"),
    ("0 0.5 0.5 0.2 -0.1", "h=-0.1 is outside [0, 1]"),
    ("0 0.5 0.5 0 0.1", "zero size"),
    ("0 0 0 0.2 0.1", "centre at (0, 0)"),
    ("0 0.5 nan 0.2 0.1", "cy=nan is outside"),
])
def test_read_labels_problems(tmp_path, line, what):
    p = write(tmp_path / "a.txt", "0 0.5 0.5 0.2 0.1\n" + line + "\n")
    rows, problems = D.read_labels(p)
    assert len(rows) == 1
    assert len(problems) == 1 and problems[0].startswith(f"{p}:2: {what}"), problems


def test_read_labels_bom_and_binary_junk(tmp_path):
    p = tmp_path / "bom.txt"
    p.write_bytes(b"\xef\xbb\xbf0 0.5 0.5 0.2 0.1\r\n")          # Windows editors write this
    rows, problems = D.read_labels(str(p))
    assert problems == [] and len(rows) == 1
    p = tmp_path / "junk.txt"
    p.write_bytes(b"\x00\x01\xff" * 200 + b"\n")
    rows, problems = D.read_labels(str(p))
    assert len(rows) == 0 and len(problems) == 1 and len(problems[0]) < 200
    assert problems[0].startswith(f"{p}:1: 1 number; expected 5")
    assert "'\\x00\\x01" in problems[0]


def test_load_image_rgb_and_errors(tmp_path):
    p = jpeg(tmp_path / "i" / "a.png", 5, 4, color=(255, 0, 0))      # BGR blue
    img = D.load_image(p)
    assert img.shape == (4, 5, 3) and img.dtype == np.uint8
    assert tuple(img[0, 0]) == (0, 0, 255)                             # RGB blue
    bad = write(tmp_path / "i" / "b.jpg", "not a jpeg")
    with pytest.raises(DarkcfgError, match="b.jpg: OpenCV cannot decode"):
        D.load_image(bad)
    with pytest.raises(DarkcfgError, match="no such image"):
        D.load_image(str(tmp_path / "none.jpg"))


# ----- the check --------------------------------------------------------------------------------

TINY_CFG = """[net]
batch=4
subdivisions=2
width=64
height=32
channels=3

[convolutional]
filters=21
size=1
stride=32
pad=0
activation=linear

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=2
num=3
jitter=.3
random=0
"""


def bad_set(tmp_path):
    """One of each error, beside good images, a negative and an image without labels."""
    d = tmp_path / "set"
    good = jpeg(d / "good.jpg")
    write(d / "good.txt", "0 0.5 0.5 0.5 0.25\n1 0.25 0.25 0.125 0.125\n")
    jpeg(d / "empty.jpg")
    write(d / "empty.txt", "\n")
    jpeg(d / "nolabel.jpg")
    write(d / "broken.jpg", "this is not a jpeg")
    write(d / "broken.txt", "")
    for name, line in (("cls", "0 .5 .5 .1 .1\n2 0.5 0.5 0.1 0.1"), ("range", "0 0.5 1.5 0.1 0.1"),
                       ("cols", "1 0.5 0.5 0.1"), ("nan", "1 0.5 0.5 0.1 abc"),
                       ("zero", "1 0.5 0.5 0.0 0.1")):
        jpeg(d / f"{name}.jpg")
        write(d / f"{name}.txt", line + "\n")
    names = ["good", "empty", "nolabel", "broken", "missing", "cls", "range", "cols", "nan",
             "zero"]
    write(d / "train.txt", "".join(f"{d}/{n}.jpg\n" for n in names))
    write(d / "valid.txt", f"{good}\n")
    write(d / "obj.names", "cat\ndog\n")
    cfg = write(tmp_path / "tiny.cfg", TINY_CFG)
    return write(d / "obj.data", f"classes=2\ntrain={d}/train.txt\nvalid={d}/valid.txt\n"
                 f"names={d}/obj.names\n"), cfg, d


def test_check_reports_every_error_once(tmp_path):
    data, cfg, d = bad_set(tmp_path)
    rep = D.check(data, cfg)
    assert not rep.ok
    expected = [
        f"{d}/broken.jpg: OpenCV cannot decode this image",
        f"{d}/train.txt:5: image '{d}/missing.jpg' does not exist",
        f"{d}/cls.txt:2: class 2 is outside 0..1 (the cfg's last [yolo])",
        f"{d}/range.txt:1: cy=1.5 is outside [0, 1]: '0 0.5 1.5 0.1 0.1'",
        f"{d}/cols.txt:1: 4 numbers; expected 5 (class cx cy w h) or 3 (class x y, a keypoint)"
        f": '1 0.5 0.5 0.1'",
        f"{d}/nan.txt:1: 'abc' is not a number: '1 0.5 0.5 0.1 abc'",
        f"{d}/zero.txt:1: zero size (w and h must be > 0): '1 0.5 0.5 0.0 0.1'",
    ]
    assert sorted(rep.errors) == sorted(expected), rep.errors
    train, valid = rep.splits
    assert (train.images, valid.images) == (9, 1)        # the missing one is not counted
    # boxes: good 2 + cls 1 (its class-2 line is an error); negatives: empty, nolabel,
    # broken, range, cols, nan, zero
    assert (train.boxes, train.negatives, train.no_label_file, train.undecodable) == (3, 7, 1, 1)
    assert train.per_class == {0: 2, 1: 1}
    # sizes in network pixels (64 x 32): w 32, 8, 6.4; h 8, 4, 3.2
    assert train.sizes["w"]["max"] == pytest.approx(32) and train.sizes["w"]["min"] == \
        pytest.approx(6.4)
    assert train.sizes["h"]["p50"] == pytest.approx(4)
    text = rep.format(limit=2)
    assert "train: " in text and "9 images, 3 boxes, 7 negatives" in text
    assert "... and 5 more" in text and text.endswith("FAILED: 7 errors")
    assert "cat" in text and "dog" in text
    js = json.loads(json.dumps(rep.as_dict()))
    assert js["ok"] is False and len(js["errors"]) == 7
    assert js["splits"]["train"]["per_class"] == {"0": 2, "1": 1}


def test_check_without_cfg_and_a_clean_set(tmp_path):
    d = tmp_path / "ok"
    jpeg(d / "a.jpg")
    write(d / "a.txt", "0 0.5 0.5 0.5 0.5\n0 0.1 0.2\n")
    write(d / "list.txt", "a.jpg\n")
    data = write(d / "ok.data", "train=list.txt\nclasses=1\n")
    rep = D.check(data)
    assert rep.ok, rep.errors
    assert rep.classes == 1 and rep.classes_from == "the .data's classes"
    (train, valid) = rep.splits
    assert (train.boxes, train.points) == (1, 1) and valid.same_as == "train"
    assert rep.format().endswith("OK")
    # the same set with a box cfg: the keypoint line is an error; class 0 < 2 is fine
    cfg = write(tmp_path / "tiny.cfg", TINY_CFG)
    rep = D.check(data, cfg)
    assert rep.errors == [f"{d}/a.txt:2: a keypoint line (class x y) but the cfg's last head is "
                          f"a box head"]
    assert any("classes=1 but the cfg's heads have 2" in w for w in rep.warnings)


def test_check_folds_the_classes_without_boxes_into_one_line(tmp_path):
    d = tmp_path / "coco"
    for name, text in (("a", "0 0.5 0.5 0.2 0.2\n3 0.3 0.3 0.1 0.1\n0 0.6 0.6 0.2 0.2\n"),
                       ("b", "5 0.5 0.5 0.2 0.2\n")):
        jpeg(d / f"{name}.jpg")
        write(d / f"{name}.txt", text)
    write(d / "train.txt", "a.jpg\n")
    write(d / "valid.txt", "b.jpg\n")
    write(d / "coco.names", "".join(f"name{k}\n" for k in range(80)))
    data = write(d / "coco.data", "classes=80\ntrain=train.txt\nvalid=valid.txt\n"
                 "names=coco.names\n")
    rep = D.check(data)
    assert rep.ok, rep.errors
    lines = rep.format().splitlines()
    i = lines.index("boxes per class (train / valid):")
    # the classes with a box (in any split), then one line for the 77 others: 1-2, 4, 6-79
    assert [ln.split() for ln in lines[i + 1:i + 5]] == [
        ["0", "name0", "2", "/", "0"], ["3", "name3", "1", "/", "0"],
        ["5", "name5", "0", "/", "1"], ["77", "classes", "have", "no", "boxes:", "1-2,", "4,",
                                        "6-79"]]
    assert not lines[i + 5].startswith("  ")
    # --json keeps every class, zeros too
    js = json.loads(json.dumps(rep.as_dict()))
    train = js["splits"]["train"]["per_class"]
    assert len(train) == 80 and (train["0"], train["3"], train["5"], train["79"]) == (2, 1, 0, 0)
    assert sum(js["splits"]["valid"]["per_class"].values()) == 1
    # a few empty classes are named
    write(d / "few.names", "cat\ndog\nbird\n")
    data = write(d / "few.data", "classes=3\ntrain=train.txt\nnames=few.names\n")
    write(d / "train.txt", "c.jpg\n")
    jpeg(d / "c.jpg")
    write(d / "c.txt", "1 0.5 0.5 0.2 0.2\n")
    assert "  2 classes have no boxes: 0 cat, 2 bird" in D.check(data).format().splitlines()
    write(d / "few.names", "cat\ndog\n")                 # class 2 has no name
    write(d / "c.txt", "1 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n")
    assert "  1 class has no boxes: 2" in D.check(data).format().splitlines()


# ----- the loader -------------------------------------------------------------------------------


def small_set(tmp_path, n=12):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        img, rows = canvas(64, 48, [(20, 10, 44, 30)], bg=40 + 10 * i, fg=250)
        rows[:, 0] = i % 2
        rows = rows[:0] if i % 5 == 4 else rows
        if i % 3:
            x, y = (round(v, 4) for v in rng.uniform(.2, .8, 2))
            rows = np.vstack([rows, [1, x, y, .1, .1]])
        paths.append(write_sample(tmp_path / "imgs" / f"{i}.jpg", img, rows))
    return paths


AUG_CFG = TINY_CFG.replace("random=0", "random=1").replace(
    "channels=3", "channels=3\nhue=.1\nsaturation=1.5\nexposure=1.5\nmosaic=1\nblur=1\n"
    "gaussian_noise=10\nmax_batches=1000")


def batches(paths, cfg_text, n, **kw):
    from darkcfg.config import shapes
    loader = D.TrainLoader(paths, shapes.network(cfg_text), mini_batch=4, subdivisions=2, **kw)
    try:
        return [next(loader) for _ in range(n)]
    finally:
        loader.close()


def same(a, b):
    import torch
    assert (a.iteration, a.subdivision, a.size, a.paths) == (b.iteration, b.subdivision, b.size,
                                                             b.paths)
    assert torch.equal(a.images, b.images)
    assert all(torch.equal(x, y) for x, y in zip(a.boxes, b.boxes))
    assert all(torch.equal(x, y) for x, y in zip(a.classes, b.classes))


def test_loader_batches_are_what_encode_targets_takes(tmp_path):
    import torch
    paths = small_set(tmp_path)
    bs = batches(paths, AUG_CFG, 4, seed=1)
    assert [(b.iteration, b.subdivision) for b in bs] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for b in bs:
        w, h = b.size
        assert b.images.shape == (4, 3, h, w) and b.images.dtype == torch.float32
        assert 0 <= b.images.min() and b.images.max() <= 1
        assert len(b.boxes) == len(b.classes) == len(b.paths) == 4
        for bx, c in zip(b.boxes, b.classes):
            assert bx.dtype == torch.float32 and bx.shape[1:] == (4,) and c.dtype == torch.int64
            assert ((bx[:, :2] > 0) & (bx[:, :2] <= 1)).all() and (c < 2).all()
            assert ((bx[:, 2:] >= torch.tensor([1 / w, 1 / h])) & (bx[:, 2:] < 1)).all()
    # multi-scale: the first 10 iterations run at the largest size, roundl(1.4 * 64 / 32) * 32
    assert bs[0].size == (96, 32)           # width 64 * 1.4 / 32 = 2.8 -> 3; height 1.4 -> 1
    from darkcfg.objective import yolo as Y
    from darkcfg.config import shapes
    heads = Y.heads_of(shapes.network(AUG_CFG))
    Y.encode_targets(bs[0].boxes, bs[0].classes, heads, [(1, 3)], bs[0].size)
    moved = bs[0].to("cpu")
    assert torch.equal(moved.images, bs[0].images) and moved.size == bs[0].size


def test_loader_same_batches_with_0_and_2_workers(tmp_path):
    paths = small_set(tmp_path)
    # OpenCV's thread pool running in this process: workers forked now used to hang in cv2
    big = np.zeros((1500, 1500, 3), np.uint8)
    cv2.GaussianBlur(cv2.resize(big, (1200, 1300)), (17, 17), 0)
    a = batches(paths, AUG_CFG, 6, seed=7, start_iteration=9, workers=0)
    b = batches(paths, AUG_CFG, 6, seed=7, start_iteration=9, workers=2)
    for x, y in zip(a, b):
        same(x, y)
    assert a[0].iteration == 9 and a[2].iteration == 10


def test_loader_resume_and_ranks_continue_the_same_stream(tmp_path):
    import torch
    paths = small_set(tmp_path)
    full = batches(paths, AUG_CFG, 8, seed=3)
    resumed = batches(paths, AUG_CFG, 4, seed=3, start_iteration=2)
    for x, y in zip(full[4:], resumed):
        same(x, y)
    other = batches(paths, AUG_CFG, 2, seed=4)
    assert not torch.equal(other[0].images, full[0].images)
    # two ranks of a mini-batch of 4: slots 0-1 and 2-3 of the single-process batch
    r0 = batches(paths, AUG_CFG, 2, seed=3, rank=0, world_size=2)
    r1 = batches(paths, AUG_CFG, 2, seed=3, rank=1, world_size=2)
    for k in range(2):
        assert torch.equal(torch.cat([r0[k].images, r1[k].images]), full[k].images)
        assert r0[k].paths + r1[k].paths == full[k].paths


def assert_plain_resize(img, path, size):
    """A loader image (CHW float in [0, 1]) is OpenCV's bilinear resize of the file, in RGB."""
    ref = cv2.resize(cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB), size,
                     interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(img.permute(1, 2, 0).numpy() * 255, ref, atol=1e-3)


def test_loader_without_augmentation_is_a_plain_resize(tmp_path):
    paths = small_set(tmp_path)
    b = batches(paths, AUG_CFG, 1, seed=0, augment=False)[0]
    assert b.size == (64, 32)
    for img, bx, p in zip(b.images, b.boxes, b.paths):
        assert_plain_resize(img, p, (64, 32))
        rows, _ = D.read_labels(D.label_path(p))
        np.testing.assert_allclose(bx.numpy(), rows[:, 1:], rtol=1e-6)


def test_loader_keypoint_cfg_gives_centres(tmp_path):
    from darkcfg.config import shapes
    paths = small_set(tmp_path, 3)
    kp = TINY_CFG.replace("[yolo]", "[keypoint]").replace("mask=0,1,2\n", "").replace(
        "anchors=10,14, 23,27, 37,58\n", "").replace("num=3\n", "").replace("filters=21",
                                                                            "filters=8")
    net = shapes.network(kp)
    loader = D.TrainLoader(paths, net, mini_batch=2, subdivisions=1, augment=False)
    b = next(loader)
    for bx, p in zip(b.boxes, b.paths):
        rows, _ = D.read_labels(D.label_path(p))
        np.testing.assert_allclose(bx[:, :2].numpy(), rows[:, 1:3], rtol=1e-6)
        assert (bx[:, 2:] == 0).all()
    assert len(b.points()) == 2


def test_loader_refuses_what_it_cannot_do(tmp_path):
    from darkcfg.config import shapes
    net = shapes.network(TINY_CFG)
    with pytest.raises(DarkcfgError, match="cannot be split over 3 ranks"):
        D.TrainLoader(["a.jpg"], net, mini_batch=4, subdivisions=1, world_size=3)
    with pytest.raises(DarkcfgError, match="no training images"):
        D.TrainLoader([], net, mini_batch=4, subdivisions=1)
    with pytest.warns(UserWarning, match="mixup=1 is not implemented"):
        D.TrainLoader(["a.jpg"], shapes.network(TINY_CFG.replace("channels=3", "channels=3\n"
                                                                 "mixup=1")),
                      mini_batch=1, subdivisions=1)
    for workers in (0, 1):          # from a worker too: one clean line, no traceback
        loader = D.TrainLoader([str(tmp_path / "gone.jpg")], net, mini_batch=1, subdivisions=1,
                               workers=workers)
        with pytest.raises(DarkcfgError) as e:
            next(loader)
        loader.close()
        assert str(e.value) == f"{tmp_path / 'gone.jpg'}: no such image"


def test_check_missing_list_and_folder_split(tmp_path):
    d = tmp_path / "f"
    jpeg(d / "imgs" / "a.jpg")
    write(d / "imgs" / "a.txt", "0 .5 .5 .5 .5\n")
    data = write(d / "f.data", f"train={d}/imgs\nvalid=nowhere.txt\nclasses=1\n")
    rep = D.check(data)
    assert rep.splits[0].images == 1 and rep.splits[0].boxes == 1
    assert rep.errors == [f"{data}:2: valid=nowhere.txt: no such list file or folder"]
    rep = D.check(write(d / "g.data", "classes=1\n"))
    assert rep.errors == [f"{d}/g.data: no 'train=' list"]
    empty = write(d / "empty.txt", "\n# nothing\n")           # training stops on it: an error
    rep = D.check(write(d / "h.data", f"train={empty}\nclasses=1\n"))
    assert rep.errors == [f"{empty}: the train list has no images"] and not rep.ok


KP_CFG = TINY_CFG.replace("[yolo]", "[keypoint]").replace("mask=0,1,2\n", "").replace(
    "anchors=10,14, 23,27, 37,58\n", "").replace("num=3\n", "").replace("filters=21", "filters=8")


def test_check_a_keypoint_set(tmp_path):
    d = tmp_path / "kp"
    jpeg(d / "a.jpg")
    write(d / "a.txt", "0 0.5 0.5\n1 0.25 0.75\n1 0.5 0.5 0.2 0.2\n")
    jpeg(d / "b.jpg")
    write(d / "b.txt", "2 0.5 0.5\n0 1.5 0.5\n")
    write(d / "list.txt", "a.jpg\nb.jpg\n")
    data = write(d / "kp.data", "train=list.txt\nclasses=2\n")
    cfg = write(tmp_path / "kp.cfg", KP_CFG)
    rep = D.check(data, cfg)
    assert sorted(rep.errors) == [
        f"{d}/b.txt:1: class 2 is outside 0..1 (the cfg's last [keypoint])",
        f"{d}/b.txt:2: x=1.5 is outside [0, 1]: '0 1.5 0.5'"]
    (train, _) = rep.splits
    assert (train.points, train.boxes) == (2, 1)
    assert "train: 1 box line with a [keypoint] cfg: each trains (and is scored) as its centre" \
        in rep.warnings
    assert "2 keypoints" in rep.format()


def test_loader_keypoints_sit_on_their_dots_through_mosaic_jitter_and_flip(tmp_path):
    """The real loader on a keypoint cfg with mosaic, jitter, [keypoint] resize=1.5 and flip:
    every point of every batch is on a dot of its class's colour in the batch image."""
    from darkcfg.config import shapes
    rng = np.random.default_rng(3)
    paths = []
    for i in range(6):
        pts = [(c, rng.uniform(6, 90), rng.uniform(6, 66)) for c in range(2)]
        paths.append(write_sample(tmp_path / f"{i}.png", *dots(96, 72, pts)))
    cfg = KP_CFG.replace("channels=3", "channels=3\nmosaic=1\nflip=1").replace(
        "[keypoint]", "[keypoint]\nresize=1.5")
    loader = D.TrainLoader(paths, shapes.network(cfg), mini_batch=4, subdivisions=1, seed=1)
    checked = 0
    for _ in range(4):
        b = next(loader)
        w, h = b.size
        for img, pts, cls in zip(b.images, b.boxes, b.classes):
            img = img.numpy()
            for (x, y, bw, bh), c in zip(pts.tolist(), cls.tolist()):
                assert bw == bh == 0
                px, py = int(x * w), int(y * h)              # the pixel holding the point
                win = img[c, max(0, py - 1):py + 2, max(0, px - 1):px + 2]
                assert win.max() > 0.35, (c, x * w, y * h)   # on the dot (peak ~0.9-1.0)
                other = img[1 - c, max(0, py - 1):py + 2, max(0, px - 1):px + 2]
                # of its own class's colour: the other channel is far below (measured: at its
                # background 0.078 at every point, margin >= 0.495; a swapped class has < 0)
                assert win.max() - other.max() > 0.3, (c, win.max(), other.max())
                checked += 1
    loader.close()
    assert checked > 10


def test_loader_decodes_an_image_once_up_to_its_cache_cap(tmp_path):
    """A set smaller than the cap is decoded once per process; its images stay read-only (an
    augmentation that wrote into one would change every later draw), drawn again they give the
    file's pixels (cv2's resize of the file, done here); past the cap images are decoded on
    each draw and not kept."""
    from darkcfg.config import shapes
    paths = small_set(tmp_path, 3)
    loader = D.TrainLoader(paths, shapes.network(TINY_CFG), mini_batch=4, subdivisions=1,
                           augment=False)
    try:
        drawn = [next(loader) for _ in range(3)]                   # 12 draws of 3 images
        cache = loader.samples._images
        assert sorted(cache) == sorted(set(p for b in drawn for p in b.paths))
        assert all(not im.flags.writeable for im in cache.values())
        for b in drawn:
            for img, p in zip(b.images, b.paths):
                assert_plain_resize(img, p, b.size)
    finally:
        loader.close()
    one = cv2.imread(paths[0]).nbytes                              # all three are 64x48
    capped = D.Samples(paths, loader.options, 4, 1, 0, 0, 1, False)
    capped.image_cache_bytes = one
    for k in range(3):
        capped(k)
    assert len(capped._images) == 1 and capped._image_bytes == one

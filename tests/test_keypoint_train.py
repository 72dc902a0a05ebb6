"""The keypoint model learns: generated images with coloured dots of 3 classes and keypoint
label files (``class x y``; ``darkcfg.demo.dots``), a small [keypoint] cfg,
``darkcfg.train.train`` through the real loader (jitter crop and flip on the points), then the
keypoint metric (``validate.evaluate_keypoints``) on held-out images.  The same metric on the
untrained model is the baseline it must beat by far.  Both heads: ``head=separate`` and
``head=shared``.

Measured (2 shared cores): untrained mAP@4px 0.06-0.12; trained 0.8-0.9; about a minute per
head."""
from __future__ import annotations

import pytest
import torch

from darkcfg.dataset import demo
from darkcfg.nn import model as M
from darkcfg.config import shapes
from darkcfg.training import train as T
from darkcfg.evaluation import validate as V

pytest.importorskip("cv2")                     # demo.dots draws with OpenCV

CFG = """[net]
batch=16
subdivisions=1
width=64
height=64
channels=3
adam=1
B1=0.9
B2=0.999
eps=0.00000001
learning_rate=0.01
burn_in=5
max_batches={iterations}
policy=steps
steps={step}
scales=.1
decay=0.0005
{convs}
[keypoint]
classes=3
head={head}
tower=2
tower_filters=16
sigma=1
loss=bce
"""


def conv(f, s):
    return (f"\n[convolutional]\nbatch_normalize=1\nfilters={f}\nsize=3\nstride={s}\npad=1\n"
            f"activation=leaky\n")


def small_cfg(path, head, iterations):
    convs = conv(16, 2) + conv(32, 2) + conv(32, 1) + conv(32, 1)       # stride 4: 16x16 grid
    text = CFG.format(iterations=iterations, step=iterations * 4 // 5, head=head, convs=convs)
    with open(path, "w") as f:
        f.write(text)
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("kpdata")
    train = demo.dots(str(d / "train"), 128, 0, prefix="")      # the draws the figures came from
    valid = demo.dots(str(d / "valid"), 32, 1, prefix="")
    for name, paths in (("train", train), ("valid", valid)):
        (d / f"{name}.txt").write_text("\n".join(paths) + "\n")
    (d / "obj.names").write_text("red\ngreen\nblue\n")
    (d / "obj.data").write_text(f"classes=3\ntrain={d}/train.txt\nvalid={d}/valid.txt\n"
                                f"names={d}/obj.names\nbackup={d}/backup\n")
    return d, valid


# AP threshold: an untrained model scores 0.06-0.12 (many low peaks, a few near each dot);
# trained, 0.8-0.9 was measured for both heads
TRAINED_AP = 0.6
UNTRAINED_AP = 0.25


@pytest.mark.parametrize("head, iterations", [("separate", 200), ("shared", 300)])
def test_keypoint_model_learns_the_dots(dataset, tmp_path, head, iterations):
    torch.set_num_threads(min(2, torch.get_num_threads()))
    d, valid = dataset
    cfg = small_cfg(str(tmp_path / f"kp_{head}.cfg"), head, iterations)
    net = shapes.infer(cfg)
    assert V.default_radius(net) == 4                      # one stride of the 16x16 head

    untrained = M.Darknet(net)
    T.darknet_init_(untrained, seed=0)
    before = V.evaluate_keypoints(untrained, valid).map
    assert before < UNTRAINED_AP

    # darknet's init, as these thresholds were measured: with PyTorch's (train's default since
    # #22, measured on box detection) the separate head reached detect recall 0.492 here
    r = T.train(str(d / "obj.data"), cfg, out=str(tmp_path / "backup"), quiet=True, seed=0,
                map=True, map_every=10 ** 6, init="darknet")
    assert r.iteration == iterations and r.skipped == 0
    model = M.load(r.files["final"], cfg)
    res = V.evaluate_keypoints(model, valid, names=["red", "green", "blue"])
    print(f"\n{head}: untrained mAP@4px {before:.4f}, trained {res.map:.4f}\n" + res.format())
    assert res.map > TRAINED_AP, res.format()
    assert res.map > before + 0.4
    # training's -map follows the same metric (validate.evaluate_model dispatches on the head):
    # one evaluation at the last iteration, of the model saved as _final - the same figure
    # (measured: equal to the last bit for both heads)
    assert r.best_map == pytest.approx(res.map, abs=1e-9)
    # the points found are close: within half the radius on average
    assert res.loc_error < 2.0
    # `darkcfg detect` with the trained weights finds the drawn dots, in image pixels
    recall, precision, error = _detect_against_labels(cfg, r.files["final"], valid)
    print(f"detect: recall {recall:.3f}, precision {precision:.3f}, error {error:.2f} px")
    boxed = _detect_against_labels(cfg, r.files["final"], valid, "--letter-box")
    print("detect --letter-box: recall {:.3f}, precision {:.3f}, error {:.2f} px".format(*boxed))
    print(f"map at .25: recall {res.recall:.3f}, precision {res.precision:.3f}")
    assert recall > DETECT_RECALL and precision > DETECT_PRECISION and error < 2.2
    assert recall > boxed[0] + LETTERBOX_LOSS


# `darkcfg detect` at --thresh .25 on the 32 held-out images, a printed point matching an
# unmatched label of its class within 4 image pixels.  These cfgs set no letter_box, so detect
# stretches the images as training and map do (darknet's detector test without -letter_box).
# Measured: separate recall .695, precision .932, error 1.71 px; shared .831, 1.0, 1.10 px -
# map's recall at .25 is .729 and .831 (its 4 px are input pixels).  With --letter-box, which
# these models never saw in training: .525, .886, 1.77 px and .542, 1.0, 1.22 px (detect's
# figures before it stretched by default).
DETECT_RECALL, DETECT_PRECISION = 0.6, 0.85
LETTERBOX_LOSS = 0.1           # stretched recall above the letterboxed: measured .170 and .289


def _detect_against_labels(cfg, weights, images, *extra, radius=4.0):
    """(recall, precision, mean distance of the matches in image pixels) of the points that
    `darkcfg detect` prints against each image's label file (``class x y`` times its size)."""
    import re
    from click.testing import CliRunner
    from PIL import Image
    from darkcfg.cli import main
    r = CliRunner().invoke(main, ["detect", *images, "--cfg", cfg, "--weights", weights, *extra])
    assert r.exit_code == 0, r.output
    found = {p: [] for p in images}
    for block in re.split(r"(?m)^(?=\S)", r.output.strip()):
        path = block.split(":")[0]
        found[path] = [(int(c), float(x), float(y)) for c, x, y in
                       re.findall(r"^  class (\d+): [\d.]+%  ([\d.]+) ([\d.]+)$", block, re.M)]
    matched, dists, n_gt = 0, [], 0
    for p in images:
        w, h = Image.open(p).size
        with open(p[:-4] + ".txt") as f:
            gts = [(int(c), float(x) * w, float(y) * h) for c, x, y in
                   (line.split() for line in f if line.strip())]
        n_gt += len(gts)
        for c, x, y in found[p]:
            near = [(((x - gx) ** 2 + (y - gy) ** 2) ** .5, g) for g, (gc, gx, gy) in
                    enumerate(gts) if gc == c]
            d, g = min(near, default=(radius + 1, None))
            if d <= radius:
                matched, dists = matched + 1, dists + [d]
                gts[g] = (-1, 0.0, 0.0)                                   # used
    n_found = sum(len(v) for v in found.values())
    return matched / n_gt, matched / max(1, n_found), sum(dists) / max(1, len(dists))

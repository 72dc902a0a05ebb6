"""darknet .weights: header versions, round trips, order mapping, and bad files."""
from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from darkcfg.errors import DarkcfgError
import torch

import darkcfg
from darkcfg.config import shapes
from darkcfg.files import weights as W
from darkcfg.config.shapes import network
from darkcfg.errors import WeightsError

from _helpers import same_bytes
from conftest import CFGS, cfg_id, needs_shared, parsed_by_darknet, write_counting_weights


def random_weights(path, net, header=(0, 2, 5, 123_456_789), seed=0, extra=0):
    """An independent writer: header bytes packed by hand, then random float32s."""
    major, minor, rev, seen = header
    fmt = "<iiiQ" if major * 10 + minor >= 2 else "<iiiI"
    n = net.totals()["weights"] + extra
    with open(path, "wb") as f:
        f.write(struct.pack(fmt, major, minor, rev, seen))
        rng = np.random.default_rng(seed)
        for start in range(0, n, 1 << 24):
            f.write((rng.random(min(1 << 24, n - start), dtype=np.float32) - 0.5).tobytes())
    return str(path)


def roundtrip(src, cfg, tmp_path):
    model, report = darkcfg.load_weights(src, cfg)
    pt = tmp_path / "m.pt"
    W.save_pt(model, str(pt), report.header)
    del model
    again, report2 = darkcfg.load_weights(str(pt))
    out = tmp_path / "back.weights"
    W.save_darknet(again, str(out), report2.header)
    del again
    return str(out)


@needs_shared
@pytest.mark.parametrize("path", parsed_by_darknet(), ids=cfg_id)
def test_weights_pt_weights_is_byte_identical(path, tmp_path):
    net = shapes.infer(path)
    try:
        src = random_weights(tmp_path / "in.weights", net)
        back = roundtrip(src, path, tmp_path)
        assert same_bytes(src, back)
    finally:   # ~20 GB over all cfgs: never keep them
        for f in tmp_path.iterdir():
            f.unlink()


@pytest.mark.parametrize("header", [(0, 1, 0, 4_000_000_000), (0, 2, 5, 2**40), (1000, 1001, 3, 7)])
def test_header_versions_round_trip(header, tmp_path):
    """0.1 has a 32-bit seen (16-byte header), 0.2 a 64-bit one; minor > 1000 means transposed
    [connected] weights."""
    cfg = "[net]\nwidth=4\nheight=4\nchannels=2\n[convolutional]\nfilters=3\nsize=3\npad=1\n" \
          "batch_normalize=1\n[connected]\noutput=5\n"
    net = network(cfg)
    src = random_weights(tmp_path / "h.weights", net, header)
    model, report = darkcfg.load_weights(src, cfg)
    assert (report.header.major, report.header.minor, report.header.revision,
            report.header.seen) == header
    assert os.path.getsize(src) == (16 if header[1] == 1 else 20) + 4 * net.totals()["weights"]
    out = tmp_path / "o.weights"
    W.save_darknet(model, str(out), report.header)
    assert same_bytes(src, str(out))
    # the connected layer's matrix, read by hand: stored (out, in), or (in, out) if transposed
    raw = np.fromfile(src, "<f4", offset=report.header.size)
    conv = 3 * 4 + 3 * 2 * 9
    w = raw[conv + 5: conv + 5 + 5 * 48]
    want = w.reshape(48, 5).T if header[1] > 1000 else w.reshape(5, 48)
    assert np.array_equal(model.layers[1].fc.weight.detach().numpy(), want)


def test_conv_tensors_land_where_darknet_puts_them(tmp_path):
    """biases, scales, rolling_mean, rolling_variance, weights - read by hand from the bytes."""
    cfg = "[net]\nwidth=4\nheight=4\nchannels=2\n[convolutional]\nfilters=3\nsize=3\n" \
          "batch_normalize=1\n[convolutional]\nfilters=2\nsize=1\n"
    net = network(cfg)
    src = random_weights(tmp_path / "c.weights", net)
    model = darkcfg.load(src, cfg)
    raw = np.fromfile(src, "<f4", offset=20)
    bn, conv = model.layers[0].bn, model.layers[0].conv
    for k, t in enumerate((bn.bias, bn.weight, bn.running_mean, bn.running_var)):
        assert np.array_equal(t.detach().numpy(), raw[3 * k:3 * k + 3])
    assert np.array_equal(conv.weight.detach().numpy().ravel(), raw[12:12 + 54])
    plain = model.layers[1].conv
    assert np.array_equal(plain.bias.detach().numpy(), raw[66:68])
    assert np.array_equal(plain.weight.detach().numpy().ravel(), raw[68:74])
    table = W.offset_table(net)      # byte offsets, counted by hand from the layout above
    assert [(t["layer"], t["tensor"], t["offset"]) for t in table] == [
        (0, "biases", 20), (0, "scales", 32), (0, "rolling_mean", 44),
        (0, "rolling_variance", 56), (0, "weights", 68), (1, "biases", 284),
        (1, "weights", 292)]


def test_yolo_ref_from_yolov3_order_is_bit_identical(tmp_path):
    v3, ref = os.path.join(CFGS, "yolov3.cfg"), os.path.join(CFGS, "yolo_ref.cfg")
    torch.manual_seed(0)               # a finite network (random floats give negative variances)
    src = str(tmp_path / "v3.weights")
    W.save_darknet(darkcfg.build_model(v3), src, W.Header(0, 2, 5, 123_456_789))
    a = darkcfg.load(src, v3, width=96, height=96)
    b = darkcfg.load(src, ref, weights_cfg=v3, width=96, height=96)
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        for p, q in zip(a(x), b(x)):
            assert torch.equal(p, q)
    # and back: yolo_ref's model written in yolov3's order is the same file
    out = tmp_path / "back.weights"
    W.save_darknet(b, str(out), W.Header(0, 2, 5, 123_456_789), shapes.infer(v3))
    assert same_bytes(src, str(out))


def test_orders_of_different_networks_are_refused():
    with pytest.raises(WeightsError, match="not the same network"):
        W.match(shapes.infer(os.path.join(CFGS, "yolo_ref.cfg")),
                shapes.infer(os.path.join(CFGS, "yolov3-tiny.cfg")))


def test_head_retargeting_loads_the_rest(tmp_path):
    tiny = os.path.join(CFGS, "yolov3-tiny.cfg")
    src = random_weights(tmp_path / "t.weights", shapes.infer(tiny))
    model, report = darkcfg.load_weights(src, tiny, classes=2)
    assert [i for i, _ in report.skipped] == [15, 22]
    full = darkcfg.load(src, tiny)
    assert torch.equal(model.layers[13].conv.weight, full.layers[13].conv.weight)
    assert model.layers[15].conv.weight.shape[0] == 21 and model.layers[15].conv.weight.isfinite().all()


def test_cutoff_reads_a_prefix(tmp_path):
    """darknet53.conv.74 is the first 75 layers of yolov3: a file of just those loads with
    cutoff 75, and the rest of the network keeps its initialisation."""
    v3 = os.path.join(CFGS, "yolov3.cfg")
    net = shapes.infer(v3)
    prefix = W.expected_floats(net, 75)
    assert prefix == 40_620_640
    src = write_counting_weights(tmp_path / "darknet53.conv.74", prefix)
    model, report = darkcfg.load_weights(src, v3, cutoff=75)
    assert report.loaded == 52
    assert model.layers[0].bn.bias[0].item() == 0.0 and model.layers[0].bn.bias[31].item() == 31
    with pytest.raises(WeightsError, match="cfg needs 62,001,757"):
        darkcfg.load_weights(src, v3)


@pytest.mark.parametrize("damage, fragment", [
    (lambda b: b[:1_000_000], "layer 8 [convolutional]: weights needs 294,912 floats"),
    (lambda b: b + b"\0" * 4000, "1,000 floats left over"),
    (lambda b: b[:10], "too short for a darknet header"),
    (lambda b: b"\xff" * 12 + b[12:], "bad header"),
    (lambda b: b[:-2], "not a whole number of floats"),
    (lambda b: b[:-2], "layer 22 [convolutional]: 35,434,934 bytes after the 20-byte header"),
])
def test_bad_weights_files(damage, fragment, tmp_path):
    tiny = os.path.join(CFGS, "yolov3-tiny.cfg")
    good = random_weights(tmp_path / "g.weights", shapes.infer(tiny))
    bad = tmp_path / "bad.weights"
    bad.write_bytes(damage(open(good, "rb").read()))
    with pytest.raises(WeightsError) as e:
        darkcfg.load(str(bad), tiny)
    assert fragment in str(e.value) and str(e.value).startswith(str(bad))


def test_weights_of_another_network(tmp_path):
    v4tiny = "[net]\nwidth=8\nheight=8\nchannels=3\n[convolutional]\nfilters=8\nsize=3\n"
    src = random_weights(tmp_path / "other.weights", network(v4tiny))
    with pytest.raises(WeightsError, match=r"layer 0 \[convolutional\]: weights needs 432 floats at offset 276, 160 left"):
        darkcfg.load(src, os.path.join(CFGS, "yolov3-tiny.cfg"))


def _someone_elses_pt(path):
    torch.save({"state_dict": {}}, path)


def _someone_elses_safetensors(path):
    from safetensors.numpy import save_file
    save_file({"a": np.zeros(3, np.float32)}, str(path))


@pytest.mark.parametrize("ext, write_other, unreadable", [
    (".pt", _someone_elses_pt, "not a darkcfg .pt"),
    (".safetensors", _someone_elses_safetensors, "not a readable .safetensors")])
def test_checkpoints_that_are_not_darkcfgs(tmp_path, ext, write_other, unreadable):
    """A valid file of the format without darkcfg's cfg and header, then garbage: clear
    errors, not tracebacks."""
    p = tmp_path / f"x{ext}"
    write_other(p)
    with pytest.raises(WeightsError, match=f"not a darkcfg {ext}"):
        darkcfg.load(str(p))
    p.write_bytes(b"garbage")
    with pytest.raises(WeightsError, match=unreadable):
        darkcfg.load(str(p))


def test_pt_loads_with_plain_torch(tmp_path):
    model = darkcfg.build_model(os.path.join(CFGS, "yolov3-tiny.cfg"))
    W.save_pt(model, str(tmp_path / "m.pt"))
    obj = torch.load(tmp_path / "m.pt", weights_only=True)
    fresh = darkcfg.build_model(darkcfg.cfg.parse(obj["cfg"]))
    fresh.load_state_dict(obj["state_dict"])
    x = torch.rand(1, 3, 64, 64)
    assert all(torch.equal(a, b) for a, b in zip(model(x), fresh(x)))


def test_safetensors_round_trips_without_torch(tmp_path):
    """.weights -> .safetensors -> .weights byte-identical, in a process that never imports
    torch; the .safetensors loads into the same model as the .weights."""
    import subprocess
    import sys
    tiny = os.path.join(CFGS, "yolov3-tiny.cfg")
    torch.manual_seed(0)
    src = str(tmp_path / "t.weights")
    W.save_darknet(darkcfg.build_model(tiny), src, W.Header(0, 2, 5, 77))
    st, back = str(tmp_path / "t.safetensors"), str(tmp_path / "b.weights")
    code = ("import sys\nfrom darkcfg.cli import main\n"
            "src, st, cfg, back = sys.argv[1:]\n"
            "for args in (['convert', '-q', src, st, '--cfg', cfg], ['convert', '-q', st, back]):\n"
            "    try: main(args)\n"
            "    except SystemExit as e: assert not e.code, e.code\n"
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, src, st, tiny, back],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "False"
    assert same_bytes(src, back)
    a, b = darkcfg.load(src, tiny), darkcfg.load(st)
    x = torch.rand(1, 3, 96, 96)
    assert all(torch.equal(p, q) for p, q in zip(a(x), b(x)))


def test_torch_free_pt_writer_is_read_by_torch(tmp_path):
    """ptfile writes torch's archive by hand: torch.load (plain and mmap, weights_only) must
    give back every array with torch's own dtype for it, every value, and plain values; each
    tensor's bytes start on a 64-byte boundary (what torch's mmap loading expects)."""
    import zipfile
    from darkcfg.files import ptfile
    rng = np.random.default_rng(0)
    arrays = {f"a.{np.dtype(d).name}": (rng.random((3, 5)) * 100).astype(d)
              for d in ["<f4", "<f8", "<f2", "<i8", "<i4", "<i2", "i1", "u1", "?"]}
    arrays.update({"scalar": np.array(7, np.int64), "empty": np.zeros((0, 4), np.float32),
                   "transposed": np.arange(6, dtype=np.float32).reshape(2, 3).T,
                   "big_endian": np.arange(4, dtype=">f4")})
    obj = {"s": "text\nwith lines", "n": 2**40, "x": 0.25, "none": None, "list": [1, (2, "3")],
           "state_dict": arrays}
    path = tmp_path / "x.pt"
    ptfile.save(obj, str(path))
    for mmap in (False, True):
        back = torch.load(path, weights_only=True, mmap=mmap)
        assert {k: v for k, v in back.items() if k != "state_dict"} == \
            {k: v for k, v in obj.items() if k != "state_dict"}
        for k, a in arrays.items():
            t = back["state_dict"][k]
            native = a.astype(a.dtype.newbyteorder("="))
            assert t.dtype == torch.from_numpy(native).dtype, k
            assert t.shape == a.shape and t.is_contiguous(), k
            assert np.array_equal(t.numpy(), a), k
    raw = path.read_bytes()
    for info in zipfile.ZipFile(path).infolist():
        name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:][:4])
        start = info.header_offset + 30 + name_len + extra_len
        assert start % 64 == 0, info.filename
    with pytest.raises(TypeError, match="complex64"):
        ptfile.save({"c": np.zeros(2, np.complex64)}, str(tmp_path / "c.pt"))


def test_weights_to_pt_without_torch(tmp_path):
    """`convert .weights .pt` never imports torch, and the .pt holds the file's floats where
    darknet's order puts them (offsets counted by hand for yolov3-tiny's first conv)."""
    import subprocess
    import sys
    tiny = os.path.join(CFGS, "yolov3-tiny.cfg")
    src = random_weights(tmp_path / "t.weights", network(tiny))
    dst = tmp_path / "t.pt"
    code = ("import sys; from darkcfg.cli import main\n"
            "try: main(['convert', '-q', sys.argv[1], sys.argv[2], '--cfg', sys.argv[3]])\n"
            "except SystemExit as e: assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules")
    r = subprocess.run([sys.executable, "-c", code, src, str(dst), tiny], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    floats = np.fromfile(src, dtype="<f4", offset=20)
    sd = torch.load(dst, weights_only=True, mmap=True)["state_dict"]
    first = {"bn.bias": floats[0:16], "bn.weight": floats[16:32], "bn.running_mean": floats[32:48],
             "bn.running_var": floats[48:64], "conv.weight": floats[64:64 + 16 * 3 * 3 * 3]}
    for key, want in first.items():
        assert np.array_equal(sd[f"layers.0.{key}"].numpy().ravel(), want), key
    assert sd["layers.0.bn.num_batches_tracked"].dtype == torch.int64
    assert sd["layers.0.conv.weight"].shape == (16, 3, 3, 3)
    ref = darkcfg.load(src, tiny).state_dict()
    got = darkcfg.load(str(dst)).state_dict()
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)


@pytest.mark.parametrize("values, fragment", [
    ([0, 0, 1, 1, 0, 0, 1, -1, 0.5, 0.5], "rolling_variance: 1 of 2 values are negative"),
    ([0, 0, 1, 1, 0, 0, 1, 1, float("nan"), 0.5], "weights: 1 of 2 values are NaN"),
    ([0, 0, 1, 1, 0, 0, 1, 1, 0.5, 0.5], None),
])
def test_check_values(values, fragment, tmp_path):
    """A BN conv 1 -> 2, 1x1: biases, scales, rolling_mean, rolling_variance, weights, two
    floats each, written here by hand."""
    cfg = "[net]\nwidth=2\nheight=2\nchannels=1\n[convolutional]\nfilters=2\nsize=1\n" \
          "batch_normalize=1\n"
    p = tmp_path / "v.weights"
    p.write_bytes(struct.pack("<iiiQ", 0, 2, 5, 0) + np.array(values, "<f4").tobytes())
    if fragment is None:
        assert W.check_values(network(cfg), str(p)) == {"values_checked": 10}
        return
    with pytest.raises(WeightsError) as e:
        W.check_values(network(cfg), str(p))
    assert str(e.value).startswith(f"{p}: layer 0 [convolutional]: {fragment}")


def test_pt_header_must_be_the_darknet_header(tmp_path):
    model = darkcfg.build_model(os.path.join(CFGS, "yolov3-tiny.cfg"))
    W.save_pt(model, str(tmp_path / "m.pt"))
    obj = torch.load(tmp_path / "m.pt", weights_only=True)
    for bad in (None, {"major": 0}, {"major": "0", "minor": 2, "revision": 5, "seen": 0}):
        if bad is None:
            del obj["header"]
        else:
            obj["header"] = bad
        torch.save(obj, tmp_path / "bad.pt")
        with pytest.raises(WeightsError, match="header"):
            darkcfg.load(str(tmp_path / "bad.pt"))


TREE_CFG = """[net]
width=32
height=32
channels=3
[convolutional]
filters={filters}
size=1
activation=linear
[region]
anchors=1,1, 2,2
classes=7
num=2
softmax=1
tree={tree}
"""
# 7 nodes: two roots (0, 1), 0's children 2-4, 1's children 5-6 - four groups
TREE_TEXT = "a -1\nb -1\nc 0\nd 0\ne 0\nf 1\ng 1\n"


def test_a_checkpoint_carries_its_softmax_tree(tmp_path, monkeypatch):
    """A .pt/.safetensors carries the tree= file's text: built from another folder (the tree
    nowhere on disk) its output equals the model built beside the tree, and every group of
    classes sums to 1.  Converting never needs the tree: without it the checkpoint is written,
    and building from it names the missing tree."""
    import torch
    from darkcfg.cli import main
    from click.testing import CliRunner
    made = tmp_path / "made"
    (made / "data").mkdir(parents=True)
    (made / "data" / "t.tree").write_text(TREE_TEXT)
    cfg = made / "t.cfg"
    cfg.write_text(TREE_CFG.format(filters=2 * (5 + 7), tree="data/t.tree"))
    src = random_weights(made / "t.weights", network(str(cfg)))
    monkeypatch.chdir(made)                      # darknet opens data/t.tree from here
    for ext in ("pt", "safetensors"):
        r = CliRunner().invoke(main, ["convert", str(src), str(made / f"t.{ext}"), "--cfg",
                                      str(cfg), "-q"])
        assert r.exit_code == 0, r.output
    direct = darkcfg.load(src, str(cfg))
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        want = direct.trace(x)[-1]                      # the [region] output: (1, H, W, C)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for ext in ("pt", "safetensors"):
        moved = elsewhere / f"m.{ext}"
        os.replace(made / f"t.{ext}", moved)
        with torch.no_grad():
            got = darkcfg.load(str(moved)).trace(x)[-1]
        assert torch.equal(got, want), ext
    cls = want.reshape(1, 32, 32, 2, 12)[..., 5:]           # region output is (1, H, W, C)
    group = torch.tensor([0, 0, 1, 1, 1, 2, 2])             # by hand from TREE_TEXT
    sums = torch.zeros(1, 32, 32, 2, 3).index_add_(-1, group, cls)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-6)
    os.remove(made / "data" / "t.tree")                      # no tree: convert still works
    monkeypatch.chdir(made)
    r = CliRunner().invoke(main, ["convert", str(src), str(elsewhere / "n.pt"), "--cfg",
                                  str(cfg), "-q"])
    assert r.exit_code == 0, r.output
    with pytest.raises(DarkcfgError, match=r"softmax tree 'data/t.tree' not found"):
        darkcfg.load(str(elsewhere / "n.pt"))

"""Shape inference against darknet's own numbers (../shared/reference) and the design notes."""
from __future__ import annotations

import os

import pytest

from darkcfg.config import cfg as C
from darkcfg.config import shapes
from darkcfg.errors import CfgError

from conftest import (CFGS, DARKNET_CFGS, DARKNET_REJECTS, REFERENCE, cfg_id, needs_shared,
                      parsed_by_darknet, reference_summary, reference_summary_all)

REF = reference_summary()
ALL = reference_summary_all()            # darknet's figures for all 95 cfgs (86 parsed)
PARSED = sorted(k for k, v in ALL.items() if v["parse_ok"])
REJECTED = sorted(k for k, v in ALL.items() if not v["parse_ok"])


@needs_shared
@pytest.mark.parametrize("name", sorted(REF))
def test_matches_darknet_tables(name):
    ref = REF[name]
    net = shapes.infer(os.path.join(DARKNET_CFGS, f"{name}.cfg"))
    totals = net.totals()
    assert totals["layers"] == ref["layers"]
    assert f"{totals['bflops']:.3f}" == f"{ref['bflops']:.3f}"
    assert totals["weights_bytes"] == ref["weights_bytes"]
    assert totals["weights"] == ref["weights_floats"]
    assert [l.type for l in net.layers] == [t.replace("Gaussian_yolo", "gaussian_yolo")
                                            for t in ref["layer_types"]]
    with open(os.path.join(REFERENCE, "tables", f"{name}.layers.tsv")) as f:
        rows = [r.split("\t") for r in f.read().splitlines()[2:]]
    assert len(rows) == len(net.layers)
    for row, l in zip(rows, net.layers):
        out_c, out_h, out_w = map(int, row[5:8])
        assert tuple(l.output) == (out_w, out_h, out_c), f"layer {l.index} {l.type}"
        assert l.outputs == int(row[8]), f"layer {l.index} outputs"


@needs_shared
@pytest.mark.parametrize("path", parsed_by_darknet(), ids=cfg_id)
def test_every_cfg_darknet_parses_summarises(path):
    net = shapes.infer(path)
    assert net.totals()["layers"] == len(C.load(path).layers)
    assert shapes.format_table(net).count("\n") == len(net.layers)


@needs_shared
def test_the_reference_covers_every_cfg():
    assert len(PARSED) == 86 and set(REJECTED) == DARKNET_REJECTS
    assert sorted(map(cfg_id, parsed_by_darknet())) == PARSED


@needs_shared
@pytest.mark.parametrize("name", PARSED)
def test_every_cfg_is_darknets_summary(name):
    """README: summary equals darknet on 86 of 86 - layer count, Total BFLOPS as printed,
    input and output size, weights-file size and header, against darknet's own run."""
    from darkcfg.files import weights as W
    ref = ALL[name]
    net = shapes.infer(os.path.join(DARKNET_CFGS, f"{name}.cfg"))
    t = net.totals()
    assert t["layers"] == ref["layers"] == len(net.layers)
    assert f"{t['bflops']:.3f}" == f"{ref['bflops']:.3f}"
    assert [l.type for l in net.layers] == [x.replace("Gaussian_yolo", "gaussian_yolo")
                                            for x in ref["layer_types"]]
    r = ref["net"]
    assert (net.width, net.height, net.channels) == (r["w"], r["h"], r["c"])
    assert r["inputs"] == r["w"] * r["h"] * r["c"]
    assert net.layers[-1].outputs == r["outputs"]
    h, want = W.Header(), ref["weights_header"]
    assert (h.major, h.minor, h.revision, h.seen, h.seen_bytes, h.size) == \
        (want["major"], want["minor"], want["revision"], want["seen"], want["seen_bytes"],
         want["header_bytes"])
    assert t["weights"] == ref["weights_floats"]
    assert t["weights_bytes"] == ref["weights_bytes"] == h.size + 4 * ref["weights_floats"]


# darknet's two ways of refusing (cfg_summary_all.json's `error`): the 1-D recurrent cfgs die of
# a divide by zero after printing their table; the resnets' [shortcut] adds a stride-2 output
# to a full-resolution one and trips parse_shortcut's assert
@needs_shared
@pytest.mark.parametrize("name", REJECTED)
def test_cfgs_darknet_rejects_give_darknets_reason(name):
    ref = ALL[name]
    path = os.path.join(DARKNET_CFGS, f"{name}.cfg")
    if name == "crnn.train":
        # conv layers on a 1-D input: darkcfg reads it, and its total is the one darknet
        # printed before its divide by zero (darknet's layer table is complete)
        assert ref["error"].startswith("SIGFPE") and "table printed completely" in ref["error"]
        net = shapes.infer(path)
        assert net.totals()["layers"] == len(C.load(path).layers)
        assert f"{net.totals()['bflops']:.3f}" == f"{ref['bflops']:.3f}"
        return
    with pytest.raises(CfgError) as e:
        shapes.infer(path)
    msg = str(e.value)
    assert msg.startswith(path + ":") and "(layer " in msg
    if ref["error"].startswith("SIGFPE"):                          # rnn, rnn.train, gru, lstm
        assert "recurrent" in ref["error"] and "is a recurrent layer" in msg
    else:                                                          # resnet50/101/152, resnext
        assert "parse_shortcut" in ref["error"] and "params.w == net.layers[index].out_w" \
            in ref["error"]
        assert "[shortcut]" in msg and "option 'from'" in msg and "cannot add them" in msg


@needs_shared
def test_bundled_cfgs_match_darknet_yolov3():
    """cfgs/yolov3.cfg has darknet's layers in darknet's order; yolo_ref only re-orders."""
    ref = shapes.infer(os.path.join(DARKNET_CFGS, "yolov3.cfg"))
    ours = shapes.infer(os.path.join(CFGS, "yolov3.cfg"))
    key = [(l.type, l.output, [t.shape for t in l.tensors]) for l in ref.layers]
    assert [(l.type, l.output, [t.shape for t in l.tensors]) for l in ours.layers] == key
    assert ours.totals()["weights_bytes"] == REF["yolov3"]["weights_bytes"] == 248_007_048
    assert ours.totals()["bflops"] == REF["yolov3"]["bflops"] == 65.879
    reordered = shapes.infer(os.path.join(CFGS, "yolo_ref.cfg"))
    for k in ("params", "weights", "bflops"):
        assert reordered.totals()[k] == ours.totals()[k]
    # conv59/60 and conv67/68 swapped: the 59th and 67th convs are the up-branch 1x1s
    convs = [l for l in reordered.layers if l.type == "convolutional"]
    assert [(convs[i].filters, convs[i].size) for i in (58, 59, 66, 67)] == \
        [(256, 1), (255, 1), (128, 1), (255, 1)]
    convs3 = [l for l in ours.layers if l.type == "convolutional"]
    assert [(convs3[i].filters, convs3[i].size) for i in (58, 59, 66, 67)] == \
        [(255, 1), (256, 1), (255, 1), (128, 1)]


@needs_shared
@pytest.mark.parametrize("name", ["yolov3-tiny", "darknet53"])
def test_other_bundled_cfgs_are_darknets(name):
    ref = shapes.infer(os.path.join(DARKNET_CFGS, f"{name}.cfg"))
    ours = shapes.infer(os.path.join(CFGS, f"{name}.cfg"))
    assert [(l.type, l.output, l.weights) for l in ours.layers] == \
        [(l.type, l.output, l.weights) for l in ref.layers]
    assert ours.totals() == ref.totals()


def test_design_notes_backbone_counts():
    """The notes' Keras counts minus the conv biases darknet does not store beside batch norm:
    40,638,496 - 17,856 and 2,556,808 - 4,464 (17,856 = the backbone's BN channels)."""
    cfg = C.load(os.path.join(CFGS, "darknet53.cfg"))
    net = shapes.infer(cfg)
    bn_channels = sum(l.filters for l in net.layers[:75] if l.type == "convolutional")
    assert bn_channels == 17_856
    assert net.totals(75)["weights"] == 40_638_496 - bn_channels == 40_620_640
    small = shapes.infer(C.rewrite(cfg, width_scale=0.25))
    assert small.totals(75)["weights"] == 2_556_808 - bn_channels // 4 == 2_552_344


def test_params_match_pytorch_count():
    """summary's params (no torch) equal what PyTorch counts on the built model."""
    from darkcfg.nn.model import build_model
    for name in ("yolov3-tiny.cfg", "yolo_ref.cfg"):
        net = shapes.infer(os.path.join(CFGS, name))
        model = build_model(net, device="meta")
        assert net.totals()["params"] == sum(p.numel() for p in model.parameters())
    assert shapes.infer(os.path.join(CFGS, "yolov3.cfg")).totals()["params"] == 61_949_149


def _net(body, w=8, h=8, c=4):
    return shapes.infer(C.parse(f"[net]\nwidth={w}\nheight={h}\nchannels={c}\n" + body))


@pytest.mark.parametrize("body, want", [
    # each output size computed by hand from darknet's formulas
    ("[maxpool]\nsize=2\nstride=2\n", (4, 4, 4)),             # (8 + 1 - 2)//2 + 1
    ("[maxpool]\nsize=2\nstride=1\n", (8, 8, 4)),             # padding size-1 = 1
    ("[maxpool]\nsize=3\nstride=2\n", (4, 4, 4)),             # (8 + 2 - 3)//2 + 1
    ("[maxpool]\nsize=2\nstride=2\nmaxpool_depth=1\nout_channels=2\n", (8, 8, 2)),
    ("[upsample]\nstride=2\n", (16, 16, 4)),
    ("[upsample]\nstride=-2\n", (4, 4, 4)),
    ("[reorg3d]\nstride=2\n", (4, 4, 16)),
    ("[convolutional]\nfilters=6\nsize=3\nstride_x=2\nstride_y=1\npad=1\n", (4, 8, 6)),
    ("[convolutional]\nfilters=6\nsize=3\nstride=1\npadding=0\n", (6, 6, 6)),
    ("[convolutional]\nfilters=6\n[route]\nlayers=-1,-1\ngroups=2\ngroup_id=1\n", (8, 8, 6)),
    ("[avgpool]\n", (1, 1, 4)),
    ("[connected]\noutput=7\n", (1, 1, 7)),
    ("[local]\nfilters=3\nsize=3\nstride=1\npad=1\n", (8, 8, 3)),
])
def test_output_shapes_by_hand(body, want):
    assert tuple(_net(body).layers[-1].output) == want


def test_bflops_by_hand():
    # conv: 2 * (c/groups * n * k * k) * out_h * out_w / 1e9
    net = _net("[convolutional]\nfilters=6\nsize=3\ngroups=2\npad=1\n", w=10, h=10)
    assert net.layers[0].bflops == 2 * (4 // 2 * 6 * 9) * 100 / 1e9
    # maxpool: size^2 * c * out_h * out_w / 1e9 ; shortcut: out elements * n_from / 1e9
    net = _net("[maxpool]\nsize=2\nstride=2\n[shortcut]\nfrom=-1\n")
    assert net.layers[0].bflops == 4 * 4 * 4 * 4 / 1e9
    assert net.layers[1].bflops == 4 * 4 * 4 * 1 / 1e9


# darknet's printed `Total BFLOPS` (AlexeyAB 59596d7): cfgs with [connected]/[local] layers,
# which set no l.bflops and so are left out of darknet's sum (issue #10); yolov3-voc (run here,
# `darknet partial`): darknet adds float l.bflops into a float - the double sum is 65.4425108,
# which would print 65.443
DARKNET_TOTALS = {"vgg-16": 30.699, "alexnet": 2.154, "yolov1/yolo": 40.155,
                  "yolov1/tiny-yolo": 3.185, "strided": 5.194, "extraction.conv": 10.998,
                  "yolov3-voc": 65.442}


@needs_shared
def test_hand_run_totals_are_the_references():
    assert {k: ALL[k]["bflops"] for k in DARKNET_TOTALS} == DARKNET_TOTALS


@needs_shared
@pytest.mark.parametrize("name", PARSED)
def test_summary_json_bflops_is_darknets_total(name):
    import json
    from click.testing import CliRunner
    from darkcfg.cli import main
    want = ALL[name]["bflops"]
    res = CliRunner().invoke(main, ["summary", os.path.join(DARKNET_CFGS, f"{name}.cfg"),
                                    "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["total"]["bflops"] == want


@needs_shared
def test_complete_count_adds_what_darknet_leaves_out():
    """vgg-16's three [connected] layers, by hand: 2 * (25088*4096 + 4096*4096 + 4096*1000)
    = 0.2473 BFLOPs on top of darknet's 30.699; no BF column on those rows (darknet prints
    none either)."""
    net = shapes.infer(os.path.join(DARKNET_CFGS, "vgg-16.cfg"))
    fc = 2 * (25088 * 4096 + 4096 * 4096 + 4096 * 1000) / 1e9
    assert abs(net.totals()["bflops_all"] - (30.699 + fc)) < 0.0015
    rows = [r for r in shapes.format_table(net).splitlines() if " connected " in r]
    assert len(rows) == 3 and not any("BF" in r for r in rows)


@needs_shared
def test_contrastive_reports_no_shape():
    """darknet's make_contrastive_layer sets no out_w/h/c: yolov4-tiny_contrastive's layer 54
    prints 0 x 0 x 0 (its l.outputs is its input's)."""
    net = shapes.infer(os.path.join(DARKNET_CFGS, "yolov4-tiny_contrastive.cfg"))
    l = net.layers[54]
    assert l.type == "contrastive" and tuple(l.output) == (0, 0, 0)
    assert l.outputs == net.layers[53].outputs

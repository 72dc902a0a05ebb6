"""int8 (darkcfg.infer.int8): the options and errors without torchao (CI installs none), and
with it: the quantised trunk near fp32's heads, .pt2 saved and loaded bit for bit, a smaller
batch padded, and detect/map/build on the command line."""
from __future__ import annotations

import json
import os
import sys

import pytest
import torch

import darkcfg
from darkcfg.errors import DarkcfgError
from darkcfg.infer import int8 as Q
from darkcfg.nn import dtypes
from darkcfg.nn import model as M

from _helpers import make_cfg, make_data, run_cli


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """(data, cfg, weights): yolov3-tiny at 64x64, quarter width, synthetic weights."""
    tmp = tmp_path_factory.mktemp("int8")
    data = make_data(tmp, ntrain=8, nvalid=4)
    cfg = make_cfg(tmp / "tiny.cfg", size=64)
    weights = str(tmp / "tiny.weights")
    assert run_cli("init", cfg, weights).exit_code == 0
    return data, cfg, weights


# ----- without torchao ------------------------------------------------------------------------

def test_without_torchao_the_error_says_what_to_install(small, monkeypatch):
    data, cfg, weights = small
    monkeypatch.setitem(sys.modules, "torchao", None)     # import torchao fails
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)
    monkeypatch.setitem(sys.modules, "torchao.quantization.pt2e", None)
    with pytest.raises(DarkcfgError, match=r'pip install "darkcfg\[int8\]"'):
        Q.require_torchao()
    r = run_cli("map", data, cfg, weights, "--dtype", "int8", "--calib", data)
    assert r.exit_code == 1 and 'pip install "darkcfg[int8]"' in r.output, r.output


@pytest.mark.parametrize("args, message", [
    (["--dtype", "int8"], "--dtype int8 needs --calib"),
    (["--calib", "DATA"], "--calib is for --dtype int8"),
])
def test_calib_goes_with_int8(small, args, message):
    data, cfg, weights = small
    args = [data if a == "DATA" else a for a in args]
    for cmd in (["map", data, cfg, weights], ["build", cfg, "--weights", weights],
                ["detect", data, "--cfg", cfg, "--weights", weights]):
        r = run_cli(*cmd, *args)
        assert r.exit_code == 2 and message in r.output, (cmd, r.output)


def test_int8_is_no_cast_and_auto_never_picks_it():
    with pytest.raises(DarkcfgError, match="not a cast"):
        M.resolve_dtype("int8")
    with pytest.raises(DarkcfgError, match="calib= is for"):
        darkcfg.load("x.weights", "x.cfg", calib=["a.jpg"])
    every = set(dtypes.CPU_FEATURES)
    for flags in (set(), {"avx512_vnni"}, {"amx_int8", "amx_tile"}, every):
        assert dtypes.auto_dtype("cpu", flags)[0] in (torch.float32, torch.bfloat16)


def test_calibration_images_spread_over_the_list(small, tmp_path):
    data, _, _ = small
    train = Q.calibration_paths(data, 1000)
    assert len(train) == 8 and all("train" in p for p in train)      # the .data's train=
    assert Q.calibration_paths(data, 3) == [train[0], train[2], train[5]]
    assert Q.calibration_paths(train, 2) == [train[0], train[4]]
    with pytest.raises(DarkcfgError, match="no such file"):
        Q.calibration_paths(str(tmp_path / "missing.txt"))


# ----- with torchao ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quantised(small):
    pytest.importorskip("torchao")
    data, cfg, weights = small
    fp32 = M.load(weights, cfg, fuse=True)
    return fp32, darkcfg.load(weights, cfg, dtype="int8", calib=data, calib_count=8)


def test_int8_heads_near_fp32_and_float32(quantised, small):
    fp32, q = quantised
    x = next(Q.calibration_batches(fp32.net, Q.calibration_paths(small[0], 2)))
    with torch.no_grad():
        want = fp32(x)
    got = q(x)
    assert [o.shape for o in got] == [o.shape for o in want]
    assert all(o.dtype == torch.float32 for o in got)
    for g, w in zip(got, want):     # uint8 activations: a few of 255 steps of each range
        assert (g - w).abs().max() < 0.05 * w.abs().max(), ((g - w).abs().max(), w.abs().max())
    with pytest.raises(DarkcfgError, match="cannot be trained"):
        q.train()


def test_the_first_conv_stays_float_exactly_where_the_cpu_has_no_int8_dot(quantised, small,
                                                                          monkeypatch):
    """Without VNNI/AMX oneDNN's 16-bit pair sums overflow on the first conv's 0..255 input
    (docs/precision.md: 79.29 % mAP against fp32's 82.87 %, 83.34 % with it in float)."""
    from darkcfg.nn import dtypes
    fp32, q = quantised
    first = next(l.index for l in fp32.net.layers if l.type == "convolutional")
    assert q.info["float_layers"] == ([] if dtypes.int8_dot() else [first])
    for flags, want in (({"avx2"}, [first]), ({"avx2", "avx512_vnni"}, [])):
        monkeypatch.setattr(dtypes, "cpu_flags", lambda *a, f=flags: f)
        info = Q.quantize(fp32, small[0], 4).info
        assert info["float_layers"] == want and ("note" in info) == bool(want)
    assert Q.quantize(fp32, small[0], 4, keep_first=False).info["float_layers"] == []


def test_pt2_round_trip_and_a_smaller_batch(quantised, tmp_path):
    fp32, q = quantised
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    out = q(x)
    q.save(str(tmp_path / "m.pt2"))
    back = darkcfg.load(str(tmp_path / "m.pt2"))
    assert back.net.cfg.to_text() == q.net.cfg.to_text()
    for a, b in zip(back(x), out):
        assert torch.equal(a, b)
    for a, b in zip(back(x[:1]), out):        # padded to the compiled batch of 3
        assert torch.equal(a, b[:1])
    with pytest.raises(DarkcfgError, match="carries its cfg"):
        darkcfg.load(str(tmp_path / "m.pt2"), "x.cfg")


def test_cli_build_pt2_then_map_and_detect(small, tmp_path):
    pytest.importorskip("torchao")
    data, cfg, weights = small
    pt2 = tmp_path / "tiny.pt2"
    r = run_cli("build", cfg, "--weights", weights, "--dtype", "int8", "--calib", data,
                "--calib-count", "4", "-o", pt2)
    assert r.exit_code == 0 and "int8 on cpu" in r.output and pt2.exists(), r.output
    r = run_cli("build", cfg, "--dtype", "int8", "--calib", data, "-o", tmp_path / "x.pt")
    assert r.exit_code == 2 and "must end in .pt2" in r.output
    r = run_cli("map", data, cfg, pt2, "--json", "-q")
    assert r.exit_code == 0, r.output
    from_file = json.loads(r.output)["darknet"]["map"]
    r = run_cli("map", data, cfg, weights, "--dtype", "int8", "--calib", data,
                "--calib-count", "4", "--json", "-q")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output[r.output.index("{"):])["darknet"]["map"] == from_file
    images = sorted(os.path.join(os.path.dirname(data), "valid", f)
                    for f in os.listdir(os.path.join(os.path.dirname(data), "valid"))
                    if f.endswith(".png"))
    r = run_cli("detect", images[0], "--weights", pt2, "--thresh", "0.001")
    assert r.exit_code == 0, r.output
    r2 = run_cli("detect", images[0], images[0], "--weights", pt2, "--thresh", "0.001",
                 "--batch", "2")
    assert r2.exit_code == 0 and r2.output == r.output * 2, r2.output
    r = run_cli("detect", images[0], "--weights", pt2, "--dtype", "bf16")
    assert r.exit_code == 2 and "int8 model" in r.output

"""[net] ema_alpha: darknet's weight average (src/network.c train_network_waitkey,
ema_update, ema_apply), checked against the average written out by hand in each test."""

import numpy as np
import pytest
import torch

from darkcfg.config import shapes
from darkcfg.errors import CfgError
from darkcfg.nn import model as M
from darkcfg.training import train as T
from darkcfg.training.ema import WeightEMA

from _helpers import make_cfg, make_data
from test_train import SMALL, _header

CFG = SMALL.format(batch=2, subdivisions=1)    # conv+BN, conv, connected


def _model():
    return M.Darknet(shapes.network(CFG))


def _set_random(model, seed):
    """Every float tensor (parameters and BN statistics) to new values; returns a copy."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _conv_keys(model):
    return [k for k in model.state_dict() if k.startswith(("layers.0.", "layers.1."))
            and model.state_dict()[k].is_floating_point()]


def test_a_short_run_averages_from_half_way_to_the_end_and_applies_it():
    """max_batches 10 (<= 2000, where darknet's apply point falls before its start): the average
    starts as a copy at 10/2 = 5, takes e = a*e + (1-a)*w after each update to 10, and is
    copied into the [convolutional] layers at 10; the [connected] layer keeps its own."""
    model, a = _model(), 0.7
    ema = WeightEMA(model, a, max_batches=10)
    ws = {}
    for k in range(1, 11):
        ws[k] = _set_random(model, k)
        ema.after_update(k)
        if k < 5:
            assert not ema.initialized
    keys = _conv_keys(model)
    assert any("running_mean" in k for k in keys) and any("running_var" in k for k in keys)
    live = model.state_dict()
    for key in keys:
        e = ws[5][key]
        for k in range(6, 11):
            e = a * e + (1 - a) * ws[k][key]
        assert torch.allclose(live[key], e, atol=1e-6), key
    fc = [k for k in live if k.startswith("layers.2.")]
    assert fc and all(torch.equal(live[k], ws[10][k]) for k in fc)


def test_a_long_run_follows_darknets_points():
    """max_batches 2004: start 1002 (copy), update at 1003, at apply = 2004 - 1000 = 1004 the
    average replaces the weights without taking 1004's, and nothing changes after."""
    model, a = _model(), 0.5
    ema = WeightEMA(model, a, max_batches=2004)
    ws = {}
    for k in range(1000, 1006):
        ws[k] = _set_random(model, k)
        did = ema.after_update(k)
        if k == 1004:
            assert did == "apply"
            applied = {key: v.clone() for key, v in model.state_dict().items()}
    for key in _conv_keys(model):
        e = a * ws[1002][key] + (1 - a) * ws[1003][key]
        assert torch.allclose(applied[key], e, atol=1e-6)
        assert torch.equal(model.state_dict()[key], ws[1005][key])      # 1005: left alone


def test_swapped_in_and_the_state_round_trip():
    model, a = _model(), 0.9
    ema = WeightEMA(model, a, max_batches=4)
    w2 = _set_random(model, 2)
    ema.after_update(2)
    w3 = _set_random(model, 3)
    ema.after_update(3)
    key = _conv_keys(model)[0]
    with ema.swapped_in() as m:
        assert torch.allclose(m.state_dict()[key], a * w2[key] + (1 - a) * w3[key])
    assert torch.equal(model.state_dict()[key], w3[key])
    other = WeightEMA(_model(), a, max_batches=4)
    other.load_state_dict(ema.state_dict())
    assert all(torch.equal(other.shadow[k], ema.shadow[k]) for k in ema.shadow)


def test_ema_alpha_out_of_range_names_the_line():
    text = CFG.replace("channels=3\n", "channels=3\nema_alpha=1.5\n")
    with pytest.raises(CfgError, match=r"<cfg>:5: \[net\].*ema_alpha=1.5"):
        T.schedule(shapes.network(text))


def _load(path, cfg):
    from darkcfg.files import weights as W
    return {k: torch.from_numpy(np.array(a)) for k, a in
            W.read_arrays(str(path), shapes.network(cfg))[1].items()}


def test_training_writes_ema_weights_and_resumes_exactly(tmp_path):
    """ema_alpha=.5, max_batches 6 (start 3): at the save of iteration 4 _ema.weights is
    .5*w3 + .5*w4 of the live weights seen after iterations 3 and 4, _last.weights is w4;
    a run stopped by Ctrl-C at 5 and resumed ends on the same bytes as a straight one."""
    data = make_data(tmp_path, extra="savelast=2\nsaveweights=4\n")
    cfg = make_cfg(tmp_path / "tiny.cfg", ema_alpha=0.5)
    seen, checked = {}, []
    backup = tmp_path / "backup"

    def watch(k, model):
        seen[k] = {n: v.clone() for n, v in model.state_dict().items()}
        if k == 4:
            ema, last = _load(backup / "tiny_ema.weights", cfg), \
                _load(backup / "tiny_last.weights", cfg)
            convs = [n for n in ema if "running" in n or n.endswith(("weight", "bias"))]
            for n in convs:
                assert torch.allclose(ema[n], .5 * seen[3][n] + .5 * seen[4][n], atol=1e-6), n
                assert torch.equal(last[n], seen[4][n]), n
            checked.append(len(convs))

    straight = T.train(data, cfg, quiet=True, seed=3, callback=watch)
    assert checked and checked[0] > 20
    assert _header(straight.files["ema"]).seen == 6 * 4
    final = open(straight.files["final"], "rb").read()
    assert final[20:] == open(straight.files["ema"], "rb").read()[20:]  # applied at the end

    def interrupt(k, model):
        if k == 5:
            raise KeyboardInterrupt
    out = str(tmp_path / "again")
    with pytest.raises(KeyboardInterrupt):
        T.train(data, cfg, quiet=True, seed=3, out=out, callback=interrupt)
    resumed = T.train(data, cfg, quiet=True, out=out, resume=True)
    assert open(resumed.files["final"], "rb").read() == final

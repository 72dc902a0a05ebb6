"""darkcfg.train: darknet's schedule, update, init and training loop.

Every expected value is computed in the test from darknet's formulas (src/network.c
get_current_rate, src/convolutional_layer.c update_convolutional_layer and
make_convolutional_layer, as quoted in ../shared/design/TRAINING-FACTS.md), from OpenCV's
darknet importer, or from a mAP an untrained model cannot reach - never from darkcfg's output.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from darkcfg.config import cfg as C
from darkcfg.nn import model as M
from darkcfg.config import shapes
from darkcfg.training import train as T
from darkcfg.errors import CfgError, DarkcfgError

from _helpers import make_cfg, make_data, run_cli, same_bytes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def net_cfg(**opts) -> str:
    body = "".join(f"{k}={v}\n" for k, v in opts.items())
    return ("[net]\nwidth=8\nheight=8\nchannels=3\n" + body +
            "[convolutional]\nfilters=2\nsize=1\nstride=1\npad=0\nactivation=linear\n")


# ----- 1. the learning rate: darknet's get_current_rate, by hand ----------------------------------

LR = 0.001
SCHEDULES = [
    # (options, iteration, expected - darknet's formula written out)
    ({}, 5, 0.001),                                                          # all defaults
    (dict(learning_rate=0.01), 0, 0.01),
    (dict(learning_rate=LR, policy="constant", burn_in=100), 1, LR * (1 / 100) ** 4),
    (dict(learning_rate=LR, burn_in=100), 50, LR * 0.5 ** 4),
    (dict(learning_rate=LR, burn_in=100, power=2), 50, LR * 0.5 ** 2),
    (dict(learning_rate=LR, burn_in=100), 100, LR),                          # burn-in over
    (dict(learning_rate=LR, policy="steps", steps="400,450", scales=".1,.1"), 399, LR),
    (dict(learning_rate=LR, policy="steps", steps="400,450", scales=".1,.1"), 400, LR * .1),
    (dict(learning_rate=LR, policy="steps", steps="400,450", scales=".1,.1"), 449, LR * .1),
    (dict(learning_rate=LR, policy="steps", steps="400,450", scales=".1,.1"), 450, LR * .01),
    (dict(learning_rate=LR, policy="steps", steps="400,450", scales=".1,.1", burn_in=1000),
     500, LR * (500 / 1000) ** 4),                                           # burn-in wins
    (dict(learning_rate=LR, policy="steps", steps="10,20,30", scales="2,.5,.1"), 25, LR * 2 * .5),
    (dict(learning_rate=LR, policy="step", step=100, scale=.5), 250, LR * .5 ** 2),
    (dict(learning_rate=LR, policy="step", step=100, scale=.5), 99, LR),
    # darknet keeps gamma in a float: .999f ** 1000 is 1.3e-5 (relative) off .999 ** 1000
    (dict(learning_rate=LR, policy="exp", gamma=.999), 1000,
     LR * float(np.float32(.999)) ** 1000),
    (dict(learning_rate=LR, policy="poly", max_batches=1000), 250, LR * 0.75 ** 4),
    (dict(learning_rate=LR, policy="poly", max_batches=1000, power=1), 250, LR * 0.75),
    (dict(learning_rate=LR, policy="poly", max_batches=1000, power=1, burn_in=100), 50,
     LR * 0.5),                                                              # power is shared
    (dict(learning_rate=LR, policy="sigmoid", gamma=.01, step=500), 700,
     LR / (1 + math.exp(.01 * 200))),
    (dict(learning_rate=LR, policy="sgdr", max_batches=1000, sgdr_cycle=100), 50,
     1e-5 + 0.5 * (LR - 1e-5) * (1 + math.cos(50 * 3.14159265 / 100))),
    # start 0, cycle 100 -> 100 < 250: start 100, cycle 200 -> 300 >= 250: stop
    (dict(learning_rate=LR, policy="sgdr", max_batches=1000, sgdr_cycle=100), 250,
     1e-5 + 0.5 * (LR - 1e-5) * (1 + math.cos(150 * 3.14159265 / 200))),
    (dict(learning_rate=LR, policy="sgdr", max_batches=1000, sgdr_cycle=100, sgdr_mult=3,
          learning_rate_min=1e-4), 250,
     1e-4 + 0.5 * (LR - 1e-4) * (1 + math.cos(150 * 3.14159265 / 300))),
    (dict(learning_rate=LR, policy="sgdr", max_batches=400), 100,            # cycle = max_batches
     1e-5 + 0.5 * (LR - 1e-5) * (1 + math.cos(100 * 3.14159265 / 400))),
    (dict(learning_rate=LR, policy="no_such_policy"), 7, LR),                # darknet: constant
]


@pytest.mark.parametrize("opts,iteration,expected", SCHEDULES)
def test_learning_rate_is_darknets(opts, iteration, expected):
    assert T.learning_rate(net_cfg(**opts), iteration) == pytest.approx(expected, rel=1e-6)


def test_learning_rate_random_policy_is_seeded():
    text = net_cfg(learning_rate=LR, policy="random")
    a = [T.learning_rate(text, k, seed=3) for k in range(1, 2001)]
    assert a == [T.learning_rate(text, k, seed=3) for k in range(1, 2001)]
    assert a != [T.learning_rate(text, k, seed=4) for k in range(1, 2001)]
    assert all(0 <= r <= LR for r in a)
    # lr * U(0,1)^4 has mean lr/5 and P(r < lr/16) = P(U < 1/2) = 1/2
    assert np.mean(a) == pytest.approx(LR / 5, rel=0.1)
    assert np.mean(np.array(a) < LR / 16) == pytest.approx(0.5, abs=0.05)


def test_steps_policy_needs_steps_and_scales():
    with pytest.raises(CfgError, match="steps"):
        T.learning_rate(net_cfg(policy="steps", steps="10,20"), 1)
    with pytest.raises(CfgError, match="2 steps but 1 scales"):
        T.learning_rate(net_cfg(policy="steps", steps="10,20", scales=".1"), 1)


def test_schedule_defaults_are_darknets():
    s = T.schedule(net_cfg())
    assert (s.batch, s.subdivisions, s.max_batches, s.learning_rate, s.momentum, s.decay,
            s.power, s.burn_in, s.policy) == (1, 1, 0, 0.001, 0.9, 0.0001, 4, 0, "constant")
    s = T.schedule(net_cfg(batch=64, subdivisions=16))
    assert (s.mini_batch, s.images_per_iteration) == (4, 64)
    s = T.schedule(net_cfg(batch=10, subdivisions=4))        # 10/4 = 2 in C: 8 per update
    assert (s.mini_batch, s.images_per_iteration) == (2, 8)


# ----- 2. the update, init and batch norm -------------------------------------------------------

SMALL = """[net]
width=8
height=8
channels=3
batch={batch}
subdivisions={subdivisions}
momentum=0.9
decay=0.01
learning_rate=0.1
[convolutional]
batch_normalize=1
filters=4
size=3
stride=1
pad=1
activation=leaky
[convolutional]
filters=3
size=1
stride=1
pad=0
activation=linear
[connected]
output=5
activation=linear
"""


@dataclass
class Pass:
    images: torch.Tensor


def _small(batch=8, subdivisions=2, seed=0):
    net = shapes.network(SMALL.format(batch=batch, subdivisions=subdivisions))
    model = M.Darknet(net)
    T.darknet_init_(model, seed=seed)
    return net, model


def _image_loss(out):                      # a per-image loss: (mini,) values
    return (out[0] ** 2).flatten(1).sum(1) + out[0].flatten(1).sum(1)


def test_sgd_step_is_darknets_update_with_subdivisions():
    """Three iterations of T.step (mean loss, loss/S per subdivision, torch SGD) against
    darknet's update written out: v accumulates the summed negative gradient of every image
    of the iteration, v -= decay*Bu*w (conv/connected weights only), w += lr/Bu * v,
    v *= momentum (TRAINING-FACTS 1.4)."""
    B, S = 8, 2
    mini = B // S
    net, model = _small(B, S)
    ref = M.Darknet(net)
    ref.load_state_dict(model.state_dict())
    for m in (model, ref):
        m.train()
        T.set_bn_training(m)
    sched = T.schedule(net)
    opt = T.make_optimizer(model, sched)
    gen = torch.Generator().manual_seed(1)
    data = [torch.rand(B, 3, 8, 8, generator=gen) for _ in range(3)]
    decayed = {n for n, _ in ref.named_parameters()
               if n.endswith(("conv.weight", "fc.weight"))}
    assert decayed == {"layers.0.conv.weight", "layers.1.conv.weight", "layers.2.fc.weight"}
    v = {n: torch.zeros_like(p) for n, p in ref.named_parameters()}
    lrs = [0.1, 0.05, 0.02]
    for x, lr in zip(data, lrs):
        for g in opt.param_groups:
            g["lr"] = lr
        passes = [Pass(x[s * mini:(s + 1) * mini]) for s in range(S)]
        T.step(model, opt, passes, S, lambda out, b: (_image_loss(out).mean(), {}))
        # darknet, by hand
        ref.zero_grad()
        for s in range(S):
            _image_loss(ref(x[s * mini:(s + 1) * mini])).sum().backward()   # summed, accumulated
        with torch.no_grad():
            for n, p in ref.named_parameters():
                v[n] -= p.grad                       # darknet stores negative gradients
                if n in decayed:
                    v[n] -= sched.decay * B * p
                p += lr / B * v[n]
                v[n] *= sched.momentum
    for (n, a), (_, b) in zip(model.state_dict().items(), ref.state_dict().items()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7), n


def test_adam_is_used_when_the_cfg_asks():
    net = shapes.network(SMALL.format(batch=8, subdivisions=2).replace(
        "[convolutional]", "adam=1\nB1=0.8\nB2=0.99\neps=0.0001\n[convolutional]", 1))
    model = M.Darknet(net)
    sched = T.schedule(net)
    opt = T.make_optimizer(model, sched)
    assert isinstance(opt, torch.optim.Adam)
    g = opt.param_groups[0]
    assert g["betas"] == (0.8, 0.99) and g["eps"] == pytest.approx(0.0001 / 8)
    assert all(g["weight_decay"] == sched.decay for g in opt.param_groups)   # darknet's adam


def test_adam_step_is_darknets_adam_update():
    """darknet's adam_update_gpu written out on the summed negative gradient d of the
    iteration: m = B1 m + (1-B1)(d - decay*Bu*w), v = B2 v + (1-B2)(d - decay*Bu*w)^2,
    w += rate * m/(1-B1^t) / (sqrt(v/(1-B2^t)) + eps), t = the iteration, decay on every
    parameter (TRAINING-FACTS 1.4)."""
    B, S = 8, 2
    mini = B // S
    text = SMALL.format(batch=B, subdivisions=S).replace(
        "[convolutional]", "adam=1\nB1=0.8\nB2=0.99\neps=0.0001\n[convolutional]", 1)
    net = shapes.network(text)
    model = M.Darknet(net)
    T.darknet_init_(model, seed=0)
    model.layers[0].bn = None          # no batch norm: each image's gradient stands alone
    model.layers[0].conv.bias = torch.nn.Parameter(torch.zeros(4))
    ref = M.Darknet(net)
    ref.layers[0].bn = None
    ref.layers[0].conv.bias = torch.nn.Parameter(torch.zeros(4))
    ref.load_state_dict(model.state_dict())
    sched = T.schedule(net)
    opt = T.make_optimizer(model, sched)
    gen = torch.Generator().manual_seed(2)
    m = {n: torch.zeros_like(p) for n, p in ref.named_parameters()}
    v = {n: torch.zeros_like(p) for n, p in ref.named_parameters()}
    for t, rate in enumerate([0.01, 0.005, 0.002], 1):
        x = torch.rand(B, 3, 8, 8, generator=gen)
        for g in opt.param_groups:
            g["lr"] = rate
        T.step(model, opt, [Pass(x[s * mini:(s + 1) * mini]) for s in range(S)], S,
               lambda out, b: (_image_loss(out).mean(), {}))
        ref.zero_grad()
        _image_loss(ref(x)).sum().backward()
        with torch.no_grad():
            for n, p in ref.named_parameters():
                d = -p.grad - sched.decay * B * p
                m[n] = sched.B1 * m[n] + (1 - sched.B1) * d
                v[n] = sched.B2 * v[n] + (1 - sched.B2) * d * d
                mh, vh = m[n] / (1 - sched.B1 ** t), v[n] / (1 - sched.B2 ** t)
                p += rate * mh / (vh.sqrt() + sched.eps)
    for (n, a), (_, b) in zip(model.state_dict().items(), ref.state_dict().items()):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), n


def test_darknet_init():
    net, model = _small()
    w = model.layers[0].conv.weight
    scale = math.sqrt(2 / (3 * 3 * 3))                        # size*size*c/groups
    assert w.abs().max() <= scale and w.abs().max() > 0.9 * scale
    assert w.std().item() == pytest.approx(scale / math.sqrt(3), rel=0.15)   # U(-s, s)
    assert torch.equal(model.layers[1].conv.bias, torch.zeros(3))
    bn = model.layers[0].bn
    assert torch.equal(bn.weight, torch.ones(4)) and torch.equal(bn.bias, torch.zeros(4))
    assert torch.equal(bn.running_mean, torch.zeros(4))
    fc = model.layers[2].fc.weight
    assert fc.abs().max() <= math.sqrt(2 / fc.shape[1])
    _, again = _small()
    assert torch.equal(again.layers[0].conv.weight, w)       # seeded


def test_torch_init_is_pytorchs_and_seeded():
    """The trainer's default: U(-b, b) with b = 1/sqrt(fan_in) (kaiming-uniform, a=sqrt(5)),
    sqrt(2)x narrower than darknet's; seeded, and the global generator left alone."""
    net, model = _small()
    T.torch_init_(model, seed=3)
    w = model.layers[0].conv.weight
    bound = 1 / math.sqrt(3 * 3 * 3)
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    bn = model.layers[0].bn
    assert torch.equal(bn.weight, torch.ones(4)) and torch.equal(bn.bias, torch.zeros(4))
    b = model.layers[1].conv.bias                             # a conv without BN: U(-b, b)
    assert b.abs().max() <= 1 / math.sqrt(model.layers[1].conv.weight[0].numel())
    _, again = _small()
    state = torch.get_rng_state()
    T.torch_init_(again, seed=3)
    assert torch.equal(again.layers[0].conv.weight, w)
    assert torch.equal(torch.get_rng_state(), state)


def test_batchnorm_trains_with_darknets_gpu_momentum():
    net, model = _small()
    model.train()
    T.set_bn_training(model)
    x = torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        y = model.layers[0].conv(x)
        model(x)
    bn = model.layers[0].bn
    # cuDNN exponentialAverageFactor 0.01: rolling = 0.99 * rolling + 0.01 * batch
    assert torch.allclose(bn.running_mean, 0.01 * y.mean((0, 2, 3)), atol=1e-7)
    assert torch.allclose(bn.running_var, 0.99 + 0.01 * y.var((0, 2, 3), unbiased=True),
                          atol=1e-6)
    assert bn.eps == 1e-5


def test_a_non_finite_step_is_skipped_and_leaves_the_model():
    net, model = _small()
    model.train()
    T.set_bn_training(model)
    opt = T.make_optimizer(model, T.schedule(net))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(4, 3, 8, 8)
    loss, _, stepped = T.step(model, opt, [Pass(x), Pass(x)], 2,
                              lambda out, b: (_image_loss(out).mean() * float("nan"), {}))
    assert not stepped and math.isnan(loss)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k             # BN statistics put back too


# ----- a generated data set and a small yolov3-tiny -------------------------------------------------


@pytest.fixture
def small_run(tmp_path):
    data = make_data(tmp_path, extra="savelast=2\nsaveweights=4\n")
    return data, make_cfg(tmp_path / "tiny.cfg"), tmp_path


def _header(path):
    from darkcfg.files import weights as W
    return W.read_header(path)[0]


def test_outputs_names_cadence_and_seen(small_run):
    data, cfg, tmp = small_run
    r = T.train(data, cfg, quiet=True, seed=1)
    b = tmp / "backup"
    names = sorted(os.listdir(b))
    assert names == ["results.csv", "results.png", "tiny_4.weights", "tiny_final.weights",
                     "tiny_last.state", "tiny_last.weights"]
    ipi = 4                                      # mini 2 * subdivisions 2
    assert _header(b / "tiny_final.weights").seen == 6 * ipi      # seen = iteration*mini*S
    assert _header(b / "tiny_4.weights").seen == 4 * ipi
    assert _header(b / "tiny_last.weights").seen == 6 * ipi
    assert (r.iteration, r.skipped) == (6, 0)
    import csv
    rows = list(csv.DictReader(open(b / "results.csv")))
    assert [int(x["iteration"]) for x in rows] == [1, 2, 3, 4, 5, 6]
    # the rate used for update k is get_current_rate at batch_num k: burn_in 3, power 4
    assert float(rows[0]["lr"]) == pytest.approx(0.005 * (1 / 3) ** 4, rel=1e-6)
    assert float(rows[3]["lr"]) == pytest.approx(0.005, rel=1e-6)
    assert all(math.isfinite(float(x["loss"])) and float(x["obj"]) > 0 for x in rows)
    assert not [n for n in names if n.endswith(".part")]          # atomic writes left nothing


def test_a_fresh_run_over_an_earlier_one_is_refused_unless_force(small_run):
    data, cfg, tmp = small_run
    T.train(data, cfg, quiet=True, max_batches=2)
    b = tmp / "backup"
    before = {n: (b / n).read_bytes() for n in os.listdir(b)}
    with pytest.raises(DarkcfgError, match=r"earlier training run of tiny \(tiny_final.weights, "
                                           r"tiny_last.state, tiny_last.weights\).*--resume.*"
                                           r"--force"):
        T.train(data, cfg, quiet=True, max_batches=2, seed=5)
    res = run_cli("train", data, cfg, "--max-batches", "2", "-q")
    assert res.exit_code == 1 and "--force" in res.output and "Traceback" not in res.output
    assert {n: (b / n).read_bytes() for n in os.listdir(b)} == before      # nothing touched
    res = run_cli("train", data, cfg, str(b / "tiny_final.weights"),
                  "--max-batches", "2", "-q", "--force")
    assert res.exit_code == 1 and "is a file this run writes" in res.output   # WEIGHTS kept
    assert {n: (b / n).read_bytes() for n in os.listdir(b)} == before      # nothing touched
    res = run_cli("train", data, cfg, "--max-batches", "2", "-q",
                  "--seed", "5", "--workers", "0", "--force")
    assert res.exit_code == 0, res.output
    assert (b / "tiny_final.weights").read_bytes() != before["tiny_final.weights"]


def test_classes_mismatch_names_both_and_the_fix(tmp_path):
    data = make_data(tmp_path, classes=3, ntrain=2, nvalid=1)
    cfg = make_cfg(tmp_path / "tiny.cfg", classes=2)
    with pytest.raises(DarkcfgError, match=r"classes=2 .* classes=3: pass --classes 3"):
        T.train(data, cfg, quiet=True)
    r = T.train(data, cfg, classes=3, quiet=True, max_batches=1)
    # the rewritten cfg the weights belong to is written beside them
    assert r.files["cfg"] == str(tmp_path / "backup" / "tiny_train.cfg")
    model = M.load(r.files["final"], r.files["cfg"])
    assert {l.opts["classes"] for l in model.net.heads} == {3}


def test_bad_data_set_is_refused_before_the_first_step(tmp_path):
    data = make_data(tmp_path, ntrain=3, nvalid=1)
    with open(tmp_path / "train" / "img001.txt", "a") as f:
        f.write("7 0.5 0.5 0.2 0.2\n")                      # class 7 of 2
    cfg = make_cfg(tmp_path / "tiny.cfg")
    with pytest.raises(DarkcfgError, match="img001.txt:"):
        T.train(data, cfg, quiet=True)
    assert not os.path.exists(tmp_path / "backup" / "tiny_last.weights")


def test_one_image_per_iteration_is_refused(tmp_path):
    data = make_data(tmp_path, ntrain=2, nvalid=1)
    cfg = make_cfg(tmp_path / "tiny.cfg", batch=1, subdivisions=1)
    with pytest.raises(CfgError, match="batch=1"):
        T.train(data, cfg, quiet=True)


@pytest.mark.parametrize("init", ["torch", "darknet"])
def test_partial_weights_load_their_layers_and_the_rest_is_initialised(tmp_path, init):
    """A darknet53.conv.74-like file: `darkcfg init` then `convert --cutoff 10`; training
    from it loads layers 0..9 and initialises the rest by ``init`` (max_batches=0: the
    loop does not run and _final.weights is the starting model, as in darknet)."""
    from darkcfg.files import weights as W
    data = make_data(tmp_path, ntrain=2, nvalid=1)
    cfg = make_cfg(tmp_path / "tiny.cfg")
    full, part = str(tmp_path / "full.weights"), str(tmp_path / "tiny.conv.10")
    assert run_cli("init", cfg, full, "--seed", "5").exit_code == 0
    res = run_cli("convert", full, part, "--cfg", cfg, "--cutoff", "10")
    assert res.exit_code == 0, res.output
    net = shapes.network(cfg)
    assert os.path.getsize(part) == 20 + 4 * sum(l.weights for l in net.layers[:10])
    assert net.layers[9].type == "maxpool"      # holds nothing: 9 layers' worth of floats
    assert T.layers_in_file(part, net) == 9
    with open(part, "rb") as f:
        cut = f.read()[:-8]                     # a file that ends inside a layer
    with open(tmp_path / "bad.weights", "wb") as f:
        f.write(cut)
    from darkcfg.errors import WeightsError
    with pytest.raises(WeightsError, match="match no prefix"):
        T.layers_in_file(str(tmp_path / "bad.weights"), net)
    r = T.train(data, cfg, part, max_batches=0, quiet=True, seed=0, init=init)
    _, got = W.read_arrays(r.files["final"], net)
    _, src = W.read_arrays(full, net)
    fresh = M.Darknet(net)
    (T.torch_init_ if init == "torch" else T.darknet_init_)(fresh, seed=0)
    init = W.arrays_of(fresh)
    for k, a in got.items():
        want = src[k] if int(k.split(".")[1]) < 10 else init[k]
        assert np.array_equal(a, want), k
    assert not np.array_equal(src["layers.0.conv.weight"], init["layers.0.conv.weight"])


def test_seen_places_the_schedule_unless_clear(small_run):
    data, cfg, tmp = small_run
    from darkcfg.files import weights as W
    net = shapes.network(cfg)
    model = M.Darknet(net)
    T.darknet_init_(model, seed=2)
    w = str(tmp / "start.weights")
    W.save_darknet(model, w, W.Header(seen=5 * 4))          # 5 iterations of mini*S = 4
    r = T.train(data, cfg, w, quiet=True, max_batches=7, out=str(tmp / "a"))
    assert [x["iteration"] for x in r.rows] == [6, 7]
    r = T.train(data, cfg, w, quiet=True, max_batches=2, clear=True, out=str(tmp / "b"))
    assert [x["iteration"] for x in r.rows] == [1, 2]
    r = T.train(data, cfg, w, quiet=True, max_batches=5, out=str(tmp / "c"))
    assert r.rows == [] and _header(r.files["final"]).seen == 20     # darknet: final at once


def test_non_finite_loss_is_skipped_then_stops(small_run, monkeypatch):
    data, cfg, tmp = small_run
    real = T.compute_loss

    def nan_at(bad):
        def loss(outputs, batch, model, assign):
            value, parts = real(outputs, batch, model, assign)
            return (value * float("nan"), parts) if batch.iteration + 1 in bad else \
                (value, parts)
        return loss

    monkeypatch.setattr(T, "compute_loss", nan_at({3}))
    r = T.train(data, cfg, quiet=True)
    assert r.skipped == 1 and [x["skipped"] for x in r.rows] == [0, 0, 1, 1, 1, 1]
    assert all(np.isfinite(a).all() for a in _arrays(r.files["final"], cfg).values())
    monkeypatch.setattr(T, "compute_loss", nan_at(set(range(3, 100))))
    with pytest.raises(DarkcfgError, match=r"iteration 7: .*5 iterations in a row.*"
                                           r"tiny_last.weights"):
        T.train(data, cfg, quiet=True, max_batches=20, out=str(tmp / "nan"))
    assert _header(tmp / "nan" / "tiny_last.weights").seen == 2 * 4     # the last good save


def _arrays(path, cfg):
    from darkcfg.files import weights as W
    return W.read_arrays(path, shapes.network(cfg))[1]


def test_ctrl_c_saves_last_and_state(small_run):
    data, cfg, tmp = small_run

    def interrupt(iteration, model):
        if iteration == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        T.train(data, cfg, quiet=True, callback=interrupt)
    assert _header(tmp / "backup" / "tiny_last.weights").seen == 3 * 4
    r = T.train(data, cfg, quiet=True, resume=True)
    assert [x["iteration"] for x in r.rows] == [1, 2, 3, 4, 5, 6]


def test_ctrl_c_inside_an_iteration_is_undone_and_resumes_bit_identical(small_run):
    """Ctrl-C in iteration 4's second subdivision - after its first forward/backward moved the
    batch-norm statistics and gradients: step puts the buffers back, _last is iteration 3's
    model, and --resume ends on the straight run's bytes."""
    data, cfg, tmp = small_run
    calls = []

    def interrupt_forward(module, inputs, output):
        calls.append(1)
        if len(calls) == 2:                  # iteration 4 (2 subdivisions), second forward
            raise KeyboardInterrupt

    def arm(iteration, model):
        if iteration == 3:
            model.register_forward_hook(interrupt_forward)

    with pytest.raises(KeyboardInterrupt):
        T.train(data, cfg, quiet=True, seed=3, callback=arm)
    assert len(calls) == 2 and _header(tmp / "backup" / "tiny_last.weights").seen == 3 * 4
    resumed = T.train(data, cfg, quiet=True, resume=True)
    straight = T.train(data, cfg, quiet=True, seed=3, out=str(tmp / "straight"))
    assert same_bytes(resumed.files["final"], straight.files["final"])
    assert [x["loss"] for x in resumed.rows] == [x["loss"] for x in straight.rows]


KILLED = """
import os, signal, sys, torch
torch.set_num_threads({threads})
from darkcfg.training import train as T
def die(iteration, model):
    if iteration == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)
T.train({data!r}, {cfg!r}, quiet=True, seed=3, callback=die)
"""


def test_resume_after_kill_9_is_bit_identical(small_run):
    """N=6 iterations straight vs a run SIGKILLed at iteration 5 (last state saved at 4)
    resumed with --resume: the same bytes."""
    import subprocess
    import sys
    data, cfg, tmp = small_run
    code = KILLED.format(threads=torch.get_num_threads(), kill_at=5, data=data, cfg=cfg)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == -9, p.stderr[-2000:]
    assert _header(tmp / "backup" / "tiny_last.weights").seen == 4 * 4
    assert not os.path.exists(tmp / "backup" / "tiny_final.weights")
    resumed = T.train(data, cfg, quiet=True, resume=True)
    straight = T.train(data, cfg, quiet=True, seed=3, out=str(tmp / "straight"))
    a = open(resumed.files["final"], "rb").read()
    b = open(straight.files["final"], "rb").read()
    assert a == b
    assert [x["loss"] for x in resumed.rows] == [x["loss"] for x in straight.rows]


def test_map_during_training_keeps_best(small_run):
    from darkcfg.evaluation import validate as V
    data, cfg, tmp = small_run
    r = T.train(data, cfg, quiet=True, map=True, map_every=2, max_batches=4)
    maps = [(x["iteration"], x["map"]) for x in r.rows if x["map"] is not None]
    assert [i for i, _ in maps] == [3, 4]          # next at max(0 + 2, burn_in 3), then the end
    assert r.best_map == max(m for _, m in maps)
    best = M.load(r.files["best"], cfg)
    again = V.evaluate_model(best, T._valid_paths(data), num_classes=2).map
    assert again == pytest.approx(r.best_map, abs=1e-6)
    import csv
    rows = list(csv.DictReader(open(tmp / "backup" / "results.csv")))
    assert [bool(x["map"]) for x in rows] == [False, False, True, True]


def test_a_map_run_resumes_without_map_and_back(small_run):
    """Stopped at 3 with --map, resumed to 5 without it (no evaluation, no traceback), then to
    6 with it again: the evaluations happen only in the --map parts (at 3 and at the end)."""
    data, cfg, tmp = small_run

    def stop(k, model):
        if k == 3:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        T.train(data, cfg, quiet=True, map=True, map_every=2, callback=stop)

    def stop5(k, model):
        if k == 5:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        T.train(data, cfg, quiet=True, resume=True, callback=stop5)
    r = T.train(data, cfg, quiet=True, resume=True, map=True, map_every=2)
    assert [x["iteration"] for x in r.rows if x["map"] is not None] == [3, 6]


# ----- 7. it learns ------------------------------------------------------------------------------


def test_it_learns(trained):
    """mAP@0.5 (darknet's detector map, darkcfg.validate) on 32 held-out images, with train's
    defaults (PyTorch's init, per_scale, the aspect-kept jitter crop).  Measured: trained
    0.8238 (0.8382 with darknet's stretched crop; earlier seeds 1, 2: 0.766, 0.826; 0.286 with
    darknet's init and best_of_all before issue #22), untrained 0.0002.  The bar is 0.84x the
    measured figure: losing a few points fails."""
    from darkcfg.evaluation import validate as V
    data, cfg, r = trained
    paths = T._valid_paths(data)
    model = M.load(r.files["final"], cfg)
    trained_map = V.evaluate_model(model, paths, num_classes=2).map
    untrained = M.Darknet(shapes.network(cfg))
    T.darknet_init_(untrained, seed=0)
    untrained_map = V.evaluate_model(untrained.eval(), paths, num_classes=2).map
    print(f"held-out mAP@0.5: trained {trained_map:.4f}, untrained {untrained_map:.4f}, "
          f"{r.seconds:.0f} s")
    assert untrained_map < 0.01
    assert trained_map > 0.69, (trained_map, untrained_map)
    assert r.rows[-1]["avg_loss"] < r.rows[0]["loss"] / 5


def test_map_in_bf16_follows_fp32(trained):
    """`darkcfg map --dtype bf16` on the learning test's model: the same images and matching
    rule as fp32, only the network computed in bfloat16 (batch norms folded first) - its mAP is
    within 0.01 of fp32's.  Measured: 0.0035 (fp32 0.8287, bf16 0.8322, 2 shared cores; <= 0.002
    reported elsewhere): bf16 moves scores by ~2e-3 (bench/forward.py --accuracy), re-ranking a
    few detections; one true positive more or less among the 32 images moves mAP by ~0.01."""
    import json
    from darkcfg.evaluation import validate as V
    data, cfg, r = trained
    fp32 = V.run_map(data, cfg, r.files["final"]).map
    bf16 = V.run_map(data, cfg, r.files["final"], dtype="bf16").map
    print(f"held-out mAP@0.5: fp32 {fp32:.4f}, bf16 {bf16:.4f}")
    assert abs(bf16 - fp32) < 0.01, (fp32, bf16)
    res = run_cli("map", data, cfg, r.files["final"], "--dtype", "bf16",
                  "--json", "-q")
    assert res.exit_code == 0, res.output
    assert abs(json.loads(res.output)["darknet"]["map"] - bf16) < 1e-9


def test_trained_weights_give_opencvs_outputs(trained):
    """OpenCV's darknet importer reads the trained .weights and computes darkcfg's boxes and
    objectness (1e-3, relative above 1) on a validation image.  Not tighter: on one AVX-512
    machine OpenCV's forward of the trained weights was 1.3e-4 off a float64 forward of the
    same model (darkcfg's float32: 2.4e-7), the same with Winograd off, SIMD off or an explicit
    CPU target; a wrong weights layout is off by whole units."""
    cv2 = pytest.importorskip("cv2")
    from darkcfg.dataset import data as D
    from darkcfg.objective import yolo as Y
    data, cfg, r = trained
    cvnet = cv2.dnn.readNetFromDarknet(cfg, r.files["final"])
    model = M.load(r.files["final"], cfg)
    img = cv2.resize(D.load_image(T._valid_paths(data)[0]), (96, 96))
    x = (img.astype(np.float32) / 255).transpose(2, 0, 1)[None].copy()
    layers = [l for l in model.net.layers if l.type == "yolo"]
    cvnet.setInput(x)
    theirs = cvnet.forward([f"yolo_{l.index}" for l in layers])
    with torch.no_grad():
        outs = model(torch.from_numpy(x))
    best = 0.0
    for raw, layer, cv in zip(outs, layers, theirs):
        d = Y.decode(raw.double(), Y.Head.from_layer(layer), (96, 96))
        ours = torch.cat([d["boxes"], d["obj"][..., None]], -1).reshape(-1, 5).numpy()
        assert (np.abs(ours - cv[:, :5]) <= 1e-3 * np.maximum(1, np.abs(cv[:, :5]))).all()
        best = max(best, float(cv[:, 4].max()))
    assert best > 0.5                  # a trained model: something is detected confidently


def test_keypoint_cfg_trains_with_the_keypoint_loss(tmp_path):
    data = make_data(tmp_path, ntrain=4, nvalid=1)
    cfg = C.rewrite(C.load(os.path.join(REPO, "cfgs", "yolo_kp.cfg")), classes=2, width=64,
                    height=64, width_scale=0.125)
    for k, v in dict(batch=2, subdivisions=1, learning_rate=0.001, max_batches=2).items():
        cfg.net.set(k, v)
    for sec in cfg.layers:
        if sec.type == "keypoint":
            sec.set("tower", 1)
            sec.set("tower_filters", 8)
    C.save(cfg, str(tmp_path / "kp.cfg"))
    r = T.train(data, str(tmp_path / "kp.cfg"), quiet=True)
    assert r.iteration == 2 and r.skipped == 0
    assert all(math.isfinite(x[k]) and x[k] > 0 for x in r.rows for k in ("reg", "cls", "ctr"))


def test_freeze_keeps_the_first_layers_and_a_pt_start_loads(small_run):
    """--freeze 5 from a darkcfg .pt: layers 0..4 (weights and BN statistics) come out as they
    went in; the others trained."""
    from darkcfg.files import weights as W
    data, cfg, tmp = small_run
    net = shapes.network(cfg)
    start = M.Darknet(net)
    T.darknet_init_(start, seed=7)
    W.save_pt(start, str(tmp / "start.pt"))
    r = T.train(data, cfg, str(tmp / "start.pt"), freeze=5, max_batches=2, quiet=True)
    got = _arrays(r.files["final"], cfg)
    want = W.arrays_of(start)
    for k, a in got.items():
        if int(k.split(".")[1]) < 5:
            assert np.array_equal(a, want[k]), k
        elif k.endswith("conv.weight"):
            assert not np.array_equal(a, want[k]), k


def test_resume_without_a_state_says_what_to_do(small_run):
    data, cfg, tmp = small_run
    with pytest.raises(DarkcfgError, match="no training state.*pass _last.weights"):
        T.train(data, cfg, resume=True, quiet=True)
    with pytest.raises(DarkcfgError, match="give no WEIGHTS"):
        T.train(data, cfg, "x.weights", resume=True, quiet=True)


def test_a_damaged_or_foreign_state_is_one_error_naming_it(small_run):
    data, cfg, tmp = small_run
    T.train(data, cfg, quiet=True, max_batches=2)
    path = tmp / "backup" / "tiny_last.state"
    good = torch.load(path, weights_only=True)
    for field, value in (("iteration", "x"), ("rows", None)):
        torch.save({**good, field: value}, path)
        with pytest.raises(DarkcfgError, match=r"tiny_last\.state: a damaged training state"):
            T.train(data, cfg, quiet=True, resume=True)
    torch.save(good, path)
    (tmp / "other").mkdir()
    other = make_cfg(tmp / "other" / "tiny.cfg", width_scale=0.5)    # wider, the same name
    with pytest.raises(DarkcfgError, match=r"tiny_last\.state: the training state does not fit "
                                           r".*size mismatch"):
        T.train(data, other, quiet=True, resume=True, out=str(tmp / "backup"))


def test_loader_workers_do_not_change_the_run(small_run):
    data, cfg, tmp = small_run
    a = T.train(data, cfg, quiet=True, max_batches=2, out=str(tmp / "w0"))
    b = T.train(data, cfg, quiet=True, max_batches=2, workers=2, out=str(tmp / "w2"))
    assert [x["loss"] for x in a.rows] == [x["loss"] for x in b.rows]
    assert open(a.files["final"], "rb").read() == open(b.files["final"], "rb").read()


def test_cli_train_runs_and_maps_errors(small_run):
    data, cfg, tmp = small_run
    res = run_cli("train", data, cfg, "--max-batches", "2", "--quiet",
                  "--workers", "0")
    assert res.exit_code == 0, res.output
    assert "trained 2 iterations" in res.output
    assert os.path.exists(tmp / "backup" / "tiny_final.weights")
    res = run_cli("train", data, cfg, "--classes", "3", "--quiet")
    assert res.exit_code == 1 and "classes=3" in res.output
    if not torch.cuda.is_available():
        res = run_cli("train", data, cfg, "--device", "cuda", "-q",
                      "--out", str(tmp / "cuda"))
        assert res.exit_code == 1 and "not available" in res.output
    # no terminal: no bar, a darknet-style line every savelast (2) iterations instead
    res = run_cli("train", data, cfg, "--max-batches", "2",
                  "--workers", "0", "--out", str(tmp / "log"))
    assert res.exit_code == 0, res.output
    assert " 2/2: " in res.output and "avg loss" in res.output


def test_multi_scale_and_a_cfg_without_yolo_heads(tmp_path):
    data = make_data(tmp_path, ntrain=4, nvalid=1)
    cfg = C.load(make_cfg(tmp_path / "tiny.cfg", max_batches=2))
    for sec in cfg.layers:
        if sec.type == "yolo":
            sec.set("random", 1)               # darknet's multi-scale: starts at 1.4x
    C.save(cfg, str(tmp_path / "ms.cfg"))
    sizes = []
    real = T.compute_loss
    T_loss = lambda o, b, m, a: (sizes.append(tuple(b.size)), real(o, b, m, a))[1]  # noqa: E731
    import unittest.mock
    with unittest.mock.patch.object(T, "compute_loss", T_loss):
        r = T.train(data, str(tmp_path / "ms.cfg"), quiet=True)
    assert r.skipped == 0 and sizes[0] == (96, 96)     # roundl(1.4*64/32)*32 = 3*32 (centred)
    with pytest.raises(CfgError, match=r"needs \[yolo\] or \[keypoint\] heads.*has none"):
        T.train(data, os.path.join(REPO, "cfgs", "darknet53.cfg"), quiet=True)


def test_a_layers_learning_rate_scales_its_groups():
    text = SMALL.format(batch=8, subdivisions=2).replace(
        "filters=3\n", "filters=3\nlearning_rate=0.25\n", 1)
    net = shapes.network(text)
    model = M.Darknet(net)
    groups = T.param_groups(model, decay=0.01)
    scaled = {id(p) for g in groups if g["lr_scale"] == 0.25 for p in g["params"]}
    assert scaled == {id(p) for p in model.layers[1].parameters()}
    decayed = {id(p) for g in groups if g["weight_decay"] for p in g["params"]}
    assert decayed == {id(model.layers[0].conv.weight), id(model.layers[1].conv.weight),
                       id(model.layers[2].fc.weight)}


def test_bf16_autocast_losses_follow_fp32(tmp_path):
    """--amp bf16 (+ channels_last): the first iterations' losses within 5 % of fp32's (seen:
    0.015 %, 0.65 %, 2.9 % at iterations 1-3 of this run; bf16 keeps 8 bits of mantissa, and
    each update carries the last one's difference into the next loss)."""
    from darkcfg.dataset import demo
    paths = demo.shapes(str(tmp_path / "img"), 8, seed=1)
    (tmp_path / "t.txt").write_text("\n".join(paths) + "\n")
    (tmp_path / "o.data").write_text(f"classes=2\ntrain={tmp_path}/t.txt\n")
    cfg = demo.small_cfg(os.path.join(os.path.dirname(__file__), "..", "cfgs",
                                      "yolov3-tiny.cfg"), str(tmp_path / "c.cfg"), size=64,
                         width_scale=0.25, batch=8, subdivisions=1, burn_in=0, max_batches=3)
    losses = {}
    for amp in (None, "bf16"):
        r = T.train(str(tmp_path / "o.data"), cfg, out=str(tmp_path / str(amp)), quiet=True,
                    amp=amp, channels_last=amp is not None, check_data=False)
        losses[amp] = np.array([row["loss"] for row in r.rows])
    assert np.all(np.abs(losses["bf16"] / losses[None] - 1) < 0.05), losses
    assert not np.array_equal(losses["bf16"], losses[None])     # bf16 really ran

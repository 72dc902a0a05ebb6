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

from darkcfg import cfg as C
from darkcfg import model as M
from darkcfg import shapes
from darkcfg import train as T
from darkcfg.errors import CfgError, DarkcfgError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "cfgs", "yolov3-tiny.cfg")


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

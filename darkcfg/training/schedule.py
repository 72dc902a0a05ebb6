"""The schedule: darknet's get_current_rate (src/network.c) as :func:`learning_rate`, a pure
function of the cfg and the iteration; :func:`schedule` reads the [net] options it uses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..config import cfg as cfgmod
from ..config import shapes
from ..errors import CfgError


F32 = np.float32
POLICIES = ("constant", "step", "steps", "exp", "poly", "sigmoid", "random", "sgdr")


# ----- the schedule: darknet's get_current_rate ------------------------------------------------


@dataclass
class Schedule:
    """The [net] training options with darknet's defaults (parse_net_options)."""
    batch: int = 1
    subdivisions: int = 1
    max_batches: int = 0
    learning_rate: float = 0.001
    momentum: float = 0.9
    decay: float = 0.0001
    policy: str = "constant"
    burn_in: int = 0
    power: float = 4.0
    steps: list = field(default_factory=list)
    scales: list = field(default_factory=list)
    step: int = 1
    scale: float = 1.0
    gamma: float = 1.0
    learning_rate_min: float = 0.00001
    sgdr_cycle: int = 0
    sgdr_mult: int = 2
    adam: bool = False
    B1: float = 0.9
    B2: float = 0.999
    eps: float = 0.000001
    ema_alpha: float = 0.0

    @property
    def mini_batch(self) -> int:
        return max(1, self.batch // self.subdivisions)

    @property
    def images_per_iteration(self) -> int:
        """darknet's update batch ``mini*S`` (= batch when S divides it)."""
        return self.mini_batch * self.subdivisions


def _net_section(cfg_or_net):
    if isinstance(cfg_or_net, Schedule):
        return None
    net = getattr(cfg_or_net, "net", cfg_or_net)          # Darknet model -> Network
    if isinstance(net, shapes.Network):
        return net.cfg.net
    if isinstance(net, cfgmod.Cfg):
        return net.net
    if isinstance(cfg_or_net, cfgmod.Cfg):
        return cfg_or_net.net
    if isinstance(cfg_or_net, str):
        return (cfgmod.parse(cfg_or_net) if "\n" in cfg_or_net else cfgmod.load(cfg_or_net)).net
    if isinstance(cfg_or_net, cfgmod.Section):
        return cfg_or_net
    raise CfgError(f"expected a cfg path, text, Cfg, Network or model, got "
                   f"{type(cfg_or_net).__name__}")


def schedule(cfg_or_net) -> Schedule:
    """The [net] section's training options, read as darknet's parse_net_options reads them."""
    if isinstance(cfg_or_net, Schedule):
        return cfg_or_net
    s = _net_section(cfg_or_net)
    out = Schedule(
        batch=s.get_int("batch", 1), subdivisions=max(1, s.get_int("subdivisions", 1)),
        max_batches=s.get_int("max_batches", 0), learning_rate=s.get_float("learning_rate", .001),
        momentum=s.get_float("momentum", .9), decay=s.get_float("decay", .0001),
        burn_in=s.get_int("burn_in", 0), power=s.get_float("power", 4),
        learning_rate_min=s.get_float("learning_rate_min", .00001),
        sgdr_mult=s.get_int("sgdr_mult", 2), adam=bool(s.get_int("adam", 0)),
        ema_alpha=s.get_float("ema_alpha", 0.0))
    out.sgdr_cycle = s.get_int("sgdr_cycle", out.max_batches)
    if not 0 <= out.ema_alpha < 1:
        raise s.error(f"ema_alpha={out.ema_alpha:g}: the weight average's decay must be in "
                      f"[0, 1) (0 turns it off; darknet's cfgs use 0.9998)", "ema_alpha")
    name = s.get_str("policy", "constant")
    if name not in POLICIES:     # darknet: "Couldn't find policy %s, going with constant"
        name = "constant"
    out.policy = name
    if name == "step":
        out.step, out.scale = s.get_int("step", 1), s.get_float("scale", 1)
    elif name in ("steps", "sgdr"):
        steps, scales = s.get_ints("steps", None), s.get_floats("scales", None)
        if name == "steps" and (steps is None or scales is None):
            raise s.error("STEPS policy must have steps and scales (darknet refuses it too)",
                          "steps" if steps is None else "scales")
        steps = steps or []
        scales = scales if scales is not None else [1.0] * len(steps)
        if len(scales) < len(steps):
            raise s.error(f"{len(steps)} steps but {len(scales)} scales", "scales")
        out.steps, out.scales = list(steps), list(scales[:len(steps)])
    elif name == "exp":
        out.gamma = s.get_float("gamma", 1)
    elif name == "sigmoid":
        out.gamma, out.step = s.get_float("gamma", 1), s.get_int("step", 1)
    if out.adam:
        out.B1, out.B2, out.eps = s.get_float("B1", .9), s.get_float("B2", .999), \
            s.get_float("eps", .000001)
    return out


def learning_rate(cfg_or_net, iteration: int, seed: int = 0) -> float:
    """darknet's ``get_current_rate`` at ``batch_num = iteration`` (= seen / (mini*S)).

    float32 where darknet computes in float (the base rate, the steps product, the burn-in and
    poly ratios), double where C promotes to double (pow, exp, cos), the result rounded to float
    as darknet returns it.  ``random`` draws U(0,1) from a generator seeded by (seed, iteration)
    (darknet's rand() is not reproducible)."""
    s = schedule(cfg_or_net)
    k = int(iteration)
    lr = F32(s.learning_rate)
    if k < s.burn_in:
        return float(F32(float(lr) * math.pow(float(F32(k) / F32(s.burn_in)), float(F32(s.power)))))
    p = s.policy
    if p == "constant":
        r = float(lr)
    elif p == "step":
        r = float(lr) * math.pow(float(F32(s.scale)), k // s.step)
    elif p == "steps":
        r = lr
        for step, scale in zip(s.steps, s.scales):
            if step > k:
                break
            r = F32(r * F32(scale))
        r = float(r)
    elif p == "exp":
        r = float(lr) * math.pow(float(F32(s.gamma)), k)
    elif p == "poly":
        r = float(lr) * math.pow(float(F32(1) - F32(k) / F32(s.max_batches)), float(F32(s.power)))
    elif p == "random":
        u = np.random.default_rng([seed, k]).random()
        r = float(lr) * math.pow(u, float(F32(s.power)))
    elif p == "sigmoid":
        r = float(lr) * (1.0 / (1.0 + math.exp(float(F32(s.gamma) * F32(k - s.step)))))
    else:   # sgdr
        start, cycle = 0, s.sgdr_cycle
        while start + cycle < k:
            start += cycle
            cycle *= s.sgdr_mult
        lo = float(F32(s.learning_rate_min))
        r = lo + 0.5 * (float(lr) - lo) * (1.0 + math.cos(float(F32(k - start)) * 3.14159265
                                                           / cycle))
    return float(F32(r))

"""The cfg's training options that darknet accepts without a word but that make a run go wrong
(``burn_in=1000`` with ``max_batches=200`` trains at a rate near 0 throughout): one warning
each, ``file:line: [section] (layer N): option 'x': what is wrong``, printed by ``train`` before
its first step and by ``darkcfg data check --cfg``.  Torch-free.
"""
from __future__ import annotations

from ..config import shapes
from .schedule import schedule

STRIDE = 32          # darknet's random=1 resizes to multiples of its resize_step, 32


def lint(cfg) -> list:
    """The warnings for ``cfg`` (a path, Cfg or Network), about its own options (train
    --max-batches stops a run early on purpose: it is not checked against)."""
    net = cfg if isinstance(cfg, shapes.Network) else shapes.network(cfg)
    sched = schedule(net)
    top = net.cfg.net
    out = _schedule_lint(top, sched, sched.max_batches)
    if sched.batch % sched.subdivisions:
        out.append(top.error(
            f"batch={sched.batch} is not a multiple of subdivisions={sched.subdivisions}: "
            f"each iteration trains {sched.images_per_iteration} images "
            f"({sched.mini_batch} x {sched.subdivisions}), not {sched.batch}", "batch"))
    out += _head_lint(net)
    return [e.format() for e in out]


def _schedule_lint(top, sched, end: int) -> list:
    out = []
    if end <= 0:                  # no training schedule at all (a classifier's cfg, say)
        return out
    if sched.burn_in and sched.burn_in >= end:
        out.append(top.error(
            f"burn_in={sched.burn_in} >= max_batches={end}: the whole run is the burn-in, the "
            f"rate stays below learning_rate*(max_batches/burn_in)^power = "
            f"{sched.learning_rate * (end / sched.burn_in) ** sched.power:.3g}", "burn_in"))
    steps = top.get_ints("steps", None) if sched.policy in ("steps", "sgdr") else None
    if steps:
        late = [s for s in steps if s > end]
        if late:
            never = "that scale never applies" if len(late) == 1 else "those scales never apply"
            out.append(top.error(f"{', '.join(map(str, late))} after max_batches={end}: "
                                 f"{never}", "steps"))
        back = [(a, b) for a, b in zip(steps, steps[1:]) if b <= a]
        if back:
            out.append(top.error(f"not increasing ({back[0][1]} after {back[0][0]}): darknet "
                                 f"stops at the first step above the iteration", "steps"))
    return out


def _head_lint(net) -> list:
    out = []
    for layer in net.layers:
        sec = layer.section
        if layer.type not in ("yolo", "region"):
            continue
        num, anchors = sec.get_int("num", 1), sec.get_floats("anchors", [])
        if sec.has("anchors") and len(anchors) != 2 * num:
            out.append(sec.error(f"{len(anchors)} values ({len(anchors) / 2:g} anchors) for "
                                 f"num={num}: each of the num anchors is a w,h pair",
                                 "anchors"))
        if sec.get_int("random", 0) == 1:
            for key in ("width", "height"):
                size = net.cfg.net.get_int(key, 0)
                if size % STRIDE:
                    out.append(net.cfg.net.error(
                        f"{key}={size} is not a multiple of {STRIDE} but layer {layer.index} "
                        f"has random=1: darknet resizes to multiples of {STRIDE}, so the "
                        f"network trains at sizes other than its own", key))
            break                 # one [yolo] with random=1 is enough to say it
    return out

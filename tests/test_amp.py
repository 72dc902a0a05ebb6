"""--amp fp16: the grad scaler's overflow step.  A loss that is finite but whose scaled gradient
overflows (the scaler multiplies the loss by its scale, 2^16 at first) must skip the update,
count it as skipped, halve the scale, and let training go on - unlike a non-finite loss, it
does not count towards train's stop after nan_limit bad iterations in a row."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from darkcfg.config import shapes
from darkcfg.files import weights as W
from darkcfg.training import train as T

from _helpers import make_cfg, make_data

try:                                                    # fp16 autocast on this build's CPU
    with torch.autocast("cpu", dtype=torch.float16):
        torch.nn.functional.conv2d(torch.rand(1, 1, 3, 3), torch.rand(1, 1, 1, 1))
    FP16 = True
except RuntimeError:
    FP16 = False


@pytest.mark.skipif(not FP16, reason="no float16 autocast on this CPU build")
def test_fp16_overflow_step_is_skipped_counted_and_training_goes_on(tmp_path, monkeypatch):
    """Iterations 6 and 7 are made to overflow (the scaler's first steps find its scale by
    overflowing too: measured here, iterations 1-4 at scales 2^16..2^13)."""
    data = make_data(tmp_path)
    cfg = make_cfg(tmp_path / "tiny.cfg", max_batches=8)
    real_loss, real_step, steps = T.compute_loss, T.step, []
    overflow = {6, 7}

    def loss(outputs, batch, model, assign):
        value, parts = real_loss(outputs, batch, model, assign)
        # finite in float32 (~1e35), but its scaled gradient is not
        return (value * 1e33 if batch.iteration + 1 in overflow else value), parts

    def step(model, opt, *a, scaler=None, **k):
        scale = scaler.get_scale()
        before = [p.detach().clone() for p in model.parameters()]
        out = real_step(model, opt, *a, scaler=scaler, **k)
        moved = not all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
        steps.append((out[2], scale, scaler.get_scale(), moved))
        return out

    monkeypatch.setattr(T, "compute_loss", loss)
    monkeypatch.setattr(T, "step", step)
    r = T.train(data, cfg, quiet=True, amp="fp16", nan_limit=1, out=str(tmp_path / "o"))
    assert r.iteration == 8 and len(steps) == 8
    for k in overflow:
        ok, scale, after, moved = steps[k - 1]
        assert ok is None and after == scale / 2 and not moved, (k, steps[k - 1])
    skipped = [ok is None for ok, *_ in steps]
    assert r.skipped == sum(skipped)
    assert [x["skipped"] for x in r.rows] == list(np.cumsum(skipped))
    assert all(np.isfinite(x["loss"]) for x in r.rows)
    assert steps[-1][0] is True and steps[-1][3]                 # it trains on after them
    assert all(moved == (ok is True) for ok, _, _, moved in steps)
    arrays = W.read_arrays(r.files["final"], shapes.network(cfg))[1]
    assert all(np.isfinite(a).all() for a in arrays.values())

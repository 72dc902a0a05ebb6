"""detect --batch (darkcfg.infer.batching): a batch gives each image the bits of its own
forward.  A layer made to depend on the batch by hand (it adds 1e-6 when it sees more than one
image: what a kernel chosen by the batch size does to the last bits) is found by the probe and
run image by image, whatever this machine's own kernels do to the other layers."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from _helpers import make_cfg


class _BatchSkewed(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, *xs):
        y = self.inner(*xs)
        return y + 1e-6 if y.shape[0] > 1 else y


def _model(tmp_path, skewed: int | None = None):
    from darkcfg.nn import model as M
    torch.manual_seed(0)
    model = M.build_model(make_cfg(tmp_path / "t.cfg", size=64)).eval()
    if skewed is not None:
        model.layers[skewed] = _BatchSkewed(model.layers[skewed])
    return model


def _alone(model, x) -> list:
    with torch.no_grad():
        return [model(x[j:j + 1].clone()) for j in range(x.shape[0])]


def test_a_layer_that_depends_on_the_batch_is_found_and_run_image_by_image(tmp_path):
    from darkcfg.infer import batching as B
    model = _model(tmp_path, skewed=4)
    uneven = B.uneven_layers(model, 3)
    assert 4 in uneven and uneven <= set(range(len(model.layers)))
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    alone = _alone(model, x)
    with torch.no_grad():
        split = B.batched_forward(model, x, uneven)
        whole = B.batched_forward(model, x, uneven - {4})
    for j in range(3):
        assert all(torch.equal(s[j:j + 1], a) for s, a in zip(split, alone[j]))
        assert not all(torch.equal(w[j:j + 1], a) for w, a in zip(whole, alone[j]))


def test_the_engine_gives_each_input_its_own_outputs_in_order(tmp_path):
    """7 distinct inputs, batch 3: two batches of 3 and the last one alone; every input's head
    outputs equal its own forward's, bit for bit."""
    from darkcfg.infer import batching as B
    model = _model(tmp_path, skewed=2)
    rng = np.random.default_rng(0)
    inputs = [rng.random((3, 64, 64), dtype=np.float32) for _ in range(7)]
    notes = []
    got = B.Engine(model, 3, note=notes.append).outputs(inputs)
    want = _alone(model, torch.from_numpy(np.stack(inputs)))
    assert len(got) == 7
    for g, w in zip(got, want):
        assert [o.shape for o in g] == [o.shape for o in w]
        assert all(torch.equal(a, b) for a, b in zip(g, w))
    assert len(notes) == 1 and "--batch 3: " in notes[0] and "image by image" in notes[0]

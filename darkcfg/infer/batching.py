"""``detect --batch N``: N prepared frames through the network in one forward, each frame's
outputs bit for bit those of its own forward (``--batch 1``), so that batching never changes
a detection, its order or a printed digit.

A backend may pick its kernel by the batch: PyTorch runs a small convolution of one image
with its own kernel and the same convolution of a batch with oneDNN's, and the two round
their sums differently (1e-7 apart: enough to move a JSON coordinate's last digit).  So before
the first batch :func:`uneven_layers` runs every layer once on a batch of noise and on each of
its images alone, and the layers whose outputs differ in any bit are run image by image inside
the batch (:func:`batched_forward`); the rest run batched.  Kernels are chosen by shapes, not
values, so one batch of noise tells.  A batch of fewer than N (the end of a video, before a bad
item) is run image by image, as ``--batch 1``.
"""
from __future__ import annotations

import numpy as np
import torch


def one_by_one(layer, inputs: list) -> torch.Tensor:
    """``layer`` run on each image of the batch alone (a fresh copy, as ``--batch 1`` gives
    it), the outputs stacked again."""
    return torch.cat([layer(*[x[j:j + 1].clone() for x in inputs])
                      for j in range(inputs[0].shape[0])])


def uneven_layers(model, n: int, seed: int = 0) -> frozenset:
    """The indices of ``model``'s layers whose output for a batch of ``n`` differs in any bit
    from the outputs of its images one by one.  Each layer is tried on fresh normal noise of
    its inputs' shapes: a forward's own activations can hide a difference (a trained head's
    1x1 conv differed in 2 of 252 values on them, in 3 of 4 on noise)."""
    net = model.net
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, net.channels, net.height, net.width, generator=g).to(**model.placement())
    uneven = set()

    def call(i, layer, inputs):
        noise = [torch.randn(t.shape, generator=g).to(t) for t in inputs]
        if not torch.equal(layer(*noise), one_by_one(layer, noise)):
            uneven.add(i)
        return layer(*inputs)
    with torch.no_grad():
        model.forward_calling(x, call)
    return frozenset(uneven)


def batched_forward(model, x: torch.Tensor, uneven: frozenset) -> list:
    """``model(x)`` with the ``uneven`` layers run image by image."""
    if not uneven:
        return model(x)
    return model.forward_calling(
        x, lambda i, layer, inputs: one_by_one(layer, inputs) if i in uneven else layer(*inputs))


class Engine:
    """The network over prepared inputs (CHW float32 arrays), ``batch`` at a time: a full batch
    in one forward (its uneven layers found at the first one), fewer one by one.

    ``compiled=True`` runs the model through :func:`.speed.compile_frozen` (compiled on the
    first forward of each batch size, 10-90 s on 2 cores): a graph of its own, so a batch is
    one forward and its outputs are within float rounding (~1e-6), not to the bit, of
    ``--batch 1``'s."""

    def __init__(self, model, batch: int = 1, note=None, compiled: bool = False):
        self.model, self.batch, self.note = model, batch, note
        self.uneven = None
        self.compiled = None
        if compiled:
            from .speed import compile_frozen
            self.compiled = compile_frozen(model)

    def outputs(self, inputs: list) -> list:
        """Per input, the head outputs of its image (each with a batch dimension of 1)."""
        out = []
        with torch.no_grad():
            for s in range(0, len(inputs), self.batch):
                chunk = inputs[s:s + self.batch]
                if self.batch == 1 or len(chunk) < self.batch:
                    out += [self._forward(x[None]) for x in chunk]
                    continue
                heads = self._forward(np.stack(chunk), batched=True)
                out += [[h[j:j + 1] for h in heads] for j in range(len(chunk))]
        return out

    def _forward(self, x: np.ndarray, batched: bool = False) -> list:
        t = torch.from_numpy(x).to(**self.model.placement())
        if self.compiled is not None:
            return self.compiled(t.contiguous(memory_format=_layout(self.model)))
        if not batched or not hasattr(self.model, "forward_calling"):
            return self.model(t)       # an int8 model runs whole: no layer-by-layer promise
        if self.uneven is None:
            self.uneven = uneven_layers(self.model, self.batch)
            if self.uneven and self.note:
                self.note(f"--batch {self.batch}: {len(self.uneven)} of "
                          f"{len(self.model.layers)} layers run image by image inside the "
                          f"batch (this machine's kernels for a batch round them differently), "
                          f"so each frame's detections stay those of --batch 1")
        return batched_forward(self.model, t, self.uneven)


def _layout(model) -> torch.memory_format:
    """The memory format of ``model``'s first conv weight: the compiled graph is specialised
    on its input's strides, so inputs match the weights' layout."""
    w = next((p for p in model.parameters() if p.dim() == 4), None)
    nhwc = w is not None and not w.is_contiguous() and \
        w.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if nhwc else torch.contiguous_format

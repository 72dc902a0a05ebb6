"""darknet's weight EMA, ``[net] ema_alpha`` (train_network_waitkey and ema_update/ema_apply in
src/network.c), as :class:`WeightEMA`.

darknet, after each update at iteration k (counted after the update):

* from ``start = max_batches / 2`` on: the first time, the average is a copy of the weights;
* before ``apply = max_batches - 1000``: ``ema = alpha * ema + (1 - alpha) * w``;
* at ``apply``: the average is copied into the live weights, and the last 1000 iterations
  train on from there ("BN rolling mean/var recalculation is required");
* ``<cfg>_ema.weights`` is written beside every ``_last`` once the average exists.

It averages the [convolutional] layers' weights, biases and batch-norm scales.  Two
differences, both written down in docs/decisions.md:

* **Short runs.**  With ``max_batches <= 2000`` darknet's ``apply`` point lies at or before
  ``start``: the average is initialised at ``max_batches/2`` and never updated again, so
  ``_ema.weights`` is the half-way model.  darkcfg follows the intent instead: the average is
  updated to the last iteration and applied at ``max_batches``, so ``_final.weights`` (and the
  run's last mAP) are the averaged model.
* **Batch-norm statistics.**  darkcfg also averages the rolling mean and variance, so that an
  ``_ema.weights`` file (and a short run's applied average) carries statistics that belong to
  its weights; darknet writes the live statistics there and relies on the 1000 iterations after
  ``apply`` to re-estimate them.  After an ``apply`` the live statistics go on updating as usual.
"""
from __future__ import annotations

import contextlib


class WeightEMA:
    """The moving average of a model's [convolutional] layers.  ``after_update(k)`` is called
    after iteration k's update (k counts from 1); :meth:`state_dict` and
    :meth:`load_state_dict` carry it through ``--resume``."""

    def __init__(self, model, alpha: float, max_batches: int):
        self.model, self.alpha = model, float(alpha)
        self.start = max_batches // 2
        self.short = max_batches - 1000 <= self.start
        self.apply_at = max_batches if self.short else max_batches - 1000
        self.names = _averaged(model)
        self.shadow: dict | None = None

    @property
    def initialized(self) -> bool:
        return self.shadow is not None

    def after_update(self, k: int) -> str | None:
        """Update (or start, or apply) the average after iteration ``k``; returns what it did:
        "init", "apply" or None."""
        if k < self.start or k > self.apply_at:
            return None
        did = None
        if self.shadow is None:
            import torch
            live = self.model.state_dict()
            self.shadow = {n: live[n].detach().clone() for n in self.names}
            did = "init"
        if k < self.apply_at or self.short:
            self._update()
        if k == self.apply_at:
            self.model.load_state_dict(self.shadow, strict=False)
            return "apply"
        return did

    def _update(self) -> None:
        import torch
        live = self.model.state_dict()
        a = self.alpha
        with torch.no_grad():
            for n, t in self.shadow.items():
                t.mul_(a).add_(live[n].detach(), alpha=1 - a)

    @contextlib.contextmanager
    def swapped_in(self):
        """The model holds the average inside the block (to write ``_ema.weights``), its own
        tensors again after it."""
        live = self.model.state_dict()
        saved = {n: live[n].detach().clone() for n in self.names}
        self.model.load_state_dict(self.shadow, strict=False)
        try:
            yield self.model
        finally:
            self.model.load_state_dict(saved, strict=False)

    def state_dict(self) -> dict | None:
        return None if self.shadow is None else {n: t.clone() for n, t in self.shadow.items()}

    def load_state_dict(self, state: dict | None) -> None:
        if state is None:
            self.shadow = None
            return
        missing = sorted(set(self.names) - set(state))
        if missing:
            raise ValueError(f"the EMA state lacks {missing[0]}")
        live = self.model.state_dict()
        self.shadow = {n: state[n].to(live[n].device, live[n].dtype).clone()
                       for n in self.names}


def _averaged(model) -> list:
    """State-dict names of the floating tensors of every [convolutional] layer: weights,
    biases, batch-norm scales, shifts and statistics."""
    names = []
    prefix = _layers_prefix(model)
    for i, layer in enumerate(model.net.layers):
        if layer.type != "convolutional":
            continue
        for n, t in model.layers[i].state_dict().items():
            if t.is_floating_point():
                names.append(f"{prefix}{i}.{n}")
    return names


def _layers_prefix(model) -> str:
    for name, mod in model.named_modules():
        if mod is model.layers:
            return f"{name}." if name else ""
    raise ValueError("the model has no layers list")

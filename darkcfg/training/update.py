"""One update: darknet's train_network over the S subdivisions of an iteration, gradients
accumulated (all-reduced on the last one under DDP), then the optimizer's step - or, when the
loss or a gradient is not finite, no step and the batch-norm statistics put back.
"""
from __future__ import annotations

import contextlib
import math

from .distributed import _reduce_mean


def _grads_finite(model) -> bool:
    import torch
    sums = [p.grad.sum() for p in model.parameters() if p.grad is not None]
    return bool(torch.isfinite(torch.stack(sums).sum())) if sums else True


def _bn_buffers(model) -> list:
    return [b.detach().clone() for b in model.buffers()]


def _restore_buffers(model, saved) -> None:
    import torch
    with torch.no_grad():
        for b, s in zip(model.buffers(), saved):
            b.copy_(s)


def _autocast(device, amp):
    import contextlib
    import torch
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype={"bf16": torch.bfloat16,
                                                            "fp16": torch.float16}[amp])


def step(model, opt, passes, subdivisions: int, loss_fn, device="cpu", *, amp=None,
         scaler=None, channels_last=False) -> tuple:
    """One iteration: forward/backward each of the ``subdivisions`` batches of ``passes``,
    accumulating gradients, then one optimizer step - unless the loss or a gradient is not
    finite, when the step is skipped and the batch-norm statistics are put back.
    ``loss_fn(outputs, batch) -> (loss averaged over the batch, parts)``.
    Returns (loss, parts, stepped), loss and parts averaged over the iteration's images;
    stepped is None where the fp16 grad scaler skipped a finite loss (an overflow)."""
    opt.zero_grad(set_to_none=True)
    buffers = _bn_buffers(model)
    try:
        total, parts = _accumulate(model, passes, subdivisions, loss_fn, device, amp, scaler,
                                   channels_last)
    except BaseException:
        _restore_buffers(model, buffers)     # a half iteration leaves nothing behind
        opt.zero_grad(set_to_none=True)
        raise
    names = sorted(parts)
    total, *vals = _reduce_mean([total] + [parts[n] for n in names], device)
    return total, dict(zip(names, vals)), _update(model, opt, scaler, buffers, total)


def _accumulate(model, passes, subdivisions, loss_fn, device, amp, scaler, channels_last):
    """Forward and backward each pass, the gradients adding up; (loss, parts) of this rank,
    averaged over its passes."""
    import torch
    total, parts = 0.0, {}
    ddp = isinstance(model, torch.nn.parallel.DistributedDataParallel)
    for s, b in enumerate(passes):
        x = b.images.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        # gradients are all-reduced on the last subdivision only (DDP's no_sync)
        sync = contextlib.nullcontext() if not ddp or s == subdivisions - 1 else \
            model.no_sync()
        with sync:
            with _autocast(device, amp):
                outs = model(x)
            loss, p = loss_fn([o.float() for o in outs] if amp else outs, b)
            # the loss is the mean over this forward's images (mini/W of them under DDP
            # with W ranks, the rank's share): L_rs = (W/mini) sum_{i in rank r} L_i.
            # darknet's update uses the mean gradient over all mini*S images,
            # (1/(mini*S)) sum_i dL_i = sum_s (1/S) (1/W) sum_r dL_rs: each rank adds
            # loss/S and DDP's all-reduce divides the sum over ranks by W - exactly the
            # mean over the GLOBAL batch (TRAINING-FACTS 1.4: SGD on that mean is
            # darknet's update).  W = 1 without DDP.
            scaled = loss / subdivisions
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        total += float(loss.detach()) / subdivisions
        for name, v in p.items():
            parts[name] = parts.get(name, 0.0) + float(v.detach()) / subdivisions
    return total, parts


def _update(model, opt, scaler, buffers, total):
    """The step on the accumulated gradients: True when taken; False when the loss or a
    gradient is not finite (no step, the batch-norm statistics put back); None when the fp16
    grad scaler skipped it (an overflow of a finite loss: the scaler lowers its scale)."""
    if scaler is not None:
        scaler.unscale_(opt)
    if math.isfinite(total) and _grads_finite(model):
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        return True
    if scaler is not None and math.isfinite(total):
        scaler.step(opt)          # fp16 overflow: the scaler skips and lowers its scale
        scaler.update()
        opt.zero_grad(set_to_none=True)
        return None
    _restore_buffers(model, buffers)
    opt.zero_grad(set_to_none=True)
    return False

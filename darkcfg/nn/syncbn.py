"""Synchronized batch norm for ``darkcfg train --sync-bn`` under torchrun.

On CUDA this is PyTorch's own ``torch.nn.SyncBatchNorm``.  PyTorch's refuses CPU tensors
(torch 2.13: "SyncBatchNorm expected input tensor to be on GPU"), so on CPU (gloo) darkcfg uses
:class:`SyncBatchNorm` below: the same computation written with ``torch.distributed.all_reduce``
in a small autograd function (the forward sums over the ranks, so does the backward) - the
statistics are those of the whole forward pass over all ranks, and autograd carries the
gradient of every rank's loss back through them, as PyTorch's CUDA kernel does.

Two all-reduces per layer (the sum, then the sum of squared deviations from the global mean)
rather than one of (sum, sum of squares): the variance then has the accuracy of one process's
batch norm, and 2 ranks x half the batch give 1 process x the whole batch's weights within
float rounding (tests/test_ddp.py).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks; the gradient of a sum over ranks is the sum of the ranks' gradients
    (each rank's loss depends on every rank's share through the global statistics)."""

    @staticmethod
    def forward(ctx, t):
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    @staticmethod
    def backward(ctx, g):
        g = g.clone()
        dist.all_reduce(g, op=dist.ReduceOp.SUM)
        return g


def _all_reduce(t):
    return _AllReduceSum.apply(t)


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the global forward pass of every rank (any input of N x C x ...)."""

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x):
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                self.training or not self.track_running_stats,
                                self.momentum if self.momentum is not None else 0.0, self.eps)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
        xf = x.float()
        count = torch.tensor([xf.numel() // xf.shape[1]], dtype=xf.dtype, device=xf.device)
        n = _all_reduce(count)
        mean = _all_reduce(xf.sum(dims)) / n
        dev = xf - mean.view(shape)
        var = _all_reduce((dev * dev).sum(dims)) / n            # biased, as batch norm divides
        y = dev * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else \
                    1.0 / float(self.num_batches_tracked)
                unbiased = var * (n / (n - 1).clamp(min=1))      # running_var is unbiased
                self.running_mean.mul_(1 - m).add_(mean.detach().to(self.running_mean.dtype),
                                                   alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.detach().to(self.running_var.dtype),
                                                  alpha=m)
        return y.to(x.dtype)


def convert(model, device) -> nn.Module:
    """Every BatchNorm1d/2d of ``model`` becomes a synchronized one: PyTorch's on CUDA,
    :class:`SyncBatchNorm` elsewhere; parameters and running statistics are kept."""
    if torch.device(device).type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert(model)


def _convert(module):
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        new = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats)
        with torch.no_grad():
            if module.affine:
                new.weight.copy_(module.weight)
                new.bias.copy_(module.bias)
                new.weight.requires_grad_(module.weight.requires_grad)
                new.bias.requires_grad_(module.bias.requires_grad)
            if module.track_running_stats:
                new.running_mean.copy_(module.running_mean)
                new.running_var.copy_(module.running_var)
                new.num_batches_tracked.copy_(module.num_batches_tracked)
        new.train(module.training)
        return new
    for name, child in module.named_children():
        setattr(module, name, _convert(child))     # setattr keeps ModuleList indices
    return module

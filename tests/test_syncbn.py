"""darkcfg's CPU SyncBatchNorm, the module alone: 2 gloo ranks, each with half of every batch,
train what one process with plain ``nn.BatchNorm2d`` trains on the whole batch - running
statistics, weight and bias, and their gradients, after a few SGD steps.  A control with plain
batch norms on each rank shows the comparison can fail (each rank's statistics are those of
its half).  tests/test_ddp.py checks the same through ``darkcfg train --sync-bn``."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from darkcfg.nn import syncbn

STEPS, BATCH, WORLD = 3, 8, 2
# float32 sums in another order (the two halves summed apart, then added): measured worst
# relative difference (max |a - b| / max |b|) 2.0e-7 with SyncBN (the first conv's gradient;
# running_var, weight and bias equal); with plain BN per rank 8.1e-4 (BN weight) .. 0.27
# (running_mean)
TOL = 1e-5


def _model(bn):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=False), bn(6), nn.LeakyReLU(0.1),
                      nn.Conv2d(6, 2, 1))
    with torch.no_grad():                  # running stats and affine away from 0/1
        m[1].weight.uniform_(0.5, 1.5)
        m[1].bias.uniform_(-0.5, 0.5)
    return m.train()


def _batches():
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(BATCH, 3, 6, 6, generator=g) * 2 + 1,
             torch.randn(BATCH, 2, 6, 6, generator=g)) for _ in range(STEPS)]


def _train(model, batches, reduce=None):
    """SGD steps on the mean squared error; ``reduce`` averages the gradients over the ranks
    (what DDP does).  Returns the tensors after the last step (gradients: of that step)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for x, t in batches:
        opt.zero_grad()
        ((model(x) - t) ** 2).mean().backward()
        if reduce:
            reduce(model)
        opt.step()
    return _tensors(model)


def _tensors(model):
    bn = model[1]
    return {"running_mean": bn.running_mean.clone(), "running_var": bn.running_var.clone(),
            "weight": bn.weight.detach().clone(), "bias": bn.bias.detach().clone(),
            "weight.grad": bn.weight.grad.clone(), "bias.grad": bn.bias.grad.clone(),
            "conv.grad": model[0].weight.grad.clone()}


def _average_grads(model):
    import torch.distributed as dist
    for p in model.parameters():
        dist.all_reduce(p.grad)
        p.grad /= WORLD


def _rank(rank, port, sync, out):
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD)
    try:
        model = _model(nn.BatchNorm2d)
        if sync:
            model = syncbn.convert(model, "cpu")
            assert isinstance(model[1], syncbn.SyncBatchNorm)
        half = BATCH // WORLD
        batches = [(x[rank * half:(rank + 1) * half], t[rank * half:(rank + 1) * half])
                   for x, t in _batches()]
        result = _train(model, batches, _average_grads)
        if rank == 0:
            torch.save(result, out)
        # every rank done before gloo is torn down: one loaded CI run lost rank 1 to a
        # SIGABRT ("terminate called without an active exception") when rank 0 tore its
        # side down first; a later one lost it with the barrier too (see _two_ranks)
        dist.barrier()
        open(f"{out}.done{rank}", "w").close()
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks(tmp_path, sync):
    """Rank 0's results.  A rank killed by a signal after every rank passed the final barrier
    (each leaves a ``.done`` file there) died in gloo's teardown, after the work: torch's, not
    the code under test - its results stand.  Any other failure fails the test."""
    out = str(tmp_path / f"rank0_{sync}.pt")
    try:
        mp.spawn(_rank, args=(_free_port(), sync, out), nprocs=WORLD, join=True)
    except mp.ProcessExitedException as e:
        if not (e.signal_name and all(os.path.exists(f"{out}.done{r}") for r in range(WORLD))):
            raise
    return torch.load(out)


def _worst(a, b):
    """{tensor: max |a - b| / max |b|}."""
    return {k: float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp(min=1e-12)) for k in b}


@pytest.fixture(scope="module")
def one_process():
    torch.set_num_threads(1)
    return _train(_model(nn.BatchNorm2d), _batches())


def test_two_ranks_of_syncbn_equal_one_batch_norm_over_the_whole_batch(tmp_path, one_process):
    worst = _worst(_two_ranks(tmp_path, sync=True), one_process)
    assert max(worst.values()) <= TOL, worst


def test_without_sync_each_rank_normalises_its_half_and_the_comparison_fails(tmp_path,
                                                                              one_process):
    worst = _worst(_two_ranks(tmp_path, sync=False), one_process)
    for k in ("running_mean", "running_var", "weight.grad", "bias.grad", "conv.grad"):
        assert worst[k] > 100 * TOL, worst


def test_convert_picks_pytorchs_on_cuda_and_darkcfgs_on_cpu_keeping_the_values():
    """No GPU needed: the CUDA branch only swaps modules (PyTorch's SyncBatchNorm is built on
    the CPU and moved later)."""
    for device, kind in (("cpu", syncbn.SyncBatchNorm), ("cuda", nn.SyncBatchNorm),
                         ("cuda:0", nn.SyncBatchNorm)):
        model = _model(nn.BatchNorm2d)
        with torch.no_grad():
            model[1].running_mean.uniform_(-1, 1)
            model[1].running_var.uniform_(0.5, 2)
            model[1].num_batches_tracked.fill_(7)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        model = syncbn.convert(model, device)
        assert type(model[1]) is kind, (device, type(model[1]))
        after = model.state_dict()
        assert before.keys() == after.keys()
        assert all(torch.equal(before[k], after[k]) for k in before)
    # outside a process group darkcfg's is a plain batch norm
    x = torch.randn(4, 6, 5, 5)
    plain, synced = nn.BatchNorm2d(6), syncbn.convert(nn.Sequential(nn.BatchNorm2d(6)), "cpu")[0]
    assert torch.allclose(plain(x), synced(x), atol=1e-6)
    assert torch.allclose(plain.running_var, synced.running_var, atol=1e-7)

"""Distributed training under torchrun: the process group (gloo on CPU, NCCL on CUDA), the
device of each rank, the mean of values over ranks.
"""
from __future__ import annotations

import os

from ..errors import DarkcfgError


DIST_TIMEOUT = 900.0        # s a rank waits for the others (rank 0's --map must fit in it)


def _reduce_mean(values: list, device) -> list:
    """The mean over the DDP ranks of a few floats (one all-reduce), so every rank takes the
    same skip decision and rank 0 logs the global batch's loss."""
    import torch
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / dist.get_world_size()).tolist()


def _is_comm_error(e) -> bool:
    import torch.distributed as dist
    kinds = tuple(k for k in (getattr(dist, "DistError", None),) if k is not None)
    text = str(e).lower()
    return isinstance(e, kinds) or any(w in text for w in ("gloo", "nccl", "connection",
                                                           "timed out", "timeout", "peer"))


def _init_distributed(device, timeout):
    """torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) -> one process
    group: gloo on CPU, NCCL on CUDA, each CUDA rank on cuda:LOCAL_RANK.  Returns (rank,
    world size, device); (0, 1, device) outside torchrun."""
    import datetime
    import torch.distributed as dist
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or "RANK" not in os.environ:
        return 0, 1, device
    dev = _device(device)
    if dev.type == "cuda":
        dev = _device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
        import torch
        torch.cuda.set_device(dev)
    elif dev.type != "cpu":
        raise DarkcfgError(f"--device {device}: DDP runs on cpu (gloo) or cuda (NCCL)")
    if not dist.is_initialized():
        wait = datetime.timedelta(seconds=timeout)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=wait,
                                **_attempt_store(wait))
    return dist.get_rank(), dist.get_world_size(), str(dev)


def _attempt_store(timeout) -> dict:
    """init_process_group's store for a group torchrun restarted: the agent's store (which
    torchrun keeps across restarts) under a prefix of this attempt.  Without it the new ranks
    can read the dead attempt's keys - gloo then dials a dead rank's old port ("Connection
    refused") or waits for a peer that never comes, seen here about one restart in two.
    {} (torch's own env:// store) on a first attempt, and where the agent shares no store."""
    import torch.distributed as dist
    if not restart_count() or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return {}
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                          int(os.environ["WORLD_SIZE"]), is_master=False, timeout=timeout)
    return {"store": dist.PrefixStore(f"darkcfg/attempt_{restart_count()}", store),
            "rank": int(os.environ["RANK"]), "world_size": int(os.environ["WORLD_SIZE"])}


def restart_count() -> int:
    """How many times torchrun's elastic agent has restarted this group (its
    TORCHELASTIC_RESTART_COUNT; 0 on the first attempt and outside torchrun)."""
    try:
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    except ValueError:
        return 0


def _from_rank0(value, world: int):
    """Rank 0's ``value`` on every rank (one broadcast): a decision every rank must share,
    such as whether a state exists where only rank 0 may see the folder."""
    if world <= 1:
        return value
    import torch.distributed as dist
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


CHECK_IN = 10.0     # s the ranks left after a lost contact wait for one another to answer


def _silent_ranks(rank: int, world: int, wait: float = CHECK_IN) -> list:
    """After a collective failed: which ranks did not answer.  Each rank that is still running
    checks in with the process group's store (torchrun's agent holds it, or rank 0 without
    one) and waits up to ``wait`` s for the others; the dead or stalled never do.  [] when
    the store itself is gone (it lived in the dead process) - the caller says "another rank"."""
    import datetime
    import torch.distributed as dist
    try:
        store = dist.distributed_c10d._get_default_store()
        store.set_timeout(datetime.timedelta(seconds=wait))
        store.set(f"darkcfg/alive/{rank}", "1")
        others = [r for r in range(world) if r != rank]
        try:
            store.wait([f"darkcfg/alive/{r}" for r in others],
                       datetime.timedelta(seconds=wait))
            return []
        except Exception:           # a timeout: someone did not check in
            return [r for r in others if not store.check([f"darkcfg/alive/{r}"])]
    except Exception:               # no store to ask
        return []


def _end_distributed(world, finished: bool = False) -> None:
    """Tear the process group down.  After a run that ``finished`` the ranks first meet at a
    barrier, so no rank tears its side of gloo down while another is still inside it (CI saw
    a rank end in SIGABRT, "terminate called without an active exception", when its peer went
    first); after a failure there is nobody to wait for."""
    import torch.distributed as dist
    if world > 1 and dist.is_initialized():
        if finished:
            try:
                dist.barrier()
            except RuntimeError:
                pass                # a peer already gone: destroy all the same
        dist.destroy_process_group()


def _device(name):
    import torch
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise DarkcfgError(f"--device {name!r}: not a device (cpu, cuda, cuda:N, mps)") from None
    ok = {"cpu": lambda: True, "cuda": torch.cuda.is_available,
          "mps": lambda: torch.backends.mps.is_available()}.get(dev.type, lambda: True)
    if not ok() or (dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count()):
        raise DarkcfgError(f"--device {name}: not available on this machine")
    return dev

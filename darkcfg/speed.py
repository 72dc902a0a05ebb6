"""Fast CPU inference: the two steps beyond ``darkcfg.load(..., fuse=True, channels_last=True)``.

* :func:`reuse_freed_memory` - a process setting.  PyTorch allocates every activation afresh on
  each forward; glibc serves large blocks (above its mmap threshold, at most 32 MB) with mmap
  and unmaps them on free, so the next forward page-faults them in again.  yolov3-tiny at batch
  8 allocates 88 MB for its first conv's output: that conv took 40-46 ms, 9-10 ms with freed
  memory reused (ONNX Runtime keeps an arena for the same reason).
* :func:`compile_frozen` - ``torch.compile`` with inductor's weight freezing: the batch norms
  are already folded by ``fuse()``; freezing pre-packs the conv weights for oneDNN and fuses
  each conv with its activation.  Compiling takes 10-90 s on 2 cores.

``bench/forward.py`` measures each step beside OpenCV and ONNX Runtime.
"""
from __future__ import annotations

import sys


def reuse_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse: no block is handed to the kernel with
    mmap/munmap, and the heap is trimmed only when over 2 GiB of its top is free.

    Process-wide and lasting: the process keeps its peak heap after inference (yolov3 at batch
    8: a 1.2 GB heap, 0.9 GB of it free for the next forward; peak RSS 1.6 GB instead of 1.4).  Worth it in a process that runs many forwards; pointless for one.
    Returns True when applied, False where it does not apply (not Linux, or a libc without
    these options, such as musl).
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4            # <malloc.h>
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


def compile_frozen(model):
    """``torch.compile(model)`` with inductor's freezing: weights become constants (pre-packed
    for oneDNN, each conv fused with its activation), so the model must not be trained or
    changed afterwards.  Returns a function of the input batch that runs under
    ``torch.inference_mode()``; compiling happens on its first call, and again for each new input
    shape.  Outputs match darknet's within 1e-4 (checked in the tests).

    Freezing is an inductor setting that ``torch.compile(options=...)`` does not reach (it is
    read when the graph is captured), so each call runs under ``config.patch(freezing=True)``
    (~30 us) instead of changing it for the whole process.
    """
    import os
    import shutil
    import torch
    import torch._inductor.config as inductor
    from .errors import DarkcfgError
    if not any(shutil.which(c) for c in (os.environ.get("CXX", ""), "c++", "g++", "clang++") if c):
        raise DarkcfgError("compile_frozen: torch.compile builds C++ kernels for the CPU and "
                           "finds no C++ compiler (set CXX, or install g++); the uncompiled "
                           "model runs without one")
    model.eval()
    compiled = torch.compile(model, dynamic=False)   # specialise on each input shape: a
    # shape-generic graph (what dynamo falls back to on a second shape) is slower here

    def run(x):
        with torch.inference_mode(), inductor.patch(freezing=True):
            return compiled(x)
    return run

"""Fast CPU inference: the two steps beyond ``darkcfg.load(..., fuse=True, channels_last=True)``.

* :func:`reuse_freed_memory` - a process setting.  PyTorch allocates every activation afresh on
  each forward; glibc serves large blocks (above its mmap threshold, at most 32 MB) with mmap
  and unmaps them on free, so the next forward page-faults them in again.  yolov3-tiny at batch
  8 allocates 88 MB for its first conv's output: that conv took 40-46 ms, 9-10 ms with freed
  memory reused (ONNX Runtime keeps an arena for the same reason).
* :func:`compile_frozen` - ``torch.compile`` with inductor's weight freezing: the batch norms
  are already folded by ``fuse()``; freezing pre-packs the conv weights for oneDNN and fuses
  each conv with its activation.  Compiling takes 10-90 s on 2 cores.

* :func:`auto_dtype` - bfloat16 where it is measured to be faster: a CPU with AVX512_BF16 or AMX
  (oneDNN's native bf16 convolutions), a CUDA GPU of compute capability 8.0 or more; float32
  everywhere else (a CPU without those instructions emulates bf16 and runs it slower).

``bench/forward.py`` measures each step beside OpenCV and ONNX Runtime, and prints
:func:`cpu_features`.
"""
from __future__ import annotations

import sys

# the instruction sets and the automatic dtype live in nn.dtypes (Darknet's dtype="auto" asks
# them, and nn/ imports nothing downstream); their names stay here as before
from ..nn.dtypes import (BF16_FLAGS, CPU_FEATURES, _torch_cpu_flags,  # noqa: F401
                         auto_dtype, cpu_features, cpu_flags)


def reuse_freed_memory(enable: bool = True) -> bool:
    """Ask glibc's malloc to keep freed memory for reuse: no block is handed to the kernel with
    mmap/munmap, and the heap is trimmed only when over 2 GiB of its top is free.

    Process-wide and lasting: the process keeps its peak heap after inference (yolov3 at batch
    8: a 1.2 GB heap, 0.9 GB of it free for the next forward; peak RSS 1.6 GB instead of 1.4).
    Worth it in a process that runs many forwards; pointless for one.

    ``enable=False`` goes back to glibc's behaviour once its adaptive threshold has settled:
    blocks above 32 MB mmapped, the heap trimmed above 64 MB free (glibc's exact start-up state,
    a threshold that adapts from 128 KB, cannot be restored).

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
    m_trim_threshold, m_mmap_threshold, m_mmap_max = -1, -3, -4          # <malloc.h>
    if enable:
        settings = [(m_mmap_max, 0), (m_trim_threshold, 2**31 - 1)]
    else:
        settings = [(m_mmap_max, 65536), (m_mmap_threshold, 32 << 20),
                    (m_trim_threshold, 64 << 20)]
    return all(mallopt(option, value) == 1 for option, value in settings)


def compile_frozen(model):
    """``torch.compile(model)`` with inductor's freezing: weights become constants (pre-packed
    for oneDNN, each conv fused with its activation), so the model must not be trained or
    changed afterwards.  Returns a function of the input batch that runs under
    ``torch.inference_mode()``; compiling happens on its first call, and again for each new input
    shape.  Outputs match darknet's within 1e-4 (checked in the tests).

    Where Python's C headers are installed, the graph is called from inductor's C++ wrapper
    instead of Python (~5% at yolov3-tiny batch 1, where ~40 kernel calls take 31 ms).
    Freezing and the wrapper are inductor settings that ``torch.compile(options=...)`` does not
    reach (freezing is read when the graph is captured), so each call runs under
    ``config.patch`` (~30 us) instead of changing them for the whole process.  Dynamo compiles
    each model and input shape separately, up to ``torch._dynamo.config.recompile_limit`` (8)
    per process; past it, it warns and runs the model uncompiled.
    """
    import os
    import shutil
    import sysconfig
    import torch
    import torch._inductor.config as inductor
    from ..errors import DarkcfgError
    if not any(shutil.which(c) for c in (os.environ.get("CXX", ""), "c++", "g++", "clang++") if c):
        raise DarkcfgError("compile_frozen: torch.compile builds C++ kernels for the CPU and "
                           "finds no C++ compiler (set CXX, or install g++); the uncompiled "
                           "model runs without one")
    headers = os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))
    settings = {"freezing": True, "cpp_wrapper": headers}
    model.eval()
    compiled = torch.compile(model, dynamic=False)   # specialise on each input shape: a
    # shape-generic graph (what dynamo falls back to on a second shape) is slower here

    def run(x):
        with torch.inference_mode(), inductor.patch(settings):
            return compiled(x)
    return run

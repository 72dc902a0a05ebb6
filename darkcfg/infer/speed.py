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


# ----- instruction sets and the automatic dtype ------------------------------------------------

# the x86 flags that decide how fast a convolution runs, in the order bench/forward.py prints them
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
                "amx_bf16", "amx_int8", "amx_fp16")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")      # native bf16 dot products (oneDNN uses them)


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set:
    """The processor's flags from the first ``flags`` (x86) or ``Features`` (ARM) line of
    /proc/cpuinfo.  Where that file is missing (macOS, Windows) torch's own cpuinfo probes
    answer for the x86 flags it knows (avx2, avx512f, avx512_vnni, avx512_bf16, amx_tile,
    amx_fp16); elsewhere the set is empty."""
    try:
        with open(cpuinfo, errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    return set(value.split())
    except OSError:
        pass
    return _torch_cpu_flags()


def _torch_cpu_flags() -> set:
    try:
        import torch
    except ImportError:
        return set()
    probes = {"avx2": "_is_avx2_supported", "avx512f": "_is_avx512_supported",
              "avx512_vnni": "_is_vnni_supported", "avx512_bf16": "_is_avx512_bf16_supported",
              "amx_tile": "_is_amx_tile_supported", "amx_fp16": "_is_amx_fp16_supported"}
    found = set()
    for flag, name in probes.items():
        probe = getattr(torch.cpu, name, None)   # private probes: absent in some versions
        try:
            if probe is not None and probe():
                found.add(flag)
        except Exception:                       # a probe that cannot run says nothing
            pass
    return found


def cpu_features(flags: set | None = None) -> list:
    """The flags of :data:`CPU_FEATURES` this processor has, in that order."""
    flags = cpu_flags() if flags is None else flags
    return [f for f in CPU_FEATURES if f in flags]


def auto_dtype(device=None, flags: set | None = None):
    """(torch dtype, why) that ``dtype="auto"`` picks for ``device`` (default cpu).

    bfloat16 where measured faster (bench/forward.py, 416x416, the fused channels_last model in
    bf16 against the same in float32): a CPU with AVX512_BF16 (this project's 2-core AMD
    EPYC: yolov3 2.0x at batch 1, 2.4x at batch 8; yolov3-tiny 1.7x and 2.4x) or AMX (the
    2-core Xeon of issue #15: yolov3 3.7x at batch 1); a CUDA GPU of compute capability >= 8.0
    (Ampere and later: bf16 tensor cores; not measured here, no GPU was lent).  float32
    elsewhere: a CPU without those instructions has no bf16 dot products (oneDNN emulates
    them, slower than float32); MPS, ARM and other devices were never measured."""
    import torch
    dev = torch.device(device or "cpu")
    if dev.type == "cpu":
        have = [f for f in BF16_FLAGS if f in (cpu_flags() if flags is None else flags)]
        if have:
            return torch.bfloat16, f"the CPU has {have[0]}"
        return torch.float32, "the CPU has neither AMX nor AVX512_BF16"
    if dev.type == "cuda":
        major, minor = torch.cuda.get_device_capability(dev)
        if major >= 8:
            return torch.bfloat16, f"CUDA compute capability {major}.{minor} has bf16 tensor cores"
        return torch.float32, f"CUDA compute capability {major}.{minor} has no bf16 tensor cores"
    return torch.float32, f"bf16 was never measured on {dev.type}"

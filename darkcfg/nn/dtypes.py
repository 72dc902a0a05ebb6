"""Which dtype a device computes fastest in: :func:`auto_dtype` (what ``dtype="auto"`` picks
for Darknet.to_dtype, for_inference and ``--dtype auto``) and the CPU flags it reads.  torch-free
at import; darkcfg.infer.speed repeats these names beside the other speed paths.
"""
from __future__ import annotations

# the x86 flags that decide how fast a convolution runs, in the order bench/forward.py prints them
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
                "amx_bf16", "amx_int8", "amx_fp16")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")      # native bf16 dot products (oneDNN uses them)
# u8 x s8 dot products that add into 32 bits (oneDNN's int8 kernels without them add pairs of
# products in saturating 16 bits: vpmaddubsw)
INT8_DOT_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")


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


def int8_dot(flags: set | None = None) -> str | None:
    """The flag of :data:`INT8_DOT_FLAGS` this processor has (None: int8 convolutions add
    pairs of u8 x s8 products in saturating 16-bit sums)."""
    flags = cpu_flags() if flags is None else flags
    return next((f for f in INT8_DOT_FLAGS if f in flags), None)


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

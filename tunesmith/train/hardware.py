"""What the machine can do: which precision to train in, and how fast it multiplies matrices."""
from __future__ import annotations

import time
from pathlib import Path


def cpu_has_native_bf16() -> bool:
    """AVX-512-BF16 or AMX: bf16 matmuls run natively (2x fp32 here); elsewhere bf16 is emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(setting: str) -> str:
    """``auto`` → bf16 autocast where the hardware runs it natively, else fp32."""
    if setting != "auto":
        return setting
    import torch

    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def matmul_gflops(size: int = 512, seconds: float = 0.3) -> float:
    """Measured fp32 matmul throughput of this machine right now (GFLOP/s), in a fraction of a second."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        runs += 1
    return 2 * size**3 * runs / (time.perf_counter() - start) / 1e9

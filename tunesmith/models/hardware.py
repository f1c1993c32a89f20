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


def inference_dtype(setting: str = "auto"):
    """Weights' dtype for generation. ``auto``: bf16 where the hardware runs it natively, since
    decoding streams every weight once per token and bf16 halves the bytes (1.6-1.7x tokens/s at
    batch 1 and 8 on an AVX-512-BF16 CPU, ../shared/research/perf-baseline.md). On AVX2 bf16 is
    emulated: measured 1.12x at batch 1 but 0.56x at batch 8 (slow prefill), so fp32 there."""
    import torch

    return torch.bfloat16 if resolve_precision(setting) == "bf16" else torch.float32


def matmul_gflops(size: int = 768, repeats: int = 5) -> float:
    """This machine's fp32 matmul throughput (GFLOP/s): the best of a few short timings, so a
    momentary neighbour on a shared machine does not halve the figure. Takes ~0.1-0.5 s."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up: thread pool and kernels
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        best = min(best, (time.perf_counter() - start) / 4)
    return 2 * size**3 / best / 1e9


# Share of the measured fp32 matmul throughput that SFT training reaches on CPU. Calibrated on
# the quickstart (2-core AVX2 EPYC, matmul_gflops() = 90): LoRA on SmolLM2-135M trained 103
# input tokens/s = 55 GFLOP/s of 4P FLOPs per token, i.e. 0.6. Rough: +-50 % on other data/models.
CPU_TRAIN_EFFICIENCY = 0.6


def estimate_train_seconds(tokens: int, parameters: int, method: str, gflops: float | None = None) -> float:
    """Rough wall time to train on ``tokens`` input tokens here.

    FLOPs per token: forward 2P + input gradients 2P for LoRA (frozen weights need no weight
    gradients), + 2P weight gradients for full fine-tuning.
    """
    flops_per_token = (6 if method == "full" else 4) * parameters
    throughput = (gflops or matmul_gflops()) * 1e9 * CPU_TRAIN_EFFICIENCY
    return tokens * flops_per_token / throughput

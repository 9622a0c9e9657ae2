"""The machine a benchmark ran on, as one line for its report (every benchmark uses this)."""

from __future__ import annotations

import os
import platform
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["machine_description"]


def machine_description(
    device: torch.device | None = None, run_threads: Sequence[int | None] | None = None
) -> str:
    """CPU model, cores visible to this process, bf16 support, torch, Python, GPU and load.

    It also names torch's float32 matmul precision: importing TerraTorch sets it to "medium",
    which runs float32 matmuls in bfloat16 on CPUs with AMX (and in TF32 on recent GPUs), and
    the memory-allocator settings of the environment when any is set (they change CPU timings
    of large batches: docs/troubleshooting.md).

    Args:
        device: the device the benchmark ran on (a CUDA device is named); None: the first CUDA
            device when there is one, else the CPU.
        run_threads: for a report built from recorded runs, each run's torch thread count
            (None where a run did not record it); the line then gives those instead of this
            process's, and says that the load average is the report's, not the runs'.
    """
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        info = Path("/proc/cpuinfo").read_text()
        cpu = re.search(r"model name\s*:\s*(.+)", info).group(1).strip()
        flags = set(re.search(r"flags\s*:\s*(.+)", info).group(1).split())
    except (OSError, AttributeError):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    native_bf16 = sorted(flags & {"avx512_bf16", "amx_bf16"})
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    parts = [
        f"{cpu}, {cores} cores visible (shared with other jobs)",
        f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16 "
        f"instructions: {', '.join(native_bf16) or 'none (no avx512_bf16 / amx_bf16)'}",
        f"torch {torch.__version__}, {_threads(run_threads)}, Python {platform.python_version()}",
        _matmul_precision(device, flags),
        *_allocator_settings(),
        f"GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "no GPU used",
    ]
    if hasattr(os, "getloadavg"):
        when = "at start" if run_threads is None else "when this report was written"
        parts.append(f"load average {when} {os.getloadavg()[0]:.1f}")
    return "; ".join(parts)


def _matmul_precision(device: torch.device, flags: set[str]) -> str:
    precision = torch.get_float32_matmul_precision()
    reduced = precision != "highest" and device.type == "cpu" and "amx_bf16" in flags
    return f"float32 matmul precision {precision}" + (
        " (bfloat16 matmuls on this CPU's AMX)" if reduced else ""
    )


#: Environment variables that change how large CPU tensors are allocated (glibc's malloc
#: tunables, a preloaded allocator such as jemalloc or tcmalloc, PyTorch's huge pages).
ALLOCATOR_VARIABLES = (
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "GLIBC_TUNABLES",
    "LD_PRELOAD",
    "THP_MEM_ALLOC_ENABLE",
)


def _allocator_settings() -> list[str]:
    settings = [
        f"{name}={os.environ[name]}" for name in ALLOCATOR_VARIABLES if os.environ.get(name)
    ]
    return [f"allocator settings {' '.join(settings)}"] if settings else []


def _threads(run_threads: Sequence[int | None] | None) -> str:
    if run_threads is None:
        return f"{torch.get_num_threads()} torch thread(s)"
    counts = Counter(run_threads)
    recorded = sorted((n, c) for n, c in counts.items() if n is not None)
    parts = [f"{n} ({c} run{'s' if c > 1 else ''})" for n, c in recorded]
    if counts[None]:
        parts.append(f"not recorded ({counts[None]} run{'s' if counts[None] > 1 else ''})")
    return "torch threads per run: " + ", ".join(parts or ["no runs"])

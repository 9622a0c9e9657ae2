"""Timing and peak-memory measurement for the efficiency benchmark.

Timing is designed for a shared, noisy machine: every measured call ("entry") runs once per round,
entries take turns within a round (the starting entry rotates from round to round), and ratios
are medians of per-round ratios, so slow phases of the machine hit both sides of a ratio alike.
On CUDA each call is timed with CUDA events.

Peak memory is what a training step adds on top of the built model and batch:

- CPU: each measurement runs in its own forked process, which builds, then resets its peak
  resident set size to the current one (Linux ``/proc/self/clear_refs``), steps, and reports
  ``VmHWM`` minus the resident set size before the steps. It runs single-threaded (OpenMP
  cannot run in a forked child of a process that used it; the peak barely depends on the thread
  count) and covers activations, gradients, optimizer state, autocast weight copies, allocator
  slack, the runtime's first-step buffers and the code pages of the ops the child calls first
  (10-20 MiB, about the same for every variant, so differences between variants hold).
- CUDA: in this process, ``torch.cuda.max_memory_allocated`` during the steps minus
  ``memory_allocated`` before them (forking is unusable once CUDA is initialised).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import multiprocessing
import statistics
import time
import traceback
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import torch

__all__ = ["Entry", "median_ratio", "peak_memory_increases", "round_robin", "time_call"]

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


@dataclass
class Entry:
    """A call to time; ``context`` (if any) is entered around it, outside the timed region."""

    call: Callable[[], object]
    context: Callable[[], contextlib.AbstractContextManager] = field(default=contextlib.nullcontext)


def time_call(call: Callable[[], object], device: torch.device) -> float:
    """Seconds one ``call()`` takes on ``device`` (CUDA events on a GPU, a wall clock on CPU)."""
    if device.type == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        call()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    begin = time.perf_counter()
    call()
    return time.perf_counter() - begin


def round_robin(
    entries: dict[Hashable, Entry],
    rounds: int,
    warmup: int,
    device: torch.device,
    progress: Callable[[str], None] | None = None,
) -> dict[Hashable, list[float]]:
    """Time every entry once per round for ``warmup + rounds`` rounds; keep the last ``rounds``.

    Returns the seconds of each entry, one per kept round, in round order (so the lists of two
    entries pair up round by round).
    """
    keys = list(entries)
    samples: dict[Hashable, list[float]] = {key: [] for key in keys}
    for index in range(warmup + rounds):
        began = time.perf_counter()
        shift = index % len(keys)
        for key in keys[shift:] + keys[:shift]:
            with entries[key].context():
                seconds = time_call(entries[key].call, device)
            if index >= warmup:
                samples[key].append(seconds)
        if progress is not None:
            kind = "warm-up round" if index < warmup else "round"
            number = index + 1 if index < warmup else index - warmup + 1
            progress(f"{kind} {number} done in {time.perf_counter() - began:.1f} s")
    return samples


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of ``numerator[i] / denominator[i]``."""
    if len(numerator) != len(denominator) or not numerator:
        raise ValueError("Ratios need two equally long, non-empty lists of paired samples.")
    return statistics.median(n / d for n, d in zip(numerator, denominator, strict=True))


def peak_memory_increases(
    build: Callable[[], T], steps: Mapping[K, Callable[[T], object]], device: torch.device
) -> dict[K, int]:
    """Bytes that each ``steps[key]`` adds to the peak memory once ``build()`` is done.

    Every key builds afresh: in its own forked process on CPU, in this process on CUDA. See the
    module docstring.
    """
    measure = _cuda_peak_increase if device.type == "cuda" else _cpu_peak_increase
    return {key: measure(build, step, device) for key, step in steps.items()}


def _cpu_peak_increase(
    build: Callable[[], T], step: Callable[[T], object], device: torch.device
) -> int:
    context = multiprocessing.get_context("fork")
    queue = context.SimpleQueue()
    process = context.Process(target=_child_main, args=(build, step, queue))
    process.start()
    ok, value = queue.get()
    process.join()
    if not ok:
        raise RuntimeError(f"Memory measurement failed in a child process:\n{value}")
    return value


def _cuda_peak_increase(
    build: Callable[[], T], step: Callable[[T], object], device: torch.device
) -> int:
    built = build()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step(built)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del built
    gc.collect()
    torch.cuda.empty_cache()
    return peak


def _child_main(build: Callable[[], T], step: Callable[[T], object], queue) -> None:
    try:
        # OpenMP thread pools do not survive fork (a parallel region would hang): one thread.
        torch.set_num_threads(1)
        built = build()
        _release_free_heap()
        before = _reset_peak_rss()
        step(built)
        queue.put((True, _peak_rss() - before))
    except BaseException:
        queue.put((False, traceback.format_exc()))


def _release_free_heap() -> None:
    """Hand the C allocator's free memory back to the OS (glibc's ``malloc_trim``).

    A forked child inherits the parent's free heap, still resident after a long run; a step
    whose allocations landed there would add nothing to the peak resident set size.
    """
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim that way
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_peak_rss() -> int:
    """Set the peak resident set size to the current one (Linux); return the current one."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_bytes("VmRSS")


def _peak_rss() -> int:
    """Peak resident set size of this process in bytes."""
    return _status_bytes("VmHWM")


def _status_bytes(field_name: str) -> int:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(f"{field_name}:"))
    return int(line.split()[1]) * 1024

"""Timing and peak-memory measurement for the efficiency benchmark.

Timing is designed for a shared, noisy machine: every measured call ("entry") runs once per round,
entries take turns within a round (the starting entry rotates from round to round), and ratios
are medians of per-round ratios, so slow phases of the machine hit both sides of a ratio alike.
On CUDA each call is timed with CUDA events.

Peak memory is what a training step adds on top of the built model and batch:

- CPU: each measurement runs in its own forked process: the peak resident set size (``VmHWM``,
  reset at the fork; ``ru_maxrss`` where /proc is missing) of a process that builds the variant
  and steps, minus that of a process that builds the same variant and does not step, both
  single-threaded (OpenMP cannot run in a forked child of a process that used it; the peak
  barely depends on the thread count). It covers activations, gradients, optimizer state,
  autocast weight copies, allocator slack and the runtime's first-step buffers.
- CUDA: in this process, ``torch.cuda.max_memory_allocated`` during the steps minus
  ``memory_allocated`` before them (forking is unusable once CUDA is initialised).
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import resource
import statistics
import time
import traceback
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import torch

__all__ = ["Entry", "median_ratio", "peak_memory_increase", "round_robin", "time_call"]


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


def peak_memory_increase(
    build: Callable[[], object], step: Callable[[object], None], device: torch.device
) -> int:
    """Bytes that ``step(build())`` adds to the peak memory of having ``build()`` done.

    See the module docstring for what is measured on CPU and on CUDA.
    """
    if device.type == "cuda":
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
    return _in_child(lambda: step(build())) - _in_child(build)


def _in_child(work: Callable[[], object]) -> int:
    """Peak RSS in bytes of a forked process that does ``work()``."""
    context = multiprocessing.get_context("fork")
    queue = context.SimpleQueue()
    process = context.Process(target=_child_main, args=(work, queue))
    process.start()
    ok, value = queue.get()
    process.join()
    if not ok:
        raise RuntimeError(f"Memory measurement failed in a child process:\n{value}")
    return value


def _child_main(work: Callable[[], object], queue) -> None:
    try:
        _reset_peak_rss()
        # OpenMP thread pools do not survive fork (a parallel region would hang): one thread.
        torch.set_num_threads(1)
        work()
        queue.put((True, _peak_rss()))
    except BaseException:
        queue.put((False, traceback.format_exc()))


def _reset_peak_rss() -> None:
    # A forked child starts with the parent's high-water mark; Linux resets it on request.
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_rss() -> int:
    """Peak resident set size of this process in bytes (VmHWM, else ru_maxrss)."""
    try:
        with open("/proc/self/status") as f:
            line = next(line for line in f if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

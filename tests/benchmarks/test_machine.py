"""benchmarks/machine.py: the report's machine line names the runs' threads, not the reporter's."""

from __future__ import annotations

import torch

from benchmarks.machine import ALLOCATOR_VARIABLES, machine_description


def test_a_fresh_run_gives_this_process_threads_and_the_load_at_start():
    line = machine_description(torch.device("cpu"))
    assert f"{torch.get_num_threads()} torch thread(s)" in line
    assert "load average at start" in line
    assert "no GPU used" in line
    assert f"float32 matmul precision {torch.get_float32_matmul_precision()}" in line


def test_a_report_from_recorded_runs_gives_their_threads():
    line = machine_description(torch.device("cpu"), run_threads=[1, 1, 2, None, 1])
    assert "torch threads per run: 1 (3 runs), 2 (1 run), not recorded (1 run)" in line
    assert "torch thread(s)" not in line
    assert "load average when this report was written" in line


def test_runs_without_records_say_so():
    line = machine_description(torch.device("cpu"), run_threads=[None, None])
    assert "torch threads per run: not recorded (2 runs)" in line
    assert "torch threads per run: no runs" in machine_description(run_threads=[])


def test_allocator_settings_are_named_only_when_set(monkeypatch):
    for name in ALLOCATOR_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert "allocator settings" not in machine_description(torch.device("cpu"))
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1073741824")
    monkeypatch.setenv("LD_PRELOAD", "libjemalloc.so.2")
    line = machine_description(torch.device("cpu"))
    assert (
        "allocator settings MALLOC_MMAP_THRESHOLD_=1073741824 LD_PRELOAD=libjemalloc.so.2" in line
    )

"""One adapted layer in isolation: the KronA and LoRA paths against the frozen Linear beside them.

Times forward + backward of three paths on the same tokens (``--tokens`` x 768, the input
requiring a gradient as inside a network): the KronA path (``A`` 24 x 24, ``B`` 32 x 32, applied
to the reshaped input, never the dense product), the LoRA path (rank ``--rank``), and the frozen
768 x 768 Linear (bias included) that both sit next to. The three are timed in rotating order
in every round, so the printed ratios (medians of per-round ratios) compare them under the same
machine load; absolute times depend on the machine and are printed for reference only.

    python -m benchmarks.layer_microbench --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from terratorch_hsi_peft.adapters.kron import kron_linear

WIDTH = 768


def tensors(tokens: int, rank: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """The input, the adapter factors (all requiring a gradient) and the frozen Linear."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {
        "x": (tokens, WIDTH),
        "krona_A": (24, 24),
        "krona_B": (32, 32),
        "lora_A": (rank, WIDTH),
        "lora_B": (WIDTH, rank),
    }
    found = {k: torch.randn(*s, generator=gen).requires_grad_() for k, s in shapes.items()}
    found["weight"] = torch.randn(WIDTH, WIDTH, generator=gen)
    found["bias"] = torch.randn(WIDTH, generator=gen)
    return found


def forwards(t: dict[str, torch.Tensor]) -> dict[str, Callable[[], torch.Tensor]]:
    """The three paths' forward calls on the tensors ``t``."""
    return {
        "KronA": lambda: kron_linear(t["x"], t["krona_A"], t["krona_B"]),
        "LoRA": lambda: (t["x"] @ t["lora_A"].T) @ t["lora_B"].T,
        "Linear": lambda: torch.nn.functional.linear(t["x"], t["weight"], t["bias"]),
    }


def paths(tokens: int, rank: int, seed: int = 0) -> dict[str, Callable[[], None]]:
    """The three forward + backward calls."""
    t = tensors(tokens, rank, seed)

    def step(forward: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            for value in t.values():
                value.grad = None
            forward().sum().backward()

        return run

    return {name: step(forward) for name, forward in forwards(t).items()}


def measure(tokens: int, rank: int, rounds: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call of each path, one call of each per round in rotating order."""
    calls = paths(tokens, rank)
    names = list(calls)
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return times


def ratio(times: dict[str, list[float]], a: str, b: str) -> float:
    """Median over rounds of ``time(a) / time(b)``."""
    return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    times = measure(args.tokens, args.rank, args.rounds, args.warmup)
    print(
        f"{args.tokens} tokens x {WIDTH}, forward + backward, {args.threads} thread(s), "
        f"{args.rounds} rounds; LoRA rank {args.rank}, KronA 24x24 kron 32x32"
    )
    for name, values in times.items():
        print(f"  {name:<6} median {1e3 * statistics.median(values):7.2f} ms")
    for a, b in (("KronA", "LoRA"), ("KronA", "Linear"), ("LoRA", "Linear")):
        print(f"  {a} / {b}: {ratio(times, a, b):.2f}")


if __name__ == "__main__":
    main()

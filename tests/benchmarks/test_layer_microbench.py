"""benchmarks/layer_microbench.py: the three timed paths compute what they claim, and it runs."""

from __future__ import annotations

import torch

from benchmarks.layer_microbench import forwards, main, measure, tensors


def test_each_path_computes_its_layer():
    t = tensors(tokens=8, rank=2)
    x = t["x"]
    expected = {
        "KronA": x @ torch.kron(t["krona_A"], t["krona_B"]).T,
        "LoRA": x @ (t["lora_B"] @ t["lora_A"]).T,
        "Linear": x @ t["weight"].T + t["bias"],
    }
    for name, forward in forwards(t).items():
        torch.testing.assert_close(forward(), expected[name], rtol=1e-4, atol=1e-3)


def test_rounds_time_every_path_and_print_the_ratios(capsys):
    times = measure(tokens=8, rank=2, rounds=3, warmup=0)
    assert {name: len(values) for name, values in times.items()} == {
        "KronA": 3,
        "LoRA": 3,
        "Linear": 3,
    }
    assert all(t > 0 for values in times.values() for t in values)
    main(["--tokens", "8", "--rounds", "2", "--warmup", "0"])
    out = capsys.readouterr().out
    for line in ("KronA / LoRA:", "KronA / Linear:", "LoRA / Linear:"):
        assert line in out

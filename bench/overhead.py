"""Benchmark 1 (issue #7): what tuneyard costs a training run, against the same training work
through a plain transformers ``Trainer`` script and through a plain PyTorch loop.

The same work in all three: the model (``--model``; default the tests' tiny seeded random
Llama, hidden 64, 2 layers), the data (WordNet glosses in the instruction format; the
examples, their tokens and padding, and their order: the Trainer's seeded sampler, which the
plain loop reproduces), ``--micro-batch``, ``--steps``, seed, learning rate and its linear
decay, AdamW (fused on CUDA, as the runner), gradient clipping at 1.0, the loss read every
step, ``training.gradient_checkpointing`` and ``training.torch_compile`` (``--set``); fp32 on
CPU, bf16 autocast on CUDA. Each way runs in a process of its own, interleaved (tuneyard, Trainer,
loop, tuneyard, …, ``--repeat`` times):

- tuneyard: ``tuneyard run`` (the real CLI, foreground, in a scratch registry); a step ends
  at the ``at`` of its metrics in the registry, its tokens are its ``tokens_per_s`` × the
  time since the previous step;
- Trainer: ``Trainer(model, TrainingArguments(...), train_dataset, data_collator).train()``
  with the spec's hyper-parameters, no progress output and no integrations; a step ends when
  the Trainer logs it (``on_log``);
- loop: ``DataLoader`` → forward → ``backward`` → ``clip_grad_norm_`` → ``AdamW.step`` →
  scheduler step → ``loss.item()``.

Model and data are built for the Trainer and the loop by tuneyard's own loaders (untimed), so
all three train the same tokens; the losses at the last step agree when they do. Tokens/s is
non-padding tokens over wall time, from the end of step ``--warmup`` to the end of the last
step (see ``common.py``). Target: tuneyard ≥ 0.97× the plain Trainer script.

Usage: ``.venv/bin/python bench/overhead.py [--model tiny|smollm2|smollm2-random]
[--strategy full|lora] [--steps 200] [--warmup 20] [--micro-batch 4] [--repeat 3]
[--set training.KEY=VALUE ...]``
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import MODELS, build, logged_steps, run_spec, steady_tokens_per_s, table, tuneyard_run

WAYS = ("tuneyard", "Trainer", "loop")


def trainer(spec: dict[str, Any]) -> dict[str, list[float]]:
    """The plain transformers Trainer script."""
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    comp, model, data = build(spec)
    t = comp.spec.training
    ends, tokens, losses = [], [], []

    def collate(rows):
        batch = data.train_collator(rows)
        tokens.append(int(batch["attention_mask"].sum()))
        return batch

    class Clock(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                ends.append(time.perf_counter())
                losses.append(logs["loss"])

    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(), max_steps=t.max_steps,
        per_device_train_batch_size=t.micro_batch_size, learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler, warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm, logging_steps=1,
        seed=t.seed, bf16=t.precision == "bf16", use_cpu=comp.device == "cpu",
        optim="adamw_torch_fused" if comp.device == "cuda" else "adamw_torch",
        gradient_checkpointing=t.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False}, torch_compile=t.torch_compile,
        save_strategy="no", report_to=[], disable_tqdm=True, remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=data.train_rows,
                      data_collator=collate, callbacks=[Clock()])
    trainer.remove_callback(PrinterCallback)  # no per-step prints
    trainer.train()
    return {"ends": ends, "tokens": tokens[:len(ends)], "loss": losses}


def loop(spec: dict[str, Any]) -> dict[str, list[float]]:
    """The plain PyTorch loop."""
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    comp, model, data = build(spec)
    t = comp.spec.training
    dev = torch.device(comp.device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay,
                            fused=dev.type == "cuda")
    if t.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    forward = torch.compile(model) if t.torch_compile else model
    warm, total = t.warmup_steps, t.max_steps

    def linear(step: int) -> float:  # transformers' get_linear_schedule_with_warmup
        if step < warm:
            return step / max(1, warm)
        return max(0.0, (total - step) / max(1, total - warm))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, linear)
    order = RandomSampler(data.train_rows, generator=torch.Generator().manual_seed(t.seed))
    loader = DataLoader(data.train_rows, batch_size=t.micro_batch_size, sampler=order,
                        collate_fn=data.train_collator, pin_memory=dev.type == "cuda")
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=t.precision == "bf16")
    ends, tokens, losses = [], [], []
    model.train()
    for batch in itertools.islice(loader, total):  # run_spec: one epoch holds every step
        tokens.append(int(batch["attention_mask"].sum()))
        batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
        with autocast:
            loss = forward(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        ends.append(time.perf_counter())
    return {"ends": ends, "tokens": tokens, "loss": losses}


def one(way: str, spec: dict[str, Any], registry: Path) -> dict[str, list[float]]:
    """One run of ``way``, each in a process of its own."""
    if way == "tuneyard":
        return logged_steps(registry, tuneyard_run(spec, registry))
    path = registry.parent / "spec.json"
    path.write_text(json.dumps(spec))
    done = subprocess.run([sys.executable, __file__, "--way", way, "--spec", str(path)],
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"the {way} way failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=MODELS, default="tiny")
    parser.add_argument("--strategy", choices=("full", "lora"), default="full")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=20, help="first steps left out of tokens/s")
    parser.add_argument("--micro-batch", type=int, default=4, help="examples per step")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each way, interleaved")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="a spec override for all three ways, e.g. "
                        "training.torch_compile=true (repeatable)")
    parser.add_argument("--way", choices=("Trainer", "loop"), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.way:  # a child: one run, its steps as JSON on the last line of stdout
        got = (trainer if args.way == "Trainer" else loop)(json.loads(Path(args.spec).read_text()))
        print(json.dumps(got))
        return

    import torch
    import transformers

    speeds: dict[str, list[float]] = {way: [] for way in WAYS}
    last_loss: dict[str, list[float]] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory() as tmp:
        spec = run_spec(args.model, args.strategy, args.steps, args.micro_batch,
                        Path(tmp) / "runs", "overhead", args.overrides)
        t = spec["training"]
        if (t.get("lr_scheduler", "linear"), t["gradient_accumulation_steps"],
                t["logging_steps"]) != ("linear", 1, 1):
            sys.exit("--set: the plain loop does the linear schedule, without gradient "
                     "accumulation, logging every step, only")
        for _ in range(args.repeat):  # interleaved: drift in the machine's load hits all alike
            for way in WAYS:
                got = one(way, spec, Path(tmp) / "registry.db")
                speeds[way].append(steady_tokens_per_s(got["ends"], got["tokens"], args.warmup))
                last_loss[way].append(got["loss"][-1])
    print(f"{args.model} ({args.strategy}), WordNet instruction rows, micro-batch "
          f"{args.micro_batch}, steps {args.warmup + 1}-{args.steps} timed, {t['device']} "
          f"{t['precision']}, {args.repeat} interleaved runs per way; `nproc` = {os.cpu_count()}"
          f", torch {torch.__version__}, transformers {transformers.__version__}"
          + "".join(f"; {item}" for item in args.overrides) + "\n")
    median = {way: statistics.median(s) for way, s in speeds.items()}
    rows = [[way, f"{median[way]:,.0f}", f"{min(s):,.0f}", f"{max(s):,.0f}",
             f"{median[way] / median['Trainer']:.3f}", f"{median[way] / median['loop']:.3f}",
             " ".join(f"{x:.4f}" for x in last_loss[way])]
            for way, s in speeds.items()]
    print(table(["way", "tokens/s (median)", "min", "max", "× Trainer", "× loop",
                 f"loss at step {args.steps}"], rows))
    ratio = median["tuneyard"] / median["Trainer"]
    print(f"\ntarget: tuneyard ≥ 0.97× the plain Trainer script: "
          f"{ratio:.3f}× ({'met' if ratio >= 0.97 else 'missed'})")


if __name__ == "__main__":
    main()

"""Benchmark: what the registry costs a training step, and the registry under concurrent load
(issue #6: registry write cost per step < 1% of step time on the tiny model; three runs
writing while the TUI and ``tuneyard runs list`` read: no ``database is locked``, no lost row).

    python bench/registry_write.py [--steps 300] [--repeat 3]
    python bench/registry_write.py --minutes 3

Default mode: trains the tests' tiny random Llama (hidden 64, 2 layers, vocabulary 300),
built here, on random tokens (micro-batch 4 × 64 tokens, CPU, fp32, full fine-tuning) through
transformers' ``Trainer`` with ``logging_steps=1``, ``--steps`` steps a run, ``--repeat``
times each of: no registry callback; the runner's own ``RegistryCallback`` (one
transaction of the logged steps' metrics every ``tuneyard.core.run.train.FLUSH_S`` seconds, with the
``StopRequest`` read of ``runs.stop_requested_at``); the same while a reader process polls
what the TUI's Runs list and run monitor read, 10 times a second. The registry's time is
measured around those two calls where they fall and divided by the mean step time (wall
time between two steps' ends).

``--minutes N`` runs the three-writers test of ``tests/test_concurrency.py`` for N minutes
(three writer processes in a tight loop, ``tuneyard runs list --json`` over and over, the
headless TUI switching between the Runs list and a run's monitor) and tables what
each writer wrote, what the registry holds, the per-step registry latency and the largest
size the write-ahead log reached.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VOCAB, SEQ_LEN, BATCH = 300, 64, 4

#: The reads of the TUI's Runs list and run monitor polls (tui/screens/runs.py and run.py
#: ``fetch``), at 10 Hz, on the newest run.
READER = """
import sys, time
from tuneyard.core.registry import Registry
registry, after = Registry(sys.argv[1], create=False), 0
while True:
    runs = registry.list_runs()
    if runs:
        run = registry.get_run(runs[0]["id"])
        rows = registry.metrics_since(run["id"], after)
        after = rows[-1]["id"] if rows else after
        registry.system_metrics_since(run["id"])
        registry.evaluations(run["id"])
        registry.checkpoints(run["id"])
    time.sleep(0.1)
"""


def tiny_model():
    """The tests' tiny Llama (tests/conftest.py ``tiny_model_dir``'s config), random init."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True))


class Timed:
    """Wraps a registry's ``add_steps`` and ``stop_requested`` and records, per step, the
    seconds spent in them."""

    def __init__(self, registry) -> None:
        self.per_step: dict[int, float] = {}
        self.step = 0
        for name in ("add_steps", "stop_requested"):
            setattr(registry, name, self._wrap(getattr(registry, name)))

    def _wrap(self, method):
        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.per_step[self.step] = (self.per_step.get(self.step, 0.0)
                                            + time.perf_counter() - t)
        return timed


def train(model, steps: int, registry=None, folder: Path | None = None) -> dict[str, list]:
    """``steps`` Trainer steps; returns the step times (s) and, with a registry, the registry
    seconds of each step."""
    import torch
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    from tuneyard.core.plugins import Plugins
    from tuneyard.core.run.lifecycle import StopRequest
    from tuneyard.core.run.progress import LogProgress
    from tuneyard.core.run.train import RegistryCallback

    g = torch.Generator().manual_seed(1)
    rows = [{"input_ids": ids, "labels": ids, "attention_mask": torch.ones(SEQ_LEN, dtype=int)}
            for ids in torch.randint(3, VOCAB, (steps * BATCH, SEQ_LEN), generator=g)]
    ends: list[float] = []
    timed = None

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if timed:
                timed.step = state.global_step + 1

        def on_step_end(self, args, state, control, **kwargs):
            ends.append(time.perf_counter())

    callbacks = [Clock()]
    if registry is not None:
        run_id = registry.create_run({"name": "bench", "training": {"max_steps": steps}},
                                     status="running", pid=os.getpid())
        timed = Timed(registry)
        callbacks.insert(0, RegistryCallback(registry, Plugins(), run_id, LogProgress(),
                                             StopRequest(registry, run_id)))
    args = TrainingArguments(
        output_dir=str(folder or tempfile.mkdtemp()), max_steps=steps,
        per_device_train_batch_size=BATCH, learning_rate=1e-3, logging_steps=1,
        save_strategy="no", report_to=[], disable_tqdm=True, use_cpu=True,
        include_num_input_tokens_seen="non_padding", dataloader_num_workers=0, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=rows, callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)  # as the runner does: no raw dict prints
    trainer.train()
    if registry is not None:
        registry.update_run(run_id, status="completed")
    return {"step_s": [b - a for a, b in zip(ends, ends[1:])],
            "registry_s": [timed.per_step.get(s, 0.0) for s in range(2, len(ends) + 1)]
            if timed else []}


def cost(steps: int, repeat: int) -> None:
    import transformers

    from tuneyard.core.registry import Registry

    transformers.logging.set_verbosity_error()
    folder = Path(tempfile.mkdtemp())
    registry = Registry(folder / "registry.db")
    model = tiny_model()
    train(model, 20)  # warm-up: first-step allocations, lazy imports
    setups = [("no registry callback", False, False),  # (name, callback, reader)
              ("RegistryCallback, no reader", True, False),
              ("RegistryCallback + TUI-like reader (10 Hz)", True, True)]
    results: dict[str, dict[str, list]] = {name: {"step_s": [], "registry_s": []}
                                           for name, _, _ in setups}
    for _ in range(repeat):  # interleaved, so drift in the machine's load hits all alike
        for name, callback, read in setups:
            reader = (subprocess.Popen([sys.executable, "-c", READER, str(registry.path)])
                      if read else None)
            try:
                got = train(model, steps, registry if callback else None, folder)
            finally:
                if reader:
                    reader.kill()
                    reader.wait()
            for key in got:
                results[name][key] += got[key]

    print(f"tiny Llama, micro-batch {BATCH} x {SEQ_LEN} tokens, CPU fp32, {steps} steps x "
          f"{repeat} runs per row; `nproc` = {os.cpu_count()}\n")
    print("| setup | steps | step ms, mean (median) | registry µs/step, mean | p50 | p99 |"
          " registry share of step |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        step_ms = statistics.mean(r["step_s"]) * 1e3
        row = [name, str(len(r["step_s"])),
               f"{step_ms:.2f} ({statistics.median(r['step_s']) * 1e3:.2f})"]
        if r["registry_s"]:
            us = sorted(s * 1e6 for s in r["registry_s"])
            mean_us = statistics.mean(us)
            row += [f"{mean_us:.0f}", f"{us[len(us) // 2]:.0f}", f"{us[int(len(us) * .99)]:.0f}",
                    f"{mean_us / 1e3 / step_ms * 100:.2f} %"]
        else:
            row += ["–"] * 4
        print("| " + " | ".join(row) + " |")
    print("\ntarget: registry share of step < 1 %")


def concurrency(minutes: float) -> int:
    folder = Path(tempfile.mkdtemp())
    report = folder / "report.json"
    env = {**os.environ, "TUNEYARD_CONCURRENCY_S": str(minutes * 60),
           "TUNEYARD_CONCURRENCY_REPORT": str(report)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           f"--basetemp={folder / 'tmp'}", "tests/test_concurrency.py::"
                           "test_three_writers_and_readers_lose_no_metric_rows_and_never_lock"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    shutil.rmtree(folder / "tmp", ignore_errors=True)  # the registry: hundreds of MB
    if not report.exists():
        print(done.stdout[-3000:], done.stderr[-3000:])
        return 1
    r = json.loads(report.read_text())
    print(f"{len(r['writers'])} writers in a tight loop for {r['seconds']:.0f} s, "
          f"`tuneyard runs list --json` {r['cli_calls']} times, TUI (0.1 s polls) "
          f"{r['tui'].get('runs_polls', '?')} Runs-list polls and "
          f"{r['tui'].get('run_polls', '?')} run-monitor polls; `nproc` = {os.cpu_count()}\n")
    print("| writer | steps | rows written | rows in registry | lost | per-step registry µs: "
          "p50 | p99 | max | mean |")
    print("|---|---|---|---|---|---|---|---|---|")
    for i, w in enumerate(r["writers"], 1):
        print(f"| {i} | {w['steps']:,} | {w['rows']:,} | {w['counted']:,} | "
              f"{w['rows'] - w['counted']} | {w['p50_us']:.0f} | {w['p99_us']:,.0f} | "
              f"{w['max_us']:,.0f} | {w['mean_us']:,.0f} |")
    print(f"\nlock errors: {r['lock_errors']}; TUI notifications: {len(r['tui']['notes'])}; "
          f"largest write-ahead log seen: {r['wal_bytes'] / 2**20:,.0f} MiB; "
          f"test: {done.stdout.strip().splitlines()[-1]}")
    return done.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per setup")
    parser.add_argument("--minutes", type=float,
                        help="run the concurrency scenario for this long instead")
    args = parser.parse_args()
    if args.minutes:
        return concurrency(args.minutes)
    cost(args.steps, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())

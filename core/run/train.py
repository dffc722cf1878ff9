"""Train stage: the training strategy's trainer (a ``transformers.Trainer`` subclass: its own, or
one of TRL's), with what every run needs applied to it by core: its arguments from
``training:``, a callback that records each step in the registry and fires the lifecycle hooks,
one that stops every rank at the same step, evaluation under a forked RNG, and checkpoints
written atomically with the tokenizer."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tuneyard.core.atomic import remove_partials
from tuneyard.core.distributed import SINGLE, Ranks
from tuneyard.core.engine import Composition
from tuneyard.core.paths import make_dir
from tuneyard.core.plugins import Plugins
from tuneyard.core.registry import STEP_METRICS, Registry, now
from tuneyard.core.run.checkpoints import written
from tuneyard.core.run.data import Data
from tuneyard.core.run.guard import component_failed, guarded
from tuneyard.core.run.lifecycle import StopRequest
from tuneyard.core.run.progress import Progress

#: Logged steps are written to the registry at most this often (seconds), in one transaction,
#: and the registry's stop request is read as often: a transaction per step would cost ~3% of a
#: tiny model's 11 ms step on 2 CPU cores, batched it is <1% (bench/registry_write.py).
FLUSH_S = 0.25



def train(comp: Composition, registry: Registry | None, run_id: str, out: Path, data: Data,
          model: Any, tokenizer: Any, plugins: Plugins, progress: Progress, stop: StopRequest,
          checkpoint: Path | None, ranks: Ranks = SINGLE) -> Any:
    """Train ``model`` with the strategy's trainer (from ``checkpoint`` when resuming) and save
    it to ``<output_dir>/final``. Returns the trained model (the trainer's, which a strategy's
    trainer may have wrapped), or ``None`` when a stop request ended training first (a
    checkpoint is saved).

    Every checkpoint and ``final/`` is written under a temporary name and renamed into place
    (:func:`~tuneyard.core.atomic.written_atomically`), with the run's tokenizer. Under
    torchrun every rank calls this; rank 0 records.

    Raises:
        CheckpointError: a checkpoint or ``final/`` could not be written (disk full, read-only
            folder); the previous checkpoint is intact.
        PluginFailed: the strategy's trainer, arguments or collator could not be made.
    """
    from transformers import PrinterCallback, Trainer

    t, folder, strategy = comp.spec.training, out / "checkpoints", comp.strategy
    args = training_arguments(comp, folder)
    agreed = StopCallback(stop, ranks)
    callbacks = [agreed]
    if ranks.main:
        callback = RegistryCallback(registry, plugins, run_id, progress, stop, strategy.metrics)
        callbacks.insert(0, callback)  # its registry read of a stop request comes first
    base = guarded(strategy, comp.plugin_of, "name its trainer", strategy.trainer_class)
    if not (isinstance(base, type) and issubclass(base, Trainer)):
        raise component_failed(strategy, comp.plugin_of, f"trainer_class() returned {base!r}, "
                               "not a transformers.Trainer subclass")
    run_trainer = with_run_behaviour(base, t.seed, folder, tokenizer, ranks)
    extra = guarded(strategy, comp.plugin_of, "give its trainer's arguments",
                    strategy.trainer_kwargs, model, tokenizer)
    trainer = guarded(strategy, comp.plugin_of, f"make its trainer ({base.__name__})",
                      run_trainer, model=model, args=args, train_dataset=data.train_rows,
                      eval_dataset=data.trainer_eval_rows if t.eval_steps else None,
                      data_collator=data.train_collator, callbacks=callbacks, **extra)
    trainer.remove_callback(PrinterCallback)  # our callback reports; no raw dict prints
    if trainer.args.world_size != ranks.world_size:  # a launch path that fell back to one
        raise RuntimeError(f"the Trainer trains on {trainer.args.world_size} process(es), "
                           f"torchrun started {ranks.world_size}")
    if ranks.main:
        make_dir(folder)
        remove_partials(folder)  # what a killed process left half-written
        if checkpoint is not None:
            step = int(checkpoint.name.removeprefix("checkpoint-"))
            registry.delete_metrics_after(run_id, step)  # the resumed run logs them again
            progress.phase(f"resuming from step {step}")
        else:
            registry.delete_metrics_after(run_id, 0)  # a run resumed without a checkpoint
        if ranks.distributed:
            progress.phase(f"training on {ranks.world_size} processes")
    progress.phase("training")
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    finally:
        if ranks.main:
            callback.flush()  # the last steps, also of a training that failed
    if agreed.stopped and trainer.state.global_step < t.max_steps:
        progress.phase(f"stopped at step {trainer.state.global_step} (checkpoint saved)")
        return None

    final = out / "final"
    with written(final, ranks) as partial:
        trainer.save_model(str(partial))
        if ranks.main:
            tokenizer.save_pretrained(str(partial))
    if ranks.main:
        step = trainer.state.global_step
        registry.add_checkpoint(run_id, step, str(final))
        registry.add_artifact(run_id, strategy.saves, str(final))
        plugins.fire("on_checkpoint_saved", run_id=run_id, step=step, path=str(final))
    return trainer.model


def training_arguments(comp: Composition, folder: Path) -> Any:
    """The trainer's arguments: ``training:`` as transformers ``TrainingArguments`` keywords,
    made into the strategy's class (:meth:`TrainingStrategy.training_arguments`, e.g. TRL's
    ``DPOConfig`` with its ``beta``). The optimizer is ``training.optim``, by default PyTorch's
    fused AdamW on a GPU (one kernel for all parameters; transformers
    ``optim="adamw_torch_fused"``) and its plain AdamW on CPU."""
    t = comp.spec.training
    core = dict(
        output_dir=str(folder), max_steps=t.max_steps,
        per_device_train_batch_size=t.micro_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_steps, weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm,
        logging_steps=t.logging_steps, save_strategy="steps" if t.save_steps else "no",
        save_steps=t.save_steps or 500, seed=t.seed, data_seed=t.seed,
        bf16=t.precision == "bf16", fp16=t.precision == "fp16", use_cpu=comp.device == "cpu",
        report_to=[], disable_tqdm=True, remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding", dataloader_num_workers=0,
        eval_strategy="steps" if t.eval_steps else "no", eval_steps=t.eval_steps,
        per_device_eval_batch_size=t.eval_batch_size, prediction_loss_only=True,
        optim=t.optim or ("adamw_torch_fused" if comp.device == "cuda" else "adamw_torch"),
        gradient_checkpointing=t.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False}, torch_compile=t.torch_compile,
        fsdp=t.fsdp, fsdp_config=t.fsdp_config or None,
    )
    return guarded(comp.strategy, comp.plugin_of, "make its training arguments",
                   comp.strategy.training_arguments, t, **core)


def with_run_behaviour(base: type, seed: int, folder: Path, tokenizer: Any,
                       ranks: Ranks) -> type:
    """``base`` (the strategy's trainer class) with what core adds to every trainer:

    - evaluation (``training.eval_steps``) runs under a forked RNG seeded with ``seed``: every
      evaluation masks the held-out set the same way (masked LM), and training's random
      stream is the same with or without evaluations;
    - a checkpoint is written to a temporary folder and renamed into place once complete,
      with the tokenizer (a trained one exists nowhere else).
    """
    import torch

    class RunTrainer(base):
        staging: Path | None = None

        def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
            with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
                torch.manual_seed(seed)
                return super().evaluate(*args, **kwargs)

        def _get_output_dir(self, trial: Any) -> str:
            return str(self.staging) if self.staging else super()._get_output_dir(trial)

        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            name = f"checkpoint-{self.state.global_step}"
            with written(folder / name, ranks) as partial:
                self.staging = partial.parent  # the Trainer writes <staging>/<name>
                try:
                    super()._save_checkpoint(model, trial)
                finally:
                    self.staging = None
                if ranks.main:
                    tokenizer.save_pretrained(str(partial))

    RunTrainer.__name__ = RunTrainer.__qualname__ = f"Run{base.__name__}"
    return RunTrainer


def RegistryCallback(registry: Registry, plugins: Plugins, run_id: str, progress: Progress,
                     stop: StopRequest, extra: tuple[str, ...] = ()) -> Any:
    """A ``TrainerCallback`` that records each logged step and checkpoint (rank 0's).

    Per logged step it records :data:`~tuneyard.core.registry.STEP_METRICS`: the ``loss``,
    ``learning_rate``, ``grad_norm`` and ``epoch`` the trainer logged, and ``tokens_per_s``
    (non-padding input tokens per second of wall time since the previous log); and the
    strategy's own metrics (``extra``, :attr:`TrainingStrategy.metrics`) that it logged. The steps are
    written every :data:`FLUSH_S` seconds in one transaction (:meth:`Registry.add_steps`), and
    before each checkpoint, after each evaluation and at the end of training (:meth:`flush`),
    so a checkpoint never has steps the registry lacks; ``on_step_end`` fires for each step
    once it is written. After each trainer evaluation (``training.eval_steps``) it records
    ``eval_loss`` (the mean of the model's loss over the held-out batches, transformers
    ``Trainer.evaluate``) and ``eval_<name>`` of each of ``extra``. Each write also reads the
    registry's stop request (:meth:`StopRequest.poll`; :class:`StopCallback` acts on it).
    """
    from transformers import TrainerCallback

    logged = (*(m for m in STEP_METRICS if m != "tokens_per_s"), *extra)
    evaluated = ("eval_loss", *(f"eval_{name}" for name in extra))

    class _Callback(TrainerCallback):
        def __init__(self) -> None:
            self.last_time = time.perf_counter()
            self.last_tokens = 0
            self.pending: list[tuple[int, dict[str, float], str]] = []
            self.flushed_at = time.perf_counter()

        def flush(self) -> None:
            """Write the pending rows, fire ``on_step_end`` for their steps and read the
            registry's stop request."""
            written, self.pending = self.pending, []
            registry.add_steps(run_id, written)
            for step, metrics, _ in written:
                if "loss" in metrics:  # a logged step, not an evaluation's row
                    plugins.fire("on_step_end", run_id=run_id, step=step, metrics=metrics)
            self.flushed_at = time.perf_counter()
            stop.poll()

        def on_train_begin(self, args, state, control, **kwargs):
            self.last_tokens = int(state.num_input_tokens_seen)  # nonzero when resuming

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "loss" not in logs:
                return
            t = time.perf_counter()
            tokens = int(state.num_input_tokens_seen)
            metrics = {k: float(logs[k]) for k in logged if logs.get(k) is not None}
            metrics["tokens_per_s"] = (tokens - self.last_tokens) / max(t - self.last_time, 1e-9)
            self.last_time, self.last_tokens = t, tokens
            self.pending.append((state.global_step, metrics, now()))
            progress.step(state.global_step, state.max_steps, metrics)
            if t - self.flushed_at >= FLUSH_S:
                self.flush()

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            found = {k: float(metrics[k]) for k in evaluated if (metrics or {}).get(k) is not None}
            if found:
                self.pending.append((state.global_step, found, now()))
            self.flush()
            self.last_time = time.perf_counter()  # evaluation time is not training time

        def on_save(self, args, state, control, **kwargs):
            self.flush()
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            registry.add_checkpoint(run_id, state.global_step, str(path))
            plugins.fire("on_checkpoint_saved", run_id=run_id, step=state.global_step,
                         path=str(path))

    return _Callback()


def StopCallback(stop: StopRequest, ranks: Ranks) -> Any:
    """A ``TrainerCallback`` that asks the Trainer to save a checkpoint and end after this
    step (or this evaluation) once any rank was asked to stop; under torchrun the ranks agree
    on it at every step (:meth:`Ranks.any`), so all stop at the same one. It only sets flags
    (the ``TrainerCallback`` contract); ``stopped`` tells whether it did."""
    from transformers import TrainerCallback

    class _Callback(TrainerCallback):
        stopped = False

        def on_step_end(self, args, state, control, **kwargs):
            if ranks.any(bool(stop)):
                self.stopped = control.should_save = control.should_training_stop = True

        def on_evaluate(self, args, state, control, **kwargs):
            self.on_step_end(args, state, control)  # a stop request that came meanwhile

    return _Callback()

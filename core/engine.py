"""Compose a run from a spec and launch it: in the foreground, or detached as its own process.

Composition resolves every component name through the plugin manager, validates each
component's options with its ``Options`` model, and checks what can be checked before anything
heavy loads (precision vs. device). All of it raises :class:`SpecError`/:class:`PluginError`
naming the key to fix; nothing is written to the registry until the spec is valid.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneyard.core.components import (DatasetSource, Evaluator, ModelProvider, Task,
                                     TrainingStrategy)
from tuneyard.core.distributed import Launch, run_ranks
from tuneyard.core.errors import PluginError, RankFailed, SpecError
from tuneyard.core.formats import FORMAT_TASKS
from tuneyard.core.paths import make_dir
from tuneyard.core.plugins import Plugins
from tuneyard.core.registry import Registry, now
from tuneyard.core.spec import OPTIMIZER_PACKAGES, RunSpec, validate_options


@dataclass
class Composition:
    """The instantiated components of a run, each with the name of the plugin behind it."""

    spec: RunSpec
    source: DatasetSource
    eval_source: DatasetSource | None  # dataset.eval's source; None: held out by eval_split
    provider: ModelProvider
    strategy: TrainingStrategy
    evaluators: list[Evaluator]
    plugin_of: dict[str, str]  # "kind:name" → plugin name
    device: str
    task: Task  # what the model is trained to predict: the strategy's, else the format's


def compose(spec: RunSpec, plugins: Plugins, trains: bool = True) -> Composition:
    """Resolve and instantiate the components of ``spec``; with ``trains`` (a run about to
    train, not the evaluation, export or preview of one) also check that the optimizer and the
    strategy can train on this machine.

    Raises:
        PluginError: an unknown component name (lists the valid ones, suggests the closest).
        SpecError: invalid component options (``strategy.options.r``), a dataset format the
            strategy cannot train on (or whose task it does not train), a task the model provider cannot build or an evaluator
            cannot judge, ``training.packing`` on a run it does not apply to, a precision
            the device does not support, an optimizer it cannot run, or what the strategy
            refuses on this device (:meth:`TrainingStrategy.check`).
    """
    plugin_of: dict[str, str] = {}
    origin = spec._origin

    def make(kind: str, name: str, options: dict[str, Any], key: str) -> Any:
        try:
            info = plugins.get(kind, name)
        except PluginError as exc:
            raise PluginError(f"{origin.where(key)}: {key}: {exc}") from None
        plugin_of[f"{kind}:{name}"] = info.plugin
        prefix = key.rpartition(".")[0] + ".options"
        return info.cls(validate_options(info.cls.Options, options, prefix, origin))

    src = make("dataset-source", spec.dataset.source, spec.dataset.options, "dataset.source")
    held_out = spec.dataset.eval
    eval_src = held_out and make("dataset-source", held_out.source, held_out.options,
                                 "dataset.eval.source")
    provider = make("model-provider", spec.model.provider, spec.model.options, "model.provider")
    strategy = make("strategy", spec.strategy.name, spec.strategy.options, "strategy.name")
    evaluators = [
        make("evaluator", e.name, e.options, f"evaluators.{i}.name")
        for i, e in enumerate(spec.evaluators)
    ]
    if strategy.formats and spec.dataset.format not in strategy.formats:
        raise SpecError(
            f"{origin.where('dataset.format')}: dataset.format: strategy '{strategy.name}' "
            f"trains on format {' or '.join(strategy.formats)}, not '{spec.dataset.format}'"
        )
    task = strategy.task or FORMAT_TASKS[spec.dataset.format]
    if strategy.tasks is not None and task not in strategy.tasks:
        raise SpecError(
            f"{origin.where('dataset.format')}: dataset.format: strategy '{strategy.name}' "
            f"trains {' or '.join(strategy.tasks)} models, and format '{spec.dataset.format}' "
            f"is for a {task} model")
    check_task(spec, task, provider, strategy, evaluators)
    device = check_device(spec)
    if trains:
        check_optimizer(spec, device)
        try:
            strategy.check(device)
        except SpecError as exc:
            raise SpecError(f"{origin.where('strategy.options')}: {exc}") from None
    return Composition(spec, src, eval_src, provider, strategy, evaluators, plugin_of, device,
                       task)


def check_task(spec: RunSpec, task: Task, provider: ModelProvider, strategy: TrainingStrategy,
               evaluators: list[Evaluator]) -> None:
    """Check that the model provider builds, and each evaluator judges, a ``task`` model (and
    rows of ``dataset.format``), and that ``training.packing`` applies (causal-LM fine-tuning
    on core's rows).

    Raises:
        SpecError: naming the key to change.
    """
    where = spec._origin.where
    why = (f"strategy '{strategy.name}'" if strategy.task
           else f"dataset.format '{spec.dataset.format}'")
    if task not in provider.tasks:
        raise SpecError(f"{where('model.provider')}: model.provider: '{provider.name}' builds "
                        f"{', '.join(provider.tasks)} models, not the {task} model {why} "
                        "trains")
    for i, ev in enumerate(evaluators):
        if ev.tasks is not None and task not in ev.tasks:
            raise SpecError(f"{where(f'evaluators.{i}.name')}: evaluators.{i}.name: '{ev.name}' "
                            f"judges {', '.join(ev.tasks)} models, not the {task} model {why} "
                            "trains")
        if ev.formats is not None and spec.dataset.format not in ev.formats:
            raise SpecError(f"{where(f'evaluators.{i}.name')}: evaluators.{i}.name: '{ev.name}' "
                            f"judges rows of format {' or '.join(ev.formats)}, not "
                            f"'{spec.dataset.format}'")
    lays_out = type(strategy).dataset is not TrainingStrategy.dataset
    if spec.training.packing and (task != "causal-lm" or strategy.pack or lays_out):
        reason = (f"strategy '{strategy.name}' already packs text into blocks" if strategy.pack
                  else f"strategy '{strategy.name}' lays out its own training data" if lays_out
                  else f"it packs causal-LM examples, and this run trains {task}")
        raise SpecError(f"{where('training.packing')}: training.packing: {reason}; remove it")


def check_device(spec: RunSpec) -> str:
    """The device a run will use (``cpu``/``cuda``), after checking precision against it.

    Raises:
        SpecError: ``training.device: cuda`` without CUDA; ``training.precision: fp16`` without
            CUDA (PyTorch has no fp16 mixed precision on CPU); ``bf16`` on a GPU without bf16.
    """
    import torch

    t, where = spec.training, spec._origin.where
    cuda = torch.cuda.is_available()
    if t.device == "cuda" and not cuda:
        raise SpecError(f"{where('training.device')}: training.device: cuda requested but no "
                        "CUDA device is available (use auto or cpu)")
    device = "cuda" if t.device == "cuda" or (t.device == "auto" and cuda) else "cpu"
    if t.precision == "fp16" and device != "cuda":
        raise SpecError(f"{where('training.precision')}: training.precision: fp16 needs a CUDA "
                        "GPU; on CPU use fp32 or bf16")
    if t.precision == "bf16" and device == "cuda" and not torch.cuda.is_bf16_supported():
        raise SpecError(f"{where('training.precision')}: training.precision: this GPU has no "
                        "bf16; use fp16 or fp32")
    return device


def check_optimizer(spec: RunSpec, device: str) -> None:
    """Check that ``training.optim`` can run here: the package it needs is installed
    (:data:`~tuneyard.core.spec.OPTIMIZER_PACKAGES`), and a paged optimizer (bitsandbytes
    pages its state between GPU and CPU memory) has a CUDA device.

    Raises:
        SpecError: naming ``training.optim`` and what to install or change.
    """
    import importlib.util

    optim, where = spec.training.optim, spec._origin.where("training.optim")
    package = OPTIMIZER_PACKAGES.get(optim)
    if package and importlib.util.find_spec(package) is None:
        raise SpecError(f"{where}: training.optim: {optim} needs the package {package}, which "
                        f"is not installed (pip install {package}); or leave optim out for "
                        "AdamW")
    if optim and optim.startswith("paged_") and device != "cuda":
        raise SpecError(f"{where}: training.optim: {optim} pages optimizer state out of GPU "
                        f"memory and needs a CUDA GPU; this run's device is {device}")


def create_run(spec: RunSpec, registry: Registry) -> tuple[str, Path]:
    """Insert a queued run for ``spec`` and return its id and output folder
    (``<spec.output_dir>/<run-id>``, absolute).

    Raises:
        SpecError: ``output_dir`` cannot be created or written (checked before the run exists).
    """
    root = Path(spec.output_dir)
    try:
        make_dir(root)
        if not os.access(root, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as exc:
        raise SpecError(f"{spec._origin.where('output_dir')}: output_dir: cannot write to "
                        f"'{root}': {exc.strerror}") from None
    run_id = registry.create_run(spec.model_dump(mode="json"))
    out = (Path(spec.output_dir) / run_id).resolve()
    registry.update_run(run_id, output_dir=str(out), dataset_source=spec.dataset.source,
                        strategy=spec.strategy.name)
    return run_id, out


def launch_detached(run_id: str, registry: Registry, out: Path, resume: bool = False) -> int:
    """Start ``python -m tuneyard.core.run RUN_ID [--resume]`` in a new session (so closing
    the terminal or the TUI does not stop it). The run logs to ``<out>/run.log``; its stdout
    and stderr (warnings, tracebacks) go to ``<out>/console.log``. Returns the process id."""
    make_dir(out)
    with open(out / "console.log", "ab") as console:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tuneyard.core.run", run_id,
             "--registry", str(registry.path.resolve()), *(["--resume"] if resume else [])],
            stdout=console, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    registry.update_run(run_id, pid=proc.pid)
    return proc.pid


def launch_ranks(registry: Registry | None, run_id: str | None, launch: Launch, device: str,
                 resume: bool = False, poll: Any = lambda: None) -> None:
    """Run ``run_id`` on this node's ``launch.nproc_per_node`` processes through torchrun
    (:mod:`tuneyard.core.distributed`) and wait, calling ``poll`` meanwhile. On node 0 the
    run's rank 0 is one of them and records the run in ``registry``; on other nodes
    (``registry`` and ``run_id`` are ``None``) the processes get the run from rank 0.

    Raises:
        RankFailed: a process failed (any rank, any node); on node 0 the run is then
            ``failed`` with that rank's own error (not the errors of the ranks torchrun
            stopped because of it), unless rank 0 ended it otherwise itself (a resume it
            refused leaves the run as it was).
    """
    worker = ["--device", device]
    if registry is not None:
        worker = [run_id, "--registry", str(registry.path.resolve()), *worker,
                  *(["--resume"] if resume else [])]
    failure = run_ranks(launch, worker, poll)
    if failure is None:
        return
    if registry is not None:
        if not failure.rank0_recorded:  # rank 0 died (a signal): the run is still "running"
            registry.update_run(run_id, status="failed", error=str(failure), ended_at=now())
        elif failure.rank != 0 and registry.get_run(run_id)["status"] == "failed":
            registry.update_run(run_id, error=str(failure))  # the cause, not rank 0's echo
    what = f"run {run_id}" if run_id else "the run"
    raise RankFailed(f"{what} failed: {failure}", failure.exit_code)

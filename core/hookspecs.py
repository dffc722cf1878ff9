"""Every hook tuneyard calls. The only list of hooks.

Hooks are called with keyword arguments, so an implementation may accept a subset of them.
Registration hooks run in every process that builds the plugin manager (the CLI, the TUI and the
run process) when it starts; they must be cheap and must not import torch. Lifecycle hooks run in
the run process only. An exception raised by a lifecycle hook is reported with the plugin's name
(once per run) and does not stop the other implementations nor the run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("tuneyard")
hookimpl = pluggy.HookimplMarker("tuneyard")


@hookspec
def register_dataset_sources(register: Callable[[type], None]) -> None:
    """Register dataset sources.

    Runs when the plugin manager starts, in every process.

    Args:
        register: call it once per :class:`~tuneyard.core.components.DatasetSource` subclass.
            It raises nothing; a class that is not a valid dataset source, or whose ``name`` is
            already taken, is reported against this plugin and skipped.

    Returns:
        Nothing.
    """


@hookspec
def register_model_providers(register: Callable[[type], None]) -> None:
    """Register model providers.

    Runs when the plugin manager starts, in every process.

    Args:
        register: call it once per :class:`~tuneyard.core.components.ModelProvider` subclass;
            invalid or duplicate classes are reported against this plugin and skipped.

    Returns:
        Nothing.
    """


@hookspec
def register_training_strategies(register: Callable[[type], None]) -> None:
    """Register training strategies.

    Runs when the plugin manager starts, in every process.

    Args:
        register: call it once per :class:`~tuneyard.core.components.TrainingStrategy`
            subclass; invalid or duplicate classes are reported against this plugin and skipped.

    Returns:
        Nothing.
    """


@hookspec
def register_evaluators(register: Callable[[type], None]) -> None:
    """Register evaluators.

    Runs when the plugin manager starts, in every process.

    Args:
        register: call it once per :class:`~tuneyard.core.components.Evaluator` subclass;
            invalid or duplicate classes are reported against this plugin and skipped.

    Returns:
        Nothing.
    """


@hookspec
def register_device_monitors(register: Callable[[type], None]) -> None:
    """Register device monitors (GPU, CPU/RAM telemetry).

    Runs when the plugin manager starts, in every process.

    Args:
        register: call it once per :class:`~tuneyard.core.components.DeviceMonitor` subclass;
            invalid or duplicate classes are reported against this plugin and skipped.

    Returns:
        Nothing.
    """


@hookspec
def register_commands(cli: Any) -> None:
    """Add CLI commands.

    Runs in every process when the plugin manager loads (so a plugin that fails here is
    skipped everywhere), against a copy of the ``tuneyard`` command group; the CLI then adds
    the new commands before it parses the command line (it loads the plugins for a command
    line that names none of tuneyard's own commands: ``--help``, a plugin's command).
    Replacing a command that exists is a failure: the plugin is skipped.

    Args:
        cli: a ``click.Group`` holding tuneyard's commands; add commands with
            ``@cli.command()``. Import heavy modules inside the command, not at module level.

    Returns:
        Nothing.
    """


@hookspec
def on_run_start(run_id: str, spec: dict[str, Any], output_dir: str) -> None:
    """A run has loaded its data and model and is about to train.

    Runs in the run process, before the first step; again when the run is resumed
    (``tuneyard resume``).

    Args:
        run_id: the run's id in the registry.
        spec: the run spec as stored in the registry (the YAML as a dict, run-level defaults
            filled in; each component's ``options`` as written).
        output_dir: the run's folder (``runs/<run-id>/``), absolute path.

    Returns:
        Nothing.
    """


@hookspec
def on_step_end(run_id: str, step: int, metrics: dict[str, float]) -> None:
    """A logged optimizer step has ended.

    Runs in the run process, after every ``training.logging_steps`` optimizer steps (as the
    Trainer logs: with ``max_steps`` not a multiple of ``logging_steps`` the last steps are not
    reported), once the step's metrics are in the registry's ``metrics`` table. Steps are
    written in batches every 0.25 s (and before each checkpoint and at the end), so the hook
    may run up to that long after its step, for several steps in a row, in order.

    Args:
        run_id: the run's id.
        step: optimizer steps done so far (1-based).
        metrics: name → value, as recorded: ``loss`` (the strategy's training loss, e.g. the
            mean token cross-entropy in nats, averaged over the steps since the last report),
            ``learning_rate`` (the rate the step used), ``grad_norm``, ``tokens_per_s``
            (non-padding tokens per second), ``epoch``, and the strategy's own metrics
            (:attr:`TrainingStrategy.metrics`, e.g. DPO's ``rewards/accuracies``).

    Returns:
        Nothing.
    """


@hookspec
def on_evaluation(run_id: str, checkpoint: str, evaluator: str, metrics: dict[str, float]) -> None:
    """An evaluator has finished.

    Runs in the run process (or the ``tuneyard eval`` process), once per evaluator.

    Args:
        run_id: the run's id.
        checkpoint: what was evaluated: ``"base"`` (before training) or ``"final"``.
        evaluator: the evaluator's name.
        metrics: name → value as stored in the registry's ``evaluations`` table.

    Returns:
        Nothing.
    """


@hookspec
def on_checkpoint_saved(run_id: str, step: int, path: str) -> None:
    """A checkpoint folder has been written completely.

    Runs in the run process: after each Trainer checkpoint (``checkpoints/checkpoint-<step>``,
    every ``training.save_steps`` steps and at the last step when saving is on), then once for
    the final model (``final/``), so the last step may be reported twice.

    Args:
        run_id: the run's id.
        step: the optimizer step it holds.
        path: absolute path of the checkpoint folder (Hugging Face format).

    Returns:
        Nothing.
    """


@hookspec
def on_run_end(run_id: str, status: str, error: str | None) -> None:
    """A run has ended.

    Runs in the run process, once, after the registry row is final.

    Args:
        run_id: the run's id.
        status: ``completed``, ``failed`` or ``stopped``.
        error: the reason when ``status`` is ``failed``, or ``stopped`` by Ctrl-C
            (``"interrupted by the user (Ctrl-C)"``); else ``None``.

    Returns:
        Nothing.
    """

"""Evaluate stage: every evaluator of the spec on the held-out set, recorded in the registry
(before training as ``base``, after it as ``final``, and again by ``tuneyard eval``)."""

from __future__ import annotations

import json
from typing import Any

from tuneyard.core.components import EvalContext, EvalResult
from tuneyard.core.engine import Composition, compose
from tuneyard.core.errors import PluginError, SpecError
from tuneyard.core.plugins import Plugins, get_plugins
from tuneyard.core.registry import Registry
from tuneyard.core.run.checkpoints import check_same_data
from tuneyard.core.run.data import Data
from tuneyard.core.run.guard import component_failed, guarded
from tuneyard.core.run.model import trained_model
from tuneyard.core.run.progress import LogProgress, Progress, quiet_libraries
from tuneyard.core.spec import EvaluatorSpec, RunSpec


def evaluate(comp: Composition, plugins: Plugins, registry: Registry, run_id: str, model: Any,
             tokenizer: Any, data: Data, checkpoint: str, progress: Progress,
             missing_only: bool = False) -> dict[str, dict[str, float]]:
    """Run every evaluator of the spec on the held-out set and record the results; with
    ``missing_only``, only those with no result at ``checkpoint`` yet (a resumed run)."""
    import torch

    done = {e["evaluator"] for e in registry.evaluations(run_id)
            if e["checkpoint"] == checkpoint} if missing_only else set()
    results = {}
    model.eval()
    for ev in comp.evaluators:
        if ev.name in done:
            continue
        progress.phase(f"evaluating {checkpoint}: {ev.name}")
        t = comp.spec.training
        ctx = EvalContext(model, tokenizer, data.eval_examples, data.eval_rows, data.collator,
                          torch.device(comp.device), t.eval_batch_size, comp.task,
                          data.label_names, t.max_seq_len)
        result = checked_result(ev, comp.plugin_of,
                                guarded(ev, comp.plugin_of, "evaluate", ev.evaluate, ctx))
        registry.add_evaluation(run_id, checkpoint, ev.name, result.metrics, result.details)
        plugins.fire("on_evaluation", run_id=run_id, checkpoint=checkpoint, evaluator=ev.name,
                     metrics=result.metrics)
        results[ev.name] = result.metrics
    return results


def checked_result(ev: Any, plugin_of: dict[str, str], result: Any) -> EvalResult:
    """``result`` with its metrics as floats, once checked against the :class:`EvalResult`
    contract (name → number; JSON-able details).

    Raises:
        PluginFailed: the evaluator returned something else, naming it and its plugin.
    """
    def broken(what: str) -> PluginError:
        return component_failed(ev, plugin_of, f"evaluate() returned {what}")

    if not isinstance(result, EvalResult):
        raise broken(f"{type(result).__name__}, not an EvalResult")
    if not isinstance(result.metrics, dict):
        raise broken(f"metrics of type {type(result.metrics).__name__}, not a dict")
    for name, value in result.metrics.items():
        if not isinstance(name, str) or isinstance(value, bool) or not isinstance(
                value, int | float):
            raise broken(f"metric {name!r} = {value!r}; metrics map names to numbers")
    try:
        json.dumps(result.details)
    except (TypeError, ValueError) as exc:
        raise broken(f"details that are not JSON ({exc})") from None
    return EvalResult({k: float(v) for k, v in result.metrics.items()}, result.details)


def evaluate_run(registry: Registry, ref: str, evaluator: str | None = None,
                 progress: Progress | None = None) -> dict[str, dict[str, float]]:
    """Evaluate a finished run's final checkpoint again (``tuneyard eval``).

    Raises:
        RunNotFound: no such run. TuneyardError: the run has no final checkpoint, its dataset
        changed since it trained (``runs.dataset_fingerprint``), or ``evaluator`` is not a
        registered evaluator or does not judge the run's task.
    """
    progress = progress or LogProgress()
    quiet_libraries()
    plugins = get_plugins()
    run = registry.get_run(ref)
    spec = RunSpec.model_validate(run["spec"])
    if evaluator:
        try:
            tasks = plugins.get("evaluator", evaluator).cls.tasks
        except PluginError as exc:
            raise PluginError(f"--evaluator: {exc}") from None
        chosen = [e for e in spec.evaluators if e.name == evaluator]
        spec.evaluators = chosen or [EvaluatorSpec(name=evaluator)]
        task = compose(spec.model_copy(update={"evaluators": []}), plugins, trains=False).task
        if tasks is not None and task not in tasks:
            raise SpecError(f"--evaluator: '{evaluator}' judges {', '.join(tasks)} models; "
                            f"run {run['id']} trained a {task} model")
    comp = compose(spec, plugins, trains=False)
    model, tokenizer, data = trained_model(comp, run, progress)
    check_same_data(run, data)
    return evaluate(comp, plugins, registry, run["id"], model, tokenizer, data, "final", progress)

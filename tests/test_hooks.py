"""One test per hook spec (``test_hook_<name>``; tests/test_docs.py checks that none is missing).

Most of them look at one shared tiny run (module-scoped :func:`probe`): a plugins-directory
file, loaded through ``--plugins-dir`` like a user's, registers one component of every kind
(the run uses all of them) and implements every lifecycle hook, each call recorded with its
arguments. The tests compare what the hooks were given with what the registry holds.
``register_commands`` is checked through the real ``tuneyard`` click group.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner

from tuneyard.core.cli import CORE_COMMANDS, cli
from tuneyard.core.hookspecs import hookimpl
from tuneyard.core.plugins import PLUGINS_DIR_ENV, PluginInfo, Plugins, get_plugins
from tuneyard.core.registry import Registry

#: The plugins-directory file of the shared run. It records each call to ``calls.jsonl`` next
#: to itself (a file, so the record would survive a detached run process too).
PROBE_PLUGIN = '''\
"""Registers a component of every kind and records every lifecycle hook call."""
import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from tuneyard.core.components import (DatasetSource, DeviceMonitor, DeviceSample, EvalResult,
                                      Evaluator, ModelProvider, TrainingStrategy)
from tuneyard.core.hookspecs import hookimpl

CALLS = Path(__file__).with_name("calls.jsonl")
ROWS = [{"instruction": "define the word cat", "output": "a small animal"},
        {"instruction": "define the word dog", "output": "a domesticated animal"},
        {"instruction": "define the word tree", "output": "a tall perennial woody plant"},
        {"instruction": "define the word run", "output": "move fast on foot"}]


def record(hook, **args):
    with CALLS.open("a") as f:
        f.write(json.dumps({"hook": hook, "pid": os.getpid(), **args}) + "\\n")


class RowsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    repeat: int = Field(5, ge=1, description="Copies of the four rows.")


class ProbeRows(DatasetSource):
    name = "probe-rows"
    description = "Four word definitions, repeated"
    Options = RowsOptions

    def load(self):
        import datasets

        return datasets.Dataset.from_list(ROWS * self.options.repeat)


class BrokenRows(DatasetSource):
    name = "probe-broken"
    description = "Raises when loaded"

    def load(self):
        raise ValueError("no rows today")


class TinyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="A Hugging Face model folder.")


class ProbeTiny(ModelProvider):
    name = "probe-tiny"
    description = "A local Hugging Face folder"
    Options = TinyOptions

    def load(self, *, task, dtype):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        record("ModelProvider.load", task=task, dtype=str(dtype))
        return (AutoModelForCausalLM.from_pretrained(self.options.path, dtype=dtype),
                AutoTokenizer.from_pretrained(self.options.path))

    def model_id(self):
        return "probe:" + Path(self.options.path).name


class ProbeNorms(TrainingStrategy):
    name = "probe-norms"
    description = "Trains the normalisation weights only"
    formats = ("instruction",)

    def prepare(self, model):
        for name, param in model.named_parameters():
            param.requires_grad = "norm" in name
        return model


class ProbeContext(Evaluator):
    name = "probe-context"
    description = "Reports what its EvalContext holds"

    def evaluate(self, ctx):
        batch = ctx.collator([ctx.eval_dataset[i] for i in range(len(ctx.eval_dataset))])
        labels = batch["labels"]
        record("Evaluator.evaluate", shape=list(labels.shape), dtype=str(labels.dtype),
               device=str(ctx.device), references=[e.completion for e in ctx.examples])
        return EvalResult({
            "examples": float(len(ctx.examples)),
            "label_tokens": float((labels[:, 1:] != -100).sum()),
            "reference_words": float(sum(len(e.completion.split()) for e in ctx.examples)),
            "model_training": float(ctx.model.training),
            "batch_size": float(ctx.batch_size),
        })


class ProbeDevice(DeviceMonitor):
    name = "probe-device"
    description = "A pretend accelerator"

    def sample(self):
        return [DeviceSample("probe:0", util_pct=42.0, mem_bytes=1024, mem_total_bytes=4096,
                             power_w=7.5, temp_c=30.0)]


@hookimpl
def register_dataset_sources(register):
    register(ProbeRows)
    register(BrokenRows)


@hookimpl
def register_model_providers(register):
    register(ProbeTiny)


@hookimpl
def register_training_strategies(register):
    register(ProbeNorms)


@hookimpl
def register_evaluators(register):
    register(ProbeContext)


@hookimpl
def register_device_monitors(register):
    register(ProbeDevice)


@hookimpl
def on_run_start(run_id, spec, output_dir):
    record("on_run_start", run_id=run_id, spec=spec, output_dir=output_dir,
           files=sorted(os.listdir(output_dir)))


@hookimpl
def on_step_end(run_id, step, metrics):
    record("on_step_end", run_id=run_id, step=step, metrics=metrics)


@hookimpl
def on_evaluation(run_id, checkpoint, evaluator, metrics):
    record("on_evaluation", run_id=run_id, checkpoint=checkpoint, evaluator=evaluator,
           metrics=metrics)


@hookimpl
def on_checkpoint_saved(run_id, step, path):
    record("on_checkpoint_saved", run_id=run_id, step=step, path=path,
           files=sorted(os.listdir(path)))


@hookimpl
def on_run_end(run_id, status, error):
    from tuneyard.core.registry import Registry

    row = Registry(os.environ["TUNEYARD_REGISTRY"], create=False).get_run(run_id)
    record("on_run_end", run_id=run_id, status=status, error=error,
           row={k: row[k] for k in ("status", "error", "ended_at")})
'''

LIFECYCLE = ("on_run_start", "on_step_end", "on_evaluation", "on_checkpoint_saved",
             "on_run_end")


@dataclass
class Probe:
    """The shared run: its registry row, the recorded calls, the manager that loaded the
    plugin, and the paths needed to start another run with the same plugin."""

    run: dict[str, Any]
    calls: list[dict[str, Any]]
    info: PluginInfo
    plugin_file: Path
    registry: Path
    root: Path
    spec: dict[str, Any]
    output: str

    def of(self, hook: str) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["hook"] == hook]


def read_calls(plugins_dir: Path) -> list[dict[str, Any]]:
    path = plugins_dir / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def probe(tmp_path_factory, tiny_model_dir) -> Probe:
    """Run 6 steps (logged every 2, a Trainer checkpoint every 4) with the probe plugin's
    dataset source, model provider, strategy, evaluator (and perplexity) and device monitor."""
    root = tmp_path_factory.mktemp("hook-probe")
    plugins_dir = root / "plugins"
    plugins_dir.mkdir()
    plugin_file = plugins_dir / "hook_probe.py"
    plugin_file.write_text(PROBE_PLUGIN)
    registry = root / "registry.db"
    spec = {
        "name": "hook-probe",
        "dataset": {"source": "probe-rows", "options": {"repeat": 5}, "format": "instruction",
                    "eval_split": 0.25},
        "model": {"provider": "probe-tiny", "options": {"path": str(tiny_model_dir)}},
        "strategy": {"name": "probe-norms"},
        "training": {"max_steps": 6, "micro_batch_size": 4, "learning_rate": 5e-3, "seed": 0,
                     "logging_steps": 2, "save_steps": 4, "eval_batch_size": 3,
                     "telemetry_interval_s": 0.05},
        "evaluators": [{"name": "probe-context"}, {"name": "perplexity"}],
        "output_dir": str(root / "runs"),
    }
    (root / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        # --plugins-dir sets TUNEYARD_PLUGINS_DIR in os.environ: setenv records the original
        # value, so leaving the context restores it
        mp.setenv(PLUGINS_DIR_ENV, "")
        mp.setenv("TUNEYARD_REGISTRY", str(registry))  # where on_run_end reads the run row
        get_plugins.cache_clear()
        result = CliRunner().invoke(cli, ["--plugins-dir", str(plugins_dir), "--registry",
                                          str(registry), "run", str(root / "spec.yaml")])
        assert result.exit_code == 0, result.output
        [run] = Registry(registry).list_runs()
        yield Probe(Registry(registry).get_run(run["id"]), read_calls(plugins_dir),
                    get_plugins().infos["hook_probe"], plugin_file, registry, root, spec,
                    result.output)
    get_plugins.cache_clear()


def lifecycle_sequence(probe: Probe) -> list[tuple]:
    """The lifecycle calls in order, each as ``(hook, step or checkpoint)``."""
    return [(c["hook"], c.get("step", c.get("checkpoint"))) for c in probe.calls
            if c["hook"] in LIFECYCLE]


# -- registration hooks --------------------------------------------------------------------
def test_hook_register_dataset_sources(probe, tiny_model_dir):
    assert probe.info.errors == []
    assert probe.info.components == [
        "dataset-source:probe-rows", "dataset-source:probe-broken",
        "model-provider:probe-tiny", "strategy:probe-norms", "evaluator:probe-context",
        "device-monitor:probe-device"]
    assert probe.info.hooks == sorted(["register_dataset_sources", "register_model_providers",
                                       "register_training_strategies", "register_evaluators",
                                       "register_device_monitors", *LIFECYCLE])
    # 20 rows, a quarter held out
    assert (probe.run["dataset_source"], probe.run["train_rows"], probe.run["eval_rows"]) == (
        "probe-rows", 15, 5)
    [base, _] = [c for c in probe.of("Evaluator.evaluate")]
    assert set(base["references"]) <= {"a small animal", "a domesticated animal",
                                       "a tall perennial woody plant", "move fast on foot"}
    # the source's Options model validates the spec's options, naming the key
    result = CliRunner().invoke(cli, ["--plugins-dir", str(probe.plugin_file.parent),
                                      "--registry", str(probe.registry), "run",
                                      str(probe.root / "spec.yaml"),
                                      "--set", "dataset.options.colour=red"])
    assert result.exit_code == 2
    assert "dataset.options.colour" in " ".join(result.output.split())
    assert len(Registry(probe.registry).list_runs()) == 1  # nothing recorded


def test_hook_register_model_providers(probe, tiny_model_dir):
    # the run asks for the strategy's head, in float32 (then moves the model to its device)
    assert [(c["task"], c["dtype"]) for c in probe.of("ModelProvider.load")] == [
        ("causal-lm", "torch.float32")]
    assert probe.run["base_model"] == f"probe:{tiny_model_dir.name}"  # model_id()


def test_hook_register_training_strategies(probe, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    assert probe.run["strategy"] == "probe-norms"
    final = Path(probe.run["output_dir"]) / "final"
    assert [(a["kind"], a["path"]) for a in Registry(probe.registry).artifacts(
        probe.run["id"])] == [("spec", str(final.parent / "spec.yaml")), ("model", str(final))]
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    trained = AutoModelForCausalLM.from_pretrained(final).state_dict()
    changed = {name for name in base if not base[name].equal(trained[name])}
    # prepare() left only the norm weights trainable, and all of them moved
    assert changed == {name for name in base if "norm" in name}
    assert len(changed) == 5  # two per layer, one final


def test_hook_register_evaluators(probe):
    rows = Registry(probe.registry).evaluations(probe.run["id"])
    metrics = {(r["checkpoint"], r["evaluator"], r["metric"]): r["value"] for r in rows}
    shapes = [(c["shape"], c["dtype"], c["device"]) for c in probe.of("Evaluator.evaluate")]
    seq_len = shapes[0][0][1]
    assert shapes == [([5, seq_len], "torch.int64", "cpu")] * 2  # base, final
    references = probe.of("Evaluator.evaluate")[0]["references"]
    for checkpoint in ("base", "final"):
        assert {m: metrics[checkpoint, "probe-context", m] for m in (
            "examples", "reference_words", "model_training", "batch_size")} == {
            "examples": 5.0, "reference_words": sum(len(r.split()) for r in references),
            "model_training": 0.0, "batch_size": 3.0}  # eval mode; training.eval_batch_size
        # the labels it was given are the ones perplexity scores
        assert metrics[checkpoint, "probe-context", "label_tokens"] == metrics[
            checkpoint, "perplexity", "eval_tokens"]


def test_hook_register_device_monitors(probe):
    samples = [s for s in Registry(probe.registry).system_metrics_since(probe.run["id"])
               if s["device"] == "probe:0"]
    assert samples  # sampled every 0.05 s for the whole run
    assert {(s["util_pct"], s["mem_bytes"], s["mem_total_bytes"], s["power_w"], s["temp_c"])
            for s in samples} == {(42.0, 1024, 4096, 7.5, 30.0)}


class Hello:
    @hookimpl
    def register_commands(self, cli):
        @cli.command()
        @click.argument("name")
        @click.pass_context
        def hello(ctx, name):
            """Greet NAME and count the runs in the registry."""
            from tuneyard.core.registry import Registry

            path = ctx.obj["registry"]  # the global --registry option
            click.echo(f"hello {name}: {len(Registry(path, create=False).list_runs())} runs")


def test_hook_register_commands(tmp_path):
    plugins = Plugins()
    plugins.register_plugin(Hello(), "hello-plugin")
    plugins.collect_commands(CORE_COMMANDS)
    assert list(plugins.commands) == ["hello"]
    cli.commands.update(plugins.commands)  # what the CLI's main() does
    try:
        assert plugins.infos["hello-plugin"].hooks == ["register_commands"]
        registry = tmp_path / "registry.db"
        Registry(registry)
        runner = CliRunner()
        said = runner.invoke(cli, ["--registry", str(registry), "hello", "world"])
        assert (said.exit_code, said.output) == (0, "hello world: 0 runs\n")
        helped = runner.invoke(cli, ["--help"])
        assert "hello Greet NAME and count the runs" in " ".join(helped.output.split())
    finally:
        cli.commands.pop("hello", None)


# -- lifecycle hooks -----------------------------------------------------------------------
def test_hook_on_run_start(probe):
    [call] = probe.of("on_run_start")
    assert lifecycle_sequence(probe)[0] == ("on_run_start", None)
    assert (call["run_id"], call["output_dir"], call["pid"]) == (
        probe.run["id"], probe.run["output_dir"], probe.run["pid"])  # in the run process
    assert Path(call["output_dir"]).is_absolute()
    assert "spec.yaml" in call["files"]
    # the resolved spec: what the YAML said, defaults filled in
    assert call["spec"] == probe.run["spec"]
    assert call["spec"]["training"]["max_grad_norm"] == 1.0  # not in the YAML
    assert call["spec"]["training"]["logging_steps"] == probe.spec["training"]["logging_steps"]
    # data and model were loaded before it
    assert probe.calls.index(call) > probe.calls.index(probe.of("ModelProvider.load")[0])


def test_hook_on_step_end(probe):
    calls = probe.of("on_step_end")
    assert [c["step"] for c in calls] == [2, 4, 6]  # every training.logging_steps = 2
    assert {c["run_id"] for c in calls} == {probe.run["id"]}
    names = ["epoch", "grad_norm", "learning_rate", "loss", "tokens_per_s"]
    assert [sorted(c["metrics"]) for c in calls] == [names] * 3
    reg = Registry(probe.registry)
    for name in names:  # exactly what the registry's metrics table holds
        assert [(c["step"], c["metrics"][name]) for c in calls] == reg.metrics(
            probe.run["id"], name)
    # 15 training rows in micro-batches of 4: 4 optimizer steps per epoch
    assert [c["metrics"]["epoch"] for c in calls] == [0.5, 1.0, 1.5]
    assert all(c["metrics"]["loss"] > 0 and c["metrics"]["tokens_per_s"] > 0 for c in calls)


def test_hook_on_evaluation(probe):
    calls = probe.of("on_evaluation")
    assert [(c["checkpoint"], c["evaluator"]) for c in calls] == [
        ("base", "probe-context"), ("base", "perplexity"),
        ("final", "probe-context"), ("final", "perplexity")]
    rows = Registry(probe.registry).evaluations(probe.run["id"])
    stored: dict[tuple[str, str], dict[str, float]] = {}
    for r in rows:
        stored.setdefault((r["checkpoint"], r["evaluator"]), {})[r["metric"]] = r["value"]
    assert {(c["checkpoint"], c["evaluator"]): c["metrics"] for c in calls} == stored
    # the baseline before the first step, the final one after the final checkpoint
    order = lifecycle_sequence(probe)
    assert order.index(("on_evaluation", "base")) < order.index(("on_step_end", 2))
    assert order.index(("on_evaluation", "final")) > order.index(("on_checkpoint_saved", 6))


def test_hook_on_checkpoint_saved(probe):
    from transformers import AutoModelForCausalLM

    calls = probe.of("on_checkpoint_saved")
    out = Path(probe.run["output_dir"])
    ckpt4, ckpt6, final = (str(out / "checkpoints" / "checkpoint-4"),
                           str(out / "checkpoints" / "checkpoint-6"), str(out / "final"))
    # every training.save_steps, at the last step (the Trainer's rule), and the final model
    assert [(c["step"], c["path"]) for c in calls] == [(4, ckpt4), (6, ckpt6), (6, final)]
    assert [(c["step"], c["path"]) for c in Registry(probe.registry).checkpoints(
        probe.run["id"])] == [(4, ckpt4), (6, ckpt6), (6, final)]
    # complete when the hook runs: the model, and for a Trainer checkpoint the state to resume
    for call in calls:
        assert {"config.json", "model.safetensors"} <= set(call["files"])
    assert {"optimizer.pt", "scheduler.pt", "trainer_state.json"} <= set(calls[0]["files"])
    assert "tokenizer.json" in calls[2]["files"]
    last, saved = (AutoModelForCausalLM.from_pretrained(p).state_dict() for p in (ckpt6, final))
    assert all(last[name].equal(saved[name]) for name in saved)


def test_hook_on_run_end(probe):
    [call] = probe.of("on_run_end")
    assert lifecycle_sequence(probe)[-1] == ("on_run_end", None)
    assert (call["run_id"], call["status"], call["error"], call["pid"]) == (
        probe.run["id"], "completed", None, probe.run["pid"])
    # the registry row is final when the hook runs
    assert call["row"] == {"status": "completed", "error": None,
                           "ended_at": probe.run["ended_at"]}

    # a run whose component fails: status failed, the error names the component and plugin
    spec = {**probe.spec, "name": "hook-probe-broken",
            "dataset": {**probe.spec["dataset"], "source": "probe-broken", "options": {}}}
    (probe.root / "broken.yaml").write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(cli, ["--plugins-dir", str(probe.plugin_file.parent),
                                      "--registry", str(probe.registry), "run",
                                      str(probe.root / "broken.yaml")])
    assert result.exit_code == 1, result.output  # a plugin bug: a failed run
    run = Registry(probe.registry).get_run("hook-probe-broken")
    error = ("dataset-source 'probe-broken' (plugin hook_probe) failed to load data: "
             "ValueError: no rows today")
    [call] = [c for c in read_calls(probe.plugin_file.parent)
              if c["hook"] == "on_run_end" and c["run_id"] == run["id"]]
    assert (call["status"], call["error"]) == ("failed", error)
    assert call["row"] == {"status": "failed", "error": error, "ended_at": run["ended_at"]}
    assert not any(c["hook"] == "on_run_start" and c["run_id"] == run["id"]
                   for c in read_calls(probe.plugin_file.parent))  # it never started training

"""Runs on several processes (issue #7): ``tuneyard run --nproc-per-node 2`` launches two
ranks through torchrun and the Trainer trains them with DDP over gloo, on CPU.

Two processes with micro-batch 2 see, at every step, the same four examples as one process
with micro-batch 4 (the sampler's permutation is split batch by batch across the ranks), and
the Trainer normalises the loss by the label tokens of all ranks, so the losses and the final
weights must agree up to float rounding. The world size is read back from the registry,
where rank 0 records the Trainer's own ``world_size``: a launch that silently fell back to
one process would record 1.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from safetensors.torch import load_file

from tuneyard.core.cli import cli
from tuneyard.core.distributed import Launch, root_cause
from tuneyard.core.engine import create_run
from tuneyard.core.registry import Registry
from tuneyard.core.run.pipeline import execute
from tuneyard.core.spec import load_spec

TRAINING = {"strategy": {"name": "full"}, "training.max_steps": 6,
            "training.learning_rate": 3e-3, "training.save_steps": 3}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_dir):
    """The same run on one process with micro-batch 4: its losses and final weights."""
    tmp = tmp_path_factory.mktemp("one-process")
    spec = load_spec(str(write_spec(tmp, tiny_model_dir, micro_batch_size=4)))
    registry = Registry(tmp / "registry.db")
    run_id, out = create_run(spec, registry)
    assert execute(registry, run_id) == "completed"
    return (registry.metrics(run_id, "loss"), load_file(out / "final" / "model.safetensors"),
            registry.get_run(run_id)["world_size"])


def write_spec(tmp: Path, model_dir: Path, micro_batch_size: int) -> Path:
    """A 6-step full fine-tune of the tiny model on 40 instruction rows."""
    import json

    import yaml

    data = tmp / "qa.jsonl"
    words = [("cat", "a small animal"), ("dog", "a domesticated animal"),
             ("tree", "a tall perennial woody plant"), ("run", "move fast on foot")]
    data.write_text("".join(json.dumps({"instruction": f"define the word {w} {i}",
                                        "output": d}) + "\n"
                            for i in range(10) for w, d in words))
    spec = {"name": "ddp", "output_dir": str(tmp / "runs"),
            "dataset": {"source": "jsonl", "options": {"path": str(data)},
                        "format": "instruction", "eval_split": 0.2},
            "model": {"provider": "hf", "options": {"path": str(model_dir)}},
            "strategy": {"name": "full"},
            "training": {"max_steps": 6, "micro_batch_size": micro_batch_size,
                         "learning_rate": 3e-3, "save_steps": 3, "seed": 0},
            "evaluators": [{"name": "perplexity"}]}
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def assert_same_as(reference, registry: Registry, run: dict) -> None:
    losses, weights, world_size = reference
    assert world_size == 1 and run["world_size"] == 2
    got = registry.metrics(run["id"], "loss")
    assert [s for s, _ in got] == [s for s, _ in losses] == [1, 2, 3, 4, 5, 6]
    assert max(abs(a - b) for (_, a), (_, b) in zip(got, losses)) < 1e-5
    assert losses[-1][1] < losses[0][1] - 0.2  # it trained
    final = load_file(Path(run["output_dir"]) / "final" / "model.safetensors")
    assert final.keys() == weights.keys()
    assert max((final[k] - weights[k]).abs().max().item() for k in final) < 1e-5


def test_two_processes_train_as_one_with_twice_the_micro_batch(reference, tmp_path,
                                                               tiny_model_dir):
    spec = write_spec(tmp_path, tiny_model_dir, micro_batch_size=2)
    result = CliRunner().invoke(cli, ["--registry", str(tmp_path / "r.db"), "run", str(spec),
                                      "--nproc-per-node", "2"])
    assert result.exit_code == 0, result.output
    registry = Registry(tmp_path / "r.db")
    [run] = registry.list_runs()
    assert run["status"] == "completed" and run["error"] is None
    assert_same_as(reference, registry, run)
    # each rank wrote its own RNG state into the checkpoint folder rank 0 renamed
    checkpoint = Path(run["output_dir"]) / "checkpoints" / "checkpoint-3"
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= {p.name for p in checkpoint.iterdir()}
    assert {e["checkpoint"] for e in registry.evaluations(run["id"])} == {"base", "final"}


STOP_PLUGIN = '''
import os, signal
from pathlib import Path
from tuneyard.core.hookspecs import hookimpl

@hookimpl
def on_step_end(run_id, step, metrics):
    marker = Path(os.environ["STOP_MARKER"])
    if step == 1 and not marker.exists():  # rank 0 alone is signalled; rank 1 must follow
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGTERM)
'''


def test_a_stop_reaches_every_rank_and_resume_on_two_processes_is_exact(
        reference, tmp_path, tiny_model_dir, monkeypatch, plugins_dir_env):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "sigterm_rank0.py").write_text(textwrap.dedent(STOP_PLUGIN))
    monkeypatch.setenv("STOP_MARKER", str(tmp_path / "stopped"))
    spec = write_spec(tmp_path, tiny_model_dir, micro_batch_size=2)
    base = ["--registry", str(tmp_path / "r.db"), "--plugins-dir", str(plugins)]
    result = CliRunner().invoke(cli, [*base, "run", str(spec), "--nproc-per-node", "2"])
    assert result.exit_code == 0, result.output
    registry = Registry(tmp_path / "r.db")
    [run] = registry.list_runs()
    assert run["status"] == "stopped"
    # the hook fires once step 1 is written (within FLUSH_S), the ranks stop at the next step
    stopped_at = run["step"]
    assert 2 <= stopped_at < 6
    saved = [c["step"] for c in registry.checkpoints(run["id"])]  # save_steps 3, and the stop
    assert saved == sorted({*([3] if stopped_at > 3 else []), stopped_at})
    checkpoint = Path(run["output_dir"]) / "checkpoints" / f"checkpoint-{stopped_at}"
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= {p.name for p in checkpoint.iterdir()}

    result = CliRunner().invoke(cli, [*base, "resume", run["id"], "--nproc-per-node", "2"])
    assert result.exit_code == 0, result.output
    run = registry.get_run(run["id"])
    assert run["status"] == "completed"
    assert_same_as(reference, registry, run)


FAILING_PLUGIN = '''
import os
from tuneyard.core.hookspecs import hookimpl
from tuneyard.plugins.strategies.full import FullFineTune

class BrokenOnRank1(FullFineTune):
    name = "broken-on-rank-1"

    def prepare(self, model):
        if os.environ.get("RANK") == "1":
            raise ValueError("rank 1 cannot prepare")
        return model

@hookimpl
def register_training_strategies(register):
    register(BrokenOnRank1)
'''


def test_a_failing_rank_fails_the_run_with_its_own_error(tmp_path, tiny_model_dir,
                                                        plugins_dir_env):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "broken.py").write_text(textwrap.dedent(FAILING_PLUGIN))
    spec = write_spec(tmp_path, tiny_model_dir, micro_batch_size=2)
    result = CliRunner().invoke(cli, ["--registry", str(tmp_path / "r.db"), "--plugins-dir",
                                      str(plugins), "run", str(spec), "--nproc-per-node", "2",
                                      "--set", "strategy.name=broken-on-rank-1"])
    registry = Registry(tmp_path / "r.db")
    [run] = registry.list_runs()
    error = ("rank 1: PluginFailed: strategy 'broken-on-rank-1' (plugin broken) failed to "
             "prepare the model: ValueError: rank 1 cannot prepare")
    assert run["status"] == "failed"
    assert run["error"] == error
    assert result.exit_code == 1
    assert f"Error: run {run['id']} failed: {error}" in " ".join(result.output.split())


class _Failure:
    def __init__(self, message: str, timestamp: int, exitcode: int = 1) -> None:
        self.message, self.timestamp, self.exitcode = message, timestamp, exitcode


def test_root_cause_is_the_rank_with_an_error_of_its_own():
    failures = {0: _Failure("RuntimeError: [gloo] Connection closed by peer [10.0.0.2]", 100),
                1: _Failure("Signal 15 (SIGTERM) received by PID 7", 100, -15),
                2: _Failure({"message": "ValueError: bad row", "extraInfo": {}}, 101)}
    cause = root_cause(failures)
    assert (cause.rank, cause.error, str(cause)) == (2, "ValueError: bad row",
                                                      "rank 2: ValueError: bad row")
    assert cause.rank0_recorded  # rank 0 failed with an error of its own making (exit 1)
    # a rank killed outright (the OOM killer) is the cause; torchrun's SIGTERMs are not
    cause = root_cause({**failures, 2: _Failure("Signal 9 (SIGKILL) received by PID 9", 101,
                                                -9)})
    assert str(cause) == "rank 2: Signal 9 (SIGKILL) received by PID 9"
    # none raised an error of its own: the earliest, and a crash names its exit code
    cause = root_cause({0: _Failure("To enable traceback see: …", 5, 139), 1: failures[1]})
    assert str(cause) == "rank 0: exited with code 139 (see its console output)"
    assert not cause.rank0_recorded


def test_ctrl_c_to_the_launcher_reaches_every_rank(tmp_path, tiny_model_dir):
    """torchrun starts each rank in a session of its own, so a terminal's Ctrl-C reaches only
    the launcher, which passes it on."""
    import os
    import signal
    import subprocess
    import sys
    import time

    spec = write_spec(tmp_path, tiny_model_dir, micro_batch_size=2)
    db = tmp_path / "r.db"
    proc = subprocess.Popen([sys.executable, "-m", "tuneyard.core.cli", "--registry", str(db),
                             "run", str(spec), "--nproc-per-node", "2",
                             "--set", "training.max_steps=100000", "--set", "evaluators=[]"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.5)
        runs = Registry(db).list_runs() if db.exists() else []
        if runs and (runs[0]["step"] or 0) >= 3:
            break
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 0, output
    [run] = Registry(db).list_runs()
    assert run["status"] == "stopped" and run["world_size"] == 2
    checkpoint = Registry(db).checkpoints(run["id"])[-1]  # the stop's (and every 3 steps)
    assert 3 <= checkpoint["step"] == run["step"] < 100000
    files = {p.name for p in Path(checkpoint["path"]).iterdir()}
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= files


def test_torchrun_command_lines():
    worker = ["RUN", "--device", "cpu"]
    assert Launch(2).torchrun_args(worker) == [
        "--nproc-per-node", "2", "--max-restarts", "0", "--standalone",
        "-m", "tuneyard.core.run", "RUN", "--device", "cpu"]
    assert Launch(8, 2, 1, "node0:29500").torchrun_args(worker) == [
        "--nproc-per-node", "8", "--max-restarts", "0", "--nnodes", "2", "--node-rank", "1",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", "node0:29500",
        "-m", "tuneyard.core.run", "RUN", "--device", "cpu"]


@pytest.mark.parametrize("args, message", [
    (["--nnodes", "2"], "--nnodes 2 or more needs --rdzv-endpoint HOST:PORT"),
    (["--nnodes", "2", "--node-rank", "2", "--rdzv-endpoint", "h:1"],
     "--node-rank 2: must be below --nnodes 2"),
    (["--nproc-per-node", "2", "--detach"], "--detach runs one process"),
])
def test_inconsistent_launch_options_are_refused(tmp_path, tiny_model_dir, args, message):
    spec = write_spec(tmp_path, tiny_model_dir, micro_batch_size=2)
    result = CliRunner().invoke(cli, ["--registry", str(tmp_path / "r.db"), "run", str(spec),
                                      *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "r.db").exists()

"""``tuneyard export``: a LoRA run merged into its base model gives a plain Hugging Face folder
with the adapter model's logits, which loads in a process where tuneyard cannot be imported;
copies of adapter and whole-model runs; the artifact row; and each refusal with its exact
message, leaving no half-written folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from transformers import AutoModelForCausalLM, AutoTokenizer

from tuneyard.core.cli import cli
from tuneyard.core.registry import Registry

#: loads a model folder with tuneyard made unimportable; prints the logits of argv[2]'s ids
LOAD_WITHOUT_TUNEYARD = """
import json, sys
sys.modules["tuneyard"] = None  # any import of tuneyard (or a part of it) now fails
import torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
with torch.no_grad():
    logits = model(torch.tensor([json.loads(sys.argv[2])])).logits  # [1, seq_len, vocab]
print(json.dumps(logits[0].tolist()))
"""


def tuneyard(registry: Path, *args: str):
    return CliRunner().invoke(cli, ["--registry", str(registry), *args])


def logits(model, ids: list[int]) -> torch.Tensor:
    """``model``'s logits for one sequence: ``[seq_len, vocab]`` float32."""
    with torch.no_grad():
        return model.eval()(torch.tensor([ids])).logits[0]


def logits_without_tuneyard(folder: Path, ids: list[int], cwd: Path) -> torch.Tensor:
    done = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_TUNEYARD, str(folder),
                           json.dumps(ids)], capture_output=True, text=True, cwd=cwd,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return torch.tensor(json.loads(done.stdout))


@pytest.fixture
def ids(tiny_model_dir) -> list[int]:
    return AutoTokenizer.from_pretrained(tiny_model_dir)("define the word cat")["input_ids"]


@pytest.fixture
def lora_run(tmp_path, qa_jsonl, make_spec) -> tuple[Path, dict]:
    """A registry with one completed 3-step LoRA run (a high learning rate, so the adapter
    changes the logits visibly); returns ``(registry path, run row)``."""
    reg = tmp_path / "registry.db"
    spec = make_spec(qa_jsonl, **{"training.max_steps": 3, "training.learning_rate": 3e-2})
    result = tuneyard(reg, "run", str(spec))
    assert result.exit_code == 0, result.output
    return reg, Registry(reg).list_runs()[0]


def recorded_run(reg: Path, spec_path: Path, out: Path, status: str, **fields) -> str:
    """A run row as ``tuneyard run`` leaves it, without training: ``out`` as its output folder."""
    registry = Registry(reg)
    run_id = registry.create_run(yaml.safe_load(spec_path.read_text()), output_dir=str(out),
                                 **fields)
    registry.update_run(run_id, status=status)
    return run_id


def test_merge_writes_a_standalone_model_with_the_adapter_models_logits(
        lora_run, tiny_model_dir, ids, tmp_path):
    from peft import PeftModel

    reg, run = lora_run
    out = tmp_path / "exports" / "merged"
    result = tuneyard(reg, "export", run["id"], str(out), "--merge")
    assert result.exit_code == 0, result.output

    merged = AutoModelForCausalLM.from_pretrained(out)
    n_params = sum(p.numel() for p in merged.parameters())  # tied embeddings counted once
    size_mb = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    assert result.output.strip().splitlines()[-1] == (
        f"exported run {run['id']} → {out} (merged the lora adapter into "
        f"{run['base_model']}, float32; {n_params:,} params, {size_mb:.1f} MB)")
    # a plain folder: full weights, tokenizer, and nothing of peft or tuneyard
    files = {f.name for f in out.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= files
    assert not {"adapter_config.json", "adapter_model.safetensors"} & files
    config = (out / "config.json").read_text()
    for leftover in ("peft", "lora", "tuneyard", "auto_map", "adapter"):
        assert leftover not in config.lower(), leftover
    assert [p.name for p in out.parent.iterdir()] == ["merged"]  # no partial folder left

    # the merge (W + alpha/r·B·A) gives the adapter model's logits
    final = Path(run["output_dir"]) / "final"
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    base_logits = logits(base, ids)
    adapter_logits = logits(PeftModel.from_pretrained(base, final), ids)
    assert (adapter_logits - base_logits).abs().max() > 1e-3  # the adapter does change them
    merged_logits = logits(merged, ids)
    torch.testing.assert_close(merged_logits, adapter_logits, atol=1e-4, rtol=0)
    # ... and so does the folder in a process that cannot import tuneyard
    outside = logits_without_tuneyard(out, ids, tmp_path)
    torch.testing.assert_close(outside, merged_logits, atol=1e-5, rtol=0)

    assert {"kind": "merged-model", "path": str(out)} in [
        {k: a[k] for k in ("kind", "path")} for a in Registry(reg).artifacts(run["id"])]


def test_an_adapter_run_exports_its_adapter_and_says_how_to_load_it(lora_run, tmp_path):
    reg, run = lora_run
    out = tmp_path / "adapter"
    out.mkdir()  # an empty folder is a valid target
    result = tuneyard(reg, "export", run["id"], str(out))
    assert result.exit_code == 0, result.output
    final = Path(run["output_dir"]) / "final"
    assert sorted(f.name for f in out.iterdir()) == sorted(f.name for f in final.iterdir())
    assert (out / "adapter_model.safetensors").read_bytes() == (
        final / "adapter_model.safetensors").read_bytes()
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4
    # r·(in + out) per adapted linear layer: q 64→64, k and v 64→32, o 64→64, gate and up
    # 64→128, down 128→64 = 4·1024 = 4,096 per layer; 2 layers
    assert result.output.strip().splitlines()[-1].startswith(
        f"exported run {run['id']} → {out} (the lora adapter only, not a whole model: load it "
        f"with peft on the base model {run['base_model']}; --merge writes a standalone model; "
        "8,192 params, ")
    rows = [(a["kind"], a["path"]) for a in Registry(reg).artifacts(run["id"])]
    assert ("export", str(out)) in rows


def test_a_whole_model_run_is_copied_and_cannot_be_merged(tmp_path, qa_jsonl, make_spec,
                                                            tiny_model_dir, ids):
    """A recorded full fine-tune whose final folder is the tiny model itself."""
    import shutil

    reg = tmp_path / "registry.db"
    runs = tmp_path / "runs" / "full-run"
    shutil.copytree(tiny_model_dir, runs / "final")
    run_id = recorded_run(reg, make_spec(qa_jsonl, strategy={"name": "full"}), runs,
                          "completed", strategy="full", base_model="tiny-llama")
    Registry(reg).add_artifact(run_id, "model", str(runs / "final"))

    result = tuneyard(reg, "export", run_id, str(tmp_path / "merged"), "--merge")
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"Error: run {run_id} saved a whole model (strategy 'full'), not an adapter: there is "
        "nothing to merge; export it without --merge")
    assert not (tmp_path / "merged").exists()

    out = tmp_path / "copy"
    result = tuneyard(reg, "export", run_id, str(out))
    assert result.exit_code == 0, result.output
    assert "(the whole model trained by full from tiny-llama; " in result.output
    expected = logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir), ids)
    torch.testing.assert_close(logits_without_tuneyard(out, ids, tmp_path), expected,
                               atol=1e-5, rtol=0)
    assert [a["kind"] for a in Registry(reg).artifacts(run_id)] == ["model", "export"]


def test_refusals_name_the_problem_and_write_nothing(tmp_path, qa_jsonl, make_spec):
    reg = tmp_path / "registry.db"
    spec = make_spec(qa_jsonl)
    run_dir = tmp_path / "runs" / "failed-run"
    run_dir.mkdir(parents=True)
    failed = recorded_run(reg, spec, run_dir, "failed", strategy="lora", base_model="tiny-llama")

    def refused(args: list[str], message: str) -> None:
        result = tuneyard(reg, "export", *args)
        assert result.exit_code == 2, result.output
        assert result.output.strip() == f"Error: {message}"

    refused(["nope", str(tmp_path / "out")], f"no run 'nope' in {reg} (see: tuneyard runs list)")
    refused([failed, str(tmp_path / "out"), "--merge"],
            f"run {failed} has no final checkpoint at {run_dir / 'final'} (status: failed); only "
            "a completed run can be exported")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    refused([failed, str(full)], f"export: {full} exists and is not an empty folder; give a new "
                                 "path (export never overwrites)")
    refused([failed, str(full / "keep.txt")], f"export: {full / 'keep.txt'} exists and is not an "
                                              "empty folder; give a new path (export never "
                                              "overwrites)")
    assert (full / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "out").exists() and Registry(reg).artifacts(failed) == []


def test_a_failed_copy_leaves_no_folder_behind(tmp_path, qa_jsonl, make_spec, monkeypatch):
    reg = tmp_path / "registry.db"
    run_dir = tmp_path / "runs" / "run"
    (run_dir / "final").mkdir(parents=True)
    (run_dir / "final" / "model.safetensors").write_bytes(b"x" * 100)
    run_id = recorded_run(reg, make_spec(qa_jsonl), run_dir, "completed", strategy="full")
    Registry(reg).add_artifact(run_id, "model", str(run_dir / "final"))

    def copy_then_fail(src, dst, **kwargs):
        Path(dst).mkdir()
        (Path(dst) / "model.safetensors").write_bytes(b"x" * 50)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("tuneyard.core.export.shutil.copytree", copy_then_fail)
    exports = tmp_path / "exports"
    result = tuneyard(reg, "export", run_id, str(exports / "out"))
    assert result.exit_code == 2
    assert f"Error: export: cannot write {exports / 'out'}: No space left on device" in \
        " ".join(result.output.split())
    assert list(exports.iterdir()) == []  # neither the target nor the partial folder
    assert [a["kind"] for a in Registry(reg).artifacts(run_id)] == ["model"]


@pytest.mark.parametrize("options", [
    {"use_dora": True}, {"use_rslora": True, "init": "gaussian"}, {"init": "pissa"},
    {"init": "olora"}, {"modules_to_save": ["norm"]}])
def test_merge_of_each_adapter_kind_gives_the_trained_models_logits(
        tmp_path, qa_jsonl, make_spec, ids, options):
    """The merged model equals the model the run trained, as tuneyard loads it back (its
    final evaluation reproduced: the strategy's load_checkpoint on the base model)."""
    from tuneyard.core.engine import compose
    from tuneyard.core.plugins import get_plugins
    from tuneyard.core.run.model import trained_model
    from tuneyard.core.run.progress import LogProgress
    from tuneyard.core.spec import RunSpec

    reg = tmp_path / "registry.db"
    spec = make_spec(qa_jsonl, **{"training.max_steps": 3, "training.learning_rate": 3e-2,
                                  "strategy": {"name": "lora", "options": {"r": 4, **options}}})
    assert tuneyard(reg, "run", str(spec)).exit_code == 0
    registry = Registry(reg)
    run = registry.get_run(registry.list_runs()[0]["id"])
    [final_loss] = [e["value"] for e in registry.evaluations(run["id"])
                    if (e["checkpoint"], e["metric"]) == ("final", "eval_loss")]
    out = tmp_path / "merged"
    result = tuneyard(reg, "export", run["id"], str(out), "--merge")
    assert result.exit_code == 0, result.output
    comp = compose(RunSpec.model_validate(run["spec"]), get_plugins(), trains=False)
    model, _, data = trained_model(comp, run, LogProgress())
    merged = AutoModelForCausalLM.from_pretrained(out)
    torch.testing.assert_close(logits(merged, ids), logits(model, ids), atol=1e-4, rtol=0)
    # … and that is the model the run evaluated at its end
    batch = data.collator(data.eval_rows)
    labels = batch.pop("labels")
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(
            merged(**batch).logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), reduction="sum")
    assert float(loss) / int((labels[:, 1:] != -100).sum()) == pytest.approx(final_loss, abs=1e-4)

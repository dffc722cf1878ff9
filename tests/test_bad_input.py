"""Each kind of bad input ends with exit code 2 and a one- or two-line message naming what to
fix; nothing already in the registry is lost, and a run that fails is marked failed."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from tuneyard.core.cli import cli
from tuneyard.core.registry import Registry
from tuneyard.plugins.models.hf import HFModel


def run_cli(registry: Path, *args: str):
    return CliRunner().invoke(cli, ["--registry", str(registry), *args])


@pytest.fixture
def setup(tmp_path, qa_jsonl, make_spec):
    """A registry holding one completed run, and a valid spec to break."""
    reg = tmp_path / "registry.db"
    spec = make_spec(qa_jsonl, **{"training.max_steps": 2})
    assert run_cli(reg, "run", str(spec)).exit_code == 0
    return reg, spec


@pytest.fixture
def no_runs(tmp_path, qa_jsonl, make_spec):
    """An empty registry and a valid spec (for errors that need no earlier run to compare)."""
    return tmp_path / "registry.db", make_spec(qa_jsonl, **{"training.max_steps": 2})


def check_fails(reg: Path, args: list[str], message: str, run_created: bool) -> None:
    before = Registry(reg).list_runs()
    result = run_cli(reg, *args)
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == f"Error: {message}"
    assert "Traceback" not in result.output
    after = Registry(reg).list_runs()
    assert after[len(after) - len(before):] == before  # nothing already recorded changed
    if run_created:
        assert len(after) == len(before) + 1
        assert after[0]["status"] == "failed" and after[0]["error"] == message
    else:
        assert len(after) == len(before)


def preview(reg: Path, spec: Path, *args: str) -> dict:
    result = run_cli(reg, "data", "preview", str(spec), "--json", "--rows", "40", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_unknown_component_suggests_the_closest(setup):
    reg, spec = setup
    check_fails(reg, ["run", str(spec), "--set", "strategy.name=lroa"],
                "--set strategy.name=lroa: strategy.name: unknown strategy 'lroa'; did you mean "
                "'lora'? (valid: dpo, full, lora, orpo, pretrain-clm, pretrain-mlm)", run_created=False)
    line = next(i for i, t in enumerate(spec.read_text().splitlines(), 1) if "perplexity" in t)
    spec.write_text(spec.read_text().replace("perplexity", "perplexty"))
    check_fails(reg, ["run", str(spec)],
                f"{spec}:{line}: evaluators.0.name: unknown evaluator 'perplexty'; did you mean "
                "'perplexity'? (valid: accuracy, bleu, exact-match, masked-lm, perplexity, "
                "preference, rouge, samples, seqeval, squad)", run_created=False)


def test_option_of_wrong_type_names_the_key_and_line(setup):
    reg, spec = setup
    line = next(i for i, t in enumerate(spec.read_text().splitlines(), 1) if t.strip() == "r: 4")
    spec.write_text(spec.read_text().replace("r: 4", "r: four"))
    check_fails(reg, ["run", str(spec)],
                f"{spec}:{line}: strategy.options.r: Input should be a valid integer, "
                "unable to parse string as an integer", run_created=False)


def test_missing_data_file_names_the_path(setup, tmp_path):
    reg, spec = setup
    missing = tmp_path / "nope.jsonl"
    check_fails(reg, ["run", str(spec), "--set", f"dataset.options.path={missing}"],
                f"dataset-source 'jsonl' (plugin dataset-files): path '{missing}': file not found",
                run_created=True)


def test_malformed_jsonl_names_file_and_line(setup, tmp_path):
    reg, spec = setup
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "a", oops}\n')
    check_fails(reg, ["run", str(spec), "--set", f"dataset.options.path={bad}"],
                f"dataset-source 'jsonl' (plugin dataset-files): {bad}:2:22: invalid JSON: "
                "Expecting property name enclosed in double quotes", run_created=True)


def test_non_utf8_jsonl_suggests_the_encoding_option(no_runs, tmp_path):
    reg, spec = no_runs
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"instruction": "define caf\xe9", "output": "a place"}\n'.encode("latin-1")
                      * 4)
    check_fails(reg, ["run", str(spec), "--set", f"dataset.options.path={latin}"],
                f"dataset-source 'jsonl' (plugin dataset-files): {latin}: cannot decode as utf-8 "
                "(invalid continuation byte at byte 27, line 1); set the 'encoding' option, e.g. "
                "encoding: latin-1", run_created=True)
    rows = preview(reg, spec, "--set", f"dataset.options.path={latin}",
                   "--set", "dataset.options.encoding=latin-1")["rows"]
    assert rows[0]["prompt"] == "<|im_start|>user\ndefine café<|im_end|>\n<|im_start|>assistant\n"


def test_csv_with_utf8_bom_just_works(no_runs, tmp_path):
    reg, spec = no_runs
    excel = tmp_path / "excel.csv"
    excel.write_bytes("instruction,output\r\ndefine cat,a small animal\r\n".encode("utf-8-sig")
                      * 1 + "define dog,a domesticated animal\r\n".encode() * 3)
    got = preview(reg, spec, "--set", "dataset.source=csv", "--set",
                  f"dataset.options.path={excel}")  # the first column is 'instruction'
    assert got["total_rows"] == 4
    assert got["rows"][0]["completion"] == "a small animal"


def test_missing_column_lists_the_columns_present(setup):
    reg, spec = setup
    check_fails(reg, ["run", str(spec), "--set", "dataset.columns.output=gloss"],
                "dataset: format 'instruction' needs a column 'gloss'; columns present: "
                "instruction, output (map one with dataset.columns.output: COLUMN)",
                run_created=True)


def test_fp16_on_cpu_is_refused_before_anything_loads(setup):
    reg, spec = setup
    check_fails(reg, ["run", str(spec), "--set", "training.precision=fp16"],
                "--set training.precision=fp16: training.precision: fp16 needs a CUDA GPU; on CPU "
                "use fp32 or bf16",
                run_created=False)


def test_unknown_run_and_missing_spec(setup, tmp_path):
    reg, _ = setup
    check_fails(reg, ["runs", "show", "zzz"],
                f"no run 'zzz' in {reg} (see: tuneyard runs list)", run_created=False)
    check_fails(reg, ["run", str(tmp_path / "none.yaml")],
                f"{tmp_path / 'none.yaml'}: cannot read run spec: No such file or directory",
                run_created=False)


def test_debug_shows_the_traceback(setup):
    reg, spec = setup
    result = CliRunner().invoke(cli, ["--registry", str(reg), "--debug", "run", str(spec),
                                      "--set", "strategy.name=lroa"])
    assert result.exit_code == 2  # same exit code as without --debug
    assert "Traceback (most recent call last)" in result.output
    assert "tuneyard.core.errors.PluginError: --set strategy.name=lroa" in result.output


def test_reading_commands_do_not_create_a_registry(tmp_path):
    missing = tmp_path / "typo.db"
    for args in (["runs", "list"], ["runs", "show", "x"], ["eval", "x"]):
        result = run_cli(missing, *args)
        assert result.exit_code == 2
        assert result.output.strip() == (
            f"Error: no registry at {missing} (the first `tuneyard run` creates one; choose "
            "another with --registry or TUNEYARD_REGISTRY)")
    assert not missing.exists()


def test_unwritable_output_dir_is_refused_before_the_run_exists(setup, tmp_path):
    reg, spec = setup
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    check_fails(reg, ["run", str(spec), "--set", f"output_dir={blocker}"],
                f"--set output_dir={blocker}: output_dir: cannot write to '{blocker}': "
                "File exists", run_created=False)


def test_eval_split_leaving_nothing_to_train_is_named(setup):
    reg, spec = setup
    check_fails(reg, ["run", str(spec), "--set", "dataset.eval_split=0.99"],
                "dataset.eval_split: 0.99 holds out 40 of 40 rows and leaves none to train on",
                run_created=True)


def test_lora_target_module_missing_from_the_model_lists_its_layers(setup):
    reg, spec = setup
    check_fails(reg, ["run", str(spec), "--set", "strategy.options.target_modules=[q_prj]"],
                "strategy.options.target_modules: ['q_prj'] not found in the model; its linear "
                "layers are: down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, "
                "v_proj (or use 'all-linear')", run_created=True)


def test_empty_column_is_named(setup, tmp_path):
    reg, spec = setup
    blank = tmp_path / "blank.csv"  # pandas reads the empty column as NaN
    blank.write_text("instruction,output\n" + "say nothing,\n" * 10)
    check_fails(reg, ["run", str(spec), "--set", "dataset.source=csv",
                      "--set", f"dataset.options.path={blank}"],
                "dataset: column 'output' is empty in all 10 rows; format 'instruction' reads the "
                "output from it (fill it, or map another column with dataset.columns.output: "
                "COLUMN)", run_created=True)


def test_all_empty_answers_are_refused(no_runs, tmp_path):
    reg, spec = no_runs
    chats = tmp_path / "chats.jsonl"
    chats.write_text(json.dumps({"messages": [{"role": "user", "content": "say nothing"},
                                              {"role": "assistant", "content": ""}]}) + "\n" * 1
                     + "".join(json.dumps({"messages": [{"role": "user", "content": "hush"},
                                                        {"role": "assistant", "content": " "}]})
                               + "\n" for _ in range(9)))
    check_fails(reg, ["run", str(spec), "--set", "dataset.format=chat",
                      "--set", f"dataset.options.path={chats}"],
                "dataset: all 10 rows have an empty answer (format 'chat'); check the column it "
                "reads (dataset.columns)", run_created=True)


def test_empty_dataset_is_refused(no_runs, tmp_path):
    reg, spec = no_runs
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    check_fails(reg, ["run", str(spec), "--set", f"dataset.options.path={empty}"],
                f"dataset-source 'jsonl' (plugin dataset-files): path '{empty}': the file has no "
                "rows", run_created=True)
    empty.write_text('{"instruction": "define cat", "output": "a small animal"}\n')
    check_fails(reg, ["run", str(spec), "--set", f"dataset.options.path={empty}"],
                "dataset: source 'jsonl' gave 1 row; need at least 2 (one to train, one to "
                "evaluate)", run_created=True)


def test_all_examples_too_long_is_refused_before_training(no_runs):
    reg, spec = no_runs  # answer + EOS: 10 to 19 tokens
    check_fails(reg, ["run", str(spec), "--set", "training.max_seq_len=10"],
                "training.max_seq_len: none of the 32 training examples fits in 10 tokens (an "
                "example keeps its whole answer and EOS and at least one prompt token; only the "
                "prompt is cut); raise training.max_seq_len", run_created=True)
    [run] = Registry(reg).list_runs()
    assert Registry(reg).metrics(run["id"], "loss") == []
    assert Registry(reg).evaluations(run["id"]) == []


def test_too_long_examples_are_dropped_with_a_count_and_never_a_nan_loss(no_runs):
    reg, spec = no_runs  # prompts 24–27 tokens; answer + EOS 10, 11, 14 and 19 (dropped)
    result = run_cli(reg, "run", str(spec), "--set", "training.max_seq_len=16")
    assert result.exit_code == 0, result.output
    [run] = Registry(reg).list_runs()
    assert run["status"] == "completed"
    log = (Path(run["output_dir"]) / "run.log").read_text()
    for counts in ("8 of 32 training", "2 of 8 held-out"):
        assert (f"WARNING dropped {counts} examples: their answer and EOS do not fit in "
                "training.max_seq_len (16 tokens) next to a prompt token; raise "
                "training.max_seq_len to keep them") in log
    assert run["train_rows"] == 24
    losses = [v for _, v in Registry(reg).metrics(run["id"], "loss")]
    assert losses and all(math.isfinite(v) for v in losses)
    rows = preview(reg, spec, "--set", "training.max_seq_len=16")["rows"]
    assert [(r["completion"], r["n_tokens"], r["n_trained"]) for r in rows[:4]] == [
        ("a small animal", 16, 10), ("a domesticated animal", 16, 14),
        ("a tall perennial woody plant", 16, 0), ("move fast on foot", 16, 11)]


def test_model_path_that_does_not_exist(setup, tmp_path):
    reg, spec = setup
    missing = tmp_path / "no-such-model"
    check_fails(reg, ["run", str(spec), "--set", f"model.options.path={missing}"],
                f"model.options.path: folder '{missing}' does not exist", run_created=True)


def test_bf16_on_a_gpu_without_bf16_is_refused_before_loading(no_runs, monkeypatch):
    import torch

    reg, spec = no_runs
    loads = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(HFModel, "load", lambda self, **kw: loads.append(kw))
    check_fails(reg, ["run", str(spec), "--set", "training.precision=bf16"],
                "--set training.precision=bf16: training.precision: this GPU has no bf16; use "
                "fp16 or fp32", run_created=False)
    assert loads == []


def test_changed_data_file_is_not_served_stale(tmp_path, qa_jsonl, make_spec, monkeypatch):
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    reg, folder = tmp_path / "registry.db", tmp_path / "qa"
    folder.mkdir()
    data = folder / "train.jsonl"  # the hf source's datasets cache knows it by path and mtime
    data.write_bytes(qa_jsonl.read_bytes())
    spec = make_spec(data, **{"dataset.source": "hf", "dataset.options": {"id": str(folder)},
                              "training.max_steps": 1})
    assert run_cli(reg, "run", str(spec)).exit_code == 0
    stat = data.stat()
    data.write_text(data.read_text().replace("word cat", "word cow"))  # same size
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (data.stat().st_size, data.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    assert "define the word cow" in preview(reg, spec)["rows"][0]["prompt"]
    assert run_cli(reg, "run", str(spec)).exit_code == 0
    second, first = Registry(reg).list_runs()
    assert first["dataset_fingerprint"] != second["dataset_fingerprint"]


def test_a_warm_up_as_long_as_the_run_is_refused_with_the_peak_it_would_reach(no_runs):
    """warmup_steps 100 in a 10-step run trained quietly at a peak of 1.8e-5, 9% of the
    learning rate asked for (Megatron-Bridge #2858, prime-rl #968)."""
    reg, spec = no_runs
    check_fails(reg, ["run", str(spec), "--set", "training.warmup_steps=100", "--set",
                      "training.max_steps=10"],
                "--set training.max_steps=10: training: warmup_steps 100 is not below "
                "max_steps 10: the learning rate would rise for the whole run and peak at "
                "0.00045, 9% of learning_rate 0.005; lower training.warmup_steps or raise "
                "training.max_steps", run_created=False)

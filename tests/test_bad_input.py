"""Each kind of bad input ends with exit code 2 and a one- or two-line message naming what to
fix; nothing already in the registry is lost, and a run that fails is marked failed."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tuneyard.core.cli import cli
from tuneyard.core.registry import Registry


def run_cli(registry: Path, *args: str):
    return CliRunner().invoke(cli, ["--registry", str(registry), *args])


@pytest.fixture
def setup(tmp_path, qa_jsonl, make_spec):
    """A registry holding one completed run, and a valid spec to break."""
    reg = tmp_path / "registry.db"
    spec = make_spec(qa_jsonl, **{"training.max_steps": 2})
    assert run_cli(reg, "run", str(spec)).exit_code == 0
    return reg, spec


def check_fails(reg: Path, args: list[str], message: str, run_created: bool) -> None:
    before = Registry(reg).list_runs()
    result = run_cli(reg, *args)
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == f"Error: {message}"
    assert "Traceback" not in result.output
    after = Registry(reg).list_runs()
    assert after[-len(before):] == before  # nothing already recorded changed
    if run_created:
        assert len(after) == len(before) + 1
        assert after[0]["status"] == "failed" and after[0]["error"] == message
    else:
        assert len(after) == len(before)


def test_unknown_component_suggests_the_closest(setup):
    reg, spec = setup
    check_fails(reg, ["run", str(spec), "--set", "strategy.name=lroa"],
                "--set strategy.name=lroa: strategy.name: unknown strategy 'lroa'; did you mean "
                "'lora'? (valid: full, lora, pretrain-clm, pretrain-mlm)", run_created=False)
    line = next(i for i, t in enumerate(spec.read_text().splitlines(), 1) if "perplexity" in t)
    spec.write_text(spec.read_text().replace("perplexity", "perplexty"))
    check_fails(reg, ["run", str(spec)],
                f"{spec}:{line}: evaluators.0.name: unknown evaluator 'perplexty'; did you mean "
                "'perplexity'? (valid: accuracy, bleu, exact-match, masked-lm, perplexity, rouge, samples, seqeval, squad)", run_created=False)


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


def test_all_empty_answers_are_refused(setup, tmp_path):
    reg, spec = setup
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"instruction": "say nothing", "output": ""}\n' * 10)
    check_fails(reg, ["run", str(spec), "--set", f"dataset.options.path={empty}"],
                "dataset: all 10 rows have an empty answer (format 'instruction'); check the "
                "column it reads (dataset.columns)", run_created=True)

"""``tuneyard data preview``: the first rows as training sees them, labels marked."""

from __future__ import annotations

import json

from click.testing import CliRunner

from tuneyard.core.cli import cli


def test_preview_marks_exactly_the_answer_and_eos_as_trained(qa_jsonl, make_spec):
    spec = make_spec(qa_jsonl)
    result = CliRunner().invoke(cli, ["data", "preview", str(spec), "--rows", "2", "--json"])
    assert result.exit_code == 0, result.output
    preview = json.loads(result.stdout)
    assert (preview["source"], preview["format"], preview["total_rows"]) == (
        "jsonl", "instruction", 40)
    first, second = preview["rows"]
    assert first["prompt"].endswith("define the word cat<|im_end|>\n<|im_start|>assistant\n")
    assert first["completion"] == "a small animal"
    text = "".join(t["text"] for t in first["tokens"])
    trained = "".join(t["text"] for t in first["tokens"] if t["trained"])
    assert text == first["prompt"] + "a small animal<|im_end|>"
    assert trained == "a small animal<|im_end|>"
    assert first["n_trained"] == sum(t["trained"] for t in first["tokens"])
    assert first["n_tokens"] == len(first["tokens"])
    assert second["completion"] == "a domesticated animal"


def test_preview_for_people_and_its_errors(qa_jsonl, make_spec, tmp_path):
    spec = make_spec(qa_jsonl)
    [row] = json.loads(CliRunner().invoke(
        cli, ["data", "preview", str(spec), "--rows", "1", "--json"]).stdout)["rows"]
    result = CliRunner().invoke(cli, ["data", "preview", str(spec), "--rows", "1"])
    assert result.exit_code == 0, result.output
    assert "jsonl · format instruction · 40 rows; first 1." in result.output
    assert f"row 1: {row['n_trained']} of {row['n_tokens']} tokens trained" in result.output
    assert "define the word cat<|im_end|>" in result.output
    result = CliRunner().invoke(cli, ["data", "preview", str(spec), "--set",
                                      f"dataset.options.path={tmp_path / 'missing.jsonl'}"])
    assert result.exit_code == 2
    assert "missing.jsonl" in result.output


def test_preview_of_a_chat_format_renders_with_the_model_tokenizer(tmp_path, make_spec):
    """Chat rows need the tokenizer's chat template: the preview renders them with it."""
    data = tmp_path / "chat.jsonl"
    turns = [{"from": "human", "value": "define cat"}, {"from": "gpt", "value": "a small animal"}]
    data.write_text("".join(json.dumps({"conversations": turns}) + "\n" for _ in range(5)))
    spec = make_spec(data, **{"dataset.format": "sharegpt"})
    result = CliRunner().invoke(cli, ["data", "preview", str(spec), "--rows", "1", "--json"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)["rows"]
    assert row["prompt"] == "<|im_start|>user\ndefine cat<|im_end|>\n<|im_start|>assistant\n"
    assert "".join(t["text"] for t in row["tokens"] if t["trained"]) == "a small animal<|im_end|>"

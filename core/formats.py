"""Row formats: how a dataset row becomes text, then tokens with labels.

Formats (``dataset.format`` in the run spec):

- ``text``: train on every token of column ``text``.
- ``instruction``: columns ``instruction`` (or ``prompt``), optional ``input``, and ``output``
  (or ``completion``). The prompt is rendered with the tokenizer's chat template as one user
  turn when the tokenizer has one (the model's own convention), else with the Alpaca template
  (Taori et al. 2023). Loss is taken on the answer only.
- ``chat``: column ``messages``, a list of ``{role, content}`` ending with the assistant turn
  to learn; rendered with the tokenizer's chat template. Loss on the last assistant turn only.

``dataset.columns`` maps a format field to another column name (``{output: gloss}``).

Every example ends with the tokenizer's EOS token, and that EOS is a label even when
pad == eos (SmolLM2): labels are built from the token positions, never by masking pad ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tuneyard.core.components import Example
from tuneyard.core.errors import DataError

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100  # label value that torch's cross_entropy ignores

ALPACA_PROMPT = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
ALPACA_PROMPT_INPUT = "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"

#: format → field → column names tried in order (after ``dataset.columns``)
FIELDS = {
    "text": {"text": ("text",)},
    "instruction": {"instruction": ("instruction", "prompt"), "input": ("input",),
                    "output": ("output", "completion", "response")},
    "chat": {"messages": ("messages", "conversations")},
}
OPTIONAL = {"input"}


def resolve_columns(fmt: str, present: list[str], mapping: dict[str, str]) -> dict[str, str | None]:
    """Map each field of ``fmt`` to a column of the dataset (``mapping``'s keys are fields of
    ``fmt``: the run spec checks that).

    Raises:
        DataError: a required column is missing; lists the columns present and the mapping key.
    """
    resolved: dict[str, str | None] = {}
    for field, candidates in FIELDS[fmt].items():
        wanted = (mapping[field],) if field in mapping else candidates
        column = next((c for c in wanted if c in present), None)
        if column is None and field not in OPTIONAL:
            raise DataError(
                f"dataset: format '{fmt}' needs a column {' or '.join(repr(c) for c in wanted)}; "
                f"columns present: {', '.join(present)} "
                f"(map one with dataset.columns.{field}: COLUMN)"
            )
        resolved[field] = column
    return resolved


def to_examples(
    rows: Any, fmt: str, mapping: dict[str, str], tokenizer: Any
) -> list[Example]:
    """Render dataset rows (a ``datasets.Dataset`` or list of dicts) as prompt/completion text.

    Raises:
        DataError: missing column, or a ``chat`` row that does not end with an assistant turn.
    """
    present = list(rows.column_names) if hasattr(rows, "column_names") else list(rows[0])
    cols = resolve_columns(fmt, present, mapping)
    examples = []
    for i, row in enumerate(rows):
        if fmt == "text":
            examples.append(Example("", str(row[cols["text"]])))
        elif fmt == "instruction":
            extra = str(row[cols["input"]] or "") if cols["input"] else ""
            prompt = _instruction_prompt(tokenizer, str(row[cols["instruction"]]), extra)
            examples.append(Example(prompt, str(row[cols["output"]])))
        else:
            examples.append(_chat_example(tokenizer, row[cols["messages"]], i))
    return examples


def _instruction_prompt(tokenizer: Any, instruction: str, extra: str) -> str:
    if getattr(tokenizer, "chat_template", None):
        content = f"{instruction}\n\n{extra}" if extra else instruction
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
    if extra:
        return ALPACA_PROMPT_INPUT.format(instruction=instruction, input=extra)
    return ALPACA_PROMPT.format(instruction=instruction)


def _chat_example(tokenizer: Any, messages: Any, index: int) -> Example:
    if not getattr(tokenizer, "chat_template", None):
        raise DataError("dataset.format 'chat' needs a tokenizer with a chat template")
    if not messages or messages[-1].get("role") != "assistant":
        raise DataError(f"dataset row {index + 1}: a chat example must end with an assistant "
                        "message")
    prompt = tokenizer.apply_chat_template(
        list(messages[:-1]), tokenize=False, add_generation_prompt=True
    )
    return Example(prompt, str(messages[-1]["content"]))


def tokenize(example: Example, tokenizer: Any, max_seq_len: int) -> dict[str, list[int]]:
    """Token ids and labels of one example, truncated to ``max_seq_len`` tokens.

    Returns:
        ``input_ids`` = prompt + completion + [eos]; ``labels`` = -100 on the prompt, the ids on
        completion and EOS. Lists of ints, same length ≤ ``max_seq_len``.
    """
    prompt = tokenizer(example.prompt, add_special_tokens=False)["input_ids"] if example.prompt else []
    completion = tokenizer(example.completion, add_special_tokens=False)["input_ids"]
    completion = completion + [tokenizer.eos_token_id]
    input_ids = (prompt + completion)[:max_seq_len]
    labels = ([IGNORE_INDEX] * len(prompt) + completion)[:max_seq_len]
    return {"input_ids": input_ids, "labels": labels}


def tokenize_all(
    examples: list[Example], tokenizer: Any, max_seq_len: int
) -> tuple[list[dict[str, list[int]]], int]:
    """Tokenize examples, dropping those whose completion was truncated away entirely (their
    loss would be 0/0 = NaN). Returns the rows and how many were dropped."""
    rows = [tokenize(e, tokenizer, max_seq_len) for e in examples]
    kept = [r for r in rows if any(label != IGNORE_INDEX for label in r["labels"])]
    return kept, len(rows) - len(kept)


def pack(rows: list[dict[str, list[int]]], block_size: int) -> list[dict[str, list[int]]]:
    """Concatenate tokenized rows (each already ending in EOS) and cut ``block_size`` blocks.

    The tail shorter than a block is dropped, as in transformers' ``run_clm.py`` example.
    Labels equal the inputs (every token is a target).
    """
    stream = [t for r in rows for t in r["input_ids"]]
    blocks = [stream[i:i + block_size] for i in range(0, len(stream) - block_size + 1, block_size)]
    return [{"input_ids": b, "labels": list(b)} for b in blocks]


@dataclass
class PadCollator:
    """Pads rows of ``input_ids``/``labels`` on the right into a batch.

    Returns:
        dict of int64 tensors ``[batch, seq_len]``: ``input_ids`` (padded with
        ``pad_token_id``), ``attention_mask`` (1 on real tokens), ``labels`` (-100 on padding).
    """

    pad_token_id: int

    def __call__(self, rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            labels[i, :n] = torch.tensor(r["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

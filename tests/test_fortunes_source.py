"""The ``fortunes`` dataset source: fortune cookies labelled with their category."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tuneyard.core.errors import DataError
from tuneyard.plugins.datasets import fortunes
from tuneyard.plugins.datasets.fortunes import FortunesSource

FORTUNES = Path("/usr/share/games/fortunes")


def load(**opts):
    return FortunesSource(FortunesSource.Options(**opts)).load()


@pytest.fixture
def folder(tmp_path) -> Path:
    """Two categories, with strfile's index files, a ``.u8`` link and an ``off/`` folder."""
    (tmp_path / "science").write_text(
        "Entropy isn't what it used to be.\n%\n\n  E = mc^2\n\tor so they say.  \n\n%\n"
        "%DCL-MEM-BAD, bad memory\n%\n"
    )
    (tmp_path / "science.dat").write_bytes(b"\x00\x00\x00\x02\x00\x00\x00\x03")
    (tmp_path / "science.u8").symlink_to("science")
    (tmp_path / "art").write_text("%\nArt is long.\n%\n")
    (tmp_path / "off").mkdir()
    (tmp_path / "off" / "racism").write_text("not read\n%\n")
    return tmp_path


def test_rows_in_category_then_file_order(folder):
    ds = load(path=str(folder))
    assert ds.column_names == ["text", "label"]
    assert ds.to_list() == [
        {"text": "Art is long.", "label": "art"},
        {"text": "Entropy isn't what it used to be.", "label": "science"},
        {"text": "E = mc^2\n\tor so they say.", "label": "science"},
        {"text": "%DCL-MEM-BAD, bad memory", "label": "science"},
    ]


def test_categories_keep_their_order_and_max_chars(folder):
    ds = load(path=str(folder), categories=["science", "art", "science"], max_chars=25)
    assert ds["text"] == ["E = mc^2\n\tor so they say.", "%DCL-MEM-BAD, bad memory",
                          "Art is long."]
    with pytest.raises(DataError) as err:
        load(path=str(folder), max_chars=5)
    assert str(err.value) == "fortunes: no fortune has at most 5 characters (raise 'max_chars')"


def test_limit_is_a_seeded_sample(folder):
    a = load(path=str(folder), limit=3, seed=1)
    assert len(a) == 3
    assert a.to_list() == load(path=str(folder), limit=3, seed=1).to_list()
    samples = {tuple(load(path=str(folder), limit=3, seed=s)["text"]) for s in range(8)}
    assert len(samples) > 1
    assert len(load(path=str(folder), limit=99)) == 4


def test_unknown_category_suggests_and_lists_valid(folder):
    with pytest.raises(DataError) as err:
        load(path=str(folder), categories=["sceince"])
    assert str(err.value) == ("option 'categories': unknown fortune category 'sceince'; "
                              "did you mean 'science'? (valid: art, science)")
    with pytest.raises(DataError) as err:
        load(path=str(folder), categories=["off"])
    assert str(err.value) == ("option 'categories': unknown fortune category 'off' "
                              "(valid: art, science)")


def test_missing_folder_says_what_to_install(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataError) as err:
        load(path=str(missing))
    assert str(err.value) == (f"fortunes folder {missing} not found (option 'path': {missing}); "
                              "install it with: apt-get install -y fortunes")
    with pytest.raises(DataError) as err:
        load(path=str(tmp_path))
    assert str(err.value) == f"fortunes folder {tmp_path}: holds no fortune files"


def test_category_file_without_fortunes(folder):
    (folder / "empty").write_text("%\n  \n%\n")
    with pytest.raises(DataError) as err:
        load(path=str(folder))
    assert str(err.value) == (f"{folder / 'empty'}: no fortunes (a fortune file holds texts "
                              "separated by lines of just '%')")


def test_encoding_option_and_decode_error(tmp_path):
    (tmp_path / "food").write_bytes("Crème brûlée.\n%\nCafé.\n".encode("latin-1"))
    with pytest.raises(DataError) as err:
        load(path=str(tmp_path))
    assert str(err.value).startswith(f"{tmp_path / 'food'}: cannot decode as utf-8 (")
    assert str(err.value).endswith("set the 'encoding' option, e.g. encoding: latin-1")
    assert load(path=str(tmp_path), encoding="latin-1")["text"] == ["Crème brûlée.", "Café."]


def test_options_forbid_unknown_keys_and_registers():
    with pytest.raises(ValueError, match="category"):
        FortunesSource.Options(category=["art"])
    registered = []
    fortunes.register_dataset_sources(register=registered.append)
    assert registered == [FortunesSource]


@pytest.mark.skipif(not (FORTUNES / "fortunes").is_file(),
                    reason="needs apt-get install -y fortunes")
def test_debian_fortunes_folder():
    rows = FortunesSource(FortunesSource.Options()).rows()
    counts = Counter(r["label"] for r in rows)
    assert len(counts) == 43 and len(rows) == 15_217  # = the counts in strfile's .dat files
    assert counts["computers"] == 1051 and counts["pratchett"] == 2
    assert all(r["text"] and r["text"] == r["text"].strip() for r in rows)
    assert len(load(categories=["science"], max_chars=200)) < counts["science"]

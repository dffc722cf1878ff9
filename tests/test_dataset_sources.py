"""Built-in dataset sources: local files, the offline hub cache and WordNet."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tuneyard.core.errors import DataError
from tuneyard.plugins.datasets.files import CsvSource, JsonlSource, ParquetSource, TextSource
from tuneyard.plugins.datasets.hf import HfSource
from tuneyard.plugins.datasets.wordnet import WordnetSource, parse_line

WORDNET = Path("/usr/share/wordnet")
needs_wordnet = pytest.mark.skipif(
    not (WORDNET / "data.noun").is_file(), reason="needs apt-get install -y wordnet-base"
)


def load(cls, **opts):
    return cls(cls.Options(**opts)).load()


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# -- jsonl -----------------------------------------------------------------------------------
def test_jsonl_rows_columns_and_limit(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"q": f"q{i}", "a": i} for i in range(10)])
    ds = load(JsonlSource, path=str(path))
    assert len(ds) == 10
    assert ds.column_names == ["q", "a"]
    assert ds[3] == {"q": "q3", "a": 3}
    assert load(JsonlSource, path=str(path), limit=4)["q"] == ["q0", "q1", "q2", "q3"]


def test_jsonl_glob_blank_lines_and_missing_keys(tmp_path):
    write_jsonl(tmp_path / "1.jsonl", [{"q": "a"}])
    (tmp_path / "2.jsonl").write_text('\n{"q": "b", "extra": 1}\n\n')
    ds = load(JsonlSource, path=str(tmp_path / "*.jsonl"))
    assert ds["q"] == ["a", "b"]
    assert ds["extra"] == [None, 1]


def test_jsonl_broken_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"q": 1}\n{"q": 2}\n{"q": 3,,}\n{"q": 4}\n')
    with pytest.raises(DataError) as err:
        load(JsonlSource, path=str(path))
    assert str(err.value).startswith(f"{path}:3:")
    assert ": invalid JSON: " in str(err.value)
    assert "\n" not in str(err.value)


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text('{"q": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match=r":2: expected a JSON object, got list$"):
        load(JsonlSource, path=str(path))


def test_non_utf8_jsonl_suggests_the_encoding_option(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes('{"q": "ok"}\n{"q": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(DataError) as err:
        load(JsonlSource, path=str(path))
    assert str(err.value) == (f"{path}: cannot decode as utf-8 (invalid continuation byte at "
                              "byte 22, line 2); set the 'encoding' option, e.g. encoding: latin-1")
    assert load(JsonlSource, path=str(path), encoding="latin-1")["q"] == ["ok", "café"]


def test_jsonl_with_utf8_bom_and_crlf_line_endings(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"q": "a"}\r\n{"q": "b"}\r\n')
    ds = load(JsonlSource, path=str(path))
    assert ds.column_names == ["q"] and ds["q"] == ["a", "b"]


def test_missing_file_and_empty_glob(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError) as err:
        load(JsonlSource, path=str(missing))
    assert str(missing) in str(err.value) and "not found" in str(err.value)
    with pytest.raises(DataError, match=r"no file matches this glob \(not found\)"):
        load(CsvSource, path=str(tmp_path / "*.csv"))


def test_missing_package_path_is_a_data_error():
    with pytest.raises(DataError, match=r"package 'no_such_pkg_xyz' is not installed"):
        load(TextSource, path="package:no_such_pkg_xyz/a.txt")


@pytest.mark.parametrize("cls, name, content", [
    (JsonlSource, "e.jsonl", "\n\n"),
    (CsvSource, "e.csv", ""),
    (CsvSource, "header.csv", "a,b\n"),
    (TextSource, "e.txt", "\n  \n"),
])
def test_empty_file_has_no_rows(tmp_path, cls, name, content):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=f"path '{path}': the file has no rows"):
        load(cls, path=str(path))


# -- csv -------------------------------------------------------------------------------------
def test_csv_types_and_limit(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text,label,score\n"hello, world",1,0.5\nbye,0,1.5\nagain,1,2.0\n')
    ds = load(CsvSource, path=str(path))
    assert ds.column_names == ["text", "label", "score"]
    assert ds["text"] == ["hello, world", "bye", "again"]
    assert ds["label"] == [1, 0, 1]
    assert ds["score"] == [0.5, 1.5, 2.0]
    assert len(load(CsvSource, path=str(path), limit=2)) == 2


def test_csv_latin1_needs_encoding_option(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\ncaf\xe9 cr\xe8me,pos\nna\xefve,neg\n".encode("latin-1"))
    with pytest.raises(DataError) as err:
        load(CsvSource, path=str(path))
    message = str(err.value)
    assert message.startswith(f"{path}: cannot decode as utf-8")
    assert "set the 'encoding' option" in message
    ds = load(CsvSource, path=str(path), encoding="latin-1")
    assert ds["text"] == ["café crème", "naïve"]


def test_csv_with_utf8_bom_just_works(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("text,label\r\ncafé,pos\r\n".encode("utf-8-sig"))
    ds = load(CsvSource, path=str(path))
    assert ds.column_names == ["text", "label"]  # not "\ufefftext"
    assert ds["text"] == ["café"] and ds["label"] == ["pos"]


def test_options_forbid_unknown_keys():
    with pytest.raises(ValueError, match="encodng"):
        CsvSource.Options(path="x.csv", encodng="latin-1")
    with pytest.raises(ValueError, match="encoding"):
        ParquetSource.Options(path="x.parquet", encoding="latin-1")


# -- parquet ---------------------------------------------------------------------------------
def test_parquet_round_trip(tmp_path):
    import datasets

    rows = {"instruction": [f"i{n}" for n in range(6)], "n": list(range(6)),
            "tags": [["a"], [], ["b", "c"], ["d"], [], ["e"]]}
    datasets.Dataset.from_dict(rows).to_parquet(str(tmp_path / "part-0.parquet"))
    ds = load(ParquetSource, path=str(tmp_path / "part-0.parquet"))
    assert ds.to_dict() == rows
    assert load(ParquetSource, path=str(tmp_path / "*.parquet"), limit=2)["n"] == [0, 1]


def test_parquet_not_parquet(tmp_path):
    path = tmp_path / "fake.parquet"
    path.write_text("not parquet at all")
    with pytest.raises(DataError, match=f"{path}: not a readable Parquet file"):
        load(ParquetSource, path=str(path))


# -- text ------------------------------------------------------------------------------------
def test_text_by_line_and_by_file(tmp_path):
    (tmp_path / "a.txt").write_text("first line\n\nsecond line\r\nthird\n")
    (tmp_path / "b.txt").write_text("other file\n")
    ds = load(TextSource, path=str(tmp_path / "a.txt"))
    assert ds.column_names == ["text"]
    assert ds["text"] == ["first line", "second line", "third"]
    assert load(TextSource, path=str(tmp_path / "*.txt"), limit=4)["text"] == [
        "first line", "second line", "third", "other file"]
    whole = load(TextSource, path=str(tmp_path / "*.txt"), by="file")
    assert whole["text"] == ["first line\n\nsecond line\nthird\n", "other file\n"]


def test_text_encoding(tmp_path):
    path = tmp_path / "l.txt"
    path.write_bytes("\xe0 bient\xf4t\n".encode("latin-1"))
    with pytest.raises(DataError, match="set the 'encoding' option"):
        load(TextSource, path=str(path))
    assert load(TextSource, path=str(path), encoding="latin-1")["text"] == ["à bientôt"]


# -- hf --------------------------------------------------------------------------------------
def test_hf_uncached_dataset_fails_fast_offline():
    start = time.monotonic()
    with pytest.raises(DataError) as err:
        load(HfSource, id="tuneyard-test/no-such-dataset-xyz")
    assert time.monotonic() - start < 30
    assert str(err.value) == (
        "dataset 'tuneyard-test/no-such-dataset-xyz' is not in the local Hugging Face cache "
        "and the hub is offline (tuneyard never downloads); for local files use the jsonl, "
        "csv or parquet source"
    )


def test_hf_offline_mode_is_restored(monkeypatch):
    import datasets.config
    import huggingface_hub.constants as hub_constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(DataError):
        load(HfSource, id="tuneyard-test/no-such-dataset-xyz", name="cfg")
    assert datasets.config.HF_HUB_OFFLINE is False and hub_constants.HF_HUB_OFFLINE is False
    assert "HF_HUB_OFFLINE" not in __import__("os").environ


def test_hf_local_folder_loads_split_with_limit(tmp_path, monkeypatch):
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    data = tmp_path / "ds"
    data.mkdir()
    write_jsonl(data / "train.jsonl", [{"text": f"t{i}"} for i in range(5)])
    ds = load(HfSource, id=str(data), limit=3)
    assert ds["text"] == ["t0", "t1", "t2"]
    with pytest.raises(DataError, match="check the 'name' and 'split' options"):
        load(HfSource, id=str(data), split="nope")


def test_hf_local_folder_changed_file_is_not_served_stale(tmp_path, monkeypatch):
    import os

    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    data = tmp_path / "ds"
    data.mkdir()
    file = write_jsonl(data / "train.jsonl", [{"text": "old"}])
    stat = file.stat()
    assert load(HfSource, id=str(data))["text"] == ["old"]
    write_jsonl(file, [{"text": "new"}])  # same size; same mtime below: the cache's key
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file.stat().st_size == stat.st_size
    assert load(HfSource, id=str(data))["text"] == ["new"]


# -- wordnet ---------------------------------------------------------------------------------
ABLE = ("00001740 00 a 01 able 0 005 = 05200169 n 0000 = 05616246 n 0000 + 05616246 n 0101 "
        "+ 05200169 n 0101 ! 00002098 a 0101 | (usually followed by `to') having the necessary "
        'means or skill or know-how or authority to do something; "able to swim"; "she was able '
        'to program her computer"  \n')
GALORE = ("00014358 00 s 02 abounding 0 galore(ip) 0 001 & 00013887 a 0000 | existing in "
          'abundance; "abounding confidence"; "whiskey galore"  \n')


def test_wordnet_parse_line_exact_values():
    assert parse_line(ABLE) == [{
        "word": "able", "pos": "adjective",
        "definition": "(usually followed by `to') having the necessary means or skill or "
                      "know-how or authority to do something",
        "examples": ["able to swim", "she was able to program her computer"],
        "instruction": 'Define the word "able" (adjective).',
        "output": "(usually followed by `to') having the necessary means or skill or "
                  "know-how or authority to do something",
        "question": "Which adjective means \"(usually followed by `to') having the necessary "
                    "means or skill or know-how or authority to do something\"?",
    }]
    words = parse_line(GALORE)
    assert [r["word"] for r in words] == ["abounding", "galore"]
    assert words[1]["examples"] == ["abounding confidence", "whiskey galore"]


def test_wordnet_parse_verb_with_frames_and_multiword():
    line = ("00002325 29 v 02 take_a_breath 1 respire 1 001 $ 00001740 v 0000 01 + 02 00 | "
            "undergo respiration  \n")
    rows = parse_line(line)
    assert [(r["word"], r["pos"], r["definition"], r["examples"]) for r in rows] == [
        ("take a breath", "verb", "undergo respiration", []),
        ("respire", "verb", "undergo respiration", []),
    ]


def test_wordnet_small_folder_limit_and_errors(tmp_path):
    header = "  1 This software and database is being provided to you, the LICENSEE\n"
    (tmp_path / "data.adj").write_text(header + ABLE + GALORE)
    ds = load(WordnetSource, path=str(tmp_path), pos=["adjective"])
    assert ds["word"] == ["able", "abounding", "galore"]
    assert ds.column_names == ["word", "pos", "definition", "examples", "instruction", "output",
                               "question"]
    short = load(WordnetSource, path=str(tmp_path), pos=["adjective"], max_definition_words=3)
    assert short["word"] == ["abounding", "galore"]
    with pytest.raises(DataError) as err:
        load(WordnetSource, path=str(tmp_path / "missing"))
    assert str(tmp_path / "missing") in str(err.value)
    assert "apt-get install -y wordnet-base" in str(err.value)
    (tmp_path / "data.adv").write_text(header + "00001 02 r zz\n")
    with pytest.raises(DataError, match=r"data\.adv:2: malformed WordNet data line$"):
        load(WordnetSource, path=str(tmp_path), pos=["adverb"])


def test_wordnet_rejected_is_another_definition_of_the_same_part_of_speech(tmp_path):
    header = "  1 This software and database is being provided to you, the LICENSEE\n"
    respire = ("00002325 29 v 02 take_a_breath 1 respire 1 001 $ 00001740 v 0000 01 + 02 00 | "
               "undergo respiration  \n")
    (tmp_path / "data.adj").write_text(header + ABLE + GALORE)
    (tmp_path / "data.verb").write_text(header + respire)
    ds = load(WordnetSource, path=str(tmp_path), pos=["adjective"], rejected=True)
    assert ds.column_names[-1] == "rejected"
    able, abounding = parse_line(ABLE)[0]["definition"], parse_line(GALORE)[0]["definition"]
    assert ds["rejected"] == [abounding, able, able]  # the one other adjective definition
    again = load(WordnetSource, path=str(tmp_path), pos=["adjective"], rejected=True)
    assert again["rejected"] == ds["rejected"]
    with pytest.raises(DataError, match="verb has one"):
        load(WordnetSource, path=str(tmp_path), pos=["verb"], rejected=True)


@needs_wordnet
def test_wordnet_full_database():
    start = time.monotonic()
    rows = WordnetSource(WordnetSource.Options()).rows()
    assert time.monotonic() - start < 5
    assert len(rows) == 206_978
    counts = {p: sum(r["pos"] == p for r in rows) for p in ("noun", "verb", "adjective", "adverb")}
    assert counts == {"noun": 146_347, "verb": 25_047, "adjective": 30_004, "adverb": 5_580}
    dog = next(r for r in rows if r["word"] == "dog")
    assert dog["definition"].startswith("a member of the genus Canis")
    assert dog["examples"] == ["the dog barked all night"]
    assert all("_" not in r["word"] and not r["word"].endswith(")") for r in rows)


@needs_wordnet
def test_wordnet_limit_is_a_seeded_sample():
    a = load(WordnetSource, limit=300, seed=1)
    b = load(WordnetSource, limit=300, seed=1)
    c = load(WordnetSource, limit=300, seed=2)
    assert len(a) == 300 and a["word"] == b["word"] and a["word"] != c["word"]
    assert set(a["pos"]) == {"noun", "verb", "adjective", "adverb"}
    assert len({w[0].lower() for w in a["word"]}) > 15
    verbs = load(WordnetSource, pos=["verb"], limit=20)
    assert set(verbs["pos"]) == {"verb"}
    pairs = load(WordnetSource, limit=300, seed=1, rejected=True)
    assert pairs["word"] == a["word"]  # the same sample, with a column more
    assert all(r != d for r, d in zip(pairs["rejected"], pairs["definition"]))
    by_pos = {}
    for row in WordnetSource(WordnetSource.Options()).rows():
        by_pos.setdefault(row["definition"], set()).add(row["pos"])
    assert all(pos in by_pos[r] for r, pos in zip(pairs["rejected"], pairs["pos"]))


# -- plugin manager --------------------------------------------------------------------------
def test_sources_register_through_entry_points():
    from tuneyard.core.plugins import Plugins

    p = Plugins()
    p.load_entry_points()
    p.collect_components()
    assert set(p.components["dataset-source"]) >= {"jsonl", "csv", "parquet", "text", "hf",
                                                  "wordnet"}
    for name in ("dataset-files", "dataset-hf", "dataset-wordnet"):
        assert p.infos[name].errors == []


def test_plugin_modules_import_no_heavy_libraries():
    import subprocess
    import sys

    code = ("import sys, tuneyard.plugins.datasets.files, tuneyard.plugins.datasets.hf, "
            "tuneyard.plugins.datasets.wordnet; "
            "print(sorted(m for m in ('datasets', 'torch', 'pandas', 'pyarrow') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

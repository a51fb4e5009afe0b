"""One fact, one place: the pre-tokenizer table serves both directions.

Judges: the converter's own decision (`decide_pre`, which reads a tokenizer.json) and the
`tokenizers` library's parser for the export direction.
"""

import json

import pytest

from convert import pretokenizers

NAMES = sorted(
    {n for e in pretokenizers.pretokenizer_table()["pre"] for n in [e["name"], *e["also"]]}
)


@pytest.mark.parametrize("name", NAMES)
def test_every_pre_tokenizer_exports_to_a_tokenizer_json_that_converts_back(name):
    tokenizers = pytest.importorskip("tokenizers")
    pre, ignore_merges = pretokenizers.hf_pre_tokenizer(name)
    tj = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": pre,
        "post_processor": None,
        "decoder": {
            "type": "ByteLevel",
            "add_prefix_space": False,
            "trim_offsets": True,
            "use_regex": True,
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": ignore_merges,
            "vocab": {"a": 0, "b": 1, "ab": 2},
            "merges": ["a b"],
        },
    }
    tok = tokenizers.Tokenizer.from_str(json.dumps(tj))  # the library accepts it
    assert tok.pre_tokenizer.pre_tokenize_str("ab 12") != []
    entry = pretokenizers.entry(name)
    assert pretokenizers.decide_pre(json.loads(tok.to_str()), None) == entry["name"]


def test_an_unknown_pre_tokenizer_is_a_one_line_error():
    from convert.errors import ConvertError

    with pytest.raises(ConvertError, match="not supported by export-hf; supported: .*smollm"):
        pretokenizers.hf_pre_tokenizer("no-such-pre")

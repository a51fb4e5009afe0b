"""One fact, one place: the pre-tokenizer table serves both directions, and the packages' import
graph has no cycle.

Judges: the converter's own decision (`decide_pre`, which reads a tokenizer.json) and the
`tokenizers` library's parser for the export direction; the modules' source (ast) for the graph.
"""

import ast
import json
from pathlib import Path

import pytest

from convert import pretokenizers

ROOT = Path(__file__).resolve().parent.parent
NAMES = sorted({n for e in pretokenizers.pretokenizer_table()["pre"] for n in [e["name"], *e["also"]]})


@pytest.mark.parametrize("name", NAMES)
def test_every_pre_tokenizer_exports_to_a_tokenizer_json_that_converts_back(name):
    tokenizers = pytest.importorskip("tokenizers")
    pre, ignore_merges = pretokenizers.hf_pre_tokenizer(name)
    tj = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": None, "pre_tokenizer": pre, "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": ignore_merges,
                  "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]},
    }  # fmt: skip
    tok = tokenizers.Tokenizer.from_str(json.dumps(tj))  # the library accepts it
    assert tok.pre_tokenizer.pre_tokenize_str("ab 12") != []
    entry = pretokenizers.entry(name)
    assert pretokenizers.decide_pre(json.loads(tok.to_str()), None) == entry["name"]


def test_an_unknown_pre_tokenizer_is_a_one_line_error():
    from convert.errors import ConvertError

    with pytest.raises(ConvertError, match="not supported by export-hf; supported: .*smollm"):
        pretokenizers.hf_pre_tokenizer("no-such-pre")


def import_graph() -> dict[str, set[str]]:
    mods = {}
    for pkg in ("edge_llm", "convert", "bench"):
        for p in (ROOT / pkg).rglob("*.py"):
            parts = list(p.relative_to(ROOT).with_suffix("").parts)
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from pkg import submodule` depends on the submodule
                names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods
                         else node.module for a in node.names]  # fmt: skip
            else:
                continue
            graph[m] |= {t for t in map(owner, names) if t and t != m}
    return graph


def test_no_import_cycle_among_the_packages_modules():
    graph = import_graph()
    assert len(graph) > 80 and "edge_llm.llama.scoring" in graph["bench.lm"]
    # depth-first search for a back edge; reports the first cycle found
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return path[path.index(t):] + [t]
            if t not in state and (c := visit(t)):
                return c
        state[m] = 2
        path.pop()
        return None

    for m in sorted(graph):
        if m not in state:
            assert visit(m) is None

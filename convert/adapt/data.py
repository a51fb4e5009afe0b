"""Training examples for an adapter: (tokens, labels) with the prompt masked.

Why: an adapter should learn to answer, not to predict the question. Every example is a prompt
and a reply; the loss is taken on the reply's tokens only (labels -100 on the prompt, as
Hugging Face's loss and mlx-lm's ``--mask-prompt`` do). Sources:

- a built-in domain: ``k12-math`` (English and Chinese) or ``k12-zh`` (Chinese only), the training
  side of the project's K-12 templates (convert/distill/domain.py, disjoint from the benchmark's
  by bench/suites/k12_split.toml): a question and its worked solution ending in the answer;
- a JSONL file of ``{"messages": [...]}`` (chat: loss on every assistant turn) or
  ``{"prompt": ..., "completion": ...}`` records.

A base with a chat template is trained through it (the question as the user's turn, as
`edge-llm bench` asks a chat model); one without gets the benchmark's raw layout
("Question: ...\\nAnswer: ...").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convert.errors import ConvertError

DOMAINS = ("k12-math", "k12-zh")


@dataclass(frozen=True)
class Example:
    """A conversation (chat) or a prompt and its completion (raw)."""

    messages: tuple[tuple[str, str], ...] = ()
    prompt: str = ""
    completion: str = ""


def k12_examples(domain: str, n: int, seed: int) -> list[Example]:
    """``n`` worked K-12 problems as examples (``k12-zh``: the Chinese ones)."""
    from convert.distill.domain import k12_problems, k12_templates

    _, prompts, _ = k12_templates()
    want = 2 * n if domain == "k12-zh" else n
    probs = [p for p in k12_problems(want, seed) if domain != "k12-zh" or p["language"] == "zh"]
    out = []
    for p in probs[:n]:
        head = prompts[p["language"]]
        sep = "" if p["language"] == "zh" else " "
        out.append(
            Example(
                messages=(("user", p["question"]), ("assistant", p["solution"])),
                prompt=f"{head['question']}{p['question']}\n{head['answer']}{sep}",
                completion=p["solution"],
            )
        )
    return out


def read_jsonl(path: Path) -> list[Example]:
    """Examples from a JSONL of chat ``messages`` or ``prompt``/``completion`` records."""
    if not path.is_file():
        raise ConvertError(f"--domain {path}: no such file; give k12-math, k12-zh or a .jsonl")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            raise ConvertError(f"{path}:{n}: not JSON ({e.args[0][:60]})") from None
        out.append(_record(rec, f"{path}:{n}"))
    if not out:
        raise ConvertError(f"{path} holds no examples; one JSON object per line")
    return out


def _record(rec, where: str) -> Example:
    if isinstance(rec, dict) and isinstance(rec.get("messages"), list):
        msgs = []
        for m in rec["messages"]:
            if not (
                isinstance(m, dict)
                and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str)
            ):
                raise ConvertError(f"{where}: each message needs a string role and content")
            msgs.append((m["role"], m["content"]))
        if not any(r == "assistant" for r, _ in msgs):
            raise ConvertError(f"{where}: no assistant message to learn from")
        return Example(messages=tuple(msgs))
    if (
        isinstance(rec, dict)
        and isinstance(rec.get("prompt"), str)
        and isinstance(rec.get("completion"), str)
    ):
        if not rec["completion"].strip():
            raise ConvertError(f"{where}: the completion is empty")
        return Example(
            messages=(("user", rec["prompt"]), ("assistant", rec["completion"])),
            prompt=rec["prompt"],
            completion=rec["completion"],
        )
    raise ConvertError(
        f'{where}: expected {{"messages": [...]}} or {{"prompt": ..., "completion": ...}}'
    )


def texts(examples: list[Example]) -> list[str]:
    """Every text of the examples (what the contamination guard reads)."""
    out = []
    for e in examples:
        out += [c for _, c in e.messages] or [e.prompt + e.completion]
    return out


def encode(tok, ex: Example, chat: bool, max_len: int) -> tuple[list[int], list[int]]:
    """(input ids, labels): labels are the ids on reply tokens and -100 elsewhere; cut to
    ``max_len`` tokens."""
    if chat and ex.messages:
        ids, labels = _encode_chat(tok, ex.messages)
    else:
        prompt = ex.prompt or "".join(c for r, c in ex.messages if r != "assistant")
        completion = ex.completion or "".join(c for r, c in ex.messages if r == "assistant")
        p = _ids(tok, prompt, bos=True)
        c = _ids(tok, completion, bos=False)
        if tok.eos_token_id is not None:
            c = [*c, int(tok.eos_token_id)]
        ids, labels = p + c, [-100] * len(p) + c
    return ids[:max_len], labels[:max_len]


def _ids(tok, text: str, bos: bool) -> list[int]:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if bos and tok.bos_token_id is not None and getattr(tok, "add_bos_token", False):
        ids = [int(tok.bos_token_id), *ids]
    return list(ids)


def _encode_chat(tok, messages) -> tuple[list[int], list[int]]:
    """The conversation through the chat template; each assistant turn labelled: the tokens
    between the prompt that asks for it and the conversation that includes it."""
    msgs = [{"role": r, "content": c} for r, c in messages]

    def ids(n: int, gen: bool) -> list[int]:
        if (n, gen) not in seen:
            text = tok.apply_chat_template(msgs[:n], tokenize=False, add_generation_prompt=gen)
            seen[n, gen] = _ids(tok, text, bos=False)
        return seen[n, gen]

    seen: dict[tuple[int, bool], list[int]] = {}
    full = ids(len(msgs), False)
    labels = [-100] * len(full)
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        start, upto = len(ids(i, True)), ids(i + 1, False)
        if full[: len(upto)] != upto or full[:start] != ids(i, True):
            raise ConvertError(
                "the chat template does not render a conversation as a prefix of a longer one"
            )
        labels[start : len(upto)] = full[start : len(upto)]
    return full, labels


def collate(rows: list[tuple[list[int], list[int]]], pad: int):
    """Right-padded (input_ids, attention_mask, labels) int64 arrays of a batch."""
    n = max(len(ids) for ids, _ in rows)
    x = np.full((len(rows), n), pad, dtype=np.int64)
    y = np.full((len(rows), n), -100, dtype=np.int64)
    mask = np.zeros((len(rows), n), dtype=np.int64)
    for i, (ids, labels) in enumerate(rows):
        x[i, : len(ids)], y[i, : len(labels)], mask[i, : len(ids)] = ids, labels, 1
    return x, mask, y

"""Legacy completions as evaluation harnesses use them: ``echo`` and several prompts at once.

Why: lm-evaluation-harness (its ``local-completions`` model) scores every log-likelihood task
(MMLU, ARC, HellaSwag) by sending context + continuation as one prompt with ``echo: true``,
``logprobs: 1`` and ``max_tokens: 1`` (0 elsewhere), and reading the log-probability of each
prompt token from OpenAI's legacy ``choice.logprobs``; it sends prompts as token ids, one list or
several per request (``batch_size``). The generation path (`edge_llm.model.Model`) keeps the last
position's logits only, so the prompt's log-probabilities come from a scoring context
(`edge_llm.llama.scoring.ScoringContext`, the one log-softmax of the project) opened on the same
GGUF the first time a request asks for them, with the benchmark's scoring settings (F16 KV cache,
llama.cpp's attention, batches of 128).

The answer is OpenAI's: ``text`` is the prompt's text followed by the completion's;
``logprobs.tokens`` / ``token_logprobs`` / ``top_logprobs`` / ``text_offset`` cover the prompt's
tokens (the first has no log-probability: null) and then the generated ones. ``top_logprobs``
holds the ``logprobs`` likeliest tokens and the token itself, as OpenAI documents ("up to
logprobs+1 elements"), so ``token_logprob == max(top_logprobs)`` exactly when the token is the
greedy choice (what lm-eval's ``is_greedy`` tests).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request

from edge_llm.errors import PromptError
from edge_llm.llama.scoring import ScoringContext
from edge_llm.model import Model
from edge_llm.results import Completion
from edge_llm.server import formats as f
from edge_llm.server import schemas as s
from edge_llm.server.errors import RequestError
from edge_llm.server.jobs import run_locked
from edge_llm.server.middleware import LOG_KEY

MAX_PROMPTS = 64  # prompts per request (lm-eval's batch_size)
SCORING_BATCH = 128  # tokens per evaluation: bench.lm's setting, so the scores are the same

Prompt = str | list[int]


def prompts(prompt: Any) -> list[Prompt]:
    """The request's ``prompt`` as a list of prompts: a text, or a list of token ids each."""
    if isinstance(prompt, str) or not prompt:
        return [prompt]
    if isinstance(prompt[0], int):
        return [prompt]
    return list(prompt)


async def complete(
    request: Request,
    body: s.CompletionRequest,
    batch: list[Prompt],
    state: Any,
    sampling: Callable[[s._Body, int | None, str], dict[str, Any]],
    envelope: Callable[..., dict[str, Any]],
    ident: tuple[str, int],
) -> dict[str, Any]:
    """A /v1/completions answer for a request with ``echo`` or several prompts (not streamed):
    each prompt in turn, its log-probabilities scored and its completion generated."""
    if body.stream:
        raise RequestError(
            400,
            "stream is not supported with echo or several prompts; send stream: false",
            param="stream",
        )
    if len(batch) > MAX_PROMPTS:
        raise RequestError(
            400,
            f"prompt holds {len(batch)} prompts; send at most {MAX_PROMPTS} per request",
            param="prompt",
        )
    model: Model = state.model
    n_top = s.completion_logprobs(body)
    kwargs: dict[str, Any] | None = None  # None: nothing to generate (echo with max_tokens 0)
    if not (body.echo and body.max_tokens == 0):
        kwargs = sampling(body, body.max_tokens, "max_tokens")
        if n_top is not None:
            kwargs["logprobs"] = n_top

    def work() -> list[tuple[list[int], dict[str, Any] | None, Completion | None]]:
        out = []
        for p in batch:
            tokens = model.prompt_tokens(p)
            shown = None
            if body.echo and n_top is not None:
                shown = prompt_logprobs(scorer(state), model, tokens, n_top)
            done = model.generate(tokens, **kwargs) if kwargs is not None else None
            if shown is not None and _ended_at_once(model, done):
                # the model's next token ends the text: it is still one generated token (OpenAI
                # and vLLM list it; lm-eval drops the last entry as the generated one)
                shown = prompt_logprobs(scorer(state), model, [*tokens, model.eos_id], n_top)
            out.append((tokens, shown, done))
        return out

    results = await run_locked(state.lock, model, work)
    choices = []
    for i, (p, (tokens, shown, done)) in enumerate(zip(batch, results)):
        choices.append(_choice(i, model, p, tokens, shown, done, bool(body.echo)))
    n_prompt = sum(len(t) for t, _, _ in results)
    n_done = sum(len(c.tokens) for _, _, c in results if c is not None)
    request.scope.setdefault(LOG_KEY, {})["tokens"] = (n_prompt, n_done)
    usage = {
        "prompt_tokens": n_prompt,
        "completion_tokens": n_done,
        "total_tokens": n_prompt + n_done,
    }
    return envelope(ident, "text_completion", choices, usage=usage)


def _ended_at_once(model: Model, done: Completion | None) -> bool:
    """Generation asked for, and the model's first token was its end (EOS): nothing generated."""
    return (
        done is not None
        and not done.tokens
        and done.finish_reason == "stop"
        and model.eos_id is not None
    )


def _choice(
    i: int,
    model: Model,
    prompt: Prompt,
    tokens: list[int],
    shown: dict[str, list[Any]] | None,
    done: Completion | None,
    echo: bool,
) -> dict[str, Any]:
    head = ""
    if echo:
        head = prompt if isinstance(prompt, str) else model.detokenize(tokens, special=True)
    text = head + (done.text if done is not None else "")
    lps = shown
    if done is not None and done.logprobs is not None:
        tail = f.completion_logprobs(done.logprobs, len(head))
        lps = tail if lps is None else {k: lps[k] + tail[k] for k in lps}
    finish = done.finish_reason if done is not None else "length"
    return {"text": text, "index": i, "logprobs": lps, "finish_reason": finish}


def scorer(state: Any) -> ScoringContext:
    """The app's scoring context on its model's GGUF, opened on first use."""
    sc = getattr(state, "scorer", None)
    if sc is None:
        model: Model = state.model
        threads = None if model.device.adaptive_threads else model.threads
        sc = ScoringContext(
            model.path,
            n_ctx=model.n_ctx,
            n_batch=SCORING_BATCH,
            threads=threads,
            kv_type="f16",
            flash_attn=None,
            error=PromptError,
        )
        state.scorer = sc
    return sc


def prompt_logprobs(
    sc: ScoringContext, model: Model, tokens: list[int], n_top: int
) -> dict[str, list[Any]]:
    """OpenAI's legacy ``logprobs`` for the prompt's tokens: null for the first."""
    lp, ids, vals = sc.prompt_logprobs(tokens, n_top)
    text = [model.token_bytes(t).decode("utf-8", errors="replace") for t in tokens]
    tops: list[dict[str, float] | None] = [None]
    for j in range(1, len(tokens)):
        top = {text[j]: float(lp[j - 1])}
        for t, v in zip(ids[j - 1], vals[j - 1]):
            key = model.token_bytes(int(t)).decode("utf-8", errors="replace")
            top[key] = max(top.get(key, float("-inf")), float(v))
        tops.append(top)
    offsets, at = [], 0
    for t in text:
        offsets.append(at)
        at += len(t)
    return {
        "tokens": text,
        "token_logprobs": [None, *(float(x) for x in lp)],
        "top_logprobs": tops,
        "text_offset": offsets,
    }

"""The lines the CLI prints about a finished generation, shared by `run` and `chat`.

Why its own module: both commands report a Completion the same way (speed statistics, why a
reply was cut), and neither command module should import the other.
"""

from __future__ import annotations


def format_stats(c) -> str:
    """One line of a completion's token counts, speeds and finish reason (for stderr)."""
    u, t = c.usage, c.timings
    cached = f", {u.cached_tokens} cached" if u.cached_tokens else ""
    return (
        f"prompt {u.prompt_tokens} tokens{cached}, {t.prefill_tokens_per_s:.1f} tok/s | "
        f"generated {u.completion_tokens} tokens, {t.decode_tokens_per_s:.1f} tok/s | "
        f"first token {t.ttft_s * 1000:.0f} ms | finish: {c.finish_reason}"
    )


def length_notice(result, max_tokens: int, n_ctx: int) -> str:
    """The line shown when a reply was cut: by the token limit, or by a full context."""
    if result.usage.completion_tokens >= max_tokens:
        return (
            f"(reply cut at the token limit of {max_tokens} tokens; "
            "/set max_tokens N or --max-tokens N allows longer replies)"
        )
    return f"(reply cut: the context of {n_ctx} tokens is full; /reset or a larger --ctx)"

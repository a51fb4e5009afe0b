"""fidelity: how close a model's next-token distributions stay to a reference model's (a
quantization against its F16, a distilled student against its teacher), on the evaluation text.

A thin wrapper over ``bench.fidelity.compare`` (mean KL divergence, its percentiles, top-1
agreement, perplexity ratio, probability deltas); it runs only when a reference is given
(``edge-llm bench MODEL --reference REF``). Not a capability score: it is reported beside them.
"""

from __future__ import annotations

import hashlib

from bench.suites.bpb import excerpts, resolve_text


def fingerprint(
    file: str = "../data/eval.txt", n_ctx: int = 512, max_chunks=None, bytes=0, base=None
) -> str:
    path = resolve_text(file, base)
    h = hashlib.sha256(path.read_bytes() if path.is_file() else b"missing")
    h.update(f"{n_ctx}:{max_chunks}:{bytes}".encode())
    return h.hexdigest()


def run(
    ctx,
    file: str = "../data/eval.txt",
    n_ctx: int = 512,
    max_chunks: int | None = None,
    bytes: int = 0,
) -> dict:
    if ctx.reference is None:
        return {
            "skipped": "no reference model; pass --reference MODEL (e.g. the F16 of a quantization)"
        }
    try:
        from bench.fidelity import compare
    except ImportError:
        return {
            "skipped": "bench.fidelity is not in this checkout (it comes with the quantization work)"
        }
    path = resolve_text(file, ctx.base)
    if not path.is_file():
        return {"skipped": f"no evaluation text at {path}"}
    text = "".join(excerpts(path.read_text(encoding="utf-8"), bytes))
    ctx.progress("fidelity", 0, 1)
    r = compare(
        ctx.reference, ctx.path, text, n_ctx=n_ctx, threads=ctx.threads, max_chunks=max_chunks
    )
    ctx.progress("fidelity", 1, 1)
    return {**r, "reference": str(ctx.reference)}

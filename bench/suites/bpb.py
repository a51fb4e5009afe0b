"""bpb: bits per byte on held-out text, the loss that compares models with different vocabularies.

    bpb = sum over every token of -log2 P(token | the tokens before it) / UTF-8 bytes of the text

A model with a bigger vocabulary predicts fewer, longer tokens; dividing by bytes rather than
tokens puts them on one scale. As lm-evaluation-harness's rolling log-likelihood does, every
token of a document is predicted: the first one after a prefix token (BOS when the model adds one,
else its end-of-text token), and a document longer than ``n_ctx`` is cut into windows that each
start with the last token of the window before (one token of context, nothing scored twice).

The text: ``bench/data/eval.txt`` (held out from any calibration data), or ``bytes`` of it taken
as 8 excerpts spread evenly over the file (whole lines), each scored as its own document.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

from bench import stats
from bench.errors import BenchError

PARTS = 8
BLOCK = 64  # predicted tokens per resampling unit of the interval


def excerpts(text: str, n_bytes: int, parts: int = PARTS) -> list[str]:
    """``parts`` runs of whole lines, ~n_bytes/parts UTF-8 bytes each, starting at evenly spaced
    places in ``text`` (0 or more than the text: the whole text, as one document)."""
    total = len(text.encode("utf-8"))
    if n_bytes <= 0 or n_bytes >= total:
        return [text]
    lines = text.splitlines(keepends=True)
    offsets, pos = [], 0
    for line in lines:
        offsets.append(pos)
        pos += len(line.encode("utf-8"))
    want = n_bytes / parts
    out, used = [], set()
    for k in range(parts):
        start = next((i for i, o in enumerate(offsets) if o >= k * total / parts), len(lines))
        chunk, size, i = [], 0, start
        while i < len(lines) and size < want and i not in used:
            line = lines[i]
            b = len(line.encode("utf-8"))
            if size + b > want and chunk:
                break
            if b > want:  # one very long line: cut it at a character boundary
                line = line.encode("utf-8")[: int(want)].decode("utf-8", errors="ignore")
                b = len(line.encode("utf-8"))
            chunk.append(line)
            used.add(i)
            size += b
            i += 1
        if chunk and "".join(chunk).strip():
            out.append("".join(chunk))
    return out


def prefix_token(scorer) -> int:
    """What every document is predicted after: BOS if the model adds one, else end-of-text."""
    if scorer.add_bos() and scorer.bos is not None:
        return scorer.bos
    eos = scorer.eos()
    if eos >= 0:
        return eos
    if scorer.bos is not None:
        return scorer.bos
    raise BenchError(f"{scorer.path.name} has neither BOS nor EOS token; bpb needs a prefix token")


def windows(tokens: list[int], n_ctx: int) -> list[list[int]]:
    """Windows of at most ``n_ctx`` tokens; each starts with the previous window's last token, so
    the targets (every token but the first) are each predicted exactly once."""
    if n_ctx < 2:
        raise BenchError(f"bpb n_ctx must be at least 2 (got {n_ctx})")
    out, start = [], 0
    while start < len(tokens) - 1:
        out.append(tokens[start : start + n_ctx])
        start += n_ctx - 1
    return out


def nll_bits(scorer, text: str, n_ctx: int, blocks: list | None = None) -> tuple[float, int]:
    """(-log2 likelihood of every token of ``text``, tokens predicted). With ``blocks``, appends
    (bits, bytes) of each run of BLOCK predicted tokens (bytes: the tokens' pieces), the units
    the interval of bpb resamples."""
    tokens = [prefix_token(scorer)] + scorer.tokenize(text, add_bos=False)
    total, n = 0.0, 0
    bits_all = []
    for w in windows(tokens, min(n_ctx, scorer.n_ctx)):
        lp = scorer.logprobs(w)
        total += float(-lp.sum()) / math.log(2)
        n += len(lp)
        bits_all.append(-lp / math.log(2))
    if blocks is not None and bits_all:
        bits = np.concatenate(bits_all)
        sizes = np.array([len(scorer.piece(t)) for t in tokens[1:]], dtype=float)
        for s in range(0, len(bits), BLOCK):
            blocks.append((float(bits[s : s + BLOCK].sum()), float(sizes[s : s + BLOCK].sum())))
    return total, n


def bits_per_byte(scorer, documents: list[str], n_ctx: int = 512, progress=None) -> dict:
    bits, tokens, n_bytes = 0.0, 0, 0
    blocks: list[tuple[float, float]] = []
    for k, doc in enumerate(documents, 1):
        b, n = nll_bits(scorer, doc, n_ctx, blocks)
        bits, tokens, n_bytes = bits + b, tokens + n, n_bytes + len(doc.encode("utf-8"))
        if progress:
            progress(k, len(documents))
    u = np.array(blocks) if blocks else np.zeros((0, 2))
    # The interval: bpb over blocks of BLOCK tokens resampled (a block bootstrap, as neighbouring
    # tokens are not independent), scaled to the bytes of the text (pieces may differ by a space).
    ratio = u[:, 0].sum() / u[:, 1].sum() if len(u) and u[:, 1].sum() > 0 else math.nan
    lo, hi = (
        stats.bootstrap_ci(lambda x: x[:, 0].sum() / x[:, 1].sum(), [u])
        if len(u) > 1
        else (math.nan,) * 2
    )
    scale = (bits / n_bytes) / ratio if math.isfinite(ratio) and ratio > 0 else math.nan
    return {
        "bpb": bits / n_bytes,
        "ci95": [lo * scale, hi * scale] if math.isfinite(lo * scale) else None,
        "bits": bits,
        "bytes": n_bytes,
        "tokens": tokens,
        "bytes_per_token": n_bytes / tokens,
        "token_ppl": float(np.exp2(bits / tokens)),
        "items": [{"id": f"block-{i}", "bits": b, "bytes": n} for i, (b, n) in enumerate(blocks)],
    }


def resolve_text(file: str | Path, base: Path | None = None) -> Path:
    path = Path(file)
    if not path.is_absolute() and base is not None:
        path = base / path
    return path


def fingerprint(file: str = "../data/eval.txt", bytes: int = 0, n_ctx: int = 512, base=None) -> str:
    path = resolve_text(file, base)
    h = hashlib.sha256(path.read_bytes() if path.is_file() else b"missing")
    h.update(f"{bytes}:{n_ctx}:{PARTS}".encode())
    return h.hexdigest()


def run(ctx, file: str = "../data/eval.txt", bytes: int = 0, n_ctx: int = 512) -> dict:
    path = resolve_text(file, ctx.base)
    if not path.is_file():
        return {
            "skipped": f"no evaluation text at {path} (bench/data/eval.txt comes with the "
            "quantization work; any held-out UTF-8 text works)"
        }
    text = path.read_text(encoding="utf-8")
    docs = excerpts(text, bytes)
    r = bits_per_byte(ctx.scorer(), docs, n_ctx, lambda k, n: ctx.progress("bpb", k, n))
    return {
        **r,
        "file": str(path),
        "documents": len(docs),
        "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
    }

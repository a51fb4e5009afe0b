"""`convert --verify`: the converted GGUF against a reference on a few prompts.

The reference is the source checkpoint run by `transformers` (float32) when torch and transformers
are installed and know the architecture; otherwise llama.cpp on an F32 conversion of the source
(so a quantized output is measured against full precision). Reported: top-1 agreement of the next
token and mean KL(reference || output) over every position of the prompts.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edge_llm.llama.scoring import ScoringContext, log_softmax, tokenize_file

PROMPTS = [
    "The capital of France is Paris. The capital of Germany is Berlin. The capital of Italy is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "Edge devices such as phones and student tablets have a few gigabytes of memory, so a model",
    "学习机是一种给学生用的平板电脑，它可以",
]


def llama_cpp_logits(path: Path, prompts: list[list[int]], threads: int | None) -> list[np.ndarray]:
    """llama.cpp's logits at every position of each prompt (F32 KV cache), float32 copies."""
    from convert.errors import ConvertError

    out = []
    with ScoringContext(
        path, n_ctx=512, threads=threads or max(1, os.cpu_count() or 2), error=ConvertError
    ) as sc:
        for ids in prompts:
            sc.clear()
            out.append(np.array(sc.eval(ids, first=0), dtype=np.float32))
    return out


def _transformers_logits(src: Path, prompts: list[list[int]]) -> list[np.ndarray] | None:
    try:
        import torch
        import transformers
    except ImportError:
        return None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    except (ValueError, KeyError, OSError):
        return None  # transformers does not know this architecture (MiniCPM)
    with torch.no_grad():
        return [model(torch.tensor([ids])).logits[0].float().numpy() for ids in prompts]


def compare(reference: list[np.ndarray], output: list[np.ndarray]) -> tuple[float, float, int]:
    """(top-1 agreement, mean KL(reference || output), positions)."""
    agree, kls, n = 0, [], 0
    for ref, out in zip(reference, output):
        lr, lo = log_softmax(ref), log_softmax(out[:, : ref.shape[-1]])
        agree += int((ref.argmax(-1) == out.argmax(-1)).sum())
        kls.append((np.exp(lr) * (lr - lo)).sum(-1))
        n += ref.shape[0]
    return agree / n, float(np.concatenate(kls).mean()), n


def verify(src: str | Path, output: str | Path, threads: int | None = None, progress=None) -> dict:
    """Top-1 agreement and mean KL of ``output`` against the source (``progress(msg)``: each
    step as it starts; loading transformers alone takes tens of seconds)."""
    from convert.errors import ConvertError
    from convert.hf_to_gguf import convert

    say = progress or (lambda msg: None)
    src, output = Path(src), Path(output)
    prompts = [tokenize_file(output, p, ConvertError)[0] for p in PROMPTS]
    say(f"verify [1/2]: logits of {output.name} on {len(prompts)} prompts (llama.cpp)")
    got = llama_cpp_logits(output, prompts, threads)
    say("verify [2/2]: reference logits from the source (loading transformers)")
    ref = _transformers_logits(src, prompts)
    name = "transformers float32 (source)"
    if ref is None:
        from edge_llm.fsutil import work_dir

        say("verify [2/2]: transformers does not know it; converting the source to F32 instead")
        with work_dir(output) as tmp:
            full = tmp / "reference-f32.gguf"
            convert(src, full, type="F32")
            ref = llama_cpp_logits(full, prompts, threads)
        name = "llama.cpp F32 conversion of the source"
    top1, kl, n = compare(ref, got)
    return {"reference": name, "top1_agreement": top1, "mean_kl": kl, "positions": n}

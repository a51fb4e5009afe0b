"""Check a GGUF against what llama.cpp asserts on, before llama.cpp sees it.

Why: llama.cpp trusts a model file. A hyper-parameter out of range (a block count of 0 or 1000,
an epsilon that is NaN), a norm stored as F16, a tokenizer model it has no vocabulary for, or a
context length of 2^31 trips a GGML_ASSERT (SIGABRT: the whole host process dies, an app or the
server with it) or sizes a buffer from garbage. A downloaded file is untrusted input, so every
such value is checked here from the header alone (milliseconds, no tensor data read) and refused
with one line. ``edge-llm info`` and ``edge_llm.load`` give the same verdict: both call `check`.

Where the static checks cannot be complete (llama.cpp has hundreds of architectures and
asserts), `probe` loads the file in a child process (``edge_llm.load(..., isolate=True)``), so an
abort there becomes an InvalidModelError here and the host lives on.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edge_llm import gguf_info
from edge_llm.errors import EdgeLLMError, InvalidModelError

# llama.cpp's own limits (src/llama-hparams.h) and the values it accepts
LLAMA_MAX_LAYERS = 512
LLAMA_MAX_EXPERTS = 1024
# Longest context a GGUF may claim. llama.cpp reads it as a 32-bit integer and sizes buffers from
# it; the longest real models (Llama 4 Scout) claim 10M.
MAX_CONTEXT = 1 << 24
MAX_WIDTH = 1 << 20  # embedding / feed-forward widths
INT32_MAX = (1 << 31) - 1
# tokenizer.ggml.model values llama.cpp builds a vocabulary for (src/llama-vocab.cpp); "none" and
# "no_vocab" load a model without one, which generation cannot use.
TOKENIZER_MODELS = (
    "llama",
    "bert",
    "gpt2",
    "hybriddna",
    "whitespace",
    "t5",
    "rwkv",
    "plamo2",
    "gemma4",
)
ROPE_SCALING_TYPES = ("none", "linear", "yarn", "longrope")
PROBE_TIMEOUT_S = 300

_BLOCK = re.compile(r"^blk\.(\d+)\.")


def problems(info: gguf_info.GGUFInfo) -> list[str]:
    """Everything in the header that llama.cpp would abort on or refuse, one phrase each."""
    out: list[str] = []
    md = info.metadata
    out += [f"metadata {k} is not valid UTF-8" for k in info.bad_utf8]
    arch = md.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        return out + ["general.architecture is missing or not a string"]
    pre = f"{arch}."

    def num(key: str) -> Any:
        return md.get(pre + key)

    # every numeric hyper-parameter: finite, and within the 32-bit range llama.cpp reads it in
    for key, value in md.items():
        if not key.startswith(pre):
            continue
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, float) and not math.isfinite(v):
                out.append(f"{key} is {v}")
                break
            if isinstance(v, int) and not isinstance(v, bool) and not -INT32_MAX <= v <= INT32_MAX:
                out.append(f"{key} is {v}, beyond the 32-bit range llama.cpp reads it in")
                break
    if out:
        return out

    n_layer = num("block_count")
    if not _is_int(n_layer):
        return out + [f"{pre}block_count is missing or not an integer ({n_layer!r})"]
    if not 0 < n_layer <= LLAMA_MAX_LAYERS:
        return out + [f"{pre}block_count is {n_layer} (llama.cpp takes 1 to {LLAMA_MAX_LAYERS})"]
    blocks = {int(m.group(1)) for t in info.tensors if (m := _BLOCK.match(t.name))}
    if blocks and blocks != set(range(n_layer)):
        have = f"{len(blocks)} blocks (blk.{min(blocks)} to blk.{max(blocks)})"
        out.append(f"{pre}block_count is {n_layer} but the file holds tensors for {have}")
    nextn = num("nextn_predict_layers")
    if nextn is not None and not (_is_int(nextn) and 0 <= nextn <= n_layer):
        out.append(f"{pre}nextn_predict_layers is {nextn}, more than block_count {n_layer}")

    ctx = num("context_length")
    if not _is_int(ctx) or not 0 < ctx <= MAX_CONTEXT:
        out.append(f"{pre}context_length is {ctx!r} (expected 1 to {MAX_CONTEXT})")
    n_embd = num("embedding_length")
    if not _is_int(n_embd) or not 0 < n_embd <= MAX_WIDTH:
        out.append(f"{pre}embedding_length is {n_embd!r} (expected 1 to {MAX_WIDTH})")
        n_embd = None
    ff = num("feed_forward_length")
    if ff is not None and not _ints_in(ff, 0, MAX_WIDTH, n_layer):
        out.append(f"{pre}feed_forward_length is {_show(ff)} (expected 0 to {MAX_WIDTH} per layer)")

    out += _heads(info, pre, n_layer, n_embd)
    out += _experts(pre, num)

    for key in ("attention.layer_norm_rms_epsilon", "attention.layer_norm_epsilon"):
        eps = num(key)
        if eps is not None and not (_is_real(eps) and 0 < eps < 1):
            out.append(f"{pre}{key} is {_num(eps)} (expected a small positive number such as 1e-5)")
    base = num("rope.freq_base")
    if base is not None and not (_is_real(base) and base > 0):
        out.append(f"{pre}rope.freq_base is {_num(base)} (expected a positive number)")
    scaling = num("rope.scaling.type")
    if scaling is not None and scaling not in ROPE_SCALING_TYPES:
        out.append(
            f"{pre}rope.scaling.type is {scaling!r} (llama.cpp knows {', '.join(ROPE_SCALING_TYPES)})"
        )

    out += _tokenizer(info)
    out += _tensor_types(info)
    emb = next((t for t in info.tensors if t.name == "token_embd.weight"), None)
    if emb is not None and len(emb.shape) == 2:
        if n_embd is not None and emb.shape[0] != n_embd:
            out.append(
                f"token_embd.weight is {emb.shape[0]} wide but {pre}embedding_length is {n_embd}"
            )
        n_vocab = info.vocab_size
        if n_vocab and emb.shape[1] != n_vocab:
            out.append(
                f"token_embd.weight has {emb.shape[1]} rows but the vocabulary has {n_vocab} tokens"
            )
    return out


def _heads(info: gguf_info.GGUFInfo, pre: str, n_layer: int, n_embd: int | None) -> list[str]:
    md = info.metadata
    head = md.get(pre + "attention.head_count")
    kv = md.get(pre + "attention.head_count_kv", head)
    if head is None:
        return []
    if not _ints_in(head, 0, 1 << 16, n_layer):
        return [f"{pre}attention.head_count is {_show(head)} (expected 0 to 65536 per layer)"]
    if not _ints_in(kv, 0, 1 << 16, n_layer):
        return [f"{pre}attention.head_count_kv is {_show(kv)} (expected 0 to 65536 per layer)"]
    heads = head if isinstance(head, list) else [head] * n_layer
    kvs = kv if isinstance(kv, list) else [kv] * n_layer
    out = []
    for h, k in zip(heads, kvs):
        if h and not k and not isinstance(kv, list):
            out.append(f"{pre}attention.head_count_kv is 0 with {h} attention heads")
        elif k and (k > h or h % k):
            out.append(f"{pre}attention.head_count {h} is not a multiple of head_count_kv {k}")
        if out:
            return out
    h_max = max(heads, default=0)
    if h_max and n_embd and md.get(pre + "attention.key_length") is None and n_embd % h_max:
        out.append(f"{pre}embedding_length {n_embd} is not a multiple of head_count {h_max}")
    for key in ("attention.key_length", "attention.value_length", "rope.dimension_count"):
        v = md.get(pre + key)
        if v is not None and not (_is_int(v) and 0 <= v <= 1 << 16):
            out.append(f"{pre}{key} is {v!r} (expected 0 to 65536)")
    return out


def _experts(pre: str, num) -> list[str]:
    n = num("expert_count") or 0
    used = num("expert_used_count") or 0
    groups = num("expert_group_count") or 0
    if not _is_int(n) or not 0 <= n <= LLAMA_MAX_EXPERTS:
        return [f"{pre}expert_count is {n!r} (llama.cpp takes 0 to {LLAMA_MAX_EXPERTS})"]
    used_max = max(used) if isinstance(used, list) and used else used
    if not _is_int(used_max) or not 0 <= used_max <= n or (n and not used_max):
        return [f"{pre}expert_used_count is {_show(used)} with {n} experts"]
    if not _is_int(groups) or (n and groups >= n) or (not n and groups):
        return [f"{pre}expert_group_count is {groups!r} with {n} experts"]
    if groups > 1:
        g_used = num("expert_group_used_count") or 0
        if n % groups or not (_is_int(g_used) and 0 < g_used < groups):
            return [f"{pre}expert groups ({groups}, {g_used} used) do not divide {n} experts"]
    return []


def _tokenizer(info: gguf_info.GGUFInfo) -> list[str]:
    md = info.metadata
    model = md.get("tokenizer.ggml.model")
    if model is None:
        return ["tokenizer.ggml.model is missing (the file has no tokenizer)"]
    if model not in TOKENIZER_MODELS:
        return [
            f"tokenizer.ggml.model is {model!r}, not a tokenizer llama.cpp builds a vocabulary "
            f"for ({', '.join(TOKENIZER_MODELS)})"
        ]
    n = info.array_lengths.get("tokenizer.ggml.tokens")
    if not n:
        return ["tokenizer.ggml.tokens is missing or empty"]
    out = []
    for key in ("tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
        m = info.array_lengths.get(key)
        if m is not None and m != n:
            out.append(f"{key} has {m} entries for {n} tokens")
    return out


def _tensor_types(info: gguf_info.GGUFInfo) -> list[str]:
    """Norm weights and other vectors are added and multiplied as F32 by llama.cpp's graphs;
    an F16 or quantized one trips an assertion in ggml."""
    for t in info.tensors:
        vector = len(t.shape) == 1 or t.name.endswith(("norm.weight", "norm.bias"))
        if vector and t.type != "F32":
            return [f"tensor {t.name} is {t.type}; vectors and norms must be F32 in llama.cpp"]
        if any(d <= 0 for d in t.shape):
            return [f"tensor {t.name} has shape {list(t.shape)}"]
    return []


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _ints_in(v: Any, lo: int, hi: int, n_layer: int) -> bool:
    if isinstance(v, list):
        return len(v) == n_layer and all(_is_int(x) and lo <= x <= hi for x in v)
    return _is_int(v) and lo <= v <= hi


def _num(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else repr(v)


def _show(v: Any) -> str:
    return f"an array of {len(v)}" if isinstance(v, list) else repr(v)


def check(path: str | Path) -> gguf_info.GGUFInfo:
    """The file's header, or InvalidModelError naming the first thing llama.cpp would refuse."""
    path = Path(path)
    info = gguf_info.read(path)
    found = problems(info)
    if found:
        more = f" (and {len(found) - 1} more problems)" if len(found) > 1 else ""
        raise InvalidModelError(
            f"{path} is not a loadable model: {found[0]}{more}; the file is corrupt or crafted, "
            "download or convert it again"
        )
    return info


# --- probing in a child process -------------------------------------------------------------


def probe(path: str | Path, config: Any = None, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Load ``path`` with llama.cpp in a child process; InvalidModelError if that fails or dies.

    ``config``: the backend's ContextConfig to create a context with as well (None: the model
    alone). The child checks the file first, so a refusal reads the same as in this process.
    """
    path = Path(path)
    cmd = [sys.executable, "-m", "edge_llm.validate", str(path)]
    if config is not None:
        cmd += ["--config", json.dumps(asdict(config))]
    env = {**os.environ, "PYTHONFAULTHANDLER": ""}
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise InvalidModelError(
            f"loading {path} took more than {timeout:.0f} s in the probe process; the file is "
            "too large for this machine or malformed"
        ) from None
    if r.returncode == 0:
        return
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    if r.returncode == 2 and lines and lines[-1].startswith("error: "):
        raise InvalidModelError(lines[-1].removeprefix("error: "))
    if r.returncode < 0:
        name = signal.Signals(-r.returncode).name
        why = next((ln.strip() for ln in reversed(lines) if "GGML_ASSERT" in ln), None)
        raise InvalidModelError(
            f"llama.cpp crashed ({name}) loading {path}"
            + (f": {why[why.index('GGML_ASSERT') :]}" if why else "")
            + "; the file is malformed or unsupported, download or convert it again"
        )
    tail = lines[-1] if lines else f"exit code {r.returncode}"
    raise InvalidModelError(f"loading {path} failed in the probe process: {tail}")


def _probe_main(argv: list[str]) -> int:
    """The child: check, load the model (and a context), exit 0 / 2 with one line."""
    from edge_llm.llama import backend

    path = Path(argv[0])
    try:
        if os.environ.get("EDGE_LLM_UNSAFE_NO_VALIDATE") != "1":  # tests: let llama.cpp abort
            check(path)
        if "--config" in argv:
            cfg = backend.ContextConfig(**json.loads(argv[argv.index("--config") + 1]))
            try:
                b = backend.Backend(path, cfg)
            except backend.LoadError as e:
                raise InvalidModelError(gguf_info.explain_load_failure(path, e.details)) from None
            b.close()
        else:
            _load_model_only(path)
    except EdgeLLMError as e:  # the file's fault, or the install's (no CPU backend)
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _load_model_only(path: Path) -> None:
    from edge_llm.llama import binding

    try:
        model = binding.load_model(path)
    except binding.LoadError as e:
        raise InvalidModelError(gguf_info.explain_load_failure(path, e.details)) from None
    binding.free_model(model)


if __name__ == "__main__":
    sys.exit(_probe_main(sys.argv[1:]))

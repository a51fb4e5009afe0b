"""What a model costs to run: counted from its GGUF shapes, and measured on this machine.

Counted (``accounting``, from ``edge_llm.shapes.ModelShape``, the same arithmetic the planner
uses):
- parameters: total, embedding (the vocabulary matrices: the input embedding and, when it is not
  tied to it, the output head) and non-embedding (the rest);
- FLOPs per decoded token at context position ``context``: 2 x the parameters of every matrix
  multiplied per token (the output head included) + the attention term
  2 x layers x heads x (key dim + value dim) x position (Q.K and scores.V);
- bytes read per decoded token: every weight once (an untied input embedding: one row), plus the
  KV cache up to the position; KV-cache bytes per token (layers x KV heads x (key + value dims)
  x bytes per element of the cache type).

Measured (``measure_speed``): prefill and decode tokens/s, time to first token (medians over
repetitions, through edge_llm's generate), peak resident memory, and energy per token from RAPL
(``/sys/class/powercap``), hwmon or a discharging battery when the machine exposes one
(bench.energy), otherwise "unavailable": never estimated.
"""

from __future__ import annotations

import os
import statistics
import time

from bench.energy import Rapl, detect
from edge_llm.gguf_info import GGUFInfo
from edge_llm.shapes import ModelShape

SPEED_TEXT = (
    "A learning tablet runs a small language model on two big cores and a few gigabytes of memory "
    "shared with everything else. Every decoded token reads the weights once, so the number of "
    "bytes per token bounds the speed, and a denser model answers sooner. 学习机上的小模型需要"
    "又快又准。 def area(w, h):\n    return w * h\n"
)


# --- counted ------------------------------------------------------------------------------------
def accounting(info: GGUFInfo, context: int = 512, kv_type: str = "f16") -> dict:
    """Parameters, FLOPs, bytes and KV per token of a GGUF, at context position ``context``."""
    s = ModelShape.from_info(info)
    tensors = {t.name: t for t in info.tensors}
    embedding = s.embedding_params + (
        0
        if s.tied_output or "output.weight" not in tensors
        else tensors["output.weight"].n_elements
    )
    attn = s.attention_flops(context)
    return {
        "architecture": s.architecture,
        "params_total": s.n_params,
        "params_embedding": embedding,
        "params_non_embedding": s.n_params - embedding,
        "params_matmul": s.matmul_params,
        "tied_output": s.tied_output,
        "context": context,
        "flops_per_token": s.flops_per_token(context),
        "flops_matmul_per_token": 2.0 * s.matmul_params,
        "flops_attention_per_token": attn,
        "weight_bytes": s.weight_bytes,
        "weight_bytes_read_per_token": s.read_bytes_per_token,
        "kv_type": kv_type,
        "kv_bytes_per_token": s.kv_bytes_per_token(kv_type),
        "bytes_read_per_token": s.decode_bytes_per_token(context, kv_type),
        "bits_per_weight": info.bits_per_weight,
    }


def with_adapter(counted: dict, adapter) -> dict:
    """``accounting`` with a LoRA adapter applied (an ``edge_llm.adapters.AdapterInfo``): every
    adapted matrix also computes B (A x), 2 x the adapter's elements in FLOPs per token, and its
    matrices are read once per token like the weights they adapt."""
    out = dict(counted)
    flops, size = adapter.flops_per_token, adapter.tensor_bytes
    out.update(
        params_total=counted["params_total"] + adapter.n_params,
        params_non_embedding=counted["params_non_embedding"] + adapter.n_params,
        params_matmul=counted["params_matmul"] + adapter.n_params,
        flops_per_token=counted["flops_per_token"] + flops,
        flops_matmul_per_token=counted["flops_matmul_per_token"] + flops,
        weight_bytes=counted["weight_bytes"] + size,
        weight_bytes_read_per_token=counted["weight_bytes_read_per_token"] + size,
        bytes_read_per_token=counted["bytes_read_per_token"] + size,
        adapter_flops_per_token=flops,
        adapter_bytes_read_per_token=size,
    )
    return out


# --- memory -------------------------------------------------------------------------------------
def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux: clear_refs "5")."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss() -> int:
    from edge_llm.devices.plan import process_rss

    return process_rss("VmHWM")


def rss() -> int:
    from edge_llm.devices.plan import process_rss

    return process_rss("VmRSS")


# --- speed --------------------------------------------------------------------------------------
def speed_prompt(model, n_tokens: int) -> list[int]:
    tokens = model.tokenize(SPEED_TEXT)
    while len(tokens) < n_tokens + 1:
        tokens += model.tokenize(SPEED_TEXT, add_bos=False)
    return tokens[:n_tokens]


def measure_speed(
    model, prompt_tokens: int = 256, gen_tokens: int = 64, reps: int = 3, rapl: Rapl | None = None
) -> dict:
    """Prefill and decode tokens/s and time to first token of an edge_llm Model (medians of
    ``reps`` after one untimed warm-up), and energy per token when RAPL is available.

    Each repetition empties the KV cache, prefills ``prompt_tokens`` and decodes ``gen_tokens``
    (greedy, end-of-text ignored). Energy is read at the start, at the first generated token and
    at the end, so prefill and decode get their own joules per token.
    """
    if rapl is None:
        rapl = detect()
    prompt = speed_prompt(model, prompt_tokens)
    if rapl.available and hasattr(rapl, "start"):
        rapl.start()  # a sampled meter's thread
    model.reset()
    model.generate(prompt[:32], max_tokens=4, temperature=0, ignore_eos=True)  # warm-up
    pre, dec, ttft, threads, e_pre, e_dec = [], [], [], [], [], []
    for _ in range(reps):
        model.reset()
        e0 = rapl.read() if rapl.available else None
        s = model.stream(prompt, max_tokens=gen_tokens + 1, temperature=0, ignore_eos=True)
        e1 = None
        for _piece in s:
            if e1 is None and rapl.available:
                e1 = rapl.read()
        e2 = rapl.read() if rapl.available else None
        t = s.result.timings
        pre.append(t.prefill_tokens_per_s)
        dec.append(t.decode_tokens_per_s)
        ttft.append(t.ttft_s)
        threads.append(model.threads)
        if rapl.available and e1 is not None:
            e_pre.append(rapl.joules(e0, e1) / len(prompt))
            e_dec.append(rapl.joules(e1, e2) / max(1, s.result.usage.completion_tokens - 1))
    if rapl.available and hasattr(rapl, "stop"):
        rapl.stop()
    med = statistics.median
    energy = (
        {
            "available": True,
            "source": getattr(rapl, "source", "rapl"),
            "joules_per_prefill_token": med(e_pre),
            "joules_per_decode_token": med(e_dec),
            "zones": [str(z.path) for z in rapl.zones],
        }
        if e_dec
        else {"available": False, "reason": rapl.reason or "RAPL gave no reading"}
    )
    return {
        "prompt_tokens": len(prompt),
        "gen_tokens": gen_tokens,
        "reps": reps,
        "prefill_tokens_per_s": med(pre),
        "decode_tokens_per_s": med(dec),
        "ttft_s": med(ttft),
        "samples": {"prefill_tokens_per_s": pre, "decode_tokens_per_s": dec, "ttft_s": ttft},
        "threads": max(set(threads), key=threads.count),
        "energy": energy,
    }


def host() -> dict:
    """This machine, as a record names it."""
    from edge_llm.devices import available_cpus
    from edge_llm.devices.detect import cpu_model, memory_gb

    return {
        "cpu": cpu_model(),
        "cpus": available_cpus(),
        "ram_gb": round(memory_gb()[0], 1),
        "machine": os.uname().machine,
        "kernel": os.uname().release,
    }


class Stopwatch:
    def __init__(self):
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return round(time.perf_counter() - self.t0, 3)

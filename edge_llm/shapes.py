"""What a GGUF's shapes imply per token: parameters, FLOPs, bytes read, KV-cache and buffer bytes.

Pure arithmetic over ``gguf_info.GGUFInfo``: the runtime's planner uses it, and so can the
benchmarks (they may import edge_llm; edge_llm never imports them).
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_llm.gguf_info import GGUFInfo

# Bytes per element of the KV-cache types (ggml block sizes: q8_0 34 B / 32, q4_0 18 B / 32).
KV_TYPE_BYTES = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "q8_0": 34 / 32,
    "q5_1": 24 / 32,
    "q5_0": 22 / 32,
    "q4_1": 20 / 32,
    "q4_0": 18 / 32,
}


@dataclass(frozen=True)
class ModelShape:
    architecture: str
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int
    n_vocab: int
    n_ctx_train: int
    n_params: int
    weight_bytes: int  # all tensor data
    read_bytes_per_token: int  # tensor data a decode step reads (the input embedding: one row)
    matmul_params: int  # parameters in the matrices multiplied per token (output head included)
    head_params: int  # of which the output head (logits): prefill computes it for one token only
    embedding_params: int
    tied_output: bool  # the output head reuses token_embd

    @classmethod
    def from_info(cls, info: GGUFInfo) -> ModelShape:
        a = info.arch_value
        n_embd = int(a("embedding_length"))
        n_head = int(a("attention.head_count"))
        n_head_kv = a("attention.head_count_kv", n_head)
        n_head_kv = int(max(n_head_kv) if isinstance(n_head_kv, list) else n_head_kv)
        n_ff = a("feed_forward_length", 4 * n_embd)
        n_ff = int(max(n_ff) if isinstance(n_ff, list) else n_ff)
        head_k = int(a("attention.key_length", n_embd // n_head))
        head_v = int(a("attention.value_length", n_embd // n_head))
        tensors = {t.name: t for t in info.tensors}
        emb = tensors.get("token_embd.weight")
        tied = "output.weight" not in tensors
        n_vocab = info.vocab_size or (emb.n_elements // n_embd if emb else 0)
        weight_bytes = info.tensor_bytes
        read = weight_bytes
        if emb is not None and not tied:
            read -= emb.n_bytes - emb.n_bytes // max(1, n_vocab)  # one embedding row per token
        matmul = sum(
            t.n_elements for t in info.tensors if t.name.endswith(".weight") and _is_matrix(t.name)
        )
        head = emb.n_elements if tied and emb is not None else 0  # the head reuses token_embd
        if not tied:
            head = tensors["output.weight"].n_elements
        matmul += head
        return cls(
            architecture=info.architecture,
            n_layer=int(a("block_count")),
            n_embd=n_embd,
            n_ff=n_ff,
            n_head=n_head,
            n_head_kv=n_head_kv,
            head_dim_k=head_k,
            head_dim_v=head_v,
            n_vocab=n_vocab,
            n_ctx_train=int(a("context_length", 2048)),
            n_params=info.n_params,
            weight_bytes=weight_bytes,
            read_bytes_per_token=read,
            matmul_params=matmul,
            head_params=head,
            embedding_params=emb.n_elements if emb else 0,
            tied_output=tied,
        )

    # --- per token ------------------------------------------------------------------------
    def kv_bytes_per_token(self, kv_type: str = "f16") -> float:
        per_elem = KV_TYPE_BYTES[kv_type]
        return self.n_layer * self.n_head_kv * (self.head_dim_k + self.head_dim_v) * per_elem

    def kv_bytes(self, n_ctx: int, kv_type: str = "f16") -> int:
        return int(self.kv_bytes_per_token(kv_type) * n_ctx)

    def attention_flops(self, position: int) -> float:
        """Q.K and scores.V for one token attending to ``position`` earlier ones."""
        return 2.0 * self.n_layer * self.n_head * (self.head_dim_k + self.head_dim_v) * position

    def flops_per_token(self, position: int = 0) -> float:
        """2 x matmul parameters + the attention term at ``position``."""
        return 2.0 * self.matmul_params + self.attention_flops(position)

    def prefill_flops_per_token(self, n_prompt: int) -> float:
        """Average FLOPs per prompt token: the output head runs once per prompt, not per token."""
        body = 2.0 * (self.matmul_params - self.head_params)
        return (
            body + self.attention_flops(n_prompt // 2) + 2.0 * self.head_params / max(1, n_prompt)
        )

    def decode_bytes_per_token(self, position: int, kv_type: str = "f16") -> float:
        """Weights read once per step plus the KV cache read up to ``position``."""
        return self.read_bytes_per_token + self.kv_bytes_per_token(kv_type) * position

    def activation_bytes(self, n_ubatch: int, n_kv: int) -> int:
        """A layer's peak of live f32 activations for a micro-batch: the residual stream and the
        normed input beside the feed-forward's gate, up and activated gate, or the attention's
        scores and their softmax over ``n_kv`` cached tokens. The compute buffer of a device
        that runs the layers but not the output head (whose logits dominate otherwise)."""
        ffn = 2 * self.n_embd + 3 * self.n_ff
        attention = 2 * self.n_embd + 2 * self.n_head * n_kv
        return int(n_ubatch * 4 * max(ffn, attention))

    def compute_buffer_bytes(self, n_ubatch: int) -> int:
        """llama.cpp's compute buffer: the logits of a micro-batch dominate, then activations.

        Checked against llama.cpp's own figure (tests/runtime/test_plan.py): never below it, at most 10%
        above, for SmolLM2 and Gemma 3 at micro-batches of 128-512.
        """
        return int(n_ubatch * (self.n_vocab * 4 + (self.n_embd + self.n_ff) * 8))


def _is_matrix(name: str) -> bool:
    # blk.N.attn_q.weight, ffn_up, ... ; norms are vectors
    return name.startswith("blk.") and "norm" not in name


def read_bytes_by_type(info: GGUFInfo) -> dict[str, int]:
    """Bytes a decode step reads, per tensor type (an untied input embedding: one row only)."""
    tied = not any(t.name == "output.weight" for t in info.tensors)
    out: dict[str, int] = {}
    for t in info.tensors:
        if t.name == "token_embd.weight" and not tied:
            continue
        out[t.type] = out.get(t.type, 0) + t.n_bytes
    return out


def matmul_flops_by_type(info: GGUFInfo, n_prompt: int = 1) -> dict[str, float]:
    """Matmul FLOPs per token, per weight type; the output head counts once per ``n_prompt``."""
    names = {t.name for t in info.tensors}
    head = "output.weight" if "output.weight" in names else "token_embd.weight"
    out: dict[str, float] = {}
    for t in info.tensors:
        if t.name == head:
            flops = 2.0 * t.n_elements / max(1, n_prompt)
        elif _is_matrix(t.name):
            flops = 2.0 * t.n_elements
        else:
            continue
        out[t.type] = out.get(t.type, 0.0) + flops
    return out

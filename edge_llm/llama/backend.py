"""A model with one generation context: what `edge_llm.model.Model` runs on.

Everything above this layer deals in Python ints, bytes and numpy arrays. llama.cpp does the
forward pass, the KV cache and the sampling; this module only owns the handles and frees them.
(Scoring, with logits at every position, is `edge_llm.llama.scoring`.)
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_llm.llama import binding, lora, placement
from edge_llm.llama.binding import KV_TYPES, C, LoadError, take_recent_errors, tokenize

__all__ = [
    "Backend",
    "ContextConfig",
    "LoadError",
    "Sampler",
    "KV_TYPES",
    "take_recent_errors",
    "tokenize",
]

system_info = binding.system_info
supports_gpu_offload = binding.supports_gpu_offload


def gpu_devices() -> list[binding.Device]:
    """The devices layers can be offloaded to (`binding.gpu_devices`)."""
    return binding.gpu_devices()


@dataclass(frozen=True)
class ContextConfig:
    n_ctx: int
    n_threads: int
    n_threads_batch: int
    n_batch: int = 512
    n_gpu_layers: int = 0
    kv_type: str = "f16"
    use_mmap: bool = True
    use_mlock: bool = False
    flash_attn: bool | None = None  # None: llama.cpp decides
    default_n_ctx: int = 4096  # used when n_ctx is 0: this, capped at the training context


class Backend:
    """A loaded model plus one context (one sequence) and its KV cache."""

    def __init__(self, path: Path, cfg: ContextConfig):
        self.model = None
        self.ctx = None
        self.cfg = cfg
        load_mode = {
            (True, False): C.LLAMA_LOAD_MODE_MMAP,
            (True, True): C.LLAMA_LOAD_MODE_MMAP_MLOCK,
            (False, True): C.LLAMA_LOAD_MODE_MLOCK,
            (False, False): C.LLAMA_LOAD_MODE_NONE,
        }[(cfg.use_mmap, cfg.use_mlock)]
        with binding.capture_log() as log:  # where llama.cpp put each layer and buffer
            self._open(path, cfg, load_mode)
        gpus = [d.name for d in binding.gpu_devices()] if cfg.n_gpu_layers else []
        self.placement = placement.parse(log, C.llama_model_n_layer(self.model), gpus)

    def _open(self, path: Path, cfg: ContextConfig, load_mode: int) -> None:
        self.model = binding.load_model(path, n_gpu_layers=cfg.n_gpu_layers, load_mode=load_mode)
        self.vocab = C.llama_model_get_vocab(self.model)
        self.n_vocab = C.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train = C.llama_model_n_ctx_train(self.model)

        cp = C.llama_context_default_params()
        cp.n_ctx = cfg.n_ctx or min(cfg.default_n_ctx, self.n_ctx_train)
        cp.n_batch = cfg.n_batch
        cp.n_ubatch = cfg.n_batch
        cp.n_seq_max = 1
        cp.n_threads = cfg.n_threads
        cp.n_threads_batch = cfg.n_threads_batch
        cp.type_k = cp.type_v = KV_TYPES[cfg.kv_type]
        if cfg.flash_attn is not None:
            cp.flash_attn_type = int(cfg.flash_attn)
        elif cfg.kv_type not in ("f16", "f32", "bf16"):
            cp.flash_attn_type = C.LLAMA_FLASH_ATTN_TYPE_ENABLED  # quantized V needs it
        cp.no_perf = False
        self.ctx = C.llama_init_from_model(self.model, cp)
        if not self.ctx:
            self.close()
            raise LoadError("llama.cpp could not create a context", take_recent_errors())
        self.n_ctx = C.llama_n_ctx(self.ctx)
        self.mem = C.llama_get_memory(self.ctx)
        self.n_swa = C.llama_model_n_swa(self.model)

    # --- metadata ---------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(1 << 16)
        n = C.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):  # long values (chat templates) get a second, exact-size read
            buf = ctypes.create_string_buffer(n + 1)
            C.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace")

    def n_params(self) -> int:
        return C.llama_model_n_params(self.model)

    def model_size(self) -> int:
        return C.llama_model_size(self.model)

    # --- vocabulary -------------------------------------------------------------------------
    def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        return tokenize(self.vocab, text, add_special, parse_special)

    def token_to_piece(self, token: int, special: bool = False) -> bytes:
        return binding.token_to_piece(self.vocab, token, special)

    def detokenize(self, tokens: list[int], special: bool = False) -> str:
        return b"".join(self.token_to_piece(t, special) for t in tokens).decode(
            "utf-8", errors="replace"
        )

    def is_eog(self, token: int) -> bool:
        return bool(C.llama_vocab_is_eog(self.vocab, token))

    def bos(self) -> int:
        return C.llama_vocab_bos(self.vocab)

    def eos(self) -> int:
        return C.llama_vocab_eos(self.vocab)

    def add_bos(self) -> bool:
        return bool(C.llama_vocab_get_add_bos(self.vocab))

    # --- evaluation -------------------------------------------------------------------------
    def decode(self, tokens: list[int], should_stop=None) -> int:
        """Append ``tokens`` to the sequence, ``n_batch`` at a time; logits of the last one.

        ``should_stop()`` is asked before each batch; returns how many tokens were decoded.
        """
        n_batch = self.cfg.n_batch
        for start in range(0, len(tokens), n_batch):
            if should_stop is not None and should_stop():
                return start
            chunk = tokens[start : start + n_batch]
            arr = (C.llama_token * len(chunk))(*chunk)
            rc = C.llama_decode(self.ctx, C.llama_batch_get_one(arr, len(chunk)))
            if rc != 0:
                raise RuntimeError(f"llama_decode failed with code {rc}")
        return len(tokens)

    def logits(self) -> np.ndarray:
        """The last decoded position's logits (a copy)."""
        ptr = C.llama_get_logits_ith(self.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def logprobs(self) -> np.ndarray:
        """Log-probabilities (log-softmax of the logits, float64) at the last decoded position."""
        x = self.logits().astype(np.float64)
        m = x.max()
        return x - (m + np.log(np.exp(x - m).sum()))

    # --- KV cache ---------------------------------------------------------------------------
    def kv_clear(self) -> None:
        C.llama_memory_clear(self.mem, True)

    def kv_truncate(self, n_keep: int) -> bool:
        """Drop every cached position >= n_keep. False if the cache cannot (then clear it)."""
        if n_keep > 0 and self.n_swa > 0:
            # A sliding-window cache forgets old positions: it can only resume if it still
            # holds the window that ends at n_keep.
            pos_min = C.llama_memory_seq_pos_min(self.mem, 0)
            if pos_min > max(0, n_keep - self.n_swa):
                return False
        return bool(C.llama_memory_seq_rm(self.mem, 0, n_keep, -1))

    # --- sampling ---------------------------------------------------------------------------
    def make_sampler(
        self,
        *,
        temperature: float,
        top_k: int,
        top_p: float,
        min_p: float,
        repeat_penalty: float,
        repeat_last_n: int,
        seed: int | None,
        grammar: str | None = None,
    ) -> Sampler:
        chain = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
        add = lambda s: C.llama_sampler_chain_add(chain, s)  # noqa: E731
        if grammar is not None:
            # First in the chain: every later sampler only sees tokens the grammar allows.
            take_recent_errors()
            g = C.llama_sampler_init_grammar(self.vocab, grammar.encode(), b"root")
            if not g:
                C.llama_sampler_free(chain)
                why = "; ".join(take_recent_errors()[-2:]) or "llama.cpp refused it"
                raise ValueError(f"the grammar does not parse: {why}")
            add(g)
        if repeat_penalty != 1.0:
            add(
                C.llama_sampler_init_penalties(
                    self.n_vocab, repeat_last_n, repeat_penalty, 0.0, 0.0
                )
            )
        if temperature <= 0:
            add(C.llama_sampler_init_greedy())
        else:
            if top_k > 0:
                add(C.llama_sampler_init_top_k(top_k))
            if top_p < 1.0:
                add(C.llama_sampler_init_top_p(top_p, 1))
            if min_p > 0.0:
                add(C.llama_sampler_init_min_p(min_p, 1))
            add(C.llama_sampler_init_temp(temperature))
            add(C.llama_sampler_init_dist(C.LLAMA_DEFAULT_SEED if seed is None else seed))
        return Sampler(chain, self)

    # --- timings (llama.cpp's own counters) -------------------------------------------------
    def perf(self) -> dict[str, float]:
        p = C.llama_perf_context(self.ctx)
        return {
            "prompt_ms": p.t_p_eval_ms,
            "prompt_tokens": p.n_p_eval,
            "eval_ms": p.t_eval_ms,
            "eval_tokens": p.n_eval,
        }

    def perf_reset(self) -> None:
        C.llama_perf_context_reset(self.ctx)

    # --- state ------------------------------------------------------------------------------
    def state_bytes(self) -> bytes:
        size = C.llama_state_seq_get_size(self.ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        n = C.llama_state_seq_get_data(self.ctx, buf, size, 0)
        return bytes(buf[:n])

    def set_state_bytes(self, data: bytes) -> bool:
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        return C.llama_state_seq_set_data(self.ctx, buf, len(data), 0) == len(data)

    def set_threads(self, n_threads: int, n_threads_batch: int) -> None:
        C.llama_set_n_threads(self.ctx, n_threads, n_threads_batch)

    # --- LoRA adapters ----------------------------------------------------------------------
    def load_adapter(self, path: Path):
        """Load a LoRA adapter onto this model (once); the handle is freed with the model."""
        return lora.load(self.model, path)

    def set_adapters(self, adapters: list[tuple[object, float]]) -> None:
        """Apply exactly ``adapters`` ((handle, scale) pairs) from the next decode on."""
        lora.set_on(self.ctx, adapters)

    # --- embeddings -------------------------------------------------------------------------
    def pooling(self) -> str:
        """How embeddings are pooled: the model's own pooling when its GGUF declares one (an
        embedding model), else the mean over the input's tokens (a generative model)."""
        arch = self.meta("general.architecture") or ""
        declared = self.meta(f"{arch}.pooling_type")
        names = {"1": "mean", "2": "cls", "3": "last"}
        return names.get(declared or "", "mean")

    def embedder(self, n_ctx: int) -> Embedder:
        """A second context on this model that returns pooled embeddings of up to n_ctx tokens."""
        return Embedder(self, n_ctx)

    def close(self) -> None:
        binding.free(self)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may already be gone
            pass


class Embedder:
    """A context in embedding mode on a loaded model (its weights are shared, its KV cache is
    its own); pooling as ``Backend.pooling`` says. One input at a time, in one batch."""

    _POOLING = {
        "mean": C.LLAMA_POOLING_TYPE_MEAN,
        "cls": C.LLAMA_POOLING_TYPE_CLS,
        "last": C.LLAMA_POOLING_TYPE_LAST,
    }

    def __init__(self, backend: Backend, n_ctx: int):
        self.backend = backend
        self.pooling = backend.pooling()
        cp = C.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = cp.n_ubatch = n_ctx  # pooling needs the whole input in one batch
        cp.n_seq_max = 1
        cp.n_threads = backend.cfg.n_threads
        cp.n_threads_batch = backend.cfg.n_threads_batch
        cp.embeddings = True
        cp.pooling_type = self._POOLING[self.pooling]
        # The plain attention path: the same vectors as llama-cpp-python's Llama.embed (and
        # llama-server's default); flash attention's F16 accumulation moves them by ~1e-3.
        cp.flash_attn_type = C.LLAMA_FLASH_ATTN_TYPE_DISABLED
        take_recent_errors()
        self.ctx = C.llama_init_from_model(backend.model, cp)
        if not self.ctx:
            raise LoadError("llama.cpp could not create an embedding context", take_recent_errors())
        self.n_ctx = C.llama_n_ctx(self.ctx)
        self.n_embd = C.llama_model_n_embd(backend.model)

    def set_adapters(self, adapters: list[tuple[object, float]]) -> None:
        lora.set_on(self.ctx, adapters)

    def embed(self, tokens: list[int]) -> np.ndarray:
        """The pooled embedding of ``tokens`` (at most n_ctx of them), not normalized."""
        C.llama_memory_clear(C.llama_get_memory(self.ctx), True)
        arr = (C.llama_token * len(tokens))(*tokens)
        rc = C.llama_decode(self.ctx, C.llama_batch_get_one(arr, len(tokens)))
        if rc != 0:
            raise RuntimeError(f"llama_decode failed with code {rc}")
        ptr = C.llama_get_embeddings_seq(self.ctx, 0)
        if not ptr:
            raise RuntimeError("llama.cpp returned no pooled embedding")
        return np.ctypeslib.as_array(ptr, shape=(self.n_embd,)).copy()

    def close(self) -> None:
        if self.ctx:
            C.llama_free(self.ctx)
            self.ctx = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


# Integer ranges up to this many values become enums (a grammar of literal alternatives).
MAX_INTEGER_ENUM = 1024


def bounded_integers_as_enums(schema):
    """The schema with each integer that has both ``minimum`` and ``maximum`` (a range of at most
    MAX_INTEGER_ENUM values) written as an ``enum`` of those integers: llama-cpp-python's copy of
    the converter ignores numeric bounds, so without this a grammar admits any integer."""
    if isinstance(schema, list):
        return [bounded_integers_as_enums(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: bounded_integers_as_enums(v) for k, v in schema.items()}
    lo, hi = out.get("minimum"), out.get("maximum")
    if (
        out.get("type") == "integer"
        and "enum" not in out
        and all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi))
        and 0 <= hi - lo < MAX_INTEGER_ENUM
    ):
        out = {k: v for k, v in out.items() if k not in ("type", "minimum", "maximum")}
        out["enum"] = list(range(lo, hi + 1))
    return out


def json_grammar(schema: dict | None = None) -> str:
    """A GBNF grammar (llama.cpp's own converter, shipped with llama-cpp-python) for any JSON
    object (``schema`` None) or for JSON that validates against ``schema``. Raises ValueError
    for a schema the converter cannot express."""
    import json

    from llama_cpp import llama_grammar

    if schema is None:
        return llama_grammar.JSON_GBNF
    try:
        return llama_grammar.json_schema_to_gbnf(json.dumps(bounded_integers_as_enums(schema)))
    except (ValueError, KeyError, TypeError, AssertionError, NotImplementedError) as e:
        raise ValueError(str(e) or type(e).__name__) from None


class Sampler:
    """A llama.cpp sampler chain bound to one backend."""

    def __init__(self, chain, backend: Backend):
        self.chain = chain
        self.backend = backend

    def accept(self, tokens: list[int]) -> None:
        """Feed history (for the repeat penalty) without sampling."""
        for t in tokens:
            C.llama_sampler_accept(self.chain, t)

    def sample(self) -> int:
        """Sample from the last decoded position (and record the token in the chain's history)."""
        return C.llama_sampler_sample(self.chain, self.backend.ctx, -1)

    def close(self) -> None:
        if self.chain:
            C.llama_sampler_free(self.chain)
            self.chain = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

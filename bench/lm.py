"""Log-probabilities from llama.cpp's logits at every position: what log-likelihood scoring
(multiple choice) and bits per byte need, and what the runtime's ``Model`` does not expose (it
asks llama.cpp for the last position's logits only).

``Scorer`` is the runtime's scoring context (`edge_llm.llama.scoring.ScoringContext`) with the
settings the suites were calibrated with: llama.cpp's default KV cache (F16) and attention, batches
of 128 tokens whose every token requests logits. Each batch's logits are reduced to
log-probabilities of the tokens that follow at once (a row of Gemma 3's 262k-entry vocabulary is
1 MB), so memory stays at one batch of logits.
"""

from __future__ import annotations

from pathlib import Path

from edge_llm.llama.scoring import ScoringContext

DEFAULT_BATCH = 128  # the logits of a batch: 128 x 262k x 4 B = 134 MB for Gemma 3


class Scorer(ScoringContext):
    """A model loaded for scoring: ``logprobs(tokens)``, ``continuations(context, options)``."""

    def __init__(
        self,
        path: str | Path,
        *,
        n_ctx: int = 1024,
        threads: int | None = None,
        n_batch: int = DEFAULT_BATCH,
        n_seq: int = 1,
        adapters=(),
    ):
        from edge_llm import gguf_info

        gguf_info.check_gguf(Path(path))
        super().__init__(
            path,
            n_ctx=n_ctx,
            n_batch=n_batch,
            n_seq=n_seq,
            threads=threads,
            kv_type="f16",
            flash_attn=None,
            adapters=adapters,
        )
        self.open()

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        return super().tokenize(text, add_special=add_bos and self.add_bos())

    def piece(self, token: int) -> bytes:
        return self.token_to_piece(token)

    @property
    def bos(self) -> int | None:
        return self.bos_token()

    def reset(self) -> None:
        self.clear()

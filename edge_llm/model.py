"""``Model``: a GGUF loaded for generation, streaming and chat, with usage and timings."""

from __future__ import annotations

import codecs
import dataclasses
import json
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edge_llm import adapters as _adapters
from edge_llm import chat_template, gguf_info, validate
from edge_llm.devices import DeviceConfig, resolve_device
from edge_llm.errors import ConfigError, InvalidAdapterError, InvalidModelError, PromptError
from edge_llm.fsutil import atomic_path
from edge_llm.llama import backend as _backend
from edge_llm.llama.threads import ThreadPolicy
from edge_llm.registry import model_name, resolve
from edge_llm.results import Completion, Stream, Timings, TokenLogprob, Usage
from edge_llm.sampling import SamplingParams, find_stop, held_back

DEFAULT_N_CTX = 4096
EMBED_N_CTX = 2048  # the longest input ``embed`` takes (it is prefilled in one batch)
MAX_SNAPSHOTS = 4  # system-prompt KV snapshots kept per model (least recently used goes first)
SESSION_MAGIC = b"EDGELLMSESSION\n\0"
SESSION_FORMAT = 1


def _common_prefix(a: list[int], b: list[int]) -> int:
    return len(os.path.commonprefix([list(a), list(b)]))


class Model:
    """A GGUF model with one conversation's KV cache.

    Consecutive calls reuse the longest common token prefix already in the cache, so a chat's
    turn N only prefills what is new. One Model serves one caller at a time.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        device: str = "auto",
        n_ctx: int | None = None,
        threads: int | None = None,
        n_batch: int | None = None,
        kv_type: str | None = None,
        isolate: bool = False,
        adapters: Mapping[str, str | Path | tuple[str | Path, float]] | None = None,
        gpu_layers: int | None = None,
        trust_backend: bool = False,
    ):
        self.path = Path(path)
        validate.check(self.path)  # what llama.cpp would abort on, refused before it sees it
        if n_ctx is not None and not 16 <= n_ctx <= validate.MAX_CONTEXT:
            raise ConfigError(f"n_ctx must be 16 to {validate.MAX_CONTEXT} (got {n_ctx})")
        if n_batch is not None and n_batch < 1:
            raise ConfigError(f"n_batch must be at least 1 (got {n_batch})")
        if kv_type is not None and kv_type not in _backend.KV_TYPES:
            raise ConfigError(
                f"kv_type {kv_type!r} unknown; use one of {', '.join(_backend.KV_TYPES)}"
            )
        self.device: DeviceConfig = resolve_device(
            device,
            threads=threads,
            model_path=self.path,
            n_ctx=n_ctx,
            kv_type=kv_type,
            n_batch=n_batch,
            gpu_layers=gpu_layers,
        )
        self.backend_verdict = None  # the self-check's, when a GPU device was considered
        if self.device.n_gpu_layers and not trust_backend:
            self._check_backend()
        d = self.device
        cfg = _backend.ContextConfig(
            n_ctx=n_ctx or d.n_ctx or 0,
            n_threads=d.threads,
            n_threads_batch=d.threads_batch,
            n_batch=n_batch or d.n_batch or 512,
            n_gpu_layers=d.n_gpu_layers,
            kv_type=kv_type or d.kv_type or "f16",
            use_mlock=d.use_mlock,
            default_n_ctx=DEFAULT_N_CTX,
        )
        if isolate:  # an untrusted file: let a child process crash on it, not this one
            validate.probe(self.path, cfg)
        self._policy = ThreadPolicy(
            adaptive=self.device.adaptive_threads, start=self.device.threads
        )
        try:
            self._b = _backend.Backend(self.path, cfg)
        except _backend.LoadError as e:
            raise InvalidModelError(gguf_info.explain_load_failure(self.path, e.details)) from None
        self._threads = self.device.threads
        self._adapt_threads(wait=True)
        self._cache: list[int] = []  # tokens whose K/V sit in the cache, in order
        self._snapshots: OrderedDict[tuple[int, ...], bytes] = OrderedDict()  # system prompts
        self.architecture = self._b.meta("general.architecture") or "unknown"
        self.name = self._display_name()
        self._template = self._b.meta("tokenizer.chat_template")
        self._embedder: _backend.Embedder | None = None  # made on the first ``embed``
        self.chat_format = chat_template.chat_format(self._template)
        self._adapters: dict[str, tuple[_adapters.AdapterInfo, object]] = {}
        self._active: dict[str, float] = {}  # the adapters applied now, with their scales
        for name, spec in (adapters or {}).items():
            path, scale = spec if isinstance(spec, tuple) else (spec, 1.0)
            self.add_adapter(name, path, scale=scale)

    def _check_backend(self) -> None:
        """Run on the GPU only if it agrees with the CPU and is faster (edge_llm.devices.selfcheck):
        otherwise fall back to the CPU, saying so in one line."""
        from edge_llm.devices import selfcheck

        gpus = _backend.gpu_devices()
        if not gpus:
            return
        v = selfcheck.check(self.path, gpus[0], self.device.n_gpu_layers, self.device.threads)
        self.backend_verdict = v
        if not v.ok:
            print(selfcheck.notice(v, self.path.name), file=sys.stderr, flush=True)
            self.device = dataclasses.replace(self.device, n_gpu_layers=0)

    @property
    def placement(self):
        """Which layers llama.cpp put on which device, and its buffers (edge_llm.llama.placement)."""
        return self._b.placement

    def _display_name(self) -> str:
        keys = ("general.basename", "general.size_label", "general.finetune", "general.name")
        meta = {k: self._b.meta(k) for k in keys}
        return model_name(self.path, meta)

    # --- properties -------------------------------------------------------------------------
    @property
    def n_ctx(self) -> int:
        return self._b.n_ctx

    @property
    def n_ctx_train(self) -> int:
        return self._b.n_ctx_train

    @property
    def n_vocab(self) -> int:
        return self._b.n_vocab

    @property
    def threads(self) -> int:
        """CPU threads in use now (they follow the host's load unless given explicitly)."""
        return self._threads

    @property
    def chat_template(self) -> str:
        """The model's own template, or the plain transcript when the GGUF has none."""
        return self.chat_format.source

    @property
    def has_chat_template(self) -> bool:
        return self.chat_format.is_chat_model

    @property
    def is_chat_model(self) -> bool:
        """False for a GGUF without a chat template: a completion (base) model."""
        return self.chat_format.is_chat_model

    # --- adapters ---------------------------------------------------------------------------
    @property
    def adapters(self) -> dict[str, _adapters.AdapterInfo]:
        """The LoRA adapters loaded on this model, by name (in the order they were added)."""
        return {name: info for name, (info, _) in self._adapters.items()}

    @property
    def adapter(self) -> str | None:
        """The one adapter applied now (None: the base alone, or several at once)."""
        return next(iter(self._active)) if len(self._active) == 1 else None

    @property
    def active_adapters(self) -> dict[str, float]:
        """Every adapter applied now, with its scale."""
        return dict(self._active)

    def add_adapter(self, name: str, path: str | Path, *, scale: float = 1.0) -> None:
        """Load the LoRA adapter at ``path`` under ``name`` (once; ``use`` applies it). It is
        checked against this base first: InvalidAdapterError for a file that is not an adapter,
        is truncated, or was built for another base."""
        _adapters.check_name(name)
        if name in self._adapters:
            raise InvalidAdapterError(f"an adapter named {name!r} is loaded already")
        info = _adapters.check(path, gguf_info.read(self.path), name=name, scale=scale)
        try:
            handle = self._b.load_adapter(info.path)
        except _backend.LoadError as e:
            why = next((ln for ln in reversed(e.details) if ln.strip()), "no reason given")
            raise InvalidAdapterError(
                f"llama.cpp could not load adapter {info.path}: {why.strip()}"
            ) from None
        self._adapters[name] = (info, handle)

    def use(self, adapter: str | Mapping[str, float] | None = None, *, scale: float | None = None):
        """Apply adapters from the next call on: None, the base alone; a name, that adapter (at
        ``scale``, default its own); ``{name: scale, ...}``, several at once. Nothing is reloaded:
        llama.cpp only changes which adapters the context's graph adds. The KV cache was computed
        with the previous weights, so it is dropped when the selection changes. Returns self."""
        wanted = self._selection(adapter, scale)
        if wanted == self._active:
            return self
        pairs = [(self._adapters[n][1], s) for n, s in wanted.items()]
        self._b.set_adapters(pairs)
        if self._embedder is not None:
            self._embedder.set_adapters(pairs)
        self._active = wanted
        self.reset()
        self._snapshots.clear()
        return self

    def _selection(self, adapter, scale: float | None) -> dict[str, float]:
        if adapter is None:
            if scale is not None:
                raise ConfigError("a scale needs an adapter: use(name, scale=...)")
            return {}
        if isinstance(adapter, str):
            chosen = {adapter: scale}
        elif isinstance(adapter, Mapping):
            if scale is not None:
                raise ConfigError("give scales in the mapping, not also as scale=")
            chosen = dict(adapter)
        else:
            raise ConfigError(
                f"use() takes an adapter name, a {{name: scale}} mapping or None, not {adapter!r}"
            )
        out = {}
        for name, s in chosen.items():
            if name not in self._adapters:
                known = ", ".join(self._adapters) or "none loaded"
                raise ConfigError(f"no adapter named {name!r} (loaded: {known})")
            s = self._adapters[name][0].scale if s is None else s
            s = _adapters.check_scale(s, f"the scale of adapter {name}")
            if s != 0.0:  # llama.cpp ignores a zero scale: so does the selection
                out[name] = s
        return out

    # --- tokens -----------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = True) -> list[int]:
        """Token ids of ``text`` (BOS first when the model wants it and ``add_bos``)."""
        return self._b.tokenize(
            text, add_special=add_bos and self._b.add_bos(), parse_special=special
        )

    def detokenize(self, tokens: list[int], *, special: bool = False) -> str:
        return self._b.detokenize(tokens, special=special)

    def token_text(self, token: int) -> str:
        return self._b.token_to_piece(token, special=True).decode("utf-8", errors="replace")

    def token_bytes(self, token: int, *, special: bool = True) -> bytes:
        """A token's raw bytes (part of a UTF-8 character for some tokens)."""
        return self._b.token_to_piece(token, special=special)

    @property
    def bos_id(self) -> int | None:
        """The vocabulary's BOS token (None if it has none), whether or not prompts get it."""
        t = self._b.bos()
        return t if t >= 0 else None

    @property
    def eos_id(self) -> int | None:
        t = self._b.eos()
        return t if t >= 0 else None

    # --- chat -------------------------------------------------------------------------------
    def render_chat(
        self,
        messages: list[dict[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
    ) -> str:
        """The prompt text the chat template makes of ``messages`` (and ``tools``, OpenAI's
        function list, for templates that render them)."""
        msgs = chat_template.validate_messages(messages)
        return chat_template.render(
            self.chat_template,
            msgs,
            bos_token=self.token_text(self._b.bos()),
            eos_token=self.token_text(self._b.eos()),
            add_generation_prompt=add_generation_prompt,
            tools=tools,
        )

    @property
    def supports_tools(self) -> bool:
        """Whether the model's own chat template renders a list of tools."""
        return chat_template.renders_tools(self._template)

    def chat_tokens(
        self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        """The tokens fed to the model for ``messages`` (the template renders BOS itself or not).
        A last message from the assistant is continued, not answered (an answer prefix, as
        llama-server and vLLM's ``continue_final_message`` take it)."""
        last = messages[-1] if isinstance(messages, list) and messages else None
        if isinstance(last, dict) and last.get("role") == "assistant":
            text = self._continued_chat(messages, tools)
        else:
            text = self.render_chat(messages, tools=tools)
        bos = self.token_text(self._b.bos())
        add_bos = self._b.add_bos() and not (bos and text.startswith(bos))
        return self._b.tokenize(text, add_special=add_bos, parse_special=True)

    def _continued_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
    ) -> str:
        """The conversation rendered up to the end of its last (assistant) message's text:
        without the generation prompt and without the template's end of that turn."""
        content = messages[-1].get("content")
        if isinstance(content, str) and content:
            whole = self.render_chat(messages, add_generation_prompt=False, tools=tools)
            cut = chat_template.continue_final(whole, content)
            if cut is not None:
                return cut
        # an empty prefix, or a template that rewrites the message: the reply's start + the text
        head = self.render_chat(messages[:-1], tools=tools)
        return head + (content if isinstance(content, str) else "")

    def chat(self, messages: list[dict[str, str]], **sampling: Any) -> Completion:
        """Reply to a conversation; ``messages`` as in OpenAI's API."""
        s = self.chat_stream(messages, **sampling)
        for _ in s:
            pass
        return s.result

    def chat_stream(
        self,
        messages: list[dict[str, str]],
        *,
        cancel: threading.Event | None = None,
        tools: list[dict[str, Any]] | None = None,
        **sampling: Any,
    ) -> Stream:
        tokens = self.chat_tokens(messages, tools=tools)
        snapshot_at = self._system_prefix(messages, tokens, tools)
        if self.chat_format.stops:  # a base model: end the reply where it writes the next turn
            sampling["stop"] = chat_template.merge_stops(
                sampling.get("stop"), self.chat_format.stops
            )
        return self.stream(tokens, cancel=cancel, _snapshot_at=snapshot_at, **sampling)

    def _system_prefix(
        self,
        messages: list[dict[str, Any]],
        tokens: list[int],
        tools: list[dict[str, Any]] | None = None,
    ) -> int:
        """How many of ``tokens`` render the system message alone (0 if none, or not a prefix)."""
        if messages[0]["role"] != "system":
            return 0
        head = self.render_chat(messages[:1], add_generation_prompt=False, tools=tools)
        bos = self.token_text(self._b.bos())
        add_bos = self._b.add_bos() and not (bos and head.startswith(bos))
        sys_tokens = self._b.tokenize(head, add_special=add_bos, parse_special=True)
        n = len(sys_tokens)
        return n if n >= 8 and n < len(tokens) and tokens[:n] == sys_tokens else 0

    # --- generation -------------------------------------------------------------------------
    def generate(self, prompt: str | list[int], **sampling: Any) -> Completion:
        """Continue ``prompt`` (text, or token ids used as they are). See SamplingParams."""
        s = self.stream(prompt, **sampling)
        for _ in s:
            pass
        return s.result

    def stream(
        self,
        prompt: str | list[int],
        *,
        cancel: threading.Event | None = None,
        _snapshot_at: int = 0,
        **sampling: Any,
    ) -> Stream:
        """Like ``generate``, yielding text pieces as they come.

        Bad options and a prompt that cannot run raise here, before the first piece. Setting
        ``cancel`` (or calling ``Stream.cancel()``) from any thread stops the generation.
        """
        params = SamplingParams.from_kwargs(**sampling)
        tokens = self.prompt_tokens(prompt)
        holder: list[Completion] = []
        cancel = cancel or threading.Event()
        lps: list[TokenLogprob] | None = [] if params.logprobs is not None else None
        gen = self._run(tokens, params, holder, _snapshot_at, cancel, lps)
        return Stream(gen, holder, cancel, lps)

    # --- embeddings -------------------------------------------------------------------------
    @property
    def pooling(self) -> str:
        """How ``embed`` pools token vectors: "mean" unless the GGUF declares its own pooling."""
        return self._b.pooling()

    def embed(self, text: str | list[int]) -> np.ndarray:
        """The embedding of ``text`` (or of token ids): pooled as ``pooling`` says, L2-normalized
        (as OpenAI's and llama-server's are). Its own context: the chat's KV cache is untouched."""
        if self._embedder is None:
            self._embedder = self._b.embedder(min(self.n_ctx, EMBED_N_CTX))
            if self._active:
                self._embedder.set_adapters(
                    [(self._adapters[n][1], s) for n, s in self._active.items()]
                )
        tokens = self.prompt_tokens(text)
        if len(tokens) > self._embedder.n_ctx:
            raise PromptError(
                f"the input is {len(tokens)} tokens; embeddings take at most {self._embedder.n_ctx}"
            )
        v = self._embedder.embed(tokens).astype(np.float64)
        norm = float(np.linalg.norm(v))
        return (v / norm if norm > 0 else v).astype(np.float32)

    def reset(self) -> None:
        """Forget the KV cache (the next call prefills its whole prompt; snapshots stay)."""
        self._b.kv_clear()
        self._cache = []

    # --- sessions ---------------------------------------------------------------------------
    def save_session(self, path: str | Path, **extra: Any) -> None:
        """Write the conversation's KV cache (and ``extra`` JSON data, e.g. messages) to ``path``.

        The file is written to a temporary name and renamed into place.
        """
        header = {
            "format": SESSION_FORMAT,
            "model": self.path.name,
            "model_size": self.path.stat().st_size,
            "n_ctx": self.n_ctx,
            "tokens": self._cache,
            "adapters": self._active,
            **extra,
        }
        state = self._b.state_bytes()
        head = json.dumps(header).encode()
        with atomic_path(path) as tmp:
            with tmp.open("wb") as f:
                f.write(SESSION_MAGIC + len(head).to_bytes(8, "little") + head + state)

    def load_session(self, path: str | Path) -> dict[str, Any]:
        """Restore a session saved by ``save_session``; returns its header (tokens, extra data)."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ConfigError(f"cannot read session {path}: {e.strerror}") from None
        if not data.startswith(SESSION_MAGIC):
            raise ConfigError(f"{path} is not an edge-llm session file")
        n = int.from_bytes(data[len(SESSION_MAGIC) : len(SESSION_MAGIC) + 8], "little")
        start = len(SESSION_MAGIC) + 8
        header = json.loads(data[start : start + n])
        if (header.get("model"), header.get("model_size")) != (
            self.path.name,
            self.path.stat().st_size,
        ):
            raise ConfigError(
                f"session {path} was saved with {header.get('model')}, not {self.path.name}; "
                "load it with the same model"
            )
        if header.get("adapters", {}) != self._active:
            raise ConfigError(
                f"session {path} was saved with adapters {header.get('adapters') or 'none'}, "
                f"not {self._active or 'none'}; use() the same adapters first"
            )
        if len(header["tokens"]) >= self.n_ctx:
            raise ConfigError(
                f"session {path} holds {len(header['tokens'])} tokens; the context holds {self.n_ctx}"
            )
        self.reset()
        if not self._b.set_state_bytes(data[start + n :]):
            self.reset()
            raise ConfigError(
                f"session {path} does not fit this context; load the model with the same settings"
            )
        self._cache = list(header["tokens"])
        return header

    def close(self) -> None:
        if self._embedder is not None:
            self._embedder.close()
        self._b.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Model({str(self.path)!r}, arch={self.architecture}, n_ctx={self.n_ctx}, threads={self.threads})"

    # --- internals --------------------------------------------------------------------------
    def _adapt_threads(self, wait: bool) -> None:
        """Run on the CPUs other processes leave free (see edge_llm.devices)."""
        n = self._policy.update(wait=wait)
        if n != self._threads:
            self._b.set_threads(n, n)
            self._threads = n

    def prompt_tokens(self, prompt: str | list[int]) -> list[int]:
        """The token ids a prompt runs as (text tokenized, BOS added as the model wants; ids
        checked against the vocabulary), or a PromptError; they leave room for one token."""
        if isinstance(prompt, str):
            if not prompt.strip():
                raise PromptError("the prompt is empty; give the model some text to continue")
            tokens = self.tokenize(prompt)
        else:
            tokens = [int(t) for t in prompt]
            if not tokens:
                raise PromptError("the prompt is empty; give the model some tokens to continue")
            bad = [t for t in tokens if not 0 <= t < self.n_vocab]
            if bad:
                raise PromptError(
                    f"token id {bad[0]} is outside the vocabulary (0..{self.n_vocab - 1})"
                )
        if len(tokens) >= self.n_ctx:
            raise PromptError(
                f"the prompt is {len(tokens)} tokens but the context holds {self.n_ctx}; shorten it "
                f"or load with a larger context (n_ctx / --ctx, up to {self.n_ctx_train} for this model)"
            )
        return tokens

    def _prefill(self, tokens: list[int], snapshot_at: int = 0, should_stop=None) -> int:
        """Bring the KV cache to ``tokens``; returns how many were reused rather than computed.

        Reuse comes from the live cache (the common prefix with the previous call) or from a
        snapshot of a system prompt taken earlier (``snapshot_at``: where the system part ends).
        """
        limit = len(tokens) - 1  # the last prompt token is decoded for its logits
        n_keep = min(_common_prefix(self._cache, tokens), limit)
        snap = max(
            (
                k
                for k in self._snapshots
                if len(k) > n_keep and len(k) <= limit and tuple(tokens[: len(k)]) == k
            ),
            key=len,
            default=None,
        )
        if snap is not None and self._b.set_state_bytes(self._snapshots[snap]):
            self._snapshots.move_to_end(snap)
            n_keep = len(snap)
        elif not self._b.kv_truncate(n_keep):
            self._b.kv_clear()
            n_keep = 0
        self._cache = list(tokens[:n_keep])
        n_done = n_keep
        snapshot = n_keep < snapshot_at <= limit  # the system prompt is new: keep its KV too
        if snapshot:
            n_done += self._b.decode(tokens[n_done:snapshot_at], should_stop)
            if n_done == snapshot_at:
                self._snapshots[tuple(tokens[:snapshot_at])] = self._b.state_bytes()
                while len(self._snapshots) > MAX_SNAPSHOTS:
                    self._snapshots.popitem(last=False)
        if not snapshot or n_done == snapshot_at:
            n_done += self._b.decode(tokens[n_done:], should_stop)
        self._cache = list(tokens[:n_done])
        if n_done < len(tokens):
            raise _Cancelled
        return n_keep

    def _run(
        self,
        prompt: list[int],
        p: SamplingParams,
        holder: list[Completion],
        snapshot_at: int,
        cancel: threading.Event,
        lps: list[TokenLogprob] | None = None,
    ) -> Iterator[str]:
        self._adapt_threads(wait=False)
        t0 = time.perf_counter()
        t_prefill = t_first = None
        n_cached, sampler = 0, None
        generated: list[int] = []
        text, finish = "", "length"
        try:
            n_cached = self._prefill(prompt, snapshot_at, cancel.is_set)
            t_prefill = time.perf_counter()
            try:
                sampler = self._b.make_sampler(
                    temperature=p.temperature,
                    top_k=p.top_k,
                    top_p=p.top_p,
                    min_p=p.min_p,
                    repeat_penalty=p.repeat_penalty,
                    repeat_last_n=p.repeat_last_n,
                    seed=p.seed,
                    grammar=p.grammar,
                )
            except ValueError as e:  # a grammar llama.cpp cannot parse
                raise ConfigError(str(e)) from None
            if p.repeat_penalty != 1.0:
                sampler.accept(prompt[-p.repeat_last_n :])
            utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
            shown, stopped_by_string = 0, False
            while len(generated) < p.max_tokens:
                if cancel.is_set():
                    raise _Cancelled
                tok = sampler.sample()
                if t_first is None:
                    t_first = time.perf_counter()
                if self._b.is_eog(tok) and not p.ignore_eos:
                    finish = "stop"
                    break
                if lps is not None:
                    lps.append(self._logprob(tok, p.logprobs or 0))
                generated.append(tok)
                text += utf8.decode(self._b.token_to_piece(tok))
                cut = find_stop(text, p.stop, shown) if p.stop else None
                if cut is not None:
                    text = text[:cut]
                    if lps is not None:
                        _trim_logprobs(lps, cut)
                    finish, stopped_by_string = "stop", True
                    break
                ready = len(text) - (held_back(text, p.stop) if p.stop else 0)
                if ready > shown:
                    yield text[shown:ready]
                    shown = ready
                if len(generated) == p.max_tokens:
                    break
                if len(self._cache) >= self.n_ctx:
                    break  # the context is full: finish_reason "length"
                self._b.decode([tok])
                self._cache.append(tok)
            if not stopped_by_string:
                text += utf8.decode(b"", final=True)
            if len(text) > shown:
                yield text[shown:]
        except (_Cancelled, GeneratorExit):
            finish = "cancelled"
        finally:
            if sampler is not None:
                sampler.close()
            c = self._completion(prompt, n_cached, generated, text, finish, t0, t_prefill, t_first)
            if lps is not None:
                c = dataclasses.replace(c, logprobs=tuple(lps))
            holder.append(c)

    def _logprob(self, tok: int, top_n: int) -> TokenLogprob:
        lp = self._b.logprobs()
        top: tuple[tuple[str, bytes, float], ...] = ()
        if top_n:
            idx = np.argpartition(-lp, top_n)[:top_n]
            idx = idx[np.argsort(-lp[idx], kind="stable")]
            pieces = [self._b.token_to_piece(int(i)) for i in idx]
            top = tuple(
                (b.decode("utf-8", errors="replace"), b, float(lp[i])) for b, i in zip(pieces, idx)
            )
        piece = self._b.token_to_piece(tok)
        entropy = float(-(np.exp(lp) * lp).sum())  # the device's uncertainty (edge_llm.cascade)
        text = piece.decode("utf-8", errors="replace")
        return TokenLogprob(text, piece, float(lp[tok]), top, entropy)

    def _completion(
        self,
        prompt: list[int],
        n_cached: int,
        generated: list[int],
        text: str,
        finish: str,
        t0: float,
        t_prefill: float | None,
        t_first: float | None,
    ) -> Completion:
        t_end = time.perf_counter()
        t_prefill = t_prefill or t_end
        t_first = t_first or t_end
        prefill_s, decode_s = t_prefill - t0, t_end - t_first
        n_prefilled = len(prompt) - n_cached
        return Completion(
            text=text,
            tokens=generated,
            finish_reason=finish,
            usage=Usage(len(prompt), len(generated), n_cached),
            timings=Timings(
                ttft_s=t_first - t0,
                prefill_s=prefill_s,
                decode_s=decode_s,
                prefill_tokens_per_s=n_prefilled / prefill_s if prefill_s > 0 else 0.0,
                decode_tokens_per_s=(len(generated) - 1) / decode_s
                if len(generated) > 1 and decode_s > 0
                else 0.0,
            ),
        )


def _trim_logprobs(lps: list[TokenLogprob], n_chars: int) -> None:
    """Keep the tokens that begin within the first ``n_chars`` of the text (a stop string cut
    the rest away)."""
    at = 0
    for i, t in enumerate(lps):
        if at >= n_chars:
            del lps[i:]
            return
        at += len(t.token)


class _Cancelled(Exception):
    """Stream.cancel() was called (or its event set): stop where we are."""


def load(
    model: str | Path | None = None,
    *,
    device: str = "auto",
    n_ctx: int | None = None,
    threads: int | None = None,
    **kwargs: Any,
) -> Model:
    """Load a model: a path to a .gguf, a registered name (``edge-llm models``), or None for the
    default (SmolLM2-135M-Instruct).

    ``adapters={"math": "math.gguf", "zh": ("zh.gguf", 0.8)}`` loads LoRA adapters (with a scale
    each, default 1) once, checked against this base; ``Model.use("math")`` applies one,
    ``use(None)`` goes back to the base, without reloading anything.

    The file's header is always checked first (edge_llm.validate). ``isolate=True`` also loads it
    once in a child process, so a file that still makes llama.cpp abort raises InvalidModelError
    instead of killing this process: use it for files from elsewhere (downloads, uploads).
    """
    return Model(resolve(model), device=device, n_ctx=n_ctx, threads=threads, **kwargs)

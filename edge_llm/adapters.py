"""LoRA adapters: check a GGUF adapter against the base it will be applied to, before llama.cpp
sees it, and describe it (rank, alpha, parameters, what it costs per token).

Why: llama.cpp loads an adapter by trusting the file. A file that is not an adapter, one cut
short by a failed download, or one trained for another base (another architecture, width, depth
or vocabulary) must be refused with one line that says which, not with llama.cpp's log or a
crash. Everything here reads headers only (llama.cpp's own GGUF parser, `edge_llm.gguf_info`:
milliseconds), so a check costs nothing next to the load.

The layout checked is the one llama.cpp reads (src/llama-adapter.cpp) and its
``convert_lora_to_gguf.py`` writes: ``general.type = adapter``, ``adapter.type = lora``,
``adapter.lora.alpha``, ``general.architecture`` of the base, and per adapted base tensor ``W``
(ggml shape ``[n_in, n_out]``) a pair ``W.lora_a`` ``[n_in, r]`` and ``W.lora_b`` ``[r, n_out]``
(the token embedding's pair is stored flipped, as llama.cpp's input layer expects). llama.cpp
applies ``W x + scale * alpha / r * B (A x)``, which is PEFT's ``lora_alpha / r`` at scale 1.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from edge_llm import gguf_info
from edge_llm.errors import InvalidAdapterError, InvalidModelError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_SCALE = 100.0


@dataclass(frozen=True)
class AdapterInfo:
    """A checked adapter: what it changes and what it costs."""

    name: str
    path: Path
    scale: float  # the scale it is applied at unless another is asked for
    alpha: float
    rank: int
    n_params: int  # elements of every lora_a / lora_b tensor
    tensor_bytes: int
    file_size: int
    targets: tuple[str, ...]  # the base tensors it adapts

    @property
    def flops_per_token(self) -> float:
        """Extra multiply-adds x 2 per token: each adapted matrix costs B (A x), i.e.
        2 (r n_in + n_out r) = 2 x its adapter's elements (the embedding's lookup is counted the
        same way: an upper bound)."""
        return 2.0 * self.n_params

    def summary(self) -> dict:
        return {
            "name": self.name,
            "path": str(self.path),
            "scale": self.scale,
            "alpha": self.alpha,
            "rank": self.rank,
            "n_params": self.n_params,
            "tensor_bytes": self.tensor_bytes,
            "file_size": self.file_size,
            "targets": len(self.targets),
        }


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidAdapterError(
            f"adapter name {name!r} must be 1-64 letters, digits, '.', '_' or '-' (e.g. math)"
        )
    return name


def check_scale(scale: float, what: str = "adapter scale") -> float:
    if isinstance(scale, bool) or not isinstance(scale, int | float):
        raise InvalidAdapterError(f"{what} must be a number (got {scale!r})")
    if not (math.isfinite(scale) and -MAX_SCALE <= scale <= MAX_SCALE):
        raise InvalidAdapterError(f"{what} must be a finite number in [-100, 100] (got {scale})")
    return float(scale)


def parse_spec(spec: str) -> tuple[str, Path, float]:
    """``NAME=PATH`` or ``NAME=PATH@SCALE`` (the CLI's --adapter), or a bare PATH (named after its
    file) -> (name, path, scale)."""
    name, sep, rest = spec.partition("=")
    if not sep:
        name, rest = Path(spec).stem, spec
    scale = 1.0
    path, at, tail = rest.rpartition("@")
    if at and tail:
        try:
            scale = float(tail)
        except ValueError:
            path = rest
    else:
        path = rest
    if not path:
        raise InvalidAdapterError(f"--adapter {spec!r}: give NAME=PATH (e.g. math=math.gguf)")
    return check_name(name), Path(path), check_scale(scale)


def _read(path: Path) -> gguf_info.GGUFInfo:
    if not path.is_file():
        raise InvalidAdapterError(
            f"adapter {path} does not exist; pass a LoRA adapter GGUF (edge-llm adapt or "
            "edge-llm convert --lora makes one)"
        )
    try:
        return gguf_info.read(path)
    except InvalidModelError as e:
        raise InvalidAdapterError(f"adapter {e}") from None


def check(
    path: str | Path, base: gguf_info.GGUFInfo, *, name: str | None = None, scale: float = 1.0
) -> AdapterInfo:
    """The adapter at ``path`` if llama.cpp can apply it to ``base`` (the base model's header);
    InvalidAdapterError naming the first thing that does not fit."""
    path = Path(path)
    info = _read(path)
    md = info.metadata
    kind, adapter_type = md.get("general.type"), md.get("adapter.type")
    if kind != "adapter" or adapter_type != "lora":
        what = (
            f"general.type is {kind!r}"
            if kind != "adapter"
            else f"adapter.type is {adapter_type!r}"
        )
        raise InvalidAdapterError(
            f"{path} is not a LoRA adapter ({what}, not 'adapter'/'lora'); pass an adapter GGUF "
            "(edge-llm adapt or edge-llm convert --lora makes one), not a model"
        )
    if info.architecture != base.architecture:
        raise InvalidAdapterError(
            f"adapter {path} was built for a '{info.architecture}' model, but the base is "
            f"'{base.architecture}'; use an adapter trained on this base"
        )
    alpha = md.get("adapter.lora.alpha")
    if not isinstance(alpha, int | float) or isinstance(alpha, bool) or not math.isfinite(alpha):
        raise InvalidAdapterError(
            f"adapter {path}: adapter.lora.alpha is {alpha!r}, not a number; the file is damaged"
        )
    pairs, n_params = _pairs(path, info)
    rank = _check_shapes(path, pairs, {t.name: t for t in base.tensors}, base)
    _check_invocation(path, md, base)
    return AdapterInfo(
        name=check_name(name or path.stem),
        path=path,
        scale=check_scale(scale),
        alpha=float(alpha),
        rank=rank,
        n_params=n_params,
        tensor_bytes=info.tensor_bytes,
        file_size=info.file_size,
        targets=tuple(sorted(pairs)),
    )


def _pairs(path: Path, info: gguf_info.GGUFInfo) -> tuple[dict, int]:
    """Base tensor name -> {"a": TensorInfo, "b": TensorInfo}; and the pairs' element count."""
    pairs: dict[str, dict] = {}
    n = 0
    for t in info.tensors:
        if t.name.endswith((".lora_a", ".lora_b")):
            pairs.setdefault(t.name[:-7], {})[t.name[-1]] = t
            n += t.n_elements
        elif not t.name.endswith("_norm.weight"):  # norms (mergekit) llama.cpp skips
            raise InvalidAdapterError(
                f"adapter {path}: tensor {t.name} is neither a lora_a nor a lora_b; the file is "
                "not a LoRA adapter llama.cpp reads"
            )
    if not pairs:
        raise InvalidAdapterError(f"adapter {path} holds no LoRA tensors; it is empty or damaged")
    for base_name, pair in pairs.items():
        if len(pair) != 2:
            raise InvalidAdapterError(
                f"adapter {path}: {base_name} has a lora_{'ab'[('a' in pair)]} but no "
                f"lora_{'ab'['a' not in pair]}; the file is damaged"
            )
    return pairs, n


def _check_shapes(path: Path, pairs: dict, base_tensors: dict, base: gguf_info.GGUFInfo) -> int:
    ranks = set()
    for name, pair in sorted(pairs.items()):
        w = base_tensors.get(name)
        if w is None:
            raise InvalidAdapterError(
                f"adapter {path} adapts {name}, which the base ({base.path.name}) does not have: "
                "it was built for another base model"
            )
        a, b = pair["a"].shape, pair["b"].shape
        if len(a) != 2 or len(b) != 2 or len(w.shape) != 2:
            raise InvalidAdapterError(f"adapter {path}: {name}'s pair is not two matrices")
        if name.endswith("token_embd.weight"):  # stored flipped (llama.cpp's input layer)
            fits, rank = w.shape == (b[1], a[1]) and a[0] == b[0], a[0]
        else:
            fits, rank = w.shape == (a[0], b[1]) and a[1] == b[0], a[1]
        if not fits:
            raise InvalidAdapterError(
                f"adapter {path}: {name} is {list(a)} x {list(b)} but the base's is "
                f"{list(w.shape)} ({base.path.name}: another width or vocabulary); use an "
                "adapter trained on this base"
            )
        ranks.add(rank)
    return max(ranks)


def _check_invocation(path: Path, md: dict, base: gguf_info.GGUFInfo) -> None:
    """An aLoRA's invocation tokens must be tokens of the base's vocabulary."""
    tokens = md.get("adapter.alora.invocation_tokens")
    n_vocab = base.vocab_size
    if tokens is None or not n_vocab:
        return
    bad = [t for t in tokens if not isinstance(t, int) or not 0 <= t < n_vocab]
    if bad:
        raise InvalidAdapterError(
            f"adapter {path}: invocation token {bad[0]!r} is outside the base's vocabulary "
            f"(0..{n_vocab - 1}); it was built for another base model"
        )

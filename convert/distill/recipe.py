"""distill.toml: what to prune and how to heal. Every field has a default; a recipe file only
names what it changes.

    [prune]
    layers = 20               # keep 20 decoder layers (or: drop = 10, or keep = [0, 1, ...])
    intermediate_size = 1024  # width: MLP channels kept per layer (default: all)
    kv_heads = 2              # width: KV groups kept per layer, their query heads with them

    [kd]
    temperature = 1.0         # KL(teacher || student) at temperature T, scaled by T^2
    alpha = 0.0               # weight of cross-entropy on the text (1 - alpha on the KL)
    top_k = 64                # teacher logits cached per position (+ the rest's mass)
    lr = 3e-4
    weight_decay = 0.0
    warmup = 0.05             # fraction of the steps with a linear warmup, then cosine to min_lr
    min_lr_ratio = 0.1
    batch_size = 4            # sequences per micro-batch
    grad_accum = 1
    seq_len = 256
    tokens = 0                # training tokens (0: one pass over the data)
    checkpoint_every = 50     # steps
    grad_clip = 1.0
    freeze_embeddings = false # train only the decoder layers (faster; the head is tied)

    [data]
    generate = false          # fill a token budget beyond the corpus with teacher continuations
                              # (off: the corpus repeats; sampling dominates a small run's time)
    prompt_tokens = 32        # corpus prefix each generated sequence starts from
    gen_temperature = 1.0
    calibration_sequences = 32  # sequences the importance is measured on

    [domain]                  # with --domain NAME (a targeted student)
    fraction = 0.5            # share of the training sequences drawn from the domain corpus
    ce_weight = 0.5           # on domain sequences: weight of cross-entropy on the gold text
                              # (1 - ce_weight on KD); general text keeps kd.alpha
    seed = 0                  # draw of the built-in corpus (k12-math)
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from convert.errors import ConvertError, read_input


@dataclass
class Prune:
    layers: int | None = None
    drop: int | None = None
    keep: list[int] | None = None
    intermediate_size: int | None = None
    kv_heads: int | None = None


@dataclass
class KD:
    temperature: float = 1.0
    alpha: float = 0.0
    top_k: int = 64
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup: float = 0.05
    min_lr_ratio: float = 0.1
    batch_size: int = 4
    grad_accum: int = 1
    seq_len: int = 256
    tokens: int = 0
    checkpoint_every: int = 50
    grad_clip: float = 1.0
    freeze_embeddings: bool = False


@dataclass
class Data:
    generate: bool = False
    prompt_tokens: int = 32
    gen_temperature: float = 1.0
    calibration_sequences: int = 32


@dataclass
class Domain:
    fraction: float = 0.5
    ce_weight: float = 0.5
    seed: int = 0


@dataclass
class Recipe:
    prune: Prune = field(default_factory=Prune)
    kd: KD = field(default_factory=KD)
    data: Data = field(default_factory=Data)
    domain: Domain = field(default_factory=Domain)

    def to_dict(self) -> dict:
        return asdict(self)


_SECTIONS = {"prune": Prune, "kd": KD, "data": Data, "domain": Domain}


def recipe_from_dict(d: dict, where: str = "recipe") -> Recipe:
    unknown = set(d) - set(_SECTIONS)
    if unknown:
        raise ConvertError(
            f"{where}: unknown section [{sorted(unknown)[0]}]; use [prune], [kd], [data] and [domain]"
        )
    parts = {}
    for name, cls in _SECTIONS.items():
        section = d.get(name) or {}
        names = {f.name: f for f in fields(cls)}
        for key, value in section.items():
            if key not in names:
                raise ConvertError(
                    f"{where}: unknown key {name}.{key}; known: {', '.join(sorted(names))}"
                )
            default = getattr(cls(), key)
            if isinstance(default, bool) and not isinstance(value, bool):
                raise ConvertError(f"{where}: {name}.{key} must be true or false")
            if (
                isinstance(default, float)
                and isinstance(value, int)
                and not isinstance(value, bool)
            ):
                section[key] = float(value)
        parts[name] = cls(**section)
    recipe = Recipe(**parts)
    check(recipe, where)
    return recipe


def load_recipe(path: str | Path | None) -> Recipe:
    """A Recipe from a distill.toml (None: the defaults)."""
    if path is None:
        return Recipe()
    path = Path(path)
    text = read_input(path, "the recipe").decode("utf-8", errors="replace")
    try:
        d = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConvertError(f"recipe {path} is not valid TOML: {e}; fix the file") from None
    return recipe_from_dict(d, where=f"recipe {path}")


def check(r: Recipe, where: str = "recipe") -> None:
    k, p, d = r.kd, r.prune, r.data
    positive = {
        "kd.top_k": k.top_k,
        "kd.batch_size": k.batch_size,
        "kd.grad_accum": k.grad_accum,
        "kd.seq_len": k.seq_len,
        "kd.checkpoint_every": k.checkpoint_every,
        "data.calibration_sequences": d.calibration_sequences,
    }
    for name, v in positive.items():
        if not isinstance(v, int) or v < 1:
            raise ConvertError(f"{where}: {name} = {v!r}; it must be a positive integer")
    if k.temperature <= 0:
        raise ConvertError(f"{where}: kd.temperature = {k.temperature}; it must be > 0")
    if not 0.0 <= k.alpha <= 1.0:
        raise ConvertError(f"{where}: kd.alpha = {k.alpha}; it must be between 0 and 1")
    if k.lr <= 0:
        raise ConvertError(f"{where}: kd.lr = {k.lr}; it must be > 0")
    if not 0.0 <= k.warmup < 1.0:
        raise ConvertError(
            f"{where}: kd.warmup = {k.warmup}; it is a fraction of the steps in [0, 1)"
        )
    if k.tokens < 0:
        raise ConvertError(f"{where}: kd.tokens = {k.tokens}; it must be >= 0 (0: one pass)")
    if d.generate and not 0 < d.prompt_tokens < k.seq_len:
        raise ConvertError(
            f"{where}: data.prompt_tokens = {d.prompt_tokens}; it must be between 1 and kd.seq_len - 1"
        )
    if not 0.0 < r.domain.fraction <= 1.0:
        raise ConvertError(f"{where}: domain.fraction = {r.domain.fraction}; it must be in (0, 1]")
    if not 0.0 <= r.domain.ce_weight <= 1.0:
        raise ConvertError(
            f"{where}: domain.ce_weight = {r.domain.ce_weight}; it must be between 0 and 1"
        )
    given = [n for n in ("layers", "drop", "keep") if getattr(p, n) is not None]
    if len(given) > 1:
        raise ConvertError(
            f"{where}: give one of prune.layers, prune.drop and prune.keep, not {' and '.join(given)}"
        )

"""`edge-llm adapt`: train a LoRA adapter for one subject on a frozen base, write it as a GGUF
adapter llama.cpp applies (and, with ``peft_dir``, as a PEFT folder for Hugging Face users).

Why: one base model in memory and one small file per subject (K-12 math, Chinese, a school's own
material) is how a learning machine serves several subjects; `edge_llm.load(adapters=...)`
swaps them without reloading. The base is a Hugging Face folder or a GGUF: a GGUF is the file
that will run, so the adapter is trained against its own (quantized) weights, dequantized once
to a frozen float32 model through export-hf (QLoRA-style), and applied to that same GGUF.

Work in progress (the exported base, the checkpoint) lives in a hidden folder beside the output,
``.NAME.adapt-work``; a run that stops resumes there (same base, data and settings) and reaches
the weights an uninterrupted run reaches. Outputs are written atomically.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from convert.adapt import data as D
from convert.adapt import train as T
from convert.distill.kd import world
from convert.errors import ConvertError
from convert.outputs import check_output

MAX_EXAMPLES = 20000  # built-in corpora: at most this many distinct problems
MINUTES_EXAMPLES = 4000  # with --minutes (steps unknown yet): this many, repeated in epochs


@dataclass
class AdaptResult:
    path: Path
    peft_dir: Path | None
    base: str
    domain: str
    rank: int
    alpha: float
    targets: list[str]
    examples: int
    steps: int
    start_step: int
    tokens: int
    seconds: float
    tokens_per_s: float
    loss_first: float | None
    loss_last: float | None
    adapter_bytes: int
    base_bytes: int
    contamination: dict | None = None  # bench.contamination's summary of the corpus checked

    def summary(self) -> dict:
        d = dict(self.__dict__)
        d["path"], d["peft_dir"] = str(self.path), str(self.peft_dir) if self.peft_dir else None
        return d


def _work_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.adapt-work"


def base_folder(model: str | Path, work: Path, progress=None) -> tuple[Path, Path, int]:
    """(Hugging Face folder to train on, what the adapter is for, its size in bytes): a folder
    as it is; a GGUF (path or registered name) exported once to ``work`` as float32."""
    p = Path(model)
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ConvertError(f"{p} has no config.json; pass a Hugging Face folder or a GGUF")
        return p, p, sum(f.stat().st_size for f in p.glob("*.safetensors"))
    from edge_llm.registry import resolve

    gguf_path = p if p.is_file() else resolve(str(model))
    hf = work / "base-hf"
    stamp = work / "base.json"
    key = {
        "gguf": str(Path(gguf_path).resolve()),
        "size": gguf_path.stat().st_size,
        "mtime": gguf_path.stat().st_mtime,
    }
    if not (stamp.is_file() and json.loads(stamp.read_text()) == key and hf.is_dir()):
        from convert.export_hf import export_hf

        shutil.rmtree(hf, ignore_errors=True)
        export_hf(gguf_path, hf, dtype="f32", force=True,
                  progress=(lambda s, d, t, *_: progress("export base", d, t, {})) if progress else None)  # fmt: skip
        stamp.write_text(json.dumps(key))
    return hf, Path(gguf_path), gguf_path.stat().st_size


def examples_for(domain: str, n: int, seed: int) -> list[D.Example]:
    if domain in D.DOMAINS:
        return D.k12_examples(domain, n, seed)
    if domain.endswith(".jsonl") or Path(domain).is_file():
        return D.read_jsonl(Path(domain))
    raise ConvertError(f"--domain {domain}: choose {', '.join(D.DOMAINS)} or a .jsonl file")


def guard(examples: list[D.Example], what: str) -> dict:
    """Refuse (ConvertError, one line) a corpus that shares a word 13-gram with any evaluation
    item (bench.contamination, as distill does); else its summary."""
    from convert.distill.data import check_clean

    return check_clean(D.texts(examples), what)


def adapt(
    model: str | Path,
    out: str | Path,
    *,
    domain: str = "k12-math",
    rank: int = 16,
    alpha: float = 32.0,
    steps: int | None = None,
    minutes: float | None = None,
    batch: int = 8,
    lr: float = 2e-4,
    max_len: int = 384,
    seed: int = 0,
    out_type: str = "f16",
    peft_dir: str | Path | None = None,
    restart: bool = False,
    force: bool = False,
    progress=None,
) -> AdaptResult | None:
    """Train a LoRA adapter of ``rank`` and ``alpha`` on ``domain`` for ``model``; write the GGUF
    adapter to ``out`` (and the PEFT folder to ``peft_dir``). ``steps``, or as many as fit in
    ``minutes`` (measured here), default 200. Under torchrun only rank 0 writes (and gets the
    result; the other ranks get None)."""
    out = check_output(out, [model], force=force)
    if peft_dir is not None:
        check_output(peft_dir, [model], force=force, folder=True)
    if rank < 1 or alpha <= 0 or batch < 1 or lr <= 0 or max_len < 8:
        raise ConvertError("--rank, --alpha, --batch, --lr must be positive (and --max-len >= 8)")
    if steps is not None and steps < 1 or minutes is not None and minutes <= 0:
        raise ConvertError("--steps and --minutes must be positive")
    work = _work_dir(out)
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    examples = examples_for(
        domain, min(MAX_EXAMPLES, steps * batch) if steps else MINUTES_EXAMPLES, seed
    )
    clean = guard(examples, f"the --domain {domain} corpus")  # before any heavy work
    hf, target, base_bytes = base_folder(model, work, progress)
    tok, net, rows = _prepare(hf, examples, domain, rank, alpha, max_len, seed)
    key = {"base": str(target), "domain": domain, "rank": rank, "alpha": alpha, "rows": len(rows),
           "max_len": max_len, "batch": batch, "lr": lr, "seed": seed, "steps": steps,
           "minutes": minutes}  # fmt: skip
    ckpt, plan = work / "checkpoint.pt", work / "plan.json"
    if restart:
        ckpt.unlink(missing_ok=True)
        plan.unlink(missing_ok=True)
    planned = json.loads(plan.read_text()) if plan.is_file() else {}
    if planned.get("key") == key:  # a resumed --minutes run keeps the steps it measured
        cfg = T.TrainConfig(**planned["config"])
    else:
        cfg = _config(net, rows, tok, steps, minutes, batch, lr, seed)
        plan.write_text(json.dumps({"key": key, "config": cfg.__dict__}))
    meta = {**key, "config": cfg.__dict__}
    log = T.train(net, rows, cfg, pad=_pad(tok), checkpoint=ckpt, meta=meta, progress=progress)
    if world()[0] != 0:  # under torchrun, rank 0 writes
        return None
    result = _write(net, hf, out, out_type, peft_dir, force)
    shutil.rmtree(work, ignore_errors=True)
    return AdaptResult(
        path=out, peft_dir=Path(peft_dir) if peft_dir else None, base=str(target), domain=domain,
        rank=rank, alpha=alpha, targets=sorted(net.peft_config["default"].target_modules), examples=len(rows),
        steps=cfg.steps, start_step=log.start_step, tokens=log.tokens,
        seconds=time.perf_counter() - t_start,
        tokens_per_s=log.tokens / log.seconds if log.seconds else 0.0,
        loss_first=log.losses[0] if log.losses else None,
        loss_last=log.losses[-1] if log.losses else None,
        adapter_bytes=result.file_size, base_bytes=base_bytes, contamination=clean,
    )  # fmt: skip


def _pad(tok) -> int:
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    return int(pad or 0)


def _prepare(hf: Path, examples, domain: str, rank: int, alpha: float, max_len: int, seed: int):
    """(tokenizer, the PEFT model, encoded rows)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from convert.distill.data import load_tokenizer

    tok = load_tokenizer(hf)
    chat = bool(getattr(tok, "chat_template", None))
    rows = [D.encode(tok, e, chat, max_len) for e in examples]
    rows = [r for r in rows if any(v != -100 for v in r[1][1:])]
    if not rows:
        raise ConvertError(
            f"--domain {domain}: no example has a reply within --max-len {max_len} tokens"
        )
    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(str(hf), dtype=torch.float32)
    for p in base.parameters():
        p.requires_grad_(False)
    cfg = LoraConfig(
        r=rank, lora_alpha=alpha, target_modules=T.lora_targets(base), lora_dropout=0.0
    )
    return tok, get_peft_model(base, cfg), rows


def _config(net, rows, tok, steps, minutes, batch: int, lr: float, seed: int) -> T.TrainConfig:
    if steps is None:
        if minutes is None:
            steps = 200
        else:
            per_step = T.step_seconds(net, rows, T.TrainConfig(steps=1, batch=batch), _pad(tok))
            steps = _agreed(max(1, int(minutes * 60 / per_step)))
    return T.TrainConfig(steps=steps, batch=batch, lr=lr, seed=seed,
                         checkpoint_every=max(1, min(50, steps // 10)))  # fmt: skip


def _agreed(steps: int) -> int:
    """Under torchrun, rank 0's measured number of steps for every rank (they must agree)."""
    if world()[1] == 1:
        return steps
    import torch.distributed as dist

    box = [steps]
    dist.broadcast_object_list(box, src=0)
    return int(box[0])


def _write(net, hf: Path, out: Path, out_type: str, peft_dir, force: bool):
    from convert.lora import write_gguf_adapter
    from edge_llm.fsutil import atomic_dir

    if peft_dir is not None:
        with atomic_dir(Path(peft_dir), replace=force) as tmp:
            net.save_pretrained(tmp)
        return write_gguf_adapter(peft_dir, hf, out, out_type=out_type, force=True)
    tmp_dir = _work_dir(out) / "peft"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    net.save_pretrained(tmp_dir)
    return write_gguf_adapter(tmp_dir, hf, out, out_type=out_type, force=True)

"""distill(): teacher folder in, pruned and healed student folder (and optionally GGUF) out.

Order: read and check everything cheap first (config, recipe, texts, token budget), then load the
teacher, measure importance on calibration sequences, plan and build the student, prepare the
data (generated continuations and the teacher's top-k, both cached under
~/.cache/edge-llm/distill keyed by teacher hash + data + parameters), train, save. Work in
progress (plan, checkpoints) lives in a hidden folder beside the output, `.NAME.distill-work`;
the student is written to a temporary folder and renamed into place, so a killed run leaves
nothing at the target.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convert.distill import data as D
from convert.distill import kd as K
from convert.distill import prune as P
from convert.distill.recipe import Recipe, load_recipe
from convert.errors import ConvertError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model",
                   "special_tokens_map.json", "vocab.json", "merges.txt", "added_tokens.json",
                   "chat_template.jinja", "chat_template.json", "generation_config.json")  # fmt: skip


@dataclass
class DistillResult:
    path: Path
    architecture: str
    teacher_layers: int
    kept_layers: list[int]
    block_influence: list[float]
    config: dict  # the student's layers / intermediate_size / heads / kv_heads
    params_teacher: int
    params_student: int
    steps: int
    tokens: int  # tokens trained on (steps * batch * accum * seq_len)
    corpus_sequences: int
    generated_sequences: int
    loss_first: float | None
    loss_last: float | None
    tokens_per_s: float
    seconds: float
    device: str
    gguf: Path | None = None
    cache: str | None = None
    losses: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "losses"}
        d["path"] = str(self.path)
        d["gguf"] = str(self.gguf) if self.gguf else None
        return d


def _device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConvertError("--device cuda: no CUDA device is visible to torch; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConvertError(f"unknown --device {device}; choose cpu, cuda or auto")
    return device


def _read_config(teacher_dir: Path) -> dict:
    if not teacher_dir.is_dir():
        raise ConvertError(f"{teacher_dir} is not a folder; pass a Hugging Face model folder (edge-llm export-hf makes one from a GGUF)")
    cfg_path = teacher_dir / "config.json"
    if not cfg_path.is_file():
        raise ConvertError(f"{teacher_dir} has no config.json; pass a Hugging Face model folder (edge-llm export-hf makes one from a GGUF)")
    try:
        config = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:
        raise ConvertError(f"cannot read {cfg_path}: {e}; fix or re-export the teacher") from None
    P.check_architecture(config, str(teacher_dir))
    if not any(teacher_dir.glob("*.safetensors")):
        raise ConvertError(f"{teacher_dir} has no *.safetensors weights; save the teacher with safetensors")
    return config


def _work_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.distill-work"


def distill(
    teacher_dir: str | Path,
    out_dir: str | Path,
    *,
    recipe: Recipe | str | Path | None = None,
    layers: int | None = None,
    texts: list[str | Path] | None = None,
    tokens: int | None = None,
    steps: int | None = None,
    device: str = "cpu",
    dtype: str = "auto",
    seed: int = 0,
    resume: bool = False,
    threads: int | None = None,
    progress=None,
    on_step=None,
    gguf: str | Path | None = None,
    type: str | None = None,
) -> DistillResult:
    """Prune ``teacher_dir`` per the recipe (or ``layers``: keep that many decoder layers, by
    block influence) and heal the student by KD on ``tokens`` training tokens (None: the
    recipe's, 0 there: one pass over the texts) or ``steps`` optimizer steps. ``steps=0`` prunes
    without healing. Writes a Hugging Face folder at ``out_dir`` (and a GGUF at ``gguf``)."""
    t_start = time.perf_counter()
    teacher_dir, out = Path(teacher_dir), Path(out_dir)
    config = _read_config(teacher_dir)
    r = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    kd = r.kd
    if layers is not None and (isinstance(layers, bool) or not isinstance(layers, int)):
        raise ConvertError(f"--layers {layers!r}: give a whole number of layers to keep")
    n_layers = int(config["num_hidden_layers"])
    if layers is not None and not 1 <= layers <= n_layers:
        raise ConvertError(f"--layers {layers}: the teacher has {n_layers} layers; keep between 1 and {n_layers}")
    P.width_targets(config, r.prune)  # fail early on impossible widths
    if tokens is not None and tokens <= 0:
        raise ConvertError(f"--tokens {tokens}: give a positive number of training tokens (or --steps 0 to prune without healing)")
    if steps is not None and steps < 0:
        raise ConvertError(f"--steps {steps}: give 0 (prune only) or more")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConvertError(f"{out} already exists; remove it or choose another --output")
    docs = D.read_documents(texts if texts else D.default_texts())

    import torch

    if threads:
        torch.set_num_threads(threads)
    dev = _device(device)
    tok = D.load_tokenizer(teacher_dir)
    ids = D.tokenize(tok, docs)
    L = kd.seq_len
    corpus = D.chunk(ids, L)
    if len(corpus) == 0:
        raise ConvertError(f"the text has {len(ids)} tokens, fewer than one sequence of kd.seq_len = {L}; give more text or a smaller seq_len")
    per_step = kd.batch_size * kd.grad_accum
    budget = tokens if tokens is not None else (kd.tokens or len(corpus) * L)
    n_steps = steps if steps is not None else max(1, math.ceil(budget / (per_step * L)))
    need = n_steps * per_step  # sequences the training stream reads
    n_gen = max(0, need - len(corpus)) if r.data.generate else 0
    work = _work_dir(out)
    if not resume and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)

    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    try:
        teacher = AutoModelForCausalLM.from_pretrained(str(teacher_dir), dtype=torch.float32)
    except Exception as e:  # noqa: BLE001
        raise ConvertError(f"transformers cannot load the teacher {teacher_dir}: {str(e).splitlines()[0]}") from None
    teacher = teacher.to(dev).eval()
    params_teacher = sum(p.numel() for p in teacher.parameters())
    thash = D.teacher_hash(teacher_dir)

    # 1. importance and the plan (kept on resume)
    plan_file = work / "plan.json"
    if resume and plan_file.is_file():
        saved = json.loads(plan_file.read_text())
        plan = P.Plan(**saved["plan"])
        bi = saved["block_influence"]
    else:
        needs_imp = (layers is not None and layers < n_layers) or any(
            getattr(r.prune, k) is not None for k in ("layers", "drop", "intermediate_size", "kv_heads")
        )
        imp = None
        bi = []
        if needs_imp:
            calib = corpus[: r.data.calibration_sequences]
            batches = [torch.from_numpy(calib[b : b + kd.batch_size]).to(dev)
                       for b in range(0, len(calib), kd.batch_size)]  # fmt: skip
            imp = P.measure(teacher, batches, progress=progress)
            bi = imp.block_influence
        plan = P.plan(config, r.prune, layers, imp)
        plan_file.write_text(json.dumps({"plan": plan.__dict__, "block_influence": bi}))
    student = P.build_student(teacher, plan, seed=seed).to(dev)
    if kd.freeze_embeddings:
        for m in (student.get_input_embeddings(), student.get_output_embeddings()):
            for p in m.parameters():
                p.requires_grad_(False)

    # 2. data: generated continuations and the teacher's top-k (cached)
    dataset, cache_name, result_train = None, None, None
    if n_steps > 0:
        k = min(kd.top_k, int(config["vocab_size"]) - 1)
        seqs = corpus
        if need < len(corpus):  # the teacher runs only on the sequences training reads
            pick = np.random.default_rng([seed, 1 << 20]).permutation(len(corpus))[:need]
            seqs = corpus[np.sort(pick)]
        if n_gen:
            prompts = np.stack([corpus[i % len(corpus), : r.data.prompt_tokens] for i in range(n_gen)])
            gkey = D.digest("gen", thash, prompts, L, r.data.gen_temperature, seed)
            gpath = D.store_dir() / f"gen-{gkey}.npz"
            if gpath.is_file():
                gen = np.load(gpath)["seqs"]
            else:
                gen = D.generate(teacher, prompts, L, temperature=r.data.gen_temperature, seed=seed,
                                 batch=max(kd.batch_size, 8), device=dev, progress=progress)  # fmt: skip
                D.save_npz(gpath, seqs=gen)
            seqs = np.concatenate([corpus, gen])
        tkey = D.digest("topk", thash, seqs, k, kd.temperature)
        tpath = D.store_dir() / f"topk-{tkey}.npz"
        cache_name = str(tpath)
        if tpath.is_file():
            with np.load(tpath) as z:
                top = {n: z[n] for n in ("idx", "logp", "rest")}
        else:
            top = D.teacher_topk(teacher, seqs, k=k, temperature=kd.temperature,
                                 batch=kd.batch_size, device=dev, progress=progress)  # fmt: skip
            D.save_npz(tpath, **top)
        dataset = D.Dataset(seqs, top, seed=seed, corpus=len(corpus), generated=n_gen)
    del teacher
    if dev.startswith("cuda"):
        torch.cuda.empty_cache()

    # 3. healing
    if dataset is not None:
        meta = {"teacher": thash, "data": tkey, "recipe": r.to_dict(), "steps": n_steps,
                "seed": seed, "plan": plan.__dict__, "dtype": dtype}  # fmt: skip
        result_train = K.train(student, dataset, kd=kd, steps=n_steps, device=dev, dtype=dtype,
                               checkpoint=work / "checkpoint.pt", meta=meta, resume=resume,
                               progress=progress, on_step=on_step, seed=seed)  # fmt: skip

    # 4. save: temporary folder, then rename into place
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent))
    try:
        student = student.to("cpu")
        student.save_pretrained(tmp, safe_serialization=True)
        for name in TOKENIZER_FILES:
            if (teacher_dir / name).is_file():
                shutil.copy2(teacher_dir / name, tmp / name)
        losses = result_train["losses"] if result_train else []
        result = DistillResult(
            path=out, architecture=config["architectures"][0], teacher_layers=n_layers,
            kept_layers=plan.keep_layers, block_influence=bi,
            config={k: plan.config.get(k) for k in ("num_hidden_layers", "intermediate_size",
                                                    "num_attention_heads", "num_key_value_heads")},
            params_teacher=params_teacher, params_student=sum(p.numel() for p in student.parameters()),
            steps=n_steps, tokens=n_steps * per_step * L,
            corpus_sequences=min(len(corpus), need) if n_steps else len(corpus), generated_sequences=n_gen,
            loss_first=losses[0] if losses else None, loss_last=losses[-1] if losses else None,
            tokens_per_s=result_train["tokens_per_s"] if result_train else 0.0,
            seconds=0.0, device=dev, cache=cache_name, losses=losses,
        )  # fmt: skip
        (tmp / "distill.json").write_text(json.dumps(
            {"teacher": str(teacher_dir.resolve()), "teacher_sha256": thash, "seed": seed,
             "recipe": r.to_dict(), "layers_arg": layers, **result.summary(), "losses": losses},
            indent=1, default=str))  # fmt: skip
        if out.is_dir():
            out.rmdir()  # empty (checked above)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    if gguf is not None:
        from convert import convert

        result.gguf = convert(out, gguf, type=type or "F16").path
    result.seconds = time.perf_counter() - t_start
    return result

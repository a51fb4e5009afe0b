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
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convert.distill import data as D
from convert.distill import domain as DM
from convert.distill import kd as K
from convert.distill import prune as P
from convert.distill import qat as Q
from convert.distill import ranks as R
from convert.distill.recipe import Recipe, load_recipe
from convert.errors import ConvertError
from convert.outputs import check_output
from edge_llm.fsutil import atomic_dir

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)


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
    quant: str | None = None  # quantization-aware: the --quant given
    tensor_types: dict | None = None  # quantization-aware: GGUF tensor -> type trained on
    domain: str | None = None  # a targeted student's domain
    domain_sequences: int = 0
    step_seconds: float | None = None  # --minutes: the measured optimizer step
    world_size: int = 1  # processes (torchrun)
    cache: str | None = None
    losses: list[float] = field(default_factory=list)
    packed: dict | None = None  # quantization-aware: the trained blocks, until written

    def summary(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k not in ("losses", "packed")}
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
        raise ConvertError(
            f"{teacher_dir} is not a folder; pass a Hugging Face model folder (edge-llm export-hf makes one from a GGUF)"
        )
    cfg_path = teacher_dir / "config.json"
    if not cfg_path.is_file():
        raise ConvertError(
            f"{teacher_dir} has no config.json; pass a Hugging Face model folder (edge-llm export-hf makes one from a GGUF)"
        )
    try:
        config = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:
        raise ConvertError(f"cannot read {cfg_path}: {e}; fix or re-export the teacher") from None
    P.check_architecture(config, str(teacher_dir))
    if not any(teacher_dir.glob("*.safetensors")):
        raise ConvertError(
            f"{teacher_dir} has no *.safetensors weights; save the teacher with safetensors"
        )
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
    minutes: float | None = None,
    device: str = "cpu",
    dtype: str = "auto",
    seed: int = 0,
    resume: bool = False,
    threads: int | None = None,
    progress=None,
    on_step=None,
    gguf: str | Path | None = None,
    type: str | None = None,
    quant: str | None = None,
    target_size: str | int | None = None,
    domain: str | None = None,
    force: bool = False,
    fsdp: bool = False,
) -> DistillResult:
    """Prune ``teacher_dir`` per the recipe (or ``layers``: keep that many decoder layers, by
    block influence) and heal the student by KD on ``tokens`` training tokens (None: the
    recipe's, 0 there: one pass over the texts), ``steps`` optimizer steps, or as many steps as
    ``minutes`` of training allow (the student's step is timed first). ``steps=0`` prunes
    without healing. Writes a Hugging Face folder at ``out_dir`` (and a GGUF at ``gguf``).

    ``quant``: train the matrices on a GGUF grid (a trainable ggml type such as Q4_0 or Q4_K, or
    a quantization recipe such as Q4_K_M; convert/distill/qat.py); the folder then holds the
    fake-quantized weights and ``gguf`` is packed from the trained grid (``type`` must be None).
    ``target_size`` (bytes or "90MB"), instead of ``quant``: the size budget's mix over the
    trainable types, measured on the pruned student, then trained (healed) on.

    ``domain``: a targeted student (convert/distill/domain.py): the texts' records tagged with
    this domain (or, when none are, the built-in corpus of that name) make up recipe
    domain.fraction of the training sequences, trained with domain.ce_weight of cross-entropy
    on their gold text.

    Under torchrun (WORLD_SIZE > 1) every rank runs this same call: DDP, one global batch; with
    ``fsdp``, the student is trained sharded across the ranks (FSDP) instead of replicated."""
    t_start = time.perf_counter()
    teacher_dir, out = Path(teacher_dir), Path(out_dir)
    config = _read_config(teacher_dir)
    r = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    kd = r.kd
    if layers is not None and (isinstance(layers, bool) or not isinstance(layers, int)):
        raise ConvertError(f"--layers {layers!r}: give a whole number of layers to keep")
    n_layers = int(config["num_hidden_layers"])
    if layers is not None and not 1 <= layers <= n_layers:
        raise ConvertError(
            f"--layers {layers}: the teacher has {n_layers} layers; keep between 1 and {n_layers}"
        )
    P.width_targets(config, r.prune)  # fail early on impossible widths
    if tokens is not None and tokens <= 0:
        raise ConvertError(
            f"--tokens {tokens}: give a positive number of training tokens (or --steps 0 to prune without healing)"
        )
    if steps is not None and steps < 0:
        raise ConvertError(f"--steps {steps}: give 0 (prune only) or more")
    if minutes is not None and (minutes <= 0 or tokens is not None or steps is not None):
        raise ConvertError(
            f"--minutes {minutes}: give a positive number of minutes, and not with --tokens or --steps"
        )
    inputs = [teacher_dir, *(texts or []), *([recipe] if isinstance(recipe, str | Path) else [])]
    inputs = [p for p in inputs if Path(p).exists()]
    check_output(out, inputs, force=force, folder=True)
    if gguf is not None:
        check_output(gguf, [*inputs, out], force=force)  # the student folder is its source
    if quant is not None and target_size is not None:
        raise ConvertError(
            "give --quant or --target-size, not both: the size budget chooses the types itself"
        )
    if target_size is not None:
        from convert import budget as B

        B.parse_size(target_size)  # a bad size fails before anything is loaded
        if gguf is not None and type is not None:
            raise ConvertError(
                "--type applies without --quant; with --target-size the GGUF holds the trained grid's types"
            )
    if quant is not None:
        Q.check_quant(quant)
        if gguf is not None and type is not None:
            raise ConvertError(
                "--type applies without --quant; with --quant the GGUF holds the trained grid's types"
            )
    tagged = DM.read_tagged(texts if texts else D.default_texts())
    if (
        domain is not None
        and domain not in DM.BUILTIN
        and not any(d.domain == domain for d in tagged)
    ):
        raise ConvertError(
            f'--domain {domain}: no record of the texts is tagged "domain": "{domain}" and there is no built-in corpus of that name ({", ".join(DM.BUILTIN)})'
        )
    docs = [d.text for d in tagged if domain is None or d.domain != domain]
    dom_docs = [d.text for d in tagged if domain is not None and d.domain == domain]
    builtin = (
        [d.text for d in DM.builtin_documents(domain, 64, r.domain.seed)]
        if domain in DM.BUILTIN and not dom_docs
        else []
    )
    D.check_clean(docs + dom_docs + builtin, "the distillation corpus")

    import torch

    rank, size, device, own_pg = R.init_distributed(device)
    if kd.batch_size % size:
        raise ConvertError(
            f"kd.batch_size = {kd.batch_size} is the global micro-batch; {size} processes need a multiple of {size}"
        )
    try:
        if threads:
            torch.set_num_threads(threads)
        dev = _device(device)
        tok = D.load_tokenizer(teacher_dir)
        ids = D.tokenize(tok, docs) if docs else np.zeros(0, np.int64)
        L = kd.seq_len
        corpus = D.chunk(ids, L)
        if len(corpus) == 0 and domain is None:
            raise ConvertError(
                f"the text has {len(ids)} tokens, fewer than one sequence of kd.seq_len = {L}; give more text or a smaller seq_len"
            )
        per_step = kd.batch_size * kd.grad_accum
        work = _work_dir(out)
        if rank == 0:
            if not resume and work.exists():
                shutil.rmtree(work)
            work.mkdir(parents=True, exist_ok=True)
        R.barrier(size)

        from transformers import AutoModelForCausalLM

        torch.manual_seed(seed)
        try:
            teacher = AutoModelForCausalLM.from_pretrained(str(teacher_dir), dtype=torch.float32)
        except Exception as e:  # noqa: BLE001
            raise ConvertError(
                f"transformers cannot load the teacher {teacher_dir}: {str(e).splitlines()[0]}"
            ) from None
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
                getattr(r.prune, k) is not None
                for k in ("layers", "drop", "intermediate_size", "kv_heads")
            )
            imp = None
            bi = []
            if needs_imp:
                source = (
                    corpus
                    if len(corpus)
                    else D.chunk(
                        D.tokenize(
                            tok,
                            dom_docs
                            or [d.text for d in DM.builtin_documents(domain, 64, r.domain.seed)],
                        ),
                        L,
                    )
                )
                calib = source[: r.data.calibration_sequences]
                batches = [
                    torch.from_numpy(calib[b : b + kd.batch_size]).to(dev)
                    for b in range(0, len(calib), kd.batch_size)
                ]
                imp = P.measure(teacher, batches, progress=progress)
                bi = imp.block_influence
            plan = P.plan(config, r.prune, layers, imp)
            if rank == 0:
                plan_file.write_text(json.dumps({"plan": plan.__dict__, "block_influence": bi}))
        sharded = bool(fsdp and size > 1)  # FSDP: the student trains as shards; whole on the CPU
        student = P.build_student(teacher, plan, seed=seed).to("cpu" if sharded else dev)
        if kd.freeze_embeddings:
            for m in (student.get_input_embeddings(), student.get_output_embeddings()):
                for p in m.parameters():
                    p.requires_grad_(False)
        quants, qrec, gguf_types = {}, None, None
        if target_size is not None:
            bfile = work / "budget-recipe.toml"
            if resume and bfile.is_file():
                from convert import recipes as RC

                quant = RC.parse(bfile.read_text(), source=str(bfile))
            else:
                quant = Q.budget_recipe(
                    student,
                    teacher_dir,
                    target_size,
                    threads,
                    progress,
                    text="\n\n".join(docs + dom_docs) if texts else None,
                )
                if rank == 0:
                    bfile.write_text(quant.text)
        if quant is not None:
            hf_types, gguf_types, qrec = Q.plan_types(quant, plan.config, Q.matrix_shapes(student))
            quants = Q.attach(student, hf_types)

        # 2. the budget: tokens, steps, or minutes (the student's step timed; kept on resume)
        step_s = None
        budget_file = work / "budget.json"
        if minutes is not None:
            if resume and budget_file.is_file():
                step_s = json.loads(budget_file.read_text())["step_seconds"]
            else:
                step_s = K.step_seconds(
                    student,
                    kd=kd,
                    vocab=int(config["vocab_size"]),
                    device=dev,
                    dtype=dtype,
                    fsdp=sharded,
                )
                if rank == 0:
                    budget_file.write_text(json.dumps({"step_seconds": step_s}))
            n_steps = max(1, int(minutes * 60 / step_s))
        else:
            budget = tokens if tokens is not None else (kd.tokens or max(len(corpus), 1) * L)
            n_steps = steps if steps is not None else max(1, math.ceil(budget / (per_step * L)))
        need = n_steps * per_step  # sequences the training stream reads
        n_dom = (
            0
            if domain is None
            else (need if not len(corpus) else max(1, round(r.domain.fraction * need)))
        )
        n_general = need - n_dom
        n_gen = max(0, n_general - len(corpus)) if (r.data.generate and len(corpus)) else 0

        # 3. data: domain text, generated continuations and the teacher's top-k (cached)
        dataset, cache_name, result_train, tkey = None, None, None, None
        dom_seqs = np.zeros((0, L), np.int64)
        if n_steps > 0 and domain is not None:
            if dom_docs:
                dom_seqs = D.chunk(D.tokenize(tok, dom_docs), L)
            else:  # the built-in corpus, drawn until it fills its share
                n = max(24, n_dom * L // 32)
                while True:
                    dom_seqs = D.chunk(
                        D.tokenize(
                            tok, [d.text for d in DM.builtin_documents(domain, n, r.domain.seed)]
                        ),
                        L,
                    )
                    if len(dom_seqs) >= n_dom:
                        break
                    n *= 2
            if len(dom_seqs) == 0:
                raise ConvertError(
                    f"the {domain} text has fewer tokens than one sequence of kd.seq_len = {L}; give more or a smaller seq_len"
                )
            if len(dom_seqs) > n_dom:
                pick = np.random.default_rng([seed, 1 << 21]).permutation(len(dom_seqs))[:n_dom]
                dom_seqs = dom_seqs[np.sort(pick)]
        if n_steps > 0:
            k = min(kd.top_k, int(config["vocab_size"]) - 1)
            seqs = corpus
            if n_general < len(corpus):  # the teacher runs only on the sequences training reads
                pick = np.random.default_rng([seed, 1 << 20]).permutation(len(corpus))[:n_general]
                seqs = corpus[np.sort(pick)]
            if n_gen:
                prompts = np.stack(
                    [corpus[i % len(corpus), : r.data.prompt_tokens] for i in range(n_gen)]
                )
                gkey = D.digest(
                    "gen", thash, prompts, L, r.data.gen_temperature, seed, dev == "cpu"
                )
                gpath = D.store_dir() / f"gen-{gkey}.npz"
                if rank == 0 and not gpath.is_file():
                    gen = None
                    if dev == "cpu":  # llama.cpp samples many rows per batch, ~4x torch
                        gen = D.generate_llama(
                            teacher_dir,
                            prompts,
                            L,
                            temperature=r.data.gen_temperature,
                            seed=seed,
                            threads=threads,
                            progress=progress,
                        )
                    if gen is None:
                        gen = D.generate(
                            teacher,
                            prompts,
                            L,
                            temperature=r.data.gen_temperature,
                            seed=seed,
                            batch=max(kd.batch_size, 8),
                            device=dev,
                            progress=progress,
                        )
                    D.save_npz(gpath, seqs=gen)
                R.barrier(size)
                gen = np.load(gpath)["seqs"]
                seqs = np.concatenate([corpus, gen])
            n_general_seqs = len(seqs)
            if len(dom_seqs):
                seqs = np.concatenate([seqs, dom_seqs]) if len(seqs) else dom_seqs
            tkey = D.digest("topk", thash, seqs, k, kd.temperature)
            tpath = D.store_dir() / f"topk-{tkey}"
            cache_name = str(tpath)
            if not tpath.is_dir():
                R.teacher_topk_sharded(
                    teacher,
                    seqs,
                    tpath,
                    k=k,
                    kd=kd,
                    dev=dev,
                    rank=rank,
                    size=size,
                    progress=progress,
                )
            top = D.load_topk(tpath)
            alpha = None
            if domain is not None:
                alpha = np.full(len(seqs), kd.alpha, np.float32)
                alpha[n_general_seqs:] = r.domain.ce_weight
            dataset = D.Dataset(
                seqs,
                top,
                seed=seed,
                corpus=min(len(corpus), n_general_seqs - n_gen),
                generated=n_gen,
                alpha=alpha,
            )
        del teacher
        if dev.startswith("cuda"):
            torch.cuda.empty_cache()

        # 4. healing
        if dataset is not None:
            meta = {
                "teacher": thash,
                "data": tkey,
                "recipe": r.to_dict(),
                "steps": n_steps,
                "seed": seed,
                "plan": plan.__dict__,
                "dtype": dtype,
                "quant": gguf_types,
                "domain": domain,
                "world": size,
                "fsdp": sharded,
            }
            result_train = K.train(
                student,
                dataset,
                kd=kd,
                steps=n_steps,
                device=dev,
                dtype=dtype,
                checkpoint=work / "checkpoint.pt",
                meta=meta,
                resume=resume,
                progress=progress,
                on_step=on_step,
                seed=seed,
                fsdp=fsdp,
            )

        # 5. save (rank 0): temporary folder, then rename into place
        losses = result_train["losses"] if result_train else []
        result = DistillResult(
            path=out,
            architecture=config["architectures"][0],
            teacher_layers=n_layers,
            kept_layers=plan.keep_layers,
            block_influence=bi,
            config={
                k: plan.config.get(k)
                for k in (
                    "num_hidden_layers",
                    "intermediate_size",
                    "num_attention_heads",
                    "num_key_value_heads",
                )
            },
            params_teacher=params_teacher,
            params_student=0,
            steps=n_steps,
            tokens=n_steps * per_step * L,
            corpus_sequences=dataset.corpus if dataset is not None else len(corpus),
            generated_sequences=n_gen,
            domain_sequences=len(dom_seqs),
            domain=domain,
            loss_first=losses[0] if losses else None,
            loss_last=losses[-1] if losses else None,
            tokens_per_s=result_train["tokens_per_s"] if result_train else 0.0,
            seconds=0.0,
            device=dev,
            cache=cache_name,
            losses=losses,
            quant=quant if isinstance(quant, str) or quant is None else quant.name,
            tensor_types=gguf_types,
            step_seconds=step_s,
            world_size=size,
        )
        if rank == 0:
            _save(student, quants, result, out, teacher_dir, layers, seed, r, thash, force)
            shutil.rmtree(work, ignore_errors=True)
            if gguf is not None and result.packed is not None:
                result.gguf = Q.write_gguf(out, result.packed, Path(gguf), qrec)
            elif gguf is not None:
                from convert import convert

                result.gguf = convert(out, gguf, type=type or "F16", force=force).path
        result.packed = None
        R.barrier(size)
    finally:
        if own_pg:
            import torch.distributed as dist

            dist.destroy_process_group()
    result.seconds = time.perf_counter() - t_start
    return result


def _save(
    student,
    quants,
    result,
    out: Path,
    teacher_dir: Path,
    layers,
    seed,
    r,
    thash,
    force: bool = False,
) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out, replace=force) as tmp:  # a PID-named temporary, renamed into place
        student = student.to("cpu")
        if quants:
            result.packed = Q.blocks(student, quants)
            Q.detach(student)
        result.params_student = sum(p.numel() for p in student.parameters())
        student.save_pretrained(tmp, safe_serialization=True)
        for name in TOKENIZER_FILES:
            if (teacher_dir / name).is_file():
                shutil.copy2(teacher_dir / name, tmp / name)
        (tmp / "distill.json").write_text(
            json.dumps(
                {
                    "teacher": str(teacher_dir.resolve()),
                    "teacher_sha256": thash,
                    "seed": seed,
                    "recipe": r.to_dict(),
                    "layers_arg": layers,
                    **result.summary(),
                    "losses": result.losses,
                },
                indent=1,
                default=str,
            )
        )

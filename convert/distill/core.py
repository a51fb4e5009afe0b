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


@dataclass
class _Run:
    """One distill() call's settings that every step reads, and this process's place among the
    ranks (torchrun; set once the process group is up)."""

    teacher_dir: Path
    out: Path
    config: dict
    r: Recipe
    layers: int | None
    dtype: str
    seed: int
    resume: bool
    threads: int | None
    progress: object
    on_step: object
    gguf: str | Path | None
    type: str | None
    domain: str | None
    force: bool
    fsdp: bool
    rank: int = 0
    size: int = 1
    dev: str = "cpu"

    @property
    def kd(self):
        return self.r.kd

    @property
    def seq_len(self) -> int:
        return self.r.kd.seq_len

    @property
    def per_step(self) -> int:  # sequences per optimizer step
        return self.r.kd.batch_size * self.r.kd.grad_accum

    @property
    def work(self) -> Path:
        return _work_dir(self.out)

    @property
    def sharded(self) -> bool:  # FSDP: the student trains as shards; whole on the CPU
        return bool(self.fsdp and self.size > 1)


@dataclass
class _Data:
    """The training stream (None: nothing to train) and what the result reports of it."""

    dataset: object | None
    corpus: int
    generated: int
    domain: int
    cache: str | None = None
    key: str | None = None


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
    _check_budget(config, r, layers, tokens, steps, minutes)
    _check_outputs(teacher_dir, out, gguf, texts, recipe, force)
    _check_quant(quant, target_size, gguf, type)
    docs, dom_docs = _read_texts(texts, domain, r)
    run = _Run(
        teacher_dir=teacher_dir,
        out=out,
        config=config,
        r=r,
        layers=layers,
        dtype=dtype,
        seed=seed,
        resume=resume,
        threads=threads,
        progress=progress,
        on_step=on_step,
        gguf=gguf,
        type=type,
        domain=domain,
        force=force,
        fsdp=fsdp,
    )

    import torch

    run.rank, run.size, device, own_pg = R.init_distributed(device)
    _check_world(r, run.size)
    try:
        if threads:
            torch.set_num_threads(threads)
        run.dev = _device(device)
        result = _pipeline(run, docs, dom_docs, texts, tokens, steps, minutes, quant, target_size)
    finally:
        if own_pg:
            import torch.distributed as dist

            dist.destroy_process_group()
    result.seconds = time.perf_counter() - t_start
    return result


def _pipeline(run: _Run, docs, dom_docs, texts, tokens, steps, minutes, quant, target_size):
    """Every rank's steps: load, plan, build, budget, data, heal; rank 0 saves."""
    import torch

    tok = D.load_tokenizer(run.teacher_dir)
    corpus = _corpus(run, tok, docs)
    _prepare_work(run)
    teacher = _load_teacher(run)
    params_teacher = sum(p.numel() for p in teacher.parameters())
    thash = D.teacher_hash(run.teacher_dir)
    # 1. importance and the plan (kept on resume)
    plan, bi = _plan(run, teacher, tok, corpus, dom_docs)
    student = _build_student(run, teacher, plan)
    text = docs + dom_docs if texts else None
    quant, quants, qrec, gguf_types = _quant_plan(run, student, plan, quant, target_size, text)
    # 2. the budget: tokens, steps, or minutes (the student's step timed; kept on resume)
    n_steps, step_s = _n_steps(run, student, corpus, tokens, steps, minutes)
    # 3. data: domain text, generated continuations and the teacher's top-k (cached)
    data = _data(run, teacher, tok, thash, corpus, dom_docs, n_steps)
    del teacher
    if run.dev.startswith("cuda"):
        torch.cuda.empty_cache()
    # 4. healing
    trained = _heal(run, student, data, plan, thash, n_steps, gguf_types)
    # 5. save (rank 0): temporary folder, then rename into place
    result = _result(
        run, plan, bi, params_teacher, n_steps, data, trained, quant, gguf_types, step_s
    )
    if run.rank == 0:
        _write(run, student, quants, result, thash, qrec)
    result.packed = None
    R.barrier(run.size)
    return result


def _check_budget(config, r, layers, tokens, steps, minutes) -> None:
    """--layers, the recipe's widths and the training budget, before anything is loaded."""
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


def _check_outputs(teacher_dir: Path, out: Path, gguf, texts, recipe, force: bool) -> None:
    inputs = [teacher_dir, *(texts or []), *([recipe] if isinstance(recipe, str | Path) else [])]
    inputs = [p for p in inputs if Path(p).exists()]
    check_output(out, inputs, force=force, folder=True)
    if gguf is not None:
        check_output(gguf, [*inputs, out], force=force)  # the student folder is its source


def _check_quant(quant, target_size, gguf, type) -> None:
    if quant is not None and target_size is not None:
        raise ConvertError(
            "give --quant or --target-size, not both: the size budget chooses the types itself"
        )
    if target_size is not None:
        from convert.quant import budget as B

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


def _read_texts(texts, domain, r) -> tuple[list[str], list[str]]:
    """The general documents and the domain's own (tagged) documents of the texts."""
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
    return docs, dom_docs


def _check_world(r, size: int) -> None:
    if r.kd.batch_size % size:
        raise ConvertError(
            f"kd.batch_size = {r.kd.batch_size} is the global micro-batch; {size} processes need a multiple of {size}"
        )


def _corpus(run: _Run, tok, docs: list[str]):
    ids = D.tokenize(tok, docs) if docs else np.zeros(0, np.int64)
    corpus = D.chunk(ids, run.seq_len)
    if len(corpus) == 0 and run.domain is None:
        raise ConvertError(
            f"the text has {len(ids)} tokens, fewer than one sequence of kd.seq_len = {run.seq_len}; give more text or a smaller seq_len"
        )
    return corpus


def _prepare_work(run: _Run) -> None:
    """A fresh work folder (kept on resume), made by rank 0 before the others go on."""
    if run.rank == 0:
        if not run.resume and run.work.exists():
            shutil.rmtree(run.work)
        run.work.mkdir(parents=True, exist_ok=True)
    R.barrier(run.size)


def _load_teacher(run: _Run):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(run.seed)
    try:
        teacher = AutoModelForCausalLM.from_pretrained(str(run.teacher_dir), dtype=torch.float32)
    except Exception as e:  # noqa: BLE001
        raise ConvertError(
            f"transformers cannot load the teacher {run.teacher_dir}: {str(e).splitlines()[0]}"
        ) from None
    return teacher.to(run.dev).eval()


def _plan(run: _Run, teacher, tok, corpus, dom_docs):
    """The pruning plan and the block influence it used: measured, or the saved one on resume."""
    plan_file = run.work / "plan.json"
    if run.resume and plan_file.is_file():
        saved = json.loads(plan_file.read_text())
        return P.Plan(**saved["plan"]), saved["block_influence"]
    layers = run.layers
    needs_imp = (layers is not None and layers < int(run.config["num_hidden_layers"])) or any(
        getattr(run.r.prune, k) is not None
        for k in ("layers", "drop", "intermediate_size", "kv_heads")
    )
    imp = None
    bi = []
    if needs_imp:
        imp = _importance(run, teacher, tok, corpus, dom_docs)
        bi = imp.block_influence
    plan = P.plan(run.config, run.r.prune, layers, imp)
    if run.rank == 0:
        plan_file.write_text(json.dumps({"plan": plan.__dict__, "block_influence": bi}))
    return plan, bi


def _importance(run: _Run, teacher, tok, corpus, dom_docs):
    """The teacher's importance measured on the calibration sequences (the domain's text when
    there is no general corpus)."""
    import torch

    kd = run.kd
    source = (
        corpus
        if len(corpus)
        else D.chunk(
            D.tokenize(
                tok,
                dom_docs
                or [d.text for d in DM.builtin_documents(run.domain, 64, run.r.domain.seed)],
            ),
            run.seq_len,
        )
    )
    calib = source[: run.r.data.calibration_sequences]
    batches = [
        torch.from_numpy(calib[b : b + kd.batch_size]).to(run.dev)
        for b in range(0, len(calib), kd.batch_size)
    ]
    return P.measure(teacher, batches, progress=run.progress)


def _build_student(run: _Run, teacher, plan):
    student = P.build_student(teacher, plan, seed=run.seed).to("cpu" if run.sharded else run.dev)
    if run.kd.freeze_embeddings:
        for m in (student.get_input_embeddings(), student.get_output_embeddings()):
            for p in m.parameters():
                p.requires_grad_(False)
    return student


def _quant_plan(run: _Run, student, plan, quant, target_size, docs):
    """Quantization-aware training: the grid (``quant``, or the size budget's recipe for
    ``target_size``, kept on resume) attached to the student. Returns (quant, the attached
    quantizers, the quantization recipe, GGUF tensor -> type)."""
    quants, qrec, gguf_types = {}, None, None
    if target_size is not None:
        bfile = run.work / "budget-recipe.toml"
        if run.resume and bfile.is_file():
            from convert.quant import recipes as RC

            quant = RC.parse(bfile.read_text(), source=str(bfile))
        else:
            quant = Q.budget_recipe(
                student,
                run.teacher_dir,
                target_size,
                run.threads,
                run.progress,
                text="\n\n".join(docs) if docs is not None else None,
            )
            if run.rank == 0:
                bfile.write_text(quant.text)
    if quant is not None:
        hf_types, gguf_types, qrec = Q.plan_types(quant, plan.config, Q.matrix_shapes(student))
        quants = Q.attach(student, hf_types)
    return quant, quants, qrec, gguf_types


def _n_steps(run: _Run, student, corpus, tokens, steps, minutes):
    """Optimizer steps from tokens, steps or minutes; returns (steps, the measured step's
    seconds for minutes, else None)."""
    if minutes is None:
        if steps is not None:
            return steps, None
        kd, L = run.kd, run.seq_len
        budget = tokens if tokens is not None else (kd.tokens or max(len(corpus), 1) * L)
        return max(1, math.ceil(budget / (run.per_step * L))), None
    budget_file = run.work / "budget.json"
    if run.resume and budget_file.is_file():
        step_s = json.loads(budget_file.read_text())["step_seconds"]
    else:
        step_s = K.step_seconds(
            student,
            kd=run.kd,
            vocab=int(run.config["vocab_size"]),
            device=run.dev,
            dtype=run.dtype,
            fsdp=run.sharded,
        )
        if run.rank == 0:
            budget_file.write_text(json.dumps({"step_seconds": step_s}))
    return max(1, int(minutes * 60 / step_s)), step_s


def _data(run: _Run, teacher, tok, thash, corpus, dom_docs, n_steps: int) -> _Data:
    """The sequences training reads (general, generated, domain) and the teacher's top-k."""
    need = n_steps * run.per_step  # sequences the training stream reads
    n_dom = (
        0
        if run.domain is None
        else (need if not len(corpus) else max(1, round(run.r.domain.fraction * need)))
    )
    n_general = need - n_dom
    n_gen = max(0, n_general - len(corpus)) if (run.r.data.generate and len(corpus)) else 0
    dom_seqs = np.zeros((0, run.seq_len), np.int64)
    if n_steps > 0 and run.domain is not None:
        dom_seqs = _domain_sequences(run, tok, dom_docs, n_dom)
    if n_steps <= 0:
        return _Data(None, len(corpus), n_gen, len(dom_seqs))
    k = min(run.kd.top_k, int(run.config["vocab_size"]) - 1)
    seqs = corpus
    if n_general < len(corpus):  # the teacher runs only on the sequences training reads
        pick = np.random.default_rng([run.seed, 1 << 20]).permutation(len(corpus))[:n_general]
        seqs = corpus[np.sort(pick)]
    if n_gen:
        seqs = np.concatenate([corpus, _generated(run, teacher, thash, corpus, n_gen)])
    n_general_seqs = len(seqs)
    if len(dom_seqs):
        seqs = np.concatenate([seqs, dom_seqs]) if len(seqs) else dom_seqs
    tkey = D.digest("topk", thash, seqs, k, run.kd.temperature)
    tpath = D.store_dir() / f"topk-{tkey}"
    if not tpath.is_dir():
        R.teacher_topk_sharded(
            teacher,
            seqs,
            tpath,
            k=k,
            kd=run.kd,
            dev=run.dev,
            rank=run.rank,
            size=run.size,
            progress=run.progress,
        )
    top = D.load_topk(tpath)
    alpha = None
    if run.domain is not None:
        alpha = np.full(len(seqs), run.kd.alpha, np.float32)
        alpha[n_general_seqs:] = run.r.domain.ce_weight
    dataset = D.Dataset(
        seqs,
        top,
        seed=run.seed,
        corpus=min(len(corpus), n_general_seqs - n_gen),
        generated=n_gen,
        alpha=alpha,
    )
    return _Data(dataset, dataset.corpus, n_gen, len(dom_seqs), str(tpath), tkey)


def _domain_sequences(run: _Run, tok, dom_docs, n_dom: int):
    """The domain's share: its tagged text, or the built-in corpus drawn until it fills it."""
    L = run.seq_len
    if dom_docs:
        dom_seqs = D.chunk(D.tokenize(tok, dom_docs), L)
    else:  # the built-in corpus, drawn until it fills its share
        n = max(24, n_dom * L // 32)
        while True:
            dom_seqs = D.chunk(
                D.tokenize(
                    tok, [d.text for d in DM.builtin_documents(run.domain, n, run.r.domain.seed)]
                ),
                L,
            )
            if len(dom_seqs) >= n_dom:
                break
            n *= 2
    if len(dom_seqs) == 0:
        raise ConvertError(
            f"the {run.domain} text has fewer tokens than one sequence of kd.seq_len = {L}; give more or a smaller seq_len"
        )
    if len(dom_seqs) > n_dom:
        pick = np.random.default_rng([run.seed, 1 << 21]).permutation(len(dom_seqs))[:n_dom]
        dom_seqs = dom_seqs[np.sort(pick)]
    return dom_seqs


def _generated(run: _Run, teacher, thash, corpus, n_gen: int):
    """The teacher's continuations of corpus prompts: made by rank 0 (llama.cpp on the CPU,
    else torch), cached, read by every rank."""
    r, L = run.r, run.seq_len
    prompts = np.stack([corpus[i % len(corpus), : r.data.prompt_tokens] for i in range(n_gen)])
    gkey = D.digest("gen", thash, prompts, L, r.data.gen_temperature, run.seed, run.dev == "cpu")
    gpath = D.store_dir() / f"gen-{gkey}.npz"
    if run.rank == 0 and not gpath.is_file():
        gen = None
        if run.dev == "cpu":  # llama.cpp samples many rows per batch, ~4x torch
            gen = D.generate_llama(
                run.teacher_dir,
                prompts,
                L,
                temperature=r.data.gen_temperature,
                seed=run.seed,
                threads=run.threads,
                progress=run.progress,
            )
        if gen is None:
            gen = D.generate(
                teacher,
                prompts,
                L,
                temperature=r.data.gen_temperature,
                seed=run.seed,
                batch=max(run.kd.batch_size, 8),
                device=run.dev,
                progress=run.progress,
            )
        D.save_npz(gpath, seqs=gen)
    R.barrier(run.size)
    return np.load(gpath)["seqs"]


def _heal(run: _Run, student, data: _Data, plan, thash, n_steps: int, gguf_types):
    """KD training of the student (checkpointed in the work folder); None when there is no data."""
    if data.dataset is None:
        return None
    meta = {
        "teacher": thash,
        "data": data.key,
        "recipe": run.r.to_dict(),
        "steps": n_steps,
        "seed": run.seed,
        "plan": plan.__dict__,
        "dtype": run.dtype,
        "quant": gguf_types,
        "domain": run.domain,
        "world": run.size,
        "fsdp": run.sharded,
    }
    return K.train(
        student,
        data.dataset,
        kd=run.kd,
        steps=n_steps,
        device=run.dev,
        dtype=run.dtype,
        checkpoint=run.work / "checkpoint.pt",
        meta=meta,
        resume=run.resume,
        progress=run.progress,
        on_step=run.on_step,
        seed=run.seed,
        fsdp=run.fsdp,
    )


def _result(
    run: _Run, plan, bi, params_teacher, n_steps, data: _Data, trained, quant, gguf_types, step_s
) -> DistillResult:
    losses = trained["losses"] if trained else []
    return DistillResult(
        path=run.out,
        architecture=run.config["architectures"][0],
        teacher_layers=int(run.config["num_hidden_layers"]),
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
        tokens=n_steps * run.per_step * run.seq_len,
        corpus_sequences=data.corpus,
        generated_sequences=data.generated,
        domain_sequences=data.domain,
        domain=run.domain,
        loss_first=losses[0] if losses else None,
        loss_last=losses[-1] if losses else None,
        tokens_per_s=trained["tokens_per_s"] if trained else 0.0,
        seconds=0.0,
        device=run.dev,
        cache=data.cache,
        losses=losses,
        quant=quant if isinstance(quant, str) or quant is None else quant.name,
        tensor_types=gguf_types,
        step_seconds=step_s,
        world_size=run.size,
    )


def _write(run: _Run, student, quants, result, thash, qrec) -> None:
    """Rank 0: the student folder (then the work folder goes), and the GGUF when asked."""
    out, gguf = run.out, run.gguf
    _save(
        student, quants, result, out, run.teacher_dir, run.layers, run.seed, run.r, thash, run.force
    )
    shutil.rmtree(run.work, ignore_errors=True)
    if gguf is not None and result.packed is not None:
        result.gguf = Q.write_gguf(out, result.packed, Path(gguf), qrec)
    elif gguf is not None:
        from convert import convert

        result.gguf = convert(out, gguf, type=run.type or "F16", force=run.force).path


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

"""Quantization-aware distillation: the student's matrices live on their GGUF grids while they
are trained, and the file is packed from the trained grid.

Why here and not in llama.cpp's quantizer: llama.cpp rounds a float model once; its K-quant
scale search is heuristic, so re-quantizing even on-grid weights is not guaranteed to land on
the same grid. So the GGUF is assembled from the trained codes: the student's Hugging Face
folder holds the fake-quantized values (what the torch model computed with), a plain F32
conversion of it gives the file's header and the float tensors, and each quantized matrix is
replaced by its packed ggml blocks (rows permuted exactly as the converter permutes them).

Which type each matrix gets: ``quant`` is a ggml type (every matrix at that type, the output
matrix at Q6_K as llama.cpp's file types do, each with llama.cpp's fallback where a block does
not divide the rows), or a quantization recipe (a preset such as Q4_K_M or a TOML file,
convert/quant/recipes.py), or the type table a size budget chose (``types``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from convert.distill import fakequant as FQ
from convert.errors import ConvertError
from convert.quant import recipes

FTYPE = {
    "Q8_0": "Q8_0",
    "Q4_0": "Q4_0",
    "Q4_1": "Q4_1",
    "Q5_0": "Q5_0",
    "Q5_1": "Q5_1",
    "Q4_K": "Q4_K_M",
    "Q5_K": "Q5_K_M",
    "Q6_K": "Q6_K",
}


def single_type_recipe(name: str) -> recipes.Recipe:
    """Every matrix at ``name``; the output matrix (the tied embedding) at Q6_K, as llama.cpp's
    file types of one type do (Q8_0 keeps it at Q8_0)."""
    lines = [f'name = "{name}"', f'default = "{name}"', f'file_type = "{FTYPE[name]}"']
    if name != "Q8_0":
        lines += [
            "[[rule]]",
            "tensor = '^output\\.weight$'",
            'type = "Q6_K"',
            "optional = true",
            "[[rule]]",
            "tensor = '^token_embd\\.weight$'",
            "tied = true",
            'type = "Q6_K"',
            "optional = true",
        ]
    return recipes.parse("\n".join(lines) + "\n", source=f"--quant {name}")


def check_quant(quant: str) -> None:
    """Fail early on a --quant that is neither a trainable type nor a recipe."""
    if str(quant).upper() in FQ.TRAINABLE:
        return
    try:
        recipes.load(quant)
    except ConvertError:
        raise ConvertError(
            f"--quant {quant}: give a type ({', '.join(FQ.TRAINABLE)}) or a quantization recipe "
            f"(a preset: {', '.join(recipes.presets())}, or a TOML file)"
        ) from None


def matrix_shapes(model) -> dict[str, tuple]:
    """HF name -> shape of every weight matrix the checkpoint stores (a tied output matrix is
    the embedding's)."""
    out_emb = model.get_output_embeddings()
    tied = out_emb is not None and out_emb.weight is model.get_input_embeddings().weight
    shapes = {}
    for name, mod in _modules(model).items():
        if tied and mod is out_emb:
            continue
        shapes[name] = tuple(mod.weight.shape)
    return shapes


def plan_types(quant, config: dict, state_shapes: dict[str, tuple]):
    """(HF tensor name -> type, GGUF name -> type, the recipe) for the student's matrices
    (``state_shapes``: HF name -> shape, without a tied output matrix). ``quant``: a type name,
    a recipe name or file, or a Recipe."""
    from convert import archs

    arch = archs.for_config(config)
    key = quant.upper() if isinstance(quant, str) else None
    if isinstance(quant, recipes.Recipe):
        rec = quant
        quant = rec.name
    elif key in FQ.TRAINABLE:
        rec = single_type_recipe(key)
    else:
        try:
            rec = recipes.load(quant)
        except ConvertError as e:
            raise ConvertError(
                f"--quant {quant}: not a trainable type ({', '.join(FQ.TRAINABLE)}) nor a recipe ({e})"
            ) from None
    names = {}
    for hf, shape in state_shapes.items():
        g = arch.gguf_name(hf)
        if g is not None:
            names[g] = (hf, shape)
    n_layer = int(config.get("num_hidden_layers") or 0)
    res = recipes.resolve(rec, [(g, s) for g, (_, s) in names.items()], n_layer)
    gguf_types = {}
    for g, t in res.types.items():
        if t not in FQ.TRAINABLE:
            raise ConvertError(
                f"--quant {quant} gives {g} type {t}, which quantization-aware training does not "
                f"support; use a recipe of {', '.join(FQ.TRAINABLE)}"
            )
        gguf_types[g] = t
    hf_types = {names[g][0]: t for g, t in gguf_types.items()}
    return hf_types, gguf_types, rec


def budget_recipe(
    student,
    teacher_dir: Path,
    target_size,
    threads: int | None,
    progress=None,
    text: str | None = None,
):
    """The size budget's mix for the (pruned, untrained) student restricted to the trainable
    types: convert/quant/budget.py's measured sensitivities and knapsack on an F32 conversion of the
    student with an importance matrix, as `convert --target-size` does, choosing among Q8_0,
    Q6_K, Q5_K, Q5_1, Q5_0, Q4_K, Q4_1, Q4_0 only. ``text``: what the importance and the
    sensitivities are measured on (the distillation text; default the calibration text).
    Returns a recipe."""
    import dataclasses
    import shutil

    from convert import convert
    from convert.quant import budget
    from convert.quant import quantize_job as qj
    from convert.quant.options import read_calibration

    target = budget.parse_size(target_size)
    with tempfile.TemporaryDirectory(prefix=".qat-budget-") as tmp:
        hf = Path(tmp) / "hf"
        student.save_pretrained(hf, safe_serialization=True)
        for p in teacher_dir.iterdir():
            if p.name.startswith(
                ("tokenizer", "special_tokens", "vocab", "merges", "added_tokens")
            ):
                shutil.copy2(p, hf / p.name)
        mid = Path(tmp) / "mid.gguf"
        convert(hf, mid, type="F32")
        if text is None:
            text, dataset = read_calibration()
        else:
            dataset = "distillation text"
        th = budget.threads_default(threads)
        im, extra = qj.importance("auto", mid, text, dataset, th, progress)
        sens = budget.analyze(mid, text, im, extra, False, threads, qj.stage(progress))
        keep = {
            n: {t: e for t, e in errs.items() if t in FQ.TRAINABLE}
            for n, errs in sens.errors.items()
        }
        empty = [n for n, e in keep.items() if not e]
        if empty:
            raise ConvertError(
                f"{empty[0]} has no trainable type its rows fit; quantization-aware training cannot give it a type"
            )
        trainable = dataclasses.replace(sens, errors=keep)
        data = target - sens.fixed_bytes - qj.header_bytes(mid)
        try:
            types = budget.allocate(trainable, data)
        except ValueError:
            need = budget.minimum_bytes(trainable) + sens.fixed_bytes + qj.header_bytes(mid)
            raise ConvertError(
                f"--target-size {target_size}: below the smallest trainable mix of this student "
                f"({need / 1e6:.1f} MB, every matrix at Q4_0 or smaller); raise it"
            ) from None
    label = f"{target / 1e6:.1f}MB"
    return recipes.explicit(
        f"qat-budget-{label}",
        types,
        f"size budget {label} over the trainable types: predicted mean KLD "
        f"{trainable.predict(types):.4g} before training",
    )


def _modules(model):
    """HF parameter name -> module for every weight matrix. A parametrized weight is looked at
    through its stored original: reading ``mod.weight`` would run the fake quantization."""
    from torch.nn.utils import parametrize

    out = {}
    for mname, mod in model.named_modules():
        if mod is model:
            continue
        if parametrize.is_parametrized(mod, "weight"):
            w = mod.parametrizations.weight.original
        else:
            w = mod._parameters.get("weight") if hasattr(mod, "_parameters") else None
        if w is not None and getattr(w, "ndim", 0) == 2:
            out[f"{mname}.weight"] = mod
    return out


def attach(model, hf_types: dict[str, str]) -> dict:
    """Register a fake-quantization parametrization on every typed weight; a tied output
    matrix shares its embedding's. Returns HF name -> quantizer module."""
    from torch.nn.utils import parametrize

    mods = _modules(model)
    tied = model.get_output_embeddings() is not None and (
        model.get_output_embeddings().weight is model.get_input_embeddings().weight
    )
    quants = {}
    for name, t in hf_types.items():
        mod = mods.get(name)
        if mod is None:
            raise ConvertError(f"internal: the student has no weight {name}; please report it")
        q = FQ.quantizer(mod.weight, t)
        parametrize.register_parametrization(mod, "weight", q, unsafe=True)
        quants[name] = q
    if tied:
        emb, out = model.get_input_embeddings(), model.get_output_embeddings()
        ename = next(n for n, m in mods.items() if m is emb)
        if ename in quants:  # the same Parameter underneath, the same grid
            parametrize.register_parametrization(out, "weight", quants[ename], unsafe=True)
    return quants


def latent(model, name: str):
    mod = _modules(model)[name]
    return mod.parametrizations.weight.original


def blocks(model, quants: dict) -> dict[str, tuple[str, np.ndarray]]:
    """HF name -> (type, packed ggml blocks [rows, row_bytes]) of the trained grid."""
    mods = _modules(model)
    out = {}
    for name, q in quants.items():
        w = mods[name].parametrizations.weight.original
        out[name] = (q.name, FQ.pack(q.codes(w), q.name))
    return out


def detach(model) -> None:
    """Replace every parametrization by its value: the weights become the fake-quantized ones.
    (Values first, then removal: a tied matrix's parametrizations share one Parameter.)"""
    import torch
    from torch.nn.utils import parametrize

    mods = [m for m in _modules(model).values() if parametrize.is_parametrized(m, "weight")]
    values = [m.weight.detach().clone() for m in mods]
    for m in mods:
        parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
    with torch.no_grad():
        for m, v in zip(mods, values):
            m.weight.copy_(v)


def _row_permutation(fn, rows: int, config: dict) -> np.ndarray:
    """The converter's transform of a weight as a row permutation (it must be one)."""
    idx = np.arange(rows, dtype=np.float32)[:, None]
    got = np.asarray(fn(idx, config))[:, 0].astype(np.int64)
    if sorted(got.tolist()) != list(range(rows)):
        raise ConvertError(
            "internal: the converter's transform is not a row permutation; please report it"
        )
    return got


def write_gguf(hf_dir: Path, packed: dict[str, tuple[str, np.ndarray]], out: Path, rec) -> Path:
    """The GGUF of the student in ``hf_dir`` (fake-quantized values) with each matrix in
    ``packed`` as its trained ggml blocks."""
    import gguf

    from convert import archs, convert, gguf_edit
    from convert.checkpoint import Checkpoint
    from edge_llm.fsutil import atomic_path

    ck = Checkpoint(hf_dir)
    config = ck.config
    ck.close()
    arch = archs.for_config(config)
    out = Path(out).absolute()
    types = {}
    with tempfile.TemporaryDirectory(prefix=".qat-", dir=out.parent) as tmp:
        base = Path(tmp) / "base.gguf"
        convert(hf_dir, base, type="F32")
        side = Path(tmp) / "blocks.gguf"
        w = gguf.GGUFWriter(side, arch.gguf_arch)
        for hf, (t, raw) in packed.items():
            g = arch.gguf_name(hf)
            fn = arch.transform_for(g)
            if fn is not None:
                raw = raw[_row_permutation(fn, raw.shape[0], config)]
            qt = gguf.GGMLQuantizationType[t]
            w.add_tensor(g, np.ascontiguousarray(raw), raw_dtype=qt)
            types[g] = t
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        values = {
            **recipes.metadata(rec, types),
            "edge_llm.qat": True,
            "general.file_type": rec.ftype,
        }
        with atomic_path(out) as dst:
            gguf_edit.assemble(dst, base, {g: side for g in types}, values)
    return out

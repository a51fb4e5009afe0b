"""GGUF to GGUF: requantize a file with llama.cpp's quantizer, with the same choices as a checkpoint.

People hold GGUFs, not only checkpoints: an F16 file from a model hub, or a Q8_0 they want
smaller for a tablet. ``convert(FILE.gguf, OUT, type=...)`` lands here. The source GGUF plays
the part that the intermediate file plays for a checkpoint (convert.hf_to_gguf.convert):
llama.cpp's ``llama_model_quantize`` reads it directly, with ``--imatrix`` (a file, or ``auto``:
collected on the source itself), a recipe, or a size budget (its sensitivity probes need
unquantized weights, so a budget needs an F32/F16/BF16 source). A source that is already quantized is requantized
only with a warning: its rounding errors add to the new ones (llama.cpp's ``--allow-requantize``).
"""

from __future__ import annotations

import time
from pathlib import Path

from convert.errors import ConvertError
from convert.quant import quantize, recipes
from convert.quant import quantize_job as qj
from convert.quant.options import QuantOptions
from convert.write import Progress, check_target
from edge_llm.fsutil import atomic_path, work_dir

UNQUANTIZED = ("F32", "F16", "BF16")


def is_gguf(path: str | Path) -> bool:
    p = Path(path)
    if not p.is_file():
        return False
    with p.open("rb") as f:
        return f.read(4) == b"GGUF"


def requantize(
    src: str | Path,
    out: str | Path,
    quant: QuantOptions | None = None,
    *,
    progress: Progress | None = None,
    threads: int | None = None,
    force: bool = False,
    **choices,
) -> qj.Result:
    """Quantize the GGUF ``src`` to ``out`` as ``quant`` says (`QuantOptions`, or its fields as
    keywords; see hf_to_gguf.convert for the rest)."""
    quant = QuantOptions.of(quant, **choices)
    start = time.perf_counter()
    src = Path(src).absolute()
    out = Path(out).absolute()
    choice = qj.choose(src, out, quant, force)
    if choice.mode == "type":
        if quant.type is None:
            raise ConvertError("requantizing a GGUF needs --type (or --recipe, --target-size)")
        choice.out_type = quantize.resolve(quant.type, "F32")
        quantize.check_imatrix(choice.out_type, choice.imatrix)
    source, arch, warnings = _read_source(src, choice.mode)
    choice.read_text()
    bits = choice.out_type.bits if choice.out_type is not None else 8.5
    check_target(out, int(src.stat().st_size * min(1.0, bits / 8)) + (1 << 20))
    type_name = choice.out_type.name if choice.out_type else ""
    result = qj.Result(out, arch, type_name, len(source.shapes), 0, 0.0)
    with atomic_path(out) as tmp, work_dir(out) as scratch:
        qj.quantize_to(choice, source, tmp, scratch, result, threads, progress)
    result.warnings = warnings + list(result.warnings)
    result.bytes = out.stat().st_size
    result.seconds = time.perf_counter() - start
    return result


def _read_source(src: Path, mode: str) -> tuple[qj.Source, str, list[str]]:
    """The source GGUF's tensors and architecture, and the warning that its weights are already
    quantized (refused for a size budget, whose probes need unquantized weights)."""
    import gguf

    reader = gguf.GGUFReader(src)
    arch = str(reader.fields["general.architecture"].contents())
    field = reader.fields.get(f"{arch}.block_count")
    n_layer = int(field.contents()) if field is not None else 0
    shapes = [(t.name, tuple(int(x) for x in reversed(t.shape))) for t in reader.tensors]
    weight_types = {
        t.tensor_type.name
        for t in reader.tensors
        if recipes.quantizable(t.name, tuple(int(x) for x in reversed(t.shape)))
    }
    del reader
    quantized = sorted(weight_types - set(UNQUANTIZED))
    warnings = []
    if quantized:
        if mode == "budget":
            raise ConvertError(
                f"a size budget needs an unquantized source (F32, F16 or BF16); {src.name} holds "
                f"{', '.join(quantized)} weights"
            )
        warnings.append(
            f"{src.name} is already quantized ({', '.join(quantized)}); requantizing adds its "
            "rounding errors to the new ones (quantize from an F16/F32 file when you have one)"
        )
    return qj.Source(src, shapes, n_layer, quantized=bool(quantized)), arch, warnings

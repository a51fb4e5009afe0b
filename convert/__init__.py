"""edge-llm converter: Hugging Face checkpoints in, quantized GGUFs out, and back.

from convert import QuantOptions, convert
convert("path/to/hf-folder", "model.gguf", type="Q4_K_M")
convert("path/to/hf-folder", "model.gguf", QuantOptions(target_size="80MB"))

``convert``, ``Result`` and ``QuantOptions`` are loaded on first use, so that `edge-llm --help`
(which imports `convert.cli` to list its commands) does not import numpy, gguf and llama.cpp.
"""

from convert.errors import ConvertError

__all__ = ["ConvertError", "QuantOptions", "Result", "convert"]


def __getattr__(name: str):
    if name in ("convert", "Result"):
        from convert import hf_to_gguf

        return getattr(hf_to_gguf, name)
    if name == "QuantOptions":
        from convert.quant.options import QuantOptions

        return QuantOptions
    raise AttributeError(f"module 'convert' has no attribute {name!r}")

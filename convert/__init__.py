"""edge-llm converter: Hugging Face checkpoints in, quantized GGUFs out, and back.

from convert import convert
convert("path/to/hf-folder", "model.gguf", type="Q4_K_M")
"""

from convert.errors import ConvertError
from convert.hf_to_gguf import Result, convert

__all__ = ["ConvertError", "Result", "convert"]

"""edge-llm runtime: load a GGUF for a device, generate, stream and chat.

    import edge_llm
    m = edge_llm.load("smollm2-135m-instruct")          # a name, a .gguf path, or None
    print(m.generate("The capital of France is", max_tokens=16).text)
    for piece in m.stream("Tell me a story", max_tokens=64): print(piece, end="")
    reply = m.chat([{"role": "user", "content": "What is 12*7?"}])

This package never imports ``convert`` or ``bench``: an app embeds it alone.
"""

from edge_llm.errors import (
    ConfigError,
    EdgeLLMError,
    InvalidModelError,
    ModelNotFoundError,
    PromptError,
)
from edge_llm.model import Completion, Model, Stream, Timings, Usage, load
from edge_llm.sampling import SamplingParams

__version__ = "0.1.0"

__all__ = [
    "Completion",
    "ConfigError",
    "EdgeLLMError",
    "InvalidModelError",
    "Model",
    "ModelNotFoundError",
    "PromptError",
    "SamplingParams",
    "Stream",
    "Timings",
    "Usage",
    "load",
]

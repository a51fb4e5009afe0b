"""edge-llm runtime: load a GGUF for a device, generate, stream and chat.

    import edge_llm
    m = edge_llm.load("smollm2-135m-instruct")          # a name, a .gguf path, or None
    print(m.generate("The capital of France is", max_tokens=16).text)
    for piece in m.stream("Tell me a story", max_tokens=64): print(piece, end="")
    reply = m.chat([{"role": "user", "content": "What is 12*7?"}])
    c = edge_llm.Cascade(m, cloud=edge_llm.CloudConfig(URL, "model", api_key_env="KEY_VAR"))

This package never imports ``convert`` or ``bench``: an app embeds it alone. The model API is
imported on first use (``edge_llm.load``), so that importing the package, and `edge-llm --help`,
do not load numpy and llama.cpp.
"""

from edge_llm.errors import (
    ConfigError,
    EdgeLLMError,
    InvalidAdapterError,
    InvalidModelError,
    ModelNotFoundError,
    PromptError,
)

__version__ = "0.1.0"

__all__ = [
    "Cascade",
    "CloudConfig",
    "Completion",
    "ConfigError",
    "EdgeLLMError",
    "InvalidAdapterError",
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

_LAZY = {
    "Cascade": "cascade",
    "CloudConfig": "cascade",
    "Completion": "results",
    "Model": "model",
    "Stream": "results",
    "Timings": "results",
    "Usage": "results",
    "load": "model",
    "SamplingParams": "sampling",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"edge_llm.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'edge_llm' has no attribute {name!r}")

"""An OpenAI-compatible HTTP server over one loaded ``Model``: ``edge-llm serve``.

    app = create_app(edge_llm.load(), model_id="smollm2-135m-instruct", api_key=None)
    serve(model, host="127.0.0.1", port=8080, api_key=None, model_id="smollm2-135m-instruct")

The parts, in the order a request meets them: ``middleware`` (request log, API key, body size
and arrival limits), ``schemas`` (strict parsing and ranges), ``app`` (routes; ``echo``: prompt
log-probabilities and several prompts per completions request; ``tokens``: the tokenizer), ``formats``
(logprobs, JSON output, tool calls in OpenAI's shape), ``jobs`` (generations in worker threads,
one at a time, stopped when their client goes), ``errors`` (OpenAI's error shape) and ``run``
(uvicorn and shutdown).

Needs the ``serve`` extra: ``pip install 'edge-llm[serve]'`` (FastAPI and uvicorn).
"""

from edge_llm.server.app import MAX_BODY, create_app
from edge_llm.server.jobs import GenerationRecord
from edge_llm.server.run import _listen, serve, stop_generations, uvicorn_server

__all__ = [
    "MAX_BODY",
    "GenerationRecord",
    "_listen",
    "create_app",
    "serve",
    "stop_generations",
    "uvicorn_server",
]

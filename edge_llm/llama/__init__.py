"""The only code that talks to llama.cpp.

- `binding`: llama-cpp-python's raw C API plus one ctypes binding for what it does not wrap
  (libggml-base's ``gguf_*`` and ``ggml_*``), llama.cpp's log, tokenizing, quantizing a file;
- `backend`: a model with one generation context (what `edge_llm.model.Model` runs on);
- `scoring`: a model loaded for scoring (F32 KV cache, flash attention off): evaluate token
  batches, logits, log-softmax, top-k, shared prefixes scored once, an activation hook, chunks;
- `activations`: reading the tensors an evaluation callback sees;
- `threads`: the one policy that picks CPU threads from the host's load.

Nothing here runs at import: llama.cpp is initialised by the first call that needs it.
"""

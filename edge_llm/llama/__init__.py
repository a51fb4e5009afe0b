"""The only code that talks to llama.cpp.

- `binding`: llama-cpp-python's raw C API plus one ctypes binding for what it does not wrap
  (libggml-base's ``gguf_*`` and ``ggml_*``), llama.cpp's log, tokenizing, quantizing a file;
- `gguf`: GGUF headers read, checked and edited by llama.cpp's own parser (what
  `edge_llm.gguf_info` and convert/gguf_edit.py build on), and why llama.cpp refused a file;
- `quant`: ggml's quantizer and dequantizer on rows of floats (the converter's size budget,
  quantization-aware distillation), type sizes;
- `backend`: a model with one generation context (what `edge_llm.model.Model` runs on);
- `scoring`: a model loaded for scoring (F32 KV cache, flash attention off): evaluate token
  batches, logits, log-softmax, top-k, shared prefixes scored once, an activation hook, chunks;
- `activations`: reading the tensors an evaluation callback sees;
- `threads`: the one policy that picks CPU threads from the host's load.

Nothing here runs at import: llama.cpp is initialised by the first call that needs it.
"""

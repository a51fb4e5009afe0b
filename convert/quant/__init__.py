"""Quantization in one room: everything that decides and makes a GGUF's tensor types.

Why one package: a checkpoint (convert.hf_to_gguf) and a GGUF (`requantize`) end the same way,
through llama.cpp's quantizer with a type, a recipe or a size budget, and distillation's
quantization-aware training reuses the same tables and budget. Spread over the top of
`convert/`, the pieces repeated each other (two option lists, two imatrix checks, two dispatches,
three ways to find the calibration text); here each exists once:

- `options`: `QuantOptions` (what both conversion paths take) and the calibration text;
- `quantize_job`: the checked choice and the one dispatch (fixed mix, recipe, size budget),
  and the metadata stamped into the file; `requantize`: the GGUF front end;
- `quantize`: llama.cpp's file types; `ggml_types` (+ recipes/types.toml): the one tensor-type
  table; `recipes` (+ recipes/*.toml): per-tensor presets; `budget`: size budgets;
  `imatrix`: importance matrices; `ggml_quant`: ggml's quantize -> dequantize round trip.

The C calls live in edge_llm.llama (`binding.quantize_file`, `edge_llm.llama.quant`), the only
code that talks to llama.cpp. Nothing is imported here: `edge-llm --help` imports
`convert.quant.options` (light) through convert.cli.
"""

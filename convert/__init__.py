"""edge-llm converter: Hugging Face checkpoints in, quantized GGUFs out (see the converter issue)."""

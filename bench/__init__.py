"""edge-llm benchmarks: capability against inference compute (knowledge density)."""

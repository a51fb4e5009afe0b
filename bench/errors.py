"""The benchmark's user-fixable errors: one line saying what is wrong and what to do.

``BenchError`` is an ``edge_llm.EdgeLLMError``, so the CLI prints it as ``error: ...`` and exits 2.
"""

from __future__ import annotations

from edge_llm.errors import EdgeLLMError


class BenchError(EdgeLLMError):
    """A bad suite, results file, reference family or option."""

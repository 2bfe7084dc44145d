"""LLM judges for autointerp: in-process llama.cpp (offline default) or any OpenAI-compatible endpoint."""

from __future__ import annotations

from bench.judge.base import (
    Choice,
    Completion,
    Generate,
    Judge,
    JudgeConfig,
    JudgeUnavailable,
    Reply,
    RequestFailed,
    ResponseCache,
    Simulate,
    redact_url,
)
from bench.paths import cache_dir


def response_cache_path():
    return cache_dir() / "judge" / "responses.sqlite"


def make_judge(cfg: JudgeConfig) -> Judge:
    """Build the judge `cfg` names and check that it can be used (one-line `BenchError` if not)."""
    if cfg.base_url:
        from bench.judge.openai_endpoint import OpenAIEndpoint

        backend = OpenAIEndpoint(cfg)
    else:
        from bench.judge.llamacpp import LlamaCppBackend

        backend = LlamaCppBackend(cfg)
    backend.check()
    return Judge(backend, ResponseCache(response_cache_path() if cfg.cache else None))


__all__ = ["Choice", "Completion", "Generate", "Judge", "JudgeConfig", "JudgeUnavailable", "Reply", "RequestFailed",
           "ResponseCache", "Simulate", "make_judge", "redact_url", "response_cache_path"]

"""Automated interpretability (explain, then score with an LLM judge): see `task.py`."""

from tasks.autointerp.task import AutoInterp

__all__ = ["AutoInterp"]

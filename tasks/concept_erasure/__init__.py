"""Concept erasure by ablating a dictionary's features, against LEACE: see `task.py`."""

from tasks.concept_erasure.task import ConceptErasure

__all__ = ["ConceptErasure"]

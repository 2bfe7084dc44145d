"""Attribute disentanglement after RAVEL (cities: country and continent): see `task.py`."""

from tasks.disentanglement.task import Disentanglement

__all__ = ["Disentanglement"]

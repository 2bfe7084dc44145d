"""Indirect-object identification by activation patching through a dictionary: see `task.py`."""

from tasks.ioi.task import IOIPatching

__all__ = ["IOIPatching"]

"""Feature absorption on first letters (Chanin et al. 2024; SAEBench's absorption eval): see `task.py`."""

from tasks.absorption.task import Absorption

__all__ = ["Absorption"]

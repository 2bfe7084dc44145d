"""Small settings under which every registered method fits on the test store in seconds."""

from __future__ import annotations

import methods

SAE = {"epochs": 1.0, "batch_size": 256, "dict_ratio": 1.0}
FAST = {
    **{name: SAE for name in methods.REGISTRY if name.startswith("sae-")},
    "ica": {"max_iter": 5, "max_tokens": 1000},  # unconverged (recorded in fit_info), a valid dictionary all the same
    "random": {"dict_ratio": 1.5},
}
IN_ALL = [name for name, cls in methods.REGISTRY.items() if cls.in_all]  # what `--methods all` fits

"""`pretrained:<dir>`: a released SAE in SAELens' format, benchmarked like any trained method.

Nothing is trained: `fit` loads `<dir>/cfg.json` + `<dir>/sae_weights.safetensors` (see `methods.saelens_format`)
and checks it against the activations: the same width, and the same hook when the SAE records one. `preflight`
checks the rest (directory, config, the weights' header) before the run harvests anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError
from methods.base import Method, ProgressFn, TrainingData
from methods.sae import SAE
from methods.saelens_format import check_saelens, from_saelens

PREFIX = "pretrained:"


@dataclass
class Pretrained(Method):
    path: str = ""

    name = "pretrained"
    description = "a released SAE in SAELens' format (cfg.json + sae_weights.safetensors), loaded, not trained"
    sparse = True
    seeded = False  # loaded, not fitted
    in_all = False
    refittable = False  # a released SAE is what it is: toy_superposition has nothing to refit

    def label(self) -> str:
        return PREFIX + (Path(self.path).name or self.path)

    def _directory(self) -> Path:
        if not self.path:
            raise BenchError("pretrained needs a directory: --methods pretrained:<dir>")
        return Path(self.path).expanduser()

    def preflight(self) -> None:
        """The directory, its config and its weights' header, before the run harvests (the width is checked
        against the hook's at fit time, when the activations are known)."""
        check_saelens(self._directory())

    def fit(self, train: TrainingData, progress: ProgressFn | None = None) -> SAE:
        sae, cfg = from_saelens(self._directory())
        if sae.d_in != train.d_model:
            raise BenchError(f"{self.path}: the SAE reads {sae.d_in}-dimensional activations but this hook gives "
                             f"{train.d_model}; pick the --model it was trained on")
        hook = cfg["metadata"].get("hook_name")
        ours = getattr(train, "hook", None)
        if hook and ours and hook != ours:
            raise BenchError(f"{self.path}: the SAE was trained on {hook} but this run reads {ours}; pass the "
                             "matching --layer")
        self.fit_info_ = {"architecture": cfg["architecture"], "d_dict": sae.d_dict, "hook_name": hook,
                          "model_name": cfg["metadata"].get("model_name"), "source": str(self.path)}
        if progress is not None:
            progress(1, 1)
        return sae

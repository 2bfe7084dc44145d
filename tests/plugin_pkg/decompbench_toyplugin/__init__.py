"""A method from outside decompbench: the neuron basis, centred on the training mean."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.dictionary import LinearDictionary
from methods.base import Method, ProgressFn, TrainingData


@dataclass
class CentredNeurons(Method):
    max_tokens: int = 50_000

    name = "centred-neurons"
    description = "standard basis around the training mean, +/- each basis vector"

    def fit(self, train: TrainingData, progress: ProgressFn | None = None) -> LinearDictionary:
        mean = train.kept_activations(self.max_tokens, seed=self.seed).double().mean(0).float()
        eye = torch.eye(train.d_model)
        return LinearDictionary.from_matrices(eye, eye, mean)

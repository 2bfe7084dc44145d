"""`kmeans`: a vector-quantisation dictionary (gain-shape VQ / spherical k-means), a classic sparse-coding baseline.

Each token is explained by one learned direction: the centred activation's nearest unit centroid u_j (by cosine),
with gain g = <x - mean, u_j>. Codes are non-negative and one-hot: c_j = max(g, 0). x^ = mean + c @ U.
Fitted with scikit-learn's MiniBatchKMeans on the centred, normalised training activations (spherical k-means),
so it is the L0 = 1 end of the sparsity range that SAEs trade along. The worked example in
docs/adding-a-method.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from sklearn.cluster import MiniBatchKMeans

from bench.dictionary import Dictionary
from bench.specs import positive
from methods.base import Method, ProgressFn, TrainingData


class VQDictionary(Dictionary):
    """centroids `[k, d_in]` unit rows; mean `[d_in]`."""

    kind = "vq"

    def __init__(self, d_in: int, d_dict: int) -> None:
        super().__init__(d_in, d_dict)
        self.register_buffer("centroids", torch.zeros(d_dict, d_in))
        self.register_buffer("mean", torch.zeros(d_in))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        gains = (x - self.mean) @ self.centroids.T  # [..., k]
        best = gains.argmax(dim=-1, keepdim=True)
        return torch.zeros_like(gains).scatter_(-1, best, gains.gather(-1, best).clamp(min=0))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.mean + codes @ self.centroids

    @property
    def directions(self) -> torch.Tensor:
        return self.centroids

    def config(self) -> dict[str, Any]:
        return {"d_in": self.d_in, "d_dict": self.d_dict}


@dataclass
class KMeans(Method):
    dict_ratio: float = positive(1.0)  # number of centroids / d_model
    max_tokens: int = positive(20_000)
    batch_size: int = positive(4096)
    max_iter: int = positive(10)

    name = "kmeans"
    description = "gain-shape vector quantisation: spherical k-means centroids, one code per token"
    sparse = True

    def fit(self, train: TrainingData, progress: ProgressFn | None = None) -> VQDictionary:
        x = train.kept_activations(self.max_tokens, seed=self.seed).double()
        mean = x.mean(0)
        shapes = torch.nn.functional.normalize(x - mean, dim=-1).numpy()
        k = max(1, round(self.dict_ratio * train.d_model))
        km = MiniBatchKMeans(n_clusters=k, batch_size=self.batch_size, max_iter=self.max_iter, n_init=1,
                             random_state=self.seed).fit(shapes)
        out = VQDictionary(train.d_model, k)
        out.centroids.copy_(torch.nn.functional.normalize(torch.from_numpy(km.cluster_centers_).float(), dim=-1))
        out.mean.copy_(mean.float())
        self.fit_info_ = {"n_iter": int(km.n_iter_), "inertia": float(km.inertia_)}
        return out

"""neurons: centred on the training mean like the other dense bases, checked on a hand-computed tiny case."""

from __future__ import annotations

import torch

from bench.dictionary import TopKDictionary
from bench.store import ArraySplit
from methods.neurons import Neurons


def test_top_k_reconstruction_is_the_mean_plus_the_k_largest_centred_coordinates():
    train = ArraySplit(torch.tensor([[1.0, 2.0, 3.0, 4.0], [3.0, 2.0, 1.0, 0.0]]))  # mean [2, 2, 2, 2]
    d = Neurons().fit(train)
    torch.testing.assert_close(d.bias, torch.full((4,), 2.0))
    x = torch.tensor([[5.0, 2.0, -0.5, 2.5]])  # centred: [3, 0, -2.5, 0.5]
    # codes are [relu(z), relu(-z)]: 3 (+neuron 0), 2.5 (-neuron 2), 0.5 (+neuron 3), the rest 0
    torch.testing.assert_close(d.encode(x), torch.tensor([[3.0, 0, 0, 0.5, 0, 0, 2.5, 0]]))
    expected = {1: [5.0, 2.0, 2.0, 2.0],  # mean + 3 e0 (uncentred, this was [5, 0, 0, 0])
                2: [5.0, 2.0, -0.5, 2.0],  # + the -2.5 of neuron 2
                3: [5.0, 2.0, -0.5, 2.5]}  # every non-zero centred coordinate: x itself
    for k, want in expected.items():
        top = TopKDictionary.wrap(d, k)
        torch.testing.assert_close(top.decode(top.encode(x)), torch.tensor([want]))


def test_full_width_still_reconstructs_real_activations(store):
    d = Neurons(seed=3).fit(store.train)
    x = store.eval.kept_activations()
    torch.testing.assert_close(d(x), x, atol=1e-4, rtol=1e-6)  # (x - mean) + mean: float rounding only
    torch.testing.assert_close(d.decode(d.encode(x)), x, atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(d.bias, store.train.kept_activations().mean(0), atol=1e-4, rtol=1e-5)

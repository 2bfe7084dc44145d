"""The Dictionary contract's building blocks, on hand-computed tensors."""

from __future__ import annotations

import pytest
import torch

from bench.dictionary import LinearDictionary, TopKDictionary, load_dictionary, topk_codes
from bench.errors import BenchError


def test_signed_linear_dictionary_by_hand():
    # 2-d input, one atom along (1, 0) -> two codes: relu(z), relu(-z)
    enc = torch.tensor([[1.0, 0.0]])
    d = LinearDictionary.from_matrices(enc, enc, bias=torch.tensor([1.0, 1.0]))
    x = torch.tensor([[3.0, 5.0], [-1.0, 2.0]])
    # z = (x - bias) @ enc.T = [[2], [-2]]
    codes = d.encode(x)
    assert torch.equal(codes, torch.tensor([[2.0, 0.0], [0.0, 2.0]]))
    # x_hat = bias + (c+ - c-) * (1, 0) = [[3, 1], [-1, 1]]
    assert torch.equal(d.decode(codes), torch.tensor([[3.0, 1.0], [-1.0, 1.0]]))
    assert torch.equal(d(x), d.decode(codes))
    assert torch.equal(d.directions, torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    assert d.d_dict == 2


def test_topk_keeps_the_largest_codes():
    codes = torch.tensor([[0.1, 3.0, 0.0, 2.0], [5.0, 0.0, 1.0, 0.5]])
    assert torch.equal(topk_codes(codes, 2), torch.tensor([[0.0, 3.0, 0.0, 2.0], [5.0, 0.0, 1.0, 0.0]]))


def test_topk_dictionary_wraps_and_round_trips(tmp_path):
    eye = torch.eye(3)
    inner = LinearDictionary.from_matrices(eye, eye)
    d = TopKDictionary.wrap(inner, 1)
    x = torch.tensor([[1.0, -4.0, 2.0]])
    assert torch.equal(d(x), torch.tensor([[0.0, -4.0, 0.0]]))
    d.save(tmp_path / "d")
    again = load_dictionary(tmp_path / "d")
    assert torch.equal(again(x), d(x))


def test_dimension_mismatch_is_a_one_line_error():
    eye = torch.eye(3)
    d = LinearDictionary.from_matrices(eye, eye)
    with pytest.raises(BenchError, match="dimension 3 but the hook gives 4"):
        d.encode(torch.zeros(2, 4))


def test_corrupt_dictionary_file_is_a_one_line_error(tmp_path):
    eye = torch.eye(3)
    LinearDictionary.from_matrices(eye, eye).save(tmp_path / "d")
    (tmp_path / "d" / "dictionary.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(BenchError, match="delete it and refit"):
        load_dictionary(tmp_path / "d")

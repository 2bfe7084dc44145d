"""Every registered method, fitted on real activations, honours the Dictionary contract."""

from __future__ import annotations

import pytest

import methods
from bench.contract import check_method
from bench.errors import BenchError

# Small settings so the contract runs in seconds; methods not listed run with their defaults.
FAST = {
    "sae-relu": {"epochs": 1.0, "batch_size": 256, "dict_ratio": 1.0},
    "ica": {"max_iter": 20, "max_tokens": 1000},
    "random": {"dict_ratio": 1.5},
}


@pytest.mark.parametrize("name", list(methods.REGISTRY))
def test_contract(name, store):
    check_method(name, store.train, store.eval.kept_activations(), FAST.get(name))


def test_spec_parsing_and_errors():
    m = methods.build_method("sae-relu[l1_coeff=1e-3,tied=true,epochs=3]")
    assert (m.l1_coeff, m.tied, m.epochs) == (1e-3, True, 3.0)
    assert methods.canonical_spec(m) == "sae-relu[epochs=3.0,l1_coeff=0.001,tied=True]"
    with pytest.raises(BenchError, match="unknown method 'nope'"):
        methods.build_method("nope")
    with pytest.raises(BenchError, match="has no parameter 'bogus'"):
        methods.build_method("pca[bogus=1]")
    with pytest.raises(BenchError, match="not a valid bool"):
        methods.build_method("sae-relu[tied=maybe]")

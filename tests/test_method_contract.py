"""Every registered method, fitted on real activations, honours the Dictionary contract."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import methods
from bench.contract import check_method
from bench.errors import BenchError
from methods.saelens_format import to_saelens
from tests.fast_methods import FAST, IN_ALL

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", IN_ALL)
def test_contract(name, store):
    check_method(name, store.train, store.eval.kept_activations(), FAST.get(name))


def test_contract_of_a_pretrained_sae(store, tmp_path):
    sae = methods.build_method("sae-topk[dict_ratio=0.5,epochs=0.5,batch_size=128]").fit(store.train)
    to_saelens(sae, tmp_path / "released", hook_name=store.hook)
    check_method(f"pretrained:{tmp_path / 'released'}", store.train, store.eval.kept_activations())


def test_spec_parsing_and_errors():
    assert methods.expand_spec("sae-topk[k=16,32,lr=1e-3]") == ["sae-topk[k=16,lr=1e-3]", "sae-topk[k=32,lr=1e-3]"]
    assert methods.expand_spec("sae-topk[k=16|32]") == ["sae-topk[k=16]", "sae-topk[k=32]"]
    m = methods.build_method("sae-relu[l1_coeff=1e-3,tied=true,epochs=3]")
    assert (m.l1_coeff, m.tied, m.epochs) == (1e-3, True, 3.0)
    assert methods.canonical_spec(m) == "sae-relu[epochs=3.0,l1_coeff=0.001,tied=True]"
    with pytest.raises(BenchError, match="unknown method 'nope'"):
        methods.build_method("nope")
    with pytest.raises(BenchError, match="has no parameter 'bogus'"):
        methods.build_method("pca[bogus=1]")
    with pytest.raises(BenchError, match="not a valid bool"):
        methods.build_method("sae-relu[tied=maybe]")


def test_tuple_parameters_are_written_with_plus():
    from bench.specs import build, canonical_label
    from tasks import REGISTRY

    task = build("sparse_probing[ks=1+5,concepts=pronoun+repeated_name]", REGISTRY, "task")
    assert (task.ks, task.concepts) == ((1, 5), ("pronoun", "repeated_name"))
    assert canonical_label(task) == "sparse_probing[concepts=pronoun+repeated_name,ks=1+5]"
    with pytest.raises(BenchError, match="not a valid int"):
        build("sparse_probing[ks=1+x]", REGISTRY, "task")


BROKEN = '''
"""A deliberately broken method: its fit ignores the seed, so two fits with the same seed differ."""
from dataclasses import dataclass

import torch

from bench.dictionary import LinearDictionary
from methods.base import Method


@dataclass
class Unseeded(Method):
    name = "unseeded"

    def fit(self, train, progress=None):
        w = torch.nn.functional.normalize(torch.randn(train.d_model, train.d_model), dim=-1)  # global RNG: unseeded
        return LinearDictionary.from_matrices(w, w)
'''


def test_check_method_fails_a_broken_method_under_python_O(tmp_path):
    """`python -O` strips asserts; the contract must still catch the broken clause and check-method say FAIL."""
    (tmp_path / "decompbench_unseeded.py").write_text(BROKEN)
    info = tmp_path / "decompbench_unseeded-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: decompbench-unseeded\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[decompbench.methods]\nunseeded = decompbench_unseeded:Unseeded\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-O", "-m", "bench", "check-method", "unseeded"], check=False, cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stdout + result.stderr[-2000:]
    assert "FAIL" in result.stderr and "refit with the same seed changed encoder" in result.stderr, result.stderr

"""The method contract, as a function: every registered method must pass it (tests run it over the registry).

Checked with explicit `if`s, not `assert`: `python -O` strips asserts, and `check-method` must still fail there.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from bench.dictionary import Dictionary, load_dictionary
from methods import build_method
from methods.base import TrainingData


class ContractError(AssertionError):
    """A broken clause of the Dictionary contract (an AssertionError, so callers catching that keep working)."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ContractError(message)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(a, b)


def check_method(spec: str, train: TrainingData, x: torch.Tensor, overrides: dict[str, Any] | None = None,
                 seed: int = 0) -> Dictionary:
    """Fit `spec` on `train` twice and check the Dictionary contract on activations x `[n, d]`.

    Raises ContractError (an AssertionError) naming the broken clause; returns the fitted dictionary.
    """
    d = train.d_model
    first = build_method(spec, overrides, seed=seed).fit(train)
    second = build_method(spec, overrides, seed=seed).fit(train)
    _check(isinstance(first, Dictionary), f"{spec}: fit must return a Dictionary, got {type(first).__name__}")
    _check(first.d_in == d, f"{spec}: d_in {first.d_in} != d_model {d}")
    with torch.inference_mode():
        codes = first.encode(x)
        _check(codes.shape == (x.shape[0], first.d_dict), f"{spec}: encode shape {tuple(codes.shape)}")
        _check(torch.isfinite(codes).all() and (codes >= 0).all(), f"{spec}: codes must be finite and non-negative")
        x_hat = first.decode(codes)
        _check(x_hat.shape == x.shape, f"{spec}: decode shape {tuple(x_hat.shape)}")
        _check(torch.allclose(first(x), x_hat, atol=1e-4, rtol=1e-4), f"{spec}: forward != decode(encode(x))")
        k = max(1, x.shape[0] // 3)
        _check(torch.allclose(first.encode(x[:k]), codes[:k], atol=1e-5, rtol=1e-5),
               f"{spec}: codes depend on the batch")
        dirs = first.directions
        _check(dirs.shape == (first.d_dict, d), f"{spec}: directions shape {tuple(dirs.shape)}")
        norms = dirs.norm(dim=-1)
        _check(torch.allclose(norms[norms > 0], torch.ones_like(norms[norms > 0]), atol=1e-4),
               f"{spec}: directions must be unit norm")

        for name, tensor in first.state_dict().items():
            _check(_same(tensor, second.state_dict()[name]), f"{spec}: refit with the same seed changed {name}")

        with tempfile.TemporaryDirectory() as tmp:
            first.save(Path(tmp) / "d")
            again = load_dictionary(Path(tmp) / "d")
            _check(type(again) is type(first), f"{spec}: load gave {type(again).__name__}")
            _check(_same(again.encode(x), codes), f"{spec}: encode changed after save/load")
            _check(_same(again.decode(codes), x_hat), f"{spec}: decode changed after save/load")
    return first

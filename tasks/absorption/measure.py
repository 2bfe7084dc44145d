"""The absorption formulas: a letter's main features, and per word the share of the probe projection that other
features carry (SAEBench's absorption fraction, after Chanin et al. 2024 and Till) and whether it is fully absorbed.

Notation, for one word x of letter L whose probe direction is p (unit norm):
    b        = decode(0), the dictionary's offset;   W_i = decode(e_i) - b, what feature i writes per unit of code
    t        = (x - b) . p                            the projection the features have to carry
    a_i      = c_i (W_i . p)                          feature i's share of it on this word (c_i its code)
    cos_i    = cos(W_i, p)
    M        = the letter's main features,            m = sum_{i in M} a_i
    A        = the at most `max_absorbers` largest a_i > 0 among features outside M with cos_i >= `absorber_cos`,
               s = sum_{i in A} a_i

absorption fraction = 0                        if t <= 0, m >= t or s < share * t
                      1                        else if m <= 0
                      min(s, t - m) / (min(s, t - m) + m)   otherwise
full absorption     = every main feature silent (c_i <= FIRES), t > 0, and the feature with the largest a_i has
                      cos_i >= `full_cos` and a_i >= share * t

Main features (`main_features`): the features that write along the probe (cos_i > 0) ranked by how much more they
fire on the letter's training words than on the others (standardised difference of means); the first is main, and
the next joins while it raises the training F1 of a k-sparse logistic probe on the main features by at least
`f1_jump` (SAEBench's feature-splitting rule, up to `max_k` features).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import f1_score

from tasks.probing import fit_probe

FIRES = 1e-8  # a code above this fires (SAEBench's epsilon); codes are non-negative


def write_vectors(dictionary, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """(b = decode(0) `[d_in]`, W `[d_dict, d_in]` with W_i = decode(e_i) - b): what each feature writes per unit."""
    eye = torch.eye(dictionary.d_dict, device=dictionary_device(dictionary))
    b = dictionary.decode(torch.zeros(1, dictionary.d_dict, device=eye.device))[0]
    return b, torch.cat([dictionary.decode(rows) - b for rows in eye.split(chunk)])


def dictionary_device(dictionary) -> torch.device:
    tensors = list(dictionary.state_dict().values())
    return tensors[0].device if tensors else torch.device("cpu")


def affine_error(dictionary, codes: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> float:
    """Relative error of decode(c) = b + c W on codes `[n, d_dict]`: ~1e-6 for an affine decoder."""
    direct, linear = dictionary.decode(codes), b + codes @ w
    return float((direct - linear).norm() / (direct - b).norm().clamp_min(1e-12))


def letter_scores(codes: np.ndarray, labels: np.ndarray, n_letters: int) -> np.ndarray:
    """`[n_letters, m]` standardised difference of mean codes between each letter's words and the others:
    (mean_pos - mean_neg) / sqrt((var_pos + var_neg) / 2). codes `[n, m]`, labels `[n]` letter indices."""
    x = codes.astype(np.float64)
    onehot = np.eye(n_letters)[labels]  # `[n, L]`
    n_pos = onehot.sum(0)[:, None]
    n_neg = len(x) - n_pos
    s1, s2 = onehot.T @ x, onehot.T @ (x * x)  # per letter sums `[L, m]`
    t1, t2 = x.sum(0)[None], (x * x).sum(0)[None]
    mean_pos, mean_neg = s1 / n_pos, (t1 - s1) / n_neg
    var_pos = np.maximum(s2 / n_pos - mean_pos ** 2, 0)
    var_neg = np.maximum((t2 - s2) / n_neg - mean_neg ** 2, 0)
    return (mean_pos - mean_neg) / (np.sqrt(0.5 * (var_pos + var_neg)) + 1e-8)


def main_features(codes: np.ndarray, is_letter: np.ndarray, score: np.ndarray, cos: np.ndarray, max_k: int,
                  f1_jump: float, c: float = 1.0) -> tuple[list[int], list[float]]:
    """The letter's main features (module docstring) and the training F1 at each k tried. codes `[n, m]`,
    is_letter `[n]` bool, score `[m]` (`letter_scores` row), cos `[m]`."""
    candidates = np.flatnonzero(cos > 0)
    ranked = candidates[np.argsort(-score[candidates], kind="stable")][:max_k]
    main: list[int] = []
    f1s: list[float] = []
    best = -np.inf
    for i in ranked.tolist():
        trial = main + [i]
        x = codes[:, trial]
        pred = fit_probe(x, is_letter, x, is_letter, c).pred if x.std(0).max() > 0 else np.zeros_like(is_letter)
        f1 = float(f1_score(is_letter, pred, zero_division=0.0))
        f1s.append(f1)
        if main and f1 < best + f1_jump:
            break
        main, best = trial, f1
    return main, f1s


def contributions(codes: torch.Tensor, along: torch.Tensor) -> torch.Tensor:
    """a_i = c_i (W_i . p): codes `[n, m]`, along `[m]` (W_i . p) -> `[n, m]`."""
    return codes * along


def absorption_fraction(contrib: torch.Tensor, target: torch.Tensor, main: list[int], cos: torch.Tensor,
                        absorber_cos: float, share: float, max_absorbers: int) -> torch.Tensor:
    """`[n]` absorption fraction per word (module docstring). contrib `[n, m]`, target `[n]`, cos `[m]`."""
    n, m = contrib.shape
    is_main = torch.zeros(m, dtype=torch.bool, device=contrib.device)
    is_main[main] = True
    main_sum = contrib[:, is_main].sum(1)
    eligible = (~is_main & (cos >= absorber_cos))[None, :] & (contrib > 0)
    candidates = torch.where(eligible, contrib, torch.zeros_like(contrib))
    absorbed = candidates.topk(min(max_absorbers, m), dim=1).values.sum(1) if m else torch.zeros(n)
    out = torch.zeros(n, dtype=torch.float64, device=contrib.device)
    some = (target > 0) & (main_sum < target) & (absorbed >= share * target)
    out[some & (main_sum <= 0)] = 1.0
    part = some & (main_sum > 0)
    taken = torch.minimum(absorbed, target - main_sum)[part].double()
    out[part] = (taken / (taken + main_sum[part].double())).clamp(0.0, 1.0)
    return out


def full_absorption(codes: torch.Tensor, contrib: torch.Tensor, target: torch.Tensor, main: list[int],
                    cos: torch.Tensor, full_cos: float, share: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(`[n]` bool: fully absorbed, `[n]` the feature carrying the most of the projection) per word."""
    silent = (codes[:, main] <= FIRES).all(1)
    top_value, top = contrib.max(1)
    full = silent & (target > 0) & (cos[top] >= full_cos) & (top_value >= share * target)
    return full, top

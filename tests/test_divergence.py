"""KL(p_clean || p_edited) from the kept clean distribution: a hand-computed case, exact zero for no edit, and the
same numbers as torch's kl_div."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tasks.divergence import CleanDistribution


def test_kl_by_hand_and_zero_without_an_edit():
    clean = CleanDistribution(torch.tensor([[0.5, 0.5]]).log())
    kl = clean.kl(torch.tensor([[0.25, 0.75]]).log())
    # 0.5 ln(0.5 / 0.25) + 0.5 ln(0.5 / 0.75) = 0.5 ln(4/3)
    assert kl.dtype == torch.float64 and math.isclose(float(kl), 0.5 * math.log(4 / 3), rel_tol=1e-6)
    logp = F.log_softmax(torch.randn(3, 7, 50, generator=torch.Generator().manual_seed(0)), -1)
    assert torch.equal(CleanDistribution(logp).kl(logp), torch.zeros(3, 7, dtype=torch.float64))


def test_kl_matches_torch_kl_div_on_a_vocabulary():
    g = torch.Generator().manual_seed(1)
    clean_logp = F.log_softmax(3 * torch.randn(4, 16, 49_152, generator=g), -1)
    edited = F.log_softmax(F.log_softmax(clean_logp, -1) + 0.3 * torch.randn(4, 16, 49_152, generator=g), -1)
    ours = CleanDistribution(clean_logp).kl(edited)
    ref = F.kl_div(edited.double(), clean_logp.double(), log_target=True, reduction="none").sum(-1)
    assert ours.shape == (4, 16) and (ref > 0.01).all()
    assert torch.allclose(ours, ref, rtol=1e-4, atol=2e-6)

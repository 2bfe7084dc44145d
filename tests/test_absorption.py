"""absorption: the formulas on hand-computed cases, the word split, then the task on the real model with
dictionaries whose absorption is known by construction."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from bench.dictionary import Dictionary, LinearDictionary
from bench.errors import BenchError
from tasks import REGISTRY
from tasks.absorption import Absorption
from tasks.absorption.measure import (absorption_fraction, affine_error, full_absorption, letter_scores,
                                      main_features, write_vectors)
from tasks.absorption.words import EXAMPLES, prefix_ids, prompts, single_token_words, split_words
from tasks.base import TaskContext
from tasks.probing import top_features


# --- formulas ----------------------------------------------------------------------------------------------
def _case() -> dict[str, Any]:
    """Seven words of one letter, t = 1 unless said. Features: 0 main (cos 1), 1..4 absorbers (cos 0.5),
    5 nearly orthogonal (cos 0.05). Rows are a_i = c_i (W_i . p)."""
    contrib = torch.tensor([
        [1.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # main carries t: 0
        [0.0, 0.9, 0.0, 0.0, 0.0, 0.0],  # main silent, one absorber 0.9 >= 0.4: 1 (and full)
        [0.5, 0.5, 0.0, 0.0, 0.0, 0.0],  # min(0.5, 1 - 0.5) / (0.5 + 0.5) = 0.5
        [0.2, 0.3, 0.0, 0.0, 0.0, 0.0],  # absorbers carry 0.3 < 0.4: 0
        [0.25, 0.3, 0.3, 0.3, 0.3, 0.0],  # top 3 absorbers 0.9, min(0.9, 0.75) / (0.75 + 0.25) = 0.75
        [0.0, 0.9, 0.0, 0.0, 0.0, 0.0],  # t = -1: the probe does not see the letter: 0
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.9],  # only a feature below the absorber cosine: 0 (but full, 0.05 >= 0.025)
    ])
    target = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, -1.0, 1.0])
    cos = torch.tensor([1.0, 0.5, 0.5, 0.5, 0.5, 0.05])
    along = torch.tensor([1.0, 0.5, 0.5, 0.5, 0.5, 0.05])
    return {"contrib": contrib, "target": target, "cos": cos, "codes": contrib / along}


def test_absorption_fraction_by_hand():
    c = _case()
    frac = absorption_fraction(c["contrib"], c["target"], [0], c["cos"], absorber_cos=0.1, share=0.4, max_absorbers=3)
    assert frac.tolist() == pytest.approx([0.0, 1.0, 0.5, 0.0, 0.75, 0.0, 0.0])
    # Two main features: word 2's projection is all main (0.5 + 0.5 >= 1), word 4 keeps absorbers 2..4 (0.9):
    # min(0.9, 1 - 0.55) / (0.45 + 0.55) = 0.45.
    frac = absorption_fraction(c["contrib"], c["target"], [0, 1], c["cos"], 0.1, 0.4, 3)
    assert frac.tolist() == pytest.approx([0.0, 0.0, 0.0, 0.0, 0.45, 0.0, 0.0])


def test_full_absorption_by_hand():
    c = _case()
    full, top = full_absorption(c["codes"], c["contrib"], c["target"], [0], c["cos"], full_cos=0.025, share=0.4)
    assert full.tolist() == [False, True, False, False, False, False, True]
    assert top[1] == 1 and top[6] == 5
    # A stricter cosine for the top feature drops word 6; a larger share drops word 1 (0.9 < 0.95).
    assert full_absorption(c["codes"], c["contrib"], c["target"], [0], c["cos"], 0.1, 0.4)[0].tolist()[6] is False
    assert full_absorption(c["codes"], c["contrib"], c["target"], [0], c["cos"], 0.025, 0.95)[0].tolist()[1] is False


def test_letter_scores_match_the_two_class_formula():
    rng = np.random.default_rng(0)
    codes = rng.exponential(size=(90, 5))
    labels = np.arange(90) % 3
    codes[labels == 1, 3] += 2.0
    scores = letter_scores(codes, labels, 3)
    for j in range(3):
        y = labels == j
        pos, neg = codes[y], codes[~y]
        want = (pos.mean(0) - neg.mean(0)) / (np.sqrt(0.5 * (pos.var(0) + neg.var(0))) + 1e-8)
        assert scores[j] == pytest.approx(want, rel=1e-9)
    assert np.argmax(scores[1]) == 3 == top_features(codes, labels == 1, 1)[0]


def test_main_features_grow_only_while_f1_jumps():
    """Feature 2 fires on every word of the letter: one main feature. Features 0 and 1 each fire on half of them
    (a split letter): both are main. Feature 3 fires on all of them too but writes against the probe: never main."""
    y = np.arange(200) % 4 == 0
    half = y & (np.arange(200) % 8 == 0)
    codes = np.zeros((200, 4))
    codes[:, 0], codes[:, 1] = half, y & ~half
    codes[:, 2] = 1.5 * y
    codes[:, 3] = 3.0 * y
    scores = letter_scores(codes, y.astype(int), 2)[1]
    main, f1s = main_features(codes, y, scores, np.array([0.5, 0.5, 0.5, -0.5]), max_k=10, f1_jump=0.03)
    assert main == [2] and f1s[0] == 1.0
    split, f1s = main_features(codes[:, :2], y, scores[:2], np.array([0.5, 0.5]), max_k=10, f1_jump=0.03)
    assert sorted(split) == [0, 1] and f1s[-1] == 1.0 > f1s[0]
    assert main_features(codes[:, :2], y, scores[:2], np.array([0.5, 0.5]), max_k=1, f1_jump=0.03)[0] == split[:1]


def test_write_vectors_of_a_linear_dictionary_are_its_decoder_rows():
    torch.manual_seed(0)
    dec, bias = torch.randn(3, 5), torch.randn(5)
    d = LinearDictionary.from_matrices(torch.randn(3, 5), dec, bias, signed=True)
    b, w = write_vectors(d, chunk=2)
    assert torch.allclose(b, bias) and torch.allclose(w, torch.cat([dec, -dec]), atol=1e-6)
    assert affine_error(d, d.encode(torch.randn(4, 5)), b, w) < 1e-5


def test_split_words_is_by_word_seeded_and_drops_thin_letters():
    words = [f"a{i:03d}" for i in range(50)] + [f"b{i:03d}" for i in range(10)] + [f"c{i}" for i in range(3)]
    words += list(EXAMPLES)
    s = split_words(words, per_letter=30, min_words=5, test_fraction=0.2, seed=0)
    assert s.letters == ("a", "b") and s.dropped["c"] == 3 and s.available == {"a": 50, "b": 10}
    assert not set(s.train) & set(s.test) and not set(EXAMPLES) & set(s.train + s.test)
    assert sum(w[0] == "a" for w in s.train + s.test) == 30 and sum(w[0] == "a" for w in s.test) == 6
    assert sum(w[0] == "b" for w in s.test) == 2
    again, other = split_words(words, 30, 5, 0.2, 0), split_words(words, 30, 5, 0.2, 1)
    assert again == s and set(other.test) != set(s.test)
    a_words = {w for w in s.train + s.test if w[0] == "a"}
    assert a_words != {f"a{i:03d}" for i in range(30)}  # drawn across the letter's words, not its first 30


def test_prompts_end_with_the_word():
    tokenize = lambda text: [ord(ch) for ch in text]  # noqa: E731 - one token per character
    prefix = prefix_ids(tokenize, bos=7)
    assert prefix[0] == 7 and "".join(map(chr, prefix[1:])) == "\n house has the first letter: H\n"
    p = prompts(prefix, [100, 101])
    assert p.shape == (2, len(prefix) + 1) and p[:, -1].tolist() == [100, 101] and p[1, :-1].tolist() == prefix
    assert single_token_words(["ab", "abc"], lambda t: [1] if t == " ab" else [1, 2]) == {"ab": 1}


def test_registered_with_checked_settings():
    assert REGISTRY["absorption"] is Absorption
    with pytest.raises(BenchError, match="test_fraction"):
        Absorption(test_fraction=0.9)


# --- the task on the real model ----------------------------------------------------------------------------
SMALL = dict(words_per_letter=36, min_words=20, min_positives=3)


@pytest.fixture(scope="module")
def prepared(model, store):
    task = Absorption(**SMALL)
    ctx = TaskContext(store=store, hook=store.hook, model_loader=lambda: model, seed=0)
    with torch.inference_mode():
        task.prepare(ctx)
    return task, ctx


def _evaluate(task, ctx, dictionary):
    with torch.inference_mode():
        return task.evaluate(dictionary, ctx)


def test_the_probe_reads_first_letters_well_above_chance(prepared):
    task, _ = prepared
    probe = task._probe_info
    assert len(task._letters) >= 20 and not set(task._train) & set(task._test)
    assert probe["signal"] and probe["accuracy"] > probe["chance"] + 0.2
    assert task._accuracy_metric.interval[0] > probe["chance"]


def test_probe_directions_as_features_absorb_nothing(prepared):
    """Feature j = relu(p_j . x), writing p_j: each letter's own feature is main and carries the whole projection."""
    task, ctx = prepared
    p = task._dirs.cpu()
    out = _evaluate(task, ctx, LinearDictionary.from_matrices(p, p, signed=False))
    assert out.metrics["absorption"].value == 0.0 and out.metrics["full_absorption"].value == 0.0
    for c, row in out.details["per_letter"].items():
        assert task._letters.index(c) in row["main_features"]
        rows = task._positives[c]
        seen = float(((task._x_test[rows] @ task._dirs[task._letters.index(c)]) > 0).float().mean())
        assert row["unaccounted"] == 0.0 and row["main_carries"] == pytest.approx(seen)  # every word with t > 0
    assert "no_letter_features" not in out.details
    assert out.metrics["probe_accuracy"].value == task._probe_info["accuracy"]


class SplitLetter(Dictionary):
    """Two features writing the unit direction p (one letter's probe): feature 0 = (1 - r) relu(p . x), feature 1 =
    r relu(p . x), where r is 1 or 1/2 on chosen activations (matched exactly) and 0 elsewhere."""

    kind = ""  # a test double, not registered

    def __init__(self, p: torch.Tensor, chosen: torch.Tensor, ratio: torch.Tensor) -> None:
        super().__init__(p.shape[0], 2)
        self.p, self.chosen, self.ratio = p, chosen, ratio

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        match = (x[:, None, :] == self.chosen[None]).all(-1).float()  # `[n, k]`
        r = match @ self.ratio
        z = torch.relu(x @ self.p)
        return torch.stack([(1 - r) * z, r * z], dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return codes.sum(-1, keepdim=True) * self.p

    @property
    def directions(self) -> torch.Tensor:
        return torch.stack([self.p, self.p])

    def config(self) -> dict[str, Any]:
        return {}


def test_a_split_letter_has_the_absorption_computed_by_hand(prepared):
    """On a third of the letter's scored words feature 1 carries the whole projection (fraction 1, fully absorbed),
    on another third half of it (fraction 1/2: the main feature still fires), elsewhere none. Feature 1 never fires
    on a train word, so feature 0 alone is main."""
    task, ctx = prepared
    c = max(task._positives, key=lambda k: len(task._positives[k]))
    j = task._letters.index(c)
    rows = task._positives[c]
    t = (task._x_test[rows] @ task._dirs[j]).cpu()
    seen = rows[(t > 0).numpy()]
    full, half = seen[: len(seen) // 3], seen[len(seen) // 3: 2 * (len(seen) // 3)]
    chosen = task._x_test[np.concatenate([full, half])].cpu()
    ratio = torch.cat([torch.ones(len(full)), torch.full((len(half),), 0.5)])
    out = _evaluate(task, ctx, SplitLetter(task._dirs[j].cpu(), chosen, ratio))
    row = out.details["per_letter"][c]
    assert row["main_features"] == [0] and len(full) >= 2
    assert row["absorption"] == pytest.approx((len(full) + 0.5 * len(half)) / len(rows))
    assert row["full_absorption"] == pytest.approx(len(full) / len(rows))
    # every word the probe sees is either carried by the main feature or absorbed: none is unaccounted for
    assert row["main_carries"] == pytest.approx((len(seen) - len(full)) / len(rows))  # 1/2 >= share = 0.4
    assert row["unaccounted"] == 0.0
    assert {e["word"] for e in row["examples"]} <= {task._test[i] for i in full}
    assert all(e["feature"] == 1 and e["share"] == pytest.approx(1.0, abs=1e-4) for e in row["examples"])


def test_a_dense_code_is_scored_and_marked(prepared):
    task, ctx = prepared
    q, _ = torch.linalg.qr(torch.randn(task._x_train.shape[1], task._x_train.shape[1],
                                       generator=torch.Generator().manual_seed(0)))
    out = _evaluate(task, ctx, LinearDictionary.from_matrices(q.T, q.T, task._x_train.mean(0).cpu()))
    assert "dense_code" in out.details and out.details["code_density"] == pytest.approx(0.5, abs=0.02)
    assert 0.0 <= out.metrics["absorption"].value <= 1.0 and "dense code" in " ".join(out.details["board_notes"])


def test_a_decoder_that_is_not_affine_is_refused(prepared):
    task, ctx = prepared
    p = task._dirs.cpu()

    class Squared(LinearDictionary):
        kind = ""  # a test double: not registered over the real "linear" kind

        def decode(self, codes: torch.Tensor) -> torch.Tensor:
            return (codes ** 2) @ self.decoder

    d = Squared(p.shape[1], p.shape[0], signed=False)
    d.encoder.copy_(p)
    d.decoder.copy_(p)
    with pytest.raises(BenchError, match="not affine"):
        _evaluate(task, ctx, d)

"""autointerp: scores on cases whose answer is known by construction, excerpt sampling, prompts, controls, the
pipeline with a real in-process judge (the bundled SmolLM2; tiny sizes keep it fast), and a judge endpoint (a real
local HTTP server) that stops answering."""

from __future__ import annotations

import numpy as np
import pytest

from bench.errors import BenchError
from bench.judge.base import (
    Completion,
    Judge,
    JudgeConfig,
    ResponseCache,
    digit_expectation,
    option_probability,
    parse_simulation,
)
from bench.judge.weights import assemble
from tasks.autointerp.calibration import calibrate, control_features
from tasks.autointerp.excerpts import Excerpt, Sizes, sample_examples
from tasks.autointerp.pipeline import Feature, Scored, interpret
from tasks.autointerp.prompts import (
    clean_explanation,
    copied,
    detect_request,
    display,
    explain_request,
    fuzzed_marks,
    marked_tokens,
    render,
    true_marks,
)
from tasks.autointerp.scoring import auroc, auroc_variance, balanced_accuracy, best_threshold, correlation, feature_mean
from tests.fake_judge import Answer, healthy, serving

# --- scores ---------------------------------------------------------------------------------------------------


def test_correlation_known_cases():
    t = np.array([0.0, 1.0, 3.0, 0.0])
    assert correlation(2 * t + 1, t) == pytest.approx(1.0)
    assert correlation(-t, t) == pytest.approx(-1.0)
    assert correlation(np.full(4, 5.0), t) == 0.0  # a judge that predicts nothing scores 0, not NaN


def test_auroc_hand_computed():
    # pairs (pos, neg): 0.9>0.5, 0.9>0.1, 0.4<0.5, 0.4>0.1 -> 3 of 4
    assert auroc(np.array([0.9, 0.4, 0.5, 0.1]), np.array([1, 1, 0, 0], bool)) == pytest.approx(0.75)
    assert auroc(np.array([0.7, 0.7]), np.array([1, 0], bool)) == pytest.approx(0.5)  # a tie counts half
    assert np.isnan(auroc(np.array([0.3]), np.array([1], bool)))


def test_delong_variance_matches_a_bootstrap_over_samples():
    g = np.random.default_rng(0)
    scores = np.concatenate([g.normal(1, 1, 30), g.normal(0, 1, 40)])
    labels = np.arange(70) < 30
    boot = []
    pos, neg = np.flatnonzero(labels), np.flatnonzero(~labels)
    for _ in range(3000):
        idx = np.concatenate([g.choice(pos, 30), g.choice(neg, 40)])
        boot.append(auroc(scores[idx], labels[idx]))
    assert auroc_variance(scores, labels) == pytest.approx(np.var(boot), rel=0.15)
    assert np.isnan(auroc_variance(np.array([1.0, 0.0]), np.array([True, False])))  # one of each: undefined
    assert auroc_variance(np.array([2.0, 3, 0, 1]), np.array([True, True, False, False])) == 0  # perfect separation


def test_calibrated_threshold_rescues_a_biased_judge():
    # Ranks perfectly, but says "yes" to everything at 0.5: balanced accuracy 0.5 there, 1.0 at the calibrated threshold.
    probs, labels = np.array([0.95, 0.93, 0.85, 0.81]), np.array([1, 1, 0, 0], bool)
    assert balanced_accuracy(probs, labels, 0.5) == pytest.approx(0.5)
    t = best_threshold(probs, labels)
    assert 0.85 <= t < 0.93
    assert balanced_accuracy(probs, labels, t) == pytest.approx(1.0)


def test_feature_mean_interval_over_features():
    few = feature_mean(["7", "3", "12"], [0.5, 0.5, 0.5], "d", seed=0)
    assert few.value == 0.5 and few.interval is None  # three features are no interval (the old code said [0.5, 0.5])
    assert "3 features: too few" in few.interval_info.reason
    same = feature_mean([str(i) for i in range(6)], np.full(6, 0.4), "d", seed=0)
    assert same.interval is None and "same value" in same.interval_info.reason
    # NaN (undefined score) drops that feature: value, ids and n are over the rest
    with_nan = feature_mean(["1", "2", "3", "4", "5", "6"], [0.1, np.nan, 0.3, 0.5, 0.7, 0.9], "d", seed=0)
    assert with_nan.value == pytest.approx(0.5) and with_nan.evidence.ids == ["1", "3", "4", "5", "6"]
    assert with_nan.interval is not None and with_nan.interval_info.n == 5
    none = feature_mean(["1", "2"], [np.nan, np.nan], "d", seed=0)
    assert np.isnan(none.value) and none.interval is None and none.interval_info.reason
    v = np.random.default_rng(0).normal(0.2, 0.1, 40)
    m = feature_mean([str(i) for i in range(40)], v, "d", seed=0)
    lo, hi = m.interval
    assert m.value == pytest.approx(v.mean()) and lo < v.mean() < hi
    half = 1.96 * v.std() / np.sqrt(len(v))  # the normal approximation the paper's error bars use
    assert hi - lo == pytest.approx(2 * half, rel=0.25)
    assert m.evidence.unit == "feature" and m.evidence.sources == ("features sampled", "judge")
    assert m.interval_info.method in ("BCa", "percentile") and m.higher_is_better


# --- judge reply parsing ----------------------------------------------------------------------------------------


def test_option_probability_sums_variants_and_renormalises():
    top = {" Yes": np.log(0.3), "yes": np.log(0.1), "No": np.log(0.2), "The": np.log(0.4)}
    assert option_probability(top, ("yes", "no")) == pytest.approx(0.4 / 0.6)
    assert option_probability({"Maybe": 0.0}, ("yes", "no")) is None


def test_digit_expectation():
    assert digit_expectation({"2": np.log(0.5), "6": np.log(0.5), "x": 0.0}) == pytest.approx(4.0)
    assert digit_expectation({"a": 0.0}) is None


def test_parse_simulation_uses_digit_logprobs_and_rejects_wrong_counts():
    tokens = ["the", "\t", "3", "\n", " cat", "\t", "1", "2", "\n"]
    tops = [{}, {}, {"3": np.log(0.5), "5": np.log(0.5)}, {}, {}, {}, {}, {}, {}]
    values = parse_simulation(Completion("".join(tokens), tokens, tops), 2)
    assert values == pytest.approx([4.0, 9.0])  # expected value 4; "12" capped at 9 (no single digit to read)
    with pytest.raises(ValueError):
        parse_simulation(Completion("the\t3\n"), 2)


# --- excerpts and prompts -----------------------------------------------------------------------------------------


def _planted(n_ctx=30, ctx_len=40, firing=20):
    """Context c (c < firing) fires once, with value c + 1, at position 10 + c; the others never fire."""
    acts = np.zeros((n_ctx, ctx_len), np.float32)
    for c in range(firing):
        acts[c, 10 + c % 25] = c + 1
    tokens = np.arange(n_ctx * ctx_len).reshape(n_ctx, ctx_len)
    return acts, tokens


def test_excerpts_cover_the_activation_distribution_and_never_overlap():
    acts, tokens = _planted()
    sizes = Sizes(window=8, n_explain=4, n_top=3, n_quantile=3, n_non_firing=5)
    ex = sample_examples(acts, tokens, sizes, np.random.default_rng(0))
    top = [e for e in ex.activating if e.drawn == "top"]
    explain, top_ctx = {e.context for e in ex.explain}, {e.context for e in top}
    assert explain | top_ctx == set(range(13, 20))  # the seven strongest contexts, split between the two
    assert len(explain) == 4 and len(top) == 3
    # the 13 other firing contexts ranked by peak (12 strongest ... 0 weakest) in 3 strata: one drawn from each
    quantile = [e for e in ex.activating if e.drawn.startswith("quantile")]
    assert [e.drawn for e in quantile] == ["quantile 1/3", "quantile 2/3", "quantile 3/3"]
    (a,), (b,), (c,) = [{e.context} for e in quantile]
    assert a in {12, 11, 10, 9} and b in {8, 7, 6, 5, 4} and c in {3, 2, 1, 0}
    assert len(ex.non_firing) == 5 and ex.quietest == 0
    for e in ex.non_firing:  # the feature is zero on every token of a negative
        assert e.drawn == "non-firing" and not e.acts.any()
        np.testing.assert_array_equal(e.acts, acts[e.context, e.start : e.start + 8])
    everything = [e.context for e in ex.explain + ex.activating + ex.non_firing]
    assert len(everything) == len(set(everything))  # no context is used twice
    for e in ex.explain + top:
        assert int(np.argmax(e.acts)) == 6  # the peak sits three quarters into the window
        assert e.acts.max() == acts[e.context].max()
        np.testing.assert_array_equal(e.tokens, tokens[e.context, e.start : e.start + 8])
    assert sample_examples(acts, tokens, Sizes(n_explain=15, n_top=10), np.random.default_rng(0)) is None


def test_a_feature_firing_everywhere_gets_its_quietest_windows_as_negatives():
    acts, tokens = _planted()
    dense = acts + 0.01  # fires on every token: no window is silent
    dense[25, 20:28] = 0.001  # the quietest window of all
    sizes = Sizes(window=8, n_explain=4, n_top=3, n_quantile=3, n_non_firing=4)
    ex = sample_examples(dense, tokens, sizes, np.random.default_rng(0))
    assert ex.quietest == 4 and all(e.drawn == "quietest" for e in ex.non_firing)
    quiet = {e.context: e for e in ex.non_firing}
    assert 25 in quiet and quiet[25].start == 20  # the lowest peak there is
    for e in ex.non_firing:  # each is its context's quietest window
        peaks = np.lib.stride_tricks.sliding_window_view(dense[e.context], 8).max(-1)
        assert e.acts.max() == peaks.min()


def test_fuzzed_marks_move_every_mark_off_the_true_ones():
    e = Excerpt(0, 0, np.arange(8), np.array([0, 4, 0, 0.5, 2, 0, 0, 0], np.float32))
    truth = true_marks(e)
    np.testing.assert_array_equal(truth, [0, 1, 0, 0, 1, 0, 0, 0])  # >= 1/4 of the peak 4: 4 and 2, not 0.5
    for seed in range(5):
        moved = fuzzed_marks(e, np.random.default_rng(seed))
        assert moved.sum() == 2 and not (moved & truth).any()


def test_copies_of_worked_examples_are_terms_the_marks_do_not_bear_out():
    assert copied("adverbs ending in -ly", ["the", "cat"]) == ["adverb", "-ly"]
    assert copied("adverbs ending in -ly", ["quickly", "softly"]) == []  # a real -ly feature
    assert copied('the word "bank"', ["river"]) == ["bank"] and copied("bank", ["banks"]) == []
    assert copied("names of cities", ["Paris"]) == []
    e = Excerpt(0, 0, np.array([1, 2, 3]), np.array([0, 3, 1], np.float32))
    assert marked_tokens([e], {1: "The", 2: " cat", 3: " sat"}) == ["cat", "sat"]  # 1 >= 1/4 of the peak 3


def test_scoring_prompts_put_the_shared_part_first():
    strings = {1: "The", 2: " cat", 3: " sat"}
    a, b = (detect_request(Excerpt(0, 0, np.array(t), np.zeros(2, np.float32)), "cats", strings)
            for t in ([1, 2], [2, 3]))
    assert a.messages[0] == b.messages[0]  # the instructions: shared by every feature
    user_a, user_b = a.messages[1][1], b.messages[1][1]
    shared = next(i for i, (x, y) in enumerate(zip(user_a, user_b, strict=False)) if x != y)
    assert "cats" in user_a[:shared] and user_a[shared:] == "The cat"  # only the excerpt differs, at the end


def test_render_marks_and_display():
    strings = {1: "The", 2: " cat", 3: "\n", 4: " sat"}
    e = Excerpt(0, 0, np.array([1, 2, 3, 4]), np.array([0.0, 2.0, 0.0, 0.4], np.float32))
    assert render(e, strings, threshold=0.5) == "The <<cat>>↵ sat"  # 0.4 is below the threshold: not marked
    assert render(e, strings) == "The cat↵ sat"
    assert display("a\tb\r\n") == "a⇥b↵"
    request = explain_request([e], strings)
    assert "cat (1)" in request.messages[-1][1] and "<<cat>>" in request.messages[-1][1]
    assert clean_explanation('\n Explanation: "animal names"\nmore') == "animal names"


# --- controls and calibration ---------------------------------------------------------------------------------------


def test_controls_fire_on_their_token_and_shuffled_twins_keep_the_count():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 50, size=(40, 32))
    keep = np.ones_like(tokens, bool)
    keep[:, 0] = False
    strings = {i: f" word{chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(50)}
    known, shuffled = control_features(tokens, keep, strings, n=3, min_contexts=5, seed=0, max_context_fraction=1.0)
    assert len(known) == len(shuffled) == 3
    for k, s in zip(known, shuffled, strict=True):
        token = next(t for t, w in strings.items() if repr(display(w)) == k.key.split(" ", 1)[1])
        np.testing.assert_array_equal(k.acts == 1, (tokens == token) & keep)
        assert s.acts.sum() == k.acts.sum() and not s.acts[~keep].any()


def test_calibrate_separation_and_threshold():
    known = [Scored("k1", "x", simulation=0.6, detection_auroc=1.0, yes_probs=[0.9, 0.8], labels=[True, False]),
             Scored("k2", "x", simulation=0.5, detection_auroc=0.9, yes_probs=[0.95, 0.7], labels=[True, False])]
    shuffled = [Scored("s1", "x", simulation=0.0, detection_auroc=0.5), Scored("s2", "x", simulation=0.1,
                                                                                 detection_auroc=0.4)]
    cal = calibrate(known, shuffled)
    assert cal["separation_detection_auroc"] == 1.0 and cal["separation_simulation"] == 1.0
    assert 0.8 <= cal["threshold"] < 0.9 and cal["balanced_accuracy_known_at_threshold"] == 1.0
    assert cal["balanced_accuracy_known_at_half"] == 0.5


# --- weights ----------------------------------------------------------------------------------------------------------


def test_assemble_checks_the_official_hash(tmp_path):
    import hashlib

    parts = []
    for i, blob in enumerate([b"GGUF", b"part two", b"end"]):
        (p := tmp_path / f"part{i}.bin").write_bytes(blob)
        parts.append(p)
    good = hashlib.sha256(b"GGUFpart twoend").hexdigest()
    target = assemble(parts, tmp_path / "out" / "model.gguf", good)
    assert target.read_bytes() == b"GGUFpart twoend"
    with pytest.raises(BenchError, match="not the official"):
        assemble(parts, tmp_path / "bad" / "model.gguf", "0" * 64)
    assert not any((tmp_path / "bad").iterdir())  # nothing half-written is left to be loaded later


# --- the in-process judge and the pipeline, for real ----------------------------------------------------------------


@pytest.fixture(scope="module")
def smol():
    from bench.judge.llamacpp import LlamaCppBackend

    return LlamaCppBackend(JudgeConfig(judge="smollm2-135m", n_ctx=2048))


def test_an_answer_does_not_depend_on_what_the_cache_held_before(smol):
    import bench.judge.llamacpp as llamacpp

    system = ("system", "You check descriptions of neurons. Answer yes or no only.")
    prompts = [(system, ("user", f"Neuron description: the word bank\nText: {t}"))
               for t in ("the cat sat on the mat", "money from the bank was", "the river bank flooded", "x = 7 + 2")]

    def cold(m):
        smol._kv.clear()
        smol.llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        return smol.complete(m, 2, 20)

    # and two that share whole blocks beyond the instructions (a worked example, as the simulation prompt has)
    shared = " ".join(f"step {i}: the cat sat on the mat." for i in range(30))
    prompts += [(system, ("user", f"{shared}\nNow: {t}")) for t in ("is this about banks?", "and this?")]
    warm = [smol.complete(m, 2, 20) for m in prompts]  # each after the previous one: what they share reused
    backwards = [smol.complete(m, 2, 20) for m in reversed(prompts)][::-1]
    explained = smol.complete(prompts[0][1:], 5, 0)  # another first message in between
    assert explained.completion_tokens > 0
    # exactly: a resumed run's cached answers and a fresh run's agree bit for bit
    assert [cold(m) for m in prompts] == warm == backwards
    # readouts keep the whole blocks they share (completions take their rest as one piece): the same bits cold,
    # after the other readout, and after a completion of the same tokens in the other layout
    assert len(smol._prompt(prompts[-1])[0]) > smol._prompt(prompts[-1])[1] + 3 * llamacpp.BLOCK

    def read(m):
        return smol.readout(m, ["yes"], [0], ["yes", "no"])

    warm = [read(m) for m in prompts[-2:]]
    backwards = [read(m) for m in reversed(prompts[-2:])][::-1]
    smol.complete(prompts[-1], 1, 0)
    after = read(prompts[-1])
    fresh = []
    for m in prompts[-2:]:
        smol._kv.clear()
        smol.llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        fresh.append(read(m))
    assert fresh == warm == backwards and after == warm[1]


def test_readout_matches_greedy_next_token(smol):
    messages = (("user", "Count: 1, 2, 3, 4, 5. Continue the count with the next digit only."),)
    done = smol.complete(messages, max_tokens=1, logprobs=20)
    table = smol.readout(messages, [""], [0], [str(i) for i in range(10)])["tables"][0]
    # an empty pre-fill reads the first reply token: the same distribution as the completion's
    for digit, lp in table.items():
        if digit in done.top_logprobs[0]:
            assert lp == pytest.approx(done.top_logprobs[0][digit], abs=1e-5)


def test_choose_decodes_a_group_side_by_side_as_a_function_of_the_group(smol, monkeypatch):
    import bench.judge.llamacpp as llamacpp

    system = ("system", "You check descriptions of neurons. Answer yes or no only.")
    texts = ["the cat sat on the mat", "a dog barked loudly at night in the garden", "money from the bank was",
             "he ran quickly home", "the river bank flooded", "on Monday the house was sold", "x = 7 + 2"]
    prompts = [(system, ("user", f"Neuron description: the word bank\nText: {t}")) for t in texts]
    group = smol.choose(prompts, 20)
    alone = [smol.complete(m, 1, 20) for m in prompts]

    def p_yes(c):
        return option_probability(c.top_logprobs[0], ("yes", "no"))

    # each prompt's own answer, up to the rounding of another batch shape: P(yes) moved by up to 0.04 here and on
    # the 1.5B judge (a wrong position, or a sequence that saw another's tokens, would change it wholesale)
    for g, a in zip(group, alone, strict=True):
        assert (g.prompt_tokens, g.completion_tokens, g.tokens) == (a.prompt_tokens, 1, a.tokens)
        assert abs(p_yes(g) - p_yes(a)) < 0.06, (g, a)
    # a function of the list alone: the same bits after other work changed the cache
    smol.complete((("user", "Something else entirely, and longer than the rest."),), 3, 0)
    assert smol.choose(prompts, 20) == group
    # more prompts than a decode takes: split in list order, every prompt answered, the split reproducible
    monkeypatch.setattr(llamacpp, "MAX_GROUP", 3)
    split = smol.choose(prompts, 20)
    assert len(split) == len(prompts) and all(abs(p_yes(a) - p_yes(b)) < 0.06 for a, b in zip(split, group, strict=True))
    assert smol.choose(prompts, 20) == split


def test_readouts_read_a_group_side_by_side_at_every_slot(smol):
    from bench.judge.base import Judge, Simulate

    system = ("system", "You simulate a neuron. For each token write the token, a tab, and a digit 0-9.")
    texts = [["the", " cat", " sat"], ["money", " from", " the", " bank"], ["the", " river", " bank", " flooded"]]
    requests = [(system, ("user", f"Neuron description: the word bank\nText: {''.join(t)}\nAnswer:"))
                for t in texts]
    args = [([p for tok in t for p in (f"{tok}\t", "unknown\n")], list(range(0, 2 * len(t), 2))) for t in texts]
    digits = [str(i) for i in range(10)]
    group = smol.readouts([(m, p, s) for m, (p, s) in zip(requests, args, strict=True)], digits)
    alone = [smol.readout(m, p, s, digits) for m, (p, s) in zip(requests, args, strict=True)]
    # every slot of every prompt read from its own sequence: the same tables up to another batch shape's rounding
    # (a slot read at a wrong row, or a sequence that saw another's tokens, would move them wholesale)
    for g, a in zip(group, alone, strict=True):
        assert g["prompt_tokens"] == a["prompt_tokens"] and len(g["tables"]) == len(a["tables"]) > 2
        for tg, ta in zip(g["tables"], a["tables"], strict=True):
            assert tg.keys() == ta.keys() == set(digits)
            assert max(abs(np.exp(tg[d]) - np.exp(ta[d])) for d in digits) < 0.06, (tg, ta)
    smol.complete((("user", "Something else entirely, and longer than the rest."),), 3, 0)
    assert smol.readouts([(m, p, s) for m, (p, s) in zip(requests, args, strict=True)], digits) == group
    # through the judge: a group of simulations is one cached call, its answers the backend's grouped ones
    judge = Judge(smol)
    sims = [Simulate(m, tuple(t), group="simulation:0") for m, t in zip(requests, texts, strict=True)]
    replies = judge.map(sims)
    assert [r.ok for r in replies] == [True] * 3 and judge.usage.requests == 3
    expect = [[sum(int(d) * np.exp(lp) for d, lp in t.items()) / sum(np.exp(lp) for lp in t.values())
               for t in g["tables"]] for g in group]
    assert [v for r in replies for v in r.value] == pytest.approx([v for e in expect for v in e], abs=1e-9)


@pytest.mark.slow
def test_pipeline_with_a_real_judge_then_the_rerun_is_free(smol, model, store, tmp_path):
    tokens, keep = store.eval.tokens(), store.eval.keep()
    strings = {int(t): model.tokenizer.decode([int(t)]) for t in np.unique(tokens)}
    sizes = Sizes(window=8, n_explain=2, n_top=1, n_quantile=1, n_non_firing=2, n_fuzz=2, n_simulate=1)
    known, shuffled = control_features(tokens, keep, strings, n=1, min_contexts=sizes.min_contexts, seed=0)
    features = known + shuffled + [Feature("never fires", np.zeros(tokens.shape, np.float32))]
    judge = Judge(smol, ResponseCache(tmp_path / "replies.sqlite"))
    first, rare = interpret(features, tokens, strings, judge, sizes, seed=0)
    assert rare == 1 and len(first) == 2
    assert judge.usage.failed == 0  # every request answered and usable (greedy: always the same answers)
    for s in first:
        assert s.explanation and -1 <= s.simulation <= 1 and 0 <= s.detection_auroc <= 1, s.to_json()
        assert 0 <= s.fuzzing_auroc <= 1 and s.copied == []
        assert [d["positive"] for d in s.examples["detection"]] == [True, True, False, False]
        assert sorted(d["positive"] for d in s.examples["fuzzing"]) == [False, True]  # half the marks moved
        assert len(s.examples["simulation_excerpts"]) == 1
    per_feature = 1 + sizes.samples_per_feature  # the explanation, 4 detection, 2 fuzzing, 1 simulation
    spent = judge.usage.prompt_tokens
    assert spent > 0 and judge.usage.requests == 2 * per_feature == 2 * 8
    again, _ = interpret(features, tokens, strings, judge, sizes, seed=0)
    assert judge.usage.prompt_tokens == spent and judge.usage.cached == 2 * per_feature  # nothing recomputed
    assert [s.to_json() for s in again] == [s.to_json() for s in first]


# --- the task's metrics, with a stand-in judge ---------------------------------------------------------------------


class _HashJudge:
    """A deterministic stand-in for an LLM: answers are drawn from a hash of the prompt, so every feature gets its
    own scores (AUROC in quarters, varied simulations) in milliseconds. Simulates all at once, like llama.cpp."""

    name = "hash"
    concurrency = 1

    def check(self) -> None:
        pass

    @staticmethod
    def _h(messages) -> int:
        import hashlib

        return int(hashlib.sha256(repr(messages).encode()).hexdigest()[:8], 16)

    def complete(self, messages, max_tokens, logprobs=0):
        if not logprobs:  # an explanation
            return Completion("the same few tokens", prompt_tokens=1, completion_tokens=1)
        p = (self._h(messages) % 97 + 1) / 99
        return Completion("yes", ["yes"], [{"yes": np.log(p), "no": np.log(1 - p)}], 1, 1)

    def readout(self, messages, pieces, slots, digits):
        h = self._h(messages)
        return {"tables": [{str((h >> (i % 24)) % 10): 0.0} for i in slots], "prompt_tokens": 1}


def test_metrics_are_means_over_features_with_the_dictionary_index_as_id(model, store):
    import json

    import torch

    from bench.dictionary import LinearDictionary
    from tasks.autointerp import AutoInterp
    from tasks.base import TaskContext

    judge = Judge(_HashJudge())
    ctx = TaskContext(store, store.hook, lambda: model, seed=0, judge_loader=lambda: judge)
    task = AutoInterp(n_features=6, n_controls=1, window=8, n_explain=2, n_score_top=2, n_score_quantile=1,
                      n_score_non_firing=2, n_fuzz=2, n_simulate=1)
    task.prepare(ctx)
    d = store.train.d_model
    mean = store.train.kept_activations().mean(0)
    dictionary = LinearDictionary.from_matrices(torch.eye(d), torch.eye(d), mean)  # every code fires often
    out = task.evaluate(dictionary, ctx)
    features = out.details["features"]
    assert len(features) == 6
    for name, key in (("simulation", "simulation"), ("detection_auroc", "detection_auroc"),
                      ("fuzzing_auroc", "fuzzing_auroc"), ("detection_bal_acc", "detection_balanced_accuracy")):
        m = out.metrics[name]
        per = {f["feature"]: f[key] for f in features if f[key] is not None}
        assert m.evidence.ids == list(per) and all(0 <= int(i) < dictionary.d_dict for i in per)
        assert m.value == pytest.approx(np.mean(list(per.values())))
        assert m.interval_info.n == len(per) and m.interval_info.sources == ("features sampled", "judge")
        if len(per) >= 5 and len(set(per.values())) > 1:
            assert m.interval is not None and m.interval[0] <= m.value <= m.interval[1], name
        json.dumps(m.to_json())  # the result file can hold it
    assert out.metrics["detection_auroc"].interval is not None  # quarters from the hash: not all equal here

    task.n_features = 3
    few = task.evaluate(dictionary, ctx).metrics
    for m in few.values():
        assert m.interval is None and "too few" in m.interval_info.reason


# --- a judge that stops answering: nothing is stored as finished ----------------------------------------------------


def test_unanswered_threshold():
    from tasks.autointerp.task import MAX_UNANSWERED, unanswered

    def spent(n, bad):
        return {"requests": n, "unanswered": bad}

    assert MAX_UNANSWERED == 0.1
    assert unanswered(spent(40, 0), "") is None
    assert unanswered(spent(40, 4), "HTTP 500") is None  # a tenth is tolerated ...
    assert unanswered(spent(40, 5), "HTTP 500") == "5 of 40 judge requests failed (HTTP 500)"  # ... more is not
    assert unanswered(spent(40, 1), "HTTP 500", ["simulation"]) == (
        "1 of 40 judge requests failed, leaving simulation undefined (HTTP 500)")  # few, but maybe why it is NaN
    assert unanswered(spent(40, 0), "", ["simulation"]) is None  # malformed answers: the judge's, kept


FAIL = Answer({"error": {"message": "overloaded"}}, 500, {"Retry-After": "0"})
SMALL = dict(n_features=2, n_controls=1, window=8, n_explain=2, n_score_top=1, n_score_quantile=1,
             n_score_non_firing=2, n_fuzz=2, n_simulate=1)


def _judge_at(url: str) -> Judge:
    from bench.judge.openai_endpoint import OpenAIEndpoint

    return Judge(OpenAIEndpoint(JudgeConfig(base_url=url, model="x", max_retries=1), backoff_s=0.0))


def test_judge_that_answers_once_then_fails_stops_the_task(model, store):
    from tasks.autointerp import AutoInterp
    from tasks.base import TaskContext

    with serving(lambda n, body: healthy(n, body) if n == 0 else FAIL) as server:
        judge = _judge_at(server.url)
        judge.backend.check()  # the one answered request, as a run starts
        ctx = TaskContext(store, store.hook, lambda: model, seed=0, judge_loader=lambda: judge)
        with pytest.raises(BenchError, match=rf"autointerp judge calibration: (\d+) of \1 judge requests failed "
                                             rf"\(the judge at {server.url} answers HTTP 500 \(2 attempts\)\); nothing"):
            AutoInterp(**SMALL).prepare(ctx)
        assert judge.usage.unanswered > 0 and server.count == 1 + 2 * judge.usage.unanswered


def test_a_row_the_judge_failed_is_incomplete(model, store):
    import torch

    from bench.dictionary import LinearDictionary
    from tasks.autointerp import AutoInterp
    from tasks.base import TaskContext

    down = {"now": False}
    with serving(lambda n, body: FAIL if down["now"] else healthy(n, body)) as server:
        judge = _judge_at(server.url)
        ctx = TaskContext(store, store.hook, lambda: model, seed=0, judge_loader=lambda: judge)
        task = AutoInterp(**SMALL)
        task.prepare(ctx)
        d = store.train.d_model
        dictionary = LinearDictionary.from_matrices(torch.eye(d), torch.eye(d), store.train.kept_activations().mean(0))
        ok = task.evaluate(dictionary, ctx)
        usage = ok.details["judge"]["usage"]
        assert ok.incomplete is None and usage["requests"] == 2 * 8 and usage["failed"] == usage["unanswered"] == 0
        assert all(np.isfinite(m.value) for m in ok.metrics.values()), ok.metrics
        down["now"] = True
        failed = task.evaluate(dictionary, ctx)
        assert failed.incomplete == (f"2 of 2 judge requests failed (the judge at {server.url} answers HTTP 500 "
                                     "(2 attempts))")  # two explanations failed: nothing else was asked


def test_variance_splits_per_feature_scores_into_within_and_between():
    from tasks.autointerp.task import variance

    # detection AUROCs 0.5, 0.7, 0.9 (sample variance 0.04) with DeLong variances 0.01, 0.02, 0.03 (mean 0.02)
    scored = [Scored(str(i), "x", detection_auroc=a, within={"detection": w},
                     examples={"detection": [{"yes_prob": 0.5}] * 4 + [{"yes_prob": None}]})
              for i, (a, w) in enumerate(((0.5, 0.01), (0.7, 0.02), (0.9, 0.03)))]
    v = variance(scored)["detection_auroc"]
    assert v["total"] == pytest.approx(0.04) and v["within"] == pytest.approx(0.02)
    assert v["between"] == pytest.approx(0.02) and v["samples_per_feature"] == 4  # answered samples only
    assert variance(scored)["fuzzing_auroc"] == {"total": None, "within": None, "between": None,
                                                 "samples_per_feature": None}  # no feature has a fuzzing score

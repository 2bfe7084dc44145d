"""Method and task settings are checked when they are built, from a spec, a preset or code: wrong types and
ranges are one-line BenchErrors before any work, and every registered method and task builds under every preset."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

import methods
import tasks
from bench.config import PRESETS, make_config
from bench.errors import BenchError
from bench.specs import check_fields, param, positive
from bench.units import build_methods, build_tasks
from methods.sae_topk import SAETopK
from tasks.toy_superposition import ToyData

BAD_METHODS = [
    ("sae-topk[k=2.5]", "sae-topk: k=2.5 is not an integer"),
    ("sae-topk[k=nan]", "sae-topk: k=nan is not an integer"),
    ("sae-topk[k=-3]", "sae-topk: k=-3 must be > 0"),
    ("sae-topk[k=16|2.5]", "k=2.5 is not an integer"),  # one bad value of a sweep
    ("sae-relu[dict_ratio=0]", "sae-relu: dict_ratio=0 must be > 0"),
    ("sae-relu[batch_size=0]", "batch_size=0 must be > 0"),
    ("sae-relu[batch_size=64.5]", "batch_size=64.5 is not an integer"),
    ("sae-relu[lr=nan]", "lr=nan is not a finite number"),
    ("sae-relu[lr=0]", "lr=0 must be > 0"),
    ("sae-relu[epochs=inf]", "epochs=inf is not a finite number"),
    ("sae-relu[warmup_steps=-1]", "warmup_steps=-1 must be >= 0"),
    ("sae-relu[decay_fraction=1.5]", "decay_fraction=1.5 must be between 0 and 1"),
    ("sae-relu[l1_coeff=-0.001]", "l1_coeff=-0.001 must be >= 0"),
    ("sae-relu[dead_after_tokens=0]", "must be > 0"),
    ("sae-relu[dead_latents=auxk]", "unknown dead_latents 'auxk'; choose from none, resample"),
    ("sae-topk[dead_latents=resample]", "unknown dead_latents 'resample'; choose from none, auxk"),
    ("sae-relu[decoder_norm=l2]", "unknown decoder_norm 'l2'; choose from unit, free"),
    ("sae-relu[tied=maybe]", "not a valid bool"),
    ("sae-topk[aux_coeff=-1]", "aux_coeff=-1 must be >= 0"),
    ("sae-batchtopk[k_aux=0]", "k_aux=0 must be > 0"),
    ("sae-jumprelu[bandwidth=0]", "bandwidth=0 must be > 0"),
    ("sae-jumprelu[threshold_init=-0.5]", "threshold_init=-0.5 must be > 0"),
    ("sae-gated[l1_coeff=nan]", "not a finite number"),
    ("sae-matryoshka[n_prefixes=0]", "n_prefixes=0 must be > 0"),
    ("ica[max_iter=0]", "ica: max_iter=0 must be > 0"),
    ("ica[tol=nan]", "tol=nan is not a finite number"),
    ("ica[n_components=2.5]", "n_components=2.5 is not an integer"),
    ("pca[n_components=0]", "pca: n_components=0 must be > 0"),
    ("pca[max_tokens=none]", "not a valid int"),
    ("pca[bogus=1]", "pca has no parameter 'bogus'"),
    ("kmeans[dict_ratio=-1]", "kmeans: dict_ratio=-1 must be > 0"),
    ("random[dict_ratio=0]", "random: dict_ratio=0 must be > 0"),
    ("neurons[max_tokens=0]", "neurons: max_tokens=0 must be > 0"),
    ("nope", "unknown method 'nope'"),
]

BAD_TASKS = [
    ("loss_recovered[n_contexts=0]", "loss_recovered: n_contexts=0 must be > 0"),
    ("reconstruction[max_tokens=1.5]", "reconstruction: max_tokens=1.5 is not an integer"),
    ("reconstruction[batch_size=-4]", "batch_size=-4 must be > 0"),
    ("sparse_probing[ks=1+0]", "sparse_probing: ks=0 must be > 0"),
    ("sparse_probing[ks=]", "ks needs at least one value"),
    ("sparse_probing[concepts=colour]", "unknown concepts 'colour'; choose from genre, pronoun"),
    ("sparse_probing[n_train_prompts=5]", "n_train_prompts=5 must be an even number >= 4"),
    ("sparse_probing[c=0]", "c=0 must be > 0"),
    ("toy_superposition[scale=huge]", "unknown scale 'huge'; choose from smoke, fast, paper"),
    ("toy_superposition[threshold=1.5]", "threshold=1.5 must be between 0 and 1"),
    ("toy_superposition[n_train=0]", "n_train=0 must be > 0"),
    ("stability[threshold=nan]", "threshold=nan is not a finite number"),
    ("concept_erasure[n_train=7]", "concept_erasure: n_train=7 must be an even number >= 4"),
    ("concept_erasure[ks=2.5]", "ks=2.5 is not an integer"),
    ("ioi_patching[n_prompts=3]", "ioi_patching: n_prompts=3 must be an even number >= 2"),
    ("ioi_patching[greedy_targets=0.5+2]", "greedy_targets=2 must be between 0 and 1"),
    ("autointerp[n_features=2.5]", "autointerp: n_features=2.5 is not an integer"),  # types: every task, by its base
    ("nope", "unknown task 'nope'"),
]


def _one_line_error(build) -> str:
    with pytest.raises(BenchError) as e:
        build()
    message = str(e.value)
    assert "\n" not in message and message.strip() == message
    return message


@pytest.mark.parametrize("spec, fragment", BAD_METHODS)
def test_bad_method_spec_is_one_line_error(spec, fragment):
    assert fragment in _one_line_error(lambda: build_methods(make_config("smoke", methods=(spec,))))


@pytest.mark.parametrize("spec, fragment", BAD_TASKS)
def test_bad_task_spec_is_one_line_error(spec, fragment):
    assert fragment in _one_line_error(lambda: build_tasks(make_config("smoke", tasks=(spec,))))


def test_bad_preset_override_and_seed_are_refused():
    cfg = make_config("smoke", methods=("sae-relu",), method_params={"sae-*": {"lr": 0.0}})
    assert "sae-relu: lr=0 must be > 0" in _one_line_error(lambda: build_methods(cfg))
    cfg = make_config("smoke", tasks=("loss_recovered",), task_params={"loss_recovered": {"n_contexts": 2.5}})
    assert "n_contexts=2.5 is not an integer" in _one_line_error(lambda: build_tasks(cfg))
    cfg = make_config("smoke", methods=("sae-relu",), seed=-1)
    assert "sae-relu: seed=-1 must be >= 0" in _one_line_error(lambda: build_methods(cfg))


def test_code_that_builds_objects_directly_is_checked_too():
    assert "k=2.5 is not an integer" in _one_line_error(lambda: SAETopK(k=2.5))
    assert "d=0 must be > 0" in _one_line_error(lambda: ToyData(d=0))  # a frozen dataclass
    assert "is not an integer" in _one_line_error(lambda: SAETopK(k=True))  # a bool is not a count
    assert "is not a string" in _one_line_error(lambda: SAETopK(dead_latents=None))


def test_numbers_are_normalised_to_their_field_type():
    m = methods.build_method("sae-topk[k=1e3,epochs=3]")
    assert m.k == 1000 and type(m.k) is int and m.epochs == 3.0 and type(m.epochs) is float
    assert methods.canonical_spec(m) == "sae-topk[epochs=3.0,k=1000]"
    direct = SAETopK(k=32.0, dict_ratio=2)
    assert type(direct.k) is int and type(direct.dict_ratio) is float  # so labels and resume keys agree
    assert methods.build_method("pca[n_components=none]").n_components is None
    assert methods.build_method("pca[n_components=8]").n_components == 8
    assert tasks.build_task("reconstruction[max_tokens=none]").max_tokens is None
    assert tasks.build_task("sparse_probing[ks=1+5.0]").ks == (1, 5)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_method_and_task_builds_under_every_preset(preset):
    names = tuple(methods.REGISTRY)  # pretrained too: building it reads nothing (its path is checked by preflight)
    built = dict(build_methods(make_config(preset, methods=(",".join(names),), seeds=(0, 1))))
    assert {m.name for m in built.values()} == set(names)
    for method in built.values():
        check_fields(method)  # idempotent: the normalised values pass again
    built_tasks = build_tasks(make_config(preset, tasks=("all",)))
    assert {t.name for _, t in built_tasks} == {n for n, c in tasks.REGISTRY.items() if getattr(c, "in_all", True)}
    # the preset's overrides were applied, and passed the checks
    for pattern, params in PRESETS[preset].get("method_params", {}).items():
        for method in built.values():
            if method.name == pattern or (pattern.endswith("*") and method.name.startswith(pattern[:-1])):
                assert all(getattr(method, k) == v for k, v in params.items()), (pattern, method)
    for name, params in PRESETS[preset].get("task_params", {}).items():
        task = next(t for _, t in built_tasks if t.name == name)
        assert all(getattr(task, k) == (tuple(v) if isinstance(v, tuple) else v) for k, v in params.items())


def test_a_new_field_declares_its_range_with_param():
    @dataclass
    class Toy:
        name = "toy"
        n: int = positive(3)
        share: float = param(0.5, gt=0, le=1)
        even: int = param(2, ge=2, even=True)
        kind: str = param("a", choices=("a", "b"))
        sizes: tuple[int, ...] = positive((1, 2))

    check_fields(Toy())
    for bad, fragment in [(dict(n=0), "toy: n=0 must be > 0"), (dict(share=0.0), "share=0 must be > 0"),
                          (dict(share=math.inf), "share=inf is not a finite number"),
                          (dict(even=3), "even=3 must be an even number >= 2"),
                          (dict(kind="c"), "unknown kind 'c'; choose from a, b"), (dict(sizes=(1, -1)), "sizes=-1")]:
        assert fragment in _one_line_error(lambda bad=bad: check_fields(Toy(**bad)))


@pytest.mark.parametrize("spec, fragment", [("sae-topk[k=2.5]", "sae-topk: k=2.5 is not an integer"),
                                            ("pretrained:/no/such/sae", "no such directory")])
def test_run_refuses_bad_methods_before_reading_any_activations(spec, fragment, tmp_path, monkeypatch, capsys):
    from bench.cli import main
    from bench.runner import Runner

    def harvest_planned(self):
        raise AssertionError("planned the activations before checking the methods")

    monkeypatch.setattr(Runner, "plan_activations", harvest_planned)
    code = main(["run", "--preset", "smoke", "--methods", spec, "--tasks", "reconstruction", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and "Traceback" not in err, err

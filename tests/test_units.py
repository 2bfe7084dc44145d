"""The grid's plan, GPU sizing and the paper preset, without the model: what can be checked in seconds on a CPU."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bench.config import make_config
from bench.device import check_device, check_sae_batch, context_bytes, scaled_batch
from bench.errors import BenchError
from bench.harvest import HarvestSpec
from bench.store import ExclusionRule
from bench.units import KUnknown, Side, build_methods, build_tasks, plan_evals, plan_side
from tests.test_cli import assert_one_line_error, cli

SPEC = HarvestSpec("m", "fp", "blocks.3.hook_resid_post", "corpus", 64, 8, 4, ExclusionRule())


def _plan(tmp_path: Path, methods: str, tasks: str = "reconstruction,toy_superposition,autointerp", **kw):
    cfg = make_config("smoke", methods=(methods,), tasks=(tasks,), **kw)
    return cfg, plan_side(cfg, Side(None, tmp_path, SPEC), build_methods(cfg), build_tasks(cfg))


def test_plan_groups_saes_sharing_a_pass_and_measures_k_on_the_first_sparse_method(tmp_path):
    cfg, plan = _plan(tmp_path, "pca,sae-topk[k=8|16],sae-relu,sae-relu[batch_size=128]")
    assert [u.labels for u in plan.fits] == [("pca",), ("sae-topk[k=8]", "sae-topk[k=16]", "sae-relu"),
                                             ("sae-relu[batch_size=128]",)]
    assert plan.k_unit.reference == "sae-topk[k=8]" and plan.fit_of("sae-topk[k=8]") is plan.fits[1]

    evals = plan_evals(cfg, plan, 12)
    by_task = {t: [r.label for u in evals.units if u.task == t for r in u.rows] for t, _ in plan.tasks}
    assert by_task["reconstruction"][-1] == "pca@top12" and "pca" in by_task["reconstruction"]
    assert "pca@top12" not in by_task["toy_superposition"]  # a task without top-k rows
    assert [len(u.rows) for u in evals.units if u.task == "autointerp"] == [5]  # the judge loads once for all rows
    assert all(len(u.rows) == 1 for u in evals.units if u.task != "autointerp")
    reference = next(r for u in evals.units for r in u.rows if r.base == "sae-topk[k=8]")
    assert reference.matched_k == 12 and not reference.topk

    unknown = plan_evals(cfg, plan, KUnknown)  # the k unit failed: the rows that need k wait for a rerun
    assert not any(r.topk or r.base == "sae-topk[k=8]" for u in unknown.units for r in u.rows)
    assert unknown.left_out == 3 + 1  # the reference in each task, pca@top in reconstruction


def test_task_methods_narrow_a_task_but_never_drop_a_method_named_in_methods(tmp_path):
    from bench.units import judge_work_left

    def autointerp_rows(methods, task_methods):
        cfg, plan = _plan(tmp_path, methods, task_methods=task_methods)
        rows = [r.label for u in plan_evals(cfg, plan, 5).units if u.task == "autointerp" for r in u.rows]
        return rows, plan.notes, judge_work_left(cfg, plan)

    default = make_config("default")
    assert default.task_methods == {"autointerp": ("sae-topk", "neurons", "random")}
    rows, notes, judge = autointerp_rows("all", {"autointerp": ("sae-t*", "neurons", "random")})
    assert rows == ["neurons", "random", "sae-topk"] and judge
    assert len(notes) == 1 and "autointerp evaluates neurons, random, sae-topk; it leaves out pca" in notes[0]
    assert "--task-methods autointerp=all" in notes[0]
    # the other tasks keep every method; a method named in --methods is evaluated whatever the preset says
    rows, notes, _ = autointerp_rows("all,pca", {"autointerp": ("neurons",)})
    assert rows == ["neurons", "pca"]
    assert autointerp_rows("all", {"autointerp": ("all",)})[0] == autointerp_rows("all", {})[0]
    rows, notes, judge = autointerp_rows("pca,ica", {"autointerp": ("sae-*",)})
    assert rows == ["pca", "ica"] and not notes and judge
    cfg, plan = _plan(tmp_path, "all", task_methods={"autointerp": ("no-such-method",)})
    assert "autointerp evaluates no method" in plan.notes[0] and not judge_work_left(cfg, plan)


def test_the_command_line_keeps_a_presets_methods_and_tasks_unless_it_names_its_own():
    from bench.cli import _parser, run_config

    power = run_config(_parser().parse_args(["run", "--preset", "autointerp-power"]))
    assert (power.methods, power.tasks) == (("sae-topk,neurons,random",), ("autointerp",))
    mine = run_config(_parser().parse_args(["run", "--preset", "autointerp-power", "--tasks", "reconstruction",
                                            "--task-methods", "autointerp=sae-*"]))
    assert mine.tasks == ("reconstruction",) and mine.task_methods == {"autointerp": ("sae-*",)}
    default = run_config(_parser().parse_args(["run", "--task-methods", "autointerp=all"]))
    assert default.tasks == ("all",) and default.task_methods == {"autointerp": ("all",)}


def test_k_is_fixed_or_not_needed_or_the_trained_sides(tmp_path):
    assert _plan(tmp_path, "pca,sae-relu", matched_k=7)[1].k == 7
    only_sparse = _plan(tmp_path, "sae-relu,sae-topk")[1]
    assert only_sparse.k is None and only_sparse.k_unit is None
    cfg = make_config("smoke", methods=("pca,sae-relu",))
    control = plan_side(cfg, Side("random-init", tmp_path / "c", SPEC), build_methods(cfg), build_tasks(cfg))
    assert control.k_from_trained and control.k_unit is None


def test_finished_results_are_not_planned_and_foreign_ones_refused(tmp_path):
    from bench.results import write_result
    from bench.units import code_versions, resume_key

    cfg, plan = _plan(tmp_path, "pca,sae-relu", "reconstruction")
    side, (label, method), (_, task) = plan.side, plan.methods[0], plan.tasks[0]
    key = resume_key(cfg, side, method, None, task)
    write_result(side.result_path(label, "reconstruction"), {"resume_key": key, "code_versions": code_versions(method, task)})
    evals = plan_evals(cfg, plan, 5)
    assert [r.label for u in evals.units for r in u.rows] == ["sae-relu", "pca@top5"]
    assert len(evals.done["reconstruction"]) == 1 and not evals.notes
    # the same settings from other code (or from before versions were recorded): recomputed, and said
    for versions in ({**code_versions(method, task), "task": 0}, None):
        write_result(side.result_path(label, "reconstruction"), {"resume_key": key, "code_versions": versions})
        evals = plan_evals(cfg, plan, 5)
        assert [r.label for u in evals.units for r in u.rows] == ["pca", "sae-relu", "pca@top5"]
        assert evals.notes and "recomputing reconstruction · pca" in evals.notes[0]
    write_result(side.result_path(label, "reconstruction"), {"resume_key": "other"})
    with pytest.raises(BenchError, match="use a new --out"):
        plan_evals(cfg, plan, 5)


def test_eval_dtype_names_its_results_and_float32_keeps_the_old_keys(tmp_path):
    from dataclasses import asdict, replace

    from bench.io import fingerprint
    from bench.units import resume_key

    cfg, plan = _plan(tmp_path, "pca", "reconstruction")
    side, (_, method), (_, task) = plan.side, plan.methods[0], plan.tasks[0]
    # float32's key is the one every existing result was written under (the fields as they were before the option)
    before = {"activations": side.spec.key(), "method": asdict(method), "matched_k": None, "task": task.name,
              "task_params": asdict(task), "seed": cfg.seed}
    assert resume_key(cfg, side, method, None, task) == fingerprint(before)
    bf16 = replace(cfg, eval_dtype="bfloat16")
    assert resume_key(bf16, side, method, None, task) not in (fingerprint(before), None)


def test_batches_scale_to_free_gpu_memory():
    assert scaled_batch(32, 10**6, None) == 32  # the CPU: as configured
    assert scaled_batch(32, 10**6, 80 * 10**9) == 1024  # an 80 GB GPU: capped
    assert scaled_batch(32, 10**6, 10**8) == 32  # 50 fit in half of 100 MB: the largest power of two is 32
    assert scaled_batch(32, 10**6, 2 * 10**7) == 10  # fewer than configured fit: what fits
    per_ctx = context_bytes(128, 576, 9, 1536)  # SmolLM2 at 128 tokens: ~10 MB per context with the margin
    assert 5 * 10**6 < per_ctx < 2 * 10**7
    methods = build_methods(make_config("smoke", methods=("sae-relu[batch_size=4096]",)))
    check_sae_batch([m for _, m in methods], 576, free_bytes=10**10)  # fits
    with pytest.raises(BenchError, match=r"batch_size=4096 .* e\.g\. --methods 'sae-relu\[batch_size="):
        check_sae_batch([m for _, m in methods], 576, free_bytes=10**8)
    with pytest.raises(BenchError, match="no CUDA device is visible"):
        check_device("cuda", cuda_available=lambda: False)
    assert check_device("cuda", here=False, cuda_available=lambda: False) == "cuda"  # Ray: the workers' GPUs


def test_paper_preset_settings():
    cfg = make_config("paper")
    (label, sae), *_ = build_methods(cfg)
    assert cfg.model == "pythia-70m-deduped" and cfg.ctx_len == 256 and cfg.hook(2) == "blocks.2.hook_resid_post"
    assert (label, sae.tied, sae.decoder_bias, sae.dict_ratio, sae.l1_coeff, sae.lr, sae.batch_size) == \
        ("sae-relu", True, False, 2.0, 8.6e-4, 1e-3, 1024)


def test_paper_preset_names_what_is_missing_in_one_line():
    assert_one_line_error(cli("run", "--preset", "paper"), "needs what is not here: EleutherAI/pythia-70m-deduped "
                                                           "in the local Hugging Face cache")
    assert_one_line_error(cli("run", "--preset", "paper", "--model", "smollm2-135m"), "Pile-like text: pass --text")


def test_errors_of_the_executor_options(monkeypatch):
    assert_one_line_error(cli("run", "--device", "cuda", "--preset", "smoke"), "no CUDA device is visible")
    assert_one_line_error(cli("run", "--ray-address", "auto", "--preset", "smoke"), "--ray-address needs --executor ray")
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray as if it were not installed: `import ray` raises ImportError
    missing = cli("run", "--executor", "ray", "--preset", "smoke")
    assert_one_line_error(missing, "pip install -e .[ray]")


def test_seeds_fit_seeded_methods_per_seed_in_one_sae_pass_and_evaluate_every_row_per_seed(tmp_path):
    cfg, plan = _plan(tmp_path, "neurons,pca,sae-relu,sae-topk", "reconstruction,stability", seeds=(0, 1, 2))
    # neurons are not seeded: fitted once; the SAEs of all three seeds share one pass over the activations
    assert [u.labels for u in plan.fits] == [
        ("neurons",), ("pca",), ("sae-relu", "sae-topk", "sae-relu~s1", "sae-topk~s1", "sae-relu~s2", "sae-topk~s2"),
        ("pca~s1",), ("pca~s2",)]
    methods = dict(plan.methods)
    assert methods["sae-topk~s2"].seed == 2 and methods["sae-topk"].seed == 0
    evals = plan_evals(cfg, plan, 8)
    rows = [r for u in evals.units if u.task == "reconstruction" for r in u.rows]
    labels = [r.label for r in rows]
    # every row once per seed; neurons' one dictionary is scored on each seed's eval sample
    assert {"neurons", "neurons~s1", "neurons~s2", "neurons@top8~s2", "pca@top8~s1", "sae-relu~s2"} <= set(labels)
    assert len(labels) == 3 * 6  # (neurons, pca, two SAEs, neurons@top8, pca@top8) x 3 seeds
    assert next(r for r in rows if r.label == "neurons~s1").base == "neurons"
    assert next(r for r in rows if r.label == "pca@top8~s1").base == "pca~s1"
    # stability: each seeded method once, against its other seeds
    assert sorted(r.label for u in evals.units if u.task == "stability" for r in u.rows) == ["pca", "sae-relu", "sae-topk"]
    one_seed_cfg, one_seed = _plan(tmp_path, "pca,sae-relu", "reconstruction,stability")
    assert not [u for u in plan_evals(one_seed_cfg, one_seed, 8).units if u.task == "stability"]


def test_seeds_on_the_command_line(tmp_path):
    from bench.cli import parse_seeds

    assert parse_seeds("0,1,2", 0) == (0, 1, 2) and parse_seeds("3", 5) == (5, 6, 7) and parse_seeds(None, 4) == (4,)
    for bad in ("0,0", "x", "0", "-1,2"):
        with pytest.raises(BenchError):
            parse_seeds(bad, 0)
    assert_one_line_error(cli("run", "--preset", "smoke", "--seeds", "1,1", "--out", str(tmp_path / "r")), "--seeds")

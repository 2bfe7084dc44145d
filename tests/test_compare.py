"""`python -m bench compare`: exit 0 unchanged, 1 on a regression past tolerance, a lost value or a missing result
(named), 2 on bad input (named); and the committed tolerances, which must let the gate fail on every task."""

from __future__ import annotations

import copy
import functools
import json
import math
import re

import pytest

from reports.compare import ABS_TOL, REL_TOL, UNIT_CAP, compare, method_key, parse_tolerances
from reports.runs import load_run
from tests.report_helpers import BASELINE, bench, bench_process, copy_run, edit_result

TASKS = sorted({json.loads(p.read_text())["task"] for p in (BASELINE / "results").glob("*.json")})


def _set(metric: str, value):
    def edit(record):
        record["metrics"][metric]["value"] = value
    return edit


@functools.cache
def _baseline():
    """The committed baseline, loaded once for the tests that only read it (each load takes ~0.4 s)."""
    return load_run(BASELINE)


@functools.cache
def _baseline_comparison():
    """The baseline against itself (every metric's tolerance), computed once for the tests that only read it."""
    return compare(_baseline(), _baseline())


def _run(run_dir):
    return _baseline() if run_dir == BASELINE else load_run(run_dir)


def _fvu(run_dir, method="sae-topk"):
    return next(r for r in _run(run_dir).records if r["method"] == method and r["task"] == "reconstruction")[
        "metrics"]["fvu"]["value"]


def test_unchanged_run_passes(tmp_path):
    current = copy_run(tmp_path / "current")
    result = bench("compare", str(BASELINE), str(current))
    assert result.returncode == 0, result.stderr
    assert "0 regressions" in result.stdout and "REGRESSION" not in result.stderr


def test_one_degraded_metric_fails_and_is_named(tmp_path):
    current = copy_run(tmp_path / "current")
    fvu = _fvu(BASELINE)
    tol = max(ABS_TOL, REL_TOL * fvu)
    edit_result(current, "sae-topk", "reconstruction", _set("fvu", fvu + 2 * tol))  # FVU: lower is better
    result = bench_process("compare", str(BASELINE), str(current))  # the interpreter's exit status: CI's gate
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("REGRESSION")]
    assert len(lines) == 1 and "sae-topk" in lines[0] and "reconstruction.fvu" in lines[0], result.stderr
    # the same move the good way, or within tolerance, is not a regression
    edit_result(current, "sae-topk", "reconstruction", _set("fvu", fvu - 2 * tol))
    assert bench("compare", str(BASELINE), str(current)).returncode == 0
    edit_result(current, "sae-topk", "reconstruction", _set("fvu", fvu + 0.5 * tol))
    assert bench("compare", str(BASELINE), str(current)).returncode == 0


def test_tolerance_override_and_a_lost_value(tmp_path):
    current = copy_run(tmp_path / "current")
    fvu = _fvu(BASELINE)
    edit_result(current, "sae-topk", "reconstruction", _set("fvu", fvu + 0.2))
    assert bench("compare", str(BASELINE), str(current), "--tolerance", "reconstruction.fvu=0.3").returncode == 0
    assert bench("compare", str(BASELINE), str(current), "--tolerance", "sae-topk:reconstruction.*=0.1").returncode == 1
    # a metric that had a value and has none now is a regression too
    edit_result(current, "pca", "loss_recovered", _set("kl", None))
    result = bench("compare", str(BASELINE), str(current), "--tolerance", "reconstruction.fvu=1", "--format", "json")
    assert result.returncode == 1
    (lost,) = [c for c in json.loads(result.stdout)["changes"] if c["status"] in {"lost", "regressed"}]
    assert (lost["method"], lost["task"], lost["metric"]) == ("pca", "loss_recovered", "kl")


def test_without_a_tolerance_file_the_interval_or_the_default_sets_the_tolerance(tmp_path):
    run = copy_run(tmp_path / "bare")
    (run / "tolerances.json").unlink()
    comparison = compare(load_run(run), load_run(run))
    by = {(c.key[3], c.metric): c for c in comparison.changes}
    with_interval = [c for c in comparison.changes if c.tolerance.source == "interval"]
    assert with_interval  # some tasks report intervals (the toy's MMCS, autointerp)
    for c in comparison.changes:  # the interval only where it is wider than the default
        default = max(ABS_TOL, REL_TOL * abs(c.baseline)) if c.baseline is not None else ABS_TOL
        assert c.tolerance.value == pytest.approx(default) or (c.tolerance.source == "interval"
                                                               and c.tolerance.value > default)
    assert by[("sae-topk", "reconstruction.fvu")].tolerance.source == "default"
    assert parse_tolerances(["a.b=5%"]) == {"a.b": "5%"}


def _committed() -> dict:
    return json.loads((BASELINE / "tolerances.json").read_text())


def _label(c) -> str:
    return re.sub(r"([][*?])", r"[\1]", f"{c.key[3]}:{c.metric}")


def test_committed_tolerances_are_measured_per_metric():
    """Every metric of the baseline with a finite value has its own measured entry (method:task.metric), never a
    band over a whole task, and the file says how it was made."""
    committed = _committed()
    assert "seed" in committed["_why"] and "--write-tolerances" in committed["_why"]
    assert not [k for k in committed if not k.startswith("_") and "*" in k]  # no catch-all bands
    comparison = _baseline_comparison()
    finite = [c for c in comparison.changes if c.baseline is not None and math.isfinite(c.baseline)]
    covered = [c for c in finite if _label(c) in committed]
    assert len(covered) >= 0.95 * len(finite), "refresh baselines/smoke/tolerances.json (docs/reports.md, CI)"
    for c in covered:
        assert c.tolerance.source == f"tolerances.json {_label(c)}" and c.tolerance.value == committed[_label(c)]
        measured = committed["_measured"][_label(c)]
        if measured.get("capped"):  # a [0, 1] metric whose smoke-size spread exceeds what could ever fail
            assert c.tolerance.value == UNIT_CAP < max(2 * measured["seed_delta"], measured["half_width"])
        else:
            assert c.tolerance.value >= max(2 * measured["seed_delta"], measured["half_width"], ABS_TOL) - 1e-12


def test_every_metric_degraded_by_twice_its_tolerance_is_a_regression():
    """The acceptance criterion over all metrics at once (each metric's verdict depends on that metric alone):
    degrade every finite metric of the baseline by 2 x its tolerance in its bad direction; every one is flagged."""
    baseline = _baseline()
    tolerances = {c.key: c.tolerance.value for c in _baseline_comparison().changes}
    worse = copy.deepcopy(baseline)
    worse.source = "degraded copy"  # its own tolerances.json is never read: the baseline's is
    n = 0
    for r in worse.records:
        for name, m in r["metrics"].items():
            if m["value"] is not None and math.isfinite(m["value"]):
                tol = tolerances[(r["model"], r["hook"], r.get("control") or "", method_key(r), r["task"], name)]
                m["value"] += -2 * tol if m["higher_is_better"] else 2 * tol
                n += 1
    result = compare(baseline, worse)
    assert n > 500 and len(result.regressions) == n
    assert {c.key[4] for c in result.regressions} == set(TASKS)


def test_one_metric_of_every_task_degraded_by_twice_its_committed_tolerance_fails(tmp_path):
    """The committed baseline, one metric of each task made worse by 2 x its entry in tolerances.json (the widest of
    the task's tolerances: the hardest to catch), all in one copy of the results (each metric's verdict depends on
    that metric alone, as above): exit 1, naming each of them and nothing else; each within its tolerance: exit 0."""
    committed = _committed()
    comparison = _baseline_comparison()
    widest = {}
    for task in TASKS:
        candidates = [c for c in comparison.changes if c.key[4] == task and c.baseline is not None
                      and math.isfinite(c.baseline) and _label(c) in committed]
        assert candidates, task
        widest[task] = max(candidates, key=lambda c: committed[_label(c)])
    current = copy_run(tmp_path / "current")
    for task, c in widest.items():
        tol = committed[_label(c)]
        edit_result(current, c.label, task, _set(c.key[5], c.baseline - 2 * tol if c.higher_is_better
                                                 else c.baseline + 2 * tol))
    result = bench("compare", str(BASELINE), str(current))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("REGRESSION")]
    assert len(lines) == len(TASKS), result.stderr
    for task, c in widest.items():
        assert len([line for line in lines if f"{c.label} · {c.metric}:" in line]) == 1, (task, lines)
    # within its tolerance each passes
    for task, c in widest.items():
        tol = committed[_label(c)]
        edit_result(current, c.label, task, _set(c.key[5], c.baseline + (-0.5 if c.higher_is_better else 0.5) * tol))
    assert bench("compare", str(BASELINE), str(current)).returncode == 0


@pytest.mark.parametrize("field, value", [("train_contexts", 7), ("preset", "default"),
                                          ("task_params.ioi_patching.n_prompts", 4)])
def test_incomparable_configs_exit_2_naming_the_field(tmp_path, field, value):
    current = copy_run(tmp_path / "current")
    config = json.loads((current / "config.json").read_text())
    *outer, last = field.split(".")
    node = config["config"]
    for part in outer:
        node = node[part]
    node[last] = value  # a nested setting is named by its full dotted path
    (current / "config.json").write_text(json.dumps(config))
    result = bench("compare", str(BASELINE), str(current))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error:") and f"'{field}'" in result.stderr, result.stderr


def test_another_eval_dtype_is_comparable_and_said(tmp_path):
    current = copy_run(tmp_path / "current")
    config = json.loads((current / "config.json").read_text())
    config["config"]["eval_dtype"] = "bfloat16"
    (current / "config.json").write_text(json.dumps(config))
    notes = compare(_baseline(), load_run(current)).notes
    assert any("evaluation precision differs (float32 vs bfloat16" in n for n in notes), notes
    assert not any("precision" in n for n in _baseline_comparison().notes)


def test_a_missing_result_or_metric_is_a_regression_unless_allowed(tmp_path):
    current = copy_run(tmp_path / "current")
    (path,) = (current / "results").glob("*__kmeans__sparse_probing.json")
    path.unlink()
    result = bench("compare", str(BASELINE), str(current), "--format", "md")
    assert result.returncode == 1, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("REGRESSION")]
    assert line.startswith("REGRESSION kmeans · sparse_probing: missing in the current run"), line
    assert "missing in the current run: kmeans · sparse_probing" in result.stdout
    for pattern in ("kmeans:sparse_probing", "kmeans:*", "sparse_probing"):
        allowed = bench("compare", str(BASELINE), str(current), "--allow-removed", pattern)
        assert allowed.returncode == 0 and "REGRESSION" not in allowed.stderr, (pattern, allowed.stderr)
    assert bench("compare", str(BASELINE), str(current), "--allow-removed", "pca:*").returncode == 1
    # one metric gone from a result that is still there
    path.write_text((BASELINE / "results" / path.name).read_text())
    edit_result(current, "pca", "loss_recovered", lambda r: r["metrics"].pop("kl"))
    result = bench("compare", str(BASELINE), str(current))
    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("REGRESSION")]
    assert line.startswith("REGRESSION pca · loss_recovered.kl: missing in the current run"), line
    assert bench("compare", str(BASELINE), str(current), "--allow-removed", "pca:loss_recovered.kl").returncode == 0
    assert bench("compare", str(BASELINE), str(current), "--allow-removed", "loss_recovered.*").returncode == 0
    # a task that returns no metrics at all fails too
    edit_result(current, "pca", "reconstruction", lambda r: r["metrics"].clear())
    result = bench("compare", str(BASELINE), str(current), "--allow-removed", "pca:loss_recovered.kl")
    assert result.returncode == 1 and "REGRESSION pca · reconstruction: missing" in result.stderr, result.stderr


def test_dense_bases_at_a_new_matched_k_are_the_same_rows(tmp_path):
    """`pca@top64` is the dense basis at the SAEs' L0, which another seed or an SAE change moves (`pca@top62`): the
    same row, compared, not a missing one plus a new one."""
    current = copy_run(tmp_path / "current")
    renamed = 0
    for path in (current / "results").glob("*@top64__*.json"):
        record = json.loads(path.read_text())
        record["method"], record["matched_k"] = record["method"].replace("@top64", "@top62"), 62
        path.write_text(json.dumps(record))
        renamed += 1
    assert renamed >= 4
    result = bench("compare", str(BASELINE), str(current), "--format", "md")
    assert result.returncode == 0, result.stderr
    assert "matched k differs" in result.stdout and "pca@top64 → pca@top62" in result.stdout
    edit_result(current, "pca@top62", "reconstruction", _set("fvu", 1.0))  # and its changes still count
    result = bench("compare", str(BASELINE), str(current))
    assert result.returncode == 1 and "REGRESSION pca@top64 · reconstruction.fvu" in result.stderr, result.stderr


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_value_that_became_non_finite_is_a_regression(tmp_path, value):
    """NaN, or ±inf whichever way is better (+inf would otherwise count as a huge improvement of a higher-is-better
    metric): a finite baseline value that is non-finite now fails, for a higher-is-better metric (cosine) and a
    lower-is-better one (fvu) alike."""
    current = copy_run(tmp_path / "current")
    metrics = [("pca", "reconstruction", "cosine"), ("pca", "reconstruction", "fvu")]
    for method, task, metric in metrics:
        edit_result(current, method, task, _set(metric, value))
    result = bench("compare", str(BASELINE), str(current), "--format", "json")
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("REGRESSION")]
    assert len(lines) == len(metrics), result.stderr
    for method, task, metric in metrics:
        (line,) = [line for line in lines if f"{method} · {task}.{metric}" in line]
        assert str(value) in line, line
    lost = [c for c in json.loads(result.stdout)["changes"] if c["status"] not in {"ok", "none"}]
    assert sorted(c["metric"] for c in lost) == sorted(m for *_, m in metrics)
    assert all(c["status"] == "lost" and c["current"] is None for c in lost)  # JSON has no NaN / inf


def test_bad_input_is_exit_2(tmp_path):
    for args, fragment in (([str(BASELINE), str(tmp_path / "missing")], "no such run directory"),
                           ([str(BASELINE), str(tmp_path)], "no result files"),
                           ([str(BASELINE), str(BASELINE), "--tolerance", "fvu"], "PATTERN=VALUE"),
                           (["3", str(BASELINE), "--history", str(tmp_path / "none.sqlite")], "no history")):
        result = bench("compare", *args)
        assert result.returncode == 2 and fragment in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_history_ids_compare_like_directories(tmp_path):
    db = tmp_path / "history.sqlite"
    current = copy_run(tmp_path / "current")
    edit_result(current, "sae-topk", "reconstruction", _set("fvu", _fvu(BASELINE) + 0.5))
    added = bench("history", "--history", str(db), "--add", str(BASELINE), str(current))
    assert added.returncode == 0, added.stderr
    result = bench("compare", "1", "#2", "--history", str(db))
    assert result.returncode == 1 and "sae-topk" in result.stderr and "reconstruction.fvu" in result.stderr


def _with_seed(run, seed: int):
    config = json.loads((run / "config.json").read_text())
    config["config"]["seed"] = seed
    (run / "config.json").write_text(json.dumps(config))
    return run


def test_seed_spread_becomes_committed_tolerances(tmp_path):
    other = _with_seed(copy_run(tmp_path / "seed1"), 1)
    fvu = _fvu(BASELINE)
    cosine = _values_of(BASELINE, "sae-topk", "reconstruction")["cosine"]
    edit_result(other, "sae-topk", "reconstruction", _set("fvu", fvu + 0.05))
    edit_result(other, "sae-topk", "reconstruction", _set("cosine", cosine - 0.3))
    out = tmp_path / "tolerances.json"
    assert bench("compare", str(BASELINE), str(other), "--write-tolerances", str(out)).returncode == 0
    written = json.loads(out.read_text())
    # 2 x the spread where the seeds differ; elsewhere (no spread) the interval's half-width or the default
    assert written["sae-topk:reconstruction.fvu"] == pytest.approx(0.1)
    lo, hi = next(r for r in _baseline().records if (r["method"], r["task"]) == ("sae-topk", "reconstruction"))[
        "metrics"]["fvu"]["interval"] or (0.0, 0.0)
    assert written["_measured"]["sae-topk:reconstruction.fvu"] == {"seed_delta": pytest.approx(0.05),
                                                                   "half_width": pytest.approx((hi - lo) / 2, rel=1e-3)}
    # a [0, 1] metric whose spread would give a band wider than could ever fail is capped, and says so
    assert written["sae-topk:reconstruction.cosine"] == UNIT_CAP
    assert written["_measured"]["sae-topk:reconstruction.cosine"]["capped"] is True
    pca = _values_of(BASELINE, "pca", "reconstruction")["cosine"]
    assert written["pca:reconstruction.cosine"] == pytest.approx(max(ABS_TOL, REL_TOL * pca), rel=1e-3)
    kl = next(r for r in _baseline().records if (r["method"], r["task"]) == ("sae-topk", "loss_recovered"))
    lo, hi = kl["metrics"]["kl"]["interval"]
    assert (hi - lo) / 2 > max(ABS_TOL, REL_TOL * kl["metrics"]["kl"]["value"])  # the interval is the widest here
    assert written["sae-topk:loss_recovered.kl"] == pytest.approx((hi - lo) / 2, rel=1e-2)
    assert written["sae-topk:loss_recovered.kl"] >= (hi - lo) / 2  # rounded up, never below what was measured
    assert all(k.startswith("_") or re.fullmatch(r"[^*?]+:[^*?:]+\.[^*?]+", k) for k in written)  # literal labels
    assert "(0, 1" in written["_why"]
    (other / "tolerances.json").write_text(out.read_text())
    edit_result(other, "sae-topk", "reconstruction", _set("fvu", fvu + 0.5))
    result = bench("compare", str(other), str(BASELINE), "--all", "--format", "json")  # fvu 0.5 better: fine
    (c,) = [c for c in json.loads(result.stdout)["changes"] if (c["method"], c["metric"]) == ("sae-topk", "fvu")
            and c["task"] == "reconstruction"]
    assert c["tolerance"] == pytest.approx(0.1) and c["tolerance_source"].startswith("tolerances.json")
    # the spread of one seed against itself is no spread: refused
    same = bench("compare", str(BASELINE), str(BASELINE), "--write-tolerances", str(out))
    assert same.returncode == 2 and "different --seed" in same.stderr and "Traceback" not in same.stderr


def _values_of(run_dir, method: str, task: str) -> dict:
    record = next(r for r in _run(run_dir).records if (r["method"], r["task"]) == (method, task))
    return {k: m["value"] for k, m in record["metrics"].items()}

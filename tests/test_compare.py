"""`python -m bench compare`: exit 0 unchanged, 1 on a regression past tolerance (named), 2 on bad input (named)."""

from __future__ import annotations

import json

import pytest

from reports.compare import ABS_TOL, REL_TOL, compare, parse_tolerances
from reports.runs import load_run
from tests.report_helpers import BASELINE, bench, copy_run, edit_result


def _set(metric: str, value):
    def edit(record):
        record["metrics"][metric]["value"] = value
    return edit


def _fvu(run_dir, method="sae-topk"):
    return next(r for r in load_run(run_dir).records if r["method"] == method and r["task"] == "reconstruction")[
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
    result = bench("compare", str(BASELINE), str(current))
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


def test_interval_sets_the_tolerance_and_noisy_metrics_get_the_committed_band():
    baseline = load_run(BASELINE)
    comparison = compare(baseline, baseline)
    by = {(c.key[3], c.metric): c for c in comparison.changes}
    auto = [c for c in comparison.changes if c.key[4] == "autointerp"]
    assert auto and all(c.tolerance.source.startswith("tolerances.json") for c in auto)  # the committed judge band
    with_interval = [c for c in comparison.changes if c.key[4] != "autointerp" and c.tolerance.source == "interval"]
    for c in with_interval:  # only where the task reports an interval wider than the default
        assert c.tolerance.value > max(ABS_TOL, REL_TOL * abs(c.baseline))
    assert by[("sae-topk", "reconstruction.fvu")].tolerance.source == "default"
    assert parse_tolerances(["a.b=5%"]) == {"a.b": "5%"}


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


def test_a_method_on_one_side_is_listed_not_an_error(tmp_path):
    current = copy_run(tmp_path / "current")
    for p in (current / "results").glob("*__kmeans__*.json"):
        p.unlink()
    result = bench("compare", str(BASELINE), str(current), "--format", "md")
    assert result.returncode == 0, result.stderr
    assert "only in the baseline: kmeans · " in result.stdout


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


def test_seed_spread_becomes_committed_tolerances(tmp_path):
    other = copy_run(tmp_path / "seed1")
    fvu = _fvu(BASELINE)
    edit_result(other, "sae-topk", "reconstruction", _set("fvu", fvu + 0.2))
    out = tmp_path / "tolerances.json"
    assert bench("compare", str(BASELINE), str(other), "--write-tolerances", str(out)).returncode == 0
    assert json.loads(out.read_text()) == {"sae-topk:reconstruction.fvu": pytest.approx(0.4)}
    (other / "tolerances.json").write_text(out.read_text())
    edit_result(other, "sae-topk", "reconstruction", _set("fvu", fvu + 0.5))
    result = bench("compare", str(other), str(BASELINE), "--all", "--format", "json")  # fvu 0.5 better: fine
    (c,) = [c for c in json.loads(result.stdout)["changes"] if (c["method"], c["metric"]) == ("sae-topk", "fvu")
            and c["task"] == "reconstruction"]
    assert c["tolerance"] == pytest.approx(0.4) and c["tolerance_source"].startswith("tolerances.json")

"""The command line as a user meets it: a real smoke run end to end, resume, and one-line errors for bad input.

`bench(...)` runs `python -m bench` in a subprocess (the process boundary: the interpreter's exit status, what it
prints); `cli(...)` runs the same `bench.cli.main` in this process, for the runs whose subject is the pipeline,
not the process (tests/cli_helpers.py).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.cli_helpers import ROOT, bench_in_process, bench_subprocess

bench = bench_subprocess  # a real `python -m bench` process
cli = bench_in_process  # the same main() in this process, its state restored afterwards

__all__ = ["ROOT", "assert_one_line_error", "bench", "cli"]


def assert_one_line_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error:"), result.stderr
    assert fragment in result.stderr, result.stderr


def test_list_shows_every_registered_name():
    import methods
    import tasks

    result = bench("list")
    assert result.returncode == 0, result.stderr
    for name in [*methods.REGISTRY, *tasks.REGISTRY, "smollm2-135m", "pythia-70m-deduped"]:
        assert name in result.stdout


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["run", "--methods", "nope"], "unknown method 'nope'"),
        (["run", "--tasks", "nope"], "unknown task 'nope'"),
        (["run", "--model", "no-such-model"], "unknown model"),
        (["run", "--preset", "huge"], "unknown preset"),
        (["run", "--methods", "pca[bogus=1]"], "has no parameter 'bogus'"),
        (["run", "--model", "pythia-70m-deduped", "--preset", "smoke"], "huggingface-cli download"),
        (["run", "--out", "/proc/decompbench-not-writable", "--preset", "smoke"], "pass a writable --out"),
        (["run", "--text", "/no/such/file.txt"], "no such file"),
        (["run", "--device", "tpu"], "unknown device"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, fragment):
    assert_one_line_error(cli(*args), fragment)


def test_the_interpreter_exits_2_with_the_one_line_error():
    """The process boundary of the cases above (run in this process): `python -m bench` itself ends with exit status
    2 and the one-line error, no traceback."""
    assert_one_line_error(bench("run", "--methods", "nope"), "unknown method 'nope'")


def test_layer_out_of_range(tmp_path):
    assert_one_line_error(cli("run", "--layer", "99", "--preset", "smoke", "--out", str(tmp_path)),
                          "layer 99 is out of range")


def _metrics(out: Path, task: str) -> dict[str, dict]:
    records = [json.loads(p.read_text()) for p in (out / "results").glob(f"*__{task}.json")]
    return {r["method"]: {k: v["value"] for k, v in r["metrics"].items()} for r in records}


# The smoke run below runs every task but autointerp (end to end in tests/test_autointerp_cli.py, judged for real
# there, without the response cache), the slowest at smaller sizes than the preset's, given as a user gives them: a
# result per row and task, the leaderboard, resume and reproduction are checked the same at any size.
SMALLER = {"loss_recovered": "loss_recovered[n_contexts=2]", "ioi_patching": "ioi_patching[greedy_passes=1,n_prompts=4]",
           "disentanglement": "disentanglement[ks=32,n_cities=60]"}  # as results label them: settings sorted
ELSEWHERE = {"autointerp"}
# 3 epochs rather than the preset's 6: the toy's SAE still clearly beats PCA (MMCS 0.29 vs 0.23)
SAE, SAE_LABEL = "sae-relu[epochs=3]", "sae-relu[epochs=3.0]"


def test_smoke_run_end_to_end_then_resume(tmp_path):
    import tasks

    run_tasks = [t for name, t in tasks.REGISTRY.items()
                 if getattr(t, "in_all", True) and not t.cross_seed and name not in ELSEWHERE]
    specs = [SMALLER.get(t.name, t.name) for t in run_tasks]
    # (cross-seed tasks, stability, need --seeds: none here)
    args = ("run", "--preset", "smoke", "--methods", f"neurons,pca,{SAE}", "--tasks", ",".join(specs))
    out = tmp_path / "run"
    first = cli(*args, "--out", str(out))
    assert first.returncode == 0, first.stderr[-3000:]
    assert "leaderboard" in first.stderr and "sae-relu" in first.stdout

    results = sorted(p.name for p in (out / "results").glob("*.json"))
    labels = {json.loads((out / "results" / n).read_text())["method"] for n in results}
    k = json.loads((out / "results" / results[0]).read_text())
    assert {"neurons", "pca", SAE_LABEL} <= labels
    assert any(label.startswith("pca@top") for label in labels) and any(label.startswith("neurons@top") for label in labels)
    # every (method, task); tasks without top-k rows (toy, probing) score each method once
    base = {label for label in labels if "@top" not in label}
    assert len(results) == sum(len(labels) if t.topk_rows else len(base) for t in run_tasks)
    assert {json.loads((out / "results" / n).read_text())["task"] for n in results} == set(specs)
    toy = _metrics(out, "toy_superposition")
    assert set(toy) == base and toy[SAE_LABEL]["mmcs"] > toy["pca"]["mmcs"]
    for key in ("config", "versions", "git_commit", "seed", "timings", "metrics", "exclusion"):
        assert key in k
    assert 0 < k["exclusion"]["excluded_fraction_eval"] < 0.1

    board = json.loads((out / "leaderboard.json").read_text())["boards"][0]
    assert board["model"] == "smollm2-135m" and board["hook"] == "blocks.12.hook_resid_post"
    assert {r["group"] for r in board["rows"]} == {"all", "top-k"}
    md = (out / "leaderboard.md").read_text()
    assert "loss_recovered" in md and "fvu ↓" in md

    # a second run in the same directory resumes: nothing is refitted or recomputed
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "results").glob("*.json")}
    second = cli(*args, "--out", str(out))
    assert second.returncode == 0, second.stderr[-3000:]
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (out / "results").glob("*.json")}

    # the same directory with other settings is refused rather than mixed or overwritten
    clash = cli("run", "--preset", "smoke", "--methods", "neurons", "--seed", "1", "--out", str(out))
    assert_one_line_error(clash, "pass a new --out")
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (out / "results").glob("*.json")}

    # a fresh run with the same seed reproduces every number bit for bit
    other = tmp_path / "again"
    third = cli("run", "--preset", "smoke", "--methods", f"neurons,pca,{SAE}", "--tasks", "reconstruction",
                "--out", str(other))
    assert third.returncode == 0, third.stderr[-3000:]
    assert _metrics(other, "reconstruction") == _metrics(out, "reconstruction")


def test_seeds_fit_per_seed_in_one_pass_report_the_spread_and_stability(tmp_path):
    out = tmp_path / "seeds"
    # 2 epochs of TopK and 1 of ReLU (the preset's 6 would only make the numbers better, not the checks stronger)
    args = ("run", "--preset", "smoke", "--methods", "neurons,pca[max_tokens=4000],sae-topk[epochs=2],sae-relu[epochs=1]",
            "--tasks", "reconstruction,stability", "--out", str(out))
    first = cli(*args, "--seeds", "0,1")
    assert first.returncode == 0, first.stderr[-3000:]
    records = {r["method"]: r for r in (json.loads(p.read_text()) for p in (out / "results").glob("*.json"))
               if r["task"] == "reconstruction"}
    pca, topk = "pca[max_tokens=4000]", "sae-topk[epochs=2.0]"
    assert {"neurons", "neurons~s1", pca, f"{pca}~s1", topk, f"{topk}~s1"} <= set(records)
    assert records[f"{pca}~s1"]["seed"] == 1 and records[pca]["seed"] == 0
    # the SAEs of both seeds trained in one pass (sae-relu[epochs=1] has a pass of its own), each from its own seed,
    # on the base seed's batches
    info = records[f"{topk}~s1"]["fit_info"]
    assert info["trained_with"] == 2 and info["data_seed"] == 0 and records[f"{topk}~s1"]["method_params"]["seed"] == 1
    relu = next(m for m in records if m.startswith("sae-relu") and m.endswith("~s1"))
    assert records[relu]["fit_info"]["trained_with"] == 2, sorted(records)
    assert records[f"{topk}~s1"]["metrics"]["fvu"]["value"] != records[topk]["metrics"]["fvu"]["value"]

    board = json.loads((out / "leaderboard.json").read_text())["boards"][0]
    assert board["seeds"] == [0, 1]
    row = next(r for r in board["rows"] if r["method"] == topk and r["group"] == "all")
    assert set(row["seeds"]["reconstruction.fvu"]) == {"0", "1"}
    assert row["interval_info"]["reconstruction.fvu"]["unit"] == "seed"
    assert "sd " in (out / "leaderboard.md").read_text()

    stability = {r["method"]: r for r in (json.loads(p.read_text()) for p in (out / "results").glob("*__stability.json"))}
    assert set(stability) == {pca, topk, relu[:-3]}  # seeded methods only, once each
    for r in stability.values():
        m = r["metrics"]
        assert 0 <= m["pw_mcc"]["value"] <= 1 and m["random_pw_mcc"]["value"] < m["pw_mcc"]["value"]

    # a third seed extends the run: the first two seeds' results are kept as they are
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "results").glob("*.json") if "stability" not in p.name}
    second = cli(*args, "--seeds", "0,1,2")
    assert second.returncode == 0, second.stderr[-3000:]
    assert stamps == {n: (out / "results" / n).stat().st_mtime_ns for n in stamps}
    assert f"{topk}~s2" in _metrics(out, "reconstruction")


def test_sae_sweep_in_one_pass_then_export_and_benchmark_the_export(tmp_path):
    out = tmp_path / "sweep"
    # 2 epochs rather than the preset's 6: the sweep, the pass and the export are the same at any length
    run = cli("run", "--preset", "smoke", "--methods", "sae-topk[k=8,16,epochs=2],sae-batchtopk[k=8,epochs=2]",
              "--tasks", "reconstruction", "--out", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (out / "results").glob("*.json")]
    k8, k16, batch = "sae-topk[epochs=2.0,k=8]", "sae-topk[epochs=2.0,k=16]", "sae-batchtopk[epochs=2.0,k=8]"
    assert {r["method"] for r in records} == {k8, k16, batch}
    assert all(r["fit_info"]["trained_with"] == 3 for r in records)  # one pass over the activations for all
    fvu = _metrics(out, "reconstruction")
    assert fvu[k8]["l0"] <= 8 and fvu[k16]["fvu"] < fvu[k8]["fvu"]

    released = tmp_path / "released"
    exported = cli("export", str(out / "dictionaries" / k8), str(released))
    assert exported.returncode == 0, exported.stderr
    cfg = json.loads((released / "cfg.json").read_text())
    assert cfg["architecture"] == "topk" and cfg["metadata"]["hook_name"] == "blocks.12.hook_resid_post"

    again = cli("run", "--preset", "smoke", "--methods", f"pretrained:{released}", "--tasks",
                "reconstruction,toy_superposition", "--out", str(tmp_path / "pretrained"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert not _metrics(tmp_path / "pretrained", "toy_superposition")  # nothing to refit: skipped, not an error
    loaded = _metrics(tmp_path / "pretrained", "reconstruction")["pretrained:released"]
    assert loaded["fvu"] == pytest.approx(fvu[k8]["fvu"], abs=1e-6)

    assert_one_line_error(cli("export", str(out / "nope"), str(tmp_path / "x")), "no fitted dictionary here")
    assert_one_line_error(cli("run", "--preset", "smoke", "--methods", f"pretrained:{tmp_path / 'nothing'}",
                              "--tasks", "reconstruction", "--out", str(tmp_path / "p2")), "no such directory")

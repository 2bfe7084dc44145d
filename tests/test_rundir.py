"""The run directory is never damaged: one run at a time (a real second process is refused), a refused run writes
nothing, a resume never mixes code versions, and tampered weights are never scored."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from bench.config import make_config
from bench.errors import BenchError
from bench.rundir import LOCK_FILE
from bench.runner import Runner
from tests.test_cli import ROOT, assert_one_line_error, cli

SMOKE = ("run", "--preset", "smoke", "--methods", "pca", "--tasks", "reconstruction", "--threads", "1")


def smoke(out: Path, *extra: str, **kw) -> subprocess.CompletedProcess:
    """The smoke run through `bench.cli.main` in this process: a process other than the one `start_and_wait_for_lock`
    starts, so the lock test still has two real processes."""
    return cli(*SMOKE, "--out", str(out), *extra, **kw)


def snapshot(out: Path) -> dict[str, bytes]:
    """Every file of a run directory but the lock (config.json's start time changes on each resume)."""
    files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()
             and p.name != LOCK_FILE}
    files["config.json"] = json.dumps(json.loads(files["config.json"])["config"]).encode()
    return files


def start_and_wait_for_lock(out: Path) -> subprocess.Popen:
    """A real run in the background, returned once it holds the directory's lock."""
    proc = subprocess.Popen([sys.executable, "-m", "bench", *SMOKE, "--out", str(out)], cwd=ROOT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        lock = out / LOCK_FILE
        if lock.exists() and lock.read_text().strip() == str(proc.pid):
            return proc
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before taking the lock: {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the run never took the lock")


def test_one_run_per_out_and_a_killed_run_leaves_no_stale_lock(tmp_path):
    out = tmp_path / "run"
    first = start_and_wait_for_lock(out)
    os.kill(first.pid, signal.SIGSTOP)  # hold it mid-run: the second must meet the lock, whatever the timing
    try:
        second = smoke(out)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert_one_line_error(second, f"in use by another run (PID {first.pid})")
    first.kill()  # SIGKILL: no cleanup runs, the kernel drops the lock
    first.wait()
    again = smoke(out)  # resumes whatever the killed run left
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(list((out / "results").glob("*.json"))) == 1


def test_a_refused_run_writes_nothing(tmp_path):
    out = tmp_path / "run"
    _run(out)
    before = snapshot(out)
    for change, fragment in ((dict(seed=5), "seed 0 → 5"), (dict(matched_k=10), "matched_k null → 10"),
                             (dict(task_params={"reconstruction": {"max_tokens": 100}}), "task_params")):
        with pytest.raises(BenchError, match=fragment):
            _run(out, **change)
        assert snapshot(out) == before
    _run(out)  # the original settings still resume, and rewrite nothing
    assert snapshot(out) == before


def _run(out: Path, **change) -> str:
    """The smoke pca × reconstruction run in this process; returns what it said."""
    text = io.StringIO()
    cfg = make_config("smoke", methods=("pca",), tasks=("reconstruction",), **change)
    Runner(cfg, out, console=Console(file=text, width=300), threads=1).run()
    return text.getvalue()


def _stamps(out: Path) -> tuple[int, int]:
    result = next((out / "results").glob("*.json"))
    return (out / "dictionaries" / "pca" / "dictionary.json").stat().st_mtime_ns, result.stat().st_mtime_ns


def _value(out: Path) -> float:
    return json.loads(next((out / "results").glob("*.json")).read_text())["metrics"]["fvu"]["value"]


def test_a_version_bump_refits_or_recomputes_and_says_so(tmp_path, monkeypatch):
    from methods.pca import PCA
    from tasks.reconstruction import Reconstruction

    out = tmp_path / "run"
    _run(out)
    fit0, result0 = _stamps(out)
    value = _value(out)
    record = json.loads(next((out / "results").glob("*.json")).read_text())
    assert record["code_versions"]["method"] == PCA.version and record["code_versions"]["task"] == Reconstruction.version
    assert record["dictionary_sha256"]

    _run(out)  # same code: reused, not rewritten
    assert _stamps(out) == (fit0, result0)

    monkeypatch.setattr(Reconstruction, "version", Reconstruction.version + 1)
    said = _run(out)
    fit1, result1 = _stamps(out)
    assert fit1 == fit0 and result1 != result0  # the task's change recomputes the result, keeps the fit
    assert f"recomputing reconstruction · pca: the stored result was made by other code (task version " \
           f"{Reconstruction.version - 1} → {Reconstruction.version})" in said

    monkeypatch.setattr(PCA, "version", PCA.version + 1)
    said = _run(out)
    fit2, result2 = _stamps(out)
    assert fit2 != fit1 and result2 != result1  # the method's change refits, and so recomputes
    assert f"refitting pca: its dictionary was made by other code (method version {PCA.version - 1} → " \
           f"{PCA.version})" in said
    assert _value(out) == value  # same seed, same numbers: only the code's version moved


def test_a_tampered_dictionary_is_never_scored(tmp_path):
    out = tmp_path / "run"
    _run(out)
    weights = out / "dictionaries" / "pca" / "dictionary.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-64:-32] = bytes(32)  # a few floats of the data, not the header
    weights.write_bytes(bytes(blob))
    next((out / "results").glob("*.json")).unlink()
    with pytest.raises(BenchError, match="SHA-256"):
        _run(out)


def test_every_unit_is_profiled_and_perf_run_shows_its_share(tmp_path, capsys):
    from bench.cli import main

    out = tmp_path / "run"
    _run(out)
    units = json.loads((out / "units.json").read_text())
    kinds = [u["kind"] for u in units["units"]]
    assert units["executor"] == "local" and kinds == ["harvest", "fit", "evaluate"]
    for u in units["units"]:
        assert u["status"] == "ok" and u["wall_s"] > 0 and u["cpu_s"] >= 0 and u["peak_rss_mb"] > 100
    fit = units["units"][1]
    assert fit["unit"] == "fit pca" and not fit["cached"]
    assert sum(u["wall_s"] for u in units["units"]) <= units["wall_seconds"] * 1.01
    assert main(["perf", "--run", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "fit pca" in shown and "%" in shown and "evaluate" in shown


def test_perf_run_shows_each_sae_step_phase_in_milliseconds(tmp_path):
    """The phase table divides each dictionary's recorded seconds by its steps: 0.05 s over 10 steps is 5.00 ms."""
    from rich.console import Console

    from bench.profile import phase_table
    from methods.phases import PHASES

    assert phase_table(tmp_path) is None  # no dictionary with laps: no table
    directory = tmp_path / "dictionaries" / "sae-topk"
    directory.mkdir(parents=True)
    step_seconds = {p: 0.0 for p in PHASES} | {"encode": 0.05, "backward": 0.1}
    (directory / "dictionary.json").write_text(json.dumps({"meta": {
        "fit_info": {"steps": 10, "data_seed": 0},
        "timing": {"step_seconds": step_seconds, "pass_seconds": {"data": 0.02, "checkpoint": 0.0}}}}))
    console = Console(width=250, record=True)
    console.print(phase_table(tmp_path))
    shown = console.export_text()
    assert "dictionaries/sae-topk" in shown and "5.00" in shown and "10.00" in shown and "15.0" in shown
    assert "pass data 2.00 ms/step" in shown

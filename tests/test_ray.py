"""`--executor ray` on a real local Ray cluster (head on 127.0.0.1, 2 CPUs): the same result files as the local
executor, and a worker killed mid-grid costs nothing but a rerun of its unit (both checked on one Ray run, whose
one fault is that kill).

The grid is the smallest that has every unit kind: harvest, two fits, matched k and evaluations with and without
the model (reconstruction, loss_recovered), at layer 3 of SmolLM2 (the store test_controls uses).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.executors.ray_worker import HANG_PID_FILE, HANG_UNIT
from tests.test_cli import ROOT, cli

ray = pytest.importorskip("ray")  # CI installs it with the test extra; this only guards a bare install

GRID = ("run", "--preset", "smoke", "--layer", "3", "--methods", "pca[max_tokens=4000],sae-relu[epochs=0.5]",
        "--tasks", "reconstruction,loss_recovered[n_contexts=2]", "--threads", "1")
HUNG = "loss_recovered[n_contexts=2] · pca[max_tokens=4000]@top"  # the unit whose worker the fault test kills
IGNORED = {"timings", "created", "versions", "git_commit", "threads", "platform", "config", "config_fingerprint"}


@pytest.fixture(scope="module")
def cluster():
    """A Ray head on 127.0.0.1 with 2 CPUs, started by this process and shut down after the module."""
    context = ray.init(address=None, num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
                       object_store_memory=128 * 2**20, logging_level="warning")
    yield context.address_info["gcs_address"]
    ray.shutdown()


def comparable(out: Path) -> dict[str, dict]:
    """Every result file's content but what says when, where and how long."""
    return {p.name: {k: v for k, v in json.loads(p.read_text()).items() if k not in IGNORED}
            for p in sorted((out / "results").glob("*.json"))}


@pytest.fixture(scope="module")
def ray_run(cluster, tmp_path_factory) -> SimpleNamespace:
    """The grid on the Ray cluster, the worker of one unit killed mid-unit (SIGKILL): one Ray run, read by both tests
    below (a grid on Ray takes 20-30 s). Apart from that unit's first attempt, which hangs until it is killed, every
    unit runs as in a run without a fault, so the run has to give the local result files as one without a fault
    must, and lose nothing but the killed unit's attempt.

    The same grid with the local executor, in this process, runs while that unit hangs (its worker idles until it
    is killed, so the local run takes the core it leaves rather than adding its 15 s after the Ray run)."""
    base = tmp_path_factory.mktemp("ray")
    out, pid_file, local = base / "ray", base / "hung.pid", base / "local"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", HANG_UNIT: HUNG,
           HANG_PID_FILE: str(pid_file)}
    proc = subprocess.Popen([sys.executable, "-m", "bench", *GRID, "--executor", "ray", "--ray-address", cluster,
                             "--out", str(out)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 240
        while not (pid_file.exists() and any((out / "results").glob("*.json"))):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.2)
        result = cli(*GRID, "--out", str(local))  # the local executor in this process (the Ray runs are processes)
        assert result.returncode == 0, result.stderr[-3000:]
        assert len(pid_file.read_text().split()) == 1  # the unit still hangs in its first attempt
        time.sleep(0.5)  # units running beside the hung one may finish writing
        finished = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "results").glob("*.json")}
        os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)  # the worker process, mid-unit
        _, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return SimpleNamespace(out=out, local=local, returncode=proc.returncode, stderr=stderr, finished=finished,
                           attempts=pid_file.read_text().split())


@pytest.fixture(scope="module")
def local_run(ray_run) -> Path:
    return ray_run.local


def test_ray_gives_the_local_result_files(ray_run, local_run):
    out = ray_run.out
    assert ray_run.returncode == 0, ray_run.stderr[-3000:]
    local, remote = comparable(local_run), comparable(out)
    assert len(local) == 6 and local == remote  # 3 rows (pca, pca@topK, sae-relu) x 2 tasks, number for number
    units = json.loads((out / "units.json").read_text())["units"]
    assert {u["kind"] for u in units} == {"harvest", "fit", "matched_k", "evaluate"}
    assert all(u["wall_s"] > 0 and u["cpu_s"] > 0 and u["peak_rss_mb"] > 100 for u in units)  # measured in the worker
    assert all(u["status"] == "ok" for u in units) and len({u["pid"] for u in units}) >= 2  # really spread out
    assert (out / "leaderboard.md").read_text() == (local_run / "leaderboard.md").read_text()


def test_a_killed_worker_costs_only_its_unit(ray_run, local_run):
    assert ray_run.returncode == 0, ray_run.stderr[-3000:]
    attempts = ray_run.attempts
    assert len(attempts) == 2 and attempts[0] != attempts[1]  # the lost unit ran again, in another worker
    finished = ray_run.finished
    assert finished and all((p.stat().st_mtime_ns, p.read_bytes()) == v for p, v in finished.items())  # kept as is
    assert comparable(ray_run.out) == comparable(local_run)

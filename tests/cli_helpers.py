"""`python -m bench ARGS` as the tests run it: in this process through `bench.cli.main` (the same code the
interpreter runs; a subprocess would only add 3-4 s of imports per call), or, where the process boundary itself is
what a test checks (real exit statuses, a second process, -O, Ray, kill -9, PYTHONPATH plugins), in a subprocess.

Both give a `CompletedProcess` (returncode, stdout, stderr). The in-process call leaves this process as it found
it: environment, working directory, torch and BLAS thread counts, grad mode and the global random generators are
restored; warnings print to its stderr under Python's default filters (as in a fresh interpreter), not pytest's.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import subprocess
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the filters a fresh interpreter starts with (no -W, no PYTHONWARNINGS): what `python -m bench` runs under
_DEFAULT_FILTERS = (("default", DeprecationWarning, "__main__"), ("ignore", DeprecationWarning, None),
                    ("ignore", PendingDeprecationWarning, None), ("ignore", ImportWarning, None),
                    ("ignore", ResourceWarning, None))


def bench_subprocess(*args: str, timeout: int = 600, env: dict[str, str] | None = None,
                     columns: str = "160") -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": columns, **(env or {})}
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


@contextlib.contextmanager
def _environ(changes: dict[str, str]):
    saved = {k: os.environ.get(k) for k in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def bench_in_process(*args: str, env: dict[str, str] | None = None,
                     columns: str = "160") -> subprocess.CompletedProcess:
    """`main(args)` with what `bench_subprocess` would give it (cwd ROOT, HF_HUB_OFFLINE=1, COLUMNS), its stdout and
    stderr captured; an exception other than the exit argparse raises propagates (the test fails, as the
    traceback would fail it)."""
    import numpy as np
    import torch
    from threadpoolctl import threadpool_limits

    from bench.cli import main

    out, err = io.StringIO(), io.StringIO()
    threads, grad = torch.get_num_threads(), torch.is_grad_enabled()
    rng = (torch.get_rng_state(), np.random.get_state(), random.getstate())
    blas = threadpool_limits(limits=None)  # records the BLAS/OpenMP pools' sizes; changes nothing
    cwd = os.getcwd()
    try:
        with _environ({"HF_HUB_OFFLINE": "1", "COLUMNS": columns, **(env or {})}), warnings.catch_warnings(), \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            warnings.resetwarnings()
            for action, category, module in reversed(_DEFAULT_FILTERS):
                warnings.filterwarnings(action, category=category, module=module or "")
            warnings.showwarning = warnings._showwarning_orig  # to (the captured) sys.stderr, not pytest's record
            os.chdir(ROOT)
            try:
                code = main(list(args))
            except SystemExit as e:  # argparse's usage errors
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                if not isinstance(e.code, int | None):
                    print(e.code, file=sys.stderr)
    finally:
        os.chdir(cwd)
        torch.set_num_threads(threads)
        torch.set_grad_enabled(grad)
        blas.restore_original_limits()
        torch.set_rng_state(rng[0])
        np.random.set_state(rng[1])
        random.setstate(rng[2])
    return subprocess.CompletedProcess(["python", "-m", "bench", *args], code, out.getvalue(), err.getvalue())

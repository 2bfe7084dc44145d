"""A local llama.cpp OpenAI-compatible server (`python -m llama_cpp.server`, from the `[server]` extra).

Used to measure the endpoint path (`python -m bench perf --autointerp`) and to test it end to end against a real
server: `with llama_server(path) as base_url:` gives `http://127.0.0.1:N/v1` once the server answers.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from typing import IO, Iterator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(log: IO[bytes], n: int = 2000) -> str:
    log.flush()
    log.seek(0)
    return log.read().decode(errors="replace")[-n:]


@contextmanager
def llama_server(model_path: str, port: int | None = None, n_ctx: int = 2048, startup_timeout_s: float = 60.0,
                 threads: int = 2) -> Iterator[str]:
    """Run `llama_cpp.server` on 127.0.0.1 and yield its base URL; RuntimeError with its log tail if it never answers."""
    port = port or free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(threads), "--logits_all", "true"]
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: llama.cpp logs a lot and a full pipe would block it
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + startup_timeout_s
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"llama_cpp.server exited with code {proc.returncode}:\n{_tail(log)}")
                try:
                    with urllib.request.urlopen(f"{base_url}/models", timeout=2) as r:
                        if r.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"llama_cpp.server did not answer on {base_url} within "
                                       f"{startup_timeout_s:g} s:\n{_tail(log)}")
                time.sleep(0.2)
            yield base_url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

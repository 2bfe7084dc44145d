"""A fake OpenAI-compatible judge: a real HTTP server on 127.0.0.1 whose replies a test scripts.

A test helper, not a test. `FakeJudgeServer(script)` answers `POST /v1/chat/completions` with `script(n, body)`
(`n`: the request's number, from 0); `healthy` is a script that gives every request of `bench.judge` a valid reply
of the shape it needs, at once (autointerp runs through it in milliseconds).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator


@dataclass
class Answer:
    """What the scripted server does with one request."""

    body: Any = None  # dict -> JSON; str/bytes -> sent as is
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (a slow server)


def chat_reply(text: str | None, logprobs: list[tuple[str, dict[str, float]]] | None = None,
               prompt_tokens: int = 11, completion_tokens: int = 3) -> dict:
    """A chat completion as an OpenAI server sends it; `logprobs` is (token, {alternative: probability}) per token."""
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    if logprobs is not None:
        choice["logprobs"] = {"content": [
            {"token": tok, "logprob": math.log(alts.get(tok, 0.5)), "bytes": None,
             "top_logprobs": [{"token": t, "logprob": math.log(p), "bytes": None} for t, p in alts.items()]}
            for tok, alts in logprobs]}
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "judge-model",
            "choices": [choice],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


class FakeJudgeServer:
    """A real HTTP server on 127.0.0.1: `POST /v1/chat/completions` answers `script(n, request_body)`.

    It records each request's body and headers, and the most requests it had in flight at once.
    """

    def __init__(self, script: Callable[[int, dict], Answer]) -> None:
        self.script = script
        self.bodies: list[dict] = []
        self.headers: list[dict[str, str]] = []  # lower-case names
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    outer._send(self, Answer({"object": "list", "data": [{"id": "judge-model", "object": "model"}]}))
                else:
                    outer._send(self, Answer({"error": {"message": "not found"}}, 404))

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.path != "/v1/chat/completions":
                    outer._send(self, Answer({"error": {"message": "not found"}}, 404))
                    return
                body = json.loads(raw)
                with outer._lock:
                    n = len(outer.bodies)
                    outer.bodies.append(body)
                    outer.headers.append({k.lower(): v for k, v in self.headers.items()})
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                try:
                    answer = outer.script(n, body)
                    time.sleep(answer.delay)
                    outer._send(self, answer)
                finally:
                    with outer._lock:
                        outer.in_flight -= 1

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that gave up (timeout) leaves a broken pipe behind: expected here

        self._server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def count(self) -> int:
        return len(self.bodies)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, answer: Answer) -> None:
        body = answer.body
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else (
            body.encode() if isinstance(body, str) else (body or b""))
        try:
            handler.send_response(answer.status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            for k, v in answer.headers.items():
                handler.send_header(k, v)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def healthy(n: int, body: dict) -> Answer:
    """A valid reply for each kind of judge request, varied by a hash of the prompt (so scores are not constant)."""
    h = int(hashlib.sha256(json.dumps(body["messages"]).encode()).hexdigest()[:8], 16)
    if body.get("logprobs") and body["max_tokens"] == 1:  # Choice, and the startup check: yes vs no
        p = (h % 89 + 5) / 100
        return Answer(chat_reply("yes", [("yes", {"yes": p, "no": 1 - p})], completion_tokens=1))
    if body.get("logprobs"):  # Simulate: one `token<TAB>digit` line per token; the judge asks 6 * tokens + 16
        n_tokens = (body["max_tokens"] - 16) // 6
        return Answer(chat_reply("".join(f"t{i}\t{(h >> i) % 10}\n" for i in range(n_tokens))))
    return Answer(chat_reply("the word bank"))  # Generate: an explanation


@contextmanager
def serving(script: Callable[[int, dict], Answer]) -> Iterator[FakeJudgeServer]:
    server = FakeJudgeServer(script)
    try:
        yield server
    finally:
        server.close()

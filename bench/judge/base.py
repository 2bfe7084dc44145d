"""The judge: an LLM that explains and scores features for `autointerp`, behind one small interface.

A backend knows how to reach a model (`llama.cpp` in-process, or any OpenAI-compatible endpoint) and offers:
- `complete(messages, max_tokens, logprobs)`: a greedy chat completion, with each generated token's top
  log-probabilities when `logprobs` > 0;
- optionally `readout(messages, pieces, slots, candidates)`: the assistant reply is pre-filled with `pieces`, and
  the log-probabilities of `candidates` are read at the end of each piece listed in `slots`, in one forward pass
  (Bills et al.'s "all at once" simulation; only an in-process model can do this).
- optionally `choose(prompts, logprobs)` and `readouts(requests, candidates)`: several one-token completions or
  readouts decoded side by side, answered as a function of the whole list (a group, see `Choice`).

`Judge` turns three requests into those calls: `Generate` (an explanation), `Choice` (the probability of "yes"
among yes/no) and `Simulate` (an expected 0..9 activation per token). It adds an on-disk response cache keyed by
(backend, model, call, arguments), bounded concurrency, token counts, and turns a failed or malformed reply into a
failed sample (`Reply.ok = False`) instead of an exception. Only `JudgeUnavailable` (unreachable, bad key, unknown
model) stops a run. `Usage.unanswered` counts the samples the judge never answered (HTTP errors or timeouts after
the retries): an outage, unlike a malformed answer, which a rerun would only repeat.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from bench.errors import BenchError
from bench.io import fingerprint

Message = tuple[str, str]  # (role, content)
DIGITS = tuple(str(i) for i in range(10))
CHOICE_LOGPROBS = 20  # top log-probabilities read at a choice's first reply token


class JudgeUnavailable(BenchError):
    """The judge cannot be used at all (unreachable, rejected key, unknown model): the run stops, one line."""


class RequestFailed(Exception):
    """One request failed after its retries (HTTP 5xx, timeout): counted as a failed sample."""


# Query and fragment parameters whose value is a credential, matched in the lower-cased name.
_SECRET_PARAM = re.compile(r"key|token|secret|passw|pwd|auth|signature|credential|session|^sig$")
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)@")  # greedy: userinfo ends at the authority's last @
_PARAM = re.compile(r"([?#&;])([^=&#;]*)=([^&#;]*)")


def redact_url(url: str) -> str:
    """`url` safe to print or record: user and password replaced by `***`, and the values of query (and fragment)
    parameters named like a key, token, secret or password. Everything else stays exactly as written; no parsing
    that could fail, so a malformed URL is redacted too."""
    cut = min((i for i in (url.find("?"), url.find("#")) if i != -1), default=len(url))
    head = _USERINFO.sub(lambda m: m.group(1) + ("***:***" if ":" in m.group(2) else "***") + "@", url[:cut])
    tail = _PARAM.sub(lambda m: f"{m.group(1)}{m.group(2)}=***" if m.group(3) and _SECRET_PARAM.search(
        m.group(2).lower()) else m.group(0), url[cut:])
    return head + tail


@dataclass(frozen=True)
class JudgeConfig:
    judge: str = "qwen2.5-coder-1.5b"  # in-process model name or a GGUF path; unused when base_url is set
    base_url: str | None = None  # an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1
    model: str | None = None  # the endpoint's model name (--llm-model)
    concurrency: int = 4  # requests in flight against an endpoint (an in-process model runs one at a time)
    timeout_s: float = 120.0
    max_retries: int = 5  # on 429, 5xx, timeouts and dropped connections, with exponential back-off
    threads: int = 2  # CPU threads of an in-process model
    n_ctx: int = 4096
    cache: bool = True  # the on-disk response cache

    def identity(self) -> dict[str, Any]:
        """What decides the judge's answers (goes into result resume keys): never the API key, nor the endpoint's
        URL (the same model served at another address resumes a run; the URL may hold credentials)."""
        if self.base_url:
            return {"backend": "openai", "model": self.model}
        return {"backend": "llama.cpp", "model": self.judge}

    def __repr__(self) -> str:  # the dataclass repr would print credentials written into the URL
        fields = {**asdict(self), "base_url": redact_url(self.base_url) if self.base_url else None}
        return f"JudgeConfig({', '.join(f'{k}={v!r}' for k, v in fields.items())})"


@dataclass
class Completion:
    """A backend's raw answer: generated text and tokens, top log-probabilities per generated token."""

    text: str
    tokens: list[str] = field(default_factory=list)
    top_logprobs: list[dict[str, float]] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Backend(Protocol):
    name: str  # e.g. "llama.cpp:qwen2.5-coder-1.5b" or "openai:gpt-4o-mini"
    concurrency: int

    def complete(self, messages: Sequence[Message], max_tokens: int, logprobs: int = 0) -> Completion: ...

    def check(self) -> None:
        """Raise `JudgeUnavailable` with a one-line fix if the judge cannot be used."""


@dataclass(frozen=True)
class Generate:
    """Greedy free text (an explanation)."""

    messages: tuple[Message, ...]
    max_tokens: int = 48


@dataclass(frozen=True)
class Choice:
    """Probability of `options[0]` among the options, as the reply's first token (e.g. yes vs no).

    `group`: consecutive requests of one non-empty group may be answered together by a backend that decodes
    prompts side by side (`choose`); their answers are then a function of the whole group, which is cached as one.
    Give a group that a rerun rebuilds identically (e.g. one feature's samples of one scorer)."""

    messages: tuple[Message, ...]
    options: tuple[str, ...] = ("yes", "no")
    group: str = ""


@dataclass(frozen=True)
class Simulate:
    """Expected activation 0..9 per token of an excerpt; the reply has one `token<TAB>value` line per token.
    `group`: as `Choice.group`, for a backend that reads out several simulations side by side (`readouts`)."""

    messages: tuple[Message, ...]
    tokens: tuple[str, ...]
    group: str = ""


Request = Generate | Choice | Simulate


@dataclass
class Reply:
    ok: bool
    value: Any = None  # str (Generate), float (Choice: probability of options[0]), list[float] (Simulate)
    error: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    unanswered: bool = False  # no reply at all (`RequestFailed`: HTTP error or timeout after the retries)


@dataclass
class Usage:
    requests: int = 0
    failed: int = 0  # samples without a usable answer: unanswered, or answered but malformed
    cached: int = 0
    prompt_tokens: int = 0  # spent in this run (cached replies cost nothing and are not counted)
    completion_tokens: int = 0
    unanswered: int = 0  # of `failed`: the judge never answered (an outage a rerun may not see)

    def add(self, reply: Reply) -> None:
        self.requests += 1
        self.failed += not reply.ok
        self.unanswered += reply.unanswered
        self.cached += reply.cached
        if not reply.cached:
            self.prompt_tokens += reply.prompt_tokens
            self.completion_tokens += reply.completion_tokens


class ResponseCache:
    """SQLite table of raw backend answers: a rerun of the same prompts costs nothing. Safe across threads."""

    def __init__(self, path: Path | None) -> None:
        self._lock = threading.Lock()
        self._db = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._db = sqlite3.connect(path, check_same_thread=False, timeout=30)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                self._db.commit()
            except sqlite3.DatabaseError:
                raise BenchError(f"judge response cache {path} is corrupt; delete it "
                                 "(`python -m bench clean-cache --judge`)") from None

    def get(self, key: str) -> dict | None:
        if self._db is None:
            return None
        with self._lock:
            row = self._db.execute("SELECT value FROM replies WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, value: dict) -> None:
        if self._db is None:
            return
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO replies VALUES (?, ?)", (key, json.dumps(value)))
            self._db.commit()


def _norm(token: str) -> str:
    return token.strip().lower()


def option_probability(top: dict[str, float], options: Sequence[str]) -> float | None:
    """P(options[0]) renormalised over the options, summing case and whitespace variants; None if none appear."""
    mass = np.zeros(len(options))
    wanted = [_norm(o) for o in options]
    for token, lp in top.items():
        t = _norm(token)
        for i, o in enumerate(wanted):
            if t and o.startswith(t) and len(t) >= min(2, len(o)):
                mass[i] += np.exp(lp)
                break
    total = mass.sum()
    return float(mass[0] / total) if total > 0 else None


def digit_expectation(top: dict[str, float]) -> float | None:
    """Expected value over the digit tokens 0..9 in a top-log-probability table; None if no digit appears."""
    p = np.zeros(10)
    for token, lp in top.items():
        t = token.strip()
        if len(t) == 1 and t in DIGITS:
            p[int(t)] += np.exp(lp)
    return float((p * np.arange(10)).sum() / p.sum()) if p.sum() > 0 else None


_LINE_VALUE = re.compile(r"(\d+)\s*$")


def parse_simulation(completion: Completion, n_tokens: int) -> list[float]:
    """Per-token values from a generated `token<TAB>value` reply; ValueError if there are not `n_tokens` of them.

    A line's value is its last number, capped at 9. Where the backend gave log-probabilities for the token that
    holds that number (a single digit), the expected value over the digits replaces it.
    """
    owner: list[int] = []  # character offset in the text -> index of the generated token holding it
    if completion.tokens and len(completion.tokens) == len(completion.top_logprobs):
        text = "".join(completion.tokens)
        for i, tok in enumerate(completion.tokens):
            owner.extend([i] * len(tok))
    else:
        text = completion.text
    values: list[float] = []
    offset = 0
    for line in text.split("\n"):
        if m := _LINE_VALUE.search(line):
            value = min(float(m.group(1)), 9.0)
            if owner:
                i = owner[offset + m.start(1)]
                if completion.tokens[i].strip() == m.group(1):
                    expected = digit_expectation(completion.top_logprobs[i])
                    value = expected if expected is not None else value
            values.append(value)
        offset += len(line) + 1
    if len(values) != n_tokens:
        raise ValueError(f"expected {n_tokens} values, got {len(values)}")
    return values


class Judge:
    """Runs requests through a backend, with the response cache, concurrency, failure counting and usage."""

    def __init__(self, backend: Backend, cache: ResponseCache | None = None) -> None:
        self.backend = backend
        self.cache = cache or ResponseCache(None)
        self.usage = Usage()
        self.last_error = ""  # the latest unanswered request's error, for a message that says why
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.backend.name

    def close(self) -> None:
        if close := getattr(self.backend, "close", None):
            close()

    @property
    def simulation_mode(self) -> str:
        return "all-at-once" if hasattr(self.backend, "readout") else "generated"

    def _cached(self, call: str, args: dict[str, Any], run: Callable[[], dict]) -> tuple[dict, bool]:
        # The endpoint joins the key: two servers may serve different weights under one model name.
        key = fingerprint({"backend": self.backend.name, "endpoint": getattr(self.backend, "base_url", None),
                           "call": call, "args": args}, n=32)
        if (hit := self.cache.get(key)) is not None:
            return hit, True
        value = run()
        self.cache.put(key, value)
        return value, False

    def _complete(self, messages, max_tokens: int, logprobs: int) -> tuple[Completion, bool]:
        raw, cached = self._cached("complete", {"messages": messages, "max_tokens": max_tokens, "logprobs": logprobs},
                                   lambda: asdict(self.backend.complete(messages, max_tokens, logprobs)))
        return Completion(**raw), cached

    def run(self, request: Request) -> Reply:
        try:
            reply = self._run(request)
        except RequestFailed as e:  # JudgeUnavailable is not caught: it stops the run
            reply = Reply(False, error=str(e), unanswered=True)
        self._record([reply])
        return reply

    def _record(self, replies: Sequence[Reply]) -> None:
        """Count replies in the usage; keep the latest unanswered one's error."""
        with self._lock:
            for reply in replies:
                self.usage.add(reply)
                if reply.unanswered:
                    self.last_error = reply.error

    def _run(self, request: Request) -> Reply:
        if isinstance(request, Generate):
            c, cached = self._complete(request.messages, request.max_tokens, 0)
            text = c.text.strip()
            return Reply(bool(text), text, "" if text else "empty reply", c.prompt_tokens, c.completion_tokens, cached)
        if isinstance(request, Choice):
            return self._choice_reply(request, *self._complete(request.messages, 1, CHOICE_LOGPROBS))
        if isinstance(request, Simulate):
            return self._simulate(request)
        raise TypeError(f"unknown request {type(request).__name__}")

    @staticmethod
    def _choice_reply(request: Choice, c: Completion, cached: bool) -> Reply:
        top = c.top_logprobs[0] if c.top_logprobs else {c.text: 0.0}
        p = option_probability(top, request.options)
        error = "" if p is not None else f"reply {c.text[:20]!r} is none of {'/'.join(request.options)}"
        return Reply(p is not None, p, error, c.prompt_tokens, c.completion_tokens, cached)

    def _run_group(self, requests: Sequence[Choice | Simulate]) -> list[Reply]:
        """A group through the backend's `choose` or `readouts`, cached as one (see `Choice`)."""
        messages = [r.messages for r in requests]
        try:
            if isinstance(requests[0], Choice):
                raw, cached = self._cached("choose", {"messages": messages, "logprobs": CHOICE_LOGPROBS},
                                           lambda: {"completions": [asdict(c) for c in
                                                                    self.backend.choose(messages, CHOICE_LOGPROBS)]})
                replies = [self._choice_reply(r, Completion(**c), cached)
                           for r, c in zip(requests, raw["completions"], strict=True)]
            else:
                args = [_readout_args(r) for r in requests]
                raw, cached = self._cached(
                    "readouts", {"messages": messages, "pieces": [a[0] for a in args], "slots": [a[1] for a in args]},
                    lambda: {"readouts": self.backend.readouts([(r.messages, *a) for r, a in
                                                                zip(requests, args, strict=True)], DIGITS)})
                replies = [_readout_reply(t, cached) for t in raw["readouts"]]
        except RequestFailed as e:
            replies = [Reply(False, error=str(e), unanswered=True) for _ in requests]
        self._record(replies)
        return replies

    def _simulate(self, request: Simulate) -> Reply:
        if hasattr(self.backend, "readout"):
            pieces, slots = _readout_args(request)
            raw, cached = self._cached("readout", {"messages": request.messages, "pieces": pieces, "slots": slots},
                                       lambda: self.backend.readout(request.messages, pieces, slots, DIGITS))
            return _readout_reply(raw, cached)
        c, cached = self._complete(request.messages, 6 * len(request.tokens) + 16, 10)
        try:
            values = parse_simulation(c, len(request.tokens))
        except ValueError as e:
            return Reply(False, error=f"malformed simulation: {e}", prompt_tokens=c.prompt_tokens,
                         completion_tokens=c.completion_tokens, cached=cached)
        return Reply(True, values, "", c.prompt_tokens, c.completion_tokens, cached)

    def map(self, requests: Sequence[Request], progress: Callable[[int], None] | None = None) -> list[Reply]:
        """Replies in request order; an endpoint gets up to `concurrency` requests at once, a backend that decodes
        side by side gets each group of choices or simulations (`Choice.group`) at once."""
        side_by_side = tuple(t for t, call in ((Choice, "choose"), (Simulate, "readouts"))
                             if hasattr(self.backend, call))
        if side_by_side or self.backend.concurrency <= 1 or len(requests) <= 1:
            out: list[Reply] = []
            for run in _groups(requests, side_by_side):
                out.extend(self._run_group(run) if len(run) > 1 else [self.run(run[0])])
                if progress:
                    progress(len(run))
            return out
        with ThreadPoolExecutor(self.backend.concurrency) as pool:
            futures = [pool.submit(self.run, r) for r in requests]
            out = []
            try:
                for f in futures:
                    out.append(f.result())
                    if progress:
                        progress(1)
            except BaseException:
                # JudgeUnavailable (or Ctrl-C): stop now, not after every queued request has retried against a dead
                # judge; only the requests already in flight finish.
                for f in futures:
                    f.cancel()
                raise
            return out


def _groups(requests: Sequence[Request], kinds: tuple[type, ...]) -> list[list[Request]]:
    """Requests in order, consecutive requests of one of `kinds` and one non-empty group together, the rest alone."""
    out: list[list[Request]] = []
    for r in requests:
        last = out[-1][-1] if out else None
        if (isinstance(r, kinds) and getattr(r, "group", "") and type(last) is type(r)
                and getattr(last, "group", "") == r.group):
            out[-1].append(r)
        else:
            out.append([r])
    return out


def _readout_args(request: Simulate) -> tuple[list[str], list[int]]:
    """The pre-filled reply "token<TAB>unknown" per line, and the pieces after whose tab the digits are read."""
    pieces = [p for t in request.tokens for p in (f"{t}\t", "unknown\n")]
    return pieces, list(range(0, len(pieces), 2))


def _readout_reply(raw: dict[str, Any], cached: bool) -> Reply:
    values = [digit_expectation(t) for t in raw["tables"]]
    if any(v is None for v in values):
        return Reply(False, error="no digit probabilities", cached=cached)
    return Reply(True, values, "", raw["prompt_tokens"], 0, cached)

"""A judge backend for any OpenAI-compatible chat-completions server (OpenAI, vLLM, llama.cpp's server, ...).

The retry loop is ours (the client's own is off) so that what is retried, how long we wait and what each final
failure means are explicit and testable:
- HTTP 429, 5xx, 408, timeouts and dropped connections are retried with capped exponential back-off, honouring
  `Retry-After`;
- after the last retry, a connection that never succeeds means the judge is unreachable (`JudgeUnavailable`, the
  run stops), while 429/5xx/timeouts fail only that sample (`RequestFailed`);
- 401/403 (key) and 404 (model or path) cannot get better by retrying: `JudgeUnavailable` at once;
- any other 4xx, and a reply that is not a usable chat completion, fail that sample.

The API key is read from `OPENAI_API_KEY` and never appears in a message or repr: messages are built from status
codes and exception classes, never from the server's or the client's error text (which may echo headers).
"""

from __future__ import annotations

import math
import os
import random
import sys
import threading
import time
from email.utils import parsedate_to_datetime
from typing import Any, Sequence
from urllib.parse import urlsplit

import openai

from bench.judge.base import Completion, JudgeConfig, JudgeUnavailable, Message, RequestFailed, redact_url

API_KEY_ENV = "OPENAI_API_KEY"
_NO_KEY = "sk-no-key"  # local servers need none, but the client insists on one
NOTICE_EVERY_S = 10.0  # the most often a retry of a quick failure (429, 5xx) is said on stderr


def _retry_after(response: Any) -> float | None:
    """Seconds the server asked us to wait (`Retry-After`: seconds or an HTTP date), or None."""
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, OverflowError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


class _Retryable(Exception):
    """One attempt failed in a way worth retrying; `reason` is safe to print."""

    def __init__(self, reason: str, kind: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.reason, self.kind, self.wait = reason, kind, wait


class OpenAIEndpoint:
    """`Backend` for an OpenAI-compatible `/chat/completions` endpoint; thread-safe, `concurrency` requests at once."""

    def __init__(self, cfg: JudgeConfig, *, backoff_s: float = 0.5, max_backoff_s: float = 8.0) -> None:
        if not cfg.base_url:
            raise JudgeUnavailable("the OpenAI-compatible judge needs an endpoint; pass --llm-base-url")
        if not cfg.model:
            raise JudgeUnavailable(f"the judge at {redact_url(cfg.base_url)} needs a model name; pass --llm-model")
        self.model = cfg.model
        self.name = f"openai:{cfg.model}"
        self.concurrency = max(1, int(cfg.concurrency))
        self.timeout_s = float(cfg.timeout_s)
        self.max_retries = max(0, int(cfg.max_retries))
        self.backoff_s = backoff_s  # first wait; doubles per retry (tests set it small)
        self.max_backoff_s = max_backoff_s  # cap on any wait, `Retry-After` included
        self._notice_lock = threading.Lock()
        self._last_notice = -math.inf
        self.base_url = self._url = redact_url(cfg.base_url)  # printable: no user:password, no key in the query
        bad_url = JudgeUnavailable(f"the judge URL {self._url!r} is not an http(s) URL such as "
                                   "http://127.0.0.1:8080/v1; check --llm-base-url")
        try:
            parts = urlsplit(cfg.base_url)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname)
            _ = parts.port  # raises ValueError on a malformed port
        except ValueError:
            ok = False
        if not ok:
            raise bad_url
        try:
            self._client = openai.OpenAI(api_key=os.environ.get(API_KEY_ENV) or _NO_KEY, base_url=cfg.base_url,
                                         timeout=self.timeout_s, max_retries=0)
        except (openai.OpenAIError, ValueError):  # e.g. an URL the HTTP library refuses
            raise bad_url from None

    def __repr__(self) -> str:
        return f"OpenAIEndpoint(name={self.name!r}, base_url={self._url!r})"

    # -- Backend -------------------------------------------------------------------------------------------------

    def complete(self, messages: Sequence[Message], max_tokens: int, logprobs: int = 0) -> Completion:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": role, "content": content} for role, content in messages],
            "temperature": 0,
            "max_tokens": max_tokens,
        }
        if logprobs > 0:
            kwargs.update(logprobs=True, top_logprobs=min(logprobs, 20))
        return self._parse(self._request(kwargs))

    def check(self) -> None:
        """One one-token request with log-probabilities, the shape `Choice` sends; `JudgeUnavailable` if it fails."""
        try:
            self.complete([("user", "Answer yes or no: is the sky blue?")], max_tokens=1, logprobs=1)
        except RequestFailed as e:
            raise JudgeUnavailable(f"{e}; check the server at --llm-base-url and --llm-model") from None

    # -- internals -----------------------------------------------------------------------------------------------

    def _delay(self, attempt: int, wait: float | None) -> float:
        if wait is not None:
            return min(wait, self.max_backoff_s)
        base = min(self.backoff_s * 2 ** min(attempt, 30), self.max_backoff_s)
        return base * random.uniform(0.75, 1.0)  # a little jitter, so concurrent retries do not arrive together

    def _request(self, kwargs: dict[str, Any]) -> Any:
        failure: _Retryable | None = None
        for attempt in range(self.max_retries + 1):
            if failure is not None:
                delay = self._delay(attempt - 1, failure.wait)
                self._waiting(failure, attempt, delay)
                time.sleep(delay)
            try:
                return self._attempt(kwargs)
            except _Retryable as e:
                failure = e
        assert failure is not None
        attempts = f"{self.max_retries + 1} attempt{'s' if self.max_retries else ''}"
        if failure.kind == "connection":
            raise JudgeUnavailable(f"cannot reach the judge at {self._url} ({failure.reason}, {attempts}); "
                                   "is the server running? check --llm-base-url")
        raise RequestFailed(f"the judge at {self._url} {failure.reason} ({attempts})")

    def _waiting(self, failure: _Retryable, retry: int, delay: float) -> None:
        """Say on stderr that the run waits on the judge, and why: with the default timeout a hanging server would
        otherwise leave the run silent for (1 + retries) x 120 s per request. A timeout is always said (it already
        took `timeout_s`); quicker failures (429, 5xx) at most once per `NOTICE_EVERY_S`, not once per request."""
        now = time.monotonic()
        with self._notice_lock:
            if failure.kind != "timeout" and now - self._last_notice < NOTICE_EVERY_S:
                return
            self._last_notice = now
        why = {"timeout": f"no reply within {self.timeout_s:g} s",
               "connection": f"cannot connect ({failure.reason})"}.get(failure.kind, failure.reason)
        # print, not the console: rich's live progress display redirects sys.stderr above its bars
        print(f"judge {self._url} (model {self.model}): {why}; retry {retry} of {self.max_retries} in {delay:.1f} s",
              file=sys.stderr, flush=True)

    def _attempt(self, kwargs: dict[str, Any]) -> Any:
        """One HTTP request; the chat completion, `_Retryable`, or a final error. Never chains the client's error."""
        try:
            return self._client.chat.completions.create(**kwargs)
        except openai.APITimeoutError:
            raise _Retryable(f"did not answer within {self.timeout_s:g} s", "timeout") from None
        except openai.APIConnectionError as e:
            cause = type(e.__cause__).__name__ if e.__cause__ is not None else "connection error"
            raise _Retryable(cause, "connection") from None
        except openai.APIStatusError as e:
            status = e.status_code
            if status == 429 or status == 408 or status >= 500:
                raise _Retryable(f"answers HTTP {status}", "status", _retry_after(e.response)) from None
            if status in (401, 403):
                raise JudgeUnavailable(f"the judge at {self._url} rejected the API key (HTTP {status}); set the "
                                       f"{API_KEY_ENV} environment variable to a valid key") from None
            if status == 404:
                raise JudgeUnavailable(f"the judge at {self._url} answers HTTP 404 for model {self.model!r}: unknown "
                                       "model or wrong path; check --llm-model and --llm-base-url (usually ending in "
                                       "/v1)") from None
            raise RequestFailed(f"the judge at {self._url} rejected the request (HTTP {status})") from None
        except (openai.APIError, ValueError) as e:  # 2xx whose body is not JSON or not a chat completion
            raise RequestFailed(f"the judge at {self._url} sent a malformed reply ({type(e).__name__})") from None

    def _parse(self, response: Any) -> Completion:
        """A `Completion` from a chat-completion object; `RequestFailed` if it does not have the expected shape."""
        try:
            choices = getattr(response, "choices", None)
            if not choices:
                raise RequestFailed("no choices")
            choice = choices[0]
            text = choice.message.content
            if not isinstance(text, str):
                raise RequestFailed("no message content")
            tokens: list[str] = []
            tops: list[dict[str, float]] = []
            content = choice.logprobs.content if getattr(choice, "logprobs", None) is not None else None
            for item in content or []:
                top: dict[str, float] = {}
                for alt in item.top_logprobs or []:
                    if isinstance(alt.token, str) and alt.logprob is not None and math.isfinite(float(alt.logprob)):
                        lp = float(alt.logprob)
                        # Distinct tokens can decode to the same string: add their probabilities.
                        top[alt.token] = float(_logaddexp(top[alt.token], lp)) if alt.token in top else lp
                if not isinstance(item.token, str):
                    raise TypeError("token is not a string")
                if item.token not in top and item.logprob is not None:
                    top[item.token] = float(item.logprob)
                tokens.append(item.token)
                tops.append(top)
            usage = getattr(response, "usage", None)
            prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
            completion = int(getattr(usage, "completion_tokens", 0) or 0)
        except RequestFailed as e:
            raise RequestFailed(f"the judge at {self._url} sent a malformed reply ({e})") from None
        except (AttributeError, TypeError, ValueError, IndexError, KeyError) as e:
            raise RequestFailed(f"the judge at {self._url} sent a malformed reply ({type(e).__name__})") from None
        return Completion(text, tokens, tops, prompt, completion)


def _logaddexp(a: float, b: float) -> float:
    hi, lo = max(a, b), min(a, b)
    return hi + math.log1p(math.exp(lo - hi))

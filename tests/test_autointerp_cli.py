"""autointerp from the command line: offline with the in-process judge, and through a real llama.cpp server with
the `openai` client, including a judge that goes away (nothing finished is lost; the rerun resumes) and one that
fails its requests (nothing it failed is stored; the rerun retries)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.fake_judge import Answer, healthy, serving
from tests.llama_server import free_port, llama_server, smollm2_gguf
from tests.test_cli import assert_one_line_error, cli

TINY = ("autointerp[n_features=1,n_controls=1,window=8,n_explain=2,n_score_top=1,n_score_quantile=1,"
        "n_score_non_firing=2,n_fuzz=2,n_simulate=1]")
# A TopK SAE trained for 2 epochs rather than the smoke preset's 6: its features are judged the same way.
SAE, SAE_LABEL = "sae-topk[epochs=2]", "sae-topk[epochs=2.0]"


def _records(out: Path) -> dict[str, dict]:
    return {r["method"]: r for r in (json.loads(p.read_text()) for p in (out / "results").glob("*__autointerp*.json"))}


def _stamps(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (out / "results").glob("*.json")}


@pytest.fixture
def quick_retries(monkeypatch):
    """The endpoint's six attempts at an unreachable judge without its ~13 s of back-off between them (the runs
    here are in this process): what is refused, and when, is the same; the back-off schedule itself is
    tests/test_judge_endpoint.py::test_backoff_schedule_and_retry_after."""
    from bench.judge.openai_endpoint import OpenAIEndpoint

    assert OpenAIEndpoint.__init__.__kwdefaults__ == {"backoff_s": 0.5, "max_backoff_s": 8.0}
    monkeypatch.setattr(OpenAIEndpoint.__init__, "__kwdefaults__", {"backoff_s": 0.001, "max_backoff_s": 0.01})


def test_judge_flags_are_checked_before_any_work(tmp_path, quick_retries):
    assert_one_line_error(cli("run", "--preset", "smoke", "--tasks", "autointerp", "--llm-base-url",
                              "http://127.0.0.1:9/v1", "--out", str(tmp_path / "a")), "--llm-model")
    assert_one_line_error(cli("run", "--preset", "smoke", "--tasks", "autointerp", "--judge", "gpt-9",
                              "--out", str(tmp_path / "b")), "unknown judge")
    refused = cli("run", "--preset", "smoke", "--tasks", "autointerp", "--llm-base-url",
                  f"http://127.0.0.1:{free_port()}/v1", "--llm-model", "m", "--out", str(tmp_path / "c"))
    assert_one_line_error(refused, "--llm-base-url")
    assert "harvest" not in refused.stderr  # failed before any activations were read


def _finite(record: dict, *names: str) -> bool:
    return all(record["metrics"][n]["value"] is not None and math.isfinite(record["metrics"][n]["value"]) for n in names)


def test_judge_outage_stores_nothing_and_the_rerun_retries(tmp_path):
    """A judge that answers the run's check and its calibration, then only HTTP 500: the row is not stored, the
    run says why and ends nonzero, what finished stays; against the judge back up, the rerun asks and stores."""
    # the startup check, then calibration at TINY: 2 controls x (1 explanation + 4 detection, 2 fuzzing, 1 simulation)
    answered = 1 + 2 * 8
    state = {"down_from": answered}
    fail = Answer({"error": {"message": "overloaded"}}, 500, {"Retry-After": "0"})  # no back-off: a fast test
    out = tmp_path / "run"
    with serving(lambda n, body: fail if n >= state["down_from"] else healthy(n, body)) as server:
        args = ["run", "--preset", "smoke", "--methods", "pca", "--tasks", f"reconstruction,{TINY}", "--llm-base-url",
                server.url, "--llm-model", "x", "--no-llm-cache", "--out", str(out)]
        failed = cli(*args)
        assert failed.returncode != 0 and "Traceback" not in failed.stderr, failed.stderr[-3000:]
        assert (f"· pca: 1 of 1 judge requests failed (the judge at {server.url} answers HTTP 500 (6 attempts)); not "
                "stored, rerun to retry") in failed.stderr, failed.stderr[-3000:]
        assert f"judge {server.url} (model x): answers HTTP 500; retry 1 of 5" in failed.stderr  # said while waiting
        assert server.count == answered + 6  # the row's explanation, six times; nothing else was asked
        assert not _records(out)  # nothing stored for the row the judge failed ...
        kept = _stamps(out)
        assert any("__reconstruction" in name for name in kept)  # ... and what finished before it is kept

        state["down_from"] = math.inf  # the judge is back
        rerun = cli(*args)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert server.count > answered + 6
    record = _records(out)["pca"]
    usage = record["details"]["judge"]["usage"]
    assert usage["requests"] == 8 and usage["failed"] == usage["unanswered"] == 0
    assert _finite(record, "simulation", "detection_auroc", "detection_bal_acc")
    assert {k: v for k, v in _stamps(out).items() if k in kept} == kept


@pytest.mark.slow
def test_offline_judge_end_to_end(tmp_path):
    out = tmp_path / "run"
    run = cli("run", "--preset", "smoke", "--methods", SAE, "--tasks", TINY, "--no-llm-cache", "--out", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    record = _records(out)[SAE_LABEL]
    assert record["judge"] == {"backend": "llama.cpp", "model": "smollm2-135m"}
    details = record["details"]
    assert details["judge"]["simulation_mode"] == "all-at-once" and details["judge"]["usage"]["prompt_tokens"] > 0
    assert details["judge"]["usage"]["failed"] == 0 and _finite(record, "simulation", "detection_auroc")
    assert details["n_sampled"] == 1 and details["n_features"] == details["n_dead"] + details["n_too_rare"] + (
        details["n_features"] - details["n_dead"] - details["n_too_rare"])
    feature = details["features"][0]
    assert feature["explanation"] and feature["explain_excerpts"] and feature["detection"]
    cal = details["calibration"]
    assert cal["n_known"] == cal["n_shuffled"] == 1 and 0 <= cal["threshold"] <= 1
    assert {"simulation", "detection_auroc", "fuzzing_auroc", "detection_bal_acc"} <= set(record["metrics"])
    assert details["copies"]["copied"] == 0 and set(details["variance"]) == {"detection_auroc", "fuzzing_auroc",
                                                                              "simulation"}
    assert "autointerp judge llama.cpp:smollm2-135m" in (out / "leaderboard.md").read_text()


@pytest.mark.slow
def test_llama_cpp_server_end_to_end_and_a_judge_that_goes_away(tmp_path, quick_retries):
    gguf = smollm2_gguf()
    out = tmp_path / "run"
    with llama_server(str(gguf)) as url:
        args = ["--preset", "smoke", "--tasks", TINY, "--llm-base-url", url, "--llm-model", str(gguf), "--out", str(out)]
        first = cli("run", "--methods", "pca", *args)
        assert first.returncode == 0, first.stderr[-3000:]
    record = _records(out)["pca"]
    assert record["judge"] == {"backend": "openai", "model": str(gguf)}
    assert record["details"]["judge"]["simulation_mode"] == "generated"
    usage = record["details"]["judge"]["usage"]
    assert usage["requests"] > 0 and usage["unanswered"] == 0  # the server answered every request
    assert _finite(record, "detection_auroc")
    done = _stamps(out)

    # the server is gone: finished work needs no judge and stays; new work fails in one line, losing nothing
    args[args.index(url)] = url.rsplit(":", 1)[0] + f":{free_port()}/v1"
    again = cli("run", "--methods", "pca", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    more = cli("run", "--methods", f"pca,{SAE}", *args)
    assert_one_line_error(more, "--llm-base-url")
    assert _stamps(out) == done

    # a judge is back (another port, same model): the run resumes, the finished result untouched
    with llama_server(str(gguf)) as url:
        args[args.index("--llm-base-url") + 1] = url
        resumed = cli("run", "--methods", f"pca,{SAE}", *args)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert set(_records(out)) == {"pca", SAE_LABEL}
    assert {k: v for k, v in _stamps(out).items() if k in done} == done

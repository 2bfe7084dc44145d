"""The bad-input catalogue: every case a new or hostile user met (issue 21) ends with exit code 2 and one line
naming the fix, never a traceback, and before any expensive work. Run through `bench.cli.main` in this process
(the same code as `python -m bench`; tests/test_cli.py covers the process boundary)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cli import main


def run_main(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def assert_one_line(code: int, err: str, fragment: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in lines if line.startswith("error:")]  # (progress bars may come before it)
    assert len(errors) == 1 and lines[-1] == errors[0] and fragment in errors[0], err


def _saelens_dir(tmp_path: Path, **cfg_changes) -> Path:
    """A real SAELens-format export of a small TopK SAE, its cfg.json then edited."""
    import torch

    from bench.store import ArraySplit
    from methods import build_method
    from methods.saelens_format import to_saelens

    torch.manual_seed(0)
    sae = build_method("sae-topk[k=4,dict_ratio=2,batch_size=64]").fit(ArraySplit(torch.randn(256, 16)))
    out = to_saelens(sae, tmp_path / "sae", "blocks.12.hook_resid_post", "smollm2-135m")
    cfg = json.loads((out / "cfg.json").read_text())
    cfg.update(cfg_changes)
    (out / "cfg.json").write_text(json.dumps(cfg))
    return out


SMOKE = ("run", "--preset", "smoke", "--tasks", "reconstruction")


@pytest.mark.parametrize("argv, fragment", [
    ((*SMOKE, "--methods", "sae-topk[k=2.5]"), "k=2.5 is not an integer"),
    ((*SMOKE, "--methods", "sae-topk[k=nan]"), "k=nan"),
    ((*SMOKE, "--methods", "sae-relu[dict_ratio=0]"), "dict_ratio=0 must be > 0"),
    ((*SMOKE, "--methods", "sae-relu[batch_size=0]"), "batch_size=0"),
    ((*SMOKE, "--methods", "sae-relu[lr=nan]"), "lr=nan is not a finite number"),
    ((*SMOKE, "--methods", "sae-relu[dead_latents=auxk]"), "choose from"),
    ((*SMOKE, "--methods", "sae-relu", "--seed", "-1"), "--seed -1"),
    ((*SMOKE, "--methods", "pca", "--matched-k", "-5"), "--matched-k -5"),
    ((*SMOKE, "--methods", "pca", "--matched-k", "0"), "--matched-k 0"),
    ((*SMOKE, "--methods", "pca", "--seeds", "0,0"), "distinct"),
    ((*SMOKE, "--methods", "pca", "--eval-dtype", "float16"), "unknown --eval-dtype 'float16'"),
    ((*SMOKE, "--methods", "pca", "--task-methods", "autointerp"), "write TASK=METHOD1,METHOD2"),
    ((*SMOKE, "--methods", "pca", "--task-methods", "autointrep=pca"), "unknown task 'autointrep'"),
    (("run", "--preset", "smoke", "--tasks", "loss_recovered[n_contexts=0]"), "n_contexts=0"),
    (("run", "--preset", "smoke", "--tasks", "toy_superposition[scale=huge]"), "choose from"),
    ((*SMOKE, "--methods", "pretrained:/no/such/sae"), "/no/such/sae"),
    (("run", "--preset", "smoke", "--llm-base-url", "http://127.0.0.1:9/v1"), "--llm-base-url needs --llm-model"),
])
def test_bad_input_is_refused_in_one_line_before_any_work(capsys, tmp_path, argv, fragment):
    out = tmp_path / "run"
    assert_one_line(*run_main(capsys, *argv, "--out", str(out)), fragment)
    assert not out.exists()  # refused before the run directory was touched


def test_a_pretrained_sae_with_a_bad_config_is_refused_before_harvesting(capsys, tmp_path):
    sae = _saelens_dir(tmp_path, k=-3)
    out = tmp_path / "run"
    assert_one_line(*run_main(capsys, *SMOKE, "--methods", f"pretrained:{sae}", "--out", str(out)), "k")
    assert not out.exists()


def test_a_binary_corpus_is_one_line(capsys, tmp_path):
    text = tmp_path / "corpus.jsonl"
    text.write_bytes(bytes(range(256)) * 64)
    assert_one_line(*run_main(capsys, *SMOKE, "--methods", "pca", "--text", str(text), "--out", str(tmp_path / "r")),
                    str(text))


def test_a_matched_k_beyond_the_hook_is_refused_before_any_fit(capsys, tmp_path):
    out = tmp_path / "run"
    assert_one_line(*run_main(capsys, *SMOKE, "--methods", "pca", "--matched-k", "100000", "--out", str(out)),
                    "--matched-k 100000 exceeds the hook's dimension 576")
    assert not (out / "dictionaries").exists() and not (out / "results").exists()
    assert run_main(capsys, *SMOKE, "--methods", "pca", "--matched-k", "5", "--out", str(out))[0] == 0  # not locked out


def test_report_on_a_record_missing_a_field_is_one_line(capsys, tmp_path):
    from tests.report_helpers import copy_run, edit_result  # the committed smoke baseline: real result files

    run = copy_run(tmp_path / "run")
    edit_result(run, "pca", "reconstruction", lambda record: record.pop("metrics"))
    assert_one_line(*run_main(capsys, "report", "--results", str(run)), "metrics")


@pytest.mark.parametrize("spec, fragment", [("autointerp[n_features=0]", "n_features=0 must be > 0"),
                                            ("autointerp[window=2.5]", "window=2.5 is not an integer")])
def test_autointerp_settings_are_checked_at_parse_time(capsys, tmp_path, spec, fragment):
    out = tmp_path / "run"
    assert_one_line(*run_main(capsys, "run", "--preset", "smoke", "--tasks", spec, "--out", str(out)), fragment)
    assert not out.exists()

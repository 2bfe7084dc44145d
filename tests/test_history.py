"""The results history: idempotent appends, trends across runs, the `history` command, the run's own append."""

from __future__ import annotations

import json
import sqlite3

from reports import history as hist
from reports.runs import load_run
from tests.report_helpers import BASELINE, bench, copy_run, edit_result


def _count(db) -> int:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT COUNT(*) FROM metrics").fetchone()[0]


def test_append_is_idempotent_per_run_and_record(tmp_path):
    db = tmp_path / "h.sqlite"
    run = load_run(BASELINE)
    n = sum(len(r["metrics"]) for r in run.records)
    first = hist.append(db, run)
    assert _count(db) == n
    assert hist.append(db, load_run(BASELINE)) == first and _count(db) == n  # a resumed run: no double counting
    other = copy_run(tmp_path / "later")
    edit_result(other, "sae-topk", "reconstruction", lambda r: r["metrics"]["fvu"].update(value=0.5))
    second = hist.append(db, load_run(other))
    assert second != first and _count(db) == 2 * n
    entry = {e.id: e for e in hist.runs(db)}[first]
    assert entry.git_commit == run.git_commit and entry.config_fingerprint == run.config_fingerprint
    assert entry.preset == "smoke" and entry.n_metrics == n
    points = hist.trend(db, "reconstruction.fvu", method="sae-topk")
    assert [p.run_id for p in points] == [first, second] and points[1].value == 0.5
    # a history entry reads back as a run with the same metrics (details are not kept)
    back = hist.load(db, first)
    assert {(r["method"], r["task"]): r["metrics"]["fvu"]["value"] for r in back.records if r["task"] == "reconstruction"} \
        == {(r["method"], r["task"]): r["metrics"]["fvu"]["value"] for r in run.records if r["task"] == "reconstruction"}
    assert json.loads(json.dumps(back.config)) == run.config


def test_record_run_uses_the_environment_and_never_fails(tmp_path, monkeypatch):
    db = tmp_path / "env.sqlite"
    monkeypatch.setenv(hist.ENV, str(db))
    assert hist.record_run(BASELINE) == 1 and _count(db) > 0
    monkeypatch.setenv(hist.ENV, "off")
    assert hist.record_run(BASELINE) is None
    monkeypatch.setenv(hist.ENV, str(tmp_path / "not-a-dir" / "x.sqlite"))
    (tmp_path / "not-a-dir").write_text("a file where a directory should be")
    assert hist.record_run(BASELINE) is None  # warns, the run itself is not failed


def test_history_command_lists_runs_and_shows_a_trend(tmp_path):
    db = tmp_path / "h.sqlite"
    assert bench("history", "--history", str(db), "--add", str(BASELINE)).returncode == 0
    listing = bench("history", "--history", str(db))
    assert listing.returncode == 0 and "smoke" in listing.stdout and "baselines" not in listing.stderr
    trend = bench("history", "reconstruction.fvu", "--history", str(db))
    assert trend.returncode == 0 and "sae-topk" in trend.stdout and "#1" in trend.stdout, trend.stderr
    bad = bench("history", "nosuchmetric", "--history", str(db))
    assert bad.returncode == 2 and "task.metric" in bad.stderr
    missing = bench("history", "--history", str(tmp_path / "none.sqlite"))
    assert missing.returncode == 2 and "no history" in missing.stderr


def test_report_site_plots_the_history(tmp_path):
    db = tmp_path / "h.sqlite"
    later = copy_run(tmp_path / "later")
    edit_result(later, "sae-topk", "reconstruction", lambda r: r["metrics"]["fvu"].update(value=0.5))
    assert bench("history", "--history", str(db), "--add", str(BASELINE), str(later)).returncode == 0
    out = tmp_path / "site"
    made = bench("report", "--results", "2", "--format", "html,json", "--out", str(out), "--history", str(db))
    assert made.returncode == 0, made.stderr
    page = (out / "history.html").read_text()
    assert "reconstruction.fvu across runs" in page and "#2 " in page
    assert 'href="history.html"' in (out / "index.html").read_text()
    (run,) = json.loads((out / "report.json").read_text())["runs"]
    assert run["run"]["history_id"] == 2  # a history entry reports like a directory (without per-feature detail)


SECRET_URL = "http://user:SECRET@judge.example:8080/v1?api_key=SECRET2&model=m"


def _with_secret(record):
    record["config"]["judge"]["base_url"] = SECRET_URL
    record["judge"] = {"backend": "openai", "model": "m", "endpoint": SECRET_URL}
    record["details"].setdefault("board_notes", []).append(f"judged at {SECRET_URL}")  # printed by every report


def test_credentials_in_a_judge_url_reach_no_history_and_no_report(tmp_path):
    """A run made with --llm-base-url http://user:SECRET@host/v1 (before records were redacted): neither the
    history nor any report file holds the password, while the host stays to say which judge it was."""
    import io

    from rich.console import Console

    from reports.report import write_report

    run_dir = copy_run(tmp_path / "run")
    edit_result(run_dir, "pca", "autointerp", _with_secret)
    meta = json.loads((run_dir / "config.json").read_text())
    meta["config"]["judge"]["base_url"] = SECRET_URL
    (run_dir / "config.json").write_text(json.dumps(meta))
    assert "SECRET" in (run_dir / "config.json").read_text()  # the case is planted

    db = tmp_path / "h.sqlite"
    run = load_run(run_dir)
    unredacted = load_run(run_dir)  # as a Run built by other code could hold it: append redacts on its own
    unredacted.config["judge"]["base_url"] = SECRET_URL
    (rec,) = [r for r in unredacted.records if (r["method"], r["task"]) == ("pca", "autointerp")]
    _with_secret(rec)
    hist.append(db, unredacted)
    stored = db.read_bytes()
    assert b"SECRET" not in stored and b"judge.example:8080" in stored
    terminal = io.StringIO()
    out = tmp_path / "site"
    write_report([run, hist.load(db, 1)], ["terminal", "md", "json", "csv", "html"], out, db,
                 Console(file=terminal, width=200))
    assert "SECRET" not in terminal.getvalue()
    assert "judged at http://***:***@judge.example:8080/v1?api_key=***&model=m" in (out / "leaderboard.md").read_text()
    for path in out.rglob("*"):
        if path.is_file():
            assert b"SECRET" not in path.read_bytes(), path

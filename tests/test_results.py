"""Result records: credentials in URLs never reach a result file; damaged files read as absent (recomputed)."""

from __future__ import annotations

import json

from bench.results import SCHEMA, read_result, redact_record, write_result

SECRET_URL = "http://user:SECRET@judge.example:8080/v1?token=SECRET2"


def test_written_records_hold_no_url_credentials(tmp_path):
    record = {"config": {"judge": {"base_url": SECRET_URL, "model": "m"}, "text": None},
              "judge": {"backend": "openai", "model": "m"},
              "details": {"notes": [f"judge at {SECRET_URL} answered", "plain text, http-free"]},
              "metrics": {"fvu": {"value": 0.5, "higher_is_better": False}}}
    path = tmp_path / "r.json"
    write_result(path, record)
    text = path.read_text()
    assert "SECRET" not in text and "judge.example:8080/v1" in text
    back = read_result(path)
    assert back["schema"] == SCHEMA and back["metrics"] == record["metrics"]
    assert back["config"]["judge"]["base_url"].startswith("http://***")
    assert back["details"]["notes"][1] == "plain text, http-free"
    assert "SECRET" in json.dumps(record)  # the caller's record is left as it was


def test_redact_record_leaves_urls_without_credentials_alone():
    plain = {"a": ["http://127.0.0.1:8080/v1", "https://x.org/p?q=1#f"], "n": 3, "none": None}
    assert redact_record(plain) == plain


def test_damaged_or_foreign_result_files_read_as_absent(tmp_path):
    path = tmp_path / "r.json"
    assert read_result(path) is None
    for data in (b"\xff\xfe binary", b"{half", b"[1, 2]", b'"a string"', b'{"schema": "other/9"}'):
        path.write_bytes(data)
        assert read_result(path) is None, data

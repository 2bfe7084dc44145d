"""A method from another package, through the `decompbench.methods` entry point group, end to end.

The plugin in tests/plugin_pkg is registered on the fly: its source and a .dist-info with its entry points are
put on PYTHONPATH (what `pip install` would leave in site-packages), beside a broken plugin that must only warn.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.test_cli import ROOT, bench, cli

PLUGIN = ROOT / "tests" / "plugin_pkg"


def _dist(site: Path, name: str, entry_points: str) -> None:
    info = site / f"{name.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(entry_points)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    shutil.copytree(PLUGIN / "decompbench_toyplugin", site / "decompbench_toyplugin")
    _dist(site, "decompbench-toyplugin", "[decompbench.methods]\ncentred-neurons = decompbench_toyplugin:CentredNeurons\n")
    _dist(site, "decompbench-broken", "[decompbench.methods]\nbroken = decompbench_broken_missing:Nothing\n")
    return site


def test_list_shows_plugin_with_origin_and_warns_once_for_the_broken_one(site):
    result = bench("list", env={"PYTHONPATH": str(site)})
    assert result.returncode == 0, result.stderr
    line = next(l for l in result.stdout.splitlines() if "centred-neurons" in l)
    assert "plugin from decompbench-toyplugin" in line
    warnings = [l for l in result.stderr.splitlines() if "decompbench-broken" in l]
    assert len(warnings) == 1 and warnings[0].startswith("warning: skipped plugin 'broken'")


@pytest.fixture
def installed(site, monkeypatch):
    """This process as if it had started with `site` on its path (the test above checks that a fresh `python -m bench`
    finds the plugin by itself): the .dist-info's entry points, loaded by `bench.plugins.load_plugins` as `import
    methods` does, added to the registry for one test."""
    import methods
    from bench.plugins import load_plugins
    from methods.base import Method

    monkeypatch.syspath_prepend(str(site))
    registry, origins = dict(methods.REGISTRY), dict(methods.ORIGINS)
    load_plugins("decompbench.methods", Method, registry, origins)
    assert origins.get("centred-neurons") == "decompbench-toyplugin"
    for name in registry.keys() - methods.REGISTRY.keys():
        monkeypatch.setitem(methods.REGISTRY, name, registry[name])
        monkeypatch.setitem(methods.ORIGINS, name, origins[name])


def test_check_method_runs_the_contract_on_a_plugin(installed):
    result = cli("check-method", "centred-neurons")
    assert result.returncode == 0, result.stderr
    assert "OK centred-neurons" in result.stderr


def test_plugin_method_reaches_the_leaderboard(installed, tmp_path):
    out = tmp_path / "run"
    result = cli("run", "--preset", "smoke", "--methods", "centred-neurons,pca", "--tasks", "reconstruction",
                 "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((out / "leaderboard.json").read_text())["boards"][0]["rows"]
    assert "centred-neurons" in {r["method"] for r in rows}
    assert "centred-neurons" in result.stdout


def test_only_plugins_that_cannot_load_are_skipped_and_a_plugin_bug_surfaces(tmp_path, monkeypatch, capsys):
    """Real entry points (a .dist-info on sys.path) in a group of their own, loaded in process."""
    from bench.plugins import load_plugins
    from methods.base import Method

    group = "decompbench.test-plugins"
    site = tmp_path / "site"
    site.mkdir()
    (site / "plugin_wrong_kind.py").write_text("class NotAMethod:\n    name = 'x'\n")
    (site / "plugin_syntax.py").write_text("def broken(:\n")
    (site / "plugin_bug.py").write_text("raise RuntimeError('a bug in the plugin')\n")
    for name, target in (("missing-module", "plugin_nowhere:M"), ("missing-attribute", "plugin_wrong_kind:Absent"),
                         ("wrong-kind", "plugin_wrong_kind:NotAMethod"), ("syntax", "plugin_syntax:M")):
        _dist(site, f"pkg-{name}", f"[{group}]\n{name} = {target}\n")
    monkeypatch.syspath_prepend(str(site))
    registry: dict[str, type] = {}
    load_plugins(group, Method, registry, {})
    assert registry == {}
    warnings = capsys.readouterr().err.splitlines()
    assert sorted(w.split("'")[1] for w in warnings) == ["missing-attribute", "missing-module", "syntax", "wrong-kind"]
    assert all(w.startswith("warning: skipped plugin") for w in warnings)
    assert any("ModuleNotFoundError" in w for w in warnings) and any("AttributeError" in w for w in warnings)

    _dist(site, "pkg-bug", f"[{group}]\nbug = plugin_bug:M\n")
    with pytest.raises(RuntimeError, match="a bug in the plugin"):  # not a warning: the plugin's code is at fault
        load_plugins(group, Method, {}, {})

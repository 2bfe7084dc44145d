"""Export to SAELens' format and load it back; with sae-lens installed (a separate venv), load it there too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import torch

import methods
from bench.errors import BenchError
from bench.store import ArraySplit
from methods.saelens_format import from_saelens, to_saelens

VARIANTS = ["sae-relu", "sae-relu[tied=true,decoder_bias=false]", "sae-topk[k=5]", "sae-batchtopk[k=5]",
            "sae-matryoshka[k=5,n_prefixes=3]", "sae-jumprelu", "sae-gated"]
SIDE_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "saelens_side.py"
ROUNDTRIPS = Path(__file__).resolve().parent / "saelens_roundtrips.py"  # its round trip, for all SAEs in one process


def _random_sae(spec: str, d: int = 16, m: int = 40):
    """An SAE of the variant with every parameter random, so the export has to get all of them right."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, d, generator=g) * 3 + 1
    sae = methods.build_method(spec, {"dict_ratio": m / d}).make(d, x)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            if name != "log_threshold":
                p.add_(0.3 * torch.randn(p.shape, generator=g))
        if hasattr(sae, "log_threshold"):
            sae.log_threshold.copy_(torch.rand(m, generator=g).log())
        if hasattr(sae, "threshold_updates"):
            sae.threshold.fill_(0.7)
    return sae, x


def _saelens_python() -> str | None:
    if os.environ.get("DECOMPBENCH_SAELENS_PYTHON"):
        return os.environ["DECOMPBENCH_SAELENS_PYTHON"]
    return sys.executable if find_spec("sae_lens") else None


@pytest.mark.parametrize("spec", VARIANTS)
def test_export_then_load_gives_the_same_sae(spec, tmp_path):
    sae, x = _random_sae(spec)
    to_saelens(sae, tmp_path, hook_name="blocks.3.hook_resid_post", model_name="m")
    loaded, cfg = from_saelens(tmp_path)
    assert cfg["metadata"]["hook_name"] == "blocks.3.hook_resid_post"
    with torch.no_grad():
        codes = sae.encode(x)
        assert (codes != 0).any()
        assert torch.allclose(loaded.encode(x), codes, atol=1e-5)
        assert torch.allclose(loaded.decode(codes), sae.decode(codes), atol=1e-5)


def test_exported_standard_sae_follows_saelens_formula(tmp_path):
    """Computed from the files alone with SAELens' equations: f = relu((x - b_dec) W_enc + b_enc)."""
    sae, x = _random_sae("sae-relu")
    to_saelens(sae, tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] == "standard" and cfg["d_in"] == 16 and cfg["d_sae"] == 40
    from safetensors.numpy import load_file

    t = load_file(str(tmp_path / "sae_weights.safetensors"))
    xn = x.numpy()
    f = np.maximum((xn - t["b_dec"]) @ t["W_enc"] + t["b_enc"], 0)
    with torch.no_grad():
        assert np.allclose(f, sae.encode(x).numpy(), atol=1e-4)
        assert np.allclose(f @ t["W_dec"] + t["b_dec"], sae.decode(sae.encode(x)).numpy(), atol=1e-4)


def test_loading_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(BenchError, match="no SAELens SAE here"):
        from_saelens(tmp_path)
    (tmp_path / "sae.pt").write_bytes(b"not loaded")
    with pytest.raises(BenchError, match="never pickles"):
        from_saelens(tmp_path)
    sae, _ = _random_sae("sae-batchtopk")
    to_saelens(sae, tmp_path / "ckpt")
    cfg = json.loads((tmp_path / "ckpt" / "cfg.json").read_text())
    (tmp_path / "ckpt" / "cfg.json").write_text(json.dumps({**cfg, "architecture": "batchtopk"}))
    with pytest.raises(BenchError, match="save_inference_model"):
        from_saelens(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "cfg.json").write_text(json.dumps({**cfg, "d_sae": 41}))
    with pytest.raises(BenchError, match="does not match"):
        from_saelens(tmp_path / "ckpt")


def test_pretrained_method_checks_width_and_hook(tmp_path):
    sae, x = _random_sae("sae-topk[k=5]")
    to_saelens(sae, tmp_path / "sae", hook_name="blocks.3.hook_resid_post")
    loaded = methods.build_method(f"pretrained:{tmp_path / 'sae'}").fit(ArraySplit(x, "blocks.3.hook_resid_post"))
    assert torch.allclose(loaded.encode(x), sae.encode(x), atol=1e-5)
    assert methods.canonical_spec(methods.build_method(f"pretrained:{tmp_path / 'sae'}")) == "pretrained:sae"
    with pytest.raises(BenchError, match="pass the matching --layer"):
        methods.build_method(f"pretrained:{tmp_path / 'sae'}").fit(ArraySplit(x, "blocks.5.hook_resid_post"))
    with pytest.raises(BenchError, match="reads 16-dimensional activations but this hook gives 8"):
        methods.build_method(f"pretrained:{tmp_path / 'sae'}").fit(ArraySplit(x[:, :8]))


@pytest.fixture(scope="module")
def saelens_roundtrips(tmp_path_factory) -> dict[str, tuple]:
    """Every variant exported, then loaded and run by sae-lens in ONE process of its python (tests/saelens_roundtrips.py
    runs benchmarks/saelens_side.py's round trip on each): spec -> (our SAE, its input, the directory with out.npz, or
    error.txt where that variant failed, and the process)."""
    root = tmp_path_factory.mktemp("saelens")
    made = {}
    for i, spec in enumerate(VARIANTS):
        sae, x = _random_sae(spec)
        directory = root / str(i)
        to_saelens(sae, directory / "sae")
        np.save(directory / "x.npy", x.numpy())
        made[spec] = (sae, x, directory)
    dirs = [str(directory) for _, _, directory in made.values()]
    proc = subprocess.run([_saelens_python(), str(ROUNDTRIPS), str(SIDE_SCRIPT), *dirs], capture_output=True, text=True,
                          timeout=600)
    return {spec: (*v, proc) for spec, v in made.items()}


@pytest.mark.ci_required  # .ci/run makes the side venv; there a skip is a failure (tests/conftest.py)
@pytest.mark.skipif(_saelens_python() is None, reason="sae-lens not installed (set DECOMPBENCH_SAELENS_PYTHON to "
                                                      "the python of a venv that has it)")
@pytest.mark.parametrize("spec", VARIANTS)
def test_saelens_loads_our_export_with_the_same_outputs(spec, saelens_roundtrips):
    sae, x, directory, proc = saelens_roundtrips[spec]
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (directory / "error.txt").exists(), (directory / "error.txt").read_text()[-2000:]
    theirs = np.load(directory / "out.npz")
    with torch.no_grad():
        codes = sae.encode(x)
        assert np.allclose(theirs["codes"], codes.numpy(), atol=1e-5)
        assert np.allclose(theirs["recon"], sae.decode(codes).numpy(), atol=1e-5)


# --- preflight and corruption: one-line errors before any harvest, and only for what corruption raises ----------
def _export(tmp_path, spec: str = "sae-topk[k=5]") -> Path:
    sae, _ = _random_sae(spec)
    return to_saelens(sae, tmp_path / "sae")


def _rewrite_cfg(directory: Path, **changes) -> None:
    cfg = json.loads((directory / "cfg.json").read_text())
    (directory / "cfg.json").write_text(json.dumps({**cfg, **changes}))


def _preflight_error(path) -> str:
    method = methods.build_method(f"pretrained:{path}")  # building reads nothing: a missing path is fine here
    with pytest.raises(BenchError) as e:
        method.preflight()
    assert "\n" not in str(e.value)
    return str(e.value)


def test_preflight_passes_a_good_export_and_refuses_a_missing_directory(tmp_path):
    methods.build_method(f"pretrained:{_export(tmp_path)}").preflight()
    assert "no such directory" in _preflight_error(tmp_path / "does-not-exist")
    assert "no SAELens SAE here" in _preflight_error(tmp_path)
    with pytest.raises(BenchError, match="needs a directory"):
        methods.build_method("pretrained").preflight()


@pytest.mark.parametrize("changes, fragment", [
    (dict(k=-3), "k=-3 must be a positive integer"),
    (dict(k=2.5), "k=2.5 must be a positive integer"),
    (dict(k=None), "k=None must be a positive integer"),
    (dict(d_in="16"), "d_in='16' must be a positive integer"),
    (dict(architecture="topk_v2"), "architecture 'topk_v2' is not supported"),
    (dict(d_sae=41), "W_enc is [16, 40], d_in=16 and d_sae=41 make it [16, 41]"),
])
def test_preflight_refuses_a_bad_config(tmp_path, changes, fragment):
    directory = _export(tmp_path)
    _rewrite_cfg(directory, **changes)
    assert fragment in _preflight_error(directory)
    with pytest.raises(BenchError, match="must be a positive integer|not supported|does not match"):
        from_saelens(directory)  # loading checks the same


def test_corrupt_files_are_one_line_errors_found_by_preflight(tmp_path):
    directory = _export(tmp_path)
    weights = directory / "sae_weights.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[:-100])  # a download cut short
    assert "unreadable" in _preflight_error(directory)
    with pytest.raises(BenchError, match="unreadable"):
        from_saelens(directory)
    from safetensors.torch import load_file, save_file

    weights.write_bytes(good)
    tensors = load_file(str(weights))
    save_file({**tensors, "W_dec": torch.zeros(40, 15)}, str(weights))  # a wrong shape
    assert "W_dec is [40, 15]" in _preflight_error(directory)
    save_file({k: v for k, v in tensors.items() if k != "b_enc"}, str(weights))  # a missing tensor
    assert "needs tensor 'b_enc'" in _preflight_error(directory)
    (directory / "cfg.json").write_text('{"architecture": ')
    assert "not valid JSON" in _preflight_error(directory)


def test_a_bug_while_loading_is_not_reported_as_a_corrupt_file(tmp_path, monkeypatch):
    directory = _export(tmp_path)

    def broken(path):
        raise MemoryError("out of memory")

    monkeypatch.setattr("methods.saelens_format.load_file", broken)
    with pytest.raises(MemoryError):
        from_saelens(directory)

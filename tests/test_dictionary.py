"""The Dictionary contract's building blocks, on hand-computed tensors."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bench.dictionary import CONFIG_FILE, WEIGHTS_FILE, LinearDictionary, TopKDictionary, load_dictionary, topk_codes
from bench.errors import BenchError


def test_signed_linear_dictionary_by_hand():
    # 2-d input, one atom along (1, 0) -> two codes: relu(z), relu(-z)
    enc = torch.tensor([[1.0, 0.0]])
    d = LinearDictionary.from_matrices(enc, enc, bias=torch.tensor([1.0, 1.0]))
    x = torch.tensor([[3.0, 5.0], [-1.0, 2.0]])
    # z = (x - bias) @ enc.T = [[2], [-2]]
    codes = d.encode(x)
    assert torch.equal(codes, torch.tensor([[2.0, 0.0], [0.0, 2.0]]))
    # x_hat = bias + (c+ - c-) * (1, 0) = [[3, 1], [-1, 1]]
    assert torch.equal(d.decode(codes), torch.tensor([[3.0, 1.0], [-1.0, 1.0]]))
    assert torch.equal(d(x), d.decode(codes))
    assert torch.equal(d.directions, torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    assert d.d_dict == 2


def test_topk_keeps_the_largest_codes():
    codes = torch.tensor([[0.1, 3.0, 0.0, 2.0], [5.0, 0.0, 1.0, 0.5]])
    assert torch.equal(topk_codes(codes, 2), torch.tensor([[0.0, 3.0, 0.0, 2.0], [5.0, 0.0, 1.0, 0.0]]))


def test_topk_dictionary_wraps_and_round_trips(tmp_path):
    eye = torch.eye(3)
    inner = LinearDictionary.from_matrices(eye, eye)
    d = TopKDictionary.wrap(inner, 1)
    x = torch.tensor([[1.0, -4.0, 2.0]])
    assert torch.equal(d(x), torch.tensor([[0.0, -4.0, 0.0]]))
    d.save(tmp_path / "d")
    again = load_dictionary(tmp_path / "d")
    assert torch.equal(again(x), d(x))


def test_dimension_mismatch_is_a_one_line_error():
    eye = torch.eye(3)
    d = LinearDictionary.from_matrices(eye, eye)
    with pytest.raises(BenchError, match="dimension 3 but the hook gives 4"):
        d.encode(torch.zeros(2, 4))


def _saved(tmp_path) -> Path:
    enc = torch.arange(12.0).reshape(4, 3)
    LinearDictionary.from_matrices(enc, enc + 1, bias=torch.ones(3)).save(tmp_path / "d")
    return tmp_path / "d"


def _edit_json(directory: Path, edit) -> None:
    spec = json.loads((directory / CONFIG_FILE).read_text())
    (directory / CONFIG_FILE).write_text(json.dumps(edit(spec)))


def _flip_float_bytes(path: Path) -> None:
    """Change a few bytes of tensor data, leaving the header (and so the file's validity) intact."""
    data = bytearray(path.read_bytes())
    start = 8 + struct.unpack("<Q", data[:8])[0]  # safetensors: u64 header length, JSON header, then the data
    for i in range(start + 4, start + 12):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def test_checksum_is_recorded_and_a_changed_weights_file_is_refused(tmp_path):
    d = _saved(tmp_path)
    weights = d / WEIGHTS_FILE
    assert json.loads((d / CONFIG_FILE).read_text())["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    x = torch.randn(5, 3)
    assert torch.equal(load_dictionary(d)(x), LinearDictionary.from_matrices(
        torch.arange(12.0).reshape(4, 3), torch.arange(12.0).reshape(4, 3) + 1, bias=torch.ones(3))(x))
    _flip_float_bytes(weights)
    load_file(str(weights))  # still a valid safetensors file: only the checksum can tell
    with pytest.raises(BenchError) as e:
        load_dictionary(d)
    assert "SHA-256" in str(e.value) and f"delete {d} and rerun to refit" in str(e.value) and "\n" not in str(e.value)


def test_a_dictionary_saved_before_checksums_loads_with_a_note(tmp_path, capsys):
    d = _saved(tmp_path)
    _edit_json(d, lambda spec: {k: v for k, v in spec.items() if k != "sha256"})
    assert load_dictionary(d).n_atoms == 4
    assert "saved without a checksum" in capsys.readouterr().err


@pytest.mark.parametrize("corrupt, fragment", [
    (lambda d: (d / WEIGHTS_FILE).write_bytes(b"not a safetensors file"), "SHA-256"),
    (lambda d: (d / WEIGHTS_FILE).unlink(), "FileNotFoundError"),
    (lambda d: ((d / WEIGHTS_FILE).unlink(), (d / WEIGHTS_FILE).mkdir()), "IsADirectoryError"),
    (lambda d: (d / CONFIG_FILE).write_text("{oops"), "JSONDecodeError"),
    (lambda d: (d / CONFIG_FILE).write_bytes(b"\xff\xfe\x00binary"), "UnicodeDecodeError"),
    (lambda d: (d / CONFIG_FILE).write_text("[1, 2]"), "TypeError"),
    (lambda d: _edit_json(d, lambda s: {**s, "kind": "no-such-kind"}), "unknown dictionary kind"),
    (lambda d: _edit_json(d, lambda s: {k: v for k, v in s.items() if k != "config"}), "missing field 'config'"),
    (lambda d: _edit_json(d, lambda s: {**s, "config": {**s["config"], "n_atoms": 5}}), "do not match"),
    (lambda d: _edit_json(d, lambda s: {**s, "config": {**s["config"], "n_atoms": "many"}}), "ValueError"),
    (lambda d: ((d / WEIGHTS_FILE).write_bytes(b"not a safetensors file"),
                _edit_json(d, lambda s: {k: v for k, v in s.items() if k != "sha256"})), "SafetensorError"),
])
def test_corrupt_dictionary_files_are_one_line_errors(tmp_path, corrupt, fragment):
    d = _saved(tmp_path)
    corrupt(d)
    with pytest.raises(BenchError) as e:
        load_dictionary(d)
    assert fragment in str(e.value) and f"delete {d} and rerun to refit" in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


class _NeedsTooMuchMemory(LinearDictionary):
    kind = "test-out-of-memory"

    def __init__(self, **config):
        raise MemoryError


def test_other_errors_are_not_reported_as_a_corrupt_file(tmp_path):
    """Out of memory (or a bug) while rebuilding is not "delete it and refit": it surfaces as it is."""
    d = _saved(tmp_path)
    _edit_json(d, lambda s: {**s, "kind": _NeedsTooMuchMemory.kind})
    with pytest.raises(MemoryError):
        load_dictionary(d)


class _TiedLinear(LinearDictionary):
    """Decoder and encoder are one tensor: safetensors refuses to write it, a real failure in the middle of a save."""

    kind = "test-tied"

    def __init__(self, d_in: int, n_atoms: int, signed: bool = True) -> None:
        super().__init__(d_in, n_atoms, signed)
        self.register_buffer("decoder", self.encoder)


def test_a_save_cut_short_reads_as_not_fitted(tmp_path):
    """dictionary.json (what a run looks for) goes first, so an interrupted re-save is refitted, not refused as a
    mismatch of the old checksum and half-new files, and never loaded as old config beside new weights."""
    d = _saved(tmp_path)
    with pytest.raises(RuntimeError, match="share memory"):
        _TiedLinear(3, 4).save(d)
    assert not (d / CONFIG_FILE).exists() and (d / WEIGHTS_FILE).exists()

"""Writing files: indented JSON with flat lists on one line; modes that honour the umask; a full disk in one line."""

import errno
import json
import stat
import subprocess
import sys

import pytest

from bench.errors import BenchError
from bench.io import atomic_write, atomic_write_json, dumps
from tests.report_helpers import BASELINE, ROOT


def test_flat_lists_on_one_line_and_the_same_object_back():
    obj = {"x": [1, 2.5e-3, -3, 1e-20], "ids": ["a,  b", 'q"z', "back\\slash", "new\nline"], "flags": [True, None],
           "nested": [[1, 2], [3]], "objects": [{"k": [4, 5]}], "empty": []}
    text = dumps(obj)
    assert json.loads(text) == obj
    assert '"x": [1, 0.0025, -3, 1e-20]' in text and '"ids": ["a,  b", "q\\"z", "back\\\\slash", "new\\nline"]' in text
    assert '"k": [4, 5]' in text and "[1, 2]" in text


# --- file modes: what we write is for people (published report sites), so it honours the umask -------------------
_MODES = """
import os, stat, sys
from pathlib import Path
import torch
from bench.dictionary import LinearDictionary
from bench.io import atomic_write_json, umask
from reports import history
from reports.runs import load_run
out = Path(sys.argv[1])
atomic_write_json(out / "result.json", {"a": 1})
LinearDictionary.from_matrices(torch.eye(2), torch.eye(2)).save(out / "dict")  # safetensors' writer
history.append(out / "history.sqlite", load_run(sys.argv[2]))  # sqlite creates its own file
print(oct(umask()))
for p in sorted(out.rglob("*")):
    print(p.relative_to(out), oct(stat.S_IMODE(p.stat().st_mode)))
"""


@pytest.mark.parametrize("mask, file_mode, dir_mode", [("022", 0o644, 0o755), ("027", 0o640, 0o750)])
def test_written_files_honour_the_umask(tmp_path, mask, file_mode, dir_mode):
    """Not mkstemp's 0600: under umask 022 a report site can be served as it is written."""
    out = tmp_path / "out"
    result = subprocess.run(["sh", "-c", f'umask {mask} && exec "$@"', "sh", sys.executable, "-c", _MODES, str(out),
                             str(BASELINE)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("\n")
    assert lines[0] == oct(int(mask, 8))  # read from /proc/self/status without setting it
    modes = dict(line.split() for line in lines[1:] if line)
    assert set(modes) >= {"result.json", "dict", "dict/dictionary.json", "dict/dictionary.safetensors",
                          "history.sqlite"}
    for name, mode in modes.items():
        assert int(mode, 8) == (dir_mode if (out / name).is_dir() else file_mode), (name, mode)


def test_report_files_are_0644_under_umask_022(tmp_path):
    out = tmp_path / "site"
    result = subprocess.run(["sh", "-c", 'umask 022 && exec "$@"', "sh", sys.executable, "-m", "bench", "report",
                             "--results", str(BASELINE), "--format", "html,json", "--out", str(out),
                             "--history", str(tmp_path / "none.sqlite")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) > 5 and {p.name for p in files} >= {"index.html", "report.json"}
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {"0o644"}


# --- a full disk: one line, the temporary file gone, the previous file intact --------------------------------------
def test_enospc_from_dev_full_is_a_one_line_error_and_keeps_the_old_file(tmp_path):
    """A real ENOSPC (the kernel's /dev/full) raised inside the write callback."""
    target = tmp_path / "result.json"
    atomic_write_json(target, {"finished": True})

    def write(tmp):
        with open("/dev/full", "wb") as f:
            f.write(b"x" * 10)

    with pytest.raises(BenchError, match=r"^no space left on device writing .*result\.json: free space and rerun; "
                                         r"finished results are kept$"):
        atomic_write(target, write)
    assert json.loads(target.read_text()) == {"finished": True}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary file left behind


def test_other_write_errors_are_not_reported_as_a_full_disk(tmp_path):
    def write(tmp):
        raise OSError(errno.EACCES, "Permission denied")

    with pytest.raises(PermissionError):
        atomic_write(tmp_path / "x.json", write)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def tiny_fs(tmp_path):
    """A real 64 KiB tmpfs; skipped where mounting is not permitted (not root, or no CAP_SYS_ADMIN)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_a_really_full_filesystem_is_a_one_line_error_for_every_writer(tiny_fs):
    """Each writer reports ENOSPC its own way (OSError errno 28; numpy: an OSError without errno; safetensors:
    its own error naming "os error 28"): all three become the one-line error, and the old file survives."""
    import numpy as np
    import torch

    from bench.dictionary import LinearDictionary

    target = tiny_fs / "result.json"
    atomic_write_json(target, {"finished": True})
    big = np.zeros(64 * 1024, dtype=np.float32)  # 256 KiB: 4x the filesystem
    writers = {
        "text": lambda: atomic_write_json(target, {"x": "y" * 200_000}),
        "numpy": lambda: atomic_write(tiny_fs / "acts.npy", lambda tmp: np.save(open(tmp, "wb"), big)),
        "safetensors": lambda: LinearDictionary.from_matrices(torch.zeros(128, 512), torch.zeros(128, 512))
        .save(tiny_fs / "dict"),
    }
    for name, write in writers.items():
        with pytest.raises(BenchError, match="^no space left on device writing .*: free space and rerun"):
            write()
        assert json.loads(target.read_text()) == {"finished": True}, name
        leftovers = [p.name for p in tiny_fs.rglob("*") if p.is_file() and p.name != "result.json"]
        assert leftovers == [], (name, leftovers)

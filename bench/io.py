"""Atomic writes: a crash never leaves a half-written result, manifest or dictionary behind."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

from bench.errors import BenchError

_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")  # how a Rust I/O error (safetensors' writer) names its errno
_UMASK_LOCK = threading.Lock()


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it over `path`.

    The file gets the mode a plain `open()` would give it (0o666 less the umask), not mkstemp's 0o600: reports
    and results are meant to be read by others. A full disk (or quota) is a one-line `BenchError`; the temporary
    file is removed and the previous `path`, if any, is left as it was."""
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        write(Path(tmp))
        try:
            os.chmod(tmp, 0o666 & ~umask())  # after `write`, which may have replaced the file
        except PermissionError:  # a filesystem without modes (vfat, some network mounts): keep what it gives
            pass
        os.replace(tmp, path)
    except BaseException as e:
        full = isinstance(e, Exception) and out_of_space(e, path.parent)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if full:
            raise BenchError(f"no space left on device writing {path}: free space and rerun; finished results "
                             "are kept") from None
        raise


def out_of_space(exc: Exception, directory: Path) -> bool:
    """Whether a failed write failed because the filesystem (or the user's quota) is full."""
    if isinstance(exc, OSError) and exc.errno in _FULL:
        return True
    if (m := _RUST_OS_ERROR.search(str(exc))) and int(m.group(1)) in _FULL:
        return True
    # numpy's `tofile` reports a short write as an OSError without errno ("N requested and M written")
    if isinstance(exc, OSError) and exc.errno is None:
        try:
            return os.statvfs(directory).f_bavail == 0
        except OSError:
            return False
    return False


def umask() -> int:
    """The process umask, read without changing it where Linux shows it (`os.umask` can only be read by setting
    it, which races with threads creating files meanwhile)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # narrows the race among our own threads; nothing better exists without /proc
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, dumps(obj) + "\n")


# A list of numbers, strings, booleans or nulls (no nested object or list): written on one line.
_FLAT_LIST = re.compile(r'\[\n\s*((?:(?:-?[\d.eE+-]+|"(?:[^"\\]|\\.)*"|true|false|null),?\n\s*)+)\]')


def dumps(obj: Any) -> str:
    """Indented JSON, but flat lists on one line: a result's per-unit evidence would otherwise take a line per
    number (4x the size of the file). Parses back to the same object."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default)
    # json.dumps writes each element of a list on its own line (newlines inside strings are escaped), so joining
    # the element lines with a space changes no value.
    return _FLAT_LIST.sub(lambda m: "[" + " ".join(x.strip() for x in m.group(1).split("\n") if x.strip()) + "]",
                          text)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fingerprint(obj: Any, n: int = 12) -> str:
    """Short stable hash of a JSON-serialisable object (config keys, cache keys)."""
    blob = json.dumps(obj, sort_keys=True, default=_json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:n]

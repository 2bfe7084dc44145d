"""One training loop for every SAE variant, and for many SAEs at once.

`train_saes(methods, data)` streams the train split once and steps every SAE on each batch, so a sweep of N
settings reads (and shuffles) the activations once instead of N times. SAEs trained together get exactly the
weights they would get alone: each has its own initialisation generator, optimiser and state, and they see the
same batches in the same order because they share `batch_size`, `epochs` and `seed` (`group_key`). On a CPU
the SAEs of a pass are stepped by `workers` threads side by side, each SAE's arithmetic on one thread
(`_Stepper`), so the weights do not depend on the worker count either. Where each step's time goes is kept per
phase (`methods.phases`) in `method.timing_`, saved with the dictionary.

Per step and per SAE: the variant's forward pass and loss, backward, (unit decoder: the gradient component along
each decoder row removed), Adam, (unit decoder: rows renormalised), dead-latent bookkeeping and, if configured,
Anthropic-style resampling. Learning rate: linear warm-up, constant, linear decay over the last fraction.

Checkpoints: with a `Checkpointing.directory`, the state of every SAE (weights, Adam moments, dead-latent
counters) and the step are written atomically every `every_steps` steps or `every_seconds` seconds; a training
started again with the same methods resumes from the last checkpoint and ends with the same weights as an
uninterrupted one (batches are a deterministic function of the seed, so the loop skips those already seen).
"""

from __future__ import annotations

import json
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from bench.errors import BenchError
from bench.io import atomic_write, atomic_write_json, fingerprint
from methods.base import ProgressFn, TrainingData
from methods.phases import OFF, Laps
from methods.sae import SAE, SAEMethod, TrainState

STATE_FILE = "trainer.json"
# What a partial or corrupt checkpoint raises: unreadable or truncated files (OSError, SafetensorError), bad JSON
# (a ValueError), missing keys, tensors (KeyError) or slots (IndexError), wrong shapes (load_state_dict's
# RuntimeError, `restore`'s ValueError). Anything else is a bug and surfaces as itself.
CORRUPT_CHECKPOINT = (OSError, SafetensorError, ValueError, KeyError, IndexError, RuntimeError)
# Bump with any change to the shared training loop (batches, schedule, resampling): every SAE is refitted on resume.
VERSION = 2


def group_key(method: SAEMethod) -> tuple[Any, ...]:
    """SAEs with equal keys can share one pass over the data (their seeds may differ: each initialises from its
    own, the batches come from the pass's `data_seed`)."""
    return (method.batch_size, method.epochs, method.device)


@dataclass
class Checkpointing:
    directory: Path | None = None
    every_steps: int | None = None  # None: time-based only
    every_seconds: float = 60.0


class SAETraining:
    """One SAE being trained: model, optimiser and bookkeeping."""

    def __init__(self, method: SAEMethod, sae: SAE, total: int) -> None:
        self.method = method
        self.sae = sae
        self.total = total
        self.params = [p for p in sae.parameters() if p.requires_grad]
        # fused: one kernel over all parameters (measured on 2 CPU cores at d=576, m=2304: 1.8 ms a step, the
        # default foreach path 6.9 ms); it differs from the unfused update in the last bit
        self.opt = torch.optim.Adam(self.params, lr=method.lr, fused=True)
        self.since_fired = torch.zeros(sae.d_dict, dtype=torch.long, device=method.device)  # tokens
        self.first_loss: float | None = None
        self.last: dict[str, float] = {}
        self.resampled = 0
        self.sparse_steps = 0
        cuda = str(method.device).startswith("cuda")
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()
        self.laps = OFF if cuda else Laps()  # seconds per step phase (methods.phases), CPU only

    def lr_factor(self, step: int) -> float:
        m = self.method
        warm = min(1.0, (step + 1) / m.warmup_steps) if m.warmup_steps else 1.0
        decay_steps = int(self.total * m.decay_fraction)
        decay = min(1.0, (self.total - step) / decay_steps) if decay_steps else 1.0
        return min(warm, decay)

    def step(self, batch: torch.Tensor, step: int) -> None:
        m, sae, laps = self.method, self.sae, self.laps
        laps.mark()
        x = batch * sae.input_scale
        ramp = min(1.0, (step + 1) / m.warmup_steps) if m.warmup_steps else 1.0
        state = TrainState(step, self.total, ramp, self.since_fired >= m.dead_after_tokens)
        for group in self.opt.param_groups:
            group["lr"] = m.lr * self.lr_factor(step)
        laps.lap("bookkeeping")
        with self.autocast:
            out = sae.training_step(x, state, m.coefficients(ramp), laps)
        self.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        laps.lap("backward")
        unit = m.decoder_norm == "unit"
        if unit and sae.W_dec.grad is not None:
            with torch.no_grad():
                w, g = sae.W_dec, sae.W_dec.grad
                g.sub_((g * w).sum(-1, keepdim=True) * w)
        laps.lap("project")
        self.opt.step()
        laps.lap("adam")
        if unit:
            with torch.no_grad():
                sae.W_dec.div_(sae.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        laps.lap("renorm")
        self.sparse_steps += out.codes.is_sparse
        fired, l0 = out.codes.activity()
        self.since_fired += x.shape[0]
        self.since_fired[fired] = 0
        self.last = {k: float(v) for k, v in out.terms.items()}
        self.last["loss"] = out.loss.item()
        self.last["l0"] = float(l0)
        if self.first_loss is None:
            self.first_loss = self.last["loss"]
        if m.dead_latents == "resample" and (step + 1) % m.resample_every == 0 and step + 1 < self.total:
            self.resample(x, step)
        laps.lap("bookkeeping")

    @torch.no_grad()
    def resample(self, x: torch.Tensor, step: int) -> None:
        """Dead latents restart on inputs drawn with probability ∝ their squared reconstruction error."""
        sae, m = self.sae, self.method
        dead = (self.since_fired >= m.dead_after_tokens).nonzero(as_tuple=True)[0]
        if len(dead) == 0:
            return
        err = (sae.decode_scaled(sae.activation(sae.pre_activation(x))) - x).pow(2).sum(-1)
        g = torch.Generator(device=x.device).manual_seed(m.seed * 1_000_003 + step)
        pick = torch.multinomial(err.pow(2) + 1e-12, len(dead), replacement=True, generator=g)
        directions = torch.nn.functional.normalize(x[pick] - sae.b_dec, dim=-1)
        alive = self.since_fired < m.dead_after_tokens
        enc = sae.encoder_weight
        enc_norm = 0.2 * (enc[alive].norm(dim=-1).mean().item() if alive.any() else 1.0)
        sae.reset_latents(dead, directions, enc_norm)
        for p in self.params:  # fresh Adam moments for the rows that restarted
            st = self.opt.state.get(p, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in st and st[key].shape[:1] == (sae.d_dict,):
                    st[key][dead] = 0.0
        self.since_fired[dead] = 0
        self.resampled += len(dead)

    # --- checkpoint state as flat tensors (safetensors: no pickle) ----------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {f"model.{k}": v.detach().cpu().contiguous() for k, v in self.sae.state_dict().items()}
        for i, p in enumerate(self.params):
            for key, value in self.opt.state.get(p, {}).items():
                out[f"opt.{i}.{key}"] = value.detach().cpu().contiguous().reshape(value.shape)
        out["since_fired"] = self.since_fired.cpu()
        return out

    def scalars(self) -> dict[str, Any]:
        return {"first_loss": self.first_loss, "last": self.last, "resampled": self.resampled,
                "sparse_steps": self.sparse_steps}

    def restore(self, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
        device = self.method.device
        self.sae.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        state = {}
        for i, p in enumerate(self.params):
            keys = {k.split(".", 2)[2]: v.to(device) for k, v in tensors.items() if k.startswith(f"opt.{i}.")}
            for key in ("exp_avg", "exp_avg_sq"):  # Adam would only fail at its next step, far from the cause
                if key in keys and keys[key].shape != p.shape:
                    raise ValueError(f"opt.{i}.{key} is {list(keys[key].shape)}, its parameter {list(p.shape)}")
            if keys:
                keys["step"] = keys["step"].cpu()  # Adam keeps its step count on the CPU unless capturable
                state[i] = keys
        sd = self.opt.state_dict()
        sd["state"] = state
        self.opt.load_state_dict(sd)
        if tensors["since_fired"].shape != self.since_fired.shape:
            raise ValueError(f"since_fired is {list(tensors['since_fired'].shape)}, not [{self.sae.d_dict}]")
        self.since_fired = tensors["since_fired"].to(device)
        self.first_loss = scalars["first_loss"]
        self.last = scalars["last"]
        self.resampled = scalars["resampled"]
        self.sparse_steps = scalars["sparse_steps"]


def _identity(methods: list[SAEMethod], data: TrainingData, data_seed: int) -> str:
    return fingerprint({"methods": [[m.name, asdict(m)] for m in methods], "n_kept": data.n_kept,
                        "d_model": data.d_model, "data_seed": data_seed})


def _save(directory: Path, slots: list[SAETraining], step: int, identity: str) -> None:
    """Write step-N/ fully, then point trainer.json at it (atomic), then drop older steps."""
    target = directory / f"step-{step}"
    target.mkdir(parents=True, exist_ok=True)
    for i, slot in enumerate(slots):
        tensors = slot.state_tensors()
        atomic_write(target / f"sae-{i}.safetensors", lambda tmp, t=tensors: save_file(t, str(tmp)))
    atomic_write_json(directory / STATE_FILE, {"identity": identity, "step": step, "dir": target.name,
                                                "slots": [s.scalars() for s in slots]})
    for old in directory.glob("step-*"):
        if old.name != target.name:
            shutil.rmtree(old, ignore_errors=True)


def _load(directory: Path, slots: list[SAETraining], identity: str) -> int:
    """Restore the last checkpoint; returns the number of steps already done (0 if none)."""
    path = directory / STATE_FILE
    if not path.exists():
        return 0
    try:
        meta = json.loads(path.read_text())
        if not isinstance(meta, dict):
            raise ValueError(f"{STATE_FILE} is not a JSON object")
        if meta["identity"] != identity:
            raise BenchError(f"{directory} holds a checkpoint of other settings; delete it to start over")
        for i, slot in enumerate(slots):
            slot.restore(load_file(str(directory / meta["dir"] / f"sae-{i}.safetensors")), meta["slots"][i])
        return int(meta["step"])
    except torch.cuda.OutOfMemoryError:  # a RuntimeError, but says nothing about the checkpoint
        raise
    except CORRUPT_CHECKPOINT as e:
        detail = " ".join(f"{type(e).__name__}: {e}".split())[:300]  # load_state_dict's message spans lines
        raise BenchError(f"{directory}: cannot resume from checkpoint ({detail}); delete it to start over") from None


CHUNK_STEPS = 16  # steps each SAE takes between two meetings of the workers (progress, checkpoints)


class _Stepper:
    """Steps every SAE through a chunk of batches: in this thread, or on CPU with `workers` threads that each step
    whole SAEs, one intra-op thread per step.

    Why not torch's own threads: an SAE step is a chain of small ops, and two intra-op threads meet at a barrier
    after every one of them, so they wait on each other and, when another process takes a core, on a thread
    that is not running (measured on the default pass: an un-niced busy loop slowed it 3.35x, against the 1.5x its
    share of the cores explains; stepped this way, 1.35x). SAEs are independent, so each worker
    runs its SAEs' steps start to end on one core, and the workers meet once per chunk. Each SAE's arithmetic is
    then single-threaded, the same in a sweep as alone, whatever the worker count.
    """

    def __init__(self, slots: list[SAETraining], workers: int | None) -> None:
        """`workers` None: step in this thread with torch's threads as they are (CUDA)."""
        self.slots = slots
        self.cost = [0.0] * len(slots)  # each SAE's seconds on the last chunk: the longest start first
        self.pool = None
        self.threads = torch.get_num_threads()
        if workers is None:
            return
        torch.set_num_threads(1)
        if min(workers, len(slots)) > 1:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(min(workers, len(slots)), thread_name_prefix="sae-step",
                                           initializer=torch.set_num_threads, initargs=(1,))

    def _run_slot(self, i: int, chunk: list[tuple[int, torch.Tensor]]) -> None:
        start = time.perf_counter()
        for step, batch in chunk:
            self.slots[i].step(batch, step)
        self.cost[i] = time.perf_counter() - start

    def run(self, chunk: list[tuple[int, torch.Tensor]]) -> None:
        order = sorted(range(len(self.slots)), key=lambda i: -self.cost[i])
        if self.pool is None:
            for i in order:
                self._run_slot(i, chunk)
            return
        for future in [self.pool.submit(self._run_slot, i, chunk) for i in order]:
            future.result()

    def close(self) -> None:
        torch.set_num_threads(self.threads)
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def train_saes(methods: list[SAEMethod], data: TrainingData, progress: ProgressFn | None = None,
               checkpoint: Checkpointing | None = None, data_seed: int | None = None,
               workers: int | None = None) -> list[SAE]:
    """Train every method's SAE in one pass over `data` (they must share `group_key`). Each SAE initialises from its
    own seed; the batch order comes from `data_seed` (default: the first method's seed), the same for all, so SAEs
    of several seeds share the pass. Returns them on the CPU, in eval mode, with `fit_info_` set on each method."""
    if not methods:
        return []
    keys = {group_key(m) for m in methods}
    if len(keys) > 1:
        raise ValueError(f"SAEs trained together must share batch_size, epochs and device; got {keys}")
    first = methods[0]
    data_seed = first.seed if data_seed is None else data_seed
    device = first.device
    total = max(1, int(data.n_kept * first.epochs) // first.batch_size)
    samples: dict[int, torch.Tensor] = {}
    slots = []
    for m in methods:
        if m.seed not in samples:  # the init sample is the SAE's own seed's
            samples[m.seed] = data.kept_activations(min(data.n_kept, 20_000), seed=m.seed)
        torch.manual_seed(m.seed)
        slots.append(SAETraining(m, m.make(data.d_model, samples[m.seed]).to(device), total))

    ckpt = checkpoint or Checkpointing()
    identity = _identity(methods, data, data_seed)
    start = _load(ckpt.directory, slots, identity) if ckpt.directory else 0
    last_save = time.monotonic()
    cpu = not str(device).startswith("cuda")
    loop = Laps() if cpu else OFF  # the pass's own time: reading data, checkpoints
    stepper = _Stepper(slots, (workers or torch.get_num_threads()) if cpu else None)
    batches = enumerate(data.batches(first.batch_size, seed=data_seed, epochs=first.epochs))
    try:
        while True:
            # A chunk of consecutive batches, ending where a step-count checkpoint is due.
            chunk: list[tuple[int, torch.Tensor]] = []
            for step, batch in batches:
                if step < start:
                    continue
                chunk.append((step, batch.to(device, non_blocking=True)))
                if len(chunk) == CHUNK_STEPS or (ckpt.every_steps and (step + 1) % ckpt.every_steps == 0):
                    break
            loop.lap("data")
            if not chunk:
                break
            stepper.run(chunk)
            loop.mark()
            for step, _ in chunk:
                done = step + 1
                if ckpt.directory and done < total and done == chunk[-1][0] + 1 and (
                        (ckpt.every_steps and done % ckpt.every_steps == 0)
                        or (not ckpt.every_steps and time.monotonic() - last_save > ckpt.every_seconds)):
                    _save(ckpt.directory, slots, done, identity)
                    last_save = time.monotonic()
                if progress is not None:
                    progress(done, total)
            loop.lap("checkpoint")
    finally:
        stepper.close()

    out = []
    for slot in slots:
        dead = (slot.since_fired >= slot.method.dead_after_tokens).float().mean().item()
        slot.method.fit_info_ = {"steps": total, "first_loss": slot.first_loss, "last_loss": slot.last.get("loss"),
                                 "last_mse": slot.last.get("mse"), "last_l0": slot.last.get("l0"),
                                 "dead_fraction_at_end": dead, "resampled": slot.resampled,
                                 "sparse_step_fraction": slot.sparse_steps / max(1, total),
                                 "trained_with": len(slots), "input_scale": float(slot.sae.input_scale),
                                 "data_seed": data_seed,
                                 "d_dict": slot.sae.d_dict,
                                 **{f"last_{k}": v for k, v in slot.last.items() if k not in {"loss", "mse", "l0"}}}
        # Wall seconds per step phase of this SAE and of the pass it shared (CPU only): apart from `fit_info`, which
        # results copy and which must not differ between two runs of the same settings.
        slot.method.timing_ = {"step_seconds": {k: round(v, 3) for k, v in slot.laps.seconds.items()},
                               "pass_seconds": {k: round(v, 3) for k, v in loop.seconds.items()}}
        out.append(slot.sae.cpu().eval())
    if ckpt.directory:
        shutil.rmtree(ckpt.directory, ignore_errors=True)
    return out

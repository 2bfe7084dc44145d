"""SAELens side of the decompbench SAE-trainer comparison (`python -m bench perf --train --saelens-python PY`).

Standalone: run it with the python of a separate virtual environment that has `sae-lens`, e.g.

    ~/.cache/decompbench-ci/venv-saelens/bin/python benchmarks/saelens_side.py --arch topk --sparse --no-rescale

It imports only torch, numpy, sae_lens and the standard library -- never anything from decompbench, and
sae-lens is never a decompbench dependency.

What one step is (``--loop trainer``, the default)
    SAELens' own training SAE (``--arch`` standard | topk | batchtopk | jumprelu | gated | matryoshka:
    ``StandardTrainingSAE``, ``TopKTrainingSAE``, ``BatchTopKTrainingSAE``, ``JumpReLUTrainingSAE``,
    ``GatedTrainingSAE``, ``MatryoshkaBatchTopKTrainingSAE``), float32 on the CPU, no autocast, stepped by
    SAELens' own ``SAETrainer``: per step exactly what ``SAETrainer.fit`` runs with wandb off, i.e.
    ``maybe_reset_sparsity()``, ``step(batch)`` (= ``training_forward_pass``: encode, decode, MSE and the
    architecture's losses; dead-feature counters and feature-frequency sums; ``backward``;
    ``clip_grad_norm_(..., 1.0)``; ``Adam.step``; ``zero_grad``; LR and coefficient schedulers), then
    ``n_training_steps += 1``. The trainer's logging, evaluation and checkpoint calls are skipped: with wandb
    off and no checkpoints they do nothing per step but a modulo test. ``--loop plain`` is a hand-written
    equivalent with a bare ``torch.optim.Adam`` (no feature-frequency sums, no schedulers): a diagnostic of
    the trainer's own cost, not what the comparison reports.

    The configuration knobs that change SAELens' speed on a CPU, all SAELens' own options:
    ``--sparse``: ``use_sparse_activations=True`` (TopK only: the codes are a sparse COO tensor and the decoder
    a ``torch.sparse.mm``); ``--no-rescale``: ``rescale_acts_by_decoder_norm=False`` (TopK family; SAELens'
    default is True, which multiplies the pre-activations by ||W_dec[i]|| and the codes by 1/||W_dec[i]||,
    and which the sparse path cannot backpropagate through on a CPU: 'aten::view' on SparseCPU); ``--compile``:
    ``torch.compile`` of ``training_forward_pass``, what SAELens' runner does with ``compile_sae=True``
    (compiled during the warm-up). The caller
    (``bench/train_perf.py``) times every such configuration of an architecture and compares against the
    fastest. Everything else is SAELens' default (``apply_b_dec_to_input=True``, ``decoder_init_norm=0.1``,
    JumpReLU's "step" L0 loss, ``dead_feature_window=1000`` steps, so no latent counts as dead and the TopK
    AuxK loss is skipped during a measurement, as it is on our side), with ``lr=3e-4``, constant schedule.

    Data: ``--acts`` (float32 .npy ``[n, d_in]``, read in order) or four random normal batches, cycled;
    batches are made before a timed block starts, so a block times the steps alone.

Modes
    default: ``--warmup`` untimed steps, one untimed memory-probe step, ``--steps`` timed steps; prints ONE JSON
    line ``{"trainer": "sae-lens", "version", "arch", "config", "tokens_per_s", "steps_per_s",
    "peak_extra_mib", ...}``.

    ``--serve``: the same warm-up and memory probe, then a JSON line ``{"ready": true, "peak_extra_mib", ...}``;
    then each stdin line ``run N`` runs N timed steps and answers ``{"seconds": s, "steps": N}``, and ``quit``
    (or end of input) answers the final losses and exits. The caller keeps one such process per configuration
    alive and interleaves their blocks with its own, so machine noise hits both sides alike.

    peak_extra_mib: after warm-up, VmRSS is read from /proc/self/status, the peak is reset by writing "5" to
    /proc/self/clear_refs, one step is run, and VmHWM - VmRSS_before is reported (MiB).

Round-trip mode
    ``--roundtrip DIR --input x.npy --output out.npz`` loads the SAE saved in DIR with
    ``sae_lens.SAE.load_from_disk(DIR, device="cpu")``, runs ``codes = sae.encode(x)`` and
    ``recon = sae.decode(codes)`` and saves both (float32) to out.npz. Prints one JSON line describing what
    was loaded.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import time
import warnings

ARCHS = ["standard", "topk", "batchtopk", "jumprelu", "gated", "matryoshka"]
TOPK_FAMILY = {"topk", "batchtopk", "matryoshka"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", choices=ARCHS, default="standard")
    p.add_argument("--d-in", type=int, default=576)
    p.add_argument("--d-sae", type=int, default=4608)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--k", type=int, default=32, help="TopK family: codes per token")
    p.add_argument("--prefixes", type=int, default=5,
                   help="matryoshka: nested widths d_sae/2^(P-1), ..., d_sae/2, d_sae")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--acts", default=None, help="float32 .npy [n, d_in]; default random normal")
    p.add_argument("--lr", type=float, default=3e-4, help="SAELens default 3e-4")
    p.add_argument("--l1-coefficient", type=float, default=1.0,
                   help="standard and gated: the L1 coefficient; jumprelu: the L0 one (SAELens default 1.0)")
    p.add_argument("--dead-feature-window", type=int, default=1000,
                   help="SAELens default 1000 steps; the TopK aux loss only runs once some latent has not "
                   "fired for this many steps")
    p.add_argument("--loop", choices=["trainer", "plain"], default="trainer",
                   help="trainer: SAETrainer.step (what fit runs); plain: hand-written equivalent")
    p.add_argument("--sparse", action="store_true",
                   help="topk: use_sparse_activations=True (sparse COO codes, torch.sparse.mm decode)")
    p.add_argument("--no-rescale", action="store_true",
                   help="TopK family: rescale_acts_by_decoder_norm=False (SAELens' default is True; the "
                   "sparse path only backprops on the CPU with this set)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the SAE's training_forward_pass, as SAELens' runner does with compile_sae")
    p.add_argument("--serve", action="store_true", help="warm up, then time `run N` blocks read from stdin")
    # round-trip mode
    p.add_argument("--roundtrip", default=None, metavar="DIR")
    p.add_argument("--input", default=None, metavar="X.npy")
    p.add_argument("--output", default=None, metavar="OUT.npz")
    return p.parse_args(argv)


os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore")

_REAL_STDOUT = sys.stdout

with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the JSON lines
    import numpy as np
    import sae_lens
    import torch
    from sae_lens import SAE
    from sae_lens.saes.sae import TrainStepInput


def emit(obj):
    _REAL_STDOUT.write(json.dumps(obj) + "\n")
    _REAL_STDOUT.flush()


def read_status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def set_threads(n):
    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(n)


# --------------------------------------------------------------------------- data
class Batches:
    """Yields [batch, d_in] float32 CPU tensors; `take(n)` materialises n of them before a timed block."""

    def __init__(self, args):
        self.b = args.batch
        self.d_in = args.d_in
        self.pos = 0
        if args.acts:
            self.acts = np.load(args.acts, mmap_mode="r")
            if self.acts.ndim != 2 or self.acts.shape[1] != args.d_in:
                raise SystemExit(f"--acts has shape {self.acts.shape}, expected [n, {args.d_in}]")
            self.pool = None
        else:
            self.acts = None
            g = torch.Generator().manual_seed(args.seed + 1)
            self.pool = [torch.randn(self.b, self.d_in, generator=g) for _ in range(4)]  # cycled

    def next(self):
        if self.pool is not None:
            x = self.pool[self.pos % len(self.pool)]
            self.pos += 1
            return x
        n = self.acts.shape[0]
        idx = (np.arange(self.b) + self.pos) % n
        self.pos = (self.pos + self.b) % n
        return torch.from_numpy(np.ascontiguousarray(self.acts[idx], dtype=np.float32))

    def take(self, n):
        return [self.next() for _ in range(n)]


# --------------------------------------------------------------------------- SAE
def config_name(args):
    """The knobs that were set, as a short label ('default' when none)."""
    parts = [name for flag, name in ((args.sparse, "sparse"), (args.no_rescale, "no-rescale"),
                                     (args.compile, "compile")) if flag]
    if args.loop != "trainer":
        parts.append(f"{args.loop} loop")
    return "+".join(parts) or "default"


def build_sae(args):
    from sae_lens.saes import (
        BatchTopKTrainingSAE,
        BatchTopKTrainingSAEConfig,
        GatedTrainingSAE,
        GatedTrainingSAEConfig,
        JumpReLUTrainingSAE,
        JumpReLUTrainingSAEConfig,
        MatryoshkaBatchTopKTrainingSAE,
        MatryoshkaBatchTopKTrainingSAEConfig,
        StandardTrainingSAE,
        StandardTrainingSAEConfig,
        TopKTrainingSAE,
        TopKTrainingSAEConfig,
    )

    if args.sparse and args.arch != "topk":
        raise SystemExit("--sparse only applies to --arch topk (SAELens' other variants have no sparse path)")
    if args.no_rescale and args.arch not in TOPK_FAMILY:
        raise SystemExit("--no-rescale only applies to the TopK family (topk, batchtopk, matryoshka)")
    if args.sparse and not args.no_rescale:
        # Checked against sae-lens 6.54: with rescale_acts_by_decoder_norm=True the sparse COO codes are
        # multiplied by 1/||W_dec|| and backward raises NotImplementedError ('aten::view' on SparseCPU).
        raise SystemExit("--sparse needs --no-rescale on the CPU: SAELens' sparse TopK path fails in backward "
                         "when rescale_acts_by_decoder_norm=True")
    common = {"d_in": args.d_in, "d_sae": args.d_sae, "dtype": "float32", "device": "cpu"}
    topk = {"k": args.k, "rescale_acts_by_decoder_norm": not args.no_rescale}
    if args.arch == "standard":
        return StandardTrainingSAE(StandardTrainingSAEConfig(l1_coefficient=args.l1_coefficient, **common))
    if args.arch == "gated":
        return GatedTrainingSAE(GatedTrainingSAEConfig(l1_coefficient=args.l1_coefficient, **common))
    if args.arch == "jumprelu":
        return JumpReLUTrainingSAE(JumpReLUTrainingSAEConfig(l0_coefficient=args.l1_coefficient, **common))
    if args.arch == "topk":
        return TopKTrainingSAE(TopKTrainingSAEConfig(use_sparse_activations=args.sparse, **topk, **common))
    if args.arch == "batchtopk":
        return BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(**topk, **common))
    widths = [max(1, args.d_sae >> (args.prefixes - 1 - i)) for i in range(args.prefixes)]
    return MatryoshkaBatchTopKTrainingSAE(MatryoshkaBatchTopKTrainingSAEConfig(
        matryoshka_widths=widths, **topk, **common))


def make_trainer_step(sae, args, total_steps):
    """SAELens' step as SAETrainer.fit runs it (wandb off, no checkpoints)."""
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    tcfg = SAETrainerConfig(
        total_training_samples=total_steps * args.batch,
        train_batch_size_samples=args.batch,
        lr=args.lr,
        lr_end=args.lr,  # SAETrainer asserts lr_end is set (the runner config does this)
        lr_scheduler_name="constant",
        adam_beta1=0.9,
        adam_beta2=0.999,
        device="cpu",
        autocast=False,
        dead_feature_window=args.dead_feature_window,
        logger=LoggingConfig(log_to_wandb=False),
    )
    trainer = SAETrainer(cfg=tcfg, sae=sae, data_provider=iter(()))

    def step(x):
        trainer.maybe_reset_sparsity()
        out = trainer.step(x)
        trainer.n_training_steps += 1
        return out

    return step


def make_plain_step(sae, args):
    """Hand-written equivalent of SAETrainer._train_step with a bare Adam (a diagnostic)."""
    opt = torch.optim.Adam(sae.parameters(), lr=args.lr, betas=(0.9, 0.999))
    coeffs = {name: getattr(c, "value", c) for name, c in sae.get_coefficients().items()}
    since_fired = torch.zeros(args.d_sae)
    state = {"n": 0}

    def step(x):
        sae.train()
        out = sae.training_forward_pass(TrainStepInput(
            sae_in=x, coefficients=coeffs, dead_neuron_mask=(since_fired > args.dead_feature_window).bool(),
            n_training_steps=state["n"], is_logging_step=False))
        with torch.no_grad():
            did_fire = out.feature_acts.bool().float().sum(-2).bool()
            if did_fire.is_sparse:
                did_fire = did_fire.to_dense()
            since_fired.add_(1)
            since_fired[did_fire] = 0
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        state["n"] += 1
        return out

    return step


def timed(step, batches):
    """Seconds for the steps on these (already materialised) batches, and the last step's output."""
    out = None
    start = time.perf_counter()
    for x in batches:
        out = step(x)
    return time.perf_counter() - start, out


def run_benchmark(args):
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    sae = build_sae(args)
    if args.compile:  # compiled during the warm-up steps
        sae.training_forward_pass = torch.compile(sae.training_forward_pass)
    total_steps = 10**6 if args.serve else args.warmup + args.steps + 2
    step = make_trainer_step(sae, args, total_steps) if args.loop == "trainer" else make_plain_step(sae, args)
    data = Batches(args)
    with contextlib.redirect_stdout(sys.stderr):
        for x in data.take(args.warmup):
            step(x)
        # ---- peak extra memory of one step (untimed)
        x = data.next()
        gc.collect()
        rss_before_kib = read_status_kib("VmRSS")
        peak_reset = reset_peak_rss()
        step(x)
        peak_extra_mib = (read_status_kib("VmHWM") - rss_before_kib) / 1024.0
        del x

    info = {
        "trainer": "sae-lens",
        "version": sae_lens.__version__,
        "arch": args.arch,
        "config": config_name(args),
        "sae_class": type(sae).__name__,
        "peak_extra_mib": round(peak_extra_mib, 1),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "loop": args.loop,
        "d_in": args.d_in,
        "d_sae": args.d_sae,
        "batch": args.batch,
        "k": args.k if args.arch in TOPK_FAMILY else None,
        "warmup": args.warmup,
        "data": args.acts or "randn",
        "peak_reset": peak_reset,
        "rss_before_mib": round(rss_before_kib / 1024.0, 1),
    }
    if args.arch in TOPK_FAMILY:
        info["sparse"] = args.sparse
        info["rescale_acts_by_decoder_norm"] = not args.no_rescale

    def losses(out):
        return {k: float(v.detach()) for k, v in out.losses.items()} if out is not None else {}

    if args.serve:
        emit({"ready": True, **info})
        out = None
        for line in sys.stdin:
            cmd = line.split()
            if not cmd or cmd[0] == "quit":
                break
            batches = data.take(int(cmd[1]))
            with contextlib.redirect_stdout(sys.stderr):
                seconds, out = timed(step, batches)
            emit({"seconds": seconds, "steps": len(batches)})
        emit({"done": True, "losses": losses(out)})
        return
    with contextlib.redirect_stdout(sys.stderr):
        seconds, out = timed(step, data.take(args.steps))
    emit({**info, "steps": args.steps, "tokens_per_s": args.steps * args.batch / seconds,
          "steps_per_s": args.steps / seconds, "losses": losses(out)})


def run_roundtrip(args):
    if not (args.input and args.output):
        raise SystemExit("--roundtrip DIR needs --input x.npy and --output out.npz")
    with contextlib.redirect_stdout(sys.stderr):
        sae = SAE.load_from_disk(args.roundtrip, device="cpu")
        sae.eval()
        x = torch.from_numpy(np.load(args.input)).to(torch.float32)
        with torch.no_grad():
            codes = sae.encode(x)
            if codes.is_sparse:
                codes = codes.to_dense()
            recon = sae.decode(codes)
    np.savez(
        args.output,
        codes=codes.detach().to(torch.float32).numpy(),
        recon=recon.detach().to(torch.float32).numpy(),
    )
    cfg = sae.cfg.to_dict()
    cfg.pop("metadata", None)
    emit(
        {
            "trainer": "sae-lens",
            "version": sae_lens.__version__,
            "mode": "roundtrip",
            "loader": "sae_lens.SAE.load_from_disk",
            "class": type(sae).__name__,
            "cfg": cfg,
            "tensors": {k: list(v.shape) for k, v in sae.state_dict().items()},
            "codes_shape": list(codes.shape),
            "recon_shape": list(recon.shape),
            "output": args.output,
        }
    )


def main(argv=None):
    args = parse_args(argv)
    set_threads(args.threads)
    if args.roundtrip:
        run_roundtrip(args)
    else:
        run_benchmark(args)


if __name__ == "__main__":
    main()

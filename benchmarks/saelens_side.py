"""SAELens side of the decompbench SAE-trainer comparison.

Standalone: run it with the separate SAELens virtual environment, e.g.

    /work/venvs/saelens/bin/python benchmarks/saelens_side.py --arch topk --steps 20

It imports only torch, numpy, sae_lens and the standard library -- never
anything from decompbench, and sae-lens is never a decompbench dependency.

Benchmark mode (default)
    Builds SAELens' own *training* SAE (StandardTrainingSAE for ``--arch
    standard``, TopKTrainingSAE for ``--arch topk``) in fp32 on CPU and runs
    ``--warmup`` untimed steps, one untimed memory-probe step, then ``--steps``
    timed steps of SAELens' full training step.  By default (``--loop
    trainer``) a step is ``SAETrainer.step(batch)`` -- the very function
    ``SAETrainer.fit`` calls: ``training_forward_pass`` (MSE + L1 penalty, or
    MSE + TopK aux-k loss), dead-feature bookkeeping, ``backward``,
    ``clip_grad_norm_(..., 1.0)``, ``Adam.step``, ``zero_grad``, LR/coefficient
    scheduler steps.  ``--loop plain`` runs a hand-written equivalent with a
    bare ``torch.optim.Adam``.  SAELens (this version) does no per-step
    decoder-norm projection: the standard SAE weights its L1 penalty by
    ``||W_dec[i]||`` and the TopK SAE (``rescale_acts_by_decoder_norm=True``)
    divides by ``||W_dec[i]||`` inside the graph.

    Prints ONE JSON line on stdout:
    {"trainer": "sae-lens", "version", "arch", "tokens_per_s", "steps_per_s",
     "peak_extra_mib", ...extra context keys}

    peak_extra_mib: after warm-up, VmRSS is read from /proc/self/status, the
    peak is reset by writing "5" to /proc/self/clear_refs, one step is run, and
    VmHWM - VmRSS_before is reported (MiB).

Round-trip mode
    ``--roundtrip DIR --input x.npy --output out.npz`` loads the SAE saved in
    DIR with ``sae_lens.SAE.load_from_disk(DIR, device="cpu")``, runs
    ``codes = sae.encode(x)`` and ``recon = sae.decode(codes)`` and saves both
    (float32) to out.npz.  Prints one JSON line describing what was loaded.
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


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", choices=["standard", "topk"], default="standard")
    p.add_argument("--d-in", type=int, default=576)
    p.add_argument("--d-sae", type=int, default=4608)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--acts", default=None, help="float32 .npy [n, d_in]; default random normal"
    )
    p.add_argument("--lr", type=float, default=3e-4, help="SAELens default 3e-4")
    p.add_argument(
        "--l1-coefficient",
        type=float,
        default=1.0,
        help="standard arch only; SAELens default 1.0",
    )
    p.add_argument(
        "--dead-feature-window",
        type=int,
        default=1000,
        help="SAELens default 1000 steps; the TopK aux loss is only "
        "computed once some latent has not fired for this many steps "
        "(0 => 'did not fire in the previous step' counts as dead)",
    )
    p.add_argument(
        "--loop",
        choices=["trainer", "plain"],
        default="trainer",
        help="trainer: SAETrainer.step (exact); plain: hand-written equivalent",
    )
    p.add_argument(
        "--sparse",
        action="store_true",
        help="topk: use_sparse_activations=True (sparse COO decode)",
    )
    p.add_argument(
        "--no-rescale",
        action="store_true",
        help="topk: rescale_acts_by_decoder_norm=False (SAELens default is True; "
        "the sparse path only backprops on CPU with this set)",
    )
    # round-trip mode
    p.add_argument("--roundtrip", default=None, metavar="DIR")
    p.add_argument("--input", default=None, metavar="X.npy")
    p.add_argument("--output", default=None, metavar="OUT.npz")
    return p.parse_args(argv)


os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore")

_REAL_STDOUT = sys.stdout

with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the one JSON line
    import numpy as np
    import sae_lens
    import torch
    from sae_lens import SAE
    from sae_lens.saes import (
        StandardTrainingSAE,
        StandardTrainingSAEConfig,
        TopKTrainingSAE,
        TopKTrainingSAEConfig,
    )
    from sae_lens.saes.sae import TrainStepInput

MIB = 1024.0 * 1024.0


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
    """Yields [batch, d_in] float32 CPU tensors. Materialised outside timing."""

    def __init__(self, args):
        self.b = args.batch
        self.d_in = args.d_in
        self.pos = 0
        if args.acts:
            self.acts = np.load(args.acts, mmap_mode="r")
            if self.acts.ndim != 2 or self.acts.shape[1] != args.d_in:
                raise SystemExit(
                    f"--acts has shape {self.acts.shape}, expected [n, {args.d_in}]"
                )
            self.pool = None
        else:
            self.acts = None
            g = torch.Generator().manual_seed(args.seed + 1)
            # a small pool of distinct random batches, cycled
            self.pool = [torch.randn(self.b, self.d_in, generator=g) for _ in range(4)]

    def next(self):
        if self.pool is not None:
            x = self.pool[self.pos % len(self.pool)]
            self.pos += 1
            return x
        n = self.acts.shape[0]
        idx = (np.arange(self.b) + self.pos) % n
        self.pos = (self.pos + self.b) % n
        return torch.from_numpy(np.ascontiguousarray(self.acts[idx], dtype=np.float32))


# --------------------------------------------------------------------------- SAE
def build_sae(args):
    common = {
        "d_in": args.d_in,
        "d_sae": args.d_sae,
        "dtype": "float32",
        "device": "cpu",
    }
    if args.arch == "standard":
        cfg = StandardTrainingSAEConfig(l1_coefficient=args.l1_coefficient, **common)
        return StandardTrainingSAE(cfg)
    cfg = TopKTrainingSAEConfig(
        k=args.k,
        use_sparse_activations=args.sparse,
        rescale_acts_by_decoder_norm=not args.no_rescale,
        **common,
    )
    return TopKTrainingSAE(cfg)


def make_trainer_step(sae, args):
    """Exact SAELens step: SAETrainer.step + the bookkeeping fit() does per step."""
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    total_steps = args.warmup + args.steps + 2
    tcfg = SAETrainerConfig(
        total_training_samples=total_steps * args.batch,
        train_batch_size_samples=args.batch,
        lr=args.lr,
        lr_end=args.lr,  # SAETrainer asserts lr_end is set (runner config does this)
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
    """Hand-written equivalent of SAETrainer._train_step with a bare Adam."""
    opt = torch.optim.Adam(sae.parameters(), lr=args.lr, betas=(0.9, 0.999))
    coeffs = {"l1": args.l1_coefficient} if args.arch == "standard" else {}
    since_fired = torch.zeros(args.d_sae)
    state = {"n": 0}

    def step(x):
        sae.train()
        dead = (since_fired > args.dead_feature_window).bool()
        out = sae.training_forward_pass(
            TrainStepInput(
                sae_in=x,
                coefficients=coeffs,
                dead_neuron_mask=dead,
                n_training_steps=state["n"],
                is_logging_step=False,
            )
        )
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


def run_benchmark(args):
    if args.sparse and args.arch != "topk":
        raise SystemExit("--sparse only applies to --arch topk")
    if args.sparse and not args.no_rescale:
        # Checked against the installed SAELens: with rescale_acts_by_decoder_norm=True
        # the sparse COO activations are multiplied by 1/||W_dec|| and backward raises
        # NotImplementedError ('aten::view' on SparseCPU).
        raise SystemExit(
            "--sparse needs --no-rescale on CPU: SAELens' sparse TopK path fails in "
            "backward when rescale_acts_by_decoder_norm=True"
        )
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    sae = build_sae(args)
    step = (
        make_trainer_step(sae, args)
        if args.loop == "trainer"
        else make_plain_step(sae, args)
    )
    data = Batches(args)

    with contextlib.redirect_stdout(sys.stderr):
        for _ in range(args.warmup):
            step(data.next())

        # ---- peak extra memory of one step (untimed)
        x = data.next()
        gc.collect()
        rss_before_kib = read_status_kib("VmRSS")
        peak_reset = reset_peak_rss()
        step(x)
        hwm_kib = read_status_kib("VmHWM")
        peak_extra_mib = (hwm_kib - rss_before_kib) / 1024.0
        del x

        # ---- timed steps (data materialisation excluded)
        step_time = 0.0
        out = None
        for _ in range(args.steps):
            x = data.next()
            t0 = time.perf_counter()
            out = step(x)
            step_time += time.perf_counter() - t0

    res = {
        "trainer": "sae-lens",
        "version": sae_lens.__version__,
        "arch": args.arch,
        "tokens_per_s": (args.steps * args.batch / step_time)
        if step_time > 0
        else None,
        "steps_per_s": (args.steps / step_time) if step_time > 0 else None,
        "peak_extra_mib": round(peak_extra_mib, 1),
        # context
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "loop": args.loop,
        "d_in": args.d_in,
        "d_sae": args.d_sae,
        "batch": args.batch,
        "k": args.k if args.arch == "topk" else None,
        "steps": args.steps,
        "warmup": args.warmup,
        "data": args.acts or "randn",
        "peak_reset": peak_reset,
        "rss_before_mib": round(rss_before_kib / 1024.0, 1),
    }
    if args.arch == "topk":
        res["sparse"] = args.sparse
        res["rescale_acts_by_decoder_norm"] = not args.no_rescale
    if out is not None:
        res["losses"] = {k: float(v.detach()) for k, v in out.losses.items()}
    emit(res)


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

"""Run configuration: one typed dataclass, filled from a preset and then from the command line."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from bench.errors import BenchError
from bench.judge.base import JudgeConfig, redact_url
from bench.store import ExclusionRule


@dataclass(frozen=True)
class RunConfig:
    model: str = "smollm2-135m"
    layer: int | None = None  # None: the model's default layer
    hook_point: str = "resid_post"
    methods: tuple[str, ...] = ("all",)
    tasks: tuple[str, ...] = ("all",)
    preset: str = "default"
    device: str = "cpu"
    eval_dtype: str = "float32"  # evaluation passes' precision (bench.models.EVAL_DTYPES); the harvest is float32
    seed: int = 0  # the base seed: the run's first (or only) seed
    seeds: tuple[int, ...] = ()  # with two or more: every seeded method is fitted and every task run once per seed
    text: str | None = None  # None: the shipped corpus
    ctx_len: int = 128
    train_contexts: int = 2048
    eval_contexts: int = 256
    harvest_batch: int = 32
    exclusion: ExclusionRule = field(default_factory=ExclusionRule)
    matched_k: int | None = None  # None: the first sparse method's L0 on the eval split
    method_params: dict[str, dict[str, Any]] = field(default_factory=dict)  # per method name or pattern (sae-*)
    task_params: dict[str, dict[str, Any]] = field(default_factory=dict)  # per task name
    # Per task name: the methods (names or patterns such as sae-*) it evaluates; absent or "all": every method.
    # Methods named in `methods` (not through "all") are always evaluated.
    task_methods: dict[str, tuple[str, ...]] = field(default_factory=dict)
    judge: JudgeConfig = field(default_factory=JudgeConfig)  # the LLM judge of autointerp
    control: str | None = None  # also run a control model beside the trained one (bench.models.CONTROLS)

    def hook(self, default_layer: int) -> str:
        layer = default_layer if self.layer is None else self.layer
        return f"blocks.{layer}.hook_{self.hook_point}"

    @property
    def all_seeds(self) -> tuple[int, ...]:
        """The base seed first, then the others (`--seeds`)."""
        return tuple(dict.fromkeys((self.seed, *self.seeds)))

    @property
    def extra_seeds(self) -> tuple[int, ...]:
        return self.all_seeds[1:]

    def recorded(self) -> dict[str, Any]:
        """The configuration as run directories and results record it: credentials in the judge's URL redacted."""
        config = asdict(self)
        if config["judge"].get("base_url"):
            config["judge"]["base_url"] = redact_url(config["judge"]["base_url"])
        return config

    @property
    def train_tokens(self) -> int:
        return self.train_contexts * self.ctx_len


# Sizes are chosen for 2 CPU cores (measured in the README): default warm ≈ 17 min, autointerp ≤ 8 min of it.
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(
        train_contexts=160,  # 20k tokens
        judge=JudgeConfig(judge="smollm2-135m"),  # checks that autointerp runs; at chance as a judge
        eval_contexts=32,
        method_params={
            "sae-*": dict(dict_ratio=2.0, epochs=6.0),
            "random": dict(dict_ratio=2.0),
            "ica": dict(max_tokens=4_000, max_iter=200, tol=3e-3),  # converges in ~45 iterations, 12-14 s
        },
        task_params={"loss_recovered": dict(n_contexts=8), "toy_superposition": dict(scale="smoke"),
                     "sparse_probing": dict(n_train_contexts=160, n_eval_contexts=32, min_examples=3, n_train_prompts=32,
                                            n_test_prompts=16),
                     "autointerp": dict(n_features=2, n_explain=3, n_score_top=2, n_score_quantile=2,
                                        n_score_non_firing=4, n_fuzz=2, n_simulate=2, n_controls=2),
                     "ioi_patching": dict(n_prompts=8, greedy_passes=2),
                     "concept_erasure": dict(ks=(4,), n_train=16, n_test=8, n_genre_train=8, n_genre_test=4,
                                             n_damage_contexts=1),
                     "disentanglement": dict(ks=(32, 128), n_sources=1, max_test=16, n_cities=120),
                     "absorption": dict(words_per_letter=30, min_positives=4)},
    ),
    "default": dict(
        train_contexts=2048,  # 262k tokens
        eval_contexts=256,  # 33k tokens
        method_params={
            "sae-*": dict(dict_ratio=4.0, epochs=2.0),
            "random": dict(dict_ratio=4.0),
            "ica": dict(max_tokens=20_000, max_iter=200, tol=1e-3),  # converges in 50-60 iterations, 35-45 s
        },
        # loss_recovered: one context per document over 32 of the eval split's 94 documents, all 6 genres.
        task_params={"loss_recovered": dict(n_contexts=32), "toy_superposition": dict(scale="fast")},
        # The judge's 8 minutes buy power for the paper's question, not noise for every row: 8 features on each of
        # an SAE, neurons and random (MDE ~0.32 detection AUROC) rather than 5 on all 11 methods (MDE 0.41,
        # 14.6 min; docs/autointerp.md, "Sizes"). --task-methods autointerp=all scores every method.
        task_methods={"autointerp": ("sae-topk", "neurons", "random")},
    ),
    # Can autointerp tell an SAE from the neuron basis? Sized from the default run's measured variance of the
    # per-feature detection AUROC (docs/autointerp.md, "Power"): 80 features a method detect a difference of 0.1
    # between sae-topk and neurons at 80% power (alpha 0.05); samples per feature stay at the default's 10 + 10,
    # which the measured between/within split makes close to the cheapest allocation. About 60 min on 2 cores.
    "autointerp-power": dict(
        train_contexts=2048,
        eval_contexts=256,
        methods=("sae-topk,neurons,random",),
        tasks=("autointerp",),
        method_params={"sae-*": dict(dict_ratio=4.0, epochs=2.0), "random": dict(dict_ratio=4.0)},
        task_params={"autointerp": dict(n_features=80)},
    ),
    # Cunningham et al. 2023 (../shared/notes/paper.md): Pythia-70M-deduped residual stream (layer 2 by default,
    # --layer 0..5 for the others), tied ReLU SAE without decoder bias, R = 2, alpha = 8.6e-4, Adam 1e-3,
    # batch 1024, no warm-up, decay or resampling; 256-token Pile contexts (--text), 10 M training activations.
    # Our L1 acts on activations scaled to E||x||^2 = d_model, so alpha is the paper's only up to that scale.
    "paper": dict(
        model="pythia-70m-deduped",
        methods=("sae-relu,neurons,pca,ica,random",),
        ctx_len=256,
        train_contexts=40_000,  # 10.2 M tokens (21 GB of float32 activations at d_model 512)
        eval_contexts=512,
        method_params={
            "sae-*": dict(dict_ratio=2.0, lr=1e-3, batch_size=1024, epochs=1.0, warmup_steps=0, decay_fraction=0.0),
            "sae-relu": dict(tied=True, decoder_bias=False, l1_coeff=8.6e-4, dead_latents="none"),
            "random": dict(dict_ratio=2.0),
            "ica": dict(max_tokens=50_000, max_iter=400, tol=5e-4),  # ~90 iterations, ~3 min (on SmolLM2, 2 cores)
        },
        task_params={"loss_recovered": dict(n_contexts=64), "toy_superposition": dict(scale="paper"),
                     "autointerp": dict(n_features=150, window=64, n_explain=5, n_score_top=5, n_score_quantile=5,
                                        n_score_non_firing=10, n_fuzz=10, n_simulate=10)},
    ),
}
NEEDS_LOCAL_ASSETS = ("paper",)  # presets whose model and text the user provides


def make_config(preset: str = "default", **overrides: Any) -> RunConfig:
    if preset not in PRESETS:
        raise BenchError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    values = dict(PRESETS[preset])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return replace(RunConfig(), preset=preset, **values)


def check_local_assets(cfg: RunConfig) -> None:
    """For a preset that needs the user's own model and text (`paper`): one line naming everything missing."""
    if cfg.preset not in NEEDS_LOCAL_ASSETS:
        return
    from bench.models import hub_model_missing, resolve_model

    missing = []
    if hint := hub_model_missing(resolve_model(cfg.model)):
        missing.append(hint)
    if cfg.text is None:
        missing.append("Pile-like text: pass --text FILE.jsonl (one {\"text\": ...} per line, .txt also works) or the "
                       "name of a Hugging Face dataset in the local cache")
    if missing:
        raise BenchError(f"--preset {cfg.preset} needs what is not here: " + "; and ".join(missing))

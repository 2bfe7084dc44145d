"""Command line: `python -m bench run | sweep | list | check-method | perf | export | clean-cache | report | history
| compare`.

- `report --results RUN_DIR... [--format terminal,md,html,json,csv] [--out DIR]`: leaderboards, plots and the static
  HTML site of one or more runs (docs/reports.md);
- `history [task.metric] [--method M]`: the runs every `run` appended to the results history, or one metric's
  trend across them;
- `compare BASELINE CURRENT [--tolerance PATTERN=VALUE] [--allow-removed PATTERN]`: every metric's change; exit 1
  on a regression past its tolerance, a value that became NaN, or a result or metric missing from CURRENT (unless
  allowed), 0 otherwise, 2 when the runs are missing or not comparable;
- `perf --run RUN_DIR`: where a run spent its time, unit by unit (RUN_DIR/units.json).

Bad input ends with a one-line error naming the fix and exit code 2; never a traceback.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from bench.errors import BenchError
from bench.io import atomic_write_json
from bench.specs import split_specs


def _add_run_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--model", default=None, help="registered model name or a local checkpoint directory "
                     "(default: the preset's, smollm2-135m)")
    cmd.add_argument("--layer", type=int, default=None, help="block index of the hook (default: the model's)")
    cmd.add_argument("--hook-point", default="resid_post",
                     choices=["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"])
    cmd.add_argument("--preset", default="default", help="smoke | default | autointerp-power (docs/autointerp.md) | "
                     "paper (Cunningham et al.: Pythia-70M-deduped and your --text; docs/scaling.md)")
    cmd.add_argument("--out", type=Path, default=None, help="run directory (default runs/<time>-<preset>); "
                     "an existing one is resumed")
    cmd.add_argument("--device", default="cpu", help="cpu | cuda")
    cmd.add_argument("--eval-dtype", default=None, metavar="float32|bfloat16",
                     help="precision of the evaluation passes' matrix products (default float32). bfloat16: model "
                     "passes about 1.8x faster on a CPU with AVX512-bf16 (tasks 1.3-1.5x), with a KL noise floor "
                     "near 6e-4 nats per token (README, 'Evaluation precision'); the harvest, and so every fitted "
                     "dictionary, stays float32")
    cmd.add_argument("--seed", type=int, default=0)
    cmd.add_argument("--seeds", default=None, metavar="S1,S2,...|N",
                     help="several seeds: a comma-separated list (0,1,2) or a count (3: --seed, --seed+1, ...); every "
                     "seeded method is fitted once per seed (the SAEs of all seeds in one pass), every task runs per "
                     "seed, and the leaderboard reports the mean, the spread and tests over seeds")
    cmd.add_argument("--text", default=None, help="your own .txt/.jsonl corpus, or a locally cached HF dataset name")
    cmd.add_argument("--matched-k", type=int, default=None, help="k for top-k rows (default: the SAE's L0)")
    cmd.add_argument("--threads", type=int, default=None, help="torch CPU threads (results are bit-reproducible "
                     "for a fixed seed and thread count)")
    cmd.add_argument("--executor", default="local", choices=["local", "ray"],
                     help="run the units in this process (local) or on a Ray cluster (ray; pip install -e .[ray])")
    cmd.add_argument("--ray-address", default=None, help="with --executor ray: auto or HOST:PORT of a running cluster "
                     "(default: a local Ray started for this run)")
    cmd.add_argument("--control", default=None, help="also run a control model and compare: random-init or "
                     "random-init-keep-embeddings (docs/controls.md)")
    judge = cmd.add_argument_group("LLM judge (task autointerp)")
    judge.add_argument("--judge", default=None,
                       help="offline judge run in-process by llama.cpp: qwen2.5-coder-1.5b (default; the smoke preset "
                       "uses smollm2-135m), qwen2.5-coder-0.5b, smollm2-135m, or a .gguf file")
    judge.add_argument("--llm-base-url", default=None, help="an OpenAI-compatible endpoint instead, e.g. "
                       "http://127.0.0.1:8080/v1 (key from OPENAI_API_KEY)")
    judge.add_argument("--llm-model", default=None, help="the endpoint's model name (with --llm-base-url)")
    judge.add_argument("--llm-concurrency", type=int, default=4, help="requests in flight against the endpoint")
    judge.add_argument("--llm-timeout", type=float, default=120.0, help="seconds per request before a retry")
    judge.add_argument("--no-llm-cache", action="store_true", help="do not reuse cached judge replies")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description="decompbench: compare activation decompositions")
    sub = p.add_subparsers(dest="command")

    run = sub.add_parser("run", help="harvest activations, fit methods, run tasks, print the leaderboard")
    run.add_argument("--methods", default=None, help="(default: the preset's, all) ""comma-separated method specs, e.g. pca,sae-relu[l1_coeff=1e-3]")
    run.add_argument("--tasks", default=None, help="(default: the preset's, all) comma-separated task specs, e.g. "
                     "toy_superposition[scale=paper]")
    run.add_argument("--task-methods", action="append", default=None, metavar="TASK=M1,M2|all",
                     help="the methods (names or patterns, sae-*) a task evaluates; the default preset gives autointerp "
                     "sae-topk, neurons, random (--task-methods autointerp=all: every method). Methods named in "
                     "--methods are always evaluated")
    _add_run_options(run)

    sweep = sub.add_parser("sweep", help="one method over a grid of settings, e.g. 'sae-relu[l1_coeff=1e-3|3e-3]'; "
                           "writes sweeps.json (the curves) beside the leaderboard")
    sweep.add_argument("spec", help="method spec whose key=a|b|c values are swept (every combination)")
    sweep.add_argument("--tasks", default="reconstruction,toy_superposition", help="comma-separated task specs")
    _add_run_options(sweep)

    sub.add_parser("list", help="registered models, methods and tasks")

    check = sub.add_parser("check-method", help="run the method contract on a method (a plugin's too) on real "
                           "activations of the smoke preset")
    check.add_argument("spec", help="method spec, e.g. kmeans or my-method[alpha=2]")
    check.add_argument("--model", default="smollm2-135m")
    check.add_argument("--layer", type=int, default=None)

    perf = sub.add_parser("perf", help="measure harvesting throughput (or, with --train, SAE training throughput)")
    perf.add_argument("--model", default="smollm2-135m")
    perf.add_argument("--layer", type=int, default=None)
    perf.add_argument("--tokens", type=int, default=8192)
    perf.add_argument("--batch", type=int, default=32)
    perf.add_argument("--train", action="store_true", help="SAE training tokens/s, MFU and peak memory per step")
    perf.add_argument("--arch", default="sae-relu,sae-topk,sae-batchtopk,sae-jumprelu,sae-gated,sae-matryoshka",
                      help="SAE methods to time (--train), each alone, then all in one pass")
    perf.add_argument("--d", type=int, default=576, help="input dimension (--train; SmolLM2's d_model)")
    perf.add_argument("--ratio", type=float, default=8.0, help="dictionary size / d (--train)")
    perf.add_argument("--train-batch", type=int, default=4096)
    perf.add_argument("--k", type=int, default=32)
    perf.add_argument("--steps", type=int, default=2, help="timed steps per block (--train)")
    perf.add_argument("--rounds", type=int, default=3, help="--train: interleaved blocks per process, the best "
                      "counts; --autointerp --against: old and new alternated this many times, the median ratio counts")
    perf.add_argument("--warmup", type=int, default=2)
    perf.add_argument("--threads", type=int, default=2)
    perf.add_argument("--saelens-python", default=None,
                      help="python of a separate venv with sae-lens: time its trainer side by side")
    perf.add_argument("--saelens-all", action="store_true",
                      help="also time the SAELens configurations measured slower on a CPU (TopK family compiled)")
    perf.add_argument("--autointerp", action="store_true", help="autointerp judge throughput: scored samples per "
                      "second in-process and through the llama.cpp server")
    perf.add_argument("--judge", default="qwen2.5-coder-1.5b", help="judge to time (--autointerp)")
    perf.add_argument("--features", type=int, default=4, help="features to score (--autointerp)")
    perf.add_argument("--no-server", action="store_true", help="skip the server path (--autointerp)")
    perf.add_argument("--against", default=None, metavar="REV",
                      help="also time the code of git commit REV in the same run, on the same features (--autointerp)")
    perf.add_argument("--run", type=Path, default=None, metavar="RUN_DIR",
                      help="where a finished (or killed) run spent its time: every unit's seconds, share, CPU cores, "
                      "peak memory and throughput, from RUN_DIR/units.json")
    perf.add_argument("--json", default=None, help="also write the measurements to this file")

    export = sub.add_parser("export", help="write a fitted SAE in SAELens' format (cfg.json + sae_weights.safetensors)")
    export.add_argument("dictionary", help="a run's dictionaries/<method> directory")
    export.add_argument("out", help="directory to write")

    report = sub.add_parser("report", help="leaderboards, plots and a static HTML site from the results of runs")
    report.add_argument("--results", nargs="+", required=True, metavar="RUN",
                        help="run directories (a run's --out) or history ids")
    report.add_argument("--format", default=None, help="terminal, md, html, json, csv (comma-separated; default: "
                        "terminal without --out, else md,html,json,csv)")
    report.add_argument("--out", type=Path, default=None, help="directory to write the files and the site into")
    report.add_argument("--history", type=Path, default=None, help="results history for the trend page "
                        "(default $DECOMPBENCH_HISTORY or <cache>/history.sqlite)")

    history = sub.add_parser("history", help="runs in the results history, or one metric's trend across commits")
    history.add_argument("metric", nargs="?", default=None, help="task.metric, e.g. reconstruction.fvu")
    history.add_argument("--method", default=None, help="only this method label")
    history.add_argument("--last", type=int, default=8, help="how many of the latest runs to show (default 8)")
    history.add_argument("--add", nargs="+", type=Path, default=None, metavar="RUN",
                         help="append these run directories to the history first")
    history.add_argument("--history", type=Path, default=None, help="the history file (default $DECOMPBENCH_HISTORY "
                         "or <cache>/history.sqlite)")

    compare = sub.add_parser("compare", help="every metric of CURRENT against BASELINE; exit 1 on a regression")
    compare.add_argument("baseline", help="run directory or history id")
    compare.add_argument("current", help="run directory or history id")
    compare.add_argument("--tolerance", action="append", default=[], metavar="PATTERN=VALUE",
                         help="tolerance for metrics matching PATTERN (task.metric or method:task.metric, globs), "
                         "absolute or N%% of the baseline; repeatable")
    compare.add_argument("--all", action="store_true", help="list every metric, not only those past tolerance")
    compare.add_argument("--format", choices=["terminal", "md", "json"], default="terminal")
    compare.add_argument("--history", type=Path, default=None, help="history file for history ids")
    compare.add_argument("--allow-removed", action="append", default=[], metavar="PATTERN",
                         help="a metric or result of BASELINE missing in CURRENT is a regression unless PATTERN "
                         "(method:task.metric, method:task, task.metric or task, globs) names it; repeatable")
    compare.add_argument("--write-tolerances", type=Path, default=None, metavar="FILE",
                         help="for two runs that differ only by seed: write per method:task.metric max(2 x their "
                         "spread, the intervals' half-width, the default) as a tolerances.json to commit with a baseline")

    clean = sub.add_parser("clean-cache", help="delete cached activations (and converted models with --models)")
    clean.add_argument("--activations", action="store_true", help="delete harvested activations")
    clean.add_argument("--models", action="store_true", help="delete converted model weights and assembled judges")
    clean.add_argument("--judge", action="store_true", help="delete cached judge replies")
    return p


def cmd_run(args: argparse.Namespace) -> int:
    import torch

    from bench.config import check_local_assets
    from bench.device import check_device, set_threads
    from bench.executors import ExecutorOptions, make_executor
    from bench.runner import Runner, default_out

    threads = args.threads or torch.get_num_threads()
    set_threads(threads)  # torch and BLAS alike, here and in every Ray worker: equal numbers need equal counts
    if args.executor == "ray":
        from bench.executors.ray import import_ray

        import_ray()  # a missing extra is a one-line error before any work
    check_device(args.device, here=args.executor == "local")  # with Ray the GPUs are the workers' (checked there)
    if args.layer is not None and args.layer < 0:
        raise BenchError(f"layer {args.layer} is out of range: use a block index >= 0 (--layer)")
    if args.ray_address and args.executor != "ray":
        raise BenchError("--ray-address needs --executor ray")
    if args.seed < 0:
        raise BenchError(f"--seed {args.seed}: seeds are integers >= 0")
    if args.matched_k is not None and args.matched_k < 1:
        raise BenchError(f"--matched-k {args.matched_k}: k is the number of codes kept per token, an integer >= 1")
    cfg = run_config(args)
    check_local_assets(cfg)
    executor = make_executor(ExecutorOptions(args.executor, args.ray_address))
    Runner(cfg, args.out or default_out(cfg), executor=executor, threads=threads).run()
    return 0


def run_config(args: argparse.Namespace):
    """The `RunConfig` of `run` or `sweep`: the preset's settings, then what the command line sets."""
    from bench.config import make_config

    seeds = parse_seeds(args.seeds, args.seed)
    if args.eval_dtype is not None:
        from bench.models import check_eval_dtype

        check_eval_dtype(args.eval_dtype)
    if args.control and len(seeds) > 1:
        raise BenchError("--control with several --seeds is not supported yet: run the control with one seed")
    return make_config(
        args.preset, model=args.model, layer=args.layer, hook_point=args.hook_point,
        methods=(args.methods,) if getattr(args, "methods", None) else None,
        tasks=(args.tasks,) if args.tasks else None,
        task_methods=parse_task_methods(getattr(args, "task_methods", None), args.preset), device=args.device,
        seed=seeds[0], seeds=seeds if len(seeds) > 1 else None, text=args.text, matched_k=args.matched_k,
        judge=judge_config(args, args.preset), control=args.control, eval_dtype=args.eval_dtype)


def parse_task_methods(items: list[str] | None, preset: str) -> dict[str, tuple[str, ...]] | None:
    """`--task-methods autointerp=sae-*,neurons` (repeatable) over the preset's choice; None: the preset's."""
    import tasks as task_registry
    from bench.config import PRESETS

    if not items:
        return None
    out = dict(PRESETS.get(preset, {}).get("task_methods", {}))
    for item in items:
        task, sep, names = item.partition("=")
        task = task.strip()
        methods = tuple(n.strip() for n in names.split(",") if n.strip())
        if not sep or not methods:
            raise BenchError(f"--task-methods {item!r}: write TASK=METHOD1,METHOD2 (or TASK=all)")
        if task not in task_registry.REGISTRY:
            raise BenchError(f"--task-methods {item!r}: unknown task {task!r}; choose from "
                             f"{', '.join(task_registry.REGISTRY)}")
        out[task] = methods
    return out


def parse_seeds(text: str | None, seed: int) -> tuple[int, ...]:
    """`--seeds 0,1,2` (a list; its first is the base seed) or `--seeds 3` (a count from --seed)."""
    if text is None:
        return (seed,)
    try:
        if "," in text:
            seeds = tuple(int(s) for s in text.split(",") if s.strip())
        else:
            count = int(text)
            if count < 1:
                raise ValueError
            seeds = tuple(range(seed, seed + count))
    except ValueError:
        raise BenchError(f"--seeds {text!r}: give a comma-separated list of seeds (0,1,2) or a count >= 1 (3)") from None
    if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise BenchError(f"--seeds {text!r}: seeds must be distinct and >= 0")
    return seeds


def judge_config(args: argparse.Namespace, preset: str):
    """The preset's judge, with what the command line sets."""
    from dataclasses import replace

    from bench.config import PRESETS
    from bench.judge import JudgeConfig

    if args.llm_base_url and not args.llm_model:
        raise BenchError("--llm-base-url needs --llm-model (the model name the endpoint serves)")
    if args.llm_model and not args.llm_base_url:
        raise BenchError("--llm-model needs --llm-base-url (for the offline judge use --judge)")
    if args.llm_concurrency < 1 or args.llm_timeout <= 0:
        raise BenchError("--llm-concurrency must be >= 1 and --llm-timeout > 0")
    base = PRESETS.get(preset, {}).get("judge", JudgeConfig())
    return replace(base, judge=args.judge or base.judge, base_url=args.llm_base_url, model=args.llm_model,
                   concurrency=args.llm_concurrency, timeout_s=args.llm_timeout, threads=args.threads or base.threads,
                   cache=not args.no_llm_cache)


def cmd_list(_: argparse.Namespace) -> int:
    import methods
    import tasks
    from bench.config import PRESETS
    from bench.models import MODELS

    console = Console(soft_wrap=True)  # one line per entry, also when piped
    console.print("[bold]models[/]")
    for name, e in MODELS.items():
        console.print(f"  {name:22s} {e.description} (default layer {e.default_layer})")
    console.print("[bold]methods[/]")
    for name, cls in methods.REGISTRY.items():
        params = ", ".join(f"{k}={v}" for k, v in methods.method_fields(cls).items())
        console.print(f"  {name:22s} {cls.description}" + _origin(methods.ORIGINS[name])
                      + (f"  [dim]({escape(params)})[/]" if params else ""))
    console.print("[bold]tasks[/]")
    for name, cls in tasks.REGISTRY.items():
        console.print(f"  {name:22s} {cls.description}" + _origin(tasks.ORIGINS[name]))
    from bench.judge.weights import JUDGES

    console.print("[bold]judges[/] (autointerp; or any OpenAI-compatible endpoint with --llm-base-url)")
    for name, j in JUDGES.items():
        console.print(f"  {name:22s} {j.description}")
    console.print("[bold]presets[/]")
    console.print("  " + ", ".join(PRESETS))
    from bench.models import CONTROLS

    console.print("[bold]controls[/] (--control: the same run on a control model too, and the difference)")
    for name, what in CONTROLS.items():
        console.print(f"  {name:22s} {what}")
    return 0


def _origin(package: str) -> str:
    from bench.plugins import BUILTIN

    return "" if package == BUILTIN else f"  [cyan]\\[plugin from {escape(package)}][/]"


def cmd_check_method(args: argparse.Namespace) -> int:
    from bench.config import make_config
    from bench.contract import check_method
    from bench.harvest import harvest
    from bench.models import load_model
    from bench.runner import Runner

    console = Console(stderr=True)
    cfg = make_config("smoke", model=args.model, layer=args.layer)
    spec, docs = Runner(cfg, Path("."), console).plan_activations()
    with console.status(f"activations for the check ({spec.model} · {spec.hook}, smoke preset) …"):
        store = harvest(spec, docs, lambda: load_model(cfg.model, cfg.device), cfg.harvest_batch)
    with console.status(f"fitting {args.spec} twice and checking the contract …"):
        try:
            dictionary = check_method(args.spec, store.train, store.eval.kept_activations(4096))
        except AssertionError as e:
            console.print(f"[bold red]FAIL[/] {escape(str(e))}")
            return 1
    console.print(f"[bold green]OK[/] {escape(args.spec)}: Dictionary with d_in={dictionary.d_in}, "
                  f"d_dict={dictionary.d_dict}; shapes, non-negative codes, batch independence, unit directions, "
                  "seeded determinism and save/load round trip hold on real activations")
    return 0


def cmd_perf(args: argparse.Namespace) -> int:
    if args.run is not None:
        from bench.profile import phase_table, profile_table

        console = _out_console()
        console.print(profile_table(args.run))
        phases = phase_table(args.run)
        if phases is not None:
            console.print(phases)
        return 0
    if args.autointerp:
        from bench.judge_perf import judge_throughput

        rows = judge_throughput(args.judge, args.features, not args.no_server, args.threads, Console(),
                                against=args.against,
                                rounds=args.rounds if args.against else 1)
        if args.json:
            atomic_write_json(Path(args.json), {"measurements": rows})
        return 0
    if args.train:
        from bench.train_perf import train_throughput

        if args.saelens_python and not Path(args.saelens_python).exists():
            raise BenchError(f"--saelens-python {args.saelens_python} does not exist; pass the python of a venv "
                             "where `pip install sae-lens` ran")
        rows = train_throughput([a for a in split_specs(args.arch)], args.d, args.ratio, args.train_batch, args.k,
                                args.steps, args.warmup, args.threads, args.saelens_python, Console(),
                                rounds=args.rounds, saelens_all=args.saelens_all)
        if args.json:
            atomic_write_json(Path(args.json), {"measurements": rows})
        return 0
    from bench.perf import harvest_throughput

    harvest_throughput(args.model, args.layer, args.tokens, args.batch, Console())
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    from bench.paths import cache_dir

    if not (args.activations or args.models or args.judge):
        raise BenchError("say what to delete: --activations, --models and/or --judge")
    for flag, sub in ((args.activations, "activations"), (args.models, "models"), (args.models, "judges"),
                      (args.judge, "judge")):
        target = cache_dir() / sub
        if flag and target.exists():
            shutil.rmtree(target)
            print(f"deleted {target}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import json

    from bench.dictionary import CONFIG_FILE, load_dictionary
    from methods.sae import SAE
    from methods.saelens_format import to_saelens

    directory = Path(args.dictionary)
    if not (directory / CONFIG_FILE).exists():
        raise BenchError(f"{directory}: no fitted dictionary here; pass a run's dictionaries/<method> directory")
    dictionary = load_dictionary(directory)
    if not isinstance(dictionary, SAE):
        raise BenchError(f"{directory}: a {dictionary.kind!r} dictionary is not an SAE; only SAEs export to SAELens")
    meta = json.loads((directory / CONFIG_FILE).read_text()).get("meta", {})
    out = to_saelens(dictionary, Path(args.out), meta.get("hook"), meta.get("model"))
    print(f"wrote {out / 'cfg.json'} and {out / 'sae_weights.safetensors'}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    args.methods = args.spec
    return cmd_run(args)


def _out_console() -> Console:
    """stdout, wide when piped (CI logs) so that tables are not squeezed to 80 columns."""
    return Console(width=None if Console().is_terminal else 200)


def _history_path(args: argparse.Namespace):
    from reports.history import default_path

    return args.history if args.history is not None else default_path()


def cmd_report(args: argparse.Namespace) -> int:
    from reports.history import resolve
    from reports.report import parse_formats, write_report

    formats = parse_formats(args.format or ("md,html,json,csv" if args.out else "terminal"))
    runs = [resolve(arg, _history_path(args)) for arg in args.results]
    for path in write_report(runs, formats, args.out, _history_path(args), _out_console()):
        print(f"wrote {path}")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from rich.table import Table

    from reports import history as hist
    from reports.leaderboard import fmt
    from reports.runs import load_run

    path = _history_path(args)
    if path is None:
        raise BenchError(f"recording is off ({hist.ENV}=off); pass --history PATH")
    for run_dir in args.add or []:
        print(f"added {run_dir} as #{hist.append(path, load_run(run_dir))}")
    console = _out_console()
    if args.metric is None:
        table = Table(title=escape(f"results history {path}"))
        for name in ("id", "run", "started", "commit", "preset", "config", "metrics"):
            table.add_column(name)
        for e in hist.runs(path):
            table.add_row(str(e.id), escape(e.name), e.started or "?", (e.git_commit or "?")[:10], e.preset or "?",
                          e.config_fingerprint, str(e.n_metrics))
        console.print(table)
        return 0
    points = hist.trend(path, args.metric, args.method)
    runs = list({p.run_id: p for p in points}.values())[-args.last:]  # oldest first
    table = Table(title=escape(f"{args.metric} across the last {len(runs)} runs (oldest first; run id, commit, date)"))
    table.add_column("method", no_wrap=True)
    for p in runs:
        table.add_column(f"#{p.run_id}\n{(p.git_commit or '?')[:7]}\n{(p.started or '?')[:10]}", justify="right")
    for name, pts in hist.series(points).items():
        values = {q.run_id: q.value for q in pts}
        table.add_row(escape(name), *[fmt(values[p.run_id]) if p.run_id in values else "" for p in runs])
    console.print(table)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import json

    from reports.compare import compare, markdown, parse_allowed, parse_tolerances, rich_table
    from reports.history import resolve

    tolerances, allowed = parse_tolerances(args.tolerance), parse_allowed(args.allow_removed)
    baseline, current = (resolve(arg, _history_path(args)) for arg in (args.baseline, args.current))
    if args.write_tolerances is not None:
        from reports.compare import spread_tolerances

        spread = spread_tolerances(baseline, current)
        atomic_write_json(args.write_tolerances, spread)
        n = sum(not k.startswith("_") for k in spread)
        print(f"wrote {n} tolerances (max of 2 x the seed spread, the intervals and the default, per "
              f"method:task.metric) to {args.write_tolerances}")
        return 0
    result = compare(baseline, current, tolerances, allowed)
    if args.format == "json":
        print(json.dumps(result.to_json(), indent=2))
    elif args.format == "md":
        print(markdown(result, args.all))
    else:
        _out_console().print(rich_table(result, args.all))
    for line in result.regression_lines():
        print(line, file=sys.stderr)
    return 1 if result.regressions else 0


COMMANDS = {"run": cmd_run, "sweep": cmd_sweep, "list": cmd_list, "check-method": cmd_check_method, "perf": cmd_perf, "export": cmd_export,
            "clean-cache": cmd_clean, "report": cmd_report, "history": cmd_history, "compare": cmd_compare}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded at run time
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    args = _parser().parse_args(argv)
    if args.command is None:
        args = _parser().parse_args(["run", *(argv or sys.argv[1:])])
    try:
        return COMMANDS[args.command](args)
    except BenchError as e:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        return e.exit_code
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted: finished results are kept; rerun with the same --out to resume")
        return 130

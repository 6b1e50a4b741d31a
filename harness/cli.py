"""The ``copa-bench`` command line."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from harness.errors import InputError, NotApplicable, Terminated


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in --help, except where its help already says it or there is none (None, False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is None or action.default is False:
            return text
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit status 2), like every other bad input."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _check_out_dir(path: str | None, flag: str, file: bool = False) -> None:
    """An output directory (or, ``file``, an output file) that can be made: no part of its path is an existing
    file (or, for a directory, the path itself), checked before anything runs or is written."""
    import os
    from pathlib import Path

    if path is None:
        return
    target = Path(path).absolute()
    if not file and target.exists() and not target.is_dir():
        raise InputError(path, flag, "exists and is not a directory")
    if file and target.is_dir():
        raise InputError(path, flag, "is a directory, expected a file")
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(path, flag, f"cannot be created: {parent} is not a directory")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise InputError(path, flag, f"cannot be created: {parent} is not writable")
            break


def _check_in_file(path: str | None, flag: str, data_config=None) -> None:
    """An input file that exists, checked before ``prepare`` generates the benchmark (``build_config`` would check
    it only afterwards). With a data config nothing is generated and its own files are checked first (build_config)."""
    from pathlib import Path

    if path is None or data_config is not None:
        return
    if Path(path).is_dir():
        raise InputError(path, flag, "is a directory, expected a checkpoint file")
    if not Path(path).is_file():
        raise InputError(path, flag, "checkpoint not found")


def _cmd_data_make(args: argparse.Namespace) -> int:
    from harness.data.benchmark import make_benchmark
    from harness.runner import check_seed

    check_seed(args.seed)
    if args.workers is not None and args.workers < 1:
        raise InputError(None, "--workers", f"must be at least 1, got {args.workers}")
    _check_out_dir(args.out, "--out")
    start = time.perf_counter()
    try:
        digest = make_benchmark(args.out, preset=args.preset, seed=args.seed, pta_fraction=args.pta_fraction,
                                workers=args.workers, force=args.force)
    except Terminated as e:  # a batch scheduler's stop: cleaned up like Ctrl-C, the shell's status for the signal
        print(f"copa-bench: {e}: stopped the workers and removed the partial benchmark; {args.out} is as it was",
              file=sys.stderr)
        return 128 + e.signum
    print(f"done in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    print(f"sha256:{digest}")
    return 0


def _cmd_data_check(args: argparse.Namespace) -> int:
    from harness.data.check import check_benchmark

    if args.patch_size < 1:
        raise InputError(None, "--patch-size", f"must be at least 1, got {args.patch_size}")
    if not 0.0 <= args.min_overlap <= 1.0:
        raise InputError(None, "--min-overlap", f"must be between 0 and 1, got {args.min_overlap}")
    report = check_benchmark(args.data, splits=args.split, patch_size=args.patch_size, min_overlap=args.min_overlap)
    print(report)
    return 0


def _run_on(args: argparse.Namespace):
    """``--device`` and ``--precision`` checked before anything runs or is written: (device, precision)."""
    from harness.device import check_precision, resolve_device

    device = resolve_device(args.device)
    return device, check_precision(args.precision, device)


def _data_config(args: argparse.Namespace):
    """``--data-config`` read and checked before anything runs (its files once the task is known); None without."""
    if args.data_config is None:
        return None
    from harness.data.layouts import load_data_config

    return load_data_config(args.data_config, args.data, args.tokenizer)


def _add_data_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-config", default=None, metavar="NAME",
                        help="read a real dataset: a data config of configs/data (coco, flickr30k, vqa_v2, nlvr2, "
                             "refcoco, refcoco_plus, refcocog) or a .py/.json file; --data is then its root")
    parser.add_argument("--tokenizer", default=None, metavar="DIR",
                        help="a directory with a vocab.txt (e.g. a local BERT's); with --data-config when the data "
                             "config names none")


def _join(launcher: str, device=None) -> bool:
    """Join the launcher's process group; True in the process that prints (rank 0)."""
    from harness import distributed

    distributed.init_distributed(launcher, device)
    return distributed.rank() == 0


def _cmd_train(args: argparse.Namespace) -> int:
    from harness.runner import apply_options, build_config, check_seed, parse_options, prepare, train

    check_seed(args.seed)
    parse_options(args.cfg_options)  # a malformed option fails before any data or vision job is made
    _check_out_dir(args.work_dir, "--work-dir")
    device, precision = _run_on(args)
    data_config = _data_config(args)
    _check_in_file(args.checkpoint, "--checkpoint", data_config)  # --vision-init: prepare, before the data
    main_process = _join(args.launcher, device)
    prepare(args.model, args.task, scale=args.scale, data=args.data, seed=args.seed, vision_init=args.vision_init,
            device=device, precision=precision, data_config=data_config)
    cfg = build_config(args.model, args.task, scale=args.scale, data=args.data, work_dir=args.work_dir,
                       seed=args.seed, resume=args.resume, max_iters=args.max_iters, checkpoint=args.checkpoint,
                       vision_init=args.vision_init, device=device, precision=precision, data_config=data_config,
                       tokenizer=args.tokenizer, options=args.cfg_options)
    apply_options(cfg, args.cfg_options)
    start = time.perf_counter()
    summary = train(cfg)
    if not main_process:
        return 0
    print(f"{args.model} {args.task} ({args.scale}, seed {args.seed}, {device} {precision}) finished in "
          f"{time.perf_counter() - start:.0f}s; checkpoints in {cfg.work_dir}")
    for key, value in summary.items():
        print(f"  {key:<16} {value:.4f}")
    return 0


def _cmd_test(args: argparse.Namespace) -> int:
    from harness.runner import apply_options, build_config, check_seed, parse_options, prepare, test

    check_seed(args.seed)
    parse_options(args.cfg_options)
    _check_out_dir(args.work_dir, "--work-dir")
    device, precision = _run_on(args)
    data_config = _data_config(args)
    _check_in_file(args.checkpoint, "--checkpoint", data_config)  # before the benchmark is generated
    main_process = _join(args.launcher, device)
    prepare(args.model, args.task, scale=args.scale, data=args.data, seed=args.seed, device=device,
            precision=precision, data_config=data_config)
    cfg = build_config(args.model, args.task, scale=args.scale, data=args.data, work_dir=args.work_dir,
                       seed=args.seed, checkpoint=args.checkpoint, testing=True, device=device, precision=precision,
                       data_config=data_config, tokenizer=args.tokenizer, options=args.cfg_options)
    apply_options(cfg, args.cfg_options)
    start = time.perf_counter()
    metrics = test(cfg)
    if not main_process:
        return 0
    print(f"{args.model} {args.task} ({args.scale}, {device} {precision}) tested in "
          f"{time.perf_counter() - start:.0f}s from {args.checkpoint}")
    for key, value in metrics.items():
        print(f"  {key:<16} {value:.4f}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from harness.suite import run_suite

    def names(value: str | None) -> list[str] | None:
        return None if value is None else [v for v in value.split(",")]

    _check_out_dir(args.results, "--results")
    _check_out_dir(args.work_dir, "--work-dir")
    device, precision = _run_on(args)
    _join(args.launcher, device)
    try:
        counts = run_suite(args.suite, results_dir=args.results, work_root=args.work_dir, seeds=args.seeds,
                           variants=names(args.variants), models=names(args.models), tasks=names(args.tasks),
                           workers=args.workers, device=device, precision=precision,
                           prepare_only=args.prepare_only)
    except Terminated as e:  # raised while worker processes ran (suite._parallel): they are stopped
        print(f"copa-bench: {e}: stopped the suite and its workers; the store holds the rows of every finished job, "
              "and the same command resumes from them", file=sys.stderr)
        return 128 + e.signum
    return 1 if counts["failed"] else 0


def _int_list(value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None


def _cmd_profile(args: argparse.Namespace) -> int:
    from harness.profiling.cli import run_profile

    _run_on(args)
    return run_profile(args)


def package_version() -> str:
    """The installed copa-bench's version; from pyproject.toml when running from a checkout that is not installed."""
    import re
    from importlib.metadata import PackageNotFoundError, version
    from pathlib import Path

    try:
        return version("copa-bench")
    except PackageNotFoundError:
        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        try:
            match = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(encoding="utf-8"), re.MULTILINE)
        except OSError:
            match = None
        return match.group(1) if match else "unknown"


class _Version(argparse.Action):
    """--version, looked up only when asked for (parsing stays light)."""

    def __init__(self, option_strings, dest, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print copa-bench's version and exit")

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"copa-bench {package_version()}")
        parser.exit(0)


def _summary_line(doc: str | None, limit: int = 100) -> str:
    """The first clause of a docstring, on one line: what ``copa-bench list`` prints beside a name."""
    import re

    text = " ".join((doc or "").strip().split("\n\n")[0].split())
    text = re.split(r"(?<=[.;])\s", text, maxsplit=1)[0].rstrip(".;")
    return text if len(text) <= limit else text[:limit - 3].rsplit(" ", 1)[0] + "..."


def _config_docs(folder) -> dict[str, str]:
    """name -> one-line description of the configs in a folder, from their docstrings (read, not run)."""
    import ast

    docs = {}
    for path in sorted(folder.glob("*.py")):
        try:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        except (OSError, SyntaxError, UnicodeDecodeError):
            doc = None
        line = _summary_line(doc)
        docs[path.stem] = line.removeprefix(f"{path.stem}: ")
    return docs


def _model_docs() -> dict[str, str]:
    """name -> what the model is, from the registry (zoo.build.METHODS): its type or reducer, keep ratio, losses."""
    from zoo import METHODS

    docs = {}
    for name, method in METHODS.items():
        reducer = method.get("reducer")
        parts = [method.get("type", "dual-stream VLP")]
        parts.append(f"reducer {reducer['type']}, keep {method.get('keep_ratio')}" if reducer
                     else "no token reduction")
        parts.append("losses " + ", ".join(method.get("losses", ())))
        docs[name] = "; ".join(parts)
    return docs


def _cmd_list(args: argparse.Namespace) -> int:
    from harness.suite import CONFIG_DIR

    if args.what == "models":
        docs = _model_docs()
    elif args.what == "tasks":  # configs/tasks and the plugins' task directories, and the declared variants
        from harness.taskspec import task_config_files, task_specs

        folders = dict.fromkeys(path.parent for path in task_config_files().values())
        docs = {name: line for folder in folders for name, line in _config_docs(folder).items()}
        docs |= {name: f"{spec.label}: '{spec.config}' as a test of the pre-training checkpoint" if spec.test_only
                 else spec.label for name, spec in task_specs().items() if name not in docs}
    else:
        docs = _config_docs(CONFIG_DIR.parent / args.what)
    width = max((len(name) for name in docs), default=0)
    for name, doc in docs.items():
        print(f"{name:<{width}}  {doc}".rstrip())
    return 0


LAUNCHER_HELP = "none (one process), pytorch (under torchrun) or slurm (under srun); gloo on CPU"
PRECISIONS = ("fp32", "bf16", "fp16")  # harness.device.PRECISIONS, literal so that parsing imports no torch


def _add_run_on(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto",
                        help="cpu, cuda or cuda:N (default auto: CUDA when available, else the CPU)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="fp32, or bf16/fp16 mixed precision under autocast (fp16 on CUDA only)")


def build_parser() -> argparse.ArgumentParser:
    from harness.suite import suite_names  # light: no torch or mmengine

    parser = _Parser(prog="copa-bench", description="Train, evaluate and profile COPA and baseline VLP models.")
    parser.add_argument("--version", action=_Version)
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import this module first (repeatable): a package of your own that registers reducers, "
                             "models, tasks or metrics (docs/extending.md); it runs as code you chose to import")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    listing = sub.add_parser("list", help="the models, tasks or suites copa-bench knows, one per line")
    listing.add_argument("what", choices=["models", "tasks", "suites"], help="what to list")
    listing.set_defaults(func=_cmd_list)

    data = sub.add_parser("data", help="generate and check datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    make = data_sub.add_parser("make", help="generate the offline benchmark (deterministic for a seed)")
    make.add_argument("--out", required=True, help="directory to create")
    make.add_argument("--preset", default="tiny", choices=["tiny", "small"], help="benchmark size")
    make.add_argument("--seed", type=int, default=0, help="generator seed")
    make.add_argument("--pta-fraction", type=float, default=0.05,
                      help="share of train images whose boxes PTA may use (default 0.05)")
    make.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")
    make.add_argument("--force", action="store_true", help="replace an existing different dataset at --out")
    make.set_defaults(func=_cmd_data_make)

    check = data_sub.add_parser("check", help="load every file of a generated benchmark and print its statistics")
    check.add_argument("data", help="benchmark directory")
    check.add_argument("--split", action="append", help="check only this split (repeatable; default: all)")
    check.add_argument("--patch-size", type=int, default=8, help="patch size of the object-to-patch labels checked")
    check.add_argument("--min-overlap", type=float, default=0.1,
                       help="share of a patch a box must cover to label it")
    check.set_defaults(func=_cmd_data_check)

    train = sub.add_parser("train", help="train a model on a task with the mmengine Runner")
    train.add_argument("--model", required=True, help="albef, copa, trips, evit, random, tome or vilt")
    train.add_argument("--task", required=True, help="a task config under configs/tasks (e.g. pretrain)")
    train.add_argument("--scale", default="tiny", help="tiny or base")
    train.add_argument("--data", default=None, help="benchmark directory (default: data/tiny, generated if missing); "
                       "with --data-config, the dataset's root")
    train.add_argument("--work-dir", default=None, help="default: work_dirs/TASK/MODEL_SCALE_seedSEED")
    train.add_argument("--seed", type=int, default=0, help="random seed of the job")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the work dir")
    train.add_argument("--max-iters", type=int, default=None, help="override the task's schedule length")
    train.add_argument("--checkpoint", default=None,
                       help="downstream tasks: start from this checkpoint (default: the model's pre-training one)")
    train.add_argument("--vision-init", default="auto",
                       help="pre-training: ViT start, a timm file, 'none', or 'auto' (vision pre-training at tiny)")
    train.add_argument("--cfg-options", nargs="+", default=None, metavar="KEY=VALUE",
                       help="override keys of the job config, e.g. default_hooks.checkpoint.interval=100")
    train.add_argument("--launcher", default="none", choices=["none", "pytorch", "slurm"], help=LAUNCHER_HELP)
    _add_run_on(train)
    _add_data_config(train)
    train.set_defaults(func=_cmd_train)

    test = sub.add_parser("test", help="evaluate a checkpoint on a task's test split")
    test.add_argument("--model", required=True, help="albef, copa, trips, evit, random, tome or vilt")
    test.add_argument("--task", required=True, help="a task config under configs/tasks")
    test.add_argument("--checkpoint", required=True, help="a fine-tuned (or, zero-shot, a pre-training) checkpoint")
    test.add_argument("--scale", default="tiny", help="tiny or base")
    test.add_argument("--data", default=None, help="benchmark directory (default: data/tiny); with --data-config, "
                      "the dataset's root")
    test.add_argument("--work-dir", default=None, help="default: work_dirs/TASK/MODEL_SCALE_seedSEED")
    test.add_argument("--seed", type=int, default=0, help="random seed of the job")
    test.add_argument("--cfg-options", nargs="+", default=None, metavar="KEY=VALUE",
                       help="override keys of the job config, e.g. default_hooks.checkpoint.interval=100")
    test.add_argument("--launcher", default="none", choices=["none", "pytorch", "slurm"], help=LAUNCHER_HELP)
    _add_run_on(test)
    _add_data_config(test)
    test.set_defaults(func=_cmd_test)

    profile = sub.add_parser("profile", help="GMACs, parameters, throughput and latency per model (one process)")
    profile.add_argument("--models", default="albef,copa,trips,evit,random,tome,vilt", help="comma list of models")
    profile.add_argument("--scale", default="base", help="tiny or base")
    profile.add_argument("--image-size", type=_int_list, default=None, help="e.g. 224,384 (default: the scale's)")
    profile.add_argument("--batch", type=int, default=4, help="batch for pairs/s (latency is at batch 1)")
    profile.add_argument("--repeats", type=int, default=5, help="timed rounds after one warm-up round")
    profile.add_argument("--threads", type=int, default=None, help="torch threads (default: all available)")
    profile.add_argument("--reference", default="albef", help="model the speedups are relative to")
    profile.add_argument("--retrieval-k", type=int, default=16, help="ITM re-rankings per retrieval query")
    profile.add_argument("--json", default=None, help="write the rows as JSON")
    profile.add_argument("--csv", default=None, help="write the rows as CSV")
    profile.add_argument("--tasks", default="pair",
                         help="comma list of what to cost per task and phase (default pair: the image-text pair)")
    profile.add_argument("--compile", action="store_true", help="time the models through torch.compile")
    _add_run_on(profile)
    profile.set_defaults(func=_cmd_profile)
    run = sub.add_parser("run", help="run a suite (configs/suites): every job, skipping those already in the store")
    run.add_argument("suite", help=f"{', '.join(suite_names())}, or a suite config file")
    run.add_argument("--results", default=_user_results("store"), help=_STORE_HELP.format(
        store=_user_results("store")))
    run.add_argument("--work-dir", default="work_dirs/suites", help="where the jobs' work dirs go (default "
                     "work_dirs/suites/SUITE/...); finished training jobs found there are reused")
    run.add_argument("--seeds", type=_int_list, default=None, help="only these seeds, e.g. 0,1")
    run.add_argument("--variants", default=None, help="only these variants ('' is the default), e.g. ,keep0.3")
    run.add_argument("--models", default=None, help="only these models, e.g. albef,copa")
    run.add_argument("--tasks", default=None, help="only these tasks (and the pre-training they start from), "
                     "e.g. patch_detection,vqa")
    run.add_argument("--launcher", default="none", choices=["none", "pytorch", "slurm"], help=LAUNCHER_HELP)
    run.add_argument("--workers", type=int, default=None, help="run the jobs in this many processes, one torch "
                     "thread each (bit-reproducible), the efficiency job alone afterwards (default: the suite's "
                     "'workers', else 1)")
    run.add_argument("--prepare-only", action="store_true", help="make what the jobs read (the benchmark, the ViT "
                     "initialisations) and stop: no job runs, nothing goes to the store")
    _add_run_on(run)
    run.set_defaults(func=_cmd_run)

    _add_results_commands(sub)
    return parser


# --- results: tables, the regression gate and its baseline -------------------------------------------------


def _cmd_table(args: argparse.Namespace) -> int:
    from harness.tables import load_paper, parse_plot, render, write_tables

    _check_out_dir(args.out, "--out")
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    paper = load_paper(args.paper) if args.paper else None
    plots = [parse_plot(p) for p in args.plot] if args.plot else None
    tables, written = write_tables(args.results, args.out, formats=formats, suite=args.suite, paper=paper,
                                   plots=plots)
    print(render(tables[0], "md"), end="")
    print(f"wrote {len(written)} files to {args.out}", file=sys.stderr)
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from harness.gate import run_check

    _check_out_dir(args.report, "--report")
    status, report = run_check(args.baseline, args.results, suite=args.suite, report_dir=args.report)
    print(report)
    return status


def _cmd_baseline_update(args: argparse.Namespace) -> int:
    from harness.gate import update_baseline

    _check_out_dir(args.out, "--out", file=True)
    overrides = {name: getattr(args, name) for name in ("k", "alpha", "min_effect") if getattr(args, name) is not None}
    for name, value in overrides.items():
        flag = "--" + name.replace("_", "-")
        if not (value >= 0 and value < float("inf")) or (name != "k" and value >= 1) or (name == "alpha" and not value):
            raise InputError(None, flag, f"out of range: {value!r} (--k >= 0; --alpha in (0, 1); --min-effect in "
                             "[0, 1))")
    baseline = update_baseline(args.results or [_user_results("store")], args.out, suite=args.suite,
                               overrides=overrides)
    runs = baseline["measurement"]["runs"]
    print(f"wrote {args.out}: {len(baseline['entries'])} entries of suite {baseline['suite']} "
          f"(mean over {len(runs)} runs: {len(baseline['provenance']['stores'])} store(s), seeds "
          f"{baseline['provenance']['seeds']}" + ("; one run: fixed tolerances, no measured spread)" if len(runs) < 2
                                                  else "; tolerances from their spread)"))
    return 0


# literal copies of harness.results/tables/gate defaults (tests compare them), so parsing imports nothing heavy:
# the committed store, tables and baseline, which the commands write only when named
_RESULTS_STORE, _TABLES_OUT, _BASELINE_FILE = "results/store", "results/tables", "results/baseline.json"
_TABLE_FORMATS = ("md", "csv", "latex", "html")
_RESULTS_ENV, _USER_RESULTS = "COPA_BENCH_RESULTS", "copa-bench-results"  # harness.results.RESULTS_ENV, USER_RESULTS
_STORE_HELP = ("results store (default: {store}, under $" + _RESULTS_ENV + " if set, else ./" + _USER_RESULTS
               + "; the committed " + _RESULTS_STORE + " only when named)")


def _user_results(name: str) -> str:
    """The default of an output of user runs: NAME under $COPA_BENCH_RESULTS, else under ./copa-bench-results
    (harness.results.user_results_dir), read when the parser is built."""
    import os

    return os.path.join(os.environ.get(_RESULTS_ENV) or _USER_RESULTS, name)


def _add_results_commands(sub) -> None:
    table = sub.add_parser("table", help="comparison, efficiency and ablation tables and plots from the store")
    store = _user_results("store")
    table.add_argument("--results", default=store, help=_STORE_HELP.format(store=store))
    table.add_argument("--format", default=",".join(_TABLE_FORMATS),
                       help=f"{'|'.join(_TABLE_FORMATS)}, or several comma-separated (default: all); html also "
                            "writes index.html, every table and plot on one page")
    table.add_argument("--out", default=_user_results("tables"), help=f"output directory (default: "
                       f"{_user_results('tables')}; the committed {_TABLES_OUT} only when named)")
    table.add_argument("--suite", default=None, help="suite to tabulate (needed when the store holds several)")
    table.add_argument("--paper", default=None, help="paper reference numbers (JSON) shown as '(paper)' columns")
    table.add_argument("--plot", action="append", default=None, metavar="TASK[:METRIC]",
                       help="metric to plot against cost and keep ratio (repeatable; default: every headline metric)")
    table.set_defaults(func=_cmd_table)

    check = sub.add_parser("check", help="regression gate: compare the latest results with a baseline (exit 1 "
                                         "on a regression)")
    check.add_argument("--baseline", required=True, help="baseline JSON (made by `copa-bench baseline update`)")
    check.add_argument("--results", default=store, help=_STORE_HELP.format(store=store))
    check.add_argument("--suite", default=None, help="default: the baseline's suite")
    check.add_argument("--report", default=None, metavar="DIR",
                       help="also write check.json, check.junit.xml (JUnit, for CI systems) and check.md (every gated "
                            "check, passed or failed) into DIR")
    check.set_defaults(func=_cmd_check)

    baseline = sub.add_parser("baseline", help="manage the regression gate's baseline")
    baseline_sub = baseline.add_subparsers(dest="baseline_command", required=True, parser_class=_Parser)
    update = baseline_sub.add_parser("update", help="write the baseline from the latest rows of one or several "
                                                    "stores (mean over runs; the runs' spread sets the tolerances)")
    update.add_argument("--results", action="append", default=None, metavar="STORE",
                        help=f"results store (default {store}); repeat it for reruns of the suite: every "
                             "(store, seed) is one run, and each metric's run-to-run std and n are recorded")
    update.add_argument("--k", type=float, default=None,
                        help="accuracy tolerance in standard errors: max(k x std x sqrt(1/m + 1/n), floor) (default: "
                             "the existing file's, else 3)")
    update.add_argument("--alpha", type=float, default=None,
                        help="speed ratios: significance level of the Mann-Whitney test (default: kept, else 0.01)")
    update.add_argument("--min-effect", type=float, default=None,
                        help="speed ratios: the smallest slowdown that fails, a fraction (default: kept, else 0.10)")
    update.add_argument("--out", default=_user_results("baseline.json"), help=f"baseline file (default: "
                        f"{_user_results('baseline.json')}; the gate's committed baselines, e.g. "
                        "results/baseline/smoke.json, change only when named)")
    update.add_argument("--suite", default=None, help="needed when the store holds several suites")
    update.set_defaults(func=_cmd_baseline_update)


def _one_line_warnings() -> None:
    """copa-bench's own warnings (e.g. a skipped store line) as one line each, like its errors."""
    import warnings

    default = warnings.formatwarning

    def formatwarning(message, category, filename, lineno, line=None) -> str:
        if category.__module__.startswith("harness."):
            return f"copa-bench: warning: {message}\n"
        return default(message, category, filename, lineno, line)

    warnings.formatwarning = formatwarning


def main(argv: Sequence[str] | None = None) -> int:
    _one_line_warnings()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from harness.plugins import load_plugins

        load_plugins(args.plugin)  # before anything reads a registry
        return args.func(args)
    except InputError as e:
        print(f"copa-bench: error: {e}", file=sys.stderr)
        return 2
    except NotApplicable as e:
        print(f"copa-bench: not applicable: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("copa-bench: interrupted", file=sys.stderr)
        return 130
    finally:
        if "torch" in sys.modules:
            import torch.distributed

            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())

"""Suites: a config (configs/suites/<name>.py) expands into jobs (model x variant x seed x task), each run by
the mmengine Runner and recorded in the results store, one row per metric with its provenance. Each task's
chance level on the suite's own test set is recorded beside them as the model ``chance``.

Per (model, variant, seed) the pre-training job runs once and every downstream task of that model starts
from its checkpoint. A job whose config hash is already among the suite's rows is skipped, so an interrupted
suite resumes where it stopped; a task that does not apply to a model is recorded as "n/a" with the reason.

Every job runs on the suite run's ``--device`` in its ``--precision`` (worker processes too); the rows record
both in ``machine`` (the chance rows, which no model computed, do not), and both enter the job hashes
(``harness.runner.run_identity``), so a rerun on another device is a new measurement, not a skipped job.
"""

from __future__ import annotations

import contextlib
import copy
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.config_namespace import settings as harness_settings
from harness.errors import InputError, NotApplicable, on_sigterm_raise

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "suites"
CHANCE = "chance"  # the model name of the chance rows


def suite_names() -> list[str]:
    """The suites shipped in configs/suites."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.py"))


@dataclass
class Job:
    """One Runner job of a suite. ``kind``: 'pretrain', 'finetune' (train then test), 'test' (a pre-training
    checkpoint tested as is: zero-shot retrieval, patch detection), 'efficiency', or 'chance' (a task's floor
    on the suite's test set, harness/chance.py; model ``chance``)."""

    kind: str
    model: str
    task: str
    variant: str
    seed: int
    config: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        variant = f"[{self.variant}]" if self.variant else ""
        return f"{self.kind} {self.task} {self.model}{variant} seed {self.seed}"


def load_suite(name: str):
    """The suite config ``configs/suites/<name>.py`` (or a suite config file) as an mmengine Config.

    A suite *name* is a name, never a path; a suite *file* (``.py``) is run as Python, like the configs in the
    repository, so run only files you trust. What a suite names (models, tasks, options, model overrides) is
    checked like command-line input: names are names, and types resolve only to registered components."""
    from mmengine.config import Config

    from harness.runner import check_name

    if not isinstance(name, str) or not name:
        raise InputError(None, "SUITE", f"expected a suite name or a suite config file, got {name!r}")
    if name.endswith(".py"):
        path = Path(name)
    else:
        check_name(name, "SUITE")
        path = CONFIG_DIR / f"{name}.py"
    if not path.is_file():
        raise InputError(None, "SUITE", f"unknown suite {name!r} (choose from {', '.join(suite_names())})")
    try:
        cfg = Config.fromfile(str(path))
    except SyntaxError as e:
        raise InputError(path, f"line {e.lineno}", f"not a valid Python config ({e.msg})") from None
    except Exception as e:  # mmengine re-raises a config's own errors (NameError, ImportError...) as they are
        raise InputError(path, None, f"could not read the suite config ({type(e).__name__}: {e})") from None
    _validate(cfg, path)
    return cfg


_LIST = (list, tuple)
SUITE_TYPES = {"scale": str, "data": str, "vision_init": str, "chance": bool, "models": _LIST, "seeds": _LIST,
               "tasks": _LIST, "test_only": _LIST, "variants": dict, "options": dict, "max_iters": dict,
               "eval_limit": dict, "efficiency": dict}  # workers: checked below
VARIANT_TYPES = {"models": _LIST, "tasks": _LIST, "model": dict, "pta_fraction": (int, float), "options": dict}


def _strings(value, path: Path, key: str) -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise InputError(path, key, f"must be a list of strings, got {_shown(value)}")
    return list(value)


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _validate(cfg, path: Path) -> None:
    """Everything a suite names must exist, and every field have its type, before its first job runs (or any
    row is written), so a typo cannot stop it half-way."""
    from harness.runner import check_name, check_types, load_task_config, parse_options
    from harness.taskspec import task_spec
    from zoo import METHODS, SCALES

    for key, kind in SUITE_TYPES.items():
        value = cfg.get(key)
        if value is not None and (not isinstance(value, kind) or kind is int and isinstance(value, bool)):
            what = "list" if kind is _LIST else kind.__name__
            raise InputError(path, key, f"must be a {what}, got {type(value).__name__} {_shown(value)}")
    for key in ("models", "seeds"):
        if not cfg.get(key):
            raise InputError(path, key, "must be a non-empty list")
    if not cfg.get("tasks") and not cfg.get("efficiency"):
        raise InputError(path, "tasks", "a suite needs tasks or an efficiency job")
    if cfg.get("scale", "tiny") not in SCALES:
        raise InputError(path, "scale", f"unknown scale {cfg.scale!r} (choose from {', '.join(SCALES)})")
    if not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32 for s in cfg.seeds):
        raise InputError(path, "seeds", f"must be integers from 0 to {2**32 - 1}, got {_shown(cfg.seeds)}")
    variants = cfg.get("variants") or {}
    for variant, spec in variants.items():
        where = f"variants.{variant}"
        if not isinstance(variant, str):
            raise InputError(path, "variants", f"a variant's name must be a string, got {variant!r}")
        if variant:
            check_name(variant, "variants", path)
        if not isinstance(spec, dict):
            raise InputError(path, where, f"must be a dict, got {type(spec).__name__}")
        for key, value in spec.items():
            kind = VARIANT_TYPES.get(key)
            if kind is None:
                raise InputError(path, f"{where}.{key}", f"unknown key (expected {', '.join(VARIANT_TYPES)})")
            if not isinstance(value, kind) or isinstance(value, bool):
                raise InputError(path, f"{where}.{key}", f"wrong type {type(value).__name__}")
        if "pta_fraction" in spec and not 0 <= spec["pta_fraction"] <= 1:
            raise InputError(path, f"{where}.pta_fraction", f"must be between 0 and 1, got {spec['pta_fraction']!r}")
        check_types(spec.get("model") or {}, f"{where}.model", path)
    models = _strings(cfg.models, path, "models")
    for variant, spec in variants.items():
        models += _strings(spec.get("models", []), path, f"variants.{variant}.models")
    efficiency = cfg.get("efficiency") or {}
    models += _strings(efficiency.get("models", []), path, "efficiency.models")
    for model in models:
        if model not in METHODS:
            raise InputError(path, "models", f"unknown model {model!r} (choose from {', '.join(METHODS)})")
    tasks = _strings(cfg.get("tasks") or [], path, "tasks")
    for variant, spec in variants.items():
        tasks += _strings(spec.get("tasks", []), path, f"variants.{variant}.tasks")
    for task in tasks:
        try:
            check_name(task, "tasks", path)
            spec = task_spec(task, flag="tasks")  # a variant (retrieval_zeroshot) runs the config it is declared in
        except InputError as e:  # unknown, or its config declares nothing: the config's own error names it
            raise InputError(path, "tasks", f"unknown task {task!r}" if e.path is None else f"{task!r}: {e}") from None
        task_cfg = load_task_config(spec.config)
        if "task_model" not in harness_settings(task_cfg):
            raise InputError(path, "tasks", f"{task!r} is not a downstream task (a suite pre-trains every model "
                             "itself; list the tasks that start from its checkpoint)")
    for task in _strings(cfg.get("test_only") or [], path, "test_only"):
        if task not in tasks:
            raise InputError(path, "test_only", f"{task!r} is not one of the suite's tasks")
    for where, spec in [("", cfg), *((f"variants.{v}.", spec) for v, spec in variants.items())]:
        for task, options in (spec.get("options") or {}).items():
            if not isinstance(options, list) or not all(isinstance(o, str) and "=" in o for o in options):
                raise InputError(path, f"{where}options.{task}", "must be a list of 'KEY=VALUE' strings (as "
                                 "--cfg-options)")
            if where and task not in ("pretrain", *spec.get("tasks", cfg.get("tasks") or [])):
                raise InputError(path, f"{where}options.{task}", f"{task!r} is not one of the variant's tasks")
            parse_options(options, f"{where}options.{task}", path)
    workers = cfg.get("workers", 1)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise InputError(path, "workers", f"must be an integer >= 1, got {workers!r}")
    for key in ("max_iters", "eval_limit"):
        for task, value in (cfg.get(key) or {}).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(path, f"{key}.{task}", f"must be an integer >= 1, got {_shown(value)}")


def _check_selection(suite, seeds, variants, models, tasks) -> None:
    """A selection names parts of the suite: one that matches none of them would run nothing (or only the
    efficiency job) and say nothing, so it is refused before any data is made or row written."""
    variant_specs = suite.get("variants") or {"": {}}
    variant_models = [m for spec in variant_specs.values() for m in spec.get("models", ())]
    suite_models = list(dict.fromkeys([*suite.models, *variant_models]))
    for flag, chosen, allowed in (("--seeds", seeds, list(suite.seeds)), ("--variants", variants, list(variant_specs)),
                                  ("--models", models, suite_models), ("--tasks", tasks, ["pretrain", *suite.tasks])):
        unknown = [x for x in (chosen or ()) if x not in allowed]
        if unknown:
            raise InputError(None, flag, f"not {flag[2:]} of this suite: {', '.join(map(repr, unknown))} "
                             f"(choose from {', '.join(map(repr, allowed))})")


def plan(suite, seeds=None, variants=None, models=None, tasks=None) -> list[Job]:
    """Every job of a suite in the order it runs: per seed and variant, each model's pre-training followed by
    its tasks; the efficiency job last. ``seeds``, ``variants``, ``models`` and ``tasks`` select a part of the suite
    (pre-training always runs: the tasks start from it; the efficiency job only when no task is selected). A task
    is only tested (no fine-tuning) when its declaration or the suite's ``test_only`` says so; it has a chance
    job when its declaration names a chance predictor (harness/taskspec.py)."""
    from harness.taskspec import task_spec

    jobs: list[Job] = []
    chosen = {k: v for k, v in (suite.get("variants") or {"": {}}).items() if variants is None or k in variants}
    if suite.get("tasks") and suite.get("chance", True) and (variants is None or "" in variants):
        seed = suite.seeds[0] if seeds is None else min([s for s in suite.seeds if s in seeds], default=None)
        if seed is not None:
            jobs += [Job("chance", CHANCE, task, "", seed) for task in ["pretrain", *suite.tasks]
                     if task_spec(task, flag="tasks").chance and (tasks is None or task in ("pretrain", *tasks))]
    for seed in suite.seeds if seeds is None else [s for s in suite.seeds if s in seeds]:
        if not suite.get("tasks"):
            break
        for variant, spec in chosen.items():
            for model in spec.get("models", suite.models):
                if models is not None and model not in models:
                    continue
                jobs.append(Job("pretrain", model, "pretrain", variant, seed, dict(spec)))
                for task in spec.get("tasks", suite.tasks):
                    if tasks is not None and task not in tasks:
                        continue
                    only_test = task in suite.get("test_only", ()) or task_spec(task, flag="tasks").test_only
                    kind = "test" if only_test else "finetune"
                    jobs.append(Job(kind, model, task, variant, seed, dict(spec)))
    if suite.get("efficiency") and (variants is None or "" in variants) and tasks is None:
        jobs.append(Job("efficiency", ",".join(suite.efficiency.get("models", suite.models)), "efficiency", "",
                        0, dict(suite.efficiency)))
    return jobs


def _job_cfg(suite, job: Job, checkpoint: Path | None, testing: bool, work_dir: Path):
    from harness.runner import apply_options, build_config
    from harness.taskspec import task_spec

    task = task_spec(job.task, flag="tasks").config  # a variant runs the config it is declared in
    overrides = dict(job.config.get("model", {}))
    cfg = build_config(job.model, task, scale=suite.get("scale", "tiny"), data=suite.get("data"),
                       work_dir=work_dir, seed=job.seed, checkpoint=checkpoint, testing=testing,
                       max_iters=None if testing else suite.get("max_iters", {}).get(job.task),
                       model_overrides=overrides, vision_init=suite.get("vision_init", "auto"),
                       device=suite.get("device"), precision=suite.get("precision", "fp32"),
                       options=suite.get("options", {}).get(job.task))
    apply_options(cfg, suite.get("options", {}).get(job.task), f"options.{job.task}", suite.filename)
    apply_options(cfg, job.config.get("options", {}).get(job.task), f"variants.{job.variant}.options.{job.task}",
                  suite.filename)
    if job.task == "pretrain" and "pta_fraction" in job.config:
        cfg.train_dataloader.dataset.pta_fraction = job.config["pta_fraction"]
    for loader in ("val_dataloader", "test_dataloader"):
        limit = suite.get("eval_limit", {}).get(job.task)
        if limit and cfg.get(loader):
            cfg[loader].dataset.indices = limit
    return cfg


def run_suite(name: str, results_dir: str | Path | None = None, work_root: str | Path = "work_dirs/suites",
              say: Callable[[str], None] | None = None, seeds=None, variants=None, models=None, tasks=None,
              workers: int | None = None, device: str | None = None, precision: str = "fp32",
              prepare_only: bool = False) -> dict[str, int]:
    """Run (or resume) a suite, or the part of it that ``seeds``/``variants``/``models``/``tasks`` select; returns
    counts of jobs run, skipped and not applicable. Rows go to ``results_dir`` (default: the user's store,
    ``harness.results.user_results_dir()/store``; the committed ``results/store`` only when named). One line per
    finished job reports progress, elapsed time and an estimate of the time left (:func:`_progress`).

    Every job runs on ``device`` (default: CUDA when available) in ``precision``; off the CPU or in reduced
    precision the work dirs go to ``WORK_ROOT/SUITE_cuda_bf16`` (``harness.runner.run_suffix``).

    ``prepare_only`` makes what the jobs read and nothing else (the benchmark, each seed's ViT initialisation),
    then returns: CI makes them while its tests run, which leaves a core idle for the one-thread initialisation.

    ``workers`` > 1 runs the jobs in that many processes at one torch thread each, a task once its model's
    pre-training is done: tiny models use a second thread poorly, and one thread makes every job
    bit-reproducible. This process alone writes the store, and the efficiency job runs last in it, alone, with
    all threads. ``None``: the suite config's ``workers`` (default 1; a distributed run always uses its own
    processes).
    """
    from harness import distributed
    from harness.device import check_precision, resolve_device
    from harness.plugins import loaded_plugins
    from harness.results import append_rows, completed_jobs, provenance, read_rows, user_results_dir
    from harness.runner import checked_manifest, ensure_benchmark, run_suffix

    results_dir = user_results_dir() / "store" if results_dir is None else results_dir

    device = resolve_device(device)
    check_precision(precision, device)
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise InputError(None, "--workers", f"must be an integer >= 1, got {workers!r}")
    if workers is not None and workers > 1 and distributed.is_initialized():
        raise InputError(None, "--workers", "starts processes of its own: use it without --launcher")
    # every process of a distributed run takes part in each job; the first one reports and writes the store
    main_process = distributed.rank() == 0
    say = say or (lambda message: print(message, file=sys.stderr, flush=True))
    if not main_process:
        say, append_rows = (lambda message: None), (lambda directory, rows: None)  # noqa: E731
    suite = load_suite(name)
    if workers is None:
        workers = 1 if distributed.is_initialized() else suite.get("workers", 1)
    _check_selection(suite, seeds, variants, models, tasks)
    root = ensure_benchmark(suite.get("data"))
    suite.data, suite.device, suite.precision = str(root), str(device), precision
    data_hash = checked_manifest(root)["content_sha256"]
    stored = read_rows(results_dir)  # read once: a damaged line warns once
    context = _Context(source=name, data=str(root), data_hash=data_hash,
                       done=completed_jobs(stored, suite=Path(name).stem),
                       work_root=Path(work_root) / f"{Path(name).stem}{run_suffix(device, precision)}",
                       prov=_with_run(provenance(), device, precision), device=str(device), precision=precision,
                       plugins=loaded_plugins())
    jobs = plan(suite, seeds, variants, models, tasks)
    warning = None if prepare_only else _thread_mismatch(stored, context.suite, device, workers)
    if warning:
        say(warning)
    counts = dict(run=0, skipped=0, not_applicable=0, failed=0)
    started = time.perf_counter()
    _make_vision_inits(suite, jobs, one_thread=workers > 1)
    if prepare_only:
        say(f"suite {context.suite}: prepared its data ({root}) and ViT initialisations for {len(jobs)} jobs, "
            f"{_clock(time.perf_counter() - started)}; no job run, nothing written to {results_dir}")
        return counts
    outcomes = _serial(context, suite, jobs) if workers == 1 else _parallel(context, suite, jobs, workers)
    with contextlib.closing(outcomes):  # an exception here (SIGTERM's too) stops the workers at once
        for finished, (number, outcome) in enumerate(outcomes, start=1):
            counts[outcome.status] += 1
            ran = counts["run"] + counts["failed"]  # skipped and not-applicable jobs take next to no time
            prefix = f"{_progress(finished, len(jobs), time.perf_counter() - started, ran)} {jobs[number - 1].name}"
            append_rows(results_dir, outcome.rows)
            if outcome.status == "skipped":
                say(f"{prefix}: already in the store, skipped")
            elif outcome.status != "run":
                say(f"{prefix}: {outcome.message}")
            elif outcome.rows:  # none in a distributed run's other processes: the efficiency job ran in the first one
                shown = ", ".join(f"{r['metric']} {r['value']:.3g}" for r in outcome.rows[:4] if r["value"] is not None)
                say(f"{prefix}: {outcome.rows[0]['wall_s']:.0f}s  {shown}")
    say(f"suite {context.suite}: {counts['run']} jobs run, {counts['skipped']} skipped (already in {results_dir}), "
        f"{counts['not_applicable']} not applicable, {counts['failed']} failed, "
        f"{_clock(time.perf_counter() - started)}")
    return counts


@dataclass
class _Context:
    """What every job of one suite run shares; picklable, so worker processes get it whole."""

    source: str  # the suite's name or config file
    data: str
    data_hash: str
    done: set[str]  # job hashes already in the store
    work_root: Path
    prov: dict
    device: str = "cpu"
    precision: str = "fp32"
    plugins: tuple[str, ...] = ()  # imported by each worker first (``--plugin``, harness/plugins.py)

    @property
    def suite(self) -> str:
        return Path(self.source).stem


@dataclass
class _Outcome:
    status: str  # a key of run_suite's counts
    rows: list[dict] = field(default_factory=list)
    message: str = ""


def _execute(context: _Context, suite, job: Job, pretrained: dict) -> _Outcome:
    """One job, in whichever process runs it; ``pretrained`` maps (model, variant, seed) to its pre-training
    checkpoint."""
    from harness.results import job_hash, make_row

    prov = _without_run(context.prov) if job.kind == "chance" else context.prov  # no model, no device
    base = dict(suite=context.suite, model=job.model, task=job.task, variant=job.variant, seed=job.seed,
                scale=suite.get("scale", "tiny"), data_hash=context.data_hash, prov=prov)
    try:
        rows, skipped = _run_job(suite, job, context.work_root, pretrained, context.data_hash, context.done, base)
    except NotApplicable as e:
        digest = job_hash({"not_applicable": job.name, "suite": context.suite, "data": context.data_hash})
        row = make_row(metric="*", value=None, reason=str(e), job_hash=digest, **base)
        return _Outcome("not_applicable", [] if digest in context.done else [row], f"not applicable ({e})")
    except InputError as e:
        if e.path is None:  # name the suite, and the job, rather than a flag nobody gave
            raise InputError(context.source, f"{job.name}: {e.field}" if e.field else job.name, e.message) from None
        raise
    except KeyboardInterrupt:
        raise
    except Exception as e:  # one broken job must not stop the suite; it is reported and leaves no row
        return _Outcome("failed", message=f"FAILED: {type(e).__name__}: {e}")
    return _Outcome("skipped" if skipped else "run", rows)


def _thread_mismatch(rows: list[dict], suite: str, device, workers: int) -> str | None:
    """A warning when this suite's stored CPU rows ran at another torch thread count than this run's jobs will
    (``--workers 1``: every thread; more: one each). The job hash does not record threads, yet one seed's figures
    differ between thread counts, so such a run would mix incomparable rows under the suite's tables."""
    import torch

    from harness.device import device_name
    from harness.results import EFFICIENCY_TASK

    if torch.device(device).type != "cpu":
        return None
    threads = 1 if workers > 1 else torch.get_num_threads()
    stored = sorted({row["machine"]["threads"] for row in rows if row["suite"] == suite
                     and row["machine"].get("device") == device_name(device) and row["task"] != EFFICIENCY_TASK})
    if not stored or stored == [threads]:
        return None
    how = ("--workers 1 runs each job here at every thread" if workers == 1
           else f"--workers {workers} runs each job at one thread")
    hint = "; run it with --workers 2 or more to match them" if stored == [1] else ""
    return (f"suite {suite}: warning: its stored rows ran at {', '.join(map(str, stored))} torch thread(s), the jobs "
            f"this run adds at {threads} ({how}): a seed's figures differ between thread counts{hint}")


def _serial(context: _Context, suite, jobs: list[Job]):
    pretrained: dict[tuple, Path] = {}
    for number, job in enumerate(jobs, 1):
        yield number, _execute(context, suite, job, pretrained)


def _make_vision_inits(suite, jobs: list[Job], one_thread: bool) -> None:
    """Make the shared ViT initialisation of each seed that lacks one, here, once, before any job (whose config
    only reads it), rather than by two workers at the same time in the same work dir. With workers, at one torch
    thread like their jobs, since the thread count changes its weights (by ~3e-6 after 20 iterations at two
    threads), which pre-training's patch choices then amplify, and the job hash does not record it."""
    import torch

    from harness import runner

    pretrain = runner.load_task_config("pretrain")
    wanted = sorted({job.seed for job in jobs if job.kind == "pretrain" and runner.needs_vision_init(
        pretrain, suite.get("scale", "tiny"), suite.get("vision_init", "auto"), job.config.get("model"))})
    threads = torch.get_num_threads()
    if one_thread:
        torch.set_num_threads(1)
    try:
        for seed in wanted:
            runner.ensure_vision_init(suite.get("scale", "tiny"), suite.get("data"), seed, suite.get("device"),
                                      suite.get("precision", "fp32"))
    finally:
        torch.set_num_threads(threads)


def _parallel(context: _Context, suite, jobs: list[Job], workers: int):
    """The jobs in ``workers`` one-thread processes, yielding each outcome as it arrives: the pre-training and
    chance jobs first, each task as soon as its model's pre-training is done; then the efficiency jobs here,
    once the workers are gone. An error, Ctrl-C or SIGTERM (raised here as :class:`Terminated`) stops the
    workers mid-job: the store holds every finished job's rows, and a rerun resumes from them."""
    import multiprocessing
    import signal
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ready: list[int] = []
    after: dict[tuple, list[int]] = {}  # a pre-training's (model, variant, seed) -> the numbers of its tasks
    for number, job in enumerate(jobs, 1):
        if job.kind in ("pretrain", "chance"):
            ready.append(number)
        elif job.kind != "efficiency":
            after.setdefault((job.model, job.variant, job.seed), []).append(number)
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
    previous = None
    with ProcessPoolExecutor(workers, mp_context=spawn, initializer=_worker_start, initargs=(context,)) as pool:
        try:
            previous = on_sigterm_raise()
            running = {pool.submit(_run_in_worker, context, jobs[n - 1], None): n for n in ready}
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    number = running.pop(future)
                    job = jobs[number - 1]
                    outcome, checkpoint = future.result()  # a job's InputError, or a dead worker, stops the suite
                    yield number, outcome
                    if job.kind == "pretrain":
                        for n in after.pop((job.model, job.variant, job.seed), []):
                            running[pool.submit(_run_in_worker, context, jobs[n - 1], checkpoint)] = n
        except BaseException:
            if previous is not None:  # a second SIGTERM must not cut the cleanup short
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            # the executor would let each worker finish the job in hand (hours, for nothing: this process writes
            # the rows), and outlive this process if it is killed; Python < 3.14 has no public way to stop them
            for process in list((pool._processes or {}).values()):
                process.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    for number, job in enumerate(jobs, 1):
        if job.kind == "efficiency":
            yield number, _execute(context, suite, job, {})


_worker_suite = None  # a worker's copy of the suite config, loaded once


def _with_threads(prov: dict, threads: int) -> dict:
    """The provenance with the torch threads this process's jobs run with (not those of the suite's start)."""
    return {**prov, "machine": {**prov["machine"], "threads": threads}}


def _with_run(prov: dict, device, precision: str) -> dict:
    """The provenance with the device that runs the jobs (the GPU's name, or ``cpu``) and their precision."""
    from harness.device import device_name

    return {**prov, "machine": {**prov["machine"], "device": device_name(device), "precision": precision}}


def _without_run(prov: dict) -> dict:
    machine = {k: v for k, v in prov["machine"].items() if k not in ("device", "precision")}
    return {**prov, "machine": machine}


def _worker_start(context: _Context) -> None:
    import multiprocessing
    import signal

    import torch

    from harness.plugins import load_plugins

    global _worker_suite
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent stops us
    load_plugins(context.plugins)
    _worker_suite = load_suite(context.source)
    _worker_suite.data, _worker_suite.device, _worker_suite.precision = context.data, context.device, context.precision
    torch.set_num_threads(1)
    # unset the 'spawn' this process was started with, which mmengine's Runner would warn about on every job
    multiprocessing.set_start_method(None, force=True)


def _run_in_worker(context: _Context, job: Job, checkpoint: Path | None) -> tuple[_Outcome, Path | None]:
    """One job in a worker; a task gets its model's pre-training checkpoint, a pre-training returns it."""
    import torch

    context.prov = _with_threads(context.prov, torch.get_num_threads())
    key = (job.model, job.variant, job.seed)
    pretrained = {} if checkpoint is None else {key: checkpoint}
    outcome = _execute(context, _worker_suite, job, pretrained)
    return outcome, pretrained.get(key)


def _clock(seconds: float) -> str:
    """m:ss, or h:mm:ss from an hour."""
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


def _progress(finished: int, total: int, elapsed: float, ran: int) -> str:
    """The head of a suite's line per finished job: ``[finished/total elapsed, ~left left]``. The time left is
    the mean wall time per job that ran so far (``ran``: skipped and not-applicable jobs take next to none; with
    workers the jobs overlap, which the wall time counts) times the jobs left: ``?`` before any has run, nothing
    after the last."""
    head = f"[{finished}/{total} {_clock(elapsed)}"
    left = total - finished
    if left <= 0:
        return head + "]"
    return f"{head}, {'~' + _clock(elapsed / ran * left) if ran > 0 else '?'} left]"


def _metric_rows(base: dict, metrics: dict[str, float], job_hash: str, wall_s: float) -> list[dict]:
    from harness.results import metric_rows

    return metric_rows(metrics, job_hash=job_hash, wall_s=wall_s, **base)


def _run_job(suite, job: Job, work_root: Path, pretrained: dict, data_hash: str, done: set[str],
             base: dict) -> tuple[list[dict], bool]:
    from harness.runner import default_work_dir, finished_job, job_digest, test, train, without_validation

    key = (job.model, job.variant, job.seed)
    work_dir = work_root / f"{job.model}{'_' + job.variant if job.variant else ''}_seed{job.seed}" / job.task
    if job.kind == "efficiency":
        return _efficiency(suite, job, data_hash, done, base)  # timed in one process, the others idle
    if job.kind == "chance":
        return _chance(suite, job, data_hash, done, base)
    if job.kind == "pretrain":
        cfg = _job_cfg(suite, job, None, False, work_dir)
        digest = job_digest(cfg)
        # the same job run by 'copa-bench train' (its default work dir) counts as done
        standard = default_work_dir("pretrain", job.model, suite.get("scale", "tiny"), job.seed,
                                    suite.get("device", "cpu"), suite.get("precision", "fp32"))
        for candidate in (work_dir, standard):
            record = finished_job(candidate, digest)
            if record is not None:
                pretrained[key] = Path((candidate / "last_checkpoint").read_text().strip())
                if digest in done:
                    return [], True
                metrics = {k.split("/", 1)[1]: v for k, v in record["summary"].items() if k.startswith("val/")}
                return _metric_rows(base, metrics, digest, record["wall_s"]), False
        summary = train(cfg)
        pretrained[key] = Path((work_dir / "last_checkpoint").read_text().strip())
        record = finished_job(work_dir, digest)
        metrics = {k.split("/", 1)[1]: v for k, v in summary.items() if k.startswith("val/")}
        return _metric_rows(base, metrics, digest, record["wall_s"] if record else 0.0), False
    if key not in pretrained:
        raise RuntimeError(f"{job.model}: its pre-training job did not finish")
    start = time.perf_counter()
    if job.kind == "test":
        cfg = _job_cfg(suite, job, pretrained[key], True, work_dir)
        digest = job_digest(cfg)
        if digest in done:
            return [], True
        return _metric_rows(base, test(cfg), digest, time.perf_counter() - start), False
    cfg = _job_cfg(suite, job, pretrained[key], False, work_dir)
    without_validation(cfg)  # the test below is the job's result
    digest = job_digest(cfg)
    if digest in done:
        return [], True
    if finished_job(work_dir, digest) is None:
        train(cfg)
    tested = _job_cfg(suite, job, Path((work_dir / "last_checkpoint").read_text().strip()), True, work_dir)
    return _metric_rows(base, test(tested), digest, time.perf_counter() - start), False


def _chance(suite, job: Job, data_hash: str, done: set[str], base: dict) -> tuple[list[dict], bool]:
    from harness.chance import CHANCE_VERSION, chance_config, chance_metrics
    from harness.results import job_hash

    limit = suite.get("eval_limit", {}).get(job.task)
    cfg = chance_config(job.task, suite.data, limit)
    digest = job_hash({"chance": job.task, "config": cfg.to_dict(), "data": data_hash, "version": CHANCE_VERSION})
    if digest in done:
        return [], True
    start = time.perf_counter()
    return _metric_rows(base, chance_metrics(cfg, job.task), digest, time.perf_counter() - start), False


def _efficiency(suite, job: Job, data_hash: str, done: set[str], base: dict) -> tuple[list[dict], bool]:
    """FLOPs and speed of the suite's models in one process (speedups against albef, interleaved rounds)."""
    from harness import distributed
    from harness.device import check_precision, resolve_device
    from harness.results import job_hash

    spec = copy.deepcopy(job.config)
    device = resolve_device(spec.get("device", suite.get("device")), flag="efficiency.device")
    precision = check_precision(spec.get("precision", suite.get("precision", "fp32")), device, "efficiency.precision")
    hashed = spec if (device.type, precision) == ("cpu", "fp32") else {**spec, "run": f"{device.type}_{precision}"}
    digest = job_hash({"efficiency": hashed, "data": data_hash})
    if digest in done:
        return [], True
    if distributed.rank() != 0:
        distributed.barrier()
        return [], False
    try:
        return _profile(suite, spec, digest, data_hash, base)
    finally:
        distributed.barrier()


def _profile(suite, spec: dict, digest: str, data_hash: str, base: dict) -> tuple[list[dict], bool]:
    """The efficiency job: the pair table (``profile_models``) by default, or with ``tasks`` in its spec (``copa-bench
    profile --tasks`` names, e.g. ``["pretrain", "retrieval:infer", "pair"]``) the cost of each task phase
    (``profile_tasks``). Spec keys: ``scale``, ``models``, ``image_sizes``, ``batch``, ``repeats``, ``threads``,
    ``tasks``, ``device``, ``precision``, ``compile``, ``retrieval_k``."""
    from harness.device import check_precision, device_name, resolve_device
    from harness.profiling.efficiency import is_pair_only, parse_tasks, profile_models, profile_tasks
    from harness.profiling.speed import pin_threads
    from harness.results import efficiency_rows
    from zoo import build_model

    scale = spec.get("scale", "tiny")
    names = spec.get("models", list(suite.models))
    try:
        specs = parse_tasks(spec.get("tasks", ["pair"]))
    except ValueError as e:
        raise InputError(None, "efficiency.tasks", str(e)) from None
    device = resolve_device(spec.get("device", suite.get("device")), flag="efficiency.device")
    precision = check_precision(spec.get("precision", suite.get("precision", "fp32")), device, "efficiency.precision")
    start = time.perf_counter()
    threads = pin_threads(spec.get("threads"))
    prov = _with_threads(base["prov"], threads)
    prov = {**prov, "machine": {**prov["machine"], "device": device_name(device), "precision": precision}}
    common = dict(batch=spec.get("batch", 4), repeats=spec.get("repeats", 5), device=device, precision=precision,
                  compile=spec.get("compile", False), retrieval_k=spec.get("retrieval_k", 16))
    profiled = []
    for size in spec.get("image_sizes", [None]):
        models = {n: build_model(n, scale, **({} if size is None else {"image_size": size})) for n in names}
        image_size = size or next(iter(models.values())).vision.patch_embed.img_size[0]
        if is_pair_only(specs):
            profiled += profile_models(models, image_size=image_size, **common)
        else:
            profiled += profile_tasks(models, image_size, specs, **common)
        del models
    return efficiency_rows(profiled, suite=base["suite"], scale=scale, job_hash=digest, data_hash=data_hash,
                           wall_s=time.perf_counter() - start, prov=prov), False

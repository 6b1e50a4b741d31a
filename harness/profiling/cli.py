"""``copa-bench profile``: the efficiency table of several models at one or more image sizes.

``--tasks pair`` (the default) prints the pair table (GMACs per image-text pair, pairs/s, latency); any other
``--tasks`` list (``task[:phase][@batch]``, see ``harness.profiling.efficiency``) prints the cost of every task
phase (training step and inference) per model, with the speedups against ``--reference``. ``--device``,
``--precision`` and ``--compile`` choose where and how the timed calls run; every row records them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from harness.errors import InputError
from harness.profiling.efficiency import (
    format_table,
    format_task_table,
    is_pair_only,
    parse_tasks,
    profile_models,
    profile_tasks,
    skipped_tasks,
    write_csv,
    write_json,
)
from harness.profiling.speed import pin_threads


def _check(args: argparse.Namespace) -> tuple[list[str], list[int]]:
    from zoo import METHODS, SCALES

    names = [m for m in args.models.split(",") if m]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise InputError(None, "--models", f"unknown model(s) {', '.join(unknown) or '(none)'} "
                         f"(choose from {', '.join(METHODS)})")
    if args.scale not in SCALES:
        raise InputError(None, "--scale", f"unknown scale {args.scale!r} (choose from {', '.join(SCALES)})")
    if args.reference not in names:
        raise InputError(None, "--reference", f"{args.reference!r} must be one of --models")
    checked = (("--batch", args.batch), ("--repeats", args.repeats), ("--retrieval-k", args.retrieval_k),
               ("--threads", 1 if args.threads is None else args.threads))
    for flag, value in checked:
        if value < 1:
            raise InputError(None, flag, f"must be at least 1, got {value}")
    vision = SCALES[args.scale]["vision"]
    sizes = args.image_size or [vision["img_size"]]
    patch = vision["patch_size"]
    bad = [s for s in sizes if s < patch or s % patch]
    if bad:
        raise InputError(None, "--image-size", f"{bad} not a positive multiple of the patch size {patch}")
    for flag, path in (("--json", args.json), ("--csv", args.csv)):
        parent = os.path.dirname(os.path.abspath(path)) if path else None
        if path and not (os.path.isdir(parent) and os.access(parent, os.W_OK)):
            raise InputError(path, flag, "cannot be written: its directory does not exist or is not writable")
    return names, sizes


def _tasks(args: argparse.Namespace):
    text = getattr(args, "tasks", None) or "pair"
    try:
        return parse_tasks(text)
    except ValueError as e:
        raise InputError(None, "--tasks", str(e)) from None


def run_profile(args: argparse.Namespace) -> int:
    from harness.device import check_precision, resolve_device
    from zoo import build_model

    names, sizes = _check(args)
    specs = _tasks(args)
    device = resolve_device(getattr(args, "device", None) or "auto")
    precision = check_precision(getattr(args, "precision", None) or "fp32", device)
    compile_ = bool(getattr(args, "compile", False))
    threads = pin_threads(args.threads)
    start = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - start:5.0f}s] {msg}", file=sys.stderr, flush=True)

    pair_only = is_pair_only(specs)
    rows, skipped = [], []
    for size in sizes:
        say(f"building {len(names)} {args.scale} models at {size}px ({device}, {precision}, {threads} threads)")
        models = {name: build_model(name, scale=args.scale, image_size=size).to(device) for name in names}
        common = dict(batch=args.batch, repeats=args.repeats, reference=args.reference, retrieval_k=args.retrieval_k,
                      device=device, precision=precision, compile=compile_, progress=say)
        if pair_only:
            rows += profile_models(models, size, **common)
        else:
            rows += profile_tasks(models, size, specs, **common)
            skipped = skipped_tasks(models, specs)
        del models
    print(format_table(rows) if pair_only else format_task_table(rows, skipped))
    if args.json:
        write_json(rows, args.json)
    if args.csv:
        write_csv(rows, args.csv)
    what = "(model, size) pairs" if pair_only else "(model, task, phase, size) rows"
    print(f"profiled {len(rows)} {what} in {time.perf_counter() - start:.0f}s", file=sys.stderr)
    return 0

"""``copa-bench profile``: the efficiency table of several models at one or more image sizes."""

from __future__ import annotations

import argparse
import os
import sys
import time

from harness.errors import InputError
from harness.profiling.efficiency import format_table, profile_models, write_csv, write_json
from harness.profiling.speed import pin_threads


def _check(args: argparse.Namespace) -> tuple[list[str], list[int]]:
    from copa.build import METHODS, SCALES

    names = [m for m in args.models.split(",") if m]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise InputError(None, "--models", f"unknown model(s) {', '.join(unknown) or '(none)'} "
                         f"(choose from {', '.join(METHODS)})")
    if args.scale not in SCALES:
        raise InputError(None, "--scale", f"unknown scale {args.scale!r} (choose from {', '.join(SCALES)})")
    if args.reference not in names:
        raise InputError(None, "--reference", f"{args.reference!r} must be one of --models")
    for flag, value in (("--batch", args.batch), ("--repeats", args.repeats), ("--retrieval-k", args.retrieval_k)):
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


def run_profile(args: argparse.Namespace) -> int:
    from copa.build import build_model

    names, sizes = _check(args)
    threads = pin_threads(args.threads)
    start = time.perf_counter()
    rows = []
    for size in sizes:
        print(f"[{time.perf_counter() - start:5.0f}s] building {len(names)} {args.scale} models at {size}px "
              f"({threads} threads)", file=sys.stderr, flush=True)
        models = {name: build_model(name, scale=args.scale, image_size=size) for name in names}
        rows += profile_models(
            models, size, batch=args.batch, repeats=args.repeats, reference=args.reference,
            retrieval_k=args.retrieval_k,
            progress=lambda msg: print(f"[{time.perf_counter() - start:5.0f}s] {msg}", file=sys.stderr, flush=True),
        )
        del models
    print(format_table(rows))
    if args.json:
        write_json(rows, args.json)
    if args.csv:
        write_csv(rows, args.csv)
    print(f"profiled {len(rows)} (model, size) pairs in {time.perf_counter() - start:.0f}s", file=sys.stderr)
    return 0

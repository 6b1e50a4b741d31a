"""The ``copa-bench`` command line."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from harness.errors import InputError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit status 2), like every other bad input."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _cmd_data_make(args: argparse.Namespace) -> int:
    from harness.data.benchmark import make_benchmark

    start = time.perf_counter()
    digest = make_benchmark(args.out, preset=args.preset, seed=args.seed, pta_fraction=args.pta_fraction,
                            workers=args.workers, force=args.force)
    print(f"done in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    print(f"sha256:{digest}")
    return 0


def _cmd_data_check(args: argparse.Namespace) -> int:
    from harness.data.check import check_benchmark

    report = check_benchmark(args.data, splits=args.split, patch_size=args.patch_size, min_overlap=args.min_overlap)
    print(report)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from harness.runner import build_config, train

    cfg = build_config(args.model, args.task, scale=args.scale, data=args.data, work_dir=args.work_dir,
                       seed=args.seed, resume=args.resume, max_iters=args.max_iters)
    start = time.perf_counter()
    summary = train(cfg)
    print(f"{args.model} {args.task} ({args.scale}, seed {args.seed}) finished in {time.perf_counter() - start:.0f}s;"
          f" checkpoints in {cfg.work_dir}")
    for key, value in summary.items():
        print(f"  {key:<16} {value:.4f}")
    return 0


def _int_list(value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None


def _cmd_profile(args: argparse.Namespace) -> int:
    from harness.profiling.cli import run_profile

    return run_profile(args)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="copa-bench", description="Train, evaluate and profile COPA and baseline VLP models.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    data = sub.add_parser("data", help="generate and check datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    make = data_sub.add_parser("make", help="generate the offline benchmark (deterministic for a seed)")
    make.add_argument("--out", required=True, help="directory to create")
    make.add_argument("--preset", default="tiny", choices=["tiny", "small"])
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--pta-fraction", type=float, default=0.05,
                      help="share of train images whose boxes PTA may use (default 0.05)")
    make.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")
    make.add_argument("--force", action="store_true", help="replace an existing different dataset at --out")
    make.set_defaults(func=_cmd_data_make)

    check = data_sub.add_parser("check", help="load every file of a generated benchmark and print its statistics")
    check.add_argument("data", help="benchmark directory")
    check.add_argument("--split", action="append", help="check only this split (repeatable; default: all)")
    check.add_argument("--patch-size", type=int, default=8)
    check.add_argument("--min-overlap", type=float, default=0.1)
    check.set_defaults(func=_cmd_data_check)

    train = sub.add_parser("train", help="train a model on a task with the mmengine Runner")
    train.add_argument("--model", required=True, help="albef, copa, trips, evit, random, tome or vilt")
    train.add_argument("--task", required=True, help="a task config under configs/tasks (e.g. pretrain)")
    train.add_argument("--scale", default="tiny", help="tiny or base")
    train.add_argument("--data", default=None, help="benchmark directory (default: data/tiny, generated if missing)")
    train.add_argument("--work-dir", default=None, help="default: work_dirs/TASK/MODEL_SCALE_seedSEED")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the work dir")
    train.add_argument("--max-iters", type=int, default=None, help="override the task's schedule length")
    train.set_defaults(func=_cmd_train)

    profile = sub.add_parser("profile", help="GMACs, parameters, throughput and latency per model (one process)")
    profile.add_argument("--models", default="albef,copa,trips,evit,random,tome,vilt")
    profile.add_argument("--scale", default="base", help="tiny or base")
    profile.add_argument("--image-size", type=_int_list, default=None, help="e.g. 224,384 (default: the scale's)")
    profile.add_argument("--batch", type=int, default=4, help="batch for pairs/s (latency is at batch 1)")
    profile.add_argument("--repeats", type=int, default=5, help="timed rounds after one warm-up round")
    profile.add_argument("--threads", type=int, default=None, help="torch threads (default: all available)")
    profile.add_argument("--reference", default="albef", help="model the speedups are relative to")
    profile.add_argument("--retrieval-k", type=int, default=16, help="ITM re-rankings per retrieval query")
    profile.add_argument("--json", default=None, help="write the rows as JSON")
    profile.add_argument("--csv", default=None, help="write the rows as CSV")
    profile.set_defaults(func=_cmd_profile)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except InputError as e:
        print(f"copa-bench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("copa-bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

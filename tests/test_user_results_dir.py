"""What a user run writes and prints: its results under a user directory (the committed ``results/`` only when
named), a missing checkpoint refused before any data is generated, and the suite's progress line with the time
left."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from harness import cli, results
from harness.cli import build_parser, main
from harness.suite import _progress, run_suite

COMMANDS = {  # argv -> the options whose defaults are outputs (or the store they read)
    ("run", "smoke"): ("results",),
    ("table",): ("results", "out"),
    ("check", "--baseline", "b.json"): ("results",),
    ("baseline", "update"): ("out",),
}


def _defaults(argv) -> dict:
    args = build_parser().parse_args(list(argv))
    return {name: getattr(args, name) for name in ("results", "out") if hasattr(args, name)}


def test_cli_literals_match_the_store_module():
    assert (cli._RESULTS_ENV, cli._USER_RESULTS) == (results.RESULTS_ENV, results.USER_RESULTS)


@pytest.mark.parametrize("env", [None, "/srv/me/copa"], ids=["default", "COPA_BENCH_RESULTS"])
def test_user_runs_default_to_the_user_results_dir(monkeypatch, env):
    if env is None:
        monkeypatch.delenv(results.RESULTS_ENV, raising=False)
    else:
        monkeypatch.setenv(results.RESULTS_ENV, env)
    root = results.user_results_dir()
    assert root == Path(env or "copa-bench-results")
    for argv, names in COMMANDS.items():
        defaults = _defaults(argv)
        for name in names:
            value = defaults[name]
            assert Path(value).parts[0] != "results", (argv, name, value)  # never the committed results/
            assert Path(value).is_relative_to(root), (argv, name, value)
        if "results" in names:
            assert defaults["results"] == str(root / "store")
    assert _defaults(("table",))["out"] == str(root / "tables")
    assert _defaults(("baseline", "update"))["out"] == str(root / "baseline.json")
    assert inspect.signature(run_suite).parameters["results_dir"].default is None  # run_suite: the user store


def test_the_committed_results_are_written_only_when_named():
    args = build_parser().parse_args(["run", "smoke", "--results", "results/store"])
    assert args.results == "results/store"
    args = build_parser().parse_args(["table", "--results", "results/store", "--out", "results/tables"])
    assert (args.results, args.out) == ("results/store", "results/tables")


def test_help_says_where_results_go(capsys, monkeypatch):
    monkeypatch.delenv(results.RESULTS_ENV, raising=False)
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for needle in ("copa-bench-results/store", "COPA_BENCH_RESULTS", "results/store only when named"):
        assert needle in text, needle


def _one_line(capsys, argv, *needles) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("copa-bench: error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


@pytest.mark.parametrize(("argv", "needles"), [
    (["test", "--model", "copa", "--task", "retrieval", "--checkpoint", "/nonexistent"],
     ["/nonexistent: --checkpoint: checkpoint not found"]),
    (["test", "--model", "copa", "--task", "vqa", "--checkpoint", "."], ["--checkpoint: is a directory"]),
    (["train", "--model", "copa", "--task", "vqa", "--checkpoint", "/nonexistent"],
     ["/nonexistent: --checkpoint: checkpoint not found"]),
    (["train", "--model", "copa", "--task", "pretrain", "--vision-init", "/nonexistent/vit.pth"],
     ["/nonexistent/vit.pth: --vision-init: no such file"]),
], ids=["test-missing", "test-directory", "train-missing", "train-vision-init"])
def test_a_missing_checkpoint_fails_before_any_data_is_generated(capsys, tmp_path, monkeypatch, argv, needles):
    monkeypatch.chdir(tmp_path)  # the default data/tiny, work_dirs/ and results would appear here
    _one_line(capsys, argv + ["--device", "cpu"], *needles)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("args", "line"), [
    ((1, 10, 30.0, 1), "[1/10 0:30, ~4:30 left]"),  # 30 s a job, 9 to go
    ((4, 10, 60.0, 2), "[4/10 1:00, ~3:00 left]"),  # two skipped: 30 s per job that ran, 6 to go
    ((3, 10, 0.4, 0), "[3/10 0:00, ? left]"),  # all skipped so far: nothing to estimate from
    ((10, 10, 3725.0, 10), "[10/10 1:02:05]"),  # the last one: no time left shown
    ((1, 3, 3600.0, 1), "[1/3 1:00:00, ~2:00:00 left]"),
])
def test_progress_line(args, line):
    assert _progress(*args) == line

"""The results store: schema validation, atomic concurrent appends, crash-truncated lines, provenance."""

from __future__ import annotations

import json
import multiprocessing as mp
import re
import warnings
from types import SimpleNamespace

import pytest

from harness import results
from harness.errors import InputError
from harness.results import (
    ROW_KEYS,
    StoreWarning,
    append_rows,
    completed_jobs,
    efficiency_rows,
    job_hash,
    latest,
    make_row,
    read_rows,
    validate_row,
)

PROV = {
    "git_commit": "0" * 40,
    "git_dirty": False,
    "versions": {k: "1.0" for k in results.VERSION_KEYS},
    "machine": {"cpu": "test cpu", "threads": 2},
}


def row(**overrides) -> dict:
    """A valid row without touching git or torch."""
    fields = dict(suite="s", model="copa", task="retrieval", metric="r_mean", value=50.0, seed=0, scale="tiny",
                  job_hash="j0", data_hash="d0", prov=PROV)
    fields.update(overrides)
    return make_row(**fields)


def _append_worker(store: str, worker: int, start, count: int) -> None:
    start.wait()
    for i in range(count):
        # mostly single rows, now and then a few at once: both paths must stay whole
        batch = [row(model=f"m{worker}", seed=i, job_hash=f"w{worker}-{i}", value=float(i))]
        if i % 20 == 0:
            batch.append(row(model=f"m{worker}", seed=i, metric="extra", job_hash=f"w{worker}-{i}", value=1.0))
        append_rows(store, batch)


def test_two_processes_append_concurrently_without_losing_or_interleaving(tmp_path):
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_append_worker, args=(str(tmp_path), w, start, 200)) for w in range(2)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(timeout=600)  # generous: CI machines are shared and slow under load
        assert p.exitcode == 0
    lines = (tmp_path / "rows.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b""
    parsed = [json.loads(line) for line in lines[:-1]]  # every line is valid JSON on its own
    assert len(parsed) == 2 * (200 + 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = read_rows(tmp_path)
    main = [r for r in rows if r["metric"] == "r_mean"]
    assert len(main) == 400
    for w in range(2):
        assert sorted(r["seed"] for r in main if r["model"] == f"m{w}") == list(range(200))


def test_truncated_last_line_is_skipped_with_a_warning_and_the_next_append_is_whole(tmp_path):
    append_rows(tmp_path, [row(seed=s) for s in range(3)])
    text = json.dumps(row(model="tome", seed=0))
    with open(tmp_path / "rows.jsonl", "a") as f:
        f.write(text[: len(text) // 2])  # a crash mid-line
    with pytest.warns(StoreWarning, match=r"rows\.jsonl:4: skipped a line that is not valid JSON"):
        rows = read_rows(tmp_path)
    assert len(rows) == 3 and all(r["model"] == "copa" for r in rows)
    append_rows(tmp_path, [row(model="vilt")])
    with pytest.warns(StoreWarning, match=r"rows\.jsonl:4:"):
        rows = read_rows(tmp_path)
    assert [r["model"] for r in rows] == ["copa", "copa", "copa", "vilt"]


def test_a_row_that_breaks_the_schema_is_warned_about_and_skipped(tmp_path):
    good = row()
    bad = dict(good, seed="zero")
    (tmp_path / "rows.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n[1, 2]\n")
    with pytest.warns(StoreWarning) as record:
        rows = read_rows(tmp_path)
    assert rows == [good]
    messages = [str(w.message) for w in record]
    assert any("rows.jsonl:2:" in m and "seed" in m for m in messages)
    assert any("rows.jsonl:3:" in m for m in messages)


@pytest.mark.parametrize("damage, field", [
    (lambda r: r.pop("metric"), "metric"),
    (lambda r: r.update(seed="0"), "seed"),
    (lambda r: r.update(seed=True), "seed"),
    (lambda r: r.update(value="50"), "value"),
    (lambda r: r.update(value=float("nan")), "value"),
    (lambda r: r.update(status="failed"), "status"),
    (lambda r: r.update(status="n/a"), "value"),
    (lambda r: r.update(git_dirty="no"), "git_dirty"),
    (lambda r: r.update(created="yesterday"), "created"),
    (lambda r: r.update(created="2024-01-01T00:00:00"), "created"),  # no time zone
    (lambda r: r["versions"].pop("torch"), "versions.torch"),
    (lambda r: r.update(machine={"cpu": "x", "threads": "2"}), "machine.threads"),
    (lambda r: r.update(colour="blue"), "colour"),
])
def test_a_bad_row_is_refused_and_the_store_is_unchanged(tmp_path, damage, field):
    append_rows(tmp_path, [row(seed=s) for s in range(2)])
    before = (tmp_path / "rows.jsonl").read_bytes()
    bad = row(seed=7)
    damage(bad)
    with pytest.raises(InputError) as info:
        append_rows(tmp_path, [row(seed=5), bad])  # the good row of the same call is not written either
    assert info.value.field == f"row 1.{field}"
    assert str(tmp_path / "rows.jsonl") in str(info.value)
    assert (tmp_path / "rows.jsonl").read_bytes() == before


def test_rows_have_exactly_the_schema_keys(tmp_path):
    append_rows(tmp_path, [row(), row(metric="cider", task="caption", value=None, reason="no decoder")])
    lines = (tmp_path / "rows.jsonl").read_text().splitlines()
    for line in lines:
        assert tuple(json.loads(line)) == ROW_KEYS
    na = json.loads(lines[1])
    assert (na["status"], na["value"], na["reason"]) == ("n/a", None, "no decoder")


def test_an_undefined_metric_becomes_an_na_row():
    r = row(value=float("nan"))
    assert (r["status"], r["value"]) == ("n/a", None) and "undefined" in r["reason"]
    validate_row(r)


def test_missing_store_reads_as_empty(tmp_path):
    assert read_rows(tmp_path / "nowhere") == []
    assert completed_jobs(read_rows(tmp_path / "nowhere")) == set()


def test_job_hash_is_canonical():
    a = {"model": "copa", "task": "vqa", "cfg": {"lr": 1e-4, "layers": [4, 8]}, "seed": 0}
    b = {"seed": 0, "cfg": {"layers": [4, 8], "lr": 1e-4}, "task": "vqa", "model": "copa"}
    assert job_hash(a) == job_hash(b)
    assert re.fullmatch(r"[0-9a-f]{16}", job_hash(a))
    assert job_hash(a) != job_hash({**a, "seed": 1})


def test_completed_jobs_and_latest(tmp_path):
    old = row(value=10.0, job_hash="a", created="2024-01-01T00:00:00+00:00")
    new = row(value=20.0, job_hash="b", created="2024-01-02T00:00:00+00:00")
    other_seed = row(value=30.0, seed=1, job_hash="c", created="2023-12-31T00:00:00Z")
    append_rows(tmp_path, [new, old, other_seed])  # file order does not decide, the timestamp does
    assert completed_jobs(read_rows(tmp_path)) == {"a", "b", "c"}
    kept = latest(read_rows(tmp_path))
    assert sorted((r["seed"], r["value"]) for r in kept) == [(0, 20.0), (1, 30.0)]
    append_rows(tmp_path, [row(suite="paper", job_hash="d")])  # a suite resumes from its own rows only
    stored = read_rows(tmp_path)
    assert completed_jobs(stored, suite="s") == {"a", "b", "c"} and completed_jobs(stored, "paper") == {"d"}


def test_efficiency_rows_from_profile_rows():
    fake = [SimpleNamespace(model=m, image_size=size, gmacs=1.0, params_m=2.0, pairs_per_s=3.0, latency_ms=4.0,
                            speedup_flops=1.0, speedup_time=1.1) for m in ("albef", "copa") for size in (64, 96)]
    rows = efficiency_rows(fake, suite="s", scale="tiny", job_hash="j", prov=PROV)
    assert len(rows) == 4 * len(results.EFFICIENCY_METRICS)
    assert {r["variant"] for r in rows} == {"64", "96"} and {r["task"] for r in rows} == {"efficiency"}
    single = efficiency_rows(fake[:1], suite="s", scale="tiny", job_hash="j", prov=PROV)
    assert {r["variant"] for r in single} == {""}
    for r in rows:
        validate_row(r)


def test_provenance_without_git(monkeypatch):
    monkeypatch.setattr(results, "_git", lambda *args: None)
    prov = results.provenance()
    assert prov["git_commit"] == "unknown" and prov["git_dirty"] is True
    assert set(prov["versions"]) == set(results.VERSION_KEYS)
    assert isinstance(prov["machine"]["threads"], int) and prov["machine"]["cpu"]
    validate_row(make_row(suite="s", model="m", task="t", metric="x", value=1.0, seed=0, scale="tiny",
                          job_hash="j", data_hash="", prov=prov))


def test_provenance_in_the_repository():
    prov = results.provenance()
    assert prov["git_commit"] == "unknown" or re.fullmatch(r"[0-9a-f]{40}", prov["git_commit"])
    assert isinstance(prov["git_dirty"], bool)


def test_only_code_changes_make_the_tree_dirty(tmp_path, monkeypatch):
    """A suite appending to the committed store must not mark the next suite's rows as made by dirty code."""
    import subprocess

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       check=True, capture_output=True)

    (tmp_path / "results" / "store").mkdir(parents=True)
    (tmp_path / "results" / "store" / "rows.jsonl").write_text("")
    (tmp_path / "model.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "init")
    monkeypatch.setattr(results, "_REPO_ROOT", tmp_path)
    assert results.provenance()["git_dirty"] is False
    (tmp_path / "results" / "store" / "rows.jsonl").write_text("{}\n")
    (tmp_path / "notes.txt").write_text("untracked")
    assert results.provenance()["git_dirty"] is False
    (tmp_path / "model.py").write_text("x = 2\n")
    assert results.provenance()["git_dirty"] is True


def test_rows_with_a_huge_integer_or_deep_nesting_are_skipped_with_a_warning(tmp_path, capsys):
    """A 400-digit integer (more digits than Python converts) and a row nested 100,000 deep: each line is
    skipped with a warning naming it; the good row is read and `table` still renders the store."""
    from harness.cli import main

    good = row()
    huge = json.dumps(good).replace('"seed": 0', '"seed": ' + "9" * 400)
    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / "rows.jsonl").write_text(json.dumps(good) + "\n" + huge + "\n" + deep + "\n")
    with pytest.warns(StoreWarning) as record:
        rows = read_rows(tmp_path)
    assert rows == [good]
    messages = [str(w.message) for w in record]
    assert any("rows.jsonl:2:" in m for m in messages), messages
    assert any("rows.jsonl:3:" in m for m in messages), messages
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StoreWarning)
        assert main(["table", "--results", str(tmp_path), "--out", str(tmp_path / "tables")]) == 0
    assert any((tmp_path / "tables").iterdir())

"""The store's lock: a filelock sidecar (``rows.jsonl.lock``) that serialises appends across processes, falls back
to a soft lock where the filesystem has no flock (Lustre without ``-o flock``), names the file when it stays held,
and is never created by a reader."""

from __future__ import annotations

import errno
import json
import multiprocessing as mp
import time
import warnings

import pytest

from harness import results
from harness.errors import InputError
from harness.results import append_rows, lock_file, make_row, read_rows, store_lock

ROWS = 60
PROV = {"git_commit": "0" * 40, "git_dirty": False, "versions": {k: "1.0" for k in results.VERSION_KEYS},
        "machine": {"cpu": "test cpu", "threads": 2}}


def row(**overrides) -> dict:
    """A valid row without touching git or torch."""
    fields = dict(suite="s", model="copa", task="retrieval", metric="r_mean", value=50.0, seed=0, scale="tiny",
                  job_hash="j0", data_hash="d0", prov=PROV)
    return make_row(**(fields | overrides))


def _without_flock() -> None:
    """This process's flock fails as on a filesystem without it (ENOSYS)."""
    import fcntl

    def flock(fd, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")

    fcntl.flock = flock
    warnings.simplefilter("ignore")  # filelock's "falling back to SoftFileLock"


def _append_worker(store: str, worker: int, start, count: int, soft: bool) -> None:
    if soft:
        _without_flock()
    start.wait()
    for i in range(count):
        batch = [row(model=f"m{worker}", seed=i, job_hash=f"w{worker}-{i}", value=float(i))]
        if i % 10 == 0:
            batch.append(row(model=f"m{worker}", seed=i, metric="extra", job_hash=f"w{worker}-{i}", value=1.0))
        append_rows(store, batch)


def _hold_lock(store: str, held, seconds: float) -> None:
    with store_lock(store):
        held.set()
        time.sleep(seconds)


def _every_row_once(store) -> None:
    lines = (store / "rows.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b""
    parsed = [json.loads(line) for line in lines[:-1]]  # no line torn or interleaved
    assert len(parsed) == 2 * (ROWS + ROWS // 10)
    main = [r for r in parsed if r["metric"] == "r_mean"]
    for w in range(2):
        assert sorted(r["seed"] for r in main if r["model"] == f"m{w}") == list(range(ROWS))


@pytest.mark.parametrize("soft", [False, True], ids=["flock", "soft-lock-without-flock"])
def test_two_processes_append_every_row_exactly_once(tmp_path, soft):
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_append_worker, args=(str(tmp_path), w, start, ROWS, soft)) for w in range(2)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(timeout=600)
        assert p.exitcode == 0
    _every_row_once(tmp_path)
    assert lock_file(tmp_path) == tmp_path / "rows.jsonl.lock"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(read_rows(tmp_path)) == 2 * (ROWS + ROWS // 10)


def test_an_append_waits_for_the_lock_held_by_another_process(tmp_path):
    ctx = mp.get_context("spawn")
    held = ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path), held, 1.5))
    holder.start()
    try:
        assert held.wait(timeout=120)
        start = time.perf_counter()
        append_rows(tmp_path, [row()])
        assert time.perf_counter() - start > 0.5  # it waited for the holder
    finally:
        holder.join(timeout=60)
    assert len(read_rows(tmp_path)) == 1


def test_a_lock_held_too_long_is_an_input_error_naming_the_lock_file(tmp_path, monkeypatch):
    append_rows(tmp_path, [row()])
    before = (tmp_path / "rows.jsonl").read_bytes()
    ctx = mp.get_context("spawn")
    held = ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path), held, 5.0))
    holder.start()
    try:
        assert held.wait(timeout=120)
        monkeypatch.setattr(results, "STORE_LOCK_TIMEOUT_S", 0.3)
        with pytest.raises(InputError) as info:
            append_rows(tmp_path, [row(seed=1)])
        assert str(tmp_path / "rows.jsonl.lock") in str(info.value) and "stayed locked" in str(info.value)
        assert (tmp_path / "rows.jsonl").read_bytes() == before
    finally:
        holder.join(timeout=60)
    append_rows(tmp_path, [row(seed=1)])  # released: appends again
    assert len(read_rows(tmp_path)) == 2


def test_without_flock_one_process_falls_back_to_a_soft_lock(tmp_path, monkeypatch):
    import fcntl

    def flock(fd, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", flock)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        append_rows(tmp_path, [row()])
        append_rows(tmp_path, [row(seed=1)])
        assert [r["seed"] for r in read_rows(tmp_path)] == [0, 1]


def test_reading_creates_no_file(tmp_path):
    missing = tmp_path / "nowhere" / "store"
    assert read_rows(missing) == []
    assert not (tmp_path / "nowhere").exists()
    store = tmp_path / "store"
    store.mkdir()
    (store / "rows.jsonl").write_text(json.dumps(row()) + "\n")  # a store written without a lock file
    assert len(read_rows(store)) == 1
    assert sorted(p.name for p in store.iterdir()) == ["rows.jsonl"]


def test_a_lock_this_user_cannot_open_is_read_without(tmp_path, monkeypatch):
    append_rows(tmp_path, [row()])

    def refused(lock_path, timeout):
        raise PermissionError(errno.EACCES, "Permission denied", str(lock_path))

    monkeypatch.setattr(results, "_acquire", refused)  # e.g. another user's store on a read-only share
    assert len(read_rows(tmp_path)) == 1

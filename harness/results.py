"""The append-only results store: one JSON line per (suite, model, task, variant, metric, seed) measurement.

Every row carries its own provenance (git commit and dirty flag, library versions, machine, config and
data hashes), so a table or a gate verdict can always be traced back to what produced it. Appends are
one ``os.write`` to an ``O_APPEND`` file under an exclusive lock on a sidecar file (``rows.jsonl.lock``,
:func:`store_lock`): concurrent jobs never lose or interleave rows. A crash can still leave a truncated last
line; readers skip it with a warning.

The lock is ``filelock.FileLock``: ``flock`` on the sidecar, which Linux clients also take on NFS (as a POSIX
lock, held by the server), and where ``flock`` is not supported (``ENOSYS``, e.g. Lustre mounted without
``-o flock``) a soft lock: the sidecar created with ``O_EXCL``, which NFS and Lustre make atomic across
machines. The rows file is opened only once the lock is held and closed (flushed) before it is released, so a
client of a network filesystem appends at the end that the last writer left (close-to-open consistency). The
limits: a filesystem that grants ``flock`` locally but does not share it between machines (Lustre's
``localflock``, NFS mounted ``nolock`` or ``local_lock=flock``) serialises only the jobs of one machine; run
the suites of several machines into a store each there (``copa-bench table`` and ``baseline update`` read
several). A soft lock left by a crashed process is recovered where the filelock installed can tell its owner
is gone; otherwise an append waits ``STORE_LOCK_TIMEOUT_S`` and then says which file to remove.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import math
import os
import platform
import subprocess
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.errors import InputError

DEFAULT_STORE = "results/store"  # the committed store: written only when named (``--results results/store``)
# where user runs write unless told otherwise: $COPA_BENCH_RESULTS, else ./copa-bench-results (user_results_dir)
RESULTS_ENV = "COPA_BENCH_RESULTS"
USER_RESULTS = "copa-bench-results"
ROWS_FILE = "rows.jsonl"
STORE_LOCK_TIMEOUT_S = 120.0  # an append holds the lock for milliseconds: a lock held this long is stale
EFFICIENCY_TASK = "efficiency"
EFFICIENCY_METRICS = ("gmacs", "params_m", "pairs_per_s", "latency_ms", "speedup_flops", "speedup_time")
VERSION_KEYS = ("python", "torch", "mmengine", "transformers", "timm", "fvcore")
KEY_FIELDS = ("suite", "model", "task", "variant", "metric", "seed")
STATUSES = ("ok", "n/a")

# field -> (accepted types, description); ``bool`` is excluded from the numeric fields explicitly below
_STR, _INT, _NUM, _BOOL, _DICT = (str,), (int,), (int, float), (bool,), (dict,)
SCHEMA: dict[str, tuple[tuple[type, ...], str]] = {
    "suite": (_STR, "a string"),
    "model": (_STR, "a string"),
    "task": (_STR, "a string"),
    "variant": (_STR, "a string ('' for the default config)"),
    "seed": (_INT, "an integer"),
    "scale": (_STR, "a string"),
    "metric": (_STR, "a string"),
    "value": (_NUM + (type(None),), "a number or null"),
    "status": (_STR, "'ok' or 'n/a'"),
    "reason": (_STR, "a string"),
    "job_hash": (_STR, "a string"),
    "data_hash": (_STR, "a string"),
    "git_commit": (_STR, "a string"),
    "git_dirty": (_BOOL, "true or false"),
    "versions": (_DICT, "an object"),
    "machine": (_DICT, "an object"),
    "created": (_STR, "an ISO-8601 UTC time"),
    "wall_s": (_NUM, "a number"),
}
ROW_KEYS = tuple(SCHEMA)
# optional fields, written after ROW_KEYS when present: ``samples``, the per-round measurements whose median is the
# value (speed ratios), which the gate tests against the baseline's (a median alone hides the spread)
OPTIONAL_KEYS = ("samples",)
MAX_SAMPLES = 10_000

_REPO_ROOT = Path(__file__).resolve().parents[1]


class StoreWarning(UserWarning):
    """A line of the store that cannot be read (e.g. truncated by a crash): skipped, never fatal."""


# ----------------------------------------------------------------------------------------------- provenance


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(_REPO_ROOT), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def provenance() -> dict:
    """What a row was produced by, so that numbers from different commits or machines are never confused.

    Without git (or outside a repository) the commit is "unknown" and the tree counts as dirty, since
    nothing proves it clean. Untracked files and changes under ``results/`` (the committed store and tables,
    which every suite run appends to) do not make the tree dirty: they are outputs, not what produced them.
    """
    head = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results") if head else None
    versions = {"python": platform.python_version()}
    versions.update({name: _version(name) for name in VERSION_KEYS[1:]})
    from harness.profiling.speed import machine

    info = machine()
    return {
        "git_commit": head.strip() if head else "unknown",
        "git_dirty": True if status is None else bool(status.strip()),
        "versions": versions,
        "machine": {"cpu": str(info["cpu"]), "threads": int(info["threads"])},
    }


def _canonical(obj: Any) -> Any:
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if isinstance(obj, Mapping):
        return dict(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, type) or callable(obj):
        return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
    raise TypeError(f"cannot hash a {type(obj).__name__} in a job config")


def job_hash(config: Mapping) -> str:
    """Identifies a job by its full config, key order ignored, so a resumed suite can skip finished jobs."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=_canonical, ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def utc_now() -> str:
    """Row timestamps: UTC with microseconds, so that a rerun's rows sort after the run they supersede."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


# --------------------------------------------------------------------------------------------------- rows


def _parse_created(value: str) -> _dt.datetime | None:
    try:
        when = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None or when.utcoffset() != _dt.timedelta(0):
        return None
    return when


def _float_sized(value: int | float) -> bool:
    """An int that converts to a float (a 400-digit integer does not: math and formatting would overflow)."""
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _shown(value: Any) -> str:
    """A value for an error line: its repr, cut short (a row may hold anything)."""
    if isinstance(value, (list, dict)):
        return type(value).__name__
    text = repr(value) if not isinstance(value, int) or _float_sized(value) else f"a {len(str(abs(value)))}-digit int"
    return text if len(text) <= 60 else text[:57] + "..."


def validate_row(row: Any, path: str | os.PathLike | None = None, where: str = "row") -> None:
    """Raise InputError naming the first field of ``row`` that breaks the schema (``where`` prefixes it)."""
    if not isinstance(row, Mapping):
        raise InputError(path, where, f"must be an object, got {type(row).__name__}")
    missing = [k for k in ROW_KEYS if k not in row]
    if missing:
        raise InputError(path, f"{where}.{missing[0]}", "missing")
    extra = sorted(k for k in row if k not in SCHEMA and k not in OPTIONAL_KEYS)
    if extra:
        raise InputError(path, f"{where}.{extra[0]}", f"unknown field (expected only {', '.join(ROW_KEYS)}"
                         f" and optionally {', '.join(OPTIONAL_KEYS)})")
    if "samples" in row:
        samples = row["samples"]
        if not isinstance(samples, list) or not 0 < len(samples) <= MAX_SAMPLES or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and _float_sized(x) and math.isfinite(x)
                for x in samples):
            raise InputError(path, f"{where}.samples", f"must be a list of 1 to {MAX_SAMPLES} finite numbers, got "
                             f"{_shown(samples)}")
    for key, (types, what) in SCHEMA.items():
        value = row[key]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            raise InputError(path, f"{where}.{key}", f"must be {what}, got {type(value).__name__} {_shown(value)}")
        if isinstance(value, int) and not isinstance(value, bool) and not _float_sized(value):
            raise InputError(path, f"{where}.{key}", f"must be a number of float size, got a {len(str(abs(value)))}"
                             "-digit integer")
    if row["status"] not in STATUSES:
        raise InputError(path, f"{where}.status", f"must be 'ok' or 'n/a', got {row['status']!r}")
    value = row["value"]
    if row["status"] == "ok":
        if value is None or not math.isfinite(value):
            raise InputError(path, f"{where}.value", f"must be a finite number when status is 'ok', got {value!r} "
                             "(record status 'n/a' with a reason instead)")
        if row["reason"]:
            raise InputError(path, f"{where}.reason", "must be empty when status is 'ok'")
    else:
        if value is not None:
            raise InputError(path, f"{where}.value", f"must be null when status is 'n/a', got {value!r}")
        if not row["reason"]:
            raise InputError(path, f"{where}.reason", "must say why when status is 'n/a'")
    for key in ("suite", "model", "task", "metric", "job_hash"):
        if not row[key]:
            raise InputError(path, f"{where}.{key}", "must not be empty")
    versions = row["versions"]
    for name in VERSION_KEYS:
        if not isinstance(versions.get(name), str):
            raise InputError(path, f"{where}.versions.{name}", "must be a version string")
    for name, value in versions.items():
        if not isinstance(value, str):
            raise InputError(path, f"{where}.versions.{name}", f"must be a version string, got {_shown(value)}")
    machine = row["machine"]
    for name, value in machine.items():
        if not (value is None or isinstance(value, (str, bool)) or isinstance(value, (int, float))
                and _float_sized(value)):
            raise InputError(path, f"{where}.machine.{name}", f"must be a string or a number, got {_shown(value)}")
    if not isinstance(machine.get("cpu"), str):
        raise InputError(path, f"{where}.machine.cpu", "must be a string")
    threads = machine.get("threads")
    if isinstance(threads, bool) or not isinstance(threads, int):
        raise InputError(path, f"{where}.machine.threads", f"must be an integer, got {threads!r}")
    if _parse_created(row["created"]) is None:
        raise InputError(path, f"{where}.created", f"must be an ISO-8601 UTC time, got {row['created']!r}")
    if not math.isfinite(row["wall_s"]) or row["wall_s"] < 0:
        raise InputError(path, f"{where}.wall_s", f"must be a finite number >= 0, got {row['wall_s']!r}")


def make_row(*, suite: str, model: str, task: str, metric: str, value: float | None, seed: int, scale: str,
             job_hash: str, data_hash: str, variant: str = "", reason: str = "", wall_s: float = 0.0,
             prov: Mapping | None = None, created: str | None = None) -> dict:
    """One schema row; a missing or NaN value becomes an 'n/a' row (an undefined metric is not a number)."""
    prov = provenance() if prov is None else prov
    if value is not None and not math.isfinite(float(value)):
        value, reason = None, reason or f"undefined ({value})"
    status = "ok" if value is not None else "n/a"
    if status == "n/a" and not reason:
        reason = "not measured"
    return {
        "suite": suite, "model": model, "task": task, "variant": variant, "seed": int(seed), "scale": scale,
        "metric": metric, "value": None if value is None else float(value), "status": status,
        "reason": reason if status == "n/a" else "", "job_hash": job_hash, "data_hash": data_hash,
        "git_commit": prov["git_commit"], "git_dirty": bool(prov["git_dirty"]), "versions": dict(prov["versions"]),
        "machine": dict(prov["machine"]), "created": created or utc_now(), "wall_s": float(wall_s),
    }


def metric_rows(metrics: Mapping[str, float | None], **common: Any) -> list[dict]:
    """Rows for every metric of one job (same job_hash, same timestamp); see :func:`make_row`."""
    if common.get("prov") is None:
        common["prov"] = provenance()
    if common.get("created") is None:
        common["created"] = utc_now()
    return [make_row(metric=name, value=value, **common) for name, value in metrics.items()]


# per task phase (``harness.profiling.efficiency.TaskCostRow``): stored as metric "<task>.<phase>.<quantity>"
TASK_COST_METRICS = ("gmacs", "gmacs_step", "samples_per_s", "achieved_tflops", "speedup_macs", "speedup_time")
# the pair phase's row also fills the pair table's metrics (main table, gate): name in the store -> row field
PAIR_METRICS = {"gmacs": "gmacs", "params_m": "params_m", "pairs_per_s": "samples_per_s",
                "speedup_flops": "speedup_macs", "speedup_time": "speedup_time"}


def task_cost_metric(task: str, phase: str, quantity: str) -> str:
    """The store's metric name of one quantity of a task phase, e.g. ``pretrain.train.speedup_time``."""
    return f"{task}.{phase}.{quantity}"


def _efficiency_samples(r: Any) -> dict[str, list[float]]:
    """The per-round speed-ratio samples of a profile row, by the store's metric name (none when not measured)."""
    samples = getattr(r, "speedup_time_samples", None)
    if not samples:
        return {}
    if not hasattr(r, "phase"):
        return {"speedup_time": list(samples)}
    names = [task_cost_metric(r.task, r.phase, "speedup_time")] + (["speedup_time"] if (r.task, r.phase) == (
        "pair", "infer") else [])
    return {name: list(samples) for name in names}


def _efficiency_metrics(r: Any) -> dict[str, float | None]:
    if not hasattr(r, "phase"):  # a pair-table row (ProfileRow)
        return {name: getattr(r, name) for name in EFFICIENCY_METRICS}
    metrics = {task_cost_metric(r.task, r.phase, q): getattr(r, q) for q in TASK_COST_METRICS}
    if (r.task, r.phase) == ("pair", "infer"):
        metrics |= {name: getattr(r, key) for name, key in PAIR_METRICS.items()}
    return metrics


def efficiency_rows(profile_rows: Sequence[Any], *, suite: str, scale: str, seed: int = 0, job_hash: str,
                    data_hash: str = "", size_variants: bool | None = None, wall_s: float = 0.0,
                    prov: Mapping | None = None) -> list[dict]:
    """Store rows (task "efficiency") from ``harness.profiling.efficiency.ProfileRow``s (metrics
    ``EFFICIENCY_METRICS``) or ``TaskCostRow``s (``<task>.<phase>.<quantity>`` for ``TASK_COST_METRICS``; the
    pair phase also as the pair table's ``gmacs``, ``params_m``, ``pairs_per_s``, ``speedup_flops`` and
    ``speedup_time``). A speedup that was not measured (no reference row) is an 'n/a' row.

    The variant is the image size when the rows span several sizes (or ``size_variants`` is set), else "".
    """
    sizes = {r.image_size for r in profile_rows}
    by_size = len(sizes) > 1 if size_variants is None else size_variants
    prov = provenance() if prov is None else prov
    created = utc_now()
    rows = []
    for r in profile_rows:
        metrics, samples = _efficiency_metrics(r), _efficiency_samples(r)
        new = metric_rows(metrics, suite=suite, model=r.model, task=EFFICIENCY_TASK, seed=seed, scale=scale,
                          job_hash=job_hash, data_hash=data_hash, variant=str(r.image_size) if by_size else "",
                          wall_s=wall_s, prov=prov, created=created)
        for row in new:
            if row["status"] == "ok" and samples.get(row["metric"]):
                row["samples"] = [float(x) for x in samples[row["metric"]][:MAX_SAMPLES]]
        rows += new
    return rows


# -------------------------------------------------------------------------------------------------- store


def store_file(store_dir: str | os.PathLike) -> Path:
    """The rows file of a store; a path to a ``.jsonl`` file is taken as the file itself."""
    path = Path(store_dir)
    return path if path.suffix == ".jsonl" else path / ROWS_FILE


def user_results_dir() -> Path:
    """Where user runs write unless told otherwise: ``$COPA_BENCH_RESULTS``, else ``./copa-bench-results``
    (its ``store``, ``tables`` and ``baseline.json``). The committed ``results/`` changes only when named."""
    return Path(os.environ.get(RESULTS_ENV) or USER_RESULTS)


def lock_file(store_dir: str | os.PathLike) -> Path:
    """The sidecar lock of a store's rows file: ``rows.jsonl.lock`` beside it."""
    path = store_file(store_dir)
    return path.with_name(path.name + ".lock")


def _acquire(lock_path: Path, timeout: float):
    """A held ``filelock`` lock on ``lock_path``: ``FileLock`` (flock), or a soft lock where the filesystem has no
    flock (a filelock that does not fall back by itself raises NotImplementedError or ENOSYS there)."""
    import filelock

    try:
        lock = filelock.FileLock(str(lock_path), timeout=timeout)
        lock.acquire()
    except filelock.Timeout:
        raise
    except (NotImplementedError, OSError) as e:
        if isinstance(e, OSError) and e.errno != errno.ENOSYS:
            raise
        lock = filelock.SoftFileLock(str(lock_path), timeout=timeout)
        lock.acquire()
    return lock


@contextlib.contextmanager
def store_lock(store_dir: str | os.PathLike, timeout: float | None = None):
    """Hold the store's exclusive lock (module docstring: what it guarantees, and where). A lock not acquired
    within ``timeout`` seconds (default ``STORE_LOCK_TIMEOUT_S``) is an InputError naming the lock file."""
    import filelock

    lock_path = lock_file(store_dir)
    timeout = STORE_LOCK_TIMEOUT_S if timeout is None else timeout
    try:
        lock = _acquire(lock_path, timeout)
    except filelock.Timeout:
        raise InputError(lock_path, None, f"the results store stayed locked for {timeout:g}s: another copa-bench "
                         "is writing it, or a crashed one left this lock (remove the file if none is running)"
                         ) from None
    try:
        yield
    finally:
        lock.release()


def append_rows(store_dir: str | os.PathLike, rows: Iterable[Mapping]) -> int:
    """Append rows atomically: all validated first (nothing written on a bad row), then one write under the
    store's lock (:func:`store_lock`), the file opened after the lock is taken and closed before it is released.

    A last line left without its newline by a crash is terminated first, so it cannot swallow a new row.
    Returns the number of rows written.
    """
    rows = list(rows)
    path = store_file(store_dir)
    for i, row in enumerate(rows):
        validate_row(row, path, f"row {i}")
    if not rows:
        return 0
    ordered = [{k: (float(row[k]) if k in ("value", "wall_s") and row[k] is not None else row[k])
                for k in ROW_KEYS + OPTIONAL_KEYS if k in row} for row in rows]
    payload = "".join(json.dumps(row, allow_nan=False, ensure_ascii=False) + "\n" for row in ordered).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    with store_lock(path):
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                payload = b"\n" + payload
            view = memoryview(payload)
            while view:  # a regular file takes it in one write; loop only for safety
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    return len(rows)


def _read_locked(path: Path) -> bytes:
    """The rows file's bytes, read under the store's lock when it has one (a writer of this copa-bench made
    it). Reading never creates a file: a store without a lock file, or whose lock this user cannot open (a
    read-only share), is read as it is; a partly written last line is then skipped with a warning."""
    import filelock

    lock = None
    if lock_file(path).is_file():
        try:
            lock = _acquire(lock_file(path), STORE_LOCK_TIMEOUT_S)
        except filelock.Timeout:
            warnings.warn(f"{lock_file(path)}: held for {STORE_LOCK_TIMEOUT_S:g}s, read the store without it",
                          StoreWarning, stacklevel=3)
        except OSError:  # PermissionError, a read-only filesystem
            pass
    try:
        with open(path, "rb") as f:
            return f.read()
    finally:
        if lock is not None:
            lock.release()


def read_rows(store_dir: str | os.PathLike) -> list[dict]:
    """All valid rows in file order; unreadable lines are skipped with a StoreWarning naming file and line."""
    path = store_file(store_dir)
    try:
        data = _read_locked(path)
    except FileNotFoundError:
        return []
    except IsADirectoryError:
        raise InputError(path, None, "is a directory, expected the store's rows file") from None
    except NotADirectoryError:
        raise InputError(store_dir, None, "is a file, expected a results store directory") from None
    rows = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8", errors="replace"))
        except json.JSONDecodeError as e:
            warnings.warn(f"{path}:{number}: skipped a line that is not valid JSON ({e.msg}; truncated?)",
                          StoreWarning, stacklevel=2)
            continue
        except (RecursionError, ValueError, OverflowError, MemoryError) as e:  # nested too deep, huge numbers
            what = "nested too deeply" if isinstance(e, RecursionError) else f"{type(e).__name__}: {str(e)[:80]}"
            warnings.warn(f"{path}:{number}: skipped a line that cannot be read ({what})", StoreWarning, stacklevel=2)
            continue
        try:
            validate_row(row, None, "row")
        except (InputError, RecursionError, ValueError, OverflowError, TypeError) as e:
            warnings.warn(f"{path}:{number}: skipped a row that breaks the schema ({e})", StoreWarning, stacklevel=2)
            continue
        rows.append(row)
    return rows


def completed_jobs(rows: Iterable[Mapping], suite: str | None = None) -> set[str]:
    """Jobs with rows among a store's ``rows`` (of ``suite`` only, when given); a resumed suite skips them (a job
    appends its rows in one call). Per suite, because a suite's tables read its own rows: the same job done for
    another suite (a chance floor, a shared pre-training) must still leave rows under this one."""
    return {row["job_hash"] for row in rows if suite is None or row["suite"] == suite}


def row_key(row: Mapping) -> tuple:
    """What a rerun supersedes: (suite, model, task, variant, metric, seed)."""
    return tuple(row[k] for k in KEY_FIELDS)


def created_at(row: Mapping) -> _dt.datetime:
    """When a row was written (rows of another or no timezone sort first)."""
    return _parse_created(row["created"]) or _dt.datetime.min.replace(tzinfo=_dt.timezone.utc)


def latest(rows: Iterable[Mapping]) -> list[dict]:
    """The newest row per (suite, model, task, variant, metric, seed); a rerun supersedes, never averages."""
    best: dict[tuple, tuple[_dt.datetime, int, Mapping]] = {}
    for i, row in enumerate(rows):
        when = created_at(row)
        key = row_key(row)
        if key not in best or (when, i) >= best[key][:2]:
            best[key] = (when, i, row)
    return [dict(row) for _, _, row in sorted(best.values(), key=lambda item: item[1])]


# ------------------------------------------------------------------------------------------ atomic output


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write through a temporary file in the same directory renamed into place: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)

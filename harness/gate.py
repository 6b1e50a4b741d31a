"""The regression gate: compare the store's latest results with a committed baseline, for CI.

Rules per baseline entry (model, task, variant, metric), values averaged over seeds:

- accuracy: may rise freely; a drop beyond the tolerance fails (absolute, in the metric's own units). The
  tolerance comes from the measured run-to-run spread when the baseline has one (``baseline update`` over several
  stores or seeds records per entry the runs' ``std`` and ``n``): ``max(k * std * sqrt(1/m + 1/n), floor)``, k
  standard errors of the difference between the baseline's mean of n runs and the checked mean of m runs; the
  floor (and the whole tolerance without a spread: one run, an old baseline) is the fixed ``tolerances.accuracy``
  or its ``per_metric`` override (``baseline update`` writes 0.02 for metrics reported in [0, 1]);
- flops (``gmacs``, ``params_m``, ``speedup_flops``): deterministic, so equal to 1e-9 relative;
- speed_ratio (``speedup_time``, a ratio to the reference model timed in the same process): with per-round ratio
  samples on both sides (the profiler's rounds, kept in the store's ``samples`` and the baseline entry's), fails
  when a one-sided Mann-Whitney U test finds the new ratios lower (p < ``alpha``) *and* the median fell by more
  than ``min_effect`` (as asv compares benchmark samples); without samples, or too few for the test to reach
  ``alpha``, the fixed fallback ``now < baseline * (1 - tolerances.speed_ratio)``;
- info (absolute ``pairs_per_s``, ``latency_ms``): reported, never gates (machines differ);
- an entry with no result fails as "missing" (info entries excepted).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.errors import InputError
from harness.results import DEFAULT_STORE, EFFICIENCY_TASK, latest, read_rows, store_file, utc_now, write_atomic

DEFAULT_BASELINE = "results/baseline.json"
DEFAULT_TOLERANCES = {"accuracy": 2.0, "speed_ratio": 0.15}
# the evidence rules' parameters (tolerances.k, .alpha, .min_effect): 3 standard errors; a 1% false-alarm rate per
# speed check and at least a 10% slowdown (a 15% slower forward moves a ratio by 13%; the smoke's rounds move
# medians by a few %)
EVIDENCE_DEFAULTS = {"k": 3.0, "alpha": 0.01, "min_effect": 0.10}
BASELINE_FORMAT = 2
EVIDENCE_BOUNDS = {"k": (0.0, math.inf, "a number >= 0 (standard errors)"),
                   "alpha": (1e-12, 1.0, "a probability in (0, 1)"),
                   "min_effect": (0.0, 1.0, "a fraction in [0, 1)")}
ACCURACY_RULE = ("tolerance = max(k * std * sqrt(1/m + 1/n), floor): std the sample standard deviation of the "
                 "entry's n baseline runs (a run: one seed of one store given to `baseline update`), m the runs "
                 "averaged in the checked result, floor tolerances.accuracy or its per_metric override; without a "
                 "measured spread (n < 2) the floor alone")
SPEED_RULE = ("one-sided Mann-Whitney U test of the checked run's per-round speed-ratio samples against the "
              "baseline entry's (pooled over its runs): fails when p < alpha and the median ratio fell by more "
              "than min_effect; without samples on either side, or too few for p to reach alpha, fails when "
              "now < baseline x (1 - tolerances.speed_ratio)")
FLOP_RELATIVE = 1e-9
KINDS = ("accuracy", "flops", "speed_ratio", "info")
FLOP_METRICS = frozenset({"gmacs", "params_m", "speedup_flops"})
SPEED_RATIO_METRICS = frozenset({"speedup_time"})
INFO_METRICS = frozenset({"pairs_per_s", "latency_ms"})
ENTRY_KEYS = ("model", "task", "variant", "metric", "value", "kind")

Key = tuple[str, str, str, str]


def metric_kind(task: str, metric: str) -> str:
    """Which rule gates a metric. Of a task's metrics only those its declaration gates (its headline and
    ``gated``: pre-training's ITC R@1 and patch AUC, grounding's mIoU; harness/taskspec.py) are gated as accuracy;
    the others (single recalls, per-answer-type VQA accuracy, BLEU-4, patch precision/recall) are reported: on a
    smoke suite's small test sets they move by several points from run to run (docs/reproducibility.md). A task
    without a declaration is an InputError."""
    if metric in FLOP_METRICS:
        return "flops"
    if metric in SPEED_RATIO_METRICS:
        return "speed_ratio"
    if metric in INFO_METRICS or task == EFFICIENCY_TASK:
        return "info"
    from harness.taskspec import task_spec

    return "accuracy" if metric in task_spec(task, flag="task").gated_metrics else "info"


@dataclass
class Result:
    """One key's latest rows: the 'ok' values (one per seed), the reason when all are n/a, and the per-round
    samples pooled over the rows that carry them (speed ratios)."""

    values: list[float]
    reason: str = ""
    samples: list[float] | None = None

    @property
    def value(self) -> float | None:
        return sum(self.values) / len(self.values) if self.values else None


def collect(rows: Iterable[Mapping], suite: str | None = None) -> dict[Key, Result]:
    """Per key, the latest rows of ``suite`` (every suite when None) as a :class:`Result`."""
    groups: dict[Key, list[Mapping]] = {}
    for row in latest(rows):
        if suite is None or row["suite"] == suite:
            groups.setdefault((row["model"], row["task"], row["variant"], row["metric"]), []).append(row)
    out = {}
    for key, group in groups.items():
        ok = [r for r in group if r["status"] == "ok"]
        samples = [float(x) for r in ok for x in r.get("samples", ())]
        out[key] = Result([r["value"] for r in ok], "" if ok else group[0]["reason"], samples or None)
    return out


def aggregate(rows: Iterable[Mapping], suite: str | None = None) -> dict[Key, tuple[float | None, str]]:
    """(value, reason) per key: the mean over seeds of the latest 'ok' rows; (None, reason) when all are n/a."""
    return {key: (r.value, r.reason) for key, r in collect(rows, suite).items()}


def _pick_suite(rows: list[dict], suite: str | None, where: str | os.PathLike) -> str:
    suites = sorted({r["suite"] for r in rows})
    if suite is None:
        if len(suites) > 1:
            raise InputError(where, "--suite", f"the store holds several suites ({', '.join(suites)}); choose one")
        return suites[0]
    if suite not in suites:
        raise InputError(where, "--suite", f"no rows of suite {suite!r} (the store holds {', '.join(suites)})")
    return suite


# ------------------------------------------------------------------------------------------------ baseline


def _stdev(values: list[float]) -> float | None:
    """The sample standard deviation (n - 1), None below two values."""
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def make_baseline(store_dir: str | os.PathLike | Sequence[str | os.PathLike] = DEFAULT_STORE,
                  suite: str | None = None, tolerances: Mapping | None = None,
                  overrides: Mapping | None = None) -> dict:
    """A baseline from the latest rows of one suite in one or several stores (each a rerun of the suite).

    Every (store, seed) is one run: an entry's value is the mean over the runs, and with two or more its ``std``
    and ``n`` are the measured run-to-run spread that the accuracy tolerance is made from (``ACCURACY_RULE``);
    a speed ratio also keeps its per-round ``samples`` pooled over the runs, for the check's Mann-Whitney test.
    Default tolerances (the fixed floors) add a 0.02 override for each gated metric that its task declares a
    fraction in [0, 1] (2 points of 100); missing evidence parameters take ``EVIDENCE_DEFAULTS``, and
    ``overrides`` win over both.
    """
    from harness.taskspec import task_spec

    stores = [store_dir] if isinstance(store_dir, (str, os.PathLike)) else list(store_dir)
    if not stores:
        raise InputError(None, "--results", "no results store given")
    per_store = []
    for store in stores:
        rows = read_rows(store)
        if not rows:
            raise InputError(store_file(store), None, "no results in the store to make a baseline from")
        per_store.append((store, rows))
    if suite is None:
        suite = _pick_suite([r for _, rows in per_store for r in rows], None, store_file(stores[0]))
    used_by_store = []
    for store, rows in per_store:
        used_by_store.append([r for r in latest(rows) if r["suite"] == _pick_suite(rows, suite, store_file(store))])
    used = [r for rows in used_by_store for r in rows]
    runs: dict[Key, list[float]] = {}
    samples: dict[Key, list[float]] = {}
    reasons: dict[Key, str] = {}
    run_ids = []
    for i, rows in enumerate(used_by_store):
        by_seed: dict[int, list[Mapping]] = {}
        for r in rows:
            by_seed.setdefault(r["seed"], []).append(r)
        for seed, seed_rows in sorted(by_seed.items()):
            run_ids.append({"store": str(stores[i]), "seed": seed,
                            "git_commits": sorted({r["git_commit"] for r in seed_rows}),
                            "machines": sorted({str(r["machine"].get("cpu")) for r in seed_rows})})
            for key, result in collect(seed_rows).items():
                runs.setdefault(key, [])
                reasons.setdefault(key, result.reason)
                if result.values:
                    runs[key].append(result.value)
                if result.samples:
                    samples.setdefault(key, []).extend(result.samples)
    entries = []
    for key in sorted(runs):
        (m, t, v, k), values = key, runs[key]
        entry = {"model": m, "task": t, "variant": v, "metric": k,
                 "value": sum(values) / len(values) if values else None, "kind": metric_kind(t, k)}
        if entry["kind"] in ("accuracy", "speed_ratio") and values:
            std = _stdev(values)
            entry |= {"n": len(values), "std": std}
        if entry["kind"] == "speed_ratio" and key in samples:
            entry["samples"] = samples[key]
        entries.append(entry)
    if tolerances is None:
        fractions = sorted({e["metric"] for e in entries if e["kind"] == "accuracy"
                            and e["metric"] in task_spec(e["task"], flag="task").fractions})
        tolerances = {**DEFAULT_TOLERANCES, "per_metric": {m: DEFAULT_TOLERANCES["accuracy"] / 100 for m in fractions}}
    tolerances = {**DEFAULT_TOLERANCES, **EVIDENCE_DEFAULTS, **tolerances, **(overrides or {})}
    newest = max(used, key=lambda r: r["created"])
    spread = [e["n"] for e in entries if e["kind"] == "accuracy" and e.get("n")]
    return {
        "format": BASELINE_FORMAT,
        "created": utc_now(),
        "suite": suite,
        "provenance": {
            "suite": suite,
            "stores": [str(s) for s in stores],
            "scales": sorted({r["scale"] for r in used}),
            "git_commits": sorted({r["git_commit"] for r in used}),
            "git_dirty": any(r["git_dirty"] for r in used),
            "versions": newest["versions"],
            "machines": sorted({f"{r['machine']['cpu']}, {r['machine']['threads']} threads" for r in used}),
            "seeds": sorted({r["seed"] for r in used}),
            "rows": len(used),
        },
        "measurement": {
            "runs": run_ids,
            "how": f"{len(run_ids)} runs ({len(stores)} store(s) x their seeds); accuracy entries hold the runs' "
                   f"mean, std and n (n = {min(spread, default=0)}..{max(spread, default=0)}), speed ratios also "
                   "their per-round samples",
            "accuracy_rule": ACCURACY_RULE,
            "speed_rule": SPEED_RULE,
        },
        "tolerances": dict(tolerances),
        "entries": entries,
    }


def update_baseline(store_dir: str | os.PathLike | Sequence[str | os.PathLike] = DEFAULT_STORE,
                    out: str | os.PathLike = DEFAULT_BASELINE, suite: str | None = None,
                    overrides: Mapping | None = None) -> dict:
    """Rewrite the baseline file atomically from one or several stores; an existing file's tolerances (hand-tuned
    floors and evidence parameters) are kept, ``overrides`` (e.g. ``{"k": 4}``) win over both."""
    tolerances = None
    if Path(out).exists():
        try:
            tolerances = load_baseline(out)["tolerances"]
        except InputError:
            tolerances = None  # an unreadable old baseline is simply replaced
    baseline = make_baseline(store_dir, suite, tolerances, overrides)
    write_atomic(out, json.dumps(baseline, indent=2) + "\n")
    return baseline


def _number(value, allow_none: bool = False) -> bool:
    if value is None:
        return allow_none
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def load_baseline(path: str | os.PathLike) -> dict:
    """Read and validate a baseline file; anything malformed is an InputError naming the field."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except RecursionError:
        raise InputError(path, None, "not valid JSON (nested too deeply)") from None
    except NotADirectoryError:
        raise InputError(path, None, "no such baseline file (a part of its path is a file)") from None
    except FileNotFoundError:
        raise InputError(path, None, "no such baseline file (make one with `copa-bench baseline update`)") from None
    except IsADirectoryError:
        raise InputError(path, None, "is a directory, expected a baseline JSON file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(path, None, f"not valid JSON ({e})") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise InputError(path, None, f"not valid JSON ({str(e)[:100]})") from None
    if not isinstance(data, dict):
        raise InputError(path, None, "must be a JSON object")
    tolerances = data.get("tolerances")
    if not isinstance(tolerances, dict):
        raise InputError(path, "tolerances", "must be an object like {\"accuracy\": 2.0, \"speed_ratio\": 0.15}")
    for key in DEFAULT_TOLERANCES:
        if key in tolerances and not (_number(tolerances[key]) and tolerances[key] >= 0):
            raise InputError(path, f"tolerances.{key}", f"must be a number >= 0, got {tolerances[key]!r}")
    if "speed_ratio" in tolerances and tolerances["speed_ratio"] >= 1:
        raise InputError(path, "tolerances.speed_ratio", "must be below 1 (a fraction of the baseline ratio)")
    for key, (low, high, what) in EVIDENCE_BOUNDS.items():
        if key in tolerances and not (_number(tolerances[key]) and low <= tolerances[key] < high):
            raise InputError(path, f"tolerances.{key}", f"must be {what}, got {tolerances[key]!r}")
    if "format" in data and (not isinstance(data["format"], int) or isinstance(data["format"], bool)
                             or not 1 <= data["format"] <= BASELINE_FORMAT):
        raise InputError(path, "format", f"must be an integer 1..{BASELINE_FORMAT} (this copa-bench reads up to "
                         f"{BASELINE_FORMAT}), got {data['format']!r}")
    per_metric = tolerances.get("per_metric", {})
    if not isinstance(per_metric, dict):
        raise InputError(path, "tolerances.per_metric", "must be an object {metric or task/metric: tolerance}")
    for name, value in per_metric.items():
        if not (_number(value) and value >= 0):
            raise InputError(path, f"tolerances.per_metric.{name}", f"must be a number >= 0, got {value!r}")
    if "suite" in data and not isinstance(data["suite"], str):
        raise InputError(path, "suite", "must be a string")
    entries = data.get("entries")
    if not isinstance(entries, list):
        raise InputError(path, "entries", "must be a list")
    seen = set()
    for i, entry in enumerate(entries):
        where = f"entries[{i}]"
        if not isinstance(entry, dict):
            raise InputError(path, where, "must be an object")
        for key in ENTRY_KEYS:
            if key not in entry:
                raise InputError(path, f"{where}.{key}", "missing")
        for key in ("model", "task", "variant", "metric"):
            if not isinstance(entry[key], str):
                raise InputError(path, f"{where}.{key}", f"must be a string, got {entry[key]!r}")
        if entry["kind"] not in KINDS:
            raise InputError(path, f"{where}.kind", f"must be one of {', '.join(KINDS)}, got {entry['kind']!r}")
        if not _number(entry["value"], allow_none=True):
            raise InputError(path, f"{where}.value", f"must be a finite number or null, got {entry['value']!r}")
        if entry["kind"] == "speed_ratio" and entry["value"] is not None and not entry["value"] > 0:
            raise InputError(path, f"{where}.value", f"a speed ratio must be > 0, got {entry['value']!r}")
        if "tolerance" in entry and not (_number(entry["tolerance"]) and entry["tolerance"] >= 0):
            raise InputError(path, f"{where}.tolerance", f"must be a number >= 0, got {entry['tolerance']!r}")
        if "std" in entry and not (_number(entry["std"], allow_none=True) and (entry["std"] or 0) >= 0):
            raise InputError(path, f"{where}.std", f"must be a number >= 0 or null, got {entry['std']!r}")
        if "n" in entry and (not isinstance(entry["n"], int) or isinstance(entry["n"], bool) or entry["n"] < 1
                             or entry["n"] > 10**6):
            raise InputError(path, f"{where}.n", f"must be a positive integer (runs measured), got {entry['n']!r}")
        if "samples" in entry:
            samples = entry["samples"]
            if not isinstance(samples, list) or not samples or len(samples) > 10**6 or not all(
                    _number(x) and x > 0 for x in samples):
                raise InputError(path, f"{where}.samples", "must be a non-empty list of positive finite numbers "
                                 "(per-round speed ratios)")
        key = (entry["model"], entry["task"], entry["variant"], entry["metric"])
        if key in seen:
            raise InputError(path, where, f"duplicate entry for {'/'.join(key)}")
        seen.add(key)
    return data


# --------------------------------------------------------------------------------------------------- check


@dataclass
class Check:
    """One baseline entry judged against the results (``tolerance``: the accuracy drop or speed fraction allowed;
    ``p_value``: the speed test's, when it ran)."""

    model: str
    task: str
    variant: str
    metric: str
    kind: str
    baseline: float | None
    now: float | None
    rule: str
    passed: bool
    why: str = ""
    tolerance: float | None = None
    p_value: float | None = None


def _tolerance(entry: Mapping, tolerances: Mapping) -> float:
    """The fixed tolerance: the entry's hand-set one, a per-metric override, or the kind's."""
    if "tolerance" in entry:
        return float(entry["tolerance"])
    per_metric = tolerances.get("per_metric", {})
    for name in (f"{entry['task']}/{entry['metric']}", entry["metric"]):
        if name in per_metric:
            return float(per_metric[name])
    return float(tolerances.get(entry["kind"], DEFAULT_TOLERANCES.get(entry["kind"], 0.0)))


def _param(tolerances: Mapping, name: str) -> float:
    return float(tolerances.get(name, EVIDENCE_DEFAULTS[name]))


def accuracy_tolerance(entry: Mapping, m: int, tolerances: Mapping) -> tuple[float, str]:
    """(allowed drop, rule) for a result averaged over ``m`` runs: ``ACCURACY_RULE`` (a hand-set entry tolerance
    wins; without a measured spread, the floor)."""
    floor = _tolerance(entry, tolerances)
    std, n = entry.get("std"), entry.get("n", 0)
    if "tolerance" in entry or std is None or n < 2:
        return floor, f"drop <= {floor:g}" + ("" if "tolerance" in entry else " (fixed: no measured spread)")
    k = _param(tolerances, "k")
    spread = k * std * math.sqrt(1 / max(m, 1) + 1 / n)
    tol = max(spread, floor)
    return tol, f"drop <= {tol:.4g} = max({k:g} x std {std:.3g} x sqrt(1/{m} + 1/{n}), floor {floor:g})"


def mann_whitney_less(now: Sequence[float], base: Sequence[float]) -> float:
    """One-sided p-value that ``now`` tends to be smaller than ``base`` (scipy's Mann-Whitney U: exact for small
    samples without ties, else the normal approximation with tie and continuity corrections)."""
    from scipy.stats import mannwhitneyu

    p = float(mannwhitneyu(now, base, alternative="less", method="auto").pvalue)
    return p if math.isfinite(p) else 1.0  # no variation at all (every ratio tied): no evidence of a change


def min_p_value(a: int, b: int) -> float:
    """The smallest one-sided p a rank test can reach with samples of ``a`` and ``b``: 1 / C(a + b, a)."""
    return 1.0 / math.comb(a + b, a)


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _judge_speed(check: Check, entry: Mapping, result: Result, tolerances: Mapping) -> None:
    base, now = check.baseline, check.now
    base_samples, now_samples = entry.get("samples"), result.samples
    alpha, min_effect = _param(tolerances, "alpha"), _param(tolerances, "min_effect")
    if base_samples and now_samples and min_p_value(len(now_samples), len(base_samples)) <= alpha:
        p = mann_whitney_less(now_samples, base_samples)
        change = _median(now_samples) / _median(base_samples) - 1
        check.tolerance, check.p_value = min_effect, p
        check.rule = (f"Mann-Whitney: fails if p < {alpha:g} and slower by > {100 * min_effect:g}% "
                      f"({len(now_samples)} vs {len(base_samples)} rounds)")
        if p < alpha and change < -min_effect:
            check.passed = False
            check.why = f"ratio fell {-100 * change:.1f}% (medians of rounds; p = {p:.2g} < {alpha:g})"
        return
    tol = _tolerance(entry, tolerances)
    check.tolerance = tol
    missing = "no samples in the baseline" if not base_samples else "no samples now" if not now_samples \
        else f"too few rounds for p < {alpha:g}"
    check.rule = f">= {1 - tol:g} x baseline (fixed: {missing})"
    if now < base * (1 - tol):
        check.passed, check.why = False, f"ratio fell {100 * (1 - now / base):.1f}% (allowed {100 * tol:.0f}%)"


def judge(entry: Mapping, result: Result | tuple[float | None, str] | None, tolerances: Mapping) -> Check:
    """Apply the entry's rule to the collected result (None: the store has no such row; a (value, reason) pair:
    one run without samples)."""
    if isinstance(result, tuple):
        result = Result([] if result[0] is None else [result[0]], result[1])
    kind, base = entry["kind"], entry["value"]
    check = Check(entry["model"], entry["task"], entry["variant"], entry["metric"], kind, base,
                  None if result is None else result.value, rule="", passed=True)
    check.rule = {"accuracy": "", "flops": f"equal ({FLOP_RELATIVE:g} rel.)",
                  "speed_ratio": f">= {1 - _tolerance(entry, tolerances):g} x baseline", "info": "info only"}[kind]
    if kind == "accuracy":
        check.tolerance, check.rule = accuracy_tolerance(entry, len(result.values) if result else 1, tolerances)
    if result is None:
        if kind != "info":
            check.passed, check.why = False, "missing: no result in the store"
        return check
    now = result.value
    if kind == "info" or base is None:  # not gated, or nothing to compare with (n/a in the baseline)
        return check
    if now is None:
        check.passed, check.why = False, f"now n/a ({result.reason})"
    elif kind == "accuracy" and now < base - check.tolerance:
        check.passed, check.why = False, f"dropped by {base - now:.4g} (tolerance {check.tolerance:.4g})"
    elif kind == "flops" and abs(now - base) > FLOP_RELATIVE * max(abs(base), abs(now)):
        change = f"{100 * (now - base) / base:+.3g}%" if base else f"{now - base:+.4g}"
        check.passed, check.why = False, f"changed by {change}"
    elif kind == "speed_ratio":
        _judge_speed(check, entry, result, tolerances)
    return check


def check_results(baseline: Mapping, rows: Iterable[Mapping], suite: str | None = None) -> list[Check]:
    """Judge every baseline entry against the latest rows of the baseline's suite (or ``suite``)."""
    results = collect(rows, suite if suite is not None else baseline.get("suite"))
    tolerances = baseline["tolerances"]
    return [judge(e, results.get((e["model"], e["task"], e["variant"], e["metric"])), tolerances)
            for e in baseline["entries"]]


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.6g}"


def format_report(checks: list[Check], baseline_path: str | os.PathLike | None = None) -> str:
    """A table of the failed checks and a one-line summary (the last line)."""
    failed = [c for c in checks if not c.passed]
    lines = []
    if failed:
        head = ("model", "task", "variant", "metric", "baseline", "now", "rule", "why")
        body = [(c.model, c.task, c.variant or "default", c.metric, _fmt(c.baseline), _fmt(c.now),
                 f"{c.kind}: {c.rule}", c.why) for c in failed]
        widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
        for row in (head, *body):
            lines.append("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())
        lines.append("")
    by_kind: dict[str, int] = {}
    for c in failed:
        label = "missing" if c.now is None and c.why.startswith("missing") else c.kind
        by_kind[label] = by_kind.get(label, 0) + 1
    gated = sum(c.kind != "info" for c in checks)
    source = f" against {baseline_path}" if baseline_path else ""
    if failed:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(by_kind.items()))
        names = ", ".join(f"{c.model} {c.metric}" for c in failed[:5]) + (", ..." if len(failed) > 5 else "")
        lines.append(f"check FAILED{source}: {len(failed)} of {gated} gated checks regressed ({kinds}): {names}")
    else:
        lines.append(f"check passed{source}: {gated} gated checks ok, {len(checks) - gated} info-only")
    return "\n".join(lines)


def report_json(checks: list[Check], baseline_path: str | os.PathLike | None = None) -> dict:
    """Every check, gated and info-only, with its verdict: what CI systems and scripts read."""
    gated = [c for c in checks if c.kind != "info"]
    return {
        "baseline": None if baseline_path is None else str(baseline_path),
        "passed": all(c.passed for c in checks),
        "gated": len(gated),
        "failed": sum(not c.passed for c in checks),
        "info_only": len(checks) - len(gated),
        "checks": [asdict(c) for c in checks],
    }


def report_junit(checks: list[Check], baseline_path: str | os.PathLike | None = None) -> str:
    """JUnit XML: one test case per gated check (``model.task[variant]`` / metric), a failure naming why."""
    from xml.etree import ElementTree as ET

    gated = [c for c in checks if c.kind != "info"]
    suite = ET.Element("testsuite", name="copa-bench check", tests=str(len(gated)),
                       failures=str(sum(not c.passed for c in gated)), errors="0")
    if baseline_path is not None:
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="baseline", value=str(baseline_path))
    for c in gated:
        case = ET.SubElement(suite, "testcase", classname=f"{c.model}.{c.task}" + (f"[{c.variant}]" if c.variant
                                                                                    else ""),
                             name=c.metric)
        if not c.passed:
            failure = ET.SubElement(case, "failure", message=f"{c.model} {c.task} {c.metric}: {c.why}", type=c.kind)
            failure.text = f"baseline {_fmt(c.baseline)}, now {_fmt(c.now)}, rule {c.kind}: {c.rule}"
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def report_table(checks: list[Check]) -> str:
    """A markdown table of every gated check, passed or failed."""
    lines = ["| status | model | task | variant | metric | baseline | now | rule | why |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in checks:
        if c.kind != "info":
            lines.append(f"| {'ok' if c.passed else 'FAILED'} | {c.model} | {c.task} | {c.variant or 'default'} | "
                         f"{c.metric} | {_fmt(c.baseline)} | {_fmt(c.now)} | {c.kind}: {c.rule} | {c.why} |")
    return "\n".join(lines) + "\n"


REPORT_FILES = ("check.json", "check.junit.xml", "check.md")


def write_reports(checks: list[Check], out_dir: str | os.PathLike,
                  baseline_path: str | os.PathLike | None = None) -> list[Path]:
    """Write :data:`REPORT_FILES` into ``out_dir`` (each through a temporary file, so none is half-written)."""
    out = Path(out_dir)
    texts = (json.dumps(report_json(checks, baseline_path), indent=1, allow_nan=False) + "\n",
             report_junit(checks, baseline_path), report_table(checks))
    paths = []
    for name, text in zip(REPORT_FILES, texts, strict=True):
        write_atomic(out / name, text)
        paths.append(out / name)
    return paths


def run_check(baseline_path: str | os.PathLike, store_dir: str | os.PathLike = DEFAULT_STORE,
              suite: str | None = None, report_dir: str | os.PathLike | None = None) -> tuple[int, str]:
    """(exit status, report): 1 on any regression, 0 otherwise; a bad baseline raises InputError."""
    baseline = load_baseline(baseline_path)
    path = store_file(store_dir)
    if not path.is_file():
        raise InputError(store_dir, "--results", f"no results store here (no {path.name}): nothing to check")
    rows = read_rows(store_dir)
    judged = suite if suite is not None else baseline.get("suite")
    if not any(judged is None or row["suite"] == judged for row in rows):
        held = sorted({row["suite"] for row in rows})
        raise InputError(path, "--suite" if suite is not None else "suite", f"no rows of suite {judged!r} in the "
                         f"store (it holds {', '.join(held) if held else 'no valid rows'}): nothing to check")
    checks = check_results(baseline, rows, suite)
    report = format_report(checks, baseline_path)
    if report_dir is not None:
        paths = write_reports(checks, report_dir, baseline_path)
        report = f"reports: {', '.join(str(p) for p in paths)}\n" + report
    return (1 if any(not c.passed for c in checks) else 0), report

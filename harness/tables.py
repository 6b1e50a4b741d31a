"""Comparison tables and plots from the results store: the main model x task table, the efficiency table,
one ablation table per variant family, optional paper reference columns, Pareto / keep-ratio plots (each task's
chance level drawn), and an index.html report of them all.

Every number is computed from the store's latest rows (a rerun supersedes a row, seeds are aggregated as
mean ± sample standard deviation), never typed in; every file is written atomically.
"""

from __future__ import annotations

import html
import io
import json
import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from harness.chance import SE_SUFFIX
from harness.errors import InputError
from harness.results import (
    DEFAULT_STORE,
    EFFICIENCY_TASK,
    StoreWarning,
    created_at,
    latest,
    read_rows,
    store_file,
    write_atomic,
)
from harness.suite import CHANCE

DEFAULT_OUT = "results/tables"
FORMATS = ("md", "csv", "latex", "html")
EXTENSIONS = {"md": "md", "csv": "csv", "latex": "tex", "html": "html"}
MODEL_ORDER = ("albef", "copa", "trips", "evit", "random", "tome", "vilt")
SE_MARGIN = 3  # "above chance" means above the chance row by this many of its standard errors
CHANCE_FLOOR = f"chance + {SE_MARGIN} SE"  # the main table's row under ``chance``
EFFICIENCY_LABELS = {
    "gmacs": "GMACs",
    "params_m": "params (M)",
    "pairs_per_s": "pairs/s",
    "latency_ms": "latency (ms)",
    "speedup_flops": "speedup (MACs)",
    "speedup_time": "speedup (time)",
}
# the main table's speedups, each named by the path it measures (one path's saving is not the model's):
# store metric -> column label
MAIN_SPEEDUPS = {"pretrain.train.speedup_time": "speedup (pre-train step)",
                 "speedup_time": "speedup (inference, pair)"}
SPEEDUP_NOTE = ("Speedups: time ratios to the reference model measured in the same process, interleaved rounds; "
                "'pre-train step' = forward + backward + AdamW step of the whole pre-training loss (all losses and "
                "negatives) per pair, 'inference, pair' = encode_pair per image-text pair (task-costs table: the "
                "other tasks and phases).")
TASK_COST_LABELS = {
    "gmacs": "GMACs fwd",
    "gmacs_step": "GMACs step",
    "samples_per_s": "samples/s",
    "achieved_tflops": "TFLOP/s",
    "speedup_macs": "speedup (MACs)",
    "speedup_time": "speedup (time)",
}
MISSING, NOT_APPLICABLE, PLUS_MINUS = "–", "n/a", "±"
# the readable names of metric ids (a task's is its declaration's ``label``, harness/taskspec.py), used in every
# header people read (md, html, latex)
LABELS = {
    # what is not a declared task
    "vision_pretrain": "vision pre-train", "efficiency": "efficiency",
    # metrics
    "vqa_acc": "VQA acc.", "r_mean": "R-mean", "itm_auc": "ITM AUC", "itm_acc": "ITM acc.", "itc_r1": "ITC R@1",
    "acc": "acc.", "cider": "CIDEr", "acc_iou50": "acc@IoU0.5", "patch_auc": "patch AUC",
    "cider_java_ptb": "CIDEr (Java PTB)",
    **{f"{side}_r{k}": f"{name} R@{k}" for side, name in (("txt", "text"), ("img", "image")) for k in (1, 5, 10)},
    **EFFICIENCY_LABELS,
}
SUMMARY_COLUMNS = ["model", "task", "variant", "metric", "mean", "std", "n", "seeds", "status", "reason"]
GMACS_NOTE = ("GMACs = 10^9 multiply-adds (1 MAC = 1 FLOP as fvcore counts, attention included) per image-text "
              "pair: one image and 40 text tokens through the vision, text and fusion encoders.")


@dataclass
class Table:
    """A rendered-to-strings table with its title and the notes every output format carries along."""

    name: str
    title: str
    frame: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    # the numbers behind the cells, one summary row (SUMMARY_COLUMNS) per cell with the table ``column`` it sits
    # in: the table's CSV, so that a reader of the CSV gets numbers, not "71.2 ± 0.4"
    numbers: pd.DataFrame | None = None


@dataclass
class PaperReference:
    """Published numbers for reference columns, with the citation they must be printed with."""

    citation: str
    rows: list[dict]


# ------------------------------------------------------------------------------------------------- loading


def load_rows(store_dir: str | os.PathLike = DEFAULT_STORE, suite: str | None = None) -> pd.DataFrame:
    """The latest row per key of one suite; a store holding several suites needs ``suite`` to pick one."""
    rows = latest(read_rows(store_dir))
    path = store_file(store_dir)
    if not rows:
        raise InputError(path, None, "no results in the store (run a suite first)")
    suites = sorted({r["suite"] for r in rows})
    if suite is None and len(suites) > 1:
        raise InputError(path, "--suite", f"the store holds several suites ({', '.join(suites)}); choose one")
    if suite is not None and suite not in suites:
        raise InputError(path, "--suite", f"no rows of suite {suite!r} (the store holds {', '.join(suites)})")
    chosen = suite or suites[0]
    picked = [r for r in rows if r["suite"] == chosen]
    newest = max(picked, key=created_at)["data_hash"]
    stale = [r for r in picked if r["data_hash"] != newest]
    if stale:  # a table compares like with like: one benchmark, the one the suite last ran on
        warnings.warn(f"{path}: {len(stale)} rows of suite {chosen!r} measured on other data than its newest rows "
                      f"(data_hash {newest[:12]}) are left out of the tables", StoreWarning, stacklevel=2)
    frame = pd.DataFrame([r for r in picked if r["data_hash"] == newest])
    frame["value"] = frame["value"].astype(float)
    return frame


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (ddof=1; NaN with one seed) and count over seeds per (model, task, variant, metric).

    A key with no 'ok' seed is 'n/a' (with the first reason given); otherwise its 'ok' seeds are averaged.
    """
    records = []
    for (model, task, variant, metric), group in rows.groupby(["model", "task", "variant", "metric"], sort=False):
        ok = group[group["status"] == "ok"]
        values = ok["value"].to_numpy(dtype=float)
        n = int(values.size)
        records.append({
            "model": model, "task": task, "variant": variant, "metric": metric,
            "mean": float(values.mean()) if n else math.nan,
            "std": float(values.std(ddof=1)) if n > 1 else math.nan,
            "n": n, "seeds": ",".join(str(s) for s in sorted(ok["seed"])),
            "status": "ok" if n else "n/a",
            "reason": "" if n else str(group["reason"].iloc[0]),
        })
    return pd.DataFrame.from_records(records, columns=SUMMARY_COLUMNS)


def load_paper(path: str | os.PathLike) -> PaperReference:
    """Reference numbers ``{"citation": str, "rows": [{"model", "task", "metric", "value"}]}``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, None, "no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(path, None, f"not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise InputError(path, None, "must be a JSON object with 'citation' and 'rows'")
    citation = data.get("citation")
    if not isinstance(citation, str) or not citation.strip():
        raise InputError(path, "citation", "must be a non-empty string (where the numbers come from)")
    rows = data.get("rows")
    if not isinstance(rows, list):
        raise InputError(path, "rows", "must be a list")
    clean = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InputError(path, f"rows[{i}]", "must be an object")
        for key in ("model", "task", "metric"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise InputError(path, f"rows[{i}].{key}", "must be a non-empty string")
        value = row.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InputError(path, f"rows[{i}].value", f"must be a finite number, got {value!r}")
        clean.append({"model": row["model"], "task": row["task"], "metric": row["metric"], "value": float(value)})
    return PaperReference(citation.strip(), clean)


# ---------------------------------------------------------------------------------------------- formatting


def _decimals(values: Sequence[float]) -> int:
    """One decimal for numbers >= 10 (accuracy in points), more for small ones (AUCs, tiny-scale GMACs)."""
    finite = [abs(v) for v in values if v is not None and math.isfinite(v)]
    top = max(finite, default=0.0)
    if top >= 10 or top == 0:
        return 1
    return min(4, 2 - math.floor(math.log10(top)) if top < 1 else 2)


def format_cell(mean: float, std: float, n: int, decimals: int) -> str:
    """"71.2 ± 0.4" (std omitted for one seed)."""
    text = f"{mean:.{decimals}f}"
    return text if n < 2 or not math.isfinite(std) else f"{text} {PLUS_MINUS} {std:.{decimals}f}"


def _labels() -> dict[str, str]:
    """Readable names: the declared tasks' labels, then :data:`LABELS`."""
    from harness.taskspec import task_specs

    return {**{name: spec.label for name, spec in task_specs().items()}, **LABELS}


def headlines(tasks: Sequence[str]) -> dict[str, str]:
    """task -> headline metric of the tabled tasks among ``tasks``, in the main table's column order (the
    declarations', harness/taskspec.py). A task other than efficiency without a declaration is an InputError:
    leaving it out of the tables silently would hide its results."""
    from harness.taskspec import task_spec, task_specs

    present = set(tasks) - {EFFICIENCY_TASK}
    for task in sorted(present):
        try:
            task_spec(task)
        except InputError as e:
            raise InputError(e.path, e.field if e.path else "task", f"the results hold rows of task {task!r}, which "
                             f"cannot be tabulated: {e.message}") from None
    return {name: spec.headline for name, spec in task_specs().items() if name in present and spec.headline}


def column_label(column: str) -> str:
    """A column id as a reader's header: "vqa vqa_acc" -> "VQA acc.", "retrieval r_mean (paper)" -> "retrieval
    R-mean (paper)". Ids stay the keys of the frames (and of the CSVs); only what people read is relabelled."""
    labels = _labels()
    words = [labels.get(w, w.replace("_", " ")) for w in column.split(" ")]
    if len(words) > 1 and column.split(" ")[0] in labels and words[0].split(" ")[0].lower() == \
            words[1].split(" ")[0].lower():
        words = words[1:]  # "VQA VQA acc." reads "VQA acc."
    return " ".join(words)


def _number(r, column: str, metric: str | None = None) -> dict:
    """A cell's summary row (``summarize``'s itertuples) for the table's CSV; ``metric`` names a wildcard row's."""
    record = {"column": column, **{key: getattr(r, key) for key in SUMMARY_COLUMNS}}
    if metric is not None:
        record["metric"] = metric
    return record


def _numbers(records: list[dict]) -> pd.DataFrame:
    return pd.DataFrame.from_records(records, columns=["column", *SUMMARY_COLUMNS])


def _model_order(models) -> list[str]:
    present = set(models)
    return [m for m in MODEL_ORDER if m in present] + sorted(present - set(MODEL_ORDER))


def _variant_key(variant: str) -> tuple:
    return tuple((0, float(chunk), "") if re.fullmatch(r"\d+(\.\d+)?", chunk) else (1, 0.0, chunk)
                 for chunk in re.findall(r"\d+(?:\.\d+)?|\D+", variant))


def variant_family(variant: str) -> str | None:
    """keep0.3 -> keep, pta_off -> pta, tpd3 -> tpd; None for the default ("") and image sizes ("384")."""
    if not variant or variant.isdigit():
        return None
    match = re.match(r"[A-Za-z]+", variant)
    return match.group() if match else variant


def _chance_floor(summary: pd.DataFrame, task: str, metric: str, variant: str):
    """The ``chance + 3 SE`` cell of a metric: the chance row plus SE_MARGIN of its standard errors
    (harness/chance.py), a summary row like the others; None when the chance job recorded no standard error."""
    chance = summary[(summary.model == CHANCE) & (summary.task == task) & (summary.variant == variant)]
    level, se = (chance[chance.metric == m] for m in (metric, metric + SE_SUFFIX))
    if level.empty or se.empty or level.iloc[0].status != "ok":
        return None
    floor = level.iloc[0].copy()
    floor["model"], floor["mean"], floor["std"] = CHANCE_FLOOR, floor["mean"] + SE_MARGIN * se.iloc[0]["mean"], math.nan
    return next(pd.DataFrame([floor]).itertuples())


def _column(summary: pd.DataFrame, models: list[str], task: str, metric: str, variant: str,
            numbers: list[dict], column: str) -> list[str]:
    sel = summary[(summary.task == task) & (summary.metric == metric) & (summary.variant == variant)]
    by_model = {r.model: r for r in sel.itertuples()}
    if CHANCE_FLOOR in models and (floor := _chance_floor(summary, task, metric, variant)) is not None:
        by_model[CHANCE_FLOOR] = floor
    # a job that did not apply is one n/a row with metric "*": every metric of that task is n/a
    wildcard = summary[(summary.task == task) & (summary.metric == "*") & (summary.variant == variant)]
    for r in wildcard.itertuples():
        by_model.setdefault(r.model, r)
    decimals = _decimals(sel["mean"].tolist())
    cells = []
    for model in models:
        r = by_model.get(model)
        if r is None:
            cells.append(MISSING)
        elif r.status != "ok":
            cells.append(NOT_APPLICABLE)
        else:
            cells.append(format_cell(r.mean, r.std, r.n, decimals))
        if r is not None:
            numbers.append(_number(r, column, metric))
    return cells


def _plain(value: float) -> str:
    return f"{value:g}"


def _seed_note(summary: pd.DataFrame) -> str:
    counts = sorted({int(n) for n in summary.loc[summary.status == "ok", "n"]})
    seeds = ", ".join(str(c) for c in counts) or "0"
    return (f"Cells: mean {PLUS_MINUS} sample standard deviation (ddof=1) over seeds ({seeds} per cell; no std with "
            f"one seed); '{NOT_APPLICABLE}' = not applicable to the model, '{MISSING}' = not measured.")


def _provenance_note(rows: pd.DataFrame) -> str:
    commits = sorted({f"{c[:10]}{'+dirty' if d else ''}" for c, d in zip(rows.git_commit, rows.git_dirty,
                                                                          strict=True)})
    machines = sorted({f"{m['cpu']}, {m['threads']} threads" for m in rows.machine})
    scales = ", ".join(sorted(set(rows.scale)))
    return (f"Suite {rows.suite.iloc[0]} (scale {scales}); commits {', '.join(commits)}; "
            f"machines: {'; '.join(machines)}.")


def _na_notes(summary: pd.DataFrame) -> list[str]:
    na = summary[summary.status != "ok"]
    return [f"n/a: {r.model} {r.task}{f' [{r.variant}]' if r.variant else ''} {r.metric}: {r.reason}"
            for r in na.drop_duplicates(["model", "task", "reason"]).itertuples()]


def _efficiency_variant(summary: pd.DataFrame) -> str | None:
    """The efficiency rows the main table quotes: the default ones, else the smallest image size."""
    variants = set(summary.loc[summary.task == EFFICIENCY_TASK, "variant"])
    if "" in variants:
        return ""
    sizes = sorted((v for v in variants if v.isdigit()), key=int)
    return sizes[0] if sizes else None


# -------------------------------------------------------------------------------------------------- tables


def main_table(summary: pd.DataFrame, rows: pd.DataFrame | None = None,
               paper: PaperReference | None = None) -> Table:
    """Models x headline metric per task (default variant), then GMACs and pairs/s, then paper columns."""
    default = summary[summary.variant == ""]
    headline = headlines(summary.task)
    tasks = [t for t, m in headline.items() if ((default.task == t) & (default.metric == m)).any()]
    models = _model_order(summary.model)
    if CHANCE in models and summary.metric.str.endswith(SE_SUFFIX).any():
        models.insert(models.index(CHANCE) + 1, CHANCE_FLOOR)
    paper_rows = paper.rows if paper else []
    models += [m for m in dict.fromkeys(r["model"] for r in paper_rows) if m not in models]
    columns: dict[str, list[str]] = {"model": models}
    numbers: list[dict] = []
    paper_keys = list(dict.fromkeys((r["task"], r["metric"]) for r in paper_rows))

    def add_paper(task: str, metric: str, label: str) -> None:
        if (task, metric) in paper_keys:
            paper_keys.remove((task, metric))
            values = {r["model"]: r["value"] for r in paper_rows if (r["task"], r["metric"]) == (task, metric)}
            columns[f"{label} (paper)"] = [_plain(values[m]) if m in values else MISSING for m in models]
            numbers.extend({"column": f"{label} (paper)", "model": m, "task": task, "variant": "", "metric": metric,
                            "mean": values[m], "std": math.nan, "n": 0, "seeds": "", "status": "paper",
                            "reason": ""} for m in models if m in values)

    for task in tasks:
        label = f"{task} {headline[task]}"
        columns[label] = _column(summary, models, task, headline[task], "", numbers, label)
        add_paper(task, headline[task], label)
    size = _efficiency_variant(summary)
    if size is not None:
        for metric in ("gmacs", "pairs_per_s"):
            if ((summary.task == EFFICIENCY_TASK) & (summary.metric == metric) & (summary.variant == size)).any():
                label = EFFICIENCY_LABELS[metric] + (f" @{size}px" if size else "")
                columns[label] = _column(summary, models, EFFICIENCY_TASK, metric, size, numbers, label)
                add_paper(EFFICIENCY_TASK, metric, EFFICIENCY_LABELS[metric])
        speedups = [m for m in MAIN_SPEEDUPS
                    if ((summary.task == EFFICIENCY_TASK) & (summary.metric == m) & (summary.variant == size)).any()]
        for metric in speedups:
            label = MAIN_SPEEDUPS[metric] + (f" @{size}px" if size else "")
            columns[label] = _column(summary, models, EFFICIENCY_TASK, metric, size, numbers, label)
            add_paper(EFFICIENCY_TASK, metric, MAIN_SPEEDUPS[metric])
    for task, metric in list(paper_keys):
        add_paper(task, metric, EFFICIENCY_LABELS.get(metric, f"{task} {metric}"))
    notes = [_seed_note(summary)]
    if CHANCE_FLOOR in models:
        notes.append(f"{CHANCE_FLOOR}: the chance row plus {SE_MARGIN} standard errors of chance on the same test "
                     "set (binomial for accuracies, the Mann-Whitney null for AUCs, a random ranking's spread for "
                     "retrieval, per-image spread for CIDEr; harness/chance.py): a model above it is above chance "
                     "beyond what the test set's size explains.")
    if size is not None:
        notes.append(GMACS_NOTE + " pairs/s: median over interleaved timed rounds, machine-dependent.")
        if speedups:
            notes.append(SPEEDUP_NOTE)
    notes += _na_notes(default)
    notes += _caption_tokenizer_note(default)
    if rows is not None:
        notes.append(_provenance_note(rows))
    if paper:
        notes.append(f"(paper) columns: {paper.citation}")
    return Table("main", "Main comparison (headline metric per task)", pd.DataFrame(columns), notes,
                 _numbers(numbers))


SUBJECT = "copa"  # the method the comparison table sets against each baseline
PUBLISHED_PREFIX = "published_"  # variants that run a baseline at its own published operating point
CONFIDENCE = 0.95
VERDICTS = ("ahead", "level", "behind", "both at chance", "one seed")


def paired_difference(subject: Sequence[float], baseline: Sequence[float],
                      confidence: float = CONFIDENCE) -> tuple[float, float, str]:
    """Mean and sample std of the per-seed differences ``subject - baseline`` and a verdict: "ahead" ("behind")
    when the two-sided Student-t interval of the mean difference at ``confidence`` lies above (below) zero, else
    "level"; "one seed" with fewer than two pairs. Paired over seeds: a seed's pre-training draw and data order
    are shared by both models, so the seed-to-seed swing common to both cancels."""
    from scipy.stats import t

    diffs = np.asarray(subject, dtype=float) - np.asarray(baseline, dtype=float)
    n = diffs.size
    mean = float(diffs.mean()) if n else math.nan
    if n < 2:
        return mean, math.nan, "one seed"
    std = float(diffs.std(ddof=1))
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    verdict = "ahead" if mean - half > 0 else "behind" if mean + half < 0 else "level"
    return mean, std, verdict


def _seed_values(rows: pd.DataFrame, model: str, task: str, metric: str, variant: str) -> dict[int, float]:
    sel = rows[(rows.model == model) & (rows.task == task) & (rows.metric == metric) & (rows.variant == variant)
               & (rows.status == "ok")]
    return {int(seed): float(value) for seed, value in zip(sel.seed, sel.value, strict=True)}


def comparison_table(rows: pd.DataFrame, summary: pd.DataFrame, subject: str = SUBJECT) -> Table | None:
    """The subject against each baseline per task (headline metric): the mean over seeds of the paired
    difference, its std, and whether it is ahead, level or behind (:func:`paired_difference`) — at equal budget
    (the default variant) and at each baseline's published operating point (``published_*`` variants) against
    the subject's default. None without the subject or a baseline on a shared task."""
    default = rows[rows.variant == ""]
    if subject not in set(default.model):
        return None
    headline = headlines(summary.task)
    points = [(m, "") for m in _model_order(default.model) if m not in (subject, CHANCE)]
    points += sorted({(m, v) for m, v in zip(rows.model, rows.variant, strict=True)
                      if v.startswith(PUBLISHED_PREFIX) and m != subject})
    columns: dict[str, list[str]] = {"task": []}
    labels = [f"{m} @{v}" if v else m for m, v in points]
    for label in labels:
        columns[label] = []
    numbers: list[dict] = []
    for task, metric in headline.items():
        mine = _seed_values(rows, subject, task, metric, "")
        if not mine:
            continue
        floor = _chance_floor(summary, task, metric, "")
        cells = []
        for (model, variant), label in zip(points, labels, strict=True):
            theirs = _seed_values(rows, model, task, metric, variant)
            seeds = sorted(set(mine) & set(theirs))
            if not seeds:
                cells.append(NOT_APPLICABLE if ((rows.model == model) & (rows.task == task)
                                                & (rows.variant == variant)).any() else MISSING)
                continue
            a, b = [mine[s] for s in seeds], [theirs[s] for s in seeds]
            mean, std, verdict = paired_difference(a, b)
            if floor is not None and max(np.mean(a), np.mean(b)) <= floor.mean:
                verdict = "both at chance"
            decimals = _decimals([mean, *a, *b])
            cell = format_cell(mean, std, len(seeds), decimals)
            cells.append(f"{'+' if mean > 0 else ''}{cell} {verdict}")
            numbers.append({"column": label, "model": model, "task": task, "variant": variant, "metric": metric,
                            "mean": mean, "std": std, "n": len(seeds), "seeds": ",".join(map(str, seeds)),
                            "status": "ok", "reason": verdict})
        if any(c not in (MISSING, NOT_APPLICABLE) for c in cells):
            columns["task"].append(f"{task} {metric}")
            for label, cell in zip(labels, cells, strict=True):
                columns[label].append(cell)
    if not columns["task"]:
        return None
    notes = [f"Cells: {subject} minus the baseline, mean {PLUS_MINUS} sample std over the seeds both ran (paired "
             f"by seed), then the verdict: ahead/behind when the two-sided {CONFIDENCE:.0%} Student-t interval of "
             f"the mean difference excludes zero, else level; 'both at chance' when neither mean is above "
             f"{CHANCE_FLOOR}; 'one seed' when no spread can be measured.",
             f"'@{PUBLISHED_PREFIX}*' columns: the baseline at its own published operating point against {subject} "
             "at its default (docs/experiments/operating_points.md); the other columns at equal budget."]
    return Table("comparison", f"{subject} against each baseline (paired over seeds)", pd.DataFrame(columns), notes,
                 _numbers(numbers))


def _caption_tokenizer_note(summary: pd.DataFrame) -> list[str]:
    """CIDEr is comparable with published figures only when coco-caption's Java PTB tokenizer ran
    (``cider_java_ptb`` = 1, see harness/metrics/caption.py)."""
    python = summary[(summary.task == "caption") & (summary.metric == "cider_java_ptb") & (summary["mean"] < 1)]
    if python.empty:
        return []
    return [f"caption: CIDEr of {', '.join(sorted(set(python.model)))} not comparable with published values "
            "(captions tokenised by the Python stand-in for coco-caption's Java PTBTokenizer)."]


def efficiency_table(summary: pd.DataFrame, rows: pd.DataFrame | None = None) -> Table | None:
    """Every efficiency metric per model (and image size, when variants are sizes); None without such rows (the
    per-task costs are :func:`task_cost_table`'s)."""
    eff = summary[(summary.task == EFFICIENCY_TASK) & summary.metric.isin(list(EFFICIENCY_LABELS))]
    if eff.empty:
        return None
    variants = sorted(set(eff.variant), key=_variant_key)
    by_size = all(v.isdigit() for v in variants if v)
    keys = [(m, v) for m in _model_order(eff.model) for v in variants
            if ((eff.model == m) & (eff.variant == v)).any()]
    columns: dict[str, list[str]] = {"model": [m for m, _ in keys]}
    numbers: list[dict] = []
    if variants != [""]:
        columns["px" if by_size else "variant"] = [v or "default" for _, v in keys]
    for metric, label in EFFICIENCY_LABELS.items():
        sel = eff[eff.metric == metric]
        if sel.empty:
            continue
        decimals = _decimals(sel["mean"].tolist())
        by_key = {(r.model, r.variant): r for r in sel.itertuples()}
        cells = []
        for key in keys:
            r = by_key.get(key)
            cells.append(MISSING if r is None else NOT_APPLICABLE if r.status != "ok"
                         else format_cell(r.mean, r.std, r.n, decimals))
            if r is not None:
                numbers.append(_number(r, label))
        columns[label] = cells
    notes = [_seed_note(eff), GMACS_NOTE,
             "pairs/s and latency: medians of interleaved timed rounds on the machine below (absolute numbers are "
             "machine-dependent); speedups are ratios to the reference model measured in the same process."]
    if rows is not None:
        notes.append(_provenance_note(rows[rows.task == EFFICIENCY_TASK]))
    return Table("efficiency", "Efficiency", pd.DataFrame(columns), notes, _numbers(numbers))


def _task_cost_key(metric: str) -> tuple[str, str, str] | None:
    """``pretrain.train.speedup_time`` -> (task, phase, quantity); None for other metrics."""
    bits = metric.split(".")
    return tuple(bits) if len(bits) == 3 and bits[2] in TASK_COST_LABELS else None


def task_cost_table(summary: pd.DataFrame, rows: pd.DataFrame | None = None) -> Table | None:
    """Cost per (model, task, phase) from ``copa-bench profile --tasks`` rows (metrics ``<task>.<phase>.<quantity>``,
    see ``harness.results.efficiency_rows``); None without such rows."""
    eff = summary[summary.task == EFFICIENCY_TASK]
    keyed = [(r, _task_cost_key(r.metric)) for r in eff.itertuples()]
    keyed = [(r, key) for r, key in keyed if key is not None]
    if not keyed:
        return None
    variants = sorted({r.variant for r, _ in keyed}, key=_variant_key)
    phases = list(dict.fromkeys((key[0], key[1]) for _, key in keyed))
    quantities = [q for q in TASK_COST_LABELS if any(key[2] == q for _, key in keyed)]
    cells = {(r.model, r.variant, key[0], key[1], key[2]): r for r, key in keyed}
    decimals = {q: _decimals([r.mean for r, key in keyed if key[2] == q]) for q in quantities}
    columns: dict[str, list[str]] = {"model": [], "task": [], "phase": []}
    numbers: list[dict] = []
    if variants != [""]:
        columns["px" if all(v.isdigit() for v in variants if v) else "variant"] = []
    columns.update({TASK_COST_LABELS[q]: [] for q in quantities})
    for task, phase in phases:
        for variant in variants:
            for model in _model_order(eff.model):
                if not any((model, variant, task, phase, q) in cells for q in quantities):
                    continue
                columns["model"].append(model)
                columns["task"].append(task)
                columns["phase"].append(phase)
                if variants != [""]:
                    columns["px" if "px" in columns else "variant"].append(variant or "default")
                for q in quantities:
                    r = cells.get((model, variant, task, phase, q))
                    columns[TASK_COST_LABELS[q]].append(
                        MISSING if r is None else NOT_APPLICABLE if r.status != "ok"
                        else format_cell(r.mean, r.std, r.n, decimals[q]))
                    if r is not None:
                        numbers.append(_number(r, TASK_COST_LABELS[q]))
    notes = [_seed_note(eff),
             "GMACs per sample of the task phase (1 MAC = 1 multiply-add, fvcore with attention counted, over the "
             "call the task makes): 'fwd' = the forward; 'step' = one step's estimate, 3 x fwd (forward + backward) "
             "for train rows, = fwd for infer rows. samples/s: train = forward + backward + AdamW step, infer = "
             "under inference_mode; TFLOP/s = 2 x step GMACs x samples/s / 1000. Speedups: ratios to the reference "
             "model measured in the same process, interleaved rounds. Units, k, gallery size and beams: "
             "'copa-bench profile --tasks' (README, Efficiency profiling)."]
    if rows is not None:
        notes.append(_provenance_note(rows[rows.task == EFFICIENCY_TASK]))
    return Table("task_costs", "Cost per task and phase", pd.DataFrame(columns), notes, _numbers(numbers))


def variant_families(variants: Sequence[str]) -> dict[str, list[str]]:
    """The ablation families (keep, pta, tpd, ...) of a suite's variant names, each family's variants in order."""
    families: dict[str, list[str]] = {}
    for variant in sorted(set(variants), key=_variant_key):
        family = variant_family(variant)
        if family:
            families.setdefault(family, []).append(variant)
    return families


def family_summary(rows: pd.DataFrame, variants: Sequence[str]) -> pd.DataFrame:
    """``summarize`` of a family's variants and of the default configuration over the seeds those variants ran.

    An ablation compares like with like: when the main comparison has 3 seeds and an ablation one, its
    'default' column is that one seed's default run, not the 3-seed mean.
    """
    variant_rows = rows[rows.variant.isin(variants)]
    default_rows = rows[(rows.variant == "") & rows.seed.isin(set(variant_rows.seed))]
    return summarize(pd.concat([default_rows, variant_rows], ignore_index=True))


def ablation_tables(rows: pd.DataFrame) -> list[Table]:
    """One table per variant family (keep*, pta*, tpd*, ...): (model, metric) x (default + each variant)."""
    tables = []
    for family, variants in variant_families(rows.variant).items():
        summary = family_summary(rows, variants)
        fam = summary[summary.variant.isin(variants)]
        seeds = ", ".join(str(s) for s in sorted(set(rows[rows.variant.isin(variants)].seed)))
        metrics = [(t, m) for t, m in headlines(fam.task).items() if ((fam.task == t) & (fam.metric == m)).any()]
        metrics += [(EFFICIENCY_TASK, m) for m in ("gmacs", "pairs_per_s", "speedup_time")
                    if ((fam.task == EFFICIENCY_TASK) & (fam.metric == m)).any()]
        models = _model_order(fam.model)
        records: dict[str, list[str]] = {"model": [], "metric": []}
        cells: dict[str, list[str]] = {v or "default": [] for v in ["", *variants]}
        numbers: list[dict] = []
        for task, metric in metrics:
            sel = summary[(summary.task == task) & (summary.metric == metric) & summary.variant.isin(["", *variants])]
            decimals = _decimals(sel["mean"].tolist())
            by_key = {(r.model, r.variant): r for r in sel.itertuples()}
            for model in models:
                if not any((model, v) in by_key for v in variants):
                    continue
                records["model"].append(model)
                records["metric"].append(EFFICIENCY_LABELS[metric] if task == EFFICIENCY_TASK else f"{task} {metric}")
                for v in ["", *variants]:
                    r = by_key.get((model, v))
                    cells[v or "default"].append(MISSING if r is None else NOT_APPLICABLE if r.status != "ok"
                                                 else format_cell(r.mean, r.std, r.n, decimals))
                    if r is not None:
                        numbers.append(_number(r, v or "default"))
        notes = [_seed_note(summary), f"Variants of the '{family}' family; 'default' = the default configuration "
                 f"over the seeds the variants ran ({seeds})."]
        tables.append(Table(f"ablation_{family}", f"Ablation: {family}*", pd.DataFrame({**records, **cells}), notes,
                            _numbers(numbers)))
    return tables


# ------------------------------------------------------------------------------------------------ rendering


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}", "×": r"$\times$",
                  "≥": r"$\geq$", "≤": r"$\leq$", "→": r"$\rightarrow$", PLUS_MINUS: r"$\pm$", MISSING: "--"}
TEXT_COLUMNS = ("model", "metric", "task", "phase", "variant")  # left-aligned; every other column holds numbers
HTML_STYLE = """body { font-family: system-ui, sans-serif; color: #222; max-width: 75em; margin: 2em auto; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { padding: 0.25em 0.8em; text-align: right; border-bottom: 1px solid #ddd; }
th { border-bottom: 2px solid #444; }
th:first-child, td:first-child { text-align: left; }
tbody tr:hover { background: #f4f6fa; }
.notes { font-size: 0.85em; color: #555; max-width: 60em; }
.files { font-size: 0.85em; }
img { max-width: 100%; }
figure { margin: 1em 0 2em; }"""


def _latex_escape(text: object) -> str:
    return re.sub("|".join(re.escape(k) for k in _LATEX_SPECIAL), lambda m: _LATEX_SPECIAL[m.group()], str(text))


def _display(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as people read it: readable headers, and readable task/metric names in the cells that hold them."""
    shown = frame.rename(columns=column_label)
    for column in ("metric", "task"):
        if column in frame.columns:
            shown[column_label(column)] = frame[column].map(column_label)
    return shown


def html_page(title: str, body: str) -> str:
    """A standalone HTML document (opens from disk in any browser, no external files but the images it links)."""
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>\n{HTML_STYLE}\n</style>\n</head>\n<body>\n{body}</body>\n"
            f"</html>\n")


def _html_table(table: Table, level: int = 2) -> str:
    body = _display(table.frame).to_html(index=False, escape=True, border=0)
    notes = "".join(f"<p>{html.escape(n)}</p>\n" for n in table.notes)
    return (f"<h{level}>{html.escape(table.title)}</h{level}>\n{body}\n"
            + (f'<div class="notes">\n{notes}</div>\n' if notes else ""))


def _latex(table: Table) -> str:
    """A booktabs ``table`` float: caption = the title, notes as a footnote-sized paragraph under the tabular."""
    shown = _display(table.frame)
    align = "".join("l" if i == 0 or c in TEXT_COLUMNS else "r" for i, c in enumerate(table.frame.columns))
    lines = [f"% {table.title}: generated by copa-bench table; needs \\usepackage{{booktabs}}",
             r"\begin{table}[htbp]", r"\centering", rf"\caption{{{_latex_escape(table.title)}}}",
             rf"\label{{tab:{table.name}}}", rf"\begin{{tabular}}{{{align}}}", r"\toprule",
             " & ".join(_latex_escape(c) for c in shown.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(_latex_escape(c) for c in row) + r" \\" for row in shown.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.notes:
        lines += [r"\par\smallskip", r"\begin{minipage}{\linewidth}\footnotesize\raggedright"]
        lines += [_latex_escape(n) + r"\par" for n in table.notes]
        lines.append(r"\end{minipage}")
    return "\n".join(lines + [r"\end{table}"]) + "\n"


def render(table: Table, fmt: str) -> str:
    """The table as Markdown, CSV, LaTeX (a booktabs table float) or HTML (a standalone page).

    Markdown, LaTeX and HTML are for reading: readable headers (:func:`column_label`), cells "mean ± std", the
    title and notes. CSV is for reading back: one line per cell with its numbers (:func:`tidy_csv`)."""
    frame = table.frame
    if fmt == "md":
        shown = _display(frame)
        lines = [f"### {table.title}", "", "| " + " | ".join(shown.columns) + " |",
                 "|" + "|".join("---" for _ in shown.columns) + "|"]
        lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |"
                  for row in shown.itertuples(index=False)]
        return "\n".join(lines + [""] + [f"{n}  " if i < len(table.notes) - 1 else n
                                         for i, n in enumerate(table.notes)]) + "\n"
    if fmt == "csv":
        if table.numbers is not None:
            return tidy_csv(table.numbers)
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False, lineterminator="\n")
        return buffer.getvalue()
    if fmt == "latex":
        return _latex(table)
    if fmt == "html":
        return html_page(table.title, _html_table(table, level=1))
    raise ValueError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")


# ---------------------------------------------------------------------------------------------------- plots


def pareto_front(xs: Sequence[float], ys: Sequence[float], lower_x_better: bool) -> list[int]:
    """Indices of the points no other point beats on both axes (higher y always better), ordered along x."""
    order = sorted(range(len(xs)), key=lambda i: (xs[i] if lower_x_better else -xs[i], -ys[i]))
    front, best = [], -math.inf
    for i in order:
        if ys[i] > best:
            front.append(i)
            best = ys[i]
    return front


def _atomic_png(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    write_atomic(path, buffer.getvalue())


def _metric_points(summary: pd.DataFrame, task: str, metric: str, variant: str = "") -> pd.DataFrame:
    sel = summary[(summary.task == task) & (summary.metric == metric) & (summary.variant == variant)
                  & (summary.status == "ok")]
    return sel.set_index("model")[["mean", "std", "n"]]


def chance_level(summary: pd.DataFrame, task: str, metric: str) -> float | None:
    """The task's floor (the model ``chance``'s default-variant row, harness/chance.py); None when not recorded."""
    sel = _metric_points(summary[summary.model == CHANCE], task, metric)
    return float(sel["mean"].iloc[0]) if not sel.empty else None


def _draw_chance(ax, level: float | None) -> None:
    """The floor as a labelled dashed line: a point is read against it ("above chance" is otherwise a guess)."""
    if level is None:
        return
    ax.axhline(level, linestyle="--", linewidth=1, color="0.45", label=CHANCE, zorder=1)
    ax.annotate(CHANCE, (1.0, level), xycoords=("axes fraction", "data"), xytext=(-3, 3),
                textcoords="offset points", ha="right", va="bottom", fontsize=8, color="0.35")


def label_offsets(xs: Sequence[float], ys: Sequence[float], near: float = 40.0,
                  step: float = 11.0) -> list[tuple[float, float]]:
    """Offsets (points) of the point labels, given the points' positions in points on the drawn figure: each label
    sits just above-right of its point unless a label already placed within ``near`` horizontally would be closer
    than ``step`` vertically; then it moves below that one. Placed from the top down, so models at one cost stack
    in their order of accuracy. Deterministic: it depends only on the positions."""
    placed: dict[int, float] = {}  # point index -> label baseline (points)
    for i in sorted(range(len(xs)), key=lambda k: (-ys[k], k)):
        label = ys[i] + 4.0
        while True:
            clash = [placed[j] for j in placed if abs(xs[j] - xs[i]) < near and abs(placed[j] - label) < step]
            if not clash:
                break
            label = min(clash) - step
        placed[i] = label
    return [(5.0, placed[i] - ys[i]) for i in range(len(xs))]


def _points_on_figure(ax, xs: Sequence[float], ys: Sequence[float]) -> tuple[list[float], list[float]]:
    """Data coordinates -> positions in points on the figure (what a label's size is measured in)."""
    ax.autoscale_view()  # the limits the points will be drawn with (matplotlib applies them lazily)
    scale = 72.0 / ax.figure.dpi
    shown = ax.transData.transform(list(zip(xs, ys, strict=True)))
    return [float(x) * scale for x, _ in shown], [float(y) * scale for _, y in shown]


def pareto_figure(summary: pd.DataFrame, task: str, metric: str):
    """The figure of :func:`plot_pareto` (not saved); None when no model has both the metric and efficiency rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = _metric_points(summary[summary.model != CHANCE], task, metric)
    size = _efficiency_variant(summary)
    if acc.empty or size is None:
        return None
    panels = []
    for eff_metric, lower_better in (("gmacs", True), ("pairs_per_s", False)):
        eff = _metric_points(summary, EFFICIENCY_TASK, eff_metric, size)
        models = [m for m in _model_order(acc.index) if m in eff.index]
        if models:
            panels.append((eff_metric, lower_better, eff, models))
    if not panels:
        return None
    chance = chance_level(summary, task, metric)
    name = column_label(f"{task} {metric}")
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (_, lower_better, eff, models) in zip(axes[0], panels, strict=True):
        xs = [float(eff.loc[m, "mean"]) for m in models]
        ys = [float(acc.loc[m, "mean"]) for m in models]
        yerr = [0.0 if not math.isfinite(acc.loc[m, "std"]) else float(acc.loc[m, "std"]) for m in models]
        ax.errorbar(xs, ys, yerr=yerr, fmt="o", capsize=3, color="tab:blue")
        offsets = label_offsets(*_points_on_figure(ax, xs, ys))
        for x, y, m, offset in zip(xs, ys, models, offsets, strict=True):
            ax.annotate(m, (x, y), textcoords="offset points", xytext=offset, fontsize=9)
        front = pareto_front(xs, ys, lower_better)
        ax.plot([xs[i] for i in front], [ys[i] for i in front], "--", drawstyle="steps-post", color="tab:red",
                label="Pareto front")
        _draw_chance(ax, chance)
        ax.set_xlabel("GMACs per image-text pair (lower is better)" if lower_better
                      else "measured pairs/s (higher is better)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(f"{name} against cost" + (f" ({size}px)" if size else ""))
    fig.tight_layout()
    return fig


def _save(fig, path: str | os.PathLike) -> Path | None:
    if fig is None:
        return None
    import matplotlib.pyplot as plt

    path = Path(path)
    _atomic_png(fig, path)
    plt.close(fig)
    return path


def plot_pareto(summary: pd.DataFrame, task: str, metric: str, path: str | os.PathLike) -> Path | None:
    """Accuracy (``task``/``metric``) against GMACs and against measured pairs/s, Pareto fronts and the task's
    chance level drawn. None (nothing written) when no model has both the metric and efficiency rows."""
    return _save(pareto_figure(summary, task, metric), path)


def _keep_ratio(model: str, variant: str) -> float | None:
    """The keep ratio a row was measured at: a keep* variant's, or the default's as the model registers it."""
    if variant:
        return float(variant[4:])
    from zoo import METHODS  # the model registry pulls in torch; only this plot needs it

    ratio = METHODS.get(model, {}).get("keep_ratio")
    return None if ratio is None else float(ratio)


def keep_ratio_points(rows: pd.DataFrame, task: str, metric: str) -> pd.DataFrame:
    """The summary rows of a keep-ratio sweep with their ``ratio``: every keep* variant, and the default run at the
    model's own keep ratio over the same seeds, for the models that have keep* rows of ``task``/``metric``."""
    variants = sorted({v for v in rows.variant if re.fullmatch(r"keep\d*\.?\d+", v)}, key=_variant_key)
    summary = family_summary(rows, variants)
    sel = summary[(summary.task == task) & (summary.metric == metric) & (summary.status == "ok")]
    sel = sel[sel.model.isin(set(sel.loc[sel.variant != "", "model"]))]  # a default alone is no sweep
    return (sel.assign(ratio=[_keep_ratio(m, v) for m, v in zip(sel.model, sel.variant, strict=True)])
            .dropna(subset=["ratio"]).sort_values("variant", ascending=False)  # a keep* variant before the default
            .drop_duplicates(subset=["model", "ratio"]).sort_values(["model", "ratio"], ignore_index=True))


def keep_ratio_figure(rows: pd.DataFrame, task: str, metric: str):
    """The figure of :func:`plot_keep_ratio` (not saved); None without keep* rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sel = keep_ratio_points(rows[rows.model != CHANCE], task, metric)
    if sel.empty:
        return None
    name = column_label(f"{task} {metric}")
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for model in _model_order(sel.model):
        points = sel[sel.model == model]
        std = np.nan_to_num(points["std"].to_numpy(dtype=float))
        ax.errorbar(points["ratio"], points["mean"], yerr=std, marker="o", capsize=3, label=model)
    _draw_chance(ax, chance_level(summarize(rows[rows.model == CHANCE]), task, metric))
    ax.set_xlabel("keep ratio")
    ax.set_ylabel(name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{name} against the keep ratio")
    fig.tight_layout()
    return fig


def plot_keep_ratio(rows: pd.DataFrame, task: str, metric: str, path: str | os.PathLike) -> Path | None:
    """Accuracy against the keep ratio (``keep_ratio_points``), one line per model, the chance level dashed;
    None without keep* rows."""
    return _save(keep_ratio_figure(rows, task, metric), path)


# ------------------------------------------------------------------------------------------------- writing


def build_tables(store_dir: str | os.PathLike = DEFAULT_STORE, suite: str | None = None,
                 paper: PaperReference | None = None) -> tuple[list[Table], pd.DataFrame]:
    """All tables of one suite (main first) and the per-key summary they were made from."""
    return tables_from_rows(load_rows(store_dir, suite), paper)


def tables_from_rows(rows: pd.DataFrame, paper: PaperReference | None = None) -> tuple[list[Table], pd.DataFrame]:
    """``build_tables`` over rows already loaded (``write_tables`` also needs them for the keep-ratio plots)."""
    summary = summarize(rows)
    tables = [main_table(summary, rows, paper)]
    for table in (comparison_table(rows, summary), efficiency_table(summary, rows), task_cost_table(summary, rows)):
        if table is not None:
            tables.append(table)
    tables += ablation_tables(rows)
    return tables, summary


def write_tables(store_dir: str | os.PathLike = DEFAULT_STORE, out_dir: str | os.PathLike = DEFAULT_OUT,
                 formats: Sequence[str] = FORMATS, suite: str | None = None, paper: PaperReference | None = None,
                 plots: Sequence[tuple[str, str]] | None = None) -> tuple[list[Table], list[Path]]:
    """Write every table in every format and the plots into ``out_dir``, and with HTML an ``index.html`` report of
    them all; returns the tables and the files.

    ``plots``: (task, metric) pairs to plot; default every headline metric present.
    """
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise InputError(None, "--format", f"unknown format(s) {', '.join(bad) or '(none)'} "
                         f"(choose from {', '.join(FORMATS)})")
    rows = load_rows(store_dir, suite)
    tables, summary = tables_from_rows(rows, paper)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(out, "--out", "exists and is not a directory")
    written = []
    for table in tables:
        for fmt in formats:
            path = out / f"{table.name}.{EXTENSIONS[fmt]}"
            write_atomic(path, render(table, fmt))
            written.append(path)
    if "csv" in formats:
        write_atomic(out / "summary.csv", tidy_csv(summary))
        written.append(out / "summary.csv")
    if plots is None:
        plots = [(t, m) for t, m in headlines(summary.task).items()
                 if ((summary.task == t) & (summary.metric == m)).any()]
    figures: list[tuple[Path, str]] = []
    for task, metric in plots:
        name = column_label(f"{task} {metric}")
        for path, caption in ((plot_pareto(summary, task, metric, out / f"pareto_{task}_{metric}.png"),
                               f"{name} against cost (GMACs, pairs/s)"),
                              (plot_keep_ratio(rows, task, metric, out / f"keep_{task}_{metric}.png"),
                               f"{name} against the keep ratio")):
            if path is not None:
                written.append(path)
                figures.append((path, caption))
    if "html" in formats:
        index = out / "index.html"
        write_atomic(index, index_html(tables, [p.name for p in written], figures, str(rows.suite.iloc[0])))
        written.append(index)
    return tables, written


def index_html(tables: Sequence[Table], files: Sequence[str], figures: Sequence[tuple[Path, str]],
               suite: str) -> str:
    """One page with every table (and links to its files) and every plot (linked relatively, so the out dir can be
    moved or opened from disk), each with its heading and notes: the report to open first."""
    esc = html.escape
    contents = [f'<li><a href="#{esc(t.name)}">{esc(t.title)}</a></li>' for t in tables]
    if figures:
        contents.append('<li><a href="#plots">Plots</a></li>')
    body = [f"<h1>copa-bench results: suite {esc(suite)}</h1>", "<nav>\n<ul>\n" + "\n".join(contents)
            + "\n</ul>\n</nav>"]
    for table in tables:
        links = [f'<a href="{esc(name)}">{esc(name.rpartition(".")[2])}</a>' for name in files
                 if name.rpartition(".")[0] == table.name]
        body.append(f'<section id="{esc(table.name)}">\n{_html_table(table)}'
                    + (f'<p class="files">Files: {" · ".join(links)}</p>\n' if links else "") + "</section>")
    if figures:
        body.append('<section id="plots">\n<h2>Plots</h2>')
        for path, caption in figures:
            body.append(f'<figure>\n<h3>{esc(caption)}</h3>\n<a href="{esc(path.name)}"><img src="{esc(path.name)}" '
                        f'alt="{esc(caption)}"></a>\n</figure>')
        body.append("</section>")
    if "summary.csv" in files:
        body.append('<p class="files">Every number at full precision, one line per (model, task, variant, metric): '
                    '<a href="summary.csv">summary.csv</a></p>')
    return html_page(f"copa-bench results: suite {suite}", "\n".join(body) + "\n")


def tidy_csv(summary: pd.DataFrame) -> str:
    """Summary rows (``summarize``'s, or a table's ``numbers``) as numbers at full precision, one per line: mean,
    std and the seed count in their own columns, empty where not applicable (``status`` n/a, its ``reason`` given),
    so that ``pandas.read_csv`` reads numbers back."""
    buffer = io.StringIO()
    summary.to_csv(buffer, index=False, lineterminator="\n", float_format="%.10g")
    return buffer.getvalue()


def parse_plot(value: str) -> tuple[str, str]:
    """'retrieval:r_mean' -> ('retrieval', 'r_mean'); a bare task takes its headline metric."""
    from harness.taskspec import is_declared, task_spec

    task, _, metric = value.partition(":")
    metric = metric or (task_spec(task).headline or "" if is_declared(task) else "")
    if not task or not metric:
        raise InputError(None, "--plot", f"expected TASK:METRIC (or a task with a headline metric), got {value!r}")
    return task, metric

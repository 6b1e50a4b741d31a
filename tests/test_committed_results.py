"""The committed paper-suite tables and the README's findings are what the committed store gives: regenerated
from results/paper_v5/rows.jsonl, so no figure in them is typed by hand or left behind by a later run."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import tables

ROOT = Path(__file__).resolve().parents[1]
STORE, OUT = ROOT / "results" / "paper_v5", ROOT / "results" / "tables" / "paper_v5"
FINDINGS = "## What the paper suite finds"


@pytest.fixture(scope="module")
def paper_tables() -> dict[str, tables.Table]:
    built, _ = tables.tables_from_rows(tables.load_rows(STORE, suite="paper"))
    return {table.name: table for table in built}


def _table_lines(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def test_committed_tables_match_the_store(paper_tables):
    for name, table in paper_tables.items():
        path = OUT / f"{name}.md"
        assert path.read_text() == tables.render(table, "md"), (
            f"{path.relative_to(ROOT)} is not what the store gives: copa-bench table --results results/paper_v5 "
            f"--suite paper --out results/tables/paper_v5")


def test_readme_findings_are_the_comparison_table(paper_tables):
    readme = (ROOT / "README.md").read_text()
    assert FINDINGS in readme
    section = readme[readme.index(FINDINGS):]
    section = section[:section.find("\n## ", 1)]
    assert _table_lines(section) == _table_lines(tables.render(paper_tables["comparison"], "md"))


def test_the_paper_suite_runs_its_jobs_as_the_store_did():
    """A resumed ``copa-bench run paper`` adds rows to a store made at one torch thread per job; the job hash does
    not record threads, so by default it must run its jobs the same way (the efficiency job times its own)."""
    from harness.results import read_rows
    from harness.suite import load_suite

    threads = {row["machine"]["threads"] for row in read_rows(STORE) if row["task"] != "efficiency"}
    assert threads == {1}
    assert load_suite("paper").get("workers", 1) > 1  # workers run their jobs at one thread each

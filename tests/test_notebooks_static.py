"""Notebooks as committed: no outputs, one parameters cell with the standard names, a kernel,
a title, a chart, self-checks, guarded solutions and a link onwards."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
STANDARD = {"backend", "lake_dir", "scale", "seed", "show_solutions"}


def load(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def test_there_are_chapters():
    stems = [p.stem for p in NOTEBOOKS]
    assert stems[:2] == ["00_start_here", "01_lakehouse"], stems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_clean(path):
    nb = load(path)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                "strip outputs before committing"
            )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_parameters_cell_with_the_standard_names(path):
    nb = load(path)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    names = {
        t.id for node in ast.parse(tagged[0].source).body if isinstance(node, ast.Assign)
        for t in node.targets if isinstance(t, ast.Name)
    }  # fmt: skip
    assert STANDARD <= names, STANDARD - names
    assert "show_solutions = False" in tagged[0].source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_teaches_and_checks(path):
    nb = load(path)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    assert "Learning goals" in first.source or "learning goals" in first.source.lower()
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    # that a chapter draws a chart is checked on its executed outputs (test_notebooks.py)
    assert "if show_solutions:" in code, "exercise solutions are guarded by show_solutions"
    assert "Check your understanding" in text
    assert code.count("assert ") >= 3
    # a link to the next chapter near the end (final self-check cells may follow it)
    assert "## Next" in text and any(".ipynb)" in c.source for c in nb.cells[-3:])

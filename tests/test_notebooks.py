"""Every chapter notebook, executed by papermill on every engine at the tests' scale."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from workbench import runs

EXECUTED = Path(__file__).parent.parent / "build" / "test-executed"
NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))
TEST_SCALE = 0.001
# A cell that hangs fails the test instead of stalling CI (the hangs once seen came from charts
# captured in an ipywidgets Output with `with out:`; notebooks use `viz.show_in` instead).
CELL_TIMEOUT = 120  # seconds; at the tests' scale the slowest cell takes a few seconds
# XML namespace names are identifiers, never fetched; anything else would need the network.
NAMESPACES = ("http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink")
ADDRESS = re.compile(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s\"'<>)]*")
CHART_MIMES = ("image/svg+xml", "application/vnd.vegalite.v5+json")


def chart_outputs(notebook: nbformat.NotebookNode) -> list[dict]:
    return [
        output["data"]
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if any(m in output.get("data", {}) for m in CHART_MIMES)
    ]


def network_addresses(data: dict) -> list[str]:
    text = json.dumps({m: data[m] for m in CHART_MIMES if m in data})
    return [a for a in ADDRESS.findall(text.replace("\\/", "/")) if not a.startswith(NAMESPACES)]


@pytest.mark.notebook
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_every_engine(notebook, backend, tmp_path):
    parameters = {
        "backend": backend,
        "scale": TEST_SCALE,
        "show_solutions": True,
        "lake_dir": str(tmp_path / "lake"),
    }
    record = runs.run(
        notebook, parameters, folder=tmp_path / "run", progress=False, timeout=CELL_TIMEOUT
    )
    runs.raise_for(record)
    (EXECUTED / backend).mkdir(parents=True, exist_ok=True)  # the browser test opens these
    shutil.copy(record.outputs["ipynb"], EXECUTED / backend / notebook.name)
    executed = nbformat.read(record.outputs["ipynb"], as_version=4)
    charts = chart_outputs(executed)
    assert charts, f"{notebook.name} shows no chart"
    for data in charts:
        assert not network_addresses(data), network_addresses(data)
    page = Path(record.outputs["html"]).read_text(encoding="utf-8")
    assert page.count('data-mime-type="image/svg+xml"') >= len(charts)  # a static picture


def test_chart_address_check_can_fail():
    assert network_addresses({"image/svg+xml": "<image href='https://cdn.example.com/x.png'/>"})
    assert not network_addresses({"image/svg+xml": "<svg xmlns='http://www.w3.org/2000/svg'/>"})

"""Notebook runs with papermill: checked parameters, one folder and lake per run, HTML, an index.

papermill only warns about a parameter the notebook does not declare; a typo such as
`-p bakend polars` would silently run on the default engine, so we check names ourselves.
"""

from __future__ import annotations

import ast
import html
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from workbench import backends
from workbench.errors import NotebookFailedError, ParameterError, WorkbenchError

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@dataclass
class Run:
    """One executed notebook: where it went, with what, how it ended."""

    notebook: str
    parameters: dict
    folder: str
    status: str = "pending"
    seconds: float = 0.0
    error: str | None = None
    failed_cell: int | None = None
    outputs: dict = field(default_factory=dict)


def declared(notebook: str | Path) -> dict[str, object]:
    """The parameters a notebook declares in its `parameters` cell, with their defaults."""
    import papermill

    found = papermill.inspect_notebook(str(notebook))
    return {name: _default(info["default"]) for name, info in found.items()}


def _default(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def coerce(value: str):
    """A command-line value as Python: numbers, booleans and None parsed, else a string."""
    if not isinstance(value, str):
        return value
    if value in ("True", "False", "true", "false"):
        return value.lower() == "true"
    if value == "None":
        return None
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def check(notebook: str | Path, parameters: dict) -> dict:
    """Refuse parameters the notebook does not declare, and an unknown backend."""
    names = declared(notebook)
    unknown = [p for p in parameters if p not in names]
    if unknown:
        raise ParameterError(
            f"{Path(notebook).name} does not declare the parameter(s) {', '.join(map(repr, unknown))}.",
            "Declared parameters: "
            + ", ".join(f"{k} (default {v!r})" for k, v in names.items())
            + ".",
            _closest(unknown[0], list(names)),
        )
    if "backend" in parameters:
        backends.get(parameters["backend"])
    return {k: coerce(v) for k, v in parameters.items()}


def _closest(name: str, options: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, options, n=1)
    return f"did you mean {close[0]!r}?" if close else "pass -p NAME VALUE with a declared name."


def slug(parameters: dict) -> str:
    """A folder-name-safe summary of the parameters, e.g. `backend-polars_scale-0.1`."""
    text = "_".join(f"{k}-{v}" for k, v in sorted(parameters.items()) if k != "lake_dir")
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", text) or "defaults"


def run(
    notebook: str | Path,
    parameters: dict | None = None,
    out: str | Path = "build/runs",
    folder: str | Path | None = None,
    progress: bool = True,
) -> Run:
    """Execute `notebook` with papermill into its own folder (own lake unless `lake_dir`
    is given), write the executed notebook and its HTML, and return the run's record."""
    notebook = Path(notebook).resolve()
    if not notebook.exists():
        raise WorkbenchError(
            f"Notebook {str(notebook)!r} does not exist.",
            "Chapters: " + ", ".join(p.name for p in sorted(NOTEBOOKS.glob("*.ipynb"))) + ".",
            "give the path to a notebook, e.g. notebooks/01_lakehouse.ipynb.",
        )
    parameters = check(notebook, dict(parameters or {}))
    target = Path(folder) if folder else Path(out) / f"{notebook.stem}__{slug(parameters)}"
    target = target.resolve()
    target.mkdir(parents=True, exist_ok=True)
    if "lake_dir" in declared(notebook):
        parameters.setdefault("lake_dir", str(target / "lake"))
    record = Run(str(notebook), parameters, str(target))
    executed = target / notebook.name
    start = time.perf_counter()
    try:
        _execute(notebook, executed, parameters, progress)
        record.status = "ok"
    except Exception as exc:
        record.status = "failed"
        record.failed_cell, record.error = _failure(exc)
    record.seconds = round(time.perf_counter() - start, 2)
    if executed.exists():
        record.outputs["ipynb"] = str(executed)
        record.outputs["html"] = str(to_html(executed))
    (target / "run.json").write_text(json.dumps(asdict(record), indent=2, default=str))
    return record


def _execute(notebook: Path, executed: Path, parameters: dict, progress: bool) -> None:
    import papermill

    papermill.execute_notebook(
        str(notebook),
        str(executed),
        parameters=parameters,
        cwd=str(notebook.parent),
        progress_bar=progress,
        kernel_name="python3",
    )


def _failure(exc: Exception) -> tuple[int | None, str]:
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        return exc.exec_count, f"{exc.ename}: {exc.evalue}"
    return None, f"{type(exc).__name__}: {exc}"


def raise_for(record: Run) -> None:
    """Raise a NotebookFailedError naming the failing cell when `record` failed."""
    if record.status != "failed":
        return
    cell = f"cell [{record.failed_cell}]" if record.failed_cell is not None else "the run"
    raise NotebookFailedError(
        f"{Path(record.notebook).name} failed in {cell}: {record.error}",
        f"The executed notebook, with the traceback, is in {record.folder}.",
        "open the HTML or .ipynb there to see the failing cell and its output.",
    )


def to_html(executed: Path) -> Path:
    """Render an executed notebook as standalone HTML beside it."""
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nbformat.read(executed, 4))
    target = executed.with_suffix(".html")
    target.write_text(body, encoding="utf-8")
    return target


def index(records: list[Run], path: str | Path, title: str = "Executed notebooks") -> Path:
    """An HTML page listing every run with its parameters, status, time and links."""
    path = Path(path)
    rows = []
    for r in records:
        link = r.outputs.get("html")
        href = html.escape(str(Path(link).relative_to(path.parent.resolve()))) if link else ""
        name = Path(r.notebook).stem
        cell = f"<a href='{href}'>{html.escape(name)}</a>" if link else html.escape(name)
        params = ", ".join(f"{k}={v}" for k, v in r.parameters.items() if k != "lake_dir")
        error = html.escape(f"cell [{r.failed_cell}]: {r.error}") if r.error else ""
        rows.append(
            f"<tr class='{r.status}'><td>{cell}</td><td>{html.escape(params)}</td>"
            f"<td>{r.status}</td><td>{r.seconds:.1f} s</td><td>{error}</td></tr>"
        )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#3d405b}}
table{{border-collapse:collapse}}td,th{{padding:.4em .8em;border-bottom:1px solid #ddd;text-align:left}}
tr.failed td{{background:#fde8e4}}</style></head><body><h1>{title}</h1>
<table><tr><th>notebook</th><th>parameters</th><th>status</th><th>time</th><th>error</th></tr>
{"".join(rows)}</table></body></html>"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path

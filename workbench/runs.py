"""Notebook runs with papermill: checked parameters, one folder and lake per run, HTML, an index.

papermill only warns about a parameter the notebook does not declare; a typo such as
`-p bakend polars` would silently run on the default engine, so we check names ourselves.
"""

from __future__ import annotations

import ast
import base64
import html
import json
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
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
    on_cell=None,
    timeout: int | None = None,
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
        _execute(notebook, executed, parameters, progress, on_cell, timeout)
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


def _execute(
    notebook: Path, executed: Path, parameters: dict, progress: bool, on_cell, timeout
) -> None:
    import papermill

    extra = {}
    if on_cell is not None:  # nbclient's hook: called with each cell before it runs
        extra["on_cell_start"] = lambda cell, cell_index, **_: on_cell(cell_index)
    papermill.execute_notebook(
        str(notebook),
        str(executed),
        parameters=parameters,
        # The kernel starts in the notebook's folder. Not papermill's `cwd`, which changes this
        # whole process's directory and so breaks the relative paths of runs in other threads.
        resources={"metadata": {"path": str(notebook.parent)}},
        progress_bar=progress,
        kernel_name="python3",
        execution_timeout=timeout,  # seconds per cell; None waits for ever
        **extra,
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


def sweep(
    notebooks: list[str | Path],
    combos: list[dict],
    out: str | Path = "build/runs",
    workers: int | None = None,
    report=print,
) -> list[Run]:
    """Run every notebook with every parameter combination, in parallel up to the core count,
    each in its own folder and lake, reporting which notebook and which cell each run is at."""
    out = Path(out).resolve()
    jobs = [(Path(nb).resolve(), dict(params)) for nb in notebooks for params in combos]
    for notebook, params in jobs:  # refuse typos before anything runs
        check(notebook, params)
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    lock = threading.Lock()
    done: list[Run] = []

    def one(job) -> Run:
        notebook, params = job
        label = f"{notebook.stem} {slug(params)}"
        total = len(_read(notebook).cells) + 1  # papermill adds the injected-parameters cell
        last = [-1]

        def on_cell(index: int) -> None:
            if index // 5 != last[0] // 5:  # every fifth cell: progress without a flood
                last[0] = index
                with lock:
                    report(f"  {label}: cell {index + 1}/{total}")

        with lock:
            report(f"started {label}")
        record = run(notebook, params, out=out, progress=False, on_cell=on_cell)
        with lock:
            done.append(record)
            where = f" in cell [{record.failed_cell}]: {record.error}" if record.error else ""
            report(
                f"{record.status} {label} ({record.seconds:.1f} s){where} [{len(done)}/{len(jobs)}]"
            )
        return record

    with ThreadPoolExecutor(max_workers=workers) as pool:
        records = list(pool.map(one, jobs))
    failed = sum(r.status != "ok" for r in records)
    report(f"{len(records) - failed} passed, {failed} failed")
    return records


def _read(notebook: Path):
    import nbformat

    return nbformat.read(notebook, as_version=4)


def thumbnail(executed: str | Path) -> str | None:
    """The first chart of an executed notebook as an SVG data URI, for the gallery."""
    if not executed or not Path(executed).exists():
        return None
    for cell in _read(Path(executed)).cells:
        for output in cell.get("outputs", []):
            svg = output.get("data", {}).get("image/svg+xml")
            if svg:
                text = svg if isinstance(svg, str) else "".join(svg)
                return "data:image/svg+xml;base64," + base64.b64encode(text.encode()).decode()
    return None


def index(records: list[Run], path: str | Path, title: str = "Notebook runs") -> Path:
    """A gallery page: each run's parameters, status, duration, first chart, and for a failed
    run the failing cell and its error, linking the executed notebook's HTML."""
    path = Path(path)
    cards = []
    for r in records:
        link = r.outputs.get("html")
        href = html.escape(os.path.relpath(link, path.parent.resolve())) if link else ""
        name = html.escape(Path(r.notebook).stem)
        params = "".join(
            f"<li>{html.escape(str(k))} = {html.escape(str(v))}</li>"
            for k, v in r.parameters.items() if k != "lake_dir"
        )  # fmt: skip
        thumb = thumbnail(r.outputs.get("ipynb"))
        picture = f"<img src='{thumb}' alt='first chart of {name}'>" if thumb else "<p>no chart</p>"
        error = (
            f"<pre class='error'>cell [{r.failed_cell}]: {html.escape(r.error)}</pre>"
            if r.error
            else ""
        )
        title_html = f"<a href='{href}'>{name}</a>" if link else name
        cards.append(
            f"<div class='card {r.status}'><h2>{title_html}</h2><p class='status'>{r.status}"
            f" &middot; {r.seconds:.1f} s</p><ul>{params}</ul>{picture}{error}</div>"
        )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#3d405b}}
.grid{{display:flex;flex-wrap:wrap;gap:1em}}
.card{{border:1px solid #ddd;border-radius:6px;padding:1em;width:340px}}
.card.failed{{border-color:#e07a5f;background:#fdf1ee}} .card img{{width:100%}}
.status{{color:#666}} pre.error{{white-space:pre-wrap;color:#9b2c1c;font-size:12px}}
ul{{padding-left:1.2em;margin:.3em 0}}</style></head><body><h1>{title}</h1>
<p>{sum(r.status == "ok" for r in records)} of {len(records)} runs passed.</p>
<div class="grid">{"".join(cards)}</div></body></html>"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path

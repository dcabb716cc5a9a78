"""The `workbench` command: run with checked parameters, generate, doctor."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import nbformat
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from workbench import cli, runs
from workbench.errors import ParameterError

ROOT = Path(__file__).resolve().parent.parent
LAKEHOUSE_NB = ROOT / "notebooks" / "01_lakehouse.ipynb"


def tiny_notebook(path: Path, body: str) -> Path:
    """A two-cell notebook: parameters, then `body`."""
    params = nbformat.v4.new_code_cell("x = 1\nbackend = 'duckdb'\nlake_dir = 'lake'")
    params.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[params, nbformat.v4.new_code_cell(body)])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)
    return path


def test_unknown_parameter_fails_naming_the_declared_ones(capsys, tmp_path):
    code = cli.main(["run", str(LAKEHOUSE_NB), "-p", "bakend", "polars", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "'bakend'" in err and "Declared parameters:" in err
    for name in ("backend", "lake_dir", "scale", "seed", "show_solutions"):
        assert name in err
    assert "did you mean 'backend'?" in err
    assert not any(tmp_path.iterdir()), "nothing runs when a parameter is wrong"


def test_unknown_backend_fails_listing_the_engines(capsys, tmp_path):
    code = cli.main(["run", str(LAKEHOUSE_NB), "--backend", "nosuch", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "'nosuch'" in err
    assert all(name in err for name in ("duckdb", "polars", "datafusion"))


def test_coerce_parses_command_line_values():
    assert [runs.coerce(v) for v in ("0.1", "7", "True", "false", "None", "polars")] == [
        0.1, 7, True, False, None, "polars"]  # fmt: skip


def test_check_refuses_before_running(tmp_path):
    notebook = tiny_notebook(tmp_path / "t.ipynb", "assert x == 1")
    with pytest.raises(ParameterError, match="x \\(default 1\\)"):
        runs.check(notebook, {"y": "2"})


def test_grid_expands_every_combination():
    combos = cli.grid(["backend=duckdb,polars", "seed=1,2"])
    assert combos == [
        {"backend": "duckdb", "seed": "1"}, {"backend": "duckdb", "seed": "2"},
        {"backend": "polars", "seed": "1"}, {"backend": "polars", "seed": "2"},
    ]  # fmt: skip
    with pytest.raises(Exception, match="NAME=V1,V2"):
        cli.grid(["backend"])


def test_run_writes_notebook_html_and_record_and_fails_naming_the_cell(tmp_path, capsys):
    good = tiny_notebook(tmp_path / "good.ipynb", "assert x == 3\nprint('x is', x)")
    bad = tiny_notebook(tmp_path / "bad.ipynb", "assert x == 1, 'x must stay 1'")
    out = tmp_path / "out"
    code = cli.main(["run", str(good), str(bad), "-p", "x", "3", "--out", str(out)])
    assert code == 1
    folders = sorted(p for p in out.iterdir() if p.is_dir())
    assert [f.name for f in folders] == ["bad__x-3", "good__x-3"]
    ok = json.loads((out / "good__x-3" / "run.json").read_text())
    assert ok["status"] == "ok" and ok["parameters"]["lake_dir"].endswith("good__x-3/lake")
    assert Path(ok["outputs"]["html"]).exists() and Path(ok["outputs"]["ipynb"]).exists()
    failed = json.loads((out / "bad__x-3" / "run.json").read_text())
    # execution count 3: parameters, the injected parameters papermill adds, then the failing cell
    assert failed["status"] == "failed" and failed["failed_cell"] == 3
    assert "x must stay 1" in failed["error"]
    captured = capsys.readouterr().out
    assert (
        "in cell [3]: AssertionError: x must stay 1" in captured
        and "1 passed, 1 failed" in captured
    )
    assert "started good x-3" in captured and "cell 1/3" in captured  # progress: notebook and cell
    gallery = (out / "index.html").read_text()
    assert "good" in gallery and "cell [3]: AssertionError: x must stay 1" in gallery
    assert "1 of 2 runs passed" in gallery


def test_gallery_shows_the_first_chart(tmp_path):
    executed = tmp_path / "e.ipynb"
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("chart")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"image/svg+xml": "<svg>1</svg>"})]
    nb.cells = [nbformat.v4.new_code_cell("x"), cell]
    nbformat.write(nb, executed)
    assert runs.thumbnail(executed) == "data:image/svg+xml;base64,PHN2Zz4xPC9zdmc+"
    record = runs.Run(
        "n.ipynb", {"seed": 1}, str(tmp_path), "ok", 1.0, outputs={"ipynb": str(executed)}
    )
    page = runs.index([record], tmp_path / "index.html").read_text()
    assert "PHN2Zz4xPC9zdmc+" in page and "seed = 1" in page


def test_a_run_never_moves_the_process_out_of_its_folder(tmp_path, monkeypatch):
    """The kernel starts in the notebook's folder, while this process stays where it was: a
    sweep runs notebooks in threads, and a changed process directory would send the other
    threads' relative paths (as `make demo` gives them) to the wrong place."""
    (tmp_path / "nbs").mkdir()
    tiny_notebook(
        tmp_path / "nbs" / "a.ipynb",
        "import os, time\ntime.sleep(2)\nassert os.path.basename(os.getcwd()) == 'nbs'",
    )
    monkeypatch.chdir(tmp_path)
    seen, result = set(), []
    worker = threading.Thread(target=lambda: result.append(runs.run("nbs/a.ipynb", out="out",
                                                                    progress=False)))  # fmt: skip
    worker.start()
    while worker.is_alive():
        seen.add(os.getcwd())
        time.sleep(0.02)
    assert result[0].status == "ok", result[0].error
    assert seen == {str(tmp_path)}
    assert Path(result[0].folder).is_relative_to(tmp_path / "out")


def test_matrix_file(tmp_path):
    spec = tmp_path / "sweep.yaml"
    spec.write_text(
        "parameters:\n  scale: 0.001\nmatrix:\n  backend: [duckdb, polars]\n  seed: [1, 2]\n"
    )
    fixed, combos = cli.matrix(str(spec))
    assert (
        fixed == {"scale": 0.001}
        and len(combos) == 4
        and {"backend": "polars", "seed": 2} in combos
    )
    spec.write_text("matrx:\n  seed: [1]\n")
    with pytest.raises(Exception, match="Allowed keys"):
        cli.matrix(str(spec))


def test_generate_twice_gives_identical_tables(tmp_path, capsys):
    for name in ("a", "b"):
        assert (
            cli.main(
                ["generate", "--scale", "0.001", "--seed", "7", "--lake", str(tmp_path / name)]
            )
            == 0
        )
    assert "bronze.orders" in capsys.readouterr().out
    for table in ("customers", "orders", "click_events"):
        left = DeltaTable(str(tmp_path / "a" / "bronze" / table)).to_pyarrow_table()
        right = DeltaTable(str(tmp_path / "b" / "bronze" / table)).to_pyarrow_table()
        assert left.num_rows > 0 and left.equals(right), table
    assert isinstance(left, pa.Table)


def test_doctor_reports_working_engines(capsys):
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    for name in ("duckdb", "polars", "datafusion"):
        assert f"engine {name}" in out and "works" in out

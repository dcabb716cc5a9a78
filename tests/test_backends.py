"""The engine registry: names, capabilities as data, clear errors."""

import dataclasses

import ibis
import pytest

from workbench import backends
from workbench.errors import UnknownBackendError, WorkbenchError


def test_required_engines_are_registered_and_installed():
    assert backends.REQUIRED == ("duckdb", "polars", "datafusion")
    assert set(backends.REQUIRED) <= set(backends.installed())
    assert backends.DEFAULT == "duckdb"


def test_sqlite_is_for_reads_only():
    sqlite = backends.get("sqlite")
    assert not sqlite.required and not sqlite.pipelines


def test_every_capability_flag_has_a_docstring():
    import ast
    import inspect

    source = inspect.getsource(backends.Backend)
    body = ast.parse(source).body[0].body
    documented = {
        node.target.id
        for node, after in zip(body, body[1:], strict=False)
        if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr)
    }
    fields = {f.name for f in dataclasses.fields(backends.Backend)}
    assert fields == documented


def test_unknown_backend_lists_the_valid_names():
    with pytest.raises(UnknownBackendError) as err:
        backends.connect("nosuch")
    message = str(err.value)
    assert "'nosuch'" in message and "Hint:" in message
    for name in backends.BACKENDS:
        assert name in message
    assert isinstance(err.value, WorkbenchError)


def test_connect_defaults_to_duckdb():
    assert backends.connect().name == "duckdb"


def test_connect_gives_a_working_engine(backend):
    con = backends.connect(backend)
    assert con.name == backend
    table = con.create_table("t", ibis.memtable({"x": [1, 2, 3]}).to_pyarrow(), overwrite=True)
    assert con.execute(table.x.sum()) == 6

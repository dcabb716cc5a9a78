"""The workbench's errors: one base class, a few subclasses a user may want to catch."""

from __future__ import annotations


class WorkbenchError(Exception):
    """Base error: the message says what was wrong, what is allowed, and a `Hint:` line."""

    def __init__(self, what: str, allowed: str | None = None, hint: str | None = None):
        self.what, self.allowed, self.hint = what, allowed, hint
        lines = [what]
        if allowed:
            lines.append(allowed)
        if hint:
            lines.append(f"Hint: {hint}")
        super().__init__("\n".join(lines))


class UnknownBackendError(WorkbenchError):
    """An engine name that is not registered or not installed."""


class TableNotFoundError(WorkbenchError):
    """A lakehouse table that does not exist."""


class InvalidTableNameError(WorkbenchError):
    """A table name that is not `layer.table`, or that escapes the lake root."""


class SchemaMismatchError(WorkbenchError):
    """A write whose schema differs from the table's and schema evolution is off."""


class ConcurrentWriteError(WorkbenchError):
    """Another writer committed first; the write can be retried."""


class ParameterError(WorkbenchError):
    """A notebook run given a parameter the notebook does not declare, or a bad value."""


class NotebookFailedError(WorkbenchError):
    """A cell failed while papermill executed a notebook."""


class UnsupportedOperationError(WorkbenchError):
    """An operation an engine cannot express with the same semantics as DuckDB."""

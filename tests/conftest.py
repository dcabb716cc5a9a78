"""Shared fixtures: a `backend` fixture driven by `--backends`, and a fresh lake per test."""

from __future__ import annotations

import pytest

from workbench import backends


def pytest_addoption(parser):
    parser.addoption(
        "--backends",
        default=",".join(b for b in backends.REQUIRED if backends.BACKENDS[b].installed),
        help="comma-separated engines to run backend tests on (default: every required, installed one)",
    )


def selected_backends(config) -> list[str]:
    names = [n.strip() for n in config.getoption("--backends").split(",") if n.strip()]
    for name in names:
        backends.get(name)  # a typo fails loudly, listing the valid names
    return names


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", selected_backends(metafunc.config), scope="session")


@pytest.fixture(scope="session")
def backend_names(request) -> list[str]:
    """Every engine selected with --backends."""
    return selected_backends(request.config)


@pytest.fixture
def con(backend):
    """A fresh Ibis connection to the engine under test."""
    return backends.connect(backend)


@pytest.fixture
def lake(tmp_path):
    """An empty lakehouse in a temporary folder."""
    from workbench.lakehouse import Lakehouse

    return Lakehouse(tmp_path / "lake")
